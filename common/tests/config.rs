//! The service configuration: the documented default parses and documents every option,
//! mistakes are caught with the file named, and the decision message matches its schema.

use std::path::Path;

use anyhow::Result;
use fingerprint_common::config::{MatcherConfig, MqttConfig, TlsConfig};
use fingerprint_common::{
    Candidate, DaemonConfig, Decision, MatchMode, MatcherMode, ModelRef, ScanSource, SourceKind,
    Verdict, DEFAULT_CONFIG,
};
use serde_json::Value;

#[test]
fn default_config_parses_with_safe_defaults() -> Result<()> {
    let config = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("config.toml"))?;
    assert_eq!(config.model.device, "cpu");
    assert_eq!(config.model.threshold, None);
    assert!(config.mqtt.is_none(), "no broker needed by default");
    assert_eq!(config.output.decisions, "stdout");
    let sensor = config.sensor.expect("sensor directory by default");
    assert_eq!(sensor.processed_dir(), sensor.dir.join("processed"));
    Ok(())
}

fn keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
    if let toml::Value::Table(table) = value {
        for (k, v) in table {
            out.push(k.clone());
            keys(v, &format!("{prefix}{k}."), out);
        }
    }
}

#[test]
fn every_option_is_in_the_documented_default() -> Result<()> {
    let mut config = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("config.toml"))?;
    config.model.threshold = Some(0.5);
    config.matcher.sensor_dpi = Some(500);
    config.mqtt = Some(MqttConfig {
        host: "broker".into(),
        port: 8883,
        client_id: Some("id".into()),
        topic_prefix: "fingerprintd".into(),
        subscribe_scans: true,
        enrollment: false,
        username: Some("u".into()),
        password_file: Some("p".into()),
        password: None,
        keep_alive_s: 30,
        max_backoff_s: 30,
        max_message_bytes: 64 << 20,
        tls: Some(TlsConfig {
            ca_file: "ca".into(),
            client_cert_file: Some("c".into()),
            client_key_file: Some("k".into()),
        }),
    });
    if let Some(s) = &mut config.sensor {
        s.processed_dir = Some("p".into());
        s.rejected_dir = Some("r".into());
    }
    let mut all = Vec::new();
    keys(&toml::Value::try_from(&config)?, "", &mut all);
    all.push("password".into());
    for key in all {
        let documented = DEFAULT_CONFIG.lines().any(|l| {
            l.trim_start_matches(['#', ' '])
                .starts_with(&format!("{key} ="))
        }) || DEFAULT_CONFIG.contains(&format!("[{key}]"))
            || DEFAULT_CONFIG.contains(&format!(".{key}]"));
        assert!(documented, "option '{key}' is not in systemd/config.toml");
    }
    Ok(())
}

/// The door locks out after 5 denials in a row for 30 s unless told otherwise; a lockout
/// must last a while, and 0 turns it off.
#[test]
fn the_lockout_is_on_by_default_and_checked() -> Result<()> {
    let default = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("config.toml"))?;
    assert_eq!(
        (
            default.matcher.lockout_after,
            default.matcher.lockout_s,
            default.matcher.lockout_max_s
        ),
        (5, 30, 900)
    );
    assert_eq!(default.matcher, MatcherConfig::default());
    let with = |after: &str, seconds: &str| {
        DaemonConfig::parse(
            &DEFAULT_CONFIG
                .replace("lockout_after = 5", &format!("lockout_after = {after}"))
                .replace("lockout_s = 30", &format!("lockout_s = {seconds}")),
            Path::new("config.toml"),
        )
    };
    let error = with("5", "0")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("matcher.lockout_s 0 is outside"), "{error}");
    let error = with("5", "1000")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("matcher.lockout_max_s 900 is outside matcher.lockout_s (1000)"),
        "{error}"
    );
    let off = with("0", "0")?;
    assert_eq!(off.matcher.lockout_after, 0);
    Ok(())
}

/// Unset, the sensor's resolution is unknown: minutiae take scans as 500 dpi (and ridge-scale
/// models measure each scan); set, it must be a sensor's.
#[test]
fn the_sensor_resolution_is_optional_and_checked() -> Result<()> {
    let default = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("config.toml"))?;
    assert_eq!(default.matcher.sensor_dpi, None);
    assert_eq!(default.matcher.minutiae_dpi(), 500);
    let with = |dpi: &str| {
        DaemonConfig::parse(
            &DEFAULT_CONFIG.replace("# sensor_dpi = 500", &format!("sensor_dpi = {dpi}")),
            Path::new("config.toml"),
        )
    };
    let known = with("569")?;
    assert_eq!(known.matcher.sensor_dpi, Some(569));
    assert_eq!(known.matcher.minutiae_dpi(), 569);
    let error = with("20").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        error.contains("matcher.sensor_dpi 20 is outside 100..=5000"),
        "{error}"
    );
    Ok(())
}

#[test]
fn a_minimal_file_takes_defaults_for_everything_else() -> Result<()> {
    let text = "door_id = \"d\"\nstate_dir = \"s\"\n[model]\npath = \"m\"\n\
                [sensor]\ndir = \"in\"\n[output]\ndecisions = \"out.jsonl\"\n\
                [queue]\nmax_batch = 2\n";
    let config = DaemonConfig::parse(text, Path::new("minimal.toml"))?;
    let default = DaemonConfig::parse(DEFAULT_CONFIG, Path::new("config.toml"))?;
    assert_eq!(
        config.output.outbox_capacity,
        default.output.outbox_capacity
    );
    assert_eq!(config.queue.capacity, default.queue.capacity);
    assert_eq!(config.queue.max_batch, 2);
    assert_eq!(config.limits, default.limits);
    assert_eq!(config.model.top_k, default.model.top_k);
    Ok(())
}

#[test]
fn mistakes_are_refused_with_the_file_and_the_reason() {
    let path = Path::new("/etc/fingerprintd/config.toml");
    let cases = [
        ("top_k = 3", "topk = 3", "topk"),
        ("door_id = \"door-1\"", "door_id = \"a/b\"", "door_id"),
        ("top_k = 3", "top_k = 0", "top_k"),
        ("capacity = 64", "capacity = 0", "capacity"),
        (
            "max_scan_bytes = 16777216",
            "max_scan_bytes = \"big\"",
            "max_scan_bytes",
        ),
        ("[sensor]\ndir", "[elsewhere]\ndir", "elsewhere"),
        ("# threshold = 0.9", "threshold = 1.5", "threshold"),
    ];
    for (from, to, mentions) in cases {
        assert!(DEFAULT_CONFIG.contains(from), "{from}");
        let text = DEFAULT_CONFIG.replacen(from, to, 1);
        let err = DaemonConfig::parse(&text, path).expect_err(to).to_string();
        assert!(err.contains("/etc/fingerprintd/config.toml"), "{err}");
        assert!(err.contains(mentions), "{to}: {err}");
    }
    // Without the sensor section there is no input unless MQTT brings scans.
    let text = DEFAULT_CONFIG.replacen("[sensor]\ndir = \"/var/lib/fingerprintd/sensor\"", "", 1);
    let text = text.replacen("after_decision = \"move\"", "", 1);
    let err = DaemonConfig::parse(&text, path)
        .expect_err("no input")
        .to_string();
    assert!(err.contains("no input"), "{err}");
    // An MQTT client that could not read a JSON message of a scan at the size limit.
    let text =
        format!("{DEFAULT_CONFIG}\n[mqtt]\nhost = \"broker\"\nmax_message_bytes = 16777216\n");
    let err = DaemonConfig::parse(&text, path)
        .expect_err("message limit below the scan limit")
        .to_string();
    assert!(err.contains("mqtt.max_message_bytes 16777216"), "{err}");
}

#[test]
fn relative_paths_are_taken_from_the_config_file_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let text = DEFAULT_CONFIG
        .replace(
            "/var/lib/fingerprintd/model.safetensors",
            "model.safetensors",
        )
        .replace(
            "state_dir = \"/var/lib/fingerprintd\"",
            "state_dir = \"state\"",
        )
        .replace(
            "decisions = \"stdout\"",
            "decisions = \"out/decisions.jsonl\"",
        );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text)?;
    let config = DaemonConfig::load(&path)?;
    assert_eq!(
        config.model.path,
        Some(dir.path().join("model.safetensors"))
    );
    assert_eq!(config.state_dir, dir.path().join("state"));
    assert_eq!(
        config.output.decisions,
        dir.path().join("out/decisions.jsonl").display().to_string()
    );
    let missing = DaemonConfig::load(&dir.path().join("nope.toml")).expect_err("missing");
    assert!(missing.to_string().contains("nope.toml"));
    Ok(())
}

/// Checks `value` against the subset of JSON Schema that `docs/decision.schema.json` uses.
fn validate(schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => return Err(format!("{at}: bad type in schema")),
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        if !types.contains(&actual) {
            return Err(format!("{at}: {actual} is not {types:?}"));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} not in {allowed:?}"));
        }
    }
    if let Value::Object(object) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = required.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                return Err(format!("{at}: missing {name}"));
            }
        }
        for (k, v) in object {
            match properties.and_then(|p| p.get(k)) {
                Some(s) => validate(s, v, &format!("{at}.{k}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: unexpected {k}"))
                }
                None => {}
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (value, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            validate(s, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

#[test]
fn decisions_match_the_published_schema() -> Result<()> {
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/decision.schema.json"),
    )?)?;
    let grant = Decision {
        scan_id: "scan-1.png".into(),
        source: ScanSource {
            kind: SourceKind::Directory,
            name: "/var/lib/fingerprintd/sensor/scan-1.png".into(),
            sensor: None,
        },
        timestamp: "2026-11-26T12:00:00.000Z".into(),
        decision: Verdict::Grant,
        mode: MatchMode::Identification,
        claimed_identity: None,
        identity: Some("alice-right-index".into()),
        score: Some(4.2),
        threshold: 1.5,
        matcher: Some(MatcherMode::Fused),
        network_score: Some(0.91),
        minutiae_score: Some(63.0),
        fused_score: Some(4.2),
        candidates: vec![
            Candidate {
                identity: "alice-right-index".into(),
                score: 4.2,
                network_score: Some(0.91),
                minutiae_score: Some(63.0),
            },
            Candidate::scored("bob-left-thumb".into(), -3.0),
        ],
        model: Some(ModelRef {
            name: "model.safetensors".into(),
            digest: "sha256:00".into(),
        }),
        latency_ms: 31.5,
        error: None,
        locked_out: false,
    };
    let error = Decision {
        decision: Verdict::Error,
        identity: None,
        score: None,
        candidates: vec![],
        matcher: None,
        network_score: None,
        minutiae_score: None,
        fused_score: None,
        model: None,
        error: Some("empty scan (0 bytes)".into()),
        locked_out: false,
        source: ScanSource {
            kind: SourceKind::Mqtt,
            name: "fingerprintd/door-1/scan".into(),
            sensor: Some("reader-1".into()),
        },
        ..grant.clone()
    };
    for d in [&grant, &error] {
        let value = serde_json::to_value(d)?;
        validate(&schema, &value, "decision").map_err(anyhow::Error::msg)?;
    }
    // The validator is not vacuous.
    let mut broken = serde_json::to_value(&grant)?;
    broken["decision"] = "maybe".into();
    assert!(validate(&schema, &broken, "decision").is_err());
    broken = serde_json::to_value(&grant)?;
    broken.as_object_mut().map(|o| o.remove("threshold"));
    assert!(validate(&schema, &broken, "decision").is_err());
    Ok(())
}
