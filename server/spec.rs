//! What a model declares, distilled from its (completed) config into the shape every request is checked
//! against: inputs, outputs, datatypes, dims and the batching limit.
use crate::proto::{DataType as ConfigType, ModelConfig, ModelTensorReshape};
use crate::tensor::DataType;

/// A config whose tensors cannot be served as declared.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("tensor '{0}' has no valid data_type")]
    DataType(String),
    #[error("tensor '{tensor}' has an invalid dimension in {dims:?}")]
    Dims { tensor: String, dims: Vec<i64> },
    #[error("max_batch_size must not be negative")]
    NegativeBatch,
    #[error("the model declares no inputs or no outputs")]
    NoTensors,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    /// Dims without the batch dimension; -1 means any size.
    pub dims: Vec<i64>,
    /// The shape the model itself takes, when the config reshapes (without the batch dimension).
    pub reshape: Option<Vec<i64>>,
    pub optional: bool,
}

impl TensorSpec {
    fn from_config(
        name: &str,
        data_type: i32,
        dims: &[i64],
        reshape: Option<&ModelTensorReshape>,
        optional: bool,
    ) -> Result<Self, SpecError> {
        let datatype = ConfigType::try_from(data_type)
            .ok()
            .and_then(DataType::from_config)
            .ok_or_else(|| SpecError::DataType(name.to_string()))?;
        if dims.iter().any(|&d| d < -1) {
            return Err(SpecError::Dims {
                tensor: name.to_string(),
                dims: dims.to_vec(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            datatype,
            dims: dims.to_vec(),
            reshape: reshape.map(|r| r.shape.clone()),
            optional,
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub platform: String,
    /// 0 means the model does not batch: requests carry the model's full shape.
    pub max_batch_size: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl ModelSpec {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self, SpecError> {
        let max_batch_size = usize::try_from(cfg.max_batch_size).map_err(|_| SpecError::NegativeBatch)?;
        let inputs = cfg
            .input
            .iter()
            .map(|i| TensorSpec::from_config(&i.name, i.data_type, &i.dims, i.reshape.as_ref(), i.optional))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = cfg
            .output
            .iter()
            .map(|o| TensorSpec::from_config(&o.name, o.data_type, &o.dims, o.reshape.as_ref(), false))
            .collect::<Result<Vec<_>, _>>()?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err(SpecError::NoTensors);
        }
        Ok(Self {
            name: cfg.name.clone(),
            platform: cfg.platform.clone(),
            max_batch_size,
            inputs,
            outputs,
        })
    }

    /// Whether the model is shaped as a text embedder: one BYTES input, one FP32 output.
    pub fn takes_text(&self) -> bool {
        matches!((&self.inputs[..], &self.outputs[..]), ([i], [o]) if i.datatype == DataType::Bytes && o.datatype == DataType::Fp32)
    }

    pub fn batches(&self) -> bool {
        self.max_batch_size > 0
    }

    /// A tensor's shape as the protocol's metadata shows it: with a leading -1 when the model batches.
    pub fn metadata_shape(&self, t: &TensorSpec) -> Vec<i64> {
        let mut shape = Vec::with_capacity(t.dims.len() + 1);
        if self.batches() {
            shape.push(-1);
        }
        shape.extend_from_slice(&t.dims);
        shape
    }
}
