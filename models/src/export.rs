//! The exported model: the contract between the trainer and every daemon in the field.
//! `docs/model-format.md` specifies it; this module writes it and reads it back.
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

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Module};
use fingerprint_common::Preprocessing;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::sync::Arc;

use crate::checkpoint::Mismatch;
use crate::fast::int8::{self, PackedInt8, WeightBytes};
use crate::fast::{ConvWeights, FastResNet};
use crate::pool::max_pool2d;
use crate::resnet::{ConvSpec, NetworkLayout};
use crate::{Arch, ResNet};

/// Metadata key of the manifest.
pub const MANIFEST_KEY: &str = "fingerprint.manifest";
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

/// The inference graph's f32 tensors: `<conv>.weight`, `<conv>.bias` for every convolution
/// (batch norm folded in), `fc.weight`, `fc.bias`.
pub type FoldedWeights = BTreeMap<String, Tensor>;

/// Folds each batch norm (eval mode) into the convolution before it:
/// `w' = w * g / sqrt(var + eps)` per output channel, `b' = beta - mean * g / sqrt(var + eps)`.
pub fn fold_batch_norm(model: &ResNet) -> candle_core::Result<FoldedWeights> {
    let mut out = BTreeMap::new();
    for (spec, conv, bn) in model.conv_bn_pairs() {
        let cpu = |t: &Tensor| t.to_device(&Device::Cpu)?.to_dtype(DType::F32);
        let (gamma, beta) = bn.weight_and_bias().ok_or_else(|| {
            candle_core::Error::Msg("batch norm without affine parameters".into())
        })?;
        let scale = (cpu(gamma)? / (cpu(bn.running_var())? + bn.eps())?.sqrt()?)?;
        let weight = cpu(conv.weight())?.broadcast_mul(&scale.reshape(((), 1, 1, 1))?)?;
        let bias = (cpu(beta)? - (cpu(bn.running_mean())? * &scale)?)?;
        out.insert(format!("{}.weight", spec.name), weight);
        out.insert(format!("{}.bias", spec.name), bias);
    }
    let head = model.head();
    out.insert("fc.weight".into(), head.weight().to_device(&Device::Cpu)?);
    let bias = head
        .bias()
        .ok_or_else(|| candle_core::Error::Msg("head without bias".into()))?;
    out.insert("fc.bias".into(), bias.to_device(&Device::Cpu)?);
    Ok(out)
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
    safetensors::serialize_to_file(
        views,
        Some(HashMap::from([(MANIFEST_KEY.to_string(), json)])),
        &tmp,
    )
    .map_err(|e| ExportError::Invalid {
        path: tmp.clone(),
        reason: e.to_string(),
    })?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(manifest)
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

/// Decodes a stored weight to f32 values (dequantising int8 with its channel scales);
/// `packed`: a version 2 int8 convolution, (cout, cin, k), unpacked to (cout, cin, k, k).
fn decode(
    view: &TensorView,
    scales: Option<&TensorView>,
    packed: Option<(usize, usize, usize)>,
) -> Vec<f32> {
    let data = view.data();
    if let (Dtype::I8, Some((cout, cin, k))) = (view.dtype(), packed) {
        let scales: Vec<f32> = scales.map(|s| decode(s, None, None)).unwrap_or_default();
        return int8::unpack(data, cout, cin, k)
            .into_iter()
            .enumerate()
            .map(|(i, q)| f32::from(q) * scales.get(i / (cin * k * k)).copied().unwrap_or(0.0))
            .collect();
    }
    match view.dtype() {
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::I8 => {
            let scales: Vec<f32> = scales.map(|s| decode(s, None, None)).unwrap_or_default();
            let per_row = data.len() / scales.len().max(1);
            data.iter()
                .enumerate()
                .map(|(i, &b)| {
                    f32::from(b as i8) * scales.get(i / per_row.max(1)).copied().unwrap_or(0.0)
                })
                .collect()
        }
        _ => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// An exported model, checked and ready to run.
pub struct ExportedModel {
    pub manifest: Manifest,
    pub network: Network,
    /// Size of the file in bytes.
    pub file_size: u64,
}

/// Which implementation runs an exported model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Ours on the CPU ([`FastResNet`]), candle on other devices.
    Auto,
    /// Candle's convolutions on any device (int8 and f16 dequantised to f32).
    Candle,
}

/// An exported model's network, on the path that suits its device.
pub enum Network {
    /// Our CPU path: int8 models in integer arithmetic from the mapped file, others in f32.
    Fast(Box<FastResNet>),
    Candle(FoldedResNet),
}

impl Network {
    pub fn num_classes(&self) -> usize {
        match self {
            Network::Fast(n) => n.num_classes(),
            Network::Candle(n) => n.num_classes(),
        }
    }

    /// Pooled features of an NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::Fast(n) => n.features(x),
            Network::Candle(n) => n.features(x),
        }
    }

    /// Logits of an NCHW batch.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Network::Fast(n) => n.forward(x),
            Network::Candle(n) => n.forward(x),
        }
    }

    /// `fast` or `candle`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Network::Fast(_) => "fast",
            Network::Candle(_) => "candle",
        }
    }

    /// The CPU kernels of the fast path (None on candle).
    pub fn kernels(&self) -> Option<crate::fast::Kernels> {
        match self {
            Network::Fast(n) => Some(n.kernels()),
            Network::Candle(_) => None,
        }
    }
}

impl ExportedModel {
    /// Memory-maps and validates an exported model, then builds its network for `device`:
    /// our fast path on the CPU (int8 weights used from the mapped file), candle elsewhere.
    pub fn open(path: &Path, device: &Device) -> Result<Self, ExportError> {
        Self::open_with(path, device, Backend::Auto)
    }

    /// As [`open`](Self::open), on a chosen backend.
    pub fn open_with(path: &Path, device: &Device, backend: Backend) -> Result<Self, ExportError> {
        let io = |source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        // SAFETY: the map is read-only and private to this function; a file changed under it
        // can yield wrong values, which the digest check below catches before use.
        let mmap = Arc::new(unsafe { memmap2::Mmap::map(&file) }.map_err(io)?);
        let malformed = |e: safetensors::SafeTensorError| ExportError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let (_, metadata) = SafeTensors::read_metadata(&mmap).map_err(malformed)?;
        let Some(json) = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(MANIFEST_KEY))
        else {
            let training = metadata
                .tensors()
                .keys()
                .any(|n| n.ends_with("running_mean"));
            return Err(if training {
                ExportError::TrainingCheckpoint {
                    path: path.to_path_buf(),
                }
            } else {
                ExportError::NoManifest {
                    path: path.to_path_buf(),
                }
            });
        };
        let bad = |reason: String| ExportError::BadManifest {
            path: path.to_path_buf(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let format = value["format"].as_str().unwrap_or("").to_string();
        let version = value["version"].as_u64().unwrap_or(0) as u32;
        if format != FORMAT_NAME || !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(ExportError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: format,
                version,
            });
        }
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        if manifest.labels.len() != manifest.num_classes {
            return Err(bad(format!(
                "{} labels for {} classes",
                manifest.labels.len(),
                manifest.num_classes
            )));
        }
        if manifest.preprocessing.size < 32 || manifest.preprocessing.std.iter().any(|s| *s <= 0.0)
        {
            return Err(bad("preprocessing parameters out of range".into()));
        }

        let tensors = SafeTensors::deserialize(&mmap).map_err(malformed)?;
        let layout = manifest.arch.layout();
        let expected = expected_tensors(
            &layout,
            manifest.arch,
            manifest.num_classes,
            manifest.quantization,
            manifest.version,
        );
        let mut mismatch = Mismatch::default();
        let views: BTreeMap<String, TensorView> = tensors.tensors().into_iter().collect();
        for (name, (dtype, shape)) in &expected {
            match views.get(name) {
                None => mismatch.missing.push(name.clone()),
                Some(v) if v.dtype() != *dtype || v.shape() != shape.as_slice() => {
                    mismatch.wrong_shape.push((
                        format!("{name} ({:?} expected, {:?} found)", dtype, v.dtype()),
                        shape.clone(),
                        v.shape().to_vec(),
                    ))
                }
                Some(_) => {}
            }
        }
        mismatch.unexpected = views
            .keys()
            .filter(|n| !expected.contains_key(*n))
            .cloned()
            .collect();
        if !mismatch.is_empty() {
            return Err(ExportError::TensorMismatch {
                path: path.to_path_buf(),
                arch: manifest.arch,
                quantization: manifest.quantization,
                mismatch,
            });
        }
        let actual = digest(
            views
                .iter()
                .map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())),
        );
        if actual != manifest.data_digest {
            return Err(ExportError::DigestMismatch {
                path: path.to_path_buf(),
                expected: manifest.data_digest.clone(),
                actual,
            });
        }

        let packed = manifest.quantization == Quantization::Int8 && manifest.version >= 2;
        // (cout, cin, k) of each convolution weight, by tensor name.
        let conv_dims: BTreeMap<String, (usize, usize, usize)> = layout
            .convs()
            .into_iter()
            .map(|c| {
                let dims = (c.out_channels, c.in_channels, c.kernel);
                (format!("{}.weight", c.name), dims)
            })
            .collect();
        let decoded = |name: &str, view: &TensorView| -> candle_core::Result<Tensor> {
            let scales = views.get(&format!("{name}_scale"));
            let dims = conv_dims.get(name).copied();
            let values = decode(view, scales, dims.filter(|_| packed));
            match dims {
                Some((cout, cin, k)) => Tensor::from_vec(values, (cout, cin, k, k), &Device::Cpu),
                None => Tensor::from_vec(values, view.shape(), &Device::Cpu),
            }
        };
        let network = if device.is_cpu() && backend == Backend::Auto && packed {
            // int8 weights straight from the mapped file; biases, scales and the classifier
            // (small) decoded.
            let base = mmap.as_ptr() as usize;
            let ranges: BTreeMap<String, std::ops::Range<usize>> = views
                .iter()
                .map(|(n, v)| {
                    let start = v.data().as_ptr() as usize - base;
                    (n.clone(), start..start + v.data().len())
                })
                .collect();
            let map = mmap.clone();
            let f32s = |name: &str| -> candle_core::Result<Vec<f32>> {
                let view = views
                    .get(name)
                    .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?;
                Ok(decode(view, None, None))
            };
            let fast = FastResNet::from_parts(
                manifest.arch,
                |spec| {
                    let name = format!("{}.weight", spec.name);
                    let range = ranges
                        .get(&name)
                        .cloned()
                        .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?;
                    let bytes = WeightBytes::Mapped {
                        map: map.clone(),
                        range,
                    };
                    let weights = PackedInt8::new(
                        bytes,
                        f32s(&format!("{name}_scale"))?,
                        spec.out_channels,
                        spec.in_channels,
                        spec.kernel,
                    );
                    Ok((
                        ConvWeights::Int8(weights),
                        f32s(&format!("{}.bias", spec.name))?,
                    ))
                },
                decoded(
                    "fc.weight",
                    views
                        .get("fc.weight")
                        .ok_or_else(|| candle_core::Error::Msg("missing fc.weight".into()))?,
                )?,
                f32s("fc.bias")?,
            )?;
            Network::Fast(Box::new(fast))
        } else {
            let mut weights = FoldedWeights::new();
            for (name, view) in views.iter().filter(|(n, _)| !n.ends_with("_scale")) {
                weights.insert(name.clone(), decoded(name, view)?);
            }
            if device.is_cpu() && backend == Backend::Auto {
                Network::Fast(Box::new(FastResNet::new(manifest.arch, &weights)?))
            } else {
                Network::Candle(FoldedResNet::new(manifest.arch, &weights, device)?)
            }
        };
        Ok(Self {
            manifest,
            network,
            file_size,
        })
    }
}

/// A ResNet's inference graph: convolutions with folded batch norm (bias), ReLU, residual
/// additions, pooling, the classifier.
pub struct FoldedResNet {
    stem: Conv2d,
    blocks: Vec<(Vec<Conv2d>, Option<Conv2d>)>,
    fc: Linear,
}

impl FoldedResNet {
    pub fn new(arch: Arch, weights: &FoldedWeights, device: &Device) -> candle_core::Result<Self> {
        let get = |name: String| -> candle_core::Result<Tensor> {
            weights
                .get(&name)
                .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?
                .to_device(device)
        };
        let conv = |spec: &ConvSpec| -> candle_core::Result<Conv2d> {
            let cfg = Conv2dConfig {
                padding: spec.padding(),
                stride: spec.stride,
                ..Default::default()
            };
            Ok(Conv2d::new(
                get(format!("{}.weight", spec.name))?,
                Some(get(format!("{}.bias", spec.name))?),
                cfg,
            ))
        };
        let layout = arch.layout();
        let blocks = layout
            .stages
            .iter()
            .flatten()
            .map(|b| {
                Ok((
                    b.path
                        .iter()
                        .map(conv)
                        .collect::<candle_core::Result<Vec<_>>>()?,
                    b.downsample.as_ref().map(conv).transpose()?,
                ))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            stem: conv(&layout.stem)?,
            blocks,
            fc: Linear::new(get("fc.weight".into())?, Some(get("fc.bias".into())?)),
        })
    }

    /// Outputs of the classifier.
    pub fn num_classes(&self) -> usize {
        self.fc.weight().dims()[0]
    }

    /// Pooled features of an NCHW batch.
    pub fn features(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = max_pool2d(&self.stem.forward(x)?.relu()?, 3, 2, 1)?;
        for (path, downsample) in &self.blocks {
            let mut y = x.clone();
            for (i, c) in path.iter().enumerate() {
                y = c.forward(&y)?;
                if i + 1 < path.len() {
                    y = y.relu()?;
                }
            }
            let shortcut = match downsample {
                Some(d) => d.forward(&x)?,
                None => x,
            };
            x = (y + shortcut)?.relu()?;
        }
        x.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// Logits of an NCHW batch.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc.forward(&self.features(x)?)
    }
}
