//! A door that works with enrolment alone: `matcher.mode = "minutiae"` and no model file.
//! Synthetic prints of fingertip size (256 px at about 500 dpi) are enrolled through
//! fingerprintd's own enrolment, the door is calibrated on other fingers' scans
//! (`fingerprintd calibrate`), and the service decides scans from its sensor folder: an
//! unusable scan gets an error decision that says why, and the good scan after it is decided.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use fingerprint_common::config::{MatcherConfig, ModelConfig, OutputConfig, SensorConfig};
use fingerprint_common::matcher::SHIPPED_MINUTIAE_THRESHOLD;
use fingerprint_common::{DaemonConfig, Decision, MatcherMode, ScanLimits, Verdict};
use fingerprintd::enroll::{enroll, EnrollError};
use fingerprintd::policy::DoorCalibration;
use fingerprintd::Service;
use image::{GrayImage, ImageFormat, Luma};
use trainer::synth::{write_dataset, SynthConfig};

fn scan(path: &Path) -> Result<(String, Vec<u8>)> {
    Ok((path.display().to_string(), std::fs::read(path)?))
}

fn png(image: &GrayImage) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

fn decisions(log: &Path) -> Vec<Decision> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Writes `bytes` into the sensor folder as a sensor would, and waits for its decision.
async fn decide(sensor: &Path, log: &Path, name: &str, bytes: &[u8]) -> Result<Decision> {
    let part = sensor.join(format!(".{name}.part"));
    std::fs::write(&part, bytes)?;
    std::fs::rename(&part, sensor.join(name))?;
    for _ in 0..600 {
        if let Some(d) = decisions(log).into_iter().find(|d| d.scan_id == name) {
            return Ok(d);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no decision for {name}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_without_a_model_enrols_calibrates_and_decides_by_minutiae() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let prints = tmp.path().join("prints");
    write_dataset(
        &SynthConfig {
            fingers: 8,
            impressions: 6,
            size: 256,
            seed: 7,
            ..SynthConfig::default()
        },
        &prints,
    )?;
    let file = |finger: usize, impression: usize| prints.join(format!("{finger}_{impression}.png"));
    let sensor = tmp.path().join("sensor");
    std::fs::create_dir_all(&sensor)?;
    let log = tmp.path().join("decisions.jsonl");
    let config = DaemonConfig {
        door_id: "no-model".into(),
        state_dir: tmp.path().join("state"),
        model: ModelConfig::default(),
        matcher: MatcherConfig {
            mode: MatcherMode::Minutiae,
            ..MatcherConfig::default()
        },
        limits: Default::default(),
        queue: Default::default(),
        sensor: Some(SensorConfig {
            dir: sensor.clone(),
            after_decision: Default::default(),
            processed_dir: None,
            rejected_dir: None,
        }),
        mqtt: None,
        output: OutputConfig {
            decisions: log.display().to_string(),
            outbox_capacity: 100,
        },
    };
    let limits = ScanLimits::default();

    // Enrolment without a model: fingers 1-4 from their first 3 impressions.
    for finger in 1..=4 {
        let scans = (1..=3)
            .map(|i| scan(&file(finger, i)))
            .collect::<Result<Vec<_>>>()?;
        let done = enroll(None, &config, &format!("finger-{finger}"), &scans, &limits)
            .with_context(|| format!("enrolling finger {finger}"))?;
        assert_eq!(done.matcher, MatcherMode::Minutiae);
        assert!(done.agreement.iter().all(|&a| a >= done.threshold));
    }
    // A blank impression among them is refused, by name and with the count.
    let blank = png(&GrayImage::from_pixel(300, 300, Luma([210])))?;
    let mut with_blank = vec![scan(&file(5, 1))?, scan(&file(5, 2))?];
    with_blank.push(("blank.png".into(), blank.clone()));
    let refused = enroll(None, &config, "finger-5", &with_blank, &limits);
    match refused {
        Err(EnrollError::NoMinutiae(why)) => {
            assert!(
                why.contains("blank.png") && why.contains("0 minutiae found"),
                "{why}"
            )
        }
        other => anyhow::bail!("a blank impression was not refused: {other:?}"),
    }

    // The door's calibration on other fingers' scans (fingers 5-8): no model needed either.
    let strangers = tmp.path().join("strangers");
    std::fs::create_dir_all(&strangers)?;
    for finger in 5..=8 {
        for i in 1..=6 {
            std::fs::copy(file(finger, i), strangers.join(format!("{finger}_{i}.png")))?;
        }
    }
    let calibrated = fingerprintd::calibrate::calibrate(None, &config, &strangers, 0.001, &limits)?;
    let c = &calibrated.calibration;
    assert_eq!(c.mode, MatcherMode::Minutiae);
    assert_eq!((c.stranger_scans, c.far), (24, 0.0));
    // A few strangers' scans never lower the threshold calibrated on real impostor pairs.
    assert!(c.threshold >= SHIPPED_MINUTIAE_THRESHOLD, "{c:?}");
    assert_eq!(
        DoorCalibration::load(&DoorCalibration::path(&config))?.as_ref(),
        Some(c)
    );

    // The door: an unusable scan, then a good one, then more.
    let service = Service::start(config.clone()).await?;
    assert!(service.engine().is_none());
    let blank_decision = decide(&sensor, &log, "blank.png", &blank).await?;
    assert_eq!(blank_decision.decision, Verdict::Error);
    let why = blank_decision.error.clone().unwrap_or_default();
    assert!(why.contains("minutiae found"), "{why}");
    let genuine = decide(&sensor, &log, "genuine-1.png", &std::fs::read(file(1, 4))?).await?;
    assert_eq!(genuine.decision, Verdict::Grant, "{genuine:?}");
    assert_eq!(genuine.identity.as_deref(), Some("finger-1"));
    assert_eq!(genuine.matcher, Some(MatcherMode::Minutiae));
    assert_eq!(genuine.threshold, c.threshold);
    assert!(genuine.model.is_none() && genuine.network_score.is_none());
    assert!(genuine.minutiae_score.is_some_and(|s| s >= c.threshold));
    let tiny = png(&GrayImage::from_pixel(60, 60, Luma([90])))?;
    let tiny_decision = decide(&sensor, &log, "tiny.png", &tiny).await?;
    assert_eq!(tiny_decision.decision, Verdict::Error);
    assert!(
        tiny_decision
            .error
            .as_deref()
            .is_some_and(|e| e.contains("too small")),
        "{tiny_decision:?}"
    );
    // Every other genuine probe, and a claim (1:1).
    let mut granted = 1;
    for finger in 1..=4 {
        for i in 4..=6 {
            if (finger, i) == (1, 4) {
                continue;
            }
            let d = decide(
                &sensor,
                &log,
                &format!("probe-{finger}-{i}.png"),
                &std::fs::read(file(finger, i))?,
            )
            .await?;
            assert_ne!(d.decision, Verdict::Error, "{d:?}");
            if d.decision == Verdict::Grant {
                assert_eq!(d.identity, Some(format!("finger-{finger}")), "{d:?}");
                granted += 1;
            }
        }
    }
    assert!(granted >= 10, "{granted} of 12 genuine probes granted");
    service.shutdown().await?;
    let moved: Vec<PathBuf> = std::fs::read_dir(sensor.join("rejected"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    assert!(
        moved.iter().any(|p| p.ends_with("blank.png.reason")),
        "{moved:?}"
    );
    Ok(())
}
