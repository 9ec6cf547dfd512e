//! int8 products on Intel AMX (Advanced Matrix Extensions: Sapphire Rapids and later Xeons).
//!
//! AMX has eight tile registers of up to 16 rows x 64 bytes and `tdpbusd`, which adds to a
//! 16 x 16 tile of i32 the products of a 16 x 64 tile of u8 (activations: 16 rows, 64 depth
//! values each) and a 16 x 64 tile of i8 laid out as 16 quads of depth x 16 channels x 4
//! bytes: 16,384 exact multiply-adds per instruction. That B layout is the packed int8 weight
//! panel of the model file (NR = 16 channels, four depth values per channel in a quad), so
//! panels are read from the mapped file as they are, 64 depth values (1,024 bytes) per tile.
//!
//! A task takes 32 rows of C (two A tiles) and two panels at a time (two B tiles): four C
//! tiles, each A and B tile used twice, the eight registers full. A tiles are read in place
//! where each half-block's 16 rows lie at one stride and a tap is whole tiles (`RowSource`),
//! else from the rows gathered into a buffer (each row's taps one after the other, zero past
//! the depth up to a whole tile). Sums are exact i32, as on every other kernel, and go through
//! the AVX-512 kernels' epilogue (`finish`; `matmul::store` for a partial panel), so an int8
//! model gives the same logits bit for bit on this level as on the others.
//!
//! The instructions are written as inline assembly: Rust's AMX intrinsics and target
//! features are not stable. Before a process may use the tile data, Linux wants it asked for
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, kernel 5.16 and later); detection
//! asks once, and the level exists only where the CPU has AMX-TILE and AMX-INT8, the OS saves
//! the tile state (XCR0) and the request was granted.

use std::arch::asm;
use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::super::matmul::{store, Epilogue, Rows, SharedOut, NR};
use super::super::Kernels;
use super::{PackedInt8, QUAD};
use crate::fast::aligned::AlignedBytes;

/// Depth values (bytes) in a tile row, and rows in a tile.
const TILE_DEPTH: usize = 64;
const TILE_ROWS: usize = 16;
/// Rows of C a task covers at a time: two A tiles.
const BLOCK_ROWS: usize = 2 * TILE_ROWS;
/// Bytes of one B tile row (a quad of depth for NR channels) and of one B tile (16 quads).
const B_ROW_BYTES: usize = QUAD * NR;
const B_TILE_BYTES: usize = TILE_DEPTH * NR;

/// Whether this CPU and OS run AMX int8 products (asked once per process).
pub(crate) fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| cpu_has_amx_int8() && os_grants_tile_data())
}

fn cpu_has_amx_int8() -> bool {
    use std::arch::x86_64::__cpuid_count;
    if __cpuid_count(0, 0).eax < 7 {
        return false;
    }
    let leaf7 = __cpuid_count(7, 0);
    let (tile, int8) = (leaf7.edx >> 24 & 1 == 1, leaf7.edx >> 25 & 1 == 1);
    let osxsave = __cpuid_count(1, 0).ecx >> 27 & 1 == 1;
    if !(tile && int8 && osxsave) {
        return false;
    }
    let (low, _high): (u32, u32);
    // SAFETY: `xgetbv` with ECX = 0 reads XCR0; the OS enabled it (OSXSAVE, checked above).
    unsafe {
        asm!("xgetbv", in("ecx") 0u32, out("eax") low, out("edx") _high, options(nomem, nostack));
    }
    // XTILECFG (bit 17) and XTILEDATA (bit 18): the OS saves the tile state.
    low >> 17 & 0b11 == 0b11
}

#[cfg(target_os = "linux")]
fn os_grants_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
    const XFEATURE_XTILEDATA: u64 = 18;
    let result: i64;
    // SAFETY: the arch_prctl system call with a request that only widens which state
    // components this process may use; it reads and writes no memory of ours. `syscall`
    // clobbers RCX and R11, declared.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => result,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    result == 0
}

#[cfg(not(target_os = "linux"))]
fn os_grants_tile_data() -> bool {
    false
}

/// The tile configuration `ldtilecfg` reads: palette 1, every register 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    bytes_per_row: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

/// A task's working memory, kept per thread (allocated for each task, it cost an int8
/// ResNet-50 pass about 2% of its time).
#[derive(Default)]
struct TaskBuffers {
    /// The gathered rows (BLOCK_ROWS x a whole number of tiles' depth).
    gathered: AlignedBytes,
    /// Where each tile of depth lies (see [`RowSource`]).
    tiles: Vec<(*const u8, *const u8)>,
}

thread_local! {
    static TASK_BUFFERS: RefCell<TaskBuffers> = RefCell::default();
}

/// C's rows among A's, in order, from A's row `first` on: the first `kept` rows of each of
/// A's lines (all of them where `kept` is the line's length). Into `targets`, (row of A -
/// `first`, row of C); returns how many.
fn kept_rows(a: &Rows<u8>, kept: usize, first: usize, targets: &mut [(usize, usize)]) -> usize {
    let (line_len, rows) = (a.line_len(), targets.len().min(a.rows() - first));
    if kept == line_len {
        // Every row (most products): no line to follow.
        for (i, target) in targets[..rows].iter_mut().enumerate() {
            *target = (i, first + i);
        }
        return rows;
    }
    let (mut line, mut pos) = (first / line_len, first % line_len);
    let mut count = 0;
    for i in 0..rows {
        if pos == line_len {
            (line, pos) = (line + 1, 0);
        }
        if pos < kept {
            targets[count] = (i, line * kept + pos);
            count += 1;
        }
        pos += 1;
    }
    count
}

/// `c = epilogue(a * b)` on AMX tiles, C's rows the first `kept` of each of A's lines
/// ([`kept_rows`]); `kernels` must be the AMX level (its stores are the AVX-512 level's).
pub(super) fn matmul_int8(
    kernels: Kernels,
    a: &Rows<u8>,
    kept: usize,
    b: &PackedInt8,
    epilogue: &Epilogue,
    c: &mut [f32],
) {
    let (rows, cols, depth) = (a.rows(), b.cols(), a.depth());
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(enabled(), "AMX products on a CPU or OS without them");
    assert_eq!(depth % QUAD, 0, "depth in whole quads");
    let c_rows = rows / a.line_len() * kept;
    epilogue.check(c_rows, cols, c);
    let panels = cols.div_ceil(NR);
    let pairs = panels.div_ceil(2);
    let blocks = rows.div_ceil(BLOCK_ROWS);
    // Enough tasks for every thread: panel pairs split into groups where rows are few.
    let threads = rayon::current_num_threads().max(1);
    let groups = if blocks >= 4 * threads {
        1
    } else {
        pairs.min((4 * threads).div_ceil(blocks))
    };
    let pairs_per_group = pairs.div_ceil(groups);
    // Rayon gives each thread runs of consecutive tasks. Numbered block by block, a thread's
    // run covers some rows and every panel, so each thread reads all of B; numbered group by
    // group, some panels and every row, so each thread reads all of A and C (which the next
    // layer's passes then read from the other core too). Whichever is less: the late layers'
    // weights are megabytes that come from the L3, and read by every thread they took
    // ResNet-50's 7x7 layers a quarter longer.
    let weight_bytes = panels * depth * NR;
    let c_bytes = c_rows * cols * std::mem::size_of::<f32>();
    let row_bytes = a.data().len() + c_bytes * if epilogue.residual.is_some() { 2 } else { 1 };
    let by_groups = weight_bytes > row_bytes;
    let out = SharedOut::new(c);
    (0..blocks * groups).into_par_iter().for_each(|task| {
        let (block, group) = if by_groups {
            (task % blocks, task / blocks)
        } else {
            (task / groups, task % groups)
        };
        let row0 = block * BLOCK_ROWS;
        let height = BLOCK_ROWS.min(rows - row0);
        let first = group * pairs_per_group * 2;
        let end = ((group + 1) * pairs_per_group * 2).min(panels);
        if first >= end {
            return;
        }
        let mut targets = [(0usize, 0usize); BLOCK_ROWS];
        let count = kept_rows(a, kept, row0, &mut targets[..height]);
        let targets = &targets[..count];
        if targets.is_empty() {
            return;
        }
        TASK_BUFFERS.with_borrow_mut(|buffers| {
            let source = RowSource::new(a, row0, height, buffers);
            let mut sums = [[0i32; 2 * NR]; BLOCK_ROWS];
            // SAFETY: this level exists only where `enabled()` found AMX-TILE and AMX-INT8
            // and the OS granted the tile data; the configuration is valid (palette 1,
            // 16 x 64 bytes).
            unsafe { load_config() };
            for p in (first..end).step_by(2) {
                // A lone last panel is paired with itself; its copy is not delivered.
                let second = if p + 1 < end { p + 1 } else { p };
                let (b0, b1) = (b.panel(p), b.panel(second));
                // SAFETY: as above; `source` gives 16 rows of 64 bytes at each of its tiles
                // (`RowSource`); each panel holds depth x NR bytes, read in whole tiles only
                // where they lie inside it.
                unsafe { products(&source, depth, b0, b1, &mut sums) };
                let delivered = if second > p { 2 } else { 1 };
                // SAFETY: this level has AVX-512 F; the targets' rows of C and the delivered
                // panels' columns lie inside C (`check` above, which also found the
                // epilogue's values covering them) and belong to this task alone (tasks split
                // A's rows into blocks, each row of C one row of A, and panels into groups).
                unsafe { deliver(kernels, &sums, targets, p, delivered, cols, epilogue, out) };
            }
            // SAFETY: as for `load_config`.
            unsafe { release() };
        });
    });
}

/// Where a block's A tiles are read: straight from the rows where each half's 16 rows lie at
/// one stride and every 64 depth values of a row are contiguous (taps of whole tiles: every
/// 1x1 and 3x3 convolution of a ResNet on 64-channel multiples, within a line of the output),
/// else from the rows gathered into a buffer.
struct RowSource<'a> {
    /// Each tile of depth: where its top and bottom 16 rows start.
    tiles: &'a [(*const u8, *const u8)],
    top_stride: usize,
    bottom_stride: usize,
}

impl<'a> RowSource<'a> {
    fn new(a: &Rows<u8>, row0: usize, height: usize, buffers: &'a mut TaskBuffers) -> Self {
        let (data, taps, tap_depth) = (a.data(), a.taps(), a.tap_depth());
        let mut starts = [0usize; BLOCK_ROWS];
        a.row_starts(row0, &mut starts[..height]);
        let starts = &starts[..height];
        let uniform = |rows: &[usize]| -> Option<usize> {
            let step = rows[1].checked_sub(rows[0])?;
            rows.windows(2)
                .all(|w| w[1].checked_sub(w[0]) == Some(step))
                .then_some(step)
        };
        let tiles = &mut buffers.tiles;
        tiles.clear();
        if height == BLOCK_ROWS && tap_depth % TILE_DEPTH == 0 {
            if let (Some(top), Some(bottom)) =
                (uniform(&starts[..TILE_ROWS]), uniform(&starts[TILE_ROWS..]))
            {
                let per_tap = tap_depth / TILE_DEPTH;
                tiles.extend((0..taps.len() * per_tap).map(|k| {
                    let offset = taps[k / per_tap] + (k % per_tap) * TILE_DEPTH;
                    let at = |row: usize| data[starts[row] + offset..].as_ptr();
                    (at(0), at(TILE_ROWS))
                }));
                return Self {
                    tiles,
                    top_stride: top,
                    bottom_stride: bottom,
                };
            }
        }
        let gathered = &mut buffers.gathered;
        let stride = gather(a, starts, gathered);
        let base = gathered.as_ptr();
        tiles.extend((0..stride / TILE_DEPTH).map(|k| {
            // SAFETY: both offsets lie inside `gathered` (BLOCK_ROWS rows of `stride`).
            unsafe {
                (
                    base.add(k * TILE_DEPTH),
                    base.add(TILE_ROWS * stride + k * TILE_DEPTH),
                )
            }
        }));
        Self {
            tiles,
            top_stride: stride,
            bottom_stride: stride,
        }
    }
}

/// A block's sums (`delivered` panels from `p`) through the epilogue into C, each target's
/// (row of the block, row of C): whole panels by [`deliver_whole`], a partial last panel
/// through `store`.
///
/// # Safety
/// The CPU must support AVX-512 F; the targets' rows of C and the panels' columns lie inside
/// C (`cols` wide), and no other task writes them; the epilogue's values cover them.
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn deliver(
    kernels: Kernels,
    sums: &[[i32; 2 * NR]; BLOCK_ROWS],
    targets: &[(usize, usize)],
    p: usize,
    delivered: usize,
    cols: usize,
    epilogue: &Epilogue,
    out: SharedOut,
) {
    let col0 = p * NR;
    let whole = delivered.min((cols - col0) / NR);
    // SAFETY: as the caller guarantees; the first `whole` panels lie inside C.
    unsafe {
        match whole {
            2 => deliver_whole::<2>(sums, targets, col0, cols, epilogue, out),
            1 => deliver_whole::<1>(sums, targets, col0, cols, epilogue, out),
            _ => {}
        }
    }
    for j in whole..delivered {
        let col = col0 + j * NR;
        for &(i, row) in targets {
            let (row_sums, at) = (&sums[i], row * cols + col);
            let acc: [f32; NR] = std::array::from_fn(|k| row_sums[j * NR + k] as f32);
            // SAFETY: as the caller guarantees.
            let dst = unsafe { out.row(at, cols - col) };
            store(kernels, dst, &acc, epilogue, col, row, at);
        }
    }
}

/// `PANELS` whole panels of sums from column `col0` through the epilogue into C (each
/// target's row of `sums` into its row of C), in the order of operations of the AVX-512
/// kernels' `finish` (so the same values; a missing scale is 1, which multiplies exactly).
///
/// The per-column values are loaded once and the epilogue's options settled before the loop,
/// over a panel count known at compile time: read from the epilogue inside a loop, as `finish`
/// does, whether the compiler kept them in registers was chance, and where it did not (one
/// build in two alike) delivery took twice as long, an int8 ResNet-50 pass 7.5 -> 9.5 ms on a
/// Xeon.
///
/// # Safety
/// The CPU must support AVX-512 F; the targets' rows of `sums` exist, their rows of C and
/// columns `col0..col0 + PANELS * NR` lie inside C (`cols` wide), and no other task writes
/// them; the epilogue's values cover them.
#[target_feature(enable = "avx512f")]
unsafe fn deliver_whole<const PANELS: usize>(
    sums: &[[i32; 2 * NR]; BLOCK_ROWS],
    targets: &[(usize, usize)],
    col0: usize,
    cols: usize,
    epilogue: &Epilogue,
    out: SharedOut,
) {
    use std::arch::x86_64::*;
    let one = _mm512_set1_ps(1.0);
    let columns = |values: &[f32]| -> [__m512; PANELS] {
        std::array::from_fn(|j| {
            // SAFETY: the epilogue's values cover every column of C, these panels' among them.
            unsafe { _mm512_loadu_ps(values.as_ptr().add(col0 + j * NR)) }
        })
    };
    let bias = columns(epilogue.bias);
    let scale = epilogue.scale.map_or([one; PANELS], columns);
    // max(floor, v): the ReLU with a floor of 0 (v where v is NaN, -0.0 for -0.0, as the
    // portable comparison does), none with -inf.
    let floor = _mm512_set1_ps(if epilogue.relu {
        0.0
    } else {
        f32::NEG_INFINITY
    });
    for &(i, row) in targets {
        let row_sums = &sums[i];
        let at = row * cols + col0;
        let row_scale = epilogue.row_scale.map_or(one, |r| _mm512_set1_ps(r[row]));
        for j in 0..PANELS {
            // SAFETY: as the caller guarantees: `row_sums` holds 2 x NR sums, the residual
            // has C's shape (or is C) and this panel's NR columns of the row lie inside C.
            unsafe {
                let v = _mm512_cvtepi32_ps(_mm512_loadu_si512(
                    row_sums.as_ptr().add(j * NR) as *const __m512i
                ));
                let mut v = _mm512_add_ps(
                    _mm512_mul_ps(_mm512_mul_ps(v, scale[j]), row_scale),
                    bias[j],
                );
                let dst = out.row(at + j * NR, NR).as_mut_ptr();
                if let Some(residual) = epilogue.residual {
                    v = _mm512_add_ps(v, _mm512_loadu_ps(residual.at(at + j * NR, dst)));
                }
                _mm512_storeu_ps(dst, _mm512_max_ps(floor, v));
            }
        }
    }
}

/// Gathers the rows starting at `starts` (each row's taps one after the other) into
/// `gathered`, zero from the depth to a whole number of tiles; returns the row stride.
fn gather(a: &Rows<u8>, starts: &[usize], gathered: &mut AlignedBytes) -> usize {
    let depth = a.depth();
    // Whole tiles a row: each row starts on a cache line, as the buffer does.
    let stride = depth.div_ceil(TILE_DEPTH) * TILE_DEPTH;
    gathered.reset(BLOCK_ROWS * stride);
    let (data, taps, tap_depth) = (a.data(), a.taps(), a.tap_depth());
    for (i, row) in gathered.chunks_exact_mut(stride).enumerate() {
        if let Some(&start) = starts.get(i) {
            for (t, &tap) in taps.iter().enumerate() {
                row[t * tap_depth..(t + 1) * tap_depth]
                    .copy_from_slice(&data[start + tap..start + tap + tap_depth]);
            }
        } else {
            // Rows past C's end: any values would do (their sums are not stored); zeros.
            row[..depth].fill(0);
        }
        row[depth..].fill(0);
    }
    stride
}

/// # Safety
/// The CPU must have AMX-TILE, and the OS must have granted this process the tile data.
unsafe fn load_config() {
    // SAFETY: as the caller guarantees; CONFIG is 64 bytes, 64-aligned.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
}

/// # Safety
/// As for [`load_config`].
unsafe fn release() {
    // SAFETY: as the caller guarantees.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// The sums of a block's 32 rows against two panels, into `sums` (row-major, 32 columns).
///
/// # Safety
/// As for [`load_config`], with the configuration loaded on this thread; each of `source`'s
/// tiles has 16 rows of 64 readable bytes from its top (at `top_stride`) and its bottom (at
/// `bottom_stride`), and it has at least `depth` / 64 tiles (rounded up); `b0` and `b1` hold
/// `depth` x NR bytes each (`depth` a multiple of QUAD).
unsafe fn products(
    source: &RowSource,
    depth: usize,
    b0: &[u8],
    b1: &[u8],
    sums: &mut [[i32; 2 * NR]; BLOCK_ROWS],
) {
    debug_assert!(source.tiles.len() >= depth.div_ceil(TILE_DEPTH));
    debug_assert!(b0.len() >= depth * NR && b1.len() >= depth * NR);
    let whole = depth / TILE_DEPTH;
    let (ts, bs) = (source.top_stride, source.bottom_stride);
    // SAFETY: (the whole function) as the caller guarantees: whole B tiles lie inside the
    // panels; the tail's B tiles are copied into zero-padded buffers (and the gathered rows
    // are zero past the depth).
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
        for (k, &(top, bottom)) in source.tiles.iter().enumerate().take(whole) {
            product_step(
                top,
                ts,
                bottom,
                bs,
                b0.as_ptr().add(k * B_TILE_BYTES),
                b1.as_ptr().add(k * B_TILE_BYTES),
            );
        }
        let tail = depth * NR - whole * B_TILE_BYTES;
        if tail > 0 {
            let mut t0 = [0u8; B_TILE_BYTES];
            let mut t1 = [0u8; B_TILE_BYTES];
            t0[..tail].copy_from_slice(&b0[whole * B_TILE_BYTES..depth * NR]);
            t1[..tail].copy_from_slice(&b1[whole * B_TILE_BYTES..depth * NR]);
            let (top, bottom) = source.tiles[whole];
            product_step(top, ts, bottom, bs, t0.as_ptr(), t1.as_ptr());
        }
        let row_bytes = 2 * NR * std::mem::size_of::<i32>();
        let top = sums.as_mut_ptr() as *mut u8;
        let bottom = top.add(TILE_ROWS * row_bytes);
        asm!(
            "tilestored [{top} + {s}*1], tmm0",
            "tilestored [{top_right} + {s}*1], tmm1",
            "tilestored [{bottom} + {s}*1], tmm2",
            "tilestored [{bottom_right} + {s}*1], tmm3",
            top = in(reg) top,
            top_right = in(reg) top.add(NR * 4),
            bottom = in(reg) bottom,
            bottom_right = in(reg) bottom.add(NR * 4),
            s = in(reg) row_bytes,
            options(nostack)
        );
    }
}

/// One tile of depth: tmm0..3 += (rows 0-15, 16-31) x (panel 0, panel 1).
///
/// # Safety
/// As for [`products`]: 16 rows of 64 bytes at `a_top` (stride `top_stride`) and at
/// `a_bottom` (stride `bottom_stride`), and 1,024 bytes at `b0` and at `b1`.
#[inline(always)]
unsafe fn product_step(
    a_top: *const u8,
    top_stride: usize,
    a_bottom: *const u8,
    bottom_stride: usize,
    b0: *const u8,
    b1: *const u8,
) {
    // SAFETY: as the caller guarantees.
    unsafe {
        asm!(
            "tileloadd tmm4, [{a_top} + {ts}*1]",
            "tileloadd tmm6, [{b0} + {b}*1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {b}*1]",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a_bottom} + {bs}*1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            a_top = in(reg) a_top,
            a_bottom = in(reg) a_bottom,
            ts = in(reg) top_stride,
            bs = in(reg) bottom_stride,
            b0 = in(reg) b0,
            b1 = in(reg) b1,
            b = in(reg) B_ROW_BYTES,
            options(nostack, readonly)
        );
    }
}
