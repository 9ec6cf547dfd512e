//! f32 matrix products for the CPU path: `C = act(A * B + bias + residual)`, C, A and the
//! residual row-major, B packed once when the model loads.
//!
//! B is stored in panels of [`NR`] columns, each panel depth x NR contiguous, so the kernel
//! streams it. A is read in place, described by [`Rows`]: a plain matrix, or the rows a
//! convolution sees in (padded) NHWC activations, each row's depth gathered from several
//! taps; so no convolution copies its input into an im2col matrix. The x86-64 kernel keeps a
//! 6 x 16 tile of C in twelve AVX registers (FMA), or with AVX-512 a 6 x 64 tile (four panels)
//! in 24 of its 32; the portable one is plain Rust the compiler
//! vectorises for the target (SSE2, NEON). Bias, residual and ReLU are applied as each tile is
//! stored, so C is written once. Work is split into independent tiles of C over rayon's
//! threads.

use rayon::prelude::*;

use super::aligned::Aligned;
use super::Kernels;

/// Columns of a packed panel (two AVX registers of f32).
pub const NR: usize = 16;
/// Rows of A a kernel call covers.
pub(super) const MR: usize = 6;
/// Rows of A per task, about: a block of A that stays in L2 while the panels stream past.
const MC: usize = 48;
/// Rows of a block at most (see [`RowBlocks`]).
const MC_MAX: usize = MC * 3 / 2 + MR;

/// Rows split into blocks of about MC rows, whole tiles of `mr`, as even as tiles allow (they
/// differ by one tile at most). Every block streams all of B, so a short last block (a 7x7
/// layer's 49 rows as 48 + 1) would stream it twice for one row more.
#[derive(Clone, Copy)]
struct RowBlocks {
    rows: usize,
    mr: usize,
    tiles: usize,
    blocks: usize,
}

impl RowBlocks {
    fn new(rows: usize, mr: usize) -> Self {
        let tiles = rows.div_ceil(mr);
        // About MC rows a block, never more than MC_MAX.
        let blocks = ((rows + MC / 2) / MC)
            .max(1)
            .max(tiles.div_ceil(MC_MAX / mr));
        Self {
            rows,
            mr,
            tiles,
            blocks,
        }
    }

    /// The rows of block `b`.
    fn range(&self, b: usize) -> std::ops::Range<usize> {
        let tile = |b: usize| b * self.tiles / self.blocks;
        (tile(b) * self.mr).min(self.rows)..(tile(b + 1) * self.mr).min(self.rows)
    }
}

/// B (depth x cols), packed in panels of NR columns, the last one padded with zeros.
pub struct PackedB {
    // Private: built only by `new` and `zeroed`, so depth x cols always matches the data.
    depth: usize,
    cols: usize,
    // Aligned: the AVX-512 kernel loads a panel row (64 bytes) at a time.
    data: Aligned<f32>,
}

impl PackedB {
    /// Packs a row-major depth x cols matrix.
    pub fn new(depth: usize, cols: usize, b: &[f32]) -> Self {
        let mut packed = Self::zeroed(depth, cols);
        packed.pack(b);
        packed
    }

    /// Zeros, to [`pack`](Self::pack) later: for packing values made after it is allocated
    /// (see `Conv::new`).
    pub fn zeroed(depth: usize, cols: usize) -> Self {
        let data = Aligned::zeroed(cols.div_ceil(NR) * depth * NR);
        Self { depth, cols, data }
    }

    /// Packs a row-major depth x cols matrix in place of the values held.
    pub fn pack(&mut self, b: &[f32]) {
        let (depth, cols) = (self.depth, self.cols);
        assert_eq!(b.len(), depth * cols, "matrix size");
        for (p, panel) in self.data.chunks_exact_mut(depth * NR).enumerate() {
            let width = NR.min(cols - p * NR);
            for (k, row) in panel.chunks_exact_mut(NR).enumerate() {
                let src = k * cols + p * NR;
                row[..width].copy_from_slice(&b[src..src + width]);
            }
        }
    }

    /// The row-major depth x cols matrix packed (the inverse of [`pack`](Self::pack)).
    pub fn unpack(&self) -> Vec<f32> {
        let (depth, cols) = (self.depth, self.cols);
        let mut b = vec![0f32; depth * cols];
        for (p, panel) in self.data.chunks_exact(depth * NR).enumerate() {
            let width = NR.min(cols - p * NR);
            for (k, row) in panel.chunks_exact(NR).enumerate() {
                let dst = k * cols + p * NR;
                b[dst..dst + width].copy_from_slice(&row[..width]);
            }
        }
        b
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Panels `p..p + count`, one after the other.
    fn panels(&self, p: usize, count: usize) -> &[f32] {
        &self.data[p * self.depth * NR..(p + count) * self.depth * NR]
    }
}

/// Rows of A read in place. Rows come in lines (an output image row); row `r` of line `l`
/// starts at
/// `(l / lines_per_image) * image_stride + (l % lines_per_image) * line_stride + r * row_stride`,
/// and its depth is `tap_depth` values at each of `taps` (offsets from that start).
///
/// Only [`Rows::new`] and [`Rows::matrix`] make one, and both refuse a layout that would read
/// past the data: the kernels rely on it for their unchecked loads.
#[derive(Clone, Copy)]
pub struct Rows<'a, T = f32> {
    data: &'a [T],
    layout: RowLayout,
    taps: &'a [usize],
}

/// How rows lie in their data (see [`Rows`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowLayout {
    pub lines: usize,
    pub line_len: usize,
    pub lines_per_image: usize,
    pub image_stride: usize,
    pub line_stride: usize,
    pub row_stride: usize,
    pub tap_depth: usize,
}

/// A [`RowLayout`] that reads past its data.
#[derive(Debug, thiserror::Error)]
#[error("rows {layout:?} with taps up to {max_tap} reach past their {len} values")]
pub struct RowsOutOfBounds {
    layout: RowLayout,
    max_tap: usize,
    len: usize,
}

impl<'a, T> Rows<'a, T> {
    /// Rows of `data` laid out as `layout`, read at each of `taps`; refused if any value a
    /// kernel may read lies outside `data`.
    pub fn new(
        data: &'a [T],
        layout: RowLayout,
        taps: &'a [usize],
    ) -> Result<Self, RowsOutOfBounds> {
        let rows = Self { data, layout, taps };
        match rows.extent() {
            Some(end) if end <= data.len() => Ok(rows),
            _ => Err(RowsOutOfBounds {
                layout,
                max_tap: taps.iter().copied().max().unwrap_or(0),
                len: data.len(),
            }),
        }
    }

    /// A row-major rows x depth matrix.
    pub fn matrix(data: &'a [T], rows: usize, depth: usize) -> Result<Self, RowsOutOfBounds> {
        let layout = RowLayout {
            lines: 1,
            line_len: rows,
            lines_per_image: 1,
            image_stride: 0,
            line_stride: 0,
            row_stride: depth,
            tap_depth: depth,
        };
        Self::new(data, layout, &[0])
    }

    /// One past the last value any row, tap and depth reads (None: no valid layout, or an
    /// overflow). Every line is considered: the last line is not always the furthest one
    /// (an image stride shorter than its lines, or a partial last image).
    fn extent(&self) -> Option<usize> {
        let l = &self.layout;
        if self.rows() == 0 || l.tap_depth == 0 {
            return Some(0);
        }
        if l.lines_per_image == 0 || self.taps.is_empty() {
            return None;
        }
        let line_start = |line: usize| -> Option<usize> {
            (line / l.lines_per_image)
                .checked_mul(l.image_stride)?
                .checked_add((line % l.lines_per_image).checked_mul(l.line_stride)?)
        };
        // The furthest line: the last one, or the last line of the last whole image before it.
        let mut furthest = line_start(l.lines - 1)?;
        let whole_images = l.lines / l.lines_per_image;
        if whole_images > 0 {
            furthest = furthest.max(line_start(whole_images * l.lines_per_image - 1)?);
        }
        let max_tap = self.taps.iter().copied().max()?;
        furthest
            .checked_add((l.line_len - 1).checked_mul(l.row_stride)?)?
            .checked_add(max_tap)?
            .checked_add(l.tap_depth)
    }

    pub fn rows(&self) -> usize {
        self.layout.lines * self.layout.line_len
    }

    /// Rows in each line.
    pub fn line_len(&self) -> usize {
        self.layout.line_len
    }

    /// The first `line_len` rows of each line (no more than it has: the rows read nothing
    /// these rows did not).
    pub fn narrowed(self, line_len: usize) -> Self {
        assert!(line_len <= self.layout.line_len, "narrowed, not widened");
        Self {
            layout: RowLayout {
                line_len,
                ..self.layout
            },
            ..self
        }
    }

    /// `line_len` rows in each line, the rows past the old length continuing the line at its
    /// stride; refused where they would read past the data.
    pub fn widened(self, line_len: usize) -> Result<Self, RowsOutOfBounds> {
        let layout = RowLayout {
            line_len,
            ..self.layout
        };
        Self::new(self.data, layout, self.taps)
    }

    pub fn depth(&self) -> usize {
        self.taps.len() * self.layout.tap_depth
    }

    /// The values rows are read from.
    pub(super) fn data(&self) -> &'a [T] {
        self.data
    }

    /// Offsets of each tap from a row's start.
    pub(super) fn taps(&self) -> &'a [usize] {
        self.taps
    }

    /// Values read at each tap.
    pub(super) fn tap_depth(&self) -> usize {
        self.layout.tap_depth
    }

    pub(super) fn start(&self, line: usize, row: usize) -> usize {
        let l = &self.layout;
        (line / l.lines_per_image) * l.image_stride
            + (line % l.lines_per_image) * l.line_stride
            + row * l.row_stride
    }

    /// Where row `row` (counted over all lines) starts: a tile may span lines, so each row
    /// has its own start.
    pub(super) fn row_start(&self, row: usize) -> usize {
        self.start(row / self.layout.line_len, row % self.layout.line_len)
    }

    /// [`row_start`](Self::row_start) of rows `first..first + starts.len()`, into `starts`:
    /// stepped along each line, with divisions only where a line begins (two divisions for
    /// every row cost an int8 ResNet-50 pass on AMX about 4% of its time).
    pub(super) fn row_starts(&self, first: usize, starts: &mut [usize]) {
        let l = &self.layout;
        let (mut line, mut pos) = (first / l.line_len, first % l.line_len);
        let mut line_start = self.start(line, 0);
        for start in starts {
            if pos == l.line_len {
                (line, pos) = (line + 1, 0);
                line_start = self.start(line, 0);
            }
            *start = line_start + pos * l.row_stride;
            pos += 1;
        }
    }
}

/// Where a whole-width tile goes: rows `row..row + height`, columns `col0..col0 + NR` of C
/// (`cols` wide), through the epilogue. Kernels that store from their registers take it
/// (the vectorised ones: none on other CPUs than x86-64 yet).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(super) struct TileOut<'a> {
    c: SharedOut,
    cols: usize,
    row: usize,
    col0: usize,
    /// Panels of NR columns the tile covers (1 but for wide kernels).
    panels: usize,
    epilogue: &'a Epilogue<'a>,
}

impl TileOut<'_> {
    /// Panels of NR columns the tile covers.
    pub(super) fn panels(&self) -> usize {
        self.panels
    }
}

/// A pointer to C that tasks share; each task writes only its own tile.
#[derive(Clone, Copy)]
pub(super) struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint tiles of C (see `matmul`).
unsafe impl Send for SharedOut {}
// SAFETY: as for Send: no two tasks write one value.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn new(c: &mut [f32]) -> Self {
        SharedOut(c.as_mut_ptr())
    }

    /// `width` values of C from `offset`, to write.
    ///
    /// # Safety
    /// They must lie inside C, C must outlive the slice, and no other task may read or write
    /// them meanwhile.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) unsafe fn row<'a>(self, offset: usize, width: usize) -> &'a mut [f32] {
        // SAFETY: as the caller guarantees.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), width) }
    }

    /// # Safety
    /// `offset` must lie inside C.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: as the caller guarantees.
        unsafe { self.0.add(offset) }
    }
}

/// What happens to each output as it is stored:
/// `act(acc * scale[col] * row_scale[row] + bias[col] + residual[row, col])`.
pub struct Epilogue<'a> {
    /// One per column of C (int8 products: activation scale times weight scale).
    pub scale: Option<&'a [f32]>,
    /// One per row of C (int8 products whose activations have a scale per pixel).
    pub row_scale: Option<&'a [f32]>,
    /// One per column of C.
    pub bias: &'a [f32],
    pub residual: Option<Residual<'a>>,
    pub relu: bool,
}

/// Where the residual added to each output comes from.
#[derive(Clone, Copy)]
pub enum Residual<'a> {
    /// A tensor of C's shape.
    Tensor(&'a [f32]),
    /// C itself: each output is added to the value it replaces. A bottleneck's last
    /// convolution writes over its shortcut, which nothing reads afterwards: the lines it
    /// stores are the ones it has just read, where a fresh output's lines would first be
    /// fetched from memory (a 56x56 ResNet-50 layer writes 3.2 MB, more than a core's L2).
    InC,
}

// Read by the x86 kernels' stores (the others go through `store_portable`).
#[cfg(target_arch = "x86_64")]
impl Residual<'_> {
    /// The residual of output `at` (`c_at` its own address in C), to read from.
    #[inline(always)]
    pub(super) fn at(self, at: usize, c_at: *const f32) -> *const f32 {
        match self {
            Residual::Tensor(r) => r.as_ptr().wrapping_add(at),
            Residual::InC => c_at,
        }
    }
}

impl<'a> Epilogue<'a> {
    /// The residual's own tensor, to prefetch besides C (none when C holds it).
    #[inline(always)]
    pub(super) fn residual_tensor(&self) -> Option<&'a [f32]> {
        match self.residual {
            Some(Residual::Tensor(r)) => Some(r),
            _ => None,
        }
    }

    /// What the stores rely on: C holds `rows` x `cols`, and the epilogue's values cover it.
    pub(super) fn check(&self, rows: usize, cols: usize, c: &[f32]) {
        assert!(c.len() >= rows * cols, "C too short");
        assert_eq!(self.bias.len(), cols, "one bias per column");
        if let Some(scale) = self.scale {
            assert_eq!(scale.len(), cols, "one scale per column");
        }
        if let Some(r) = self.residual_tensor() {
            assert!(r.len() >= rows * cols, "residual too short");
        }
        if let Some(r) = self.row_scale {
            assert!(r.len() >= rows, "one scale per row");
        }
    }
}

/// `c = epilogue(a * b)`, `c` row-major rows x b.cols(), its rows in `a`'s order.
pub fn matmul(kernels: Kernels, a: &Rows, b: &PackedB, epilogue: &Epilogue, c: &mut [f32]) {
    assert_eq!(a.depth(), b.depth, "depth of A and B");
    for_each_tile(
        kernels,
        |first, starts| a.row_starts(first, starts),
        a.rows(),
        b.cols,
        MR,
        wide(kernels),
        epilogue,
        c,
        |starts, height, p, acc, out| {
            let count = out.map_or(1, TileOut::panels);
            kernel(kernels, a, starts, b.panels(p, count), height, acc, out)
        },
    );
}

/// [`matmul`] on the calling thread alone (callers that already split work over the
/// threads, such as the Winograd convolution's independent products).
pub(super) fn matmul_serial(
    kernels: Kernels,
    a: &Rows,
    b: &PackedB,
    epilogue: &Epilogue,
    c: &mut [f32],
) {
    assert_eq!(a.depth(), b.depth, "depth of A and B");
    let (rows, cols) = (a.rows(), b.cols);
    epilogue.check(rows, cols, c);
    let out = SharedOut(c.as_mut_ptr());
    // Filled by each kernel call that does not store its tile itself.
    let mut acc = [[0f32; NR]; MR];
    let blocks = RowBlocks::new(rows, MR);
    let (wide, whole_panels) = (wide(kernels), cols / NR);
    for index in 0..blocks.blocks {
        let (block, block_end) = (blocks.range(index).start, blocks.range(index).end);
        let mut p = 0;
        while p < cols.div_ceil(NR) {
            let col0 = p * NR;
            let width = NR.min(cols - col0);
            let step = if p + wide <= whole_panels { wide } else { 1 };
            for r in (block..block_end).step_by(MR) {
                let height = MR.min(block_end - r);
                let starts: [usize; MR] =
                    std::array::from_fn(|i| a.row_start(r + i.min(height - 1)));
                let tile_out = (width == NR).then_some(TileOut {
                    c: out,
                    cols,
                    row: r,
                    col0,
                    panels: step,
                    epilogue,
                });
                let stored = kernel(
                    kernels,
                    a,
                    &starts,
                    b.panels(p, step),
                    height,
                    &mut acc,
                    tile_out.as_ref(),
                );
                assert!(stored || step == 1, "a wide tile is stored by its kernel");
                if stored {
                    continue;
                }
                for (i, acc_row) in acc.iter().enumerate().take(height) {
                    let at = (r + i) * cols + col0;
                    store(
                        kernels,
                        &mut c[at..at + width],
                        acc_row,
                        epilogue,
                        col0,
                        r + i,
                        at,
                    );
                }
            }
            p += step;
        }
    }
}

/// The tiles of C (`rows` x `cols`) split over rayon's threads: `product` fills a tile's
/// accumulators (`height` <= `mr` rows, whose starts in A `a_starts(first, starts)` writes
/// for the rows from `first`, against panel `p`), then the epilogue stores it. Where
/// `wide` > 1 whole panels follow in one task, `product` is called once for `wide` panels
/// `p..p + wide` with a tile that covers them all (`TileOut::panels`), and must store it
/// itself (return true).
#[allow(clippy::too_many_arguments)]
pub(super) fn for_each_tile<F>(
    kernels: Kernels,
    a_starts: impl Fn(usize, &mut [usize]) + Sync,
    rows: usize,
    cols: usize,
    mr: usize,
    wide: usize,
    epilogue: &Epilogue,
    c: &mut [f32],
    product: F,
) where
    F: Fn(&[usize; MR], usize, usize, &mut [[f32; NR]; MR], Option<&TileOut>) -> bool + Sync,
{
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(mr <= MR);
    epilogue.check(rows, cols, c);
    let panels = cols.div_ceil(NR);
    let blocks = RowBlocks::new(rows, mr);
    let row_blocks = blocks.blocks;
    // Enough tasks for every thread, without cutting panels finer than needed.
    let threads = rayon::current_num_threads().max(1);
    let panel_groups = if row_blocks >= 4 * threads {
        1
    } else {
        panels.min((4 * threads).div_ceil(row_blocks))
    };
    // Whole multiples of `wide` panels per group where there are enough of them.
    let wide = wide.max(1);
    let panels_per_group = match panels.div_ceil(panel_groups) {
        per_group if per_group >= wide => per_group.div_ceil(wide) * wide,
        per_group => per_group,
    };
    let whole_panels = cols / NR;
    let out = SharedOut(c.as_mut_ptr());
    (0..row_blocks * panel_groups)
        .into_par_iter()
        .for_each(|task| {
            let (block, group) = (task / panel_groups, task % panel_groups);
            let row_range = blocks.range(block);
            // Where the block's rows start in A, once for all its panels.
            let mut starts = [0usize; MC_MAX + MR];
            // Filled by each kernel call before it is read (not zeroed per tile).
            let mut acc = [[0f32; NR]; MR];
            a_starts(row_range.start, &mut starts[..row_range.len()]);
            let first_panel = group * panels_per_group;
            let group_end = (first_panel + panels_per_group).min(panels);
            let mut p = first_panel;
            while p < group_end {
                let col0 = p * NR;
                let width = NR.min(cols - col0);
                // Panels this step covers: `wide` whole ones where the group has them.
                let step = if wide > 1 && p + wide <= group_end.min(whole_panels) {
                    wide
                } else {
                    1
                };
                let mut r = row_range.start;
                while r < row_range.end {
                    let height = mr.min(row_range.end - r);
                    let mut tile_starts = [0usize; MR];
                    let from = r - row_range.start;
                    tile_starts[..height].copy_from_slice(&starts[from..from + height]);
                    // Whole-width tiles go straight from the kernel's registers to C.
                    let tile_out = (width == NR).then_some(TileOut {
                        c: out,
                        cols,
                        row: r,
                        col0,
                        panels: step,
                        epilogue,
                    });
                    let stored = product(&tile_starts, height, p, &mut acc, tile_out.as_ref());
                    assert!(stored || step == 1, "a wide tile is stored by its kernel");
                    if stored {
                        r += height;
                        continue;
                    }
                    for (i, acc_row) in acc.iter().enumerate().take(height) {
                        let at = (r + i) * cols + col0;
                        // SAFETY: row r+i, columns col0..col0+width of C lie inside c
                        // (asserted above) and belong to this task alone.
                        let dst = unsafe { std::slice::from_raw_parts_mut(out.at(at), width) };
                        store(kernels, dst, acc_row, epilogue, col0, r + i, at);
                    }
                    r += height;
                }
                p += step;
            }
        });
}

/// Panels one kernel call covers on these kernels (f32 and int8 alike), when whole panels
/// allow.
pub(super) fn wide(kernels: Kernels) -> usize {
    if kernels.avx512() {
        WIDE_512
    } else {
        1
    }
}

/// Panels a tile of the AVX-512 kernel covers: 6 rows x 4 panels are 24 accumulators of the
/// 32 registers, so each broadcast feeds four FMAs and each panel load six.
pub(super) const WIDE_512: usize = 4;

/// How far ahead of its loads an x86 kernel asks for weight panel lines: 16 steps of one
/// 64-byte line a panel (16 depths of f32, 16 quads of int8).
#[cfg(target_arch = "x86_64")]
const PANEL_PREFETCH_BYTES: usize = 16 * 64;

/// One tile's products: `height` (<= MR) rows of A starting at `starts` against one panel,
/// stored through the epilogue by the kernel itself when it can (`out` given; returns true),
/// else left in `acc`.
// Only the x86 kernels store from their registers (`out`).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn kernel(
    kernels: Kernels,
    a: &Rows,
    starts: &[usize; MR],
    panel: &[f32],
    height: usize,
    acc: &mut [[f32; NR]; MR],
    out: Option<&TileOut>,
) -> bool {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        k if k.avx512() && out.is_some_and(|o| o.panels() == WIDE_512) => {
            // SAFETY: this level exists only where the CPU has AVX-512 F; `Rows` exist only
            // with every row, tap and depth inside their data, the panels hold WIDE_512 x
            // depth x NR values; `for_each_tile` gives a wide `out` only for whole panels of
            // its own, inside C.
            unsafe { avx512::kernel(a, starts, panel, height, out) }
        }
        #[cfg(target_arch = "x86_64")]
        k if k.avx2() => {
            // SAFETY: `Kernels` above portable exist only where the CPU has AVX2 and FMA; `Rows`
            // exist only with every row, tap and depth inside their data (`Rows::new`), the panel
            // holds depth x NR values; `for_each_tile` gives `out` only for whole-width
            // tiles of its own, inside C.
            unsafe { avx2::kernel(a, starts, panel, height, acc, out) }
        }
        #[cfg(target_arch = "aarch64")]
        k if k.neon() => {
            // SAFETY: NEON levels exist only where the CPU has NEON; `Rows` exist only with every
            // row, tap and depth inside their data (`Rows::new`), the panel holds depth x NR
            // values.
            unsafe { neon::kernel(a, starts, panel, height, acc) }
        }
        _ => {
            portable_kernel(a, starts, panel, height, acc);
            false
        }
    }
}

/// One row of a tile into C: `dst` is row `row` from column `col0` (up to NR columns), `at`
/// its offset in C (and in the residual).
#[inline]
pub(super) fn store(
    kernels: Kernels,
    dst: &mut [f32],
    acc: &[f32; NR],
    epilogue: &Epilogue,
    col0: usize,
    row: usize,
    at: usize,
) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        k if k.avx2() && dst.len() == NR => {
            // SAFETY: `Kernels` above portable exist only where the CPU has AVX2; `for_each_tile`
            // checked that bias and scale hold every column and the residual every output,
            // and dst is a whole row of NR values.
            unsafe { avx2::store(dst, acc, epilogue, col0, row, at) }
        }
        _ => store_portable(dst, acc, epilogue, col0, row, at),
    }
}

/// [`store`] in plain Rust, for any width.
fn store_portable(
    dst: &mut [f32],
    acc: &[f32; NR],
    epilogue: &Epilogue,
    col0: usize,
    row: usize,
    at: usize,
) {
    let width = dst.len();
    // C's own values are the residual's when it holds it: kept before they are overwritten.
    let mut kept = [0f32; NR];
    let residual = match epilogue.residual {
        None => None,
        Some(Residual::Tensor(r)) => Some(&r[at..at + width]),
        Some(Residual::InC) => {
            kept[..width].copy_from_slice(dst);
            Some(&kept[..width])
        }
    };
    let bias = &epilogue.bias[col0..col0 + width];
    let row_scale = epilogue.row_scale.map_or(1.0, |r| r[row]);
    match epilogue.scale {
        Some(scale) => {
            for ((d, a), (s, b)) in dst.iter_mut().zip(acc).zip(scale[col0..].iter().zip(bias)) {
                *d = a * s * row_scale + b;
            }
        }
        None => {
            for ((d, a), b) in dst.iter_mut().zip(acc).zip(bias) {
                *d = a + b;
            }
        }
    }
    if let Some(res) = residual {
        for (d, r) in dst.iter_mut().zip(res) {
            *d += r;
        }
    }
    if epilogue.relu {
        for d in dst {
            // Keeps NaN and -0.0 as the vectorised store does; a select (not a conditional
            // store) vectorises on the portable path too.
            *d = if *d < 0.0 { 0.0 } else { *d };
        }
    }
}

fn portable_kernel(
    a: &Rows,
    starts: &[usize; MR],
    panel: &[f32],
    height: usize,
    acc: &mut [[f32; NR]; MR],
) {
    for row in acc.iter_mut().take(height) {
        row.fill(0.0);
    }
    let mut steps = panel.chunks_exact(NR);
    for &tap in a.taps() {
        for k in 0..a.tap_depth() {
            let Some(b) = steps.next() else { return };
            for (i, row) in acc.iter_mut().enumerate().take(height) {
                let x = a.data()[starts[i] + tap + k];
                // Fused, in the vectorised kernels' order: the same sums bit for bit, so an
                // int8 model's f32 stem, and with it every quantised activation, is the same
                // on every CPU (an unfused stem moved a ResNet-18's int8 logits by 0.02).
                for (r, w) in row.iter_mut().zip(b) {
                    *r = x.mul_add(*w, *r);
                }
            }
        }
    }
}

/// The f32 product on AVX-512: 6 rows x 4 panels (64 columns) in 24 of the 32 registers. Each
/// output's sum is the same chain of FMAs in the same order as on AVX2, so the same results.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::avx2::prefetch_panel;
    use super::{Epilogue, Rows, TileOut, MR, NR, WIDE_512};

    /// Stores through `out` (a tile of WIDE_512 whole panels); returns true.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, AVX2 and FMA; rows `starts[i]` (i < height) plus every
    /// tap and depth must lie inside `a.data`; `panels` must hold WIDE_512 panels of depth x NR
    /// values one after the other; `out` a tile of as many whole panels inside C, the
    /// caller's alone.
    #[target_feature(enable = "avx2,fma,avx512f")]
    pub unsafe fn kernel(
        a: &Rows,
        starts: &[usize; MR],
        panels: &[f32],
        height: usize,
        out: Option<&TileOut>,
    ) -> bool {
        let Some(out) = out else {
            return false;
        };
        debug_assert!(panels.len() >= WIDE_512 * a.depth() * NR);
        // SAFETY: forwarded from the caller.
        unsafe { for_height!(rows, height, (a, starts, panels, out)) }
        true
    }

    /// [`prefetch_panel`] for each of the WIDE_512 panels a wide tile reads at `at`: four
    /// streams read in step, which the hardware's prefetchers followed late (the panel loads
    /// held a quarter of the f32 kernel's samples). Asking ahead took ResNet-50 f32 from 31.6
    /// to 26.6-28.0 ms a picture (int8 on `avx512-vnni` 12.6-12.9 to 12.1-12.5).
    #[inline(always)]
    pub(in super::super) fn prefetch_panels(at: [*const u8; WIDE_512]) {
        at.into_iter().for_each(prefetch_panel);
    }

    #[target_feature(enable = "avx2,fma,avx512f")]
    #[inline]
    unsafe fn rows<const H: usize>(a: &Rows, starts: &[usize; MR], panels: &[f32], out: &TileOut) {
        // SAFETY: as the caller guarantees.
        unsafe { prefetch_wide::<H>(out) };
        let mut c = [[_mm512_setzero_ps(); WIDE_512]; H];
        let panel_len = a.depth() * NR;
        let mut bp = panels.as_ptr();
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panels hold WIDE_512 x depth x NR values, panel k
            // panel_len values after panel k - 1, read in order here.
            unsafe {
                let ap: [*const f32; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for k in 0..a.tap_depth() {
                    let at: [*const f32; WIDE_512] = std::array::from_fn(|j| bp.add(j * panel_len));
                    prefetch_panels(at.map(<*const f32>::cast));
                    let b: [__m512; WIDE_512] = at.map(|p| _mm512_loadu_ps(p));
                    bp = bp.add(NR);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x = _mm512_set1_ps(*ap[i].add(k));
                        for (cij, bj) in ci.iter_mut().zip(&b) {
                            *cij = _mm512_fmadd_ps(x, *bj, *cij);
                        }
                    }
                }
            }
        }
        // SAFETY: as the caller guarantees.
        unsafe { deliver_wide(c, out) };
    }

    /// Asks for the cache lines of a wide tile's outputs (and residual): each row's
    /// WIDE_512 x NR values, every line once (see `avx2::prefetch_tile`).
    ///
    /// # Safety
    /// As [`deliver_wide`].
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in super::super) unsafe fn prefetch_wide<const H: usize>(out: &TileOut) {
        const LINE: usize = 16;
        for i in 0..H {
            let at = (out.row + i) * out.cols + out.col0;
            let last = at + WIDE_512 * NR - 1;
            for offset in (at..last).step_by(LINE).chain(std::iter::once(last)) {
                // SAFETY: as the caller guarantees: the tile's row lies inside C (and the
                // residual), so every value of it does.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(out.c.at(offset) as *const i8);
                    if let Some(res) = out.epilogue.residual_tensor() {
                        _mm_prefetch::<_MM_HINT_T0>(res.as_ptr().add(offset) as *const i8);
                    }
                }
            }
        }
    }

    /// [`super::store_portable`]'s operations on 16 outputs of row `row` from column `col`
    /// (`at` their offset in C), in the same order, so the same results.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; bias (and scale) hold columns `col..col + 16`, the row
    /// scales row `row`, the residual `at..at + 16`; `c_at` is where
    /// output `at` lies in C (the residual's place when C holds it).
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in super::super) unsafe fn finish(
        v: __m512,
        epilogue: &Epilogue,
        col: usize,
        row: usize,
        at: usize,
        c_at: *const f32,
    ) -> __m512 {
        // SAFETY: as the caller guarantees.
        unsafe {
            let bias = _mm512_loadu_ps(epilogue.bias.as_ptr().add(col));
            let mut v = match epilogue.scale {
                Some(scale) => {
                    let s = _mm512_loadu_ps(scale.as_ptr().add(col));
                    let row_scale = _mm512_set1_ps(epilogue.row_scale.map_or(1.0, |r| r[row]));
                    _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(v, s), row_scale), bias)
                }
                None => _mm512_add_ps(v, bias),
            };
            if let Some(res) = epilogue.residual {
                v = _mm512_add_ps(v, _mm512_loadu_ps(res.at(at, c_at)));
            }
            if epilogue.relu {
                // max(0, v) returns v when v is NaN, and -0.0 for -0.0: as the portable
                // comparison does.
                v = _mm512_max_ps(_mm512_setzero_ps(), v);
            }
            v
        }
    }

    /// Delivers a wide tile (`c[i][k]`: row i's panel k) through the epilogue into C, 16
    /// outputs a step. The tile comes by value, as [`super::avx2::deliver_tile`]'s: given by
    /// reference, the kernel's accumulators had an address, and wherever the compiler did not
    /// inline this function it kept them in memory too, storing each of the 24 at every step
    /// of the loop. Which builds did so was chance (the crate's features, the flags): a
    /// `--workspace --all-targets` build with `-D warnings` ran ResNet-50 f32 in 52 ms a
    /// picture on AVX-512, slower than on AVX2 (45), where a plain one took 34; by value,
    /// 29-30 in both.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F; `out` describes a tile of WIDE_512 whole panels of rows
    /// inside C that belongs to the caller, with its epilogue's bias, scales and residual
    /// covering it.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(in super::super) unsafe fn deliver_wide<const H: usize>(
        c: [[__m512; WIDE_512]; H],
        out: &TileOut,
    ) {
        for (i, ci) in c.iter().enumerate() {
            let row = out.row + i;
            for (k, &v) in ci.iter().enumerate() {
                let col = out.col0 + k * NR;
                let at = row * out.cols + col;
                // SAFETY: as the caller guarantees.
                unsafe {
                    let dst = out.c.at(at);
                    _mm512_storeu_ps(dst, finish(v, out.epilogue, col, row, at, dst));
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use std::arch::x86_64::*;

    use super::{Epilogue, Rows, TileOut, MR, NR, PANEL_PREFETCH_BYTES};

    /// Asks for the panel line [`PANEL_PREFETCH_BYTES`] ahead of `bp`: the hardware's
    /// prefetchers alone kept the kernels waiting on their panels (ResNet-50 f32 on AVX2
    /// 45 -> 42 ms a picture with it).
    #[inline(always)]
    pub(in super::super) fn prefetch_panel(bp: *const u8) {
        // SAFETY: a prefetch never faults and reads nothing into the program: any address
        // is allowed (past the panel's end too, near its last depths).
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bp.wrapping_add(PANEL_PREFETCH_BYTES).cast()) };
    }

    /// The epilogue on eight outputs of row `row`, columns `col..col + 8` (`at` their offset
    /// in C): the operations of [`super::store_portable`] in the same order, so the same
    /// results.
    ///
    /// # Safety
    /// The CPU must support AVX2; bias (and scale) hold columns `col..col + 8`, the row
    /// scales row `row`, the residual `at..at + 8`; `c_at` is where
    /// output `at` lies in C (the residual's place when C holds it).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(in super::super) unsafe fn finish(
        v: __m256,
        epilogue: &Epilogue,
        col: usize,
        row: usize,
        at: usize,
        c_at: *const f32,
    ) -> __m256 {
        // SAFETY: as the caller guarantees.
        unsafe {
            let bias = _mm256_loadu_ps(epilogue.bias.as_ptr().add(col));
            let mut v = match epilogue.scale {
                Some(scale) => {
                    let s = _mm256_loadu_ps(scale.as_ptr().add(col));
                    let row_scale = _mm256_set1_ps(epilogue.row_scale.map_or(1.0, |r| r[row]));
                    _mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(v, s), row_scale), bias)
                }
                None => _mm256_add_ps(v, bias),
            };
            if let Some(res) = epilogue.residual {
                v = _mm256_add_ps(v, _mm256_loadu_ps(res.at(at, c_at)));
            }
            if epilogue.relu {
                // max(0, v) returns v when v is NaN, and -0.0 for -0.0: as the portable
                // comparison does.
                v = _mm256_max_ps(_mm256_setzero_ps(), v);
            }
            v
        }
    }

    /// Asks for the cache lines of a tile's outputs (and residual) while its products are
    /// computed: outputs are written once, to lines not yet in cache, and waiting for them
    /// at the store costs short products (1x1 convolutions of 64 channels) a third of
    /// their time.
    ///
    /// # Safety
    /// As [`deliver_tile`].
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(in super::super) unsafe fn prefetch_tile<const H: usize>(out: &TileOut) {
        for i in 0..H {
            let at = (out.row + i) * out.cols + out.col0;
            for offset in [at, at + NR - 1] {
                // SAFETY: as the caller guarantees: the tile's row lies inside C (and the
                // residual), so both ends of it do.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(out.c.at(offset) as *const i8);
                    if let Some(res) = out.epilogue.residual_tensor() {
                        _mm_prefetch::<_MM_HINT_T0>(res.as_ptr().add(offset) as *const i8);
                    }
                }
            }
        }
    }

    /// Delivers a tile (`c[i]`: row i's 16 columns): through the epilogue into C when `out`
    /// is given, else as they are into `acc`.
    ///
    /// # Safety
    /// The CPU must support AVX2; `out`, when given, describes a whole-width tile of rows
    /// inside C that belongs to the caller, with its epilogue's bias, scales and residual
    /// covering it.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(in super::super) unsafe fn deliver_tile<const H: usize>(
        c: [[__m256; 2]; H],
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) {
        let Some(out) = out else {
            for (ci, row) in c.iter().zip(acc.iter_mut()) {
                // SAFETY: each accumulator row holds NR = 16 floats.
                unsafe {
                    _mm256_storeu_ps(row.as_mut_ptr(), ci[0]);
                    _mm256_storeu_ps(row.as_mut_ptr().add(8), ci[1]);
                }
            }
            return;
        };
        for (i, ci) in c.iter().enumerate() {
            let row = out.row + i;
            for (half, &v) in ci.iter().enumerate() {
                let col = out.col0 + 8 * half;
                let at = row * out.cols + col;
                // SAFETY: as the caller guarantees.
                unsafe {
                    let dst = out.c.at(at);
                    _mm256_storeu_ps(dst, finish(v, out.epilogue, col, row, at, dst));
                }
            }
        }
    }

    /// [`super::store_portable`] for a whole row of NR columns, the same operations in the
    /// same order (so the same results), eight columns at a time.
    ///
    /// # Safety
    /// The CPU must support AVX2; `dst` holds NR values; bias (and scale) hold columns
    /// `col0..col0 + NR`, the row scales row `row`, the residual `at..at + NR`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub unsafe fn store(
        dst: &mut [f32],
        acc: &[f32; NR],
        epilogue: &Epilogue,
        col0: usize,
        row: usize,
        at: usize,
    ) {
        debug_assert_eq!(dst.len(), NR);
        for half in 0..2 {
            let o = half * 8;
            // SAFETY: as the caller guarantees; every access is o..o + 8 of a whole row.
            unsafe {
                let a = _mm256_loadu_ps(acc.as_ptr().add(o));
                let d = dst.as_mut_ptr().add(o);
                let v = finish(a, epilogue, col0 + o, row, at + o, d);
                _mm256_storeu_ps(d, v);
            }
        }
    }

    /// The 6 x 16 kernel: twelve accumulators, two panel loads and six broadcasts per step.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; rows `starts[i]` (i < height) plus every tap and
    /// depth must lie inside `a.data`; the panel must hold depth x NR values.
    /// Stores through `out` when given (returns true), else into `acc`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kernel(
        a: &Rows,
        starts: &[usize; MR],
        panel: &[f32],
        height: usize,
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) -> bool {
        debug_assert!(panel.len() >= a.depth() * NR);
        // SAFETY: forwarded from the caller.
        unsafe { for_height!(rows, height, (a, starts, panel, acc, out)) }
        out.is_some()
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn rows<const H: usize>(
        a: &Rows,
        starts: &[usize; MR],
        panel: &[f32],
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) {
        if let Some(out) = out {
            // SAFETY: as the caller guarantees.
            unsafe { prefetch_tile::<H>(out) };
        }
        let mut c = [[_mm256_setzero_ps(); 2]; H];
        let mut bp = panel.as_ptr();
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panel holds depth x NR values, read in order here.
            unsafe {
                let ap: [*const f32; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for k in 0..a.tap_depth() {
                    prefetch_panel(bp.cast());
                    let b0 = _mm256_loadu_ps(bp);
                    let b1 = _mm256_loadu_ps(bp.add(8));
                    bp = bp.add(NR);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x = _mm256_broadcast_ss(&*ap[i].add(k));
                        ci[0] = _mm256_fmadd_ps(x, b0, ci[0]);
                        ci[1] = _mm256_fmadd_ps(x, b1, ci[1]);
                    }
                }
            }
        }
        // SAFETY: as the caller guarantees.
        unsafe { deliver_tile(c, acc, out) };
    }
}

/// The f32 kernel on NEON: a 6 x 16 tile in 24 four-wide accumulators, fused multiply-adds in
/// the depth order of the portable and AVX2 kernels, so the same sums bit for bit. The tile is
/// left in `acc` and stored by [`store`] (the epilogue in plain Rust, vectorised by the
/// compiler: NEON is the aarch64 baseline).
#[cfg(target_arch = "aarch64")]
pub(super) mod neon {
    use std::arch::aarch64::*;

    use super::{Rows, MR, NR};

    neon_kernel_entry!(f32, "neon", "NEON");

    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn rows<const H: usize>(
        a: &Rows,
        starts: &[usize; MR],
        panel: &[f32],
        acc: &mut [[f32; NR]; MR],
    ) {
        let mut c = [[vdupq_n_f32(0.0); 4]; H];
        let mut bp = panel.as_ptr();
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panel holds depth x NR values, read in order here.
            unsafe {
                let ap: [*const f32; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for k in 0..a.tap_depth() {
                    let b = [
                        vld1q_f32(bp),
                        vld1q_f32(bp.add(4)),
                        vld1q_f32(bp.add(8)),
                        vld1q_f32(bp.add(12)),
                    ];
                    bp = bp.add(NR);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x = vdupq_n_f32(*ap[i].add(k));
                        for (cq, bq) in ci.iter_mut().zip(b) {
                            *cq = vfmaq_f32(*cq, x, bq);
                        }
                    }
                }
            }
        }
        for (ci, row) in c.iter().zip(acc.iter_mut()) {
            for (q, cq) in ci.iter().enumerate() {
                // SAFETY: each accumulator row holds NR = 16 floats.
                unsafe { vst1q_f32(row.as_mut_ptr().add(4 * q), *cq) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows are checked against their data whole: the furthest read is not always the last
    /// row's (here the second line of each image lies past the next image's first).
    #[test]
    fn rows_are_refused_when_any_line_reaches_past_the_data() {
        let data = vec![0f32; 100];
        let layout = RowLayout {
            lines: 3,
            line_len: 2,
            lines_per_image: 2,
            image_stride: 10,
            line_stride: 90,
            row_stride: 4,
            tap_depth: 4,
        };
        // Line 1 starts at 90: its second row reads 94..98, then tap 4 reads 98..102.
        assert!(Rows::new(&data, layout, &[0, 4]).is_err());
        // Line 2 (the last, at 10) alone would fit: so does the layout with line 1 shorter.
        let shorter = RowLayout {
            line_stride: 80,
            ..layout
        };
        let rows = Rows::new(&data, shorter, &[0, 4]).expect("every read inside the data");
        assert_eq!((rows.rows(), rows.depth()), (6, 8));
        assert!(Rows::matrix(&data, 10, 10).is_ok());
        assert!(Rows::matrix(&data, 10, 11).is_err());
        // Offsets that overflow are refused, not wrapped.
        let huge = RowLayout {
            row_stride: usize::MAX / 2,
            ..layout
        };
        assert!(Rows::new(&data, huge, &[0]).is_err());
    }

    /// Consecutive rows' starts, stepped along their lines, are the ones each row's own
    /// division gives: from any first row, across lines and images (an image stride apart
    /// from whole lines, a partial last image).
    #[test]
    fn row_starts_are_each_rows_own() {
        let data = vec![0f32; 4000];
        let layout = RowLayout {
            lines: 7,
            line_len: 5,
            lines_per_image: 3,
            image_stride: 1000,
            line_stride: 160,
            row_stride: 24,
            tap_depth: 8,
        };
        let rows = Rows::new(&data, layout, &[0, 8]).expect("every read inside the data");
        for first in 0..rows.rows() {
            for len in 0..=rows.rows() - first {
                let mut starts = vec![usize::MAX; len];
                rows.row_starts(first, &mut starts);
                let expected: Vec<usize> =
                    (first..first + len).map(|r| rows.row_start(r)).collect();
                assert_eq!(starts, expected, "rows {first}..{}", first + len);
            }
        }
        // One line of a plain matrix.
        let matrix = Rows::matrix(&data, 40, 100).expect("inside");
        let mut starts = [0usize; 6];
        matrix.row_starts(33, &mut starts);
        assert_eq!(starts, [3300, 3400, 3500, 3600, 3700, 3800]);
    }

    /// Blocks are whole tiles, fit the row-start buffer, and split the rows evenly: no block
    /// is much shorter than the others (each block streams all of B).
    #[test]
    fn row_blocks_are_even_whole_tiles() {
        let seven_by_seven = RowBlocks::new(49, MR);
        assert_eq!((seven_by_seven.blocks, seven_by_seven.range(0)), (1, 0..49));
        for mr in [4, MR] {
            for rows in 1..2000 {
                let blocks = RowBlocks::new(rows, mr);
                let ranges: Vec<_> = (0..blocks.blocks).map(|b| blocks.range(b)).collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[ranges.len() - 1].end, rows, "{rows} rows covered");
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                for pair in ranges.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start, "{rows} rows: contiguous");
                    assert_eq!(pair[0].len() % mr, 0, "{rows} rows: whole tiles");
                }
                let (min, max) = (lens.iter().min(), lens.iter().max());
                let (Some(&min), Some(&max)) = (min, max) else {
                    panic!("{rows} rows: no blocks")
                };
                assert!(
                    max <= MC_MAX,
                    "{rows} rows in tiles of {mr}: a block of {max}"
                );
                assert!(
                    max - min < 2 * mr,
                    "{rows} rows in tiles of {mr}: blocks of {lens:?}"
                );
            }
        }
    }

    /// A product over several row blocks and a partial panel: the vectorised and portable
    /// kernels, with every part of the epilogue, agree with a plain sum.
    #[test]
    fn products_match_a_plain_sum_with_the_epilogue() {
        let (rows, depth, cols) = (101, 37, 40);
        let a: Vec<f32> = (0..rows * depth)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let b: Vec<f32> = (0..depth * cols)
            .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
            .collect();
        let bias: Vec<f32> = (0..cols).map(|i| i as f32 * 0.01 - 0.2).collect();
        let residual: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 31) % 13) as f32 * 0.05 - 0.3)
            .collect();
        let packed = PackedB::new(depth, cols, &b);
        let epilogue = Epilogue {
            scale: None,
            row_scale: None,
            bias: &bias,
            residual: Some(Residual::Tensor(&residual)),
            relu: true,
        };
        // The same residual held by C, which the products write over.
        let in_c = Epilogue {
            residual: Some(Residual::InC),
            ..epilogue
        };
        let a_rows = Rows::matrix(&a, rows, depth).expect("a holds rows x depth");
        for kernels in Kernels::available() {
            let mut c = vec![f32::NAN; rows * cols];
            matmul(kernels, &a_rows, &packed, &epilogue, &mut c);
            let mut over = residual.clone();
            matmul(kernels, &a_rows, &packed, &in_c, &mut over);
            assert_eq!(over, c, "{kernels:?} over its residual");
            for r in 0..rows {
                for j in 0..cols {
                    let sum: f32 = (0..depth).map(|k| a[r * depth + k] * b[k * cols + j]).sum();
                    let want = (sum + bias[j] + residual[r * cols + j]).max(0.0);
                    let got = c[r * cols + j];
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{kernels:?} ({r}, {j}): {got} vs {want}"
                    );
                }
            }
        }
    }
}
