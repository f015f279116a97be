//! Runs one claimed build on a local worker: each step as a subprocess (in
//! a process group of its own, killed whole on timeout or shutdown) in the
//! builder's work directory, recording the build, its steps and results as
//! they happen.
//!
//! Step semantics (Buildbot's): a failing step is `failure`; it makes the
//! build `failure` when `flunk_on_failure` (default), else `warnings` when
//! `warn_on_failure`; with `halt_on_failure` (default) the remaining steps
//! are skipped unless `always_run`. A command that cannot start is an
//! `exception`.
//!
//! Every write retries until the database answers, so a build keeps
//! running through an outage. Before each step the runner checks that the
//! request is still claimed by this master; if another master took it over
//! (this one was presumed dead), the build stops there.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::config::{BuilderConfig, StepConfig};
use crate::store::builds::{Owned, StartedBuild, results};
use crate::store::requests::ClaimedRequest;
use crate::store::{Budget, Store};

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
    Interrupted,
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
    let span = tracing::info_span!("build", builder = %job.builder.name, number = build.number, worker = %job.worker_name);
    run_steps(ctx, &job, build).instrument(span).await;
}

/// Runs the steps of a started build and records its end.
async fn run_steps(ctx: &RunnerContext, job: &BuildJob, build: StartedBuild) {
    tracing::info!(
        build_id = build.id,
        request = job.request.id,
        "build started"
    );
    let env = build_env(job, &build);
    let workdir = ctx.work_dir.join(&job.builder.name);
    let mut overall = results::SUCCESS;
    let mut halted = false;
    for (step, step_id) in job.builder.steps.iter().zip(build.step_ids.iter().copied()) {
        if halted && !step.always_run {
            record(
                ctx.store
                    .step_finish(step_id, results::SKIPPED, "skipped", Budget::Forever)
                    .await,
            );
            continue;
        }
        match ctx
            .store
            .step_start(step_id, job.request.id, ctx.master_id, Budget::Forever)
            .await
        {
            Ok(Owned::Yes(())) => {}
            Ok(Owned::ClaimLost) => {
                tracing::warn!("another master took this build's request over; stopping the build");
                return;
            }
            Err(error) => {
                tracing::error!(%error, "cannot record the step's start");
                return;
            }
        }
        let outcome = run_step(step, &workdir, &env, &ctx.shutdown).await;
        let (step_result, text) = match &outcome {
            StepOutcome::Exited(0) => (results::SUCCESS, "exit code 0".to_owned()),
            StepOutcome::Exited(code) => (results::FAILURE, format!("exit code {code}")),
            StepOutcome::Signalled => (results::FAILURE, "killed by a signal".to_owned()),
            StepOutcome::TimedOut(limit) => {
                (results::FAILURE, format!("timed out after {limit} s"))
            }
            StepOutcome::CannotStart(why) => (results::EXCEPTION, format!("cannot start: {why}")),
            StepOutcome::Interrupted => {
                tracing::info!(step = %step.name, "master shutting down: build interrupted");
                return;
            }
        };
        tracing::info!(step = %step.name, result = step_result, "{text}");
        record(
            ctx.store
                .step_finish(step_id, step_result, &text, Budget::Forever)
                .await,
        );
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
    let text = match overall {
        results::SUCCESS => "build successful",
        results::WARNINGS => "build finished with warnings",
        results::FAILURE => "build failed",
        results::EXCEPTION => "build exception",
        _ => "build finished",
    };
    match ctx
        .store
        .build_finish(
            build.id,
            job.request.id,
            ctx.master_id,
            overall,
            text,
            Budget::Forever,
        )
        .await
    {
        Ok(Owned::Yes(())) => tracing::info!(result = overall, "{text}"),
        Ok(Owned::ClaimLost) => {
            tracing::warn!("the request was taken over by another master; result not recorded")
        }
        Err(error) => tracing::error!(%error, "cannot record the build's end"),
    }
}

fn record(result: Result<(), crate::store::StoreError>) {
    if let Err(error) = result {
        tracing::error!(%error, "cannot record a step's end");
    }
}

/// Build properties as environment variables.
fn build_env(job: &BuildJob, build: &StartedBuild) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let ss = &build.sourcestamp;
    env.insert("BUILDMASTER_BUILDER".to_owned(), job.builder.name.clone());
    env.insert(
        "BUILDMASTER_BUILDNUMBER".to_owned(),
        build.number.to_string(),
    );
    env.insert("BUILDMASTER_WORKER".to_owned(), job.worker_name.clone());
    env.insert("BUILDMASTER_REPOSITORY".to_owned(), ss.repository.clone());
    env.insert(
        "BUILDMASTER_BRANCH".to_owned(),
        ss.branch.clone().unwrap_or_default(),
    );
    env.insert(
        "BUILDMASTER_REVISION".to_owned(),
        ss.revision.clone().unwrap_or_default(),
    );
    for (name, value) in &build.properties {
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        let text = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        env.insert(format!("BUILDMASTER_PROP_{key}"), text);
    }
    env
}

async fn run_step(
    step: &StepConfig,
    workdir: &std::path::Path,
    env: &BTreeMap<String, String>,
    shutdown: &CancellationToken,
) -> StepOutcome {
    let dir = match &step.workdir {
        Some(sub) => workdir.join(sub),
        None => workdir.to_owned(),
    };
    if let Err(error) = tokio::fs::create_dir_all(&dir).await {
        return StepOutcome::CannotStart(format!("work directory {}: {error}", dir.display()));
    }
    let argv = step.command.argv();
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(&dir)
        .envs(env)
        .envs(&step.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    let limit = Duration::from_secs_f64(step.timeout_s);
    tokio::select! {
        status = child.wait() => match status {
            Ok(status) => match status.code() {
                Some(code) => StepOutcome::Exited(code),
                None => StepOutcome::Signalled,
            },
            Err(error) => StepOutcome::CannotStart(error.to_string()),
        },
        _ = tokio::time::sleep(limit) => {
            kill_group();
            let _ = child.wait().await;
            StepOutcome::TimedOut(step.timeout_s)
        }
        _ = shutdown.cancelled() => {
            kill_group();
            let _ = child.wait().await;
            StepOutcome::Interrupted
        }
    }
}
