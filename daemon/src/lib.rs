//! fingerprintd's library: what the service does with a scan, kept apart from the binary so
//! that it can be tested.

pub mod input;
