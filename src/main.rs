//! The `otelscale` binary: parses the command line, sets up logging and runs a command.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use otelscale::config::{LogFormat, ServeArgs};
use otelscale::server::{self, Listeners};

/// mimalloc: fewer cycles per allocation and less fragmentation under many small, short-lived
/// buffers (see perf-reports/2026-11-30-dataplane.md for the measurement against the system
/// allocator; build with `--no-default-features` to get the system allocator).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL_ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "otelscale", version, about = "OpenTelemetry metrics in, KEDA scaling answers out")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: OTLP receivers, KEDA external scaler and admin port.
    Serve(ServeArgs),
    /// Print the value the scaler would return for a query, asking a running server.
    Query(QueryArgs),
    /// Work with snapshot files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Print what each snapshot in DIR holds and whether it validates (exit status 1 when the
    /// newest does not).
    Inspect {
        /// The snapshot directory (`--snapshot-dir` of the server).
        dir: std::path::PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct QueryArgs {
    /// The metricQuery, e.g. 'avg(model_training_tokens{model=my_model})'.
    query: String,
    /// Operation over time: last_one, rate, count, avg, min, max.
    #[arg(long, env = "OTELSCALE_OP", default_value = "last_one")]
    op: String,
    /// Window of samples to consider (default 60s, at most the server's retention).
    #[arg(long, env = "OTELSCALE_WINDOW", value_parser = humantime::parse_duration)]
    window: Option<Duration>,
    /// The server's admin address.
    #[arg(long, env = "OTELSCALE_ADMIN_URL", default_value = "http://127.0.0.1:8080")]
    admin_url: String,
}

/// Logs on stderr: `--log-level` (or `OTELSCALE_LOG_LEVEL`), else `RUST_LOG`, else `info`.
fn init_logging(format: LogFormat, level: Option<&str>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(directives) => EnvFilter::try_new(directives)
            .with_context(|| format!("--log-level `{directives}` is not a level or a list of directives"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logging = match &cli.command {
        Command::Serve(args) => init_logging(args.log_format, args.log_level.as_deref()),
        _ => init_logging(LogFormat::Text, None),
    };
    if let Err(err) = logging {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|runtime| {
            runtime.block_on(async {
                match cli.command {
                    Command::Serve(args) => serve(args).await,
                    Command::Query(args) => query(args).await,
                    Command::Snapshot(SnapshotCommand::Inspect { dir }) => inspect_snapshots(&dir),
                }
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.validate()?;
    let listeners = Listeners::bind(&config).await?;
    server::run(listeners, config, shutdown_signal()).await?;
    Ok(())
}

fn inspect_snapshots(dir: &std::path::Path) -> anyhow::Result<()> {
    let inspections =
        otelscale::snapshot::inspect(dir).with_context(|| format!("reading snapshot directory {}", dir.display()))?;
    if inspections.is_empty() {
        anyhow::bail!("no snapshot in {}", dir.display());
    }
    for inspection in &inspections {
        println!("{}", inspection.path.display());
        println!("  size: {} bytes", inspection.bytes);
        match &inspection.header {
            Some(header) => {
                println!("  format version: {}", header.version);
                println!("  created: {}", format_unix_ms(header.created_unix_ms));
                println!("  sections (writer's shards): {}", header.section_count);
                println!("  series: {}", header.series_count);
                println!("  samples: {}", header.sample_count);
                if header.sample_count > 0 {
                    println!(
                        "  time range: {} .. {}",
                        format_unix_ms(header.oldest_ms),
                        format_unix_ms(header.newest_ms)
                    );
                }
            }
            None => println!("  header: unreadable"),
        }
        match &inspection.validation {
            Ok(_) => println!("  valid: yes"),
            Err(reason) => println!("  valid: no ({reason})"),
        }
    }
    match &inspections[0].validation {
        Ok(_) => Ok(()),
        Err(reason) => anyhow::bail!("the newest snapshot does not validate: {reason}"),
    }
}

fn format_unix_ms(unix_ms: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(unix_ms).unwrap_or(0));
    format!("{} ({unix_ms} ms)", humantime::format_rfc3339_millis(time))
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let mut params = vec![("metricQuery", args.query.clone()), ("operationOverTime", args.op.clone())];
    if let Some(window) = args.window {
        params.push(("windowSeconds", window.as_secs().to_string()));
    }
    let base = args.admin_url.trim_end_matches('/');
    let url = reqwest::Url::parse_with_params(&format!("{base}/api/v1/query"), &params)
        .with_context(|| format!("`{}` is not a valid --admin-url", args.admin_url))?;
    let response = reqwest::get(url).await.with_context(|| format!("cannot reach otelscale at {base}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.context("reading the server's answer")?;
    if !status.is_success() {
        let message = body.get("error").and_then(|e| e.as_str()).unwrap_or("unknown error");
        anyhow::bail!("{message}");
    }
    let value = body.get("value").and_then(serde_json::Value::as_f64).context("answer has no value")?;
    let matched = body.get("matchedSeries").and_then(serde_json::Value::as_u64).unwrap_or(0);
    println!("{value}");
    eprintln!("matched series: {matched}");
    Ok(())
}
