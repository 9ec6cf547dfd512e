//! Our own CPU inference path for exported ResNets, faster than candle's generic one.
//!
//! Why it is faster: activations stay in NHWC, so a 1x1 convolution is a plain matrix product
//! of the activations with the weights and a kxk one reads its rows straight from the padded
//! input (no im2col copies, no re-layout); each convolution's bias, the residual addition and
//! the ReLU are applied in the kernels' registers as the product's tiles are stored, so every
//! activation is written once; the products run on our own kernels ([`matmul`](mod@matmul) for f32,
//! weights packed at load; [`int8`] for int8 models, u8 x i8 in exact integer sums, weights
//! read from the memory-mapped file); f32 stride-1 3x3 convolutions up to 256 channels run
//! on Winograd F(4x4, 3x3) ([`winograd`]); the kernels' [`Level`] is found at run time (on x86-64 AVX2
//! and FMA, for int8 also AVX-VNNI, or AVX-512 with VNNI for both; on aarch64 NEON, for int8 also the
//! dot-product or the int8 matrix-multiply instructions; a portable fallback for other CPUs), and the work is split over
//! rayon's threads. Candle stays for training and for CUDA.

/// Calls `$rows::<H>(args)` for a tile height 1..=6 known only at run time (each height is
/// its own unrolled kernel), and returns false from the caller for any other height.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! for_height {
    ($rows:ident, $height:expr, ($($arg:expr),* $(,)?)) => {
        match $height {
            6 => $rows::<6>($($arg),*),
            5 => $rows::<5>($($arg),*),
            4 => $rows::<4>($($arg),*),
            3 => $rows::<3>($($arg),*),
            2 => $rows::<2>($($arg),*),
            1 => $rows::<1>($($arg),*),
            _ => return false,
        }
    };
}

/// The entry of a NEON kernel (f32 or int8 products) that leaves its tile in `acc`:
/// `pub unsafe fn kernel` over A's rows of `$element` and a panel of them, calling the
/// module's `rows::<H>` for the tile's height. `$features` are the target features the
/// kernel's instructions need, `$needs` says so in its safety contract.
#[cfg(target_arch = "aarch64")]
macro_rules! neon_kernel_entry {
    ($element:ty, $features:literal, $needs:literal) => {
        #[doc = concat!(
            "# Safety\nThe CPU must support ", $needs, "; rows `starts[i]` (i < height) plus ",
            "every tap and depth must lie inside `a.data`; the panel must hold depth x NR ",
            "values. Returns false: the tile is in `acc`."
        )]
        #[target_feature(enable = $features)]
        pub unsafe fn kernel(
            a: &Rows<$element>,
            starts: &[usize; MR],
            panel: &[$element],
            height: usize,
            acc: &mut [[f32; NR]; MR],
        ) -> bool {
            debug_assert!(panel.len() >= a.depth() * NR);
            // SAFETY: forwarded from the caller.
            unsafe { for_height!(rows, height, (a, starts, panel, acc)) }
            false
        }
    };
}

pub mod aligned;
mod awake;
mod grey;
// The kernel modules: the only code of the engine that may be unsafe (SIMD intrinsics behind
// run-time feature detection, each block with its SAFETY reasoning).
#[allow(unsafe_code)]
pub mod int8;
#[allow(unsafe_code)]
pub mod matmul;
#[allow(unsafe_code)]
pub mod winograd;

use std::sync::Mutex;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use aligned::{Aligned, AlignedBytes};
use int8::{
    matmul_int8, matmul_int8_lines, quantize, quantize_per_pixel, PackedInt8, QuantizedNhwc,
};
use matmul::{matmul, Epilogue, PackedB, Residual, RowLayout, Rows};
use winograd::WinogradWeights;

use crate::fold::FoldedWeights;
use crate::resnet::{Arch, ConvSpec};
use fingerprint_common::ChannelNorm;
use grey::GreyStem;

/// Environment variable that chooses a lower kernel level than the CPU's best (`portable`,
/// `avx2`, `avx-vnni`, `avx512-vnni`, `amx`; `neon`, `neon-dot`, `neon-i8mm`), for comparisons and bisecting. A level this CPU cannot
/// run is never taken: the detected best runs instead ([`Kernels::override_problem`]).
pub const KERNELS_ENV: &str = "FINGERPRINT_KERNELS";

/// A set of instructions the kernels are written for, from the most portable up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain Rust, any CPU.
    Portable,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// AVX2 and FMA, with AVX-VNNI (`vpdpbusd` on 256 bits) for int8 products.
    AvxVnni,
    /// AVX2 and FMA, with AVX-512 F/BW/VL and VNNI: f32 and int8 (`vpdpbusd` on 512 bits)
    /// products on tiles of 6 rows x 64 channels.
    Avx512Vnni,
    /// AVX-512 VNNI with AMX (Intel Sapphire Rapids and later Xeons): int8 products on AMX's
    /// tile registers (`tdpbusd`: 16 rows x 16 channels x 64 depths per instruction), the
    /// same exact i32 sums; everything else as `Avx512Vnni`.
    Amx,
    /// aarch64 with NEON (every aarch64 CPU): fused multiply-adds for f32 products.
    Neon,
    /// NEON with the dot-product instructions (`sdot`, Armv8.2 and later: Cortex-A55/A76/A78,
    /// a Jetson Orin's, a Raspberry Pi 5's) for int8 products.
    NeonDot,
    /// NEON with the int8 matrix multiply (`smmla`, FEAT_I8MM, Armv8.6: Neoverse V1/N2/V2,
    /// Cortex-A710/X2 and later): a 2 x 8 by 8 x 2 product per instruction, twice `sdot`'s
    /// work, for int8 products.
    NeonI8mm,
}

impl Level {
    /// Every level, from the most portable up on each architecture (a CPU runs levels of its
    /// own architecture only).
    pub const ALL: [Level; 8] = [
        Level::Portable,
        Level::Avx2,
        Level::AvxVnni,
        Level::Avx512Vnni,
        Level::Amx,
        Level::Neon,
        Level::NeonDot,
        Level::NeonI8mm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::AvxVnni => "avx-vnni",
            Level::Avx512Vnni => "avx512-vnni",
            Level::Amx => "amx",
            Level::Neon => "neon",
            Level::NeonDot => "neon-dot",
            Level::NeonI8mm => "neon-i8mm",
        }
    }

    /// Whether this CPU has every instruction the level's kernels use (run-time detection).
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
            let avx512_vnni = avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni");
            match self {
                Level::Portable => true,
                Level::Avx2 => avx2,
                Level::AvxVnni => avx2 && is_x86_feature_detected!("avxvnni"),
                Level::Avx512Vnni => avx512_vnni,
                Level::Amx => avx512_vnni && int8::amx::enabled(),
                Level::Neon | Level::NeonDot | Level::NeonI8mm => false,
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            use std::arch::is_aarch64_feature_detected;
            let neon = is_aarch64_feature_detected!("neon");
            match self {
                Level::Portable => true,
                Level::Neon => neon,
                Level::NeonDot => neon && is_aarch64_feature_detected!("dotprod"),
                Level::NeonI8mm => neon && is_aarch64_feature_detected!("i8mm"),
                Level::Avx2 | Level::AvxVnni | Level::Avx512Vnni | Level::Amx => false,
            }
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            self == Level::Portable
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Level::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Level::ALL.iter().map(|l| l.name()).collect();
                format!("unknown kernel level {s:?} (known: {})", names.join(", "))
            })
    }
}

/// The kernels that run the matrix products: a [`Level`] this CPU has been found to run.
/// Only detection makes one ([`Kernels::detect`], [`Kernels::new`]), so no safe call can
/// run an instruction the CPU lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernels {
    level: Level,
}

impl Kernels {
    /// The fastest level this CPU runs, or the lower one [`KERNELS_ENV`] names.
    pub fn detect() -> Self {
        Self::choose(Self::requested().as_deref()).0
    }

    /// The fastest level this CPU runs, whatever the environment says.
    pub fn best() -> Self {
        Self::available().pop().unwrap_or(Self::portable())
    }

    /// Plain Rust: runs anywhere.
    pub fn portable() -> Self {
        Kernels {
            level: Level::Portable,
        }
    }

    /// `level`, if this CPU runs it.
    pub fn new(level: Level) -> Option<Self> {
        level.supported().then_some(Kernels { level })
    }

    /// Every level this CPU runs, from the most portable up (tests compare them all).
    pub fn available() -> Vec<Self> {
        Level::ALL.into_iter().filter_map(Self::new).collect()
    }

    pub fn level(self) -> Level {
        self.level
    }

    /// Why [`KERNELS_ENV`] was not followed, if it is set and was not.
    pub fn override_problem() -> Option<String> {
        Self::choose(Self::requested().as_deref()).1
    }

    fn requested() -> Option<String> {
        std::env::var(KERNELS_ENV).ok()
    }

    /// The kernels for a requested level name (none: the best), and why the request was not
    /// followed where it was not: an unknown name, or a level this CPU does not run.
    fn choose(requested: Option<&str>) -> (Self, Option<String>) {
        let best = Self::best();
        let Some(name) = requested.map(str::trim) else {
            return (best, None);
        };
        match name.parse::<Level>() {
            Err(e) => (best, Some(format!("{KERNELS_ENV}: {e}; running {best}"))),
            Ok(level) => match Self::new(level) {
                Some(kernels) => (kernels, None),
                None => (
                    best,
                    Some(format!(
                        "{KERNELS_ENV}={level}: this CPU does not run it; running {best}"
                    )),
                ),
            },
        }
    }

    /// AVX2 and FMA (every x86 level above portable has them).
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn avx2(self) -> bool {
        matches!(
            self.level,
            Level::Avx2 | Level::AvxVnni | Level::Avx512Vnni | Level::Amx
        )
    }

    /// AVX-512 F/BW/VL (with VNNI: the two x86 levels that have them).
    #[inline]
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn avx512(self) -> bool {
        matches!(self.level, Level::Avx512Vnni | Level::Amx)
    }

    /// NEON (every aarch64 level above portable has it).
    #[inline]
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(crate) fn neon(self) -> bool {
        matches!(self.level, Level::Neon | Level::NeonDot | Level::NeonI8mm)
    }
}

impl std::fmt::Display for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.level.fmt(f)
    }
}

/// A batch of activations, NHWC, contiguous.
#[derive(Clone, Debug)]
struct Nhwc {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    data: Aligned<f32>,
}

/// What a convolution adds to its outputs before the ReLU.
enum Shortcut<'a> {
    None,
    /// A tensor of the output's shape.
    Add(&'a Nhwc),
    /// A tensor of the output's shape that nothing reads afterwards: the output is written
    /// over it (see [`Residual::InC`]).
    Onto(Nhwc),
}

/// A convolution's weights as a source gives them.
pub enum ConvWeights {
    /// (cout, cin, k, k) f32, batch norm folded.
    F32(Tensor),
    /// Packed int8 (see [`int8`]), used as they are.
    Int8(PackedInt8),
}

enum Weights {
    F32(PackedB),
    /// Stride-1, padding-1 3x3 f32 convolutions.
    Winograd(WinogradWeights),
    Int8(PackedInt8),
}

/// One convolution with batch norm folded in. Weight rows run over (ky, kx, ci), the order in
/// which NHWC rows gather them.
struct Conv {
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    weights: Weights,
    bias: Vec<f32>,
}

fn tensor_f32(weights: &FoldedWeights, name: &str) -> candle_core::Result<Tensor> {
    weights
        .get(name)
        .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?
        .to_device(&Device::Cpu)?
        .to_dtype(candle_core::DType::F32)
}

fn msg(text: String) -> candle_core::Error {
    candle_core::Error::Msg(text)
}

/// The widest stride-1 3x3 convolution (input channels) run on Winograd. Wider ones are a
/// ResNet's last stage, 1/32 of the input's side (7x7 at 224): there the 4x4 tiles cover 8x8
/// and the 36 transformed weight matrices (36 MB a layer at 512 channels) stream from memory
/// for 4 tiles, so the direct convolution is faster (ResNet-50 f32 31.6 -> 30.9 ms a picture
/// on AVX-512, 45.0 -> 44.4 on AVX2) and the model holds 79 MB less.
const WINOGRAD_MAX_CIN: usize = 256;

impl Conv {
    /// `f32_only`: run int8 weights as f32 (the stem, whose input is signed).
    fn new(
        spec: &ConvSpec,
        weights: ConvWeights,
        bias: Vec<f32>,
        f32_only: bool,
    ) -> candle_core::Result<Self> {
        let (cin, cout, k) = (spec.in_channels, spec.out_channels, spec.kernel);
        if bias.len() != cout {
            return Err(msg(format!(
                "{}.bias has {} values for {cout} channels",
                spec.name,
                bias.len()
            )));
        }
        let packed_f32 = |w: Tensor| -> candle_core::Result<Weights> {
            if w.dims() != [cout, cin, k, k] {
                return Err(msg(format!(
                    "{}.weight has shape {:?}, the architecture wants ({cout}, {cin}, {k}, {k})",
                    spec.name,
                    w.dims()
                )));
            }
            // (cout, cin, kh, kw) -> (kh, kw, cin) x cout
            let rows = || {
                w.to_dtype(candle_core::DType::F32)?
                    .permute((2, 3, 1, 0))?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1::<f32>()
            };
            // The kept weights are allocated before the temporaries they are made from: after
            // them, a layer's did not fit the holes the previous layer's temporaries left (an
            // aligned allocation takes a little more of the heap than the same bytes
            // unaligned), and the heap kept the holes (a f32 ResNet-50 18 MB more resident).
            // Stride-1 3x3 convolutions (nearly half of a ResNet-50's arithmetic) on Winograd
            // F(4x4, 3x3): a quarter of the multiplications for 4x their weights' memory.
            Ok(
                if k == 3 && spec.stride == 1 && spec.padding() == 1 && cin <= WINOGRAD_MAX_CIN {
                    let mut weights = WinogradWeights::zeroed(cin, cout);
                    weights.transform(&rows()?);
                    Weights::Winograd(weights)
                } else {
                    let mut packed = PackedB::zeroed(k * k * cin, cout);
                    packed.pack(&rows()?);
                    Weights::F32(packed)
                },
            )
        };
        let weights = match weights {
            ConvWeights::F32(w) => packed_f32(w)?,
            ConvWeights::Int8(p) if f32_only => {
                let values = crate::format::int8::unpack(&p.bytes, cout, cin, k)
                    .into_iter()
                    .enumerate()
                    .map(|(i, q)| f32::from(q) * p.scales[i / (cin * k * k)])
                    .collect();
                packed_f32(Tensor::from_vec(values, (cout, cin, k, k), &Device::Cpu)?)?
            }
            ConvWeights::Int8(p) => Weights::Int8(p),
        };
        Ok(Self {
            cin,
            cout,
            k,
            stride: spec.stride,
            pad: spec.padding(),
            weights,
            bias,
        })
    }

    fn out_size(&self, size: usize) -> usize {
        (size + 2 * self.pad).saturating_sub(self.k) / self.stride + 1
    }

    /// `relu(conv(x) + bias + shortcut)`, the ReLU and the shortcut optional. `quantized`
    /// caches `x` quantised for int8 convolutions that read it with the same padding.
    fn forward(
        &self,
        kernels: Kernels,
        x: &Nhwc,
        quantized: &mut Option<QuantizedNhwc>,
        shortcut: Shortcut,
        relu: bool,
        scratch: &mut Scratch,
    ) -> Nhwc {
        debug_assert_eq!(x.c, self.cin);
        let (oh, ow) = (self.out_size(x.h), self.out_size(x.w));
        let rows = x.n * oh * ow;
        let (mut out, residual) = match shortcut {
            Shortcut::None => (scratch.take(rows * self.cout), None),
            Shortcut::Add(s) => (
                scratch.take(rows * self.cout),
                Some(Residual::Tensor(&s.data)),
            ),
            // Winograd's output transform reads its residual by rows of tiles: added from
            // the tensor as it is, which then goes back to the scratch.
            Shortcut::Onto(s) if matches!(self.weights, Weights::Winograd(_)) => {
                let out = self.forward(kernels, x, quantized, Shortcut::Add(&s), relu, scratch);
                scratch.give(s.data);
                return out;
            }
            Shortcut::Onto(s) => {
                assert_eq!(
                    s.data.len(),
                    rows * self.cout,
                    "shortcut of the output's shape"
                );
                (s.data, Some(Residual::InC))
            }
        };
        let mut epilogue = Epilogue {
            scale: None,
            row_scale: None,
            bias: &self.bias,
            residual,
            relu,
        };
        match &self.weights {
            Weights::F32(weight) if self.k == 1 && self.stride == 1 => {
                let a = Rows::matrix(&x.data, rows, self.cin)
                    .expect("a 1x1 convolution's input holds rows x cin values");
                matmul(kernels, &a, weight, &epilogue, &mut out);
            }
            Weights::F32(weight) => {
                let padded = (self.pad > 0).then(|| pad(x, self.pad, scratch));
                let input = padded.as_ref().unwrap_or(x);
                let taps = self.taps(input.w, input.c);
                let a = self.rows(
                    &input.data,
                    x.n,
                    (oh, ow),
                    (input.h, input.w, input.c),
                    &taps,
                    self.cin,
                );
                matmul(kernels, &a, weight, &epilogue, &mut out);
                if let Some(p) = padded {
                    scratch.give(p.data);
                }
            }
            Weights::Winograd(weight) => {
                let finish = winograd::Finish {
                    bias: &self.bias,
                    residual: match epilogue.residual {
                        None => None,
                        Some(Residual::Tensor(r)) => Some(r),
                        Some(Residual::InC) => unreachable!("Winograd never writes in place"),
                    },
                    relu,
                };
                winograd::conv3x3(
                    kernels,
                    weight,
                    &x.data,
                    (x.n, x.h, x.w),
                    &finish,
                    &mut out,
                    &mut scratch.free.winograd,
                );
            }
            Weights::Int8(weight) => {
                // 1x1: a scale per pixel (it factors out of each output row); kxk: one for the
                // tensor (a row mixes pixels).
                let per_pixel = self.k == 1 && self.pad == 0;
                let cached = quantized.as_ref().is_some_and(|q| {
                    q.h == x.h + 2 * self.pad && q.pixel_scales.is_some() == per_pixel
                });
                if !cached {
                    let buffer = match quantized.take() {
                        Some(old) => old.data,
                        None => scratch.take_bytes(),
                    };
                    let dims = (x.n, x.h, x.w, x.c);
                    *quantized = Some(if per_pixel {
                        quantize_per_pixel(kernels, &x.data, dims, buffer)
                    } else {
                        quantize(kernels, &x.data, dims, self.pad, buffer)
                    });
                }
                let q = quantized.as_ref().expect("quantised above");
                let taps = self.taps(q.w, q.c);
                let a = self.rows(&q.data, x.n, (oh, ow), (q.h, q.w, q.c), &taps, q.c);
                // A stride-1 convolution's rows over the padded input's whole width lie at one
                // stride (`matmul_int8_lines` drops those past the output's width; the
                // quantised input holds the zeros the last of them read). Not where the rows
                // dropped would be more than an eighth: on ResNet-50's 7x7 layers (9 rows a
                // line for 7) AMX took a third longer than with the rows gathered.
                let wide = (self.stride == 1 && self.k > 1 && 8 * (q.w - ow) <= q.w)
                    .then(|| a.widened(q.w).ok())
                    .flatten();
                let scale: Vec<f32> = weight.scales.iter().map(|s| s * q.scale).collect();
                // Output row (b, oy, ox) of a 1x1 convolution reads pixel (b, oy*s, ox*s): at
                // stride 1 the pixels' own scales, in order.
                let strided_scales: Option<Vec<f32>> = q
                    .pixel_scales
                    .as_ref()
                    .filter(|_| self.stride > 1)
                    .map(|pixels| {
                        let mut scales = Vec::with_capacity(rows);
                        for b in 0..x.n {
                            for oy in 0..oh {
                                let line = (b * x.h + oy * self.stride) * x.w;
                                scales.extend((0..ow).map(|ox| pixels[line + ox * self.stride]));
                            }
                        }
                        scales
                    });
                epilogue.scale = Some(&scale);
                epilogue.row_scale = strided_scales.as_deref().or(q.pixel_scales.as_deref());
                match wide {
                    Some(wide) => {
                        matmul_int8_lines(kernels, &wide, ow, weight, &epilogue, &mut out)
                    }
                    None => matmul_int8(kernels, &a, weight, &epilogue, &mut out),
                }
            }
        }
        Nhwc {
            n: x.n,
            h: oh,
            w: ow,
            c: self.cout,
            data: out,
        }
    }

    /// [`forward`](Self::forward) for an input no other convolution reads: its quantised copy
    /// (int8) goes back to `scratch`.
    fn forward_once(
        &self,
        kernels: Kernels,
        x: &Nhwc,
        shortcut: Shortcut,
        relu: bool,
        scratch: &mut Scratch,
    ) -> Nhwc {
        let mut quantized = None;
        let out = self.forward(kernels, x, &mut quantized, shortcut, relu, scratch);
        if let Some(q) = quantized {
            scratch.give_bytes(q.data);
        }
        out
    }

    /// Offsets of the k x k taps in an image `w` pixels wide with `c` channels.
    fn taps(&self, w: usize, c: usize) -> Vec<usize> {
        (0..self.k * self.k)
            .map(|t| ((t / self.k) * w + t % self.k) * c)
            .collect()
    }

    /// The rows this convolution reads from (padded) NHWC input of `n` images h x w x c,
    /// `tap_depth` values at each tap: output pixel (oy, ox) of tap (ky, kx) is input pixel
    /// (oy*s + ky, ox*s + kx).
    #[allow(clippy::too_many_arguments)]
    fn rows<'a, T>(
        &self,
        data: &'a [T],
        n: usize,
        (oh, ow): (usize, usize),
        (h, w, c): (usize, usize, usize),
        taps: &'a [usize],
        tap_depth: usize,
    ) -> Rows<'a, T> {
        let layout = RowLayout {
            lines: n * oh,
            line_len: ow,
            lines_per_image: oh,
            image_stride: h * w * c,
            line_stride: self.stride * w * c,
            row_stride: self.stride * c,
            tap_depth,
        };
        // Output sizes come from the input's (`out_size`), so every tap of every output pixel
        // lies inside the (padded) input: a failure here is a bug, never bad input.
        Rows::new(data, layout, taps).expect("convolution rows inside their input")
    }
}

/// A copy of `x` with `pad` zero pixels around each image.
fn pad(x: &Nhwc, pad: usize, scratch: &mut Scratch) -> Nhwc {
    let (hp, wp, c) = (x.h + 2 * pad, x.w + 2 * pad, x.c);
    let mut data = scratch.take(x.n * hp * wp * c);
    data.par_chunks_mut(wp * c)
        .enumerate()
        .for_each(|(line, dst)| {
            let (b, y) = (line / hp, line % hp);
            if y < pad || y >= pad + x.h {
                dst.fill(0.0);
                return;
            }
            let src = ((b * x.h + y - pad) * x.w) * c;
            dst[..pad * c].fill(0.0);
            dst[(pad + x.w) * c..].fill(0.0);
            dst[pad * c..(pad + x.w) * c].copy_from_slice(&x.data[src..src + x.w * c]);
        });
    Nhwc {
        n: x.n,
        h: hp,
        w: wp,
        c,
        data,
    }
}

/// Whether the stem's output has had its ReLU.
#[derive(Clone, Copy, PartialEq)]
enum StemRelu {
    Applied,
    /// Applied by the pooling: the largest of a window's ReLUs is the ReLU of its largest.
    InPooling,
}

/// 3x3 max pooling, stride 2, padding 1 (padding never wins: it is left out).
fn max_pool(x: &Nhwc, relu: StemRelu, scratch: &mut Scratch) -> Nhwc {
    let (oh, ow) = (pooled_size(x.h), pooled_size(x.w));
    let c = x.c;
    let mut out = scratch.take(x.n * oh * ow * c);
    let floor = match relu {
        StemRelu::Applied => f32::NEG_INFINITY,
        StemRelu::InPooling => 0.0,
    };
    out.par_chunks_mut(ow * c)
        .enumerate()
        .for_each(|(row, line)| {
            let (b, oy) = (row / oh, row % oh);
            let image = &x.data[b * x.h * x.w * c..(b + 1) * x.h * x.w * c];
            // ResNet's 64 channels in fixed-size arrays: each window's 64 values unrolled, the
            // largest kept in registers. As loops of unknown length, their overhead for each
            // window took most of the pooling's time.
            match c {
                64 => pool_line::<64>(line, image, oy, (x.h, x.w), floor),
                _ => pool_line_any(line, image, oy, (x.h, x.w, c), floor),
            }
        });
    Nhwc {
        n: x.n,
        h: oh,
        w: ow,
        c,
        data: out,
    }
}

/// The size of max pooling's output (3x3, stride 2, padding 1) for an input `size` long.
fn pooled_size(size: usize) -> usize {
    (size + 2 - 3) / 2 + 1
}

/// The input pixels pooled into output pixel (`oy`, `ox`) of 3x3, stride-2, padding-1 max
/// pooling over an image `h` x `w`: their offsets in pixels (padding never wins: it is left
/// out).
fn pooling_window(oy: usize, ox: usize, (h, w): (usize, usize)) -> impl Iterator<Item = usize> {
    let lines = (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h);
    let columns = (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w);
    lines.flat_map(move |iy| columns.clone().map(move |ix| iy * w + ix))
}

/// Line `oy` of max pooling into `line`, each value the largest of `floor` and its window,
/// for images of `C` channels.
fn pool_line<const C: usize>(
    line: &mut [f32],
    image: &[f32],
    oy: usize,
    (h, w): (usize, usize),
    floor: f32,
) {
    for (ox, dst) in line.chunks_exact_mut(C).enumerate() {
        let mut largest = [floor; C];
        for pixel in pooling_window(oy, ox, (h, w)) {
            let src: &[f32; C] = image[pixel * C..(pixel + 1) * C]
                .try_into()
                .expect("C values");
            for (m, v) in largest.iter_mut().zip(src) {
                // A select (not f32::max, nor a conditional store) vectorises.
                *m = if *v > *m { *v } else { *m };
            }
        }
        dst.copy_from_slice(&largest);
    }
}

/// [`pool_line`] for any number of channels.
fn pool_line_any(
    line: &mut [f32],
    image: &[f32],
    oy: usize,
    (h, w, c): (usize, usize, usize),
    floor: f32,
) {
    for (ox, dst) in line.chunks_exact_mut(c).enumerate() {
        dst.fill(floor);
        for pixel in pooling_window(oy, ox, (h, w)) {
            for (m, v) in dst.iter_mut().zip(&image[pixel * c..(pixel + 1) * c]) {
                *m = if *v > *m { *v } else { *m };
            }
        }
    }
}

struct Block {
    path: Vec<Conv>,
    downsample: Option<Conv>,
}

/// An exported ResNet on our CPU path. Same inputs and outputs as
/// [`FoldedResNet`](crate::fold::FoldedResNet): NCHW batches in, pooled features or logits out.
pub struct FastResNet {
    stem: Conv,
    /// The stem folded for grey scans ([`with_grey_scans`](Self::with_grey_scans)).
    grey_stem: Option<GreyStem>,
    blocks: Vec<Block>,
    /// The classifier as a features x classes matrix.
    fc_weight: PackedB,
    fc_bias: Vec<f32>,
    features: usize,
    kernels: Kernels,
    /// Images of a batch a thread runs through the layers together (see
    /// [`F32_IMAGES_TOGETHER`]).
    images_together: usize,
    /// Buffer sets kept between passes, one per image run in parallel (`pooled`).
    pool: Mutex<Vec<Buffers>>,
}

/// Images of a batch a thread runs through a f32 network's layers together: the weights of
/// the late layers (a 512 x 2048 matrix is 4 MB, twice a core's L2) are then read once for
/// both. ResNet-50 at batch 8 on a 2-core Xeon: about 4% more images a second (37.8-39.4 ->
/// 39.6-40.8), 24 MB more resident. int8 networks run image by image: their activations are
/// quantised with a scale per tensor, which must not depend on the batch's other images.
const F32_IMAGES_TOGETHER: usize = 2;

impl FastResNet {
    /// The network of f32 weights (batch norm folded), re-laid out for our kernels.
    pub fn new(arch: Arch, weights: &FoldedWeights) -> candle_core::Result<Self> {
        Self::from_parts(
            arch,
            |spec| {
                Ok((
                    ConvWeights::F32(tensor_f32(weights, &format!("{}.weight", spec.name))?),
                    tensor_f32(weights, &format!("{}.bias", spec.name))?.to_vec1::<f32>()?,
                ))
            },
            tensor_f32(weights, "fc.weight")?,
            tensor_f32(weights, "fc.bias")?.to_vec1::<f32>()?,
        )
    }

    /// The network of f32 weights quantised to int8 here (as an int8 export would store them).
    pub fn new_int8(arch: Arch, weights: &FoldedWeights) -> candle_core::Result<Self> {
        Self::from_parts(
            arch,
            |spec| {
                let w = tensor_f32(weights, &format!("{}.weight", spec.name))?;
                let (cout, cin, k, _) = w.dims4()?;
                let values = w.flatten_all()?.to_vec1::<f32>()?;
                Ok((
                    ConvWeights::Int8(PackedInt8::from_f32(&values, cout, cin, k)),
                    tensor_f32(weights, &format!("{}.bias", spec.name))?.to_vec1::<f32>()?,
                ))
            },
            tensor_f32(weights, "fc.weight")?,
            tensor_f32(weights, "fc.bias")?.to_vec1::<f32>()?,
        )
    }

    /// The network from each convolution's weights and bias (`conv`), and the classifier's
    /// (classes x features) weight and bias.
    pub fn from_parts(
        arch: Arch,
        mut conv: impl FnMut(&ConvSpec) -> candle_core::Result<(ConvWeights, Vec<f32>)>,
        fc_weight: Tensor,
        fc_bias: Vec<f32>,
    ) -> candle_core::Result<Self> {
        let layout = arch.layout();
        let mut build = |spec: &ConvSpec, f32_only: bool| -> candle_core::Result<Conv> {
            let (weights, bias) = conv(spec)?;
            Conv::new(spec, weights, bias, f32_only)
        };
        let stem = build(&layout.stem, true)?;
        let mut blocks = Vec::new();
        for b in layout.stages.iter().flatten() {
            if b.path.is_empty() {
                return Err(msg("a residual block without convolutions".into()));
            }
            blocks.push(Block {
                path: b
                    .path
                    .iter()
                    .map(|s| build(s, false))
                    .collect::<candle_core::Result<_>>()?,
                downsample: b.downsample.as_ref().map(|s| build(s, false)).transpose()?,
            });
        }
        let (classes, features) = fc_weight.dims2()?;
        if features != arch.feature_dim() || fc_bias.len() != classes {
            return Err(msg(format!(
                "the classifier is {classes}x{features} with {} biases; {arch} has {} features",
                fc_bias.len(),
                arch.feature_dim()
            )));
        }
        let fc_rows = fc_weight
            .to_dtype(candle_core::DType::F32)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let quantised = blocks
            .iter()
            .flat_map(|b| b.path.iter().chain(&b.downsample))
            .any(|conv| matches!(conv.weights, Weights::Int8(_)));
        Ok(Self {
            stem,
            grey_stem: None,
            blocks,
            images_together: if quantised { 1 } else { F32_IMAGES_TOGETHER },
            fc_weight: PackedB::new(features, classes, &fc_rows),
            fc_bias,
            features,
            kernels: Kernels::detect(),
            pool: Mutex::default(),
        })
    }

    /// The same network, running its stem on the grey values of any input image whose three
    /// channels are one grey scan normalised by `channels` (as preprocessing makes every scan's:
    /// [`Preprocessing::channels`](fingerprint_common::Preprocessing::channels)): a third of
    /// the stem's multiplications, the same outputs up to f32 rounding (`grey.rs`). Other
    /// inputs run as before.
    pub fn with_grey_scans(mut self, channels: [ChannelNorm; 3]) -> Self {
        self.grey_stem = GreyStem::new(&self.stem, channels);
        self
    }

    /// Whether image `chw` (3 x h x w) would run on the grey stem.
    pub fn reads_as_grey(&self, chw: &[f32]) -> bool {
        match &self.grey_stem {
            Some(stem) if chw.len().is_multiple_of(3) => {
                stem.read(chw, &mut vec![0f32; chw.len() / 3])
            }
            _ => false,
        }
    }

    /// The same network on other kernels (tests compare the portable ones with the fast ones).
    pub fn with_kernels(mut self, kernels: Kernels) -> Self {
        self.kernels = kernels;
        self
    }

    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    pub fn num_classes(&self) -> usize {
        self.fc_bias.len()
    }

    /// Pooled features (N x features) of an NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (n, features) = (x.dim(0)?, self.features);
        let pooled = self.pooled(x)?;
        Tensor::from_vec(pooled, (n, features), &Device::Cpu)
    }

    /// Logits (N x classes) of an NCHW batch.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = x.dim(0)?;
        let pooled = self.pooled(x)?;
        let mut logits = vec![0f32; n * self.num_classes()];
        let epilogue = Epilogue {
            scale: None,
            row_scale: None,
            bias: &self.fc_bias,
            residual: None,
            relu: false,
        };
        let a = Rows::matrix(&pooled, n, self.features)
            .expect("pooled features hold n x features values");
        matmul(self.kernels, &a, &self.fc_weight, &epilogue, &mut logits);
        Tensor::from_vec(logits, (n, self.num_classes()), &Device::Cpu)
    }

    fn pooled(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        let (_, c, h, w) = x.dims4()?;
        if c != self.stem.cin {
            return Err(msg(format!(
                "input has {c} channels, the network {}",
                self.stem.cin
            )));
        }
        if h == 0 || w == 0 {
            return Err(msg(format!("input of {h} x {w} pixels: no pixels to read")));
        }
        // Read in place (a copy of a batch of eight 224 x 224 images is 4.8 MB more resident).
        let x = x
            .to_device(&Device::Cpu)?
            .to_dtype(candle_core::DType::F32)?
            .contiguous()?;
        let (storage, layout) = x.storage_and_layout();
        let candle_core::Storage::Cpu(values) = &*storage else {
            return Err(msg("input is not on the CPU".into()));
        };
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| msg("input is not contiguous".into()))?;
        let data = &values.as_slice::<f32>()?[start..end];
        // The whole pass on one of rayon's threads: each product's split over the threads is
        // then a fork inside the pool, not a job sent in from outside whose caller sleeps and
        // is woken, which cost a pass of a ResNet-50 about a tenth of its time.
        Ok(awake::run(|| {
            let per_image = c * h * w;
            let images = data.len() / per_image.max(1);
            let threads = rayon::current_num_threads().max(1);
            if images < 2 || threads < 2 {
                return self.pooled_images(data, (c, h, w));
            }
            // A batch's images split in runs, one per thread, each run image by image (or
            // two by two, f32) with its own buffers: a thread's products then seldom wait for
            // the others (their splits find the other threads busy and run inline). One or
            // two images' activations per thread, never a batch's: memory grows with the
            // threads, not the batch.
            let per_run = images.div_ceil(threads);
            data.par_chunks(per_run * per_image)
                .map(|run| self.pooled_images(run, (c, h, w)))
                .collect::<Vec<_>>()
                .concat()
        }))
    }

    /// [`pooled`](Self::pooled) of NCHW images `data`, each c x h x w.
    fn pooled_images(&self, data: &[f32], (c, h, w): (usize, usize, usize)) -> Vec<f32> {
        let mut pooled = Vec::with_capacity(data.len() / (h * w * c) * self.features);
        let mut scratch = Scratch::from_pool(&self.pool);
        for images in data.chunks(self.images_together * h * w * c) {
            pooled.extend(self.pooled_together(images, (c, h, w), &mut scratch));
        }
        scratch.return_to(&self.pool);
        pooled
    }

    /// Pooled features of NCHW images that run through the layers together.
    fn pooled_together(
        &self,
        images: &[f32],
        (c, h, w): (usize, usize, usize),
        scratch: &mut Scratch,
    ) -> Vec<f32> {
        let per_image = h * w * c;
        let n = images.len() / per_image;
        if let Some(stem) = self.grey_stem.as_ref().filter(|_| c == 3) {
            let mut grey = scratch.take(n * h * w);
            let greys = images
                .chunks_exact(per_image)
                .zip(grey.chunks_exact_mut(h * w))
                .map(|(image, grey)| stem.read(image, grey))
                .filter(|&read| read)
                .count();
            if greys == n {
                let input = Nhwc {
                    n,
                    h,
                    w,
                    c: 1,
                    data: grey,
                };
                return self.pooled_nhwc(input, Some(stem), scratch);
            }
            scratch.give(grey);
            if greys > 0 {
                // Grey and other images: each alone, so that each image's answer is its own.
                return images
                    .chunks_exact(per_image)
                    .flat_map(|image| self.pooled_together(image, (c, h, w), scratch))
                    .collect();
            }
        }
        // NCHW to NHWC here (candle's strided copy took longer than the stem).
        let mut nhwc = scratch.take(n * per_image);
        for (b, image) in images.chunks_exact(per_image).enumerate() {
            let nhwc = &mut nhwc[b * per_image..];
            for (channel, plane) in image.chunks_exact(h * w).enumerate() {
                for (pixel, &v) in plane.iter().enumerate() {
                    nhwc[pixel * c + channel] = v;
                }
            }
        }
        let input = Nhwc {
            n,
            h,
            w,
            c,
            data: nhwc,
        };
        self.pooled_nhwc(input, None, scratch)
    }

    /// Pooled features (n x features) of NHWC images: the network's input, or with
    /// `grey_stem` grey images (one channel) for it.
    fn pooled_nhwc(
        &self,
        input: Nhwc,
        grey_stem: Option<&GreyStem>,
        scratch: &mut Scratch,
    ) -> Vec<f32> {
        let k = self.kernels;
        // The grey stem leaves its ReLU to the pooling (the padding's share is added after
        // its products, before the ReLU).
        let (stem, relu) = match grey_stem {
            Some(grey) => (grey.forward(k, &input, scratch), StemRelu::InPooling),
            None => (
                self.stem
                    .forward_once(k, &input, Shortcut::None, true, scratch),
                StemRelu::Applied,
            ),
        };
        scratch.give(input.data);
        let mut x = max_pool(&stem, relu, scratch);
        scratch.give(stem.data);
        for block in &self.blocks {
            // `from_parts` refuses empty paths.
            let Some((last, rest)) = block.path.split_last() else {
                continue;
            };
            // The block input quantised once for the convolutions that read it alike.
            let mut x_quantized = None;
            let mut y: Option<Nhwc> = None;
            for conv in rest {
                let next = match &y {
                    None => conv.forward(k, &x, &mut x_quantized, Shortcut::None, true, scratch),
                    Some(y) => conv.forward_once(k, y, Shortcut::None, true, scratch),
                };
                if let Some(old) = y.replace(next) {
                    scratch.give(old.data);
                }
            }
            let projected = block
                .downsample
                .as_ref()
                .map(|d| d.forward(k, &x, &mut x_quantized, Shortcut::None, false, scratch));
            let out = match y {
                // The last convolution reads the path's output; the shortcut is read by
                // nothing after the addition, so the block's output is written over it.
                Some(y) => {
                    let (onto, spent) = match projected {
                        Some(p) => (p, Some(x)),
                        None => (x, None),
                    };
                    let out = last.forward_once(k, &y, Shortcut::Onto(onto), true, scratch);
                    for used in [Some(y), spent].into_iter().flatten() {
                        scratch.give(used.data);
                    }
                    out
                }
                // A path of one convolution reads the block's input itself.
                None => {
                    let shortcut = Shortcut::Add(projected.as_ref().unwrap_or(&x));
                    let out = last.forward(k, &x, &mut x_quantized, shortcut, true, scratch);
                    for used in [projected, Some(x)].into_iter().flatten() {
                        scratch.give(used.data);
                    }
                    out
                }
            };
            if let Some(q) = x_quantized {
                scratch.give_bytes(q.data);
            }
            x = out;
        }
        let per_image = x.h * x.w * x.c;
        let scale = 1.0 / (x.h * x.w) as f32;
        let mut pooled = vec![0f32; x.n * x.c];
        for (image, sums) in x
            .data
            .chunks_exact(per_image)
            .zip(pooled.chunks_exact_mut(x.c))
        {
            for pixel in image.chunks_exact(x.c) {
                for (s, v) in sums.iter_mut().zip(pixel) {
                    *s += v;
                }
            }
        }
        pooled.iter_mut().for_each(|s| *s *= scale);
        scratch.give(x.data);
        pooled
    }
}

/// Buffers kept between passes.
#[derive(Default)]
struct Buffers {
    f32s: Vec<Aligned<f32>>,
    bytes: Vec<AlignedBytes>,
    winograd: winograd::Buffers,
}

/// Activation buffers reused within a pass and kept between passes: fresh large allocations
/// cost a page fault per 4 KiB on first touch, a noticeable share of a pass.
struct Scratch {
    free: Buffers,
}

impl Scratch {
    fn from_pool(pool: &Mutex<Vec<Buffers>>) -> Self {
        let free = pool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        Self { free }
    }

    fn return_to(mut self, pool: &Mutex<Vec<Buffers>>) {
        // A pass leaves the largest few (more than one pass's worth where buffers grew).
        self.free
            .f32s
            .sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        self.free.f32s.truncate(8);
        self.free
            .bytes
            .sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        self.free.bytes.truncate(4);
        let mut kept = pool.lock().unwrap_or_else(|p| p.into_inner());
        // At most one set per thread (a batch runs an image per thread); a concurrent
        // caller's extra set is dropped.
        if kept.len() < rayon::current_num_threads().max(1) {
            kept.push(self.free);
        }
    }

    /// A buffer of `len` values (contents unspecified: every caller overwrites them all).
    fn take(&mut self, len: usize) -> Aligned<f32> {
        let free = &mut self.free.f32s;
        let best = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        let mut buffer = match best {
            Some(i) => free.swap_remove(i),
            None => Aligned::default(),
        };
        buffer.reset(len);
        buffer
    }

    fn give(&mut self, buffer: Aligned<f32>) {
        self.free.f32s.push(buffer);
    }

    /// The largest byte buffer kept (quantisation resizes it).
    fn take_bytes(&mut self) -> AlignedBytes {
        let free = &mut self.free.bytes;
        free.sort_by_key(|b| b.capacity());
        free.pop().unwrap_or_default()
    }

    fn give_bytes(&mut self, buffer: AlignedBytes) {
        self.free.bytes.push(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An f32 network of `arch` with every weight `value`, no biases and two classes.
    fn uniform_net(arch: Arch, value: f64) -> candle_core::Result<FastResNet> {
        let full = |shape: &[usize]| {
            Tensor::full(value, shape, &Device::Cpu)?.to_dtype(candle_core::DType::F32)
        };
        FastResNet::from_parts(
            arch,
            |spec| {
                let (cout, cin, k) = (spec.out_channels, spec.in_channels, spec.kernel);
                Ok((ConvWeights::F32(full(&[cout, cin, k, k])?), vec![0.0; cout]))
            },
            full(&[2, arch.feature_dim()])?,
            vec![0.0; 2],
        )
    }

    /// f32 stride-1 3x3 convolutions run on Winograd up to 256 input channels and directly
    /// in the 512-channel last stage (where Winograd was slower and held 79 MB more).
    #[test]
    fn the_last_stage_keeps_direct_3x3_convolutions() -> candle_core::Result<()> {
        for arch in [Arch::ResNet18, Arch::ResNet50] {
            let net = uniform_net(arch, 0.0)?;
            let (mut winograd, mut direct) = (0, 0);
            for conv in net.blocks.iter().flat_map(|b| &b.path) {
                let stride_1_3x3 = conv.k == 3 && conv.stride == 1;
                match &conv.weights {
                    Weights::Winograd(_) => {
                        assert!(
                            stride_1_3x3 && conv.cin <= WINOGRAD_MAX_CIN,
                            "{arch}: {} in",
                            conv.cin
                        );
                        winograd += 1;
                    }
                    Weights::F32(_) if stride_1_3x3 => {
                        assert_eq!(conv.cin, 512, "{arch}: a direct 3x3");
                        direct += 1;
                    }
                    Weights::F32(_) => {}
                    Weights::Int8(_) => panic!("{arch}: f32 weights came out int8"),
                }
            }
            assert!(winograd > 0 && direct > 0, "{arch}: {winograd} / {direct}");
        }
        Ok(())
    }

    /// An input without pixels is refused with an error (it had split the work into chunks
    /// of no length, a panic), and one pixel is still a picture.
    /// Max pooling (3x3, stride 2, padding 1) against each window's largest value taken
    /// directly, for 64 channels (the unrolled path) and others, at odd and even sizes, with
    /// a floor of -inf and of 0 (the ReLU applied as it pools).
    #[test]
    fn max_pooling_takes_each_windows_largest_value() {
        for (n, h, w, c) in [(2, 7, 6, 64), (1, 9, 9, 24), (1, 2, 3, 64), (1, 5, 4, 3)] {
            let values: Vec<f32> = (0..n * h * w * c)
                .map(|i| ((i * 37 % 101) as f32 - 85.0) * 0.5)
                .collect();
            let mut data = Aligned::zeroed(values.len());
            data.copy_from_slice(&values);
            let x = Nhwc { n, h, w, c, data };
            let mut scratch = Scratch {
                free: Default::default(),
            };
            for (relu, floor) in [
                (StemRelu::Applied, f32::NEG_INFINITY),
                (StemRelu::InPooling, 0.0),
            ] {
                let pooled = max_pool(&x, relu, &mut scratch);
                let (oh, ow) = (pooled_size(h), pooled_size(w));
                assert_eq!((pooled.n, pooled.h, pooled.w, pooled.c), (n, oh, ow, c));
                for b in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for ch in 0..c {
                                let mut largest = floor;
                                for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(h) {
                                    for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(w) {
                                        largest =
                                            largest.max(values[((b * h + iy) * w + ix) * c + ch]);
                                    }
                                }
                                let at = ((b * oh + oy) * ow + ox) * c + ch;
                                assert_eq!(pooled.data[at], largest, "{n}x{h}x{w}x{c} at {at}");
                            }
                        }
                    }
                }
                // Some windows hold only negative values: the floor decides theirs.
                assert_eq!(pooled.data.iter().any(|&v| v < 0.0), floor < 0.0);
            }
        }
    }

    #[test]
    fn inputs_without_pixels_are_refused() -> candle_core::Result<()> {
        let net = uniform_net(Arch::ResNet18, 1.0)?;
        for (h, w) in [(0, 32), (32, 0), (0, 0)] {
            let x = Tensor::zeros((2, 3, h, w), candle_core::DType::F32, &Device::Cpu)?;
            let err = net.forward(&x).expect_err("no pixels");
            assert!(err.to_string().contains("no pixels"), "{h} x {w}: {err}");
        }
        let one = Tensor::ones((1, 3, 1, 1), candle_core::DType::F32, &Device::Cpu)?;
        assert_eq!(net.forward(&one)?.dims(), &[1, 2]);
        Ok(())
    }

    #[test]
    fn a_kernel_level_comes_only_from_detection() {
        let available = Kernels::available();
        assert_eq!(available.first(), Some(&Kernels::portable()));
        for level in Level::ALL {
            assert_eq!(Kernels::new(level).is_some(), level.supported(), "{level}");
            assert_eq!(level.name().parse::<Level>(), Ok(level));
        }
        assert_eq!(
            Kernels::best(),
            *available.last().expect("portable at least")
        );
        // Every level above portable stands on AVX2 and FMA (x86-64) or NEON (aarch64).
        assert!(available
            .iter()
            .all(|k| k.level() == Level::Portable || k.avx2() || k.neon()));
        // AMX stands on AVX-512 VNNI (its stores and everything but the int8 products).
        assert!(!Level::Amx.supported() || Level::Avx512Vnni.supported());
    }

    /// Where Linux lists AMX-INT8 and is new enough to grant the tile data (5.16), the AMX
    /// level is found (a detection that silently failed would pass every other test), and
    /// it is never found where Linux does not list it.
    #[test]
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    fn amx_is_found_where_linux_lists_it() {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let listed = flags
            .lines()
            .find(|l| l.starts_with("flags"))
            .is_some_and(|l| {
                let has = |f: &str| l.split_whitespace().any(|w| w == f);
                has("amx_int8") && has("amx_tile") && has("avx512_vnni")
            });
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let version: Vec<u32> = release
            .split(|c: char| !c.is_ascii_digit())
            .take(2)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        let grants = version.as_slice() >= [5, 16].as_slice();
        if listed && grants {
            assert!(
                Level::Amx.supported(),
                "AMX listed by Linux {release} but not found"
            );
            assert_eq!(Kernels::best().level(), Level::Amx);
        } else {
            // And never where Linux does not list it.
            assert!(!Level::Amx.supported() || listed);
        }
    }

    /// On aarch64 the NEON kernels are the ones chosen: NEON is in every aarch64 CPU, the
    /// dot-product level wherever the CPU has `sdot`, the matrix-multiply level wherever it has
    /// `smmla` (CI runs this under qemu's `max` CPU, which has both, and its Cortex-A76 and
    /// A72, which have only the first and neither).
    #[test]
    #[cfg(target_arch = "aarch64")]
    fn aarch64_chooses_the_neon_kernels() {
        let levels: Vec<Level> = Kernels::available().iter().map(|k| k.level()).collect();
        assert!(levels.contains(&Level::Neon), "{levels:?}");
        let expected = if std::arch::is_aarch64_feature_detected!("i8mm") {
            Level::NeonI8mm
        } else if std::arch::is_aarch64_feature_detected!("dotprod") {
            Level::NeonDot
        } else {
            Level::Neon
        };
        assert_eq!(Kernels::detect().level(), expected);
        assert!(!levels.contains(&Level::Avx2));
        // CI runs this under qemu's `max` CPU and names the level that must run there, so a
        // lost feature detection cannot pass as a portable run.
        if let Ok(name) = std::env::var("FINGERPRINT_EXPECT_KERNELS") {
            assert_eq!(Kernels::detect().level().name(), name.trim());
        }
    }

    #[test]
    fn the_override_picks_a_level_this_cpu_runs_or_says_why_not() {
        let best = Kernels::best();
        assert_eq!(Kernels::choose(None), (best, None));
        assert_eq!(
            Kernels::choose(Some(" portable ")),
            (Kernels::portable(), None)
        );
        let (kernels, problem) = Kernels::choose(Some("avx9000"));
        assert_eq!(kernels, best);
        assert!(problem.is_some_and(|p| p.contains("unknown kernel level")));
        for level in Level::ALL {
            let (kernels, problem) = Kernels::choose(Some(level.name()));
            if level.supported() {
                assert_eq!((kernels.level(), problem), (level, None));
            } else {
                assert_eq!(kernels, best);
                assert!(
                    problem.is_some_and(|p| p.contains("does not run")),
                    "{level}"
                );
            }
        }
    }
}
