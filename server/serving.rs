//! Serving requests: the transport-free API both front-ends call for inference, health, metadata, config and
//! statistics. An inference is admitted, checked for size, routed through the routing table (a shadow copy
//! sent on where the traffic policy says), validated against the version it landed on, handed to that
//! version's scheduler, and its outputs picked (and classified) as asked.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::classification;
use crate::error::{InferError, InferResult};
use crate::health::Drift;
use crate::model_name::ModelRef;
use crate::proto::{self, model_metadata_response::TensorMetadata, ModelConfig};
use crate::request::{InferRequest, InferResponse, RequestedOutput};
use crate::request_log;
use crate::request_trace::{ActiveTrace, RequestTracer};
use crate::routing::Routes;
use crate::scheduler::Submission;
use crate::shared_memory::SharedMemory;
use crate::spec::{ModelSpec, TensorSpec};
use crate::stats::{Arm, FailReason};
use crate::tensor::Tensor;
use crate::tokens;
use crate::validate::validate;
use crate::version::LoadedVersion;

/// The protocol extensions this server implements, as `GET /v2` lists them.
pub const EXTENSIONS: &[&str] = &[
    "classification",
    "binary_tensor_data",
    "parameters",
    "statistics",
    "model_configuration",
    "model_repository",
    "trace",
    "logging",
];

/// What serving is built from.
#[derive(Clone, Debug)]
pub struct ServingConfig {
    /// The server's name in its metadata (`--id`).
    pub server_id: String,
    /// Ready only when every model is (Triton's default).
    pub strict_readiness: bool,
    /// Requests in flight across all models before new ones are refused (0: no cap).
    pub max_inflight: usize,
    /// Most tensor elements one request may carry.
    pub max_tensor_elements: u64,
}

pub struct Serving {
    config: ServingConfig,
    routes: Arc<Routes>,
    /// False once shutdown begins, so load balancers stop sending.
    accepting: AtomicBool,
    /// Requests admitted and not yet answered, across all models.
    inflight: AtomicUsize,
    /// Which requests are traced (Triton's trace extension), and their spans' way out.
    tracer: Arc<RequestTracer>,
    /// Triton's system shared memory regions, which requests' tensors may be read from and written into.
    shared_memory: SharedMemory,
}

/// Holds one place among the requests in flight.
struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Serving {
    pub fn new(routes: Arc<Routes>, config: ServingConfig) -> Self {
        Self {
            config,
            routes,
            accepting: AtomicBool::new(true),
            inflight: AtomicUsize::new(0),
            tracer: Arc::new(RequestTracer::off()),
            shared_memory: SharedMemory::default(),
        }
    }

    /// Serving with `shared_memory` as its region registry (one that is turned off, for --allow-client-shm=false).
    pub fn with_shared_memory(mut self, shared_memory: SharedMemory) -> Self {
        self.shared_memory = shared_memory;
        self
    }

    pub fn shared_memory(&self) -> &SharedMemory {
        &self.shared_memory
    }

    /// Serving that traces requests as `tracer`'s settings say (without it, nothing is traced).
    pub fn with_tracer(mut self, tracer: Arc<RequestTracer>) -> Self {
        self.tracer = tracer;
        self
    }

    pub fn tracer(&self) -> &Arc<RequestTracer> {
        &self.tracer
    }

    pub fn routes(&self) -> &Arc<Routes> {
        &self.routes
    }

    pub fn is_live(&self) -> bool {
        true
    }

    pub fn is_ready(&self) -> bool {
        self.accepting.load(Ordering::Relaxed) && (!self.config.strict_readiness || self.routes.load().all_ready())
    }

    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::Relaxed);
    }

    /// Requests in flight before new ones are refused (0: no cap).
    pub fn max_inflight(&self) -> usize {
        self.config.max_inflight
    }

    /// Requests admitted and not yet answered, across all models.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    pub fn model_ready(&self, model: &ModelRef) -> InferResult<bool> {
        match self.routes.load().resolve(&model.name, model.version()) {
            Ok(_) => Ok(true),
            Err(InferError::Unavailable(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn infer(&self, req: InferRequest) -> InferResult<InferResponse> {
        // A trace ends here; the front-ends, which encode the response, use `infer_traced`.
        self.infer_traced(req).await.0
    }

    /// Answers a request, and hands back its trace (when it is traced) for the front-end to finish once the
    /// response is encoded.
    pub async fn infer_traced(&self, mut req: InferRequest) -> (InferResult<InferResponse>, Option<ActiveTrace>) {
        let received = Instant::now();
        let mut trace = self.tracer.begin(&req, received);
        let result = self.serve(&mut req, received, trace.as_mut()).await;
        match &result {
            Ok(r) => request_log::served(&req, &r.model_version),
            Err(e) => {
                if let Some(t) = trace.as_mut() {
                    t.failed(e);
                }
                request_log::failed(&req, e)
            }
        }
        (result, trace)
    }

    /// Routes, queues and answers one request; its inputs are taken, the rest is left for the log line.
    async fn serve(
        &self,
        req: &mut InferRequest,
        received: Instant,
        trace: Option<&mut ActiveTrace>,
    ) -> InferResult<InferResponse> {
        check_tensor_elements(&req.inputs, self.config.max_tensor_elements)?;
        // Inputs read from shared memory now; output regions held until the outputs are written into them.
        let output_regions = self.shared_memory.resolve(req)?;
        let table = self.routes.load();
        let version = table
            .route(&req.model.name, req.model.version(), req.routing_key())?
            .clone();
        if let Some(shadow) = table.shadow(&req.model.name, version.version) {
            // Tensors share their bytes, so the copy costs no payload copy.
            let mut copy = InferRequest {
                model: ModelRef {
                    name: req.model.name.clone(),
                    version: None,
                },
                routing_key: None,
                ..req.clone()
            };
            // The copy runs on its own task: the caller neither waits for it nor sees its answer.
            tokio::spawn(async move {
                let started = Instant::now();
                let _inflight = shadow.stats.start_request(Arm::Shadow);
                match run(&shadow, &mut copy, started, None).await {
                    Ok(_) => shadow.stats.record_success(copy.protocol, started.elapsed()),
                    Err(e) => shadow.stats.record_failure(FailReason::of(&e), started.elapsed()),
                }
            });
        }
        drop(table);
        let arm = if req.model.version.is_some() {
            Arm::Pinned
        } else {
            Arm::Split
        };
        let inflight = version.stats.start_request(arm);
        let result = match self.admit() {
            Ok(_admitted) => run(&version, req, received, trace)
                .await
                .and_then(|response| output_regions.write(response).map_err(InferError::from)),
            Err(e) => Err(e),
        };
        drop(inflight);
        match &result {
            Ok(_) => version.stats.record_success(req.protocol, received.elapsed()),
            Err(e) => version.stats.record_failure(FailReason::of(e), received.elapsed()),
        }
        result
    }

    fn admit(&self) -> InferResult<Admitted<'_>> {
        if !self.accepting.load(Ordering::Relaxed) {
            return Err(InferError::Unavailable(
                "the server is shutting down: send the request to another replica".into(),
            ));
        }
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(&self.inflight);
        let max = self.config.max_inflight;
        if max > 0 && before >= max {
            return Err(InferError::ResourceExhausted(format!(
                "inference request rejected: the server has {max} requests in flight (--max-inflight-requests)"
            )));
        }
        Ok(admitted)
    }

    pub fn server_metadata(&self) -> proto::ServerMetadataResponse {
        proto::ServerMetadataResponse {
            name: self.config.server_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: EXTENSIONS
                .iter()
                .copied()
                .chain(self.shared_memory.enabled().then_some("system_shared_memory"))
                .map(str::to_string)
                .collect(),
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

    pub fn model_metadata(&self, model: &ModelRef) -> InferResult<proto::ModelMetadataResponse> {
        let table = self.routes.load();
        let lv = table.resolve(&model.name, model.version())?;
        let entry = table.entry(&model.name)?;
        let tensors = |list: &[TensorSpec]| -> Vec<TensorMetadata> {
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

    pub fn model_config(&self, model: &ModelRef) -> InferResult<ModelConfig> {
        Ok((*self.routes.load().resolve(&model.name, model.version())?.config).clone())
    }

    /// The drift of one version (the one a request naming no version would reach, unless named): the latest
    /// complete window's scores against its reference profile, or, before one completes, the reference alone.
    pub fn drift(&self, model: &ModelRef) -> InferResult<serde_json::Value> {
        let table = self.routes.load();
        let lv = table.resolve(&model.name, model.version())?;
        let monitor = match &lv.health.drift {
            Drift::Watching(m) => m,
            Drift::Off(why) => return Err(InferError::NotFound(why.clone())),
        };
        let (pending_rows, completed) = monitor.progress();
        let latest = monitor.latest();
        let (inputs, outputs) = match &latest {
            Some(r) => (r.inputs.clone(), r.outputs.clone()),
            None => monitor.pending(),
        };
        Ok(serde_json::json!({
            "model": lv.spec.name,
            "version": lv.version.to_string(),
            "profile": monitor.path.display().to_string(),
            "window_rows": monitor.config.window,
            "sample": monitor.config.sample,
            "reference_rows": monitor.profile.rows,
            "windows_completed": completed,
            "pending_rows": pending_rows,
            "updated": latest.as_ref().map(|r| r.updated),
            "psi_max": latest.as_ref().map(|r| r.psi_max),
            "inputs": inputs,
            "outputs": outputs,
        }))
    }

    /// Triton's statistics for one version, every version of one model, or every model (`None`).
    pub fn model_statistics(&self, model: Option<&ModelRef>) -> InferResult<proto::ModelStatisticsResponse> {
        let table = self.routes.load();
        let mut versions: Vec<&Arc<LoadedVersion>> = Vec::new();
        match model {
            None => {
                let mut names: Vec<&String> = table.models.keys().collect();
                names.sort();
                for n in names {
                    versions.extend(table.models[n].versions.values());
                }
            }
            Some(m) if m.version.is_some() => versions.push(table.resolve(&m.name, m.version())?),
            Some(m) => versions.extend(table.entry(&m.name)?.versions.values()),
        }
        let model_stats = versions
            .into_iter()
            .map(|lv| proto::ModelStatistics {
                name: lv.spec.name.clone(),
                version: lv.version.to_string(),
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

/// An output a request asked for: where it stands among the model's outputs, and whether to classify it.
struct Selected {
    index: usize,
    classes: Option<usize>,
}

/// The requested outputs, each found among the model's once; classification only where the type ranks.
fn select_outputs(spec: &ModelSpec, requested: &[RequestedOutput]) -> InferResult<Vec<Selected>> {
    let mut selected: Vec<Selected> = Vec::with_capacity(requested.len());
    for out in requested {
        let index = spec.outputs.iter().position(|o| o.name == out.name).ok_or_else(|| {
            InferError::invalid(format!(
                "unexpected inference output '{}' for model '{}'",
                out.name, spec.name
            ))
        })?;
        if selected.iter().any(|s| s.index == index) {
            return Err(InferError::invalid(format!(
                "output '{}' is requested more than once for model '{}'",
                out.name, spec.name
            )));
        }
        if out.classification.is_some() {
            classification::check_type(spec.outputs[index].datatype)?;
        }
        selected.push(Selected {
            index,
            classes: out.classification,
        });
    }
    Ok(selected)
}

/// Validates a request against one version, has its scheduler run it, and answers with the outputs asked for.
async fn run(
    version: &LoadedVersion,
    req: &mut InferRequest,
    received: Instant,
    mut trace: Option<&mut ActiveTrace>,
) -> InferResult<InferResponse> {
    if let Some(t) = trace.as_deref_mut() {
        t.routed(&version.version.to_string());
    }
    let spec = &version.spec;
    let selected = select_outputs(spec, &req.outputs)?;
    let watched;
    let mut text_tokens = None;
    let submission = {
        let priority = req.unsigned_parameter("priority")?;
        let timeout_us = req.unsigned_parameter("timeout")?;
        let validated = validate(spec, std::mem::take(&mut req.inputs))?;
        if let (Some(recipe), Some(Some(text))) = (&version.text, validated.inputs.first()) {
            let truncate = tokens::truncate_parameter(req)?;
            text_tokens = Some(tokens::count_off_thread(recipe, &spec.name, text, truncate).await?);
        }
        if let Some(rules) = &version.health.rules {
            rules.check(&validated.inputs, validated.batch, &spec.name, version.version, &req.id)?;
        }
        // The monitor sees the inputs after the model ran; keeping them costs a reference count each.
        watched = version.health.monitor().map(|monitor| {
            let inputs: Vec<_> = validated
                .inputs
                .iter()
                .map(|t| t.as_ref().map(|t| t.data.clone()))
                .collect();
            (monitor, inputs, validated.batch)
        });
        Submission {
            inputs: validated.inputs,
            rows: validated.batch,
            received,
            executed: trace.as_deref_mut().map(ActiveTrace::queued),
            priority,
            timeout_us,
            sequence: req.sequence.clone(),
            tokens: text_tokens.map_or(0, |t| t.longest),
        }
    };
    let all = version.scheduler.submit(submission).await;
    if let Some(t) = trace {
        t.answered();
    }
    let all = all?;
    if let Some((monitor, inputs, rows)) = &watched {
        monitor.observe(inputs, &all, *rows);
    }
    let outputs = if selected.is_empty() {
        all
    } else {
        let mut all: Vec<Option<Tensor>> = all.into_iter().map(Some).collect();
        selected
            .iter()
            .map(|s| {
                let tensor = all
                    .get_mut(s.index)
                    .and_then(Option::take)
                    .ok_or_else(|| InferError::Internal(format!("model '{}' gave no output {}", spec.name, s.index)))?;
                match s.classes {
                    None => Ok(tensor),
                    Some(k) => {
                        let labels = version.labels.get(s.index).map_or(&[][..], Vec::as_slice);
                        classification::top_k(&tensor, k, spec.batches(), labels)
                    }
                }
            })
            .collect::<InferResult<Vec<_>>>()?
    };
    Ok(InferResponse {
        id: req.id.clone(),
        model_name: spec.name.clone(),
        model_version: version.version.to_string(),
        outputs,
        in_regions: Vec::new(),
        text_tokens,
    })
}
