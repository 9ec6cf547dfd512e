//! Enrolment: CLI and MQTT enrol, remove and list; refusal of impressions that disagree; the
//! running service matching against the gallery (identification and verification); a gallery
//! cut short mid-write leaves the previous one intact.
//!
//! The test model has formula weights, so its embeddings barely separate anything: each test
//! measures the similarities of its scans first and sets the match threshold between the
//! genuine and the impostor ones, then checks what the service does with it.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine as _;
use fingerprint_common::gallery::{agreement, similarity, Impression};
use fingerprint_common::matcher::Prints;
use fingerprint_common::preprocess::ENROLMENT_TURNS_DEGREES;
use fingerprint_common::{DaemonConfig, Gallery, MatchMode, Verdict};
use fingerprint_models::export::Quantization;
use fingerprintd::engine::Engine;
use fingerprintd::gallery::GallerySlot;
use fingerprintd::input::encoded_scan_input;
use fingerprintd::Service;
use rumqttc::QoS;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_fingerprintd");

fn embed(engine: &Engine, scans: &[Vec<u8>]) -> Result<Vec<Vec<f32>>> {
    let limits = fingerprint_common::ScanLimits::default();
    let inputs = scans
        .iter()
        .map(|s| encoded_scan_input(s, engine.preprocessing(), None, &limits))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(engine.embeddings(&inputs)?)
}

/// The templates of `scans` turned by each enrolment turn, as enrolment keeps them.
fn embed_turned(engine: &Engine, scans: &[Vec<u8>]) -> Result<Vec<Vec<f32>>> {
    let limits = fingerprint_common::ScanLimits::default();
    let mut inputs = Vec::new();
    for scan in scans {
        let image = fingerprint_common::decode_scan(scan, &limits)?;
        for degrees in ENROLMENT_TURNS_DEGREES {
            inputs.push(
                engine
                    .preprocessing()
                    .apply_turned_at(&image, None, degrees),
            );
        }
    }
    Ok(engine.embeddings(&inputs)?)
}

/// Two enrolled "fingers" (stripes at two angles, three phases each), a probe of each, and
/// strangers; with the threshold that separates them on this model.
struct Cast {
    alice: Vec<Vec<u8>>,
    bob: Vec<Vec<u8>>,
    alice_probe: Vec<u8>,
    strangers: Vec<Vec<u8>>,
    outlier: Vec<u8>,
    threshold: f32,
}

fn cast(model: &Path) -> Result<Cast> {
    let alice: Vec<_> = [0.0, 1.5, 3.0]
        .iter()
        .map(|&p| stripes(45.0, 10.0, p))
        .collect();
    let bob: Vec<_> = [0.0, 1.5, 3.0]
        .iter()
        .map(|&p| stripes(135.0, 4.0, p))
        .collect();
    let alice_probe = stripes(45.0, 10.0, 4.5);
    let strangers: Vec<_> = [
        (0.0, 6.0, 0.0),
        (0.0, 6.0, 1.5),
        (0.0, 6.0, 3.0),
        (90.0, 6.0, 0.0),
    ]
    .iter()
    .map(|&(a, p, ph)| stripes(a, p, ph))
    .collect();
    let outlier = flat_scan(128);
    let engine = Engine::load(model, "cpu", None)?;
    let e = |s: &[Vec<u8>]| embed(&engine, s);
    let (ea, eb, es) = (e(&alice)?, e(&bob)?, e(&strangers)?);
    let ep = e(std::slice::from_ref(&alice_probe))?.remove(0);
    // What the door compares a probe with: each enrolled scan's template and its turned ones.
    let (ta, tb) = (
        [ea.clone(), embed_turned(&engine, &alice)?].concat(),
        [eb.clone(), embed_turned(&engine, &bob)?].concat(),
    );
    let best = |probe: &[f32], set: &[Vec<f32>]| {
        set.iter()
            .map(|t| similarity(probe, t))
            .fold(f32::MIN, f32::max)
    };
    // Genuine: each impression's agreement with its own set, and the probe with alice.
    let agreement = |set: &[Vec<f32>]| {
        agreement(set.len(), |i, j| similarity(&set[i], &set[j]))
            .into_iter()
            .fold(f32::MAX, f32::min)
    };
    let genuine = agreement(&ea).min(agreement(&eb)).min(best(&ep, &ta));
    let impostor = es
        .iter()
        .map(|s| best(s, &ta).max(best(s, &tb)))
        .fold(best(&ep, &tb), f32::max);
    println!("lowest genuine {genuine:.4}, highest impostor {impostor:.4}");
    anyhow::ensure!(
        genuine > impostor,
        "test scans do not separate on this model"
    );
    Ok(Cast {
        alice,
        bob,
        alice_probe,
        strangers,
        outlier,
        threshold: (genuine + impostor) / 2.0,
    })
}

fn write_files(dir: &Path, prefix: &str, scans: &[Vec<u8>]) -> Result<Vec<String>> {
    scans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = dir.join(format!("{prefix}-{i}.png"));
            std::fs::write(&path, s)?;
            Ok(path.display().to_string())
        })
        .collect()
}

fn cli(config: &Path, args: &[&str]) -> Result<(bool, String)> {
    let out = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.success(), text))
}

fn write_config(root: &Path, config: &DaemonConfig) -> Result<std::path::PathBuf> {
    let path = root.join("config.toml");
    std::fs::write(&path, toml::to_string(config)?)?;
    Ok(path)
}

async fn decide(setup: &Setup, name: &str, scan: &[u8]) -> Result<fingerprint_common::Decision> {
    drop_scan(&setup.dir, name, scan)?;
    wait_for(30, name, || {
        Ok(read_decisions(&setup.log)?
            .into_iter()
            .find(|d| d.scan_id == name))
    })
    .await
}

/// A batch's answers are each scan's own, in order (the engine lays a batch's inputs end to
/// end for the network), and an input of the wrong size is an error, not a panic.
#[test]
fn a_batch_answers_each_scan_as_alone_and_refuses_a_wrong_size() -> Result<()> {
    for quantization in [Quantization::F32, Quantization::Int8] {
        let dir = tempfile::tempdir()?;
        let model = dir.path().join("model.safetensors");
        write_model(&model, quantization, 0.0)?;
        let engine = Engine::load(&model, "cpu", None)?;
        let limits = fingerprint_common::ScanLimits::default();
        let inputs = [
            stripes(45.0, 10.0, 0.0),
            stripes(135.0, 4.0, 1.5),
            flat_scan(90),
        ]
        .iter()
        .map(|s| encoded_scan_input(s, engine.preprocessing(), None, &limits))
        .collect::<Result<Vec<_>, _>>()?;
        let batch = engine.logits(&inputs)?;
        assert_eq!(batch.len(), inputs.len());
        for (input, in_batch) in inputs.iter().zip(&batch) {
            let alone = engine.logits(std::slice::from_ref(input))?;
            for (a, b) in alone[0].iter().zip(in_batch) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{quantization:?}: {a} vs {b}"
                );
            }
        }
        assert_ne!(
            batch[0], batch[1],
            "{quantization:?}: different scans, different logits"
        );
        // One value short beside one value long: the batch's total is right, each input not.
        let (mut long, mut short) = (inputs[0].clone(), inputs[1].clone());
        long.push(0.0);
        short.pop();
        let err = engine
            .logits(&[long, short])
            .expect_err("inputs of the wrong size");
        assert!(err.to_string().contains("input 0 holds"), "{err}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_enrolment_is_picked_up_by_the_running_service() -> Result<()> {
    let mut setup = Setup::new(Quantization::F32)?;
    let cast = cast(&setup.model)?;
    setup.config.model.match_threshold = Some(cast.threshold);
    // Locked out after two strangers in a row (below).
    setup.config.matcher.lockout_after = 2;
    let config = write_config(setup.root.path(), &setup.config)?;
    let scans = setup.root.path().join("scans");
    std::fs::create_dir_all(&scans)?;
    let alice = write_files(&scans, "alice", &cast.alice)?;
    let bob = write_files(&scans, "bob", &cast.bob)?;
    let service = Service::start(setup.config.clone()).await?;

    // Nothing enrolled: the model's own classes.
    let d = decide(&setup, "before.png", &cast.alice_probe).await?;
    assert_eq!(d.mode, MatchMode::Classifier);

    let args = |id: &'static str, files: &[String]| -> Vec<String> {
        ["enroll", "--identity", id]
            .iter()
            .map(|s| s.to_string())
            .chain(files.iter().cloned())
            .collect()
    };
    let run = |a: Vec<String>| cli(&config, &a.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let (ok, text) = run(args("alice", &alice))?;
    assert!(ok, "{text}");
    assert!(text.contains("enrolled alice from 3 impressions"), "{text}");
    let (ok, text) = run(args("bob", &bob))?;
    assert!(ok, "{text}");
    // Too few impressions, and impressions of different fingers, are refused.
    let (ok, text) = run(args("carol", &alice[..2]))?;
    assert!(!ok && text.contains("at least 3"), "{text}");
    let mixed = write_files(
        &scans,
        "mixed",
        &[
            cast.alice[0].clone(),
            cast.alice[1].clone(),
            cast.outlier.clone(),
        ],
    )?;
    let (ok, text) = run(args("eve", &mixed))?;
    assert!(
        !ok && text.contains("disagree") && text.contains("mixed-2.png"),
        "{text}"
    );
    let (ok, text) = cli(&config, &["list"])?;
    assert!(
        ok && text.contains("alice\t3 templates") && text.contains("bob\t3 templates"),
        "{text}"
    );
    assert!(!text.contains("eve") && !text.contains("carol"), "{text}");
    // Each enrolled scan keeps the templates of its turned scans beside its own.
    let enrolled = Gallery::load(&setup.config.gallery_path())?.context("no gallery")?;
    for impression in &enrolled.identities["alice"] {
        let own = impression.embedding.as_ref().context("no template")?;
        assert_eq!(impression.turned.len(), ENROLMENT_TURNS_DEGREES.len());
        assert!(impression
            .turned
            .iter()
            .all(|t| t.len() == own.len() && t != own));
    }

    // The service reloads the gallery within a second or so.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = decide(&setup, "alice-probe.png", &cast.alice_probe).await?;
    assert_eq!(d.mode, MatchMode::Identification);
    assert_eq!(
        (d.decision, d.identity.as_deref()),
        (Verdict::Grant, Some("alice")),
        "{d:?}"
    );
    for (i, s) in cast.strangers.iter().enumerate() {
        let d = decide(&setup, &format!("stranger-{i}.png"), s).await?;
        assert_eq!(d.decision, Verdict::Deny, "stranger {i}: {d:?}");
        assert!(d.score.is_some_and(|s| s < cast.threshold));
        // The second denial in a row locks the door; the ones after it say so.
        assert_eq!(d.locked_out, i >= 2, "stranger {i}: {d:?}");
    }
    // Locked out: alice's scan clears the threshold, and is denied.
    let d = decide(&setup, "alice-locked-out.png", &cast.alice_probe).await?;
    assert_eq!(
        (d.decision, d.identity.as_deref(), d.locked_out),
        (Verdict::Deny, None, true),
        "{d:?}"
    );
    assert!(d.score.is_some_and(|s| s >= cast.threshold), "{d:?}");
    // A restart keeps the lockout (<state_dir>/lockout.json): still denied.
    service.shutdown().await?;
    assert!(setup.config.state_dir.join("lockout.json").exists());
    let service = Service::start(setup.config.clone()).await?;
    let d = decide(&setup, "alice-after-restart.png", &cast.alice_probe).await?;
    assert_eq!(
        (d.decision, d.identity.as_deref(), d.locked_out),
        (Verdict::Deny, None, true),
        "{d:?}"
    );

    let (ok, text) = cli(&config, &["remove", "alice"])?;
    assert!(ok, "{text}");
    let (ok, text) = cli(&config, &["remove", "alice"])?;
    assert!(!ok && text.contains("not enrolled"), "{text}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d = decide(&setup, "alice-after.png", &cast.alice_probe).await?;
    assert_eq!(d.decision, Verdict::Deny, "{d:?}");
    assert!(d.candidates.iter().all(|c| c.identity == "bob"));
    service.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_and_verification_over_mqtt() -> Result<()> {
    let mut setup = Setup::new(Quantization::F32)?;
    let cast = cast(&setup.model)?;
    setup.config.model.match_threshold = Some(cast.threshold);
    let port = start_broker()?;
    let mut m = mqtt(port);
    m.enrollment = true;
    setup.config.mqtt = Some(m);
    let mut watcher = Subscriber::start(
        port,
        "watcher",
        &[
            "fingerprintd/test-door/result",
            "fingerprintd/test-door/decision",
        ],
    )
    .await?;
    let service = Service::start(setup.config.clone()).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let client = watcher.client.clone();
    let publish = |topic: &str, body: serde_json::Value| {
        let client = client.clone();
        let topic = format!("fingerprintd/test-door/{topic}");
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, body.to_string())
                .await
        }
    };
    let reply = async |w: &mut Subscriber| -> Result<serde_json::Value> {
        loop {
            let (topic, payload, _) = w.next(30).await?;
            if topic.ends_with("/result") {
                return Ok(serde_json::from_slice(&payload)?);
            }
        }
    };

    let images: Vec<String> = cast.alice.iter().map(|s| b64(s)).collect();
    publish(
        "enroll",
        serde_json::json!({"request_id": "r1", "identity": "alice", "images": images}),
    )
    .await?;
    let r = reply(&mut watcher).await?;
    assert_eq!(r["request_id"], "r1");
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["templates"], 3);
    let mixed = vec![b64(&cast.alice[0]), b64(&cast.alice[1]), b64(&cast.outlier)];
    publish(
        "enroll",
        serde_json::json!({"request_id": "r2", "identity": "eve", "images": mixed}),
    )
    .await?;
    let r = reply(&mut watcher).await?;
    assert_eq!(r["ok"], false, "{r}");
    assert!(
        r["error"].as_str().is_some_and(|e| e.contains("disagree")),
        "{r}"
    );
    assert_eq!(
        fingerprintd::enroll::list(&setup.config.gallery_path())?.len(),
        1
    );

    // Verification: the claim decides which templates are compared.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scan = |id: &str, claim: &str| serde_json::json!({"scan_id": id, "claim": claim, "image": b64(&cast.alice_probe)});
    publish("scan", scan("v1", "alice")).await?;
    publish("scan", scan("v2", "bob")).await?;
    let decisions = watcher.decisions(2, 30).await?;
    let v1 = decisions.iter().find(|d| d.scan_id == "v1").expect("v1");
    let v2 = decisions.iter().find(|d| d.scan_id == "v2").expect("v2");
    assert_eq!(v1.mode, MatchMode::Verification);
    assert_eq!(
        (v1.decision, v1.identity.as_deref()),
        (Verdict::Grant, Some("alice"))
    );
    assert_eq!(v1.claimed_identity.as_deref(), Some("alice"));
    assert_eq!(v2.decision, Verdict::Deny, "bob is not enrolled: {v2:?}");
    assert!(v2.candidates.is_empty());

    publish(
        "remove",
        serde_json::json!({"request_id": "r3", "identity": "alice"}),
    )
    .await?;
    assert_eq!(reply(&mut watcher).await?["ok"], true);
    publish(
        "remove",
        serde_json::json!({"request_id": "r4", "identity": "alice"}),
    )
    .await?;
    let r = reply(&mut watcher).await?;
    assert_eq!(r["ok"], false);
    publish("enroll", serde_json::json!({"identity": 5})).await?;
    let r = reply(&mut watcher).await?;
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("bad request")),
        "{r}"
    );
    service.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolment_over_mqtt_is_off_by_default() -> Result<()> {
    let mut setup = Setup::new(Quantization::F32)?;
    let port = start_broker()?;
    setup.config.mqtt = Some(mqtt(port));
    let mut watcher =
        Subscriber::start(port, "watcher", &["fingerprintd/test-door/result"]).await?;
    let service = Service::start(setup.config.clone()).await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let images: Vec<String> = (0..3)
        .map(|i| base64::engine::general_purpose::STANDARD.encode(good_scan(i)))
        .collect();
    let body = serde_json::json!({"identity": "mallory", "images": images}).to_string();
    watcher
        .client
        .publish(
            "fingerprintd/test-door/enroll",
            QoS::AtLeastOnce,
            false,
            body,
        )
        .await?;
    assert!(
        watcher.next(2).await.is_err(),
        "a reply came although enrolment is off"
    );
    assert!(fingerprintd::enroll::list(&setup.config.gallery_path())?.is_empty());
    service.shutdown().await?;
    Ok(())
}

#[test]
fn a_gallery_cut_short_mid_write_leaves_the_previous_one() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("gallery.json");
    let mut gallery = Gallery::new(Some("sha256:abc"));
    let impression = |v: Vec<f32>| Impression {
        embedding: Some(v),
        minutiae: None,
        turned: Vec::new(),
    };
    // One impression with the templates of its turned scans: they are saved and read back.
    let mut turned = impression(vec![0.6, 0.8]);
    turned.turned = vec![vec![0.8, 0.6], vec![0.28, 0.96]];
    gallery.identities.insert(
        "alice".into(),
        vec![
            turned,
            impression(vec![1.0, 0.0]),
            impression(vec![0.0, 1.0]),
        ],
    );
    gallery.save(&path)?;
    let slot = GallerySlot::open(&path, &dir.path().join("calibration.json"))?;

    // A crash during the next save leaves its temporary file half written: ignored.
    let mut changed = gallery.clone();
    changed
        .identities
        .insert("bob".into(), vec![impression(vec![1.0, 0.0]); 3]);
    let full = std::fs::read(&path)?;
    std::fs::write(dir.path().join("gallery.json.tmp"), &full[..full.len() / 2])?;
    assert_eq!(Gallery::load(&path)?, Some(gallery.clone()));
    // The next save completes and replaces the stale temporary file.
    changed.save(&path)?;
    assert_eq!(Gallery::load(&path)?, Some(changed.clone()));
    assert!(!dir.path().join("gallery.json.tmp").exists());

    // A file cut short in place (a writer that is not ours) is refused; the service keeps
    // what it had.
    assert!(slot.refresh()?);
    std::thread::sleep(Duration::from_millis(20));
    let bytes = std::fs::read(&path)?;
    std::fs::write(&path, &bytes[..bytes.len() / 3])?;
    assert!(slot.refresh().is_err());
    assert_eq!(slot.current().map(|g| g.gallery.clone()), Some(changed));
    Ok(())
}

/// A gallery written before minutiae (format version 1: the network's templates only) still
/// loads under the default, fused, matcher, and its decisions are network-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gallery_from_before_minutiae_loads_and_decides_network_only() -> Result<()> {
    let mut setup = Setup::new(Quantization::F32)?;
    let cast = cast(&setup.model)?;
    setup.config.model.match_threshold = Some(cast.threshold);
    setup.config.matcher = fingerprint_common::config::MatcherConfig::default();
    assert_eq!(
        setup.config.matcher.mode,
        fingerprint_common::MatcherMode::Fused
    );
    let engine = Engine::load(&setup.model, "cpu", None)?;
    let b64 = |t: &[f32]| {
        let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let templates = |scans: &[Vec<u8>]| -> Result<Vec<String>> {
        Ok(embed(&engine, scans)?.iter().map(|t| b64(t)).collect())
    };
    // The file as version 1 wrote it.
    let v1 = serde_json::json!({
        "format": "fingerprint-gallery",
        "version": 1,
        "model_digest": engine.model.digest,
        "identities": {"alice": templates(&cast.alice)?, "bob": templates(&cast.bob)?},
    });
    std::fs::create_dir_all(&setup.config.state_dir)?;
    std::fs::write(setup.config.gallery_path(), serde_json::to_vec_pretty(&v1)?)?;
    let loaded = Gallery::load(&setup.config.gallery_path())?.context("no gallery")?;
    assert_eq!((loaded.version, loaded.identities.len()), (1, 2));
    assert!(loaded.has_network() && !loaded.has_minutiae());

    let service = Service::start(setup.config.clone()).await?;
    let d = decide(&setup, "alice-probe.png", &cast.alice_probe).await?;
    assert_eq!(d.mode, MatchMode::Identification);
    assert_eq!(d.matcher, Some(fingerprint_common::MatcherMode::Network));
    assert_eq!(
        (d.decision, d.identity.as_deref()),
        (Verdict::Grant, Some("alice"))
    );
    assert!(d.network_score.is_some() && d.minutiae_score.is_none() && d.fused_score.is_none());
    assert_eq!(d.threshold, cast.threshold);
    let stranger = decide(&setup, "stranger.png", &cast.strangers[0]).await?;
    assert_eq!(stranger.decision, Verdict::Deny);
    service.shutdown().await?;
    Ok(())
}

/// A test door whose model carries a network calibration (threshold 0.9) on `prints`,
/// enrolled with turned templates or not, and its cast.
fn calibrated_setup(prints: Prints, enrolment_turns: bool) -> Result<(Setup, Cast)> {
    let calibration = fingerprint_models::export::Calibration {
        similarity_threshold: 0.9,
        target_far: 0.001,
        far: 0.0,
        frr: 0.1,
        genuine_scores: 100,
        impostor_scores: 200,
        prints: Some(prints),
        enrolment_turns,
    };
    let setup = Setup::with_model(|path| {
        write_model_calibrated(
            path,
            fingerprint_models::Arch::ResNet18,
            CLASSES,
            32,
            Quantization::F32,
            0.0,
            Some(calibration),
        )
    })?;
    let cast = cast(&setup.model)?;
    Ok((setup, cast))
}

/// Enrols the cast's alice from her three scans with `fingerprintd enroll`'s code.
fn enrol_alice(engine: &Engine, setup: &Setup, cast: &Cast) -> Result<()> {
    let named: Vec<(String, Vec<u8>)> = cast
        .alice
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("alice-{i}"), s.clone()))
        .collect();
    fingerprintd::enroll::enroll(
        Some(engine),
        &setup.config,
        "alice",
        &named,
        &fingerprint_common::ScanLimits::default(),
    )?;
    Ok(())
}

/// A network threshold calibrated on synthetic prints is not applied to a door's scans unless
/// the installer says so: the service refuses to start on it, naming the ways out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synthetic_network_threshold_is_refused_without_an_override() -> Result<()> {
    let (mut setup, cast) = calibrated_setup(Prints::Synthetic, true)?;
    // Enrolled under an explicit threshold, as an installer would after measuring.
    setup.config.model.match_threshold = Some(cast.threshold);
    let engine = Engine::load(&setup.model, "cpu", None)?;
    enrol_alice(&engine, &setup, &cast)?;
    // Without it, the model's synthetic calibration would decide: refused.
    setup.config.model.match_threshold = None;
    let refused = Service::start(setup.config.clone()).await;
    let error = format!("{:#}", refused.err().context("the service started")?);
    assert!(
        error.contains("synthetic") && error.contains("fingerprintd calibrate"),
        "{error}"
    );
    // With the explicit override it runs, and the log would say where the threshold came from.
    setup.config.matcher.accept_synthetic_threshold = true;
    let service = Service::start(setup.config.clone()).await?;
    let d = decide(&setup, "alice-probe.png", &cast.alice_probe).await?;
    assert_eq!(d.threshold, 0.9);
    assert_eq!(d.matcher, Some(fingerprint_common::MatcherMode::Network));
    service.shutdown().await?;
    Ok(())
}

/// A threshold is applied to the scores it was set on: a model calibrated before enrolment
/// turns (its calibration does not say it enrolled with them) leaves a gallery's turned
/// templates out of the comparison, and the threshold's source in the log says so; a model
/// calibrated with them uses them.
#[test]
fn a_threshold_set_without_turned_templates_leaves_them_out() -> Result<()> {
    for enrolment_turns in [false, true] {
        let (setup, cast) = calibrated_setup(Prints::Real, enrolment_turns)?;
        let engine = Engine::load(&setup.model, "cpu", None)?;
        enrol_alice(&engine, &setup, &cast)?;
        let gallery = Gallery::load(&setup.config.gallery_path())?.context("no gallery")?;
        assert!(gallery.has_turned());
        let policy = fingerprintd::policy::resolve(&setup.config, Some(&engine), &gallery, None)?;
        assert_eq!(policy.threshold, 0.9);
        assert_eq!(policy.rule.turned_templates, enrolment_turns);
        assert_eq!(
            policy.source.contains("turned templates are left out"),
            !enrolment_turns,
            "{}",
            policy.source
        );
    }
    Ok(())
}
