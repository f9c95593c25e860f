//! The REST front-end, through a real server: every endpoint, JSON and binary tensors, and every error case.
mod common;

use common::*;
use serde_json::{json, Value};

fn simple_json(rows: usize) -> Value {
    let (a, b) = simple_inputs(rows);
    json!({
        "id": "req-7",
        "inputs": [
            {"name": "INPUT0", "shape": [rows, 16], "datatype": "INT32", "data": a},
            {"name": "INPUT1", "shape": [rows, 16], "datatype": "INT32", "data": b},
        ]
    })
}

fn as_i32(v: &Value) -> Vec<i32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int") as i32)
        .collect()
}

async fn success_count(model: &str) -> u64 {
    let (_, stats) = get(&format!("{}/v2/models/{model}/stats", server().http)).await;
    stats["model_stats"][0]["inference_stats"]["success"]["count"]
        .as_u64()
        .expect("count")
}

#[tokio::test]
async fn health_endpoints_report_live_and_ready() {
    let s = server();
    assert_eq!(get(&format!("{}/v2/health/live", s.http)).await.0, 200);
    assert_eq!(get(&format!("{}/v2/health/ready", s.http)).await.0, 200);
    assert_eq!(get(&format!("{}/v2/models/simple/ready", s.http)).await.0, 200);
    assert_eq!(
        get(&format!("{}/v2/models/simple/versions/1/ready", s.http)).await.0,
        200
    );
}

#[tokio::test]
async fn server_metadata_lists_the_extensions() {
    let (status, md) = get(&format!("{}/v2", server().http)).await;
    assert_eq!(status, 200);
    assert_eq!(md["name"], "inferd");
    let ext: Vec<&str> = md["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for e in [
        "binary_tensor_data",
        "statistics",
        "model_configuration",
        "parameters",
        "classification",
    ] {
        assert!(ext.contains(&e), "missing extension {e} in {ext:?}");
    }
}

#[tokio::test]
async fn model_metadata_shows_batch_dimension_and_versions() {
    for url in ["/v2/models/simple", "/v2/models/simple/versions/1"] {
        let (status, md) = get(&format!("{}{url}", server().http)).await;
        assert_eq!(status, 200, "{md}");
        assert_eq!(md["name"], "simple");
        assert_eq!(md["versions"], json!(["1"]));
        assert_eq!(md["platform"], "onnxruntime_onnx");
        assert_eq!(
            md["inputs"][0],
            json!({"name": "INPUT0", "datatype": "INT32", "shape": [-1, 16]})
        );
        assert_eq!(
            md["outputs"][1],
            json!({"name": "OUTPUT1", "datatype": "INT32", "shape": [-1, 16]})
        );
    }
}

#[tokio::test]
async fn model_config_is_served_as_json() {
    let (status, cfg) = get(&format!("{}/v2/models/simple/config", server().http)).await;
    assert_eq!(status, 200);
    assert_eq!(cfg["name"], "simple");
    assert_eq!(cfg["max_batch_size"], 8);
    assert_eq!(cfg["input"][0]["data_type"], "TYPE_INT32");
    assert_eq!(cfg["input"][0]["dims"], json!([16]));
    assert_eq!(cfg["instance_group"][0]["kind"], "KIND_CPU");
}

#[tokio::test]
async fn a_model_without_config_is_completed_from_the_onnx_file() {
    let (status, cfg) = get(&format!("{}/v2/models/mlp_autoconf/config", server().http)).await;
    assert_eq!(status, 200);
    assert_eq!(cfg["name"], "mlp_autoconf");
    assert_eq!(cfg["platform"], "onnxruntime_onnx");
    assert_eq!(
        cfg["max_batch_size"], 4,
        "a dynamic first dimension becomes the batch dimension"
    );
    assert_eq!(
        cfg["input"],
        json!([{"name": "INPUT", "data_type": "TYPE_FP32", "dims": [64], "format": "FORMAT_NONE", "allow_ragged_batch": false, "is_shape_tensor": false, "optional": false, "is_non_linear_format_io": false}])
    );
    assert_eq!(cfg["output"][0]["name"], "OUTPUT");
    assert_eq!(cfg["output"][0]["dims"], json!([10]));
}

#[tokio::test]
async fn json_infer_returns_sum_and_difference_and_echoes_the_id() {
    let (status, resp) = post_json(&format!("{}/v2/models/simple/infer", server().http), &simple_json(1)).await;
    assert_eq!(status, 200, "{resp}");
    let (a, b) = simple_inputs(1);
    assert_eq!(resp["id"], "req-7");
    assert_eq!(resp["model_name"], "simple");
    assert_eq!(resp["model_version"], "1");
    assert_eq!(resp["outputs"][0]["name"], "OUTPUT0");
    assert_eq!(resp["outputs"][0]["shape"], json!([1, 16]));
    assert_eq!(
        as_i32(&resp["outputs"][0]["data"]),
        a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>()
    );
    assert_eq!(
        as_i32(&resp["outputs"][1]["data"]),
        a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn nested_data_arrays_and_a_named_version_work_like_flat_ones() {
    let (a, b) = simple_inputs(2);
    let nested = |v: &[i32]| json!([v[..16].to_vec(), v[16..].to_vec()]);
    let body = json!({"inputs": [
        {"name": "INPUT0", "shape": [2, 16], "datatype": "INT32", "data": nested(&a)},
        {"name": "INPUT1", "shape": [2, 16], "datatype": "INT32", "data": nested(&b)},
    ], "outputs": [{"name": "OUTPUT1"}]});
    let (status, resp) = post_json(&format!("{}/v2/models/simple/versions/1/infer", server().http), &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        resp["outputs"].as_array().unwrap().len(),
        1,
        "only the requested output comes back"
    );
    assert_eq!(resp["outputs"][0]["name"], "OUTPUT1");
    assert_eq!(resp["outputs"][0]["shape"], json!([2, 16]));
    assert_eq!(
        as_i32(&resp["outputs"][0]["data"]),
        a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn binary_inputs_and_outputs_follow_the_json_header() {
    let (a, b) = simple_inputs(3);
    let header = json!({
        "inputs": [
            {"name": "INPUT0", "shape": [3, 16], "datatype": "INT32", "parameters": {"binary_data_size": 192}},
            {"name": "INPUT1", "shape": [3, 16], "datatype": "INT32", "parameters": {"binary_data_size": 192}},
        ],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}, {"name": "OUTPUT1", "parameters": {"binary_data": false}}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(i32_bytes(&a));
    body.extend(i32_bytes(&b));
    let resp = post_raw(
        &format!("{}/v2/models/simple/infer", server().http),
        body,
        Some(header.len()),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/octet-stream");
    let (head, binary) = binary_response(resp).await;
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 192);
    assert!(head["outputs"][0].get("data").is_none());
    assert_eq!(
        i32_values(&binary),
        a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>()
    );
    assert_eq!(
        as_i32(&head["outputs"][1]["data"]),
        a.iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn binary_data_output_makes_every_output_binary() {
    let mut body = simple_json(1);
    body["parameters"] = json!({"binary_data_output": true});
    let resp = post_raw(
        &format!("{}/v2/models/simple/infer", server().http),
        body.to_string().into_bytes(),
        None,
    )
    .await;
    let (_, binary) = binary_response(resp).await;
    assert_eq!(binary.len(), 2 * 64, "both outputs in the binary section");
}

#[tokio::test]
async fn statistics_count_requests_rows_and_executions() {
    let s = server();
    let before = get(&format!("{}/v2/models/simple_string/stats", s.http)).await.1;
    let rows = 3;
    let strings = |v: Vec<i32>| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (a, b) = simple_inputs(rows);
    let body = json!({"inputs": [
        {"name": "INPUT0", "shape": [rows, 16], "datatype": "BYTES", "data": strings(a.clone())},
        {"name": "INPUT1", "shape": [rows, 16], "datatype": "BYTES", "data": strings(b.clone())},
    ]});
    for _ in 0..2 {
        let (status, resp) = post_json(&format!("{}/v2/models/simple_string/infer", s.http), &body).await;
        assert_eq!(status, 200, "{resp}");
        let sums: Vec<String> = a.iter().zip(&b).map(|(x, y)| (x + y).to_string()).collect();
        assert_eq!(resp["outputs"][0]["data"], json!(sums));
    }
    let after = get(&format!("{}/v2/models/simple_string/versions/1/stats", s.http))
        .await
        .1;
    let n = |v: &Value, path: &[&str]| path.iter().fold(v, |v, k| &v[*k]).as_u64().unwrap();
    let m = |v: &Value| v["model_stats"][0].clone();
    let (b4, af) = (m(&before), m(&after));
    assert_eq!(af["name"], "simple_string");
    assert_eq!(af["version"], "1");
    assert_eq!(
        n(&af, &["inference_stats", "success", "count"]) - n(&b4, &["inference_stats", "success", "count"]),
        2
    );
    assert_eq!(
        n(&af, &["inference_count"]) - n(&b4, &["inference_count"]),
        6,
        "rows, not requests"
    );
    assert_eq!(n(&af, &["execution_count"]) - n(&b4, &["execution_count"]), 2);
    for k in ["queue", "compute_input", "compute_infer", "compute_output"] {
        assert!(
            n(&af, &["inference_stats", k, "ns"]) > n(&b4, &["inference_stats", k, "ns"]),
            "{k} duration grows"
        );
    }
    let batch3 = af["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["batch_size"] == 3)
        .expect("batch size 3 recorded");
    assert!(batch3["compute_infer"]["count"].as_u64().unwrap() >= 2);
    let (_, all) = get(&format!("{}/v2/models/stats", s.http)).await;
    let names: Vec<&str> = all["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(names.contains(&"simple") && names.contains(&"mlp"), "{names:?}");
}

#[tokio::test]
async fn failures_are_counted_in_statistics() {
    let before = get(&format!("{}/v2/models/identity_int8/stats", server().http)).await.1;
    let bad = json!({"inputs": [{"name": "INPUT0", "shape": [1, 2], "datatype": "INT8", "data": [1]}]});
    assert_eq!(
        post_json(&format!("{}/v2/models/identity_int8/infer", server().http), &bad)
            .await
            .0,
        400
    );
    let after = get(&format!("{}/v2/models/identity_int8/stats", server().http)).await.1;
    let fail = |v: &Value| {
        v["model_stats"][0]["inference_stats"]["fail"]["count"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(fail(&after) - fail(&before), 1);
}

async fn expect_error(model: &str, body: Value, status: u16, needles: &[&str]) {
    let (got, resp) = post_json(&format!("{}/v2/models/{model}/infer", server().http), &body).await;
    assert_eq!(got, status, "{resp}");
    let msg = resp["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {resp}"));
    for n in needles {
        assert!(msg.contains(n), "'{msg}' does not mention '{n}'");
    }
}

#[tokio::test]
async fn unknown_models_and_versions_are_404() {
    expect_error("nope", simple_json(1), 404, &["Request for unknown model", "'nope'"]).await;
    let (status, resp) = post_json(
        &format!("{}/v2/models/simple/versions/9/infer", server().http),
        &simple_json(1),
    )
    .await;
    assert_eq!(status, 404);
    assert!(resp["error"].as_str().unwrap().starts_with("Request for unknown model"));
    assert_eq!(get(&format!("{}/v2/models/nope", server().http)).await.0, 404);
    assert_eq!(get(&format!("{}/v2/models/nope/ready", server().http)).await.0, 404);
    assert_eq!(get(&format!("{}/v2/models/nope/config", server().http)).await.0, 404);
    assert_eq!(get(&format!("{}/v2/models/nope/stats", server().http)).await.0, 404);
    assert_eq!(get(&format!("{}/v2/no/such/path", server().http)).await.0, 404);
}

#[tokio::test]
async fn invalid_inputs_are_400_naming_the_input_and_the_expectation() {
    let (a, b) = simple_inputs(1);
    let input = |name: &str, shape: Value, dt: &str, data: Value| json!({"name": name, "shape": shape, "datatype": dt, "data": data});
    let ok1 = input("INPUT1", json!([1, 16]), "INT32", json!(b));
    // An input the model does not have.
    expect_error(
        "simple",
        json!({"inputs": [input("INPUTX", json!([1, 16]), "INT32", json!(a)), ok1.clone()]}),
        400,
        &["unexpected inference input 'INPUTX'"],
    )
    .await;
    // Wrong datatype.
    expect_error(
        "simple",
        json!({"inputs": [input("INPUT0", json!([1, 16]), "FP32", json!(a)), ok1.clone()]}),
        400,
        &["INPUT0", "FP32", "INT32"],
    )
    .await;
    // Wrong shape.
    expect_error(
        "simple",
        json!({"inputs": [input("INPUT0", json!([1, 15]), "INT32", json!(a[..15])), ok1.clone()]}),
        400,
        &["INPUT0", "[-1,16]", "[1,15]"],
    )
    .await;
    // Element count that does not match the shape.
    expect_error(
        "simple",
        json!({"inputs": [input("INPUT0", json!([1, 16]), "INT32", json!(a[..15])), ok1.clone()]}),
        400,
        &["INPUT0", "Expected 64, got 60"],
    )
    .await;
    // A missing input.
    expect_error(
        "simple",
        json!({"inputs": [ok1.clone()]}),
        400,
        &["missing required input", "INPUT0"],
    )
    .await;
    // Batch above max_batch_size (8).
    let nine = |v: &Vec<i32>| json!(v.iter().cycle().take(16 * 9).collect::<Vec<_>>());
    expect_error("simple", json!({"inputs": [input("INPUT0", json!([9, 16]), "INT32", nine(&a)), input("INPUT1", json!([9, 16]), "INT32", nine(&b))]}), 400, &["batch-size must be <= 8"]).await;
    // An unknown datatype, an unknown output, a value out of range.
    expect_error(
        "simple",
        json!({"inputs": [input("INPUT0", json!([1, 16]), "INT33", json!(a)), ok1.clone()]}),
        400,
        &["INPUT0", "INT33"],
    )
    .await;
    let mut unknown_output = simple_json(1);
    unknown_output["outputs"] = json!([{"name": "OUTPUT9"}]);
    expect_error("simple", unknown_output, 400, &["OUTPUT9"]).await;
    expect_error(
        "identity_uint8",
        json!({"inputs": [input("INPUT0", json!([1, 1]), "UINT8", json!([256]))]}),
        400,
        &["INPUT0", "out of range"],
    )
    .await;
}

#[tokio::test]
async fn malformed_bodies_are_400() {
    let url = format!("{}/v2/models/simple/infer", server().http);
    for body in [&b"{not json"[..], b"", b"[]", b"{\"inputs\": 5}"] {
        let resp = post_raw(&url, body.to_vec(), None).await;
        assert_eq!(resp.status().as_u16(), 400);
        let v: Value = resp.json().await.unwrap();
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // The header length points past the body; a binary input longer than the body; bytes nobody claims.
    let header = json!({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}}]}).to_string();
    assert_eq!(
        post_raw(&url, header.clone().into_bytes(), Some(header.len() + 10))
            .await
            .status()
            .as_u16(),
        400
    );
    let mut short = header.clone().into_bytes();
    short.extend([0u8; 10]);
    let resp = post_raw(&url, short, Some(header.len())).await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().await.unwrap().contains("binary_data_size"));
    let resp = post_raw(&url, header.clone().into_bytes(), Some(usize::MAX)).await;
    assert_eq!(resp.status().as_u16(), 400);
    let bad_len = http()
        .post(&url)
        .header("Inference-Header-Content-Length", "abc")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_len.status().as_u16(), 400);
}

#[tokio::test]
async fn the_server_keeps_serving_after_bad_requests() {
    let url = format!("{}/v2/models/simple/infer", server().http);
    for _ in 0..20 {
        let _ = post_raw(&url, b"\xff\xfe garbage".to_vec(), Some(3)).await;
    }
    let (status, _) = post_json(&url, &simple_json(1)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_report_triton_counters_per_model() {
    let (status, _) = post_json(&format!("{}/v2/models/simple/infer", server().http), &simple_json(1)).await;
    assert_eq!(status, 200);
    let n = success_count("simple").await;
    assert!(n >= 1);
    let m = scrape_parsed(&server().metrics).await;
    assert!(m.value("nv_inference_request_success", &[("model", "simple"), ("version", "1")]) >= 1.0);
    assert!(m.has("nv_inference_exec_count", &[("model", "mlp"), ("version", "1")]));
    assert!(m.has("process_resident_memory_bytes", &[]));
}
