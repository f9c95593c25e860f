//! `--model-control-mode poll`: watch the repositories and apply what changed. A filesystem watcher (notify)
//! triggers a rescan soon after a change, debounced so a copy in progress settles first; a periodic rescan
//! (`--repository-poll-secs`) catches what the watcher misses (network filesystems, lost events). A model
//! whose files changed is reloaded (the old versions serve until the new ones are ready; a failed reload
//! leaves them serving), a new model is loaded, and a removed one is unloaded.
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::lifecycle::{Lifecycle, LoadRequest};
use crate::model_name::ModelName;
use crate::repository::{self, Scan};

/// How long the repository must stay quiet after a change before it is rescanned.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// A fingerprint of every file under a model's folder (names, sizes, modification times).
fn fingerprint(dir: &Path) -> u64 {
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
    let mut h = DefaultHasher::new();
    files.hash(&mut h);
    h.finish()
}

/// Every model's fingerprint now. Taken before the first load, so a change made while the server starts is
/// applied rather than mistaken for the starting state.
pub fn snapshot(repositories: &[PathBuf]) -> HashMap<ModelName, u64> {
    fingerprints(repository::scan(repositories).unwrap_or_default())
}

fn fingerprints(scan: Scan) -> HashMap<ModelName, u64> {
    scan.models
        .into_iter()
        .map(|(name, src)| {
            // A name found twice has no single folder; fingerprint the conflict itself.
            let fp = match &src {
                Ok(s) => fingerprint(&s.dir),
                Err(reason) => {
                    let mut h = DefaultHasher::new();
                    reason.to_string().hash(&mut h);
                    h.finish()
                }
            };
            (name, fp)
        })
        .collect()
}

/// Runs until `stop` resolves; `known` is the snapshot the loaded models came from.
pub async fn watch(
    lifecycle: Arc<Lifecycle>,
    interval: Duration,
    mut known: HashMap<ModelName, u64>,
    stop: impl std::future::Future<Output = ()>,
) {
    let repositories = lifecycle.repositories().to_vec();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = tx.try_send(());
        }
    });
    // Without a watcher the periodic rescan still applies every change.
    let _watcher = match watcher {
        Ok(mut w) => {
            for repo in &repositories {
                if let Err(e) = w.watch(repo, RecursiveMode::Recursive) {
                    tracing::warn!(
                        "cannot watch {}: {e}; relying on polling every {interval:?}",
                        repo.display()
                    );
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!("no filesystem watcher ({e}); relying on polling every {interval:?}");
            None
        }
    };
    let mut tick = tokio::time::interval(interval);
    tick.tick().await;
    tokio::pin!(stop);
    // Folders passed over because no request could name them, said once each.
    let mut passed_over = BTreeSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
            Some(()) = rx.recv() => {
                // Let a copy in progress finish: wait until events stop for a moment.
                while tokio::time::timeout(DEBOUNCE, rx.recv()).await.is_ok_and(|e| e.is_some()) {}
            }
        }
        let repos = repositories.clone();
        // Scanning and fingerprinting read the filesystem: off the async workers.
        let (skipped, now) = tokio::task::spawn_blocking(move || {
            let scan = repository::scan(&repos).unwrap_or_default();
            (scan.passed_over.clone(), fingerprints(scan))
        })
        .await
        .unwrap_or_default();
        for skipped in &skipped {
            if passed_over.insert(skipped.to_string()) {
                tracing::warn!("model repository: passing over a folder no request could name: {skipped}");
            }
        }
        for (name, fp) in &now {
            if known.get(name) != Some(fp) {
                tracing::info!(model = %name, "model files changed: loading '{name}'");
                if let Err(e) = lifecycle.load(name, LoadRequest::default()).await {
                    tracing::error!(model = %name, "{e}");
                }
            }
        }
        for name in known.keys().filter(|n| !now.contains_key(*n)) {
            tracing::info!(model = %name, "model removed from the repository: unloading '{name}'");
            let _ = lifecycle.unload(name).await;
        }
        known = now;
    }
}
