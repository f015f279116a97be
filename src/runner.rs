//! Runs one claimed build on a local worker: each step as a subprocess (in
//! a process group of its own, killed whole on timeout, stop or shutdown)
//! in the builder's work directory, its output captured line by line.
//!
//! Everything the build does is handed to its [`Recorder`](crate::recorder)
//! and written in order by a writer task, so the build never waits for the
//! database: through an outage it keeps running, and its record catches up
//! when the database returns.
//!
//! Step semantics (Buildbot's): a failing step is `failure`; it makes the
//! build `failure` when `flunk_on_failure` (default), else `warnings` when
//! `warn_on_failure`; with `halt_on_failure` (default) the remaining steps
//! are skipped unless `always_run`. A command that cannot start (or names
//! an unknown property) is an `exception`, with the reason in the step's
//! log. A stopped build ends `cancelled`: the running step is killed, the
//! remaining steps are skipped unless `always_run`.
//!
//! Commands may use `%(prop:NAME)s`: `branch`, `revision`, `repository`,
//! `project`, `buildnumber`, `buildername`, `workername` and the buildset's
//! properties. The same values are in the environment as `BUILDMASTER_*`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{BuilderConfig, StepConfig};
use crate::recorder::{self, BuildIds, Recorder, Stream};
use crate::store::builds::{Owned, StartedBuild, results};
use crate::store::requests::ClaimedRequest;
use crate::store::{Budget, Store};

/// How long to keep reading a step's output after its process exited
/// (background processes may hold the pipes open).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);
/// How long the runner waits between steps for the record to be written.
const SETTLE_BETWEEN_STEPS: Duration = Duration::from_secs(2);
/// How long a build's record may take to be written at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// A running build's stop switch.
#[derive(Clone, Default)]
pub struct StopHandle {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl StopHandle {
    /// Stops the build (the first reason given is kept).
    pub fn stop(&self, reason: &str) {
        let _ = self.reason.set(reason.to_owned());
        self.token.cancel();
    }
}

/// The builds this master is running, by build id.
pub type RunningBuilds = Arc<Mutex<HashMap<i64, StopHandle>>>;

/// What a build needs from its master.
#[derive(Clone)]
pub struct RunnerContext {
    /// The store.
    pub store: Store,
    /// This master's id.
    pub master_id: i64,
    /// Directory of the builders' work directories.
    pub work_dir: PathBuf,
    /// Cancelled at shutdown: running steps are killed and the build is left
    /// for the shutdown to return to the queue.
    pub shutdown: CancellationToken,
    /// Stop switches of the running builds.
    pub running: RunningBuilds,
    /// Durations and log bytes for `/metrics`.
    pub metrics: crate::metrics::Metrics,
}

/// A build to run.
pub struct BuildJob {
    /// The claimed request.
    pub request: ClaimedRequest,
    /// Its builder.
    pub builder: Arc<BuilderConfig>,
    /// The worker chosen.
    pub worker_id: i64,
    /// Its name.
    pub worker_name: String,
}

enum StepOutcome {
    Exited(i32),
    Signalled,
    TimedOut(f64),
    CannotStart(String),
    Stopped,
    Interrupted,
    ClaimLost,
}

/// Runs the build to its end (or until the claim is lost or the master
/// shuts down).
pub async fn run_build(ctx: &RunnerContext, job: BuildJob) {
    let steps: Vec<(String, bool)> = job
        .builder
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.always_run))
        .collect();
    let started = ctx
        .store
        .build_start(
            Uuid::new_v4(),
            job.request.id,
            ctx.master_id,
            job.request.builder_id,
            job.worker_id,
            &steps,
            Budget::Forever,
        )
        .await;
    let build = match started {
        Ok(Owned::Yes(build)) => build,
        Ok(Owned::ClaimLost) => {
            tracing::warn!(
                request = job.request.id,
                "request taken over before its build started"
            );
            return;
        }
        Err(error) => {
            tracing::error!(request = job.request.id, %error, "cannot record the build's start");
            return;
        }
    };
    let stop = StopHandle::default();
    ctx.running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(build.id, stop.clone());
    let ids = BuildIds {
        build_id: build.id,
        request_id: job.request.id,
        master_id: ctx.master_id,
    };
    let (mut recorder, writer) = recorder::start(ctx.store.clone(), ids, ctx.metrics.clone());
    let span = tracing::info_span!("build", builder = %job.builder.name, number = build.number, worker = %job.worker_name);
    let build_id = build.id;
    run_steps(ctx, &job, build, &mut recorder, &stop)
        .instrument(span.clone())
        .await;
    recorder.close().await;
    // The record is written in order; normally this returns as soon as the
    // last write commits. At shutdown it is given a few seconds.
    let mut writer = writer;
    tokio::select! {
        _ = &mut writer => {}
        _ = ctx.shutdown.cancelled() => {
            if tokio::time::timeout(SHUTDOWN_FLUSH, &mut writer).await.is_err() {
                writer.abort();
                tracing::warn!(parent: &span, "shutdown: the rest of the build's record was not written");
            }
        }
    }
    ctx.running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&build_id);
}

async fn run_steps(
    ctx: &RunnerContext,
    job: &BuildJob,
    build: StartedBuild,
    recorder: &mut Recorder,
    stop: &StopHandle,
) {
    tracing::info!(
        build_id = build.id,
        request = job.request.id,
        "build started"
    );
    let build_started = std::time::Instant::now();
    let props = properties(job, &build);
    let env: BTreeMap<String, String> = props
        .iter()
        .map(|(k, v)| (format!("BUILDMASTER_{}", env_name(k)), v.clone()))
        .collect();
    let workdir = ctx.work_dir.join(&job.builder.name);
    let mut overall = results::SUCCESS;
    let mut halted = false;
    let mut stopped = false;
    let steps = job
        .builder
        .steps
        .iter()
        .zip(build.step_ids.iter().zip(&build.log_ids));
    for (step, (&step_id, &log_id)) in steps {
        // Let the record catch up (a lost claim shows here), unless the
        // database is down: then the build goes on regardless.
        recorder.settle(&ctx.store, SETTLE_BETWEEN_STEPS).await;
        if ctx.shutdown.is_cancelled() || recorder.claim_lost.is_cancelled() {
            if recorder.claim_lost.is_cancelled() {
                tracing::warn!(step = %step.name, "another master took this build's request over; build stopped");
            }
            return;
        }
        stopped |= stop.token.is_cancelled();
        if (halted || stopped) && !step.always_run {
            recorder
                .step_finished(step_id, results::SKIPPED, "skipped")
                .await;
            continue;
        }
        recorder.step_started(step_id).await;
        let step_started = std::time::Instant::now();
        // An always_run step after a stop runs to its end (or timeout).
        let stop_token = if stopped {
            CancellationToken::new()
        } else {
            stop.token.clone()
        };
        let outcome = match interpolate_argv(&step.command.argv(), &props) {
            Ok(argv) => {
                run_step(
                    ctx,
                    step,
                    &argv,
                    &workdir,
                    &env,
                    recorder,
                    log_id,
                    &stop_token,
                )
                .await
            }
            Err(why) => StepOutcome::CannotStart(why),
        };
        let (step_result, text) = match &outcome {
            StepOutcome::Exited(0) => (results::SUCCESS, "exit code 0".to_owned()),
            StepOutcome::Exited(code) => (results::FAILURE, format!("exit code {code}")),
            StepOutcome::Signalled => (results::FAILURE, "killed by a signal".to_owned()),
            StepOutcome::TimedOut(limit) => {
                (results::FAILURE, format!("timed out after {limit} s"))
            }
            StepOutcome::CannotStart(why) => {
                recorder
                    .line(
                        log_id,
                        Stream::Header,
                        &format!("cannot run the step: {why}"),
                    )
                    .await;
                (results::EXCEPTION, format!("exception: {why}"))
            }
            StepOutcome::Stopped => {
                stopped = true;
                let reason = stop
                    .reason
                    .get()
                    .cloned()
                    .unwrap_or_else(|| "stopped".to_owned());
                recorder
                    .line(log_id, Stream::Header, &format!("build stopped: {reason}"))
                    .await;
                (results::CANCELLED, format!("cancelled: {reason}"))
            }
            StepOutcome::Interrupted => {
                tracing::info!(step = %step.name, "master shutting down: build interrupted");
                return;
            }
            StepOutcome::ClaimLost => {
                tracing::warn!(step = %step.name, "another master took this build's request over; build stopped");
                return;
            }
        };
        tracing::info!(step = %step.name, result = step_result, "{text}");
        ctx.metrics
            .step_finished(step_started.elapsed().as_secs_f64());
        recorder.step_finished(step_id, step_result, &text).await;
        let contribution = match step_result {
            results::FAILURE if step.flunk_on_failure => results::FAILURE,
            results::FAILURE if step.warn_on_failure => results::WARNINGS,
            results::FAILURE => results::SUCCESS,
            other => other,
        };
        overall = results::worst(overall, contribution);
        if step_result == results::EXCEPTION
            || (step_result == results::FAILURE && step.halt_on_failure)
        {
            halted = true;
        }
    }
    if stopped {
        overall = results::CANCELLED;
    }
    let text = match overall {
        results::SUCCESS => "build successful",
        results::WARNINGS => "build finished with warnings",
        results::FAILURE => "build failed",
        results::EXCEPTION => "build exception",
        results::CANCELLED => "build cancelled",
        _ => "build finished",
    };
    tracing::info!(result = overall, "{text}");
    ctx.metrics
        .build_finished(build_started.elapsed().as_secs_f64());
    recorder.build_finished(overall, text).await;
}

/// The build's properties: built-in ones and the buildset's.
fn properties(job: &BuildJob, build: &StartedBuild) -> BTreeMap<String, String> {
    let ss = &build.sourcestamp;
    let mut props = BTreeMap::new();
    for (name, value) in &build.properties {
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        props.insert(name.clone(), text);
    }
    props.insert("buildername".to_owned(), job.builder.name.clone());
    props.insert("buildnumber".to_owned(), build.number.to_string());
    props.insert("workername".to_owned(), job.worker_name.clone());
    props.insert("repository".to_owned(), ss.repository.clone());
    props.insert("project".to_owned(), ss.project.clone());
    props.insert("branch".to_owned(), ss.branch.clone().unwrap_or_default());
    props.insert(
        "revision".to_owned(),
        ss.revision.clone().unwrap_or_default(),
    );
    props
}

/// `buildnumber` → `BUILDNUMBER`, `my-prop` → `MY_PROP`.
fn env_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Replaces `%(prop:NAME)s` in every argument; `%%` is a literal `%`.
///
/// Fails naming the first unknown property.
fn interpolate_argv(
    argv: &[String],
    props: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    argv.iter().map(|arg| interpolate(arg, props)).collect()
}

fn interpolate(arg: &str, props: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(arg.len());
    let mut rest = arg;
    while let Some(start) = rest.find('%') {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(after) = tail.strip_prefix("%%") {
            out.push('%');
            rest = after;
        } else if let Some(inner) = tail.strip_prefix("%(prop:") {
            let Some(end) = inner.find(")s") else {
                return Err(format!("unterminated %(prop:...)s in {arg:?}"));
            };
            let name = &inner[..end];
            let value = props
                .get(name)
                .ok_or_else(|| format!("unknown property {name:?} in {arg:?}"))?;
            out.push_str(value);
            rest = &inner[end + 2..];
        } else {
            out.push('%');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads one line (at most `limit` bytes) into `buf`; `Ok(false)` at end of
/// stream. Cancel-safe: a partly read line stays in `buf`.
async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<bool> {
    let room = limit.saturating_sub(buf.len()).max(1) as u64;
    let n = (&mut *reader).take(room).read_until(b'\n', buf).await?;
    Ok(n > 0 || !buf.is_empty())
}

fn take_line(buf: &mut Vec<u8>) -> String {
    let mut end = buf.len();
    while end > 0 && matches!(buf[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let text = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.clear();
    text
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    ctx: &RunnerContext,
    step: &StepConfig,
    argv: &[String],
    workdir: &Path,
    env: &BTreeMap<String, String>,
    recorder: &mut Recorder,
    log_id: i64,
    stop: &CancellationToken,
) -> StepOutcome {
    let dir = match &step.workdir {
        Some(sub) => workdir.join(sub),
        None => workdir.to_owned(),
    };
    if let Err(error) = tokio::fs::create_dir_all(&dir).await {
        return StepOutcome::CannotStart(format!("work directory {}: {error}", dir.display()));
    }
    recorder
        .line(
            log_id,
            Stream::Header,
            &format!("{} (in {})", shell_words(argv), dir.display()),
        )
        .await;
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(&dir)
        .envs(env)
        .envs(&step.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => return StepOutcome::CannotStart(format!("{}: {error}", argv[0])),
    };
    let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    let kill_group = || {
        if let Some(group) = group {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_group();
        return StepOutcome::CannotStart("no output pipes".to_owned());
    };
    let mut out = BufReader::new(stdout);
    let mut err = BufReader::new(stderr);
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let (mut out_open, mut err_open) = (true, true);
    let limit = recorder::CHUNK_BYTES / 2;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let timeout = tokio::time::sleep(Duration::from_secs_f64(step.timeout_s));
    tokio::pin!(timeout);
    let mut exit: Option<std::process::ExitStatus> = None;
    let drain = tokio::time::sleep(Duration::MAX);
    tokio::pin!(drain);
    let outcome = loop {
        if exit.is_some() && !out_open && !err_open {
            break None;
        }
        tokio::select! {
            read = read_line(&mut out, &mut out_buf, limit), if out_open => match read {
                Ok(true) => recorder.line(log_id, Stream::Stdout, &take_line(&mut out_buf)).await,
                _ => out_open = false,
            },
            read = read_line(&mut err, &mut err_buf, limit), if err_open => match read {
                Ok(true) => recorder.line(log_id, Stream::Stderr, &take_line(&mut err_buf)).await,
                _ => err_open = false,
            },
            status = child.wait(), if exit.is_none() => {
                match status {
                    Ok(status) => exit = Some(status),
                    Err(error) => break Some(StepOutcome::CannotStart(error.to_string())),
                }
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = &mut drain => {
                // Background processes still hold the pipes: stop reading.
                break None;
            }
            _ = tick.tick() => recorder.flush_if_old().await,
            _ = &mut timeout, if exit.is_none() => break Some(StepOutcome::TimedOut(step.timeout_s)),
            _ = stop.cancelled(), if exit.is_none() => break Some(StepOutcome::Stopped),
            _ = ctx.shutdown.cancelled() => break Some(StepOutcome::Interrupted),
            _ = recorder.claim_lost.cancelled() => break Some(StepOutcome::ClaimLost),
        }
    };
    // Whatever is left of the step's process group goes with it.
    kill_group();
    if let Some(outcome) = outcome {
        let _ = child.wait().await;
        return outcome;
    }
    match exit.and_then(|s| s.code()) {
        Some(code) => StepOutcome::Exited(code),
        None => StepOutcome::Signalled,
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Stops the builds someone asked to stop (API stop, cancelled request):
/// woken by LISTEN/NOTIFY, polling as a backstop.
pub async fn stop_watch_loop(
    store: Store,
    master_id: i64,
    running: RunningBuilds,
    wake: Arc<tokio::sync::Notify>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
        if running.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
            continue;
        }
        match store
            .build_stops_pending(master_id, Budget::For(poll))
            .await
        {
            Ok(stops) => {
                let running = running.lock().unwrap_or_else(|p| p.into_inner());
                for (build_id, reason) in stops {
                    if let Some(handle) = running.get(&build_id) {
                        tracing::info!(build_id, %reason, "stopping build");
                        handle.stop(&reason);
                    }
                }
            }
            Err(error) if error.is_unavailable() => {}
            Err(error) => tracing::error!(%error, "looking for builds to stop failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_are_interpolated_and_unknown_ones_refused() {
        let props: BTreeMap<String, String> = [
            ("branch".to_owned(), "main".to_owned()),
            ("buildnumber".to_owned(), "7".to_owned()),
        ]
        .into();
        assert_eq!(
            interpolate("build-%(prop:branch)s-%(prop:buildnumber)s 100%%", &props).unwrap(),
            "build-main-7 100%"
        );
        assert_eq!(interpolate("50% off", &props).unwrap(), "50% off");
        assert!(
            interpolate("%(prop:nope)s", &props)
                .unwrap_err()
                .contains("nope")
        );
        assert!(
            interpolate("%(prop:branch", &props)
                .unwrap_err()
                .contains("unterminated")
        );
    }

    #[test]
    fn commands_are_shown_quoted() {
        let argv: Vec<String> = ["sh", "-c", "echo 'hi there'"].map(String::from).to_vec();
        assert_eq!(shell_words(&argv), "sh -c 'echo '\\''hi there'\\'''");
    }
}
