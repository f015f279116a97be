//! Benchmark of the published views at scale (issue: performance of the
//! contract). Run with
//!
//! ```sh
//! cargo bench --bench contract_views
//! ```
//!
//! Without `BENCH_DATABASE_URL` it starts a throwaway PostgreSQL from this
//! machine's binaries, migrates it and fills it with
//! `ops/generate-history.sql` (`BENCH_BUILDS` builds, default 1,000,000, with
//! 5 steps each; `BENCH_BUILDERS` builders, default 100). With
//! `BENCH_DATABASE_URL` it measures that (already generated) database.
//!
//! For each reporting query it prints the median and 95th percentile of 10
//! timed runs (after 2 warm-up runs) and whether the plan reads the large
//! tables through indexes only (no sequential scan of builds or steps).
//! Target: median under 20 ms.

use std::time::{Duration, Instant};

use buildmaster::pgserver::{Cluster, ClusterOptions, PgBinaries, StopMode};
use buildmaster::store::migrate::migrate;
use buildmaster::store::{Budget, Store, StoreOptions, connection_config};

const RUNS: usize = 10;
const WARM_UPS: usize = 2;

struct Query {
    name: &'static str,
    sql: &'static str,
}

const QUERIES: &[Query] = &[
    Query {
        name: "builder_status (all builders)",
        sql: "SELECT * FROM buildmaster_v1.builder_status ORDER BY builder_name",
    },
    Query {
        name: "last 50 builds of a builder (by id)",
        sql: "SELECT * FROM buildmaster_v1.builds WHERE builder_id = \
              (SELECT builder_id FROM buildmaster_v1.builders WHERE name = 'builder-42') \
              ORDER BY number DESC LIMIT 50",
    },
    Query {
        name: "last 50 builds of a builder (by name)",
        sql: "SELECT * FROM buildmaster_v1.builds WHERE builder_name = 'builder-42' \
              ORDER BY number DESC LIMIT 50",
    },
    Query {
        name: "builder_daily_stats, 1 builder, 30 days",
        sql: "SELECT * FROM buildmaster_v1.builder_daily_stats WHERE builder_name = 'builder-42' \
              AND time BETWEEN now() - interval '30 days' AND now() ORDER BY time",
    },
    Query {
        name: "steps of one build",
        sql: "SELECT * FROM buildmaster_v1.steps WHERE build_id = 500000 ORDER BY number",
    },
];

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes --bench; `cargo test --benches` would too. Only run
    // when asked for as a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut server = None;
    let url = match std::env::var("BENCH_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let builds = env_number("BENCH_BUILDS", 1_000_000);
            let builders = env_number("BENCH_BUILDERS", 100);
            let (cluster, url, dir) = start_server()?;
            let generated = Instant::now();
            runtime.block_on(prepare(&url))?;
            let status = std::process::Command::new(PgBinaries::locate()?.bin("psql"))
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
                .arg("-v")
                .arg(format!("builds={builds}"))
                .arg("-v")
                .arg(format!("builders={builders}"))
                .arg("-f")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/ops/generate-history.sql"
                ))
                .arg(&url)
                .status()?;
            anyhow::ensure!(status.success(), "ops/generate-history.sql failed");
            println!(
                "generated {builds} builds ({} steps) over {builders} builders in {:.0} s",
                builds * 5,
                generated.elapsed().as_secs_f64()
            );
            server = Some((cluster, dir));
            url
        }
    };
    let result = runtime.block_on(measure(&url));
    if let Some((cluster, dir)) = server {
        let _ = cluster.stop(StopMode::Fast);
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

fn start_server() -> anyhow::Result<(Cluster, String, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(format!("bm-bench-{}", std::process::id()));
    let mut cluster = Cluster::open(
        PgBinaries::locate()?,
        &dir.join("data"),
        &dir,
        ClusterOptions {
            superuser: "bench".to_owned(),
            password: "bench".to_owned(),
            settings: vec![
                ("shared_buffers".to_owned(), "256MB".to_owned()),
                ("work_mem".to_owned(), "16MB".to_owned()),
                ("maintenance_work_mem".to_owned(), "256MB".to_owned()),
                ("max_wal_size".to_owned(), "4GB".to_owned()),
                ("fsync".to_owned(), "off".to_owned()),
            ],
        },
    )?;
    cluster.start(0)?;
    cluster.stop_when_process_exits(std::process::id(), &dir)?;
    let url = cluster.url("postgres");
    Ok((cluster, url, dir))
}

async fn prepare(url: &str) -> anyhow::Result<()> {
    let options = StoreOptions::default();
    let store = Store::new(connection_config(url, &options)?, &options)?;
    migrate(&store, Budget::For(Duration::from_secs(60))).await?;
    store.close();
    Ok(())
}

async fn measure(url: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let builds: i64 = client
        .query_one("SELECT count(*) FROM buildmaster_private.builds", &[])
        .await?
        .get(0);
    let steps: i64 = client
        .query_one("SELECT count(*) FROM buildmaster_private.steps", &[])
        .await?
        .get(0);
    println!(
        "\ndatabase: {builds} builds, {steps} steps; {RUNS} timed runs per query after {WARM_UPS} warm-ups\n"
    );
    println!(
        "{:<42} {:>10} {:>10} {:>6}  plan",
        "query", "median ms", "p95 ms", "rows"
    );
    for query in QUERIES {
        let mut times = Vec::with_capacity(RUNS);
        let mut rows = 0;
        for run in 0..WARM_UPS + RUNS {
            let started = Instant::now();
            rows = client.query(query.sql, &[]).await?.len();
            if run >= WARM_UPS {
                times.push(started.elapsed());
            }
        }
        times.sort();
        let median =
            times[RUNS / 2 - 1].as_secs_f64() * 500.0 + times[RUNS / 2].as_secs_f64() * 500.0;
        let p95 = times[((RUNS as f64) * 0.95).ceil() as usize - 1].as_secs_f64() * 1000.0;
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {}", query.sql), &[])
            .await?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        let plan_text = plan.join("\n");
        let seq_scans: Vec<&str> = [
            "builds",
            "steps",
            "build_requests",
            "buildsets",
            "sourcestamps",
        ]
        .into_iter()
        .filter(|t| plan_text.contains(&format!("Seq Scan on {t}")))
        .collect();
        let verdict = if seq_scans.is_empty() {
            "indexes only".to_owned()
        } else {
            format!("SEQ SCAN on {}", seq_scans.join(", "))
        };
        println!(
            "{:<42} {:>10.2} {:>10.2} {:>6}  {}{}",
            query.name,
            median,
            p95,
            rows,
            verdict,
            if median < 20.0 {
                ""
            } else {
                "  (over the 20 ms target)"
            }
        );
        if std::env::var_os("BENCH_SHOW_PLANS").is_some() {
            println!("{plan_text}\n");
        }
    }
    Ok(())
}
