//! Starting and stopping a whole server: backends, the model repository, and the HTTP, gRPC and metrics
//! listeners. Tests start it on port 0 and read the bound addresses back.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::backend::candle::CandleBackend;
use crate::backend::ort::{find_library, OrtBackend};
use crate::backend::Backend;
use crate::cli::{ModelControlMode, ServeArgs};
use crate::core::Core;
use crate::metrics::Metrics;
use crate::protocol::{grpc, http};
use crate::routing::ModelState;
use crate::tls::{TlsFiles, TlsListener};

pub struct RunningServer {
    pub core: Arc<Core>,
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<Result<(), String>>,
}

fn signal(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|stop| *stop).await;
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the {what} port {addr}: {e}"))
}

/// Serves `app` on `listener`, over TLS when `tls` is given.
async fn serve_axum(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use axum::serve::ListenerExt;
    match tls {
        Some(acceptor) => {
            let listener = TlsListener::new(listener, acceptor, signal(&stop)).map_err(|e| e.to_string())?;
            axum::serve(listener, app).with_graceful_shutdown(signal(&stop)).await
        }
        None => {
            // Small responses go out at once rather than waiting on Nagle's algorithm for the client's delayed
            // ACK.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app).with_graceful_shutdown(signal(&stop)).await
        }
    }
    .map_err(|e| e.to_string())
}

/// Serves gRPC on `listener`, over TLS when `tls` is given.
async fn serve_grpc(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    svc: grpc::GrpcServer,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let server = tonic::transport::Server::builder().add_service(svc);
    match tls {
        Some(acceptor) => {
            let ready = crate::tls::accept(listener, acceptor, signal(&stop));
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(ready), |(tls, _)| {
                    Ok::<_, std::io::Error>(tls)
                });
            server.serve_with_incoming_shutdown(incoming, signal(&stop)).await
        }
        None => {
            // With its own incoming stream tonic leaves TCP_NODELAY alone; without it a response written in two
            // parts (headers, then a data frame) waits ~40 ms on the client's delayed ACK.
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(listener), |conn| {
                    if let Ok(tcp) = &conn {
                        let _ = tcp.set_nodelay(true);
                    }
                    conn
                });
            server.serve_with_incoming_shutdown(incoming, signal(&stop)).await
        }
    }
    .map_err(|e| e.to_string())
}

/// Loads the models and starts listening. Returns once every listener is bound.
pub async fn start(args: ServeArgs) -> anyhow::Result<RunningServer> {
    // Certificates first: a TLS mistake should not wait for every model to load to be reported.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            TlsFiles {
                cert,
                key,
                client_ca: args.tls_client_ca.as_deref(),
            }
            .acceptors()?,
        ),
        _ => None,
    };
    let library = find_library(args.onnxruntime_library.as_deref()).map_err(anyhow::Error::msg)?;
    let ort = OrtBackend::new(library, args.intra_op_threads.max(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let backends: Vec<Arc<dyn Backend>> = vec![Arc::new(ort), Arc::new(CandleBackend::new())];
    let core = Arc::new(
        Core::new(
            args.id.clone(),
            args.model_repositories.clone(),
            backends,
            args.strict_readiness,
            args.max_inflight_requests,
            args.model_control_mode == ModelControlMode::Explicit,
        )
        .with_admin_token(args.admin_token.clone())
        .with_detailed_metrics(args.allow_metrics)
        .with_max_tensor_elements(args.max_tensor_elements),
    );
    if args.admin_token.is_none() && args.model_control_mode == ModelControlMode::Explicit {
        tracing::warn!(
            "admin endpoints (repository load/unload) are open: set --admin-token to require a bearer token"
        );
    }
    match crate::gpu::unavailable_reason() {
        None => {
            for g in crate::gpu::gpus() {
                tracing::info!(gpu = g.index, uuid = %g.uuid, "GPU {}: {} ({} MiB)", g.index, g.name, g.memory_total_bytes >> 20);
            }
        }
        Some(why) => tracing::info!("no GPU in use: {why}"),
    }
    let poll_baseline =
        (args.model_control_mode == ModelControlMode::Poll).then(|| crate::watch::snapshot(&args.model_repositories));
    let only = (args.model_control_mode == ModelControlMode::Explicit).then_some(&args.load_models[..]);
    core.load_repository(only).await.map_err(anyhow::Error::msg)?;
    if args.exit_on_error {
        let table = core.table();
        if let Some((name, reason)) = table.models.iter().find_map(|(n, e)| match &e.state {
            ModelState::Unavailable(r) => Some((n.clone(), r.clone())),
            ModelState::Ready => None,
        }) {
            anyhow::bail!("model '{name}' failed to load: {reason}");
        }
    }

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut http_addr = None;
    if args.allow_http {
        let listener = bind(SocketAddr::new(args.http_address, args.http_port), "HTTP").await?;
        http_addr = Some(listener.local_addr()?);
        let app = http::router(core.clone(), args.http_max_body_bytes);
        tasks.spawn(serve_axum(
            listener,
            tls.as_ref().map(|t| t.http.clone()),
            app,
            rx.clone(),
        ));
    }
    let mut grpc_addr = None;
    if args.allow_grpc {
        let listener = bind(SocketAddr::new(args.grpc_address, args.grpc_port), "gRPC").await?;
        grpc_addr = Some(listener.local_addr()?);
        let svc = grpc::service(core.clone(), args.grpc_max_message_bytes);
        let tls = tls.as_ref().map(|t| t.grpc.clone());
        tasks.spawn(serve_grpc(listener, tls, svc, rx.clone()));
    }
    let mut metrics_addr = None;
    if args.allow_metrics {
        let listener = bind(SocketAddr::new(args.metrics_address, args.metrics_port), "metrics").await?;
        metrics_addr = Some(listener.local_addr()?);
        let app = crate::metrics::router(core.clone(), Arc::new(Metrics::new()));
        tasks.spawn(serve_axum(listener, None, app, rx.clone()));
    }
    if let Some(known) = poll_baseline {
        let interval = std::time::Duration::from_secs(args.repository_poll_secs.max(1));
        let watcher = crate::watch::watch(
            core.clone(),
            args.model_repositories.clone(),
            interval,
            known,
            signal(&rx),
        );
        tasks.spawn(async move {
            watcher.await;
            Ok(())
        });
    }
    let guard = crate::rollback::guard(core.clone(), signal(&rx));
    tasks.spawn(async move {
        guard.await;
        Ok(())
    });
    Ok(RunningServer {
        core,
        http_addr,
        grpc_addr,
        metrics_addr,
        shutdown,
        tasks,
    })
}

impl RunningServer {
    /// Stops accepting (reporting not-ready first), lets in-flight requests finish, and waits for the
    /// listeners to close.
    pub async fn shutdown(mut self) {
        self.core.stop_accepting();
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!("listener ended with an error: {e}");
            }
        }
    }

    /// Waits until a listener fails (a normal run never returns from here).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(Err(e))) => anyhow::bail!("a listener failed: {e}"),
            Some(Err(e)) => anyhow::bail!("a listener task failed: {e}"),
            _ => Ok(()),
        }
    }
}
