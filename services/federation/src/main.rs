//! `federation`, the cluster binary of the federation service. The cluster topology (NATS
//! bus, shared store) is not composed yet, so this binary only documents itself; in a single
//! node, `ampd` runs federation in-process (`[federation] enabled = true`).

use clap::Parser;

/// The AMP federation service (cluster mode).
#[derive(Parser, Debug)]
#[command(name = "federation", version, about)]
struct Args {
    /// The configuration file (TOML, with a `[federation]` section).
    #[arg(long, env = "AMP_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "the standalone federation service needs the cluster bus and store, which are not \
         available in this build (config: {:?}); run ampd with [federation] enabled = true",
        args.config
    )
}
