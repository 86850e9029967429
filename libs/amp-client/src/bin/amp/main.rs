//! `amp`: talk to an Agent Messaging Protocol provider from a terminal.
//!
//! `amp init`, `amp register`, `amp send`, `amp inbox`, `amp ack`, `amp read`, `amp tail`,
//! `amp receipts`, `amp info`, `amp admin` (the operator plane, see `admin`), and `amp load` (the load generator, see `load`). State lives in a per-user directory (see `config`); every
//! command prints JSON with `--json`. Provider errors go to stderr as `error: <code>:
//! <message>` with exit status 1.

mod admin;
mod commands;
mod config;
mod load;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Talk to an Agent Messaging Protocol provider.
#[derive(Parser)]
#[command(name = "amp", version, about)]
struct Cli {
    /// The provider's base URL (e.g. http://127.0.0.1:8080); by default the one registered with.
    #[arg(long, global = true, env = "AMP_PROVIDER")]
    provider: Option<String>,
    /// The directory holding the key, the registration and the settings.
    #[arg(long, global = true, env = "AMP_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the agent's Ed25519 key (kept 0600 in the config directory).
    Init {
        /// Replace an existing key (the registration made with it is forgotten).
        #[arg(long)]
        force: bool,
    },
    /// Register this key with a provider and remember the API key.
    Register(RegisterArgs),
    /// Send a signed message.
    Send(SendArgs),
    /// List pending messages (they stay until acked).
    Inbox {
        /// Most messages to show.
        #[arg(long)]
        limit: Option<usize>,
        /// Seconds to wait for a message when there is none (at most 30).
        #[arg(long)]
        wait: Option<u64>,
        /// Only messages queued after this cursor.
        #[arg(long)]
        after: Option<String>,
    },
    /// Acknowledge messages (remove them from the inbox).
    Ack {
        /// Message ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Send the sender a read receipt for a message (does not ack it).
    Read {
        /// Message id.
        id: String,
    },
    /// Follow the inbox over a WebSocket, printing messages as they arrive.
    Tail {
        /// Do not ack messages after printing them.
        #[arg(long)]
        no_ack: bool,
    },
    /// Show delivery and read receipts for messages this agent sent.
    Receipts {
        /// Drop the receipts shown from the provider.
        #[arg(long)]
        clear: bool,
    },
    /// Show the provider's information and this agent's registration.
    Info,
    /// Operate the provider through its admin API: tenants, owner keys, invites, operator
    /// tokens, the audit log.
    Admin(admin::AdminArgs),
    /// Generate load against a provider (`amp load --help`).
    #[command(disable_help_flag = true)]
    Load {
        /// See `amp load --help`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
        args: Vec<String>,
    },
}

#[derive(Args)]
struct RegisterArgs {
    /// The tenant (optional with a user key: the key's tenant is used).
    #[arg(long)]
    tenant: Option<String>,
    /// The agent's name.
    #[arg(long)]
    name: String,
    /// A user key (`uk_…`) to register as its owner.
    #[arg(long, env = "AMP_USER_KEY")]
    user_key: Option<String>,
}

#[derive(Args)]
struct SendArgs {
    /// Recipient address (`name@tenant.provider`, or `name` within your tenant).
    to: String,
    /// Subject.
    subject: String,
    /// Message text.
    message: String,
    /// Payload type (`notification`, `request`, `response`, `task`, `status`, …).
    #[arg(long = "type", default_value = "notification")]
    kind: String,
    /// A JSON value to send as `payload.context` (kept byte for byte).
    #[arg(long)]
    context: Option<String>,
    /// `urgent`, `high`, `normal` or `low`.
    #[arg(long, default_value = "normal")]
    priority: String,
    /// The id of the message this one answers.
    #[arg(long)]
    reply_to: Option<String>,
    /// The thread to file the message in.
    #[arg(long)]
    thread: Option<String>,
    /// A client-chosen message id (`msg_<millis>_<hex>`), making retries idempotent.
    #[arg(long)]
    id: Option<String>,
    /// Ask for a delivery receipt.
    #[arg(long)]
    receipt: bool,
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let result = match load::split_args(&argv) {
        // The load generator wants every core; the other commands one thread.
        Some(args) => load::main(args),
        None => {
            let cli = Cli::parse();
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(commands::run(cli)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<amp_client::ClientError>() {
                Some(c) => eprintln!("error: {}: {}", c.code(), c.message()),
                None => eprintln!("error: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}
