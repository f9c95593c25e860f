//! gRPC messages to and from the transport-free request: `raw_input_contents` are taken as they are (no
//! copy); typed `contents` are converted to raw bytes once; responses always answer in
//! `raw_output_contents`, as Triton does.
use std::collections::HashMap;

use bytes::Bytes;

use crate::error::{InferError, InferResult};
use crate::model_name::ModelRef;
use crate::proto::{
    infer_parameter::ParameterChoice, model_infer_response, InferParameter, InferTensorContents, ModelInferRequest,
    ModelInferResponse,
};
use crate::request::{InferRequest, InferResponse, ParamValue, Protocol, RegionRef, RequestedOutput, SequenceRequest};
use crate::tensor::{push_bytes_element, DataType, Tensor};

fn parameters(map: HashMap<String, InferParameter>) -> Vec<(String, ParamValue)> {
    map.into_iter()
        .filter_map(|(k, p)| {
            let v = match p.parameter_choice? {
                ParameterChoice::BoolParam(b) => ParamValue::Bool(b),
                ParameterChoice::Int64Param(i) => ParamValue::Int(i),
                ParameterChoice::StringParam(s) => ParamValue::String(s),
                ParameterChoice::DoubleParam(d) => ParamValue::Double(d),
                ParameterChoice::Uint64Param(u) => ParamValue::Uint(u),
            };
            Some((k, v))
        })
        .collect()
}

fn narrow<T: TryFrom<V> + Copy, V: Copy + std::fmt::Display, const N: usize>(
    values: &[V],
    name: &str,
    to_bytes: impl Fn(T) -> [u8; N],
) -> InferResult<Vec<u8>> {
    let mut out = Vec::with_capacity(values.len() * N);
    for &v in values {
        let t = T::try_from(v).map_err(|_| {
            InferError::invalid(format!("value {v} of input '{name}' is out of range for its datatype"))
        })?;
        out.extend_from_slice(&to_bytes(t));
    }
    Ok(out)
}

/// Typed `contents` as raw little-endian bytes.
fn typed_contents(c: &InferTensorContents, datatype: DataType, name: &str) -> InferResult<Vec<u8>> {
    Ok(match datatype {
        DataType::Bool => c.bool_contents.iter().map(|&b| b as u8).collect(),
        DataType::Int8 => narrow::<i8, i32, 1>(&c.int_contents, name, i8::to_le_bytes)?,
        DataType::Int16 => narrow::<i16, i32, 2>(&c.int_contents, name, i16::to_le_bytes)?,
        DataType::Int32 => c.int_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Int64 => c.int64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Uint8 => narrow::<u8, u32, 1>(&c.uint_contents, name, u8::to_le_bytes)?,
        DataType::Uint16 => narrow::<u16, u32, 2>(&c.uint_contents, name, u16::to_le_bytes)?,
        DataType::Uint32 => c.uint_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Uint64 => c.uint64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Fp32 => c.fp32_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Fp64 => c.fp64_contents.iter().flat_map(|v| v.to_le_bytes()).collect(),
        DataType::Bytes => {
            let mut out = Vec::new();
            for e in &c.bytes_contents {
                push_bytes_element(&mut out, e);
            }
            out
        }
        DataType::Fp16 | DataType::Bf16 => {
            return Err(InferError::invalid(format!(
                "input '{name}': {datatype} has no typed contents; send it in raw_input_contents"
            )))
        }
    })
}

/// A request whose tensors could not be decoded, with the model and id it named (for its log line).
#[derive(Debug)]
pub struct Undecodable {
    pub model: String,
    pub id: String,
    pub error: InferError,
}

pub fn decode_request(req: ModelInferRequest) -> Result<InferRequest, Undecodable> {
    let ModelInferRequest {
        model_name,
        model_version,
        id,
        parameters: params,
        inputs,
        outputs,
        raw_input_contents,
    } = req;
    let decoded = ModelRef::parse(&model_name, Some(&model_version))
        .map_err(InferError::from)
        .and_then(|model| {
            let mut request = InferRequest::new(model, Protocol::Grpc);
            (request.inputs, request.input_regions) = decode_inputs(inputs, raw_input_contents, &model_name)?;
            request.outputs = outputs
                .into_iter()
                .map(|o| RequestedOutput::with_parameters(o.name, &parameters(o.parameters)))
                .collect::<InferResult<_>>()?;
            request.parameters = parameters(params);
            request.sequence = SequenceRequest::from_parameters(&request.parameters)?;
            Ok(request)
        });
    match decoded {
        Ok(mut request) => {
            request.id = id;
            Ok(request)
        }
        Err(error) => Err(Undecodable {
            model: model_name,
            id,
            error,
        }),
    }
}

/// The shared memory region an input's parameters name, if any.
fn input_region(input: &crate::proto::model_infer_request::InferInputTensor) -> InferResult<Option<RegionRef>> {
    const PREFIX: &str = "shared_memory_";
    if !input.parameters.keys().any(|k| k.starts_with(PREFIX)) {
        return Ok(None);
    }
    let params = input
        .parameters
        .iter()
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    RegionRef::from_parameters(&format!("input '{}'", input.name), &parameters(params))
}

/// Tensors, and the shared memory regions some of them (by index) are to be read from.
type DecodedInputs = (Vec<Tensor>, Vec<(usize, RegionRef)>);

/// The inputs as tensors, and which of them are in shared memory (their data left empty). Inputs in shared
/// memory have no `raw_input_contents` entry: the entries belong, in order, to the other inputs.
fn decode_inputs(
    inputs: Vec<crate::proto::model_infer_request::InferInputTensor>,
    raw: Vec<Bytes>,
    model: &str,
) -> InferResult<DecodedInputs> {
    let regions = inputs.iter().map(input_region).collect::<InferResult<Vec<_>>>()?;
    let in_messages = regions.iter().filter(|r| r.is_none()).count();
    // Triton checks for mixed contents before the count, and its clients match this wording.
    if !raw.is_empty() {
        if let Some(input) = inputs.iter().find(|i| i.contents.is_some()) {
            return Err(InferError::invalid(format!(
                "contents field must not be specified when using raw_input_contents for '{}' for model '{model}'",
                input.name
            )));
        }
    }
    if !raw.is_empty() && raw.len() != in_messages {
        let which = match in_messages < inputs.len() {
            true => "one per input not in shared memory",
            false => "one per input",
        };
        return Err(InferError::invalid(format!(
            "expected {in_messages} raw_input_contents ({which}), got {}",
            raw.len()
        )));
    }
    let mut raw = raw.into_iter();
    let mut tensors = Vec::with_capacity(inputs.len());
    let mut input_regions = Vec::new();
    for (input, region) in inputs.into_iter().zip(regions) {
        let datatype = DataType::from_name(&input.datatype).ok_or_else(|| {
            InferError::invalid(format!(
                "input '{}' has unknown datatype '{}'",
                input.name, input.datatype
            ))
        })?;
        if let Some(region) = region {
            if input.contents.is_some() {
                return Err(InferError::invalid(format!(
                    "input '{}' is in shared memory: it must not carry contents",
                    input.name
                )));
            }
            input_regions.push((tensors.len(), region));
            tensors.push(Tensor {
                name: input.name,
                datatype,
                shape: input.shape,
                data: Bytes::new(),
            });
            continue;
        }
        let data = match (raw.next(), &input.contents) {
            (Some(_), Some(_)) => {
                return Err(InferError::invalid(format!(
                    "contents field must not be specified when using raw_input_contents for '{}' for model '{model}'",
                    input.name
                )))
            }
            (Some(bytes), None) => bytes,
            (None, Some(c)) => Bytes::from(typed_contents(c, datatype, &input.name)?),
            (None, None) => return Err(InferError::invalid(format!("input '{}' has no data", input.name))),
        };
        tensors.push(Tensor {
            name: input.name,
            datatype,
            shape: input.shape,
            data,
        });
    }
    Ok((tensors, input_regions))
}

fn region_parameters(at: &RegionRef) -> HashMap<String, InferParameter> {
    let param = |choice| InferParameter {
        parameter_choice: Some(choice),
    };
    let mut map = HashMap::from([
        (
            "shared_memory_region".to_string(),
            param(ParameterChoice::StringParam(at.region.clone())),
        ),
        (
            "shared_memory_byte_size".to_string(),
            param(ParameterChoice::Int64Param(at.byte_size as i64)),
        ),
    ]);
    if at.offset != 0 {
        map.insert(
            "shared_memory_offset".to_string(),
            param(ParameterChoice::Int64Param(at.offset as i64)),
        );
    }
    map
}

pub fn encode_response(resp: InferResponse) -> ModelInferResponse {
    let mut outputs = Vec::with_capacity(resp.outputs.len());
    let mut raw = Vec::with_capacity(resp.outputs.len());
    for t in resp.outputs {
        // An output in shared memory keeps its (empty) place among the raw contents, as in Triton, and says
        // where it is.
        let parameters = match resp.in_regions.iter().find(|(n, _)| *n == t.name) {
            None => HashMap::new(),
            Some((_, at)) => region_parameters(at),
        };
        outputs.push(model_infer_response::InferOutputTensor {
            name: t.name,
            datatype: t.datatype.name().to_string(),
            shape: t.shape,
            parameters,
            ..Default::default()
        });
        raw.push(t.data);
    }
    ModelInferResponse {
        model_name: resp.model_name,
        model_version: resp.model_version,
        id: resp.id,
        parameters: HashMap::new(),
        outputs,
        raw_output_contents: raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::model_infer_request::InferInputTensor;

    #[test]
    fn typed_contents_become_raw_bytes_and_out_of_range_values_are_rejected() {
        let c = InferTensorContents {
            int_contents: vec![1, -2],
            ..Default::default()
        };
        assert_eq!(
            typed_contents(&c, DataType::Int16, "x").unwrap(),
            vec![1, 0, 0xfe, 0xff]
        );
        let big = InferTensorContents {
            int_contents: vec![300],
            ..Default::default()
        };
        assert!(typed_contents(&big, DataType::Int8, "x").is_err());
        let s = InferTensorContents {
            bytes_contents: vec![Bytes::from_static(b"ab")],
            ..Default::default()
        };
        assert_eq!(
            typed_contents(&s, DataType::Bytes, "x").unwrap(),
            vec![2, 0, 0, 0, b'a', b'b']
        );
    }

    #[test]
    fn raw_contents_must_match_the_inputs_one_to_one() {
        let input = |n: &str| InferInputTensor {
            name: n.into(),
            datatype: "INT32".into(),
            shape: vec![1],
            ..Default::default()
        };
        let req = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![input("a"), input("b")],
            raw_input_contents: vec![Bytes::from_static(&[0; 4])],
            ..Default::default()
        };
        assert!(decode_request(req)
            .unwrap_err()
            .error
            .to_string()
            .contains("expected 2 raw_input_contents"));
    }
}
