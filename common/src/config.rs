//! Configuration of the `fingerprintd` service, read from TOML. The documented default file is
//! `systemd/config.toml`, compiled in as [`DEFAULT_CONFIG`]; every option is described there
//! and in the README. Unknown keys are errors, so a typo cannot silently fall back to a
//! default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::matcher::MatcherMode;
use crate::ScanLimits;

/// The fully commented default configuration.
pub const DEFAULT_CONFIG: &str = include_str!("../../systemd/config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Names this door in MQTT topics and in the client id.
    pub door_id: String,
    /// Where the service keeps what must survive a restart (the gallery, the door's
    /// calibration, the lockout, the MQTT outbox); made at start if missing.
    pub state_dir: PathBuf,
    /// The network; not needed with `matcher.mode = "minutiae"`.
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub matcher: MatcherConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub queue: QueueConfig,
    pub sensor: Option<SensorConfig>,
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub output: OutputConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// An exported model (`trainer export`); required unless the matcher is minutiae alone.
    pub path: Option<PathBuf>,
    /// `cpu`, `cuda` or `cuda:N` (CUDA needs a build with the `cuda` feature).
    #[serde(default = "default_device")]
    pub device: String,
    /// Classifier mode: overrides the probability threshold calibrated into the model.
    pub threshold: Option<f32>,
    /// Gallery mode: overrides the similarity threshold calibrated into the model.
    pub match_threshold: Option<f32>,
    /// How many candidates each decision lists.
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: None,
            device: default_device(),
            threshold: None,
            match_threshold: None,
            top_k: default_top_k(),
        }
    }
}

/// How scans are compared with enrolled fingers (`crate::matcher`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatcherConfig {
    /// `network`, `minutiae` (no model needed) or `fused`.
    pub mode: MatcherMode,
    /// 1:N in large galleries: identities the network shortlists for minutiae.
    pub shortlist: usize,
    /// Galleries with fewer identities are compared in full by minutiae.
    pub exhaustive_below: usize,
    /// The sensor's resolution, where it is known. Minutiae are found at 500 dpi, so other
    /// scans are resampled (unset: taken as 500); a ridge-scale model gets a window of fixed
    /// physical size (unset: sized by each scan's measured ridge period).
    pub sensor_dpi: Option<u32>,
    /// Overrides the minutiae or fused threshold in force (the door's calibration, else the
    /// one shipped).
    pub threshold: Option<f32>,
    /// Applies a network threshold calibrated on synthetic prints to this door's scans.
    pub accept_synthetic_threshold: bool,
    /// Denials in a row after which the door is locked out (0: never): every scan is denied
    /// for `lockout_s` seconds, so a stranger cannot try scan after scan until one passes.
    pub lockout_after: usize,
    /// How long a lockout lasts, in seconds; one that starts within `lockout_max_s` of the
    /// end of the one before lasts twice as long as it did, up to `lockout_max_s`.
    pub lockout_s: u64,
    /// The longest lockout, in seconds.
    pub lockout_max_s: u64,
}

impl Default for MatcherConfig {
    fn default() -> Self {
        Self {
            mode: MatcherMode::Fused,
            shortlist: 5,
            exhaustive_below: 200,
            sensor_dpi: None,
            threshold: None,
            accept_synthetic_threshold: false,
            lockout_after: 5,
            lockout_s: 30,
            lockout_max_s: 900,
        }
    }
}

impl MatcherConfig {
    /// The resolution minutiae are found at: the sensor's, else taken as 500 dpi.
    pub fn minutiae_dpi(&self) -> u32 {
        crate::minutiae::scan_dpi(self.sensor_dpi)
    }
}

/// Used when neither the configuration nor the model sets a threshold: a top-1 probability
/// this high is rare for a scan of a finger the model was not trained on.
pub const FALLBACK_THRESHOLD: f32 = 0.9;

/// Gallery similarity needed when the model carries no calibration and the configuration sets
/// none: strict, so an uncalibrated model refuses rather than admits.
pub const FALLBACK_MATCH_THRESHOLD: f32 = 0.95;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_scan_bytes: usize,
    pub max_side: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = ScanLimits::default();
        Self {
            max_scan_bytes: limits.max_bytes,
            max_side: limits.max_side,
        }
    }
}

impl From<LimitsConfig> for ScanLimits {
    fn from(c: LimitsConfig) -> Self {
        Self {
            max_bytes: c.max_scan_bytes,
            max_side: c.max_side,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Scans waiting for inference at most; inputs wait when it is full.
    pub capacity: usize,
    /// Scans run through the network together when several wait.
    pub max_batch: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 64,
            max_batch: 8,
        }
    }
}

/// What happens to a scan file once its decision has been published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterDecision {
    /// Move it to `processed_dir`.
    #[default]
    Move,
    Delete,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorConfig {
    /// Directory the sensor writes scans into.
    pub dir: PathBuf,
    #[serde(default)]
    pub after_decision: AfterDecision,
    /// Default `<dir>/processed`.
    pub processed_dir: Option<PathBuf>,
    /// Undecodable scans go here with a `.reason` file; default `<dir>/rejected`.
    pub rejected_dir: Option<PathBuf>,
}

impl SensorConfig {
    pub fn processed_dir(&self) -> PathBuf {
        self.processed_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("processed"))
    }

    pub fn rejected_dir(&self) -> PathBuf {
        self.rejected_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("rejected"))
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub host: String,
    #[serde(default = "default_mqtt_port")]
    pub port: u16,
    /// Default `fingerprintd-<door_id>`.
    pub client_id: Option<String>,
    /// Topics are `<topic_prefix>/<door_id>/{scan,decision,status}`.
    #[serde(default = "default_topic_prefix")]
    pub topic_prefix: String,
    /// Take scans from `<prefix>/<door_id>/scan`.
    #[serde(default = "default_true")]
    pub subscribe_scans: bool,
    /// Accept enrolment and removal over `<prefix>/<door_id>/enroll` and `.../remove` (restrict
    /// who may publish there with broker ACLs).
    #[serde(default)]
    pub enrollment: bool,
    pub username: Option<String>,
    /// Password in the file (preferred: keep it out of the config).
    pub password_file: Option<PathBuf>,
    pub password: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u64,
    /// Longest wait between reconnection attempts; the wait doubles from 1 s up to it.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_s: u64,
    /// Largest MQTT message the client reads. Scans up to it but over
    /// `limits.max_scan_bytes` get an "error" decision; a larger message cuts the connection,
    /// so the broker must refuse such messages (mosquitto: `message_size_limit`).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    pub tls: Option<TlsConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM CA certificates to trust for the broker.
    pub ca_file: PathBuf,
    /// PEM client certificate chain and key, for brokers that require them.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl MqttConfig {
    pub fn topic(&self, door_id: &str, leaf: &str) -> String {
        format!("{}/{door_id}/{leaf}", self.topic_prefix)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// Where decisions go as JSON lines when MQTT is not configured: `stdout` or a file path.
    pub decisions: String,
    /// Decisions kept on disk while the broker is unreachable; beyond it the oldest are
    /// dropped (and logged).
    pub outbox_capacity: usize,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            decisions: "stdout".into(),
            outbox_capacity: 10_000,
        }
    }
}

fn default_device() -> String {
    "cpu".into()
}
fn default_top_k() -> usize {
    3
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_topic_prefix() -> String {
    "fingerprintd".into()
}
fn default_true() -> bool {
    true
}
fn default_keep_alive() -> u64 {
    30
}
fn default_max_backoff() -> u64 {
    30
}
/// 64 MiB: far above any scan (an uncompressed 1000 dpi frame is a few MB), small enough to
/// hold in a door controller's memory while it is answered.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 << 20;
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

impl DaemonConfig {
    /// The gallery of enrolled identities.
    pub fn gallery_path(&self) -> PathBuf {
        self.state_dir.join("gallery.json")
    }

    /// Reads and validates a configuration file. Relative paths in it are taken relative to
    /// the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        if let Some(base) = path.parent() {
            config.resolve_relative(base);
        }
        Ok(config)
    }

    /// Parses and validates configuration text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.state_dir);
        self.model.path.as_mut().map(fix);
        if let Some(s) = &mut self.sensor {
            fix(&mut s.dir);
            s.processed_dir.as_mut().map(fix);
            s.rejected_dir.as_mut().map(fix);
        }
        if let Some(m) = &mut self.mqtt {
            m.password_file.as_mut().map(fix);
            if let Some(t) = &mut m.tls {
                fix(&mut t.ca_file);
                t.client_cert_file.as_mut().map(fix);
                t.client_key_file.as_mut().map(fix);
            }
        }
        if self.output.decisions != "stdout" {
            let mut p = PathBuf::from(&self.output.decisions);
            fix(&mut p);
            self.output.decisions = p.display().to_string();
        }
    }

    fn validate(&self) -> Result<(), String> {
        let topic_safe = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#', '\0']);
        if !topic_safe(&self.door_id) {
            return Err(format!(
                "door_id '{}' must be non-empty and free of '/', '+', '#'",
                self.door_id
            ));
        }
        if let Some(t) = self.model.threshold {
            if !(0.0..=1.0).contains(&t) {
                return Err(format!("model.threshold {t} is outside 0..=1"));
            }
        }
        if let Some(t) = self.model.match_threshold {
            if !(-1.0..=1.0).contains(&t) {
                return Err(format!("model.match_threshold {t} is outside -1..=1"));
            }
        }
        if self.model.top_k == 0 {
            return Err("model.top_k must be at least 1".into());
        }
        if self.model.path.is_none() && self.matcher.mode != MatcherMode::Minutiae {
            return Err(format!(
                "model.path is required with matcher.mode = \"{}\" (only \"minutiae\" works without a model)",
                self.matcher.mode
            ));
        }
        if self.matcher.shortlist == 0 {
            return Err("matcher.shortlist must be at least 1".into());
        }
        let lockout = &self.matcher;
        if lockout.lockout_after > 0 && !(1..=86_400).contains(&lockout.lockout_s) {
            return Err(format!(
                "matcher.lockout_s {} is outside 1..=86400 (set matcher.lockout_after = 0 for no lockout)",
                lockout.lockout_s
            ));
        }
        if lockout.lockout_after > 0
            && !(lockout.lockout_s..=86_400).contains(&lockout.lockout_max_s)
        {
            return Err(format!(
                "matcher.lockout_max_s {} is outside matcher.lockout_s ({})..=86400",
                lockout.lockout_max_s, lockout.lockout_s
            ));
        }
        if let Some(dpi) = self
            .matcher
            .sensor_dpi
            .filter(|d| !(100..=5000).contains(d))
        {
            return Err(format!("matcher.sensor_dpi {dpi} is outside 100..=5000"));
        }
        if self.queue.capacity == 0 || self.queue.max_batch == 0 {
            return Err("queue.capacity and queue.max_batch must be at least 1".into());
        }
        if self.limits.max_scan_bytes == 0 || self.limits.max_side == 0 {
            return Err("limits must be positive".into());
        }
        if self.output.outbox_capacity == 0 {
            return Err("output.outbox_capacity must be at least 1".into());
        }
        if self.sensor.is_none() && !self.mqtt.as_ref().is_some_and(|m| m.subscribe_scans) {
            return Err(
                "no input: configure [sensor] or [mqtt] with subscribe_scans = true".into(),
            );
        }
        if let Some(m) = &self.mqtt {
            if m.host.is_empty() {
                return Err("mqtt.host is empty".into());
            }
            if !m.topic_prefix.split('/').all(topic_safe) {
                return Err(format!(
                    "mqtt.topic_prefix '{}' is not a plain topic",
                    m.topic_prefix
                ));
            }
            if m.password.is_some() && m.password_file.is_some() {
                return Err("set mqtt.password or mqtt.password_file, not both".into());
            }
            let needed = ScanLimits::from(self.limits).largest_message();
            if m.max_message_bytes < needed {
                return Err(format!(
                    "mqtt.max_message_bytes {} is below {needed}, the largest JSON message of a scan of limits.max_scan_bytes",
                    m.max_message_bytes
                ));
            }
            if m.keep_alive_s < 5 {
                return Err("mqtt.keep_alive_s must be at least 5".into());
            }
            if let Some(t) = &m.tls {
                if t.client_cert_file.is_some() != t.client_key_file.is_some() {
                    return Err("mqtt.tls: client_cert_file and client_key_file go together".into());
                }
            }
        }
        Ok(())
    }
}
