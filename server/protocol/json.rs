//! V2 JSON tensors: flat or nested `data` arrays decoded straight into raw little-endian bytes (no
//! intermediate `Value` per element), and raw output bytes written back as JSON arrays.
use std::fmt;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserializer, Serialize, Serializer};

use crate::error::{InferError, InferResult};
use crate::request::ParamValue;
use crate::tensor::{bytes_elements, push_bytes_element, DataType, Tensor};

/// Decodes a JSON `data` value (any nesting) of `datatype` into raw bytes appended to `out`.
pub fn decode_data(raw: &str, datatype: DataType, name: &str, out: &mut Vec<u8>) -> InferResult<()> {
    let mut de = serde_json::Deserializer::from_str(raw);
    Flat { datatype, out }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| InferError::invalid(format!("unable to parse 'data' of input '{name}' as {datatype}: {e}")))
}

struct Flat<'o> {
    datatype: DataType,
    out: &'o mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Flat<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

macro_rules! push_int {
    ($out:expr, $t:ty, $v:expr) => {{
        let v: $t = <$t>::try_from($v)
            .map_err(|_| de::Error::custom(format!("{} is out of range for {}", $v, stringify!($t))))?;
        $out.extend_from_slice(&v.to_le_bytes());
    }};
}

impl Flat<'_> {
    fn push_i128<E: de::Error>(&mut self, v: i128) -> Result<(), E> {
        let out = &mut *self.out;
        match self.datatype {
            DataType::Uint8 => push_int!(out, u8, v),
            DataType::Uint16 => push_int!(out, u16, v),
            DataType::Uint32 => push_int!(out, u32, v),
            DataType::Uint64 => push_int!(out, u64, v),
            DataType::Int8 => push_int!(out, i8, v),
            DataType::Int16 => push_int!(out, i16, v),
            DataType::Int32 => push_int!(out, i32, v),
            DataType::Int64 => push_int!(out, i64, v),
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => return self.push_f64(v as f64),
            DataType::Bool => return Err(E::custom("BOOL data must be true or false")),
            DataType::Bytes => return Err(E::custom("BYTES data must be strings")),
        }
        Ok(())
    }

    fn push_f64<E: de::Error>(&mut self, v: f64) -> Result<(), E> {
        let out = &mut *self.out;
        match self.datatype {
            DataType::Fp16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            DataType::Fp32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            DataType::Fp64 => out.extend_from_slice(&v.to_le_bytes()),
            other => return Err(E::custom(format!("{v} is not a valid {other} value"))),
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for Flat<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} values", self.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq
            .next_element_seed(Flat {
                datatype: self.datatype,
                out: &mut *self.out,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        if self.datatype != DataType::Bool {
            return Err(E::custom(format!("{v} is not a valid {} value", self.datatype)));
        }
        self.out.push(v as u8);
        Ok(())
    }

    fn visit_i64<E: de::Error>(mut self, v: i64) -> Result<(), E> {
        self.push_i128(v as i128)
    }

    fn visit_u64<E: de::Error>(mut self, v: u64) -> Result<(), E> {
        self.push_i128(v as i128)
    }

    fn visit_f64<E: de::Error>(mut self, v: f64) -> Result<(), E> {
        self.push_f64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.datatype != DataType::Bytes {
            return Err(E::custom(format!("\"{v}\" is not a valid {} value", self.datatype)));
        }
        push_bytes_element(self.out, v.as_bytes());
        Ok(())
    }
}

/// A tensor's raw bytes written as a flat JSON array.
pub struct JsonData<'a>(pub &'a Tensor);

fn seq_of<S: Serializer, T: Serialize, const N: usize>(
    s: S,
    data: &[u8],
    f: impl Fn([u8; N]) -> T,
) -> Result<S::Ok, S::Error> {
    let chunks = data.chunks_exact(N);
    let mut seq = s.serialize_seq(Some(chunks.len()))?;
    for c in chunks {
        let mut a = [0u8; N];
        a.copy_from_slice(c);
        seq.serialize_element(&f(a))?;
    }
    seq.end()
}

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = &self.0.data[..];
        match self.0.datatype {
            DataType::Bool => seq_of(s, d, |[b]| b != 0),
            DataType::Uint8 => seq_of(s, d, u8::from_le_bytes),
            DataType::Uint16 => seq_of(s, d, u16::from_le_bytes),
            DataType::Uint32 => seq_of(s, d, u32::from_le_bytes),
            DataType::Uint64 => seq_of(s, d, u64::from_le_bytes),
            DataType::Int8 => seq_of(s, d, i8::from_le_bytes),
            DataType::Int16 => seq_of(s, d, i16::from_le_bytes),
            DataType::Int32 => seq_of(s, d, i32::from_le_bytes),
            DataType::Int64 => seq_of(s, d, i64::from_le_bytes),
            DataType::Fp16 => seq_of(s, d, |b| half::f16::from_le_bytes(b).to_f32()),
            DataType::Bf16 => seq_of(s, d, |b| half::bf16::from_le_bytes(b).to_f32()),
            DataType::Fp32 => seq_of(s, d, f32::from_le_bytes),
            DataType::Fp64 => seq_of(s, d, f64::from_le_bytes),
            DataType::Bytes => {
                let mut seq = s.serialize_seq(None)?;
                for e in bytes_elements(d) {
                    // Our own buffers are well formed; a malformed tail simply ends the array.
                    let Ok(e) = e else { break };
                    seq.serialize_element(&String::from_utf8_lossy(e))?;
                }
                seq.end()
            }
        }
    }
}

/// A JSON `parameters` object as request parameters.
pub fn parameters(map: &serde_json::Map<String, serde_json::Value>) -> InferResult<Vec<(String, ParamValue)>> {
    map.iter().map(|(k, v)| Ok((k.clone(), parameter(k, v)?))).collect()
}

/// One JSON parameter value.
pub fn parameter(key: &str, value: &serde_json::Value) -> InferResult<ParamValue> {
    Ok(match value {
        serde_json::Value::Bool(b) => ParamValue::Bool(*b),
        serde_json::Value::String(s) => ParamValue::String(s.clone()),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => ParamValue::Int(i),
            (None, Some(u), _) => ParamValue::Uint(u),
            (_, _, Some(f)) => ParamValue::Double(f),
            _ => {
                return Err(InferError::invalid(format!(
                    "parameter '{key}' has an unsupported number"
                )))
            }
        },
        _ => {
            return Err(InferError::invalid(format!(
                "parameter '{key}' must be a bool, number or string"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn decode(raw: &str, dt: DataType) -> InferResult<Vec<u8>> {
        let mut out = Vec::new();
        decode_data(raw, dt, "x", &mut out).map(|()| out)
    }

    #[test]
    fn nested_and_flat_arrays_give_the_same_bytes() {
        assert_eq!(
            decode("[[1,2],[3,4]]", DataType::Int32).unwrap(),
            decode("[1,2,3,4]", DataType::Int32).unwrap()
        );
        assert_eq!(decode("[1.5]", DataType::Fp32).unwrap(), 1.5f32.to_le_bytes());
        assert_eq!(decode("[true,false]", DataType::Bool).unwrap(), vec![1, 0]);
    }

    #[test]
    fn out_of_range_and_mistyped_values_are_rejected() {
        assert!(decode("[300]", DataType::Uint8)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        assert!(decode("[-1]", DataType::Uint32).is_err());
        assert!(decode("[1.5]", DataType::Int32).is_err());
        assert!(decode("[\"a\"]", DataType::Fp32).is_err());
        assert!(decode("[1]", DataType::Bytes).is_err());
        assert!(decode("[1] x", DataType::Int32).is_err());
    }

    #[test]
    fn floats_read_back_as_the_nearest_value_to_their_decimal() {
        // serde_json's default fast float parsing can be one unit in the last place off; found by fuzzing
        // (fuzz/corpus/grpc_request/fp64_json_round_trip.pb).
        let v = f64::from_bits(0x080a_0000_0000_1500);
        for text in [
            format!("{v:e}"),
            "6.1518713680717485e-270".into(),
            "6.1518713680717486e-270".into(),
        ] {
            let nearest: f64 = text.parse().unwrap();
            assert_eq!(
                decode(&format!("[{text}]"), DataType::Fp64).unwrap(),
                nearest.to_le_bytes(),
                "{text}"
            );
        }
        let t = Tensor {
            name: "x".into(),
            datatype: DataType::Fp64,
            shape: vec![1],
            data: Bytes::copy_from_slice(&v.to_le_bytes()),
        };
        let json = serde_json::to_string(&JsonData(&t)).unwrap();
        assert_eq!(decode(&json, DataType::Fp64).unwrap(), v.to_le_bytes(), "{json}");
    }

    #[test]
    fn bytes_round_trip_through_json() {
        let raw = decode(r#"["a","héllo",""]"#, DataType::Bytes).unwrap();
        let t = Tensor {
            name: "x".into(),
            datatype: DataType::Bytes,
            shape: vec![3],
            data: Bytes::from(raw),
        };
        assert_eq!(serde_json::to_string(&JsonData(&t)).unwrap(), r#"["a","héllo",""]"#);
    }
}
