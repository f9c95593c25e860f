//! The caller's trace context (W3C Trace Context: the `traceparent` header or gRPC metadata, with its
//! `tracestate`), so that a caller's trace goes on through inferd. A malformed `traceparent` is ignored, as the
//! W3C recommendation says: the request then starts a trace of its own.
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The header (REST) and metadata key (gRPC) names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A caller's span, as its `traceparent` names it.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceParent(pub(super) SpanContext);

fn hex_field<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Lower-case hex only, as the recommendation requires.
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl TraceParent {
    /// `version-traceid-parentid-flags`; `None` for anything malformed (or version `ff`, all-zero ids).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let version = hex_field::<1>(parts.next()?)?[0];
        let trace_id = hex_field::<16>(parts.next()?)?;
        let span_id = hex_field::<8>(parts.next()?)?;
        let flags = hex_field::<1>(parts.next()?)?[0];
        // Version 00 has exactly four fields; a later version may add more after them.
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id = TraceId::from_bytes(trace_id);
        let span_id = SpanId::from_bytes(span_id);
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return None;
        }
        let state = tracestate
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        Some(Self(SpanContext::new(
            trace_id,
            span_id,
            TraceFlags::new(flags & 1),
            true,
            state,
        )))
    }

    pub fn trace_id(&self) -> TraceId {
        self.0.trace_id()
    }

    pub fn span_id(&self) -> SpanId {
        self.0.span_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_w3c_traceparent_names_the_callers_span() {
        let p = TraceParent::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("vendor=value"),
        )
        .unwrap();
        assert_eq!(p.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id().to_string(), "00f067aa0ba902b7");
        assert!(p.0.is_sampled() && p.0.is_remote());
        assert_eq!(p.0.trace_state().get("vendor"), Some("value"));
        // A later version may carry more fields.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra", None).is_some());
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad, None), None, "{bad}");
        }
    }
}
