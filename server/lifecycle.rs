//! The model lifecycle, in one place for start-up, the repository API and the poll watcher alike: find a model
//! (in the repositories the `registry` knows, local or remote, or in the files a load request carries), load its
//! versions, install them in the routing table (a failed reload leaves the serving versions in place, with the
//! reason beside them), and retire the versions that left the table: they are unloading until the last request
//! holding them ends.
//!
//! Changes to one model (load, unload, a traffic policy set through admin) happen one at a time, in the order
//! they were asked for; different models load side by side.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::OwnedMutexGuard;

use crate::backend::Backend;
use crate::error::{InferError, InferResult};
use crate::model_name::ModelName;
use crate::proto::ModelConfig;
use crate::registry::{Found, Registry, Scan};
use crate::repository::{self, config, paths, LoadError, LoadFailure, ModelSource, VersionOptions};
use crate::routing::{ModelEntry, ModelState, Routes, RoutingTable};
use crate::traffic::TrafficPolicy;
use crate::version::LoadedVersion;

/// What the lifecycle is built from.
pub struct LifecycleConfig {
    /// Where the models come from: the repositories, in the order given.
    pub registry: Arc<Registry>,
    pub backends: Vec<Arc<dyn Backend>>,
    /// How every version is run.
    pub versions: VersionOptions,
}

/// Model files sent with a load request, as (`<version>/<file name>`, contents).
pub type OverrideFiles = Vec<(String, Vec<u8>)>;

/// What a load takes besides the repository: Triton's load parameters.
#[derive(Debug, Default)]
pub struct LoadRequest {
    /// A config in protobuf's JSON mapping, in place of the model's config.pbtxt.
    pub config: Option<String>,
    /// Files that stand in for the model's folder (they need `config`).
    pub files: OverrideFiles,
}

/// Why the server could not start loading its repository.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Repository(LoadError),
    #[error("--load-model names '{0}', which is not in the model repository")]
    NotInRepository(ModelName),
}

/// A model's lifecycle state, as `inferd_model_state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Loading,
    Ready,
    Failed,
    Unloading,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Unloading => "unloading",
        }
    }
}

struct Retired {
    model: String,
    version: Weak<LoadedVersion>,
}

pub struct Lifecycle {
    routes: Arc<Routes>,
    config: LifecycleConfig,
    /// Models being loaded right now.
    loading: Mutex<BTreeSet<String>>,
    /// Versions taken out of the routing table, held weakly: they are unloading until their last request ends.
    retired: Mutex<Vec<Retired>>,
    /// Failed loads per model since start (`inferd_model_load_failures_total`).
    load_failures: Mutex<BTreeMap<String, u64>>,
    /// One lock per model with a change under way or waiting (dropped when none is).
    changes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// The right to change one model, held for the whole change.
pub struct ModelChange {
    _held: OwnedMutexGuard<()>,
}

/// Marks a model as loading until dropped.
struct Loading<'a> {
    lifecycle: &'a Lifecycle,
    model: String,
}

impl Drop for Loading<'_> {
    fn drop(&mut self) {
        if let Ok(mut l) = self.lifecycle.loading.lock() {
            l.remove(&self.model);
        }
    }
}

impl Lifecycle {
    pub fn new(routes: Arc<Routes>, config: LifecycleConfig) -> Self {
        Self {
            routes,
            config,
            loading: Default::default(),
            retired: Default::default(),
            load_failures: Default::default(),
            changes: Default::default(),
        }
    }

    /// Waits until no other change to `model` is under way, and holds off the next one until the returned
    /// guard drops.
    pub async fn change(&self, model: &ModelName) -> ModelChange {
        let lock = {
            let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
            // Locks nobody holds or waits for (only this map refers to them) are done with.
            changes.retain(|_, l| Arc::strong_count(l) > 1);
            changes.entry(model.to_string()).or_default().clone()
        };
        ModelChange {
            _held: lock.lock_owned().await,
        }
    }

    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.config.registry
    }

    /// Scans the repositories, as last listed (blocking: call it off the async workers).
    pub fn scan(&self) -> Result<Scan, LoadError> {
        self.config.registry.scan()
    }

    /// At start: every model of the repositories (or only those named), loaded side by side. A model that
    /// fails is recorded with its reason and the others serve.
    pub async fn load_repository(self: &Arc<Self>, only: Option<&[ModelName]>) -> Result<(), StartError> {
        let this = self.clone();
        let scan = tokio::task::spawn_blocking(move || this.scan())
            .await
            .map_err(|e| StartError::Repository(LoadError::Aborted(e.to_string())))?
            .map_err(StartError::Repository)?;
        for skipped in &scan.passed_over {
            crate::registry::warn_passed_over(skipped);
        }
        if let Some(missing) = only.and_then(|names| names.iter().find(|n| !scan.models.contains_key(*n))) {
            return Err(StartError::NotInRepository(missing.clone()));
        }
        let loads = scan
            .models
            .into_iter()
            .filter(|(name, _)| only.is_none_or(|names| names.contains(name)))
            .map(|(name, found)| {
                let this = self.clone();
                tokio::spawn(async move {
                    // A failure is recorded on the model's entry; the server serves the others.
                    let found = match found {
                        Ok(found) => Registry::fetch(found).await,
                        Err(e) => Err(e),
                    };
                    let _ = tokio::task::spawn_blocking(move || match found {
                        Ok(src) => this.load_found(src, None),
                        Err(e) => this.install(&name, Err(e)),
                    })
                    .await;
                })
            })
            .collect::<Vec<_>>();
        for load in loads {
            let _ = load.await;
        }
        Ok(())
    }

    /// Loads (or reloads) one model, from the repository or from what a load request carries, and installs
    /// it, after any change to the model asked for before. A failed reload leaves the serving versions serving.
    pub async fn load(self: &Arc<Self>, name: &ModelName, request: LoadRequest) -> Result<(), LoadFailure> {
        self.load_with(name, request, true).await
    }

    /// Reloads a model as its repository was last listed (the poll watcher has just listed it).
    pub async fn reload_listed(self: &Arc<Self>, name: &ModelName) -> Result<(), LoadFailure> {
        self.load_with(name, LoadRequest::default(), false).await
    }

    async fn load_with(
        self: &Arc<Self>,
        name: &ModelName,
        request: LoadRequest,
        list_again: bool,
    ) -> Result<(), LoadFailure> {
        let failure = |error| LoadFailure {
            model: name.clone(),
            error,
        };
        let config = request
            .config
            .as_deref()
            .map(config::parse_json)
            .transpose()
            .map_err(|e| failure(LoadError::InvalidConfig(e)))?;
        if !request.files.is_empty() && config.is_none() {
            return Err(failure(LoadError::OverrideWithoutConfig));
        }
        let _change = self.change(name).await;
        let found = match request.files.is_empty() {
            true => Some(self.find(name, list_again).await.map_err(failure)?),
            false => None,
        };
        let (this, model) = (self.clone(), name.clone());
        // Staging and loading read and write files: off the async workers.
        tokio::task::spawn_blocking(move || match found {
            Some(src) => this.load_found(src, config),
            None => {
                // The files live in a temporary folder only while the model loads.
                let staged = stage(&model, &request.files)?;
                let src = ModelSource {
                    dir: staged.path().join(&model),
                    name: model,
                };
                this.load_found(src, config)
            }
        })
        .await
        .map_err(|e| failure(LoadError::Aborted(e.to_string())))?
        .map_err(failure)
    }

    /// The model's folder, as the repositories list it now (a remote model's complete copy in the cache,
    /// fetched now if the cache lacks it). A remote repository that cannot be listed answers from its last
    /// listing.
    async fn find(&self, name: &ModelName, list_again: bool) -> Result<ModelSource, LoadError> {
        let registry = self.config.registry.clone();
        if list_again {
            registry.refresh().await;
        }
        let mut scan = tokio::task::spawn_blocking(move || registry.scan())
            .await
            .map_err(|e| LoadError::Aborted(e.to_string()))??;
        let found: Found = scan.models.remove(name).unwrap_or(Err(LoadError::NotInRepository))?;
        Registry::fetch(found).await
    }

    /// Loads every version the config's policy picks from `src` and installs the outcome (blocking).
    fn load_found(&self, src: ModelSource, config: Option<ModelConfig>) -> Result<(), LoadError> {
        let _loading = self.mark_loading(&src.name);
        let loaded = repository::prepare(&src, config, &self.config.backends)
            .and_then(|prepared| repository::load_versions(&prepared, self.config.versions));
        let outcome = self.install(&src.name, loaded);
        // What loading held only for a while (files read whole, converted weights) goes back to the OS now.
        crate::memory::return_freed_memory();
        outcome
    }

    fn mark_loading(&self, model: &str) -> Loading<'_> {
        if let Ok(mut l) = self.loading.lock() {
            l.insert(model.to_string());
        }
        Loading {
            lifecycle: self,
            model: model.to_string(),
        }
    }

    /// Puts a load's outcome in the routing table: the new versions replace the old, or the model is
    /// recorded as failed (beside its serving versions, if it has any).
    fn install(
        &self,
        name: &ModelName,
        loaded: Result<BTreeMap<i64, Arc<LoadedVersion>>, LoadError>,
    ) -> Result<(), LoadError> {
        let entry = entry_from(name, loaded);
        let failure = match &entry.state {
            ModelState::Unavailable(reason) => Some(reason.clone()),
            ModelState::Ready => None,
        };
        let update = self
            .routes
            .update(|table| match (&failure, table.models.get_mut(name.as_str())) {
                (Some(reason), Some(serving)) if matches!(serving.state, ModelState::Ready) => {
                    serving.last_error = Some(reason.clone());
                }
                _ => {
                    table.models.insert(name.to_string(), entry);
                }
            });
        self.retire(&update.before, &update.after);
        match failure {
            None => Ok(()),
            Some(reason) => {
                if let Ok(mut f) = self.load_failures.lock() {
                    *f.entry(name.to_string()).or_default() += 1;
                }
                Err(reason)
            }
        }
    }

    /// Stops routing to a model, after any change to it asked for before; requests already routed to it
    /// finish first.
    pub async fn unload(&self, name: &ModelName) -> InferResult<()> {
        let _change = self.change(name).await;
        let update = self.routes.update(|table| table.models.remove(name.as_str()).is_some());
        if !update.result {
            return Err(InferError::NotFound(format!(
                "Request for unknown model: '{name}' is not loaded"
            )));
        }
        self.retire(&update.before, &update.after);
        tracing::info!(model = %name, "unloaded model '{name}'");
        Ok(())
    }

    /// Records the versions of `before` that `after`, the table that replaced it, no longer holds.
    fn retire(&self, before: &RoutingTable, after: &RoutingTable) {
        let kept = |model: &str, lv: &Arc<LoadedVersion>| {
            after
                .models
                .get(model)
                .is_some_and(|e| e.versions.values().any(|v| Arc::ptr_eq(v, lv)))
        };
        if let Ok(mut retired) = self.retired.lock() {
            for (model, entry) in &before.models {
                for lv in entry.versions.values().filter(|lv| !kept(model, lv)) {
                    retired.push(Retired {
                        model: model.clone(),
                        version: Arc::downgrade(lv),
                    });
                }
            }
        }
    }

    /// Every model's versions with their lifecycle state, each (model, version, state) once; a model-wide
    /// state (loading, or a failed load) has an empty version. Versions that left the table count as unloading
    /// while requests still hold them.
    pub fn states(&self) -> BTreeSet<(String, String, State)> {
        let mut out = BTreeSet::new();
        for (name, entry) in &self.routes.load().models {
            if matches!(entry.state, ModelState::Unavailable(_)) || entry.last_error.is_some() {
                out.insert((name.clone(), String::new(), State::Failed));
            }
            for lv in entry.versions.values() {
                out.insert((name.clone(), lv.version.to_string(), State::Ready));
            }
        }
        if let Ok(loading) = self.loading.lock() {
            out.extend(loading.iter().map(|m| (m.clone(), String::new(), State::Loading)));
        }
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|r| r.version.strong_count() > 0);
            for r in retired.iter() {
                if let Some(lv) = r.version.upgrade() {
                    out.insert((r.model.clone(), lv.version.to_string(), State::Unloading));
                }
            }
        }
        out
    }

    pub fn load_failures(&self) -> BTreeMap<String, u64> {
        self.load_failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Writes a load request's files into a fresh staging folder, `<staging>/<model>/<version>/<path>`; a path that
/// would leave it is refused before anything is written.
fn stage(name: &ModelName, files: &OverrideFiles) -> Result<tempfile::TempDir, LoadError> {
    let targets = files
        .iter()
        .map(|(rel, contents)| Ok((paths::override_file(rel)?, contents)))
        .collect::<Result<Vec<_>, LoadError>>()?;
    let staging = LoadError::io(LoadError::Staging);
    let dir = tempfile::Builder::new()
        .prefix("inferd-load-")
        .tempdir()
        .map_err(staging)?;
    for (rel, contents) in targets {
        let target = dir.path().join(name).join(rel);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&target, contents)
        };
        write().map_err(LoadError::io(LoadError::Staging))?;
    }
    Ok(dir)
}

/// The routing entry for a model that loaded (logged per version) or failed (logged with its reason).
fn entry_from(name: &ModelName, loaded: Result<BTreeMap<i64, Arc<LoadedVersion>>, LoadError>) -> ModelEntry {
    let with_traffic = loaded.and_then(|versions| {
        let config = versions.values().next().map(|v| v.config.clone()).unwrap_or_default();
        let traffic = TrafficPolicy::from_config(&config)?;
        traffic.check(|v| versions.contains_key(&v))?;
        Ok((versions, traffic))
    });
    match with_traffic {
        Ok((versions, traffic)) => {
            for v in versions.values() {
                tracing::info!(model = %name, version = v.version, "loaded model '{name}' version {} ({}, max_batch_size {})", v.version, v.config.backend, v.spec.max_batch_size);
            }
            ModelEntry::new(name, versions, ModelState::Ready, traffic)
        }
        Err(reason) => {
            tracing::error!(model = %name, "failed to load model '{name}': {reason}");
            ModelEntry::new(
                name,
                BTreeMap::new(),
                ModelState::Unavailable(reason),
                TrafficPolicy::default(),
            )
        }
    }
}
