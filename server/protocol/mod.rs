//! The protocol front-ends: the KServe V2 / Open Inference Protocol over HTTP/REST (with Triton's binary
//! tensor extension) and over gRPC. Both decode into `InferRequest` and call `Core`; neither knows about
//! batching or backends.
pub mod binary;
pub mod grpc;
pub mod grpc_codec;
pub mod grpc_limit;
pub mod grpc_tensors;
pub mod http;
pub mod json;
