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

/// One convolution of the network, named as torchvision names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    /// Prefix of the convolution's parameters (`layer1.0.conv2`, `layer2.0.downsample.0`).
    pub name: String,
    /// Prefix of the batch norm that follows it (`layer1.0.bn2`, `layer2.0.downsample.1`).
    pub bn: String,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl ConvSpec {
    fn new(name: String, bn: String, io: (usize, usize), kernel: usize, stride: usize) -> Self {
        Self {
            name,
            bn,
            in_channels: io.0,
            out_channels: io.1,
            kernel,
            stride,
        }
    }

    /// torchvision pads every convolution by half its kernel.
    pub fn padding(&self) -> usize {
        self.kernel / 2
    }
}

/// A residual block: its path (ReLU between convolutions) and its projection shortcut.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockSpec {
    pub path: Vec<ConvSpec>,
    pub downsample: Option<ConvSpec>,
}

/// The whole convolutional layout of an architecture, shared by the trainable network and the
/// exported (batch-norm folded) one so the two cannot disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkLayout {
    pub stem: ConvSpec,
    pub stages: Vec<Vec<BlockSpec>>,
}

impl Arch {
    pub fn layout(self) -> NetworkLayout {
        let stem = ConvSpec::new("conv1".into(), "bn1".into(), (3, 64), 7, 2);
        let mut in_c = 64;
        let mut stages = Vec::with_capacity(4);
        for (stage, &blocks) in self.stage_blocks().iter().enumerate() {
            let width = 64 << stage;
            let out_c = width * self.expansion();
            let mut stage_blocks = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 && stage > 0 { 2 } else { 1 };
                let prefix = format!("layer{}.{b}", stage + 1);
                // (in, out, kernel, stride) of each convolution on the residual path.
                let convs = if self.bottleneck() {
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
                    .map(|(i, (ci, co, k, st))| {
                        let n = i + 1;
                        ConvSpec::new(
                            format!("{prefix}.conv{n}"),
                            format!("{prefix}.bn{n}"),
                            (ci, co),
                            k,
                            st,
                        )
                    })
                    .collect();
                let downsample = (stride != 1 || in_c != out_c).then(|| {
                    ConvSpec::new(
                        format!("{prefix}.downsample.0"),
                        format!("{prefix}.downsample.1"),
                        (in_c, out_c),
                        1,
                        stride,
                    )
                });
                stage_blocks.push(BlockSpec { path, downsample });
                in_c = out_c;
            }
            stages.push(stage_blocks);
        }
        NetworkLayout { stem, stages }
    }
}

impl NetworkLayout {
    /// Every convolution, in forward order.
    pub fn convs(&self) -> Vec<&ConvSpec> {
        let mut all = vec![&self.stem];
        for block in self.stages.iter().flatten() {
            all.extend(block.path.iter());
            all.extend(block.downsample.iter());
        }
        all
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
    /// Parameters come from `vb` under the spec's two torchvision prefixes.
    fn new(spec: &ConvSpec, vb: &VarBuilder) -> Result<Self> {
        let (in_c, out_c, kernel) = (spec.in_channels, spec.out_channels, spec.kernel);
        // torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu").
        let fan_out = (out_c * kernel * kernel) as f64;
        let weight = vb.pp(&spec.name).get_with_hints(
            (out_c, in_c, kernel, kernel),
            "weight",
            Init::Randn {
                mean: 0.0,
                stdev: (2.0 / fan_out).sqrt(),
            },
        )?;
        let cfg = Conv2dConfig {
            padding: spec.padding(),
            stride: spec.stride,
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
            bn: candle_nn::batch_norm(out_c, bn_cfg, vb.pp(&spec.bn))?,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let cfg = self.conv.config();
        let y = crate::conv::conv2d(x, self.conv.weight(), cfg.stride, cfg.padding)?;
        if train {
            crate::batch_norm::forward_train(&self.bn, &y)
        } else {
            self.bn.forward_t(&y, false)
        }
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
    fn new(spec: &BlockSpec, vb: &VarBuilder) -> Result<Self> {
        Ok(Self {
            path: spec
                .path
                .iter()
                .map(|c| ConvBn::new(c, vb))
                .collect::<Result<_>>()?,
            downsample: spec
                .downsample
                .as_ref()
                .map(|c| ConvBn::new(c, vb))
                .transpose()?,
        })
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
        let layout = arch.layout();
        let stem = ConvBn::new(&layout.stem, &vb)?;
        let stages = layout
            .stages
            .iter()
            .map(|stage| stage.iter().map(|b| Block::new(b, &vb)).collect())
            .collect::<Result<Vec<Vec<Block>>>>()?;
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

    /// Every convolution with its batch norm and its spec, in forward order.
    pub fn conv_bn_pairs(&self) -> Vec<(ConvSpec, &Conv2d, &BatchNorm)> {
        let units = std::iter::once(&self.stem).chain(
            self.stages
                .iter()
                .flatten()
                .flat_map(|b| b.path.iter().chain(b.downsample.iter())),
        );
        let layout = self.arch.layout();
        layout
            .convs()
            .into_iter()
            .cloned()
            .zip(units)
            .map(|(spec, unit)| (spec, &unit.conv, &unit.bn))
            .collect()
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
            let u = crate::seeded::seeded_uniform(seed, name, 2 * n);
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
            crate::seeded::seeded_uniform(seed, name, n)
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
