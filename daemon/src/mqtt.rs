//! The broker connection: scans in, decisions and availability out.
//!
//! Decisions are published from the on-disk outbox, QoS 1, and an entry leaves the outbox
//! (and its scan file is settled) only when the broker has acknowledged it ([`Publications`]).
//! After every reconnect whatever was not acknowledged is published again.
//!
//! The session is persistent (clean session off, a fixed client id), so scans published at
//! QoS 1 while the daemon is away (a broker outage, a restart, a crash) wait at the broker and
//! arrive when it is back. Incoming scans are acknowledged (manual acks) only once their
//! decision is stored in the outbox, so a scan taken but not yet decided when the daemon died
//! is delivered again. Every message up to `mqtt.max_message_bytes` is read and answered (an
//! oversized scan gets an "error" decision); a larger one cuts the connection, which is why
//! the broker must refuse such messages itself.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{At, IoError};
use fingerprint_common::config::{MqttConfig, TlsConfig};
use fingerprint_common::{ScanLimits, ScanSource, SourceKind};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    StateError, TlsConfiguration, Transport,
};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::enroll::Admin;
use crate::input::parse_mqtt_scan;
use crate::job::{Ack, Job, Origin, ScanRequest};
use crate::lock::lock;
use crate::outbox::Outbox;
use crate::publications::Publications;
use crate::settle::Settler;

/// Decisions published but not yet acknowledged, at most.
const PUBLISH_WINDOW: usize = 32;

pub const ONLINE: &str = "online";
pub const OFFLINE: &str = "offline";

/// Topics of one door.
#[derive(Clone, Debug)]
pub struct Topics {
    pub scan: String,
    pub decision: String,
    pub status: String,
    pub enroll: String,
    pub remove: String,
    /// Replies to enrolment and removal requests.
    pub result: String,
}

impl Topics {
    pub fn new(config: &MqttConfig, door_id: &str) -> Self {
        Self {
            scan: config.topic(door_id, "scan"),
            decision: config.topic(door_id, "decision"),
            status: config.topic(door_id, "status"),
            enroll: config.topic(door_id, "enroll"),
            remove: config.topic(door_id, "remove"),
            result: config.topic(door_id, "result"),
        }
    }
}

/// Room for a packet's fixed header and topic beside its payload.
const PACKET_OVERHEAD: usize = 64 * 1024;

/// Largest MQTT packet the client reads: a message of `mqtt.max_message_bytes` on a topic.
/// Anything larger breaks the connection (the client refuses to read it).
pub fn max_incoming_packet(config: &MqttConfig) -> usize {
    config.max_message_bytes.saturating_add(PACKET_OVERHEAD)
}

/// What the installer must set on the broker so that no message cuts the door's connection.
pub fn broker_limit_advice(config: &MqttConfig) -> String {
    format!(
        "messages over {} bytes (mqtt.max_message_bytes) cut the connection and, with the door's persistent session, come back at every reconnect: set the broker's limit to at most that (mosquitto: message_size_limit {})",
        config.max_message_bytes, config.max_message_bytes
    )
}

/// Client options from the configuration: credentials, TLS, last will, a persistent session,
/// size limits.
/// Why the MQTT connection cannot be set up: a file it names is unreadable or unusable.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{}: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("TLS protocol versions: {0}")]
    Tls(rustls::Error),
}

fn unusable(path: &Path, reason: impl std::fmt::Display) -> MqttSetupError {
    MqttSetupError::Unusable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

pub fn options(config: &MqttConfig, door_id: &str) -> Result<MqttOptions, MqttSetupError> {
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| format!("fingerprintd-{door_id}"));
    let topics = Topics::new(config, door_id);
    let mut options = MqttOptions::new(client_id, config.host.clone(), config.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_s))
        // Scans sent while the door is away wait at the broker for it.
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_inflight(PUBLISH_WINDOW as u16 + 8)
        .set_request_channel_capacity(4 * PUBLISH_WINDOW)
        .set_max_packet_size(max_incoming_packet(config), 1 << 20)
        .set_last_will(LastWill::new(
            &topics.status,
            OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    let password = match (&config.password, &config.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .at("reading MQTT password file", file)?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        (None, None) => None,
    };
    if let Some(user) = &config.username {
        options.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if let Some(tls) = &config.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(rustls_config(tls)?),
        )));
    }
    Ok(options)
}

/// A rustls client configuration (ring provider) trusting `ca_file`, with the client
/// certificate when one is configured.
pub fn rustls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, MqttSetupError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |path: &Path| -> Result<Vec<CertificateDer<'static>>, MqttSetupError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| unusable(path, format!("reading certificates: {e}")))?;
        if certs.is_empty() {
            return Err(unusable(path, "no PEM certificate in it"));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(&tls.ca_file)? {
        roots
            .add(cert)
            .map_err(|e| unusable(&tls.ca_file, format!("unusable CA certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(MqttSetupError::Tls)?
        .with_root_certificates(roots);
    Ok(match (&tls.client_cert_file, &tls.client_key_file) {
        (Some(cert), Some(key)) => {
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| unusable(key, format!("reading private key: {e}")))?;
            builder
                .with_client_auth_cert(certs(cert)?, key_der)
                .map_err(|e| unusable(cert, format!("client certificate: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    })
}

/// State the connection shares with the rest of the service.
pub struct Shared {
    pub outbox: Arc<Mutex<Outbox>>,
    /// Signalled when an entry is added to the outbox.
    pub outbox_changed: Arc<Notify>,
    pub settler: Option<Settler>,
    /// Enrolment over MQTT, when enabled.
    pub admin: Option<Admin>,
}

pub struct Connection {
    pub client: AsyncClient,
    pub task: tokio::task::JoinHandle<()>,
}

/// Connects (in the background, retrying with backoff) and runs until `shutdown` turns true
/// and `drained` says no more decisions will come; then it publishes what is left (waiting
/// at most `grace`), announces "offline" and disconnects.
#[allow(clippy::too_many_arguments)]
pub fn start(
    options: MqttOptions,
    config: &MqttConfig,
    topics: Topics,
    limits: ScanLimits,
    shared: Shared,
    jobs: Option<mpsc::Sender<Job>>,
    shutdown: watch::Receiver<bool>,
    drained: watch::Receiver<bool>,
    grace: Duration,
) -> Connection {
    let (client, eventloop) = AsyncClient::new(options, 4 * PUBLISH_WINDOW);
    let (events_tx, events) = mpsc::channel(64);
    let (results_tx, results) = mpsc::channel(16);
    let max_backoff = Duration::from_secs(config.max_backoff_s.max(1));
    let poller = tokio::spawn(poll(eventloop, events_tx, max_backoff));
    let link = Link {
        client: client.clone(),
        topics,
        limits,
        broker_advice: broker_limit_advice(config),
        shared,
        jobs,
        connected: false,
        publications: Publications::new(PUBLISH_WINDOW),
        failures: 0,
        results_tx,
    };
    let task = tokio::spawn(async move {
        link.run(events, results, shutdown, drained, grace).await;
        poller.abort();
    });
    Connection { client, task }
}

/// What the event loop reports to the link.
enum LinkEvent {
    Mqtt(Event),
    /// The connection failed or could not be made. The event loop waits for `resume` before
    /// it tries again, so that the link has stopped handing it requests meant for the lost
    /// connection.
    Lost {
        error: ConnectionError,
        resume: oneshot::Sender<()>,
    },
}

/// Drives the client's event loop in a task of its own (its future is not cancel-safe in a
/// `select!`), with exponential backoff between connection attempts.
async fn poll(mut eventloop: EventLoop, events: mpsc::Sender<LinkEvent>, max_backoff: Duration) {
    let mut backoff = Duration::from_secs(1);
    loop {
        match eventloop.poll().await {
            Ok(event) => {
                if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
                    backoff = Duration::from_secs(1);
                }
                if events.send(LinkEvent::Mqtt(event)).await.is_err() {
                    return;
                }
            }
            Err(ConnectionError::RequestsDone) => return,
            Err(error) => {
                let (resume, resumed) = oneshot::channel();
                if events
                    .send(LinkEvent::Lost { error, resume })
                    .await
                    .is_err()
                    || resumed.await.is_err()
                {
                    return;
                }
                // What the client kept for the lost connection (decisions in flight, their
                // acknowledgements, subscriptions) is dropped: after the next ConnAck the link
                // publishes the outbox again and subscribes again, and the broker delivers
                // again the scans it has no acknowledgement for.
                eventloop.clean();
                eventloop.pending.clear();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// The broker acknowledged `pkid`: if it carried a decision, that decision leaves the outbox,
/// and what is to become of its scan is returned (settled only now, once the decision is
/// surely out). Any other packet id (an enrolment reply, one from a lost connection) settles
/// nothing.
fn acknowledged(
    publications: &mut Publications,
    outbox: &mut Outbox,
    pkid: u16,
) -> Option<crate::job::Settle> {
    let seq = publications.acknowledged(pkid)?;
    tracing::debug!(seq, pkid, "decision acknowledged by the broker");
    outbox.complete(seq).map(|entry| entry.settle)
}

/// A scan id for a message that names none: derived from its bytes, so that a scan the broker
/// delivers again (its acknowledgement was lost with the connection) keeps its id.
fn content_scan_id(payload: &[u8]) -> String {
    let digest = Sha256::digest(payload);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("mqtt-{hex}")
}

struct Link {
    client: AsyncClient,
    topics: Topics,
    limits: ScanLimits,
    /// Logged when a message too large to read cuts the connection.
    broker_advice: String,
    shared: Shared,
    jobs: Option<mpsc::Sender<Job>>,
    connected: bool,
    publications: Publications,
    /// Connection attempts failed in a row.
    failures: u64,
    /// Replies of enrolment tasks, published by the link.
    results_tx: mpsc::Sender<Vec<u8>>,
}

impl Link {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<LinkEvent>,
        mut results: mpsc::Receiver<Vec<u8>>,
        mut shutdown: watch::Receiver<bool>,
        mut drained: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let outbox_changed = self.shared.outbox_changed.clone();
        let mut stopping = false;
        let mut deadline: Option<Instant> = None;
        loop {
            if stopping && *drained.borrow() {
                let empty = self.outbox_len() == 0;
                let started = *deadline.get_or_insert_with(|| Instant::now() + grace);
                if empty || Instant::now() >= started {
                    break;
                }
            }
            self.submit();
            let tick = tokio::time::sleep(Duration::from_millis(200));
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                _ = outbox_changed.notified() => {}
                Some(reply) = results.recv() => {
                    let topic = self.topics.result.clone();
                    if self.connected
                        && self.client.try_publish(topic, QoS::AtLeastOnce, false, reply).is_ok()
                    {
                        self.publications.other_submitted();
                    } else {
                        tracing::warn!("enrolment reply not published: not connected");
                    }
                }
                changed = shutdown.changed(), if !stopping => {
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        // No more scans from the broker: what is queued still gets decided.
                        // The subscription stays in the session, and scans that arrive from
                        // now on are not acknowledged, so the broker keeps them for the next
                        // start.
                        self.jobs = None;
                    }
                }
                _ = drained.changed(), if stopping => {}
                _ = tick => {}
            }
        }
        let left = self.outbox_len();
        if left > 0 {
            tracing::warn!("{left} decisions stay in the outbox for the next start");
        }
        self.go_offline(&mut events).await;
    }

    fn outbox_len(&self) -> usize {
        lock(&self.shared.outbox).len()
    }

    /// Hands outbox entries to the client, up to the window.
    fn submit(&mut self) {
        if !self.connected {
            return;
        }
        let room = self.publications.room();
        let pending: Vec<(u64, Vec<u8>)> = {
            let outbox = lock(&self.shared.outbox);
            outbox
                .iter()
                .filter(|(seq, _)| !self.publications.is_submitted(*seq))
                .take(room)
                .filter_map(|(seq, entry)| match serde_json::to_vec(&entry.decision) {
                    Ok(p) => Some((*seq, p)),
                    Err(e) => {
                        tracing::error!("decision {seq} cannot be serialised: {e}");
                        None
                    }
                })
                .collect()
        };
        for (seq, payload) in pending {
            let topic = self.topics.decision.clone();
            if self
                .client
                .try_publish(topic, QoS::AtLeastOnce, false, payload)
                .is_err()
            {
                break;
            }
            tracing::debug!(seq, "decision handed to the MQTT client");
            self.publications.decision_submitted(seq);
        }
    }

    async fn handle(&mut self, event: LinkEvent) {
        let event = match event {
            LinkEvent::Mqtt(event) => event,
            LinkEvent::Lost { error, resume } => {
                self.lost(&error);
                let _ = resume.send(());
                return;
            }
        };
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                tracing::info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                self.connected = true;
                self.failures = 0;
                // Nothing handed to the client for the last connection survives in it.
                self.publications.reset();
                if self.jobs.is_some() {
                    let _ = self
                        .client
                        .try_subscribe(self.topics.scan.clone(), QoS::AtLeastOnce);
                }
                if self.shared.admin.is_some() {
                    for topic in [&self.topics.enroll, &self.topics.remove] {
                        let _ = self.client.try_subscribe(topic.clone(), QoS::AtLeastOnce);
                    }
                }
                // QoS 0, so that every QoS 1 publish of this client is a decision.
                let _ = self.client.try_publish(
                    self.topics.status.clone(),
                    QoS::AtMostOnce,
                    true,
                    ONLINE,
                );
            }
            Event::Outgoing(Outgoing::Publish(pkid)) if pkid != 0 => self.publications.sent(pkid),
            Event::Incoming(Packet::PubAck(ack)) => {
                let settle = {
                    let mut outbox = lock(&self.shared.outbox);
                    acknowledged(&mut self.publications, &mut outbox, ack.pkid)
                };
                if let (Some(settle), Some(settler)) = (settle, &self.shared.settler) {
                    settler.settle(&settle);
                }
            }
            Event::Incoming(Packet::Publish(publish)) => self.incoming(publish).await,
            _ => {}
        }
    }

    /// The connection failed: nothing more is handed to the client until it is back.
    fn lost(&mut self, error: &ConnectionError) {
        if let ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::Error::PayloadSizeLimitExceeded(size),
        )) = error
        {
            tracing::error!(
                "an MQTT message of {size} bytes is too large to read; {}",
                self.broker_advice
            );
        }
        if self.connected {
            tracing::warn!("MQTT connection lost: {error}");
        } else if self.failures.is_multiple_of(10) {
            // The first failure and every tenth: visible, without flooding the log.
            tracing::warn!(
                attempts = self.failures + 1,
                "cannot reach the MQTT broker: {error}"
            );
        }
        self.failures = if self.connected { 0 } else { self.failures + 1 };
        self.connected = false;
        self.publications.reset();
    }

    /// Enrolment or removal: done on a blocking thread, answered on the result topic.
    fn admin(&mut self, publish: rumqttc::Publish) {
        let _ = self.client.try_ack(&publish);
        let Some(admin) = self.shared.admin.clone() else {
            return;
        };
        let enroll = publish.topic == self.topics.enroll;
        let limits = self.limits;
        let replies = self.results_tx.clone();
        tokio::spawn(async move {
            let reply = tokio::task::spawn_blocking(move || {
                admin.handle_request(enroll, &publish.payload, &limits)
            })
            .await
            .unwrap_or_else(|e| crate::enroll::failure_reply(enroll, &format!("{e}")));
            let _ = replies.send(reply).await;
        });
    }

    /// A message from the broker: an administration request, or a scan.
    async fn incoming(&mut self, publish: rumqttc::Publish) {
        if self.shared.admin.is_some()
            && (publish.topic == self.topics.enroll || publish.topic == self.topics.remove)
        {
            self.admin(publish)
        } else {
            self.scan(publish).await
        }
    }

    /// A scan message: queued for inference, acknowledged once its decision is stored.
    async fn scan(&mut self, publish: rumqttc::Publish) {
        let Some(jobs) = &self.jobs else {
            // Shutting down: not acknowledged, so not taken.
            return;
        };
        if publish.topic != self.topics.scan {
            let _ = self.client.try_ack(&publish);
            return;
        }
        let received = Instant::now();
        let message = parse_mqtt_scan(&publish.payload, &self.limits);
        let scan_id = message
            .scan_id
            .unwrap_or_else(|| content_scan_id(&publish.payload));
        let job = Job {
            scan: ScanRequest {
                scan_id,
                source: ScanSource {
                    kind: SourceKind::Mqtt,
                    name: publish.topic.clone(),
                    sensor: message.sensor,
                },
                payload: message.image,
                claim: message.claim,
                received,
            },
            origin: Origin::Message(Ack::new(publish)),
        };
        // Waits while the queue is full: back-pressure reaches the broker through the
        // unacknowledged messages.
        if jobs.send(job).await.is_err() {
            self.jobs = None;
        }
    }

    async fn go_offline(&mut self, events: &mut mpsc::Receiver<LinkEvent>) {
        if !self.connected {
            return;
        }
        let _ =
            self.client
                .try_publish(self.topics.status.clone(), QoS::AtLeastOnce, true, OFFLINE);
        let _ = self.client.try_disconnect();
        // Let the event loop send both before the task ends.
        let until = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(event)) = tokio::time::timeout_at(until.into(), events.recv()).await {
            if matches!(
                event,
                LinkEvent::Mqtt(Event::Outgoing(Outgoing::Disconnect)) | LinkEvent::Lost { .. }
            ) {
                break;
            }
        }
    }
}

/// Acknowledges a scan message to the broker once its decision is stored. Never waits: an
/// acknowledgement the client cannot take now is lost with it, and the broker delivers the
/// scan again (same scan id).
pub fn acknowledge(client: &AsyncClient, ack: &Ack) {
    if let Some(publish) = ack.get::<rumqttc::Publish>() {
        let _ = client.try_ack(publish);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Settle;
    use crate::outbox::Entry;
    use crate::test_support::decision;
    use fingerprint_common::Verdict;

    fn entry(id: &str) -> Entry {
        Entry {
            decision: decision(id, Verdict::Deny, None),
            settle: Settle::Processed(format!("/sensor/{id}").into()),
        }
    }

    /// A scan file is settled only by the PUBACK of the publish that carried its own
    /// decision, once; a reply's packet id and one from a lost connection settle nothing, and
    /// after the reconnect the decision is published again and settled by its new packet id.
    #[test]
    fn a_scan_is_settled_by_its_own_puback_only() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let mut outbox = Outbox::open(dir.path(), 16)?;
        let mut publications = Publications::new(4);
        for id in ["a", "b"] {
            outbox.push(entry(id))?;
        }
        let seqs: Vec<u64> = outbox.iter().map(|(seq, _)| *seq).collect();
        publications.decision_submitted(seqs[0]);
        publications.other_submitted(); // an enrolment reply between the two
        publications.decision_submitted(seqs[1]);
        for pkid in [1, 2, 3] {
            publications.sent(pkid);
        }
        // The reply's PUBACK: nothing settled, nothing leaves the outbox.
        assert_eq!(acknowledged(&mut publications, &mut outbox, 2), None);
        assert_eq!(outbox.len(), 2);
        // b's PUBACK first (brokers may acknowledge out of order): b only.
        assert_eq!(
            acknowledged(&mut publications, &mut outbox, 3),
            Some(Settle::Processed("/sensor/b".into()))
        );
        assert_eq!(
            acknowledged(&mut publications, &mut outbox, 3),
            None,
            "once"
        );
        // The connection is lost before a's PUBACK: its old packet id settles nothing.
        publications.reset();
        assert_eq!(acknowledged(&mut publications, &mut outbox, 1), None);
        assert_eq!(outbox.len(), 1, "a waits in the outbox");
        // Published again on the next connection, under a new packet id.
        publications.decision_submitted(seqs[0]);
        publications.sent(7);
        assert_eq!(
            acknowledged(&mut publications, &mut outbox, 7),
            Some(Settle::Processed("/sensor/a".into()))
        );
        assert!(outbox.is_empty());
        Ok(())
    }

    #[test]
    fn a_message_without_an_id_keeps_its_id_when_delivered_again() {
        let id = content_scan_id(b"\x89PNG scan bytes");
        assert_eq!(id, content_scan_id(b"\x89PNG scan bytes"));
        assert_ne!(id, content_scan_id(b"\x89PNG other bytes"));
        assert!(
            id.starts_with("mqtt-") && id.len() == "mqtt-".len() + 16,
            "{id}"
        );
    }
}
