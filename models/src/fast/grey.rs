//! The stem on grey scans: a third of its multiplications.
//!
//! Preprocessing copies a grey scan into the three input channels, each normalised on its own:
//! channel `c` holds `v * scale[c] - shift[c]` for grey value `v`
//! ([`ChannelNorm`](fingerprint_common::ChannelNorm)). So the stem's k x k x 3 products equal
//! k x k x 1 products of the grey values, with each tap's three weights summed (each times its
//! channel's scale), plus a constant: minus every tap's weights times the channels' shifts.
//! Except at the border, where a tap reads the padding, whose value is 0 in every channel, not
//! `-shift[c]`: there that tap's share of the constant is given back. A ResNet-50's stem at
//! 224 x 224 does 39 million multiply-adds instead of 118.
//!
//! Nothing needs telling: a network built [`with_grey_scans`](super::FastResNet::with_grey_scans)
//! checks each input image, and takes this path only where all three channels are, bit for bit,
//! the normalisation of one grey image (whatever made them); any other input runs the
//! three-channel stem. The two give the same values up to f32 rounding, and this path is the
//! same on every kernel level (the products are fused in depth order on each), so an int8
//! model's answers for a scan are the same on every CPU.

use fingerprint_common::ChannelNorm;

use super::matmul::{matmul, Epilogue, PackedB, RowLayout, Rows};
use std::sync::{Arc, Mutex, PoisonError};

use rayon::prelude::*;

use super::{pad, Conv, Kernels, Nhwc, Scratch, Weights};

/// The stem folded for grey input (see the module's documentation).
pub(super) struct GreyStem {
    /// The stem's geometry on one input channel: as weights, each tap's three weights times
    /// their channels' scales, summed (k*k x cout); as bias, the stem's minus every tap's
    /// shifts (the value of an output whose taps all lie inside the image, before its products).
    conv: Conv,
    /// k*k x cout: tap (ky, kx)'s weights times the channels' shifts (what a tap in the
    /// padding gives back), in f64 so that border corrections are summed before rounding.
    tap_shift: Vec<f64>,
    /// Where the last size of image seen reads the padding ([`border`](Self::border)).
    border: Mutex<Option<Arc<Border>>>,
    channels: [ChannelNorm; 3],
}

/// Where a stem's outputs read the padding, for one size of image (see [`GreyStem::border`]).
struct Border {
    /// The input's size.
    size: (usize, usize),
    /// For each output line, and each output column: the taps inside the image along it.
    lines: Vec<(usize, usize)>,
    columns: Vec<(usize, usize)>,
    /// The columns whose windows reach into the padding.
    edge_columns: Vec<usize>,
    /// For each window that reaches into the padding, by its taps inside ([first row, end
    /// row, first column, end column]): the values given back, one a channel.
    given_back: Vec<([usize; 4], Vec<f32>)>,
}

impl GreyStem {
    /// The grey form of `stem` (f32 weights, three input channels) for inputs normalised by
    /// `channels`; None for a stem of other input channels or weights.
    pub(super) fn new(stem: &Conv, channels: [ChannelNorm; 3]) -> Option<Self> {
        let Weights::F32(packed) = &stem.weights else {
            return None;
        };
        if stem.cin != 3 {
            return None;
        }
        let (k, cout) = (stem.k, stem.cout);
        // Rows of the packed stem: (ky, kx, channel) x cout.
        let rows = packed.unpack();
        let taps = k * k;
        let mut weight = vec![0f32; taps * cout];
        let mut tap_shift = vec![0f64; taps * cout];
        for t in 0..taps {
            for o in 0..cout {
                let w = |c: usize| f64::from(rows[(t * 3 + c) * cout + o]);
                weight[t * cout + o] = (0..3)
                    .map(|c| w(c) * f64::from(channels[c].scale))
                    .sum::<f64>() as f32;
                tap_shift[t * cout + o] = (0..3).map(|c| w(c) * f64::from(channels[c].shift)).sum();
            }
        }
        let bias = (0..cout)
            .map(|o| {
                let shifts: f64 = (0..taps).map(|t| tap_shift[t * cout + o]).sum();
                (f64::from(stem.bias[o]) - shifts) as f32
            })
            .collect();
        Some(Self {
            conv: Conv {
                cin: 1,
                cout,
                k,
                stride: stem.stride,
                pad: stem.pad,
                weights: Weights::F32(PackedB::new(taps, cout, &weight)),
                bias,
            },
            tap_shift,
            channels,
            border: Mutex::new(None),
        })
    }

    /// Writes image `chw` (3 x h x w, normalised) to `grey` (h x w) as its grey values, if it is
    /// one grey image normalised by this stem's channels, bit for bit; else false (and `grey`
    /// holds garbage).
    pub(super) fn read(&self, chw: &[f32], grey: &mut [f32]) -> bool {
        let pixels = grey.len();
        debug_assert_eq!(chw.len(), 3 * pixels);
        let (first, rest) = chw.split_at(pixels);
        let (second, third) = rest.split_at(pixels);
        let [c0, c1, c2] = self.channels;
        let to_grey = 1.0 / c0.scale;
        // Adding and taking away 1.5 x 2^23 rounds an f32 below 2^22 to the nearest whole
        // number (in plain SSE2, so this loop vectorises; `round` and `as u8` would not).
        const ROUND: f32 = 12_582_912.0;
        let mut differ = 0u32;
        for (((out, &x0), &x1), &x2) in grey.iter_mut().zip(first).zip(second).zip(third) {
            // The grey level x0 was made from, if any: the normalisation's rounding error is
            // far below half a level. NaN and out-of-range values end up in 0..=255 and
            // then fail the comparison (`clamp` would keep a NaN).
            #[allow(clippy::manual_clamp)]
            let v = (((x0 + c0.shift) * to_grey + ROUND) - ROUND)
                .max(0.0)
                .min(255.0);
            // Compared as bits: the same formula on the same value gives the same bits.
            differ |= (c0.normalize_level(v).to_bits() ^ x0.to_bits())
                | (c1.normalize_level(v).to_bits() ^ x1.to_bits())
                | (c2.normalize_level(v).to_bits() ^ x2.to_bits());
            *out = v;
        }
        differ == 0
    }

    /// The stem's output, before its ReLU, for grey images `x` (c = 1, values 0..=255).
    ///
    /// In bands of output lines, each given back its padding's share as soon as its products
    /// are stored, while its lines are in the thread's cache. Given back after the whole
    /// output (3.2 MB at 224 x 224), the border outputs' lines had left the caches: one miss
    /// after another, a third of the products' time (145 us of a ResNet-50 int8 pass on a Xeon).
    pub(super) fn forward(&self, kernels: Kernels, x: &Nhwc, scratch: &mut Scratch) -> Nhwc {
        debug_assert_eq!(x.c, 1);
        let conv = &self.conv;
        let Weights::F32(weight) = &conv.weights else {
            unreachable!("made with f32 weights (`new`)")
        };
        let (k, s, p, c) = (conv.k, conv.stride, conv.pad, conv.cout);
        let (oh, ow) = (conv.out_size(x.h), conv.out_size(x.w));
        let padded = pad(x, p, scratch);
        // One channel: a kernel row's k taps are k adjacent values, read as one tap of depth
        // k (the same depth order as the packed rows).
        let taps: Vec<usize> = (0..k).map(|ky| ky * padded.w).collect();
        let epilogue = Epilogue {
            scale: None,
            row_scale: None,
            bias: &conv.bias,
            residual: None,
            relu: false,
        };
        let border = self.border((x.h, x.w));
        // Four bands a thread, so that they share out evenly.
        let band = oh.div_ceil(4 * rayon::current_num_threads().max(1)).max(1);
        let mut out = scratch.take(x.n * oh * ow * c);
        out.par_chunks_mut(oh * ow * c)
            .zip(padded.data.par_chunks(padded.h * padded.w))
            .for_each(|(image_out, image)| {
                image_out
                    .par_chunks_mut(band * ow * c)
                    .enumerate()
                    .for_each(|(j, lines)| {
                        let (first, count) = (j * band, lines.len() / (ow * c));
                        let layout = RowLayout {
                            lines: count,
                            line_len: ow,
                            lines_per_image: count,
                            image_stride: 0,
                            line_stride: s * padded.w,
                            row_stride: s,
                            tap_depth: k,
                        };
                        let a = Rows::new(&image[first * s * padded.w..], layout, &taps)
                            .expect("stem rows inside their padded input (sizes from the input's)");
                        matmul(kernels, &a, weight, &epilogue, lines);
                        self.give_back_padding(lines, &border, first..first + count);
                    });
            });
        scratch.give(padded.data);
        Nhwc {
            n: x.n,
            h: oh,
            w: ow,
            c,
            data: out,
        }
    }

    /// Where an image `h` x `w`'s stem outputs read the padding, and what each gives back:
    /// the same for every image of a size, so kept for the last size seen (computed, it took
    /// as long as a fifth of the stem's products).
    fn border(&self, (h, w): (usize, usize)) -> Arc<Border> {
        let mut kept = self.border.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(border) = kept.as_ref().filter(|b| b.size == (h, w)) {
            return Arc::clone(border);
        }
        let Conv {
            k,
            stride: s,
            pad: p,
            cout,
            ..
        } = self.conv;
        // The taps inside the image along one axis of `len` pixels, for output position `o`.
        let inside = |o: usize, len: usize| {
            let first = p.saturating_sub(o * s).min(k);
            let end = (len + p).saturating_sub(o * s).min(k);
            (first, end.max(first))
        };
        let lines: Vec<(usize, usize)> = (0..self.conv.out_size(h)).map(|o| inside(o, h)).collect();
        let columns: Vec<(usize, usize)> =
            (0..self.conv.out_size(w)).map(|o| inside(o, w)).collect();
        let edge_columns = (0..columns.len())
            .filter(|&o| columns[o] != (0, k))
            .collect();
        // A handful of distinct windows (4 x 4 at ResNet's 7x7, stride 2, padding 3), keyed
        // by the taps inside, [first row, end row, first column, end column].
        let mut given_back: Vec<([usize; 4], Vec<f32>)> = Vec::new();
        for &(y0, y1) in &lines {
            for &(x0, x1) in &columns {
                let key = [y0, y1, x0, x1];
                if key == [0, k, 0, k] || given_back.iter().any(|(c, _)| *c == key) {
                    continue;
                }
                let values = (0..cout)
                    .map(|o| {
                        let mut sum = 0f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let outside = !(y0..y1).contains(&ky) || !(x0..x1).contains(&kx);
                                if outside {
                                    sum += self.tap_shift[(ky * k + kx) * cout + o];
                                }
                            }
                        }
                        sum as f32
                    })
                    .collect();
                given_back.push((key, values));
            }
        }
        let border = Arc::new(Border {
            size: (h, w),
            lines,
            columns,
            edge_columns,
            given_back,
        });
        *kept = Some(Arc::clone(&border));
        border
    }

    /// Adds back, at each output whose window reaches into the padding, the shifts of the taps
    /// there (the bias took every tap's): in output lines `lines` of an image whose `border`
    /// this is, which `out` holds from its first value.
    fn give_back_padding(&self, out: &mut [f32], border: &Border, lines: std::ops::Range<usize>) {
        let (k, cout, ow) = (self.conv.k, self.conv.cout, border.columns.len());
        debug_assert!(lines.end <= border.lines.len() && out.len() >= lines.len() * ow * cout);
        for oy in lines.clone() {
            let (y0, y1) = border.lines[oy];
            let line = &mut out[(oy - lines.start) * ow * cout..][..ow * cout];
            let mut give_back = |ox: usize| {
                let (x0, x1) = border.columns[ox];
                let key = [y0, y1, x0, x1];
                if let Some((_, values)) = border.given_back.iter().find(|(c, _)| *c == key) {
                    for (v, g) in line[ox * cout..(ox + 1) * cout].iter_mut().zip(values) {
                        *v += g;
                    }
                }
            };
            // A line whose windows stay inside vertically reads the padding at its ends only.
            if (y0, y1) == (0, k) {
                border.edge_columns.iter().for_each(|&ox| give_back(ox));
            } else {
                (0..ow).for_each(give_back);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};
    use fingerprint_common::Preprocessing;

    use super::*;
    use crate::fast::aligned::Aligned;
    use crate::fast::{ConvWeights, Shortcut};
    use crate::resnet::ConvSpec;

    /// A 7x7, stride-2 stem of `cout` channels with formula weights and biases.
    fn stem(cout: usize) -> candle_core::Result<Conv> {
        let spec = ConvSpec {
            name: "conv1".into(),
            bn: "bn1".into(),
            in_channels: 3,
            out_channels: cout,
            kernel: 7,
            stride: 2,
        };
        let weight = crate::formula::parameter("conv1.weight", &[cout, 3, 7, 7]);
        let weight = Tensor::from_vec(weight, (cout, 3, 7, 7), &Device::Cpu)?;
        let bias = crate::formula::parameter("bn1.bias", &[cout]);
        Conv::new(&spec, ConvWeights::F32(weight), bias, true)
    }

    fn nhwc(n: usize, h: usize, w: usize, c: usize, values: &[f32]) -> Nhwc {
        let mut data = Aligned::zeroed(values.len());
        data.copy_from_slice(values);
        Nhwc { n, h, w, c, data }
    }

    /// The folded stem on grey values gives the three-channel stem's outputs (before the
    /// ReLU) within f32 rounding, at the border too (odd sizes: every combination of taps in
    /// the padding), and the same bits on every kernel level.
    #[test]
    fn the_grey_stem_is_the_stem_on_three_copies() -> candle_core::Result<()> {
        let conv = stem(24)?;
        // One stem for every size, in turn: what it keeps of a size's border is that size's.
        let shared =
            GreyStem::new(&conv, Preprocessing::imagenet(31).channels()).expect("a 3-channel stem");
        for size in [31usize, 40, 9, 31] {
            let preprocessing = Preprocessing::imagenet(size as u32);
            let grey_stem =
                GreyStem::new(&conv, preprocessing.channels()).expect("a 3-channel stem");
            let n = 2;
            let chw = crate::formula::grey_scans(n, &preprocessing);
            let pixels = size * size;
            // NHWC copies: the three channels, and the grey values read back.
            let mut three = vec![0f32; n * 3 * pixels];
            let mut grey = vec![0f32; n * pixels];
            for b in 0..n {
                let image = &chw[b * 3 * pixels..(b + 1) * 3 * pixels];
                assert!(grey_stem.read(image, &mut grey[b * pixels..(b + 1) * pixels]));
                for c in 0..3 {
                    for p in 0..pixels {
                        three[(b * pixels + p) * 3 + c] = image[c * pixels + p];
                    }
                }
            }
            let mut scratch = Scratch {
                free: Default::default(),
            };
            let mut portable: Option<Vec<f32>> = None;
            for kernels in Kernels::available() {
                let x3 = nhwc(n, size, size, 3, &three);
                let expected = conv.forward_once(kernels, &x3, Shortcut::None, false, &mut scratch);
                let xg = nhwc(n, size, size, 1, &grey);
                let got = grey_stem.forward(kernels, &xg, &mut scratch);
                let again = shared.forward(kernels, &xg, &mut scratch);
                assert_eq!(again.data.to_vec(), got.data.to_vec(), "{kernels} {size}");
                assert_eq!((got.h, got.w, got.c), (expected.h, expected.w, expected.c));
                let largest = expected.data.iter().fold(0f32, |m, v| m.max(v.abs()));
                let error = got
                    .data
                    .iter()
                    .zip(expected.data.iter())
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    error <= 2e-6 * largest,
                    "{kernels} {size}: {error} of {largest}"
                );
                match &portable {
                    None => portable = Some(got.data.to_vec()),
                    Some(first) => assert_eq!(first, &got.data.to_vec(), "{kernels} {size}"),
                }
            }
        }
        Ok(())
    }

    /// Only the normalisation of one grey image is read as grey: another normalisation, or one
    /// value one bit away, is not.
    #[test]
    fn only_normalised_grey_images_read_as_grey() -> candle_core::Result<()> {
        let conv = stem(8)?;
        let preprocessing = Preprocessing::imagenet(16);
        let grey_stem = GreyStem::new(&conv, preprocessing.channels()).expect("a 3-channel stem");
        let image = crate::formula::grey_scans(1, &preprocessing);
        let mut grey = vec![0f32; 256];
        assert!(grey_stem.read(&image, &mut grey));
        let levels: Vec<u8> = grey.iter().map(|&v| v as u8).collect();
        assert!(grey.iter().zip(&levels).all(|(&v, &l)| v == f32::from(l)));
        let [c0, ..] = preprocessing.channels();
        assert!(grey
            .iter()
            .zip(&image)
            .all(|(&v, &x)| c0.normalize(v as u8) == x));

        for at in [0, 255, 256 + 17, 3 * 256 - 1] {
            let mut changed = image.clone();
            changed[at] = f32::from_bits(changed[at].to_bits() + 1);
            assert!(
                !grey_stem.read(&changed, &mut grey),
                "value {at} a bit away"
            );
        }
        let mut other = Preprocessing::imagenet(16);
        other.mean = [0.5; 3];
        let other_stem = GreyStem::new(&conv, other.channels()).expect("a 3-channel stem");
        assert!(!other_stem.read(&image, &mut grey), "another normalisation");
        for odd in [f32::NAN, f32::INFINITY, -1e30, 1e30] {
            let mut changed = image.clone();
            for c in 0..3 {
                changed[c * 256 + 5] = odd;
            }
            assert!(
                !grey_stem.read(&changed, &mut grey),
                "{odd} in every channel"
            );
        }
        let noise: Vec<f32> = crate::formula::uniform("input", 3 * 256)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        assert!(!grey_stem.read(&noise, &mut grey), "noise");
        Ok(())
    }
}
