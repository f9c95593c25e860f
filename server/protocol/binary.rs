//! The REST infer body: a JSON header optionally followed by Triton's binary tensor section
//! (`Inference-Header-Content-Length` gives the JSON's length; inputs with `binary_data_size` take their
//! bytes from the section in order). Responses are written the same way when binary outputs are asked for.
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::json::{decode_data, parameters, JsonData};
use crate::error::{InferError, InferResult};
use crate::request::{InferRequest, InferResponse};
use crate::tensor::{DataType, Tensor};

pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Deserialize)]
struct RequestJson<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputJson<'a>>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

#[derive(Deserialize)]
struct InputJson<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// A decoded REST infer request, and for each requested output whether it goes back in binary.
pub struct Decoded {
    pub request: InferRequest,
    /// Per entry of `request.outputs`; for all outputs (none requested), `binary_default` applies.
    pub binary: Vec<bool>,
    pub binary_default: bool,
}

fn flag(params: Option<&Map<String, Value>>, key: &str) -> InferResult<Option<bool>> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(InferError::invalid(format!(
            "parameter '{key}' must be a boolean, got {other}"
        ))),
    }
}

pub fn decode_request(body: &Bytes, header_length: Option<usize>) -> InferResult<Decoded> {
    let json_len = header_length.unwrap_or(body.len());
    if json_len > body.len() {
        return Err(InferError::invalid(format!(
            "Inference-Header-Content-Length {json_len} is larger than the request body ({} bytes)",
            body.len()
        )));
    }
    let header = std::str::from_utf8(&body[..json_len])
        .map_err(|_| InferError::invalid("the JSON inference header is not valid UTF-8"))?;
    let req: RequestJson<'_> = serde_json::from_str(header)
        .map_err(|e| InferError::invalid(format!("failed to parse the request JSON: {e}")))?;
    let mut binary_at = json_len;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in &req.inputs {
        let datatype = DataType::from_name(&input.datatype).ok_or_else(|| {
            InferError::invalid(format!(
                "input '{}' has unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        let binary_size = match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
            None => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                InferError::invalid(format!(
                    "binary_data_size of input '{}' must be a non-negative integer",
                    input.name
                ))
            })? as usize),
        };
        let data = match (binary_size, input.data) {
            (Some(size), _) => {
                let end = binary_at
                    .checked_add(size)
                    .filter(|&e| e <= body.len())
                    .ok_or_else(|| {
                        InferError::invalid(format!(
                            "input '{}' declares binary_data_size {size} but the binary section has only {} bytes left",
                            input.name,
                            body.len() - binary_at
                        ))
                    })?;
                let data = body.slice(binary_at..end);
                binary_at = end;
                data
            }
            (None, Some(raw)) => {
                let mut out = Vec::new();
                decode_data(raw.get(), datatype, &input.name, &mut out)?;
                Bytes::from(out)
            }
            (None, None) => {
                return Err(InferError::invalid(format!(
                    "input '{}' has neither 'data' nor 'binary_data_size'",
                    input.name
                )))
            }
        };
        inputs.push(Tensor {
            name: input.name.clone(),
            datatype,
            shape: input.shape.clone(),
            data,
        });
    }
    if binary_at != body.len() {
        return Err(InferError::invalid(format!(
            "the request carries {} bytes of binary data that no input claims",
            body.len() - binary_at
        )));
    }
    let binary_default = flag(req.parameters.as_ref(), "binary_data_output")?.unwrap_or(false);
    let mut binary = Vec::with_capacity(req.outputs.len());
    let mut outputs = Vec::with_capacity(req.outputs.len());
    for o in &req.outputs {
        if o.parameters.as_ref().is_some_and(|p| p.contains_key("classification")) {
            return Err(InferError::invalid(format!(
                "output '{}' asks for classification, which inferd does not support",
                o.name
            )));
        }
        binary.push(flag(o.parameters.as_ref(), "binary_data")?.unwrap_or(binary_default));
        outputs.push(o.name.clone());
    }
    let params = match &req.parameters {
        Some(p) => parameters(p)?,
        None => Vec::new(),
    };
    let request = InferRequest {
        id: req.id.unwrap_or_default(),
        inputs,
        outputs,
        parameters: params,
        ..Default::default()
    };
    Ok(Decoded {
        request,
        binary,
        binary_default,
    })
}

#[derive(Serialize)]
struct ResponseJson<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<OutputOut<'a>>,
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutputOut<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

/// The response body, and the JSON header's length when a binary section follows.
pub fn encode_response(resp: &InferResponse, binary: &[bool], binary_default: bool) -> (Bytes, Option<usize>) {
    let is_binary = |i: usize| binary.get(i).copied().unwrap_or(binary_default);
    let outputs = resp
        .outputs
        .iter()
        .enumerate()
        .map(|(i, t)| OutputOut {
            name: &t.name,
            datatype: t.datatype.name(),
            shape: &t.shape,
            parameters: is_binary(i).then(|| BinarySize {
                binary_data_size: t.data.len(),
            }),
            data: (!is_binary(i)).then_some(JsonData(t)),
        })
        .collect();
    let json = ResponseJson {
        model_name: &resp.model_name,
        model_version: &resp.model_version,
        id: &resp.id,
        outputs,
    };
    let binary_len: usize = resp
        .outputs
        .iter()
        .enumerate()
        .filter(|(i, _)| is_binary(*i))
        .map(|(_, t)| t.data.len())
        .sum();
    let mut body = BytesMut::with_capacity(256 + binary_len).writer();
    // Serializing our own structs into memory cannot fail.
    let _ = serde_json::to_writer(&mut body, &json);
    let mut body = body.into_inner();
    let json_len = body.len();
    if !resp.outputs.iter().enumerate().any(|(i, _)| is_binary(i)) {
        return (body.freeze(), None);
    }
    for (i, t) in resp.outputs.iter().enumerate() {
        if is_binary(i) {
            body.extend_from_slice(&t.data);
        }
    }
    (body.freeze(), Some(json_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_inputs_take_their_bytes_in_order() {
        let header = r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}},{"name":"B","shape":[1],"datatype":"INT32","data":[7]}],"outputs":[{"name":"O","parameters":{"binary_data":true}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        let d = decode_request(&Bytes::from(body), Some(header.len())).unwrap();
        assert_eq!(&d.request.inputs[0].data[..], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(&d.request.inputs[1].data[..], &[7, 0, 0, 0]);
        assert_eq!(d.binary, vec![true]);
    }

    #[test]
    fn a_short_or_unclaimed_binary_section_is_an_error() {
        let header = r#"{"inputs":[{"name":"A","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&[1, 0, 0]);
        assert!(decode_request(&Bytes::from(body.clone()), Some(header.len())).is_err());
        body.extend_from_slice(&[0; 9]);
        assert!(decode_request(&Bytes::from(body), Some(header.len())).is_err());
    }

    #[test]
    fn binary_outputs_follow_the_json_header() {
        let t = Tensor {
            name: "O".into(),
            datatype: DataType::Int32,
            shape: vec![1],
            data: Bytes::from_static(&[5, 0, 0, 0]),
        };
        let resp = InferResponse {
            id: "7".into(),
            model_name: "m".into(),
            model_version: "1".into(),
            outputs: vec![t],
        };
        let (body, len) = encode_response(&resp, &[], true);
        let len = len.unwrap();
        let json: Value = serde_json::from_slice(&body[..len]).unwrap();
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 4);
        assert_eq!(json["id"], "7");
        assert_eq!(&body[len..], &[5, 0, 0, 0]);
        let (body, len) = encode_response(&resp, &[false], true);
        assert!(len.is_none());
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["outputs"][0]["data"][0], 5);
    }
}
