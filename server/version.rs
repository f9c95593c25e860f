//! One version of a model, loaded and serving: what it declares, its queue and instances, its statistics, and
//! the class labels its outputs name, and its health checks (drift, input rules).
use std::sync::Arc;

use crate::backend::text::TextRecipe;
use crate::health::Health;
use crate::proto::ModelConfig;
use crate::scheduler::Scheduler;
use crate::spec::ModelSpec;
use crate::stats::Stats;

pub struct LoadedVersion {
    pub version: i64,
    pub spec: Arc<ModelSpec>,
    pub config: Arc<ModelConfig>,
    pub scheduler: Scheduler,
    pub stats: Arc<Stats>,
    /// Per output (in `spec.outputs` order): the labels of its classes, one per line of the output's
    /// `label_filename`; empty without one.
    pub labels: Vec<Vec<String>>,
    /// Its drift monitor and input rules.
    pub health: Health,
    /// A text model's tokenizer (one BYTES input, one FP32 output, a `tokenizer.json` beside the weights): requests'
    /// tokens are counted with it before they queue, for the token budget of batches, the too-long check and
    /// the usage the OpenAI route reports.
    pub text: Option<Arc<TextRecipe>>,
}
