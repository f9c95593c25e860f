//! ONNX files on the candle backend (`--features candle-onnx`): the example MLP's ONNX file, served with
//! `backend: "candle"`, answers as ONNX Runtime does. Without the feature such a model fails to load with
//! a reason that says how to serve it.
mod common;

use common::*;
use serde_json::{json, Value};

/// The `mlp` ONNX file under a config that picks candle.
fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    copy_example(
        repo.path(),
        "mlp",
        "mlp_on_candle",
        &[(
            "platform: \"onnxruntime_onnx\"",
            "backend: \"candle\"\ndefault_model_filename: \"model.onnx\"",
        )],
    );
    repo
}

fn body(seed: u64) -> Value {
    json!({"inputs": [{"name": "INPUT", "shape": [3, 64], "datatype": "FP32", "data": random_f32(seed, 3 * 64)}]})
}

#[cfg(feature = "candle-onnx")]
#[tokio::test]
async fn an_onnx_file_on_candle_answers_as_onnx_runtime_does() {
    let repo = repository();
    let s = spawn(args(&[
        "--model-repository",
        path(repo.path()),
        "--model-repository",
        path(&root().join("models")),
        "--load-model",
        "mlp",
        "--load-model",
        "mlp_on_candle",
        "--model-control-mode",
        "explicit",
    ]))
    .unwrap();
    let (status, candle) = post_json(&format!("{}/v2/models/mlp_on_candle/infer", s.http), &body(5)).await;
    assert_eq!(status, 200, "{candle}");
    let (_, ort) = post_json(&format!("{}/v2/models/mlp/infer", s.http), &body(5)).await;
    let values = |v: &Value| -> Vec<f64> {
        v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    assert_eq!(candle["outputs"][0]["shape"], json!([3, 10]));
    for (c, o) in values(&candle).iter().zip(values(&ort)) {
        assert!((c - o).abs() <= 1e-5 * o.abs().max(1.0), "{c} vs {o}");
    }
}

#[cfg(not(feature = "candle-onnx"))]
#[tokio::test]
async fn without_the_feature_an_onnx_file_on_candle_fails_to_load_saying_why() {
    let repo = repository();
    let s = serve_despite_failures(repo.path());
    let (status, v) = post_json(&format!("{}/v2/models/mlp_on_candle/infer", s.http), &body(5)).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--features candle-onnx"), "{v}");
}
