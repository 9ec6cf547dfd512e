//! Occlusion maps find the part of a scan a decision rests on, and nothing else.

use anyhow::Result;
use candle_core::{Device, Tensor, D};
use fingerprint_common::Preprocessing;
use image::{GrayImage, Luma};
use trainer::saliency::{occlusion_map, overlay, Occlusion};

/// A "network" whose decision depends only on the region x, y in [8, 24): class 0 when it is
/// bright, class 1 otherwise.
fn region_classifier(x: &Tensor) -> candle_core::Result<Tensor> {
    let region = x.narrow(1, 0, 1)?.narrow(2, 8, 16)?.narrow(3, 8, 16)?;
    let mean = region.flatten_from(1)?.mean(D::Minus1)?;
    let class0 = ((mean - 1.0)? * 4.0)?;
    let logits = Tensor::stack(&[&class0, &class0.zeros_like()?], 1)?;
    candle_nn::ops::softmax(&logits, D::Minus1)
}

#[test]
fn the_map_marks_the_region_the_decision_rests_on() -> Result<()> {
    let pre = Preprocessing::imagenet(64);
    let scan = GrayImage::from_fn(64, 64, |x, y| {
        Luma([if (8..24).contains(&x) && (8..24).contains(&y) {
            255
        } else {
            128
        }])
    });
    let input = pre.apply(&scan);
    let occlusion = Occlusion {
        window: 16,
        stride: 4,
    };
    let map = occlusion_map(&input, &pre, occlusion, 32, &Device::Cpu, region_classifier)?;
    assert_eq!(map.predicted, 0);
    assert!(map.probability > 0.99);
    assert_eq!(map.windows.len(), 13 * 13);

    let at = |v: &[f32], x: usize, y: usize| v[y * 64 + x];
    // Strongest point of each map lies in the region.
    for (name, values) in [("drop", &map.drop), ("flip", &map.flip)] {
        let (best, _) = values
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .expect("non-empty");
        let (x, y) = (best % 64, best / 64);
        assert!(
            (8..24).contains(&x) && (8..24).contains(&y),
            "{name} peaks at {x},{y}"
        );
    }
    assert!(
        at(&map.drop, 16, 16) > 0.9,
        "hiding the region's centre removes the decision"
    );
    assert!(at(&map.flip, 16, 16) > 0.5);
    // Far from the region, occlusion changes nothing.
    for (x, y) in [(50, 50), (60, 5), (5, 60)] {
        assert_eq!(at(&map.drop, x, y), 0.0, "drop at {x},{y}");
        assert_eq!(at(&map.flip, x, y), 0.0, "flip at {x},{y}");
    }
    let picture = overlay(&scan, &map.drop);
    assert_eq!(picture.dimensions(), (64, 64));
    assert_ne!(
        picture.get_pixel(16, 16).0,
        [255, 255, 255],
        "coloured where it matters"
    );
    assert_eq!(
        picture.get_pixel(50, 50).0,
        [128, 128, 128],
        "untouched elsewhere"
    );
    Ok(())
}
