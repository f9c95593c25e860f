//! Request limits: a body over `--http-max-body-bytes` and a request whose shapes add up to more than
//! `--max-tensor-elements` are refused with 413 / RESOURCE_EXHAUSTED and a JSON error, before the server
//! reads or sizes anything by them; requests within the limits are served.
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
