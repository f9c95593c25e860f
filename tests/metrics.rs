//! The metrics port, read the way Prometheus reads it (a real text-format parser): counters equal the
//! requests actually sent, failures land under their reason, histograms agree with the counters, the gauges
//! an autoscaler targets rise under load and fall back to 0, and lifecycle states follow loads and unloads.
//! Failed requests are logged once each, with their id.
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::future::join_all;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::ModelInferRequest;
use serde_json::{json, Value};

fn mlp_body(rows: usize, seed: u64) -> Value {
    json!({"inputs": [{"name": "INPUT", "shape": [rows, 64], "datatype": "FP32", "data": random_f32(seed, rows * 64)}]})
}

fn mlp_grpc(datatype: &str) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT".into(),
            datatype: datatype.into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![bytes::Bytes::from(vec![0u8; 256])],
        ..Default::default()
    }
}

fn slow_body(ms: f32) -> Value {
    json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "FP32", "data": [ms]}]})
}

/// A server with only the named test models loaded, under explicit model control.
fn serve_test_models(models: &[&str]) -> TestServer {
    let repo = root().join("tests/models");
    let mut a = vec!["--model-repository", path(&repo), "--model-control-mode", "explicit"];
    for m in models {
        a.extend(["--load-model", m]);
    }
    spawn(args(&a)).expect("server starts")
}

/// Scrapes until `done` holds (or fails after 10 s), returning the page that satisfied it.
async fn scrape_until(s: &TestServer, what: &str, done: impl Fn(&Scraped) -> bool) -> Scraped {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape_parsed(&s.metrics).await;
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "never saw {what}:\n{}", m.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_histogram_consistent(m: &Scraped, name: &str, labels: &[(&str, &str)], count: f64) {
    let buckets = m.histogram(name, labels);
    assert!(
        buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{name}: {buckets:?}"
    );
    let (last_bound, last_count) = *buckets.last().unwrap();
    assert!(last_bound.is_infinite(), "{name} ends with +Inf");
    assert_eq!(last_count, count, "{name} counts every observation");
    assert_eq!(m.value(&format!("{name}_count"), labels), count, "{name}_count");
}

#[tokio::test]
async fn counters_and_histograms_count_exactly_the_requests_sent() {
    let s = spawn(args(&["--model-repository", path(&root().join("models"))])).unwrap();
    let url = format!("{}/v2/models/mlp/infer", s.http);
    let pinned = format!("{}/v2/models/mlp/versions/1/infer", s.http);
    for i in 0..12 {
        assert_eq!(post_json(&url, &mlp_body(2, i)).await.0, 200);
    }
    for i in 0..3 {
        assert_eq!(post_json(&pinned, &mlp_body(2, i)).await.0, 200);
    }
    let mut client = grpc(&s).await;
    for _ in 0..5 {
        client.model_infer(mlp_grpc("FP32")).await.expect("gRPC infer");
    }
    // Four bad requests for a known model: a wrong input name twice over HTTP, a wrong datatype twice over gRPC.
    let bad = json!({"inputs": [{"name": "WRONG", "shape": [1, 64], "datatype": "FP32", "data": random_f32(1, 64)}]});
    for _ in 0..2 {
        assert_eq!(post_json(&url, &bad).await.0, 400);
        assert!(client.model_infer(mlp_grpc("INT32")).await.is_err());
    }

    let m = scrape_parsed(&s.metrics).await;
    let mv = [("model", "mlp"), ("version", "1")];
    let with = |k: &'static str, v: &'static str| [mv[0], mv[1], (k, v)];
    assert_eq!(m.value("nv_inference_request_success", &mv), 20.0);
    assert_eq!(m.value("nv_inference_request_failure", &with("reason", "OTHER")), 4.0);
    for reason in ["REJECTED", "CANCELED", "BACKEND"] {
        assert_eq!(m.value("nv_inference_request_failure", &with("reason", reason)), 0.0);
    }
    let rows = m.value("nv_inference_count", &mv);
    let executions = m.value("nv_inference_exec_count", &mv);
    assert_eq!(rows, (15 * 2 + 5) as f64);
    assert!((1.0..=20.0).contains(&executions));
    assert!(m.value("nv_inference_request_duration_us", &mv) > 0.0);
    assert!(m.value("nv_inference_compute_infer_duration_us", &mv) > 0.0);

    assert_histogram_consistent(&m, "inferd_request_duration_seconds", &with("protocol", "http"), 15.0);
    assert_histogram_consistent(&m, "inferd_request_duration_seconds", &with("protocol", "grpc"), 5.0);
    assert_histogram_consistent(&m, "inferd_queue_duration_seconds", &mv, 20.0);
    assert_histogram_consistent(&m, "inferd_compute_duration_seconds", &mv, executions);
    assert_histogram_consistent(&m, "inferd_batch_size", &mv, executions);
    assert_eq!(
        m.value("inferd_batch_size_sum", &mv),
        rows,
        "rows per execution add up to the rows served"
    );

    assert_eq!(m.value("inferd_routed_requests_total", &with("arm", "split")), 21.0);
    assert_eq!(m.value("inferd_routed_requests_total", &with("arm", "pinned")), 3.0);
    assert_eq!(m.value("inferd_routed_requests_total", &with("arm", "shadow")), 0.0);
    assert_eq!(m.value("inferd_traffic_weight", &with("arm", "split")), 1.0);
    assert_eq!(m.value("inferd_model_state", &with("state", "ready")), 1.0);
    assert_eq!(m.value("inferd_instances", &mv), 1.0);
    for idle in [
        "inferd_queue_depth",
        "nv_inference_pending_request_count",
        "inferd_instances_busy",
    ] {
        assert_eq!(m.value(idle, &mv), 0.0, "{idle}");
    }
    assert_eq!(m.value("inferd_model_inflight_requests", &[("model", "mlp")]), 0.0);
    assert_eq!(m.value("inferd_inflight_requests", &[]), 0.0);
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
}

#[tokio::test]
async fn queue_depth_and_in_flight_rise_under_load_and_return_to_zero() {
    let s = serve_test_models(&["slow"]);
    let url = format!("{}/v2/models/slow/infer", s.http);
    let mv = [("model", "slow"), ("version", "1")];
    // One request holds the single instance for 800 ms ...
    let busy = tokio::spawn({
        let url = url.clone();
        async move { post_json(&url, &slow_body(800.0)).await }
    });
    scrape_until(&s, "the busy request running", |m| {
        m.value("inferd_queue_duration_seconds_count", &mv) == 1.0
    })
    .await;
    // ... while seven more arrive: four fit the queue (max_queue_size 4), three are refused at once.
    let burst = tokio::spawn({
        let url = url.clone();
        async move {
            let body = slow_body(1.0);
            join_all((0..7).map(|_| post_json(&url, &body))).await
        }
    });
    let m = scrape_until(&s, "a full queue", |m| m.value("inferd_queue_depth", &mv) == 4.0).await;
    assert_eq!(m.value("nv_inference_pending_request_count", &mv), 4.0);
    assert_eq!(m.value("inferd_instances_busy", &mv), 1.0);
    assert_eq!(m.value("inferd_model_inflight_requests", &[("model", "slow")]), 5.0);
    assert_eq!(m.value("inferd_inflight_requests", &[]), 5.0);

    assert_eq!(busy.await.unwrap().0, 200);
    let answers = burst.await.unwrap();
    let refused = answers.iter().filter(|(status, _)| *status == 429).count();
    assert_eq!(refused, 3, "{answers:?}");
    assert!(answers.iter().all(|(status, _)| *status == 200 || *status == 429));

    let m = scrape_until(&s, "an idle server", |m| {
        m.value("inferd_instances_busy", &mv) == 0.0 && m.value("inferd_inflight_requests", &[]) == 0.0
    })
    .await;
    assert_eq!(m.value("inferd_queue_depth", &mv), 0.0);
    assert_eq!(m.value("inferd_model_inflight_requests", &[("model", "slow")]), 0.0);
    assert_eq!(m.value("nv_inference_request_success", &mv), 5.0);
    assert_eq!(
        m.value("nv_inference_request_failure", &[mv[0], mv[1], ("reason", "REJECTED")]),
        refused as f64
    );
    // The four queued requests ran together once the instance freed.
    assert_eq!(m.histogram("inferd_batch_size", &mv)[2], (4.0, 2.0), "sizes 1 and 4");
}

#[tokio::test]
async fn a_version_unloaded_mid_request_is_unloading_until_its_last_request_ends() {
    let s = serve_test_models(&["slow"]);
    let slow = [("model", "slow"), ("version", "1")];
    let request = tokio::spawn({
        let url = format!("{}/v2/models/slow/infer", s.http);
        async move { post_json(&url, &slow_body(800.0)).await }
    });
    scrape_until(&s, "the request running", |m| {
        m.value("inferd_queue_duration_seconds_count", &slow) == 1.0
    })
    .await;
    let (status, v) = post_json(&format!("{}/v2/repository/models/slow/unload", s.http), &json!({})).await;
    assert_eq!(status, 200, "{v}");
    let m = scrape_parsed(&s.metrics).await;
    assert_eq!(
        m.value("inferd_model_state", &[slow[0], slow[1], ("state", "unloading")]),
        1.0
    );
    assert!(!m.has("inferd_model_state", &[slow[0], ("state", "ready")]));

    assert_eq!(request.await.unwrap().0, 200, "the request in flight finishes");
    scrape_until(&s, "the unloaded version gone", |m| {
        !m.has("inferd_model_state", &[slow[0]])
    })
    .await;
}

#[tokio::test]
async fn a_model_that_fails_to_load_is_reported_failed() {
    let repo = tempfile::tempdir().unwrap();
    let broken = repo.path().join("broken");
    std::fs::create_dir_all(broken.join("1")).unwrap();
    std::fs::write(broken.join("1/model.onnx"), b"not an onnx file").unwrap();
    let s = serve_despite_failures(repo.path());
    let m = scrape_parsed(&s.metrics).await;
    let failed = [("model", "broken"), ("version", ""), ("state", "failed")];
    assert_eq!(m.value("inferd_model_state", &failed), 1.0, "{}", m.text);
    assert_eq!(m.value("inferd_model_load_failures_total", &[("model", "broken")]), 1.0);
}

#[tokio::test]
async fn without_metrics_the_port_is_closed_and_the_statistics_extension_still_counts() {
    let s = spawn(args(&[
        "--model-repository",
        path(&root().join("models")),
        "--allow-metrics",
        "false",
    ]))
    .unwrap();
    assert_eq!(s.metrics, "http://", "no metrics listener");
    assert_eq!(
        post_json(&format!("{}/v2/models/mlp/infer", s.http), &mlp_body(1, 7))
            .await
            .0,
        200
    );
    let (status, v) = get(&format!("{}/v2/models/mlp/stats", s.http)).await;
    assert_eq!(status, 200);
    assert_eq!(v["model_stats"][0]["inference_stats"]["success"]["count"], 1);
}

#[tokio::test]
async fn every_metric_the_deploy_files_use_is_served() {
    let s = server();
    assert_eq!(
        post_json(
            &format!("{}/v2/models/simple/infer", s.http),
            &json!({"inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": simple_inputs(1).0},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": simple_inputs(1).1}]})
        )
        .await
        .0,
        200
    );
    let families = scrape_parsed(&s.metrics).await.families();
    let mut used = std::collections::BTreeSet::new();
    let mut stack = vec![root().join("deploy")];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            // GPU metrics exist only on GPU builds with a GPU (see server/gpu.rs); the repository sync metrics
            // only with a remote repository (tests/interop/test_deploy.py checks them on a server reading S3);
            // the model-health ones only for a version with a profile or rules (tests/interop/test_drift.py).
            let elsewhere = [
                "inferd_repository_",
                "inferd_drift_",
                "inferd_arm_",
                "inferd_validation_",
            ];
            if ["nv_inference_", "inferd_", "process_"]
                .iter()
                .any(|p| token.starts_with(p))
                && !elsewhere.iter().any(|p| token.starts_with(p))
            {
                used.insert((token.to_string(), p.clone()));
            }
        }
    }
    assert!(used.len() > 10, "the deploy files use the metrics: {used:?}");
    for (name, file) in used {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|base| families.contains(*base)))
            .unwrap_or(&name);
        assert!(
            families.contains(family),
            "{} uses {name}, which is not served",
            file.display()
        );
    }
}

#[test]
fn a_failed_request_is_logged_once_as_json_with_its_id_and_reason() {
    let models = root().join("models");
    let ServerProcess {
        mut child, http, lines, ..
    } = spawn_process(&["--model-repository", path(&models)]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("{http}/v2/models/mlp/infer");
        let bad =
            json!({"id": "req-42", "inputs": [{"name": "WRONG", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]});
        assert_eq!(post_json(&url, &bad).await.0, 400);
        let good = mlp_body(1, 3);
        assert_eq!(post_json(&url, &good).await.0, 200);
        let resp = common::http()
            .post(&url)
            .header("x-request-id", "trace-7")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    });
    let _ = child.kill();
    let _ = child.wait();
    let failures: Vec<Value> = lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .filter(|v| v["fields"]["message"] == "request failed")
        .map(|v| v["fields"].clone())
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "one line per failed request, none for the good one: {failures:?}"
    );
    let f = &failures[0];
    assert_eq!(
        (
            &f["request_id"],
            &f["model"],
            &f["reason"],
            &f["status"],
            &f["protocol"]
        ),
        (
            &json!("req-42"),
            &json!("mlp"),
            &json!("OTHER"),
            &json!(400),
            &json!("http")
        )
    );
    assert!(f["error"].as_str().unwrap().contains("WRONG"), "{f}");
    assert_eq!(
        failures[1]["request_id"], "trace-7",
        "an undecodable body is logged with the header's id"
    );
}
