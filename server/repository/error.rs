//! Why a model did not load, typed, with what a user needs to fix it (the model, the version, the file). A load
//! request's answer is `failed to load '<model>': <this>`, as Triton words it; `InferError` gets its status
//! from here, once.
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::autocomplete::AutoCompleteError;
use super::config::ConfigError;
use super::paths::PathError;
use super::placement::PlacementError;
use crate::backend::BackendError;
use crate::error::InferError;
use crate::model_name::ModelName;
use crate::registry::SyncError;
use crate::scheduler::{PolicyError, SequenceConfigError};
use crate::spec::SpecError;
use crate::traffic::TrafficError;

#[derive(Clone, Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read model repository {}: {source}", path.display())]
    Repository { path: PathBuf, source: Arc<io::Error> },
    #[error("model '{name}' appears in more than one repository ({first} and {second})")]
    Duplicate {
        name: ModelName,
        first: String,
        second: String,
    },
    /// A remote repository could not give the model's files.
    #[error(transparent)]
    Sync(SyncError),
    #[error("no such model in the model repository")]
    NotInRepository,
    #[error("cannot read {}: {source}", path.display())]
    ReadConfig { path: PathBuf, source: Arc<io::Error> },
    #[error("{}: {source}", path.display())]
    ParseConfig { path: PathBuf, source: ConfigError },
    /// A load request's config override that does not parse.
    #[error("invalid config: {0}")]
    InvalidConfig(ConfigError),
    #[error("unexpected directory name '{directory}' for model '{config}', directory name must equal model name")]
    NameMismatch { directory: ModelName, config: String },
    #[error("file overrides need a 'config' parameter")]
    OverrideWithoutConfig,
    /// A load request's parameters that are not what Triton's load takes.
    #[error("{0}")]
    Parameter(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("no backend for backend '{backend}' / platform '{platform}' (available: {available})")]
    UnknownBackend {
        backend: String,
        platform: String,
        available: String,
    },
    #[error("config names no backend or platform and no version holds a model file of any backend ({available})")]
    NoModelFile { available: String },
    #[error("no version of model '{model}' matches its version policy (numbered folders holding {filename})")]
    NoVersion { model: String, filename: String },
    #[error("{0}")]
    Inspect(Arc<BackendError>),
    #[error(transparent)]
    AutoComplete(#[from] AutoCompleteError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Batching(#[from] PolicyError),
    #[error(transparent)]
    Sequence(#[from] SequenceConfigError),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Traffic(#[from] TrafficError),
    #[error(transparent)]
    Health(#[from] crate::health::HealthError),
    #[error("version {version}: model file {} not found", path.display())]
    ModelFile { version: i64, path: PathBuf },
    #[error("version {version}: {source}")]
    Instance { version: i64, source: Arc<BackendError> },
    #[error("cannot read label file {} of output '{output}': {source}", path.display())]
    Labels {
        output: String,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// The server could not write a load request's files to its staging folder.
    #[error("cannot stage the model's files: {0}")]
    Staging(Arc<io::Error>),
    /// The load's thread ended without an outcome (a panic in a backend).
    #[error("the load stopped unexpectedly: {0}")]
    Aborted(String),
}

impl LoadError {
    pub(crate) fn io(make: impl FnOnce(Arc<io::Error>) -> Self) -> impl FnOnce(io::Error) -> Self {
        move |e| make(Arc::new(e))
    }
}

/// A load that failed, with the model it was for.
#[derive(Clone, Debug, thiserror::Error)]
#[error("failed to load '{model}': {error}")]
pub struct LoadFailure {
    pub model: ModelName,
    pub error: LoadError,
}

impl From<LoadFailure> for InferError {
    fn from(f: LoadFailure) -> Self {
        match f.error {
            // The server's own fault, not the request's.
            LoadError::Staging(_) | LoadError::Repository { .. } | LoadError::Aborted(_) => {
                InferError::Internal(f.to_string())
            }
            // The cache's own disk.
            LoadError::Sync(SyncError::Cache { .. }) => InferError::Internal(f.to_string()),
            // The store (or the way to it) failed, not the request: worth asking again later.
            LoadError::Sync(_) => InferError::Unavailable(f.to_string()),
            _ => InferError::InvalidArgument(f.to_string()),
        }
    }
}
