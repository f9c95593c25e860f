//! Turning queued requests into one batch (concatenated along dimension 0 in reused, aligned buffers) and
//! one batch's outputs back into each request's own rows.
use bytes::Bytes;

use super::job::Job;
use crate::backend::BatchOutput;
use crate::error::{InferError, InferResult};
use crate::spec::{ModelSpec, TensorSpec};
use crate::tensor::{bytes_offset, Tensor};

/// A reusable byte buffer aligned to 8 bytes, so fixed-size elements can be viewed in place.
#[derive(Default)]
pub struct AlignedBuf {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBuf {
    pub fn fill<'a>(&mut self, parts: impl Iterator<Item = &'a [u8]> + Clone) {
        let len: usize = parts.clone().map(<[u8]>::len).sum();
        // Grown, never cleared: every byte up to `len` is written below, so zeroing it first would only be a
        // second pass over a large tensor.
        if self.words.len() < len.div_ceil(8) {
            self.words.resize(len.div_ceil(8), 0);
        }
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.words);
        let mut at = 0;
        for p in parts {
            bytes[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        self.len = len;
    }

    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }
}

/// Whether a request's own bytes can go to the model as they are: they need the alignment `AlignedBuf` gives.
pub fn aligned(data: &[u8]) -> bool {
    data.as_ptr().align_offset(8) == 0
}

/// Whether `job` may ride in the same batch as `head`: the same inputs present, with the same
/// non-batch dimensions.
pub fn compatible(head: &Job, job: &Job) -> bool {
    head.inputs.iter().zip(&job.inputs).all(|(a, b)| match (a, b) {
        (Some(a), Some(b)) => a.shape.get(1..) == b.shape.get(1..),
        (None, None) => true,
        _ => false,
    })
}

/// The shape the model receives for input `spec` in a batch of `rows` rows.
pub fn batch_shape(model: &ModelSpec, spec: &TensorSpec, first: &Tensor, rows: usize, out: &mut Vec<i64>) {
    out.clear();
    let dims = if model.batches() {
        &first.shape[1..]
    } else {
        &first.shape[..]
    };
    if model.batches() {
        out.push(rows as i64);
    }
    match &spec.reshape {
        Some(r) => out.extend_from_slice(r),
        None => out.extend_from_slice(dims),
    }
}

/// Splits one output of a batch into each job's rows, in job order.
pub fn split_output(
    model: &ModelSpec,
    spec: &TensorSpec,
    out: &mut BatchOutput,
    jobs: &[Job],
    rows: usize,
    results: &mut [Vec<Tensor>],
) -> InferResult<()> {
    let tensor = |shape: Vec<i64>, data: Bytes| Tensor {
        name: spec.name.clone(),
        datatype: spec.datatype,
        shape,
        data,
    };
    // The client sees the config's dims, not the model's, when the config reshapes.
    let client_dims = |model_dims: &[i64]| -> Vec<i64> {
        match &spec.reshape {
            Some(_) if spec.dims.iter().all(|&d| d >= 0) => spec.dims.clone(),
            _ => model_dims.to_vec(),
        }
    };
    if !model.batches() || jobs.len() == 1 {
        let dims = if model.batches() {
            out.shape.get(1..).unwrap_or_default()
        } else {
            &out.shape[..]
        };
        let mut shape = Vec::with_capacity(dims.len() + 1);
        if model.batches() {
            shape.push(out.shape.first().copied().unwrap_or(rows as i64));
        }
        shape.extend(client_dims(dims));
        results[0].push(tensor(shape, Bytes::from(std::mem::take(&mut out.data))));
        return Ok(());
    }
    if out.shape.first() != Some(&(rows as i64)) {
        return Err(InferError::Internal(format!(
            "model '{}' returned output '{}' with shape {:?} for a batch of {rows}",
            model.name, spec.name, out.shape
        )));
    }
    let row_dims = client_dims(&out.shape[1..]);
    let per_row = out.shape[1..].iter().product::<i64>().max(0) as usize;
    let row_bytes = spec.datatype.size().map(|s| s * per_row);
    let mut row = 0;
    let mut byte_at = 0;
    for (job, result) in jobs.iter().zip(results.iter_mut()) {
        let end = match row_bytes {
            Some(rb) => byte_at + rb * job.rows,
            None => byte_at + bytes_offset(&out.data[byte_at..], per_row * job.rows),
        };
        let data = out.data.get(byte_at..end).ok_or_else(|| {
            InferError::Internal(format!(
                "model '{}' returned too little data for output '{}'",
                model.name, spec.name
            ))
        })?;
        let mut shape = Vec::with_capacity(row_dims.len() + 1);
        shape.push(job.rows as i64);
        shape.extend_from_slice(&row_dims);
        result.push(tensor(shape, Bytes::copy_from_slice(data)));
        row += job.rows;
        byte_at = end;
    }
    debug_assert_eq!(row, rows);
    Ok(())
}
