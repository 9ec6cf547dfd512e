//! What travels through the service, at the bottom of its dependencies: a scan waiting for
//! its decision ([`ScanRequest`]), where it came from ([`Origin`], with an opaque
//! acknowledgement token for message sources), and what becomes of the scan once its decision
//! is out ([`Settle`]). Sources make [`Job`]s, the inference worker turns them into
//! [`Outcome`]s, the sinks store them and settle the scan.

use std::any::Any;
use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use fingerprint_common::{Decision, ScanSource};
use serde::{Deserialize, Serialize};

/// A scan waiting for its decision.
pub struct ScanRequest {
    pub scan_id: String,
    pub source: ScanSource,
    /// The encoded image, or why there is none to decode (too large, bad message).
    pub payload: Result<Vec<u8>, PayloadError>,
    /// Identity to verify against (1:1) instead of identifying (1:N).
    pub claim: Option<String>,
    pub received: Instant,
}

/// Why a scan reached the service without an image that may be decoded. Its message is the
/// error a decision carries.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error(
        "scan of {size} bytes is larger than the limit of {limit} bytes (limits.max_scan_bytes)"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("scan message of {size} bytes is larger than the limit of {limit} bytes for a JSON message (limits.max_scan_bytes {max_scan} in base64)")]
    MessageTooLarge {
        size: usize,
        limit: usize,
        max_scan: usize,
    },
    /// Not the JSON scan message (the parser's reason).
    #[error("bad scan message: {0}")]
    BadMessage(String),
    #[error("bad scan message: image is not base64: {0}")]
    NotBase64(String),
    /// The scan file could not be read (the reader's reason).
    #[error("{0}")]
    Unreadable(String),
}

/// A message source's acknowledgement, carried opaquely through inference and storage back to
/// the source that made it (the MQTT link acknowledges its publish only once the decision is
/// stored). Nothing between the two can look inside.
pub struct Ack(Box<dyn Any + Send>);

impl Ack {
    pub fn new<T: Any + Send>(token: T) -> Self {
        Self(Box::new(token))
    }

    /// The token, if it is a `T` (the source that made it knows which).
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ack(..)")
    }
}

/// Where a scan came from, to settle it once its decision is out.
#[derive(Debug)]
pub enum Origin {
    /// A file in the sensor directory: moved or deleted once its decision is stored.
    File(PathBuf),
    /// A message: acknowledged to its source once the decision is stored.
    Message(Ack),
}

/// A scan on its way to the inference worker.
pub struct Job {
    pub scan: ScanRequest,
    pub origin: Origin,
}

/// A decided scan on its way to the sinks.
pub struct Outcome {
    pub decision: Decision,
    pub origin: Origin,
}

/// What to do with a scan after its decision has been published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Settle {
    /// Nothing (MQTT scans: their message was acknowledged when the decision was stored).
    Nothing,
    /// A sensor file that was judged.
    Processed(PathBuf),
    /// A sensor file that could not be judged, and why.
    Rejected(PathBuf, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ack_gives_back_only_the_token_it_was_made_with() {
        let ack = Ack::new(42u16);
        assert_eq!(ack.get::<u16>(), Some(&42));
        assert_eq!(ack.get::<u32>(), None);
        assert_eq!(format!("{:?}", Origin::Message(ack)), "Message(Ack(..))");
    }

    #[test]
    fn payload_errors_read_as_the_decisions_have_always_said() {
        let e = PayloadError::TooLarge {
            size: 5_000_000,
            limit: 1_048_576,
        };
        assert_eq!(
            e.to_string(),
            "scan of 5000000 bytes is larger than the limit of 1048576 bytes (limits.max_scan_bytes)"
        );
        assert_eq!(
            PayloadError::NotBase64("x".into()).to_string(),
            "bad scan message: image is not base64: x"
        );
    }
}
