//! A scan as it reaches the service (encoded file bytes or a raw sensor buffer) turned into
//! the network's input, by the preprocessing shared with the trainer.

use fingerprint_common::{decode_raw, decode_scan, Preprocessing, ScanError, ScanLimits};

use crate::job::PayloadError;

/// Network input (3 x size x size, CHW) for an encoded scan from a sensor of `sensor_dpi`
/// (where the configuration gives it: `[matcher] sensor_dpi`).
pub fn encoded_scan_input(
    bytes: &[u8],
    pre: &Preprocessing,
    sensor_dpi: Option<u32>,
    limits: &ScanLimits,
) -> Result<Vec<f32>, ScanError> {
    Ok(pre.apply_at(&decode_scan(bytes, limits)?, sensor_dpi))
}

/// Network input for a raw 8-bit grey sensor buffer of `width` x `height` pixels.
pub fn raw_scan_input(
    bytes: &[u8],
    width: u32,
    height: u32,
    pre: &Preprocessing,
    sensor_dpi: Option<u32>,
    limits: &ScanLimits,
) -> Result<Vec<f32>, ScanError> {
    Ok(pre.apply_at(&decode_raw(bytes, width, height, limits)?, sensor_dpi))
}

/// A scan message from MQTT, unpacked but not decoded.
#[derive(Debug, PartialEq)]
pub struct MqttScan {
    /// From the message, if it named one.
    pub scan_id: Option<String>,
    pub sensor: Option<String>,
    /// Identity to verify against (1:1), from a JSON message.
    pub claim: Option<String>,
    /// The encoded image, or why the message holds none that may be decoded.
    pub image: Result<Vec<u8>, PayloadError>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanMessage {
    scan_id: Option<String>,
    sensor: Option<String>,
    claim: Option<String>,
    /// Base64 (standard alphabet, padded) of an image file.
    image: String,
}

/// Unpacks an MQTT scan payload: an image file's bytes as they are, or a JSON object
/// `{"scan_id": ..., "sensor": ..., "image": "<base64>"}` (a JSON payload starts with `{`,
/// which no supported image format does). Size limits are checked before anything is parsed.
pub fn parse_mqtt_scan(payload: &[u8], limits: &ScanLimits) -> MqttScan {
    let too_large = |size: usize| PayloadError::TooLarge {
        size,
        limit: limits.max_bytes,
    };
    let is_json = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if !is_json {
        let image = if payload.len() > limits.max_bytes {
            Err(too_large(payload.len()))
        } else {
            Ok(payload.to_vec())
        };
        return MqttScan {
            scan_id: None,
            sensor: None,
            claim: None,
            image,
        };
    }
    if payload.len() > limits.largest_message() {
        return MqttScan {
            scan_id: None,
            sensor: None,
            claim: None,
            image: Err(PayloadError::MessageTooLarge {
                size: payload.len(),
                limit: limits.largest_message(),
                max_scan: limits.max_bytes,
            }),
        };
    }
    match serde_json::from_slice::<ScanMessage>(payload) {
        Err(e) => MqttScan {
            scan_id: None,
            sensor: None,
            claim: None,
            image: Err(PayloadError::BadMessage(e.to_string())),
        },
        Ok(m) => {
            use base64::Engine as _;
            let image = base64::engine::general_purpose::STANDARD
                .decode(m.image.trim())
                .map_err(|e| PayloadError::NotBase64(e.to_string()))
                .and_then(|bytes| {
                    if bytes.len() > limits.max_bytes {
                        Err(too_large(bytes.len()))
                    } else {
                        Ok(bytes)
                    }
                });
            MqttScan {
                scan_id: m.scan_id.filter(|s| !s.is_empty()),
                sensor: m.sensor,
                claim: m.claim,
                image,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ScanLimits = ScanLimits {
        max_bytes: 100,
        max_side: 64,
    };

    #[test]
    fn raw_payloads_pass_through_and_oversized_ones_are_refused_unread() {
        let scan = parse_mqtt_scan(b"\x89PNG....", &LIMITS);
        assert_eq!(scan.image.as_deref(), Ok(b"\x89PNG....".as_slice()));
        assert_eq!(scan.scan_id, None);
        let big = parse_mqtt_scan(&[0u8; 101], &LIMITS);
        let error = big.image.expect_err("too large").to_string();
        assert!(
            error.contains("101 bytes") && error.contains("limit of 100 bytes"),
            "{error}"
        );
    }

    #[test]
    fn json_messages_carry_id_sensor_and_base64_image() {
        let scan = parse_mqtt_scan(
            br#" {"scan_id": "s1", "sensor": "front", "image": "iVBORw=="}"#,
            &LIMITS,
        );
        assert_eq!(scan.scan_id.as_deref(), Some("s1"));
        assert_eq!(scan.sensor.as_deref(), Some("front"));
        assert_eq!(scan.image.as_deref(), Ok(b"\x89PNG".as_slice()));
        let unknown = parse_mqtt_scan(br#"{"image": "", "pin": 1234}"#, &LIMITS);
        assert!(unknown
            .image
            .expect_err("unknown field")
            .to_string()
            .contains("pin"));
        let decoded_too_big = format!(r#"{{"image": "{}"}}"#, "A".repeat(200));
        let scan = parse_mqtt_scan(decoded_too_big.as_bytes(), &LIMITS);
        assert!(scan
            .image
            .expect_err("too large")
            .to_string()
            .contains("larger"));
    }
}
