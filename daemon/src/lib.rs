//! fingerprintd's library: everything the service does, kept apart from the thin binary so
//! that tests and benchmarks can drive it.
//!
//! The service is a pipeline whose modules depend on each other one way only (CI checks it:
//! `scripts/module-cycles.py`), from the bottom up:
//!
//! - what travels: [`job`] (a scan, its origin with an opaque acknowledgement token, what
//!   becomes of it), [`lock`], [`error`] (I/O errors that name their path);
//! - inference, with no async runtime or MQTT in it: [`engine`] (the model), [`gallery`]
//!   (enrolled templates), [`policy`] (matcher and threshold in force), [`decide`] (scans to
//!   decisions), [`lockout`] (every scan denied for a while after repeated denials),
//!   [`calibrate`], [`enroll`] (enrolment and its administration requests), and [`bench`];
//! - sinks: [`decision_log`] (JSON lines), [`outbox`] (decisions waiting for the broker),
//!   [`settle`] (scan files moved once their decision is out);
//! - sources that make jobs: [`sensor`] (the sensor directory), [`input`] (scan messages
//!   unpacked);
//! - the inference thread: [`worker`] (jobs in, outcomes out);
//! - the MQTT link, an adapter: [`mqtt`] (the connection; [`publications`] is its pure packet
//!   bookkeeping);
//! - [`service`], which wires them together and routes each outcome to its sink, then settles
//!   its scan.

pub mod bench;
pub mod calibrate;
pub mod decide;
pub mod decision_log;
pub mod engine;
pub mod enroll;
pub mod error;
pub mod gallery;
pub mod input;
pub mod job;
pub mod lock;
pub mod lockout;
pub mod mqtt;
pub mod outbox;
pub mod policy;
pub mod publications;
pub mod sensor;
pub mod service;
pub mod settle;
#[cfg(test)]
mod test_support;
pub mod worker;

pub use engine::Engine;
pub use service::Service;
