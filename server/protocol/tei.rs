//! Hugging Face text-embeddings-inference (TEI)'s routes: `POST /embed` (and `POST /`, as TEI answers it for an
//! embedding model), `POST /tokenize` and `GET /info`, with TEI's shapes and its error shape (`{"error",
//! "error_type"}`), so TEI's clients work unchanged. TEI serves one model: here the one `--tei-model` names, or
//! the only text model loaded.
use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::text_input::texts;
use super::Api;
use crate::backend::text::Pooling;
use crate::embeddings::{self, EmbedRequest, MAX_INPUTS};
use crate::error::InferError;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/", post(embed))
        .route("/embed", post(embed))
        .route("/tokenize", post(tokenize))
        .route("/info", get(info))
}

/// TEI's error kinds.
#[derive(Clone, Copy)]
enum Kind {
    Validation,
    Empty,
    Overloaded,
    Unhealthy,
    Backend,
    Unauthorized,
    NotFound,
}

/// An error in TEI's shape.
pub struct TeiError(Kind, InferError);

impl From<InferError> for TeiError {
    fn from(e: InferError) -> Self {
        let kind = match &e {
            InferError::NotFound(_) => Kind::NotFound,
            InferError::ResourceExhausted(_) => Kind::Overloaded,
            InferError::Unavailable(_) | InferError::Timeout(_) => Kind::Unhealthy,
            InferError::Unauthenticated(_) => Kind::Unauthorized,
            InferError::Internal(_) => Kind::Backend,
            InferError::InvalidArgument(_) | InferError::TooLarge(_) | InferError::TextTooLong { .. } => {
                Kind::Validation
            }
        };
        Self(kind, e)
    }
}

impl IntoResponse for TeiError {
    fn into_response(self) -> Response {
        let (status, kind) = match (self.0, &self.1) {
            // TEI refuses a text over the model's length with 413.
            (_, InferError::TextTooLong { .. } | InferError::TooLarge(_)) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "Validation")
            }
            (Kind::Validation, _) => (StatusCode::BAD_REQUEST, "Validation"),
            (Kind::Empty, _) => (StatusCode::BAD_REQUEST, "Empty"),
            (Kind::Overloaded, _) => (StatusCode::TOO_MANY_REQUESTS, "Overloaded"),
            (Kind::Unhealthy, _) => (StatusCode::SERVICE_UNAVAILABLE, "Unhealthy"),
            (Kind::Backend, _) => (StatusCode::INTERNAL_SERVER_ERROR, "Backend"),
            (Kind::Unauthorized, _) => (StatusCode::UNAUTHORIZED, "Unauthorized"),
            (Kind::NotFound, _) => (StatusCode::NOT_FOUND, "Validation"),
        };
        let message = match &self.1 {
            InferError::TextTooLong { tokens, max, .. } => {
                format!("Input validation error: `inputs` must have less than {max} tokens. Given: {tokens}")
            }
            e => e.to_string(),
        };
        (status, Json(json!({ "error": message, "error_type": kind }))).into_response()
    }
}

/// A request the `--api-key` lets through, with the name of the model the TEI routes serve.
struct Served(String);

impl FromRequestParts<Api> for Served {
    type Rejection = TeiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, TeiError> {
        api.text.api_key.check(parts)?;
        Ok(Served(embeddings::tei_model(
            &api.serving,
            api.text.tei_model.as_deref(),
        )?))
    }
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Embed {
    inputs: Value,
    #[serde(default = "yes")]
    normalize: bool,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    truncation_direction: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, TeiError> {
    serde_json::from_slice(body).map_err(|e| {
        TeiError(
            Kind::Validation,
            InferError::invalid(format!("the request body is not valid: {e}")),
        )
    })
}

/// The texts of a TEI request's `inputs`: none empty, and no more than a client batch.
fn inputs(api: &Api, model: &str, value: &Value) -> Result<Vec<String>, TeiError> {
    let texts =
        texts(value, "inputs", |ids| embeddings::decode(&api.serving, model, ids)).map_err(|e| match value {
            Value::Array(a) if a.is_empty() => TeiError(Kind::Empty, e),
            _ => TeiError::from(e),
        })?;
    if texts.iter().any(String::is_empty) {
        return Err(TeiError(Kind::Empty, InferError::invalid("`inputs` cannot be empty")));
    }
    if texts.len() > MAX_INPUTS {
        return Err(InferError::TooLarge(format!(
            "batch size {} > maximum allowed batch size {MAX_INPUTS}",
            texts.len()
        ))
        .into());
    }
    Ok(texts)
}

async fn embed(State(api): State<Api>, Served(model): Served, body: Bytes) -> Result<Response, TeiError> {
    let request: Embed = parse(&body)?;
    if request.truncation_direction.as_deref().is_some_and(|d| d != "Right") {
        return Err(InferError::invalid("truncation_direction: only 'Right' is supported").into());
    }
    let texts = inputs(&api, &model, &request.inputs)?;
    let embedded = embeddings::embed(
        &api.serving,
        EmbedRequest {
            model,
            texts,
            truncate: request.truncate.unwrap_or(false),
            normalize: Some(request.normalize),
            dimensions: request.dimensions,
        },
    )
    .await?;
    // Each value as the shortest text of its f32.
    Ok(Json(embedded.rows().collect::<Vec<&[f32]>>()).into_response())
}

#[derive(Deserialize)]
struct Tokenize {
    inputs: Value,
    #[serde(default = "yes")]
    add_special_tokens: bool,
}

async fn tokenize(State(api): State<Api>, Served(model): Served, body: Bytes) -> Result<Json<Value>, TeiError> {
    let request: Tokenize = parse(&body)?;
    let texts = inputs(&api, &model, &request.inputs)?;
    let recipe = embeddings::recipe(&api.serving, &model)?;
    let mut all = Vec::with_capacity(texts.len());
    for text in &texts {
        let tokens = recipe
            .tokens(text, request.add_special_tokens)
            .map_err(InferError::from)?;
        all.push(Value::Array(
            tokens
                .into_iter()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "text": t.text,
                        "special": t.special,
                        "start": t.span.map(|s| s.0),
                        "stop": t.span.map(|s| s.1),
                    })
                })
                .collect(),
        ));
    }
    Ok(Json(Value::Array(all)))
}

async fn info(State(api): State<Api>, Served(name): Served) -> Result<Json<Value>, TeiError> {
    let model = embeddings::text_model(&api.serving, &name)?;
    Ok(Json(json!({
        "model_id": model.name,
        "model_sha": Value::Null,
        "model_dtype": "float32",
        "model_type": { "embedding": { "pooling": model.pooling.map(Pooling::name) } },
        // The server's cap on requests in flight, else what the model's queue holds.
        "max_concurrent_requests": match api.serving.max_inflight() {
            0 => model.max_queued,
            n => n,
        },
        "max_input_length": model.max_length,
        "max_batch_tokens": match (model.max_batch_tokens, model.max_length) {
            (0, Some(length)) => Some(model.max_batch_size.max(1) * length),
            (0, None) => None,
            (budget, _) => Some(budget),
        },
        "max_batch_requests": model.max_batch_size,
        "max_client_batch_size": MAX_INPUTS,
        "auto_truncate": false,
        "tokenization_workers": 1,
        "version": env!("CARGO_PKG_VERSION"),
        "sha": Value::Null,
        "docker_label": Value::Null,
    })))
}
