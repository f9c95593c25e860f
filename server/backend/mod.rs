//! The one seam between serving and model execution. A `Backend` inspects model files and creates
//! instances; an `Instance` executes whole batches on its own thread. Nothing above this trait knows which
//! runtime (ONNX Runtime, candle; CPU or CUDA) does the work.
pub mod candle;
pub mod identity;
pub mod ort;
mod ort_text;
pub mod text;

use std::path::Path;

use crate::proto::ModelConfig;
use crate::spec::ModelSpec;
use crate::tensor::DataType;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("{0}")]
    Load(String),
    #[error("{0}")]
    Execute(String),
    /// The request's data is unacceptable to this runtime (e.g. non-UTF-8 text for a string tensor).
    #[error("{0}")]
    InvalidInput(String),
}

/// A tensor as a model file declares it (for auto-completing a config). Shape includes any batch
/// dimension; -1 marks a dynamic dimension.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredTensor {
    pub name: String,
    pub datatype: Option<DataType>,
    pub shape: Vec<i64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredIo {
    pub inputs: Vec<DeclaredTensor>,
    pub outputs: Vec<DeclaredTensor>,
}

/// One input of a batch: requests' rows concatenated along dimension 0. Fixed-size data is 8-byte aligned so
/// a backend may view it as its element type in place.
pub struct BatchInput<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    pub shape: &'a [i64],
    pub data: &'a [u8],
}

/// One output of an executed batch, in raw form (BYTES length-prefixed).
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub shape: Vec<i64>,
    pub data: Vec<u8>,
}

/// Where one instance runs: on the CPU, or on a GPU by its CUDA ordinal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Cpu,
    Gpu(u32),
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("CPU"),
            Self::Gpu(i) => write!(f, "GPU {i}"),
        }
    }
}

pub trait Backend: Send + Sync {
    /// The name configs select it by (`backend:` in config.pbtxt).
    fn name(&self) -> &'static str;
    /// The `platform:` Triton writes for models of this backend.
    fn platform(&self) -> &'static str;
    fn default_model_filename(&self) -> &'static str;
    /// Whether a version folder must hold the model file (the identity backend reads only the config).
    fn needs_model_file(&self) -> bool {
        true
    }
    /// The inputs and outputs the model file itself declares.
    fn inspect(&self, model_file: &Path) -> Result<DeclaredIo, BackendError>;
    /// A fresh instance of the model on `placement`, owned by one execution thread.
    fn instantiate(
        &self,
        model_file: &Path,
        spec: &ModelSpec,
        config: &ModelConfig,
        placement: Placement,
    ) -> Result<Box<dyn Instance>, BackendError>;
}

pub trait Instance: Send {
    /// Runs one batch. `inputs` follow `spec.inputs` (absent optional inputs are left out); `outputs` is filled
    /// with one entry per `spec.outputs`, in that order, reusing its buffers.
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError>;
}
