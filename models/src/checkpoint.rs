//! Import of pretrained weights: safetensors (torchvision or timm names) and PyTorch `.pth`
//! files (the zip format `torch.save` writes since PyTorch 1.6).
//!
//! torchvision and timm name ResNet parameters alike (`layer1.0.conv1.weight`, `fc.bias`), so
//! one name table serves both. A `module.` prefix (left by `DataParallel`) is removed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::{Arch, ModelError, Result};

/// Names the classifier head uses; it is re-initialised when the class count differs.
const HEAD: [&str; 2] = ["fc.weight", "fc.bias"];

pub use crate::error::Mismatch;

/// What [`load_checkpoint`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointReport {
    /// Tensors copied into the network.
    pub loaded: usize,
    /// The file's classifier had another class count (or none) and was not used: the head
    /// keeps its fresh initialisation.
    pub head_reinitialised: bool,
    /// The class count of the file's head, when it had one.
    pub file_classes: Option<usize>,
}

/// Reads every tensor of a checkpoint file (safetensors or PyTorch zip), by content rather
/// than by extension. Names are normalised (`module.` prefix removed); `num_batches_tracked`
/// entries are dropped.
pub fn read_checkpoint(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let unreadable = |reason: String| ModelError::UnreadableCheckpoint {
        path: path.to_path_buf(),
        reason,
    };
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    // Third-party parsers see untrusted bytes here: a panic in them becomes an error.
    let read = std::panic::catch_unwind(|| -> candle_core::Result<Vec<(String, Tensor)>> {
        if magic == *b"PK\x03\x04" {
            read_pth(path)
        } else {
            Ok(candle_core::safetensors::load(path, &Device::Cpu)?
                .into_iter()
                .collect())
        }
    })
    .map_err(|_| unreadable("the parser failed on malformed data".into()))?
    .map_err(|e| unreadable(e.to_string()))?;
    if read.is_empty() {
        return Err(unreadable("it holds no tensors".into()));
    }
    Ok(read
        .into_iter()
        .filter(|(name, _)| !name.ends_with("num_batches_tracked"))
        .map(|(name, t)| {
            let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
            (name, t)
        })
        .collect())
}

/// A `.pth` state dict, bare or wrapped as `{"state_dict": ...}` or `{"model": ...}`.
fn read_pth(path: &Path) -> candle_core::Result<Vec<(String, Tensor)>> {
    for key in [None, Some("state_dict"), Some("model")] {
        let tensors = match candle_core::pickle::read_all_with_key(path, key) {
            Ok(t) => t,
            Err(e) if key.is_none() => return Err(e),
            Err(_) => continue,
        };
        if !tensors.is_empty() {
            return Ok(tensors);
        }
    }
    Ok(Vec::new())
}

/// Copies checkpoint tensors into the variables of a network built on `varmap`.
///
/// Every backbone parameter must be present with the right shape, and nothing unknown may be
/// in the file; otherwise nothing is changed and the error lists every difference. The head
/// (`fc.*`) is used only when its class count matches the network's.
pub fn load_into_varmap(
    varmap: &VarMap,
    tensors: &BTreeMap<String, Tensor>,
    arch: Arch,
    path: &Path,
) -> Result<CheckpointReport> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let file_classes = tensors
        .get("fc.weight")
        .and_then(|t| t.dims().first().copied());
    let head_fits = HEAD
        .iter()
        .all(|name| match (vars.get(*name), tensors.get(*name)) {
            (Some(var), Some(t)) => var.dims() == t.dims(),
            _ => false,
        });

    let mut mismatch = Mismatch::default();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let is_head = HEAD.contains(&name.as_str());
        match tensors.get(name) {
            _ if is_head && !head_fits => {}
            None => mismatch.missing.push(name.clone()),
            Some(t) if t.dims() != vars[name].dims() => mismatch.wrong_shape.push((
                name.clone(),
                vars[name].dims().to_vec(),
                t.dims().to_vec(),
            )),
            Some(_) => {}
        }
    }
    mismatch.unexpected = tensors
        .keys()
        .filter(|name| !vars.contains_key(*name))
        .cloned()
        .collect();
    if !mismatch.is_empty() {
        return Err(ModelError::CheckpointMismatch {
            path: path.to_path_buf(),
            arch: arch.to_string(),
            mismatch,
        });
    }

    let mut loaded = 0;
    for (name, var) in vars.iter() {
        if HEAD.contains(&name.as_str()) && !head_fits {
            continue;
        }
        let source = &tensors[name];
        let value = source.to_dtype(var.dtype())?.to_device(var.device())?;
        var.set(&value)?;
        loaded += 1;
    }
    Ok(CheckpointReport {
        loaded,
        head_reinitialised: !head_fits,
        file_classes,
    })
}

/// Reads a checkpoint file and loads it into the network built on `varmap`.
pub fn load_checkpoint(path: &Path, varmap: &VarMap, arch: Arch) -> Result<CheckpointReport> {
    let tensors = read_checkpoint(path)?;
    load_into_varmap(varmap, &tensors, arch, path)
}

/// Writes the variables of a var map as safetensors with their torchvision names
/// (a checkpoint other tools can read).
pub fn save_varmap(varmap: &VarMap, path: &Path) -> Result<()> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().to_dtype(DType::F32)?)))
        .collect::<candle_core::Result<_>>()?;
    candle_core::safetensors::save(&tensors, path).map_err(|e| match e {
        candle_core::Error::Io(source) => ModelError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => other.into(),
    })
}
