//! ONNX files on candle (feature `candle-onnx`), for graphs whose operators candle-onnx implements. It
//! evaluates the graph proto directly, re-reading the initializers on every execution, so ONNX Runtime stays
//! the faster home for ONNX files; this path exists for comparing the two runtimes on one file and for
//! deployments that want candle alone.
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_onnx::onnx::{tensor_proto::DataType as OnnxType, tensor_shape_proto::dimension, type_proto, ModelProto};

use super::{execute_error, load_error, write_tensor};
use crate::backend::{BackendError, BatchInput, BatchOutput, DeclaredIo, DeclaredTensor, Instance};
use crate::spec::ModelSpec;
use crate::tensor::DataType;

fn read(model_file: &Path) -> Result<ModelProto, BackendError> {
    candle_onnx::read_file(model_file).map_err(load_error(model_file))
}

fn datatype(elem_type: i32) -> Option<DataType> {
    Some(match OnnxType::try_from(elem_type).ok()? {
        OnnxType::Float => DataType::Fp32,
        OnnxType::Double => DataType::Fp64,
        OnnxType::Float16 => DataType::Fp16,
        OnnxType::Bfloat16 => DataType::Bf16,
        OnnxType::Int64 => DataType::Int64,
        OnnxType::Uint32 => DataType::Uint32,
        OnnxType::Uint8 => DataType::Uint8,
        _ => return None,
    })
}

fn dtype(t: DataType) -> Option<DType> {
    Some(match t {
        DataType::Fp32 => DType::F32,
        DataType::Fp64 => DType::F64,
        DataType::Fp16 => DType::F16,
        DataType::Bf16 => DType::BF16,
        DataType::Int64 => DType::I64,
        DataType::Uint32 => DType::U32,
        DataType::Uint8 => DType::U8,
        _ => return None,
    })
}

/// The graph's inputs (those without initializers) and outputs, dynamic dimensions as -1.
pub fn declared(model_file: &Path) -> Result<DeclaredIo, BackendError> {
    let model = read(model_file)?;
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| BackendError::Load(format!("{}: no graph", model_file.display())))?;
    let initialized: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let tensor = |v: &candle_onnx::onnx::ValueInfoProto| {
        let (datatype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => (
                datatype(t.elem_type),
                t.shape
                    .as_ref()
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match d.value {
                                Some(dimension::Value::DimValue(n)) => n,
                                _ => -1,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => (None, Vec::new()),
        };
        DeclaredTensor {
            name: v.name.clone(),
            datatype,
            shape,
        }
    };
    Ok(DeclaredIo {
        inputs: graph
            .input
            .iter()
            .filter(|i| !initialized.contains(i.name.as_str()))
            .map(tensor)
            .collect(),
        outputs: graph.output.iter().map(tensor).collect(),
    })
}

pub struct OnnxInstance {
    model: ModelProto,
    outputs: Vec<String>,
    device: Device,
}

impl OnnxInstance {
    pub fn load(model_file: &Path, spec: &ModelSpec, device: Device) -> Result<Self, BackendError> {
        for t in spec.inputs.iter().chain(&spec.outputs) {
            if dtype(t.datatype).is_none() {
                return Err(BackendError::Load(format!(
                    "model '{}': candle-onnx cannot take {} ('{}'); serve it with ONNX Runtime",
                    spec.name,
                    t.datatype.name(),
                    t.name
                )));
            }
        }
        Ok(Self {
            model: read(model_file)?,
            outputs: spec.outputs.iter().map(|o| o.name.clone()).collect(),
            device,
        })
    }
}

impl Instance for OnnxInstance {
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
        let mut feed = HashMap::with_capacity(inputs.len());
        for input in inputs {
            let dt = dtype(input.datatype).ok_or_else(|| {
                BackendError::InvalidInput(format!("candle-onnx cannot take {}", input.datatype.name()))
            })?;
            let dims: Vec<usize> = input.shape.iter().map(|&d| d.max(0) as usize).collect();
            let tensor = Tensor::from_raw_buffer(input.data, dt, &dims, &self.device).map_err(execute_error)?;
            feed.insert(input.name.to_string(), tensor);
        }
        let mut results = candle_onnx::simple_eval(&self.model, feed).map_err(execute_error)?;
        outputs.resize_with(self.outputs.len(), BatchOutput::default);
        for (name, out) in self.outputs.iter().zip(outputs.iter_mut()) {
            let t = results
                .remove(name)
                .ok_or_else(|| BackendError::Execute(format!("the graph gave no output '{name}'")))?;
            write_tensor(&t, out)?;
        }
        Ok(())
    }
}
