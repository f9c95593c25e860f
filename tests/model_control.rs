//! Model control through Triton's repository extension, on a real server in explicit mode: the index,
//! loading (with a config override), unloading, a failed reload that leaves the old version serving, and
//! reloads under traffic that no request notices.
mod common;

use std::path::Path;

use common::*;
use inferd::proto::{
    model_repository_parameter::ParameterChoice, ModelRepositoryParameter, RepositoryIndexRequest,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};
use serde_json::{json, Value};

/// A repository holding copies of `simple` and `mlp`.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for m in ["simple", "mlp"] {
        copy_model(m, dir.path());
    }
    dir
}

fn copy_model(name: &str, to: &Path) {
    let from = root().join("models").join(name);
    std::fs::create_dir_all(to.join(name).join("1")).unwrap();
    std::fs::copy(from.join("config.pbtxt"), to.join(name).join("config.pbtxt")).unwrap();
    std::fs::copy(from.join("1/model.onnx"), to.join(name).join("1/model.onnx")).unwrap();
}

fn mlp_body(rows: usize) -> Value {
    json!({"inputs": [{"name": "INPUT", "shape": [rows, 64], "datatype": "FP32", "data": random_f32(3, rows * 64)}]})
}

async fn post(url: String, body: Value) -> (u16, Value) {
    post_json(&url, &body).await
}

#[tokio::test]
async fn the_index_lists_loaded_and_unloaded_models() {
    let repo = repository();
    let s = explicit(repo.path(), &["simple"]);
    let (status, index) = post(format!("{}/v2/repository/index", s.http), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        index,
        json!([
            {"name": "mlp", "state": "UNAVAILABLE", "reason": "unloaded"},
            {"name": "simple", "version": "1", "state": "READY"},
        ])
    );
    let (_, ready) = post(format!("{}/v2/repository/index", s.http), json!({"ready": true})).await;
    assert_eq!(ready, json!([{"name": "simple", "version": "1", "state": "READY"}]));
    let (_, md) = get(&format!("{}/v2", s.http)).await;
    assert!(md["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("model_repository")));
}

#[tokio::test]
async fn load_then_unload_a_model_over_rest() {
    let repo = repository();
    let s = explicit(repo.path(), &["simple"]);
    assert_eq!(
        post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(1)).await.0,
        404
    );
    let (status, body) = post(format!("{}/v2/repository/models/mlp/load", s.http), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&format!("{}/v2/models/mlp/ready", s.http)).await.0, 200);
    assert_eq!(
        post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(2)).await.0,
        200
    );
    let (status, _) = post(format!("{}/v2/repository/models/mlp/unload", s.http), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(get(&format!("{}/v2/models/mlp/ready", s.http)).await.0, 404);
    let (status, v) = post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(1)).await;
    assert_eq!(status, 404);
    assert!(v["error"].as_str().unwrap().starts_with("Request for unknown model"));
    assert_eq!(
        post(format!("{}/v2/repository/models/mlp/unload", s.http), json!({}))
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn a_load_may_override_the_config() {
    let repo = repository();
    let s = explicit(repo.path(), &[]);
    let config = json!({
        "name": "mlp", "platform": "onnxruntime_onnx", "max_batch_size": 2,
        "input": [{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [64]}],
        "output": [{"name": "OUTPUT", "data_type": "TYPE_FP32", "dims": [10]}],
    });
    let (status, body) = post(
        format!("{}/v2/repository/models/mlp/load", s.http),
        json!({"parameters": {"config": config.to_string()}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, cfg) = get(&format!("{}/v2/models/mlp/config", s.http)).await;
    assert_eq!(cfg["max_batch_size"], 2);
    let (status, v) = post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(3)).await;
    assert_eq!(status, 400, "the overriding max_batch_size applies: {v}");
    let (status, v) = post(
        format!("{}/v2/repository/models/mlp/load", s.http),
        json!({"parameters": {"config": "{nope"}}),
    )
    .await;
    assert_eq!(status, 400);
    // Triton's clients look for these words whatever went wrong.
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("failed to load 'mlp': invalid config"), "{v}");
}

#[tokio::test]
async fn loading_an_unknown_model_fails_with_a_reason() {
    let repo = repository();
    let s = explicit(repo.path(), &[]);
    let (status, v) = post(format!("{}/v2/repository/models/ghost/load", s.http), json!({})).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("ghost"), "{v}");
}

#[tokio::test]
async fn a_failed_reload_leaves_the_serving_version_in_place() {
    let repo = repository();
    let s = explicit(repo.path(), &["simple"]);
    std::fs::write(
        repo.path().join("simple/1/model.onnx"),
        b"corrupted during a bad rollout",
    )
    .unwrap();
    let (status, v) = post(format!("{}/v2/repository/models/simple/load", s.http), json!({})).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("failed to load 'simple'"), "{v}");
    assert_eq!(
        post(format!("{}/v2/models/simple/infer", s.http), simple_body())
            .await
            .0,
        200,
        "the old version still serves"
    );
    // The failure is reported beside the serving version, and counted.
    let (_, index) = post(format!("{}/v2/repository/index", s.http), json!({})).await;
    let simple = index
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "simple")
        .unwrap()
        .clone();
    assert_eq!(simple["state"], "READY");
    assert!(
        simple["reason"].as_str().unwrap().contains("the last load failed"),
        "{simple}"
    );
    let m = scrape_parsed(&s.metrics).await;
    assert_eq!(m.value("inferd_model_load_failures_total", &[("model", "simple")]), 1.0);
    let failed = [("model", "simple"), ("version", ""), ("state", "failed")];
    assert_eq!(
        m.value("inferd_model_state", &failed),
        1.0,
        "a failed reload beside the serving version"
    );
}

#[tokio::test]
async fn reloading_under_traffic_loses_no_request() {
    let repo = repository();
    let s = explicit(repo.path(), &["simple"]);
    let url = format!("{}/v2/models/simple/infer", s.http);
    let traffic = tokio::spawn(async move {
        let mut statuses = Vec::new();
        for _ in 0..300 {
            statuses.push(post_json(&url, &simple_body()).await.0);
        }
        statuses
    });
    for _ in 0..5 {
        let (status, body) = post(format!("{}/v2/repository/models/simple/load", s.http), json!({})).await;
        assert_eq!(status, 200, "{body}");
    }
    let statuses = traffic.await.unwrap();
    assert!(
        statuses.iter().all(|&s| s == 200),
        "every request during the reloads succeeded: {statuses:?}"
    );
}

#[tokio::test]
async fn model_control_needs_explicit_mode() {
    let repo = repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let (status, v) = post(format!("{}/v2/repository/models/mlp/unload", s.http), json!({})).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("explicit"), "{v}");
    assert_eq!(
        post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(1)).await.0,
        200,
        "nothing was unloaded"
    );
}

#[tokio::test]
async fn the_repository_rpcs_work_over_grpc() {
    let repo = repository();
    let s = explicit(repo.path(), &[]);
    let mut c = grpc(&s).await;
    let index = c
        .repository_index(RepositoryIndexRequest {
            ready: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.models.len(), 2);
    assert!(index.models.iter().all(|m| m.state == "UNAVAILABLE"));
    let mut parameters = std::collections::HashMap::new();
    let config = json!({"max_batch_size": 4, "platform": "onnxruntime_onnx"}).to_string();
    parameters.insert(
        "config".to_string(),
        ModelRepositoryParameter {
            parameter_choice: Some(ParameterChoice::StringParam(config)),
        },
    );
    c.repository_model_load(RepositoryModelLoadRequest {
        model_name: "mlp".into(),
        parameters,
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, cfg) = get(&format!("{}/v2/models/mlp/config", s.http)).await;
    assert_eq!(
        cfg["max_batch_size"], 4,
        "a config without inputs is completed from the model file"
    );
    assert_eq!(cfg["input"][0]["name"], "INPUT");
    let ready = c
        .repository_index(RepositoryIndexRequest {
            ready: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ready
            .models
            .iter()
            .map(|m| (m.name.as_str(), m.version.as_str()))
            .collect::<Vec<_>>(),
        vec![("mlp", "1")]
    );
    c.repository_model_unload(RepositoryModelUnloadRequest {
        model_name: "mlp".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let err = c
        .repository_model_load(RepositoryModelLoadRequest {
            model_name: "ghost".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

/// Polls `check` every 100 ms until it holds, for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn poll_mode_applies_added_changed_and_removed_models() {
    let dir = tempfile::tempdir().unwrap();
    copy_model("simple", dir.path());
    let s = spawn(args(&[
        "--model-repository",
        path(dir.path()),
        "--model-control-mode",
        "poll",
        "--repository-poll-secs",
        "1",
    ]))
    .unwrap();
    let http = s.http.clone();

    // Added: a new model folder is loaded.
    copy_model("mlp", dir.path());
    eventually("mlp is ready", || {
        let url = format!("{http}/v2/models/mlp/ready");
        async move { get(&url).await.0 == 200 }
    })
    .await;
    assert_eq!(
        post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(1)).await.0,
        200
    );

    // Changed: a new version folder replaces version 1 (the default policy serves the latest one).
    let v2 = dir.path().join("simple/2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(root().join("models/simple/1/model.onnx"), v2.join("model.onnx")).unwrap();
    eventually("simple serves version 2", || {
        let url = format!("{http}/v2/models/simple");
        async move { get(&url).await.1["versions"] == json!(["2"]) }
    })
    .await;
    let (status, v) = post(format!("{}/v2/models/simple/infer", s.http), simple_body()).await;
    assert_eq!((status, v["model_version"].clone()), (200, json!("2")));

    // A broken change leaves the serving version in place.
    std::fs::write(v2.join("model.onnx"), b"half-copied").unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let (status, v) = post(format!("{}/v2/models/simple/infer", s.http), simple_body()).await;
    assert_eq!((status, v["model_version"].clone()), (200, json!("2")), "{v}");

    // Removed: the model is unloaded.
    std::fs::remove_dir_all(dir.path().join("mlp")).unwrap();
    eventually("mlp is gone", || {
        let url = format!("{http}/v2/models/mlp/ready");
        async move { get(&url).await.0 == 404 }
    })
    .await;
    let (status, _) = post(format!("{}/v2/repository/models/mlp/load", s.http), json!({})).await;
    assert_eq!(status, 400, "the load API belongs to explicit mode");
}

#[tokio::test]
async fn admin_requests_need_the_bearer_token_when_one_is_set() {
    let repo = repository();
    let a = args(&[
        "--model-repository",
        path(repo.path()),
        "--model-control-mode",
        "explicit",
        "--admin-token",
        "s3cret",
    ]);
    let s = spawn(a).unwrap();
    let load = |token: Option<&'static str>| {
        let url = format!("{}/v2/repository/models/mlp/load", s.http);
        async move {
            let mut req = http().post(url).json(&json!({}));
            if let Some(t) = token {
                req = req.header("Authorization", t);
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(load(None).await, 401);
    assert_eq!(load(Some("Bearer wrong")).await, 401);
    assert_eq!(load(Some("Bearer s3cret")).await, 200);
    // Reading the index and serving requests need no token.
    assert_eq!(post(format!("{}/v2/repository/index", s.http), json!({})).await.0, 200);
    assert_eq!(
        post(format!("{}/v2/models/mlp/infer", s.http), mlp_body(1)).await.0,
        200
    );

    let mut c = grpc(&s).await;
    let unload = || RepositoryModelUnloadRequest {
        model_name: "mlp".into(),
        ..Default::default()
    };
    assert_eq!(
        c.repository_model_unload(unload()).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );
    let mut req = tonic::Request::new(unload());
    req.metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    c.repository_model_unload(req).await.unwrap();
    assert_eq!(get(&format!("{}/v2/models/mlp/ready", s.http)).await.0, 404);
}

#[tokio::test]
async fn unloading_lets_requests_already_queued_finish() {
    let s = spawn(args(&[
        "--model-repository",
        path(&root().join("tests/models")),
        "--model-control-mode",
        "explicit",
        "--load-model",
        "slow",
    ]))
    .unwrap();
    let url = format!("{}/v2/models/slow/infer", s.http);
    let slow = |ms: f32| json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [ms]}]});
    let running = tokio::spawn({
        let (url, b) = (url.clone(), slow(300.0));
        async move { post_json(&url, &b).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let queued = tokio::spawn({
        let (url, b) = (url.clone(), slow(1.0));
        async move { post_json(&url, &b).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (status, _) = post(format!("{}/v2/repository/models/slow/unload", s.http), json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(
        post_json(&url, &slow(1.0)).await.0,
        404,
        "new requests no longer reach it"
    );
    let (r, q) = (running.await.unwrap(), queued.await.unwrap());
    assert_eq!(
        (r.0, q.0),
        (200, 200),
        "the running and the queued request both finished: {r:?} {q:?}"
    );
    assert_eq!(q.1["outputs"][0]["data"], json!([1.0]));
}

/// `swap`: version 1 answers a+b, version 2 answers a+b+1000 (`simple` and the test model `simple_plus`).
fn two_version_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("swap");
    for (v, file) in [
        ("1", "models/simple/1/model.onnx"),
        ("2", "tests/models/simple_plus/1/model.onnx"),
    ] {
        std::fs::create_dir_all(m.join(v)).unwrap();
        std::fs::copy(root().join(file), m.join(v).join("model.onnx")).unwrap();
    }
    let cfg = std::fs::read_to_string(root().join("models/simple/config.pbtxt"))
        .unwrap()
        .replace("name: \"simple\"", "name: \"swap\"");
    std::fs::write(
        m.join("config.pbtxt"),
        format!("{cfg}\nversion_policy: {{ all: {{}} }}\n"),
    )
    .unwrap();
    dir
}

#[tokio::test]
async fn fifty_swaps_under_continuous_load_lose_nothing_and_each_answer_matches_its_version() {
    let repo = two_version_repository();
    let s = explicit(repo.path(), &["swap"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|c| {
            let (http, stop) = (s.http.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let (mut ok, mut failures) = (0, Vec::new());
                let mut i = 0i32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let a: Vec<i32> = (0..16).map(|k| c * 100_000 + i * 16 + k).collect();
                    let b: Vec<i32> = (0..16).map(|k| k - i).collect();
                    let body = json!({"inputs": [
                        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
                        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b},
                    ]});
                    let resp = client
                        .post(format!("{http}/v2/models/swap/infer"))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let status = resp.status().as_u16();
                    let v: Value = resp.json().await.unwrap();
                    if status != 200 {
                        failures.push(format!("{status}: {v}"));
                        continue;
                    }
                    let offset = match v["model_version"].as_str() {
                        Some("1") => 0,
                        Some("2") => 1000,
                        other => panic!("unexpected version {other:?}"),
                    };
                    let want: Vec<i64> = a.iter().zip(&b).map(|(x, y)| (x + y + offset) as i64).collect();
                    let got: Vec<i64> = v["outputs"][0]["data"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_i64().unwrap())
                        .collect();
                    assert_eq!(got, want, "the answer matches the version it names");
                    ok += 1;
                }
                (ok, failures)
            })
        })
        .collect();
    for round in 0..50 {
        if round % 2 == 0 {
            let weights = if round % 4 == 0 {
                json!({"1": 1, "2": 3})
            } else {
                json!({"1": 3, "2": 1})
            };
            let (status, v) = post_json(&format!("{}/v2/repository/models/swap/load", s.http), &json!({})).await;
            assert_eq!(status, 200, "{v}");
            let resp = http()
                .put(format!("{}/v2/models/swap/traffic", s.http))
                .json(&json!({"weights": weights}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
        } else {
            let (status, v) = post_json(&format!("{}/v2/repository/models/swap/load", s.http), &json!({})).await;
            assert_eq!(status, 200, "{v}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut served = 0;
    for c in clients {
        let (ok, failures) = c.await.unwrap();
        assert!(failures.is_empty(), "requests failed during the swaps: {failures:?}");
        served += ok;
    }
    assert!(served > 100, "clients kept sending throughout ({served} answers)");
}

#[tokio::test]
async fn a_load_may_carry_the_model_files_themselves() {
    use base64::Engine;
    let repo = repository();
    let s = explicit(repo.path(), &[]);
    let onnx = std::fs::read(root().join("models/simple/1/model.onnx")).unwrap();
    let config = json!({"name": "uploaded", "platform": "onnxruntime_onnx", "max_batch_size": 8}).to_string();
    let body = json!({"parameters": {
        "config": config,
        "file:3/model.onnx": base64::engine::general_purpose::STANDARD.encode(&onnx),
    }});
    let (status, v) = post(format!("{}/v2/repository/models/uploaded/load", s.http), body).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(format!("{}/v2/models/uploaded/infer", s.http), simple_body()).await;
    assert_eq!((status, v["model_version"].clone()), (200, json!("3")), "{v}");
    let (a, b) = simple_inputs(1);
    let sums: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(v["outputs"][0]["data"], json!(sums));

    for bad in ["../escape.onnx", "1/../../x", "model.onnx"] {
        let body = json!({"parameters": {"config": "{}", format!("file:{bad}"): "AAAA"}});
        let (status, v) = post(format!("{}/v2/repository/models/uploaded/load", s.http), body).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
    let body = json!({"parameters": {"file:1/model.onnx": "AAAA"}});
    let (status, v) = post(format!("{}/v2/repository/models/uploaded/load", s.http), body).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("config"), "{v}");
}

#[tokio::test]
async fn changes_to_one_model_apply_one_at_a_time_in_the_order_asked() {
    if !fixture_present("models/minilm_onnx/1/model.onnx") {
        return;
    }
    // `heavy`: MiniLM on ONNX Runtime, whose six instances take seconds to load.
    let repo = tempfile::tempdir().unwrap();
    copy_example(repo.path(), "minilm_onnx", "heavy", &[("count: 1", "count: 6")]);
    let s = explicit(repo.path(), &[]);
    let url = |action: &str| format!("{}/v2/repository/models/heavy/{action}", s.http);
    let load = tokio::spawn({
        let url = url("load");
        async move { post_json(&url, &json!({})).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Asked while the load runs: the unload waits for it, then unloads what it loaded.
    let (status, v) = post(url("unload"), json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(load.await.unwrap().0, 200);
    assert_eq!(
        get(&format!("{}/v2/models/heavy/ready", s.http)).await.0,
        404,
        "the load finished first, and did not bring the model back after the unload"
    );
    let m = scrape_parsed(&s.metrics).await;
    assert!(
        !m.has("inferd_model_state", &[("model", "heavy"), ("state", "loading")]),
        "{}",
        m.text
    );
}
