//! One log line per failed request, naming its id, model, version, protocol and why it failed (and, at debug
//! level, one per served request). A request without an id gets one generated for its line.
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::InferError;
use crate::model_name::shown;
use crate::request::{InferRequest, Protocol};
use crate::stats::FailReason;

static GENERATED: AtomicU64 = AtomicU64::new(1);

fn generated_id() -> String {
    format!("inferd-{}", GENERATED.fetch_add(1, Ordering::Relaxed))
}

/// A request that was decoded and failed on its way through the server.
pub fn failed(req: &InferRequest, err: &InferError) {
    let id = if req.id.is_empty() {
        generated_id()
    } else {
        req.id.clone()
    };
    line(
        req.protocol,
        &id,
        &req.model.name,
        req.model.version().unwrap_or(""),
        err,
    );
}

/// A request whose body could not be decoded (its id is unknown). Its model name is unchecked: written
/// escaped and cut short, so a hostile one cannot forge or flood log lines.
pub fn undecodable(protocol: Protocol, model: &str, id: Option<&str>, err: &InferError) {
    let id = id.filter(|i| !i.is_empty()).map_or_else(generated_id, str::to_string);
    line(protocol, &id, &shown(model, 256), "", err);
}

pub fn served(req: &InferRequest, version: &str) {
    tracing::debug!(request_id = %req.id, model = %req.model.name, version, protocol = req.protocol.label(), "request served");
}

fn line(protocol: Protocol, id: &str, model: &str, version: &str, err: &InferError) {
    let (protocol, reason, status) = (
        protocol.label(),
        FailReason::of(err).label(),
        err.http_status().as_u16(),
    );
    // Server-side failures need attention; refusals under load and clients' mistakes are routine.
    match err {
        InferError::Internal(_) => {
            tracing::error!(request_id = %id, model, version, protocol, reason, status, error = %err, "request failed")
        }
        InferError::Unavailable(_) | InferError::Timeout(_) | InferError::ResourceExhausted(_) => {
            tracing::warn!(request_id = %id, model, version, protocol, reason, status, error = %err, "request failed")
        }
        _ => tracing::info!(request_id = %id, model, version, protocol, reason, status, error = %err, "request failed"),
    }
}
