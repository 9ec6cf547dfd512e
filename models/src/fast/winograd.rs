//! Winograd F(4x4, 3x3) for stride-1, padding-1 3x3 f32 convolutions.
//!
//! Each 4x4 block of outputs comes from the 6x6 block of input around it. Transformed
//! (`V = Bᵀ d B`, one 6x6 matrix per channel), the convolution becomes 36 independent
//! products `M[ξ] = V[ξ] U[ξ]` (tiles x cin times cin x cout, `U = G g Gᵀ` the weights
//! transformed once at load), and `Y = Aᵀ M A` gives the 4x4 outputs: 36 multiplications per
//! 16 outputs and input channel instead of 144, so the 3x3 layers, nearly half of a
//! ResNet-50's arithmetic, need about a quarter of it. The price: transformed weights take 4x
//! the memory of the 3x3 ones (f32 models only; int8 models keep their direct convolutions),
//! and rounding grows a little (tests hold the network to 1e-4 of candle's).
//!
//! Three parallel steps: every tile's input transform, the 36 products (each on one
//! thread, on the same kernels as [`matmul`](mod@super::matmul)), every tile row's output
//! transform with the bias, residual and ReLU. The transforms run over channels, which NHWC
//! keeps contiguous, so they vectorise.

use rayon::prelude::*;

use super::aligned::Aligned;
use super::matmul::{matmul_serial, Epilogue, PackedB, RowLayout, Rows};
use super::Kernels;

/// Outputs per tile side.
pub const TILE: usize = 4;
/// Input values per tile side.
const SPAN: usize = TILE + 2;
/// Products per tile (positions of the transformed 6x6 tile).
const POSITIONS: usize = SPAN * SPAN;

/// Input transform Bᵀ (Lavin and Gray, 2016).
const BT: [[f32; SPAN]; SPAN] = [
    [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
    [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
    [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
    [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
    [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
    [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
];

/// Weight transform G.
const G: [[f64; 3]; SPAN] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Output transform Aᵀ.
const AT: [[f32; SPAN]; TILE] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [0.0, 1.0, -1.0, 2.0, -2.0, 0.0],
    [0.0, 1.0, 1.0, 4.0, 4.0, 0.0],
    [0.0, 1.0, -1.0, 8.0, -8.0, 1.0],
];

/// A 3x3 convolution's weights transformed: one packed cin x cout matrix per position.
pub struct WinogradWeights {
    cin: usize,
    cout: usize,
    positions: Vec<PackedB>,
    /// The products' bias: none (the convolution's bias is added after the output transform).
    zeros: Vec<f32>,
}

impl WinogradWeights {
    /// From the weights as rows (ky, kx, ci) x cout, row-major (as the direct path packs them).
    pub fn new(rows: &[f32], cin: usize, cout: usize) -> Self {
        let mut weights = Self::zeroed(cin, cout);
        weights.transform(rows);
        weights
    }

    /// Zeros, to [`transform`](Self::transform) later (see [`PackedB::zeroed`]).
    pub fn zeroed(cin: usize, cout: usize) -> Self {
        Self {
            cin,
            cout,
            positions: (0..POSITIONS).map(|_| PackedB::zeroed(cin, cout)).collect(),
            zeros: vec![0.0; cout],
        }
    }

    /// Transforms the weights as rows (ky, kx, ci) x cout, row-major, in place of the values
    /// held.
    pub fn transform(&mut self, rows: &[f32]) {
        let (cin, cout) = (self.cin, self.cout);
        assert_eq!(rows.len(), 9 * cin * cout, "3x3 weights");
        // One matrix per position, one after the other.
        let mut u = vec![0f32; POSITIONS * cin * cout];
        for ci in 0..cin {
            for o in 0..cout {
                let g =
                    |ky: usize, kx: usize| f64::from(rows[((ky * 3 + kx) * cin + ci) * cout + o]);
                // G g (6x3), then (G g) Gᵀ (6x6), in f64 so the transform adds no rounding
                // of its own beyond the final f32.
                let mut gg = [[0f64; 3]; SPAN];
                for (i, row) in gg.iter_mut().enumerate() {
                    for (j, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|k| G[i][k] * g(k, j)).sum();
                    }
                }
                for (i, row) in gg.iter().enumerate() {
                    for j in 0..SPAN {
                        let v: f64 = (0..3).map(|k| row[k] * G[j][k]).sum();
                        u[(i * SPAN + j) * cin * cout + ci * cout + o] = v as f32;
                    }
                }
            }
        }
        for (packed, m) in self.positions.iter_mut().zip(u.chunks_exact(cin * cout)) {
            packed.pack(m);
        }
    }
}

/// What is added to each output: `act(conv + bias + residual)`.
pub struct Finish<'a> {
    pub bias: &'a [f32],
    /// Same shape as the output.
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

/// Working memory of one convolution (kept between calls by the caller).
#[derive(Default)]
pub struct Buffers {
    pub transformed: Aligned<f32>,
    pub products: Aligned<f32>,
}

/// The convolution of `n` NHWC images h x w x cin (padding 1, stride 1) into `out`
/// (n x h x w x cout).
#[allow(clippy::too_many_arguments)]
pub fn conv3x3(
    kernels: Kernels,
    weights: &WinogradWeights,
    x: &[f32],
    (n, h, w): (usize, usize, usize),
    finish: &Finish,
    out: &mut [f32],
    buffers: &mut Buffers,
) {
    let (cin, cout) = (weights.cin, weights.cout);
    assert_eq!(x.len(), n * h * w * cin, "input size");
    assert_eq!(out.len(), n * h * w * cout, "output size");
    assert_eq!(finish.bias.len(), cout, "one bias per channel");
    if let Some(r) = finish.residual {
        assert_eq!(r.len(), out.len(), "residual size");
    }
    if n * h * w == 0 {
        return;
    }
    let (tiles_y, tiles_x) = (h.div_ceil(TILE), w.div_ceil(TILE));
    let tiles = tiles_y * tiles_x;
    let transformed = &mut buffers.transformed;
    transformed.reset(tiles * POSITIONS * cin);
    let products = &mut buffers.products;
    products.reset(POSITIONS * tiles * cout);
    let image_in = h * w * cin;
    let image_out = h * w * cout;
    for b in 0..n {
        let x = &x[b * image_in..(b + 1) * image_in];
        // 1. V, tile by tile: [tile][position][cin].
        transformed
            .par_chunks_mut(POSITIONS * cin)
            .enumerate()
            .for_each(|(t, v)| {
                with_scratch(SPAN * SPAN * cin, |scratch| {
                    let origin = (t / tiles_x * TILE, t % tiles_x * TILE);
                    input_tile(kernels, x, (h, w, cin), origin, v, scratch);
                })
            });
        // 2. M[ξ] = V[ξ] U[ξ]: [position][tile][cout].
        let transformed = &transformed[..];
        let plain = Epilogue {
            scale: None,
            row_scale: None,
            bias: &weights.zeros,
            residual: None,
            relu: false,
        };
        products
            .par_chunks_mut(tiles * cout)
            .zip(weights.positions.par_iter())
            .enumerate()
            .for_each(|(position, (m, u))| {
                let layout = RowLayout {
                    lines: 1,
                    line_len: tiles,
                    lines_per_image: 1,
                    image_stride: 0,
                    line_stride: 0,
                    row_stride: POSITIONS * cin,
                    tap_depth: cin,
                };
                // `transformed` holds POSITIONS x cin values per tile (allocated above).
                let a = Rows::new(&transformed[position * cin..], layout, &[0])
                    .expect("transformed tiles hold every position");
                matmul_serial(kernels, &a, u, &plain, m);
            });
        // 3. Y = Aᵀ M A plus bias, residual and ReLU, a row of tiles at a time.
        let job = Outputs {
            products,
            tiles,
            width: w,
            channels: cout,
            finish,
        };
        let residual = finish
            .residual
            .map(|r| &r[b * image_out..(b + 1) * image_out]);
        out[b * image_out..(b + 1) * image_out]
            .par_chunks_mut(TILE * w * cout)
            .enumerate()
            .for_each(|(ty, rows)| {
                with_scratch(SPAN * TILE * cout + TILE * TILE * cout, |scratch| {
                    let residual = residual.map(|r| &r[ty * TILE * w * cout..][..rows.len()]);
                    for tx in 0..tiles_x {
                        let tile = ty * tiles_x + tx;
                        output_tile(kernels, &job, tile, tx * TILE, residual, rows, scratch);
                    }
                })
            });
    }
}

/// Runs `f` on this thread's scratch memory of at least `len` values (kept between calls:
/// the transforms would otherwise allocate and zero it for every piece of work).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Aligned<f32>> = std::cell::RefCell::default();
    }
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.reset(len);
        f(scratch)
    })
}

fn input_tile(
    kernels: Kernels,
    x: &[f32],
    dims: (usize, usize, usize),
    origin: (usize, usize),
    v: &mut [f32],
    scratch: &mut [f32],
) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernels` above portable exist only where the CPU has AVX2 and FMA.
        k if k.avx2() => unsafe { avx2::input_tile(x, dims, origin, v, scratch) },
        _ => input_tile_body(x, dims, origin, v, scratch),
    }
}

/// `dst = Σ coef[k] * src[k]` over the nonzero coefficients (`dst` zeroed when none).
#[inline(always)]
fn combine<'a>(dst: &mut [f32], terms: impl Iterator<Item = (f32, &'a [f32])>) {
    let mut first = true;
    for (coef, src) in terms {
        if coef == 0.0 {
            continue;
        }
        if first {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = coef * s;
            }
            first = false;
        } else {
            for (d, s) in dst.iter_mut().zip(src) {
                *d += coef * s;
            }
        }
    }
    if first {
        dst.fill(0.0);
    }
}

/// `R = T D Tᵀ` for a SPAN x SPAN grid `D` of channel vectors (`d(i, j)`, None for zeros) and
/// an `N` x SPAN transform `T`, rows first: `half[i][j'] = Σ_j T[j'][j] D[i][j]`, then
/// `out[i'][j'] = Σ_i T[i'][i] half[i][j']`. Both Winograd transforms are this (Bᵀ on input
/// tiles, Aᵀ on products); `half` holds SPAN x N vectors, `out` N x N, each `c` long.
#[inline(always)]
fn sandwich<'a, const N: usize>(
    transform: &[[f32; SPAN]; N],
    d: impl Fn(usize, usize) -> Option<&'a [f32]>,
    c: usize,
    half: &mut [f32],
    out: &mut [f32],
) {
    for i in 0..SPAN {
        for (jj, row) in transform.iter().enumerate() {
            combine(
                &mut half[(i * N + jj) * c..(i * N + jj + 1) * c],
                row.iter()
                    .enumerate()
                    .filter_map(|(j, &coef)| d(i, j).map(|v| (coef, v))),
            );
        }
    }
    let half = &half[..];
    for (ii, row) in transform.iter().enumerate() {
        for jj in 0..N {
            combine(
                &mut out[(ii * N + jj) * c..(ii * N + jj + 1) * c],
                row.iter()
                    .enumerate()
                    .map(|(i, &coef)| (coef, &half[(i * N + jj) * c..(i * N + jj + 1) * c])),
            );
        }
    }
}

/// V = Bᵀ d B for the 6x6 input block whose top-left is output pixel `origin` less one
/// (the padding), zeros outside the image; `v` is [position][channel].
#[inline(always)]
fn input_tile_body(
    x: &[f32],
    (h, w, c): (usize, usize, usize),
    (oy, ox): (usize, usize),
    v: &mut [f32],
    scratch: &mut [f32],
) {
    // The input pixel (oy - 1 + i, ox - 1 + j), or None in the padding.
    let pixel = |i: usize, j: usize| -> Option<&[f32]> {
        let (y, xx) = ((oy + i).checked_sub(1)?, (ox + j).checked_sub(1)?);
        (y < h && xx < w).then(|| &x[(y * w + xx) * c..(y * w + xx + 1) * c])
    };
    sandwich(&BT, pixel, c, scratch, v);
}

/// What every output tile of one image reads.
struct Outputs<'a> {
    /// M, [position][tile][channel].
    products: &'a [f32],
    tiles: usize,
    /// Output pixels per row.
    width: usize,
    channels: usize,
    finish: &'a Finish<'a>,
}

fn output_tile(
    kernels: Kernels,
    job: &Outputs,
    t: usize,
    ox: usize,
    residual: Option<&[f32]>,
    rows: &mut [f32],
    scratch: &mut [f32],
) {
    match kernels {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `Kernels` above portable exist only where the CPU has AVX2 and FMA.
        k if k.avx2() => unsafe { avx2::output_tile(job, t, ox, residual, rows, scratch) },
        _ => output_tile_body(job, t, ox, residual, rows, scratch),
    }
}

/// Y = Aᵀ M A for tile `t`, plus bias, residual and ReLU, into `rows` (the output rows of
/// this tile row; `residual` the same rows of the residual) from column `ox`, clipped to the
/// image.
#[inline(always)]
fn output_tile_body(
    job: &Outputs,
    t: usize,
    ox: usize,
    residual: Option<&[f32]>,
    rows: &mut [f32],
    scratch: &mut [f32],
) {
    let (products, tiles, w, c) = (job.products, job.tiles, job.width, job.channels);
    let finish = job.finish;
    let m = |position: usize| &products[(position * tiles + t) * c..(position * tiles + t + 1) * c];
    let (half, y) = scratch.split_at_mut(SPAN * TILE * c);
    sandwich(&AT, |i, j| Some(m(i * SPAN + j)), c, half, y);
    let lines = rows.len() / (w * c);
    for ii in 0..TILE.min(lines) {
        for jj in 0..TILE.min(w - ox) {
            let at = (ii * w + ox + jj) * c;
            let dst = &mut rows[at..at + c];
            let src = &y[(ii * TILE + jj) * c..(ii * TILE + jj + 1) * c];
            for ((d, s), b) in dst.iter_mut().zip(src).zip(finish.bias) {
                *d = s + b;
            }
            if let Some(r) = residual {
                for (d, r) in dst.iter_mut().zip(&r[at..at + c]) {
                    *d += r;
                }
            }
            if finish.relu {
                for d in dst.iter_mut() {
                    // A select (not a conditional store, nor f32::max) vectorises.
                    *d = if *d < 0.0 { 0.0 } else { *d };
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::Outputs;

    /// [`super::input_tile_body`] compiled for AVX2 (the same operations: the same results).
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn input_tile(
        x: &[f32],
        dims: (usize, usize, usize),
        origin: (usize, usize),
        v: &mut [f32],
        scratch: &mut [f32],
    ) {
        super::input_tile_body(x, dims, origin, v, scratch)
    }

    /// [`super::output_tile_body`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn output_tile(
        job: &Outputs,
        t: usize,
        ox: usize,
        residual: Option<&[f32]>,
        rows: &mut [f32],
        scratch: &mut [f32],
    ) {
        super::output_tile_body(job, t, ox, residual, rows, scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct 3x3 convolution (padding 1) in f64, weights as rows (ky, kx, ci) x cout.
    fn direct(
        x: &[f32],
        (h, w, cin): (usize, usize, usize),
        rows: &[f32],
        cout: usize,
    ) -> Vec<f64> {
        let mut out = vec![0f64; h * w * cout];
        for y in 0..h {
            for xx in 0..w {
                for o in 0..cout {
                    let mut s = 0f64;
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (iy, ix) = ((y + ky).wrapping_sub(1), (xx + kx).wrapping_sub(1));
                            if iy >= h || ix >= w {
                                continue;
                            }
                            for ci in 0..cin {
                                s += f64::from(x[(iy * w + ix) * cin + ci])
                                    * f64::from(rows[((ky * 3 + kx) * cin + ci) * cout + o]);
                            }
                        }
                    }
                    out[(y * w + xx) * cout + o] = s;
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        // A small deterministic generator: values in -1..1.
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Sizes that are and are not whole tiles, channel counts off the vector width, a
    /// residual and ReLU: the Winograd convolution equals the direct one to f32 rounding, on
    /// the vectorised and the portable transforms.
    #[test]
    fn winograd_matches_the_direct_convolution() {
        for (h, w, cin, cout) in [
            (8, 8, 16, 16),
            (7, 9, 5, 19),
            (1, 1, 3, 2),
            (14, 13, 32, 40),
        ] {
            let x = values(h * w * cin, 1);
            let rows = values(9 * cin * cout, 2);
            let bias = values(cout, 3);
            let residual = values(h * w * cout, 4);
            let weights = WinogradWeights::new(&rows, cin, cout);
            let reference = direct(&x, (h, w, cin), &rows, cout);
            for kernels in Kernels::available() {
                for relu in [false, true] {
                    let finish = Finish {
                        bias: &bias,
                        residual: Some(&residual),
                        relu,
                    };
                    let mut out = vec![f32::NAN; h * w * cout];
                    let mut buffers = Buffers::default();
                    conv3x3(
                        kernels,
                        &weights,
                        &x,
                        (1, h, w),
                        &finish,
                        &mut out,
                        &mut buffers,
                    );
                    let scale = reference.iter().fold(1f64, |m, v| m.max(v.abs()));
                    let mut worst = 0f64;
                    for (i, (&got, &conv)) in out.iter().zip(&reference).enumerate() {
                        let mut want = conv + f64::from(bias[i % cout]) + f64::from(residual[i]);
                        if relu {
                            want = want.max(0.0);
                        }
                        let err = (f64::from(got) - want).abs() / scale;
                        worst = worst.max(err);
                        assert!(
                            err < 1e-5,
                            "{h}x{w}x{cin}->{cout} {kernels:?} relu {relu}: output {i} is {got}, want {want}"
                        );
                    }
                    println!(
                        "{h}x{w}x{cin}->{cout} {kernels:?} relu {relu}: largest error {worst:.1e}"
                    );
                }
            }
        }
    }

    #[test]
    fn two_images_are_convolved_independently() {
        let (h, w, cin, cout) = (5, 6, 4, 16);
        let x = values(2 * h * w * cin, 5);
        let rows = values(9 * cin * cout, 6);
        let weights = WinogradWeights::new(&rows, cin, cout);
        let bias = vec![0f32; cout];
        let finish = Finish {
            bias: &bias,
            residual: None,
            relu: false,
        };
        let mut both = vec![0f32; 2 * h * w * cout];
        let mut buffers = Buffers::default();
        conv3x3(
            Kernels::detect(),
            &weights,
            &x,
            (2, h, w),
            &finish,
            &mut both,
            &mut buffers,
        );
        let second = &x[h * w * cin..];
        let mut alone = vec![0f32; h * w * cout];
        conv3x3(
            Kernels::detect(),
            &weights,
            second,
            (1, h, w),
            &finish,
            &mut alone,
            &mut buffers,
        );
        assert_eq!(&both[h * w * cout..], &alone[..]);
    }
}
