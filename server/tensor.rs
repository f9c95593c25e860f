//! Tensors as they travel through the server: a datatype, a shape and raw little-endian bytes (the form of
//! Triton's binary extension and gRPC `raw_input_contents`). BYTES elements are stored length-prefixed
//! (u32 little-endian length, then the bytes), so a batch is always a plain concatenation along dim 0.
use bytes::Bytes;

use crate::error::{InferError, InferResult};
use crate::proto::DataType as ConfigType;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Bf16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Bf16,
        Self::Fp32,
        Self::Fp64,
        Self::Bytes,
    ];

    /// The protocol's name ("FP32", "BYTES", ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Bf16 => "BF16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Bytes per element; `None` for BYTES, whose elements vary in length.
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 | Self::Fp16 | Self::Bf16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
            Self::Bytes => return None,
        })
    }

    pub fn from_config(t: ConfigType) -> Option<Self> {
        Some(match t {
            ConfigType::TypeBool => Self::Bool,
            ConfigType::TypeUint8 => Self::Uint8,
            ConfigType::TypeUint16 => Self::Uint16,
            ConfigType::TypeUint32 => Self::Uint32,
            ConfigType::TypeUint64 => Self::Uint64,
            ConfigType::TypeInt8 => Self::Int8,
            ConfigType::TypeInt16 => Self::Int16,
            ConfigType::TypeInt32 => Self::Int32,
            ConfigType::TypeInt64 => Self::Int64,
            ConfigType::TypeFp16 => Self::Fp16,
            ConfigType::TypeBf16 => Self::Bf16,
            ConfigType::TypeFp32 => Self::Fp32,
            ConfigType::TypeFp64 => Self::Fp64,
            ConfigType::TypeString => Self::Bytes,
            ConfigType::TypeInvalid => return None,
        })
    }

    pub fn to_config(self) -> ConfigType {
        match self {
            Self::Bool => ConfigType::TypeBool,
            Self::Uint8 => ConfigType::TypeUint8,
            Self::Uint16 => ConfigType::TypeUint16,
            Self::Uint32 => ConfigType::TypeUint32,
            Self::Uint64 => ConfigType::TypeUint64,
            Self::Int8 => ConfigType::TypeInt8,
            Self::Int16 => ConfigType::TypeInt16,
            Self::Int32 => ConfigType::TypeInt32,
            Self::Int64 => ConfigType::TypeInt64,
            Self::Fp16 => ConfigType::TypeFp16,
            Self::Bf16 => ConfigType::TypeBf16,
            Self::Fp32 => ConfigType::TypeFp32,
            Self::Fp64 => ConfigType::TypeFp64,
            Self::Bytes => ConfigType::TypeString,
        }
    }
}

impl std::fmt::Display for DataType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A named tensor in raw form.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: Bytes,
}

/// Number of elements a shape holds; `None` if a dimension is negative or the product overflows.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Iterates the elements of a length-prefixed BYTES buffer.
pub fn bytes_elements(mut raw: &[u8]) -> impl Iterator<Item = Result<&[u8], ()>> {
    std::iter::from_fn(move || {
        if raw.is_empty() {
            return None;
        }
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            raw = &[];
            return Some(Err(()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            raw = &[];
            return Some(Err(()));
        }
        let (elem, rest) = rest.split_at(len);
        raw = rest;
        Some(Ok(elem))
    })
}

/// Counts the elements of a length-prefixed BYTES buffer, rejecting a truncated one.
pub fn count_bytes_elements(raw: &[u8], name: &str) -> InferResult<usize> {
    let mut n = 0;
    for e in bytes_elements(raw) {
        e.map_err(|_| {
            InferError::invalid(format!(
                "malformed BYTES data for tensor '{name}': an element's length runs past the end"
            ))
        })?;
        n += 1;
    }
    Ok(n)
}

/// Byte offset where element `index` starts in a length-prefixed BYTES buffer (or the end).
pub fn bytes_offset(raw: &[u8], index: usize) -> usize {
    let mut off = 0;
    for _ in 0..index {
        let Some(len) = raw.get(off..off + 4) else {
            return raw.len();
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        off = (off + 4 + len).min(raw.len());
    }
    off
}

/// Appends one element to a length-prefixed BYTES buffer.
pub fn push_bytes_element(buf: &mut Vec<u8>, elem: &[u8]) {
    buf.extend_from_slice(&(elem.len() as u32).to_le_bytes());
    buf.extend_from_slice(elem);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_elements_round_trip_and_reject_truncation() {
        let mut buf = Vec::new();
        push_bytes_element(&mut buf, b"ab");
        push_bytes_element(&mut buf, b"");
        push_bytes_element(&mut buf, b"xyz");
        let elems: Vec<_> = bytes_elements(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(elems, vec![&b"ab"[..], b"", b"xyz"]);
        assert_eq!(bytes_offset(&buf, 2), 4 + 2 + 4);
        assert!(count_bytes_elements(&buf[..buf.len() - 1], "x").is_err());
        assert!(count_bytes_elements(&[1, 0], "x").is_err());
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 3]), Some(6));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[-1, 3]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }
}
