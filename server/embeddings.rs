//! Text embeddings as the OpenAI and TEI routes ask for them, transport-free: which loaded models are text
//! models, and texts in, vectors out. A request's texts go to `Serving::infer` as V2 requests of the model's one
//! BYTES input (split at `max_batch_size` and sent together), so they take the same routing, traffic split,
//! queue, token budget, limits, metrics and drift watch as any V2 request; nothing is served around them.
use std::sync::Arc;

use futures::future::try_join_all;

use crate::backend::text::{normalize_rows, Pooling, TextRecipe};
use crate::error::{InferError, InferResult};
use crate::model_name::ModelRef;
use crate::request::{InferRequest, ParamValue, Protocol};
use crate::scheduler::{BatchPolicy, DEFAULT_QUEUE_SIZE};
use crate::serving::Serving;
use crate::tensor::{push_bytes_element, DataType, Tensor};
use crate::version::LoadedVersion;

/// Most texts one request may carry (OpenAI's limit for `input`).
pub const MAX_INPUTS: usize = 2048;

/// The config parameter that lists the shorter lengths a model's vectors may be cut to (a Matryoshka model),
/// comma-separated: `dimensions` asks for one of them.
pub const DIMENSIONS_PARAMETER: &str = "embedding_dimensions";

/// A loaded text model, as `/v1/models` and TEI's `/info` describe it.
#[derive(Clone, Debug)]
pub struct TextModel {
    pub name: String,
    pub dim: usize,
    /// From its tokenizer's files; a model without a `tokenizer.json` (one that tokenizes in its graph) has none.
    pub max_length: Option<usize>,
    pub pooling: Option<Pooling>,
    pub normalize: bool,
    pub max_batch_size: usize,
    pub max_batch_tokens: usize,
    /// Requests its queue holds before it refuses more (over every priority level).
    pub max_queued: usize,
}

/// What a request asks to embed, and how.
#[derive(Clone, Debug)]
pub struct EmbedRequest {
    /// A model name, or `name:label` for a version or traffic label of it.
    pub model: String,
    pub texts: Vec<String>,
    /// Cut a too-long text to the model's length rather than refuse it.
    pub truncate: bool,
    /// `Some(false)`: the vectors as the model pools them, without normalisation.
    pub normalize: Option<bool>,
    /// Cut each vector to this length (a length the model allows).
    pub dimensions: Option<usize>,
}

/// The vectors of a request's texts, in order.
#[derive(Debug)]
pub struct Embeddings {
    pub model: String,
    pub dim: usize,
    /// `texts.len() * dim` values.
    pub vectors: Vec<f32>,
    /// Tokens the model read, over all texts.
    pub tokens: usize,
}

impl Embeddings {
    pub fn rows(&self) -> impl Iterator<Item = &[f32]> {
        self.vectors.chunks(self.dim.max(1))
    }
}

/// The version a request naming `model` reaches (`name` or `name:label`), if it is a text model.
pub fn resolve(serving: &Serving, model: &str) -> InferResult<(ModelRef, Arc<LoadedVersion>)> {
    let table = serving.routes().load();
    // A name that holds a ':' of its own is taken whole when such a model is loaded.
    let reference = match model.rsplit_once(':') {
        Some((name, label)) if table.entry(model).is_err() => ModelRef::parse(name, Some(label))?,
        _ => ModelRef::parse(model, None)?,
    };
    let version = table.route(&reference.name, reference.version(), None)?.clone();
    if !version.spec.takes_text() {
        return Err(InferError::invalid(format!(
            "model '{}' is not a text embedding model (one BYTES input, one FP32 output)",
            reference.name
        )));
    }
    Ok((reference, version))
}

/// How many values a text model's vectors hold: its one output's last dimension.
fn vector_len(version: &LoadedVersion) -> usize {
    version.spec.outputs[0].dims.last().map_or(0, |&d| d.max(0) as usize)
}

/// The text model of a version, if it is one.
fn describe(version: &LoadedVersion) -> Option<TextModel> {
    if !version.spec.takes_text() {
        return None;
    }
    let recipe = version.text.as_deref();
    let policy = BatchPolicy::from_config(&version.config).ok();
    Some(TextModel {
        name: version.spec.name.clone(),
        dim: vector_len(version),
        max_length: recipe.map(|r| r.max_length),
        pooling: recipe.map(|r| r.pooling),
        normalize: recipe.is_some_and(|r| r.normalize),
        max_batch_size: version.spec.max_batch_size,
        max_batch_tokens: policy.as_ref().map_or(0, |p| p.max_batch_tokens),
        max_queued: policy.map_or(DEFAULT_QUEUE_SIZE, |p| p.levels.iter().map(|l| l.max_queue_size).sum()),
    })
}

/// Every loaded text model (the version a request naming none reaches), by name.
pub fn text_models(serving: &Serving) -> Vec<TextModel> {
    let table = serving.routes().load();
    let mut names: Vec<&String> = table.models.keys().collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| table.route(name, None, None).ok().and_then(|v| describe(v)))
        .collect()
}

/// The text model a request naming `model` reaches.
pub fn text_model(serving: &Serving, model: &str) -> InferResult<TextModel> {
    let (_, version) = resolve(serving, model)?;
    describe(&version).ok_or_else(|| InferError::invalid(format!("model '{model}' is not a text model")))
}

/// The model TEI's routes serve: `configured` (`--tei-model`), else the only text model loaded.
pub fn tei_model(serving: &Serving, configured: Option<&str>) -> InferResult<String> {
    if let Some(name) = configured {
        return Ok(name.to_string());
    }
    let table = serving.routes().load();
    let mut names: Vec<&String> = table
        .models
        .keys()
        .filter(|name| table.route(name, None, None).is_ok_and(|v| v.spec.takes_text()))
        .collect();
    names.sort();
    match &names[..] {
        [name] => Ok(name.to_string()),
        [] => Err(InferError::Unavailable("no text embedding model is loaded".into())),
        _ => Err(InferError::invalid(format!(
            "{} text models are loaded ({}): start inferd with --tei-model to say which one the TEI routes serve",
            names.len(),
            names.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The text model's tokenizer, for `/tokenize` and token ids in.
pub fn recipe(serving: &Serving, model: &str) -> InferResult<Arc<TextRecipe>> {
    let (_, version) = resolve(serving, model)?;
    version.text.clone().ok_or_else(|| {
        InferError::invalid(format!(
            "model '{model}' has no tokenizer.json beside its weights, so it cannot take token ids or tokenize"
        ))
    })
}

/// The text token ids (in `model`'s own vocabulary) stand for, so that token ids in can go where text goes.
pub fn decode(serving: &Serving, model: &str, ids: &[u32]) -> InferResult<String> {
    Ok(recipe(serving, model)?.decode(ids)?)
}

/// The lengths `dimensions` may take for a model: its full length, and any its config lists.
fn allowed_dimensions(version: &LoadedVersion, full: usize) -> InferResult<Vec<usize>> {
    let mut allowed = vec![full];
    if let Some(p) = version.config.parameters.get(DIMENSIONS_PARAMETER) {
        for part in p.string_value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match part.parse::<usize>() {
                Ok(d) if d > 0 && d <= full => allowed.push(d),
                _ => {
                    return Err(InferError::Internal(format!(
                        "model '{}': parameter {DIMENSIONS_PARAMETER} holds '{part}', not a length up to {full}",
                        version.spec.name
                    )))
                }
            }
        }
    }
    Ok(allowed)
}

/// The vectors of `request.texts`, in order.
pub async fn embed(serving: &Serving, request: EmbedRequest) -> InferResult<Embeddings> {
    if request.texts.is_empty() {
        return Err(InferError::invalid("no text to embed: 'input' is empty"));
    }
    if request.texts.len() > MAX_INPUTS {
        return Err(InferError::invalid(format!(
            "{} texts in one request; at most {MAX_INPUTS}",
            request.texts.len()
        )));
    }
    if let Some(i) = request.texts.iter().position(String::is_empty) {
        return Err(InferError::invalid(format!("text {i} is empty")));
    }
    let (reference, version) = resolve(serving, &request.model)?;
    let spec = &version.spec;
    let normalizes = version.text.as_ref().is_some_and(|r| r.normalize);
    if request.normalize == Some(false) && normalizes {
        return Err(InferError::invalid(format!(
            "model '{}' normalises its vectors itself (its modules.json lists a Normalize module): normalize=false \
             cannot be honoured",
            spec.name
        )));
    }
    let full = vector_len(&version);
    let dim = match request.dimensions {
        None => full,
        Some(d) if allowed_dimensions(&version, full)?.contains(&d) => d,
        Some(d) => {
            return Err(InferError::invalid(format!(
                "model '{}' gives vectors of {full} values and cannot cut them to {d} (dimensions)",
                spec.name
            )))
        }
    };
    let input = &spec.inputs[0];
    // A model that batches takes up to max_batch_size texts per request; one that does not, one text.
    let chunk = spec.max_batch_size.max(1);
    let requests = request.texts.chunks(chunk).map(|texts| {
        let mut data = Vec::with_capacity(texts.iter().map(|t| t.len() + 4).sum());
        for t in texts {
            push_bytes_element(&mut data, t.as_bytes());
        }
        let mut shape: Vec<i64> = if spec.batches() {
            vec![texts.len() as i64]
        } else {
            Vec::new()
        };
        shape.extend(input.dims.iter().map(|&d| d.max(1)));
        let mut infer = InferRequest::new(reference.clone(), Protocol::Http);
        infer.inputs.push(Tensor {
            name: input.name.clone(),
            datatype: DataType::Bytes,
            shape,
            data: data.into(),
        });
        infer
            .parameters
            .push(("truncate".into(), ParamValue::Bool(request.truncate)));
        serving.infer(infer)
    });
    let answers = try_join_all(requests).await?;
    let mut embeddings = Embeddings {
        model: spec.name.clone(),
        dim,
        vectors: Vec::with_capacity(request.texts.len() * dim),
        tokens: 0,
    };
    for answer in answers {
        let output = answer
            .outputs
            .first()
            .ok_or_else(|| InferError::Internal(format!("model '{}' gave no output", spec.name)))?;
        if output.datatype != DataType::Fp32 || full == 0 || !output.data.len().is_multiple_of(4 * full) {
            return Err(InferError::Internal(format!(
                "model '{}' gave {} bytes of {}, not rows of {full} FP32 values",
                spec.name,
                output.data.len(),
                output.datatype
            )));
        }
        for row in output.data.chunks_exact(4 * full) {
            let start = embeddings.vectors.len();
            embeddings.vectors.extend(
                row[..4 * dim]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            let cut = dim < full;
            if (cut && normalizes) || (request.normalize == Some(true) && !normalizes) {
                normalize_rows(&mut embeddings.vectors[start..], dim);
            }
        }
        embeddings.tokens += answer.text_tokens.map_or(0, |t| t.total);
    }
    Ok(embeddings)
}
