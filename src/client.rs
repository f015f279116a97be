//! The client side of the CLI (`sendchange`, `force`): posts to a running
//! master, retrying while it or its database is unreachable. Each command
//! sends one `Idempotency-Key` with all its attempts, so a retry after a
//! lost answer is recorded at most once.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::cli::MasterArgs;

/// Posts `body` to `path` on the master; returns the JSON answer.
///
/// Fails with the master's `detail` on a 4xx answer, or when the master
/// cannot be reached (or answers 503) for `--wait` seconds.
pub async fn post(master: &MasterArgs, path: &str, body: &Value) -> anyhow::Result<Value> {
    let url = format!("{}{path}", master.master.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let key = uuid::Uuid::new_v4().to_string();
    let deadline = Instant::now() + Duration::from_secs_f64(master.wait);
    let mut delay = Duration::from_millis(200);
    loop {
        let mut request = client.post(&url).header("Idempotency-Key", &key).json(body);
        if let Some(token) = &master.token {
            request = request.bearer_auth(token);
        }
        let problem = match request.send().await {
            Ok(response) if response.status().is_success() => {
                return response.json().await.context("reading the master's answer");
            }
            Ok(response) if response.status().as_u16() == 503 => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(seconds) = retry_after {
                    delay = Duration::from_secs(seconds.min(10));
                }
                format!("{url}: 503 {}", detail(response).await)
            }
            Ok(response) => {
                let status = response.status();
                bail!("{url}: {status}: {}", detail(response).await);
            }
            Err(error) => format!("{url}: {error}"),
        };
        if Instant::now() + delay > deadline {
            bail!("gave up after {:.0} s: {problem}", master.wait);
        }
        tracing::warn!("{problem}; retrying in {:.1} s", delay.as_secs_f64());
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn detail(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or(text)
}
