//! The routing table: which loaded version serves a request. It is swapped whole (arc-swap), so a request
//! reads one consistent snapshot without locks while models load and unload.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::error::{InferError, InferResult};
use crate::model::LoadedVersion;

#[derive(Clone)]
pub enum ModelState {
    Ready,
    /// The model is known but cannot serve: it failed to load (with the reason).
    Unavailable(String),
}

#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    pub versions: BTreeMap<i64, Arc<LoadedVersion>>,
    pub state: ModelState,
}

#[derive(Clone, Default)]
pub struct RoutingTable {
    pub models: HashMap<String, ModelEntry>,
}

impl RoutingTable {
    pub fn entry(&self, model: &str) -> InferResult<&ModelEntry> {
        self.models
            .get(model)
            .ok_or_else(|| InferError::NotFound(format!("Request for unknown model: '{model}' is not found")))
    }

    /// The version a request names, or the newest loaded one.
    pub fn resolve(&self, model: &str, version: Option<&str>) -> InferResult<&Arc<LoadedVersion>> {
        let entry = self.entry(model)?;
        let unknown_version =
            |v: &str| InferError::NotFound(format!("Request for unknown model: '{model}' version {v} is not found"));
        match version.filter(|v| !v.is_empty()) {
            Some(v) => {
                let n: i64 = v.parse().map_err(|_| unknown_version(v))?;
                match entry.versions.get(&n) {
                    Some(lv) => Ok(lv),
                    None if matches!(entry.state, ModelState::Unavailable(_)) => Err(unavailable(entry)),
                    None => Err(unknown_version(v)),
                }
            }
            None => entry.versions.values().next_back().ok_or_else(|| unavailable(entry)),
        }
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
