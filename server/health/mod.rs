//! Model health: a version's reference profile (`profile`), the drift of what it receives and answers against
//! it, measured live in windows (`drift`, on the `features` of each row, scored by `score`), and value rules
//! checked at the door (`rules`). Built once per loaded version, from its config and folder.
pub mod drift;
pub mod features;
pub mod profile;
pub mod rules;
pub mod score;

use std::path::Path;

use self::drift::{DriftConfig, DriftConfigError, Monitor};
use self::profile::Profile;
use self::rules::{InputRules, RulesError};
use crate::proto::ModelConfig;
use crate::spec::ModelSpec;

/// Whether a version's drift is watched, and why not.
pub enum Drift {
    Watching(Monitor),
    /// Why not (no profile, or one that cannot be used), as `/drift` says it.
    Off(String),
}

/// A loaded version's health checks.
pub struct Health {
    pub drift: Drift,
    pub rules: Option<InputRules>,
}

impl Health {
    /// Reads the config's `drift.*` and `validate.*` parameters (a bad one fails the load) and the version's
    /// profile (one that cannot be used leaves drift off, with the reason logged and on `/drift`, and the
    /// version serving).
    pub fn load(cfg: &ModelConfig, spec: &ModelSpec, version: i64, version_dir: &Path) -> Result<Self, HealthError> {
        let rules = InputRules::from_config(cfg, spec)?;
        let config = DriftConfig::from_config(cfg)?;
        let drift = match profile::find(version_dir) {
            None => Drift::Off(format!(
                "version {version} of model '{}' has no reference profile: put a {} made by `inferd profile` in its \
                 version folder or its model folder",
                spec.name,
                profile::FILE_NAME
            )),
            Some(path) => match Profile::read(&path).and_then(|p| Monitor::new(p, &path, spec, version_dir, config)) {
                Ok(monitor) => Drift::Watching(monitor),
                Err(e) => {
                    tracing::warn!(model = %spec.name, version, "drift is not watched: {e}");
                    Drift::Off(format!(
                        "drift is not watched for version {version} of model '{}': {e}",
                        spec.name
                    ))
                }
            },
        };
        Ok(Self { drift, rules })
    }

    pub fn monitor(&self) -> Option<&Monitor> {
        match &self.drift {
            Drift::Watching(m) => Some(m),
            Drift::Off(_) => None,
        }
    }
}

/// A config whose health parameters do not parse.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Drift(#[from] DriftConfigError),
    #[error(transparent)]
    Rules(#[from] RulesError),
}
