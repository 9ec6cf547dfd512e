//! int8 convolutions: activations quantised to u8 in 0..=63 (per tensor, or per pixel for 1x1
//! convolutions), weights i8 per output channel, products summed exactly in i32.
//!
//! Weights are used in the layout the exported file stores them in (see
//! `docs/model-format.md`), so an int8 model runs straight from the memory-mapped file:
//! panels of [`NR`] output channels (the format's
//! [`PANEL_CHANNELS`](crate::format::int8::PANEL_CHANNELS)); in a panel, for each group of four consecutive depth
//! values (depth running over (ky, kx, ci) with ci padded to a multiple of four), the four
//! bytes of each of the NR channels. An AVX2 register then holds 8 channels x 4 depths, which
//! `vpmaddubsw` (u8 x i8, pairs summed to i16) and `vpmaddwd` (by 1, pairs summed to i32)
//! turn into 8 channel sums. Weights are quantised to -127..=127 and activations to 0..=63, so
//! two quads' i16 sums add up without saturating (2 x 2 x 63 x 127 = 32004 < 32767) before
//! one `vpmaddwd` widens them: on CPUs with one vector integer multiplier that is 3 multiply
//! instructions per 64 products instead of 4. CPUs with VNNI do a quad in one `vpdpbusd`
//! (u8 x i8, four products summed into i32), on 256 bits (AVX-VNNI) or a whole panel row on
//! 512 (AVX-512 VNNI). The integer results are exact, the same on every kernel. (Weights lose more than activations: -63..=63 weights with 0..=127 activations, the
//! other way to the same headroom, changed the top-1 answer of 5% of a weak model's test
//! scans, this way under 1%; 1x1 convolutions get a scale per pixel, see [`QuantizedNhwc`].)

use std::ops::Deref;
use std::sync::Arc;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
pub(super) mod amx;

use super::aligned::AlignedBytes;
use super::matmul::{for_each_tile, wide, Epilogue, Rows, TileOut, MR, NR};
use super::{Kernels, Level};

use crate::format::int8::{pack, padded_channels, quantize_rows, DEPTH_GROUP, PANEL_CHANNELS};

/// Depth values per group (one `vpmaddubsw` lane group).
pub const QUAD: usize = 4;
/// Largest quantised activation: with the format's weight maximum (127), two quads of
/// u8 x i8 products sum inside i16.
pub const ACTIVATION_MAX: f32 = 63.0;
/// Rows of a tile on the int8 kernels (eight accumulators and their temporaries fit the
/// sixteen AVX registers).
const MR_INT8: usize = 4;

// The kernels read weights in the file's packed layout: their register blocking (NR channels,
// QUAD depths) must be the format's panel, or every int8 model would be read wrong.
const _: () = assert!(NR == PANEL_CHANNELS && QUAD == DEPTH_GROUP);

/// Bytes of a packed weight: a range of the memory-mapped model file, or owned.
#[derive(Clone)]
pub enum WeightBytes {
    Mapped {
        map: Arc<memmap2::Mmap>,
        range: std::ops::Range<usize>,
    },
    Owned(AlignedBytes),
}

impl Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            WeightBytes::Mapped { map, range } => &map[range.clone()],
            WeightBytes::Owned(v) => v,
        }
    }
}

/// A convolution's int8 weights: packed, with a scale per output channel.
pub struct PackedInt8 {
    pub bytes: WeightBytes,
    pub scales: Vec<f32>,
    depth: usize,
    cols: usize,
}

impl PackedInt8 {
    /// `bytes` in the packed layout of a cout x cin x k x k weight.
    pub fn new(bytes: WeightBytes, scales: Vec<f32>, cout: usize, cin: usize, k: usize) -> Self {
        let depth = k * k * padded_channels(cin);
        assert_eq!(bytes.len(), cout.div_ceil(NR) * depth * NR, "packed size");
        assert_eq!(scales.len(), cout, "one scale per output channel");
        Self {
            bytes,
            scales,
            depth,
            cols: cout,
        }
    }

    /// Quantises and packs (cout, cin, k, k) f32 weights, as an int8 export does.
    pub fn from_f32(weight: &[f32], cout: usize, cin: usize, k: usize) -> Self {
        let (q, scales) = quantize_rows(weight, cout);
        Self::new(
            WeightBytes::Owned(AlignedBytes::from_slice(&pack(&q, cout, cin, k))),
            scales,
            cout,
            cin,
            k,
        )
    }

    /// Output channels (columns of C).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn cols(&self) -> usize {
        self.cols
    }

    /// Panel `p`: its depth x NR bytes.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(super) fn panel(&self, p: usize) -> &[u8] {
        self.panels(p, 1)
    }

    /// Panels `p..p + count`, one after the other.
    fn panels(&self, p: usize, count: usize) -> &[u8] {
        &self.bytes[p * self.depth * NR..(p + count) * self.depth * NR]
    }
}

/// NHWC activations quantised to 0..=ACTIVATION_MAX (`value = q * scale`), channels padded to whole
/// quads with zeros, and optionally `pad` zero pixels around each image. One scale for the
/// tensor, or one per pixel: a 1x1 convolution's output row reads one pixel, so its scale
/// factors out of the row's sums, and each pixel gets the whole range.
pub struct QuantizedNhwc {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    /// Channels as stored (padded to a multiple of four).
    pub c: usize,
    pub scale: f32,
    /// Per-pixel scales (unpadded pixels, NHW order) instead of `scale`.
    pub pixel_scales: Option<Vec<f32>>,
    /// n x h x w x c values; where padded, followed by twice the padding's width of zero
    /// pixels (see [`quantize`]).
    pub data: AlignedBytes,
}

/// Quantises values to `dst` with `inv = 1 / scale`: `trunc(clamp(v * inv, 0, MAX) + 0.5)`.
#[inline]
fn quantize_values(kernels: Kernels, dst: &mut [u8], values: &[f32], inv: f32) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: this level exists only where the CPU has AVX-512 F/BW/VL.
        k if k.avx512() => unsafe { avx512::quantize_values(dst, values, inv) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernels` above portable exist only where the CPU has AVX2.
        k if k.avx2() => unsafe { avx2::quantize_values(dst, values, inv) },
        _ => quantize_values_portable(dst, values, inv),
    }
}

/// One pixel's channels quantised into the start of `dst` (its channels padded to a
/// multiple of four), the padding after them zeroed.
#[inline]
fn quantize_pixel(kernels: Kernels, dst: &mut [u8], pixel: &[f32], inv: f32) {
    let (values, padding) = dst.split_at_mut(pixel.len());
    quantize_values(kernels, values, pixel, inv);
    padding.fill(0);
}

#[inline]
fn quantize_values_portable(dst: &mut [u8], values: &[f32], inv: f32) {
    for (q, &v) in dst.iter_mut().zip(values) {
        let scaled = v * inv;
        let clamped = if scaled > ACTIVATION_MAX {
            ACTIVATION_MAX
        } else if scaled > 0.0 {
            scaled
        } else {
            0.0
        };
        // Round half up by truncation of a non-negative value.
        *q = (clamped + 0.5) as u8;
    }
}

/// The largest of `values` and 0.
#[inline]
fn max_of(kernels: Kernels, values: &[f32]) -> f32 {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: this level exists only where the CPU has AVX-512 F/BW/VL.
        k if k.avx512() => unsafe { avx512::max_of(values) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernels` above portable exist only where the CPU has AVX2.
        k if k.avx2() => unsafe { avx2::max_of(values) },
        _ => values.iter().fold(0f32, |m, &v| if v > m { v } else { m }),
    }
}

fn scale_for(max: f32) -> f32 {
    if max > 0.0 && max.is_finite() {
        max / ACTIVATION_MAX
    } else {
        1.0
    }
}

/// Pixels (`values`, one per scale, their channels one after the other) quantised each with
/// its own scale (into `scales`) to `dst`, each pixel padded to a multiple of four channels.
///
/// In three steps over the pixels, maxima, scales, values: pixel by pixel, each waited on its
/// maximum's reduction and two divisions before its values could go, and those chains bounded
/// the smaller pixels' pass (ResNet-50's 1x1 inputs on an AMX Xeon: 0.98 -> 0.86 ms a pass,
/// per-layer probe). The same operations on the same values: the same bytes and scales.
fn quantize_pixels(kernels: Kernels, dst: &mut [u8], scales: &mut [f32], values: &[f32]) {
    let pixels = scales.len();
    if pixels == 0 {
        return;
    }
    let channels = values.len() / pixels;
    let stride = dst.len() / pixels;
    assert!(
        channels > 0 && channels <= stride && channels * pixels == values.len(),
        "whole pixels, each inside its padded place"
    );
    for (scale, pixel) in scales.iter_mut().zip(values.chunks_exact(channels)) {
        *scale = max_of(kernels, pixel);
    }
    for scale in scales.iter_mut() {
        *scale = scale_for(*scale);
    }
    for ((d, scale), pixel) in dst
        .chunks_exact_mut(stride)
        .zip(scales.iter())
        .zip(values.chunks_exact(channels))
    {
        quantize_pixel(kernels, d, pixel, 1.0 / *scale);
    }
}

/// Quantises non-negative activations with one scale per pixel (no padding: for 1x1
/// convolutions).
pub fn quantize_per_pixel(
    kernels: Kernels,
    data: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    buffer: AlignedBytes,
) -> QuantizedNhwc {
    let cp = padded_channels(c);
    // Every byte is written below (no zeroing pass over the whole buffer first).
    let mut out = buffer;
    out.reset(n * h * w * cp);
    let mut scales = vec![0f32; n * h * w];
    out.par_chunks_mut(w * cp)
        .zip(scales.par_chunks_mut(w))
        .zip(data.par_chunks(w * c))
        .for_each(|((dst, scales), src)| quantize_pixels(kernels, dst, scales, src));
    QuantizedNhwc {
        n,
        h,
        w,
        c: cp,
        scale: 1.0,
        pixel_scales: Some(scales),
        data: out,
    }
}

/// Quantises non-negative activations (negative values, which a ReLU never leaves, become 0).
pub fn quantize(
    kernels: Kernels,
    data: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    pad: usize,
    buffer: AlignedBytes,
) -> QuantizedNhwc {
    let max = data
        .par_chunks(4096)
        .map(|chunk| max_of(kernels, chunk))
        .reduce(|| 0.0, f32::max);
    let scale = scale_for(max);
    let inv = 1.0 / scale;
    let (hp, wp, cp) = (h + 2 * pad, w + 2 * pad, padded_channels(c));
    // Every byte is written below, the padding as zeros (no zeroing pass over the whole
    // buffer first: it was a tenth of quantisation's time).
    let mut out = buffer;
    // Past the last image, `2 * pad` zero pixels: a stride-1 convolution's rows taken over the
    // padded width (`matmul_int8_lines`) read that far from the last row's start.
    let len = n * hp * wp * cp;
    out.reset(len + 2 * pad * cp);
    let (lines, tail) = out.split_at_mut(len);
    tail.fill(0);
    lines
        .par_chunks_mut(wp * cp)
        .enumerate()
        .for_each(|(line, dst)| {
            let (b, y) = (line / hp, line % hp);
            if y < pad || y >= pad + h {
                dst.fill(0);
                return;
            }
            let (left, rest) = dst.split_at_mut(pad * cp);
            let (pixels, right) = rest.split_at_mut(w * cp);
            left.fill(0);
            right.fill(0);
            let src = &data[(b * h + y - pad) * w * c..(b * h + y - pad + 1) * w * c];
            for (d, pixel) in pixels.chunks_exact_mut(cp).zip(src.chunks_exact(c)) {
                quantize_pixel(kernels, d, pixel, inv);
            }
        });
    QuantizedNhwc {
        n,
        h: hp,
        w: wp,
        c: cp,
        scale,
        pixel_scales: None,
        data: out,
    }
}

/// `c = epilogue(a * b)` for u8 rows and packed int8 weights; `epilogue.scale` must hold the
/// activation scale times each channel's weight scale.
pub fn matmul_int8(
    kernels: Kernels,
    a: &Rows<u8>,
    b: &PackedInt8,
    epilogue: &Epilogue,
    c: &mut [f32],
) {
    matmul_int8_lines(kernels, a, a.line_len(), b, epilogue, c);
}

/// [`matmul_int8`] where only the first `kept` rows of each line of A are rows of C (in
/// order): a stride-1 convolution's rows taken over the padded input's whole width, so that
/// each image's rows lie at one stride and AMX reads its tiles in place rather than
/// gathering them (the rows past the output's width are computed and dropped there). Every
/// other level reads only the kept rows. The sums, and C, are those of `a.narrowed(kept)`.
pub fn matmul_int8_lines(
    kernels: Kernels,
    a: &Rows<u8>,
    kept: usize,
    b: &PackedInt8,
    epilogue: &Epilogue,
    c: &mut [f32],
) {
    assert_eq!(a.depth(), b.depth, "depth of A and B");
    assert_eq!(a.tap_depth() % QUAD, 0, "tap depth in whole quads");
    assert!(kept <= a.line_len(), "kept rows within a line");
    #[cfg(target_arch = "x86_64")]
    if kernels.level() == Level::Amx {
        amx::matmul_int8(kernels, a, kept, b, epilogue, c);
        return;
    }
    let a = &a.narrowed(kept);
    for_each_tile(
        kernels,
        |first, starts| a.row_starts(first, starts),
        a.rows(),
        b.cols,
        // `vpdpbusd`, `sdot` and `smmla` need no temporaries: six rows' accumulators fit the
        // registers.
        if matches!(
            kernels.level(),
            Level::AvxVnni | Level::Avx512Vnni | Level::Amx | Level::NeonDot | Level::NeonI8mm
        ) {
            MR
        } else {
            MR_INT8
        },
        wide(kernels),
        epilogue,
        c,
        |starts, height, p, acc, out| {
            let count = out.map_or(1, TileOut::panels);
            kernel(kernels, a, starts, b.panels(p, count), height, acc, out)
        },
    );
}

// Only the vectorised kernels store from their registers (`out`).
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn kernel(
    kernels: Kernels,
    a: &Rows<u8>,
    starts: &[usize; MR],
    panel: &[u8],
    height: usize,
    acc: &mut [[f32; NR]; MR],
    out: Option<&TileOut>,
) -> bool {
    // SAFETY: (every arm) a `Kernels` level exists only where the CPU has its instructions;
    // `Rows` exist only with every row, tap and depth inside their data (`Rows::new`), and the
    // panel holds depth x NR bytes; `for_each_tile` gives `out` only for whole-width tiles of
    // its own, inside C.
    match kernels.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see above: this level exists only where the CPU has its instructions.
        Level::Avx512Vnni | Level::Amx => unsafe {
            vnni::kernel_512(a, starts, panel, height, acc, out)
        },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see above: this level exists only where the CPU has its instructions.
        Level::AvxVnni => unsafe { vnni::kernel_256(a, starts, panel, height, acc, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: see above: this level exists only where the CPU has its instructions.
        Level::Avx2 => unsafe { avx2::kernel(a, starts, panel, height, acc, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: see above: this level exists only where the CPU has NEON and `sdot`.
        Level::NeonDot => unsafe { neon_dot::kernel(a, starts, panel, height, acc) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: see above: this level exists only where the CPU has NEON and `smmla`.
        Level::NeonI8mm => unsafe { neon_i8mm::kernel(a, starts, panel, height, acc) },
        _ => {
            portable_kernel(a, starts, panel, height, acc);
            false
        }
    }
}

/// `fn $name(acc, a, b) -> acc`: one NEON instruction that adds i8 x i8 products of `a` and
/// `b` (16 bytes each) into four i32 lanes of `acc` (`sdot`, `smmla`), as inline assembly: the
/// intrinsics of these extensions are not stable in this Rust. Calling it needs the CPU to
/// have `$features`.
#[cfg(target_arch = "aarch64")]
macro_rules! neon_i8_accumulate {
    ($name:ident, $features:literal, $what:literal) => {
        #[doc = $what]
        ///
        /// # Safety
        #[doc = concat!("The CPU must support `", $features, "`.")]
        #[target_feature(enable = $features)]
        #[inline]
        unsafe fn $name(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
            let mut acc = acc;
            // SAFETY: a register-only instruction, on a CPU that has it (as the caller
            // guarantees).
            unsafe {
                std::arch::asm!(
                    concat!(stringify!($name), " {acc:v}.4s, {a:v}.16b, {b:v}.16b"),
                    acc = inout(vreg) acc,
                    a = in(vreg) a,
                    b = in(vreg) b,
                    options(pure, nomem, nostack, preserves_flags)
                );
            }
            acc
        }
    };
}

/// int8 products on aarch64 with the dot-product instructions: `sdot` sums four u8 x i8
/// products per lane into i32, exactly (activations are 0..=63, the same bytes as i8), so the
/// integer results are those of every other kernel. A quad of the panel (16 channels x 4
/// depths) is four 16-byte loads; each row's four activation bytes are repeated in every lane.
#[cfg(target_arch = "aarch64")]
mod neon_dot {
    use std::arch::aarch64::*;

    use super::{Rows, MR, NR, QUAD};

    neon_i8_accumulate!(
        sdot,
        "neon,dotprod",
        "`acc + a . b` in each 32-bit lane over its four bytes (`sdot`)."
    );

    neon_kernel_entry!(u8, "neon,dotprod", "NEON and the dot-product instructions");

    #[target_feature(enable = "neon,dotprod")]
    #[inline]
    unsafe fn rows<const H: usize>(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        acc: &mut [[f32; NR]; MR],
    ) {
        let mut c = [[vdupq_n_s32(0); 4]; H];
        let mut bp = panel.as_ptr() as *const i8;
        let quads = a.tap_depth() / QUAD;
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panel holds depth x NR bytes, read in order here; the
            // CPU has the dot-product instructions.
            unsafe {
                let ap: [*const u8; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for q in 0..quads {
                    let b = [
                        vld1q_s8(bp),
                        vld1q_s8(bp.add(16)),
                        vld1q_s8(bp.add(32)),
                        vld1q_s8(bp.add(48)),
                    ];
                    bp = bp.add(NR * QUAD);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let word = std::ptr::read_unaligned(ap[i].add(q * QUAD) as *const u32);
                        let x = vreinterpretq_s8_u32(vdupq_n_u32(word));
                        for (cg, bg) in ci.iter_mut().zip(b) {
                            *cg = sdot(*cg, bg, x);
                        }
                    }
                }
            }
        }
        // Exact i32 sums to f32, as the portable kernel converts them.
        for (ci, row) in c.iter().zip(acc.iter_mut()) {
            for (g, cg) in ci.iter().enumerate() {
                // SAFETY: each accumulator row holds NR = 16 floats.
                unsafe { vst1q_f32(row.as_mut_ptr().add(4 * g), vcvtq_f32_s32(*cg)) };
            }
        }
    }
}

/// int8 products on aarch64 with the int8 matrix-multiply instructions: `smmla` multiplies a
/// 2 x 8 matrix of i8 by an 8 x 2 one into a 2 x 2 block of i32 sums, exactly (activations
/// are 0..=63, the same bytes as i8), so the integer results are those of every other kernel.
/// A tile of six rows is three row pairs, each pair's eight depths one register (two rows'
/// bytes side by side); the panel's two quads of four depths for 16 channels are four 16-byte
/// loads each, which `zip1`/`zip2` on 32-bit lanes turn into eight channel pairs of eight
/// depths. Each accumulator holds one row pair x channel pair; 24 of them cover 6 x 16.
#[cfg(target_arch = "aarch64")]
mod neon_i8mm {
    use std::arch::aarch64::*;

    use super::{Rows, MR, NR, QUAD};

    /// Row pairs of a tile.
    const PAIRS: usize = MR / 2;
    /// Channel pairs of a panel.
    const CHANNEL_PAIRS: usize = NR / 2;

    neon_i8_accumulate!(
        smmla,
        "neon,i8mm",
        "`acc + a . bᵀ` for `a` and `b` each two rows of eight i8 (`smmla`): lanes (a0.b0, \
         a0.b1, a1.b0, a1.b1)."
    );

    neon_kernel_entry!(
        u8,
        "neon,i8mm",
        "NEON and the int8 matrix-multiply instructions"
    );

    /// Rows `2p` and `2p + 1` (zeros past the tile's height) of `bytes` depths from `at`,
    /// side by side; `bytes` is 8, or 4 for a tap's last odd quad (the rest zeros).
    ///
    /// # Safety
    /// `ap[i] + at .. + bytes` must lie inside A for every row i < H.
    #[target_feature(enable = "neon,i8mm")]
    #[inline]
    unsafe fn row_pair<const H: usize>(
        ap: &[*const u8; H],
        p: usize,
        at: usize,
        bytes: usize,
    ) -> int8x16_t {
        let read = |i: usize| -> u64 {
            if i >= H {
                return 0;
            }
            // SAFETY: row i < H, `bytes` from `at` inside A (the caller's guarantee).
            unsafe {
                if bytes == 8 {
                    std::ptr::read_unaligned(ap[i].add(at) as *const u64)
                } else {
                    u64::from(std::ptr::read_unaligned(ap[i].add(at) as *const u32))
                }
            }
        };
        vreinterpretq_s8_u64(vcombine_u64(
            vcreate_u64(read(2 * p)),
            vcreate_u64(read(2 * p + 1)),
        ))
    }

    /// Adds one step of depths to the tile: two quads (`BOTH`), or a tap's odd last quad
    /// (the second quad's place zeros in A and B). Returns the panel after it.
    ///
    /// # Safety
    /// `ap[i] + at` and the step's depths must lie inside A for every row i < H, and the
    /// panel at `bp` must hold the step's quads; the CPU must have `smmla`.
    #[target_feature(enable = "neon,i8mm")]
    #[inline]
    unsafe fn step<const H: usize, const BOTH: bool>(
        c: &mut [[int32x4_t; CHANNEL_PAIRS]; PAIRS],
        ap: &[*const u8; H],
        at: usize,
        bp: *const u32,
    ) -> *const u32 {
        let pairs = H.div_ceil(2);
        let bytes = if BOTH { 2 * QUAD } else { QUAD };
        // SAFETY: (the whole block) forwarded from the caller: rows, depths and panel
        // inside their data, the instructions on this CPU.
        unsafe {
            let x: [int8x16_t; PAIRS] = std::array::from_fn(|p| {
                if p < pairs {
                    row_pair(ap, p, at, bytes)
                } else {
                    vdupq_n_s8(0)
                }
            });
            // Four channels a load: (c, c+1, c+2, c+3) x depths 0..4 of the first quad, and
            // of the second (zeros after an odd last quad).
            for g in 0..NR / 4 {
                let first = vld1q_u32(bp.add(4 * g));
                let second = if BOTH {
                    vld1q_u32(bp.add(NR + 4 * g))
                } else {
                    vdupq_n_u32(0)
                };
                // One channel pair at a time, so that the 24 accumulators, three row pairs
                // and these fit the 32 registers.
                let low = vreinterpretq_s8_u32(vzip1q_u32(first, second));
                for (cp, &xp) in c.iter_mut().zip(&x).take(pairs) {
                    cp[2 * g] = smmla(cp[2 * g], xp, low);
                }
                let high = vreinterpretq_s8_u32(vzip2q_u32(first, second));
                for (cp, &xp) in c.iter_mut().zip(&x).take(pairs) {
                    cp[2 * g + 1] = smmla(cp[2 * g + 1], xp, high);
                }
            }
            bp.add(if BOTH { 2 * NR } else { NR })
        }
    }

    #[target_feature(enable = "neon,i8mm")]
    #[inline]
    unsafe fn rows<const H: usize>(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        acc: &mut [[f32; NR]; MR],
    ) {
        let pairs = H.div_ceil(2);
        let mut c = [[vdupq_n_s32(0); CHANNEL_PAIRS]; PAIRS];
        let mut bp = panel.as_ptr() as *const u32;
        let quads = a.tap_depth() / QUAD;
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panel holds depth x NR bytes, read in order here (two
            // quads of NR x QUAD bytes a step, then a tap's odd last quad); the CPU has the
            // int8 matrix-multiply instructions.
            unsafe {
                let ap: [*const u8; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for q in (0..quads / 2).map(|s| 2 * s) {
                    bp = step::<H, true>(&mut c, &ap, q * QUAD, bp);
                }
                if quads % 2 == 1 {
                    bp = step::<H, false>(&mut c, &ap, (quads - 1) * QUAD, bp);
                }
            }
        }
        // Exact i32 sums to f32, as the portable kernel converts them: channel pairs 2g and
        // 2g + 1 hold row 2p's four channels 4g.. in their low halves, row 2p + 1's in their
        // high halves.
        for (p, cp) in c.iter().enumerate().take(pairs) {
            for g in 0..NR / 4 {
                let (left, right) = (
                    vreinterpretq_s64_s32(cp[2 * g]),
                    vreinterpretq_s64_s32(cp[2 * g + 1]),
                );
                let halves = [vzip1q_s64(left, right), vzip2q_s64(left, right)];
                for (r, half) in halves.into_iter().enumerate() {
                    let row = 2 * p + r;
                    if row < H {
                        // SAFETY: each accumulator row holds NR = 16 floats.
                        unsafe {
                            vst1q_f32(
                                acc[row].as_mut_ptr().add(4 * g),
                                vcvtq_f32_s32(vreinterpretq_s32_s64(half)),
                            )
                        };
                    }
                }
            }
        }
    }
}

fn portable_kernel(
    a: &Rows<u8>,
    starts: &[usize; MR],
    panel: &[u8],
    height: usize,
    acc: &mut [[f32; NR]; MR],
) {
    let mut sums = [[0i32; NR]; MR];
    let mut quads = panel.chunks_exact(NR * QUAD);
    for &tap in a.taps() {
        for q in 0..a.tap_depth() / QUAD {
            let Some(b) = quads.next() else { break };
            for (i, row) in sums.iter_mut().enumerate().take(height) {
                let at = starts[i] + tap + q * QUAD;
                let x = &a.data()[at..at + QUAD];
                for (s, w) in row.iter_mut().zip(b.chunks_exact(QUAD)) {
                    *s += x
                        .iter()
                        .zip(w)
                        .map(|(&x, &w)| i32::from(x) * i32::from(w as i8))
                        .sum::<i32>();
                }
            }
        }
    }
    for (out, row) in acc.iter_mut().zip(&sums) {
        for (o, s) in out.iter_mut().zip(row) {
            *o = *s as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{Rows, TileOut, ACTIVATION_MAX, MR, NR, QUAD};
    use crate::fast::matmul::avx2::{deliver_tile, prefetch_tile};

    /// [`super::quantize_values_portable`], 8 values at a time (the same results: max/min
    /// against 0 and MAX, +0.5, truncation).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_values(dst: &mut [u8], values: &[f32], inv: f32) {
        let n = dst.len().min(values.len());
        let (inv8, zero, top, half) = (
            _mm256_set1_ps(inv),
            _mm256_setzero_ps(),
            _mm256_set1_ps(ACTIVATION_MAX),
            _mm256_set1_ps(0.5),
        );
        // max(v, 0) takes 0 for NaN, as the portable code does; 0..=63 after it.
        let quantized = |at: *const f32| {
            // SAFETY: as the callers below guarantee: eight values lie at `at`.
            let v = _mm256_mul_ps(unsafe { _mm256_loadu_ps(at) }, inv8);
            let clamped = _mm256_min_ps(_mm256_max_ps(v, zero), top);
            _mm256_cvttps_epi32(_mm256_add_ps(clamped, half))
        };
        // 32 values a step, narrowed by three packs and one permutation (the packs work
        // within 128-bit lanes) instead of two packs for every eight.
        let lanes = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 <= n: 32 values read, 32 bytes written.
            unsafe {
                let at = values.as_ptr().add(i);
                let words_ab = _mm256_packus_epi32(quantized(at), quantized(at.add(8)));
                let words_cd = _mm256_packus_epi32(quantized(at.add(16)), quantized(at.add(24)));
                let bytes = _mm256_packus_epi16(words_ab, words_cd);
                let bytes = _mm256_permutevar8x32_epi32(bytes, lanes);
                _mm256_storeu_si256(dst.as_mut_ptr().add(i) as *mut __m256i, bytes);
            }
            i += 32;
        }
        while i + 8 <= n {
            // SAFETY: i + 8 <= n: eight values read, eight bytes written.
            unsafe {
                let q = quantized(values.as_ptr().add(i));
                let words =
                    _mm_packus_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
                let bytes = _mm_packus_epi16(words, words);
                _mm_storel_epi64(dst.as_mut_ptr().add(i) as *mut __m128i, bytes);
            }
            i += 8;
        }
        super::quantize_values_portable(&mut dst[i..n], &values[i..n], inv);
    }

    /// The largest of `values` and 0.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn max_of(values: &[f32]) -> f32 {
        // Four running maxima: one would wait on the previous `vmaxps` at every step.
        let mut m4 = [_mm256_setzero_ps(); 4];
        let blocks = values.chunks_exact(32);
        let rest = blocks.remainder();
        for block in blocks {
            for (k, m) in m4.iter_mut().enumerate() {
                // SAFETY: a block holds 32 values, four times eight.
                *m = _mm256_max_ps(*m, unsafe { _mm256_loadu_ps(block.as_ptr().add(8 * k)) });
            }
        }
        let mut m = _mm256_max_ps(_mm256_max_ps(m4[0], m4[1]), _mm256_max_ps(m4[2], m4[3]));
        let chunks = rest.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            // SAFETY: a chunk holds eight values.
            m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(c.as_ptr()) });
        }
        // The lanes' maximum by shuffles (as on AVX-512), then the tail.
        let m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
        let m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0b01_00_11_10));
        let m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0b10_11_00_01));
        tail.iter()
            .fold(_mm256_cvtss_f32(m), |m, &v| if v > m { v } else { m })
    }

    /// # Safety
    /// The CPU must support AVX2; rows `starts[i]` (i < height) plus every tap and depth
    /// must lie inside `a.data`; the panel must hold depth x NR bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn kernel(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        height: usize,
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) -> bool {
        debug_assert!(panel.len() >= a.depth() * NR);
        // SAFETY: forwarded from the caller.
        unsafe { for_height!(rows, height, (a, starts, panel, acc, out)) }
        out.is_some()
    }

    /// H rows x 16 channels: per quad, two panel loads (8 channels x 4 bytes each), one
    /// broadcast of the row's four activation bytes, and per register `vpmaddubsw`,
    /// `vpmaddwd` by ones, `vpaddd`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn rows<const H: usize>(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) {
        if let Some(out) = out {
            // SAFETY: as the caller guarantees.
            unsafe { prefetch_tile::<H>(out) };
        }
        let mut c = [[_mm256_setzero_si256(); 2]; H];
        let ones = _mm256_set1_epi16(1);
        let mut bp = panel.as_ptr();
        let quads = a.tap_depth() / QUAD;
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panel holds depth x NR bytes, read in order here.
            unsafe {
                let ap: [*const u8; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                let row = |i: usize, q: usize| {
                    _mm256_set1_epi32((ap[i].add(q * QUAD) as *const i32).read_unaligned())
                };
                let mut q = 0;
                // Two quads summed in i16 (no saturation: see WEIGHT_MAX), then widened.
                while q + 1 < quads {
                    let b0 = _mm256_loadu_si256(bp as *const __m256i);
                    let b1 = _mm256_loadu_si256(bp.add(32) as *const __m256i);
                    let b2 = _mm256_loadu_si256(bp.add(64) as *const __m256i);
                    let b3 = _mm256_loadu_si256(bp.add(96) as *const __m256i);
                    bp = bp.add(2 * NR * QUAD);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let (x0, x1) = (row(i, q), row(i, q + 1));
                        let s0 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(x0, b0),
                            _mm256_maddubs_epi16(x1, b2),
                        );
                        let s1 = _mm256_add_epi16(
                            _mm256_maddubs_epi16(x0, b1),
                            _mm256_maddubs_epi16(x1, b3),
                        );
                        ci[0] = _mm256_add_epi32(ci[0], _mm256_madd_epi16(s0, ones));
                        ci[1] = _mm256_add_epi32(ci[1], _mm256_madd_epi16(s1, ones));
                    }
                    q += 2;
                }
                if q < quads {
                    let b0 = _mm256_loadu_si256(bp as *const __m256i);
                    let b1 = _mm256_loadu_si256(bp.add(32) as *const __m256i);
                    bp = bp.add(NR * QUAD);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x = row(i, q);
                        let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones);
                        let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones);
                        ci[0] = _mm256_add_epi32(ci[0], p0);
                        ci[1] = _mm256_add_epi32(ci[1], p1);
                    }
                }
            }
        }
        let sums: [[__m256; 2]; H] =
            std::array::from_fn(|i| [_mm256_cvtepi32_ps(c[i][0]), _mm256_cvtepi32_ps(c[i][1])]);
        // SAFETY: as the caller guarantees.
        unsafe { deliver_tile(sums, acc, out) };
    }
}

/// Quantisation on AVX-512: sixteen values a step, the operations of the AVX2 and portable
/// code in the same order (so the same bytes).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::ACTIVATION_MAX;

    /// [`super::quantize_values_portable`], 16 values at a time.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn quantize_values(dst: &mut [u8], values: &[f32], inv: f32) {
        let n = dst.len().min(values.len());
        let (inv16, zero, top, half) = (
            _mm512_set1_ps(inv),
            _mm512_setzero_ps(),
            _mm512_set1_ps(ACTIVATION_MAX),
            _mm512_set1_ps(0.5),
        );
        // max(v, 0) takes 0 for NaN, as the portable code does; 0..=63 after it.
        let quantized = |at: *const f32| {
            // SAFETY: as the callers below guarantee: sixteen values lie at `at`.
            let v = _mm512_mul_ps(unsafe { _mm512_loadu_ps(at) }, inv16);
            let clamped = _mm512_min_ps(_mm512_max_ps(v, zero), top);
            _mm512_cvttps_epi32(_mm512_add_ps(clamped, half))
        };
        // 64 values a step, narrowed by two packs and one permutation (the packs interleave
        // 128-bit lanes) instead of four `vpmovdb`s: half the shuffle-port work. Values are
        // 0..=63, so the saturating packs lose nothing.
        let lanes = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        let mut i = 0;
        while i + 64 <= n {
            // SAFETY: i + 64 <= n: 64 values read, 64 bytes written.
            unsafe {
                let at = values.as_ptr().add(i);
                let words_ab = _mm512_packs_epi32(quantized(at), quantized(at.add(16)));
                let words_cd = _mm512_packs_epi32(quantized(at.add(32)), quantized(at.add(48)));
                let bytes = _mm512_packus_epi16(words_ab, words_cd);
                let bytes = _mm512_permutexvar_epi32(lanes, bytes);
                _mm512_storeu_si512(dst.as_mut_ptr().add(i) as *mut __m512i, bytes);
            }
            i += 64;
        }
        while i + 16 <= n {
            // SAFETY: i + 16 <= n: sixteen values read, sixteen bytes written.
            unsafe {
                let bytes = _mm512_cvtepi32_epi8(quantized(values.as_ptr().add(i)));
                _mm_storeu_si128(dst.as_mut_ptr().add(i) as *mut __m128i, bytes);
            }
            i += 16;
        }
        super::quantize_values_portable(&mut dst[i..n], &values[i..n], inv);
    }

    /// The largest of `values` and 0.
    ///
    /// # Safety
    /// The CPU must support AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn max_of(values: &[f32]) -> f32 {
        // Four running maxima: one would wait on the previous `vmaxps` at every step.
        let mut m4 = [_mm512_setzero_ps(); 4];
        let blocks = values.chunks_exact(64);
        let rest = blocks.remainder();
        for block in blocks {
            for (k, m) in m4.iter_mut().enumerate() {
                // SAFETY: a block holds 64 values, four times sixteen.
                *m = _mm512_max_ps(*m, unsafe { _mm512_loadu_ps(block.as_ptr().add(16 * k)) });
            }
        }
        let m = _mm512_max_ps(_mm512_max_ps(m4[0], m4[1]), _mm512_max_ps(m4[2], m4[3]));
        // The lanes' maximum by shuffles (a pixel is 64 to 2048 values: lane by lane, the
        // reduction cost as much as the loads), then the rest.
        rest.iter()
            .fold(_mm512_reduce_max_ps(m), |m, &v| if v > m { v } else { m })
    }
}

/// The int8 product on `vpdpbusd` (VNNI): four u8 x i8 products summed into each i32 lane in
/// one instruction, exactly (no i16 step, so no saturation to avoid), the same sums as the
/// other kernels. A panel's quad, 16 channels x 4 bytes, is one 512-bit register or two
/// 256-bit ones.
#[cfg(target_arch = "x86_64")]
mod vnni {
    use std::arch::x86_64::*;

    use super::{Rows, TileOut, MR, NR, QUAD};
    use crate::fast::matmul::avx2::{deliver_tile, prefetch_tile};
    use crate::fast::matmul::avx512::{deliver_wide, prefetch_panels, prefetch_wide};
    use crate::fast::matmul::WIDE_512;

    /// # Safety
    /// The CPU must support AVX2, FMA and AVX-VNNI; rows `starts[i]` (i < height) plus every
    /// tap and depth must lie inside `a.data`; the panel must hold depth x NR bytes.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    pub unsafe fn kernel_256(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        height: usize,
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) -> bool {
        debug_assert!(panel.len() >= a.depth() * NR);
        // SAFETY: forwarded from the caller.
        unsafe { for_height!(rows_256, height, (a, starts, panel, acc, out)) }
        out.is_some()
    }

    /// # Safety
    /// The CPU must support AVX2, FMA, AVX-512 F/BW/VL and AVX-512 VNNI; rows `starts[i]`
    /// (i < height) plus every tap and depth must lie inside `a.data`; the panel must hold
    /// depth x NR bytes.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
    pub unsafe fn kernel_512(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        height: usize,
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) -> bool {
        debug_assert!(panel.len() >= a.depth() * NR * out.map_or(1, TileOut::panels));
        match out {
            Some(out) if out.panels() == WIDE_512 => {
                // SAFETY: forwarded from the caller; the panels follow one another.
                unsafe { for_height!(rows_512_wide, height, (a, starts, panel, out)) }
            }
            // SAFETY: forwarded from the caller.
            _ => unsafe { for_height!(rows_512, height, (a, starts, panel, acc, out)) },
        }
        out.is_some()
    }

    /// H rows x WIDE_512 panels of 16 channels: per quad, one load per panel, and per row
    /// one broadcast and a `vpdpbusd` per panel (up to 24 accumulators of the 32 registers).
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn rows_512_wide<const H: usize>(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panels: &[u8],
        out: &TileOut,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe { prefetch_wide::<H>(out) };
        let mut c = [[_mm512_setzero_si512(); WIDE_512]; H];
        let panel_len = a.depth() * NR;
        let mut bp = panels.as_ptr();
        let quads = a.tap_depth() / QUAD;
        for &tap in a.taps() {
            // SAFETY: (the whole block) as in `rows_256`; panel k starts panel_len bytes
            // after panel k - 1, and the caller gives all WIDE_512 of them.
            unsafe {
                let ap: [*const u8; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for q in 0..quads {
                    let at: [*const u8; WIDE_512] = std::array::from_fn(|k| bp.add(k * panel_len));
                    prefetch_panels(at);
                    let b: [__m512i; WIDE_512] = at.map(|p| _mm512_loadu_si512(p.cast()));
                    bp = bp.add(NR * QUAD);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x =
                            _mm512_set1_epi32((ap[i].add(q * QUAD) as *const i32).read_unaligned());
                        for (cik, bk) in ci.iter_mut().zip(&b) {
                            *cik = _mm512_dpbusd_epi32(*cik, x, *bk);
                        }
                    }
                }
            }
        }
        let sums: [[__m512; WIDE_512]; H] =
            std::array::from_fn(|i| std::array::from_fn(|k| _mm512_cvtepi32_ps(c[i][k])));
        // SAFETY: as the caller guarantees: the tile lies inside C.
        unsafe { deliver_wide(sums, out) };
    }

    /// H rows x 16 channels: per quad, two panel loads, and per row one broadcast of its four
    /// activation bytes and two `vpdpbusd`.
    #[target_feature(enable = "avx2,fma,avxvnni")]
    #[inline]
    unsafe fn rows_256<const H: usize>(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) {
        if let Some(out) = out {
            // SAFETY: as the caller guarantees.
            unsafe { prefetch_tile::<H>(out) };
        }
        let mut c = [[_mm256_setzero_si256(); 2]; H];
        let mut bp = panel.as_ptr();
        let quads = a.tap_depth() / QUAD;
        for &tap in a.taps() {
            // SAFETY: (the whole block) the caller guarantees rows, taps and depths of A lie
            // inside a.data and the panel holds depth x NR bytes, read in order here.
            unsafe {
                let ap: [*const u8; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for q in 0..quads {
                    let b0 = _mm256_loadu_si256(bp as *const __m256i);
                    let b1 = _mm256_loadu_si256(bp.add(32) as *const __m256i);
                    bp = bp.add(NR * QUAD);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x =
                            _mm256_set1_epi32((ap[i].add(q * QUAD) as *const i32).read_unaligned());
                        ci[0] = _mm256_dpbusd_avx_epi32(ci[0], x, b0);
                        ci[1] = _mm256_dpbusd_avx_epi32(ci[1], x, b1);
                    }
                }
            }
        }
        let sums: [[__m256; 2]; H] =
            std::array::from_fn(|i| [_mm256_cvtepi32_ps(c[i][0]), _mm256_cvtepi32_ps(c[i][1])]);
        // SAFETY: as the caller guarantees.
        unsafe { deliver_tile(sums, acc, out) };
    }

    /// H rows x 16 channels: per quad, one panel load, and per row one broadcast and one
    /// `vpdpbusd` on 512 bits.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")]
    #[inline]
    unsafe fn rows_512<const H: usize>(
        a: &Rows<u8>,
        starts: &[usize; MR],
        panel: &[u8],
        acc: &mut [[f32; NR]; MR],
        out: Option<&TileOut>,
    ) {
        if let Some(out) = out {
            // SAFETY: as the caller guarantees.
            unsafe { prefetch_tile::<H>(out) };
        }
        let mut c = [_mm512_setzero_si512(); H];
        let mut bp = panel.as_ptr();
        let quads = a.tap_depth() / QUAD;
        for &tap in a.taps() {
            // SAFETY: (the whole block) as in `rows_256`.
            unsafe {
                let ap: [*const u8; H] =
                    std::array::from_fn(|i| a.data().as_ptr().add(starts[i] + tap));
                for q in 0..quads {
                    let b = _mm512_loadu_si512(bp as *const __m512i);
                    bp = bp.add(NR * QUAD);
                    for (i, ci) in c.iter_mut().enumerate() {
                        let x =
                            _mm512_set1_epi32((ap[i].add(q * QUAD) as *const i32).read_unaligned());
                        *ci = _mm512_dpbusd_epi32(*ci, x, b);
                    }
                }
            }
        }
        let sums: [[__m256; 2]; H] = std::array::from_fn(|i| {
            [
                _mm256_cvtepi32_ps(_mm512_castsi512_si256(c[i])),
                _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64::<1>(c[i])),
            ]
        });
        // SAFETY: as the caller guarantees.
        unsafe { deliver_tile(sums, acc, out) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fast::matmul::{Residual, RowLayout};
    use crate::format::int8::{packed_shape, unpack};

    /// The vectorised kernel against the portable one on awkward shapes: odd quad counts,
    /// several taps, partial tiles and panels, with a plain and a full epilogue. Integer sums
    /// and the same order of operations after them: the results must be equal.
    #[test]
    fn vectorised_and_portable_int8_products_are_equal() {
        for (rows, cols, taps, tap_depth) in [
            (7, 16, 1, 4),
            (13, 40, 9, 12),
            (30, 24, 3, 64),
            (6, 16, 2, 8),
            // Wide tiles (four whole panels) beside a one-panel rest and a partial panel.
            (13, 88, 9, 12),
            (50, 128, 2, 8),
            (200, 136, 2, 8),
            // Taps of whole AMX tiles (64 depth values): blocks of 32 rows read in place,
            // beside a last block that is gathered.
            (70, 48, 9, 64),
            (64, 32, 1, 128),
        ] {
            let depth = taps * tap_depth;
            let a: Vec<u8> = (0..rows * depth).map(|i| (i * 37 % 64) as u8).collect();
            let w: Vec<f32> = (0..cols * depth)
                .map(|i| (i * 53 % 255) as f32 - 127.0)
                .collect();
            let b = PackedInt8::from_f32(&w, cols, depth, 1);
            let offsets: Vec<usize> = (0..taps).map(|t| t * tap_depth).collect();
            let layout = RowLayout {
                lines: 1,
                line_len: rows,
                lines_per_image: 1,
                image_stride: 0,
                line_stride: 0,
                row_stride: depth,
                tap_depth,
            };
            let rows_a = Rows::new(&a, layout, &offsets).expect("rows inside a");
            let bias = vec![0.5f32; cols];
            let scale = vec![1.0f32; cols];
            let epilogue = Epilogue {
                scale: Some(&scale),
                row_scale: None,
                bias: &bias,
                residual: None,
                relu: false,
            };
            // And every part of an epilogue: scales per column and per row, a residual, the
            // ReLU (on outputs of both signs).
            let column_scales: Vec<f32> = (0..cols).map(|c| 1e-3 * (1 + c % 7) as f32).collect();
            let row_scales: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 5) as f32).collect();
            let residual: Vec<f32> = (0..rows * cols)
                .map(|i| (i % 11) as f32 * 0.25 - 1.5)
                .collect();
            let full = Epilogue {
                scale: Some(&column_scales),
                row_scale: Some(&row_scales),
                bias: &bias,
                residual: Some(Residual::Tensor(&residual)),
                relu: true,
            };
            // The same residual held by C, which the products write over.
            let in_c = Epilogue {
                residual: Some(Residual::InC),
                ..full
            };
            let mut portable = vec![0f32; rows * cols];
            matmul_int8(Kernels::portable(), &rows_a, &b, &epilogue, &mut portable);
            let mut portable_full = vec![0f32; rows * cols];
            matmul_int8(Kernels::portable(), &rows_a, &b, &full, &mut portable_full);
            assert!(portable_full.contains(&0.0) && portable_full.iter().any(|&v| v > 0.0));
            // On one thread too: tasks then hold every panel, so wide tiles meet a
            // one-panel rest in the same task.
            let one_thread = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("a thread pool");
            for kernels in Kernels::available() {
                for (epilogue, expected) in [(&epilogue, &portable), (&full, &portable_full)] {
                    let mut fast = vec![0f32; rows * cols];
                    matmul_int8(kernels, &rows_a, &b, epilogue, &mut fast);
                    assert_eq!(
                        &fast, expected,
                        "{kernels}: {rows}x{cols}, {taps} taps of {tap_depth}"
                    );
                    let mut serial = vec![0f32; rows * cols];
                    one_thread.install(|| matmul_int8(kernels, &rows_a, &b, epilogue, &mut serial));
                    assert_eq!(&serial, expected, "{kernels} on one thread: {rows}x{cols}");
                }
                let mut over = residual.clone();
                matmul_int8(kernels, &rows_a, &b, &in_c, &mut over);
                assert_eq!(
                    over, portable_full,
                    "{kernels} over its residual: {rows}x{cols}"
                );
                let mut over = residual.clone();
                one_thread.install(|| matmul_int8(kernels, &rows_a, &b, &in_c, &mut over));
                assert_eq!(
                    over, portable_full,
                    "{kernels} over its residual, one thread"
                );
            }
            // And both equal the plain sum.
            let q: Vec<i8> = unpack(&b.bytes, cols, depth, 1);
            for r in 0..rows {
                for c in 0..cols {
                    let sum: i32 = (0..depth)
                        .map(|d| i32::from(a[r * depth + d]) * i32::from(q[c * depth + d]))
                        .sum();
                    assert_eq!(portable[r * cols + c], sum as f32 + 0.5);
                }
            }
        }
    }

    /// A stride-1 3x3 convolution's rows taken over the padded width, the rows past the
    /// output's width dropped (`matmul_int8_lines`), give C exactly as its own rows do, on
    /// every level and on one thread: images of several lines, lines that cross AMX's 16-row
    /// tiles and 32-row blocks, channels of whole tiles (read in place on AMX) and not
    /// (gathered), a partial last block, a partial panel, a residual and row scales.
    #[test]
    fn rows_over_the_padded_width_give_the_rows_of_the_output() {
        for (n, h, w, c, cols) in [(2, 5, 14, 64, 40), (1, 9, 9, 128, 32), (1, 4, 6, 12, 16)] {
            let len = n * h * w * c;
            let x: Vec<f32> = (0..len).map(|i| ((i * 31 % 89) as f32) * 0.1).collect();
            let q = quantize(
                Kernels::portable(),
                &x,
                (n, h, w, c),
                1,
                AlignedBytes::default(),
            );
            let (hp, wp, cp) = (q.h, q.w, q.c);
            let (oh, ow) = (h, w);
            let taps: Vec<usize> = (0..9).map(|t| ((t / 3) * wp + t % 3) * cp).collect();
            let layout = |line_len: usize| RowLayout {
                lines: n * oh,
                line_len,
                lines_per_image: oh,
                image_stride: hp * wp * cp,
                line_stride: wp * cp,
                row_stride: cp,
                tap_depth: cp,
            };
            let own = Rows::new(&q.data, layout(ow), &taps).expect("rows inside the input");
            let wide = own.widened(wp).expect("the quantised input's tail");
            let depth = 9 * cp;
            let weights: Vec<f32> = (0..cols * depth)
                .map(|i| (i * 53 % 255) as f32 - 127.0)
                .collect();
            let b = PackedInt8::from_f32(&weights, cols, depth, 1);
            let rows = n * oh * ow;
            let bias: Vec<f32> = (0..cols).map(|c| c as f32 * 0.25 - 3.0).collect();
            let scales: Vec<f32> = (0..cols).map(|c| 1e-3 * (1 + c % 7) as f32).collect();
            let row_scales: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 5) as f32).collect();
            let residual: Vec<f32> = (0..rows * cols).map(|i| (i % 11) as f32 - 5.0).collect();
            let epilogue = Epilogue {
                scale: Some(&scales),
                row_scale: Some(&row_scales),
                bias: &bias,
                residual: Some(Residual::Tensor(&residual)),
                relu: true,
            };
            let mut expected = vec![0f32; rows * cols];
            matmul_int8(Kernels::portable(), &own, &b, &epilogue, &mut expected);
            assert!(expected.contains(&0.0) && expected.iter().any(|&v| v > 0.0));
            let one_thread = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .expect("a thread pool");
            for kernels in Kernels::available() {
                let mut out = vec![f32::NAN; rows * cols];
                matmul_int8_lines(kernels, &wide, ow, &b, &epilogue, &mut out);
                assert_eq!(out, expected, "{kernels}: {n}x{h}x{w}x{c} -> {cols}");
                let mut out = vec![f32::NAN; rows * cols];
                one_thread
                    .install(|| matmul_int8_lines(kernels, &wide, ow, &b, &epilogue, &mut out));
                assert_eq!(out, expected, "{kernels} on one thread: {n}x{h}x{w}x{c}");
                // The residual held by C, written over.
                let in_c = Epilogue {
                    residual: Some(Residual::InC),
                    ..epilogue
                };
                let mut out = residual.clone();
                matmul_int8_lines(kernels, &wide, ow, &b, &in_c, &mut out);
                assert_eq!(
                    out, expected,
                    "{kernels} over its residual: {n}x{h}x{w}x{c}"
                );
            }
        }
    }

    /// Every level's quantisation gives the portable bytes and scales: negatives, values past
    /// the maximum, exact halves and tails shorter than a vector.
    #[test]
    fn every_level_quantises_as_the_portable_code() {
        for (n, h, w, c) in [
            (1, 3, 5, 67),
            (2, 2, 3, 16),
            (1, 4, 4, 3),
            (1, 2, 2, 130),
            // Pixels of whole 64-value steps, and more.
            (1, 3, 3, 64),
            (1, 2, 3, 256),
            (1, 1, 2, 200),
        ] {
            let len = n * h * w * c;
            // A value past the maximum now and then (most pixels' largest value is their own).
            let data: Vec<f32> = (0..len)
                .map(|i| match (i % 11, i % 157) {
                    (_, 3) => 1e6,
                    (0, _) => -1.5,
                    (1, _) => 0.0,
                    _ => ((i * 29 % 97) as f32 - 10.0) * 0.37,
                })
                .collect();
            let dims = (n, h, w, c);
            let portable = quantize(Kernels::portable(), &data, dims, 1, AlignedBytes::default());
            // Two zero pixels past the last image (rows over the padded width read them).
            let cp = padded_channels(c);
            assert_eq!(portable.data.len(), n * (h + 2) * (w + 2) * cp + 2 * cp);
            assert!(portable.data[n * (h + 2) * (w + 2) * cp..]
                .iter()
                .all(|&v| v == 0));
            let portable_pixels =
                quantize_per_pixel(Kernels::portable(), &data, dims, AlignedBytes::default());
            // Each pixel on its own scale: its largest value at the top of the range, its
            // padding zero.
            let scales = portable_pixels
                .pixel_scales
                .as_ref()
                .expect("per-pixel scales");
            assert_eq!(scales.len(), n * h * w);
            for ((pixel, bytes), &scale) in data
                .chunks_exact(c)
                .zip(portable_pixels.data.chunks_exact(cp))
                .zip(scales)
            {
                let max = pixel.iter().fold(0f32, |m, &v| m.max(v));
                let expected = if max > 0.0 { max / ACTIVATION_MAX } else { 1.0 };
                assert_eq!(scale, expected, "{dims:?}");
                assert!(bytes[c..].iter().all(|&b| b == 0), "{dims:?}");
                assert_eq!(max > 0.0, bytes[..c].contains(&(ACTIVATION_MAX as u8)));
            }
            for kernels in Kernels::available() {
                let q = quantize(kernels, &data, dims, 1, AlignedBytes::default());
                assert_eq!(q.scale, portable.scale, "{kernels}: {dims:?}");
                assert_eq!(q.data, portable.data, "{kernels}: {dims:?}");
                let p = quantize_per_pixel(kernels, &data, dims, AlignedBytes::default());
                assert_eq!(p.pixel_scales, portable_pixels.pixel_scales, "{kernels}");
                assert_eq!(p.data, portable_pixels.data, "{kernels}: {dims:?}");
            }
            // The largest value maps to the top of the range.
            assert!(portable.data.contains(&(ACTIVATION_MAX as u8)));
        }
    }

    #[test]
    fn packing_round_trips() {
        for (cout, cin, k) in [(5, 3, 7), (16, 4, 1), (40, 6, 3)] {
            let w: Vec<i8> = (0..cout * cin * k * k)
                .map(|i| (((i * 7 + i % 3) % 255) as i32 - 127) as i8)
                .collect();
            let packed = pack(&w, cout, cin, k);
            assert_eq!(
                packed.len(),
                packed_shape(cout, cin, k).iter().product::<usize>()
            );
            assert_eq!(unpack(&packed, cout, cin, k), w, "{cout}x{cin}x{k}");
        }
    }
}
