//! inferd: a model inference server for the KServe V2 / Open Inference Protocol.
//!
//! A request's path: a protocol front-end (`protocol::http`, `protocol::grpc`) decodes it into an
//! `InferRequest`; `core::Core` validates it against the model (`validate`), routes it through the
//! arc-swapped `routing` table to a loaded version, whose `scheduler` batches it onto a `backend` instance
//! thread; the outputs come back through a oneshot channel and are encoded by the same front-end.
pub mod backend;
pub mod cli;
pub mod control;
pub mod core;
pub mod error;
pub mod gpu;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod proto;
pub mod protocol;
pub mod repository;
pub mod request;
pub mod request_log;
pub mod rollback;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod stats;
pub mod tensor;
pub mod tls;
pub mod traffic;
pub mod validate;
pub mod watch;
