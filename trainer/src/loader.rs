//! Feeding the network: scans decoded and resized once, in parallel, then augmented and
//! normalised per batch, in parallel, each scan with its own seeded random stream so that a
//! run is repeatable whatever the number of threads.

use std::path::PathBuf;

use fingerprint_common::{read_scan, Preprocessing, ScanError, ScanLimits};
use image::GrayImage;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::Augmentation;
use crate::dataset::Sample;

/// Scans resized to the network's input size (before normalisation), with their labels.
pub struct ImageCache {
    pub paths: Vec<PathBuf>,
    pub images: Vec<GrayImage>,
    pub labels: Vec<u32>,
}

impl ImageCache {
    /// Decodes and resizes every sample, in parallel (`sensor_dpi`: the scans' resolution,
    /// where known; see [`Preprocessing::resize_at`]). `on_done` is called once per scan (for
    /// a progress bar).
    pub fn load(
        samples: &[Sample],
        pre: &Preprocessing,
        sensor_dpi: Option<u32>,
        limits: &ScanLimits,
        on_done: impl Fn() + Sync,
    ) -> Result<Self, ScanError> {
        Self::load_turned(samples, pre, sensor_dpi, limits, 0.0, on_done)
    }

    /// [`load`](Self::load) with every scan turned by `degrees` about its centre first
    /// ([`Preprocessing::resize_turned_at`]: an enrolment's turned templates).
    pub fn load_turned(
        samples: &[Sample],
        pre: &Preprocessing,
        sensor_dpi: Option<u32>,
        limits: &ScanLimits,
        degrees: f32,
        on_done: impl Fn() + Sync,
    ) -> Result<Self, ScanError> {
        let images = samples
            .par_iter()
            .map(|s| {
                let scan = read_scan(&s.path, limits)?;
                on_done();
                Ok(pre.resize_turned_at(&scan, sensor_dpi, degrees))
            })
            .collect::<Result<Vec<_>, ScanError>>()?;
        Ok(Self {
            paths: samples.iter().map(|s| s.path.clone()).collect(),
            images,
            labels: samples.iter().map(|s| s.identity as u32).collect(),
        })
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// The random stream of one scan in one epoch.
fn scan_rng(seed: u64, epoch: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rng.set_stream(index as u64);
    rng
}

/// What to do to each scan of a batch.
#[derive(Clone, Copy)]
pub enum BatchMode<'a> {
    /// As served: no augmentation.
    Plain,
    /// Augmented with the scan's own stream for `(seed, epoch)`, except slots below
    /// `plain_slots`, shown as is (the first copy of each training scan).
    Augmented {
        augmentation: &'a Augmentation,
        seed: u64,
        epoch: u64,
        plain_slots: usize,
    },
}

/// Runs `f` on every scan of `cache`, in order, as plain (unaugmented) input tensors of at
/// most `batch_size` scans on `device`: the loop of every evaluation.
pub fn for_each_plain_batch(
    cache: &ImageCache,
    pre: &Preprocessing,
    device: &candle_core::Device,
    batch_size: usize,
    mut f: impl FnMut(candle_core::Tensor) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let indices: Vec<(usize, usize)> = (0..cache.len()).map(|i| (i, i)).collect();
    let s = pre.size as usize;
    for chunk in indices.chunks(batch_size.max(1)) {
        let (x, _) = make_batch(cache, chunk, pre, BatchMode::Plain);
        f(candle_core::Tensor::from_vec(
            x,
            (chunk.len(), 3, s, s),
            device,
        )?)?;
    }
    Ok(())
}

/// Normalised inputs (N x 3 x S x S values, CHW per scan) and labels of the scans at
/// `indices`; `slot` numbers a scan within the epoch so that copies of one scan differ.
pub fn make_batch(
    cache: &ImageCache,
    indices: &[(usize, usize)],
    pre: &Preprocessing,
    mode: BatchMode,
) -> (Vec<f32>, Vec<u32>) {
    let per_scan: Vec<Vec<f32>> = indices
        .par_iter()
        .map(|&(index, slot)| {
            let mut out = Vec::with_capacity(pre.len());
            match mode {
                BatchMode::Augmented {
                    augmentation,
                    seed,
                    epoch,
                    plain_slots,
                } if slot >= plain_slots => {
                    let mut rng = scan_rng(seed, epoch, slot);
                    let img = augmentation.apply(&cache.images[index], &mut rng);
                    pre.normalize_into(&img, &mut out);
                }
                _ => pre.normalize_into(&cache.images[index], &mut out),
            }
            out
        })
        .collect();
    let labels = indices.iter().map(|&(i, _)| cache.labels[i]).collect();
    (per_scan.concat(), labels)
}
