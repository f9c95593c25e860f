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
use crate::core::Core;
use crate::error::{InferError, InferResult};
use crate::proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use crate::proto::*;
use crate::request::{InferRequest, Protocol, REQUEST_ID, ROUTING_KEY};
use crate::request_log;

pub struct GrpcService {
    core: Arc<Core>,
}

/// The service as served: a message over `--grpc-max-message-bytes` is refused by tonic before it is
/// buffered, and answered RESOURCE_EXHAUSTED (see `grpc_limit`).
pub type GrpcServer = MessageLimit<GrpcInferenceServiceServer<GrpcService>>;

pub fn service(core: Arc<Core>, max_message_bytes: usize) -> GrpcServer {
    MessageLimit(
        GrpcInferenceServiceServer::new(GrpcService { core })
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

/// The `authorization` metadata of a call, for admin RPCs.
fn bearer<T>(req: &Request<T>) -> Option<&str> {
    req.metadata().get("authorization").and_then(|v| v.to_str().ok())
}

fn version(v: &str) -> Option<&str> {
    Some(v).filter(|v| !v.is_empty())
}

type StreamResponses = Pin<Box<dyn Stream<Item = Result<ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for GrpcService {
    async fn server_live(&self, _: Request<ServerLiveRequest>) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse {
            live: self.core.is_live(),
        }))
    }

    async fn server_ready(&self, _: Request<ServerReadyRequest>) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: self.core.is_ready(),
        }))
    }

    /// Like Triton, an unknown model or version is simply not ready here (HTTP answers 404 for it).
    async fn model_ready(&self, req: Request<ModelReadyRequest>) -> Result<Response<ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let ready = match self.core.model_ready(&r.name, version(&r.version)) {
            Err(InferError::NotFound(_)) => false,
            other => other?,
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(self.core.server_metadata()))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.core.model_metadata(&r.name, version(&r.version))?))
    }

    async fn model_infer(&self, req: Request<ModelInferRequest>) -> Result<Response<ModelInferResponse>, Status> {
        let request = Transport::of(&req).decode(req.into_inner())?;
        let response = self.core.infer(request).await?;
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
        let core = self.core.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let request = match next {
                    Ok(request) => request,
                    Err(status) => {
                        let _ = fail.send(over_limit(&status).unwrap_or(status));
                        break;
                    }
                };
                let (core, tx, transport) = (core.clone(), tx.clone(), transport.clone());
                tokio::spawn(async move {
                    let id = request.id.clone();
                    let result = match transport.decode(request) {
                        Ok(r) => core.infer(r).await,
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
            config: Some(self.core.model_config(&r.name, version(&r.version))?),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(self.core.model_statistics(&r.name, version(&r.version))?))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let models = self.core.repository_index(req.into_inner().ready)?;
        Ok(Response::new(RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        self.core.authorize_admin(bearer(&req))?;
        let r = req.into_inner();
        let config = match r.parameters.get("config").and_then(|p| p.parameter_choice.as_ref()) {
            None => None,
            Some(model_repository_parameter::ParameterChoice::StringParam(s)) => Some(s.clone()),
            Some(_) => return Err(InferError::invalid("parameter 'config' must be a string holding JSON").into()),
        };
        let mut files = Vec::new();
        for (key, p) in &r.parameters {
            let Some(rel) = key.strip_prefix("file:") else { continue };
            match &p.parameter_choice {
                Some(model_repository_parameter::ParameterChoice::BytesParam(b)) => {
                    files.push((rel.to_string(), b.to_vec()))
                }
                _ => return Err(InferError::invalid(format!("parameter '{key}' must hold bytes")).into()),
            }
        }
        self.core.load(&r.model_name, config.as_deref(), files).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        self.core.authorize_admin(bearer(&req))?;
        self.core.unload(&req.into_inner().model_name).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}
