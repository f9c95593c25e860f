//! The protocol front-ends: the KServe V2 / Open Inference Protocol over HTTP/REST (with Triton's binary
//! tensor extension) and over gRPC. Both decode into `InferRequest` (checking every model name they are given)
//! and call `Serving` for requests and `Admin` for changes; neither knows about batching or backends.
use std::sync::Arc;

use crate::admin::Admin;
use crate::serving::Serving;

pub mod binary;
pub mod dashboard;
pub mod grpc;
pub mod grpc_codec;
pub mod grpc_limit;
pub mod grpc_logging;
pub mod grpc_stream_order;
pub mod grpc_tensors;
pub mod grpc_write_buffer;
pub mod http;
pub mod http_logging;
pub mod http_shared_memory;
pub mod http_trace;
pub mod json;
pub mod openai;
pub mod tei;
pub mod text_input;

/// What the front-ends serve from.
#[derive(Clone)]
pub struct Api {
    pub serving: Arc<Serving>,
    pub admin: Arc<Admin>,
    /// The OpenAI and TEI routes' settings.
    pub text: Arc<TextRoutes>,
}

/// How the OpenAI and TEI routes are served.
#[derive(Clone, Debug, Default)]
pub struct TextRoutes {
    /// The key they want (`--api-key`).
    pub api_key: text_input::ApiKey,
    /// The model TEI's routes serve (`--tei-model`); without one, the only text model loaded.
    pub tei_model: Option<String>,
}
