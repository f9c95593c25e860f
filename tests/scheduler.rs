//! The scheduler through a real server: dynamic batching gives each caller exactly its own rows, batches
//! really form, and the queue's limits, timeouts, priorities and cancellation behave as Triton's config says.
//! The `slow` test model spends INPUT0 milliseconds per execution, so a test can keep its one instance busy.
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::future::join_all;
use serde_json::{json, Value};

/// A server with only the named test models loaded.
fn serve(models: &[&str], extra: &[&str]) -> TestServer {
    let repo = root().join("tests/models");
    let mut a = vec!["--model-repository", path(&repo), "--model-control-mode", "explicit"];
    for m in models {
        a.extend(["--load-model", m]);
    }
    a.extend_from_slice(extra);
    spawn(args(&a)).expect("server starts")
}

fn slow_body(values: &[f32], params: Value) -> Value {
    json!({"inputs": [{"name": "INPUT0", "shape": [values.len(), 1], "datatype": "FP32", "data": values}], "parameters": params})
}

async fn infer(s: &TestServer, model: &str, body: &Value) -> (u16, Value, Instant) {
    let (status, v) = post_json(&format!("{}/v2/models/{model}/infer", s.http), body).await;
    (status, v, Instant::now())
}

async fn stats(s: &TestServer, model: &str) -> Value {
    get(&format!("{}/v2/models/{model}/stats", s.http)).await.1["model_stats"][0].clone()
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| v["inference_stats"][key]["count"].as_u64().expect(key))
}

/// These tests time one request against another; run them one at a time so the slow model's CPU burn in
/// one test does not stretch another's.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Occupies the model's single instance for `ms` milliseconds; returns once it is running (its wait in the
/// queue has been counted).
async fn occupy(s: &TestServer, model: &str, ms: f32) -> tokio::task::JoinHandle<(u16, Value, Instant)> {
    let started = count(&stats(s, model).await, "queue");
    let (http, m) = (s.http.clone(), model.to_string());
    let busy = tokio::spawn(async move {
        let (status, v) = post_json(&format!("{http}/v2/models/{m}/infer"), &slow_body(&[ms], json!({}))).await;
        (status, v, Instant::now())
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&stats(s, model).await, "queue") == started {
        assert!(Instant::now() < deadline, "the busy request never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    busy
}

/// A gRPC request to `slow` that runs for `ms` milliseconds.
fn slow_grpc(ms: f32) -> inferd::proto::ModelInferRequest {
    inferd::proto::ModelInferRequest {
        model_name: "slow".into(),
        inputs: vec![inferd::proto::model_infer_request::InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(ms.to_le_bytes().to_vec())],
        ..Default::default()
    }
}

/// A copy of the example MLP whose batcher waits up to 20 ms for a fuller batch.
fn batched_mlp_repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_example(
        dir.path(),
        "mlp",
        "mlp_batched",
        &[("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 20000")],
    );
    dir
}

#[tokio::test]
async fn concurrent_callers_get_exactly_their_own_rows_from_shared_batches() {
    let repo = batched_mlp_repository();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let url = format!("{}/v2/models/mlp_batched/infer", s.http);
    let body = |rows: usize, seed: u64| json!({"inputs": [{"name": "INPUT", "shape": [rows, 64], "datatype": "FP32", "data": random_f32(seed, rows * 64)}]});
    let outputs = |v: &Value| -> Vec<f32> {
        v["outputs"][0]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    // The reference: each request alone.
    let cases: Vec<(usize, u64)> = (0..48).map(|i| (1 + i % 4, 1000 + i as u64)).collect();
    let mut alone = Vec::new();
    for &(rows, seed) in &cases {
        let (status, v) = post_json(&url, &body(rows, seed)).await;
        assert_eq!(status, 200, "{v}");
        alone.push(outputs(&v));
    }
    let before = stats(&s, "mlp_batched").await;
    let together = join_all(cases.iter().map(|&(rows, seed)| {
        let url = url.clone();
        let b = body(rows, seed);
        async move { post_json(&url, &b).await }
    }))
    .await;
    for ((status, v), (want, &(rows, _))) in together.iter().zip(alone.iter().zip(&cases)) {
        assert_eq!(*status, 200, "{v}");
        assert_eq!(v["outputs"][0]["shape"], json!([rows, 10]));
        let got = outputs(v);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "batched {g} vs alone {w}");
        }
    }
    let after = stats(&s, "mlp_batched").await;
    let rows: usize = cases.iter().map(|c| c.0).sum();
    assert_eq!(
        count(&after, "inference_count") - count(&before, "inference_count"),
        rows as u64
    );
    let executions = count(&after, "execution_count") - count(&before, "execution_count");
    assert!(
        executions < cases.len() as u64,
        "requests were batched: {executions} executions for {} requests",
        cases.len()
    );
}

#[tokio::test]
async fn a_model_without_dynamic_batching_runs_one_request_per_execution() {
    let s = serve(&["identity_int32"], &[]);
    let before = stats(&s, "identity_int32").await;
    let body =
        json!({"inputs": [{"name": "INPUT0", "shape": [2, 3], "datatype": "INT32", "data": [1, 2, 3, 4, 5, 6]}]});
    let results = join_all((0..16).map(|_| infer(&s, "identity_int32", &body))).await;
    assert!(results.iter().all(|r| r.0 == 200));
    let after = stats(&s, "identity_int32").await;
    assert_eq!(count(&after, "execution_count") - count(&before, "execution_count"), 16);
    assert_eq!(count(&after, "inference_count") - count(&before, "inference_count"), 32);
}

#[tokio::test]
async fn a_full_queue_rejects_at_once_with_429_naming_the_model_and_limit() {
    let _serial = SERIAL.lock().await;
    let s = serve(&["slow"], &[]);
    let busy = occupy(&s, "slow", 600.0).await;
    // The queue holds 4 (config max_queue_size); these wait behind the busy instance.
    let http = s.http.clone();
    let waiting: Vec<_> = (0..4)
        .map(|i| {
            let http = http.clone();
            tokio::spawn(async move {
                post_json(
                    &format!("{http}/v2/models/slow/infer"),
                    &slow_body(&[i as f32 * 0.001], json!({})),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = Instant::now();
    let (status, v, answered) = infer(&s, "slow", &slow_body(&[0.0], json!({}))).await;
    assert_eq!(status, 429, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(msg.contains("'slow'") && msg.contains('4'), "{msg}");
    assert!(
        answered - sent < Duration::from_millis(400),
        "rejected without waiting for the busy instance"
    );
    let (status, ..) = busy.await.unwrap();
    assert_eq!(status, 200);
    for w in waiting {
        assert_eq!(
            w.await.unwrap().0,
            200,
            "queued requests are served once the instance is free"
        );
    }
    let mut c = grpc(&s).await;
    let _busy = occupy(&s, "slow", 400.0).await;
    for i in 0..4 {
        let http = http.clone();
        tokio::spawn(async move {
            post_json(
                &format!("{http}/v2/models/slow/infer"),
                &slow_body(&[i as f32], json!({})),
            )
            .await
        });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let req = slow_grpc(0.0);
    assert_eq!(
        c.model_infer(req).await.unwrap_err().code(),
        tonic::Code::ResourceExhausted
    );
}

#[tokio::test]
async fn a_queue_timeout_fires_while_the_request_waits_not_after_the_running_batch() {
    let _serial = SERIAL.lock().await;
    let s = serve(&["slow"], &[]);
    let busy = occupy(&s, "slow", 1500.0).await;
    let sent = Instant::now();
    let (status, v, answered) = infer(&s, "slow", &slow_body(&[1.0], json!({"timeout": 50_000}))).await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("timed out"), "{v}");
    assert!(
        answered - sent < Duration::from_millis(1000),
        "the timeout fired while the batch was still running"
    );
    let (_, _, busy_done) = busy.await.unwrap();
    assert!(answered < busy_done);
    let st = stats(&s, "slow").await;
    assert_eq!(count(&st, "inference_count"), 1, "the timed-out request never ran");
    assert_eq!(count(&st, "fail"), 1);
}

#[tokio::test]
async fn a_delayed_request_runs_after_those_that_have_not_timed_out() {
    let _serial = SERIAL.lock().await;
    let s = serve(&["slow_delay"], &[]);
    let busy = occupy(&s, "slow_delay", 400.0).await;
    let eight = |v: f32| [v; 8];
    // A fills a whole batch and times out (DELAY) while waiting; B arrives later without a timeout.
    let a = tokio::spawn({
        let http = s.http.clone();
        async move {
            post_json(
                &format!("{http}/v2/models/slow_delay/infer"),
                &slow_body(&eight(100.0), json!({"timeout": 1000})),
            )
            .await;
            Instant::now()
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (status, _, b_done) = infer(&s, "slow_delay", &slow_body(&eight(100.0), json!({}))).await;
    assert_eq!(status, 200);
    let a_done = a.await.unwrap();
    busy.await.unwrap();
    assert!(
        b_done < a_done,
        "the timed-out request went behind the one that had not timed out"
    );
}

#[tokio::test]
async fn higher_priority_requests_run_first() {
    let _serial = SERIAL.lock().await;
    let s = serve(&["slow"], &[]);
    let busy = occupy(&s, "slow", 400.0).await;
    let run = |priority: u64, value: f32| {
        let http = s.http.clone();
        tokio::spawn(async move {
            let (status, v) = post_json(
                &format!("{http}/v2/models/slow/infer"),
                &slow_body(&[value; 8], json!({"priority": priority})),
            )
            .await;
            assert_eq!(status, 200, "{v}");
            Instant::now()
        })
    };
    // Whole batches, so the two cannot share one: the low-priority one arrives first.
    let low = run(3, 100.0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let high = run(1, 100.0);
    let (low_done, high_done) = (low.await.unwrap(), high.await.unwrap());
    busy.await.unwrap();
    assert!(
        high_done < low_done,
        "priority 1 ran before priority 3, though it arrived later"
    );
    let (status, v, _) = infer(&s, "slow", &slow_body(&[0.0], json!({"priority": 4}))).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("priority 4"));
}

#[tokio::test]
async fn a_request_whose_client_went_away_never_runs() {
    let _serial = SERIAL.lock().await;
    let s = serve(&["slow"], &[]);
    let busy = occupy(&s, "slow", 500.0).await;
    // An HTTP client that gives up while its request waits, and a gRPC call that is cancelled.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let gone = impatient
        .post(format!("{}/v2/models/slow/infer", s.http))
        .json(&slow_body(&[7.0], json!({})))
        .send()
        .await;
    assert!(gone.is_err(), "the client timed out");
    let mut c = grpc(&s).await;
    let req = slow_grpc(8.0);
    let cancelled = tokio::time::timeout(Duration::from_millis(100), c.model_infer(req)).await;
    assert!(cancelled.is_err(), "the call was cancelled while waiting");
    busy.await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let st = stats(&s, "slow").await;
    assert_eq!(count(&st, "inference_count"), 1, "only the busy request ran");
    let m = scrape_parsed(&s.metrics).await;
    let canceled = [("model", "slow"), ("version", "1"), ("reason", "CANCELED")];
    assert_eq!(m.value("nv_inference_request_failure", &canceled), 2.0, "{}", m.text);
}

#[tokio::test]
async fn the_global_in_flight_cap_rejects_with_429() {
    let _serial = SERIAL.lock().await;
    let s = serve(&["slow", "identity_int32"], &["--max-inflight-requests", "1"]);
    let busy = occupy(&s, "slow", 400.0).await;
    let body = json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "INT32", "data": [1]}]});
    let (status, v, _) = infer(&s, "identity_int32", &body).await;
    assert_eq!(status, 429, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--max-inflight-requests"), "{v}");
    busy.await.unwrap();
    let (status, ..) = infer(&s, "identity_int32", &body).await;
    assert_eq!(status, 200, "admitted again once the cap frees");
}

/// A gRPC request to `model` (an identity on strings) with one BYTES element.
fn string_grpc(model: &str, text: &[u8]) -> inferd::proto::ModelInferRequest {
    let raw = length_prefixed(&[text]);
    inferd::proto::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![inferd::proto::model_infer_request::InferInputTensor {
            name: "INPUT0".into(),
            datatype: "BYTES".into(),
            shape: vec![1, 1],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(raw)],
        ..Default::default()
    }
}

#[tokio::test]
async fn with_preserve_ordering_a_failed_batch_retried_one_by_one_holds_up_no_later_request() {
    // A batch with one request ONNX Runtime refuses (text that is not UTF-8) fails as a whole; its requests
    // are then run one at a time, and each is answered in its turn.
    let repo = tempfile::tempdir().unwrap();
    // A request waits up to a second for a partner; two together are cut at once.
    let ordered =
        "dynamic_batching { preserve_ordering: true preferred_batch_size: [2] max_queue_delay_microseconds: 1000000 }";
    copy_test_model(
        repo.path(),
        "identity_string",
        "ordered_strings",
        &[("instance_group", &format!("{ordered}\ninstance_group"))],
    );
    let s = spawn(args(&["--model-repository", path(repo.path())])).expect("server starts");
    let (mut a, mut b) = (grpc(&s).await, grpc(&s).await);
    let sent = Instant::now();
    let (good, bad) = tokio::join!(
        a.model_infer(string_grpc("ordered_strings", b"fine")),
        b.model_infer(string_grpc("ordered_strings", &[0xff, 0xfe]))
    );
    assert!(sent.elapsed() < Duration::from_millis(900), "the two ran as one batch");
    let good = good.expect("the good request of the failed batch is answered");
    assert_eq!(&good.get_ref().raw_output_contents[0][4..], b"fine");
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let st = stats(&s, "ordered_strings").await;
    assert_eq!(
        count(&st, "execution_count"),
        1,
        "only the retried good request executed: {st}"
    );
    // Every later request is answered.
    for text in [&b"after"[..], b"and after"] {
        let later = tokio::time::timeout(
            Duration::from_secs(10),
            a.model_infer(string_grpc("ordered_strings", text)),
        )
        .await
        .expect("a later request is not held up forever")
        .expect("and succeeds");
        assert_eq!(&later.get_ref().raw_output_contents[0][4..], text);
    }
}
