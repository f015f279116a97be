//! The build configuration: workers, builders (with their steps) and
//! schedulers, as read from the `[[workers]]`, `[[builders]]` and
//! `[[schedulers]]` tables of the configuration file, and checked across
//! references (a builder's workers exist, a scheduler's builders exist,
//! names are unique, cron expressions and time zones parse).
//!
//! The reference of every key is `docs/configuration.md`.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `[[workers]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// Unique name.
    pub name: String,
    /// `local`: steps run as subprocesses on the master's machine.
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Builds run at once on this worker. Default 1.
    #[serde(default = "one")]
    pub max_builds: u32,
}

fn default_kind() -> String {
    "local".to_owned()
}

fn one() -> u32 {
    1
}

/// A step's command: an argument vector, or a string run by `sh -c`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum CommandSpec {
    /// `["make", "test"]`
    Argv(Vec<String>),
    /// `"make test && make install"` (run by `sh -c`)
    Shell(String),
}

impl CommandSpec {
    /// The argument vector to execute.
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Argv(argv) => argv.clone(),
            CommandSpec::Shell(line) => vec!["sh".to_owned(), "-c".to_owned(), line.clone()],
        }
    }
}

/// `[[builders.steps]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// Name shown in the views and the UI.
    pub name: String,
    /// What to run.
    pub command: CommandSpec,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory, relative to the builder's work directory.
    pub workdir: Option<String>,
    /// Seconds before the step is killed. Default 1200.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Stop the build when this step fails. Default true.
    #[serde(default = "yes")]
    pub halt_on_failure: bool,
    /// A failure of this step fails the build. Default true.
    #[serde(default = "yes")]
    pub flunk_on_failure: bool,
    /// A failure of this step makes the build `warnings` (when it does not flunk).
    #[serde(default)]
    pub warn_on_failure: bool,
    /// Run even after an earlier failure or a cancel.
    #[serde(default)]
    pub always_run: bool,
}

fn default_timeout() -> f64 {
    1200.0
}

fn yes() -> bool {
    true
}

/// `[[builders]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BuilderConfig {
    /// Unique name (letters, digits, `.`, `-`, `_`).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Workers that may run this builder's builds.
    pub workers: Vec<String>,
    /// Steps, in order.
    #[serde(default)]
    pub steps: Vec<StepConfig>,
}

/// What a nightly scheduler does about runs missed while no master ran.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum CatchUp {
    /// One run at start-up for all the runs missed (default).
    #[default]
    Once,
    /// Missed runs are skipped; the next run is the next one due.
    Skip,
}

/// `[[schedulers]]`, by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SchedulerConfig {
    /// Changes on one branch; one buildset `tree_stable_s` after the last.
    SingleBranch {
        /// Unique name.
        name: String,
        /// The branch.
        branch: String,
        /// Seconds without a new change before building. Default 0.
        #[serde(default)]
        tree_stable_s: f64,
        /// Only changes touching a file that starts with one of these
        /// prefixes count; empty: every change.
        #[serde(default)]
        files: Vec<String>,
        /// Builders to build.
        builders: Vec<String>,
    },
    /// Like single-branch, for every branch separately.
    AnyBranch {
        /// Unique name.
        name: String,
        /// Seconds without a new change on a branch before building it.
        #[serde(default)]
        tree_stable_s: f64,
        /// File-prefix filter as for single-branch.
        #[serde(default)]
        files: Vec<String>,
        /// Builders to build.
        builders: Vec<String>,
    },
    /// Every `period_s` seconds.
    Periodic {
        /// Unique name.
        name: String,
        /// Seconds between runs.
        period_s: f64,
        /// Branch to build; none: the default branch.
        branch: Option<String>,
        /// Builders to build.
        builders: Vec<String>,
    },
    /// At the times of a cron expression in a time zone.
    Nightly {
        /// Unique name.
        name: String,
        /// Five-field cron expression (`minute hour day month weekday`).
        cron: String,
        /// IANA time zone of the expression. Default UTC.
        #[serde(default = "utc")]
        timezone: String,
        /// Runs missed while no master ran: `once` (default) or `skip`.
        #[serde(default)]
        catch_up: CatchUp,
        /// Branch to build; none: the default branch.
        branch: Option<String>,
        /// Builders to build.
        builders: Vec<String>,
    },
    /// Builds on request: `POST /api/v1/builders/{name}/force`.
    Force {
        /// Unique name.
        name: String,
        /// Builders that may be forced through this scheduler.
        builders: Vec<String>,
    },
    /// A buildset when a buildset of `upstream` finishes successfully
    /// (success or warnings), with the same source stamp.
    Dependent {
        /// Unique name.
        name: String,
        /// Name of the upstream scheduler.
        upstream: String,
        /// Builders to build.
        builders: Vec<String>,
    },
}

fn utc() -> String {
    "UTC".to_owned()
}

impl SchedulerConfig {
    /// The scheduler's name.
    pub fn name(&self) -> &str {
        match self {
            SchedulerConfig::SingleBranch { name, .. }
            | SchedulerConfig::AnyBranch { name, .. }
            | SchedulerConfig::Periodic { name, .. }
            | SchedulerConfig::Nightly { name, .. }
            | SchedulerConfig::Force { name, .. }
            | SchedulerConfig::Dependent { name, .. } => name,
        }
    }

    /// The kind, as stored and shown in `buildmaster_v1.schedulers`.
    pub fn kind(&self) -> &'static str {
        match self {
            SchedulerConfig::SingleBranch { .. } => "single-branch",
            SchedulerConfig::AnyBranch { .. } => "any-branch",
            SchedulerConfig::Periodic { .. } => "periodic",
            SchedulerConfig::Nightly { .. } => "nightly",
            SchedulerConfig::Force { .. } => "force",
            SchedulerConfig::Dependent { .. } => "dependent",
        }
    }

    /// The builders it creates requests for.
    pub fn builders(&self) -> &[String] {
        match self {
            SchedulerConfig::SingleBranch { builders, .. }
            | SchedulerConfig::AnyBranch { builders, .. }
            | SchedulerConfig::Periodic { builders, .. }
            | SchedulerConfig::Nightly { builders, .. }
            | SchedulerConfig::Force { builders, .. }
            | SchedulerConfig::Dependent { builders, .. } => builders,
        }
    }
}

/// A nightly schedule: a cron expression in a time zone.
#[derive(Debug, Clone)]
pub struct NightlySchedule {
    cron: croner::Cron,
    timezone: chrono_tz::Tz,
}

impl NightlySchedule {
    /// Parses `cron` (five fields) and `timezone` (IANA name).
    ///
    /// Fails with a message naming what does not parse.
    pub fn parse(cron: &str, timezone: &str) -> Result<NightlySchedule, String> {
        let parsed = croner::Cron::from_str(cron)
            .map_err(|e| format!("cron {cron:?} does not parse: {e}"))?;
        let timezone = chrono_tz::Tz::from_str(timezone).map_err(|_| {
            format!("timezone {timezone:?} is not an IANA time zone (like Europe/Paris)")
        })?;
        Ok(NightlySchedule {
            cron: parsed,
            timezone,
        })
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// Checks names and references across workers, builders and schedulers.
///
/// Fails with the first problem, naming the table and entry.
pub fn validate(
    workers: &[WorkerConfig],
    builders: &[BuilderConfig],
    schedulers: &[SchedulerConfig],
) -> Result<(), String> {
    let mut worker_names = HashSet::new();
    for worker in workers {
        if worker.name.trim().is_empty() {
            return Err("[[workers]]: a worker has an empty name".to_owned());
        }
        if !worker_names.insert(worker.name.as_str()) {
            return Err(format!("[[workers]] {:?} is defined twice", worker.name));
        }
        if worker.kind != "local" {
            return Err(format!(
                "[[workers]] {:?}: kind {:?} is not supported; use kind = \"local\"",
                worker.name, worker.kind
            ));
        }
        if worker.max_builds == 0 || worker.max_builds > 1000 {
            return Err(format!(
                "[[workers]] {:?}: max_builds must be 1 to 1000",
                worker.name
            ));
        }
    }
    let mut builder_names = HashSet::new();
    for builder in builders {
        let valid_name = !builder.name.is_empty()
            && builder
                .name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && builder
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid_name {
            return Err(format!(
                "[[builders]] {:?}: a name is letters, digits, '.', '-' and '_', starting with a letter or digit",
                builder.name
            ));
        }
        if !builder_names.insert(builder.name.as_str()) {
            return Err(format!("[[builders]] {:?} is defined twice", builder.name));
        }
        if builder.workers.is_empty() {
            return Err(format!(
                "[[builders]] {:?}: workers must name at least one worker",
                builder.name
            ));
        }
        for worker in &builder.workers {
            if !worker_names.contains(worker.as_str()) {
                return Err(format!(
                    "[[builders]] {:?}: worker {worker:?} is not defined in [[workers]]",
                    builder.name
                ));
            }
        }
        for step in &builder.steps {
            if step
                .command
                .argv()
                .first()
                .is_none_or(|program| program.is_empty())
            {
                return Err(format!(
                    "[[builders]] {:?}, step {:?}: command is empty",
                    builder.name, step.name
                ));
            }
            if !(step.timeout_s.is_finite() && step.timeout_s > 0.0) {
                return Err(format!(
                    "[[builders]] {:?}, step {:?}: timeout_s must be a positive number of seconds",
                    builder.name, step.name
                ));
            }
        }
    }
    let mut scheduler_names = HashSet::new();
    for scheduler in schedulers {
        let name = scheduler.name();
        if !scheduler_names.insert(name) {
            return Err(format!("[[schedulers]] {name:?} is defined twice"));
        }
        if scheduler.builders().is_empty() {
            return Err(format!(
                "[[schedulers]] {name:?}: builders must name at least one builder"
            ));
        }
        for builder in scheduler.builders() {
            if !builder_names.contains(builder.as_str()) {
                return Err(format!(
                    "[[schedulers]] {name:?}: builder {builder:?} is not defined in [[builders]]"
                ));
            }
        }
        match scheduler {
            SchedulerConfig::SingleBranch { tree_stable_s, .. }
            | SchedulerConfig::AnyBranch { tree_stable_s, .. }
                if !(tree_stable_s.is_finite() && *tree_stable_s >= 0.0) =>
            {
                return Err(format!(
                    "[[schedulers]] {name:?}: tree_stable_s must be 0 or more seconds"
                ));
            }
            SchedulerConfig::Periodic { period_s, .. }
                if !(period_s.is_finite() && *period_s >= 1.0) =>
            {
                return Err(format!(
                    "[[schedulers]] {name:?}: period_s must be at least 1 second"
                ));
            }
            SchedulerConfig::Nightly { cron, timezone, .. } => {
                NightlySchedule::parse(cron, timezone)
                    .map_err(|e| format!("[[schedulers]] {name:?}: {e}"))?;
            }
            _ => {}
        }
    }
    for scheduler in schedulers {
        if let SchedulerConfig::Dependent { name, upstream, .. } = scheduler {
            if !scheduler_names.contains(upstream.as_str()) || upstream == name {
                return Err(format!(
                    "[[schedulers]] {name:?}: upstream {upstream:?} is not another scheduler in [[schedulers]]"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nightly_schedule_follows_its_time_zone() {
        let schedule = NightlySchedule::parse("0 3 * * *", "Europe/Paris").unwrap();
        let after = DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = schedule.next_after(after).unwrap();
        // 03:00 in Paris in summer is 01:00 UTC.
        assert_eq!(next.to_rfc3339(), "2026-07-02T01:00:00+00:00");
    }

    #[test]
    fn bad_cron_and_time_zones_are_named() {
        assert!(
            NightlySchedule::parse("61 * * * *", "UTC")
                .unwrap_err()
                .contains("cron")
        );
        assert!(
            NightlySchedule::parse("0 3 * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("timezone")
        );
    }
}
