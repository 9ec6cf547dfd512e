//! Reading an exported model: the file memory-mapped, every check made before a byte of it is
//! used, the tensors then handed out by name (bytes from the map, or decoded to f32).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use super::int8;
use super::{
    digest, expected_tensors, ExportError, Manifest, Quantization, FORMAT_NAME, FORMAT_VERSION,
    MANIFEST_KEY, OLDEST_READABLE_VERSION,
};
use crate::checkpoint::Mismatch;

/// One tensor of the file: its dtype, shape and where its bytes lie in the map.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    range: Range<usize>,
}

/// An exported model file, mapped and checked: header, manifest, every tensor's name, dtype
/// and shape against the manifest's architecture, and the digest of the tensor data.
pub struct ModelFile {
    pub manifest: Manifest,
    /// Size of the file in bytes.
    pub file_size: u64,
    map: Arc<memmap2::Mmap>,
    tensors: BTreeMap<String, StoredTensor>,
    /// (cout, cin, k) of each convolution weight, by tensor name.
    conv_dims: BTreeMap<String, (usize, usize, usize)>,
}

/// The one unsafe operation of the crate outside the kernel modules.
#[allow(unsafe_code)]
fn map_read_only(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: the map is read-only and private to the reader; a file changed under it can
    // yield wrong values, which the digest check catches before use.
    unsafe { memmap2::Mmap::map(file) }
}

impl ModelFile {
    /// Maps `path` and checks it; nothing is used before every check has passed.
    pub fn open(path: &Path) -> Result<Self, ExportError> {
        let io = |source| ExportError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        let map = Arc::new(map_read_only(&file).map_err(io)?);
        let malformed = |e: safetensors::SafeTensorError| ExportError::Malformed {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let (_, metadata) = SafeTensors::read_metadata(&map).map_err(malformed)?;
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
        let ridge_period_bad = matches!(
            manifest.preprocessing.resize,
            fingerprint_common::ResizePolicy::RidgeScale { period } if !(1.0..=64.0).contains(&period)
        );
        if manifest.preprocessing.size < 32
            || manifest.preprocessing.std.iter().any(|s| *s <= 0.0)
            || ridge_period_bad
        {
            return Err(bad("preprocessing parameters out of range".into()));
        }

        let views = SafeTensors::deserialize(&map).map_err(malformed)?;
        let layout = manifest.arch.layout();
        let expected = expected_tensors(
            &layout,
            manifest.arch,
            manifest.num_classes,
            manifest.quantization,
            manifest.version,
        );
        let mut mismatch = Mismatch::default();
        let views: BTreeMap<String, safetensors::tensor::TensorView> =
            views.tensors().into_iter().collect();
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
        let base = map.as_ptr() as usize;
        let tensors = views
            .iter()
            .map(|(n, v)| {
                let start = v.data().as_ptr() as usize - base;
                let stored = StoredTensor {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    range: start..start + v.data().len(),
                };
                (n.clone(), stored)
            })
            .collect();
        let conv_dims = layout
            .convs()
            .into_iter()
            .map(|c| {
                let dims = (c.out_channels, c.in_channels, c.kernel);
                (format!("{}.weight", c.name), dims)
            })
            .collect();
        drop(views);
        Ok(Self {
            manifest,
            file_size,
            map,
            tensors,
            conv_dims,
        })
    }

    /// Whether convolution weights are int8 in the packed layout of version 2.
    pub fn is_packed_int8(&self) -> bool {
        self.manifest.quantization == Quantization::Int8 && self.manifest.version >= 2
    }

    /// Every tensor, in name order.
    pub fn tensors(&self) -> impl Iterator<Item = (&str, &StoredTensor)> {
        self.tensors.iter().map(|(n, t)| (n.as_str(), t))
    }

    fn get(&self, name: &str) -> candle_core::Result<&StoredTensor> {
        self.tensors
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))
    }

    /// The map and the byte range of a tensor: weights used in place, never copied.
    pub fn mapped(&self, name: &str) -> candle_core::Result<(Arc<memmap2::Mmap>, Range<usize>)> {
        Ok((self.map.clone(), self.get(name)?.range.clone()))
    }

    /// A tensor's values in f32 (int8 dequantised with its channel scales, packed
    /// convolutions unpacked).
    pub fn values(&self, name: &str) -> candle_core::Result<Vec<f32>> {
        let stored = self.get(name)?;
        let scales = match self.tensors.get(&format!("{name}_scale")) {
            Some(s) => decode(s.dtype, &self.map[s.range.clone()], &[], None),
            None => Vec::new(),
        };
        let packed = self
            .conv_dims
            .get(name)
            .copied()
            .filter(|_| self.is_packed_int8());
        Ok(decode(
            stored.dtype,
            &self.map[stored.range.clone()],
            &scales,
            packed,
        ))
    }

    /// A tensor in f32 on the CPU, convolution weights as (cout, cin, k, k).
    pub fn tensor(&self, name: &str) -> candle_core::Result<Tensor> {
        let values = self.values(name)?;
        match self.conv_dims.get(name) {
            Some(&(cout, cin, k)) => Tensor::from_vec(values, (cout, cin, k, k), &Device::Cpu),
            None => Tensor::from_vec(values, self.get(name)?.shape.as_slice(), &Device::Cpu),
        }
    }
}

/// Decodes stored bytes to f32 values (int8 dequantised with its per-row `scales`);
/// `packed`: a version 2 int8 convolution, (cout, cin, k), unpacked to (cout, cin, k, k).
fn decode(
    dtype: Dtype,
    data: &[u8],
    scales: &[f32],
    packed: Option<(usize, usize, usize)>,
) -> Vec<f32> {
    if let (Dtype::I8, Some((cout, cin, k))) = (dtype, packed) {
        return int8::unpack(data, cout, cin, k)
            .into_iter()
            .enumerate()
            .map(|(i, q)| f32::from(q) * scales.get(i / (cin * k * k)).copied().unwrap_or(0.0))
            .collect();
    }
    match dtype {
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::I8 => {
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
