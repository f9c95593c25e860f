//! The local cache of a remote repository (`--model-cache-dir`): each model's files as last listed, in a folder
//! named by the listing's digest, `<cache>/<repository>/models/<model>/<digest>/`, laid out as on disk in a Triton
//! repository. One server process uses a repository's cache folder at a time (a lock file says so). A folder is built under a temporary name (each file downloaded to a temporary name, its size
//! checked, then renamed) and renamed into place only when every file is complete, so a crash or a cut
//! connection never leaves a half model that loads. A file whose ETag and size are unchanged since the model's
//! previous copy is linked from there, not downloaded again; downloads run in parallel up to a bound shared by
//! every repository. `index.json` records each model's complete copy, so a server that starts while the store
//! is unreachable serves from here.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

use super::error::{chain, SyncError};
use super::remote::{Fetch, Listing, RemoteFile, RemoteModel};
use crate::model_name::ModelName;

const INDEX: &str = "index.json";
const LOCK: &str = ".lock";
/// Model copies live here, apart from the index and the lock, so no model name can collide with them.
const MODELS: &str = "models";
/// Copies and downloads in progress: `<model>/.partial-<digest>-<n>` (a copy) and `<model>/.partial-<digest>-<n>.d/`
/// (its files downloading), beside the complete copies, so no path a listing names can collide with them.
const PARTIAL: &str = ".partial-";

/// A model's complete copy, as the index records it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct CachedModel {
    digest: String,
    /// Path in the model's folder -> (ETag, size).
    files: BTreeMap<String, (String, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    repository: String,
    models: BTreeMap<String, CachedModel>,
}

/// How a file came into a copy.
enum Placed {
    /// Unchanged since the model's previous copy.
    Linked,
    /// Downloaded, this many bytes.
    Fetched(u64),
}

/// One remote repository's part of the cache.
pub struct Mirror {
    root: PathBuf,
    downloads: Arc<Semaphore>,
    /// The index as on disk; written whole (to a temporary name, then renamed) after each change.
    index: tokio::sync::Mutex<Index>,
    /// Held open with an exclusive lock while the server runs: another process's clean-up would remove copies
    /// this one loads from.
    _lock: std::fs::File,
}

/// A folder name for a repository's cache: readable, and unique to its location.
fn folder_for(repository: &str) -> String {
    let readable: String = repository
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let hash = hex::encode(&Sha256::digest(repository.as_bytes())[..6]);
    format!("{readable}-{hash}")
}

impl Mirror {
    /// Opens (creating) the cache folder of `repository` under `cache_dir`, clearing what an interrupted
    /// download left (blocking: call it off the async workers).
    pub fn open(cache_dir: &Path, repository: &str, downloads: Arc<Semaphore>) -> Result<Self, SyncError> {
        let root = cache_dir.join(folder_for(repository));
        let models = root.join(MODELS);
        std::fs::create_dir_all(&models).map_err(SyncError::cache(&models))?;
        let lock_path = root.join(LOCK);
        let lock = std::fs::File::create(&lock_path).map_err(SyncError::cache(&lock_path))?;
        // SAFETY: flock on a descriptor this function owns; it takes no pointers.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(SyncError::Cache {
                path: root.display().to_string(),
                source: Arc::new(std::io::Error::other(
                    "another inferd process is using this cache folder: give each its own --model-cache-dir",
                )),
            });
        }
        let index = std::fs::read(root.join(INDEX))
            .ok()
            .and_then(|b| serde_json::from_slice::<Index>(&b).ok())
            .unwrap_or_default();
        let mirror = Self {
            root,
            downloads,
            index: tokio::sync::Mutex::new(Index {
                repository: repository.to_string(),
                models: index.models,
            }),
            _lock: lock,
        };
        mirror.clear_partials();
        Ok(mirror)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn model_root(&self, name: &str) -> PathBuf {
        self.root.join(MODELS).join(name)
    }

    fn clear_partials(&self) {
        for model in std::fs::read_dir(self.root.join(MODELS))
            .into_iter()
            .flatten()
            .flatten()
        {
            for entry in std::fs::read_dir(model.path()).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                    let path = entry.path();
                    let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                }
            }
        }
    }

    /// The models whose complete copies the cache holds, as a listing that can only be served from here.
    pub async fn cached_listing(&self) -> Listing {
        let index = self.index.lock().await;
        let mut listing = Listing::new();
        for (name, cached) in &index.models {
            let Ok(name) = ModelName::parse(name) else { continue };
            let copy = self.model_root(name.as_str()).join(&cached.digest);
            if !tokio::fs::metadata(&copy).await.is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let files = cached
                .files
                .iter()
                .map(|(path, (etag, size))| {
                    let file = RemoteFile {
                        etag: etag.clone(),
                        size: *size,
                        fetch: Fetch::Cached,
                    };
                    (path.clone(), file)
                })
                .collect();
            listing.insert(name, RemoteModel { files });
        }
        listing
    }

    /// The folder holding a complete copy of `model`, built now if the cache lacks it.
    pub async fn materialize(
        &self,
        repository: &str,
        name: &ModelName,
        model: &RemoteModel,
    ) -> Result<PathBuf, SyncError> {
        let digest = model.digest();
        let model_root = self.model_root(name.as_str());
        let complete = model_root.join(&digest);
        if tokio::fs::metadata(&complete).await.is_ok_and(|m| m.is_dir()) {
            self.record(name, &digest, model).await?;
            return Ok(complete);
        }
        if model.files.values().any(|f| matches!(f.fetch, Fetch::Cached)) {
            return Err(SyncError::NotCached {
                repository: repository.to_string(),
                model: name.to_string(),
            });
        }
        let previous = self.index.lock().await.models.get(name.as_str()).cloned();
        let previous = previous.map(|p| (model_root.join(&p.digest), p));
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let staging = model_root.join(format!(
            "{PARTIAL}{digest}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Relaxed)
        ));
        let downloads = PathBuf::from(format!("{}.d", staging.display()));
        for dir in [&staging, &downloads] {
            tokio::fs::create_dir_all(dir).await.map_err(SyncError::cache(dir))?;
        }
        // The shared semaphore bounds the downloads; linking unchanged files needs no bound.
        let jobs: Vec<_> = model
            .files
            .iter()
            .map(|(path, file)| self.place(repository, (&staging, &downloads), path, file, previous.as_ref()))
            .collect();
        let placed = futures::future::try_join_all(jobs).await;
        // Downloads the first failure cut short (dropped mid-write) left their files here.
        let _ = tokio::fs::remove_dir_all(&downloads).await;
        let placed = match placed {
            Ok(placed) => placed,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&staging).await;
                return Err(e);
            }
        };
        let (fetched, bytes) = placed
            .iter()
            .filter_map(|p| match p {
                Placed::Fetched(n) => Some(*n),
                Placed::Linked => None,
            })
            .fold((0, 0), |(n, b), size| (n + 1, b + size));
        tracing::info!(
            repository,
            model = %name,
            "model '{name}' from {repository}: {fetched} file(s) fetched ({bytes} bytes), {} unchanged since the cached copy",
            placed.len() - fetched
        );
        if let Err(e) = tokio::fs::rename(&staging, &complete).await {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            // Another load built the same copy meanwhile.
            if !tokio::fs::metadata(&complete).await.is_ok_and(|m| m.is_dir()) {
                return Err(SyncError::cache(&complete)(e));
            }
        }
        self.record(name, &digest, model).await?;
        // Older copies of this model are done with: what was loaded from them is in memory (or mapped, which
        // outlives the file's name).
        if let Ok(mut entries) = tokio::fs::read_dir(&model_root).await {
            while let Ok(Some(old)) = entries.next_entry().await {
                let name = old.file_name();
                let keep = name == digest.as_str() || name.to_string_lossy().starts_with(PARTIAL);
                if !keep {
                    let _ = tokio::fs::remove_dir_all(old.path()).await;
                }
            }
        }
        Ok(complete)
    }

    /// Puts one file into a copy being built: linked from the model's previous copy when unchanged there,
    /// otherwise fetched (its size in bytes).
    async fn place(
        &self,
        repository: &str,
        (staging, downloads): (&Path, &Path),
        path: &str,
        file: &RemoteFile,
        previous: Option<&(PathBuf, CachedModel)>,
    ) -> Result<Placed, SyncError> {
        let target = staging.join(path);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(SyncError::cache(parent))?;
        }
        if let Some((dir, cached)) = previous {
            if cached.files.get(path) == Some(&(file.etag.clone(), file.size)) {
                let old = dir.join(path);
                if tokio::fs::metadata(&old).await.is_ok_and(|m| m.len() == file.size)
                    && (tokio::fs::hard_link(&old, &target).await.is_ok()
                        || tokio::fs::copy(&old, &target).await.is_ok())
                {
                    return Ok(Placed::Linked);
                }
            }
        }
        let _permit = self.downloads.acquire().await.map_err(|e| SyncError::Fetch {
            repository: repository.to_string(),
            file: path.to_string(),
            cause: e.to_string(),
        })?;
        static NEXT_FILE: AtomicU64 = AtomicU64::new(0);
        // Beside the copy, not in it: no path a listing names can be this one.
        let partial = downloads.join(NEXT_FILE.fetch_add(1, Relaxed).to_string());
        let got = self.fetch(repository, path, file, &partial).await;
        let got = match got {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
        };
        if got != file.size {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(SyncError::Size {
                repository: repository.to_string(),
                file: path.to_string(),
                got,
                want: file.size,
            });
        }
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(SyncError::cache(&target))?;
        Ok(Placed::Fetched(got))
    }

    /// Writes one file's contents to `to`; returns how many bytes came.
    async fn fetch(&self, repository: &str, path: &str, file: &RemoteFile, to: &Path) -> Result<u64, SyncError> {
        let failed = |cause: String| SyncError::Fetch {
            repository: repository.to_string(),
            file: path.to_string(),
            cause,
        };
        let mut out = tokio::fs::File::create(to).await.map_err(SyncError::cache(to))?;
        let mut written = 0u64;
        match &file.fetch {
            Fetch::Object { store, path } => {
                let got = store.get(path).await.map_err(|e| failed(chain(&e)))?;
                let mut stream = got.into_stream();
                while let Some(chunk) = stream.next().await {
                    let chunk = chunk.map_err(|e| failed(chain(&e)))?;
                    out.write_all(&chunk).await.map_err(SyncError::cache(to))?;
                    written += chunk.len() as u64;
                }
            }
            Fetch::Http { client, url } => {
                let mut response = client
                    .get(url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| failed(chain(&e.without_url())))?;
                while let Some(chunk) = response.chunk().await.map_err(|e| failed(chain(&e.without_url())))? {
                    out.write_all(&chunk).await.map_err(SyncError::cache(to))?;
                    written += chunk.len() as u64;
                }
            }
            Fetch::Inline(bytes) => {
                out.write_all(bytes).await.map_err(SyncError::cache(to))?;
                written = bytes.len() as u64;
            }
            Fetch::Cached => return Err(failed("known only from the cache".into())),
        }
        out.sync_all().await.map_err(SyncError::cache(to))?;
        Ok(written)
    }

    /// Forgets the models a good listing no longer has (their copies too): a model removed from the store is
    /// not served from the cache on a later start.
    pub async fn prune(&self, listing: &Listing) {
        let mut index = self.index.lock().await;
        let gone: Vec<String> = index
            .models
            .keys()
            .filter(|name| ModelName::parse(name).map_or(true, |n| !listing.contains_key(&n)))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for name in &gone {
            index.models.remove(name);
            if ModelName::parse(name).is_ok() {
                let _ = tokio::fs::remove_dir_all(self.model_root(name)).await;
            }
        }
        if let Err(e) = self.write_index(&index).await {
            tracing::warn!("{e}");
        }
    }

    async fn write_index(&self, index: &Index) -> Result<(), SyncError> {
        let path = self.root.join(INDEX);
        let tmp = self.root.join(format!("{INDEX}.{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec_pretty(index).unwrap_or_default();
        let mut file = tokio::fs::File::create(&tmp).await.map_err(SyncError::cache(&tmp))?;
        file.write_all(&bytes).await.map_err(SyncError::cache(&tmp))?;
        file.sync_all().await.map_err(SyncError::cache(&tmp))?;
        tokio::fs::rename(&tmp, &path).await.map_err(SyncError::cache(&path))
    }

    /// Records `model`'s complete copy in the index (on disk before this returns).
    async fn record(&self, name: &ModelName, digest: &str, model: &RemoteModel) -> Result<(), SyncError> {
        let mut index = self.index.lock().await;
        let cached = CachedModel {
            digest: digest.to_string(),
            files: model
                .files
                .iter()
                .map(|(p, f)| (p.clone(), (f.etag.clone(), f.size)))
                .collect(),
        };
        if index.models.get(name.as_str()).is_some_and(|c| c.digest == digest) {
            return Ok(());
        }
        index.models.insert(name.to_string(), cached);
        self.write_index(&index).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(files: &[(&str, &str)]) -> RemoteModel {
        RemoteModel {
            files: files
                .iter()
                .map(|(path, contents)| {
                    let file = RemoteFile {
                        etag: format!("etag-of-{contents}"),
                        size: contents.len() as u64,
                        fetch: Fetch::Inline(contents.as_bytes().into()),
                    };
                    (path.to_string(), file)
                })
                .collect(),
        }
    }

    fn mirror(dir: &Path) -> Mirror {
        Mirror::open(dir, "s3://bucket/prefix", Arc::new(Semaphore::new(2))).unwrap()
    }

    #[tokio::test]
    async fn a_copy_is_complete_unchanged_files_are_linked_and_older_copies_go() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(dir.path());
        let name = ModelName::parse("mlp").unwrap();
        let v1 = model(&[("config.pbtxt", "cfg"), ("1/model.onnx", "weights-1")]);
        let first = m.materialize("repo", &name, &v1).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(first.join("1/model.onnx")).unwrap(),
            "weights-1"
        );

        use std::os::unix::fs::MetadataExt;
        let inode = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
        let unchanged = inode(first.join("config.pbtxt"));

        let v2 = model(&[
            ("config.pbtxt", "cfg"),
            ("1/model.onnx", "weights-1"),
            ("2/model.onnx", "weights-2"),
        ]);
        let second = m.materialize("repo", &name, &v2).await.unwrap();
        assert_ne!(first, second);
        assert!(!first.exists(), "the older copy is removed");
        // Linked from the first copy, not fetched again: the same file on disk.
        assert_eq!(inode(second.join("config.pbtxt")), unchanged);
        assert_eq!(
            std::fs::read_to_string(second.join("2/model.onnx")).unwrap(),
            "weights-2"
        );
        // The same listing again is the same copy.
        assert_eq!(m.materialize("repo", &name, &v2).await.unwrap(), second);
    }

    #[tokio::test]
    async fn the_index_serves_complete_copies_when_the_store_cannot_be_listed() {
        let dir = tempfile::tempdir().unwrap();
        let name = ModelName::parse("mlp").unwrap();
        let v1 = model(&[("config.pbtxt", "cfg"), ("1/model.onnx", "weights-1")]);
        let copy = mirror(dir.path()).materialize("repo", &name, &v1).await.unwrap();

        // A later start: the index lists the model, and its copy is served as it is.
        let again = mirror(dir.path());
        let cached = again.cached_listing().await;
        assert_eq!(cached.keys().collect::<Vec<_>>(), [&name]);
        assert_eq!(cached[&name].digest(), v1.digest());
        assert_eq!(again.materialize("repo", &name, &cached[&name]).await.unwrap(), copy);

        // Without the copy, nothing is served, and nothing is fetched from nowhere.
        std::fs::remove_dir_all(&copy).unwrap();
        let e = again.materialize("repo", &name, &cached[&name]).await.unwrap_err();
        assert!(matches!(e, SyncError::NotCached { .. }), "{e}");
        drop(again);
        assert!(mirror(dir.path()).cached_listing().await.is_empty());
    }

    #[tokio::test]
    async fn a_download_of_another_size_than_listed_leaves_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(dir.path());
        let name = ModelName::parse("mlp").unwrap();
        let mut cut = model(&[("config.pbtxt", "cfg"), ("1/model.onnx", "weights-1")]);
        cut.files.get_mut("1/model.onnx").unwrap().size = 1000;
        let e = m.materialize("repo", &name, &cut).await.unwrap_err();
        assert!(matches!(e, SyncError::Size { got: 9, want: 1000, .. }), "{e}");
        let left: Vec<_> = std::fs::read_dir(m.root().join("models/mlp")).unwrap().collect();
        assert!(left.is_empty(), "no copy, complete or partial: {left:?}");
        assert!(m.cached_listing().await.is_empty());
    }

    #[tokio::test]
    async fn a_model_gone_from_the_listing_is_forgotten_with_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let m = mirror(dir.path());
        let name = ModelName::parse("mlp").unwrap();
        let copy = m
            .materialize("repo", &name, &model(&[("1/model.onnx", "w")]))
            .await
            .unwrap();
        m.prune(&Listing::new()).await;
        assert!(!copy.exists());
        drop(m);
        assert!(mirror(dir.path()).cached_listing().await.is_empty());
    }

    #[test]
    fn one_process_at_a_time_uses_a_cache_folder() {
        let dir = tempfile::tempdir().unwrap();
        let first = mirror(dir.path());
        let e = Mirror::open(dir.path(), "s3://bucket/prefix", Arc::new(Semaphore::new(1)))
            .err()
            .expect("refused while the first is open");
        assert!(e.to_string().contains("another inferd process"), "{e}");
        drop(first);
        mirror(dir.path());
    }
}
