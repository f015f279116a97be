//! The `buildmaster` binary: parse the command line, set up logging, load
//! settings, run the subcommand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use buildmaster::cli::{
    Cli, Command, ContractCommand, ForceArgs, OneShotArgs, SendchangeArgs, UpArgs,
};
use buildmaster::embedded::EmbeddedDb;
use buildmaster::master::{DatabaseSource, Master};
use buildmaster::settings::Settings;
use buildmaster::store::migrate::migrate;
use buildmaster::store::{Budget, Store, connection_config, describe};
use buildmaster::{contract, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The client commands talk to a master; they need no configuration.
    match cli.command {
        Command::Sendchange(args) => return sendchange(args).await,
        Command::Force(args) => return force(args).await,
        _ => {}
    }
    let (mut settings, config_path) = Settings::load(cli.config.as_deref())?;
    if let Some(path) = &config_path {
        tracing::info!(config = %path.display(), "configuration loaded");
    }
    match cli.command {
        Command::Up(args) => up(&mut settings, args).await,
        Command::Migrate(args) => migrate_command(&mut settings, args).await,
        Command::Contract(command) => contract_command(&mut settings, command).await,
        Command::Sendchange(_) | Command::Force(_) => Ok(()),
    }
}

async fn up(settings: &mut Settings, args: UpArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        settings.http.listen = listen;
    }
    if let Some(token) = args.write_token {
        settings.http.write_token = Some(buildmaster::settings::Secret::new(token));
        settings.validate(None)?;
    }
    if let Some(dir) = args.data_dir {
        settings.embedded.data_dir = dir;
    }
    let source = DatabaseSource::choose(args.database.database_url, settings);
    let master = Master::build(settings.clone(), source).await?;
    master.run_until_stopped(shutdown_signal()).await
}

/// A database opened for a one-shot command: a URL, or the embedded server
/// started for the command's duration.
struct OneShotDb {
    store: Store,
    target: String,
    embedded: Option<EmbeddedDb>,
}

impl OneShotDb {
    async fn open(
        settings: &mut Settings,
        url: Option<String>,
        data_dir: Option<std::path::PathBuf>,
    ) -> anyhow::Result<OneShotDb> {
        if let Some(dir) = data_dir {
            settings.embedded.data_dir = dir;
        }
        let (url, embedded) = match DatabaseSource::choose(url, settings) {
            DatabaseSource::Url(url) => (url, None),
            DatabaseSource::Embedded(dir) => {
                let db = tokio::task::spawn_blocking(move || EmbeddedDb::start(&dir)).await??;
                if let Err(error) = db.ensure_database().await {
                    let _ = tokio::task::spawn_blocking(move || db.stop()).await;
                    return Err(error);
                }
                (db.url(), Some(db))
            }
        };
        let options = settings.store_options();
        let config = connection_config(&url, &options).context("invalid database URL")?;
        let target = describe(&config);
        let store = Store::new(config, &options)?;
        Ok(OneShotDb {
            store,
            target,
            embedded,
        })
    }

    async fn close(self) -> anyhow::Result<()> {
        self.store.close();
        if let Some(db) = self.embedded {
            tokio::task::spawn_blocking(move || db.stop()).await??;
        }
        Ok(())
    }
}

async fn migrate_command(settings: &mut Settings, args: OneShotArgs) -> anyhow::Result<()> {
    let db = OneShotDb::open(settings, args.database.database_url, args.data_dir).await?;
    let wait = Duration::from_secs_f64(args.wait);
    let result = migrate(&db.store, Budget::For(wait)).await;
    let target = db.target.clone();
    db.close().await?;
    let report = result.with_context(|| format!("migrating {target}"))?;
    if report.applied.is_empty() {
        println!(
            "schema already at version {}; no migration applied",
            report.version
        );
    } else {
        for (version, name) in &report.applied {
            println!("applied migration V{version}__{name}");
        }
        println!("schema now at version {}", report.version);
    }
    println!("views applied: {}", report.views.len());
    for view in &report.views {
        println!("  {view}");
    }
    Ok(())
}

async fn contract_command(settings: &mut Settings, command: ContractCommand) -> anyhow::Result<()> {
    let (args, action) = match command {
        ContractCommand::Check(args) => (args, "check"),
        ContractCommand::Docs(args) => (args, "docs"),
        ContractCommand::Snapshot(args) => (args, "snapshot"),
    };
    let db = OneShotDb::open(settings, args.database.database_url, args.data_dir).await?;
    let budget = Budget::For(Duration::from_secs_f64(args.wait));
    let result = async {
        if db.embedded.is_some() {
            migrate(&db.store, budget).await?;
        }
        db.store.contract_read(contract::SCHEMA, budget).await
    }
    .await;
    let target = db.target.clone();
    db.close().await?;
    let (views, intruders) =
        result.with_context(|| format!("reading the views of {} in {target}", contract::SCHEMA))?;
    match action {
        "docs" => print!("{}", contract::render_docs(&views)),
        "snapshot" => print!("{}", contract::render_snapshot(&views)),
        _ => {
            let problems = contract::check(contract::SNAPSHOT, &views, &intruders);
            if !problems.is_empty() {
                for problem in &problems {
                    println!("{problem}");
                }
                anyhow::bail!(
                    "{} of {target} differs from the contract of this release ({} problems above)",
                    contract::SCHEMA,
                    problems.len()
                );
            }
            println!(
                "{} of {target} matches the contract of this release: {} views, {} columns",
                contract::SCHEMA,
                views.len(),
                views.iter().map(|v| v.columns.len()).sum::<usize>()
            );
        }
    }
    Ok(())
}

fn properties(pairs: &[(String, String)]) -> serde_json::Map<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

async fn sendchange(args: SendchangeArgs) -> anyhow::Result<()> {
    let mut body = serde_json::json!({
        "author": args.author.unwrap_or_else(|| "unknown".to_owned()),
        "comments": args.comments,
        "repository": args.repository,
        "project": args.project,
        "branch": args.branch,
        "revision": args.revision,
        "category": args.category,
        "files": args.files,
        "properties": properties(&args.properties),
    });
    if let Some(when) = args.when {
        body["when"] = match when.parse::<f64>() {
            Ok(seconds) => serde_json::json!(seconds),
            Err(_) => serde_json::json!(when),
        };
    }
    let answer = buildmaster::client::post(&args.master, "/api/v1/changes", &body).await?;
    println!("change recorded: {}", answer["change_id"]);
    Ok(())
}

async fn force(args: ForceArgs) -> anyhow::Result<()> {
    let body = serde_json::json!({
        "reason": args.reason,
        "branch": args.branch,
        "revision": args.revision,
        "priority": args.priority,
        "properties": properties(&args.properties),
    });
    let path = format!("/api/v1/builders/{}/force", args.builder);
    let answer = buildmaster::client::post(&args.master, &path, &body).await?;
    println!(
        "build forced: buildset {}, build requests {}",
        answer["buildset_id"], answer["build_request_ids"]
    );
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the master");
                let _ = interrupt.await;
            }
        }
    }
}
