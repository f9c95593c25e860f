//! A tensor's rows turned into the numbers drift is measured on, the same way for the reference profile and
//! for live traffic: each element of a small row; the mean, standard deviation and L2 norm of a large (or
//! variable-size) one; a text's length; a classifier's predicted class; an embedding's cosine similarity to
//! the reference centroid.
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::tensor::{bytes_elements, DataType};

/// Rows up to this many elements are profiled element by element; larger ones by per-row summaries.
pub const MAX_ELEMENT_FEATURES: usize = 1024;

/// How a tensor's rows become features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Kind {
    /// One feature per element of the row (a fixed row of at most `MAX_ELEMENT_FEATURES`).
    Elements,
    /// `mean`, `std` and `l2` of the row's elements.
    Summary,
    /// A BYTES row's text length: `chars`, and `tokens` when the model folder has a tokenizer.
    Length,
    /// The index of the row's largest element (argmax), as a category.
    Classes,
    /// The row's cosine similarity to the reference centroid.
    Cosine { centroid: Vec<f64> },
}

impl Kind {
    /// Whether the features are categories (one bin per class) rather than quantile-binned numbers.
    pub fn categorical(&self) -> bool {
        matches!(self, Kind::Classes)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Kind::Elements => "elements",
            Kind::Summary => "summary",
            Kind::Length => "length",
            Kind::Classes => "classes",
            Kind::Cosine { .. } => "cosine",
        }
    }
}

/// The names of a kind's features, for a row of `row_elements` elements (elements kind) or with a tokenizer.
pub fn feature_names(kind: &Kind, row_elements: usize, tokens: bool) -> Vec<String> {
    match kind {
        Kind::Elements => (0..row_elements).map(|i| i.to_string()).collect(),
        Kind::Summary => vec!["mean".into(), "std".into(), "l2".into()],
        Kind::Length if tokens => vec!["chars".into(), "tokens".into()],
        Kind::Length => vec!["chars".into()],
        Kind::Classes => vec!["class".into()],
        Kind::Cosine { .. } => vec!["cosine".into()],
    }
}

/// Reads every element of a fixed-size tensor as f64 into `out` (cleared first); false for BYTES.
pub fn numeric_values(datatype: DataType, data: &[u8], out: &mut Vec<f64>) -> bool {
    out.clear();
    macro_rules! read {
        ($t:ty, $n:literal, $conv:expr) => {{
            out.extend(data.chunks_exact($n).map(|c| {
                let v = <$t>::from_le_bytes(c.try_into().unwrap_or([0; $n]));
                #[allow(clippy::redundant_closure_call)]
                ($conv)(v)
            }))
        }};
    }
    match datatype {
        DataType::Bool | DataType::Uint8 => out.extend(data.iter().map(|&b| f64::from(b))),
        DataType::Int8 => out.extend(data.iter().map(|&b| f64::from(b as i8))),
        DataType::Uint16 => read!(u16, 2, f64::from),
        DataType::Int16 => read!(i16, 2, f64::from),
        DataType::Uint32 => read!(u32, 4, f64::from),
        DataType::Int32 => read!(i32, 4, f64::from),
        DataType::Uint64 => read!(u64, 8, |v: u64| v as f64),
        DataType::Int64 => read!(i64, 8, |v: i64| v as f64),
        DataType::Fp16 => read!(u16, 2, |v: u16| f64::from(half::f16::from_bits(v))),
        DataType::Bf16 => read!(u16, 2, |v: u16| f64::from(half::bf16::from_bits(v))),
        DataType::Fp32 => read!(f32, 4, f64::from),
        DataType::Fp64 => read!(f64, 8, |v: f64| v),
        DataType::Bytes => return false,
    }
    true
}

/// The buffer extraction reads a tensor's values into, kept by its caller so it is reused from request to request.
#[derive(Default)]
pub struct Scratch {
    values: Vec<f64>,
}

/// The features of `rows` rows of one tensor, row-major into `out` (`features` per row). False when the tensor
/// does not have the shape the profile was made for (a row of another size), so it is left out.
#[allow(clippy::too_many_arguments)]
pub fn extract(
    kind: &Kind,
    features: usize,
    datatype: DataType,
    data: &[u8],
    rows: usize,
    tokenizer: Option<&Tokenizer>,
    scratch: &mut Scratch,
    out: &mut Vec<f64>,
) -> bool {
    out.clear();
    if rows == 0 {
        return true;
    }
    if let Kind::Length = kind {
        return text_lengths(data, rows, features, tokenizer, out);
    }
    let values = &mut scratch.values;
    if !numeric_values(datatype, data, values) || values.len() % rows != 0 {
        return false;
    }
    let width = values.len() / rows;
    match kind {
        Kind::Elements => {
            if width != features {
                return false;
            }
            out.extend_from_slice(values);
        }
        Kind::Summary => {
            for row in values.chunks_exact(width.max(1)) {
                let n = row.len().max(1) as f64;
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                let l2 = row.iter().map(|v| v * v).sum::<f64>().sqrt();
                out.extend_from_slice(&[mean, var.sqrt(), l2]);
            }
        }
        Kind::Classes => {
            for row in values.chunks_exact(width.max(1)) {
                out.push(argmax(row).map_or(f64::NAN, |i| i as f64));
            }
        }
        Kind::Cosine { centroid } => {
            if width != centroid.len() {
                return false;
            }
            for row in values.chunks_exact(width.max(1)) {
                out.push(cosine(row, centroid));
            }
        }
        Kind::Length => unreachable!("handled above"),
    }
    true
}

/// The first largest element's index (NaNs never win); `None` for an empty or all-NaN row.
pub fn argmax(row: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Cosine similarity; NaN when either vector is all zeros.
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return f64::NAN;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Per row: the characters of its text (all of the row's elements together), and its tokens.
fn text_lengths(data: &[u8], rows: usize, features: usize, tokenizer: Option<&Tokenizer>, out: &mut Vec<f64>) -> bool {
    let texts: Result<Vec<&[u8]>, ()> = bytes_elements(data).collect();
    let Ok(texts) = texts else { return false };
    if texts.len() % rows != 0 {
        return false;
    }
    let per_row = texts.len() / rows;
    for row in texts.chunks(per_row.max(1)).take(rows) {
        let (mut chars, mut tokens) = (0usize, 0usize);
        for t in row {
            let text = String::from_utf8_lossy(t);
            chars += text.chars().count();
            if features > 1 {
                if let Some(tok) = tokenizer {
                    tokens += tok.encode(text.as_ref(), false).map_or(0, |e| e.len());
                }
            }
        }
        out.push(chars as f64);
        if features > 1 {
            out.push(if tokenizer.is_some() { tokens as f64 } else { f64::NAN });
        }
    }
    true
}

/// A model's tokenizer as text lengths count with it: a `tokenizer.json` may pad (and cut) every text to one
/// length, but a text's length is its own tokens. The profile and the live monitor both load it this way.
pub fn length_tokenizer(path: &std::path::Path) -> Result<Tokenizer, tokenizers::Error> {
    let mut tokenizer = Tokenizer::from_file(path)?;
    tokenizer.with_padding(None);
    tokenizer.with_truncation(None)?;
    Ok(tokenizer)
}

/// The bin a value falls in: for quantile edges, the number of edges below it (so a value equal to an edge
/// goes to the lower bin, and the outer bins are open-ended); for categories, the class itself. `None` for a
/// NaN or a class the reference did not have.
pub fn bin(edges: &[f64], bins: usize, categorical: bool, value: f64) -> Option<usize> {
    if value.is_nan() {
        return None;
    }
    if categorical {
        let class = value as usize;
        return (value >= 0.0 && class < bins).then_some(class);
    }
    // Ten bins have nine edges: counting them all, without branches, beats a binary search's mispredictions.
    Some(edges.iter().filter(|&&e| e < value).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn elements_summaries_classes_and_cosines_come_row_by_row() {
        let data = fp32(&[1.0, 2.0, 3.0, 0.0, 4.0, 3.0]);
        let mut s = Scratch::default();
        let mut out = Vec::new();
        assert!(extract(
            &Kind::Elements,
            3,
            DataType::Fp32,
            &data,
            2,
            None,
            &mut s,
            &mut out
        ));
        assert_eq!(out, vec![1.0, 2.0, 3.0, 0.0, 4.0, 3.0]);
        assert!(
            !extract(&Kind::Elements, 2, DataType::Fp32, &data, 2, None, &mut s, &mut out),
            "wrong width"
        );
        assert!(extract(
            &Kind::Summary,
            3,
            DataType::Fp32,
            &data,
            2,
            None,
            &mut s,
            &mut out
        ));
        assert_eq!(out[0], 2.0);
        assert!((out[1] - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((out[2] - 14f64.sqrt()).abs() < 1e-12);
        assert!(extract(
            &Kind::Classes,
            1,
            DataType::Fp32,
            &data,
            2,
            None,
            &mut s,
            &mut out
        ));
        assert_eq!(out, vec![2.0, 1.0]);
        let centroid = Kind::Cosine {
            centroid: vec![1.0, 0.0, 0.0],
        };
        assert!(extract(&centroid, 1, DataType::Fp32, &data, 2, None, &mut s, &mut out));
        assert!((out[0] - 1.0 / 14f64.sqrt()).abs() < 1e-12);
        assert_eq!(out[1], 0.0);
    }

    #[test]
    fn text_length_counts_characters_not_bytes() {
        let mut data = Vec::new();
        crate::tensor::push_bytes_element(&mut data, "héllo".as_bytes());
        crate::tensor::push_bytes_element(&mut data, b"");
        let mut out = Vec::new();
        assert!(extract(
            &Kind::Length,
            1,
            DataType::Bytes,
            &data,
            2,
            None,
            &mut Scratch::default(),
            &mut out
        ));
        assert_eq!(out, vec![5.0, 0.0]);
    }

    #[test]
    fn values_on_an_edge_go_to_the_lower_bin_and_the_outer_bins_are_open() {
        let edges = [0.0, 1.0, 2.0];
        assert_eq!(bin(&edges, 4, false, -100.0), Some(0));
        assert_eq!(bin(&edges, 4, false, 0.0), Some(0));
        assert_eq!(bin(&edges, 4, false, 0.5), Some(1));
        assert_eq!(bin(&edges, 4, false, 1e9), Some(3));
        assert_eq!(bin(&edges, 4, false, f64::NAN), None);
        assert_eq!(bin(&[], 3, true, 2.0), Some(2));
        assert_eq!(bin(&[], 3, true, 3.0), None);
    }
}
