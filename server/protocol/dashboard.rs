//! `GET /dashboard`: one self-contained HTML page of what the server serves, for a person to look at: per
//! model its versions and state, traffic, request rate and latency, and the drift of its worst features as
//! reference-vs-live histograms. Server-rendered with inline CSS and SVG and no script or external asset, so
//! it works on clusters without internet access and under a policy that forbids scripts.
//!
//! `gather` reads the live routing table into plain data (`Page`); `render` turns that into HTML and is
//! tested on its own.
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};

use super::Api;
use crate::health::drift::{FeatureDrift, Report};
use crate::health::Drift;
use crate::routing::{ModelState, RoutingTable};
use crate::stats::DURATION_BOUNDS_NS;
use crate::version::LoadedVersion;

/// Features shown per version, worst PSI first.
pub const WORST_FEATURES: usize = 5;
/// The page reloads itself this often (a meta refresh: no script needed).
const REFRESH_SECS: u32 = 10;
/// Views closer together than this measure the rate against the older baseline, so a quick reload does not
/// show the rate of a few milliseconds.
const MIN_RATE_INTERVAL: Duration = Duration::from_secs(1);
/// PSI's customary reading: below 0.1 stable, from 0.25 a significant shift.
const PSI_MODERATE: f64 = 0.1;
const PSI_SIGNIFICANT: f64 = 0.25;
/// Nothing but inline styles may run or load: a name that slipped through escaping still could not act.
const CONTENT_SECURITY_POLICY: &str =
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'";

/// The route, with the memory of the previous view its request rates are measured against. That memory starts
/// with the versions loaded at start-up (the router is built right after), so the first view's rates count
/// from then.
pub fn route(api: &Api) -> MethodRouter<Api> {
    let views = Arc::new(Views::new(&api.serving.routes().load(), Instant::now()));
    get(move |State(api): State<Api>| {
        let views = views.clone();
        async move { respond(&api, &views) }
    })
}

fn respond(api: &Api, views: &Views) -> Response {
    let table = api.serving.routes().load();
    let rates = views.rates(&table, Instant::now());
    let page = gather(&table, &rates, SystemTime::now());
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        ],
        render(&page),
    )
        .into_response()
}

// ------------------------------------------------------------------ request rates

/// What a version's request rate is measured from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Basis {
    /// The page's previous view (by anyone).
    PreviousView,
    /// The server's start-up, when the version was loaded.
    StartUp,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    PerSecond {
        rate: f64,
        over: Duration,
        basis: Basis,
    },
    /// Loaded (or reloaded) since the previous view, with no time to measure from: the next view can.
    Unknown,
}

/// A version's request count when last seen.
struct Seen {
    /// Which load of the version: a reload is a new `LoadedVersion` whose counts start again at 0. Held weakly
    /// so an unloaded version is freed, while its address cannot be reused for another.
    version: Weak<LoadedVersion>,
    at: Instant,
    requests: u64,
    basis: Basis,
}

/// The dashboard's memory of the previous view, per (model, version).
pub struct Views {
    seen: Mutex<HashMap<(String, i64), Seen>>,
}

fn requests(lv: &LoadedVersion) -> u64 {
    lv.stats.success.count() + lv.stats.fail.count()
}

impl Views {
    /// Starts with every version in `table` (the ones loaded at start-up) as of `now`.
    pub fn new(table: &RoutingTable, now: Instant) -> Self {
        let seen = versions(table)
            .map(|(model, lv)| {
                let seen = Seen {
                    version: Arc::downgrade(lv),
                    at: now,
                    requests: requests(lv),
                    basis: Basis::StartUp,
                };
                ((model.to_string(), lv.version), seen)
            })
            .collect();
        Self { seen: Mutex::new(seen) }
    }

    /// Each version's request rate since the previous view (or start-up), remembering this view as the next
    /// one's baseline; versions no longer served are forgotten.
    pub fn rates(&self, table: &RoutingTable, now: Instant) -> HashMap<(String, i64), Rate> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.retain(|(model, version), _| {
            table
                .models
                .get(model)
                .is_some_and(|e| e.versions.contains_key(version))
        });
        let mut rates = HashMap::new();
        for (model, lv) in versions(table) {
            let key = (model.to_string(), lv.version);
            let count = requests(lv);
            let current = Seen {
                version: Arc::downgrade(lv),
                at: now,
                requests: count,
                basis: Basis::PreviousView,
            };
            let rate = match seen.get(&key) {
                Some(before) if std::ptr::eq(before.version.as_ptr(), Arc::as_ptr(lv)) => {
                    let over = now.saturating_duration_since(before.at);
                    let rate = match over.as_secs_f64() {
                        0.0 => 0.0,
                        secs => count.saturating_sub(before.requests) as f64 / secs,
                    };
                    let basis = before.basis;
                    if over >= MIN_RATE_INTERVAL {
                        seen.insert(key.clone(), current);
                    }
                    Rate::PerSecond { rate, over, basis }
                }
                _ => {
                    seen.insert(key.clone(), current);
                    Rate::Unknown
                }
            };
            rates.insert(key, rate);
        }
        rates
    }
}

fn versions(table: &RoutingTable) -> impl Iterator<Item = (&str, &Arc<LoadedVersion>)> {
    table
        .models
        .iter()
        .flat_map(|(name, e)| e.versions.values().map(move |lv| (name.as_str(), lv)))
}

// ------------------------------------------------------------------ what the page shows

pub struct Page {
    /// When it was made, in seconds since the Unix epoch.
    pub generated: f64,
    pub models: Vec<ModelView>,
}

pub struct ModelView {
    pub name: String,
    /// Why it cannot serve; None when ready.
    pub unavailable: Option<String>,
    /// Why its last reload failed while the versions shown kept serving.
    pub last_error: Option<String>,
    pub labels: BTreeMap<String, i64>,
    pub weights: BTreeMap<i64, u32>,
    /// (version, share of requests copied).
    pub shadow: Option<(i64, f64)>,
    /// The version the rollback guard watches.
    pub guarded: Option<i64>,
    pub versions: Vec<VersionView>,
}

pub struct VersionView {
    pub version: i64,
    pub succeeded: u64,
    pub failed: u64,
    pub rate: Rate,
    /// Successful requests' latency since load: the upper bound of the bucket holding p50 and p99 (0 with
    /// nothing observed, `u64::MAX` above the last bound).
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub drift: DriftView,
    /// How far its outputs are from its stable arm's (that arm's version, the Jensen–Shannon distance) when
    /// it takes part in a split.
    pub divergence: Option<(i64, f64)>,
}

pub enum DriftView {
    /// Why drift is not watched.
    Off(String),
    Watching {
        window: usize,
        /// Rows in the window being filled.
        pending_rows: usize,
        completed: u64,
        latest: Option<Arc<Report>>,
    },
}

/// Reads the routing table (and each version's statistics and drift monitor) into a `Page`, models by name.
pub fn gather(table: &RoutingTable, rates: &HashMap<(String, i64), Rate>, now: SystemTime) -> Page {
    let mut models: Vec<ModelView> = table
        .models
        .values()
        .map(|e| ModelView {
            name: e.name.clone(),
            unavailable: match &e.state {
                ModelState::Ready => None,
                ModelState::Unavailable(reason) => Some(reason.to_string()),
            },
            last_error: e.last_error.as_ref().map(|r| r.to_string()),
            labels: e.traffic.labels.clone(),
            weights: e.traffic.weights.clone(),
            shadow: e.traffic.shadow.as_ref().map(|s| (s.version, s.fraction)),
            guarded: e.traffic.guard.as_ref().map(|g| g.version),
            versions: e
                .versions
                .values()
                .map(|lv| {
                    let durations = lv.stats.request_durations();
                    VersionView {
                        version: lv.version,
                        succeeded: lv.stats.success.count(),
                        failed: lv.stats.fail.count(),
                        rate: rates
                            .get(&(e.name.clone(), lv.version))
                            .copied()
                            .unwrap_or(Rate::Unknown),
                        p50_ns: durations.quantile(DURATION_BOUNDS_NS, 0.5),
                        p99_ns: durations.quantile(DURATION_BOUNDS_NS, 0.99),
                        divergence: e.arm_divergence(lv.version),
                        drift: match &lv.health.drift {
                            Drift::Off(why) => DriftView::Off(why.clone()),
                            Drift::Watching(m) => {
                                let (pending_rows, completed) = m.progress();
                                DriftView::Watching {
                                    window: m.config.window,
                                    pending_rows,
                                    completed,
                                    latest: m.latest(),
                                }
                            }
                        },
                    }
                })
                .collect(),
        })
        .collect();
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Page {
        generated: now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        models,
    }
}

/// One feature of a report, with the side and tensor it belongs to.
pub struct Worst<'a> {
    pub side: &'static str,
    pub tensor: &'a str,
    pub feature: &'a FeatureDrift,
}

/// The report's `n` features with the highest PSI, inputs and outputs together, worst first.
pub fn worst_features(report: &Report, n: usize) -> Vec<Worst<'_>> {
    let sides = [("input", &report.inputs), ("output", &report.outputs)];
    let mut all: Vec<Worst> = sides
        .into_iter()
        .flat_map(|(side, tensors)| {
            tensors.iter().flat_map(move |t| {
                t.features.iter().map(move |feature| Worst {
                    side,
                    tensor: &t.name,
                    feature,
                })
            })
        })
        .collect();
    let psi = |w: &Worst| w.feature.psi.unwrap_or(f64::NEG_INFINITY);
    all.sort_by(|a, b| psi(b).total_cmp(&psi(a)));
    all.truncate(n);
    all
}

// ------------------------------------------------------------------ HTML

/// Text made safe for HTML content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Appends formatted text to a `String` (which cannot fail, so the `fmt::Result` is dropped).
macro_rules! put {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

const STYLE: &str = "
:root { --ref: #6b8fc7; --live: #e8762b; --ok: #1d7a3c; --warn: #a86400; --bad: #b3261e; --line: #d9dde3; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; color: #1f2328;
  background: #f4f6f8; }
header { background: #1f2937; color: #f9fafb; padding: 12px 24px; display: flex; align-items: baseline;
  gap: 16px; flex-wrap: wrap; }
header h1 { font-size: 18px; margin: 0; }
header span { color: #c7ced8; font-size: 13px; }
main { max-width: 1180px; margin: 0 auto; padding: 16px 24px 32px; }
section.model { background: #fff; border: 1px solid var(--line); border-radius: 8px; margin: 16px 0;
  padding: 14px 18px; }
h2 { font-size: 17px; margin: 0 0 6px; display: flex; align-items: center; gap: 10px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
.badge { font-size: 12px; font-weight: 600; border-radius: 10px; padding: 1px 9px; color: #fff; }
.badge.ready, .badge.ok { background: var(--ok); }
.badge.unavailable, .badge.bad { background: var(--bad); }
.badge.warn { background: var(--warn); }
.reason { color: var(--bad); margin: 4px 0; }
.note { color: var(--warn); margin: 4px 0; }
.muted { color: #59636e; }
p { margin: 4px 0; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 4px; }
th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 12px; color: #59636e; font-weight: 600; }
td.num { font-variant-numeric: tabular-nums; }
.drift { border-top: 1px dashed var(--line); margin-top: 10px; }
.legend { display: flex; gap: 14px; font-size: 12px; margin: 2px 0 6px; }
.legend i { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px;
  vertical-align: -1px; }
.legend .ref { background: var(--ref); } .legend .live { background: var(--live); }
.features { display: flex; flex-wrap: wrap; gap: 12px; }
figure.feature { margin: 0; border: 1px solid var(--line); border-left: 4px solid var(--ok); border-radius: 6px;
  padding: 8px 10px; width: 206px; }
figure.feature.warn { border-left-color: var(--warn); } figure.feature.bad { border-left-color: var(--bad); }
.psi.warn { color: var(--warn); } .psi.bad { color: var(--bad); }
figure.feature figcaption { font-size: 12px; margin-bottom: 4px; overflow-wrap: anywhere; }
figure.feature b { font-size: 13px; }
svg rect.ref { fill: var(--ref); } svg rect.live { fill: var(--live); }
svg line { stroke: #8c959f; } svg text { font-size: 9px; fill: #59636e; }
";

/// The whole page.
pub fn render(page: &Page) -> String {
    let mut out = String::with_capacity(16 * 1024);
    put!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <title>inferd dashboard</title><style>{STYLE}</style></head><body>\
         <header><h1>inferd dashboard</h1><span>version {}</span><span>{} UTC · refreshes every {REFRESH_SECS} s\
         </span></header><main>",
        escape(env!("CARGO_PKG_VERSION")),
        utc(page.generated)
    );
    if page.models.is_empty() {
        out.push_str("<p class=\"muted\">No model is loaded.</p>");
    }
    for m in &page.models {
        render_model(&mut out, m, page.generated);
    }
    out.push_str(
        "<p class=\"muted\">Rates count requests since the page's previous view (or since start-up); latencies \
         are the buckets holding p50 and p99 of successful requests since load. Drift compares the latest \
         complete window with the reference profile: PSI below 0.1 is stable, from 0.25 a significant shift.\
         </p></main></body></html>\n",
    );
    out
}

fn render_model(out: &mut String, m: &ModelView, now: f64) {
    let name = escape(&m.name);
    put!(out, "<section class=\"model\" id=\"model-{name}\"><h2>{name} ");
    match &m.unavailable {
        None => out.push_str("<span class=\"badge ready\">ready</span></h2>"),
        Some(reason) => put!(
            out,
            "<span class=\"badge unavailable\">unavailable</span></h2><p class=\"reason\">{}</p>",
            escape(reason)
        ),
    }
    if let Some(e) = &m.last_error {
        put!(
            out,
            "<p class=\"note\">Last reload failed (the versions below kept serving): {}</p>",
            escape(e)
        );
    }
    out.push_str("<p><b>Traffic:</b> ");
    out.push_str(&traffic(m));
    out.push_str("</p>");
    if !m.labels.is_empty() {
        out.push_str("<p><b>Labels:</b> ");
        let labels: Vec<String> = m
            .labels
            .iter()
            .map(|(label, v)| format!("<code>{}</code> → version {v}", escape(label)))
            .collect();
        out.push_str(&labels.join(", "));
        out.push_str("</p>");
    }
    if m.versions.is_empty() {
        out.push_str("<p class=\"muted\">No version is loaded.</p></section>");
        return;
    }
    out.push_str(
        "<table><thead><tr><th>Version</th><th>Labels</th><th>Weight</th><th>Requests (ok / failed)</th>\
         <th>Rate</th><th>p50</th><th>p99</th><th>Drift</th></tr></thead><tbody>",
    );
    let total_weight: u64 = m.weights.values().map(|&w| u64::from(w)).sum();
    for v in &m.versions {
        let labels: Vec<String> = m
            .labels
            .iter()
            .filter(|(_, &n)| n == v.version)
            .map(|(l, _)| format!("<code>{}</code>", escape(l)))
            .collect();
        let weight = match m.weights.get(&v.version) {
            Some(&w) if total_weight > 0 => format!("{w} ({:.0} %)", 100.0 * f64::from(w) / total_weight as f64),
            Some(&w) => w.to_string(),
            None => "—".into(),
        };
        put!(
            out,
            "<tr><td><b>{}</b></td><td>{}</td><td class=\"num\">{weight}</td><td class=\"num\">{} / {}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            v.version,
            labels.join(" "),
            v.succeeded,
            v.failed,
            rate(v.rate),
            latency(v.p50_ns),
            latency(v.p99_ns),
            drift_summary(&v.drift),
        );
    }
    out.push_str("</tbody></table>");
    for v in &m.versions {
        render_drift(out, v, now);
    }
    out.push_str("</section>");
}

/// Where requests that name no version go.
fn traffic(m: &ModelView) -> String {
    let total: u64 = m.weights.values().map(|&w| u64::from(w)).sum();
    let mut text = if total == 0 {
        match m.versions.last() {
            Some(v) => format!(
                "every request that names no version goes to the newest, version {}",
                v.version
            ),
            None => "no version to send requests to".into(),
        }
    } else {
        let split: Vec<String> = m
            .weights
            .iter()
            .map(|(v, &w)| format!("version {v} {:.0} %", 100.0 * f64::from(w) / total as f64))
            .collect();
        format!("split {}", split.join(" · "))
    };
    if let Some((v, fraction)) = m.shadow {
        put!(
            text,
            "; version {v} receives a shadow copy of {:.0} %",
            100.0 * fraction
        );
    }
    if let Some(v) = m.guarded {
        put!(text, "; rollback guard on version {v}");
    }
    text
}

fn rate(r: Rate) -> String {
    match r {
        Rate::PerSecond { rate, over, basis } => {
            let since = match basis {
                Basis::PreviousView => "since the previous view",
                Basis::StartUp => "since start-up",
            };
            format!(
                "{} req/s <span class=\"muted\">over {} {since}</span>",
                number(rate),
                seconds(over.as_secs_f64())
            )
        }
        Rate::Unknown => "— <span class=\"muted\">loaded since the previous view; measured from the next</span>".into(),
    }
}

/// A latency bucket's upper bound.
fn latency(ns: u64) -> String {
    match ns {
        0 => "—".into(),
        u64::MAX => format!("&gt; {}", duration_ns(DURATION_BOUNDS_NS.last().copied().unwrap_or(0))),
        ns => format!("≤ {}", duration_ns(ns)),
    }
}

fn duration_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{} s", number(ns / 1e9))
    } else if ns >= 1e6 {
        format!("{} ms", number(ns / 1e6))
    } else {
        format!("{} µs", number(ns / 1e3))
    }
}

fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// A number to three significant digits or so, without trailing zeros.
fn number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{x:.2e}");
    }
    let decimals = if a >= 100.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The CSS class and word for a PSI.
fn psi_level(psi: f64) -> (&'static str, &'static str) {
    if psi >= PSI_SIGNIFICANT {
        ("bad", "significant")
    } else if psi >= PSI_MODERATE {
        ("warn", "moderate")
    } else {
        ("ok", "stable")
    }
}

fn psi_badge(psi: f64) -> String {
    let (class, word) = psi_level(psi);
    format!("<span class=\"badge {class}\">{word}</span>")
}

/// The drift column of the versions table.
fn drift_summary(d: &DriftView) -> String {
    match d {
        DriftView::Off(_) => "<span class=\"muted\">not watched</span>".into(),
        DriftView::Watching { latest: None, .. } => "<span class=\"muted\">no complete window yet</span>".into(),
        DriftView::Watching {
            latest: Some(r),
            completed,
            ..
        } => format!(
            "PSI max {} {} <span class=\"muted\">({completed} windows)</span>",
            number(r.psi_max),
            psi_badge(r.psi_max)
        ),
    }
}

fn render_drift(out: &mut String, v: &VersionView, now: f64) {
    put!(out, "<div class=\"drift\"><h3>Drift of version {}</h3>", v.version);
    match &v.drift {
        DriftView::Off(why) => put!(out, "<p class=\"muted\">{}</p>", escape(why)),
        DriftView::Watching {
            window,
            pending_rows,
            completed,
            latest,
        } => {
            put!(
                out,
                "<p class=\"muted\">Windows of {window} rows: {completed} completed, {pending_rows} rows into the next"
            );
            match latest {
                None => out.push_str(". The first window's scores show once it completes.</p>"),
                Some(r) => {
                    put!(
                        out,
                        "; latest completed {} ago.</p>",
                        seconds((now - r.updated).max(0.0))
                    );
                    if let Some((stable, js)) = v.divergence {
                        put!(
                            out,
                            "<p>Outputs against the stable arm, version {stable}: JS distance <b>{}</b></p>",
                            number(js)
                        );
                    }
                    out.push_str(
                        "<div class=\"legend\"><span><i class=\"ref\"></i>reference</span>\
                         <span><i class=\"live\"></i>live (latest window)</span></div><div class=\"features\">",
                    );
                    for w in worst_features(r, WORST_FEATURES) {
                        render_feature(out, &w);
                    }
                    out.push_str("</div>");
                }
            }
        }
    }
    out.push_str("</div>");
}

fn render_feature(out: &mut String, w: &Worst) {
    let f = w.feature;
    let psi = f.psi.unwrap_or(0.0);
    let (level, word) = psi_level(psi);
    put!(
        out,
        "<figure class=\"feature {level}\"><figcaption>{} <b>{}</b> · feature <b>{}</b><br>\
         PSI <b class=\"psi {level}\" title=\"{word}\">{}</b> · JS {}</figcaption>",
        w.side,
        escape(w.tensor),
        escape(&f.name),
        number(psi),
        f.js.map_or_else(|| "—".into(), number)
    );
    out.push_str(&histogram(w));
    out.push_str("</figure>");
}

/// Reference and live shares of each bin as side-by-side bars, one hover title per bin.
fn histogram(w: &Worst) -> String {
    const WIDTH: f64 = 184.0;
    const HEIGHT: f64 = 64.0;
    const AXIS: f64 = 12.0;
    let f = w.feature;
    let live = f.live.as_deref().unwrap_or(&[]);
    let bins = f.reference.len().max(live.len()).max(1);
    let top = f
        .reference
        .iter()
        .chain(live)
        .copied()
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let slot = WIDTH / bins as f64;
    let bar = (slot * 0.42).max(0.5);
    let mut svg = String::new();
    put!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" viewBox=\"0 0 {WIDTH} {}\" \
         role=\"img\" aria-label=\"reference and live shares per bin of {} feature {}\">",
        HEIGHT + AXIS,
        HEIGHT + AXIS,
        escape(w.tensor),
        escape(&f.name)
    );
    for i in 0..bins {
        let r = f.reference.get(i).copied().unwrap_or(0.0);
        let l = live.get(i).copied().unwrap_or(0.0);
        let x = i as f64 * slot + (slot - 2.0 * bar) / 2.0;
        let (hr, hl) = (HEIGHT * r / top, HEIGHT * l / top);
        put!(
            svg,
            "<g><title>{}: reference {:.1} %, live {:.1} %</title>\
             <rect class=\"ref\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{bar:.2}\" height=\"{hr:.2}\"/>\
             <rect class=\"live\" x=\"{:.2}\" y=\"{:.2}\" width=\"{bar:.2}\" height=\"{hl:.2}\"/></g>",
            bin_range(&f.edges, i),
            100.0 * r,
            100.0 * l,
            HEIGHT - hr,
            x + bar,
            HEIGHT - hl,
        );
    }
    put!(svg, "<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{WIDTH}\" y2=\"{HEIGHT}\"/>");
    // The outer edges under their boundaries: the range the reference's middle 80 % spans.
    if let (Some(first), Some(last)) = (f.edges.first(), f.edges.last()) {
        put!(
            svg,
            "<text x=\"{slot:.2}\" y=\"{}\" text-anchor=\"middle\">{}</text>\
             <text x=\"{:.2}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            HEIGHT + AXIS - 2.0,
            number(*first),
            WIDTH - slot,
            HEIGHT + AXIS - 2.0,
            number(*last)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Bin `i`'s values: the edges around it, or a class for categories (no edges).
fn bin_range(edges: &[f64], i: usize) -> String {
    if edges.is_empty() {
        return format!("class {i}");
    }
    match (i.checked_sub(1).and_then(|j| edges.get(j)), edges.get(i)) {
        (None, Some(hi)) => format!("≤ {}", number(*hi)),
        (Some(lo), None) => format!("&gt; {}", number(*lo)),
        (Some(lo), Some(hi)) => format!("({}, {}]", number(*lo), number(*hi)),
        (None, None) => format!("bin {i}"),
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss` (UTC).
fn utc(epoch_secs: f64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(epoch_secs.max(0.0) as u64);
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string();
    rfc3339.trim_end_matches('Z').replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::drift::TensorDrift;

    fn feature(index: usize, name: &str, psi: f64) -> FeatureDrift {
        FeatureDrift {
            index,
            name: name.into(),
            psi: Some(psi),
            js: Some(psi / 2.0),
            edges: vec![-1.0, 0.0, 1.0],
            reference: vec![0.25; 4],
            live: Some(vec![0.1, 0.2, 0.3, 0.4]),
            live_values: 100,
        }
    }

    fn tensor(name: &str, features: Vec<FeatureDrift>) -> TensorDrift {
        TensorDrift {
            name: name.into(),
            kind: "elements",
            features,
        }
    }

    fn report(inputs: Vec<TensorDrift>, outputs: Vec<TensorDrift>) -> Arc<Report> {
        Arc::new(Report {
            window_rows: 100,
            windows_completed: 2,
            updated: 1_000.0,
            psi_max: 0.9,
            inputs,
            outputs,
        })
    }

    fn version(version: i64, drift: DriftView) -> VersionView {
        VersionView {
            version,
            succeeded: 12,
            failed: 1,
            rate: Rate::PerSecond {
                rate: 2.5,
                over: Duration::from_secs(10),
                basis: Basis::PreviousView,
            },
            p50_ns: 250_000,
            p99_ns: u64::MAX,
            drift,
            divergence: None,
        }
    }

    fn model(name: &str, labels: &[(&str, i64)], versions: Vec<VersionView>) -> ModelView {
        ModelView {
            name: name.into(),
            unavailable: None,
            last_error: None,
            labels: labels.iter().map(|(l, v)| (l.to_string(), *v)).collect(),
            weights: BTreeMap::from([(1, 3), (2, 1)]),
            shadow: None,
            guarded: None,
            versions,
        }
    }

    fn page(models: Vec<ModelView>) -> String {
        render(&Page {
            generated: 1_010.0,
            models,
        })
    }

    #[test]
    fn names_from_configs_are_escaped_wherever_they_appear() {
        let hostile_label = "<script>alert('label')</script>";
        let hostile_tensor = "\"><img src=x onerror=alert(1)>";
        let hostile_feature = "</figcaption><b onclick=x>";
        let drift = DriftView::Watching {
            window: 100,
            pending_rows: 0,
            completed: 2,
            latest: Some(report(
                vec![tensor(hostile_tensor, vec![feature(0, hostile_feature, 0.5)])],
                vec![],
            )),
        };
        let html = page(vec![model("mlp", &[(hostile_label, 1)], vec![version(1, drift)])]);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b onclick"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;label&#39;)&lt;/script&gt;"));
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"));
    }

    #[test]
    fn a_reason_from_a_failed_load_is_escaped_too() {
        let mut m = model("broken", &[], vec![]);
        m.unavailable = Some("config has <bad> \"stuff\"".into());
        let html = page(vec![m]);
        assert!(html.contains("unavailable"));
        assert!(html.contains("config has &lt;bad&gt; &quot;stuff&quot;"));
        assert!(html.contains("No version is loaded."));
    }

    #[test]
    fn worst_features_are_the_highest_psi_over_inputs_and_outputs() {
        let inputs = vec![tensor(
            "INPUT",
            (0..8).map(|i| feature(i, &i.to_string(), i as f64 / 100.0)).collect(),
        )];
        let outputs = vec![tensor("OUTPUT", vec![feature(0, "0", 0.5)])];
        let r = report(inputs, outputs);
        let worst: Vec<(&str, &str, &str)> = worst_features(&r, WORST_FEATURES)
            .iter()
            .map(|w| (w.side, w.tensor, w.feature.name.as_str()))
            .collect();
        assert_eq!(
            worst,
            [
                ("output", "OUTPUT", "0"),
                ("input", "INPUT", "7"),
                ("input", "INPUT", "6"),
                ("input", "INPUT", "5"),
                ("input", "INPUT", "4"),
            ]
        );
    }

    #[test]
    fn a_watched_version_shows_each_worst_feature_as_a_two_colour_histogram_with_a_legend() {
        let drift = DriftView::Watching {
            window: 100,
            pending_rows: 7,
            completed: 2,
            latest: Some(report(vec![tensor("INPUT", vec![feature(3, "3", 0.412)])], vec![])),
        };
        let html = page(vec![model("mlp", &[], vec![version(1, drift)])]);
        assert_eq!(html.matches("<svg").count(), 1);
        assert_eq!(html.matches("<rect class=\"ref\"").count(), 4);
        assert_eq!(html.matches("<rect class=\"live\"").count(), 4);
        assert!(html.contains("<i class=\"ref\"></i>reference"));
        assert!(html.contains(
            "input <b>INPUT</b> · feature <b>3</b><br>PSI <b class=\"psi bad\" title=\"significant\">0.412</b>"
        ));
        assert!(html.contains("JS 0.206"));
        assert!(html.contains("2 completed, 7 rows into the next"));
    }

    #[test]
    fn a_canary_shows_how_far_its_outputs_are_from_the_stable_arm() {
        let drift = DriftView::Watching {
            window: 100,
            pending_rows: 0,
            completed: 1,
            latest: Some(report(vec![], vec![tensor("OUTPUT", vec![feature(0, "0", 0.01)])])),
        };
        let mut canary = version(2, drift);
        canary.divergence = Some((1, 0.125));
        let html = page(vec![model("mlp", &[], vec![canary])]);
        assert!(html.contains("Outputs against the stable arm, version 1: JS distance <b>0.125</b>"));
    }

    #[test]
    fn a_version_without_a_profile_shows_why() {
        let off = DriftView::Off("version 1 of model 'mlp' has no reference profile".into());
        let html = page(vec![model("mlp", &[], vec![version(1, off)])]);
        assert!(html.contains("version 1 of model &#39;mlp&#39; has no reference profile"));
        assert!(!html.contains("<svg"));
    }

    #[test]
    fn traffic_shows_weights_as_shares_and_labels_by_version() {
        let html = page(vec![model(
            "mlp",
            &[("stable", 1), ("canary", 2)],
            vec![
                version(1, DriftView::Off(String::new())),
                version(2, DriftView::Off(String::new())),
            ],
        )]);
        assert!(html.contains("split version 1 75 % · version 2 25 %"));
        assert!(html.contains("<code>canary</code> → version 2"));
    }

    #[test]
    fn rates_say_what_they_are_measured_from() {
        assert!(rate(Rate::PerSecond {
            rate: 2.5,
            over: Duration::from_secs(10),
            basis: Basis::PreviousView
        })
        .starts_with("2.5 req/s <span class=\"muted\">over 10 s since the previous view"));
        assert!(rate(Rate::PerSecond {
            rate: 0.0,
            over: Duration::from_secs(300),
            basis: Basis::StartUp
        })
        .contains("over 5 min since start-up"));
        assert!(rate(Rate::Unknown).contains("measured from the next"));
    }

    #[test]
    fn latencies_are_bucket_bounds() {
        assert_eq!(latency(0), "—");
        assert_eq!(latency(250_000), "≤ 250 µs");
        assert_eq!(latency(2_500_000), "≤ 2.5 ms");
        assert_eq!(latency(u64::MAX), "&gt; 10 s");
    }

    #[test]
    fn timestamps_are_utc_dates() {
        assert_eq!(utc(0.0), "1970-01-01 00:00:00");
        assert_eq!(utc(1_709_251_199.0), "2024-02-29 23:59:59");
    }
}
