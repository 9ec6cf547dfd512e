//! ONNX export of an exported model's network (batch norm folded, f32), so other runtimes
//! (ONNX Runtime, OpenVINO, TensorRT on a Jetson) run exactly our weights.
//!
//! The graph: `input` (N x 3 x S x S, N dynamic) -> Conv/Relu/MaxPool/Add as torchvision's
//! ResNet -> GlobalAveragePool -> Flatten (`features`, N x F) -> Gemm (`logits`, N x classes).
//! Opset 17. The messages below are the subset of `onnx.proto` (ONNX 1.x) the file uses, with
//! the field numbers of that file; prost encodes them.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;

use crate::fold::FoldedWeights;
use crate::resnet::ConvSpec;
use crate::Arch;

/// ONNX IR version 8 (ONNX 1.10+), read by every current runtime.
const IR_VERSION: i64 = 8;
const OPSET: i64 = 17;
const FLOAT: i32 = 1;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    /// AttributeType: INT = 2, INTS = 7.
    #[prost(int32, tag = "20")]
    pub r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian values.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

fn ints(name: &str, values: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: values.iter().map(|&v| v as i64).collect(),
        r#type: 7,
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: value,
        r#type: 2,
        ..Default::default()
    }
}

fn node(
    op: &str,
    name: &str,
    inputs: &[&str],
    output: &str,
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        name: name.into(),
        op_type: op.into(),
        attribute,
    }
}

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim: dims.to_vec() }),
            }),
        }),
    }
}

fn fixed(v: usize) -> Dimension {
    Dimension {
        dim_value: Some(v as i64),
        dim_param: None,
    }
}

fn batch() -> Dimension {
    Dimension {
        dim_value: None,
        dim_param: Some("batch".into()),
    }
}

/// The ONNX model of `arch` with `weights`, for `size` x `size` inputs. `metadata` goes into
/// the model's metadata properties (labels, preprocessing).
pub fn onnx_model(
    arch: Arch,
    weights: &FoldedWeights,
    size: usize,
    metadata: &BTreeMap<String, String>,
) -> candle_core::Result<ModelProto> {
    let mut initializer = Vec::new();
    let mut add_tensor = |name: &str| -> candle_core::Result<String> {
        let t = weights
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("missing {name}")))?
            .to_dtype(candle_core::DType::F32)?;
        let raw_data = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        initializer.push(TensorProto {
            dims: t.dims().iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data,
        });
        Ok(name.to_string())
    };
    let mut nodes = Vec::new();
    let mut conv =
        |spec: &ConvSpec, input: &str, nodes: &mut Vec<NodeProto>| -> candle_core::Result<String> {
            let w = add_tensor(&format!("{}.weight", spec.name))?;
            let b = add_tensor(&format!("{}.bias", spec.name))?;
            let out = format!("{}.out", spec.name);
            let p = spec.padding();
            nodes.push(node(
                "Conv",
                &spec.name,
                &[input, &w, &b],
                &out,
                vec![
                    ints("kernel_shape", &[spec.kernel, spec.kernel]),
                    ints("pads", &[p, p, p, p]),
                    ints("strides", &[spec.stride, spec.stride]),
                ],
            ));
            Ok(out)
        };
    let relu = |input: &str, nodes: &mut Vec<NodeProto>| -> String {
        let out = format!("{input}.relu");
        nodes.push(node("Relu", &out, &[input], &out, vec![]));
        out
    };

    let layout = arch.layout();
    let stem = conv(&layout.stem, "input", &mut nodes)?;
    let stem = relu(&stem, &mut nodes);
    nodes.push(node(
        "MaxPool",
        "maxpool",
        &[&stem],
        "maxpool.out",
        vec![
            ints("kernel_shape", &[3, 3]),
            ints("pads", &[1, 1, 1, 1]),
            ints("strides", &[2, 2]),
        ],
    ));
    let mut x = "maxpool.out".to_string();
    for block in layout.stages.iter().flatten() {
        let mut y = x.clone();
        for (i, spec) in block.path.iter().enumerate() {
            y = conv(spec, &y, &mut nodes)?;
            if i + 1 < block.path.len() {
                y = relu(&y, &mut nodes);
            }
        }
        let shortcut = match &block.downsample {
            Some(spec) => conv(spec, &x, &mut nodes)?,
            None => x.clone(),
        };
        let prefix = block.path[0]
            .name
            .rsplit_once('.')
            .map_or("", |(p, _)| p)
            .to_string();
        let sum = format!("{prefix}.add");
        nodes.push(node("Add", &sum, &[&y, &shortcut], &sum, vec![]));
        x = relu(&sum, &mut nodes);
    }
    nodes.push(node(
        "GlobalAveragePool",
        "avgpool",
        &[&x],
        "avgpool.out",
        vec![],
    ));
    nodes.push(node(
        "Flatten",
        "flatten",
        &["avgpool.out"],
        "features",
        vec![int("axis", 1)],
    ));
    let fc_w = add_tensor("fc.weight")?;
    let fc_b = add_tensor("fc.bias")?;
    nodes.push(node(
        "Gemm",
        "fc",
        &["features", &fc_w, &fc_b],
        "logits",
        vec![int("transB", 1)],
    ));
    let classes = weights
        .get("fc.weight")
        .map(|t| t.dims()[0])
        .ok_or_else(|| candle_core::Error::Msg("missing fc.weight".into()))?;

    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "fingerprint-trainer".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        doc_string: format!("{arch}, batch norm folded, {size}x{size} inputs"),
        graph: Some(GraphProto {
            node: nodes,
            name: arch.to_string(),
            initializer,
            input: vec![value_info(
                "input",
                &[batch(), fixed(3), fixed(size), fixed(size)],
            )],
            output: vec![
                value_info("logits", &[batch(), fixed(classes)]),
                value_info("features", &[batch(), fixed(arch.feature_dim())]),
            ],
        }),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        metadata_props: metadata
            .iter()
            .map(|(key, value)| StringStringEntryProto {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
    })
}

/// Why an ONNX file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the ONNX graph: {0}")]
    Graph(#[from] candle_core::Error),
}

/// Writes the ONNX model (see [`onnx_model`]) to `path`.
pub fn write_onnx(
    path: &Path,
    arch: Arch,
    weights: &FoldedWeights,
    size: usize,
    metadata: &BTreeMap<String, String>,
) -> Result<(), OnnxError> {
    let model = onnx_model(arch, weights, size, metadata)?;
    std::fs::write(path, model.encode_to_vec()).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device};
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::fold::fold_batch_norm;
    use crate::{formula, ResNet};

    #[test]
    fn the_graph_holds_every_layer_and_our_weights() -> anyhow::Result<()> {
        let varmap = VarMap::new();
        let model = ResNet::new(
            Arch::ResNet18,
            5,
            VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        )?;
        formula::fill_varmap(&varmap)?;
        let weights = fold_batch_norm(&model)?;
        let metadata = BTreeMap::from([("labels".to_string(), "[]".to_string())]);
        let bytes = onnx_model(Arch::ResNet18, &weights, 64, &metadata)?.encode_to_vec();
        let decoded = ModelProto::decode(bytes.as_slice())?;
        let graph = decoded.graph.expect("a graph");
        let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
        // ResNet-18: the stem, 16 block convolutions, 3 projections; 8 residual additions.
        assert_eq!(count("Conv"), 20);
        assert_eq!(count("Add"), 8);
        assert_eq!(count("Relu"), 1 + 8 + 8);
        assert_eq!(count("Gemm"), 1);
        assert_eq!(graph.initializer.len(), 2 * 20 + 2);
        let conv = graph
            .initializer
            .iter()
            .find(|t| t.name == "layer2.0.conv1.weight")
            .expect("layer2.0.conv1.weight");
        assert_eq!(conv.dims, [128, 64, 3, 3]);
        let ours: Vec<u8> = weights["layer2.0.conv1.weight"]
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(conv.raw_data, ours);
        let outputs: Vec<&str> = graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(outputs, ["logits", "features"]);
        assert_eq!(decoded.opset_import[0].version, OPSET);
        assert_eq!(decoded.metadata_props[0].key, "labels");
        // Every node input is the graph input, an initializer or an earlier node's output.
        let mut known: Vec<String> = vec!["input".into()];
        known.extend(graph.initializer.iter().map(|t| t.name.clone()));
        for node in &graph.node {
            for input in &node.input {
                assert!(known.contains(input), "{} reads unknown {input}", node.name);
            }
            known.extend(node.output.iter().cloned());
        }
        Ok(())
    }
}
