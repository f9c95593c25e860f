//! inferd's log subscriber installed in this process (its own test binary, since a process has one global
//! subscriber), writing to a buffer: settings changes apply to the very next event, spans included.
use std::io::Write;
use std::sync::{Arc, Mutex};

use inferd::cli::LogFormat;
use inferd::logging::{control, init_with_writer, LogUpdate, SettingValue};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Buffer {
    fn take(&self) -> String {
        String::from_utf8(std::mem::take(&mut *self.0.lock().unwrap())).unwrap()
    }
}

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
    type Writer = Buffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn set(name: &str, value: SettingValue) {
    let update = LogUpdate::parse([(name.to_string(), value)]).expect("a valid setting");
    control().expect("installed").update(&update);
}

// One test: the subscriber and its settings are global to the process.
#[test]
fn every_change_applies_to_the_next_event_and_a_format_switch_inside_an_open_span_is_safe() {
    let buffer = Buffer::default();
    init_with_writer(LogFormat::Text, buffer.clone(), false).expect("installs");
    assert!(
        init_with_writer(LogFormat::Text, buffer.clone(), false).is_err(),
        "a second install is refused"
    );

    tracing::info!("first info");
    tracing::debug!(target: "inferd::scheduler", "hidden debug");
    let out = buffer.take();
    assert!(out.contains("first info") && !out.contains("hidden debug"), "{out}");

    // Level 1 is inferd's own debug lines; level 3 every crate's.
    set("log_verbose_level", SettingValue::Uint(1));
    tracing::debug!(target: "inferd::scheduler", "shown debug");
    tracing::debug!(target: "h2::codec", "a dependency's debug");
    let out = buffer.take();
    assert!(
        out.contains("shown debug") && !out.contains("a dependency's debug"),
        "{out}"
    );
    set("log_verbose_level", SettingValue::Uint(3));
    tracing::debug!(target: "h2::codec", "a dependency's debug");
    assert!(buffer.take().contains("a dependency's debug"));
    set("log_verbose_level", SettingValue::Uint(0));

    set("log_info", SettingValue::Bool(false));
    tracing::info!("hidden info");
    tracing::warn!("shown warning");
    let out = buffer.take();
    assert!(!out.contains("hidden info") && out.contains("shown warning"), "{out}");
    set("log_info", SettingValue::Bool(true));

    // A span opened under the text format, an event inside it after the switch to JSON.
    let span = tracing::info_span!("request", id = "r-1");
    let entered = span.enter();
    set("log_format", SettingValue::String("JSON".into()));
    tracing::info!("inside the span");
    let out = buffer.take();
    let line: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(line["fields"]["message"], "inside the span");
    assert_eq!(line["span"]["id"], "r-1", "{line}");
    drop(entered);

    set("log_format", SettingValue::String("ISO8601".into()));
    tracing::error!("an error");
    let out = buffer.take();
    assert!(out.lines().count() == 1 && out.contains("an error"), "{out}");
    let stamp = out.split_whitespace().next().unwrap_or_default();
    assert!(stamp.len() == 20 && stamp.ends_with('Z'), "{out}");
}
