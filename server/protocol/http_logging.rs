//! The REST routes of Triton's logging extension: `GET /v2/logging` answers the log settings, `POST` changes
//! the settings its JSON body names and answers them all. A change needs the admin token when the server has
//! one (as trace settings do).
use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::Api;
use crate::admin::Caller;
use crate::error::{InferError, InferResult};
use crate::logging::{control, LogUpdate};

pub fn routes() -> Router<Api> {
    Router::new().route("/v2/logging", get(read).post(change))
}

async fn read() -> InferResult<Json<serde_json::Value>> {
    Ok(Json(control()?.settings().to_json()))
}

async fn change(
    State(api): State<Api>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> InferResult<Json<serde_json::Value>> {
    let caller = Caller {
        peer: peer.map(|p| p.0 .0),
        authorization: headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()),
    };
    api.admin.authorize_settings(&caller, "POST log settings")?;
    let control = control()?;
    // An empty body changes nothing, as an empty settings object would.
    let update = if body.iter().all(u8::is_ascii_whitespace) {
        LogUpdate::default()
    } else {
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| InferError::invalid(format!("failed to parse the log settings JSON: {e}")))?;
        LogUpdate::from_json(&json)?
    };
    Ok(Json(control.update(&update).to_json()))
}
