//! A remote repository (object storage or an MLflow registry) as the server follows it: its last good listing,
//! whether the store is reachable, and the counts the metrics report. A listing that fails is not a change:
//! the last good one stays (every model keeps serving), the failure is counted, and it is logged once per
//! outage. A model's files come from the listing into the cache (`cache::Mirror`) when the model loads.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use sha2::{Digest, Sha256};

use super::cache::Mirror;
use super::error::SyncError;
use super::mlflow::MlflowSource;
use super::objects::ObjectSource;
use super::Location;
use crate::model_name::ModelName;

/// How to fetch one file of a remote model.
#[derive(Clone)]
pub enum Fetch {
    Object {
        store: Arc<dyn ObjectStore>,
        path: ObjectPath,
    },
    Http {
        client: reqwest::Client,
        url: String,
    },
    /// Made by the server (the config it writes for an MLflow model).
    Inline(Arc<[u8]>),
    /// Known only from the cache's index, while the store cannot be listed: in the cache or nowhere.
    Cached,
}

impl std::fmt::Debug for Fetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fetch::Object { path, .. } => write!(f, "object {path}"),
            Fetch::Http { url, .. } => write!(f, "GET {url}"),
            Fetch::Inline(b) => write!(f, "{} bytes made here", b.len()),
            Fetch::Cached => write!(f, "cached"),
        }
    }
}

/// One file of a remote model: what identifies its contents in the store, and how to fetch it.
#[derive(Clone, Debug)]
pub struct RemoteFile {
    /// The store's ETag (or another tag that changes with the contents).
    pub etag: String,
    pub size: u64,
    pub fetch: Fetch,
}

/// A model's files, by their path inside the model's folder (`config.pbtxt`, `1/model.onnx`).
#[derive(Clone, Debug, Default)]
pub struct RemoteModel {
    pub files: BTreeMap<String, RemoteFile>,
}

impl RemoteModel {
    /// Names the model's contents: the same listing (paths, ETags, sizes) gives the same digest, any change
    /// another. Its cached copy lives in a folder of this name.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, f) in &self.files {
            for part in [path.as_bytes(), f.etag.as_bytes(), &f.size.to_le_bytes()] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        hex::encode(&h.finalize()[..12])
    }
}

/// Every model a remote repository lists.
pub type Listing = BTreeMap<ModelName, RemoteModel>;

/// What a store's listing gives: its models, and what was passed over (keys no request could name).
#[derive(Default)]
pub struct Listed {
    pub models: Listing,
    pub passed_over: Vec<String>,
}

enum Source {
    Objects(ObjectSource),
    Mlflow(Box<MlflowSource>),
}

struct State {
    /// The last good listing (or, after a start with the store unreachable, what the cache holds).
    listed: Arc<Listed>,
    /// When the last listing started, and how it ended (an error: the store is down, and that was logged).
    last_try: Option<(Instant, Result<(), SyncError>)>,
}

impl State {
    fn down(&self) -> bool {
        matches!(self.last_try, Some((_, Err(_))))
    }
}

pub struct RemoteRepository {
    name: String,
    source: Source,
    mirror: Mirror,
    state: Mutex<State>,
    /// One listing at a time; a caller that queued behind one takes its result.
    listing_lock: tokio::sync::Mutex<()>,
    failures: AtomicU64,
    /// When the repository was last listed, in milliseconds since the epoch (0: never).
    last_sync_ms: AtomicU64,
}

/// The counts the metrics report for one remote repository.
pub struct SyncStatus {
    pub repository: String,
    pub failures: u64,
    /// Seconds since the epoch of the last good listing; None before the first.
    pub last_sync: Option<f64>,
}

impl RemoteRepository {
    pub fn new(location: &Location, mirror: Mirror) -> Result<Self, SyncError> {
        let name = location.to_string();
        let source = match location {
            Location::Mlflow(url) => Source::Mlflow(Box::new(MlflowSource::new(&name, url)?)),
            _ => Source::Objects(ObjectSource::new(location)?),
        };
        Ok(Self {
            name,
            source,
            mirror,
            state: Mutex::new(State {
                listed: Arc::default(),
                last_try: None,
            }),
            listing_lock: Default::default(),
            failures: AtomicU64::new(0),
            last_sync_ms: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    async fn list(&self) -> Result<Listed, SyncError> {
        match &self.source {
            Source::Objects(s) => s.list().await,
            Source::Mlflow(s) => s.list().await,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last good listing: the models, and what was passed over.
    pub fn listed(&self) -> Arc<Listed> {
        self.state().listed.clone()
    }

    /// Lists the repository again. A failure keeps the last good listing; it is counted, logged once per
    /// outage, and returned.
    pub async fn refresh(&self) -> Result<(), SyncError> {
        let asked = Instant::now();
        let _one = self.listing_lock.lock().await;
        // A listing that started after this caller asked is as fresh as the one it would make; its outcome
        // answers this caller too (so callers queued behind a store that times out wait for one try, not one
        // each).
        if let Some((started, outcome)) = &self.state().last_try {
            if *started >= asked {
                return outcome.clone();
            }
        }
        let started = Instant::now();
        let outcome = match self.list().await {
            Ok(listed) => {
                tracing::debug!(
                    repository = %self.name,
                    "listed {}: {} model(s), {} file(s) in {:.1} ms",
                    self.name,
                    listed.models.len(),
                    listed.models.values().map(|m| m.files.len()).sum::<usize>(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                self.mirror.prune(&listed.models).await;
                self.succeeded(listed);
                Ok(())
            }
            Err(e) => {
                self.failed(&e);
                Err(e)
            }
        };
        self.state().last_try = Some((started, outcome.clone()));
        outcome
    }

    /// Takes a good listing (before `last_try` records it).
    fn succeeded(&self, listed: Listed) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_sync_ms.store(now.as_millis() as u64, Relaxed);
        let mut state = self.state();
        if state.down() {
            tracing::info!(repository = %self.name, "model repository {} is reachable again: resyncing", self.name);
        }
        state.listed = Arc::new(listed);
    }

    /// Counts a failed listing, logging the first of an outage (before `last_try` records it).
    fn failed(&self, e: &SyncError) {
        self.failures.fetch_add(1, Relaxed);
        if !self.state().down() {
            tracing::error!(
                repository = %self.name,
                "{e}; its models keep serving, and it is listed again at the next poll, load or index request"
            );
        }
    }

    /// The first listing, at start. When the store cannot be listed, the models whose complete copies the
    /// cache holds are served from there (and the store is listed again later); without any, the error.
    pub async fn start(&self) -> Result<(), SyncError> {
        let e = match self.refresh().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let cached = self.mirror.cached_listing().await;
        if cached.is_empty() {
            return Err(e);
        }
        tracing::warn!(
            repository = %self.name,
            "serving {} model(s) of {} from the cache at {} until the store can be listed again",
            cached.len(),
            self.name,
            self.mirror.root().display()
        );
        self.state().listed = Arc::new(Listed {
            models: cached,
            passed_over: Vec::new(),
        });
        Ok(())
    }

    /// The folder holding a complete copy of `model` as last listed, downloading what the cache lacks.
    pub async fn materialize(&self, model: &ModelName) -> Result<Option<PathBuf>, SyncError> {
        let listed = self.listed();
        let Some(files) = listed.models.get(model) else {
            return Ok(None);
        };
        self.mirror.materialize(&self.name, model, files).await.map(Some)
    }

    pub fn status(&self) -> SyncStatus {
        let ms = self.last_sync_ms.load(Relaxed);
        SyncStatus {
            repository: self.name.clone(),
            failures: self.failures.load(Relaxed),
            last_sync: (ms > 0).then(|| ms as f64 / 1000.0),
        }
    }
}
