//! The `buildmaster` binary: parse the command line, set up logging, load
//! settings, run the subcommand.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use buildmaster::cli::{Cli, Command, MigrateArgs, UpArgs};
use buildmaster::embedded::EmbeddedDb;
use buildmaster::master::{DatabaseSource, Master};
use buildmaster::settings::Settings;
use buildmaster::store::migrate::migrate;
use buildmaster::store::{Budget, Store, connection_config, describe};
use buildmaster::telemetry;

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
    let (mut settings, config_path) = Settings::load(cli.config.as_deref())?;
    if let Some(path) = &config_path {
        tracing::info!(config = %path.display(), "configuration loaded");
    }
    match cli.command {
        Command::Up(args) => up(&mut settings, args).await,
        Command::Migrate(args) => migrate_command(&mut settings, args).await,
    }
}

async fn up(settings: &mut Settings, args: UpArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        settings.http.listen = listen;
    }
    if let Some(dir) = args.data_dir {
        settings.embedded.data_dir = dir;
    }
    let source = DatabaseSource::choose(args.database.database_url, settings);
    let master = Master::build(settings.clone(), source).await?;
    master.run_until_stopped(shutdown_signal()).await
}

async fn migrate_command(settings: &mut Settings, args: MigrateArgs) -> anyhow::Result<()> {
    if let Some(dir) = args.data_dir {
        settings.embedded.data_dir = dir;
    }
    let (url, embedded) = match DatabaseSource::choose(args.database.database_url, settings) {
        DatabaseSource::Url(url) => (url, None),
        DatabaseSource::Embedded(dir) => {
            let db = tokio::task::spawn_blocking(move || EmbeddedDb::start(&dir)).await??;
            db.ensure_database().await?;
            (db.url(), Some(db))
        }
    };
    let options = settings.store_options();
    let config = connection_config(&url, &options).context("invalid database URL")?;
    let target = describe(&config);
    let store = Store::new(config, &options)?;
    let wait = Duration::from_secs_f64(args.wait);
    let result = migrate(&store, Budget::For(wait)).await;
    store.close();
    if let Some(db) = embedded {
        tokio::task::spawn_blocking(move || db.stop()).await??;
    }
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
