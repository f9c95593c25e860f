//! The built-in identity backend (`simple_identity`, Triton's example model) and Triton's `simple_int8`, over
//! both protocols: bytes come back exactly as sent, NUL and non-UTF-8 bytes included.
mod common;

use common::{grpc, http, length_prefixed, server};
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::{InferTensorContents, ModelInferRequest};
use serde_json::{json, Value};
use tonic::Code;

fn identity_request(shape: Vec<i64>, raw: Vec<u8>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: "simple_identity".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "BYTES".into(),
            shape,
            ..Default::default()
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn bytes_with_nul_and_non_utf8_bytes_come_back_exactly_over_grpc() {
    let elements: [&[u8]; 4] = [b"he\0llo", b"", &[0xff, 0x00, 0xfe], b"\0"];
    let raw = length_prefixed(&elements);
    let resp = grpc(server())
        .await
        .model_infer(identity_request(vec![1, 4], raw.clone()))
        .await
        .expect("identity answers")
        .into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.outputs[0].name, "OUTPUT0");
    assert_eq!(resp.outputs[0].datatype, "BYTES");
    assert_eq!(resp.outputs[0].shape, vec![1, 4]);
    assert_eq!(resp.raw_output_contents[0].as_ref(), raw.as_slice());
}

#[tokio::test]
async fn bytes_typed_contents_come_back_as_the_same_elements_over_grpc() {
    let mut req = identity_request(vec![2, 2], Vec::new());
    req.raw_input_contents.clear();
    let elements: Vec<Vec<u8>> = vec![
        b"a\0b".to_vec(),
        b"".to_vec(),
        b"\x01\x02\x03\x00".to_vec(),
        b"z".to_vec(),
    ];
    req.inputs[0].contents = Some(InferTensorContents {
        bytes_contents: elements.iter().cloned().map(Into::into).collect(),
        ..Default::default()
    });
    let resp = grpc(server())
        .await
        .model_infer(req)
        .await
        .expect("identity answers")
        .into_inner();
    let refs: Vec<&[u8]> = elements.iter().map(Vec::as_slice).collect();
    assert_eq!(resp.outputs[0].shape, vec![2, 2]);
    assert_eq!(resp.raw_output_contents[0].as_ref(), length_prefixed(&refs).as_slice());
}

#[tokio::test]
async fn bytes_round_trip_over_rest_binary_data() {
    let raw = length_prefixed(&[b"he\0llo", &[0x80, 0x00], b""]);
    let header = json!({
        "inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "BYTES",
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let resp = common::post_raw(
        &format!("{}/v2/models/simple_identity/infer", server().http),
        body,
        Some(header.len()),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let (json, data) = common::binary_response(resp).await;
    assert_eq!(json["outputs"][0]["shape"], json!([1, 3]));
    assert_eq!(json["outputs"][0]["datatype"], "BYTES");
    assert_eq!(data, raw);
}

#[tokio::test]
async fn json_strings_with_nul_characters_round_trip_over_rest() {
    let data = vec!["he\u{0}llo", "", "ünïcode"];
    let (status, body) = common::post_json(
        &format!("{}/v2/models/simple_identity/infer", server().http),
        &json!({"inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "BYTES", "data": data}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!(data));
    assert_eq!(body["outputs"][0]["shape"], json!([1, 3]));
}

#[tokio::test]
async fn simple_identity_has_tritons_interface_on_the_identity_backend() {
    let (status, meta) = common::get(&format!("{}/v2/models/simple_identity", server().http)).await;
    assert_eq!(status, 200);
    assert_eq!(
        meta["inputs"],
        json!([{"name": "INPUT0", "datatype": "BYTES", "shape": [-1, -1]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([{"name": "OUTPUT0", "datatype": "BYTES", "shape": [-1, -1]}])
    );
    let (_, cfg) = common::get(&format!("{}/v2/models/simple_identity/config", server().http)).await;
    assert_eq!(cfg["backend"], "identity");
    assert_eq!(cfg["max_batch_size"], 8);
}

#[tokio::test]
async fn a_batch_larger_than_max_batch_size_is_refused_not_copied() {
    let raw = length_prefixed(&[b"x".as_slice(); 9]);
    let err = grpc(server())
        .await
        .model_infer(identity_request(vec![9, 1], raw))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

fn int8_request(a: &[i32], b: &[i32]) -> ModelInferRequest {
    let input = |name: &str, v: &[i32]| InferInputTensor {
        name: name.into(),
        datatype: "INT8".into(),
        shape: vec![1, 16],
        contents: Some(InferTensorContents {
            int_contents: v.to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    ModelInferRequest {
        model_name: "simple_int8".into(),
        inputs: vec![input("INPUT0", a), input("INPUT1", b)],
        ..Default::default()
    }
}

#[tokio::test]
async fn simple_int8_sums_and_subtracts_with_int8_wrap_around() {
    let mut a: Vec<i32> = (-8..8).map(|x| x * 16).collect();
    a[15] = 127;
    let b = vec![1; 16];
    let resp = grpc(server())
        .await
        .model_infer(int8_request(&a, &b))
        .await
        .expect("answers")
        .into_inner();
    let values = |i: usize| {
        resp.raw_output_contents[i]
            .iter()
            .map(|&x| x as i8)
            .collect::<Vec<i8>>()
    };
    let sum: Vec<i8> = a.iter().map(|&x| (x as i8).wrapping_add(1)).collect();
    let diff: Vec<i8> = a.iter().map(|&x| (x as i8).wrapping_sub(1)).collect();
    assert_eq!(
        resp.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(),
        ["OUTPUT0", "OUTPUT1"]
    );
    assert_eq!(resp.outputs[0].datatype, "INT8");
    assert_eq!(values(0), sum);
    assert_eq!(values(1), diff);
    assert_eq!(values(0)[15], -128);
}

#[tokio::test]
async fn an_int8_value_out_of_range_is_refused_as_tritons_clients_expect() {
    let mut a = vec![0; 16];
    a[3] = 300;
    let err = grpc(server())
        .await
        .model_infer(int8_request(&a, &[0; 16]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

#[tokio::test]
async fn a_version_string_that_is_neither_a_number_nor_a_label_gets_tritons_wording() {
    let mut req = int8_request(&[1; 16], &[1; 16]);
    req.model_version = "wrong_specification".into();
    let err = grpc(server()).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        err.message()
            .contains("failed to get model version from specified version string 'wrong_specification'"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn contents_beside_raw_input_contents_get_tritons_wording_even_with_fewer_raw_entries() {
    let mut req = int8_request(&[1; 16], &[1; 16]);
    req.raw_input_contents = vec![vec![0u8; 8].into()];
    let err = grpc(server()).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains(
            "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple_int8'"
        ),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn an_identity_config_whose_output_differs_from_its_input_fails_to_load_with_the_reason() {
    let dir = tempfile::tempdir().expect("a temp folder");
    common::copy_example(
        dir.path(),
        "simple_identity",
        "bad_identity",
        &[(
            "name: \"OUTPUT0\"\n    data_type: TYPE_STRING",
            "name: \"OUTPUT0\"\n    data_type: TYPE_INT32",
        )],
    );
    let s = common::serve_despite_failures(dir.path());
    let (status, index) = common::post_json(&format!("{}/v2/repository/index", s.http), &json!({})).await;
    assert_eq!(status, 200);
    let entry = index
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == "bad_identity"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(entry["state"], "UNAVAILABLE", "{index}");
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("must match input 'INPUT0'"), "{reason}");
}

#[tokio::test]
async fn the_identity_model_needs_no_model_file_only_its_version_folder() {
    let dir = tempfile::tempdir().expect("a temp folder");
    let model = common::copy_example(dir.path(), "simple_identity", "bare_identity", &[]);
    let _ = std::fs::remove_file(model.join("1/.gitkeep"));
    assert_eq!(std::fs::read_dir(model.join("1")).expect("version folder").count(), 0);
    let s = common::explicit(dir.path(), &["bare_identity"]);
    let resp = http()
        .post(format!("{}/v2/models/bare_identity/infer", s.http))
        .json(&json!({"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES", "data": ["ok"]}]}))
        .send()
        .await
        .expect("answers");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["outputs"][0]["data"], json!(["ok"]));
}
