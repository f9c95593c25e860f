//! A version's reference profile (`profile.json`): per tensor and feature, the reference's decile edges, each
//! bin's share and summary statistics. Written by `inferd profile` from reference data; read when a version
//! loads, from its version folder or, for every version, from the model folder.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::features::{self, bin, feature_names, Kind, Scratch, MAX_ELEMENT_FEATURES};
use crate::spec::{ModelSpec, TensorSpec};
use crate::tensor::DataType;

pub const FILE_NAME: &str = "profile.json";
pub const FORMAT: &str = "inferd-profile/1";
/// Quantile bins per numeric feature (edges at the reference's deciles).
pub const BINS: usize = 10;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format: String,
    pub model: String,
    /// Reference rows.
    pub rows: u64,
    /// Where the reference data came from (a file name).
    #[serde(default)]
    pub source: String,
    pub inputs: Vec<TensorProfile>,
    pub outputs: Vec<TensorProfile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TensorProfile {
    pub name: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub features: Vec<FeatureProfile>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureProfile {
    pub name: String,
    /// The inner bin edges (empty for categories); a value equal to an edge is in the lower bin.
    pub edges: Vec<f64>,
    /// Each bin's share of the reference's values that are not NaN.
    pub shares: Vec<f64>,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub nan_share: f64,
}

/// Why a profile cannot be used for a version.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{} is not a profile: {source}", path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{} has format '{found}', this server reads '{FORMAT}'", path.display())]
    Format { path: PathBuf, found: String },
    #[error("{} does not fit the model: {why}", path.display())]
    Misfit { path: PathBuf, why: String },
}

/// The profile that applies to a version: its own folder's, else the model folder's; `None` without either.
pub fn find(version_dir: &Path) -> Option<PathBuf> {
    let own = version_dir.join(FILE_NAME);
    if own.is_file() {
        return Some(own);
    }
    let shared = version_dir.parent()?.join(FILE_NAME);
    shared.is_file().then_some(shared)
}

impl Profile {
    pub fn read(path: &Path) -> Result<Self, ProfileError> {
        let text = std::fs::read(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let profile: Profile = serde_json::from_slice(&text).map_err(|source| ProfileError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        if profile.format != FORMAT {
            return Err(ProfileError::Format {
                path: path.to_path_buf(),
                found: profile.format,
            });
        }
        Ok(profile)
    }

    /// Checks that every profiled tensor is one the model has, with the features its kind makes and bins that
    /// make sense, so the monitor can trust it.
    pub fn check(&self, spec: &ModelSpec, path: &Path) -> Result<(), ProfileError> {
        let misfit = |why: String| ProfileError::Misfit {
            path: path.to_path_buf(),
            why,
        };
        for (list, declared, side) in [
            (&self.inputs, &spec.inputs, "input"),
            (&self.outputs, &spec.outputs, "output"),
        ] {
            for t in list {
                let Some(d) = declared.iter().find(|d| d.name == t.name) else {
                    return Err(misfit(format!("the model has no {side} '{}'", t.name)));
                };
                if (d.datatype == DataType::Bytes) != matches!(t.kind, Kind::Length) {
                    return Err(misfit(format!(
                        "{side} '{}' cannot be profiled as {}",
                        t.name,
                        t.kind.label()
                    )));
                }
                if t.features.is_empty() {
                    return Err(misfit(format!("{side} '{}' has no features", t.name)));
                }
                for f in &t.features {
                    let bins = if t.kind.categorical() {
                        f.shares.len()
                    } else {
                        f.edges.len() + 1
                    };
                    let sorted = f.edges.windows(2).all(|w| w[0] <= w[1]) && f.edges.iter().all(|e| e.is_finite());
                    if f.shares.len() != bins || bins == 0 || !sorted {
                        return Err(misfit(format!(
                            "feature '{}' of {side} '{}' needs sorted finite edges and one share per bin",
                            f.name, t.name
                        )));
                    }
                }
            }
        }
        Ok(())
    }
}

/// How `inferd profile` treats an output beyond the defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputRole {
    /// Argmax class shares.
    Classifier,
    /// Cosine similarity to the reference centroid.
    Embedding,
}

/// The kind a tensor is profiled as: text by length; a fixed row of at most 1024 elements element by element;
/// anything larger or variable by per-row summaries; outputs as their role says (a `label_filename` makes a
/// classifier, a name with "embed" in it an embedding, unless told otherwise).
pub fn default_kind(t: &TensorSpec, role: Option<OutputRole>) -> Kind {
    match role {
        Some(OutputRole::Classifier) => return Kind::Classes,
        Some(OutputRole::Embedding) => return Kind::Cosine { centroid: Vec::new() },
        None => {}
    }
    if t.datatype == DataType::Bytes {
        return Kind::Length;
    }
    match fixed_row(t) {
        Some(n) if n <= MAX_ELEMENT_FEATURES => Kind::Elements,
        _ => Kind::Summary,
    }
}

/// Elements per row when every dimension is fixed.
pub fn fixed_row(t: &TensorSpec) -> Option<usize> {
    t.dims
        .iter()
        .try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)))
}

/// One tensor's reference values as they are gathered.
struct Gathered {
    name: String,
    kind: Kind,
    features: usize,
    /// Elements per row when fixed (a classifier's classes), else 0.
    width: usize,
    tokens: bool,
    /// Row-major feature values (for an embedding: the raw rows, until the centroid is known).
    values: Vec<f64>,
    rows: usize,
}

/// Gathers reference rows (inputs and the model's outputs for them) and makes the profile.
pub struct ProfileBuilder {
    model: String,
    tensors: Vec<Gathered>,
    inputs: usize,
    rows: u64,
    scratch: Scratch,
    buffer: Vec<f64>,
}

impl ProfileBuilder {
    /// `kinds`: per input then per output (in the spec's order), how it is profiled (`default_kind`), and
    /// whether text is also counted in tokens.
    pub fn new(spec: &ModelSpec, kinds: Vec<Kind>, tokens: bool) -> Self {
        let tensors = spec
            .inputs
            .iter()
            .chain(&spec.outputs)
            .zip(kinds)
            .map(|(t, kind)| {
                let width = fixed_row(t).unwrap_or(0);
                let features = match &kind {
                    Kind::Cosine { .. } => width,
                    k => feature_names(k, width, tokens).len(),
                };
                Gathered {
                    name: t.name.clone(),
                    kind,
                    features,
                    width,
                    tokens,
                    values: Vec::new(),
                    rows: 0,
                }
            })
            .collect();
        Self {
            model: spec.name.clone(),
            tensors,
            inputs: spec.inputs.len(),
            rows: 0,
            scratch: Scratch::default(),
            buffer: Vec::new(),
        }
    }

    /// Adds `rows` rows: `tensors` per input then per output, in the spec's order, as (datatype, raw bytes).
    pub fn add(
        &mut self,
        tensors: &[(DataType, &[u8])],
        rows: usize,
        tokenizer: Option<&tokenizers::Tokenizer>,
    ) -> Result<(), String> {
        for (g, &(datatype, data)) in self.tensors.iter_mut().zip(tensors) {
            // An embedding's rows are kept whole until every row is in and the centroid is known.
            let as_kind = match g.kind {
                Kind::Cosine { .. } => Kind::Elements,
                ref k => k.clone(),
            };
            if !features::extract(
                &as_kind,
                g.features,
                datatype,
                data,
                rows,
                tokenizer,
                &mut self.scratch,
                &mut self.buffer,
            ) {
                return Err(format!(
                    "tensor '{}' does not have {} feature(s) per row as its {} profile needs",
                    g.name,
                    g.features,
                    g.kind.label()
                ));
            }
            g.values.extend_from_slice(&self.buffer);
            g.rows += rows;
        }
        self.rows += rows as u64;
        Ok(())
    }

    pub fn finish(self, source: &str) -> Profile {
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for (i, mut g) in self.tensors.into_iter().enumerate() {
            if let Kind::Cosine { .. } = g.kind {
                let width = g.features.max(1);
                let mut centroid = vec![0.0; width];
                for row in g.values.chunks_exact(width) {
                    for (c, v) in centroid.iter_mut().zip(row) {
                        *c += v / g.rows.max(1) as f64;
                    }
                }
                g.values = g
                    .values
                    .chunks_exact(width)
                    .map(|r| features::cosine(r, &centroid))
                    .collect();
                g.kind = Kind::Cosine { centroid };
                g.features = 1;
            }
            let names = match g.kind {
                Kind::Elements => feature_names(&g.kind, g.features, false),
                ref k => feature_names(k, 0, g.tokens),
            };
            let categorical = g.kind.categorical();
            let classes = if categorical { g.classes() } else { 0 };
            let features = names
                .into_iter()
                .enumerate()
                .map(|(f, name)| {
                    let column: Vec<f64> = g.values.iter().skip(f).step_by(g.features.max(1)).copied().collect();
                    profile_feature(name, column, categorical, classes)
                })
                .collect();
            let t = TensorProfile {
                name: g.name,
                kind: g.kind,
                features,
            };
            if i < self.inputs {
                inputs.push(t);
            } else {
                outputs.push(t);
            }
        }
        Profile {
            format: FORMAT.to_string(),
            model: self.model,
            rows: self.rows,
            source: source.to_string(),
            inputs,
            outputs,
        }
    }
}

impl Gathered {
    /// A classifier's classes: its row's width when fixed, else as many as the largest class predicted.
    fn classes(&self) -> usize {
        if self.width > 0 {
            return self.width;
        }
        self.values
            .iter()
            .filter(|v| !v.is_nan())
            .fold(0usize, |n, &v| n.max(v as usize + 1))
    }
}

/// One feature's reference: decile edges (linear interpolation, as NumPy's default), shares and statistics.
fn profile_feature(name: String, mut column: Vec<f64>, categorical: bool, classes: usize) -> FeatureProfile {
    let total = column.len();
    column.retain(|v| !v.is_nan());
    let nan_share = if total == 0 {
        0.0
    } else {
        (total - column.len()) as f64 / total as f64
    };
    column.sort_by(f64::total_cmp);
    let edges: Vec<f64> = if categorical || column.is_empty() {
        Vec::new()
    } else {
        (1..BINS).map(|k| quantile(&column, k as f64 / BINS as f64)).collect()
    };
    let bins = if categorical { classes.max(1) } else { edges.len() + 1 };
    let mut counts = vec![0u64; bins];
    for &v in &column {
        if let Some(b) = bin(&edges, bins, categorical, v) {
            counts[b] += 1;
        }
    }
    let mut shares = Vec::new();
    super::score::shares(&counts, &mut shares);
    let n = column.len() as f64;
    let (mean, std) = if column.is_empty() {
        (None, None)
    } else {
        let mean = column.iter().sum::<f64>() / n;
        let var = column.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        (Some(mean), Some(var.sqrt()))
    };
    FeatureProfile {
        name,
        edges,
        shares,
        mean,
        std,
        min: column.first().copied(),
        max: column.last().copied(),
        nan_share,
    }
}

/// The q-quantile of sorted values, interpolating linearly between the two nearest ranks.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deciles_interpolate_like_numpy() {
        let v: Vec<f64> = (0..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.1), 1.0);
        assert_eq!(quantile(&[0.0, 1.0], 0.25), 0.25);
    }

    #[test]
    fn a_uniform_reference_has_ten_equal_shares() {
        let column: Vec<f64> = (0..1000).map(f64::from).collect();
        let f = profile_feature("0".into(), column, false, 0);
        assert_eq!(f.edges.len(), 9);
        assert_eq!(f.shares.len(), 10);
        for s in &f.shares {
            assert!((s - 0.1).abs() < 1e-9, "{:?}", f.shares);
        }
        assert_eq!((f.min, f.max), (Some(0.0), Some(999.0)));
    }

    #[test]
    fn nans_are_counted_apart_from_the_bins() {
        let f = profile_feature("0".into(), vec![1.0, f64::NAN, 2.0, f64::NAN], false, 0);
        assert_eq!(f.nan_share, 0.5);
        assert!((f.shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
