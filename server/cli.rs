//! The command line. Flags that mean what one of Triton's means carry Triton's name; every flag can also be
//! set through its environment variable.
use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::registry::Location;

#[derive(Parser, Debug)]
#[command(
    name = "inferd",
    version,
    about = "A model inference server speaking the KServe V2 / Open Inference Protocol (Triton-compatible)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the models of a model repository over HTTP/REST and gRPC, with Prometheus metrics.
    Serve(ServeArgs),
    /// Make a model version's reference profile (profile.json), which drift is watched against.
    ///
    /// Runs reference data through the model as the server would, and records what it received and answered.
    Profile(ProfileArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModelControlMode {
    /// Load every model in the repository at start.
    None,
    /// Load only the models named by --load-model at start; then load and unload through the repository API.
    Explicit,
    /// Load every model at start, then watch the repository and apply added, changed and removed models.
    Poll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Text lines with microsecond RFC 3339 timestamps (Triton's name for its own: "default").
    #[value(alias = "default")]
    Text,
    /// Text lines with second-precision ISO 8601 timestamps, as Triton's `--log-format ISO8601`.
    #[value(name = "ISO8601", alias = "iso8601")]
    Iso8601,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Model repository (Triton layout): a folder; object storage, `s3://bucket/prefix`,
    /// `s3://host:port/bucket/prefix` (plain HTTP), `s3://https://host:port/bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix`; or an MLflow Model Registry, `mlflow://host:port` or `mlflow+https://host`.
    /// Repeat to serve several repositories.
    #[arg(
        long = "model-repository",
        env = "INFERD_MODEL_REPOSITORY",
        value_delimiter = ',',
        default_value = "models"
    )]
    pub model_repositories: Vec<Location>,
    /// Where models from remote repositories are cached (default: $XDG_CACHE_HOME/inferd/models, or
    /// ~/.cache/inferd/models). A complete copy there is served when the store cannot be reached at start.
    #[arg(long, env = "INFERD_MODEL_CACHE_DIR")]
    pub model_cache_dir: Option<PathBuf>,
    /// Most model files downloaded at once from remote repositories.
    #[arg(long, env = "INFERD_MODEL_DOWNLOAD_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub model_download_concurrency: u32,

    /// HTTP/REST port (0 picks a free one).
    #[arg(long, env = "INFERD_HTTP_PORT", default_value_t = 8000)]
    pub http_port: u16,
    /// Address the HTTP/REST server binds.
    #[arg(long, env = "INFERD_HTTP_ADDRESS", default_value = "0.0.0.0")]
    pub http_address: IpAddr,
    /// Serve HTTP/REST.
    #[arg(long, env = "INFERD_ALLOW_HTTP", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_http: bool,

    /// gRPC port (0 picks a free one).
    #[arg(long, env = "INFERD_GRPC_PORT", default_value_t = 8001)]
    pub grpc_port: u16,
    /// Address the gRPC server binds.
    #[arg(long, env = "INFERD_GRPC_ADDRESS", default_value = "0.0.0.0")]
    pub grpc_address: IpAddr,
    /// Serve gRPC.
    #[arg(long, env = "INFERD_ALLOW_GRPC", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_grpc: bool,

    /// Prometheus metrics port (0 picks a free one).
    #[arg(long, env = "INFERD_METRICS_PORT", default_value_t = 8002)]
    pub metrics_port: u16,
    /// Address the metrics server binds.
    #[arg(long, env = "INFERD_METRICS_ADDRESS", default_value = "0.0.0.0")]
    pub metrics_address: IpAddr,
    /// Serve metrics.
    #[arg(long, env = "INFERD_ALLOW_METRICS", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_metrics: bool,

    /// Which models load at start: all (none), or only those named by --load-model (explicit).
    #[arg(long, env = "INFERD_MODEL_CONTROL_MODE", value_enum, default_value_t = ModelControlMode::None)]
    pub model_control_mode: ModelControlMode,
    /// Bearer token that admin requests (repository load and unload, traffic changes) must carry. Without it,
    /// they are accepted only from loopback clients (see --allow-remote-admin).
    #[arg(long, env = "INFERD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// The key the OpenAI (/v1/...) and TEI (/embed, /tokenize, /info) routes want, sent as
    /// 'Authorization: Bearer <key>' (OpenAI clients always send one); without it they are open.
    #[arg(long, env = "INFERD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The text model TEI's routes (/embed, /tokenize, /info) serve; without it, the only text model loaded.
    #[arg(long, env = "INFERD_TEI_MODEL")]
    pub tei_model: Option<String>,
    /// Without --admin-token, accept admin requests from any client, not only loopback ones: for a network
    /// where every client is trusted.
    #[arg(long, env = "INFERD_ALLOW_REMOTE_ADMIN", default_value_t = false, action = clap::ArgAction::Set)]
    pub allow_remote_admin: bool,
    /// In poll mode, how often the repositories are rescanned (remote ones listed again) besides the filesystem
    /// watcher's prompt rescans of local folders.
    #[arg(long, env = "INFERD_REPOSITORY_POLL_SECS", default_value_t = 15)]
    pub repository_poll_secs: u64,
    /// A model to load at start in explicit mode. Repeat for several.
    #[arg(long = "load-model", env = "INFERD_LOAD_MODEL", value_delimiter = ',')]
    pub load_models: Vec<String>,

    /// Exit if any model fails to load (otherwise the others serve and the failure is reported).
    #[arg(long, env = "INFERD_EXIT_ON_ERROR", default_value_t = false, action = clap::ArgAction::Set)]
    pub exit_on_error: bool,
    /// Report ready only when every model is ready (Triton's default).
    #[arg(long, env = "INFERD_STRICT_READINESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub strict_readiness: bool,

    /// ONNX Runtime library (libonnxruntime.so.1.31.1). Found beside the binary or in the checkout's
    /// .deps/lib when not given.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub onnxruntime_library: Option<PathBuf>,
    /// Threads ONNX Runtime uses inside one model execution, unless a model's config sets
    /// `intra_op_thread_count`; candle's threads (RAYON_NUM_THREADS, unless set). Instances run on their own
    /// threads besides.
    #[arg(long, env = "INFERD_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Requests in flight across all models before new ones are refused with 429 / RESOURCE_EXHAUSTED
    /// (0: no cap; each model's queue is bounded regardless).
    #[arg(long, env = "INFERD_MAX_INFLIGHT_REQUESTS", default_value_t = 0)]
    pub max_inflight_requests: usize,

    /// Threads that serve plain-TCP HTTP and gRPC connections, each connection whole on one of them (0: half the
    /// cores, at least one); TLS connections, the metrics port and the server's own tasks run on as many threads
    /// again (0: one per core). Model instances run on threads of their own besides.
    #[arg(long, env = "INFERD_RUNTIME_THREADS", default_value_t = 0)]
    pub runtime_threads: usize,

    /// Microseconds a front-end thread waits, after a turn in which it read from two or more connections, before
    /// it polls its connections again, so that it wakes once for the several requests that arrive meanwhile
    /// rather than once for each (0: never wait). A lone client, one connection's large body and a single HTTP/2
    /// connection never wait. Costs up to this much latency under load.
    #[arg(long, env = "INFERD_IO_COALESCE_US", default_value_t = 50)]
    pub io_coalesce_us: u64,

    /// Run requests on the thread that received them, on an idle instance with nothing queued, while its model's
    /// executions take under this many microseconds on average (0: always hand requests to the instance threads).
    /// Requests that thread received together run as one batch. For small models on CPU the two thread hand-offs
    /// this saves cost more than the model; only CPU instances without a batching delay qualify.
    #[arg(long, env = "INFERD_INLINE_BELOW_US", default_value_t = 100)]
    pub inline_below_us: u64,

    /// Let clients register system shared memory regions (Triton's shared memory extension) and send inputs and
    /// receive outputs through them. A client that can reach the server can then have it map any POSIX shared
    /// memory object (/dev/shm) the server's user may open: turn it off where clients are not trusted that far.
    #[arg(long, env = "INFERD_ALLOW_CLIENT_SHM", default_value_t = true, action = clap::ArgAction::Set)]
    pub allow_client_shm: bool,

    /// Largest HTTP request body, in bytes.
    #[arg(long, env = "INFERD_HTTP_MAX_BODY_BYTES", default_value_t = 1 << 30)]
    pub http_max_body_bytes: usize,
    /// Most tensor elements one request may carry over all its inputs; larger ones get 413 /
    /// RESOURCE_EXHAUSTED before anything is sized by their shapes.
    #[arg(long, env = "INFERD_MAX_TENSOR_ELEMENTS", default_value_t = 1 << 28)]
    pub max_tensor_elements: u64,
    /// Largest gRPC message, in bytes (Triton allows up to 2 GiB).
    #[arg(long, env = "INFERD_GRPC_MAX_MESSAGE_BYTES", default_value_t = i32::MAX as usize)]
    pub grpc_max_message_bytes: usize,
    /// Streams (calls in progress) one gRPC connection may have open at once, advertised to clients as
    /// SETTINGS_MAX_CONCURRENT_STREAMS; a client opens more connections for more.
    #[arg(long, env = "INFERD_GRPC_MAX_CONCURRENT_STREAMS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub grpc_max_concurrent_streams: u32,

    /// On SIGTERM/SIGINT: how long requests in flight and queued may take to finish before the server exits
    /// anyway (it reports not-ready and refuses new requests at once).
    #[arg(long, env = "INFERD_EXIT_TIMEOUT_SECS", default_value_t = 30)]
    pub exit_timeout_secs: u64,

    /// PEM certificate chain: with --tls-key, HTTP and gRPC serve TLS only (the metrics port stays plain, for
    /// in-cluster scrapers).
    #[arg(long, env = "INFERD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "INFERD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): when given, every HTTP and gRPC client must present a certificate signed by one.
    #[arg(long, env = "INFERD_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Request tracing with OpenTelemetry, in Triton's form; repeat for each setting. Global:
    /// `level=TIMESTAMPS` (or OFF), `rate=N` (every N-th request), `count=N` (-1: no limit), `mode=opentelemetry`.
    /// Exporter (OTLP over HTTP): `opentelemetry,url=http://host:4318/v1/traces`,
    /// `opentelemetry,resource=<key>=<value>`, `opentelemetry,bsp_schedule_delay=<ms>`,
    /// `opentelemetry,bsp_max_queue_size=N`, `opentelemetry,bsp_max_export_batch_size=N`. The environment
    /// variable takes them separated by spaces.
    #[arg(
        long = "trace-config",
        env = "INFERD_TRACE_CONFIG",
        value_delimiter = ' ',
        value_name = "[MODE,]SETTING=VALUE"
    )]
    pub trace_config: Vec<String>,

    /// Server id reported in the server metadata.
    #[arg(long, env = "INFERD_ID", default_value = "inferd")]
    pub id: String,
    /// Log format.
    #[arg(long, env = "INFERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Args, Debug, Clone)]
pub struct ProfileArgs {
    /// Model repository folder (Triton layout) holding the model.
    #[arg(long = "model-repository", default_value = "models")]
    pub model_repository: PathBuf,
    /// The model to profile.
    #[arg(long)]
    pub model: String,
    /// The version to profile (default: the newest one its version policy serves).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub version: Option<i64>,
    /// Reference data: `.npy` (a model with one input; rows along the first dimension), `.npz` (one array
    /// per input, named as the input), or `.jsonl`/`.json` (KServe V2 infer request bodies, one per line).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the profile (default: profile.json in the version's folder).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// An output to profile as a classifier (the share of rows per argmax class). Repeat for several.
    /// Default: outputs with a label_filename.
    #[arg(long = "classifier", value_name = "OUTPUT")]
    pub classifiers: Vec<String>,
    /// An output to profile as an embedding (cosine similarity to the reference centroid). Repeat for
    /// several. Default: outputs whose name contains "embed".
    #[arg(long = "embedding", value_name = "OUTPUT")]
    pub embeddings: Vec<String>,
    /// Rows per execution (default and most: the model's max_batch_size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch: Option<u32>,
    /// ONNX Runtime library (libonnxruntime.so.1.31.1), for ONNX models. Found beside the binary or in the
    /// checkout's .deps/lib when not given.
    #[arg(long, env = "ORT_DYLIB_PATH")]
    pub onnxruntime_library: Option<PathBuf>,
    /// Threads the model uses per execution (0: one per core).
    #[arg(long, default_value_t = 0)]
    pub intra_op_threads: usize,
}
