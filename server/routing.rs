//! The routing table: which loaded version serves a request. It is swapped whole (arc-swap), so a request
//! reads one consistent snapshot without locks while models load and unload. Every change is one step under
//! one lock, reading the table it replaces, so no change can be lost to another made meanwhile.
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::error::{InferError, InferResult};
use crate::repository::LoadError;
use crate::traffic::{spread, TrafficPolicy};
use crate::version::LoadedVersion;

#[derive(Clone)]
pub enum ModelState {
    Ready,
    /// The model is known but cannot serve: it failed to load (with the reason).
    Unavailable(LoadError),
}

#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    pub versions: BTreeMap<i64, Arc<LoadedVersion>>,
    pub state: ModelState,
    pub traffic: Arc<TrafficPolicy>,
    /// Requests routed by weight so far: the draw for the next one.
    pub draws: Arc<AtomicU64>,
    /// Why the last (re)load failed while the versions above kept serving.
    pub last_error: Option<LoadError>,
}

impl ModelEntry {
    pub fn new(
        name: &str,
        versions: BTreeMap<i64, Arc<LoadedVersion>>,
        state: ModelState,
        traffic: TrafficPolicy,
    ) -> Self {
        Self {
            name: name.to_string(),
            versions,
            state,
            traffic: Arc::new(traffic),
            draws: Arc::default(),
            last_error: None,
        }
    }

    /// The arm a split-traffic version is compared with: the version labelled `stable`, else the one with the
    /// largest weight (the lower version on a tie); never `version` itself, and only a loaded one.
    pub fn stable_arm(&self, version: i64) -> Option<i64> {
        let loaded = |v: &i64| *v != version && self.versions.contains_key(v);
        if let Some(&stable) = self.traffic.labels.get("stable").filter(|v| loaded(v)) {
            return Some(stable);
        }
        self.traffic
            .weights
            .iter()
            .filter(|(v, &w)| w > 0 && loaded(v))
            .max_by(|(va, wa), (vb, wb)| wa.cmp(wb).then(vb.cmp(va)))
            .map(|(&v, _)| v)
    }

    /// How far a version's outputs over its latest drift window are from its stable arm's over theirs (the
    /// largest Jensen–Shannon distance over their output features), with the stable arm's version; None when
    /// the version has no weight in the split or either has no complete window.
    pub fn arm_divergence(&self, version: i64) -> Option<(i64, f64)> {
        if self.traffic.weights.get(&version).copied().unwrap_or(0) == 0 {
            return None;
        }
        let stable = self.stable_arm(version)?;
        let latest = |v: i64| self.versions.get(&v)?.health.monitor()?.latest();
        let (own, theirs) = (latest(version)?, latest(stable)?);
        let d = crate::health::drift::divergence(&own, &theirs)?;
        Some((stable, d))
    }
}

#[derive(Clone, Default)]
pub struct RoutingTable {
    pub models: HashMap<String, ModelEntry>,
}

fn unknown_model(model: &str) -> InferError {
    InferError::NotFound(format!("Request for unknown model: '{model}' is not found"))
}

impl RoutingTable {
    pub fn entry(&self, model: &str) -> InferResult<&ModelEntry> {
        self.models.get(model).ok_or_else(|| unknown_model(model))
    }

    /// The version a request names (a number or a label), or the newest loaded one.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> InferResult<&Arc<LoadedVersion>> {
        self.route(model, version, None)
    }

    /// As `resolve`, but a request that names no version follows the model's weighted split (sticky by
    /// `routing_key` when it has one). `version` is never empty (the decoders normalise it).
    pub fn route(
        &self,
        model: &str,
        version: Option<&str>,
        routing_key: Option<&str>,
    ) -> InferResult<&Arc<LoadedVersion>> {
        let entry = self.entry(model)?;
        let unknown_version =
            |v: &str| InferError::NotFound(format!("Request for unknown model: '{model}' version {v} is not found"));
        match version {
            Some(v) => {
                let n: i64 = match v.parse() {
                    Ok(n) => n,
                    // Neither a number nor a label: Triton's wording, which its clients match; not found
                    // rather than Triton's invalid argument, since a label by that name could exist.
                    Err(_) => *entry.traffic.labels.get(v).ok_or_else(|| {
                        InferError::NotFound(format!(
                            "failed to get model version from specified version string '{v}' (details: not an \
                             integer nor a version label of model '{model}'), version should be an integral value > 0"
                        ))
                    })?,
                };
                match entry.versions.get(&n) {
                    Some(lv) => Ok(lv),
                    None if matches!(entry.state, ModelState::Unavailable(_)) => Err(unavailable(entry)),
                    None => Err(unknown_version(v)),
                }
            }
            None => {
                let draw = || spread(entry.draws.fetch_add(1, Ordering::Relaxed));
                let picked = match routing_key {
                    Some(_) => entry.traffic.pick(routing_key, 0),
                    None if entry.traffic.weights.is_empty() => None,
                    None => entry.traffic.pick(None, draw()),
                };
                picked
                    .and_then(|v| entry.versions.get(&v))
                    .or_else(|| entry.versions.values().next_back())
                    .ok_or_else(|| unavailable(entry))
            }
        }
    }

    /// The version that should receive a shadow copy of a request served by `served`, if any.
    pub fn shadow(&self, model: &str, served: i64) -> Option<Arc<LoadedVersion>> {
        let entry = self.models.get(model)?;
        entry.traffic.shadow.as_ref()?;
        let draw = spread(entry.draws.fetch_add(1, Ordering::Relaxed));
        entry
            .traffic
            .shadow_for(served, draw)
            .and_then(|v| entry.versions.get(&v).cloned())
    }

    pub fn all_ready(&self) -> bool {
        self.models.values().all(|e| matches!(e.state, ModelState::Ready))
    }
}

fn unavailable(entry: &ModelEntry) -> InferError {
    match &entry.state {
        ModelState::Unavailable(reason) => {
            InferError::Unavailable(format!("model '{}' is not ready: {reason}", entry.name))
        }
        ModelState::Ready => InferError::Unavailable(format!("model '{}' has no ready version", entry.name)),
    }
}

/// What one change to the table did.
pub struct Update<R> {
    pub result: R,
    pub before: Arc<RoutingTable>,
    pub after: Arc<RoutingTable>,
}

/// The table as the server shares it: read by every request, changed by the model lifecycle, the admin API and
/// the rollback guard.
#[derive(Default)]
pub struct Routes {
    table: ArcSwap<RoutingTable>,
    /// Held while a change reads the current table and swaps in its successor.
    writer: Mutex<()>,
}

impl Routes {
    pub fn load(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// Applies `change` to a copy of the current table and swaps the copy in, one change at a time. Returns
    /// what `change` returned, the table it replaced and the one it put in place. Requests already routed
    /// keep the versions they hold until they finish.
    pub fn update<R>(&self, change: impl FnOnce(&mut RoutingTable) -> R) -> Update<R> {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = (**self.table.load()).clone();
        let result = change(&mut next);
        let after = Arc::new(next);
        let before = self.table.swap(after.clone());
        Update { result, before, after }
    }

    /// Replaces one model's traffic policy with what `change` makes of the current entry, in one locked step;
    /// `Ok(None)` from `change` leaves it as it is. Returns whether it changed.
    pub fn update_traffic(
        &self,
        model: &str,
        change: impl FnOnce(&ModelEntry) -> InferResult<Option<TrafficPolicy>>,
    ) -> InferResult<bool> {
        self.update(|table| {
            let entry = table.models.get_mut(model).ok_or_else(|| unknown_model(model))?;
            Ok(match change(entry)? {
                Some(policy) => {
                    entry.traffic = Arc::new(policy);
                    true
                }
                None => false,
            })
        })
        .result
    }
}
