//! The model repository in Triton's layout: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/<version>/<file>`.
//! Scanning finds the models; loading reads (or auto-completes) each config, picks versions by the version
//! policy and starts each version's instances.
pub mod autocomplete;
pub mod config;
pub mod placement;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{Backend, BackendError};
use crate::model::{LoadedVersion, ModelSpec};
use crate::proto::model_version_policy::PolicyChoice;
use crate::proto::ModelConfig;
use crate::scheduler::{BatchPolicy, Scheduler};
use crate::stats::Stats;
use placement::Gpus;

/// A model directory found in one of the repositories.
#[derive(Clone, Debug)]
pub struct ModelSource {
    pub name: String,
    pub dir: PathBuf,
}

/// Every model directory under the repositories. A name found in two repositories is an error for that
/// name, as in Triton.
pub fn scan(repositories: &[PathBuf]) -> Result<BTreeMap<String, Result<ModelSource, String>>, String> {
    let mut found: BTreeMap<String, Result<ModelSource, String>> = BTreeMap::new();
    for repo in repositories {
        let entries =
            std::fs::read_dir(repo).map_err(|e| format!("cannot read model repository {}: {e}", repo.display()))?;
        for entry in entries.flatten() {
            let dir = entry.path();
            let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                continue;
            };
            if name.starts_with('.') || !dir.is_dir() {
                continue;
            }
            let src = ModelSource {
                name: name.clone(),
                dir,
            };
            match found.get(&name) {
                Some(Ok(prev)) => {
                    let msg = format!(
                        "model '{name}' appears in more than one repository ({} and {})",
                        prev.dir.display(),
                        src.dir.display()
                    );
                    found.insert(name, Err(msg));
                }
                Some(Err(_)) => {}
                None => {
                    found.insert(name, Ok(src));
                }
            }
        }
    }
    Ok(found)
}

/// Chooses the backend a model's config asks for (`backend:` or `platform:`), or, with neither, the one whose
/// default file is present.
pub fn select_backend(
    backends: &[Arc<dyn Backend>],
    cfg: &ModelConfig,
    dir: &Path,
) -> Result<Arc<dyn Backend>, String> {
    if !cfg.backend.is_empty() || !cfg.platform.is_empty() {
        return backends
            .iter()
            .find(|b| b.name() == cfg.backend || b.platform() == cfg.platform)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "no backend for backend '{}' / platform '{}' (available: {})",
                    cfg.backend,
                    cfg.platform,
                    names(backends)
                )
            });
    }
    let has_file = |b: &Arc<dyn Backend>| -> bool {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|v| v.path().join(b.default_model_filename()).is_file())
    };
    backends.iter().find(|b| has_file(b)).cloned().ok_or_else(|| {
        format!(
            "config names no backend or platform and no version holds a model file of any backend ({})",
            names(backends)
        )
    })
}

fn names(backends: &[Arc<dyn Backend>]) -> String {
    backends.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ")
}

/// Numbered version folders, newest first.
fn version_dirs(dir: &Path) -> Vec<(i64, PathBuf)> {
    let mut versions: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            Some((
                e.file_name().to_str()?.parse::<i64>().ok().filter(|v| *v >= 0)?,
                e.path(),
            ))
        })
        .collect();
    versions.sort_by_key(|v| std::cmp::Reverse(v.0));
    versions
}

fn apply_version_policy(cfg: &ModelConfig, all: Vec<(i64, PathBuf)>) -> Vec<(i64, PathBuf)> {
    match cfg.version_policy.as_ref().and_then(|p| p.policy_choice.as_ref()) {
        Some(PolicyChoice::All(_)) => all,
        Some(PolicyChoice::Specific(s)) => all.into_iter().filter(|(v, _)| s.versions.contains(v)).collect(),
        Some(PolicyChoice::Latest(l)) => all.into_iter().take(l.num_versions.max(1) as usize).collect(),
        None => all.into_iter().take(1).collect(),
    }
}

/// A model read from disk and ready to instantiate: its completed config and chosen versions.
pub struct Prepared {
    pub config: ModelConfig,
    pub spec: Arc<ModelSpec>,
    pub backend: Arc<dyn Backend>,
    /// (version, model file), newest first.
    pub versions: Vec<(i64, PathBuf)>,
}

/// Reads `config.pbtxt` (if any), completes it from the model file, and picks the versions to load.
pub fn prepare(src: &ModelSource, backends: &[Arc<dyn Backend>]) -> Result<Prepared, String> {
    let config_path = src.dir.join("config.pbtxt");
    let mut cfg = if config_path.is_file() {
        let text =
            std::fs::read_to_string(&config_path).map_err(|e| format!("cannot read {}: {e}", config_path.display()))?;
        config::parse_pbtxt(&text).map_err(|e| format!("{}: {e}", config_path.display()))?
    } else {
        ModelConfig::default()
    };
    if cfg.name.is_empty() {
        cfg.name = src.name.clone();
    } else if cfg.name != src.name {
        return Err(format!(
            "config name '{}' does not match the model directory '{}'",
            cfg.name, src.name
        ));
    }
    prepare_config(src, cfg, backends)
}

/// The same as `prepare`, from a config already in hand (a load request's override).
pub fn prepare_config(
    src: &ModelSource,
    mut cfg: ModelConfig,
    backends: &[Arc<dyn Backend>],
) -> Result<Prepared, String> {
    let backend = select_backend(backends, &cfg, &src.dir)?;
    if cfg.backend.is_empty() {
        cfg.backend = backend.name().to_string();
    }
    if cfg.platform.is_empty() {
        cfg.platform = backend.platform().to_string();
    }
    let filename = if cfg.default_model_filename.is_empty() {
        backend.default_model_filename().to_string()
    } else {
        cfg.default_model_filename.clone()
    };
    let versions: Vec<(i64, PathBuf)> = apply_version_policy(&cfg, version_dirs(&src.dir))
        .into_iter()
        .map(|(v, dir)| (v, dir.join(&filename)))
        .collect();
    let Some((_, newest)) = versions.first() else {
        return Err(format!(
            "no version of model '{}' matches its version policy (numbered folders holding {filename})",
            src.name
        ));
    };
    if cfg.input.is_empty() || cfg.output.is_empty() {
        let io = backend.inspect(newest).map_err(|e| e.to_string())?;
        autocomplete::complete(&mut cfg, &io)?;
    }
    if cfg.instance_group.is_empty() {
        cfg.instance_group.push(crate::proto::ModelInstanceGroup {
            count: 1,
            kind: crate::proto::model_instance_group::Kind::Cpu as i32,
            ..Default::default()
        });
    }
    let spec = Arc::new(ModelSpec::from_config(&cfg)?);
    Ok(Prepared {
        config: cfg,
        spec,
        backend,
        versions,
    })
}

/// Starts one version: its instances (each its own session) and its scheduler.
/// `detailed`: keep the metrics-only statistics too.
pub fn load_version(prepared: &Prepared, version: i64, file: &Path, detailed: bool) -> Result<LoadedVersion, String> {
    if !file.is_file() {
        return Err(format!("version {version}: model file {} not found", file.display()));
    }
    let policy = BatchPolicy::from_config(&prepared.config)?;
    let placements = placement::placements(&prepared.spec.name, &prepared.config, &Gpus::discover())?;
    let instances = placements
        .iter()
        .map(|&p| prepared.backend.instantiate(file, &prepared.spec, &prepared.config, p))
        .collect::<Result<Vec<_>, BackendError>>()
        .map_err(|e| format!("version {version}: {e}"))?;
    let stats = Arc::new(Stats::new(policy.max_batch_size, detailed));
    let scheduler = Scheduler::start(prepared.spec.clone(), instances, policy, stats.clone());
    Ok(LoadedVersion {
        version,
        version_label: version.to_string(),
        spec: prepared.spec.clone(),
        config: Arc::new(prepared.config.clone()),
        scheduler,
        stats,
    })
}
