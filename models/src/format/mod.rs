//! The exported model's file format: the contract between the trainer and every daemon in
//! the field. `docs/model-format.md` specifies it; this module writes it ([`write_exported`])
//! and reads it back ([`ModelFile`]), and [`int8`] owns the packed int8 weight layout.
//!
//! An exported model is a safetensors file holding the inference graph of a ResNet (batch
//! norm folded into the convolutions, torchvision's names) in f32, f16 or int8, and a JSON
//! manifest under the metadata key [`MANIFEST_KEY`]. The reader memory-maps the file and
//! checks the header, the manifest, every tensor's name, dtype and shape, and a digest of the
//! tensor data before anything is used: a truncated, corrupted, foreign or future file is an
//! error, never a crash.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use fingerprint_common::Preprocessing;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::checkpoint::Mismatch;
use crate::fold::FoldedWeights;
use crate::resnet::NetworkLayout;
use crate::Arch;

pub mod int8;
mod read;

pub use read::{ModelFile, StoredTensor};

/// Metadata key of the manifest.
pub const MANIFEST_KEY: &str = "fingerprint.manifest";
/// Metadata key whose value (spaces) pads the header so that the packed int8 weights start on
/// a [`DATA_ALIGNMENT`] boundary of the file. Readers ignore it.
pub const ALIGNMENT_KEY: &str = "fingerprint.alignment";
/// Where packed int8 weights start in an exported file (where the layout allows): a cache
/// line. AMX reads its weight tiles 64 bytes a row; rows that straddle two lines made int8
/// products markedly slower (see `fast::aligned`).
pub const DATA_ALIGNMENT: usize = 64;
/// The format's name, in every manifest.
pub const FORMAT_NAME: &str = "fingerprint-resnet";
/// The version this build writes. Version 2 stores int8 convolution weights packed for the
/// CPU kernels (see `docs/model-format.md`); version 1 files are still read.
pub const FORMAT_VERSION: u32 = 2;
/// The oldest version this build reads.
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// How weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    F32,
    F16,
    /// Symmetric per-output-channel int8 weights with one f32 scale per output channel.
    Int8,
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::Int8 => "int8",
        })
    }
}

impl FromStr for Quantization {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" => Ok(Self::Int8),
            other => Err(format!(
                "unknown format '{other}' (expected int8, f16 or f32)"
            )),
        }
    }
}

/// Accuracy measured when the model was exported, on the training run's test split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExportAccuracy {
    pub test_scans: usize,
    /// Top-1 accuracy of this file's weights.
    pub top1: f64,
    /// Top-1 accuracy of the same network in f32.
    pub top1_f32: f64,
    /// Share of test scans whose top-1 identity is the same as f32's.
    pub agreement_with_f32: f64,
}

/// How the similarity threshold for gallery matching was chosen: scans of fingers the model
/// never trained on, matched against templates of enrolled fingers, at a target false-accept
/// rate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Cosine similarity a scan needs to be granted an enrolled identity.
    pub similarity_threshold: f32,
    pub target_far: f64,
    /// False-accept rate at the threshold on the calibration impostor scans.
    pub far: f64,
    /// Share of genuine calibration scans refused at the threshold.
    pub frr: f64,
    pub genuine_scores: usize,
    pub impostor_scores: usize,
    /// What the calibration scans were: a threshold from synthetic prints does not hold on
    /// real ones. None in models exported before this was recorded (unknown).
    #[serde(default)]
    pub prints: Option<fingerprint_common::matcher::Prints>,
    /// Whether the calibration's enrolled scans kept their turned templates
    /// ([`ENROLMENT_TURNS_DEGREES`](fingerprint_common::preprocess::ENROLMENT_TURNS_DEGREES))
    /// as a door's gallery does. False in models exported before this was recorded: a door
    /// applying such a threshold leaves its gallery's turned templates out.
    #[serde(default)]
    pub enrolment_turns: bool,
}

/// What a daemon needs to know about a model besides its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub arch: Arch,
    pub num_classes: usize,
    /// Identity label of each output, in order.
    pub labels: Vec<String>,
    pub preprocessing: Preprocessing,
    pub quantization: Quantization,
    pub accuracy: Option<ExportAccuracy>,
    /// Decision threshold on the top-1 probability, if one was calibrated.
    pub threshold: Option<f32>,
    /// Open-set threshold on gallery similarity, calibrated on held-out fingers.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// `sha256:` and the hex digest of the tensor data (see docs/model-format.md).
    pub data_digest: String,
    /// Program and version that wrote the file.
    pub created_by: String,
}

impl Manifest {
    /// A manifest for `labels` (one per output) with nothing measured or calibrated yet;
    /// `write_exported` fills in the format, version and digest.
    pub fn new(
        arch: Arch,
        labels: Vec<String>,
        preprocessing: Preprocessing,
        quantization: Quantization,
        created_by: String,
    ) -> Self {
        Self {
            format: String::new(),
            version: 0,
            arch,
            num_classes: labels.len(),
            labels,
            preprocessing,
            quantization,
            accuracy: None,
            threshold: None,
            calibration: None,
            data_digest: String::new(),
            created_by,
        }
    }
}

/// Why an exported model was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file (truncated or corrupted?): {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{path}: no model manifest: a safetensors file, but not an exported model")]
    NoManifest { path: PathBuf },
    #[error("{path}: a training checkpoint (batch norm not folded, no manifest), not an exported model: make one with `trainer export`")]
    TrainingCheckpoint { path: PathBuf },
    #[error("{path}: unreadable manifest: {reason}")]
    BadManifest { path: PathBuf, reason: String },
    #[error("{path}: model format {found} version {version} is not supported (this build reads {FORMAT_NAME} versions {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})")]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        version: u32,
    },
    #[error("{path}: tensors do not match the manifest's {arch} ({quantization}):\n{mismatch}")]
    TensorMismatch {
        path: PathBuf,
        arch: Arch,
        quantization: Quantization,
        mismatch: Mismatch,
    },
    #[error("{path}: tensor data digest {actual} does not match the manifest's {expected}: the file is corrupted")]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// One tensor as stored in the file.
struct Stored {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn encode(
    weights: &FoldedWeights,
    quantization: Quantization,
) -> candle_core::Result<BTreeMap<String, Stored>> {
    let mut out = BTreeMap::new();
    for (name, t) in weights {
        let shape = t.dims().to_vec();
        let values = t.flatten_all()?.to_vec1::<f32>()?;
        let is_weight = name.ends_with(".weight");
        match quantization {
            Quantization::Int8 if is_weight => {
                let (q, scales) = int8::quantize_rows(&values, shape[0]);
                // Convolutions packed for the CPU kernels; the classifier as it is.
                let (bytes, shape) = match *shape.as_slice() {
                    [cout, cin, k, _] => (
                        int8::pack(&q, cout, cin, k),
                        int8::packed_shape(cout, cin, k),
                    ),
                    _ => (q.iter().map(|&v| v as u8).collect(), shape),
                };
                out.insert(
                    name.clone(),
                    Stored {
                        dtype: Dtype::I8,
                        shape,
                        bytes,
                    },
                );
                out.insert(
                    format!("{name}_scale"),
                    Stored {
                        dtype: Dtype::F32,
                        shape: vec![scales.len()],
                        bytes: f32_bytes(&scales),
                    },
                );
            }
            Quantization::F16 if is_weight => {
                let bytes = values
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect();
                out.insert(
                    name.clone(),
                    Stored {
                        dtype: Dtype::F16,
                        shape,
                        bytes,
                    },
                );
            }
            // f32 weights, and every bias in every format.
            _ => {
                out.insert(
                    name.clone(),
                    Stored {
                        dtype: Dtype::F32,
                        shape,
                        bytes: f32_bytes(&values),
                    },
                );
            }
        }
    }
    Ok(out)
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

/// SHA-256 over every tensor in name order: the name's UTF-8 bytes, a zero byte, the dtype's
/// name (`F32`, `F16`, `I8`), a zero byte, each dimension as u64 little-endian, then the data.
fn digest<'a>(tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    let mut h = Sha256::new();
    for (name, dtype, shape, data) in tensors {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(dtype_name(dtype).as_bytes());
        h.update([0]);
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(data);
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// Writes an exported model (through a temporary file and a rename, so a reader never sees
/// half a file). The manifest's `quantization` and `data_digest` are set here.
pub fn write_exported(
    path: &Path,
    weights: &FoldedWeights,
    mut manifest: Manifest,
) -> Result<Manifest, ExportError> {
    let io = |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let stored = encode(weights, manifest.quantization)?;
    manifest.format = FORMAT_NAME.into();
    manifest.version = FORMAT_VERSION;
    manifest.data_digest = digest(
        stored
            .iter()
            .map(|(n, s)| (n.as_str(), s.dtype, s.shape.as_slice(), s.bytes.as_slice())),
    );
    let json = serde_json::to_string(&manifest).map_err(|e| io(e.into()))?;
    let views = stored
        .iter()
        .map(|(n, s)| {
            Ok((
                n.clone(),
                TensorView::new(s.dtype, s.shape.clone(), &s.bytes)?,
            ))
        })
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| ExportError::Invalid {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let tmp = path.with_extension("safetensors.tmp");
    let invalid = |e: safetensors::SafeTensorError| ExportError::Invalid {
        path: tmp.clone(),
        reason: e.to_string(),
    };
    let metadata = |padding: usize| {
        HashMap::from([
            (MANIFEST_KEY.to_string(), json.clone()),
            (ALIGNMENT_KEY.to_string(), " ".repeat(padding)),
        ])
    };
    let padding = alignment_padding(&views, metadata(0)).map_err(invalid)?;
    safetensors::serialize_to_file(views, Some(metadata(padding)), &tmp).map_err(invalid)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(manifest)
}

/// Spaces under [`ALIGNMENT_KEY`] that put the first one-byte tensor's data on a
/// [`DATA_ALIGNMENT`] boundary of the file (so of its memory map). safetensors stores tensors
/// wider dtypes first, so the packed int8 weights come last, each a whole number of 64-byte
/// quads x channels: the first aligned, all are. 0 where the file has no one-byte tensor, or
/// no padding can align it (the wider tensors end 4 bytes off an 8-byte boundary, an odd
/// number of classes: safetensors pads the header to 8 bytes); the file is then read as
/// before, slower on AMX.
fn alignment_padding(
    views: &[(String, TensorView<'_>)],
    metadata: HashMap<String, String>,
) -> Result<usize, safetensors::SafeTensorError> {
    if !views.iter().any(|(_, v)| v.dtype().bitsize() == 8) {
        return Ok(0);
    }
    // The layout with no padding, as the library lays it out.
    let probe = safetensors::serialize(views.iter().map(|(n, v)| (n, v)), Some(metadata))?;
    let (header_len, layout) = SafeTensors::read_metadata(&probe)?;
    let json_end = probe[8..8 + header_len]
        .iter()
        .rposition(|&b| b == b'}')
        .map_or(header_len, |i| i + 1);
    let Some(first) = layout
        .tensors()
        .values()
        .filter(|t| t.dtype.bitsize() == 8)
        .map(|t| t.data_offsets.0)
        .min()
    else {
        return Ok(0);
    };
    // Each space lengthens the header's JSON by one byte, which the library rounds up to 8.
    Ok((0..DATA_ALIGNMENT)
        .find(|p| (8 + (json_end + p).next_multiple_of(8) + first) % DATA_ALIGNMENT == 0)
        .unwrap_or(0))
}

/// The tensors a file of `arch` with `classes` outputs must hold, with dtypes and shapes.
fn expected_tensors(
    layout: &NetworkLayout,
    arch: Arch,
    classes: usize,
    q: Quantization,
    version: u32,
) -> BTreeMap<String, (Dtype, Vec<usize>)> {
    let weight_dtype = match q {
        Quantization::F32 => Dtype::F32,
        Quantization::F16 => Dtype::F16,
        Quantization::Int8 => Dtype::I8,
    };
    let mut out = BTreeMap::new();
    let mut add = |name: &str, rows: usize, weight_shape: Vec<usize>| {
        out.insert(format!("{name}.weight"), (weight_dtype, weight_shape));
        out.insert(format!("{name}.bias"), (Dtype::F32, vec![rows]));
        if q == Quantization::Int8 {
            out.insert(format!("{name}.weight_scale"), (Dtype::F32, vec![rows]));
        }
    };
    for c in layout.convs() {
        let shape = if q == Quantization::Int8 && version >= 2 {
            int8::packed_shape(c.out_channels, c.in_channels, c.kernel)
        } else {
            vec![c.out_channels, c.in_channels, c.kernel, c.kernel]
        };
        add(&c.name, c.out_channels, shape);
    }
    add("fc", classes, vec![classes, arch.feature_dim()]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibration_from_before_enrolment_turns_reads_as_set_without_them() {
        let old = r#"{"similarity_threshold":0.7,"target_far":0.001,"far":0.0,"frr":0.1,
            "genuine_scores":10,"impostor_scores":20,"prints":"real"}"#;
        let parsed: Calibration = serde_json::from_str(old).expect("an old calibration parses");
        assert!(!parsed.enrolment_turns);
        assert_eq!(parsed.similarity_threshold, 0.7);
        let now = Calibration {
            enrolment_turns: true,
            ..parsed
        };
        let json = serde_json::to_string(&now).expect("json");
        let back: Calibration = serde_json::from_str(&json).expect("round trip");
        assert!(back.enrolment_turns);
    }
}
