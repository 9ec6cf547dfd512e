//! ResNet-18/34/50 as torchvision lays them out, trainable, with torchvision's parameter names
//! (`conv1.weight`, `bn1.running_var`, `layer3.5.conv2.weight`, `layer1.0.downsample.1.bias`,
//! `fc.bias`, ...), so that torchvision and timm checkpoints load unchanged.
//!
//! Bottleneck blocks carry their stride on the 3x3 convolution (torchvision's "ResNet v1.5").

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Result, Tensor, Var, D};
use candle_nn::{
    BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Init, Linear, ModuleT, VarBuilder, VarMap,
};
use serde::{Deserialize, Serialize};

use crate::pool::max_pool2d;

/// The supported ResNet depths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    ResNet18,
    ResNet34,
    ResNet50,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::ResNet18, Arch::ResNet34, Arch::ResNet50];

    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet18 => "resnet18",
            Arch::ResNet34 => "resnet34",
            Arch::ResNet50 => "resnet50",
        }
    }

    /// Blocks in each of the four stages.
    fn stage_blocks(self) -> [usize; 4] {
        match self {
            Arch::ResNet18 => [2, 2, 2, 2],
            Arch::ResNet34 | Arch::ResNet50 => [3, 4, 6, 3],
        }
    }

    fn bottleneck(self) -> bool {
        matches!(self, Arch::ResNet50)
    }

    /// Channels a block outputs per unit of stage width (torchvision's `expansion`).
    fn expansion(self) -> usize {
        if self.bottleneck() {
            4
        } else {
            1
        }
    }

    /// Length of the pooled feature vector that feeds the classifier (the embedding).
    pub fn feature_dim(self) -> usize {
        512 * self.expansion()
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = crate::ModelError;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| crate::ModelError::UnknownArch(s.to_string()))
    }
}

/// Whether a parameter name is a batch-norm running statistic: state that is saved and loaded
/// but not trained by the optimiser.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// The trainable variables of a var map (running statistics left out), sorted by name.
pub fn trainable_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut vars: Vec<(String, Var)> = data
        .iter()
        .filter(|(name, _)| !is_buffer(name))
        .map(|(name, var)| (name.clone(), var.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// A convolution without bias followed by batch norm: the unit every ResNet is built of.
#[derive(Debug, Clone)]
struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    /// `conv_vb` and `bn_vb` are separate because torchvision names them apart
    /// (`conv1`/`bn1`, or `downsample.0`/`downsample.1`).
    fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        let fan_out = (out_c * kernel * kernel) as f64;
        let weight = conv_vb.get_with_hints(
            (out_c, in_c, kernel, kernel),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_out).sqrt(),
            },
        )?;
        let cfg = Conv2dConfig {
            padding: kernel / 2,
            stride,
            ..Default::default()
        };
        let bn_cfg = BatchNormConfig {
            eps: 1e-5,
            remove_mean: true,
            affine: true,
            momentum: 0.1,
        };
        Ok(Self {
            conv: Conv2d::new(weight, None, cfg),
            bn: candle_nn::batch_norm(out_c, bn_cfg, bn_vb)?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&x.apply(&self.conv)?, train)
    }

    /// The convolution and its batch norm, for export (batch-norm folding).
    fn parts(&self) -> (&Conv2d, &BatchNorm) {
        (&self.conv, &self.bn)
    }
}

/// A residual block: a basic block (two 3x3 convolutions) or a bottleneck (1x1, 3x3, 1x1).
#[derive(Debug, Clone)]
struct Block {
    /// `conv1`/`bn1`, `conv2`/`bn2`[, `conv3`/`bn3`], applied in order with ReLU between.
    path: Vec<ConvBn>,
    /// `downsample.0`/`downsample.1`: projects the shortcut when shape changes.
    downsample: Option<ConvBn>,
}

impl Block {
    fn new(arch: Arch, in_c: usize, width: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let out_c = width * arch.expansion();
        // (in, out, kernel, stride) of each convolution on the residual path.
        let convs: Vec<(usize, usize, usize, usize)> = if arch.bottleneck() {
            vec![
                (in_c, width, 1, 1),
                (width, width, 3, stride),
                (width, out_c, 1, 1),
            ]
        } else {
            vec![(in_c, width, 3, stride), (width, out_c, 3, 1)]
        };
        let path = convs
            .into_iter()
            .enumerate()
            .map(|(i, (ci, co, k, s))| {
                let n = i + 1;
                ConvBn::new(
                    ci,
                    co,
                    k,
                    s,
                    vb.pp(format!("conv{n}")),
                    vb.pp(format!("bn{n}")),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let downsample = if stride != 1 || in_c != out_c {
            let ds = vb.pp("downsample");
            Some(ConvBn::new(in_c, out_c, 1, stride, ds.pp("0"), ds.pp("1"))?)
        } else {
            None
        };
        Ok(Self { path, downsample })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = x.clone();
        let last = self.path.len() - 1;
        for (i, unit) in self.path.iter().enumerate() {
            y = unit.forward_t(&y, train)?;
            if i != last {
                y = y.relu()?;
            }
        }
        let shortcut = match &self.downsample {
            Some(ds) => ds.forward_t(x, train)?,
            None => x.clone(),
        };
        (y + shortcut)?.relu()
    }
}

/// A ResNet classifier. The classifier (`fc`) has one output per class (per enrolled finger);
/// the pooled feature vector before it is available from [`ResNet::features_t`].
#[derive(Debug, Clone)]
pub struct ResNet {
    arch: Arch,
    num_classes: usize,
    stem: ConvBn,
    stages: Vec<Vec<Block>>,
    fc: Linear,
}

impl ResNet {
    /// Builds the network, taking (or creating, with torchvision's initialisation) its
    /// parameters from `vb` under torchvision's names.
    pub fn new(arch: Arch, num_classes: usize, vb: VarBuilder) -> Result<Self> {
        if num_classes == 0 {
            candle_core::bail!("a classifier needs at least one class");
        }
        let stem = ConvBn::new(3, 64, 7, 2, vb.pp("conv1"), vb.pp("bn1"))?;
        let mut in_c = 64;
        let mut stages = Vec::with_capacity(4);
        for (stage, &blocks) in arch.stage_blocks().iter().enumerate() {
            let width = 64 << stage;
            let stage_vb = vb.pp(format!("layer{}", stage + 1));
            let mut stage_blocks = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                stage_blocks.push(Block::new(arch, in_c, width, stride, stage_vb.pp(b))?);
                in_c = width * arch.expansion();
            }
            stages.push(stage_blocks);
        }
        let fc = Self::new_head(arch, num_classes, vb.pp("fc"))?;
        Ok(Self {
            arch,
            num_classes,
            stem,
            stages,
            fc,
        })
    }

    /// The classifier layer, initialised as torch's `nn.Linear` is.
    fn new_head(arch: Arch, num_classes: usize, vb: VarBuilder) -> Result<Linear> {
        let in_dim = arch.feature_dim();
        let bound = 1.0 / (in_dim as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let weight = vb.get_with_hints((num_classes, in_dim), "weight", init)?;
        let bias = vb.get_with_hints(num_classes, "bias", init)?;
        Ok(Linear::new(weight, Some(bias)))
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The classifier layer (`fc`).
    pub fn head(&self) -> &Linear {
        &self.fc
    }

    /// The pooled feature vector (2048-d for ResNet-50, 512-d otherwise) of an NCHW batch.
    /// In train mode batch norm uses batch statistics and updates its running statistics.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.stem.forward_t(x, train)?.relu()?;
        let mut x = max_pool2d(&x, 3, 2, 1)?;
        for block in self.stages.iter().flatten() {
            x = block.forward_t(&x, train)?;
        }
        // Global average pooling.
        x.mean(D::Minus1)?.mean(D::Minus1)
    }

    /// Logits and pooled features in one pass.
    pub fn forward_with_features(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let features = self.features_t(x, train)?;
        let logits = features.apply(&self.fc)?;
        Ok((logits, features))
    }

    /// Every convolution with its batch norm, named by the convolution's torchvision prefix
    /// (`conv1`, `layer1.0.conv2`, `layer2.0.downsample.0`, ...), in forward order.
    pub fn conv_bn_pairs(&self) -> Vec<(String, &Conv2d, &BatchNorm)> {
        let mut pairs = Vec::new();
        let (conv, bn) = self.stem.parts();
        pairs.push(("conv1".to_string(), conv, bn));
        for (s, stage) in self.stages.iter().enumerate() {
            for (b, block) in stage.iter().enumerate() {
                let prefix = format!("layer{}.{b}", s + 1);
                for (i, unit) in block.path.iter().enumerate() {
                    let (conv, bn) = unit.parts();
                    pairs.push((format!("{prefix}.conv{}", i + 1), conv, bn));
                }
                if let Some(ds) = &block.downsample {
                    let (conv, bn) = ds.parts();
                    pairs.push((format!("{prefix}.downsample.0"), conv, bn));
                }
            }
        }
        pairs
    }
}

impl ModuleT for ResNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.features_t(x, train)?.apply(&self.fc)
    }
}

/// Re-initialises every variable of a ResNet var map as torchvision does (Kaiming-normal
/// convolutions, fan-out; unit batch norm; `nn.Linear`'s uniform head), from `seed` alone.
/// candle's CPU random generator cannot be seeded, so repeatable runs start here.
pub fn initialize_seeded(varmap: &VarMap, seed: u64) -> Result<()> {
    let vars = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    for (name, var) in vars.iter() {
        let dims = var.dims();
        let n: usize = dims.iter().product();
        let values: Vec<f32> = if name.ends_with("running_var")
            || (dims.len() == 1 && name.ends_with("weight") && !name.starts_with("fc."))
        {
            vec![1.0; n]
        } else if name.ends_with("running_mean") || (dims.len() == 1 && !name.starts_with("fc.")) {
            vec![0.0; n]
        } else if dims.len() == 4 {
            // Normal draws by Box-Muller from pairs of the uniform stream.
            let std = (2.0 / (dims[0] * dims[2] * dims[3]) as f64).sqrt();
            let u = crate::formula::seeded_uniform(seed, name, 2 * n);
            u.chunks_exact(2)
                .map(|p| {
                    let u1 = (p[0] + 1.0) / 2.0 + f64::EPSILON;
                    let u2 = (p[1] + 1.0) / 2.0;
                    (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect()
        } else {
            // The head: weight (classes, in) and bias, uniform in +-1/sqrt(in).
            let fan_in = vars
                .get("fc.weight")
                .and_then(|w| w.dims().get(1).copied())
                .unwrap_or(1) as f64;
            let bound = 1.0 / fan_in.sqrt();
            crate::formula::seeded_uniform(seed, name, n)
                .into_iter()
                .map(|v| (v * bound) as f32)
                .collect()
        };
        let t = Tensor::from_vec(values, dims, &candle_core::Device::Cpu)?;
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// The parameter names and shapes of an architecture with `num_classes` outputs, sorted by
/// name, as torchvision's `state_dict()` has them (without `num_batches_tracked`).
pub fn parameter_shapes(arch: Arch, num_classes: usize) -> Result<Vec<(String, Vec<usize>)>> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &candle_core::Device::Cpu);
    ResNet::new(arch, num_classes, vb)?;
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut shapes: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec()))
        .collect();
    shapes.sort();
    Ok(shapes)
}

/// The 1000 ImageNet class names in output order (from torchvision's model metadata), for
/// checkpoints with an ImageNet head.
pub fn imagenet_classes() -> Vec<String> {
    include_str!("imagenet_classes.txt")
        .lines()
        .map(str::to_string)
        .collect()
}
