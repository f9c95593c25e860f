//! The ONNX Runtime backend (through `ort`, with the runtime library loaded at start). One `Session` per
//! instance, since `Session::run` takes `&mut self`. A graph with a tokenizer beside it may take text
//! (`ort_text`).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bytemuck::Pod;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, PrimitiveTensorElementType, Tensor, TensorElementType, TensorRef, ValueType};

use super::ort_text::OrtTextInstance;
use super::text::{self, TextRecipe};
use super::{Backend, BackendError, BatchInput, BatchOutput, DeclaredIo, DeclaredTensor, Instance, Placement};
use crate::proto::model_config::SchedulingChoice;
use crate::proto::{DataType as ConfigType, ModelConfig};
use crate::spec::ModelSpec;
use crate::tensor::{bytes_elements, push_bytes_element, DataType};

/// The ONNX Runtime release our `ort` binding speaks (API 31), as PyPI's `onnxruntime==1.31.1` ships it.
pub const LIBRARY_NAME: &str = "libonnxruntime.so.1.31.1";

/// Where to look for the runtime when neither `--onnxruntime-library` nor `ORT_DYLIB_PATH` names it: beside
/// the binary, in the project-local `.deps/lib` that `make setup` fills (found by walking up from the binary,
/// so `target/release/inferd` finds it), then the system's library folders.
pub fn find_library(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!("ONNX Runtime library {} does not exist", p.display()))
        };
    }
    let mut candidates = Vec::new();
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.extend(dir.ancestors().map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    // Tests and `cargo run` also find the checkout they were built from.
    roots.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for root in &roots {
        candidates.push(root.join(LIBRARY_NAME));
        candidates.push(root.join(".deps/lib").join(LIBRARY_NAME));
        candidates.push(root.join("lib").join(LIBRARY_NAME));
    }
    for dir in [
        "/usr/local/lib",
        "/usr/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/opt/onnxruntime/lib",
    ] {
        candidates.push(Path::new(dir).join(LIBRARY_NAME));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        format!(
            "ONNX Runtime library {LIBRARY_NAME} not found. Run `make setup` in the inferd checkout (it takes it from the \
             PyPI wheel onnxruntime==1.31.1), or `pip install onnxruntime==1.31.1` and pass \
             --onnxruntime-library (or set ORT_DYLIB_PATH) to site-packages/onnxruntime/capi/{LIBRARY_NAME}"
        )
    })
}

/// ONNX Runtime allows one environment per process; every server in the process shares it.
pub fn environment(library: &Path) -> Result<Environment, BackendError> {
    static ENV: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let builder =
            ort::init_from(library).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?;
        builder
            .with_name("inferd")
            .build()
            .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
    })
    .clone()
    .map_err(BackendError::Load)
}

pub struct OrtBackend {
    library: PathBuf,
    default_intra_op_threads: usize,
}

impl OrtBackend {
    /// Loads the runtime library now, so that a missing or wrong library is reported at start.
    pub fn new(library: PathBuf, default_intra_op_threads: usize) -> Result<Self, BackendError> {
        environment(&library)?;
        Ok(Self {
            library,
            default_intra_op_threads,
        })
    }

    fn session(
        &self,
        model_file: &Path,
        intra_op_threads: usize,
        placement: Placement,
    ) -> Result<Session, BackendError> {
        let env = environment(&self.library)?;
        let fail = |e: String| BackendError::Load(format!("cannot load {}: {e}", model_file.display()));
        let builder = Session::builder(&env).map_err(|e| fail(e.to_string()))?;
        let builder = match placement {
            Placement::Cpu => builder,
            Placement::Gpu(device) => with_cuda(builder, device).map_err(fail)?,
        };
        builder
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(intra_op_threads)
            .map_err(|e| fail(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| fail(e.to_string()))?
            .commit_from_file(model_file)
            .map_err(|e| fail(e.to_string()))
    }
}

/// ONNX Runtime's CUDA execution provider on `device`, or an error that says why not: the library must be the
/// GPU build (PyPI `onnxruntime-gpu`), with CUDA 13 and cuDNN 9 where it can load them. Registration is made to
/// fail rather than fall back, so a model meant for a GPU never runs on the CPU unnoticed. ONNX Runtime copies
/// a batch's inputs to the device once and its outputs back once per execution.
#[cfg(feature = "cuda-ort")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    device: u32,
) -> Result<ort::session::builder::SessionBuilder, String> {
    use ort::ep::ExecutionProvider;
    if !ort::ep::CUDA::is_available().unwrap_or(false) {
        return Err(
            "this ONNX Runtime library has no CUDA execution provider: point --onnxruntime-library at the \
             libonnxruntime.so.1.31.1 of the PyPI wheel onnxruntime-gpu==1.31.1"
                .into(),
        );
    }
    builder
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device as i32)
            .build()
            .error_on_failure()])
        .map_err(|e| format!("cannot use CUDA device {device}: {e}"))
}

#[cfg(not(feature = "cuda-ort"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    device: u32,
) -> Result<ort::session::builder::SessionBuilder, String> {
    Err(format!(
        "GPU {device} asked for, but this build has no CUDA support: build with --features cuda"
    ))
}

fn datatype_of(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Bfloat16 => DataType::Bf16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn declared(name: &str, t: &ValueType) -> DeclaredTensor {
    match t {
        ValueType::Tensor { ty, shape, .. } => DeclaredTensor {
            name: name.to_string(),
            datatype: datatype_of(*ty),
            shape: shape.to_vec(),
        },
        _ => DeclaredTensor {
            name: name.to_string(),
            datatype: None,
            shape: Vec::new(),
        },
    }
}

impl Backend for OrtBackend {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn platform(&self) -> &'static str {
        "onnxruntime_onnx"
    }

    fn default_model_filename(&self) -> &'static str {
        "model.onnx"
    }

    fn inspect(&self, model_file: &Path) -> Result<DeclaredIo, BackendError> {
        let session = self.session(model_file, 1, Placement::Cpu)?;
        Ok(DeclaredIo {
            inputs: session.inputs().iter().map(|o| declared(o.name(), o.dtype())).collect(),
            outputs: session
                .outputs()
                .iter()
                .map(|o| declared(o.name(), o.dtype()))
                .collect(),
        })
    }

    fn instantiate(
        &self,
        model_file: &Path,
        spec: &ModelSpec,
        config: &ModelConfig,
        placement: Placement,
    ) -> Result<Box<dyn Instance>, BackendError> {
        // Triton's onnxruntime backend reads the same parameter name.
        let threads = match config.parameters.get("intra_op_thread_count") {
            Some(p) => p.string_value.trim().parse::<usize>().map_err(|_| {
                BackendError::Load(format!(
                    "parameter intra_op_thread_count must be a number, got '{}'",
                    p.string_value
                ))
            })?,
            None => self.default_intra_op_threads,
        };
        let session = self.session(model_file, threads, placement)?;
        if let Some(recipe) = text_recipe(&session, spec, model_file)? {
            let output = match &spec.outputs[..] {
                [o] if o.datatype == DataType::Fp32 && session.outputs().iter().any(|g| g.name() == o.name) => {
                    o.name.clone()
                }
                _ => {
                    return Err(BackendError::Load(
                        "a text-in ONNX model gives one FP32 output, one of the graph's outputs".into(),
                    ))
                }
            };
            return Ok(Box::new(OrtTextInstance::new(session, recipe, output)?));
        }
        for t in &spec.inputs {
            if !session.inputs().iter().any(|i| i.name() == t.name) {
                return Err(BackendError::Load(format!(
                    "config input '{}' is not an input of the model file",
                    t.name
                )));
            }
        }
        let mut output_names = spec.outputs.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        let mut output_types: Vec<DataType> = spec.outputs.iter().map(|t| t.datatype).collect();
        // A stateful model's control and state inputs, which the sequence batcher feeds, and its state outputs,
        // which it keeps (after the config's outputs, in the config's order).
        if let Some(SchedulingChoice::SequenceBatching(sb)) = &config.scheduling_choice {
            let extra_inputs = sb
                .control_input
                .iter()
                .map(|c| &c.name)
                .chain(sb.state.iter().map(|s| &s.input_name));
            for name in extra_inputs {
                if !session.inputs().iter().any(|i| i.name() == name) {
                    return Err(BackendError::Load(format!(
                        "sequence_batching input '{name}' is not an input of the model file"
                    )));
                }
            }
            for state in &sb.state {
                output_names.push(state.output_name.clone());
                output_types.push(
                    ConfigType::try_from(state.data_type)
                        .ok()
                        .and_then(DataType::from_config)
                        .unwrap_or(DataType::Bytes),
                );
            }
        }
        for n in &output_names {
            if !session.outputs().iter().any(|o| o.name() == n) {
                return Err(BackendError::Load(format!(
                    "config output '{n}' is not an output of the model file"
                )));
            }
        }
        Ok(Box::new(OrtInstance {
            session,
            output_names,
            output_types,
        }))
    }
}

/// The tokenizer recipe of a text-in model: its config has one BYTES input that is not an input of the graph, and
/// a `tokenizer.json` sits beside the graph. `None` for any other model.
fn text_recipe(session: &Session, spec: &ModelSpec, model_file: &Path) -> Result<Option<TextRecipe>, BackendError> {
    let [input] = &spec.inputs[..] else { return Ok(None) };
    if input.datatype != DataType::Bytes || session.inputs().iter().any(|i| i.name() == input.name) {
        return Ok(None);
    }
    let dir = model_file.parent().unwrap_or(Path::new("."));
    match TextRecipe::load(dir)? {
        Some(recipe) => Ok(Some(recipe)),
        None => Err(BackendError::Load(format!(
            "config input '{}' is not an input of the model file (a BYTES input the graph lacks is text only \
             with a {} beside the graph)",
            input.name,
            text::TOKENIZER_FILE
        ))),
    }
}

struct OrtInstance {
    session: Session,
    output_names: Vec<String>,
    output_types: Vec<DataType>,
}

fn exec_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Execute(format!("onnxruntime: {e}"))
}

/// A view of the batch's bytes as the element type, without copying (the scheduler aligns the buffer).
fn view<'a, T: PrimitiveTensorElementType + Pod + Clone + std::fmt::Debug + 'static>(
    input: &BatchInput<'a>,
) -> Result<SessionInputValue<'a>, BackendError> {
    let data: &'a [T] =
        bytemuck::try_cast_slice(input.data).map_err(|e| exec_err(format!("input '{}': {e}", input.name)))?;
    Ok(TensorRef::from_array_view((input.shape.to_vec(), data))
        .map_err(exec_err)?
        .into())
}

fn input_value<'a>(input: &BatchInput<'a>) -> Result<SessionInputValue<'a>, BackendError> {
    match input.datatype {
        DataType::Uint8 => view::<u8>(input),
        DataType::Uint16 => view::<u16>(input),
        DataType::Uint32 => view::<u32>(input),
        DataType::Uint64 => view::<u64>(input),
        DataType::Int8 => view::<i8>(input),
        DataType::Int16 => view::<i16>(input),
        DataType::Int32 => view::<i32>(input),
        DataType::Int64 => view::<i64>(input),
        DataType::Fp16 => view::<half::f16>(input),
        DataType::Bf16 => view::<half::bf16>(input),
        DataType::Fp32 => view::<f32>(input),
        DataType::Fp64 => view::<f64>(input),
        // `bool` has invalid bit patterns, so bytes are mapped rather than reinterpreted.
        DataType::Bool => {
            let values: Vec<bool> = input.data.iter().map(|&b| b != 0).collect();
            Ok(Tensor::from_array((input.shape.to_vec(), values))
                .map_err(exec_err)?
                .into())
        }
        DataType::Bytes => {
            let mut strings = Vec::new();
            for e in bytes_elements(input.data) {
                let e = e.map_err(|_| exec_err(format!("input '{}': malformed BYTES data", input.name)))?;
                // ONNX Runtime copies strings as C strings: they must be text without NUL bytes.
                let s = std::str::from_utf8(e)
                    .ok()
                    .filter(|s| !s.contains('\0'))
                    .ok_or_else(|| {
                        BackendError::InvalidInput(format!(
                            "input '{}': ONNX string tensors hold UTF-8 text without NUL bytes",
                            input.name
                        ))
                    })?;
                strings.push(s.to_string());
            }
            Ok(Tensor::from_string_array((input.shape.to_vec(), &strings[..]))
                .map_err(exec_err)?
                .into())
        }
    }
}

fn copy_out<T: PrimitiveTensorElementType + Pod>(value: &DynValue, out: &mut BatchOutput) -> Result<(), BackendError> {
    let (shape, data) = value.try_extract_tensor::<T>().map_err(exec_err)?;
    out.shape.extend_from_slice(shape);
    out.data.extend_from_slice(bytemuck::cast_slice(data));
    Ok(())
}

fn output_value(value: &DynValue, datatype: DataType, out: &mut BatchOutput) -> Result<(), BackendError> {
    out.shape.clear();
    out.data.clear();
    match datatype {
        DataType::Uint8 => copy_out::<u8>(value, out),
        DataType::Uint16 => copy_out::<u16>(value, out),
        DataType::Uint32 => copy_out::<u32>(value, out),
        DataType::Uint64 => copy_out::<u64>(value, out),
        DataType::Int8 => copy_out::<i8>(value, out),
        DataType::Int16 => copy_out::<i16>(value, out),
        DataType::Int32 => copy_out::<i32>(value, out),
        DataType::Int64 => copy_out::<i64>(value, out),
        DataType::Fp16 => copy_out::<half::f16>(value, out),
        DataType::Bf16 => copy_out::<half::bf16>(value, out),
        DataType::Fp32 => copy_out::<f32>(value, out),
        DataType::Fp64 => copy_out::<f64>(value, out),
        DataType::Bool => {
            let (shape, data) = value.try_extract_tensor::<bool>().map_err(exec_err)?;
            out.shape.extend_from_slice(shape);
            out.data.extend(data.iter().map(|&b| b as u8));
            Ok(())
        }
        DataType::Bytes => {
            let (shape, strings) = value.try_extract_strings().map_err(exec_err)?;
            out.shape.extend_from_slice(shape);
            for s in &strings {
                push_bytes_element(&mut out.data, s.as_bytes());
            }
            Ok(())
        }
    }
}

impl Instance for OrtInstance {
    fn execute(&mut self, inputs: &[BatchInput<'_>], outputs: &mut Vec<BatchOutput>) -> Result<(), BackendError> {
        let mut feed = Vec::with_capacity(inputs.len());
        for input in inputs {
            feed.push((input.name, input_value(input)?));
        }
        let results = self.session.run(feed).map_err(exec_err)?;
        outputs.resize_with(self.output_names.len(), BatchOutput::default);
        for ((name, datatype), out) in self.output_names.iter().zip(&self.output_types).zip(outputs.iter_mut()) {
            let value = results
                .get(name.as_str())
                .ok_or_else(|| exec_err(format!("the model produced no output '{name}'")))?;
            output_value(value, *datatype, out)
                .map_err(|e| exec_err(format!("output '{name}' (declared {datatype}): {e}")))?;
        }
        Ok(())
    }
}
