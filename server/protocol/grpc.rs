//! The gRPC front-end (tonic): `inference.GRPCInferenceService`, wire-compatible with Triton's, so stock
//! clients (tritonclient, perf_analyzer) work unchanged.
use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::grpc_limit::{over_limit, MessageLimit};
use super::grpc_stream_order::SequenceOrder;
use super::grpc_tensors::{decode_request, encode_response};
use super::Api;
use crate::admin::{Admin, Caller};
use crate::error::{InferError, InferResult};
use crate::lifecycle::LoadRequest;
use crate::model_name::{ModelName, ModelRef};
use crate::proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use crate::proto::*;
use crate::repository::{LoadError, LoadFailure};
use crate::request::{InferRequest, Protocol, REQUEST_ID, ROUTING_KEY};
use crate::request_log;
use crate::request_trace::{Shown, TraceParent, Update, TRACEPARENT, TRACESTATE};
use crate::serving::Serving;

pub struct GrpcService {
    serving: Arc<Serving>,
    admin: Arc<Admin>,
}

/// The service as served: a message over `--grpc-max-message-bytes` is refused by tonic before it is
/// buffered, and answered RESOURCE_EXHAUSTED (see `grpc_limit`).
pub type GrpcServer = MessageLimit<GrpcInferenceServiceServer<GrpcService>>;

pub fn service(api: Api, max_message_bytes: usize) -> GrpcServer {
    let Api { serving, admin, .. } = api;
    MessageLimit(
        GrpcInferenceServiceServer::new(GrpcService { serving, admin })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    )
}

/// What a call's metadata adds to its requests: a routing key, a request id for logs, and the caller's trace
/// context (W3C `traceparent`).
#[derive(Clone, Default)]
struct Transport {
    routing_key: Option<String>,
    request_id: Option<String>,
    trace_parent: Option<TraceParent>,
}

impl Transport {
    fn of<T>(req: &Request<T>) -> Self {
        let get = |key: &str| {
            req.metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Self {
            routing_key: get(ROUTING_KEY),
            request_id: get(REQUEST_ID),
            trace_parent: get(TRACEPARENT).and_then(|p| TraceParent::parse(&p, get(TRACESTATE).as_deref())),
        }
    }

    /// Decodes one request of the call; one that cannot be decoded is logged and refused.
    fn decode(&self, msg: ModelInferRequest) -> InferResult<InferRequest> {
        let mut request = decode_request(msg).map_err(|u| {
            let id = Some(u.id.as_str())
                .filter(|i| !i.is_empty())
                .or(self.request_id.as_deref());
            request_log::undecodable(Protocol::Grpc, &u.model, id, &u.error);
            u.error
        })?;
        request.routing_key = self.routing_key.clone();
        request.trace_parent = self.trace_parent.clone();
        if request.id.is_empty() {
            request.id = self.request_id.clone().unwrap_or_default();
        }
        Ok(request)
    }
}

/// Who made an admin call: its connection's peer and its `authorization` metadata.
fn caller<T>(req: &Request<T>) -> Caller<'_> {
    Caller {
        peer: req.remote_addr(),
        authorization: req.metadata().get("authorization").and_then(|v| v.to_str().ok()),
    }
}

/// The model (and version) a call names, checked.
fn target(name: &str, version: &str) -> Result<ModelRef, Status> {
    Ok(ModelRef::parse(name, Some(version)).map_err(InferError::from)?)
}

fn model_name(name: &str) -> Result<ModelName, Status> {
    Ok(ModelName::parse(name).map_err(InferError::from)?)
}

/// Triton's load parameters: `config` (a string holding JSON) and `file:<version>/<name>` files as bytes.
fn load_request(r: RepositoryModelLoadRequest) -> Result<LoadRequest, LoadError> {
    use model_repository_parameter::ParameterChoice;
    let config = match r.parameters.get("config").and_then(|p| p.parameter_choice.as_ref()) {
        None => None,
        Some(ParameterChoice::StringParam(s)) => Some(s.clone()),
        Some(_) => {
            return Err(LoadError::Parameter(
                "parameter 'config' must be a string holding JSON".into(),
            ))
        }
    };
    let mut files = Vec::new();
    for (key, p) in r.parameters {
        let Some(rel) = key.strip_prefix("file:") else { continue };
        match p.parameter_choice {
            Some(ParameterChoice::BytesParam(b)) => files.push((rel.to_string(), b.to_vec())),
            _ => return Err(LoadError::Parameter(format!("parameter '{key}' must hold bytes"))),
        }
    }
    Ok(LoadRequest { config, files })
}

type StreamResponses = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for GrpcService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse {
            live: self.serving.is_live(),
        }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.serving.is_ready(),
        }))
    }

    /// Like Triton, an unknown model or version is simply not ready here (HTTP answers 404 for it).
    async fn model_ready(&self, req: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let ready = match self.serving.model_ready(&target(&r.name, &r.version)?) {
            Err(InferError::NotFound(_)) => false,
            other => other?,
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(self.serving.server_metadata()))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(
            self.serving.model_metadata(&target(&r.name, &r.version)?)?,
        ))
    }

    async fn model_infer(&self, req: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let request = Transport::of(&req).decode(req.into_inner())?;
        // A failed request's trace ends as it is dropped.
        let (response, trace) = self.serving.infer_traced(request).await;
        let encoded = encode_response(response?);
        if let Some(trace) = trace {
            trace.finish();
        }
        Ok(Response::new(encoded))
    }

    type ModelStreamInferStream = StreamResponses;

    /// Each request on the stream runs concurrently (a sequence's requests one after another, in the order
    /// sent); responses (or per-request errors, which leave the stream
    /// open) come back as they complete, carrying the request's id. An inbound stream that fails (a message
    /// over `--grpc-max-message-bytes`, one that does not decode) ends the call with that status, once the
    /// requests already running have answered.
    async fn model_stream_infer(
        &self,
        req: Request<Streaming<ModelInferRequest>>,
    ) -> Result<Response<StreamResponses>, Status> {
        let transport = Transport::of(&req);
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let (fail, failed) = oneshot::channel::<Status>();
        let serving = self.serving.clone();
        tokio::spawn(async move {
            let mut sequences = SequenceOrder::default();
            while let Some(next) = inbound.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = fail.send(over_limit(&status).unwrap_or(status));
                        break;
                    }
                };
                let (serving, tx, transport) = (serving.clone(), tx.clone(), transport.clone());
                let mut turn = sequences.turn(&request);
                tokio::spawn(async move {
                    let id = request.id.clone();
                    turn.wait().await;
                    let (result, trace) = match transport.decode(request) {
                        Ok(r) => serving.infer_traced(r).await,
                        Err(e) => (Err(e), None),
                    };
                    drop(turn);
                    let message = match result {
                        Ok(resp) => ModelStreamInferResponse {
                            error_message: String::new(),
                            infer_response: Some(encode_response(resp)),
                        },
                        Err(e) => ModelStreamInferResponse {
                            error_message: e.to_string(),
                            infer_response: Some(ModelInferResponse {
                                id,
                                ..Default::default()
                            }),
                        },
                    };
                    if let Some(trace) = trace {
                        trace.finish();
                    }
                    let _ = tx.send(Ok(message)).await;
                });
            }
        });
        // The channel ends once the reader and every running request have dropped their senders.
        let end = futures::stream::once(failed).filter_map(|f| f.ok().map(Err));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).chain(end))))
    }

    async fn model_config(&self, req: Request<ModelConfigRequest>) -> Result<Response<ModelConfigResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(ModelConfigResponse {
            config: Some(self.serving.model_config(&target(&r.name, &r.version)?)?),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        // An empty name asks for every model.
        let model = match r.name.is_empty() {
            true => None,
            false => Some(target(&r.name, &r.version)?),
        };
        Ok(Response::new(self.serving.model_statistics(model.as_ref())?))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let models = self.admin.repository_index(req.into_inner().ready).await?;
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let by = self.admin.authorize(
            &caller(&req),
            &format!("RepositoryModelLoad {}", req.get_ref().model_name),
        )?;
        let name = model_name(&req.get_ref().model_name)?;
        let request = load_request(req.into_inner()).map_err(|error| {
            InferError::from(LoadFailure {
                model: name.clone(),
                error,
            })
        })?;
        self.admin.load(by, &name, request).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let by = self.admin.authorize(
            &caller(&req),
            &format!("RepositoryModelUnload {}", req.get_ref().model_name),
        )?;
        let name = model_name(&req.get_ref().model_name)?;
        self.admin.unload(by, &name).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
    // Triton's shared memory extension: system regions, and CUDA answered without CUDA IPC.
    async fn system_shared_memory_status(
        &self,
        req: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        let name = req.into_inner().name;
        // An empty name asks for every region.
        let regions = self
            .serving
            .shared_memory()
            .status(Some(name.as_str()).filter(|n| !n.is_empty()))
            .map_err(InferError::from)?
            .into_iter()
            .map(|r| {
                let status = system_shared_memory_status_response::RegionStatus {
                    name: r.name.clone(),
                    key: r.key,
                    offset: r.offset,
                    byte_size: r.byte_size,
                };
                (r.name, status)
            })
            .collect();
        Ok(Response::new(SystemSharedMemoryStatusResponse { regions }))
    }

    async fn system_shared_memory_register(
        &self,
        req: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        let r = req.into_inner();
        self.serving
            .shared_memory()
            .register(&r.name, &r.key, r.offset, r.byte_size)
            .map_err(InferError::from)?;
        Ok(Response::new(SystemSharedMemoryRegisterResponse {}))
    }

    async fn system_shared_memory_unregister(
        &self,
        req: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        let name = req.into_inner().name;
        // An empty name unregisters every region.
        self.serving
            .shared_memory()
            .unregister(Some(name.as_str()).filter(|n| !n.is_empty()))
            .map_err(InferError::from)?;
        Ok(Response::new(SystemSharedMemoryUnregisterResponse {}))
    }

    /// This build has no CUDA IPC: no CUDA region is ever registered.
    async fn cuda_shared_memory_status(
        &self,
        req: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        let name = req.into_inner().name;
        self.serving
            .shared_memory()
            .cuda_status(Some(name.as_str()).filter(|n| !n.is_empty()))
            .map_err(InferError::from)?;
        Ok(Response::new(CudaSharedMemoryStatusResponse::default()))
    }

    async fn cuda_shared_memory_register(
        &self,
        req: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        self.serving
            .shared_memory()
            .cuda_register(&req.into_inner().name)
            .map_err(InferError::from)?;
        Ok(Response::new(CudaSharedMemoryRegisterResponse {}))
    }

    /// Nothing is ever registered as CUDA shared memory, so there is nothing to unregister (as in Triton, an
    /// unknown name is not an error).
    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Ok(Response::new(CudaSharedMemoryUnregisterResponse {}))
    }

    /// Triton's trace extension: settings in the request are applied (to the model named, or globally) and the
    /// settings then in force are answered; an empty value list clears a setting. With no settings it only
    /// reads, as Triton's does.
    async fn trace_setting(&self, req: Request<TraceSettingRequest>) -> Result<Response<TraceSettingResponse>, Status> {
        let what = format!("TraceSetting {}", req.get_ref().model_name);
        let caller = caller(&req);
        let r = req.get_ref();
        let model = match r.model_name.is_empty() {
            true => None,
            false => Some(super::http_trace::served_model(&self.serving, &r.model_name)?),
        };
        let tracer = self.serving.tracer();
        if !r.settings.is_empty() {
            self.admin.authorize_settings(&caller, &what)?;
            let update = Update::parse(
                r.settings
                    .iter()
                    .map(|(k, v)| (k.as_str(), (!v.value.is_empty()).then_some(v.value.as_slice()))),
            )?;
            tracer.update(model.as_deref(), update);
        }
        let settings = tracer
            .settings(model.as_deref())
            .into_iter()
            .map(|(k, v)| {
                let value = match v {
                    Shown::One(s) => vec![s],
                    Shown::List(l) => l,
                };
                (k.to_string(), trace_setting_response::SettingValue { value })
            })
            .collect();
        Ok(Response::new(TraceSettingResponse { settings }))
    }

    async fn log_settings(&self, req: Request<LogSettingsRequest>) -> Result<Response<LogSettingsResponse>, Status> {
        let answer = super::grpc_logging::log_settings(&self.admin, &caller(&req), req.get_ref().clone())?;
        Ok(Response::new(answer))
    }
}
