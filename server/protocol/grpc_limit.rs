//! `--grpc-max-message-bytes` answered the way the project (and gRPC core, and Triton) answers a request over a
//! limit: RESOURCE_EXHAUSTED, naming the limit and the flag.
//!
//! tonic itself refuses such a message from its 5-byte length prefix, before buffering it, which is what we
//! want; but it says OUT_OF_RANGE ("Error, decoded message length too large: ..."). Where that status goes:
//! - unary calls (all but ModelStreamInfer): `Grpc::unary` decodes the request in `map_request_unary` before
//!   the handler runs, and the error becomes `Status::into_http()`, a trailers-only response: grpc-status and
//!   grpc-message in the response headers, an empty body. [`MessageLimit`] rewrites exactly those.
//! - ModelStreamInfer: the error comes out of the handler's inbound `Streaming`; the handler maps it with
//!   [`over_limit`] and ends its response stream with it (the status then goes in the body's trailers).
use std::convert::Infallible;
use std::task::{Context, Poll};

use futures::future::{FutureExt, Map};
use tonic::body::Body;
use tonic::codegen::http::{self, HeaderName};
use tonic::server::NamedService;
use tonic::{Code, Status};
use tower::Service;

/// How tonic's decoder words a message over `max_decoding_message_size`.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
const GRPC_STATUS_DETAILS: HeaderName = HeaderName::from_static("grpc-status-details-bin");

/// Our status for tonic's "message over the limit" one; `None` for any other status.
pub fn over_limit(status: &Status) -> Option<Status> {
    if status.code() != Code::OutOfRange {
        return None;
    }
    // "...: found {len} bytes, the limit is: {limit} bytes"
    let rest = status.message().strip_prefix(TONIC_TOO_LARGE)?;
    let mut numbers = rest.split(|c: char| !c.is_ascii_digit()).filter(|n| !n.is_empty());
    let message = match (numbers.next(), numbers.next()) {
        (Some(found), Some(limit)) => {
            format!("request message of {found} bytes is over the limit of {limit} bytes (--grpc-max-message-bytes)")
        }
        _ => format!(
            "request message is over the limit (--grpc-max-message-bytes): {}",
            status.message()
        ),
    };
    Some(Status::resource_exhausted(message))
}

/// Wraps the tonic service; see the module's doc.
#[derive(Clone)]
pub struct MessageLimit<S>(pub S);

impl<S: NamedService> NamedService for MessageLimit<S> {
    const NAME: &'static str = S::NAME;
}

type Answer = Result<http::Response<Body>, Infallible>;

impl<S, B> Service<http::Request<B>> for MessageLimit<S>
where
    S: Service<http::Request<B>, Response = http::Response<Body>, Error = Infallible>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Map<S::Future, fn(Answer) -> Answer>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        self.0.call(req).map(rewrite as fn(Answer) -> Answer)
    }
}

/// On the normal path this looks at one header and changes nothing.
fn rewrite(answer: Answer) -> Answer {
    let Ok(mut response) = answer;
    if response.headers().get(GRPC_STATUS).map(|v| v.as_bytes()) != Some(b"11") {
        return Ok(response);
    }
    let Some(ours) = Status::from_header_map(response.headers())
        .as_ref()
        .and_then(over_limit)
    else {
        return Ok(response);
    };
    let headers = response.headers_mut();
    headers.remove(GRPC_MESSAGE);
    headers.remove(GRPC_STATUS_DETAILS);
    if ours.add_header(headers).is_ok() {
        response.extensions_mut().insert(ours);
    }
    Ok(response)
}
