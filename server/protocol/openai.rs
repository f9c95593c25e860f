//! OpenAI's embeddings API over REST: `POST /v1/embeddings`, `GET /v1/models` and `GET /v1/models/{model}`,
//! with OpenAI's request and answer shapes and its error shape (`{"error": {"message", "type", "param",
//! "code"}}`), so the `openai` package and what is built on it (LangChain's `OpenAIEmbeddings`) work unchanged.
//! Every model with one BYTES text input and one FP32 output is offered; `model` may be `name:label`.
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::text_input::texts;
use super::Api;
use crate::embeddings::{self, EmbedRequest};
use crate::error::InferError;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v1/embeddings", post(create_embeddings))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(retrieve_model))
}

/// An error in OpenAI's shape.
pub struct OpenAiError(InferError);

impl From<InferError> for OpenAiError {
    fn from(e: InferError) -> Self {
        Self(e)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status = self.0.http_status();
        let (kind, code) = match &self.0 {
            InferError::TextTooLong { .. } => ("invalid_request_error", Some("context_length_exceeded")),
            InferError::NotFound(_) => ("invalid_request_error", Some("model_not_found")),
            InferError::Unauthenticated(_) => ("invalid_request_error", Some("invalid_api_key")),
            InferError::ResourceExhausted(_) => ("requests", Some("rate_limit_exceeded")),
            _ if status.is_server_error() => ("server_error", None),
            _ => ("invalid_request_error", None),
        };
        let message = match &self.0 {
            // OpenAI's own wording, which clients and users recognise.
            InferError::TextTooLong { tokens, max, .. } => format!(
                "This model's maximum context length is {max} tokens, however you requested {tokens} tokens. \
                 Please reduce your prompt."
            ),
            e => e.to_string(),
        };
        let body = json!({ "error": { "message": message, "type": kind, "param": Value::Null, "code": code } });
        (status, Json(body)).into_response()
    }
}

/// A request the `--api-key` lets through.
struct Keyed;

impl FromRequestParts<Api> for Keyed {
    type Rejection = OpenAiError;

    async fn from_request_parts(parts: &mut Parts, api: &Api) -> Result<Self, OpenAiError> {
        api.text.api_key.check(parts)?;
        Ok(Keyed)
    }
}

#[derive(Deserialize)]
struct CreateEmbeddings {
    input: Value,
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    /// OpenAI's end-user id, for abuse monitoring: accepted and not used.
    #[serde(default)]
    #[allow(dead_code)]
    user: Option<String>,
}

async fn create_embeddings(State(api): State<Api>, _: Keyed, body: Bytes) -> Result<Response, OpenAiError> {
    let request: CreateEmbeddings = serde_json::from_slice(&body)
        .map_err(|e| InferError::invalid(format!("the request body is not a valid embeddings request: {e}")))?;
    let base64 = match request.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(
                InferError::invalid(format!("encoding_format must be 'float' or 'base64', got '{other}'")).into(),
            )
        }
    };
    let texts = texts(&request.input, "input", |ids| {
        embeddings::decode(&api.serving, &request.model, ids)
    })?;
    let embedded = embeddings::embed(
        &api.serving,
        EmbedRequest {
            model: request.model.clone(),
            texts,
            truncate: false,
            normalize: None,
            dimensions: request.dimensions,
        },
    )
    .await?;
    let data: Vec<EmbeddingObject<'_>> = embedded
        .rows()
        .enumerate()
        .map(|(index, row)| EmbeddingObject {
            object: "embedding",
            embedding: if base64 {
                Embedding::Base64(
                    base64::engine::general_purpose::STANDARD.encode(bytemuck::cast_slice::<f32, u8>(row)),
                )
            } else {
                Embedding::Float(row)
            },
            index,
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list",
        data,
        model: &request.model,
        usage: Usage {
            prompt_tokens: embedded.tokens,
            total_tokens: embedded.tokens,
        },
    })
    .into_response())
}

/// The answer's shapes, serialised straight from the vectors (each value as the shortest text of its f32).
#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingObject<'a>>,
    model: &'a str,
    usage: Usage,
}

#[derive(Serialize)]
struct EmbeddingObject<'a> {
    object: &'static str,
    embedding: Embedding<'a>,
    index: usize,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Embedding<'a> {
    Float(&'a [f32]),
    /// The little-endian bytes of the f32 values, as the `openai` package decodes them.
    Base64(String),
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: usize,
    total_tokens: usize,
}

fn model_object(name: &str) -> Value {
    json!({ "id": name, "object": "model", "created": 0, "owned_by": "inferd" })
}

async fn list_models(State(api): State<Api>, _: Keyed) -> Json<Value> {
    let data: Vec<Value> = embeddings::text_models(&api.serving)
        .iter()
        .map(|m| model_object(&m.name))
        .collect();
    Json(json!({ "object": "list", "data": data }))
}

async fn retrieve_model(
    State(api): State<Api>,
    _: Keyed,
    Path(model): Path<String>,
) -> Result<Json<Value>, OpenAiError> {
    embeddings::resolve(&api.serving, &model).map_err(|e| match e {
        InferError::InvalidArgument(m) => InferError::NotFound(m),
        e => e,
    })?;
    Ok(Json(model_object(&model)))
}
