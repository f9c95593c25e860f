//! Live drift of one loaded version: what it receives and answers is binned against its reference profile in
//! tumbling windows of `drift.window` sampled rows; when a window fills, every feature's PSI and Jensen–Shannon
//! distance is computed and published as the version's latest report (read by `/drift`, the metrics and the
//! rollback guard without a lock).
//!
//! Observing turns a request's rows into bins in buffers of the thread's own, then holds the window's lock
//! (no await inside) only to add them to its counts.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use serde::Serialize;
use tokenizers::Tokenizer;

use super::features::{self, bin, Kind, Scratch};
use super::profile::{FeatureProfile, Profile, ProfileError, TensorProfile};
use super::score::{js_distance, psi, shares};
use crate::proto::ModelConfig;
use crate::spec::ModelSpec;
use crate::tensor::{DataType, Tensor};
use crate::traffic::spread;

pub const DEFAULT_WINDOW: usize = 1000;

/// `drift.*` parameters of a model's config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DriftConfig {
    /// Sampled rows per window.
    pub window: usize,
    /// Share of rows sampled, in (0, 1].
    pub sample: f64,
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum DriftConfigError {
    #[error("parameter drift.window must be a whole number of rows from 1 to 10000000, got '{0}'")]
    Window(String),
    #[error("parameter drift.sample must be a number above 0 and at most 1, got '{0}'")]
    Sample(String),
    #[error("unknown parameter {0} (drift.window and drift.sample are known)")]
    Unknown(String),
}

impl DriftConfig {
    pub fn from_config(cfg: &ModelConfig) -> Result<Self, DriftConfigError> {
        let mut config = Self {
            window: DEFAULT_WINDOW,
            sample: 1.0,
        };
        for (key, param) in &cfg.parameters {
            let value = param.string_value.trim();
            match key.strip_prefix("drift.") {
                None => {}
                Some("window") => {
                    config.window = value
                        .parse()
                        .ok()
                        .filter(|w| (1..=10_000_000).contains(w))
                        .ok_or_else(|| DriftConfigError::Window(value.to_string()))?
                }
                Some("sample") => {
                    config.sample = value
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0 && *s <= 1.0)
                        .ok_or_else(|| DriftConfigError::Sample(value.to_string()))?
                }
                Some(_) => return Err(DriftConfigError::Unknown(key.clone())),
            }
        }
        Ok(config)
    }
}

/// A profiled tensor as the monitor follows it.
struct Planned {
    /// Index among the spec's inputs, or outputs.
    index: usize,
    datatype: DataType,
    kind: Kind,
    /// Per feature: where its bins start in the window's counts, how many it has, and where its edges are in
    /// `edges` (one flat buffer, so binning a row walks memory in order).
    features: Vec<PlannedFeature>,
    edges: Vec<f64>,
}

#[derive(Clone, Copy)]
struct PlannedFeature {
    at: usize,
    bins: usize,
    edges: (usize, usize),
}

/// The window being filled: only counts, so the lock is held just to add a request's bins.
struct Window {
    rows: usize,
    counts: Vec<u64>,
    completed: u64,
}

/// What one request's rows become before the window is locked, kept per thread and reused.
#[derive(Default)]
struct Binned {
    keep: Vec<bool>,
    extracted: Vec<f64>,
    scratch: Scratch,
    /// Per kept row, one slot per feature: the index of its count, or `SKIP`.
    slots: Vec<u32>,
}

const SKIP: u32 = u32::MAX;

thread_local! {
    static BINNED: std::cell::RefCell<Binned> = std::cell::RefCell::new(Binned::default());
}

pub struct Monitor {
    pub profile: Arc<Profile>,
    /// The profile's file.
    pub path: PathBuf,
    pub config: DriftConfig,
    inputs: Vec<Planned>,
    outputs: Vec<Planned>,
    tokenizer: Option<Tokenizer>,
    /// Features per row, over every profiled tensor.
    slots_per_row: usize,
    /// Rows drawn for sampling so far (the draw for the next one).
    drawn: AtomicU64,
    window: Mutex<Window>,
    latest: ArcSwapOption<Report>,
}

/// One complete window's scores.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub window_rows: usize,
    pub windows_completed: u64,
    /// When the window completed, in seconds since the Unix epoch.
    pub updated: f64,
    /// The worst feature's PSI, over inputs and outputs.
    pub psi_max: f64,
    pub inputs: Vec<TensorDrift>,
    pub outputs: Vec<TensorDrift>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TensorDrift {
    pub name: String,
    pub kind: &'static str,
    pub features: Vec<FeatureDrift>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FeatureDrift {
    pub index: usize,
    pub name: String,
    /// None until a window completes.
    pub psi: Option<f64>,
    pub js: Option<f64>,
    pub edges: Vec<f64>,
    pub reference: Vec<f64>,
    pub live: Option<Vec<f64>>,
    /// The window's values of this feature that were binned (not NaN, and from a tensor of the profiled shape).
    pub live_values: u64,
}

impl Monitor {
    /// Follows `profile` for a version of `spec`; text lengths in tokens use the version folder's tokenizer.
    pub fn new(
        profile: Profile,
        path: &Path,
        spec: &ModelSpec,
        version_dir: &Path,
        config: DriftConfig,
    ) -> Result<Self, ProfileError> {
        profile.check(spec, path)?;
        let mut at = 0;
        let mut plan = |list: &[TensorProfile], declared: &[crate::spec::TensorSpec]| -> Vec<Planned> {
            list.iter()
                .filter_map(|t| {
                    let index = declared.iter().position(|d| d.name == t.name)?;
                    let mut edges = Vec::new();
                    let features = t
                        .features
                        .iter()
                        .map(|f| {
                            let planned = PlannedFeature {
                                at,
                                bins: f.shares.len(),
                                edges: (edges.len(), edges.len() + f.edges.len()),
                            };
                            at += f.shares.len();
                            edges.extend_from_slice(&f.edges);
                            planned
                        })
                        .collect();
                    Some(Planned {
                        index,
                        datatype: declared[index].datatype,
                        kind: t.kind.clone(),
                        features,
                        edges,
                    })
                })
                .collect()
        };
        let inputs = plan(&profile.inputs, &spec.inputs);
        let outputs = plan(&profile.outputs, &spec.outputs);
        let wants_tokens = profile
            .inputs
            .iter()
            .any(|t| t.kind == Kind::Length && t.features.iter().any(|f| f.name == "tokens"));
        let tokenizer_file = version_dir.join("tokenizer.json");
        let tokenizer = if wants_tokens {
            Some(
                features::length_tokenizer(&tokenizer_file).map_err(|e| ProfileError::Misfit {
                    path: path.to_path_buf(),
                    why: format!("it counts tokens, and {} cannot be read: {e}", tokenizer_file.display()),
                })?,
            )
        } else {
            None
        };
        let slots_per_row = inputs.iter().chain(&outputs).map(|p| p.features.len()).sum();
        if at >= SKIP as usize {
            return Err(ProfileError::Misfit {
                path: path.to_path_buf(),
                why: format!("it has {at} bins, more than a monitor counts"),
            });
        }
        Ok(Self {
            window: Mutex::new(Window {
                rows: 0,
                counts: vec![0; at],
                completed: 0,
            }),
            profile: Arc::new(profile),
            path: path.to_path_buf(),
            config,
            inputs,
            outputs,
            tokenizer,
            slots_per_row,
            drawn: AtomicU64::new(0),
            latest: ArcSwapOption::empty(),
        })
    }

    /// The latest complete window's report.
    pub fn latest(&self) -> Option<Arc<Report>> {
        self.latest.load_full()
    }

    /// Rows in the window being filled, and windows completed.
    pub fn progress(&self) -> (usize, u64) {
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        (w.rows, w.completed)
    }

    /// Takes one served request into the window: `inputs` in the spec's order (None for an absent optional one),
    /// `outputs` all of the model's, `rows` along the batch dimension. Its rows are turned into bins first; the
    /// window's lock is held only to count them.
    pub fn observe(&self, inputs: &[Option<Bytes>], outputs: &[Tensor], rows: usize) {
        BINNED.with_borrow_mut(|b| {
            if self.bin_rows(inputs, outputs, rows, b) {
                self.count(&b.slots);
            }
        })
    }

    /// Fills `b.slots` with the bins of the sampled rows; false when no row was sampled.
    fn bin_rows(&self, inputs: &[Option<Bytes>], outputs: &[Tensor], rows: usize, b: &mut Binned) -> bool {
        b.keep.clear();
        if self.config.sample >= 1.0 {
            b.keep.resize(rows, true);
        } else {
            let first = self.drawn.fetch_add(rows as u64, Ordering::Relaxed);
            let threshold = (self.config.sample * u64::MAX as f64) as u64;
            b.keep
                .extend((0..rows as u64).map(|i| spread(first.wrapping_add(i)) < threshold));
        }
        let kept = b.keep.iter().filter(|&&k| k).count();
        if kept == 0 {
            return false;
        }
        let width = self.slots_per_row;
        b.slots.clear();
        b.slots.resize(kept * width, SKIP);
        let mut column = 0;
        let tensors = self
            .inputs
            .iter()
            .map(|p| (p, inputs.get(p.index).and_then(Option::as_ref).map(|d| &d[..])));
        let tensors = tensors.chain(
            self.outputs
                .iter()
                .map(|p| (p, outputs.get(p.index).map(|t| &t.data[..]))),
        );
        for (p, data) in tensors {
            let n = p.features.len();
            let fits = data.is_some_and(|data| {
                features::extract(
                    &p.kind,
                    n,
                    p.datatype,
                    data,
                    rows,
                    self.tokenizer.as_ref(),
                    &mut b.scratch,
                    &mut b.extracted,
                )
            });
            if fits {
                let categorical = p.kind.categorical();
                let kept_rows = (0..rows).filter(|&r| b.keep[r]);
                for (k, row) in kept_rows.enumerate() {
                    let values = &b.extracted[row * n..row * n + n];
                    let slots = &mut b.slots[k * width + column..k * width + column + n];
                    for ((f, &v), slot) in p.features.iter().zip(values).zip(slots) {
                        if let Some(i) = bin(&p.edges[f.edges.0..f.edges.1], f.bins, categorical, v) {
                            *slot = (f.at + i) as u32;
                        }
                    }
                }
            }
            column += n;
        }
        true
    }

    /// Counts binned rows into the window, publishing a report each time it fills.
    fn count(&self, slots: &[u32]) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        for row in slots.chunks(self.slots_per_row.max(1)) {
            for &slot in row {
                if slot != SKIP {
                    w.counts[slot as usize] += 1;
                }
            }
            w.rows += 1;
            if w.rows >= self.config.window {
                w.completed += 1;
                let report = self.report(&w.counts, w.rows, w.completed);
                self.latest.store(Some(Arc::new(report)));
                w.counts.iter_mut().for_each(|c| *c = 0);
                w.rows = 0;
            }
        }
    }

    /// Scores a window's counts.
    fn report(&self, counts: &[u64], rows: usize, completed: u64) -> Report {
        let mut live = Vec::new();
        let mut psi_max: f64 = 0.0;
        let mut tensors = |planned: &[Planned], profiled: &[TensorProfile]| -> Vec<TensorDrift> {
            planned
                .iter()
                .zip(profiled)
                .map(|(p, t)| TensorDrift {
                    name: t.name.clone(),
                    kind: t.kind.label(),
                    features: p
                        .features
                        .iter()
                        .zip(&t.features)
                        .enumerate()
                        .map(|(index, (pf, f))| {
                            let window = &counts[pf.at..pf.at + pf.bins];
                            shares(window, &mut live);
                            let (p, j) = (psi(&f.shares, &live), js_distance(&f.shares, &live));
                            psi_max = psi_max.max(p);
                            FeatureDrift {
                                index,
                                name: f.name.clone(),
                                psi: Some(p),
                                js: Some(j),
                                edges: f.edges.clone(),
                                reference: f.shares.clone(),
                                live: Some(live.clone()),
                                live_values: window.iter().sum(),
                            }
                        })
                        .collect(),
                })
                .collect()
        };
        let inputs = tensors(&self.inputs, &self.profile.inputs);
        let outputs = tensors(&self.outputs, &self.profile.outputs);
        Report {
            window_rows: rows,
            windows_completed: completed,
            updated: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            psi_max,
            inputs,
            outputs,
        }
    }

    /// The profile's features with nothing live yet, for `/drift` before the first window completes.
    pub fn pending(&self) -> (Vec<TensorDrift>, Vec<TensorDrift>) {
        let tensors = |list: &[TensorProfile]| -> Vec<TensorDrift> {
            list.iter()
                .map(|t| TensorDrift {
                    name: t.name.clone(),
                    kind: t.kind.label(),
                    features: t
                        .features
                        .iter()
                        .enumerate()
                        .map(|(i, f)| pending_feature(i, f))
                        .collect(),
                })
                .collect()
        };
        (tensors(&self.profile.inputs), tensors(&self.profile.outputs))
    }
}

fn pending_feature(index: usize, f: &FeatureProfile) -> FeatureDrift {
    FeatureDrift {
        index,
        name: f.name.clone(),
        psi: None,
        js: None,
        edges: f.edges.clone(),
        reference: f.shares.clone(),
        live: None,
        live_values: 0,
    }
}

/// How far one arm's outputs are from another's over their latest windows: the largest Jensen–Shannon
/// distance between their live shares, over the output features both bin alike. None when none is comparable.
pub fn divergence(a: &Report, b: &Report) -> Option<f64> {
    let mut worst: Option<f64> = None;
    for ta in &a.outputs {
        let Some(tb) = b.outputs.iter().find(|t| t.name == ta.name) else {
            continue;
        };
        for (fa, fb) in ta.features.iter().zip(&tb.features) {
            let (Some(la), Some(lb)) = (&fa.live, &fb.live) else {
                continue;
            };
            if fa.edges != fb.edges || la.len() != lb.len() || fa.live_values == 0 || fb.live_values == 0 {
                continue;
            }
            let d = js_distance(la, lb);
            worst = Some(worst.map_or(d, |w: f64| w.max(d)));
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::profile::ProfileBuilder;

    fn spec() -> ModelSpec {
        let cfg = crate::repository::config::parse_pbtxt(
            r#"name: "m" max_batch_size: 64
               input [{ name: "X" data_type: TYPE_FP32 dims: [ 2 ] }]
               output [{ name: "Y" data_type: TYPE_FP32 dims: [ 3 ] }]"#,
        )
        .expect("config");
        ModelSpec::from_config(&cfg).expect("spec")
    }

    fn fp32(values: impl IntoIterator<Item = f32>) -> Bytes {
        values
            .into_iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }

    /// A reference of 1000 rows: X's two features uniform over 0..1000, Y's argmax cycling over 3 classes.
    fn monitor(window: usize, sample: f64) -> Monitor {
        let spec = spec();
        let mut b = ProfileBuilder::new(&spec, vec![Kind::Elements, Kind::Classes], false);
        let x = fp32((0..1000).flat_map(|i| [i as f32, i as f32]));
        let y = fp32((0..1000).flat_map(|i| [0, 1, 2].map(|c| if c == i % 3 { 1.0 } else { 0.0 })));
        b.add(&[(DataType::Fp32, &x), (DataType::Fp32, &y)], 1000, None)
            .expect("fits");
        let profile = b.finish("test");
        let config = DriftConfig { window, sample };
        Monitor::new(profile, Path::new("profile.json"), &spec, Path::new("."), config).expect("monitor")
    }

    fn output(rows: usize, class: usize) -> Tensor {
        Tensor {
            name: "Y".into(),
            datatype: DataType::Fp32,
            shape: vec![rows as i64, 3],
            data: fp32((0..rows).flat_map(|_| [0, 1, 2].map(|c| if c == class { 1.0 } else { 0.0 }))),
        }
    }

    #[test]
    fn a_window_completes_at_its_row_count_and_the_next_starts_empty() {
        let m = monitor(100, 1.0);
        // 60 rows like the reference, then 60 all above it: the window closes after 40 of those.
        m.observe(
            &[Some(fp32((0..60).flat_map(|i| [i as f32 * 16.0; 2])))],
            &[output(60, 0)],
            60,
        );
        assert!(m.latest().is_none());
        m.observe(&[Some(fp32([5000.0; 120]))], &[output(60, 1)], 60);
        let r = m.latest().expect("a complete window");
        assert_eq!((r.window_rows, r.windows_completed), (100, 1));
        assert_eq!(m.progress(), (20, 1));
        let x0 = &r.inputs[0].features[0];
        let live = x0.live.as_ref().expect("live shares");
        // The 40 high rows and the three of the first 60 above the reference's last decile (899.1).
        assert!((live[9] - 0.43).abs() < 1e-12, "{live:?}");
        assert!((x0.psi.unwrap() - psi(&x0.reference, live)).abs() < 1e-12);
        let classes = r.outputs[0].features[0].live.as_ref().expect("class shares");
        assert_eq!(classes, &vec![0.6, 0.4, 0.0]);
        assert_eq!(
            r.psi_max,
            r.inputs
                .iter()
                .chain(&r.outputs)
                .flat_map(|t| &t.features)
                .map(|f| f.psi.unwrap())
                .fold(0.0, f64::max)
        );
    }

    #[test]
    fn a_sampled_monitor_takes_about_its_share_of_rows() {
        let m = monitor(1_000_000, 0.1);
        for _ in 0..100 {
            m.observe(&[Some(fp32([1.0; 128]))], &[output(64, 0)], 64);
        }
        let (rows, _) = m.progress();
        assert!((540..=740).contains(&rows), "{rows} of 6400 rows sampled at 0.1");
    }

    #[test]
    fn a_tensor_of_another_width_is_left_out_and_the_rows_still_count() {
        let m = monitor(10, 1.0);
        m.observe(&[Some(fp32([1.0; 30]))], &[output(10, 2)], 10);
        let r = m.latest().expect("window");
        assert_eq!(r.inputs[0].features[0].live_values, 0);
        assert_eq!(r.outputs[0].features[0].live_values, 10);
    }

    #[test]
    fn divergence_compares_outputs_binned_alike() {
        let (a, b) = (monitor(10, 1.0), monitor(10, 1.0));
        a.observe(&[None], &[output(10, 0)], 10);
        b.observe(&[None], &[output(10, 1)], 10);
        let d = divergence(&a.latest().unwrap(), &b.latest().unwrap()).expect("comparable");
        assert!((d - 1.0).abs() < 1e-12, "disjoint classes: {d}");
        assert_eq!(divergence(&a.latest().unwrap(), &a.latest().unwrap()), Some(0.0));
    }
}
