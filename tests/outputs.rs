//! Which outputs a request gets, and how: each requested output once (a repeat is refused), its options matched
//! to it by name, and Triton's classification extension (`classification: k`: the top k classes of each row as
//! BYTES "score:index[:label]") the same over both protocols.
mod common;

use std::collections::HashMap;

use common::*;
use inferd::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use inferd::proto::{infer_parameter::ParameterChoice, InferParameter, ModelInferRequest};
use serde_json::{json, Value};

fn simple_asking(outputs: Value) -> Value {
    let mut body = simple_body();
    body["outputs"] = outputs;
    body
}

/// An output's JSON `data` as floats.
fn floats(output: &Value) -> Vec<f32> {
    output["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn mlp_rows(rows: usize) -> Vec<f32> {
    random_f32(11, rows * 64)
}

fn mlp_body(rows: usize, outputs: Value) -> Value {
    json!({"inputs": [{"name": "INPUT", "shape": [rows, 64], "datatype": "FP32", "data": mlp_rows(rows)}],
           "outputs": outputs})
}

fn mlp_grpc(rows: usize, classification: Option<i64>) -> ModelInferRequest {
    let mut parameters = HashMap::new();
    if let Some(k) = classification {
        parameters.insert(
            "classification".to_string(),
            InferParameter {
                parameter_choice: Some(ParameterChoice::Int64Param(k)),
            },
        );
    }
    ModelInferRequest {
        model_name: "mlp".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT".into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, 64],
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: "OUTPUT".into(),
            parameters,
        }],
        raw_input_contents: vec![mlp_rows(rows)
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()],
        ..Default::default()
    }
}

/// Triton's top-k strings for one row of scores: highest first (ties by index), the score as C's `%f`.
fn top_k(row: &[f32], k: usize, labels: Option<&[&str]>) -> Vec<String> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| match labels {
            Some(l) => format!("{:.6}:{i}:{}", row[i] as f64, l[i]),
            None => format!("{:.6}:{i}", row[i] as f64),
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The model's raw scores for `rows` rows of the test input, one Vec per row.
async fn raw_scores(s: &TestServer, rows: usize) -> Vec<Vec<f32>> {
    let (status, v) = post_json(&format!("{}/v2/models/mlp/infer", s.http), &mlp_body(rows, json!([]))).await;
    assert_eq!(status, 200, "{v}");
    floats(&v["outputs"][0]).chunks(10).map(<[f32]>::to_vec).collect()
}

#[tokio::test]
async fn an_output_asked_for_twice_is_refused_over_both_protocols() {
    let s = server();
    let outputs = json!([
        {"name": "OUTPUT0", "parameters": {"binary_data": false}},
        {"name": "OUTPUT0", "parameters": {"binary_data": true}},
        {"name": "OUTPUT1", "parameters": {"binary_data": false}},
    ]);
    let (status, v) = post_json(&format!("{}/v2/models/simple/infer", s.http), &simple_asking(outputs)).await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("output 'OUTPUT0' is requested more than once"),
        "{v}"
    );
    let mut client = grpc(s).await;
    let (a, b) = simple_inputs(1);
    let input = |name: &str| InferInputTensor {
        name: name.into(),
        datatype: "INT32".into(),
        shape: vec![1, 16],
        ..Default::default()
    };
    let out = |name: &str| InferRequestedOutputTensor {
        name: name.into(),
        parameters: HashMap::new(),
    };
    let req = ModelInferRequest {
        model_name: "simple".into(),
        inputs: vec![input("INPUT0"), input("INPUT1")],
        outputs: vec![out("OUTPUT1"), out("OUTPUT1")],
        raw_input_contents: vec![i32_bytes(&a).into(), i32_bytes(&b).into()],
        ..Default::default()
    };
    let err = client.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("output 'OUTPUT1' is requested more than once"),
        "{err:?}"
    );
}

#[tokio::test]
async fn each_output_s_binary_flag_follows_its_name_in_the_order_asked() {
    let s = server();
    let outputs = json!([
        {"name": "OUTPUT1", "parameters": {"binary_data": true}},
        {"name": "OUTPUT0", "parameters": {"binary_data": false}},
    ]);
    let header = serde_json::to_vec(&simple_asking(outputs)).unwrap();
    let resp = post_raw(&format!("{}/v2/models/simple/infer", s.http), header, None).await;
    assert_eq!(resp.status().as_u16(), 200);
    let (v, binary) = binary_response(resp).await;
    assert_eq!(v["outputs"][0]["name"], "OUTPUT1");
    assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 64);
    assert_eq!(v["outputs"][1]["name"], "OUTPUT0");
    assert!(v["outputs"][1]["data"].is_array(), "{v}");
    let (a, b) = simple_inputs(1);
    let difference: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert_eq!(i32_values(&binary), difference);
}

#[tokio::test]
async fn classification_gives_the_top_k_classes_of_each_row_over_rest() {
    let s = server();
    let scores = raw_scores(s, 2).await;
    let url = format!("{}/v2/models/mlp/infer", s.http);
    let (status, v) = post_json(
        &url,
        &mlp_body(2, json!([{"name": "OUTPUT", "parameters": {"classification": 3}}])),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let out = &v["outputs"][0];
    assert_eq!(
        (out["datatype"].as_str(), &out["shape"]),
        (Some("BYTES"), &json!([2, 3]))
    );
    let expected: Vec<String> = scores.iter().flat_map(|row| top_k(row, 3, None)).collect();
    assert_eq!(strings(&out["data"]), expected);
    // More classes than the output has: all of them, in order.
    let (_, v) = post_json(
        &url,
        &mlp_body(1, json!([{"name": "OUTPUT", "parameters": {"classification": 50}}])),
    )
    .await;
    assert_eq!(v["outputs"][0]["shape"], json!([1, 10]));
    assert_eq!(strings(&v["outputs"][0]["data"]), top_k(&scores[0], 10, None));
    // 0 asks for no classification: the scores themselves.
    let (_, v) = post_json(
        &url,
        &mlp_body(1, json!([{"name": "OUTPUT", "parameters": {"classification": 0}}])),
    )
    .await;
    assert_eq!(v["outputs"][0]["datatype"], "FP32");
    // As binary data, the strings length-prefixed.
    let outputs = json!([{"name": "OUTPUT", "parameters": {"classification": 2, "binary_data": true}}]);
    let resp = post_raw(&url, serde_json::to_vec(&mlp_body(1, outputs)).unwrap(), None).await;
    let (_, binary) = binary_response(resp).await;
    let expected = top_k(&scores[0], 2, None);
    assert_eq!(
        binary,
        length_prefixed(&expected.iter().map(|s| s.as_bytes()).collect::<Vec<_>>())
    );
}

#[tokio::test]
async fn classification_gives_the_same_answer_over_grpc() {
    let s = server();
    let scores = raw_scores(s, 2).await;
    let mut client = grpc(s).await;
    let resp = client.model_infer(mlp_grpc(2, Some(3))).await.unwrap().into_inner();
    assert_eq!(resp.outputs[0].datatype, "BYTES");
    assert_eq!(resp.outputs[0].shape, vec![2, 3]);
    let got: Vec<String> = inferd::tensor::bytes_elements(&resp.raw_output_contents[0])
        .map(|e| String::from_utf8(e.unwrap().to_vec()).unwrap())
        .collect();
    let expected: Vec<String> = scores.iter().flat_map(|row| top_k(row, 3, None)).collect();
    assert_eq!(got, expected);
    let err = client.model_infer(mlp_grpc(1, Some(-1))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("classification"), "{err:?}");
}

#[tokio::test]
async fn classification_of_integers_and_refusal_of_types_it_cannot_rank() {
    let s = server();
    let (a, b) = simple_inputs(1);
    let outputs = json!([{"name": "OUTPUT0", "parameters": {"classification": 2}}]);
    let (status, v) = post_json(&format!("{}/v2/models/simple/infer", s.http), &simple_asking(outputs)).await;
    assert_eq!(status, 200, "{v}");
    // OUTPUT0 = INPUT0 + INPUT1 = 100 - 2x: largest at index 0.
    let sums: Vec<i32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
    assert_eq!(
        strings(&v["outputs"][0]["data"]),
        vec![format!("{}:0", sums[0]), format!("{}:1", sums[1])]
    );
    for (model, datatype, data) in [
        ("identity_fp16", "FP16", json!([1.0])),
        ("identity_string", "BYTES", json!(["a"])),
        ("identity_bool", "BOOL", json!([true])),
    ] {
        let body = json!({
            "inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": datatype, "data": data}],
            "outputs": [{"name": "OUTPUT0", "parameters": {"classification": 1}}]
        });
        let (status, v) = post_json(&format!("{}/v2/models/{model}/infer", s.http), &body).await;
        assert_eq!(status, 400, "{model}: {v}");
        let expected = format!("class result not available for output due to unsupported type '{datatype}'");
        assert!(v["error"].as_str().unwrap().contains(&expected), "{v}");
    }
    for bad in [json!(-1), json!(1.5), json!("3")] {
        let outputs = json!([{"name": "OUTPUT0", "parameters": {"classification": bad}}]);
        let (status, v) = post_json(&format!("{}/v2/models/simple/infer", s.http), &simple_asking(outputs)).await;
        assert_eq!(status, 400, "{bad}: {v}");
    }
}

#[tokio::test]
async fn classification_names_each_class_from_the_output_s_label_file() {
    let repo = tempfile::tempdir().unwrap();
    let dir = copy_example(
        repo.path(),
        "mlp",
        "mlp_labelled",
        &[("dims: [ 10 ]", "dims: [ 10 ]\n    label_filename: \"labels.txt\"")],
    );
    let labels = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    std::fs::write(dir.join("labels.txt"), labels.join("\n") + "\n").unwrap();
    let s = spawn(args(&["--model-repository", path(repo.path())])).unwrap();
    let (_, v) = post_json(
        &format!("{}/v2/models/mlp_labelled/infer", s.http),
        &mlp_body(1, json!([])),
    )
    .await;
    let raw = floats(&v["outputs"][0]);
    let outputs = json!([{"name": "OUTPUT", "parameters": {"classification": 4}}]);
    let (status, v) = post_json(
        &format!("{}/v2/models/mlp_labelled/infer", s.http),
        &mlp_body(1, outputs),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(strings(&v["outputs"][0]["data"]), top_k(&raw, 4, Some(&labels)));
    // A label file that is not there fails the load, naming it.
    let missing = tempfile::tempdir().unwrap();
    copy_example(
        missing.path(),
        "mlp",
        "mlp_unlabelled",
        &[("dims: [ 10 ]", "dims: [ 10 ]\n    label_filename: \"labels.txt\"")],
    );
    let s = serve_despite_failures(missing.path());
    let (status, v) = post_json(
        &format!("{}/v2/models/mlp_unlabelled/infer", s.http),
        &mlp_body(1, json!([])),
    )
    .await;
    assert_eq!(status, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("labels.txt"), "{v}");
}
