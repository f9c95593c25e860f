//! Admin: changing what the server serves. Triton's repository extension (the index of what the repositories
//! hold; loading, reloading and unloading a model) and traffic policies (labels, weighted splits, shadows and
//! rollback guards) changed at run time. Every change is authorized first (`access`) and logged with the client
//! it came from.
pub mod access;

use std::sync::Arc;

pub use self::access::{AdminAccess, Caller};
use crate::error::{InferError, InferResult};
use crate::lifecycle::{Lifecycle, LoadRequest};
use crate::model_name::{shown, ModelName};
use crate::proto::repository_index_response::ModelIndex;
use crate::routing::{ModelEntry, ModelState};
use crate::traffic::TrafficPolicy;

/// What admin is built from.
#[derive(Clone, Debug)]
pub struct AdminConfig {
    pub access: AdminAccess,
    /// Whether the repository API may load and unload models (`--model-control-mode explicit`).
    pub explicit_control: bool,
}

pub struct Admin {
    config: AdminConfig,
    lifecycle: Arc<Lifecycle>,
}

/// A caller allowed to make an admin change: what every change takes, so none can be made unchecked. Names
/// the client for the log.
pub struct Authorized {
    client: String,
}

impl Admin {
    pub fn new(lifecycle: Arc<Lifecycle>, config: AdminConfig) -> Self {
        Self { config, lifecycle }
    }

    pub fn access(&self) -> &AdminAccess {
        &self.config.access
    }

    /// Lets `caller` go on with an admin request (`what` it asks, for the log), or refuses it and logs the
    /// refusal. The front-ends ask before they read anything else of the request.
    pub fn authorize(&self, caller: &Caller<'_>, what: &str) -> InferResult<Authorized> {
        match self.config.access.check(caller) {
            Ok(()) => Ok(Authorized {
                client: caller.to_string(),
            }),
            Err(e) => {
                tracing::warn!(client = %caller, request = %shown(what, 256), "admin request refused: {e}");
                Err(e)
            }
        }
    }

    /// A change of run-time settings (Triton's trace and log settings). Triton takes them from anyone; here they
    /// are admin requests like any other (token, else loopback or `--allow-remote-admin`), since a remote
    /// client could otherwise flood the log or the trace collector. Reading them is open.
    pub fn authorize_settings(&self, caller: &Caller<'_>, what: &str) -> InferResult<()> {
        self.authorize(caller, what).map(drop)
    }

    fn require_explicit(&self) -> InferResult<()> {
        if self.config.explicit_control {
            Ok(())
        } else {
            Err(InferError::invalid(
                "explicit model load / unload is not allowed unless --model-control-mode is explicit",
            ))
        }
    }

    /// Every model in the repositories, with each loaded version's state (only ready ones if `ready_only`).
    pub async fn repository_index(&self, ready_only: bool) -> InferResult<Vec<ModelIndex>> {
        // As Triton rescans its repository for the index: remote repositories are listed again (one that
        // cannot be answers from its last listing).
        self.lifecycle.registry().refresh().await;
        let lifecycle = self.lifecycle.clone();
        let scan = tokio::task::spawn_blocking(move || lifecycle.scan())
            .await
            .map_err(|e| InferError::Internal(e.to_string()))?
            .map_err(|e| InferError::Internal(e.to_string()))?;
        let table = self.lifecycle.routes().load();
        let mut names: Vec<&str> = scan
            .models
            .keys()
            .map(ModelName::as_str)
            .chain(table.models.keys().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        let mut index = Vec::new();
        for name in names {
            let entry = |version: String, state: &str, reason: String| ModelIndex {
                name: name.to_string(),
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
                }) => index.push(entry(String::new(), "UNAVAILABLE", reason.to_string())),
                None => index.push(entry(String::new(), "UNAVAILABLE", "unloaded".into())),
            }
        }
        if ready_only {
            index.retain(|m| m.state == "READY");
        }
        Ok(index)
    }

    /// Loads (or reloads) a model, optionally with a config (and files) in place of the repository's. A
    /// failed load leaves a model that was serving serving as before.
    pub async fn load(&self, by: Authorized, name: &ModelName, request: LoadRequest) -> InferResult<()> {
        self.require_explicit()?;
        tracing::info!(model = %name, client = %by.client, overrides = request.files.len(), with_config = request.config.is_some(), "admin: loading model '{name}'");
        Ok(self.lifecycle.load(name, request).await?)
    }

    /// Stops routing to a model; requests already routed to it finish first.
    pub async fn unload(&self, by: Authorized, name: &ModelName) -> InferResult<()> {
        self.require_explicit()?;
        tracing::info!(model = %name, client = %by.client, "admin: unloading model '{name}'");
        self.lifecycle.unload(name).await
    }

    /// The traffic policy a model serves under.
    pub fn traffic(&self, name: &ModelName) -> InferResult<TrafficPolicy> {
        Ok((*self.lifecycle.routes().load().entry(name)?.traffic).clone())
    }

    /// Replaces a model's labels, weighted split, shadow and guard at run time, after any load or unload of
    /// the model asked for before; takes effect for the next request.
    pub async fn set_traffic(&self, by: Authorized, name: &ModelName, policy: TrafficPolicy) -> InferResult<()> {
        let log = format!("{policy:?}");
        let _change = self.lifecycle.change(name).await;
        self.lifecycle.routes().update_traffic(name, |entry| {
            policy
                .check(|v| entry.versions.contains_key(&v))
                .map_err(|e| InferError::invalid(e.to_string()))?;
            Ok(Some(policy))
        })?;
        tracing::info!(model = %name, client = %by.client, policy = %log, "traffic policy changed");
        Ok(())
    }
}
