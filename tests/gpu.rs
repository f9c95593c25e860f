//! GPUs through the real server. Instance groups place instances as Triton's do: without a GPU a KIND_GPU
//! model fails to load saying why and a KIND_AUTO model runs on the CPU; with one (a `--features cuda` build,
//! the `onnxruntime-gpu` library, a driver), both backends run the example MLP there and answer as on the
//! CPU. The tests that need what this machine lacks say so and pass.
mod common;

use common::*;
use serde_json::{json, Value};

/// A copy of `source` (an example model) named `name`, with its instance group of `kind`.
fn placed_copy(repo: &std::path::Path, source: &str, name: &str, kind: &str) {
    copy_example(repo, source, name, &[("kind: KIND_CPU", &format!("kind: {kind}"))]);
}

fn body() -> Value {
    json!({"inputs": [{"name": "INPUT", "shape": [4, 64], "datatype": "FP32", "data": random_f32(77, 4 * 64)}]})
}

fn values(v: &Value) -> Vec<f64> {
    v["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no outputs in {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Why GPU tests cannot run here, if they cannot.
fn no_gpu() -> Option<String> {
    inferd::gpu::gpus()
        .is_empty()
        .then(|| inferd::gpu::unavailable_reason().unwrap_or_else(|| "no GPU found".into()))
}

#[tokio::test]
async fn the_server_metadata_lists_the_gpus_it_sees() {
    let (status, md) = get(&format!("{}/v2", server().http)).await;
    assert_eq!(status, 200);
    let listed = md["gpus"].as_array().expect("a gpus list");
    assert_eq!(listed.len(), inferd::gpu::gpus().len(), "{md}");
    for g in listed {
        assert!(g["uuid"].as_str().unwrap().starts_with("GPU-") && g["memory_total_bytes"].as_u64() > Some(0));
    }
}

#[tokio::test]
async fn without_a_gpu_kind_gpu_fails_to_load_saying_why_and_kind_auto_runs_on_the_cpu() {
    if no_gpu().is_none() {
        eprintln!("skipped: this machine has a GPU; the CPU fallback is checked where there is none");
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    placed_copy(repo.path(), "mlp", "mlp_gpu", "KIND_GPU");
    placed_copy(repo.path(), "mlp", "mlp_auto", "KIND_AUTO");
    placed_copy(repo.path(), "mlp_candle", "mlp_candle_gpu", "KIND_GPU");
    let s = serve_despite_failures(repo.path());
    for model in ["mlp_gpu", "mlp_candle_gpu"] {
        let (status, v) = post_json(&format!("{}/v2/models/{model}/infer", s.http), &body()).await;
        assert_eq!(status, 503, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("asks for KIND_GPU, but there is no GPU"), "{msg}");
    }
    let (status, auto) = post_json(&format!("{}/v2/models/mlp_auto/infer", s.http), &body()).await;
    assert_eq!(status, 200, "{auto}");
    let (_, cpu) = post_json(&format!("{}/v2/models/mlp/infer", server().http), &body()).await;
    assert_eq!(values(&auto), values(&cpu));
}

#[tokio::test]
async fn on_a_gpu_both_backends_answer_as_on_the_cpu() {
    if let Some(why) = no_gpu() {
        eprintln!("skipped: no GPU here ({why}); run scripts/gpu-check.sh on a machine with one");
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    placed_copy(repo.path(), "mlp", "mlp_gpu", "KIND_GPU");
    placed_copy(repo.path(), "mlp_candle", "mlp_candle_gpu", "KIND_GPU");
    let s = spawn(args(&["--model-repository", path(repo.path())])).expect("GPU models load");
    let (_, cpu) = post_json(&format!("{}/v2/models/mlp/infer", server().http), &body()).await;
    for model in ["mlp_gpu", "mlp_candle_gpu"] {
        let (status, gpu) = post_json(&format!("{}/v2/models/{model}/infer", s.http), &body()).await;
        assert_eq!(status, 200, "{gpu}");
        for (g, c) in values(&gpu).iter().zip(values(&cpu)) {
            assert!(
                (g - c).abs() <= 1e-4 * c.abs().max(1.0),
                "{model}: {g} on the GPU vs {c} on the CPU"
            );
        }
    }
}
