//! A traced request's spans, sent over OTLP/HTTP (protobuf) as Triton's OpenTelemetry mode sends them. The
//! spans are made after the fact from the times serving and the scheduler record (nothing is traced inside
//! the scheduler's threads): one `InferRequest` span (kind SERVER; model, version, request id, protocol; the
//! caller's span as its parent when the caller sent one) with `queue`, `compute` and `response` children, and
//! Triton's timestamp names as events. Ending a span only hands it to the SDK's batch span processor, whose
//! own thread does the exporting: the request path never waits on the collector.
use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{Span as _, SpanBuilder, SpanKind, Status, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol as OtlpProtocol, WithExportConfig};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use super::config::TraceConfig;
use super::context::TraceParent;
use crate::request::Protocol;
use crate::scheduler::Executed;

/// The OTLP pipeline: a provider whose batch span processor exports on its own thread.
pub(super) struct Exporter {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Exporter {
    /// Builds the exporter (its blocking HTTP client and processor thread start here, once, at start).
    pub(super) fn start(config: &TraceConfig) -> Result<Self, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(OtlpProtocol::HttpBinary)
            .with_endpoint(config.url.clone())
            .build()
            .map_err(|e| format!("cannot start the OTLP trace exporter for {}: {e}", config.url))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.max_queue_size)
            .with_max_export_batch_size(config.max_export_batch_size)
            .with_scheduled_delay(config.schedule_delay)
            .build();
        let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource(&config.resource))
            .build();
        let tracer = provider.tracer("inferd");
        Ok(Self { provider, tracer })
    }

    /// Sends what is queued and stops the processor (blocking: call off the async workers).
    pub(super) fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("trace exporter shutdown: {e}");
        }
    }
}

/// `service.name` is `inferd` unless the flag or the OpenTelemetry environment names it.
fn resource(given: &[(String, String)]) -> Resource {
    let env_names_it = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name"));
    let mut builder = Resource::builder();
    if !env_names_it && !given.iter().any(|(k, _)| k == "service.name") {
        builder = builder.with_service_name("inferd");
    }
    builder
        .with_attributes(given.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build()
}

/// One traced request, from its arrival to its encoded response. Its spans are exported when it is finished
/// (or dropped: a request abandoned on the way still leaves its trace).
pub struct ActiveTrace {
    tracer: SdkTracer,
    parent: Option<TraceParent>,
    /// One instant read against the wall clock: span times are wall-clock, the server's own are monotonic.
    anchor: (Instant, SystemTime),
    received: Instant,
    model: String,
    version: Option<String>,
    request_id: String,
    protocol: Protocol,
    queued: Option<Instant>,
    executed: Option<Arc<Executed>>,
    answered: Option<Instant>,
    error: Option<String>,
    done: bool,
}

impl fmt::Debug for ActiveTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveTrace")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ActiveTrace {
    pub(super) fn new(
        exporter: &Exporter,
        parent: Option<TraceParent>,
        received: Instant,
        model: &str,
        request_id: &str,
        protocol: Protocol,
    ) -> Self {
        Self {
            tracer: exporter.tracer.clone(),
            parent,
            anchor: (Instant::now(), SystemTime::now()),
            received,
            model: model.to_string(),
            version: None,
            request_id: request_id.to_string(),
            protocol,
            queued: None,
            executed: None,
            answered: None,
            error: None,
            done: false,
        }
    }

    /// The version the request was routed to.
    pub fn routed(&mut self, version: &str) {
        self.version = Some(version.to_string());
    }

    /// The request enters its version's queue now; the scheduler fills in when it ran.
    pub fn queued(&mut self) -> Arc<Executed> {
        self.queued = Some(Instant::now());
        self.executed.get_or_insert_with(Default::default).clone()
    }

    /// The scheduler has answered (the response is built and encoded from here on).
    pub fn answered(&mut self) {
        self.answered = Some(Instant::now());
    }

    pub fn failed(&mut self, error: &dyn fmt::Display) {
        self.error = Some(error.to_string());
    }

    /// The response is encoded: the trace ends here and goes to the exporter.
    pub fn finish(mut self) {
        self.export(Instant::now());
    }

    fn at(&self, t: Instant) -> SystemTime {
        let (instant, wall) = self.anchor;
        if t >= instant {
            wall + (t - instant)
        } else {
            wall - (instant - t)
        }
    }

    fn export(&mut self, end: Instant) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let parent_cx = match &self.parent {
            Some(p) => Context::new().with_remote_span_context(p.0.clone()),
            None => Context::new(),
        };
        let mut attributes = vec![
            KeyValue::new("model_name", self.model.clone()),
            KeyValue::new("request_id", self.request_id.clone()),
            KeyValue::new("protocol", self.protocol.label()),
        ];
        if let Some(v) = &self.version {
            attributes.push(KeyValue::new("model_version", v.clone()));
        }
        let mut request = SpanBuilder::from_name("InferRequest")
            .with_kind(SpanKind::Server)
            .with_start_time(self.at(self.received))
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent_cx);
        let compute = self.executed.as_ref().and_then(|e| e.times());
        let mut events = vec![("REQUEST_START", self.received)];
        events.extend(self.queued.map(|t| ("QUEUE_START", t)));
        if let Some((start, stop)) = compute {
            events.push(("COMPUTE_START", start));
            events.push(("COMPUTE_END", stop));
        }
        events.extend(self.answered.map(|t| ("REQUEST_END", t)));
        for (name, t) in events {
            request.add_event_with_timestamp(name, self.at(t), Vec::new());
        }
        if let Some(e) = &self.error {
            request.set_status(Status::error(e.clone()));
        }
        let cx = parent_cx.with_span(request);
        let child = |name: &'static str, from: Instant, to: Instant| {
            let mut span = SpanBuilder::from_name(name)
                .with_kind(SpanKind::Internal)
                .with_start_time(self.at(from))
                .start_with_context(&self.tracer, &cx);
            span.end_with_timestamp(self.at(to.max(from)));
        };
        if let Some(queued) = self.queued {
            // A request that never ran (timed out, refused) waited until it was answered.
            let left = compute.map(|(start, _)| start).or(self.answered).unwrap_or(end);
            child("queue", queued, left);
        }
        if let Some((start, stop)) = compute {
            child("compute", start, stop);
        }
        if let Some(answered) = self.answered {
            child("response", answered, end);
        }
        cx.span().end_with_timestamp(self.at(end));
    }
}

impl Drop for ActiveTrace {
    fn drop(&mut self) {
        self.export(Instant::now());
    }
}
