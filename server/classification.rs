//! Triton's classification extension: an output asked for with `classification: k` is answered, in place of
//! its scores, with the k highest-scoring classes of each row (batch-1 slice) as BYTES strings
//! `"<score>:<index>"`, or `"<score>:<index>:<label>"` when the output has a label file. Scores are written as
//! Triton writes them (C's `%f` for floating point, plain integers otherwise); equal scores keep index order.
use std::cmp::Ordering;

use bytes::Bytes;

use crate::error::{InferError, InferResult};
use crate::tensor::{push_bytes_element, DataType, Tensor};

/// Refuses an output type whose scores cannot be ranked, in Triton's words.
pub fn check_type(datatype: DataType) -> InferResult<()> {
    match datatype {
        DataType::Bytes | DataType::Bool | DataType::Fp16 | DataType::Bf16 => Err(InferError::invalid(format!(
            "class result not available for output due to unsupported type '{datatype}'"
        ))),
        _ => Ok(()),
    }
}

/// A score as Triton ranks it and writes it (`std::to_string`).
trait Score: bytemuck::Pod {
    fn rank(a: Self, b: Self) -> Ordering;
    fn write(self, out: &mut String);
}

macro_rules! integer_score {
    ($($t:ty),*) => {$(
        impl Score for $t {
            fn rank(a: Self, b: Self) -> Ordering {
                a.cmp(&b)
            }
            fn write(self, out: &mut String) {
                out.push_str(&self.to_string());
            }
        }
    )*};
}

integer_score!(u8, u16, u32, u64, i8, i16, i32, i64);

macro_rules! float_score {
    ($($t:ty),*) => {$(
        impl Score for $t {
            fn rank(a: Self, b: Self) -> Ordering {
                rank_float(a as f64, b as f64)
            }
            fn write(self, out: &mut String) {
                write_float(self as f64, out)
            }
        }
    )*};
}

float_score!(f32, f64);

/// NaN ranks below every number, so a model's NaN never outranks a real score.
fn rank_float(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.total_cmp(&b),
    }
}

/// C's `%f`: six decimals, and `nan` / `inf` / `-inf`.
fn write_float(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("nan");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "inf" } else { "-inf" });
    } else {
        out.push_str(&format!("{v:.6}"));
    }
}

/// Each row's top `k` classes of `scores` (all its elements after the batch dimension when `batched`, else
/// the whole tensor as one row), as a BYTES tensor of shape `[rows, min(k, classes)]` (`[min(k, classes)]`
/// unbatched).
pub fn top_k(scores: &Tensor, k: usize, batched: bool, labels: &[String]) -> InferResult<Tensor> {
    check_type(scores.datatype)?;
    match scores.datatype {
        DataType::Uint8 => classify::<u8>(scores, k, batched, labels),
        DataType::Uint16 => classify::<u16>(scores, k, batched, labels),
        DataType::Uint32 => classify::<u32>(scores, k, batched, labels),
        DataType::Uint64 => classify::<u64>(scores, k, batched, labels),
        DataType::Int8 => classify::<i8>(scores, k, batched, labels),
        DataType::Int16 => classify::<i16>(scores, k, batched, labels),
        DataType::Int32 => classify::<i32>(scores, k, batched, labels),
        DataType::Int64 => classify::<i64>(scores, k, batched, labels),
        DataType::Fp32 => classify::<f32>(scores, k, batched, labels),
        DataType::Fp64 => classify::<f64>(scores, k, batched, labels),
        DataType::Bytes | DataType::Bool | DataType::Fp16 | DataType::Bf16 => {
            Err(InferError::Internal("classification of an unranked type".into()))
        }
    }
}

fn classify<T: Score>(scores: &Tensor, k: usize, batched: bool, labels: &[String]) -> InferResult<Tensor> {
    let dims = |d: &[i64]| d.iter().map(|&x| usize::try_from(x).unwrap_or(0)).product::<usize>();
    let (rows, per_row) = match scores.shape.split_first() {
        Some((&first, rest)) if batched => (usize::try_from(first).unwrap_or(0), dims(rest)),
        _ => (1, dims(&scores.shape)),
    };
    let size = std::mem::size_of::<T>();
    if rows.checked_mul(per_row).and_then(|n| n.checked_mul(size)) != Some(scores.data.len()) {
        return Err(InferError::Internal(format!(
            "output '{}' holds {} bytes, not the {rows} x {per_row} scores its shape says",
            scores.name,
            scores.data.len()
        )));
    }
    let take = k.min(per_row);
    let mut out = Vec::new();
    let mut order: Vec<usize> = Vec::with_capacity(per_row);
    let mut text = String::new();
    for row in scores.data.chunks_exact((per_row * size).max(1)).take(rows) {
        let value = |i: usize| bytemuck::pod_read_unaligned::<T>(&row[i * size..(i + 1) * size]);
        order.clear();
        order.extend(0..per_row);
        // Highest first; a stable sort keeps equal scores in index order.
        order.sort_by(|&a, &b| T::rank(value(b), value(a)));
        for &i in &order[..take] {
            text.clear();
            value(i).write(&mut text);
            text.push(':');
            text.push_str(&i.to_string());
            if let Some(label) = labels.get(i) {
                text.push(':');
                text.push_str(label);
            }
            push_bytes_element(&mut out, text.as_bytes());
        }
    }
    let shape = if batched {
        vec![rows as i64, take as i64]
    } else {
        vec![take as i64]
    };
    Ok(Tensor {
        name: scores.name.clone(),
        datatype: DataType::Bytes,
        shape,
        data: Bytes::from(out),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::bytes_elements;

    fn tensor<T: Copy>(datatype: DataType, shape: Vec<i64>, values: &[T], to_le: fn(T) -> Vec<u8>) -> Tensor {
        Tensor {
            name: "OUT".into(),
            datatype,
            shape,
            data: Bytes::from(values.iter().flat_map(|&v| to_le(v)).collect::<Vec<u8>>()),
        }
    }

    fn strings(t: &Tensor) -> Vec<String> {
        bytes_elements(&t.data)
            .map(|e| String::from_utf8(e.unwrap().to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn each_row_gives_its_top_classes_highest_first_as_triton_writes_them() {
        let scores = tensor(DataType::Fp32, vec![2, 3], &[0.1f32, 0.7, 0.2, 3.0, -1.0, 3.0], |v| {
            v.to_le_bytes().to_vec()
        });
        let t = top_k(&scores, 2, true, &[]).unwrap();
        assert_eq!((t.datatype, t.shape.clone()), (DataType::Bytes, vec![2, 2]));
        assert_eq!(
            strings(&t),
            ["0.700000:1", "0.200000:2", "3.000000:0", "3.000000:2"],
            "ties in index order"
        );
    }

    #[test]
    fn labels_name_the_classes_and_k_is_capped_by_the_classes_there_are() {
        let labels: Vec<String> = ["cat", "dog"].iter().map(|s| s.to_string()).collect();
        let scores = tensor(DataType::Int32, vec![2], &[5i32, 9], |v| v.to_le_bytes().to_vec());
        let t = top_k(&scores, 10, false, &labels).unwrap();
        assert_eq!(t.shape, vec![2]);
        assert_eq!(strings(&t), ["9:1:dog", "5:0:cat"]);
    }

    #[test]
    fn nan_never_outranks_a_number_and_unrankable_types_are_refused() {
        let scores = tensor(DataType::Fp64, vec![1, 3], &[f64::NAN, 1.0, f64::NEG_INFINITY], |v| {
            v.to_le_bytes().to_vec()
        });
        assert_eq!(
            strings(&top_k(&scores, 3, true, &[]).unwrap()),
            ["1.000000:1", "-inf:2", "nan:0"]
        );
        for dt in [DataType::Fp16, DataType::Bf16, DataType::Bool, DataType::Bytes] {
            let err = check_type(dt).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("class result not available for output due to unsupported type '{dt}'")
            );
        }
    }

    #[test]
    fn a_tensor_whose_bytes_disagree_with_its_shape_is_an_error_not_a_panic() {
        let scores = tensor(DataType::Fp32, vec![2, 3], &[1.0f32], |v| v.to_le_bytes().to_vec());
        assert!(top_k(&scores, 1, true, &[]).is_err());
    }
}
