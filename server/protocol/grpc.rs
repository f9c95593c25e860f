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
use crate::serving::Serving;

pub struct GrpcService {
    serving: Arc<Serving>,
    admin: Arc<Admin>,
}

/// The service as served: a message over `--grpc-max-message-bytes` is refused by tonic before it is
/// buffered, and answered RESOURCE_EXHAUSTED (see `grpc_limit`).
pub type GrpcServer = MessageLimit<GrpcInferenceServiceServer<GrpcService>>;

pub fn service(api: Api, max_message_bytes: usize) -> GrpcServer {
    let Api { serving, admin } = api;
    MessageLimit(
        GrpcInferenceServiceServer::new(GrpcService { serving, admin })
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes),
    )
}

/// What a call's metadata adds to its requests: a routing key and a request id for logs.
#[derive(Clone, Default)]
struct Transport {
    routing_key: Option<String>,
    request_id: Option<String>,
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
        let response = self.serving.infer(request).await?;
        Ok(Response::new(encode_response(response)))
    }

    type ModelStreamInferStream = StreamResponses;

    /// Each request on the stream runs concurrently; responses (or per-request errors, which leave the stream
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
            while let Some(next) = inbound.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = fail.send(over_limit(&status).unwrap_or(status));
                        break;
                    }
                };
                let (serving, tx, transport) = (serving.clone(), tx.clone(), transport.clone());
                tokio::spawn(async move {
                    let id = request.id.clone();
                    let result = match transport.decode(request) {
                        Ok(r) => serving.infer(r).await,
                        Err(e) => Err(e),
                    };
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
    // Shared memory, trace and log settings: filled in by issue 16's work (temporary until then).
    async fn system_shared_memory_status(
        &self,
        _: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        Err(Status::unimplemented("system shared memory"))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        Err(Status::unimplemented("system shared memory"))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        Err(Status::unimplemented("system shared memory"))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        Err(Status::unimplemented("CUDA shared memory"))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(Status::unimplemented("CUDA shared memory"))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Err(Status::unimplemented("CUDA shared memory"))
    }

    async fn trace_setting(&self, _: Request<TraceSettingRequest>) -> Result<Response<TraceSettingResponse>, Status> {
        Err(Status::unimplemented("trace settings"))
    }

    async fn log_settings(&self, _: Request<LogSettingsRequest>) -> Result<Response<LogSettingsResponse>, Status> {
        Err(Status::unimplemented("log settings"))
    }
}
