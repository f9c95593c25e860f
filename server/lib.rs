//! inferd: a model inference server for the KServe V2 / Open Inference Protocol.
//!
//! A request's path, and the modules along it (each depends only on those after it):
//! - `protocol`: the front-ends (`http`, `grpc`) decode a request into an `InferRequest`, checking the model
//!   name it carries (`model_name`), and call `serving` (requests) or `admin` (changes).
//! - `serving`: admission, size limits, routing through the arc-swapped `routing` table (`traffic` policies:
//!   labels, splits, shadows), validation (`validate`) and output selection (`classification`); inputs read
//!   from and outputs written into Triton's system `shared_memory` regions.
//! - `admin`: who may change what is served (`admin::access`), the repository API and traffic changes, on top
//!   of `lifecycle` (load, install, retire; used alike by start-up, the repository API and the poll `watch`er),
//!   which asks the `registry` where a model is (local folders; object storage and MLflow through a local cache)
//!   and reads it as a `repository` folder.
//! - `scheduler`: a loaded `version`'s queue, batcher and instance threads, owning each request's stay.
//! - `backend`: ONNX Runtime, candle and the built-in identity backend executing batches; `spec` is what a
//!   model declares.
//!
//! Beside the path: `stats` and `metrics` (Prometheus), `rollback` (the traffic guard), `request_log`,
//! `request_trace` (Triton's trace extension, exported with OpenTelemetry), `logging` (the log subscriber and
//! Triton's logging extension), `tls`, `gpu`, `memory`, and `server` (starting and stopping it all from the
//! `cli`).
//! Offline: `profiler` (`inferd profile`) makes from reference data the profile `health` watches drift against.
pub mod accept;
pub mod admin;
pub mod backend;
pub mod classification;
pub mod cli;
pub mod embeddings;
pub mod error;
pub mod gpu;
pub mod health;
pub mod io_threads;
pub mod lifecycle;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod model_name;
pub mod profiler;
pub mod proto;
pub mod protocol;
pub mod registry;
pub mod repository;
pub mod request;
pub mod request_log;
pub mod request_trace;
pub mod rollback;
pub mod routing;
pub mod scheduler;
pub mod server;
pub mod serving;
pub mod shared_memory;
pub mod spec;
pub mod stats;
pub mod tensor;
pub mod tls;
pub mod tokens;
pub mod traffic;
pub mod validate;
pub mod version;
pub mod watch;
