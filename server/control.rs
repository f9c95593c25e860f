//! Model control through Triton's repository extension: the index of what the repository holds, and
//! loading or unloading a model while the server runs. A load builds the new versions in the background and
//! swaps the routing table only once they are ready; requests already routed finish on the versions they
//! hold, which are released (their queues drained) when the last of them ends.
use std::sync::Arc;

use crate::core::{entry_from, Core};
use crate::error::{InferError, InferResult};
use crate::proto::repository_index_response::ModelIndex;
use crate::proto::ModelConfig;
use crate::repository::{self, config, ModelSource};
use crate::routing::{ModelEntry, ModelState};
use crate::traffic::TrafficPolicy;

/// Model files sent with a load request, as (`<version>/<file name>`, contents).
pub type OverrideFiles = Vec<(String, Vec<u8>)>;

/// Writes override files into a fresh temporary model folder, refusing paths that would leave it.
fn stage(name: &str, files: &OverrideFiles) -> InferResult<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("inferd-load-")
        .tempdir()
        .map_err(|e| InferError::Internal(e.to_string()))?;
    for (rel, contents) in files {
        let path = std::path::Path::new(rel);
        let parts: Vec<_> = path.components().collect();
        let safe = parts.len() >= 2
            && parts.iter().all(|c| matches!(c, std::path::Component::Normal(_)))
            && rel.split('/').next().is_some_and(|v| v.parse::<u64>().is_ok());
        if !safe {
            return Err(InferError::invalid(format!(
                "file override 'file:{rel}' must be '<version>/<file name>'"
            )));
        }
        let target = dir.path().join(name).join(path);
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(target.parent().unwrap_or(dir.path()))?;
            std::fs::write(&target, contents)
        };
        write().map_err(|e| InferError::Internal(format!("cannot stage 'file:{rel}': {e}")))?;
    }
    Ok(dir)
}

impl Core {
    /// Admin requests (load, unload) need `Authorization: Bearer <token>` when `--admin-token` is set.
    pub fn authorize_admin(&self, authorization: Option<&str>) -> InferResult<()> {
        let Some(token) = &self.admin_token else { return Ok(()) };
        let presented = authorization.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        // Compare every byte, so the time taken does not tell how much of a guess was right.
        let same = presented.len() == token.len()
            && presented
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if same {
            Ok(())
        } else {
            Err(InferError::Unauthenticated(
                "this admin request needs 'Authorization: Bearer <admin token>'".into(),
            ))
        }
    }

    fn require_explicit(&self) -> InferResult<()> {
        if self.explicit_control {
            Ok(())
        } else {
            Err(InferError::invalid(
                "explicit model load / unload is not allowed unless --model-control-mode is explicit",
            ))
        }
    }

    /// Every model in the repositories, with each loaded version's state (only ready ones if `ready_only`).
    pub fn repository_index(&self, ready_only: bool) -> InferResult<Vec<ModelIndex>> {
        let found = repository::scan(self.repositories()).map_err(InferError::Internal)?;
        let table = self.table();
        let mut names: Vec<&String> = found.keys().chain(table.models.keys()).collect();
        names.sort();
        names.dedup();
        let mut index = Vec::new();
        for name in names {
            let entry = |version: String, state: &str, reason: String| ModelIndex {
                name: name.clone(),
                version,
                state: state.into(),
                reason,
            };
            match table.models.get(name) {
                Some(ModelEntry {
                    versions,
                    state: ModelState::Ready,
                    last_error,
                    ..
                }) => {
                    let reason = last_error
                        .as_ref()
                        .map(|e| format!("serving; the last load failed: {e}"))
                        .unwrap_or_default();
                    index.extend(versions.keys().map(|v| entry(v.to_string(), "READY", reason.clone())))
                }
                Some(ModelEntry {
                    state: ModelState::Unavailable(reason),
                    ..
                }) => index.push(entry(String::new(), "UNAVAILABLE", reason.clone())),
                None => index.push(entry(String::new(), "UNAVAILABLE", "unloaded".into())),
            }
        }
        if ready_only {
            index.retain(|m| m.state == "READY");
        }
        Ok(index)
    }

    /// Loads (or reloads) a model, optionally with a config given as JSON in place of its config.pbtxt. A
    /// failed load leaves a model that was serving serving as before.
    pub async fn load(
        self: &Arc<Self>,
        name: &str,
        config_json: Option<&str>,
        files: OverrideFiles,
    ) -> InferResult<()> {
        self.require_explicit()?;
        self.apply_load(name, config_json, files).await
    }

    /// Loads or reloads a model whatever the control mode (the poll watcher's way in).
    pub(crate) async fn apply_load(
        self: &Arc<Self>,
        name: &str,
        config_json: Option<&str>,
        files: OverrideFiles,
    ) -> InferResult<()> {
        let override_config: Option<ModelConfig> = config_json
            .map(|text| {
                config::parse_json(text).map_err(|e| InferError::invalid(format!("invalid config for '{name}': {e}")))
            })
            .transpose()?;
        let _serial = self.control.lock().await;
        // Files sent with the request stand in for the repository's folder (Triton's `file:` parameters); they
        // live in a temporary folder only while the model loads.
        let staged = if files.is_empty() {
            None
        } else {
            if override_config.is_none() {
                return Err(InferError::invalid(format!(
                    "failed to load '{name}': file overrides need a 'config' parameter"
                )));
            }
            Some(stage(name, &files)?)
        };
        let src = match &staged {
            Some(dir) => ModelSource {
                name: name.to_string(),
                dir: dir.path().join(name),
            },
            None => {
                let found = repository::scan(self.repositories()).map_err(InferError::Internal)?;
                match found.get(name) {
                    Some(Ok(src)) => src.clone(),
                    Some(Err(reason)) => return Err(InferError::invalid(format!("failed to load '{name}': {reason}"))),
                    None => {
                        return Err(InferError::invalid(format!(
                            "failed to load '{name}': no such model in the model repository"
                        )))
                    }
                }
            }
        };
        let _loading = self.mark_loading(name);
        let core = self.clone();
        let result = tokio::task::spawn_blocking(move || core.load_model_with(&src, override_config))
            .await
            .map_err(|e| InferError::Internal(e.to_string()))?;
        let entry = entry_from(name, result);
        let failure = match &entry.state {
            ModelState::Unavailable(reason) => Some(reason.clone()),
            ModelState::Ready => None,
        };
        let mut table = (**self.table()).clone();
        match (&failure, table.models.get_mut(name)) {
            // A failed reload leaves the serving versions in place, with the reason beside them.
            (Some(reason), Some(serving)) if matches!(serving.state, ModelState::Ready) => {
                serving.last_error = Some(reason.clone());
            }
            _ => {
                table.models.insert(name.to_string(), entry);
            }
        }
        self.swap_table(table);
        match failure {
            None => Ok(()),
            Some(reason) => {
                self.count_load_failure(name);
                Err(InferError::invalid(format!("failed to load '{name}': {reason}")))
            }
        }
    }

    /// Stops routing to a model; requests already routed to it finish first.
    pub async fn unload(&self, name: &str) -> InferResult<()> {
        self.require_explicit()?;
        self.apply_unload(name).await
    }

    pub(crate) async fn apply_unload(&self, name: &str) -> InferResult<()> {
        let _serial = self.control.lock().await;
        let mut table = (**self.table()).clone();
        if table.models.remove(name).is_none() {
            return Err(InferError::NotFound(format!(
                "Request for unknown model: '{name}' is not loaded"
            )));
        }
        self.swap_table(table);
        tracing::info!(model = %name, "unloaded model '{name}'");
        Ok(())
    }

    /// The traffic policy a model serves under.
    pub fn traffic(&self, name: &str) -> InferResult<TrafficPolicy> {
        Ok((*self.table().entry(name)?.traffic).clone())
    }

    /// Replaces a model's labels and weighted split at run time; takes effect for the next request.
    pub async fn set_traffic(&self, name: &str, policy: TrafficPolicy) -> InferResult<()> {
        let _serial = self.control.lock().await;
        let mut table = (**self.table()).clone();
        let entry = table
            .models
            .get_mut(name)
            .ok_or_else(|| InferError::NotFound(format!("Request for unknown model: '{name}' is not found")))?;
        policy
            .check(|v| entry.versions.contains_key(&v))
            .map_err(InferError::InvalidArgument)?;
        tracing::info!(model = %name, labels = ?policy.labels, weights = ?policy.weights, "traffic policy changed");
        entry.traffic = Arc::new(policy);
        self.swap_table(table);
        Ok(())
    }
}
