//! `trainer demo`: the whole system once, end to end, on synthetic prints and this CPU.
//!
//! Synthesises fingers, trains a small ResNet-18 on most of them plus a background class of
//! other people's fingers (holding some fingers out to calibrate the open-set threshold),
//! exports it as int8, enrols the trained fingers with the real `fingerprintd enroll` (network
//! templates and minutiae), calibrates the door's fused matcher on the held-out fingers with
//! `fingerprintd calibrate`, starts the real `fingerprintd` on a sensor folder as systemd would (readiness over NOTIFY_SOCKET,
//! SIGTERM at the end), drops in held-back scans of the enrolled fingers and scans of
//! strangers nobody ever saw, and checks every decision.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use candle_core::Device;
use clap::Args;
use fingerprint_common::gallery::MIN_IMPRESSIONS;
use fingerprint_common::{Decision, Preprocessing, ResizePolicy, Verdict};
use fingerprint_models::export::Quantization;
use fingerprint_models::Arch;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use trainer::augment::Augmentation;
use trainer::dataset::{Dataset, Layout, Split, SplitConfig};
use trainer::export::{export_run, print_summary};
use trainer::model::LoadedModel;
use trainer::run::{LrSchedule, RunDir, TrainConfig};
use trainer::saliency::Occlusion;
use trainer::synth::{self, Realism, SynthConfig};
use trainer::train::{start_run, Outcome, Session};

use super::saliency::write_saliency;
use super::service_process::{DecisionReader, ServiceProcess};
use super::train::print_report;

/// Written into the output folder; a folder holding it may be replaced by the next demo.
const SUMMARY_FILE: &str = "summary.json";
/// The service's decisions (JSON lines), in the output folder.
const DECISIONS_FILE: &str = "decisions.jsonl";
/// Side of the synthetic scans: a fingertip at about 500 dpi (ridges about 9 px apart), large
/// enough for minutiae.
const SCAN_SIDE: u32 = 256;
/// The window of each scan the network sees (6.5 mm around the print), and the network input
/// it is resized to: ridges about 4.5 px apart, twice the finest period 64 px can show.
const WINDOW_SIDE: u32 = 128;
const INPUT_SIDE: u32 = 64;
/// Scans of each background finger.
const BACKGROUND_IMPRESSIONS: usize = 2;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Folder for everything the demo makes. An earlier demo's folder is replaced; any other
    /// non-empty folder is refused.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    /// The fingerprintd binary (default: the one next to this trainer binary).
    #[arg(long)]
    fingerprintd: Option<PathBuf>,
    /// Fingers trained on and then enrolled at the door (where the service accepts them).
    #[arg(long, default_value_t = 10)]
    fingers: usize,
    /// Other people's fingers, two scans each, trained as the background class: the network
    /// learns that fingers besides the enrolled ones exist (trainer train --background).
    #[arg(long, default_value_t = 80)]
    background: usize,
    /// Further fingers held out of training to calibrate the open-set threshold.
    #[arg(long, default_value_t = 10)]
    impostors: usize,
    /// Fingers nobody enrolled or trained on, offered at the door (they must be denied).
    #[arg(long, default_value_t = 10)]
    strangers: usize,
    /// Scans per finger: 4 held back for the door, 1 for validation, the rest train.
    #[arg(long, default_value_t = 20)]
    impressions: usize,
    /// Scans per enrolment (training scans of the finger; a refused set is retaken from the
    /// finger's other training scans).
    #[arg(long, default_value_t = 3)]
    enroll_impressions: usize,
    /// Training epochs (ResNet-18 from scratch at 64x64; about 30 s each on 2 cores with the
    /// other defaults).
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Seed of the prints, the split, the training and the order of the scans at the door.
    #[arg(long, default_value_t = 2)]
    seed: u64,
    /// Exit with an error unless at least this share of the enrolled fingers' held-back scans
    /// is granted to the right identity. Whatever it is, the demo fails if any scan is granted
    /// to a wrong finger or to a stranger, or is not decided.
    #[arg(long, default_value_t = 0.8)]
    min_true_accept: f64,
}

/// What the door decided, counted (`summary.json`).
#[derive(Debug, Default, Serialize)]
struct Summary {
    enrolled_fingers: usize,
    genuine_scans: usize,
    granted_right: usize,
    granted_wrong: usize,
    genuine_denied: usize,
    /// Enrolled fingers with at least one of their held-back scans granted.
    fingers_granted: usize,
    stranger_fingers: usize,
    stranger_scans: usize,
    false_accepts: usize,
    strangers_denied: usize,
    errors: usize,
    true_accept_rate: f64,
    false_accept_rate: f64,
    /// The matcher that decided at the door (fused), and its threshold there.
    matcher: String,
    threshold: f32,
    latency_ms_median: f64,
    latency_ms_p90: f64,
    latency_ms_max: f64,
    model_test_top1: f64,
    int8_agreement_with_f32: f64,
    train_seconds: f64,
    total_seconds: f64,
    min_true_accept: f64,
    passed: bool,
}

/// A scan offered at the door, and who it really is.
struct Probe {
    path: PathBuf,
    /// The enrolled identity it must be granted as; `None`: it must be denied.
    truth: Option<String>,
    /// Whose finger it is, for the log.
    label: String,
}

pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    ensure!(args.fingers >= 2, "--fingers must be at least 2");
    ensure!(
        args.enroll_impressions >= MIN_IMPRESSIONS,
        "--enroll-impressions must be at least {MIN_IMPRESSIONS}, as fingerprintd enroll requires"
    );
    ensure!(
        args.impressions >= 5 + args.enroll_impressions,
        "--impressions must leave 4 test, 1 validation and --enroll-impressions training scans"
    );
    let fingerprintd = match &args.fingerprintd {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("fingerprintd"),
    };
    ensure!(
        fingerprintd.is_file(),
        "{} not found: build it first (cargo build --release -p fingerprintd), or pass --fingerprintd",
        fingerprintd.display()
    );
    let out = prepare_out(&args.out)?;

    step(1, "synthesising fingerprints");
    let scans = out.join("scans");
    let strangers_dir = out.join("strangers");
    let size = SCAN_SIDE;
    let config = SynthConfig {
        fingers: args.fingers + args.impostors,
        impressions: args.impressions,
        size,
        seed: args.seed,
        realism: Realism::Plain,
    };
    synth::write_dataset(&config, &scans).context("writing the synthetic scans")?;
    // Another seed: fingers the model and its calibration never see.
    let stranger_config = SynthConfig {
        fingers: args.strangers,
        impressions: 4,
        size,
        seed: args.seed.wrapping_add(1_000_003),
        realism: Realism::Plain,
    };
    synth::write_dataset(&stranger_config, &strangers_dir)
        .context("writing the strangers' scans")?;
    let background_dir = out.join("background");
    // A third seed: the background is nobody at the door and nobody offered there.
    let background_config = SynthConfig {
        fingers: args.background,
        impressions: BACKGROUND_IMPRESSIONS,
        size,
        seed: args.seed.wrapping_add(2_000_003),
        realism: Realism::Plain,
    };
    let background_scans = if args.background > 0 {
        synth::write_dataset(&background_config, &background_dir)
            .context("writing the background scans")?
    } else {
        Vec::new()
    };
    let sheet = out.join("sheet.png");
    trainer::sheet::contact_sheet(&synth::generate(&SynthConfig {
        fingers: config.fingers.min(6),
        impressions: 6,
        ..config.clone()
    }))
    .save(&sheet)
    .with_context(|| format!("writing {}", sheet.display()))?;
    println!(
        "{} fingers x {} scans in {}, {} background fingers x {} in {}, {} strangers x {} in {}; contact sheet {}",
        config.fingers,
        config.impressions,
        scans.display(),
        background_config.fingers,
        background_config.impressions,
        background_dir.display(),
        stranger_config.fingers,
        stranger_config.impressions,
        strangers_dir.display(),
        sheet.display()
    );

    step(2, "training ResNet-18 from scratch on this CPU");
    let dataset = Dataset::load(&[scans], &Layout::Auto)?;
    let split = Split::new(
        &dataset,
        SplitConfig {
            test_per_identity: 4,
            val_per_identity: 1,
            seed: args.seed,
            skip_small: false,
            impostor_identities: args.impostors,
        },
    )?;
    let split = if background_scans.is_empty() {
        split
    } else {
        split.with_background(background_scans)?
    };
    let train_config = TrainConfig {
        arch: Arch::ResNet18,
        epochs: args.epochs,
        batch_size: 16,
        lr: 1e-3,
        lr_schedule: LrSchedule::Cosine,
        preprocessing: Preprocessing {
            resize: ResizePolicy::Window { side: WINDOW_SIDE },
            ..Preprocessing::imagenet(INPUT_SIDE)
        },
        copies: 2,
        // Crops zoom by at most 11%: a finger's ridge spacing is part of what tells it apart,
        // and a sensor does not zoom.
        augmentation: Some(Augmentation {
            crop_fraction: (0.9, 1.0),
            ..Augmentation::without_flips()
        }),
        patience: None,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let stop = AtomicBool::new(false);
    let session = Session::cpu(&stop, true);
    let run_dir = out.join("run");
    let report = match start_run(&run_dir, train_config, split.clone(), &session)? {
        Outcome::Finished(report) => report,
        Outcome::Interrupted { .. } => bail!("training was interrupted"),
    };
    print_report(&report, &run_dir);
    let run = RunDir(run_dir);

    step(
        3,
        "exporting int8 and calibrating the threshold on the held-out fingers",
    );
    let model = out.join("model-int8.safetensors");
    let export = export_run(&run, Quantization::Int8, &model, 0.001, &Device::Cpu)?;
    print_summary(&export);

    step(4, "drawing an occlusion saliency map");
    let saliency = out.join("saliency");
    std::fs::create_dir_all(&saliency)?;
    let loaded = LoadedModel::exported(&model, &Device::Cpu)?;
    let first_test = split.test.first().context("empty test split")?;
    let occlusion = Occlusion {
        window: 8,
        stride: 2,
    };
    println!(
        "{}",
        write_saliency(
            &loaded,
            &first_test.path,
            occlusion,
            64,
            &saliency,
            &Device::Cpu
        )?
    );

    step(
        5,
        "enrolling the trained fingers with fingerprintd enroll (network templates and minutiae), then fingerprintd calibrate",
    );
    let service = out.join("fingerprintd");
    let config_path = write_service_config(&service)?;
    let name = |identity: &str| format!("finger-{identity}");
    let mut enrolled = Vec::new();
    let mut attempts = 0;
    let people = split
        .identities
        .iter()
        .enumerate()
        .filter(|&(index, _)| Some(index) != split.background());
    for (index, identity) in people {
        let impressions: Vec<&Path> = split
            .train
            .iter()
            .filter(|s| s.identity == index)
            .map(|s| s.path.as_path())
            .collect();
        // As at an enrolment station: a set the service refuses (impressions that disagree)
        // is taken again, while the finger's training scans last.
        for set in impressions.chunks_exact(args.enroll_impressions) {
            attempts += 1;
            let output = Command::new(&fingerprintd)
                .arg("--config")
                .arg(&config_path)
                .args(["enroll", "--identity", &name(identity)])
                .args(set)
                .output()
                .with_context(|| format!("running {}", fingerprintd.display()))?;
            if output.status.success() {
                enrolled.push(name(identity));
                break;
            }
            let reason = String::from_utf8_lossy(&output.stderr);
            println!(
                "{}: enrolment refused, taking another set: {}",
                name(identity),
                reason
                    .lines()
                    .find(|l| l.contains("Error"))
                    .unwrap_or(reason.trim())
            );
        }
    }
    println!(
        "{} of {} fingers enrolled ({} sets of {} scans offered; gallery in {})",
        enrolled.len(),
        args.fingers,
        attempts,
        args.enroll_impressions,
        service.join("state").display()
    );
    // The installer's step: the door's threshold, and the fusion of the two matchers, fitted
    // on scans of other people's fingers (here the held-out ones, which no one enrolled).
    let strangers_folder = service.join("calibration-strangers");
    std::fs::create_dir_all(&strangers_folder)?;
    for sample in &split.impostors {
        let name = sample
            .path
            .file_name()
            .context("a scan without a file name")?;
        std::fs::copy(&sample.path, strangers_folder.join(name))?;
    }
    let output = Command::new(&fingerprintd)
        .arg("--config")
        .arg(&config_path)
        .args(["calibrate", "--strangers"])
        .arg(&strangers_folder)
        .output()
        .with_context(|| format!("running {}", fingerprintd.display()))?;
    ensure!(
        output.status.success(),
        "fingerprintd calibrate failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));

    step(6, "starting fingerprintd and offering scans at the door");
    let mut probes: Vec<Probe> = split
        .test
        .iter()
        .map(|s| {
            let finger = name(&split.identities[s.identity]);
            // A finger whose enrolment was refused is, at the door, a stranger.
            let (truth, label) = if enrolled.contains(&finger) {
                (Some(finger.clone()), finger)
            } else {
                (None, format!("{finger}, not enrolled"))
            };
            Probe {
                path: s.path.clone(),
                truth,
                label,
            }
        })
        .chain(
            Dataset::load(&[strangers_dir], &Layout::Auto)?
                .samples
                .into_iter()
                .map(|s| Probe {
                    path: s.path,
                    truth: None,
                    label: "stranger".into(),
                }),
        )
        .collect();
    probes.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    let decisions = offer(&fingerprintd, &config_path, &service, &probes)?;

    let mut summary = summarise(&probes, &decisions, enrolled.len(), &args);
    summary.model_test_top1 = report.test.top1;
    summary.int8_agreement_with_f32 = export
        .formats
        .iter()
        .find(|f| f.quantization == Quantization::Int8)
        .map_or(0.0, |f| f.agreement_with_f32);
    summary.train_seconds = report.train_seconds;
    summary.total_seconds = started.elapsed().as_secs_f64();
    trainer::run::write_json(&out.join(SUMMARY_FILE), &summary)?;

    step(7, "summary");
    print_final(&summary, &out);
    ensure!(
        summary.passed,
        "the door did not meet the demo's bar: every scan decided, at least {:.0}% of enrolled fingers' scans granted, none to a wrong finger, no stranger",
        100.0 * args.min_true_accept
    );
    Ok(())
}

fn step(n: usize, what: &str) {
    println!("\n== [{n}/7] {what}");
}

/// Empties `out` if it is an earlier demo's (or empty), refuses anything else.
fn prepare_out(out: &Path) -> Result<PathBuf> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .with_context(|| format!("reading {}", out.display()))?
            .next()
            .is_none();
        if !empty && !out.join(SUMMARY_FILE).exists() && !out.join("run").exists() {
            bail!(
                "{} exists and is not an earlier demo's folder: choose another --out",
                out.display()
            );
        }
        std::fs::remove_dir_all(out).with_context(|| format!("removing {}", out.display()))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// The service's configuration: state, sensor folder and decisions file inside `dir`, the
/// exported model beside it; no MQTT (decisions go to a JSON-lines file).
fn write_service_config(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir.join("sensor"))?;
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"# Written by `trainer demo`: fingerprintd on a sensor folder, no broker.
door_id = "demo"
state_dir = "state"

[model]
path = "../model-int8.safetensors"
device = "cpu"

# Both matchers: the network's templates and minutiae, fused by the regression that
# `fingerprintd calibrate` fits on this door's scans.
[matcher]
mode = "fused"
sensor_dpi = 500
# The demo offers every test scan of the enrolled fingers and the strangers' scans, shuffled,
# within seconds: a crowd no door sees, which the default lockout (5 denials in a row) would
# stop. A door keeps it.
lockout_after = 0

[sensor]
dir = "sensor"
after_decision = "move"

[output]
decisions = "../{DECISIONS_FILE}"
"#
        ),
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// Starts fingerprintd on the demo's service folder, offers each probe through its sensor
/// directory as a sensor would (written aside, then renamed in), and collects the decisions.
fn offer(
    fingerprintd: &Path,
    config: &Path,
    service: &Path,
    probes: &[Probe],
) -> Result<Vec<Decision>> {
    let mut process = ServiceProcess::start(fingerprintd, config, service)?;
    let result = (|| {
        println!(
            "fingerprintd is up (pid {}, log {}); {} scans to offer",
            process.pid(),
            process.log().display(),
            probes.len()
        );
        let mut reader = DecisionReader::new(service.with_file_name(DECISIONS_FILE));
        let mut decisions = Vec::with_capacity(probes.len());
        for (n, probe) in probes.iter().enumerate() {
            let file = format!("scan-{:03}.png", n + 1);
            let part = service.join("sensor").join(format!("{file}.part"));
            std::fs::copy(&probe.path, &part)
                .with_context(|| format!("copying {}", probe.path.display()))?;
            std::fs::rename(&part, service.join("sensor").join(&file))?;
            let decision = reader
                .next(Duration::from_secs(60), process.child())
                .with_context(|| format!("waiting for the decision on {file}"))?;
            print_decision(n + 1, probes.len(), &file, probe, &decision);
            decisions.push(decision);
        }
        Ok(decisions)
    })();
    process.stop()?;
    result
}

fn print_decision(n: usize, total: usize, file: &str, probe: &Probe, decision: &Decision) {
    let truth = &probe.label;
    let outcome = match (decision.decision, &decision.identity, &probe.truth) {
        (Verdict::Grant, Some(who), Some(truth)) if who == truth => "ok: granted",
        (Verdict::Grant, _, Some(_)) => "WRONG FINGER",
        (Verdict::Grant, _, None) => "FALSE ACCEPT",
        (Verdict::Deny, _, None) => "ok: never enrolled, denied",
        (Verdict::Deny, _, Some(_)) => "denied (retry)",
        (Verdict::Error, _, _) => "ERROR",
    };
    println!(
        "[{n:>3}/{total}] {file} ({truth:<23}) -> {:<5} {:<10} score {:.3} (threshold {:.3}) {:>5.1} ms  {outcome}",
        format!("{:?}", decision.decision).to_lowercase(),
        decision.identity.as_deref().unwrap_or("-"),
        decision.score.unwrap_or(f32::NAN),
        decision.threshold,
        decision.latency_ms,
    );
}

fn summarise(
    probes: &[Probe],
    decisions: &[Decision],
    enrolled: usize,
    args: &DemoArgs,
) -> Summary {
    // The matcher and threshold in force at the door, as its decisions state them.
    let decided = decisions.iter().find(|d| d.matcher.is_some());
    let mut s = Summary {
        enrolled_fingers: enrolled,
        // Fingers whose enrolment was refused are strangers at the door too.
        stranger_fingers: args.strangers + args.fingers - enrolled,
        matcher: decided
            .and_then(|d| d.matcher)
            .map_or("none".to_string(), |m| m.to_string()),
        threshold: decided.map_or(f32::NAN, |d| d.threshold),
        min_true_accept: args.min_true_accept,
        ..Summary::default()
    };
    let mut per_finger: BTreeMap<&str, usize> = BTreeMap::new();
    for (probe, decision) in probes.iter().zip(decisions) {
        match (&probe.truth, decision.decision) {
            (_, Verdict::Error) => s.errors += 1,
            (Some(truth), verdict) => {
                s.genuine_scans += 1;
                match (verdict, &decision.identity) {
                    (Verdict::Grant, Some(who)) if who == truth => {
                        s.granted_right += 1;
                        *per_finger.entry(truth).or_default() += 1;
                    }
                    (Verdict::Grant, _) => s.granted_wrong += 1,
                    _ => s.genuine_denied += 1,
                }
            }
            (None, verdict) => {
                s.stranger_scans += 1;
                if verdict == Verdict::Grant {
                    s.false_accepts += 1;
                } else {
                    s.strangers_denied += 1;
                }
            }
        }
    }
    s.fingers_granted = per_finger.len();
    s.true_accept_rate = s.granted_right as f64 / s.genuine_scans.max(1) as f64;
    s.false_accept_rate = s.false_accepts as f64 / s.stranger_scans.max(1) as f64;
    let mut latencies: Vec<f64> = decisions.iter().map(|d| d.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (s.latency_ms_median, s.latency_ms_p90, s.latency_ms_max) = (at(0.5), at(0.9), at(1.0));
    s.passed = s.errors == 0
        && s.granted_wrong == 0
        && s.false_accepts == 0
        && s.true_accept_rate >= args.min_true_accept;
    s
}

fn print_final(s: &Summary, out: &Path) {
    println!(
        "enrolled fingers: {} of {} held-back scans granted to the right finger ({:.1}%), {} to a wrong finger, {} denied",
        s.granted_right,
        s.genuine_scans,
        100.0 * s.true_accept_rate,
        s.granted_wrong,
        s.genuine_denied
    );
    println!(
        "                  {} of {} enrolled fingers granted at least once in their 4 tries",
        s.fingers_granted, s.enrolled_fingers
    );
    println!(
        "strangers:        {} of {} scans denied, {} false accepts ({:.1}%)",
        s.strangers_denied,
        s.stranger_scans,
        s.false_accepts,
        100.0 * s.false_accept_rate
    );
    println!(
        "latency (scan arrival to decision, int8 on this CPU): median {:.1} ms, p90 {:.1} ms, max {:.1} ms; {} errors",
        s.latency_ms_median, s.latency_ms_p90, s.latency_ms_max, s.errors
    );
    println!(
        "model: test top-1 {:.1}% (int8 agrees with f32 on {:.1}%), trained in {:.0} s; {} matcher, threshold {:.3} (the door's calibration); demo {:.0} s",
        100.0 * s.model_test_top1,
        100.0 * s.int8_agreement_with_f32,
        s.train_seconds,
        s.matcher,
        s.threshold,
        s.total_seconds
    );
    println!(
        "{}: every scan decided, at least {:.0}% granted, none to a wrong finger, no stranger",
        if s.passed { "PASSED" } else { "FAILED" },
        100.0 * s.min_true_accept
    );
    println!(
        "\neverything is in {}: sheet.png (the prints), run/curves.png (training), saliency/ (what the network looks at), model-int8.safetensors, fingerprintd/ (config, gallery, processed scans, log), decisions.jsonl, summary.json",
        out.display()
    );
}

#[cfg(test)]
mod tests {
    use super::super::test_support::decision;
    use super::*;

    fn probe(truth: Option<&str>) -> Probe {
        Probe {
            path: PathBuf::new(),
            truth: truth.map(Into::into),
            label: truth.unwrap_or("stranger").into(),
        }
    }

    fn args(min_true_accept: f64) -> DemoArgs {
        DemoArgs {
            out: PathBuf::new(),
            fingerprintd: None,
            fingers: 2,
            background: 0,
            impostors: 1,
            strangers: 1,
            impressions: 10,
            enroll_impressions: 3,
            epochs: 1,
            seed: 0,
            min_true_accept,
        }
    }

    #[test]
    fn the_summary_counts_each_kind_of_outcome_and_fails_on_any_unsafe_grant() {
        let probes = [
            probe(Some("a")),
            probe(Some("a")),
            probe(Some("b")),
            probe(None),
        ];
        let safe = [
            decision(Verdict::Grant, Some("a"), 3.0),
            decision(Verdict::Deny, None, 1.0),
            decision(Verdict::Deny, None, 2.0),
            decision(Verdict::Deny, None, 4.0),
        ];
        let s = summarise(&probes, &safe, 2, &args(0.25));
        assert_eq!(
            (
                s.genuine_scans,
                s.granted_right,
                s.genuine_denied,
                s.fingers_granted
            ),
            (3, 1, 2, 1)
        );
        assert_eq!(
            (s.stranger_scans, s.strangers_denied, s.false_accepts),
            (1, 1, 0)
        );
        assert!((s.true_accept_rate - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!((s.latency_ms_median, s.latency_ms_max), (3.0, 4.0));
        assert_eq!((s.matcher.as_str(), s.threshold), ("fused", 0.9));
        assert!(s.passed);
        // The same door, asked for more than it granted.
        assert!(!summarise(&probes, &safe, 2, &args(0.5)).passed);

        let mut wrong = safe.clone();
        wrong[2] = decision(Verdict::Grant, Some("a"), 2.0);
        let s = summarise(&probes, &wrong, 2, &args(0.0));
        assert_eq!(s.granted_wrong, 1);
        assert!(!s.passed);

        let mut stranger_in = safe.clone();
        stranger_in[3] = decision(Verdict::Grant, Some("b"), 2.0);
        let s = summarise(&probes, &stranger_in, 2, &args(0.0));
        assert_eq!((s.false_accepts, s.false_accept_rate), (1, 1.0));
        assert!(!s.passed);

        let mut error = safe.clone();
        error[0] = decision(Verdict::Error, None, 2.0);
        assert!(!summarise(&probes, &error, 2, &args(0.0)).passed);
    }
}
