//! Every datatype of the protocol round-trips exactly through a real model (Identity per type), over REST
//! with JSON and binary tensors and over gRPC with raw and typed contents.
mod common;

use bytes::Bytes;
use common::*;
use inferd::proto::model_infer_request::InferInputTensor;
use inferd::proto::{InferTensorContents, ModelInferRequest};
use serde_json::{json, Value};

struct Case {
    datatype: &'static str,
    /// Raw little-endian bytes of 4 elements.
    raw: Vec<u8>,
    /// The same 4 elements as JSON.
    json: Value,
    /// The same elements as typed gRPC contents (None where the protocol has no typed field).
    typed: Option<InferTensorContents>,
}

fn le<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|x| f(*x)).collect()
}

fn bytes_raw(v: &[&str]) -> Vec<u8> {
    v.iter()
        .flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes()))
        .collect()
}

fn cases() -> Vec<Case> {
    let c = |datatype, raw, json, typed| Case {
        datatype,
        raw,
        json,
        typed,
    };
    let tc = InferTensorContents::default;
    vec![
        c(
            "BOOL",
            vec![1, 0, 0, 1],
            json!([true, false, false, true]),
            Some(InferTensorContents {
                bool_contents: vec![true, false, false, true],
                ..tc()
            }),
        ),
        c(
            "UINT8",
            vec![0, 1, 128, 255],
            json!([0, 1, 128, 255]),
            Some(InferTensorContents {
                uint_contents: vec![0, 1, 128, 255],
                ..tc()
            }),
        ),
        c(
            "UINT16",
            le(&[0u16, 1, 40000, 65535], u16::to_le_bytes),
            json!([0, 1, 40000, 65535]),
            Some(InferTensorContents {
                uint_contents: vec![0, 1, 40000, 65535],
                ..tc()
            }),
        ),
        c(
            "UINT32",
            le(&[0u32, 7, 3_000_000_000, u32::MAX], u32::to_le_bytes),
            json!([0, 7, 3_000_000_000u32, u32::MAX]),
            Some(InferTensorContents {
                uint_contents: vec![0, 7, 3_000_000_000, u32::MAX],
                ..tc()
            }),
        ),
        c(
            "UINT64",
            le(&[0u64, 9, 1 << 40, u64::MAX], u64::to_le_bytes),
            json!([0, 9, 1u64 << 40, u64::MAX]),
            Some(InferTensorContents {
                uint64_contents: vec![0, 9, 1 << 40, u64::MAX],
                ..tc()
            }),
        ),
        c(
            "INT8",
            le(&[i8::MIN, -1, 0, i8::MAX], i8::to_le_bytes),
            json!([-128, -1, 0, 127]),
            Some(InferTensorContents {
                int_contents: vec![-128, -1, 0, 127],
                ..tc()
            }),
        ),
        c(
            "INT16",
            le(&[i16::MIN, -2, 3, i16::MAX], i16::to_le_bytes),
            json!([-32768, -2, 3, 32767]),
            Some(InferTensorContents {
                int_contents: vec![-32768, -2, 3, 32767],
                ..tc()
            }),
        ),
        c(
            "INT32",
            le(&[i32::MIN, -3, 4, i32::MAX], i32::to_le_bytes),
            json!([i32::MIN, -3, 4, i32::MAX]),
            Some(InferTensorContents {
                int_contents: vec![i32::MIN, -3, 4, i32::MAX],
                ..tc()
            }),
        ),
        c(
            "INT64",
            le(&[i64::MIN, -4, 5, i64::MAX], i64::to_le_bytes),
            json!([i64::MIN, -4, 5, i64::MAX]),
            Some(InferTensorContents {
                int64_contents: vec![i64::MIN, -4, 5, i64::MAX],
                ..tc()
            }),
        ),
        c(
            "FP16",
            le(
                &[0.5f32, -2.0, 1024.0, 0.0].map(half::f16::from_f32),
                half::f16::to_le_bytes,
            ),
            json!([0.5, -2.0, 1024.0, 0.0]),
            None,
        ),
        c(
            "BF16",
            le(
                &[0.5f32, -2.0, 256.0, 1.0].map(half::bf16::from_f32),
                half::bf16::to_le_bytes,
            ),
            json!([0.5, -2.0, 256.0, 1.0]),
            None,
        ),
        c(
            "FP32",
            le(&[1.5f32, -0.25, 3.0e38, 0.0], f32::to_le_bytes),
            json!([1.5, -0.25, 3.0e38, 0.0]),
            Some(InferTensorContents {
                fp32_contents: vec![1.5, -0.25, 3.0e38, 0.0],
                ..tc()
            }),
        ),
        c(
            "FP64",
            le(&[1.5f64, -0.25, 1e300, 0.0], f64::to_le_bytes),
            json!([1.5, -0.25, 1e300, 0.0]),
            Some(InferTensorContents {
                fp64_contents: vec![1.5, -0.25, 1e300, 0.0],
                ..tc()
            }),
        ),
        c(
            "BYTES",
            bytes_raw(&["a", "", "héllo", "4"]),
            json!(["a", "", "héllo", "4"]),
            Some(InferTensorContents {
                bytes_contents: ["a", "", "héllo", "4"]
                    .iter()
                    .map(|s| Bytes::from(s.to_string()))
                    .collect(),
                ..tc()
            }),
        ),
    ]
}

fn model(c: &Case) -> String {
    let t = if c.datatype == "BYTES" {
        "string".to_string()
    } else {
        c.datatype.to_lowercase()
    };
    format!("identity_{t}")
}

#[tokio::test]
async fn every_datatype_round_trips_as_json() {
    for c in cases() {
        let body = json!({"inputs": [{"name": "INPUT0", "shape": [2, 2], "datatype": c.datatype, "data": c.json}]});
        let (status, resp) = post_json(&format!("{}/v2/models/{}/infer", server().http, model(&c)), &body).await;
        assert_eq!(status, 200, "{}: {resp}", c.datatype);
        let out = &resp["outputs"][0];
        assert_eq!(out["datatype"], c.datatype);
        assert_eq!(out["shape"], json!([2, 2]));
        assert_eq!(out["data"], c.json, "{}", c.datatype);
    }
}

#[tokio::test]
async fn every_datatype_round_trips_as_binary() {
    for c in cases() {
        let header = json!({
            "inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": c.datatype, "parameters": {"binary_data_size": c.raw.len()}}],
            "parameters": {"binary_data_output": true}
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        body.extend(&c.raw);
        let resp = post_raw(
            &format!("{}/v2/models/{}/infer", server().http, model(&c)),
            body,
            Some(header.len()),
        )
        .await;
        assert_eq!(resp.status().as_u16(), 200, "{}", c.datatype);
        let (head, binary) = binary_response(resp).await;
        assert_eq!(head["outputs"][0]["datatype"], c.datatype);
        assert_eq!(&binary[..], &c.raw[..], "{}", c.datatype);
    }
}

fn grpc_request(c: &Case, raw: bool) -> ModelInferRequest {
    let mut input = InferInputTensor {
        name: "INPUT0".into(),
        datatype: c.datatype.into(),
        shape: vec![4, 1],
        ..Default::default()
    };
    let mut req = ModelInferRequest {
        model_name: model(c),
        ..Default::default()
    };
    if raw {
        req.raw_input_contents = vec![Bytes::from(c.raw.clone())];
    } else {
        input.contents = c.typed.clone();
    }
    req.inputs = vec![input];
    req
}

#[tokio::test]
async fn every_datatype_round_trips_over_grpc_raw_and_typed() {
    let mut client = grpc(server()).await;
    for c in cases() {
        let resp = client
            .model_infer(grpc_request(&c, true))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", c.datatype))
            .into_inner();
        assert_eq!(resp.outputs[0].datatype, c.datatype);
        assert_eq!(resp.outputs[0].shape, vec![4, 1]);
        assert_eq!(&resp.raw_output_contents[0][..], &c.raw[..], "{} raw", c.datatype);
        if c.typed.is_some() {
            let resp = client
                .model_infer(grpc_request(&c, false))
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", c.datatype))
                .into_inner();
            assert_eq!(&resp.raw_output_contents[0][..], &c.raw[..], "{} typed", c.datatype);
        }
    }
}

#[tokio::test]
async fn half_precision_has_no_typed_grpc_contents() {
    let fp16 = cases().into_iter().find(|c| c.datatype == "FP16").unwrap();
    let mut req = grpc_request(&fp16, false);
    req.inputs[0].contents = Some(InferTensorContents {
        fp32_contents: vec![1.0; 4],
        ..Default::default()
    });
    let err = grpc(server()).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("raw_input_contents"), "{}", err.message());
}

#[tokio::test]
async fn malformed_bytes_elements_are_rejected() {
    let c = cases().into_iter().find(|c| c.datatype == "BYTES").unwrap();
    let mut req = grpc_request(&c, true);
    // A length prefix that runs past the end of the data.
    req.raw_input_contents = vec![Bytes::from_static(&[9, 0, 0, 0, b'x'])];
    let err = grpc(server()).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("INPUT0"), "{}", err.message());
}

#[tokio::test]
async fn text_that_onnx_cannot_hold_is_a_client_error() {
    let c = cases().into_iter().find(|c| c.datatype == "BYTES").unwrap();
    let mut req = grpc_request(&c, true);
    req.raw_input_contents = vec![Bytes::from(
        bytes_raw(&["ok", "ok", "ok"])
            .into_iter()
            .chain([2, 0, 0, 0, 0xff, 0xfe])
            .collect::<Vec<_>>(),
    )];
    let err = grpc(server()).await.model_infer(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("UTF-8"), "{}", err.message());
}
