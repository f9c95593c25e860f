//! The REST routes of Triton's trace extension: `GET`/`POST /v2/trace/setting` (server-wide) and
//! `/v2/models/{model}/trace/setting` (one model's, over the global ones). A `POST` answers with the settings
//! then in force; a model `POST` with no settings drops the model's own. Changes need the admin token when the
//! server has one.
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method};
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::Api;
use crate::admin::Caller;
use crate::error::{InferError, InferResult};
use crate::model_name::ModelRef;
use crate::request_trace::{settings_json, update_from_json, Update};
use crate::serving::Serving;

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/v2/trace/setting", get(global).post(global))
        .route("/v2/models/{model}/trace/setting", get(model).post(model))
}

/// A model the trace settings name must be served (Triton's check and wording; the gRPC front-end's too).
pub(super) fn served_model(serving: &Serving, name: &str) -> InferResult<String> {
    let unknown = || InferError::invalid(format!("Request for unknown model : {name}"));
    let model = ModelRef::parse(name, None)?;
    match serving.model_ready(&model) {
        Ok(true) => Ok(model.name.to_string()),
        Ok(false) | Err(InferError::NotFound(_)) => Err(unknown()),
        Err(e) => Err(e),
    }
}

fn update_of(body: &Bytes) -> InferResult<Update> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return update_from_json(&serde_json::json!({}));
    }
    let json: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| InferError::invalid(format!("failed to parse the trace settings JSON: {e}")))?;
    update_from_json(&json)
}

async fn setting(
    api: Api,
    model: Option<String>,
    method: Method,
    peer: Option<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> InferResult<Json<serde_json::Value>> {
    let model = model.map(|m| served_model(&api.serving, &m)).transpose()?;
    if method == Method::POST {
        let caller = Caller {
            peer,
            authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
        };
        let what = format!("POST trace settings of {}", model.as_deref().unwrap_or("the server"));
        api.admin.authorize_settings(&caller, &what)?;
        api.serving.tracer().update(model.as_deref(), update_of(&body)?);
    }
    Ok(Json(settings_json(&api.serving.tracer().settings(model.as_deref()))))
}

async fn global(
    State(api): State<Api>,
    method: Method,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> InferResult<Json<serde_json::Value>> {
    setting(api, None, method, peer.map(|p| p.0 .0), headers, body).await
}

async fn model(
    State(api): State<Api>,
    Path(model): Path<String>,
    method: Method,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> InferResult<Json<serde_json::Value>> {
    setting(api, Some(model), method, peer.map(|p| p.0 .0), headers, body).await
}
