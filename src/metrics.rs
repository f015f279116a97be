//! In-process metrics, exposed by `GET /metrics` in Prometheus' text
//! format: build and step durations (histograms), log bytes stored, HTTP
//! requests by route and status. Database-side counts (queue, running
//! builds) and the pool and outage figures are added by the handler.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds of the duration buckets, seconds.
const BUCKETS: [f64; 10] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    /// Sum in milliseconds.
    sum_ms: AtomicU64,
}

impl Histogram {
    fn observe(&self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            if seconds <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms
            .fetch_add((seconds * 1000.0) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bound, count) in BUCKETS.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                count.load(Ordering::Relaxed)
            );
        }
        let total = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum {:.3}",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        );
        let _ = writeln!(out, "{name}_count {total}");
    }
}

#[derive(Default)]
struct Inner {
    build_seconds: Histogram,
    step_seconds: Histogram,
    log_bytes: AtomicU64,
    /// (route, method, status) → count.
    http: Mutex<BTreeMap<(String, String, u16), u64>>,
}

/// Shared metrics. Cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    /// A build finished after `seconds`.
    pub fn build_finished(&self, seconds: f64) {
        self.inner.build_seconds.observe(seconds);
    }

    /// A step finished after `seconds`.
    pub fn step_finished(&self, seconds: f64) {
        self.inner.step_seconds.observe(seconds);
    }

    /// `bytes` of log text were stored.
    pub fn log_stored(&self, bytes: usize) {
        self.inner
            .log_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// An HTTP request to `route` was answered with `status`.
    pub fn http_request(&self, route: &str, method: &str, status: u16) {
        let mut http = self.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        *http
            .entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }

    /// The in-process metrics in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        self.inner.build_seconds.render(
            out,
            "buildmaster_build_duration_seconds",
            "Durations of builds run by this master.",
        );
        self.inner.step_seconds.render(
            out,
            "buildmaster_step_duration_seconds",
            "Durations of steps run by this master.",
        );
        let _ = writeln!(
            out,
            "# HELP buildmaster_log_bytes_stored_total Bytes of build output stored by this master.\n\
             # TYPE buildmaster_log_bytes_stored_total counter\n\
             buildmaster_log_bytes_stored_total {}",
            self.inner.log_bytes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP buildmaster_http_requests_total HTTP requests answered, by route and status.\n\
             # TYPE buildmaster_http_requests_total counter"
        );
        let http = self.inner.http.lock().unwrap_or_else(|p| p.into_inner());
        for ((route, method, status), count) in http.iter() {
            let _ = writeln!(
                out,
                "buildmaster_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {count}",
                route.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let metrics = Metrics::default();
        metrics.build_finished(3.0);
        metrics.build_finished(45.0);
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("buildmaster_build_duration_seconds_bucket{le=\"1\"} 0"),
            "{out}"
        );
        assert!(
            out.contains("buildmaster_build_duration_seconds_bucket{le=\"5\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("buildmaster_build_duration_seconds_bucket{le=\"60\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("buildmaster_build_duration_seconds_count 2"),
            "{out}"
        );
        assert!(
            out.contains("buildmaster_build_duration_seconds_sum 48.000"),
            "{out}"
        );
    }
}
