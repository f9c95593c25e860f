//! The model repository in Triton's layout: `<repo>/<model>/config.pbtxt` and `<repo>/<model>/<version>/<file>`.
//! Scanning finds the models; preparing reads (or auto-completes) a model's config and picks its versions by the
//! version policy; loading starts one version's instances. Every path is built from a checked model name and
//! checked file names (`paths`), so nothing here reads outside a model's folder.
pub mod autocomplete;
pub mod config;
mod error;
pub mod paths;
pub mod placement;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use self::error::{LoadError, LoadFailure};
use crate::backend::text::TextRecipe;
use crate::backend::{Backend, Placement};
use crate::health::Health;
use crate::model_name::{ModelName, NameError};
use crate::proto::model_version_policy::PolicyChoice;
use crate::proto::ModelConfig;
use crate::scheduler::{BatchPolicy, Scheduler, SequencePolicy};
use crate::spec::ModelSpec;
use crate::stats::Stats;
use crate::version::LoadedVersion;
use placement::Gpus;

/// A model directory found in one of the repositories (or a load request's staging folder).
#[derive(Clone, Debug)]
pub struct ModelSource {
    pub name: ModelName,
    pub dir: PathBuf,
}

/// Every model folder in one repository folder; a folder whose name no request could use is an error beside
/// the others.
pub fn scan_folder(repo: &Path) -> Result<Vec<Result<ModelSource, NameError>>, LoadError> {
    let entries = std::fs::read_dir(repo).map_err(LoadError::io(|source| LoadError::Repository {
        path: repo.to_path_buf(),
        source,
    }))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        // Not UTF-8: no request could name it either.
        let Some(file_name) = dir.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if file_name.starts_with('.') || !dir.is_dir() {
            continue;
        }
        found.push(ModelName::parse(file_name).map(|name| ModelSource { name, dir }));
    }
    Ok(found)
}

/// Chooses the backend a model's config asks for (`backend:` or `platform:`), or, with neither, the one whose
/// default file is present.
pub fn select_backend(
    backends: &[Arc<dyn Backend>],
    cfg: &ModelConfig,
    dir: &Path,
) -> Result<Arc<dyn Backend>, LoadError> {
    if !cfg.backend.is_empty() || !cfg.platform.is_empty() {
        return backends
            .iter()
            .find(|b| b.name() == cfg.backend || b.platform() == cfg.platform)
            .cloned()
            .ok_or_else(|| LoadError::UnknownBackend {
                backend: cfg.backend.clone(),
                platform: cfg.platform.clone(),
                available: names(backends),
            });
    }
    let has_file = |b: &Arc<dyn Backend>| -> bool {
        b.needs_model_file()
            && std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|v| v.path().join(b.default_model_filename()).is_file())
    };
    backends
        .iter()
        .find(|b| has_file(b))
        .cloned()
        .ok_or_else(|| LoadError::NoModelFile {
            available: names(backends),
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
    /// Per output, its class labels (see `LoadedVersion::labels`).
    pub labels: Vec<Vec<String>>,
}

/// The model's own `config.pbtxt` (a default config without one).
fn read_config(src: &ModelSource) -> Result<ModelConfig, LoadError> {
    let path = src.dir.join("config.pbtxt");
    if !path.is_file() {
        return Ok(ModelConfig::default());
    }
    let text = std::fs::read_to_string(&path).map_err(LoadError::io(|source| LoadError::ReadConfig {
        path: path.clone(),
        source,
    }))?;
    config::parse_pbtxt(&text).map_err(|source| LoadError::ParseConfig { path, source })
}

/// Reads the model's config (or takes `config`, a load request's override), completes it from the model
/// file, and picks the versions to load.
pub fn prepare(
    src: &ModelSource,
    config: Option<ModelConfig>,
    backends: &[Arc<dyn Backend>],
) -> Result<Prepared, LoadError> {
    let mut cfg = match config {
        Some(cfg) => cfg,
        None => read_config(src)?,
    };
    // A config serves the model whose folder it is in, under that folder's name.
    if cfg.name.is_empty() {
        cfg.name = src.name.to_string();
    } else if cfg.name != src.name.as_str() {
        return Err(LoadError::NameMismatch {
            directory: src.name.clone(),
            config: cfg.name,
        });
    }
    let backend = select_backend(backends, &cfg, &src.dir)?;
    if cfg.backend.is_empty() {
        cfg.backend = backend.name().to_string();
    }
    if cfg.platform.is_empty() {
        cfg.platform = backend.platform().to_string();
    }
    let filename = if cfg.default_model_filename.is_empty() {
        backend.default_model_filename()
    } else {
        paths::file_name("default_model_filename", &cfg.default_model_filename)?
    }
    .to_string();
    let labels = cfg
        .output
        .iter()
        .map(|o| read_labels(&src.dir, &o.name, &o.label_filename))
        .collect::<Result<Vec<_>, _>>()?;
    let versions: Vec<(i64, PathBuf)> = apply_version_policy(&cfg, version_dirs(&src.dir))
        .into_iter()
        .map(|(v, dir)| (v, dir.join(&filename)))
        .collect();
    let Some((_, newest)) = versions.first() else {
        return Err(LoadError::NoVersion {
            model: src.name.to_string(),
            filename,
        });
    };
    if cfg.input.is_empty() || cfg.output.is_empty() {
        let io = backend.inspect(newest).map_err(|e| LoadError::Inspect(Arc::new(e)))?;
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
    // Outputs the config left to auto-completion have no label files.
    let mut labels = labels;
    labels.resize(spec.outputs.len(), Vec::new());
    Ok(Prepared {
        config: cfg,
        spec,
        backend,
        versions,
        labels,
    })
}

/// An output's class labels: one per line of its `label_filename` in the model's folder (none without one).
fn read_labels(dir: &Path, output: &str, label_filename: &str) -> Result<Vec<String>, LoadError> {
    if label_filename.is_empty() {
        return Ok(Vec::new());
    }
    let path = paths::file_in(dir, "label_filename", label_filename)?;
    let text = std::fs::read_to_string(&path).map_err(LoadError::io(|source| LoadError::Labels {
        output: output.to_string(),
        path: path.clone(),
        source,
    }))?;
    Ok(text.lines().map(str::to_string).collect())
}

/// How the server runs every version it loads, whatever the model's config says.
#[derive(Clone, Copy, Debug, Default)]
pub struct VersionOptions {
    /// Keep the metrics-only statistics (histograms, in-flight and routed counts) too.
    pub detailed_metrics: bool,
    /// Callers run the queue on their own thread while the model's executions take under this on average
    /// (`--inline-below-us`; zero: never), on CPU instances without a batching delay.
    pub inline_below: Duration,
}

/// Starts one version: its instances (each its own session) and its scheduler.
pub fn load_version(
    prepared: &Prepared,
    version: i64,
    file: &Path,
    options: VersionOptions,
) -> Result<LoadedVersion, LoadError> {
    if prepared.backend.needs_model_file() && !file.is_file() {
        return Err(LoadError::ModelFile {
            version,
            path: file.to_path_buf(),
        });
    }
    let mut policy = BatchPolicy::from_config(&prepared.config)?;
    let sequence = SequencePolicy::from_config(&prepared.config, &prepared.spec)?;
    let placements = placement::placements(&prepared.spec.name, &prepared.config, &Gpus::discover())?;
    let instances = placements
        .iter()
        .map(|&p| prepared.backend.instantiate(file, &prepared.spec, &prepared.config, p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::Instance {
            version,
            source: Arc::new(e),
        })?;
    let version_dir = file.parent().unwrap_or(file);
    let health = Health::load(&prepared.config, &prepared.spec, version, version_dir)?;
    let text = if prepared.spec.takes_text() {
        TextRecipe::load(version_dir)
            .map_err(|e| LoadError::Instance {
                version,
                source: Arc::new(e),
            })?
            .map(Arc::new)
    } else {
        None
    };
    // A GPU instance may be tied to its thread's device context; a batching delay must be left to the instance.
    if placements.iter().all(|p| matches!(p, Placement::Cpu)) && policy.max_queue_delay.is_zero() {
        policy.inline_below = options.inline_below;
    }
    let stats = Arc::new(Stats::new(policy.max_batch_size, options.detailed_metrics));
    let scheduler = match sequence {
        Some(sequence) => Scheduler::start_sequence(prepared.spec.clone(), instances, policy, sequence, stats.clone()),
        None => Scheduler::start(prepared.spec.clone(), instances, policy, stats.clone()),
    };
    Ok(LoadedVersion {
        version,
        spec: prepared.spec.clone(),
        config: Arc::new(prepared.config.clone()),
        scheduler,
        stats,
        labels: prepared.labels.clone(),
        health,
        text,
    })
}

/// Every version the config's policy picks, loaded; the first that fails fails the load.
pub fn load_versions(
    prepared: &Prepared,
    options: VersionOptions,
) -> Result<BTreeMap<i64, Arc<LoadedVersion>>, LoadError> {
    let mut versions = BTreeMap::new();
    for (v, file) in &prepared.versions {
        versions.insert(*v, Arc::new(load_version(prepared, *v, file, options)?));
    }
    Ok(versions)
}
