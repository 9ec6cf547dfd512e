//! fingerprintd's library: everything the service does, kept apart from the thin binary so
//! that tests and benchmarks can drive it.
//!
//! Data flow: inputs ([`sensor`], [`mqtt`]) put scans on a bounded queue; one inference
//! thread ([`worker`]) decides them in batches with the loaded model ([`engine`]); the
//! router in [`service`] stores each decision (JSON lines via [`output`], or the on-disk
//! [`outbox`] that [`mqtt`] publishes from) and only then settles the scan.

pub mod bench;
pub mod calibrate;
pub mod decide;
pub mod engine;
pub mod enroll;
pub mod gallery;
pub mod input;
pub mod mqtt;
pub mod outbox;
pub mod output;
pub mod policy;
pub mod publications;
pub mod sensor;
pub mod service;
pub mod worker;

pub use engine::Engine;
pub use service::Service;
