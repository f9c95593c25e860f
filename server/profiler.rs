//! `inferd profile`: reads a model's reference data, runs it through one CPU instance of the model as the server
//! would (the same folder, config, backend and batch limit), and writes what the model received and answered as
//! the version's reference profile (`profile.json`), which the server then watches drift against.
//!
//! Reference data is `.npy` (a model with one input), `.npz` (one array per input) or V2 infer request bodies
//! (`.jsonl`/`.json`), the last decoded and checked by the server's own request code, so a reference request
//! means what it would mean sent to the server.
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ndarray::{ArrayD, IxDyn, OwnedRepr};
use ndarray_npy::{NpzReader, ReadNpyError, ReadNpyExt, ReadNpzError, ReadableElement};
use serde_json::value::RawValue;
use tokenizers::Tokenizer;

use crate::backend::candle::CandleBackend;
use crate::backend::ort::{find_library, OrtBackend};
use crate::backend::{Backend, BatchInput, BatchOutput, Instance, Placement};
use crate::cli::ProfileArgs;
use crate::health::features::Kind;
use crate::health::profile::{default_kind, fixed_row, OutputRole, Profile, ProfileBuilder, FILE_NAME};
use crate::model_name::{ModelName, ModelRef, NameError};
use crate::protocol::binary::decode_request;
use crate::repository::{prepare, LoadError, ModelSource, Prepared};
use crate::spec::{ModelSpec, TensorSpec};
use crate::tensor::{bytes_offset, DataType};
use crate::validate::validate;

/// Why no profile was written. Each names the file, flag or model at fault and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ProfilerError {
    #[error("--model: {0}")]
    Name(#[from] NameError),
    #[error("model '{model}' is not in {}: there is no folder {}", repository.display(), dir.display())]
    NoModel {
        model: String,
        repository: PathBuf,
        dir: PathBuf,
    },
    #[error("model '{model}' does not load: {why}")]
    Load { model: String, why: String },
    #[error("model '{model}' has no version {version} (no folder {})", dir.display())]
    NoVersion { model: String, version: i64, dir: PathBuf },
    #[error("--{flag} {output}: {why}")]
    Role {
        flag: &'static str,
        output: String,
        why: String,
    },
    #[error("--batch {batch}: model '{model}' takes at most {max} rows at once (its max_batch_size)")]
    Batch { batch: usize, model: String, max: usize },
    #[error("{}: {why}", path.display())]
    Data { path: PathBuf, why: String },
    #[error("cannot read the tokenizer {}: {why}", path.display())]
    Tokenizer { path: PathBuf, why: String },
    #[error("model '{model}' failed on reference rows {first} to {last}: {why}")]
    Execute {
        model: String,
        first: usize,
        last: usize,
        why: String,
    },
    #[error("the profile made from {} would not be usable: {why}", data.display())]
    Unusable { data: PathBuf, why: String },
    #[error("cannot write {}: {why}", path.display())]
    Write { path: PathBuf, why: String },
}

/// What was written, as the command reports it.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub rows: u64,
    pub model: String,
    pub version: i64,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "wrote {}: profile of model '{}' version {} from {} reference rows",
            self.path.display(),
            self.model,
            self.version,
            self.rows
        )
    }
}

/// Threads per execution: as asked, or one per core for 0 (profiling is a batch job with the machine to itself).
pub fn threads(asked: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// The whole command: load the model, read the data, run it, write the profile.
pub fn run(args: &ProfileArgs) -> Result<Written, ProfilerError> {
    let name = ModelName::parse(&args.model)?;
    let model = name.to_string();
    let src = ModelSource {
        dir: args.model_repository.join(name.as_str()),
        name,
    };
    if !src.dir.is_dir() {
        return Err(ProfilerError::NoModel {
            model,
            repository: args.model_repository.clone(),
            dir: src.dir,
        });
    }
    let (backends, no_ort) = backends(args);
    let load_failed = |e: LoadError| {
        let why = match (&e, &no_ort) {
            // Without ONNX Runtime, an ONNX model's backend is simply missing: say why it is.
            (LoadError::UnknownBackend { .. } | LoadError::NoModelFile { .. }, Some(ort)) => {
                format!("{e} (ONNX Runtime is not available: {ort})")
            }
            _ => e.to_string(),
        };
        ProfilerError::Load {
            model: model.clone(),
            why,
        }
    };
    let prepared = prepare(&src, None, &backends).map_err(load_failed)?;
    let (version, file) = pick_version(&prepared, &src.dir, args.version, &model)?;
    let spec = prepared.spec.clone();
    let batch = batch_size(&spec, args.batch)?;
    let kinds = kinds(&prepared, args)?;
    // The data is read before the model is started, so a mistake in it is reported at once.
    let blocks = merge(read_data(&args.data, &spec)?);
    let version_dir = file.parent().map_or_else(|| src.dir.clone(), Path::to_path_buf);
    let tokenizer = if kinds.iter().any(|k| matches!(k, Kind::Length)) {
        length_tokenizer(&version_dir)?
    } else {
        None
    };
    if !file.is_file() {
        return Err(ProfilerError::Load {
            model,
            why: format!("version {version} has no model file {}", file.display()),
        });
    }
    let instance = prepared
        .backend
        .instantiate(&file, &spec, &prepared.config, Placement::Cpu)
        .map_err(|e| ProfilerError::Load {
            model: model.clone(),
            why: format!("version {version}: {e}"),
        })?;
    let mut runner = Runner {
        builder: ProfileBuilder::new(&spec, kinds, tokenizer.is_some()),
        spec: &spec,
        instance,
        tokenizer,
        batch,
        buffers: vec![Vec::new(); spec.inputs.len()],
        outputs: Vec::new(),
        done: 0,
    };
    for block in &blocks {
        runner.run(block)?;
    }
    let source = args
        .data
        .file_name()
        .map_or_else(|| args.data.display().to_string(), |n| n.to_string_lossy().into_owned());
    let profile = runner.builder.finish(&source);
    let path = args.out.clone().unwrap_or_else(|| version_dir.join(FILE_NAME));
    write(&profile, &spec, &args.data, &path)?;
    Ok(Written {
        path,
        rows: profile.rows,
        model,
        version,
    })
}

/// The server's backends; ONNX Runtime only when its library loads (a candle model needs none), else why not.
fn backends(args: &ProfileArgs) -> (Vec<Arc<dyn Backend>>, Option<String>) {
    let mut backends: Vec<Arc<dyn Backend>> = vec![Arc::new(CandleBackend::new())];
    let ort = find_library(args.onnxruntime_library.as_deref())
        .and_then(|lib| OrtBackend::new(lib, threads(args.intra_op_threads)).map_err(|e| e.to_string()));
    match ort {
        Ok(ort) => {
            backends.insert(0, Arc::new(ort));
            (backends, None)
        }
        Err(why) => (backends, Some(why)),
    }
}

/// The version asked for (any numbered folder, served or not: a profile may be made before a rollout), else the
/// newest its version policy serves; with its model file.
fn pick_version(
    prepared: &Prepared,
    dir: &Path,
    asked: Option<i64>,
    model: &str,
) -> Result<(i64, PathBuf), ProfilerError> {
    // `prepare` fails without a served version, so there is a newest one and its file names the model file.
    let Some((newest, newest_file)) = prepared.versions.first() else {
        return Err(ProfilerError::Load {
            model: model.to_string(),
            why: "no version is served".into(),
        });
    };
    let Some(v) = asked else {
        return Ok((*newest, newest_file.clone()));
    };
    if let Some((_, file)) = prepared.versions.iter().find(|(served, _)| *served == v) {
        return Ok((v, file.clone()));
    }
    let version_dir = dir.join(v.to_string());
    match newest_file.file_name() {
        Some(file_name) if version_dir.is_dir() => Ok((v, version_dir.join(file_name))),
        _ => Err(ProfilerError::NoVersion {
            model: model.to_string(),
            version: v,
            dir: version_dir,
        }),
    }
}

/// Rows per execution: what was asked, at most what the server would batch.
fn batch_size(spec: &ModelSpec, asked: Option<u32>) -> Result<usize, ProfilerError> {
    let asked = asked.map(|b| b as usize);
    if !spec.batches() {
        return Ok(1);
    }
    match asked {
        None => Ok(spec.max_batch_size),
        Some(b) if b <= spec.max_batch_size => Ok(b),
        Some(b) => Err(ProfilerError::Batch {
            batch: b,
            model: spec.name.clone(),
            max: spec.max_batch_size,
        }),
    }
}

/// How each input, then each output, is profiled: outputs as the flags say, else a `label_filename` makes a
/// classifier and "embed" in the name an embedding.
fn kinds(prepared: &Prepared, args: &ProfileArgs) -> Result<Vec<Kind>, ProfilerError> {
    let spec = &prepared.spec;
    let outputs = spec
        .outputs
        .iter()
        .map(|o| o.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    for (flag, names) in [("classifier", &args.classifiers), ("embedding", &args.embeddings)] {
        for name in names {
            let role_error = |why: String| ProfilerError::Role {
                flag,
                output: name.clone(),
                why,
            };
            let Some(t) = spec.outputs.iter().find(|o| &o.name == name) else {
                return Err(role_error(format!(
                    "model '{}' has no output '{name}' (its outputs: {outputs})",
                    spec.name
                )));
            };
            if t.datatype == DataType::Bytes {
                return Err(role_error(format!(
                    "output '{name}' is BYTES (text), which is profiled by its length"
                )));
            }
            if flag == "embedding" && fixed_row(t).is_none() {
                return Err(role_error(format!(
                    "output '{name}' has dims {:?}; an embedding needs a fixed width to have a centroid",
                    t.dims
                )));
            }
            if flag == "classifier" && args.embeddings.contains(name) {
                return Err(role_error(
                    "it is given to --embedding too; an output is profiled one way".into(),
                ));
            }
        }
    }
    let labelled = |t: &TensorSpec| {
        prepared
            .config
            .output
            .iter()
            .any(|o| o.name == t.name && !o.label_filename.is_empty())
    };
    let role = |t: &TensorSpec| -> Option<OutputRole> {
        if args.classifiers.contains(&t.name) {
            return Some(OutputRole::Classifier);
        }
        if args.embeddings.contains(&t.name) {
            return Some(OutputRole::Embedding);
        }
        if t.datatype == DataType::Bytes {
            return None;
        }
        if labelled(t) {
            return Some(OutputRole::Classifier);
        }
        (t.name.to_lowercase().contains("embed") && fixed_row(t).is_some()).then_some(OutputRole::Embedding)
    };
    let inputs = spec.inputs.iter().map(|t| default_kind(t, None));
    let outputs = spec.outputs.iter().map(|t| default_kind(t, role(t)));
    Ok(inputs.chain(outputs).collect())
}

/// The version folder's tokenizer, for text lengths in tokens; none without a `tokenizer.json`. Counting must
/// match the drift monitor's, which loads the same file the same way.
fn length_tokenizer(version_dir: &Path) -> Result<Option<Tokenizer>, ProfilerError> {
    let path = version_dir.join("tokenizer.json");
    if !path.is_file() {
        return Ok(None);
    }
    let failed = |e: tokenizers::Error| ProfilerError::Tokenizer {
        path: path.clone(),
        why: e.to_string(),
    };
    let tokenizer = crate::health::features::length_tokenizer(&path).map_err(failed)?;
    Ok(Some(tokenizer))
}

// ---------------------------------------------------------------- reference data

/// Reference rows of every input, in the spec's order.
struct Block {
    rows: usize,
    inputs: Vec<Rows>,
}

/// One input's rows.
struct Rows {
    /// One row's shape: the request's shape without its batch dimension (for a model that does not batch, a
    /// row is a whole request).
    shape: Vec<i64>,
    /// The rows' raw bytes as a request carries them (BYTES elements length-prefixed).
    data: Vec<u8>,
}

fn read_data(path: &Path, spec: &ModelSpec) -> Result<Vec<Block>, ProfilerError> {
    let data_error = |why: String| ProfilerError::Data {
        path: path.to_path_buf(),
        why,
    };
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_lowercase();
    let blocks = match extension.as_str() {
        "npy" => read_npy(path, spec).map_err(data_error)?,
        "npz" => read_npz(path, spec).map_err(data_error)?,
        "jsonl" | "json" | "ndjson" => read_requests(path, spec).map_err(data_error)?,
        _ => {
            return Err(data_error(
                "reference data must be .npy, .npz, or .jsonl/.json (V2 infer request bodies)".into(),
            ))
        }
    };
    if blocks.iter().all(|b| b.rows == 0) {
        return Err(data_error("holds no reference rows".into()));
    }
    Ok(blocks)
}

fn read_npy(path: &Path, spec: &ModelSpec) -> Result<Vec<Block>, String> {
    let [input] = &spec.inputs[..] else {
        return Err(format!(
            "an .npy holds one array, and model '{}' has {} inputs ({}): give an .npz with one array per input",
            spec.name,
            spec.inputs.len(),
            input_names(spec)
        ));
    };
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let loaded = load(&mut NpyBytes(&bytes), input, "the array")?;
    let (rows, input_rows) = rows_of(loaded, input, "the array", &spec.name)?;
    Ok(vec![Block {
        rows,
        inputs: vec![input_rows],
    }])
}

fn read_npz(path: &Path, spec: &ModelSpec) -> Result<Vec<Block>, String> {
    let file = File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut npz = NpzReader::new(BufReader::new(file)).map_err(|e| format!("not an .npz archive: {e}"))?;
    let names = npz.names().map_err(|e| format!("not an .npz archive: {e}"))?;
    if let Some(stranger) = names.iter().find(|n| !spec.inputs.iter().any(|i| &i.name == *n)) {
        return Err(format!(
            "array '{stranger}' is not an input of model '{}' (its inputs: {})",
            spec.name,
            input_names(spec)
        ));
    }
    let mut inputs = Vec::with_capacity(spec.inputs.len());
    let mut first: Option<(&str, usize)> = None;
    for input in &spec.inputs {
        if !names.contains(&input.name) {
            return Err(format!(
                "no array '{0}' for input '{0}' of model '{1}' (the archive has: {2})",
                input.name,
                spec.name,
                names.join(", ")
            ));
        }
        let what = format!("array '{}'", input.name);
        let loaded = load(
            &mut NpzEntry {
                npz: &mut npz,
                name: &input.name,
            },
            input,
            &what,
        )?;
        let (rows, input_rows) = rows_of(loaded, input, &what, &spec.name)?;
        match first {
            Some((other, n)) if n != rows => {
                return Err(format!(
                    "{what} has {rows} rows but array '{other}' has {n}: every input needs the same reference rows"
                ))
            }
            Some(_) => {}
            None => first = Some((&input.name, rows)),
        }
        inputs.push(input_rows);
    }
    let rows = first.map_or(0, |(_, n)| n);
    Ok(vec![Block { rows, inputs }])
}

/// V2 infer request bodies, one after another (JSON lines, or pretty-printed objects in a row).
fn read_requests(path: &Path, spec: &ModelSpec) -> Result<Vec<Block>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let model = ModelRef::parse(&spec.name, None).map_err(|e| e.to_string())?;
    // One request may hold more rows than the server takes at once; they are run in batches it would take.
    let mut unbounded = spec.clone();
    if unbounded.batches() {
        unbounded.max_batch_size = usize::MAX;
    }
    let line_of = |value: &RawValue| {
        let at = (value.get().as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
        text.get(..at)
            .map_or(0, |before| before.iter().filter(|&&b| b == b'\n').count())
            + 1
    };
    let mut blocks = Vec::new();
    for value in serde_json::Deserializer::from_slice(&text).into_iter::<&RawValue>() {
        let value = value.map_err(|e| format!("not JSON lines of infer requests: {e}"))?;
        let line = line_of(value);
        let fail = |why: String| format!("line {line}: {why}");
        let body = Bytes::copy_from_slice(value.get().as_bytes());
        let decoded = decode_request(model.clone(), &body, None).map_err(|e| fail(e.to_string()))?;
        let validated = validate(&unbounded, decoded.request.inputs).map_err(|e| fail(e.to_string()))?;
        let mut inputs = Vec::with_capacity(spec.inputs.len());
        for (declared, given) in spec.inputs.iter().zip(validated.inputs) {
            let Some(t) = given else {
                return Err(fail(format!(
                    "no input '{}': a profile needs every input, optional ones too",
                    declared.name
                )));
            };
            let shape = match spec.batches() {
                true => t.shape.get(1..).unwrap_or_default().to_vec(),
                false => t.shape.clone(),
            };
            inputs.push(Rows {
                shape,
                data: t.data.to_vec(),
            });
        }
        let rows = if spec.batches() { validated.batch } else { 1 };
        blocks.push(Block { rows, inputs });
    }
    if blocks.is_empty() {
        return Err("holds no infer requests".into());
    }
    Ok(blocks)
}

fn input_names(spec: &ModelSpec) -> String {
    spec.inputs
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Joins neighbouring blocks whose rows have the same shapes, so that short requests run in full batches.
fn merge(blocks: Vec<Block>) -> Vec<Block> {
    let mut merged: Vec<Block> = Vec::with_capacity(blocks.len());
    for block in blocks {
        match merged.last_mut() {
            Some(last) if last.inputs.iter().zip(&block.inputs).all(|(a, b)| a.shape == b.shape) => {
                last.rows += block.rows;
                for (a, b) in last.inputs.iter_mut().zip(block.inputs) {
                    a.data.extend_from_slice(&b.data);
                }
            }
            _ => merged.push(block),
        }
    }
    merged
}

// ---------------------------------------------------------------- NumPy arrays

/// An array as read: its shape, and its elements as the input's datatype, in row-major order.
struct Loaded {
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// Why reading an array as one element type did not work.
enum Attempt {
    /// It holds another type (its NumPy descriptor).
    OtherType(String),
    Failed(String),
}

/// Where an array is read from, as any element type.
trait ArraySource {
    fn read<T: Element>(&mut self) -> Result<ArrayD<T>, Attempt>;
}

struct NpyBytes<'a>(&'a [u8]);

impl ArraySource for NpyBytes<'_> {
    fn read<T: Element>(&mut self) -> Result<ArrayD<T>, Attempt> {
        ArrayD::<T>::read_npy(self.0).map_err(npy_attempt)
    }
}

struct NpzEntry<'a, R: Read + Seek> {
    npz: &'a mut NpzReader<R>,
    name: &'a str,
}

impl<R: Read + Seek> ArraySource for NpzEntry<'_, R> {
    fn read<T: Element>(&mut self) -> Result<ArrayD<T>, Attempt> {
        self.npz.by_name::<OwnedRepr<T>, IxDyn>(self.name).map_err(|e| match e {
            ReadNpzError::Npy(e) => npy_attempt(e),
            other => Attempt::Failed(other.to_string()),
        })
    }
}

fn npy_attempt(e: ReadNpyError) -> Attempt {
    match e {
        ReadNpyError::WrongDescriptor(d) => Attempt::OtherType(d.to_string()),
        other => Attempt::Failed(other.to_string()),
    }
}

/// What a number is, so that it converts only within its kind (a wider or narrower float, integer of the same
/// signedness): reference data of another kind is more likely a mistake than something to round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Float,
    Signed,
    Unsigned,
    Bool,
}

impl Family {
    fn of(t: DataType) -> Option<Self> {
        Some(match t {
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => Self::Float,
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => Self::Signed,
            DataType::Uint8 | DataType::Uint16 | DataType::Uint32 | DataType::Uint64 => Self::Unsigned,
            DataType::Bool => Self::Bool,
            DataType::Bytes => return None,
        })
    }

    fn numpy(self) -> &'static str {
        match self {
            Self::Float => "float32 or float64",
            Self::Signed => "int8, int16, int32 or int64",
            Self::Unsigned => "uint8, uint16, uint32 or uint64",
            Self::Bool => "bool",
        }
    }
}

#[derive(Clone, Copy)]
enum Num {
    Float(f64),
    Signed(i64),
    Unsigned(u64),
    Bool(bool),
}

/// An element type NumPy arrays are read as.
trait Element: ReadableElement + Copy {
    const NUMPY: &'static str;
    const FAMILY: Family;
    fn num(self) -> Num;
}

macro_rules! element {
    ($t:ty, $numpy:literal, $family:ident, $num:ident, $as:ty) => {
        impl Element for $t {
            const NUMPY: &'static str = $numpy;
            const FAMILY: Family = Family::$family;
            fn num(self) -> Num {
                Num::$num(<$as>::from(self))
            }
        }
    };
}

element!(f32, "float32", Float, Float, f64);
element!(f64, "float64", Float, Float, f64);
element!(i8, "int8", Signed, Signed, i64);
element!(i16, "int16", Signed, Signed, i64);
element!(i32, "int32", Signed, Signed, i64);
element!(i64, "int64", Signed, Signed, i64);
element!(u8, "uint8", Unsigned, Unsigned, u64);
element!(u16, "uint16", Unsigned, Unsigned, u64);
element!(u32, "uint32", Unsigned, Unsigned, u64);
element!(u64, "uint64", Unsigned, Unsigned, u64);
element!(bool, "bool", Bool, Bool, bool);

/// Reads an array of whichever element type it holds, as `input`'s datatype.
fn load(source: &mut impl ArraySource, input: &TensorSpec, what: &str) -> Result<Loaded, String> {
    if input.datatype == DataType::Bytes {
        return Err(format!(
            "input '{}' is BYTES (text), which NumPy files do not carry here: give JSON lines of infer requests",
            input.name
        ));
    }
    let mut descriptor = String::new();
    macro_rules! attempt {
        ($($t:ty),*) => {$(
            if let Some(loaded) = attempt::<$t>(source, input, what, &mut descriptor)? {
                return Ok(loaded);
            }
        )*};
    }
    attempt!(f32, f64, i64, i32, i16, i8, u8, u16, u32, u64, bool);
    Err(format!(
        "{what} holds elements of NumPy type {descriptor}; input '{}' is {}: give {} data",
        input.name,
        input.datatype,
        Family::of(input.datatype).map_or("", Family::numpy)
    ))
}

/// The array as element type `T`; `None` when it holds another (its NumPy descriptor left in `descriptor`).
fn attempt<T: Element>(
    source: &mut impl ArraySource,
    input: &TensorSpec,
    what: &str,
    descriptor: &mut String,
) -> Result<Option<Loaded>, String> {
    match source.read::<T>() {
        Ok(array) => convert(array, input, what).map(Some),
        Err(Attempt::OtherType(d)) => {
            *descriptor = d;
            Ok(None)
        }
        Err(Attempt::Failed(why)) => Err(format!("{what} cannot be read as a NumPy array: {why}")),
    }
}

fn convert<T: Element>(array: ArrayD<T>, input: &TensorSpec, what: &str) -> Result<Loaded, String> {
    let target = input.datatype;
    if Family::of(target) != Some(T::FAMILY) {
        return Err(format!(
            "{what} holds {} values; input '{}' is {}: give {} data",
            T::NUMPY,
            input.name,
            target,
            Family::of(target).map_or("", Family::numpy)
        ));
    }
    let mut data = Vec::with_capacity(array.len() * target.size().unwrap_or(1));
    // `iter` walks the logical (row-major) order whatever the file's layout.
    for &v in array.iter() {
        push(&mut data, v.num(), target).map_err(|value| {
            format!(
                "{what} holds {value}, which does not fit input '{}' ({target})",
                input.name
            )
        })?;
    }
    Ok(Loaded {
        shape: array.shape().to_vec(),
        data,
    })
}

/// Appends one number as `target`'s little-endian bytes; the number as text when it does not fit.
fn push(out: &mut Vec<u8>, v: Num, target: DataType) -> Result<(), String> {
    macro_rules! int {
        ($t:ty, $v:expr) => {
            out.extend_from_slice(&<$t>::try_from($v).map_err(|_| $v.to_string())?.to_le_bytes())
        };
    }
    match (v, target) {
        (Num::Float(v), DataType::Fp16) => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
        (Num::Float(v), DataType::Bf16) => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
        (Num::Float(v), DataType::Fp32) => out.extend_from_slice(&(v as f32).to_le_bytes()),
        (Num::Float(v), DataType::Fp64) => out.extend_from_slice(&v.to_le_bytes()),
        (Num::Signed(v), DataType::Int8) => int!(i8, v),
        (Num::Signed(v), DataType::Int16) => int!(i16, v),
        (Num::Signed(v), DataType::Int32) => int!(i32, v),
        (Num::Signed(v), DataType::Int64) => int!(i64, v),
        (Num::Unsigned(v), DataType::Uint8) => int!(u8, v),
        (Num::Unsigned(v), DataType::Uint16) => int!(u16, v),
        (Num::Unsigned(v), DataType::Uint32) => int!(u32, v),
        (Num::Unsigned(v), DataType::Uint64) => int!(u64, v),
        (Num::Bool(b), DataType::Bool) => out.push(u8::from(b)),
        // `convert` checked the family first.
        (Num::Float(v), _) => return Err(v.to_string()),
        (Num::Signed(v), _) => return Err(v.to_string()),
        (Num::Unsigned(v), _) => return Err(v.to_string()),
        (Num::Bool(b), _) => return Err(b.to_string()),
    }
    Ok(())
}

/// An array's rows for `input`: along its first dimension, each of the input's shape.
fn rows_of(loaded: Loaded, input: &TensorSpec, what: &str, model: &str) -> Result<(usize, Rows), String> {
    let Some((&rows, row)) = loaded.shape.split_first() else {
        return Err(format!(
            "{what} is a single number: reference rows go along an array's first dimension"
        ));
    };
    let row: Vec<i64> = row.iter().map(|&d| i64::try_from(d).unwrap_or(i64::MAX)).collect();
    let fits = row.len() == input.dims.len()
        && row
            .iter()
            .zip(&input.dims)
            .all(|(&got, &want)| want == -1 || got == want);
    if !fits {
        return Err(format!(
            "{what} has rows of shape {row:?} (array shape {:?}), but input '{}' of model '{model}' takes rows of \
             shape {:?}",
            loaded.shape, input.name, input.dims
        ));
    }
    if rows == 0 {
        return Err(format!("{what} has no rows"));
    }
    Ok((
        rows,
        Rows {
            shape: row,
            data: loaded.data,
        },
    ))
}

// ---------------------------------------------------------------- running the model

/// Runs blocks through the instance in batches and feeds the builder.
struct Runner<'a> {
    spec: &'a ModelSpec,
    instance: Box<dyn Instance>,
    builder: ProfileBuilder,
    tokenizer: Option<Tokenizer>,
    batch: usize,
    /// Per input, the batch's bytes in 8-byte words: fixed-size elements must be aligned for the backends.
    buffers: Vec<Vec<u64>>,
    outputs: Vec<BatchOutput>,
    /// Rows run so far.
    done: usize,
}

impl Runner<'_> {
    fn run(&mut self, block: &Block) -> Result<(), ProfilerError> {
        let spec = self.spec;
        // Where each row starts, per input (one past the end last).
        let starts: Vec<Vec<usize>> = block
            .inputs
            .iter()
            .zip(&spec.inputs)
            .map(|(rows, declared)| row_starts(rows, declared.datatype, block.rows))
            .collect();
        let step = if spec.batches() { self.batch } else { 1 };
        let mut first = 0;
        while first < block.rows {
            let n = step.min(block.rows - first);
            let mut lens = Vec::with_capacity(spec.inputs.len());
            let mut shapes = Vec::with_capacity(spec.inputs.len());
            for ((rows, at), (words, declared)) in block
                .inputs
                .iter()
                .zip(&starts)
                .zip(self.buffers.iter_mut().zip(&spec.inputs))
            {
                let bytes = &rows.data[at[first]..at[first + n]];
                words.clear();
                words.resize(bytes.len().div_ceil(8), 0);
                bytemuck::cast_slice_mut::<u64, u8>(words)[..bytes.len()].copy_from_slice(bytes);
                lens.push(bytes.len());
                let mut shape = Vec::with_capacity(rows.shape.len() + 1);
                if spec.batches() {
                    shape.push(n as i64);
                }
                shape.extend_from_slice(declared.reshape.as_deref().unwrap_or(&rows.shape));
                shapes.push(shape);
            }
            let inputs: Vec<BatchInput<'_>> = spec
                .inputs
                .iter()
                .zip(&self.buffers)
                .zip(lens.iter().zip(&shapes))
                .map(|((declared, words), (&len, shape))| BatchInput {
                    name: &declared.name,
                    datatype: declared.datatype,
                    shape,
                    data: &bytemuck::cast_slice::<u64, u8>(words)[..len],
                })
                .collect();
            let failed = |why: String| ProfilerError::Execute {
                model: spec.name.clone(),
                first: self.done + 1,
                last: self.done + n,
                why,
            };
            let instance = &mut self.instance;
            let outputs = &mut self.outputs;
            match catch_unwind(AssertUnwindSafe(|| instance.execute(&inputs, outputs))) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(panic) => return Err(failed(format!("the backend panicked: {}", panic_message(&panic)))),
            }
            if self.outputs.len() != spec.outputs.len() {
                return Err(failed(format!(
                    "it answered {} outputs, its config declares {}",
                    self.outputs.len(),
                    spec.outputs.len()
                )));
            }
            for (out, declared) in self.outputs.iter().zip(&spec.outputs) {
                if spec.batches() && out.shape.first() != Some(&(n as i64)) {
                    return Err(failed(format!(
                        "it answered output '{}' with shape {:?} for {n} rows",
                        declared.name, out.shape
                    )));
                }
            }
            let tensors: Vec<(DataType, &[u8])> = inputs
                .iter()
                .map(|i| (i.datatype, i.data))
                .chain(
                    spec.outputs
                        .iter()
                        .zip(&self.outputs)
                        .map(|(d, o)| (d.datatype, &o.data[..])),
                )
                .collect();
            self.builder.add(&tensors, n, self.tokenizer.as_ref()).map_err(failed)?;
            first += n;
            self.done += n;
        }
        Ok(())
    }
}

/// Where each of `count` rows starts in `rows.data`, and where the last ends.
fn row_starts(rows: &Rows, datatype: DataType, count: usize) -> Vec<usize> {
    if datatype.size().is_some() {
        // Fixed-size rows all have one length (checked as they were read).
        let row_bytes = rows.data.len() / count.max(1);
        return (0..=count).map(|i| i * row_bytes).collect();
    }
    let per_row: usize = rows.shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).product();
    let mut starts = Vec::with_capacity(count + 1);
    let mut at = 0;
    starts.push(at);
    for _ in 0..count {
        at += bytes_offset(&rows.data[at..], per_row);
        starts.push(at);
    }
    starts
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

// ---------------------------------------------------------------- writing

/// Writes the profile as the server will read it, after reading it back as the server would: a value JSON
/// cannot hold (a NaN in a centroid) or a misfit is reported here rather than when the version loads.
fn write(profile: &Profile, spec: &ModelSpec, data: &Path, path: &Path) -> Result<(), ProfilerError> {
    let unusable = |why: String| ProfilerError::Unusable {
        data: data.to_path_buf(),
        why,
    };
    let mut text = serde_json::to_string_pretty(profile).map_err(|e| unusable(e.to_string()))?;
    text.push('\n');
    let back: Profile = serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
    back.check(spec, path).map_err(|e| unusable(e.to_string()))?;
    let write_error = |e: std::io::Error| ProfilerError::Write {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    // Written beside and renamed into place, so a server polling the folder never reads half a profile.
    let file_name = path
        .file_name()
        .map_or_else(|| FILE_NAME.into(), |n| n.to_string_lossy().into_owned());
    let partial = path.with_file_name(format!(".{file_name}.{}.partial", std::process::id()));
    std::fs::write(&partial, text).map_err(write_error)?;
    std::fs::rename(&partial, path).map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        write_error(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(datatype: DataType, dims: Vec<i64>) -> TensorSpec {
        TensorSpec {
            name: "X".into(),
            datatype,
            dims,
            reshape: None,
            optional: false,
        }
    }

    #[test]
    fn numbers_convert_to_a_narrower_or_wider_type_of_their_own_kind_only() {
        let array = ArrayD::from_shape_vec(vec![1, 2], vec![1.5f64, -2.0]).expect("array");
        let loaded = convert(array, &spec(DataType::Fp32, vec![2]), "a").expect("float64 to FP32");
        assert_eq!(loaded.data, [1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        assert_eq!(loaded.shape, vec![1, 2]);

        let ints = ArrayD::from_shape_vec(vec![1, 2], vec![7i64, -1]).expect("array");
        let err = convert(ints.clone(), &spec(DataType::Fp32, vec![2]), "a").err();
        assert_eq!(
            err.as_deref(),
            Some("a holds int64 values; input 'X' is FP32: give float32 or float64 data")
        );
        let err = convert(ints, &spec(DataType::Uint8, vec![2]), "a").err();
        assert!(err.is_some_and(|e| e.contains("give uint8, uint16, uint32 or uint64 data")));

        let wide = ArrayD::from_shape_vec(vec![1, 1], vec![300i32]).expect("array");
        let err = convert(wide, &spec(DataType::Int8, vec![1]), "a").err();
        assert_eq!(err.as_deref(), Some("a holds 300, which does not fit input 'X' (INT8)"));
    }

    #[test]
    fn text_rows_start_where_their_first_element_does() {
        let mut data = Vec::new();
        // Two elements a row, each with its 4-byte length: rows of 4+1 + 4+2, 4+0 + 4+3, 4+1 + 4+2 bytes.
        for text in ["a", "bb", "", "ccc", "d", "ee"] {
            crate::tensor::push_bytes_element(&mut data, text.as_bytes());
        }
        let rows = Rows { shape: vec![2], data };
        assert_eq!(row_starts(&rows, DataType::Bytes, 3), vec![0, 11, 22, 33]);
        let fixed = Rows {
            shape: vec![2],
            data: vec![0; 24],
        };
        assert_eq!(row_starts(&fixed, DataType::Fp32, 3), vec![0, 8, 16, 24]);
    }

    #[test]
    fn neighbouring_requests_merge_while_their_rows_have_one_shape() {
        let block = |rows: usize, width: i64| Block {
            rows,
            inputs: vec![Rows {
                shape: vec![width],
                data: vec![0; rows * width as usize],
            }],
        };
        let merged = merge(vec![block(2, 3), block(1, 3), block(4, 5), block(1, 3)]);
        let seen: Vec<(usize, usize)> = merged.iter().map(|b| (b.rows, b.inputs[0].data.len())).collect();
        assert_eq!(seen, vec![(3, 9), (4, 20), (1, 3)]);
    }

    #[test]
    fn an_array_rows_must_have_the_input_shape_where_it_is_fixed() {
        let loaded = |shape: Vec<usize>| Loaded {
            data: vec![0; shape.iter().product::<usize>() * 4],
            shape,
        };
        let any_length = spec(DataType::Fp32, vec![-1, 4]);
        let (rows, r) = rows_of(loaded(vec![3, 7, 4]), &any_length, "a", "m").expect("fits");
        assert_eq!((rows, r.shape), (3, vec![7, 4]));
        let err = rows_of(loaded(vec![3, 7, 5]), &any_length, "a", "m").err();
        assert_eq!(
            err.as_deref(),
            Some("a has rows of shape [7, 5] (array shape [3, 7, 5]), but input 'X' of model 'm' takes rows of shape [-1, 4]")
        );
        assert!(
            rows_of(loaded(vec![]), &any_length, "a", "m").is_err(),
            "a 0-d array has no rows"
        );
        assert!(
            rows_of(loaded(vec![0, 7, 4]), &any_length, "a", "m").is_err(),
            "no rows"
        );
    }
}
