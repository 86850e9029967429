//! The `ampd` binary: flags and config, telemetry, bind, then [`ampd::run`].

use std::net::SocketAddr;

/// mimalloc: per-thread free lists instead of glibc's bins; glibc's malloc/free showed as
/// ~16% of the server's CPU in a perf profile of route load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::process::ExitCode;

use amp_runtime::Shutdown;
use amp_runtime::telemetry::LogFormat;
use anyhow::Context;
use clap::Parser;

/// The all-in-one AMP provider: every service in one process, with an embedded store.
///
/// Settings are layered: built-in defaults < the --config file < AMP__SECTION__KEY
/// environment variables < these flags. See deploy/ampd.example.toml for every key.
#[derive(Debug, Parser)]
#[command(name = "ampd", version, about, long_about)]
struct Cli {
    /// Address to listen on, e.g. 0.0.0.0:8080 (port 0 picks a free port) [config:
    /// server.listen, env: AMP__SERVER__LISTEN; default 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Provider domain used in agent addresses, with at least two labels [config:
    /// server.domain, env: AMP__SERVER__DOMAIN; default amp.test].
    #[arg(long, value_name = "DOMAIN")]
    domain: Option<String>,
    /// Base URL clients reach this server at [config: server.public_url, env:
    /// AMP__SERVER__PUBLIC_URL; default http://<listen address>].
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Directory for the database and the provider key and pepper files [config:
    /// server.data_dir, env: AMP__SERVER__DATA_DIR; default ./amp-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// TOML config file; every key is optional (see deploy/ampd.example.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log line format; auto is pretty on a terminal, else JSON [config: log.format, env:
    /// AMP__LOG__FORMAT; default auto].
    #[arg(long, value_name = "FORMAT", value_parser = ["auto", "json", "pretty"])]
    log_format: Option<String>,
    /// Copy the data directory's redb store (amp.redb) into a new fjall store (amp.fjall),
    /// print the rows per table and the time taken, and exit without serving. Stop ampd
    /// first; amp.redb is kept as the backup, and the next start uses amp.fjall.
    #[arg(long)]
    migrate_store: bool,
}

impl Cli {
    /// The flags that were given, as `section.key` overrides of the config.
    fn overrides(&self) -> Vec<(String, String)> {
        let pairs = [
            ("server.listen", self.listen.map(|a| a.to_string())),
            ("server.domain", self.domain.clone()),
            ("server.public_url", self.public_url.clone()),
            (
                "server.data_dir",
                self.data_dir.as_ref().map(|d| d.display().to_string()),
            ),
            ("log.format", self.log_format.clone()),
        ];
        pairs
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect()
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: ampd::Config =
        match amp_runtime::config::load(cli.config.as_deref(), "AMP", &cli.overrides()) {
            Ok(config) => config,
            Err(e) => {
                eprintln!("ampd: {e}");
                return ExitCode::FAILURE;
            }
        };
    if cli.migrate_store {
        return match ampd::migrate::migrate_store(&config) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ampd: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    amp_runtime::telemetry::init(&config.log);
    amp_runtime::metrics::install();
    let log_format = config.log.format.resolve();
    let result = start(config).await;
    // The last spans, before the process exits (a no-op with tracing off).
    amp_runtime::telemetry::flush().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Collectors get the failure as a JSON line; people always get one plain line.
            if log_format == LogFormat::Json {
                tracing::error!(error = %format!("{e:#}"), "ampd failed");
            }
            eprintln!("ampd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: ampd::Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    // A plain first line on stdout, so scripts and tests learn the port chosen for port 0.
    println!("listening on {}", listener.local_addr()?);
    let shutdown = Shutdown::new();
    shutdown.listen_for_signals();
    ampd::run(config, listener, shutdown).await
}
