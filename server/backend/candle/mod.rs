//! The candle backend: models described by safetensors weights and a small JSON beside them, run by
//! Hugging Face's candle in-process. Which architecture a version folder holds is read from its files:
//! `mlp.json` for the MLP family, `config.json` + `tokenizer.json` for a BERT-family sentence-embedding
//! model (sentence-transformers layout); a `.onnx` file goes to candle-onnx (feature `candle-onnx`). CPU here; candle's own threads follow `RAYON_NUM_THREADS`, which the
//! server sets from `--intra-op-threads` unless it is already set.
mod mlp;
#[cfg(feature = "candle-onnx")]
mod onnx;
mod sentence;

use std::path::Path;

use candle_core::Device;

use super::{Backend, BackendError, DeclaredIo, Instance, Placement};
use crate::proto::ModelConfig;
use crate::spec::ModelSpec;

pub use mlp::MlpConfig;

#[derive(Default)]
pub struct CandleBackend;

impl CandleBackend {
    pub fn new() -> Self {
        Self
    }
}

/// What a version folder holds, judged by the files beside the weights.
enum Architecture {
    Mlp,
    SentenceEmbedding,
    #[cfg(feature = "candle-onnx")]
    Onnx,
}

fn architecture(model_file: &Path) -> Result<Architecture, BackendError> {
    let dir = model_file.parent().unwrap_or(Path::new("."));
    if model_file.extension().is_some_and(|e| e == "onnx") {
        #[cfg(feature = "candle-onnx")]
        return Ok(Architecture::Onnx);
        #[cfg(not(feature = "candle-onnx"))]
        return Err(BackendError::Load(format!(
            "{}: this build runs ONNX files on ONNX Runtime only (backend \"onnxruntime\"); build with \
             --features candle-onnx to run them on candle",
            model_file.display()
        )));
    }
    if dir.join(mlp::CONFIG_FILE).is_file() {
        Ok(Architecture::Mlp)
    } else if dir.join("config.json").is_file() && dir.join("tokenizer.json").is_file() {
        Ok(Architecture::SentenceEmbedding)
    } else {
        Err(BackendError::Load(format!(
            "{}: the candle backend needs {} (an MLP) or config.json and tokenizer.json (a BERT sentence-embedding \
             model) beside the weights",
            dir.display(),
            mlp::CONFIG_FILE
        )))
    }
}

impl Backend for CandleBackend {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn platform(&self) -> &'static str {
        "candle"
    }

    fn default_model_filename(&self) -> &'static str {
        "model.safetensors"
    }

    fn inspect(&self, model_file: &Path) -> Result<DeclaredIo, BackendError> {
        match architecture(model_file)? {
            Architecture::Mlp => mlp::declared(model_file),
            Architecture::SentenceEmbedding => sentence::declared(model_file),
            #[cfg(feature = "candle-onnx")]
            Architecture::Onnx => onnx::declared(model_file),
        }
    }

    fn instantiate(
        &self,
        model_file: &Path,
        spec: &ModelSpec,
        _config: &ModelConfig,
        placement: Placement,
    ) -> Result<Box<dyn Instance>, BackendError> {
        let device = device(placement)?;
        Ok(match architecture(model_file)? {
            Architecture::Mlp => Box::new(mlp::MlpInstance::load(model_file, spec, device)?),
            Architecture::SentenceEmbedding => Box::new(sentence::SentenceInstance::load(model_file, spec, device)?),
            #[cfg(feature = "candle-onnx")]
            Architecture::Onnx => Box::new(onnx::OnnxInstance::load(model_file, spec, device)?),
        })
    }
}

/// The candle device of a placement. Inputs go to it once per batch and outputs come back once.
fn device(placement: Placement) -> Result<Device, BackendError> {
    match placement {
        Placement::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "candle-cuda")]
        Placement::Gpu(i) => Device::new_cuda(i as usize)
            .map_err(|e| BackendError::Load(format!("cannot use CUDA device {i} with candle: {e}"))),
        #[cfg(not(feature = "candle-cuda"))]
        Placement::Gpu(i) => Err(BackendError::Load(format!(
            "GPU {i} asked for, but this build runs candle on the CPU only: build with --features cuda"
        ))),
    }
}

/// A candle error while loading `what`.
fn load_error(what: &Path) -> impl Fn(candle_core::Error) -> BackendError + '_ {
    move |e| BackendError::Load(format!("cannot load {}: {e}", what.display()))
}

fn execute_error(e: candle_core::Error) -> BackendError {
    BackendError::Execute(format!("candle: {e}"))
}

/// Writes a tensor's shape and its elements (little-endian) into `out`, reusing its buffer.
fn write_tensor(tensor: &candle_core::Tensor, out: &mut super::BatchOutput) -> Result<(), BackendError> {
    use candle_core::DType;
    let flat = tensor.flatten_all().map_err(execute_error)?;
    out.shape = tensor.dims().iter().map(|&d| d as i64).collect();
    out.data.clear();
    macro_rules! put {
        ($ty:ty) => {
            out.data.extend_from_slice(bytemuck::cast_slice(
                &flat.to_vec1::<$ty>().map_err(execute_error)?,
            ))
        };
    }
    match flat.dtype() {
        DType::F32 => put!(f32),
        DType::F64 => put!(f64),
        DType::F16 => put!(half::f16),
        DType::BF16 => put!(half::bf16),
        DType::I64 => put!(i64),
        DType::U32 => put!(u32),
        DType::U8 => put!(u8),
        other => return Err(BackendError::Execute(format!("unsupported output dtype {other:?}"))),
    }
    Ok(())
}
