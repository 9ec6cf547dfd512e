//! Against a real MQTT broker (rumqttd, in-process, on loopback): scans in over the topic,
//! decisions and availability out, bad payloads answered with "error" decisions, and nothing
//! lost while the broker is unreachable.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use fingerprint_common::{SourceKind, Verdict};
use fingerprint_models::export::Quantization;
use fingerprintd::Service;
use rumqttc::QoS;
use support::*;

const SCAN: &str = "fingerprintd/test-door/scan";
const DECISION: &str = "fingerprintd/test-door/decision";
const STATUS: &str = "fingerprintd/test-door/status";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_over_mqtt_get_one_decision_each_and_bad_payloads_do_not_stop_it() -> Result<()> {
    let root = tempfile::tempdir()?;
    let model = root.path().join("model.safetensors");
    write_model(&model, Quantization::Int8, 0.0)?;
    let port = start_broker()?;
    let mut watcher = Subscriber::start(port, "watcher", &[DECISION, STATUS]).await?;
    let mut config = config(root.path(), &model);
    config.mqtt = Some(mqtt(port));
    let service = Service::start(config).await?;

    let (topic, payload, retained) = watcher.next(20).await?;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        (STATUS, b"online".as_slice())
    );
    let _ = retained;
    // The daemon subscribes once connected; give it a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sender = Subscriber::start(port, "sensor", &[]).await?;
    let json = |id: &str, image: &[u8]| {
        serde_json::json!({
            "scan_id": id,
            "sensor": "reader-1",
            "image": base64::engine::general_purpose::STANDARD.encode(image),
        })
        .to_string()
        .into_bytes()
    };
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, bytes) in bad_scans() {
        payloads.push((format!("raw-{name}"), bytes.clone()));
        payloads.push((
            format!("json-{name}"),
            json(&format!("json-{name}"), &bytes),
        ));
    }
    payloads.push(("bad-json".into(), b"{\"scan_id\": 3".to_vec()));
    payloads.push((
        "bad-base64".into(),
        br#"{"scan_id": "bad-base64", "image": "not base64!"}"#.to_vec(),
    ));
    payloads.push(("json-good".into(), json("json-good", &good_scan(7))));
    payloads.push(("raw-good".into(), good_scan(8)));
    for (_, payload) in &payloads {
        sender
            .client
            .publish(SCAN, QoS::AtLeastOnce, false, payload.clone())
            .await?;
    }
    let decisions = watcher.decisions(payloads.len(), 60).await?;
    let extra = watcher.more_decisions(1).await;
    assert!(extra.is_empty(), "more decisions than scans: {extra:?}");

    let by_id: BTreeMap<_, _> = decisions.iter().map(|d| (d.scan_id.clone(), d)).collect();
    let good = &by_id["json-good"];
    assert_eq!(good.decision, Verdict::Grant);
    assert_eq!(good.source.kind, SourceKind::Mqtt);
    assert_eq!(good.source.name, SCAN);
    assert_eq!(good.source.sensor.as_deref(), Some("reader-1"));
    // Raw payloads (and the unparsable JSON) get an id made up by the service.
    let raw: Vec<_> = decisions
        .iter()
        .filter(|d| d.scan_id.starts_with("mqtt-"))
        .collect();
    assert_eq!(raw.len(), bad_scans().len() + 2);
    assert_eq!(
        raw.iter().filter(|d| d.decision == Verdict::Grant).count(),
        1
    );
    for d in &decisions {
        if d.scan_id.starts_with("json-") && d.scan_id != "json-good" || d.scan_id == "bad-base64" {
            assert_eq!(d.decision, Verdict::Error, "{}", d.scan_id);
        }
        if d.decision == Verdict::Error {
            println!("{}: {}", d.scan_id, d.error.as_deref().unwrap_or_default());
            assert!(d.error.is_some() && d.candidates.is_empty() && d.score.is_none());
        }
    }
    let error_of = |id: &str| by_id[id].error.clone().unwrap_or_default();
    assert!(error_of("json-oversized").contains("larger"));
    assert!(error_of("bad-base64").contains("base64"));
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d.decision == Verdict::Error)
            .count(),
        payloads.len() - 2
    );

    service.shutdown().await?;
    let (topic, payload, _) = watcher.next(10).await?;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        (STATUS, b"offline".as_slice())
    );
    // Retained: a newcomer learns the door is offline.
    let mut late = Subscriber::start(port, "late", &[STATUS]).await?;
    let (_, payload, retained) = late.next(10).await?;
    assert_eq!(payload, b"offline");
    assert!(retained);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_and_restart_lose_no_decision_and_duplicate_none() -> Result<()> {
    let root = tempfile::tempdir()?;
    let model = root.path().join("model.safetensors");
    write_model(&model, Quantization::F32, 0.0)?;
    let port = start_broker()?;
    let proxy = Proxy::start(port).await?;
    let mut watcher = Subscriber::start(port, "watcher", &[DECISION]).await?;
    let dir = root.path().join("sensor");
    let mut config = config(root.path(), &model);
    config.sensor = Some(sensor(&dir));
    config.mqtt = Some(mqtt(proxy.port));
    let outbox = config.state_dir.join("outbox");
    let service = Service::start(config.clone()).await?;

    for i in 0..3 {
        drop_scan(&dir, &format!("before-{i}.png"), &good_scan(i))?;
    }
    let first = watcher.decisions(3, 30).await?;
    wait_for(10, "settled scans", || {
        Ok((std::fs::read_dir(dir.join("processed"))?.count() == 3).then_some(()))
    })
    .await?;

    // The broker goes away; scans keep coming.
    proxy.cut();
    for i in 0..4 {
        drop_scan(&dir, &format!("during-{i}.png"), &good_scan(10 + i))?;
    }
    wait_for(20, "decisions stored in the outbox", || {
        let n = std::fs::read_dir(&outbox)?.count();
        Ok((n == 4).then_some(()))
    })
    .await?;
    // Not published, so the scans are still where the sensor left them.
    for i in 0..4 {
        assert!(dir.join(format!("during-{i}.png")).is_file());
    }
    // A restart while the broker is still away: the outbox survives it.
    service.shutdown().await?;
    for i in 0..2 {
        drop_scan(&dir, &format!("stopped-{i}.png"), &good_scan(20 + i))?;
    }
    let service = Service::start(config).await?;
    proxy.restore();

    let mut rest = watcher.decisions(6, 60).await?;
    rest.extend(watcher.more_decisions(2).await);
    service.shutdown().await?;

    let mut ids: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|d| d.scan_id.clone())
        .collect();
    ids.sort();
    let mut expected: Vec<String> = (0..3)
        .map(|i| format!("before-{i}.png"))
        .chain((0..4).map(|i| format!("during-{i}.png")))
        .chain((0..2).map(|i| format!("stopped-{i}.png")))
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "every scan exactly one decision");
    assert_eq!(std::fs::read_dir(dir.join("processed"))?.count(), 9);
    assert_eq!(std::fs::read_dir(&outbox)?.count(), 0);
    Ok(())
}
