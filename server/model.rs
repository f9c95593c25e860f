//! What a model declares, distilled from its (completed) config into the shape every request is checked
//! against: inputs, outputs, datatypes, dims and the batching limit.
use crate::proto::{DataType as ConfigType, ModelConfig};
use crate::tensor::DataType;

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
    pub fn from_config(cfg: &ModelConfig) -> Result<Self, String> {
        let tensor =
            |name: &str, data_type: i32, dims: &[i64], reshape: Option<&crate::proto::ModelTensorReshape>, optional| {
                let datatype = ConfigType::try_from(data_type)
                    .ok()
                    .and_then(DataType::from_config)
                    .ok_or_else(|| format!("tensor '{name}' has no valid data_type"))?;
                if dims.iter().any(|&d| d < -1) {
                    return Err(format!("tensor '{name}' has an invalid dimension in {dims:?}"));
                }
                Ok(TensorSpec {
                    name: name.to_string(),
                    datatype,
                    dims: dims.to_vec(),
                    reshape: reshape.map(|r| r.shape.clone()),
                    optional,
                })
            };
        let max_batch_size =
            usize::try_from(cfg.max_batch_size).map_err(|_| "max_batch_size must not be negative".to_string())?;
        let inputs = cfg
            .input
            .iter()
            .map(|i| tensor(&i.name, i.data_type, &i.dims, i.reshape.as_ref(), i.optional))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = cfg
            .output
            .iter()
            .map(|o| tensor(&o.name, o.data_type, &o.dims, o.reshape.as_ref(), false))
            .collect::<Result<Vec<_>, _>>()?;
        if inputs.is_empty() || outputs.is_empty() {
            return Err("the model declares no inputs or no outputs".into());
        }
        Ok(Self {
            name: cfg.name.clone(),
            platform: cfg.platform.clone(),
            max_batch_size,
            inputs,
            outputs,
        })
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

/// One version of a model, loaded and serving: its queue and instances, and its statistics.
pub struct LoadedVersion {
    pub version: i64,
    pub version_label: String,
    pub spec: std::sync::Arc<ModelSpec>,
    pub config: std::sync::Arc<ModelConfig>,
    pub scheduler: crate::scheduler::Scheduler,
    pub stats: std::sync::Arc<crate::stats::Stats>,
}
