//! `--model-control-mode poll`: watch the repositories and apply what changed. A filesystem watcher (notify)
//! triggers a rescan soon after a change, debounced so a copy in progress settles first; a periodic rescan
//! (`--repository-poll-secs`) catches what the watcher misses (network filesystems, lost events) and lists the
//! remote repositories again (a model changes there when its listing does: a path, an ETag, a size). A model
//! whose files changed is reloaded (the old versions serve until the new ones are ready; a failed reload
//! leaves them serving), a new model is loaded, and a removed one is unloaded.
use std::collections::{BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::lifecycle::Lifecycle;
use crate::model_name::ModelName;
use crate::registry::{Registry, Scan};
use crate::repository::LoadError;

/// How long the repository must stay quiet after a change before it is rescanned.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Every model's fingerprint now (blocking). Taken before the first load, so a change made while the server
/// starts is applied rather than mistaken for the starting state.
pub fn snapshot(registry: &Registry) -> HashMap<ModelName, u64> {
    fingerprints(registry.scan().unwrap_or_default())
}

fn fingerprints(scan: Scan) -> HashMap<ModelName, u64> {
    scan.models
        .into_iter()
        .map(|(name, found)| {
            // A name found twice has no single place; fingerprint the conflict itself.
            let fp = match &found {
                Ok(found) => found.fingerprint(),
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
    let registry = lifecycle.registry().clone();
    let repositories = registry.local_folders();
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening and reading files changes nothing, and the rescan itself opens every model folder: counting
        // those events would rescan forever, one debounce apart.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
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
        // Remote repositories are listed again; one that cannot be listed keeps its last listing (no change).
        registry.refresh().await;
        let reg = registry.clone();
        // Scanning and fingerprinting read the filesystem: off the async workers.
        let scanned =
            tokio::task::spawn_blocking(move || reg.scan().map(|scan| (scan.passed_over.clone(), fingerprints(scan))))
                .await;
        // A repository folder that cannot be read is not every model removed: nothing changes this round.
        let (skipped, now) = match scanned {
            Ok(Ok(scanned)) => scanned,
            Ok(Err(e)) => {
                tracing::warn!("model repository: {e}; applying no change this round");
                continue;
            }
            Err(e) => {
                tracing::warn!("model repository scan stopped: {e}; applying no change this round");
                continue;
            }
        };
        for skipped in &skipped {
            if passed_over.insert(skipped.clone()) {
                crate::registry::warn_passed_over(skipped);
            }
        }
        let mut now = now;
        for (name, fp) in now.iter_mut() {
            if known.get(name) != Some(fp) {
                tracing::info!(model = %name, "model files changed: loading '{name}'");
                if let Err(e) = lifecycle.reload_listed(name).await {
                    tracing::error!(model = %name, "{e}");
                    // The files could not be fetched (the store went away mid-way): try again at the next poll.
                    if matches!(e.error, LoadError::Sync(_)) {
                        *fp = known.get(name).copied().unwrap_or_default();
                    }
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
