//! Starting and stopping a whole server: backends, the model repository, serving and admin built from the
//! command line, and the HTTP, gRPC and metrics listeners. Tests start it on port 0 and read the bound
//! addresses back.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::admin::{Admin, AdminAccess, AdminConfig};
use crate::backend::candle::CandleBackend;
use crate::backend::identity::IdentityBackend;
use crate::backend::ort::{find_library, OrtBackend};
use crate::backend::Backend;
use crate::cli::{ModelControlMode, ServeArgs};
use crate::io_threads::{Coalescing, Connections, IoThreads};
use crate::lifecycle::{Lifecycle, LifecycleConfig};
use crate::metrics::Metrics;
use crate::model_name::ModelName;
use crate::protocol::grpc_write_buffer::WriteBuffer;
use crate::protocol::text_input::ApiKey;
use crate::protocol::{grpc, http, Api, TextRoutes};
use crate::registry::{default_cache_dir, Registry, RegistryConfig};
use crate::repository::VersionOptions;
use crate::request_trace::{RequestTracer, TraceConfig};
use crate::routing::{ModelState, Routes};
use crate::serving::{Serving, ServingConfig};
use crate::shared_memory::SharedMemory;
use crate::tls::{TlsFiles, TlsListener};

pub struct RunningServer {
    pub serving: Arc<Serving>,
    pub lifecycle: Arc<Lifecycle>,
    pub http_addr: Option<SocketAddr>,
    pub grpc_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<Result<(), String>>,
    /// Outlives `tasks`: the plain-TCP front-ends run on these threads.
    _io_threads: Option<IoThreads>,
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

/// Serves `app` on `listener` on the main runtime, over TLS when `tls` is given (the metrics port, and HTTP over
/// TLS).
async fn serve_axum(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: axum::Router,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    use axum::serve::ListenerExt;
    match tls {
        Some(acceptor) => {
            // Tapped (to no effect) so that axum hands the peer's address to the handlers, as it does below.
            let listener = TlsListener::new(listener, acceptor, signal(&stop))
                .map_err(|e| e.to_string())?
                .tap_io(|_| {});
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(signal(&stop))
                .await
        }
        None => {
            // Small responses go out at once rather than waiting on Nagle's algorithm for the client's delayed
            // ACK.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            // The peer's address reaches the handlers (admin requests are judged by it).
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(signal(&stop))
                .await
        }
    }
    .map_err(|e| e.to_string())
}

/// Serves `app` over the plain-TCP connections handed to one front-end thread.
async fn serve_axum_on(conns: Connections, app: axum::Router, stop: watch::Receiver<bool>) -> Result<(), String> {
    use axum::serve::ListenerExt;
    // The peer's address reaches the handlers (admin requests are judged by it); axum hands it over for a tapped
    // listener.
    axum::serve(
        conns.tap_io(|_| {}),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal(&stop))
    .await
    .map_err(|e| e.to_string())
}

/// Serves gRPC with at most `max_streams` calls in progress per connection: over TLS on the main runtime, or over
/// the plain-TCP connections handed to one front-end thread (their writes gathered until h2 flushes, see
/// `grpc_write_buffer`).
async fn serve_grpc(
    incoming: GrpcIncoming,
    svc: grpc::GrpcServer,
    max_streams: u32,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    // tonic's default (none) would override hyper's and advertise no SETTINGS_MAX_CONCURRENT_STREAMS at all.
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(max_streams)
        .add_service(svc);
    match incoming {
        GrpcIncoming::Tls(listener, acceptor) => {
            let ready = crate::tls::accept(listener, acceptor, signal(&stop));
            let incoming =
                tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(ready), |(tls, _)| {
                    Ok::<_, std::io::Error>(WriteBuffer::new(tls))
                });
            server.serve_with_incoming_shutdown(incoming, signal(&stop)).await
        }
        // TCP_NODELAY is set where the connection was accepted: without it a response written in two parts
        // would wait ~40 ms on the client's delayed ACK.
        GrpcIncoming::Handed(conns) => {
            server
                .serve_with_incoming_shutdown(conns.into_grpc_incoming(), signal(&stop))
                .await
        }
    }
    .map_err(|e| e.to_string())
}

enum GrpcIncoming {
    Tls(TcpListener, TlsAcceptor),
    Handed(Connections),
}

/// Front-end threads unless `--runtime-threads` says: half the cores, at least one. The other half is left to the
/// model instances and to the clients that share the machine; a front-end thread with more connections finds
/// more of them ready each time it polls, and sleeps and wakes less per request (on 2 cores at c=32, one thread
/// spent less CPU per request than two at the same throughput: benches/RESULTS.md, issue 17).
fn default_front_end_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |cores| (cores.get() / 2).max(1))
}

/// The plain-TCP front-ends' threads, started the first time one needs them.
fn front_end_threads(
    threads: &mut Option<IoThreads>,
    count: usize,
    coalescing: Coalescing,
) -> anyhow::Result<&IoThreads> {
    let started = match threads.take() {
        Some(started) => started,
        None => IoThreads::start(count, coalescing)
            .map_err(|e| anyhow::anyhow!("cannot start the front-end threads: {e}"))?,
    };
    Ok(threads.insert(started))
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
    // Names given on the command line are checked as a request's would be.
    let load_models = args
        .load_models
        .iter()
        .map(|n| ModelName::parse(n))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--load-model: {e}"))?;
    // Trace settings checked before any model loads; the exporter starts its thread and HTTP client off the
    // async workers.
    let trace_config = TraceConfig::parse(&args.trace_config).map_err(anyhow::Error::msg)?;
    let tracer = tokio::task::spawn_blocking(move || RequestTracer::start(&trace_config))
        .await?
        .map_err(anyhow::Error::msg)?;
    let library = find_library(args.onnxruntime_library.as_deref()).map_err(anyhow::Error::msg)?;
    let ort = OrtBackend::new(library, args.intra_op_threads.max(1)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let backends: Vec<Arc<dyn Backend>> = vec![
        Arc::new(ort),
        Arc::new(CandleBackend::new()),
        Arc::new(IdentityBackend::new()),
    ];
    let config = RegistryConfig {
        locations: args.model_repositories.clone(),
        cache_dir: args.model_cache_dir.clone().unwrap_or_else(default_cache_dir),
        download_concurrency: args.model_download_concurrency as usize,
    };
    // Opening the caches reads and clears folders: off the async workers.
    let registry = Arc::new(tokio::task::spawn_blocking(move || Registry::new(config)).await??);
    // Remote repositories listed (or, unreachable, served from the cache); one that can be neither stops the
    // start with --exit-on-error, and otherwise serves nothing until it can be listed.
    for failed in registry.start().await {
        if args.exit_on_error {
            anyhow::bail!("{failed}");
        }
        tracing::error!(
            "{failed}; its models are served once it can be listed (at a poll, a load or an index request)"
        );
    }
    let routes = Arc::new(Routes::default());
    let lifecycle = Arc::new(Lifecycle::new(
        routes.clone(),
        LifecycleConfig {
            registry: registry.clone(),
            backends,
            versions: VersionOptions {
                detailed_metrics: args.allow_metrics,
                inline_below: Duration::from_micros(args.inline_below_us),
            },
        },
    ));
    let serving = Arc::new(
        Serving::new(
            routes.clone(),
            ServingConfig {
                server_id: args.id.clone(),
                strict_readiness: args.strict_readiness,
                max_inflight: args.max_inflight_requests,
                max_tensor_elements: args.max_tensor_elements,
            },
        )
        .with_shared_memory(SharedMemory::new(args.allow_client_shm))
        .with_tracer(Arc::new(tracer)),
    );
    let admin = Arc::new(Admin::new(
        lifecycle.clone(),
        AdminConfig {
            access: AdminAccess::new(args.admin_token.clone(), args.allow_remote_admin),
            explicit_control: args.model_control_mode == ModelControlMode::Explicit,
        },
    ));
    match admin.access() {
        AdminAccess::Open => tracing::warn!("{}", admin.access().describe()),
        access => tracing::info!("{}", access.describe()),
    }
    match crate::gpu::unavailable_reason() {
        None => {
            for g in crate::gpu::gpus() {
                tracing::info!(gpu = g.index, uuid = %g.uuid, "GPU {}: {} ({} MiB)", g.index, g.name, g.memory_total_bytes >> 20);
            }
        }
        Some(why) => tracing::info!("no GPU in use: {why}"),
    }
    let poll_baseline = match args.model_control_mode {
        ModelControlMode::Poll => {
            let registry = registry.clone();
            Some(tokio::task::spawn_blocking(move || crate::watch::snapshot(&registry)).await?)
        }
        _ => None,
    };
    let only = (args.model_control_mode == ModelControlMode::Explicit).then_some(&load_models[..]);
    lifecycle.load_repository(only).await?;
    if args.exit_on_error {
        let table = routes.load();
        if let Some((name, reason)) = table.models.iter().find_map(|(n, e)| match &e.state {
            ModelState::Unavailable(r) => Some((n.clone(), r.to_string())),
            ModelState::Ready => None,
        }) {
            anyhow::bail!("model '{name}' failed to load: {reason}");
        }
    }
    let api = Api {
        serving: serving.clone(),
        admin,
        text: Arc::new(TextRoutes {
            api_key: ApiKey(args.api_key.clone()),
            tei_model: args.tei_model.clone(),
        }),
    };

    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Plain-TCP front-ends run on threads of their own (see `io_threads`), started by the first that needs them;
    // TLS ones on the main runtime.
    let mut io_threads = None;
    let io_count = match args.runtime_threads {
        0 => default_front_end_threads(),
        n => n,
    };
    let coalescing = Coalescing {
        wait: std::time::Duration::from_micros(args.io_coalesce_us),
    };
    let mut http_addr = None;
    if args.allow_http {
        let listener = bind(SocketAddr::new(args.http_address, args.http_port), "HTTP").await?;
        http_addr = Some(listener.local_addr()?);
        let app = http::router(api.clone(), args.http_max_body_bytes);
        match &tls {
            Some(tls) => tasks.spawn(serve_axum(listener, Some(tls.http.clone()), app, rx.clone())),
            None => tasks.spawn(front_end_threads(&mut io_threads, io_count, coalescing)?.serve(
                listener,
                rx.clone(),
                move |conns, stop| serve_axum_on(conns, app.clone(), stop),
            )),
        };
    }
    let mut grpc_addr = None;
    if args.allow_grpc {
        let listener = bind(SocketAddr::new(args.grpc_address, args.grpc_port), "gRPC").await?;
        grpc_addr = Some(listener.local_addr()?);
        let svc = grpc::service(api.clone(), args.grpc_max_message_bytes);
        let max_streams = args.grpc_max_concurrent_streams;
        match &tls {
            Some(tls) => tasks.spawn(serve_grpc(
                GrpcIncoming::Tls(listener, tls.grpc.clone()),
                svc,
                max_streams,
                rx.clone(),
            )),
            None => tasks.spawn(front_end_threads(&mut io_threads, io_count, coalescing)?.serve(
                listener,
                rx.clone(),
                move |conns, stop| serve_grpc(GrpcIncoming::Handed(conns), svc.clone(), max_streams, stop),
            )),
        };
    }
    let mut metrics_addr = None;
    if args.allow_metrics {
        let listener = bind(SocketAddr::new(args.metrics_address, args.metrics_port), "metrics").await?;
        metrics_addr = Some(listener.local_addr()?);
        let app = crate::metrics::router(serving.clone(), lifecycle.clone(), Arc::new(Metrics::new()));
        tasks.spawn(serve_axum(listener, None, app, rx.clone()));
    }
    if let Some(known) = poll_baseline {
        let interval = std::time::Duration::from_secs(args.repository_poll_secs.max(1));
        let watcher = crate::watch::watch(lifecycle.clone(), interval, known, signal(&rx));
        tasks.spawn(async move {
            watcher.await;
            Ok(())
        });
    }
    let guard = crate::rollback::guard(routes, signal(&rx));
    tasks.spawn(async move {
        guard.await;
        Ok(())
    });
    Ok(RunningServer {
        serving,
        lifecycle,
        http_addr,
        grpc_addr,
        metrics_addr,
        shutdown,
        tasks,
        _io_threads: io_threads,
    })
}

impl RunningServer {
    /// Stops accepting (reporting not-ready first), lets in-flight requests finish, and waits for the
    /// listeners to close.
    pub async fn shutdown(mut self) {
        self.serving.stop_accepting();
        let _ = self.shutdown.send(true);
        while let Some(r) = self.tasks.join_next().await {
            if let Ok(Err(e)) = r {
                tracing::warn!("listener ended with an error: {e}");
            }
        }
        // Spans still queued go to the collector before the process ends.
        let serving = self.serving.clone();
        let _ = tokio::task::spawn_blocking(move || serving.tracer().shutdown()).await;
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
