//! The sensor directory without a broker: decisions as JSON lines, scans moved only after
//! their decision is written, bad scans rejected with a reason while the service goes on.

mod support;

use std::collections::BTreeMap;

use anyhow::Result;
use fingerprint_common::{SourceKind, Verdict};
use fingerprint_models::export::Quantization;
use fingerprintd::Service;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_directory_scans_get_decisions_and_bad_ones_are_rejected() -> Result<()> {
    let Setup {
        root: _root,
        dir,
        log,
        config,
        ..
    } = Setup::new(Quantization::Int8)?;

    // Already there at start; a dot-file and a half-written .part are never read.
    std::fs::write(dir.join("early.png"), good_scan(1))?;
    std::fs::write(dir.join(".hidden.png"), good_scan(2))?;
    std::fs::write(dir.join("late.png.part"), good_scan(3))?;
    // No broker, so no outbox: the state directory (the lockout's file) is made at start.
    let state_dir = config.state_dir.clone();
    assert!(!state_dir.exists());
    let service = Service::start(config).await?;
    assert!(state_dir.is_dir());
    wait_for(20, "the scan present at start", || {
        Ok((read_decisions(&log)?.len() == 1).then_some(()))
    })
    .await?;

    // Bad scans through the directory, then a good one.
    let bad = bad_scans();
    for (name, bytes) in &bad {
        drop_scan(&dir, &format!("{name}.png"), bytes)?;
    }
    drop_scan(&dir, "good.png", &good_scan(4))?;
    // Written in place (no rename): taken when the writer closes it.
    std::fs::write(dir.join("in-place.png"), good_scan(5))?;
    let expected = 3 + bad.len();
    let decisions = wait_for(30, "all decisions", || {
        let d = read_decisions(&log)?;
        Ok((d.len() >= expected).then_some(d))
    })
    .await?;
    service.shutdown().await?;

    let by_id: BTreeMap<_, _> = decisions.iter().map(|d| (d.scan_id.as_str(), d)).collect();
    assert_eq!(
        by_id.len(),
        decisions.len(),
        "one decision per scan: {decisions:#?}"
    );
    for (name, _) in &bad {
        let d = by_id[format!("{name}.png").as_str()];
        assert_eq!(d.decision, Verdict::Error, "{name}");
        let reason = d.error.as_deref().unwrap_or_default();
        println!("{name}: {reason}");
        assert!(!reason.is_empty());
        let rejected = dir.join("rejected").join(format!("{name}.png"));
        assert!(rejected.is_file(), "{name} not moved to rejected/");
        let why = std::fs::read_to_string(dir.join("rejected").join(format!("{name}.png.reason")))?;
        assert_eq!(why.trim(), reason);
    }
    assert!(by_id["oversized.png"]
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("larger"));
    assert!(by_id["bomb.png"]
        .error
        .as_deref()
        .unwrap_or_default()
        .contains("100000"));
    for name in ["early.png", "good.png", "in-place.png"] {
        let d = by_id[name];
        assert_eq!(
            d.decision,
            Verdict::Grant,
            "{name}: threshold 0 grants the best"
        );
        assert_eq!(d.source.kind, SourceKind::Directory);
        assert_eq!(d.candidates.len(), 2);
        assert!(d
            .identity
            .as_deref()
            .is_some_and(|i| i.starts_with("person-")));
        assert!(d
            .model
            .as_ref()
            .is_some_and(|m| m.digest.starts_with("sha256:")));
        assert!(
            dir.join("processed").join(name).is_file(),
            "{name} not in processed/"
        );
        assert!(
            !dir.join(name).exists(),
            "{name} still in the sensor directory"
        );
    }
    assert!(dir.join(".hidden.png").exists() && dir.join("late.png.part").exists());
    assert!(!by_id.contains_key(".hidden.png") && !by_id.contains_key("late.png.part"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_after_decision_and_batches_under_a_burst() -> Result<()> {
    let Setup {
        root: _root,
        dir,
        log,
        mut config,
        ..
    } = Setup::new(Quantization::F32)?;
    if let Some(s) = &mut config.sensor {
        s.after_decision = fingerprint_common::config::AfterDecision::Delete;
    }
    config.model.threshold = Some(1.0); // nothing reaches it: every scan denied
    let burst = 40;
    for i in 0..burst {
        std::fs::write(dir.join(format!("scan-{i:02}.png")), good_scan(i))?;
    }
    let service = Service::start(config).await?;
    let decisions = wait_for(60, "the burst", || {
        let d = read_decisions(&log)?;
        Ok((d.len() >= burst as usize).then_some(d))
    })
    .await?;
    let (scans, batches) = service.stats();
    service.shutdown().await?;
    println!("{scans} scans in {batches} batches");
    assert_eq!(decisions.len(), burst as usize);
    assert_eq!(scans, burst as u64);
    assert!(batches < scans, "waiting scans were not batched");
    assert!(decisions
        .iter()
        .all(|d| d.decision == Verdict::Deny && d.identity.is_none()));
    let left: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .collect();
    assert!(left.is_empty(), "scans left: {left:?}");
    assert_eq!(std::fs::read_dir(dir.join("processed"))?.count(), 0);
    Ok(())
}
