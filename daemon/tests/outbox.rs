//! The outbox keeps decisions across restarts, in order, bounded, and survives a torn write.

use anyhow::Result;
use fingerprint_common::{Decision, MatchMode, ModelRef, ScanSource, SourceKind, Verdict};
use fingerprintd::job::Settle;
use fingerprintd::outbox::{Entry, Outbox};

fn entry(id: &str) -> Entry {
    Entry {
        decision: Decision {
            scan_id: id.into(),
            source: ScanSource {
                kind: SourceKind::Mqtt,
                name: "t".into(),
                sensor: None,
            },
            timestamp: "2026-11-26T00:00:00Z".into(),
            decision: Verdict::Deny,
            mode: MatchMode::Identification,
            claimed_identity: None,
            identity: None,
            score: Some(0.1),
            threshold: 0.9,
            matcher: None,
            network_score: None,
            minutiae_score: None,
            fused_score: None,
            candidates: vec![],
            model: Some(ModelRef {
                name: "m".into(),
                digest: "sha256:0".into(),
            }),
            latency_ms: 1.0,
            error: None,
            locked_out: false,
        },
        settle: Settle::Processed(format!("/sensor/{id}").into()),
    }
}

fn ids(outbox: &Outbox) -> Vec<String> {
    outbox
        .iter()
        .map(|(_, e)| e.decision.scan_id.clone())
        .collect()
}

#[test]
fn entries_survive_reopening_in_order_and_completed_ones_are_gone() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut outbox = Outbox::open(dir.path(), 10)?;
    for id in ["a", "b", "c"] {
        assert!(outbox.push(entry(id))?.is_none());
    }
    let first = outbox.iter().next().map(|(s, _)| *s).expect("an entry");
    let done = outbox.complete(first).expect("completed entry");
    assert_eq!(done.decision.scan_id, "a");
    drop(outbox);
    let mut reopened = Outbox::open(dir.path(), 10)?;
    assert_eq!(ids(&reopened), ["b", "c"]);
    // New entries follow the old ones.
    reopened.push(entry("d"))?;
    assert_eq!(ids(&Outbox::open(dir.path(), 10)?), ["b", "c", "d"]);
    Ok(())
}

#[test]
fn a_torn_write_and_a_damaged_entry_do_not_stop_the_outbox() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut outbox = Outbox::open(dir.path(), 10)?;
    outbox.push(entry("kept"))?;
    drop(outbox);
    // A power cut mid-write leaves a temporary file; a bad disk block, garbage.
    std::fs::write(dir.path().join("00000000000000000007.tmp"), b"{\"decis")?;
    std::fs::write(dir.path().join("00000000000000000009.json"), b"\0\0\0")?;
    let outbox = Outbox::open(dir.path(), 10)?;
    assert_eq!(ids(&outbox), ["kept"]);
    assert!(!dir.path().join("00000000000000000007.tmp").exists());
    assert!(dir.path().join("00000000000000000009.bad").exists());
    Ok(())
}

#[test]
fn a_full_outbox_drops_the_oldest_and_hands_it_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut outbox = Outbox::open(dir.path(), 2)?;
    outbox.push(entry("1"))?;
    outbox.push(entry("2"))?;
    let dropped = outbox.push(entry("3"))?.expect("oldest dropped");
    assert_eq!(dropped.decision.scan_id, "1");
    assert_eq!(ids(&outbox), ["2", "3"]);
    assert_eq!(std::fs::read_dir(dir.path())?.count(), 2);
    Ok(())
}
