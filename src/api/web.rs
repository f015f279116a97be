//! The web status page, rendered on the server (no build tooling, a few
//! lines of plain JavaScript for polling and forcing):
//!
//! - `GET /`: every builder with its latest result, a grid of its recent
//!   builds coloured by result, and a force button where a `force`
//!   scheduler allows it;
//! - `GET /builds/{id}`: a build's steps, durations and logs; the log of a
//!   running step follows its output (polling the JSON API), and the page
//!   reloads itself when the build ends.
//!
//! When the database is unreachable the page still renders, from the last
//! data the master read, under a banner saying so.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::ApiState;
use crate::config::SchedulerConfig;
use crate::store::Budget;
use crate::store::reads::{Param, ViewQuery};

/// How long a page waits for the database before rendering what it has.
const PAGE_BUDGET: Duration = Duration::from_secs(2);
/// Builds shown per builder in the grid.
const GRID_BUILDS: usize = 30;

/// The last data the front page rendered, for outages.
#[derive(Default)]
pub struct PageCache {
    front: Option<(Vec<Value>, Vec<Value>, Instant)>,
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn s<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

fn result_class(build: &Value, results_key: &str, complete_key: &str) -> &'static str {
    if build.get(complete_key).and_then(Value::as_bool) == Some(false) {
        return "running";
    }
    match build.get(results_key).and_then(Value::as_i64) {
        Some(0) => "success",
        Some(1) => "warnings",
        Some(2) => "failure",
        Some(3) => "skipped",
        Some(4) => "exception",
        Some(5) => "retry",
        Some(6) => "cancelled",
        _ => "none",
    }
}

fn duration(value: &Value, key: &str) -> String {
    match value.get(key).and_then(Value::as_f64) {
        Some(s) if s >= 3600.0 => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
        Some(s) if s >= 60.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        Some(s) => format!("{s:.1}s"),
        None => String::new(),
    }
}

const STYLE: &str = r#"
*{box-sizing:border-box}body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:.6em 1em;display:flex;gap:1em;align-items:baseline;flex-wrap:wrap}
header a{color:#fff;text-decoration:none;font-weight:600}main{padding:1em;max-width:1100px;margin:auto}
.banner{background:#b71c1c;color:#fff;padding:.6em 1em;font-weight:600}
table{border-collapse:collapse;width:100%;background:#fff}td,th{padding:.4em .5em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
.success{background:#c8e6c9}.warnings{background:#ffe0b2}.failure{background:#ffcdd2}.exception{background:#e1bee7}
.retry{background:#b3e5fc}.cancelled{background:#cfd8dc}.skipped{background:#eceff1}.running{background:#fff59d}.none{background:#fff}
.grid{display:flex;flex-wrap:wrap;gap:3px}.grid a{display:inline-block;min-width:2.2em;padding:.1em .3em;text-align:center;border-radius:3px;color:#222;text-decoration:none;font-size:.85em}
pre{background:#111;color:#ddd;padding:.6em;overflow:auto;max-height:60vh;font-size:.8em;margin:.3em 0;white-space:pre-wrap;word-break:break-all}
pre .e{color:#ff8a80}pre .h{color:#80d8ff}button{padding:.3em .8em}
@media (max-width:600px){td,th{padding:.3em .2em;font-size:.9em}.hide-small{display:none}}
"#;

fn page(title: &str, banner: Option<String>, body: &str, script: &str) -> Response {
    let banner = banner
        .map(|b| format!("<div class=\"banner\" id=\"db-banner\">{}</div>", esc(&b)))
        .unwrap_or_default();
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head><body>\
         <header><a href=\"/\">buildmaster</a><span>{title}</span></header>{banner}<main>{body}</main>\
         <script>{script}</script></body></html>",
        title = esc(title)
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

async fn read(state: &ApiState, query: ViewQuery) -> Option<Vec<Value>> {
    state
        .store()
        .view_read(&query, Budget::For(PAGE_BUDGET))
        .await
        .ok()
}

/// `GET /`
pub async fn front(State(state): State<ApiState>) -> Response {
    let builders_query = ViewQuery {
        view: "builder_status",
        order: "builder_name",
        limit: 1000,
        ..ViewQuery::default()
    };
    let builds_query = ViewQuery {
        view: "builds",
        order: "build_id DESC",
        limit: 1000,
        ..ViewQuery::default()
    };
    let fresh = match (
        read(&state, builders_query).await,
        read(&state, builds_query).await,
    ) {
        (Some(builders), Some(builds)) => Some((builders, builds)),
        _ => None,
    };
    let mut cache = state.page_cache().lock().await;
    let (builders, builds, banner) = match fresh {
        Some((builders, builds)) => {
            cache.front = Some((builders.clone(), builds.clone(), Instant::now()));
            (builders, builds, None)
        }
        None => match &cache.front {
            Some((builders, builds, at)) => (
                builders.clone(),
                builds.clone(),
                Some(format!(
                    "The database is unreachable: showing what the master knew {} s ago.",
                    at.elapsed().as_secs()
                )),
            ),
            None => (
                Vec::new(),
                Vec::new(),
                Some(
                    "The database is unreachable and the master has nothing to show yet."
                        .to_owned(),
                ),
            ),
        },
    };
    drop(cache);
    let forceable: Vec<String> = state
        .topology()
        .map(|(settings, _)| {
            settings
                .schedulers
                .iter()
                .filter(|s| matches!(s, SchedulerConfig::Force { .. }))
                .flat_map(|s| s.builders().to_vec())
                .collect()
        })
        .unwrap_or_default();
    let mut body = String::from(
        "<h2>Builders</h2><table><thead><tr><th>builder</th><th>last build</th>\
         <th class=\"hide-small\">started</th><th>queue</th><th>recent builds</th><th></th></tr></thead><tbody>",
    );
    for builder in &builders {
        let name = s(builder, "builder_name");
        let class = result_class(builder, "last_results", "last_complete");
        let last = match builder.get("last_build_id").and_then(Value::as_i64) {
            Some(id) => format!(
                "<a href=\"/builds/{id}\">#{} {}</a>",
                builder
                    .get("last_build_number")
                    .and_then(Value::as_i64)
                    .unwrap_or(0),
                esc(if class == "running" {
                    "running"
                } else {
                    s(builder, "last_results_name")
                })
            ),
            None => "never built".to_owned(),
        };
        let mut grid = String::from("<div class=\"grid\">");
        for build in builds
            .iter()
            .filter(|b| s(b, "builder_name") == name)
            .take(GRID_BUILDS)
        {
            let _ = write!(
                grid,
                "<a class=\"{}\" href=\"/builds/{}\" title=\"{} {}\">{}</a>",
                result_class(build, "results", "complete"),
                build.get("build_id").and_then(Value::as_i64).unwrap_or(0),
                esc(s(build, "results_name")),
                esc(s(build, "started_at")),
                build.get("number").and_then(Value::as_i64).unwrap_or(0)
            );
        }
        grid.push_str("</div>");
        let force = if forceable.iter().any(|b| b == name) {
            format!("<button onclick=\"force('{0}')\">Force</button>", esc(name))
        } else {
            String::new()
        };
        let _ = write!(
            body,
            "<tr><td><b>{}</b></td><td class=\"{class}\">{last}</td><td class=\"hide-small\">{}</td>\
             <td>{}</td><td>{grid}</td><td>{force}</td></tr>",
            esc(name),
            esc(s(builder, "last_started_at").get(..19).unwrap_or("")),
            builder
                .get("pending_requests")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        );
    }
    body.push_str("</tbody></table><p id=\"force-result\"></p>");
    let script = r#"
async function force(builder) {
  const headers = {'Content-Type': 'application/json'};
  const token = localStorage.getItem('buildmaster-token');
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const reason = prompt('Reason for forcing ' + builder + '?', 'forced from the web page');
  if (reason === null) return;
  const r = await fetch('/api/v1/builders/' + encodeURIComponent(builder) + '/force',
                        {method: 'POST', headers, body: JSON.stringify({reason})});
  const body = await r.json().catch(() => ({}));
  if (r.status === 401) {
    const t = prompt('This master needs its write token:');
    if (t) { localStorage.setItem('buildmaster-token', t); return force(builder); }
  }
  document.getElementById('force-result').textContent =
    r.ok ? 'Forced: build request ' + body.build_request_ids : 'Refused: ' + (body.detail || r.status);
  if (r.ok) setTimeout(() => location.reload(), 1500);
}
setTimeout(() => location.reload(), 15000);
"#;
    page("Builders", banner, &body, script)
}

/// `GET /builds/{id}`
pub async fn build_page(State(state): State<ApiState>, Path(id): Path<String>) -> Response {
    let Some(id) = id.parse::<i64>().ok().filter(|i| *i > 0) else {
        return (
            StatusCode::NOT_FOUND,
            page("No such build", None, "<p>No such build.</p>", ""),
        )
            .into_response();
    };
    let mut build_query = ViewQuery {
        view: "builds",
        order: "build_id",
        limit: 1,
        ..ViewQuery::default()
    };
    build_query.filter("build_id", "=", Param::Int(id));
    let Some(builds) = read(&state, build_query).await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            page(
                &format!("Build {id}"),
                Some(
                    "The database is unreachable; this page will work again when it is back."
                        .to_owned(),
                ),
                "",
                "setTimeout(() => location.reload(), 5000);",
            ),
        )
            .into_response();
    };
    let Some(build) = builds.first() else {
        return (
            StatusCode::NOT_FOUND,
            page("No such build", None, "<p>No such build.</p>", ""),
        )
            .into_response();
    };
    let mut steps_query = ViewQuery {
        view: "steps",
        order: "number",
        limit: 1000,
        ..ViewQuery::default()
    };
    steps_query.filter("build_id", "=", Param::Int(id));
    let mut logs_query = ViewQuery {
        view: "logs",
        order: "log_id",
        limit: 1000,
        ..ViewQuery::default()
    };
    logs_query.filter("build_id", "=", Param::Int(id));
    let steps = read(&state, steps_query).await.unwrap_or_default();
    let logs = read(&state, logs_query).await.unwrap_or_default();
    let class = result_class(build, "results", "complete");
    let title = format!(
        "{} #{}",
        s(build, "builder_name"),
        build.get("number").and_then(Value::as_i64).unwrap_or(0)
    );
    let mut body = format!(
        "<h2 class=\"{class}\" style=\"padding:.3em\">{} — {}</h2><p>started {}{} · worker {} · master {}{}</p>",
        esc(&title),
        esc(if class == "running" {
            "running"
        } else {
            s(build, "results_name")
        }),
        esc(s(build, "started_at").get(..19).unwrap_or("")),
        match duration(build, "duration_s") {
            d if d.is_empty() => String::new(),
            d => format!(" · took {}", esc(&d)),
        },
        esc(s(build, "worker_name")),
        esc(s(build, "master_name")),
        match (
            build.get("branch").and_then(Value::as_str),
            build.get("revision").and_then(Value::as_str)
        ) {
            (Some(b), Some(r)) => format!(" · {} @ {}", esc(b), esc(r)),
            (Some(b), None) => format!(" · {}", esc(b)),
            _ => String::new(),
        }
    );
    if class == "running" {
        let _ = write!(
            body,
            "<p><button onclick=\"stopBuild({id})\">Stop this build</button> <span id=\"stop-result\"></span></p>"
        );
    }
    body.push_str(
        "<table><thead><tr><th>step</th><th>result</th><th>time</th></tr></thead><tbody>",
    );
    let mut running_logs = Vec::new();
    for step in &steps {
        let step_class = result_class(step, "results", "complete");
        let step_class =
            if step_class == "running" && step.get("started_at").is_some_and(Value::is_null) {
                "none"
            } else {
                step_class
            };
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{step_class}\">{}</td><td>{}</td></tr>",
            esc(s(step, "name")),
            esc(if step_class == "running" {
                "running"
            } else if step_class == "none" {
                "waiting"
            } else {
                s(step, "state_string")
            }),
            esc(&duration(step, "duration_s"))
        );
        for log in logs.iter().filter(|l| l["step_id"] == step["step_id"]) {
            let log_id = log.get("log_id").and_then(Value::as_i64).unwrap_or(0);
            let _ = write!(
                body,
                "<tr><td colspan=\"3\"><pre id=\"log-{log_id}\" data-log=\"{log_id}\" data-next=\"0\"></pre></td></tr>"
            );
            running_logs.push((log_id, step_class == "running"));
        }
    }
    body.push_str("</tbody></table>");
    let logs_js: Vec<String> = running_logs
        .iter()
        .map(|(id, running)| format!("[{id},{running}]"))
        .collect();
    let script = format!(
        r#"
const logs = [{logs}];
const complete = {complete};
function esc(t) {{ return t.replace(/[&<>]/g, c => ({{'&':'&amp;','<':'&lt;','>':'&gt;'}}[c])); }}
async function tail(id) {{
  const pre = document.getElementById('log-' + id);
  const from = Number(pre.dataset.next);
  const r = await fetch('/api/v1/logs/' + id + '/lines?from=' + from + '&to=' + (from + 4999));
  if (!r.ok) return;
  const body = await r.json();
  for (const line of body.lines) {{
    const cls = line.stream === 'stderr' ? 'e' : (line.stream === 'header' ? 'h' : '');
    pre.insertAdjacentHTML('beforeend', '<span class="' + cls + '">' + esc(line.content) + '</span>\n');
    pre.dataset.next = line.line_number + 1;
  }}
  if (body.lines.length > 0) pre.scrollTop = pre.scrollHeight;
}}
async function refresh() {{
  for (const [id, running] of logs) await tail(id);
  if (!complete) {{
    const r = await fetch('/api/v1/builds/{id}');
    if (r.ok && (await r.json()).complete) location.reload();
  }}
}}
async function stopBuild(id) {{
  const headers = {{'Content-Type': 'application/json'}};
  const token = localStorage.getItem('buildmaster-token');
  if (token) headers['Authorization'] = 'Bearer ' + token;
  const r = await fetch('/api/v1/builds/' + id + '/stop', {{method: 'POST', headers, body: '{{}}'}});
  document.getElementById('stop-result').textContent = r.ok ? 'stopping…' : 'refused (' + r.status + ')';
}}
refresh();
if (!complete) setInterval(refresh, 1000);
"#,
        logs = logs_js.join(","),
        complete = class != "running",
    );
    page(&title, None, &body, &script)
}
