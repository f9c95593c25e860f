//! Request limits: a body over `--http-max-body-bytes`, a gRPC message over `--grpc-max-message-bytes` and a
//! request whose shapes add up to more than `--max-tensor-elements` are refused with 413 / RESOURCE_EXHAUSTED
//! (and a JSON error over HTTP), before the server reads or sizes anything by them; requests within the
//! limits are served.
mod common;

use common::*;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::ModelInferRequest;
use serde_json::json;

fn limited() -> TestServer {
    spawn(args(&[
        "--model-repository",
        path(&root().join("models")),
        "--http-max-body-bytes",
        "20000",
        "--max-tensor-elements",
        "100",
    ]))
    .expect("server starts")
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_with_a_json_error() {
    let s = limited();
    let big = vec![b' '; 30_000];
    let resp = post_raw(&format!("{}/v2/models/mlp/infer", s.http), big, None).await;
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.expect("a JSON error");
    assert!(v["error"].as_str().unwrap().contains("--http-max-body-bytes"), "{v}");
}

#[tokio::test]
async fn shapes_over_the_element_limit_get_413_over_http_and_resource_exhausted_over_grpc() {
    let s = limited();
    let url = format!("{}/v2/models/mlp/infer", s.http);
    // One row (64 elements) is within the limit of 100; two rows (128) are not.
    let body = |rows: usize| json!({"inputs": [{"name": "INPUT", "shape": [rows, 64], "datatype": "FP32", "data": random_f32(1, rows * 64)}]});
    assert_eq!(post_json(&url, &body(1)).await.0, 200);
    let (status, v) = post_json(&url, &body(2)).await;
    assert_eq!(status, 413, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("more than 100 tensor elements"),
        "{v}"
    );

    // A shape that claims far more than it carries is refused by its shape alone.
    let request = ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor::raw("INPUT", "FP32", vec![1 << 40, 64])],
        raw_input_contents: vec![bytes::Bytes::from(vec![0u8; 256])],
        ..Default::default()
    };
    let err = grpc(&s).await.model_infer(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
}

/// A `simple` request whose first raw input carries `bytes` bytes (`simple` wants 64 per row).
fn simple_request(bytes: usize) -> ModelInferRequest {
    let (a, b) = simple_inputs(1);
    let mut first = i32_bytes(&a);
    first.resize(bytes.max(first.len()), 0);
    ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![
            InferInputTensor::raw("INPUT0", "INT32", vec![1, 16]),
            InferInputTensor::raw("INPUT1", "INT32", vec![1, 16]),
        ],
        raw_input_contents: vec![bytes::Bytes::from(first), bytes::Bytes::from(i32_bytes(&b))],
        ..Default::default()
    }
}

fn small_grpc_messages() -> TestServer {
    spawn(args(&[
        "--model-repository",
        path(&root().join("models")),
        "--grpc-max-message-bytes",
        "4096",
    ]))
    .expect("server starts")
}

#[tokio::test]
async fn a_grpc_message_over_the_limit_gets_resource_exhausted_naming_the_flag() {
    let s = small_grpc_messages();
    let mut c = grpc(&s).await;
    let err = c.model_infer(simple_request(64 << 10)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("--grpc-max-message-bytes"), "{err}");
    assert!(err.message().contains("limit of 4096 bytes"), "{err}");

    // The same server (and connection) still serves a request within the limit.
    let resp = c
        .model_infer(simple_request(0))
        .await
        .expect("a small request is served");
    assert_eq!(resp.into_inner().outputs.len(), 2);
}

#[tokio::test]
async fn a_streamed_grpc_message_over_the_limit_ends_the_stream_with_resource_exhausted() {
    let s = small_grpc_messages();
    let mut c = grpc(&s).await;
    let requests = vec![simple_request(0), simple_request(64 << 10)];
    let mut inbound = c
        .model_stream_infer(tokio_stream::iter(requests))
        .await
        .expect("the stream opens")
        .into_inner();
    let mut answered = 0;
    let err = loop {
        match inbound.message().await {
            Ok(Some(msg)) => {
                assert!(msg.error_message.is_empty(), "{}", msg.error_message);
                answered += 1;
            }
            Ok(None) => panic!("the stream ended without an error"),
            Err(err) => break err,
        }
    };
    assert_eq!(answered, 1, "the request before the big one is answered");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().contains("--grpc-max-message-bytes"), "{err}");
}
