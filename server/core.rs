//! The transport-free server API both front-ends call: infer, health, metadata, config and statistics.
//! It owns the routing table and loads the model repository into it.
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use crate::backend::Backend;
use crate::error::{InferError, InferResult};
use crate::model::LoadedVersion;
use crate::proto::{self, model_metadata_response::TensorMetadata, ModelConfig};
use crate::repository::{self, ModelSource};
use crate::request::{InferRequest, InferResponse, ParamValue};
use crate::request_log;
use crate::routing::{ModelEntry, ModelState, RoutingTable};
use crate::scheduler::{Job, JobState, TimeoutAction};
use crate::stats::Arm;
use crate::tensor::Tensor;
use crate::traffic::TrafficPolicy;
use crate::validate::validate;

/// The protocol extensions this server implements, as `GET /v2` lists them.
pub const EXTENSIONS: &[&str] = &[
    "binary_tensor_data",
    "parameters",
    "statistics",
    "model_configuration",
    "model_repository",
];

pub struct Core {
    pub server_id: String,
    table: ArcSwap<RoutingTable>,
    backends: Vec<Arc<dyn Backend>>,
    repositories: Vec<PathBuf>,
    /// False once shutdown begins, so load balancers stop sending.
    accepting: AtomicBool,
    strict_readiness: bool,
    /// Requests admitted and not yet answered, across all models; capped by `max_inflight` (0: no cap).
    inflight: AtomicUsize,
    max_inflight: usize,
    /// Whether the repository API may load and unload models (`--model-control-mode explicit`).
    pub(crate) explicit_control: bool,
    /// Serialises loads and unloads, so each swaps in a table built from the one before.
    pub(crate) control: tokio::sync::Mutex<()>,
    /// Bearer token admin requests must carry (`--admin-token`); none leaves them open.
    pub(crate) admin_token: Option<String>,
    /// Failed loads per model since start (`inferd_model_load_failures_total`).
    load_failures: Mutex<BTreeMap<String, u64>>,
    /// Keep the metrics-only statistics (off with `--allow-metrics false`).
    detailed_metrics: bool,
    /// Most tensor elements one request may carry (`--max-tensor-elements`).
    max_tensor_elements: u64,
    /// Models being loaded right now.
    loading: Mutex<BTreeSet<String>>,
    /// Versions taken out of the routing table, held weakly: they are unloading until their last request ends.
    retired: Mutex<Vec<Retired>>,
}

struct Retired {
    model: String,
    version: Weak<LoadedVersion>,
}

/// A model's lifecycle state, as `inferd_model_state` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Loading,
    Ready,
    Failed,
    Unloading,
}

impl Lifecycle {
    pub fn label(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Failed => "failed",
            Self::Unloading => "unloading",
        }
    }
}

/// Marks a model as loading until dropped.
pub(crate) struct LoadingGuard<'a> {
    core: &'a Core,
    model: String,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut l) = self.core.loading.lock() {
            l.remove(&self.model);
        }
    }
}

/// Holds one place among the requests in flight.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn unsigned(req: &InferRequest, name: &str) -> InferResult<Option<u64>> {
    match req.parameter(name) {
        None => Ok(None),
        Some(ParamValue::Int(i)) if *i >= 0 => Ok(Some(*i as u64)),
        Some(ParamValue::Uint(u)) => Ok(Some(*u)),
        Some(other) => Err(InferError::invalid(format!(
            "parameter '{name}' must be a non-negative integer, got {other:?}"
        ))),
    }
}

impl Core {
    pub fn new(
        server_id: String,
        repositories: Vec<PathBuf>,
        backends: Vec<Arc<dyn Backend>>,
        strict_readiness: bool,
        max_inflight: usize,
        explicit_control: bool,
    ) -> Self {
        Self {
            server_id,
            table: ArcSwap::from_pointee(RoutingTable::default()),
            backends,
            repositories,
            accepting: AtomicBool::new(true),
            strict_readiness,
            inflight: AtomicUsize::new(0),
            max_inflight,
            explicit_control,
            control: tokio::sync::Mutex::new(()),
            admin_token: None,
            load_failures: Default::default(),
            detailed_metrics: true,
            max_tensor_elements: u64::MAX,
            loading: Default::default(),
            retired: Default::default(),
        }
    }

    pub fn with_max_tensor_elements(mut self, limit: u64) -> Self {
        self.max_tensor_elements = limit;
        self
    }

    /// Whether versions keep the metrics-only statistics (histograms, in-flight and routed counts).
    pub fn with_detailed_metrics(mut self, on: bool) -> Self {
        self.detailed_metrics = on;
        self
    }

    pub fn table(&self) -> arc_swap::Guard<Arc<RoutingTable>> {
        self.table.load()
    }

    /// Replaces the routing table; requests already routed keep the versions they hold until they finish.
    pub(crate) fn swap_table(&self, table: RoutingTable) {
        let old = self.table.swap(Arc::new(table));
        let new = self.table.load();
        let kept = |model: &str, lv: &Arc<LoadedVersion>| {
            new.models
                .get(model)
                .is_some_and(|e| e.versions.values().any(|v| Arc::ptr_eq(v, lv)))
        };
        if let Ok(mut retired) = self.retired.lock() {
            for (model, entry) in &old.models {
                for lv in entry.versions.values().filter(|lv| !kept(model, lv)) {
                    retired.push(Retired {
                        model: model.clone(),
                        version: Arc::downgrade(lv),
                    });
                }
            }
        }
    }

    pub(crate) fn mark_loading(&self, model: &str) -> LoadingGuard<'_> {
        if let Ok(mut l) = self.loading.lock() {
            l.insert(model.to_string());
        }
        LoadingGuard {
            core: self,
            model: model.to_string(),
        }
    }

    /// Every model's versions with their lifecycle state; a model-wide state (loading, or a failed load)
    /// has an empty version. Versions that left the table count as unloading while requests still hold them.
    pub fn lifecycle(&self) -> Vec<(String, String, Lifecycle)> {
        let mut out = Vec::new();
        for (name, entry) in &self.table.load().models {
            if matches!(entry.state, ModelState::Unavailable(_)) || entry.last_error.is_some() {
                out.push((name.clone(), String::new(), Lifecycle::Failed));
            }
            for lv in entry.versions.values() {
                out.push((name.clone(), lv.version_label.clone(), Lifecycle::Ready));
            }
        }
        if let Ok(loading) = self.loading.lock() {
            out.extend(loading.iter().map(|m| (m.clone(), String::new(), Lifecycle::Loading)));
        }
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|r| r.version.strong_count() > 0);
            for r in retired.iter() {
                if let Some(lv) = r.version.upgrade() {
                    out.push((r.model.clone(), lv.version_label.clone(), Lifecycle::Unloading));
                }
            }
        }
        out
    }

    pub fn with_admin_token(mut self, token: Option<String>) -> Self {
        self.admin_token = token.filter(|t| !t.is_empty());
        self
    }

    pub(crate) fn count_load_failure(&self, model: &str) {
        if let Ok(mut f) = self.load_failures.lock() {
            *f.entry(model.to_string()).or_default() += 1;
        }
    }

    pub fn load_failures(&self) -> BTreeMap<String, u64> {
        self.load_failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub(crate) fn repositories(&self) -> &[PathBuf] {
        &self.repositories
    }

    /// Loads the repository's models (all of them, or those named in `only`), each on a blocking thread.
    /// A model that fails is recorded with its reason and the others serve.
    pub async fn load_repository(self: &Arc<Self>, only: Option<&[String]>) -> Result<(), String> {
        let found = repository::scan(&self.repositories)?;
        if let Some(missing) = only.and_then(|names| names.iter().find(|n| !found.contains_key(*n))) {
            return Err(format!(
                "--load-model names '{missing}', which is not in the model repository"
            ));
        }
        let mut table = RoutingTable::default();
        let mut tasks = Vec::new();
        for (name, src) in found {
            if only.is_some_and(|names| !names.contains(&name)) {
                continue;
            }
            let core = self.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let _loading = core.mark_loading(&name);
                let result = src.and_then(|s| core.load_model(&s));
                (name.clone(), result)
            }));
        }
        for t in tasks {
            let (name, result) = t.await.map_err(|e| e.to_string())?;
            let entry = entry_from(&name, result);
            if matches!(entry.state, ModelState::Unavailable(_)) {
                self.count_load_failure(&name);
            }
            table.models.insert(name, entry);
        }
        self.swap_table(table);
        Ok(())
    }

    fn load_model(&self, src: &ModelSource) -> Result<BTreeMap<i64, Arc<LoadedVersion>>, String> {
        self.load_model_with(src, None)
    }

    /// Loads every version the policy picks, from the model's own config or from `config` when given.
    pub(crate) fn load_model_with(
        &self,
        src: &ModelSource,
        config: Option<ModelConfig>,
    ) -> Result<BTreeMap<i64, Arc<LoadedVersion>>, String> {
        let prepared = match config {
            Some(cfg) => repository::prepare_config(src, cfg, &self.backends)?,
            None => repository::prepare(src, &self.backends)?,
        };
        let mut versions = BTreeMap::new();
        for (v, file) in &prepared.versions {
            versions.insert(
                *v,
                Arc::new(repository::load_version(&prepared, *v, file, self.detailed_metrics)?),
            );
        }
        Ok(versions)
    }

    pub fn is_live(&self) -> bool {
        true
    }

    pub fn is_ready(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) && (!self.strict_readiness || self.table.load().all_ready())
    }

    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    pub fn model_ready(&self, model: &str, version: Option<&str>) -> InferResult<bool> {
        let table = self.table.load();
        match table.resolve(model, version) {
            Ok(_) => Ok(true),
            Err(InferError::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn infer(&self, mut req: InferRequest) -> InferResult<InferResponse> {
        let result = self.serve(&mut req).await;
        match &result {
            Ok(r) => request_log::served(&req, &r.model_version),
            Err(e) => request_log::failed(&req, e),
        }
        result
    }

    /// Routes, queues and answers one request; its inputs are taken, the rest is left for the log line.
    async fn serve(&self, req: &mut InferRequest) -> InferResult<InferResponse> {
        let received = Instant::now();
        self.check_size(req)?;
        let table = self.table.load();
        let version = table
            .route(&req.model, req.version.as_deref(), req.routing_key())?
            .clone();
        if let Some(shadow) = table.shadow(&req.model, version.version) {
            // Tensors share their bytes, so the copy costs no payload copy.
            let mut copy = InferRequest {
                version: None,
                routing_key: None,
                ..req.clone()
            };
            // The copy runs on its own task: the caller neither waits for it nor sees its answer.
            tokio::spawn(async move {
                let started = Instant::now();
                let _inflight = shadow.stats.start_request(Arm::Shadow);
                match run(&shadow, &mut copy, started).await {
                    Ok(_) => shadow.stats.record_success(copy.protocol, started.elapsed()),
                    Err(e) => shadow.stats.record_failure(e.fail_reason(), started.elapsed()),
                }
            });
        }
        drop(table);
        let arm = if req.version.as_deref().is_some_and(|v| !v.is_empty()) {
            Arm::Pinned
        } else {
            Arm::Split
        };
        let inflight = version.stats.start_request(arm);
        let result = match self.admit() {
            Ok(_admitted) => run(&version, req, received).await,
            Err(e) => Err(e),
        };
        drop(inflight);
        match &result {
            Ok(_) => version.stats.record_success(req.protocol, received.elapsed()),
            Err(e) => version.stats.record_failure(e.fail_reason(), received.elapsed()),
        }
        result
    }

    /// Refuses a request whose shapes add up to more elements than the server accepts, before anything is
    /// allocated by them.
    fn check_size(&self, req: &InferRequest) -> InferResult<()> {
        check_tensor_elements(&req.inputs, self.max_tensor_elements)
    }

    /// Requests admitted and not yet answered, across all models.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    fn admit(&self) -> InferResult<Admitted<'_>> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(InferError::Unavailable(
                "the server is shutting down: send the request to another replica".into(),
            ));
        }
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(&self.inflight);
        if self.max_inflight > 0 && before >= self.max_inflight {
            return Err(InferError::ResourceExhausted(format!(
                "inference request rejected: the server has {} requests in flight (--max-inflight-requests)",
                self.max_inflight
            )));
        }
        Ok(admitted)
    }

    pub fn server_metadata(&self) -> proto::ServerMetadataResponse {
        proto::ServerMetadataResponse {
            name: self.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            gpus: crate::gpu::gpus()
                .into_iter()
                .map(|g| proto::GpuDevice {
                    index: g.index,
                    uuid: g.uuid,
                    name: g.name,
                    memory_total_bytes: g.memory_total_bytes,
                })
                .collect(),
        }
    }

    pub fn model_metadata(&self, model: &str, version: Option<&str>) -> InferResult<proto::ModelMetadataResponse> {
        let table = self.table.load();
        let lv = table.resolve(model, version)?;
        let entry = table.entry(model)?;
        let tensors = |list: &[crate::model::TensorSpec]| -> Vec<TensorMetadata> {
            list.iter()
                .map(|t| TensorMetadata {
                    name: t.name.clone(),
                    datatype: t.datatype.name().to_string(),
                    shape: lv.spec.metadata_shape(t),
                })
                .collect()
        };
        Ok(proto::ModelMetadataResponse {
            name: lv.spec.name.clone(),
            versions: entry.versions.keys().map(i64::to_string).collect(),
            platform: lv.config.platform.clone(),
            inputs: tensors(&lv.spec.inputs),
            outputs: tensors(&lv.spec.outputs),
        })
    }

    pub fn model_config(&self, model: &str, version: Option<&str>) -> InferResult<ModelConfig> {
        Ok((*self.table.load().resolve(model, version)?.config).clone())
    }

    /// Triton's statistics for one version, every version of one model, or every model (`model` empty).
    pub fn model_statistics(&self, model: &str, version: Option<&str>) -> InferResult<proto::ModelStatisticsResponse> {
        let table = self.table.load();
        let mut versions: Vec<&Arc<LoadedVersion>> = Vec::new();
        if model.is_empty() {
            let mut names: Vec<&String> = table.models.keys().collect();
            names.sort();
            for n in names {
                versions.extend(table.models[n].versions.values());
            }
        } else if version.is_some_and(|v| !v.is_empty()) {
            versions.push(table.resolve(model, version)?);
        } else {
            versions.extend(table.entry(model)?.versions.values());
        }
        let model_stats = versions
            .into_iter()
            .map(|lv| proto::ModelStatistics {
                name: lv.spec.name.clone(),
                version: lv.version_label.clone(),
                last_inference: lv.stats.last_inference_ms(),
                inference_count: lv.stats.inference_count.load(Ordering::Relaxed),
                execution_count: lv.stats.execution_count.load(Ordering::Relaxed),
                inference_stats: Some(lv.stats.infer_statistics()),
                batch_stats: lv.stats.batch_statistics(),
                ..Default::default()
            })
            .collect();
        Ok(proto::ModelStatisticsResponse { model_stats })
    }
}

/// Refuses tensors whose shapes add up to more than `max` elements (`--max-tensor-elements`), before anything
/// is allocated by them.
pub fn check_tensor_elements(inputs: &[Tensor], max: u64) -> InferResult<()> {
    let mut total: u64 = 0;
    for t in inputs {
        let elements = t.shape.iter().fold(1u64, |n, &d| n.saturating_mul(d.max(0) as u64));
        total = total.saturating_add(elements);
        if total > max {
            return Err(InferError::TooLarge(format!(
                "request has more than {max} tensor elements (input '{}' brings it to {total}; --max-tensor-elements)",
                t.name
            )));
        }
    }
    Ok(())
}

/// The routing entry for a model that loaded (logged per version) or failed (logged with its reason).
pub(crate) fn entry_from(name: &str, result: Result<BTreeMap<i64, Arc<LoadedVersion>>, String>) -> ModelEntry {
    let result = result.and_then(|versions| {
        let config = versions.values().next().map(|v| v.config.clone()).unwrap_or_default();
        let traffic = TrafficPolicy::from_config(&config)?;
        traffic.check(|v| versions.contains_key(&v))?;
        Ok((versions, traffic))
    });
    match result {
        Ok((versions, traffic)) => {
            for v in versions.values() {
                tracing::info!(model = %name, version = v.version, "loaded model '{name}' version {} ({}, max_batch_size {})", v.version, v.config.backend, v.spec.max_batch_size);
            }
            ModelEntry::new(name, versions, ModelState::Ready, traffic)
        }
        Err(reason) => {
            tracing::error!(model = %name, "failed to load model '{name}': {reason}");
            ModelEntry::new(
                name,
                BTreeMap::new(),
                ModelState::Unavailable(reason),
                TrafficPolicy::default(),
            )
        }
    }
}

/// Validates a request against one version, queues it and waits for its rows.
async fn run(version: &LoadedVersion, req: &mut InferRequest, received: Instant) -> InferResult<InferResponse> {
    let spec = &version.spec;
    let wanted: Vec<usize> = req
        .outputs
        .iter()
        .map(|name| {
            spec.outputs.iter().position(|o| &o.name == name).ok_or_else(|| {
                InferError::invalid(format!(
                    "unexpected inference output '{name}' for model '{}'",
                    spec.name
                ))
            })
        })
        .collect::<InferResult<_>>()?;
    // Triton's request parameters: `priority` (1 is highest; 0 or absent means the model's default) and
    // `timeout` in microseconds, where the model's queue policy allows overriding its default.
    let policy = version.scheduler.policy();
    let level = match unsigned(req, "priority")? {
        None | Some(0) => policy.default_priority,
        Some(p) if (p as usize) <= policy.levels.len() => p as usize,
        Some(p) => {
            return Err(InferError::invalid(format!(
                "priority {p} is out of range for model '{}' (1 to {})",
                spec.name,
                policy.levels.len()
            )))
        }
    } - 1;
    let queue_policy = &policy.levels[level];
    let timeout = match unsigned(req, "timeout")? {
        Some(us) if queue_policy.allow_timeout_override => Some(std::time::Duration::from_micros(us)),
        _ => queue_policy.default_timeout,
    }
    .filter(|t| !t.is_zero());
    let deadline = timeout.map(|t| received + t);
    let state = deadline.map(|_| Arc::new(JobState::default()));
    let validated = validate(spec, std::mem::take(&mut req.inputs))?;
    let (reply, mut rx) = oneshot::channel();
    let job = Job {
        inputs: validated.inputs,
        rows: validated.batch,
        enqueued: received,
        reply,
        level,
        deadline,
        state: state.clone(),
        seq: 0,
    };
    version.scheduler.submit(job)?;
    let dropped = || InferError::Internal(format!("model '{}' dropped the request", spec.name));
    let result = match (deadline, state) {
        // The timeout fires while the request waits, whatever the instances are doing; once an instance has
        // taken the request it runs to the end.
        (Some(deadline), Some(state)) if queue_policy.timeout_action == TimeoutAction::Reject => {
            tokio::select! {
                r = &mut rx => r.map_err(|_| dropped())?,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if state.time_out() {
                        return Err(InferError::Timeout(format!(
                            "request for model '{}' timed out after {} us waiting in the queue",
                            spec.name,
                            timeout.unwrap_or_default().as_micros()
                        )));
                    }
                    rx.await.map_err(|_| dropped())?
                }
            }
        }
        _ => rx.await.map_err(|_| dropped())?,
    };
    let mut outputs = result?;
    if !wanted.is_empty() {
        let mut all: Vec<Option<_>> = outputs.into_iter().map(Some).collect();
        outputs = wanted.iter().filter_map(|&i| all[i].take()).collect();
    }
    Ok(InferResponse {
        id: req.id.clone(),
        model_name: spec.name.clone(),
        model_version: version.version_label.clone(),
        outputs,
    })
}
