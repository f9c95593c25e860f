//! The one error type a request can meet, and its single mapping to HTTP status and gRPC code. Everything below
//! the front-ends returns it (or a typed error of its own that converts into it), so the status a client sees is
//! decided here and only here.
use axum::http::StatusCode;

#[derive(Clone, Debug, thiserror::Error)]
pub enum InferError {
    /// Unknown model or version: 404 / NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// Anything wrong with what the client sent: 400 / INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
    /// The model exists but cannot serve right now: 503 / UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    /// A queue or limit is full: 429 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The request is larger than the server accepts (body size, tensor elements): 413 / RESOURCE_EXHAUSTED.
    #[error("{0}")]
    TooLarge(String),
    /// A text longer than its model takes, and the request asked not to cut it: 400 / INVALID_ARGUMENT (TEI's
    /// routes answer 413, as TEI does).
    #[error("input of {tokens} tokens is longer than model '{model}' takes ({max} tokens): shorten it, or send truncate=true to have it cut")]
    TextTooLong { model: String, tokens: usize, max: usize },
    /// The request's queue timeout fired before an instance took it: 503 / DEADLINE_EXCEEDED.
    #[error("{0}")]
    Timeout(String),
    /// An admin request the server does not accept from this client: 401 / UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// The server failed (the backend while running the model, or a file it writes): 500 / INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl InferError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::InvalidArgument(_) | Self::TextTooLong { .. } => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) | Self::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Self::NotFound(_) => tonic::Code::NotFound,
            Self::InvalidArgument(_) | Self::TextTooLong { .. } => tonic::Code::InvalidArgument,
            Self::Unavailable(_) => tonic::Code::Unavailable,
            Self::Timeout(_) => tonic::Code::DeadlineExceeded,
            Self::ResourceExhausted(_) | Self::TooLarge(_) => tonic::Code::ResourceExhausted,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::Internal(_) => tonic::Code::Internal,
        }
    }
}

/// What a backend's failure tells the caller: the runtime refusing the request's data (text it cannot tokenize,
/// say) is the client's mistake (400), anything else the server's (500).
impl From<crate::backend::BackendError> for InferError {
    fn from(e: crate::backend::BackendError) -> Self {
        match e {
            crate::backend::BackendError::InvalidInput(m) => Self::InvalidArgument(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<InferError> for tonic::Status {
    fn from(e: InferError) -> Self {
        tonic::Status::new(e.grpc_code(), e.to_string())
    }
}

impl axum::response::IntoResponse for InferError {
    fn into_response(self) -> axum::response::Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.http_status(), axum::Json(body)).into_response()
    }
}

pub type InferResult<T> = Result<T, InferError>;
