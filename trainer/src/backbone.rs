//! The backbone shipped with the trainer: a ResNet-18 pretrained on synthetic prints only
//! (`scripts/pretrain-backbone.sh`; provenance in `trainer/backbones/README.md`), the default
//! initialisation of runs it suits when no `--pretrained` checkpoint is given. Embedded in the
//! binary, so an installed trainer has it wherever it runs; the edge daemon does not.

use std::path::Path;

use anyhow::{Context, Result};
use fingerprint_common::{Preprocessing, ResizePolicy};
use fingerprint_models::Arch;

/// The weights: torchvision names, f16, no head (each run's head starts fresh).
pub const SHIPPED_BACKBONE: &[u8] =
    include_bytes!("../backbones/resnet18-synthetic.f16.safetensors");

/// The name a run folder keeps its copy under (its `run.json` points at it).
pub const SHIPPED_BACKBONE_FILE: &str = "backbone.safetensors";

/// The architecture the shipped backbone is.
pub const SHIPPED_BACKBONE_ARCH: Arch = Arch::ResNet18;

/// Whether the shipped backbone suits a run: the same architecture, and ridge-scale input (it
/// learned ridges about 4 input pixels apart; stretched or windowed scans show them at other
/// scales, where its features were measured to help nothing).
pub fn shipped_backbone_suits(arch: Arch, preprocessing: &Preprocessing) -> bool {
    arch == SHIPPED_BACKBONE_ARCH && matches!(preprocessing.resize, ResizePolicy::RidgeScale { .. })
}

/// Writes the shipped backbone to `path` (a run folder's copy, for `--pretrained` to load and
/// an auditor to find).
pub fn write_shipped_backbone(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, SHIPPED_BACKBONE).with_context(|| format!("writing {}", path.display()))
}
