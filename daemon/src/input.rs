//! A scan as it reaches the service (encoded file bytes or a raw sensor buffer) turned into
//! the network's input, by the preprocessing shared with the trainer.

use fingerprint_common::{decode_raw, decode_scan, Preprocessing, ScanError, ScanLimits};

/// Network input (3 x size x size, CHW) for an encoded scan.
pub fn encoded_scan_input(
    bytes: &[u8],
    pre: &Preprocessing,
    limits: &ScanLimits,
) -> Result<Vec<f32>, ScanError> {
    Ok(pre.apply(&decode_scan(bytes, limits)?))
}

/// Network input for a raw 8-bit grey sensor buffer of `width` x `height` pixels.
pub fn raw_scan_input(
    bytes: &[u8],
    width: u32,
    height: u32,
    pre: &Preprocessing,
    limits: &ScanLimits,
) -> Result<Vec<f32>, ScanError> {
    Ok(pre.apply(&decode_raw(bytes, width, height, limits)?))
}
