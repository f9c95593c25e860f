//! What the server does with a request once a front-end has decoded it, short of running a model: the size
//! check (`Serving::infer`), validation against a model's declared inputs (`validate`), and encoding tensors back
//! into both protocols' responses. Shared by the request targets (`mod common;`).
#![allow(dead_code)]

use bytes::Bytes;
use inferd::model_name::ModelRef;
use inferd::protocol::binary::{self, BinaryOutputs};
use inferd::protocol::grpc_tensors;
use inferd::protocol::json::decode_data;
use inferd::request::{InferRequest, InferResponse};
use inferd::serving::check_tensor_elements;
use inferd::spec::{ModelSpec, TensorSpec};
use inferd::tensor::{bytes_elements, count_bytes_elements, element_count, DataType, Tensor};
use inferd::validate::validate;
use prost::Message;

/// `--max-tensor-elements`' default.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 28;

/// The model a REST body is decoded for (its name comes from the URL).
pub fn model() -> ModelRef {
    ModelRef::parse("fuzz", None).expect("a valid name")
}

fn spec(name: &str, max_batch_size: usize, inputs: Vec<TensorSpec>) -> ModelSpec {
    let outputs = inputs.clone();
    ModelSpec {
        name: name.into(),
        platform: "onnxruntime_onnx".into(),
        max_batch_size,
        inputs,
        outputs,
    }
}

fn tensor_spec(name: &str, datatype: DataType, dims: Vec<i64>) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        datatype,
        dims,
        reshape: None,
        optional: false,
    }
}

/// The models a request is checked against: the repository's `simple` and `simple_string`, and two made
/// from the request itself (so validation gets past names and datatypes to shapes and byte sizes): a
/// batching one whose dims are the request's, and a non-batching identity whose dims are all dynamic.
pub fn specs(req: &InferRequest) -> Vec<ModelSpec> {
    let two = |dt| vec![tensor_spec("INPUT0", dt, vec![16]), tensor_spec("INPUT1", dt, vec![16])];
    let mirror_batched = req
        .inputs
        .iter()
        .map(|t| tensor_spec(&t.name, t.datatype, t.shape.get(1..).unwrap_or_default().to_vec()))
        .collect();
    let mut mirror_dynamic: Vec<TensorSpec> = req
        .inputs
        .iter()
        .map(|t| tensor_spec(&t.name, t.datatype, vec![-1; t.shape.len()]))
        .collect();
    if let Some(last) = mirror_dynamic.last_mut() {
        last.optional = true;
    }
    vec![
        spec("simple", 8, two(DataType::Int32)),
        spec("simple_string", 8, two(DataType::Bytes)),
        spec("mirror_batched", 8, mirror_batched),
        spec("mirror_dynamic", 0, mirror_dynamic),
    ]
}

/// Runs a decoded request through what the server does before queueing it, and echoes the tensors that pass
/// (an identity model) through both response encoders.
pub fn serve(req: &InferRequest, binary: &BinaryOutputs) {
    if check_tensor_elements(&req.inputs, MAX_TENSOR_ELEMENTS).is_err() {
        return;
    }
    for spec in specs(req) {
        let Ok(validated) = validate(&spec, req.inputs.clone()) else {
            continue;
        };
        assert!(validated.batch >= 1 && (!spec.batches() || validated.batch <= spec.max_batch_size));
        let outputs: Vec<Tensor> = validated.inputs.into_iter().flatten().collect();
        for t in &outputs {
            // What validation promises the backends.
            let elements = element_count(&t.shape).expect("validated shape");
            match t.datatype.size() {
                Some(size) => assert_eq!(t.data.len(), elements * size, "{}", t.name),
                None => assert_eq!(count_bytes_elements(&t.data, &t.name).unwrap(), elements),
            }
        }
        let resp = InferResponse {
            id: req.id.clone(),
            model_name: spec.name.clone(),
            model_version: "1".into(),
            outputs,
            in_regions: Vec::new(),
            text_tokens: None,
        };
        http_response(&resp, binary);
        grpc_response(&resp);
    }
}

/// The REST response: valid JSON followed by exactly the binary outputs; JSON `data` that decodes back to the
/// tensor's bytes when sent again as an input.
fn http_response(resp: &InferResponse, binary: &BinaryOutputs) {
    let all = |default| BinaryOutputs {
        default,
        named: Vec::new(),
    };
    for binary in [binary.clone(), all(true), all(false)] {
        let (body, json_len) = binary::encode_response(resp, &binary);
        let body = body.to_bytes();
        let header = &body[..json_len.unwrap_or(body.len())];
        let json: serde_json::Value = serde_json::from_slice(header).expect("the response header is JSON");
        let binary_len: usize = resp
            .outputs
            .iter()
            .filter(|t| binary.is_binary(&t.name))
            .map(|t| t.data.len())
            .sum();
        assert_eq!(body.len(), header.len() + binary_len);
        for (i, t) in resp.outputs.iter().enumerate() {
            if binary.is_binary(&t.name) {
                continue;
            }
            let data = json["outputs"][i]["data"].to_string();
            json_round_trip(t, &data);
        }
    }
}

/// A tensor written as JSON `data` and read back as an input's `data` is the same tensor, where JSON can
/// carry it: BOOL reads back as 0/1, non-finite floats are written as null, BYTES as (lossy) UTF-8 strings.
fn json_round_trip(t: &Tensor, data: &str) {
    let mut back = Vec::new();
    let decoded = decode_data(data, t.datatype, &t.name, &mut back);
    let floats_finite = |size: usize, finite: fn(&[u8]) -> bool| t.data.chunks_exact(size).all(finite);
    let exact = match t.datatype {
        DataType::Bool => {
            decoded.expect("BOOL data reads back");
            let normalized: Vec<u8> = t.data.iter().map(|&b| u8::from(b != 0)).collect();
            assert_eq!(back, normalized);
            return;
        }
        DataType::Fp16 => floats_finite(2, |c| half::f16::from_le_bytes([c[0], c[1]]).is_finite()),
        DataType::Bf16 => floats_finite(2, |c| half::bf16::from_le_bytes([c[0], c[1]]).is_finite()),
        DataType::Fp32 => floats_finite(4, |c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()),
        DataType::Fp64 => floats_finite(8, |c| f64::from_le_bytes(c.try_into().unwrap()).is_finite()),
        DataType::Bytes => bytes_elements(&t.data).all(|e| e.is_ok_and(|e| std::str::from_utf8(e).is_ok())),
        _ => true,
    };
    if exact {
        decoded.unwrap_or_else(|e| panic!("{} data {data} does not read back: {e}", t.datatype));
        assert_eq!(Bytes::from(back), t.data, "{} data {data}", t.datatype);
    }
}

/// The gRPC response: one raw_output_contents per output, the bytes unchanged through protobuf.
fn grpc_response(resp: &InferResponse) {
    let msg = grpc_tensors::encode_response(InferResponse {
        id: resp.id.clone(),
        model_name: resp.model_name.clone(),
        model_version: resp.model_version.clone(),
        outputs: resp.outputs.clone(),
        in_regions: Vec::new(),
        text_tokens: None,
    });
    assert_eq!(msg.outputs.len(), msg.raw_output_contents.len());
    let wire = msg.encode_to_vec();
    let back = inferd::proto::ModelInferResponse::decode(wire.as_slice()).expect("our own response decodes");
    assert_eq!(back, msg);
}
