//! Traffic policies through a real server: version labels in place of numbers, a weighted split for
//! requests that name no version, sticky routing keys, and changing the policy at run time.
mod common;

use common::*;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::ModelInferRequest;
use serde_json::{json, Value};

/// `ab`: two versions of `simple`, labelled stable (1) and canary (2), split 90/10.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("ab");
    let cfg = std::fs::read_to_string(root().join("models/simple/config.pbtxt"))
        .unwrap()
        .replace("name: \"simple\"", "name: \"ab\"");
    let traffic = r#"
version_policy: { all: {} }
parameters { key: "label.stable" value { string_value: "1" } }
parameters { key: "label.canary" value { string_value: "2" } }
parameters { key: "weight.1" value { string_value: "90" } }
parameters { key: "weight.2" value { string_value: "10" } }
"#;
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("config.pbtxt"), format!("{cfg}{traffic}")).unwrap();
    for v in ["1", "2"] {
        std::fs::create_dir_all(m.join(v)).unwrap();
        std::fs::copy(root().join("models/simple/1/model.onnx"), m.join(v).join("model.onnx")).unwrap();
    }
    dir
}

fn body(params: Value) -> Value {
    let (a, b) = simple_inputs(1);
    json!({"inputs": [
        {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": a},
        {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": b},
    ], "parameters": params})
}

async fn served_by(s: &TestServer, path: &str, key: Option<&str>, params: Value) -> String {
    let mut req = http().post(format!("{}{path}", s.http)).json(&body(params));
    if let Some(k) = key {
        req = req.header("inferd-routing-key", k);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = resp.json().await.unwrap();
    v["model_version"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn labels_address_versions_and_the_split_follows_the_weights() {
    let repo = repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    assert_eq!(
        served_by(&s, "/v2/models/ab/versions/canary/infer", None, json!({})).await,
        "2"
    );
    assert_eq!(
        served_by(&s, "/v2/models/ab/versions/stable/infer", None, json!({})).await,
        "1"
    );
    assert_eq!(
        get(&format!("{}/v2/models/ab/versions/canary/ready", s.http)).await.0,
        200
    );
    let (status, v) = post_json(
        &format!("{}/v2/models/ab/versions/beta/infer", s.http),
        &body(json!({})),
    )
    .await;
    assert_eq!(status, 404, "{v}");

    // 10,000 requests from 8 concurrent clients: the canary's share is within 2 points of 10%.
    let clients = (0..8).map(|_| {
        let http = s.http.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut canary = 0;
            for _ in 0..1250 {
                let resp = client
                    .post(format!("{http}/v2/models/ab/infer"))
                    .json(&body(json!({})))
                    .send()
                    .await
                    .unwrap();
                let v: Value = resp.json().await.unwrap();
                canary += usize::from(v["model_version"] == "2");
            }
            canary
        })
    });
    let canary: usize = futures::future::join_all(clients)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    let share = canary as f64 / 100.0;
    assert!(
        (8.0..=12.0).contains(&share),
        "the canary got {share}% of 10,000 requests"
    );
}

#[tokio::test]
async fn a_routing_key_keeps_a_caller_on_one_version() {
    let repo = repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    for user in ["alice", "bob", "carol", "dave"] {
        let first = served_by(&s, "/v2/models/ab/infer", Some(user), json!({})).await;
        for _ in 0..10 {
            assert_eq!(
                served_by(&s, "/v2/models/ab/infer", Some(user), json!({})).await,
                first,
                "{user} stays in one arm"
            );
            assert_eq!(
                served_by(&s, "/v2/models/ab/infer", None, json!({"routing_key": user})).await,
                first
            );
        }
        let mut c = grpc(&s).await;
        let (a, b) = simple_inputs(1);
        let input = |n: &str| InferInputTensor {
            name: n.into(),
            datatype: "INT32".into(),
            shape: vec![1, 16],
            ..Default::default()
        };
        let mut req = tonic::Request::new(ModelInferRequest {
            model_name: "ab".into(),
            inputs: vec![input("INPUT0"), input("INPUT1")],
            raw_input_contents: vec![i32_bytes(&a).into(), i32_bytes(&b).into()],
            ..Default::default()
        });
        req.metadata_mut().insert("inferd-routing-key", user.parse().unwrap());
        assert_eq!(
            c.model_infer(req).await.unwrap().into_inner().model_version,
            first,
            "the same arm over gRPC"
        );
    }
}

#[tokio::test]
async fn the_policy_changes_at_run_time() {
    let repo = repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let url = format!("{}/v2/models/ab/traffic", s.http);
    let (_, policy) = get(&url).await;
    assert_eq!(
        policy,
        json!({"labels": {"canary": 2, "stable": 1}, "weights": {"1": 90, "2": 10}})
    );
    let status = http()
        .put(&url)
        .json(&json!({"labels": {"stable": 2}, "weights": {"2": 1}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    for _ in 0..20 {
        assert_eq!(
            served_by(&s, "/v2/models/ab/infer", None, json!({})).await,
            "2",
            "all traffic moved to version 2"
        );
    }
    assert_eq!(
        served_by(&s, "/v2/models/ab/versions/stable/infer", None, json!({})).await,
        "2"
    );
    let bad = http()
        .put(&url)
        .json(&json!({"weights": {"9": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert!(bad.text().await.unwrap().contains("version 9"));
    let bad = http().put(&url).json(&json!({"weigths": {}})).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400, "unknown fields are refused");
}

#[tokio::test]
async fn shadow_traffic_is_measured_but_never_answers_the_caller() {
    let repo = repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let url = format!("{}/v2/models/ab/traffic", s.http);
    let policy = json!({"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 1.0}});
    assert_eq!(
        http().put(&url).json(&policy).send().await.unwrap().status().as_u16(),
        200
    );
    assert_eq!(get(&url).await.1["shadow"], json!({"version": 2, "fraction": 1.0}));
    let stats = |v: &'static str| {
        let url = format!("{}/v2/models/ab/versions/{v}/stats", s.http);
        async move {
            get(&url).await.1["model_stats"][0]["inference_stats"]["success"]["count"]
                .as_u64()
                .unwrap()
        }
    };
    let before = stats("2").await;
    for _ in 0..20 {
        assert_eq!(
            served_by(&s, "/v2/models/ab/infer", None, json!({})).await,
            "1",
            "the caller is answered by version 1"
        );
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while stats("2").await - before < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "every request was copied to the shadow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A quarter of 800 requests is copied (the copies' answers never reach the callers).
    let policy = json!({"weights": {"1": 1}, "shadow": {"version": 2, "fraction": 0.25}});
    assert_eq!(
        http().put(&url).json(&policy).send().await.unwrap().status().as_u16(),
        200
    );
    let before = stats("2").await;
    for _ in 0..800 {
        assert_eq!(served_by(&s, "/v2/models/ab/infer", None, json!({})).await, "1");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let copied = stats("2").await - before;
    assert!(
        (160..=240).contains(&copied),
        "about 200 of 800 copied to the shadow, got {copied}"
    );
    let bad = json!({"shadow": {"version": 2, "fraction": 1.5}});
    assert_eq!(http().put(&url).json(&bad).send().await.unwrap().status().as_u16(), 400);
}

#[tokio::test]
async fn a_canary_that_breaches_its_guard_is_rolled_back_by_itself() {
    let repo = repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let url = format!("{}/v2/models/ab/traffic", s.http);
    let policy = json!({
        "weights": {"1": 50, "2": 50},
        "guard": {"version": 2, "max_error_rate": 0.5, "min_requests": 5, "window_secs": 30}
    });
    assert_eq!(
        http().put(&url).json(&policy).send().await.unwrap().status().as_u16(),
        200
    );
    // Requests that fail on whichever version serves them: the canary's error rate is 100%.
    let mut bad = body(json!({}));
    bad["inputs"][0]["datatype"] = json!("FP32");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        for _ in 0..20 {
            assert_eq!(post_json(&format!("{}/v2/models/ab/infer", s.http), &bad).await.0, 400);
        }
        if get(&url).await.1["weights"]["2"] == json!(0) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the canary was never rolled back");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert_eq!(
        get(&url).await.1["weights"]["1"],
        json!(50),
        "the stable version keeps its weight"
    );
    for _ in 0..10 {
        assert_eq!(served_by(&s, "/v2/models/ab/infer", None, json!({})).await, "1");
    }
    let m = scrape_parsed(&s.metrics).await;
    let canary = [("model", "ab"), ("version", "2")];
    assert_eq!(m.value("inferd_rollbacks_total", &canary), 1.0, "{}", m.text);
}

/// `ab` (as `repository`) with an automatic rollback guard on its canary in the config (so a reload keeps it)
/// over a 2-second window.
fn guarded_repository() -> tempfile::TempDir {
    let dir = repository();
    let config = dir.path().join("ab/config.pbtxt");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(
        r#"
parameters { key: "guard.version" value { string_value: "2" } }
parameters { key: "guard.max_error_rate" value { string_value: "0.5" } }
parameters { key: "guard.min_requests" value { string_value: "5" } }
parameters { key: "guard.window_secs" value { string_value: "2" } }
"#,
    );
    std::fs::write(config, text).unwrap();
    dir
}

/// Requests pinned to version 2 that fail (the wrong datatype).
async fn fail_on_canary(s: &TestServer, n: usize) {
    let mut bad = body(json!({}));
    bad["inputs"][0]["datatype"] = json!("FP32");
    for _ in 0..n {
        assert_eq!(
            post_json(&format!("{}/v2/models/ab/versions/2/infer", s.http), &bad)
                .await
                .0,
            400
        );
    }
}

#[tokio::test]
async fn a_reload_starts_the_guarded_version_s_window_afresh() {
    let repo = guarded_repository();
    let s = explicit(repo.path(), &["ab"]);
    let url = format!("{}/v2/models/ab/traffic", s.http);
    // A few failures, fewer than the guard judges on; then every reading in the guard's window holds them.
    fail_on_canary(&s, 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(3000)).await;
    // A plain reload: the new versions' counters start at zero, which is no breach at all.
    let (status, v) = post_json(&format!("{}/v2/repository/models/ab/load", s.http), &json!({})).await;
    assert_eq!(status, 200, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    assert_eq!(
        get(&url).await.1["weights"],
        json!({"1": 90, "2": 10}),
        "no rollback after the reload"
    );
    let m = scrape_parsed(&s.metrics).await;
    assert_eq!(m.value("inferd_rollbacks_total", &[("model", "ab")]), 0.0);
    // The guard still watches the reloaded canary.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        fail_on_canary(&s, 10).await;
        if get(&url).await.1["weights"]["2"] == json!(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the reloaded canary was never rolled back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_rollback_keeps_a_policy_change_made_while_it_was_pending() {
    if !fixture_present("models/minilm_onnx/1/model.onnx") {
        return;
    }
    let repo = guarded_repository();
    // `heavy`: MiniLM on ONNX Runtime, whose six instances take seconds to load.
    copy_example(repo.path(), "minilm_onnx", "heavy", &[("count: 1", "count: 6")]);
    let s = explicit(repo.path(), &["ab"]);
    let url = format!("{}/v2/models/ab/traffic", s.http);
    // Let the guard take its first sample.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    // A long load elsewhere in the repository, while an operator adds a label and the canary breaches its
    // guard: both changes must land, whichever order they take.
    let load = {
        let url = format!("{}/v2/repository/models/heavy/load", s.http);
        tokio::spawn(async move { post_json(&url, &json!({})).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let change = {
        let url = url.clone();
        let policy = json!({
            "labels": {"stable": 1, "canary": 2, "blue": 1},
            "weights": {"1": 90, "2": 10},
            "guard": {"version": 2, "max_error_rate": 0.5, "min_requests": 5, "window_secs": 2}
        });
        tokio::spawn(async move { http().put(&url).json(&policy).send().await.unwrap().status().as_u16() })
    };
    fail_on_canary(&s, 10).await;
    assert_eq!(change.await.unwrap(), 200);
    let (status, v) = load.await.unwrap();
    assert_eq!(status, 200, "{v}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, policy) = get(&url).await;
        if policy["weights"]["2"] == json!(0) {
            assert_eq!(
                policy["labels"]["blue"],
                json!(1),
                "the operator's change survived: {policy}"
            );
            assert_eq!(policy["weights"]["1"], json!(90), "{policy}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the canary was never rolled back: {policy}"
        );
        fail_on_canary(&s, 10).await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}
