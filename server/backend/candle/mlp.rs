//! The MLP family: a chain of linear layers (PyTorch/candle layout, weight [out, in]) with an activation
//! after each, described by `mlp.json` beside `model.safetensors`:
//!
//! ```json
//! {"input": "INPUT", "output": "OUTPUT",
//!  "layers": [{"weight": "fc1.weight", "bias": "fc1.bias", "activation": "relu"},
//!             {"weight": "fc2.weight", "bias": "fc2.bias"}]}
//! ```
use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::{Linear, Module};
use serde::Deserialize;

use super::{execute_error, load_error, write_tensor};
use crate::backend::{BackendError, BatchInput, BatchOutput, DeclaredIo, DeclaredTensor, Instance};
use crate::spec::ModelSpec;
use crate::tensor::DataType;

pub const CONFIG_FILE: &str = "mlp.json";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpConfig {
    #[serde(default = "default_input")]
    pub input: String,
    #[serde(default = "default_output")]
    pub output: String,
    pub layers: Vec<Layer>,
}

fn default_input() -> String {
    "INPUT".into()
}

fn default_output() -> String {
    "OUTPUT".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub weight: String,
    #[serde(default)]
    pub bias: Option<String>,
    #[serde(default)]
    pub activation: Activation,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    None,
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
}

impl Activation {
    fn apply(self, x: Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::None => Ok(x),
            Self::Relu => x.relu(),
            Self::Gelu => x.gelu_erf(),
            Self::Tanh => x.tanh(),
            Self::Sigmoid => candle_nn::ops::sigmoid(&x),
        }
    }
}

fn read_config(model_file: &Path) -> Result<MlpConfig, BackendError> {
    let path = model_file.with_file_name(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| BackendError::Load(format!("cannot read {}: {e}", path.display())))?;
    let cfg: MlpConfig =
        serde_json::from_str(&text).map_err(|e| BackendError::Load(format!("{}: {e}", path.display())))?;
    if cfg.layers.is_empty() {
        return Err(BackendError::Load(format!("{}: no layers", path.display())));
    }
    Ok(cfg)
}

/// The layers with their weights, checked to chain: each layer's input width is the previous one's output.
fn load_layers(model_file: &Path, cfg: &MlpConfig, device: &Device) -> Result<Vec<(Linear, Activation)>, BackendError> {
    let mut weights = candle_core::safetensors::load(model_file, device).map_err(load_error(model_file))?;
    let mut take = |name: &str| {
        weights
            .remove(name)
            .ok_or_else(|| BackendError::Load(format!("{}: no tensor '{name}'", model_file.display())))
    };
    let mut layers = Vec::with_capacity(cfg.layers.len());
    let mut width: Option<usize> = None;
    for (i, l) in cfg.layers.iter().enumerate() {
        let w = take(&l.weight)?
            .to_dtype(candle_core::DType::F32)
            .map_err(load_error(model_file))?;
        let (out, inp) = w
            .dims2()
            .map_err(|_| BackendError::Load(format!("layer {i}: weight '{}' must be [out, in]", l.weight)))?;
        if width.is_some_and(|prev| prev != inp) {
            return Err(BackendError::Load(format!(
                "layer {i} takes {inp} features but the layer before gives {}",
                width.unwrap_or_default()
            )));
        }
        let b = l
            .bias
            .as_deref()
            .map(|name| take(name).and_then(|b| b.to_dtype(candle_core::DType::F32).map_err(load_error(model_file))))
            .transpose()?;
        if let Some(b) = &b {
            if b.dims() != [out] {
                return Err(BackendError::Load(format!("layer {i}: bias must be [{out}]")));
            }
        }
        layers.push((Linear::new(w, b), l.activation));
        width = Some(out);
    }
    Ok(layers)
}

/// Input [-1, in] and output [-1, out] FP32, named as `mlp.json` says.
pub fn declared(model_file: &Path) -> Result<DeclaredIo, BackendError> {
    let cfg = read_config(model_file)?;
    let layers = load_layers(model_file, &cfg, &Device::Cpu)?;
    let dims = |l: &Linear| l.weight().dims2().unwrap_or((0, 0));
    let inp = layers.first().map(|(l, _)| dims(l).1).unwrap_or(0);
    let out = layers.last().map(|(l, _)| dims(l).0).unwrap_or(0);
    let tensor = |name: &str, width: usize| DeclaredTensor {
        name: name.to_string(),
        datatype: Some(DataType::Fp32),
        shape: vec![-1, width as i64],
    };
    Ok(DeclaredIo {
        inputs: vec![tensor(&cfg.input, inp)],
        outputs: vec![tensor(&cfg.output, out)],
    })
}

pub struct MlpInstance {
    layers: Vec<(Linear, Activation)>,
    in_features: usize,
    device: Device,
}

impl MlpInstance {
    pub fn load(model_file: &Path, spec: &ModelSpec, device: Device) -> Result<Self, BackendError> {
        let cfg = read_config(model_file)?;
        let layers = load_layers(model_file, &cfg, &device)?;
        let in_features = layers
            .first()
            .and_then(|(l, _)| l.weight().dims2().ok())
            .map_or(0, |d| d.1);
        if spec.inputs.len() != 1 || spec.outputs.len() != 1 {
            return Err(BackendError::Load(format!(
                "model '{}': an MLP has one input and one output",
                spec.name
            )));
        }
        Ok(Self {
            layers,
            in_features,
            device,
        })
    }
}

impl Instance for MlpInstance {
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
        let input = inputs
            .first()
            .ok_or_else(|| BackendError::Execute("an MLP needs its input".into()))?;
        if input.datatype != DataType::Fp32 {
            return Err(BackendError::InvalidInput(format!(
                "an MLP takes FP32, got {}",
                input.datatype.name()
            )));
        }
        let values: &[f32] = bytemuck::try_cast_slice(input.data)
            .map_err(|_| BackendError::Execute("FP32 input is not 4-byte aligned".into()))?;
        if !values.len().is_multiple_of(self.in_features.max(1)) {
            return Err(BackendError::InvalidInput(format!(
                "the input holds {} values, not a whole number of rows of {}",
                values.len(),
                self.in_features
            )));
        }
        let rows = values.len() / self.in_features.max(1);
        let mut x = Tensor::from_slice(values, (rows, self.in_features), &self.device).map_err(execute_error)?;
        for (linear, activation) in &self.layers {
            x = linear
                .forward(&x)
                .and_then(|y| activation.apply(y))
                .map_err(execute_error)?;
        }
        outputs.resize_with(1, BatchOutput::default);
        write_tensor(&x, &mut outputs[0])
    }
}
