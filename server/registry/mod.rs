//! Where models come from: the repositories `--model-repository` names, local folders and remote ones (object
//! storage, an MLflow Model Registry) side by side. A remote model is served from its complete copy in the local
//! cache (`cache`), made when the model loads; listing a remote repository (`refresh`) is cheap and fetches no
//! model file. The lifecycle asks the registry what there is (`scan`) and for a model's folder (`fetch`); the
//! poll watcher asks it to list the remote repositories again.
pub mod cache;
mod error;
pub mod location;
mod mlflow;
mod objects;
pub mod remote;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::sync::Semaphore;

pub use self::error::SyncError;
pub use self::location::Location;
use self::remote::RemoteRepository;
pub use self::remote::SyncStatus;
use crate::model_name::ModelName;
use crate::repository::{self, LoadError, ModelSource};

/// What the registry is built from.
pub struct RegistryConfig {
    /// The repositories, in the order given.
    pub locations: Vec<Location>,
    /// Where remote repositories' models are cached.
    pub cache_dir: PathBuf,
    /// Most files downloaded at once, over every remote repository.
    pub download_concurrency: usize,
}

enum Repository {
    Local(PathBuf),
    Remote(Arc<RemoteRepository>),
}

pub struct Registry {
    repositories: Vec<Repository>,
}

/// Where a model was found.
#[derive(Clone)]
enum Place {
    Folder(PathBuf),
    Remote {
        repository: Arc<RemoteRepository>,
        digest: String,
    },
}

/// A model found in one of the repositories.
#[derive(Clone)]
pub struct Found {
    name: ModelName,
    place: Place,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {}", self.name, self.origin())
    }
}

impl Found {
    /// The folder, or the remote repository, that holds the model.
    pub fn origin(&self) -> String {
        match &self.place {
            Place::Folder(dir) => dir.display().to_string(),
            Place::Remote { repository, .. } => format!("{}/{}", repository.name(), self.name),
        }
    }

    /// Changes whenever the model's files do: for a folder, every file's path, size and modification time; for
    /// a remote model, its listing's digest (paths, ETags, sizes).
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        match &self.place {
            Place::Folder(dir) => folder_fingerprint(dir).hash(&mut h),
            Place::Remote { digest, .. } => digest.hash(&mut h),
        }
        h.finish()
    }
}

/// Every file under a model's folder (names, sizes, modification times).
fn folder_fingerprint(dir: &Path) -> Vec<(PathBuf, u64, u128)> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<(PathBuf, u64, u128)>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() && depth < 4 {
                walk(&path, depth + 1, out);
            } else if meta.is_file() {
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                out.push((path, meta.len(), mtime));
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, 0, &mut files);
    files.sort();
    files
}

/// What a scan found: each model by name (a name found in two repositories is an error for that name, as in
/// Triton), and what was passed over because no request could name it.
#[derive(Debug, Default)]
pub struct Scan {
    pub models: BTreeMap<ModelName, Result<Found, LoadError>>,
    pub passed_over: Vec<String>,
}

impl Scan {
    fn add(&mut self, found: Found) {
        let name = found.name.clone();
        match self.models.get(&name) {
            Some(Ok(first)) => {
                let duplicate = LoadError::Duplicate {
                    name: name.clone(),
                    first: first.origin(),
                    second: found.origin(),
                };
                self.models.insert(name, Err(duplicate));
            }
            Some(Err(_)) => {}
            None => {
                self.models.insert(name, Ok(found));
            }
        }
    }
}

/// Says that a scan passed over something no request could name (a folder, a key, a registered model).
pub fn warn_passed_over(item: &str) {
    tracing::warn!("model repository: passing over what no request could name: {item}");
}

/// The cache folder when `--model-cache-dir` is not given: the user's cache folder, as XDG places it.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("inferd").join("models")
}

impl Registry {
    /// Opens every repository (a remote one's cache folder and client; nothing is listed yet).
    pub fn new(config: RegistryConfig) -> Result<Self, SyncError> {
        let downloads = Arc::new(Semaphore::new(config.download_concurrency.max(1)));
        let repositories = config
            .locations
            .iter()
            .map(|location| match location {
                Location::Local(dir) => Ok(Repository::Local(dir.clone())),
                remote => {
                    let name = remote.to_string();
                    let mirror = cache::Mirror::open(&config.cache_dir, &name, downloads.clone())?;
                    Ok(Repository::Remote(Arc::new(RemoteRepository::new(remote, mirror)?)))
                }
            })
            .collect::<Result<Vec<_>, SyncError>>()?;
        Ok(Self { repositories })
    }

    /// Local folders only (a test or a tool that has nothing remote).
    pub fn local(folders: Vec<PathBuf>) -> Self {
        Self {
            repositories: folders.into_iter().map(Repository::Local).collect(),
        }
    }

    fn remotes(&self) -> impl Iterator<Item = &Arc<RemoteRepository>> {
        self.repositories.iter().filter_map(|r| match r {
            Repository::Remote(r) => Some(r),
            Repository::Local(_) => None,
        })
    }

    pub fn local_folders(&self) -> Vec<PathBuf> {
        self.repositories
            .iter()
            .filter_map(|r| match r {
                Repository::Local(dir) => Some(dir.clone()),
                Repository::Remote(_) => None,
            })
            .collect()
    }

    pub fn has_remote(&self) -> bool {
        self.remotes().next().is_some()
    }

    /// At start: lists every remote repository (serving from the cache one that cannot be listed, where the
    /// cache holds its models). Returns each repository that could be used neither way, with why.
    pub async fn start(&self) -> Vec<SyncError> {
        let mut failed = Vec::new();
        for remote in self.remotes() {
            if let Err(e) = remote.start().await {
                failed.push(e);
            }
        }
        failed
    }

    /// Lists every remote repository again (a failure keeps its last listing; see `RemoteRepository`).
    pub async fn refresh(&self) {
        for remote in self.remotes() {
            let _ = remote.refresh().await;
        }
    }

    /// Every model of every repository, as last listed (blocking: reads the local folders).
    pub fn scan(&self) -> Result<Scan, LoadError> {
        let mut scan = Scan::default();
        for repository in &self.repositories {
            match repository {
                Repository::Local(dir) => {
                    for found in repository::scan_folder(dir)? {
                        match found {
                            Ok(src) => scan.add(Found {
                                name: src.name,
                                place: Place::Folder(src.dir),
                            }),
                            Err(e) => scan.passed_over.push(e.to_string()),
                        }
                    }
                }
                Repository::Remote(remote) => {
                    let listed = remote.listed();
                    scan.passed_over
                        .extend(listed.passed_over.iter().map(|p| format!("{}: {p}", remote.name())));
                    for (name, model) in &listed.models {
                        scan.add(Found {
                            name: name.clone(),
                            place: Place::Remote {
                                repository: remote.clone(),
                                digest: model.digest(),
                            },
                        });
                    }
                }
            }
        }
        Ok(scan)
    }

    /// The folder to load `found` from: a local model's own, or a remote model's complete copy in the cache
    /// (downloaded now if the cache lacks it).
    pub async fn fetch(found: Found) -> Result<ModelSource, LoadError> {
        match found.place {
            Place::Folder(dir) => Ok(ModelSource { name: found.name, dir }),
            Place::Remote { repository, .. } => {
                // In a task of its own, so a caller that goes away (a load request's client disconnecting)
                // does not leave a copy half-built.
                let name = found.name.clone();
                let built = tokio::spawn(async move { repository.materialize(&name).await })
                    .await
                    .map_err(|e| LoadError::Aborted(e.to_string()))?;
                match built {
                    Ok(Some(dir)) => Ok(ModelSource { name: found.name, dir }),
                    Ok(None) => Err(LoadError::NotInRepository),
                    Err(e) => Err(LoadError::Sync(e)),
                }
            }
        }
    }

    /// The remote repositories' sync counts.
    pub fn sync_status(&self) -> Vec<SyncStatus> {
        self.remotes().map(|r| r.status()).collect()
    }
}
