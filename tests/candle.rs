//! The candle backend through the real server: the MLP twin (same weights as the ONNX `mlp`, in safetensors)
//! answers as ONNX Runtime does, batches like any model, completes its config from its files, and reports a
//! broken description clearly. MiniLM (when `make setup` has placed it) embeds text with per-batch padding.
mod common;

use common::*;
use futures::future::join_all;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::ModelInferRequest;
use serde_json::{json, Value};

fn mlp_body(rows: usize, seed: u64) -> Value {
    json!({"inputs": [{"name": "INPUT", "shape": [rows, 64], "datatype": "FP32", "data": random_f32(seed, rows * 64)}]})
}

fn floats(v: &Value) -> Vec<f32> {
    v["outputs"][0]["data"]
        .as_array()
        .expect("output data")
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * y.abs().max(1.0), "{x} vs {y}");
    }
}

#[tokio::test]
async fn the_candle_mlp_answers_as_the_onnx_mlp_does() {
    let s = server();
    for (rows, seed) in [(1, 1), (3, 2), (64, 3)] {
        let body = mlp_body(rows, seed);
        let (status, onnx) = post_json(&format!("{}/v2/models/mlp/infer", s.http), &body).await;
        assert_eq!(status, 200, "{onnx}");
        let (status, candle) = post_json(&format!("{}/v2/models/mlp_candle/infer", s.http), &body).await;
        assert_eq!(status, 200, "{candle}");
        assert_eq!(candle["outputs"][0]["shape"], json!([rows, 10]));
        assert_eq!(candle["model_name"], "mlp_candle");
        assert_close(&floats(&candle), &floats(&onnx), 1e-5);
    }
}

#[tokio::test]
async fn the_candle_mlp_serves_grpc_and_reports_its_backend() {
    let s = server();
    let x = random_f32(9, 2 * 64);
    let mut client = grpc(s).await;
    let request = |model: &str| ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "INPUT".into(),
            datatype: "FP32".into(),
            shape: vec![2, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(
            x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )],
        ..Default::default()
    };
    let candle = client.model_infer(request("mlp_candle")).await.unwrap().into_inner();
    let onnx = client.model_infer(request("mlp")).await.unwrap().into_inner();
    assert_eq!(candle.outputs[0].shape, vec![2, 10]);
    assert_close(
        &f32_values(&candle.raw_output_contents[0]),
        &f32_values(&onnx.raw_output_contents[0]),
        1e-5,
    );
    let (status, cfg) = get(&format!("{}/v2/models/mlp_candle/config", s.http)).await;
    assert_eq!(status, 200);
    assert_eq!(cfg["backend"], "candle");
}

#[tokio::test]
async fn concurrent_requests_to_the_candle_mlp_get_their_own_rows() {
    let s = server();
    let url = format!("{}/v2/models/mlp_candle/infer", s.http);
    let cases: Vec<(usize, u64)> = (0..24).map(|i| (1 + i % 3, 500 + i as u64)).collect();
    let mut alone = Vec::new();
    for &(rows, seed) in &cases {
        alone.push(floats(&post_json(&url, &mlp_body(rows, seed)).await.1));
    }
    let together = join_all(cases.iter().map(|&(rows, seed)| {
        let url = url.clone();
        async move { post_json(&url, &mlp_body(rows, seed)).await }
    }))
    .await;
    for ((status, v), want) in together.iter().zip(&alone) {
        assert_eq!(*status, 200, "{v}");
        assert_close(&floats(v), want, 1e-5);
    }
}

#[tokio::test]
async fn a_candle_model_without_config_is_completed_from_its_files() {
    let repo = tempfile::tempdir().unwrap();
    let twin = copy_example(repo.path(), "mlp_candle", "twin", &[]);
    std::fs::remove_file(twin.join("config.pbtxt")).unwrap();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let (status, md) = get(&format!("{}/v2/models/twin", s.http)).await;
    assert_eq!(status, 200, "{md}");
    assert_eq!(md["platform"], "candle");
    assert_eq!(
        md["inputs"][0],
        json!({"name": "INPUT", "datatype": "FP32", "shape": [-1, 64]})
    );
    assert_eq!(
        md["outputs"][0],
        json!({"name": "OUTPUT", "datatype": "FP32", "shape": [-1, 10]})
    );
    let (status, v) = post_json(&format!("{}/v2/models/twin/infer", s.http), &mlp_body(2, 4)).await;
    assert_eq!(status, 200, "{v}");
}

#[tokio::test]
async fn a_broken_mlp_description_fails_the_load_with_its_reason() {
    let repo = tempfile::tempdir().unwrap();
    let dir = copy_example(repo.path(), "mlp_candle", "broken_mlp", &[]);
    // The second layer's weight stands first: 10 outputs from 256 inputs cannot take the 64-wide input.
    std::fs::write(
        dir.join("1/mlp.json"),
        r#"{"layers": [{"weight": "fc2.weight"}, {"weight": "fc1.weight"}]}"#,
    )
    .unwrap();
    let s = serve_despite_failures(repo.path());
    let (status, v) = post_json(&format!("{}/v2/models/broken_mlp/infer", s.http), &mlp_body(1, 1)).await;
    assert_eq!(status, 503, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("layer 1 takes 64 features but the layer before gives 10"),
        "{msg}"
    );
}

/// MiniLM is placed by `make setup` (not committed); see `fixture_present`.
fn minilm_present() -> bool {
    fixture_present("models/minilm/1/model.safetensors")
}

async fn embed(http: &str, texts: &[&str]) -> (u16, Value) {
    let body = json!({"inputs": [{"name": "TEXT", "shape": [texts.len(), 1], "datatype": "BYTES", "data": texts}]});
    post_json(&format!("{http}/v2/models/minilm/infer"), &body).await
}

fn rows(v: &Value) -> Vec<Vec<f32>> {
    floats(v).chunks(384).map(<[f32]>::to_vec).collect()
}

#[tokio::test]
async fn minilm_embeds_each_text_alike_alone_or_beside_longer_ones() {
    if !minilm_present() {
        return;
    }
    let s = server();
    let texts = [
        "A short one.",
        "A considerably longer sentence, which pads the batch well beyond the short one's length, on purpose.",
        "",
    ];
    let (status, batch) = embed(&s.http, &texts).await;
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["outputs"][0]["shape"], json!([3, 384]));
    for (i, text) in texts.iter().enumerate() {
        let (status, alone) = embed(&s.http, &[text]).await;
        assert_eq!(status, 200);
        let (a, b) = (&rows(&batch)[i], &rows(&alone)[0]);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
        assert_close(a, b, 1e-4);
    }
}

#[tokio::test]
async fn minilm_refuses_text_that_is_not_utf8() {
    if !minilm_present() {
        return;
    }
    let s = server();
    let mut client = grpc(s).await;
    let raw = length_prefixed(&[b"fine", &[0xff, 0xfe, 0x00]]);
    let request = ModelInferRequest {
        model_name: "minilm".into(),
        inputs: vec![InferInputTensor {
            name: "TEXT".into(),
            datatype: "BYTES".into(),
            shape: vec![2, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(raw)],
        ..Default::default()
    };
    let err = client.model_infer(request).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("not UTF-8"), "{err}");
    let (status, _) = embed(&s.http, &["still serving"]).await;
    assert_eq!(status, 200);
}
