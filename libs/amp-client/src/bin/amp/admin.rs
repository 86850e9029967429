//! `amp admin …`: the operator plane from a terminal, through [`AdminClient`]. Tables by
//! default, the API's JSON with `--json`; the admin URL and operator token come from flags
//! or `AMP_ADMIN_URL` / `AMP_ADMIN_TOKEN` (a token in the environment stays out of the
//! shell history).

use amp_client::AdminClient;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// `amp admin`.
#[derive(Args)]
pub(crate) struct AdminArgs {
    /// The admin API's base URL (the admin listener, e.g. http://127.0.0.1:8081).
    #[arg(long, env = "AMP_ADMIN_URL", default_value = "http://127.0.0.1:8081")]
    admin_url: String,
    /// The operator token (`amp_op_…`).
    #[arg(long, env = "AMP_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Tenants: list, create, show, change, suspend, resume, delete.
    #[command(subcommand)]
    Tenants(TenantCommand),
    /// One agent: suspend (spec-next 07), resume.
    #[command(subcommand)]
    Agents(AgentCommand),
    /// Owner keys (`uk_…`) of a tenant: issue, list, rotate, revoke.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Single-use invite codes for tenants in `invite` mode.
    #[command(subcommand)]
    Invites(InviteCommand),
    /// Operator tokens (needs a `full` token): list, create, revoke.
    #[command(subcommand)]
    Tokens(TokenCommand),
    /// Usage of a tenant per hour or day (messages in/out, federated, bytes, agents,
    /// connections); `--csv` for billing (every tenant when no tenant is named).
    Usage {
        /// The tenant (with `--csv`, optional: every tenant).
        tenant: Option<String>,
        /// `hour` (the default) or `day`.
        #[arg(long)]
        period: Option<String>,
        /// From (RFC 3339; default 24 hours before `--to`).
        #[arg(long)]
        from: Option<String>,
        /// To (RFC 3339; default now).
        #[arg(long)]
        to: Option<String>,
        /// Print the API's CSV.
        #[arg(long)]
        csv: bool,
    },
    /// The audit log, oldest first.
    Audit {
        /// Entries after this cursor (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Most entries (1-500).
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Suspend an agent: its requests 403 agent_suspended, routes to it 403
    /// recipient_suspended, its sockets closed (4003); its mailbox is kept.
    Suspend {
        /// The tenant.
        tenant: String,
        /// The agent's name in the tenant, or its `agt_…` id.
        agent: String,
        /// Why (kept in the record and the audit log, never shown to the agent).
        #[arg(long)]
        reason: String,
        /// For this many hours (default: until resumed).
        #[arg(long)]
        hours: Option<u64>,
    },
    /// Lift an agent's suspension.
    Resume {
        /// The tenant.
        tenant: String,
        /// The agent's name in the tenant, or its `agt_…` id.
        agent: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// List tenants, by name.
    List {
        /// Only `active`, `suspended` or `deleting` ones.
        #[arg(long)]
        status: Option<String>,
        /// Tenants after this name.
        #[arg(long)]
        after: Option<String>,
        /// Most tenants (1-500).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Create a tenant.
    Create {
        /// The tenant's name (a DNS label).
        name: String,
        /// Who may register agents: `open`, `owner_key` (the default) or `invite`.
        #[arg(long)]
        registration: Option<String>,
    },
    /// Show a tenant.
    Show {
        /// The tenant.
        name: String,
    },
    /// Change a tenant's registration mode.
    Update {
        /// The tenant.
        name: String,
        /// `open`, `owner_key` or `invite`.
        #[arg(long)]
        registration: String,
    },
    /// Set limits of a tenant's plan (the others stay as they are; `--clear` first drops
    /// them all, back to the configuration's default plan).
    Plan {
        /// The tenant.
        name: String,
        /// Drop the tenant's own limits before setting the given ones.
        #[arg(long)]
        clear: bool,
        /// Most agents.
        #[arg(long)]
        agents: Option<u64>,
        /// Messages per minute, the tenant's agents together.
        #[arg(long)]
        messages_per_minute: Option<u32>,
        /// Messages per day, the tenant's agents together.
        #[arg(long)]
        messages_per_day: Option<u32>,
        /// Most bytes stored.
        #[arg(long)]
        stored_bytes: Option<u64>,
        /// Largest message, bytes.
        #[arg(long)]
        message_bytes: Option<u64>,
        /// Most WebSocket connections at once.
        #[arg(long)]
        connections: Option<u32>,
        /// Whether messages to other providers are allowed.
        #[arg(long)]
        federation: Option<bool>,
    },
    /// Suspend a tenant: its agents are refused and their sockets closed.
    Suspend {
        /// The tenant.
        name: String,
        /// Why (kept in the tenant and the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a suspended tenant.
    Resume {
        /// The tenant.
        name: String,
    },
    /// Delete a tenant and everything of it (agents, keys, mailboxes, receipts, jobs): it is
    /// suspended at once and purged in the background. Asks nothing.
    Delete {
        /// The tenant.
        name: String,
        /// Wait until the purge is done (or failed), polling its status.
        #[arg(long)]
        wait: bool,
    },
    /// Set a tenant's notification webhook: risk level changes and automatic suspensions
    /// of its agents are POSTed to it, signed (the secret is printed once, when made).
    NotifySet {
        /// The tenant.
        name: String,
        /// Where to POST the events (https).
        #[arg(long)]
        url: String,
        /// Make a new signing secret.
        #[arg(long)]
        rotate_secret: bool,
    },
    /// Remove a tenant's notification webhook.
    NotifyRemove {
        /// The tenant.
        name: String,
    },
    /// Send a `ping` event to a tenant's notification webhook.
    NotifyTest {
        /// The tenant.
        name: String,
    },
    /// Show the status of a tenant's deletion.
    Deletion {
        /// The tenant.
        name: String,
    },
    /// List a tenant's agents (addresses and metadata, never a key).
    Agents {
        /// The tenant.
        name: String,
        /// Agents after this cursor (the previous page's `next_cursor`).
        #[arg(long)]
        after: Option<String>,
        /// Most agents.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Issue an owner key (shown once).
    Issue {
        /// The tenant.
        tenant: String,
        /// The owner its agents belong to (default: the tenant's).
        #[arg(long)]
        owner_id: Option<String>,
        /// Most agents the owner may register.
        #[arg(long)]
        agent_limit: Option<u32>,
        /// Valid for this many seconds (default: until revoked).
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List a tenant's owner keys (prefixes and metadata).
    List {
        /// The tenant.
        tenant: String,
    },
    /// Rotate a key: a new key now, the old one valid for the overlap.
    Rotate {
        /// The tenant.
        tenant: String,
        /// The key's id (`ok_…`).
        id: String,
        /// Seconds the old key keeps working (default one day).
        #[arg(long)]
        overlap_secs: Option<u64>,
    },
    /// Revoke a key at once.
    Revoke {
        /// The tenant.
        tenant: String,
        /// The key's id (`ok_…`).
        id: String,
    },
}

#[derive(Subcommand)]
enum InviteCommand {
    /// Create a single-use invite code (shown once).
    Create {
        /// The tenant.
        tenant: String,
        /// Valid for this many seconds (default 7 days).
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// List operator tokens.
    List,
    /// Create an operator token (shown once).
    Create {
        /// What it is for.
        #[arg(long)]
        name: String,
        /// `read`, `tenant_admin` or `full`.
        #[arg(long)]
        scope: String,
        /// Limit the token to this tenant (a tenant admin's token: `read` or
        /// `tenant_admin`).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke an operator token.
    Revoke {
        /// The token's id (`opt_…`).
        id: String,
    },
}

/// Runs `amp admin …`.
pub(crate) async fn run(args: AdminArgs, json: bool) -> anyhow::Result<()> {
    let c = AdminClient::new(&args.admin_url, &args.token)?;
    let (value, view): (Value, View) = match args.command {
        AdminCommand::Tenants(t) => match t {
            TenantCommand::List {
                status,
                after,
                limit,
            } => (
                c.list_tenants(after.as_deref(), limit, status.as_deref())
                    .await?,
                View::Table("tenants", TENANT_COLUMNS),
            ),
            TenantCommand::Create { name, registration } => (
                c.create_tenant(&name, registration.as_deref()).await?,
                View::Record(TENANT_COLUMNS),
            ),
            TenantCommand::Show { name } => (c.tenant(&name).await?, View::Record(SHOW_COLUMNS)),
            TenantCommand::Update { name, registration } => (
                c.update_tenant(&name, &registration).await?,
                View::Record(TENANT_COLUMNS),
            ),
            TenantCommand::Plan {
                name,
                clear,
                agents,
                messages_per_minute,
                messages_per_day,
                stored_bytes,
                message_bytes,
                connections,
                federation,
            } => {
                let mut plan = if clear {
                    json!({})
                } else {
                    c.tenant(&name).await?["plan"].clone()
                };
                if !plan.is_object() {
                    plan = json!({});
                }
                let given = [
                    ("agents", agents.map(Value::from)),
                    ("messages_per_minute", messages_per_minute.map(Value::from)),
                    ("messages_per_day", messages_per_day.map(Value::from)),
                    ("stored_bytes", stored_bytes.map(Value::from)),
                    ("message_bytes", message_bytes.map(Value::from)),
                    ("connections", connections.map(Value::from)),
                    ("federation", federation.map(Value::from)),
                ];
                for (k, v) in given {
                    if let Some(v) = v {
                        plan[k] = v;
                    }
                }
                (c.set_plan(&name, plan).await?, View::Record(PLAN_COLUMNS))
            }
            TenantCommand::Suspend { name, reason } => (
                c.suspend(&name, reason.as_deref()).await?,
                View::Record(TENANT_COLUMNS),
            ),
            TenantCommand::Resume { name } => {
                (c.resume(&name).await?, View::Record(TENANT_COLUMNS))
            }
            TenantCommand::Delete { name, wait } => {
                let started = c.delete_tenant(&name).await?;
                let value = if wait {
                    let d = c
                        .wait_tenant_deletion(&name, std::time::Duration::from_millis(500))
                        .await?;
                    if d["status"] == "failed" {
                        anyhow::bail!("the deletion of tenant '{name}' failed: {}", d["error"]);
                    }
                    d
                } else {
                    started
                };
                (value, View::Record(DELETION_COLUMNS))
            }
            TenantCommand::NotifySet {
                name,
                url,
                rotate_secret,
            } => (
                c.set_notify(&name, &url, rotate_secret).await?,
                View::Secret("secret", NOTIFY_COLUMNS),
            ),
            TenantCommand::NotifyRemove { name } => {
                c.remove_notify(&name).await?;
                (
                    json!({ "name": name, "notify": null }),
                    View::Record(&["name", "notify"]),
                )
            }
            TenantCommand::NotifyTest { name } => {
                (c.test_notify(&name).await?, View::Record(&["event_id"]))
            }
            TenantCommand::Deletion { name } => (
                c.tenant_deletion(&name).await?,
                View::Record(DELETION_COLUMNS),
            ),
            TenantCommand::Agents { name, after, limit } => (
                c.tenant_agents(&name, after.as_deref(), limit).await?,
                View::Table("agents", AGENT_COLUMNS),
            ),
        },
        AdminCommand::Keys(k) => match k {
            KeyCommand::Issue {
                tenant,
                owner_id,
                agent_limit,
                expires_in_secs,
            } => {
                let mut options = json!({});
                if let Some(o) = owner_id {
                    options["owner_id"] = json!(o);
                }
                if let Some(l) = agent_limit {
                    options["agent_limit"] = json!(l);
                }
                if let Some(s) = expires_in_secs {
                    options["expires_in_secs"] = json!(s);
                }
                (
                    c.issue_owner_key(&tenant, options).await?,
                    View::Secret("key", KEY_COLUMNS),
                )
            }
            KeyCommand::List { tenant } => (
                c.owner_keys(&tenant).await?,
                View::Table("owner_keys", KEY_COLUMNS),
            ),
            KeyCommand::Rotate {
                tenant,
                id,
                overlap_secs,
            } => (
                c.rotate_owner_key(&tenant, &id, overlap_secs).await?,
                View::Secret("key", KEY_COLUMNS),
            ),
            KeyCommand::Revoke { tenant, id } => (
                c.revoke_owner_key(&tenant, &id).await?,
                View::Record(KEY_COLUMNS),
            ),
        },
        AdminCommand::Invites(InviteCommand::Create {
            tenant,
            expires_in_secs,
        }) => (
            c.create_invite(&tenant, expires_in_secs).await?,
            View::Secret("code", &["id", "tenant", "expires_at"]),
        ),
        AdminCommand::Tokens(t) => match t {
            TokenCommand::List => (c.tokens().await?, View::Table("tokens", TOKEN_COLUMNS)),
            TokenCommand::Create {
                name,
                scope,
                tenant,
            } => (
                c.create_token_for(&name, &scope, tenant.as_deref()).await?,
                View::Secret("token", TOKEN_COLUMNS),
            ),
            TokenCommand::Revoke { id } => {
                (c.revoke_token(&id).await?, View::Record(TOKEN_COLUMNS))
            }
        },
        AdminCommand::Usage {
            tenant,
            period,
            from,
            to,
            csv,
        } => {
            if csv {
                let text = c
                    .usage_csv(
                        tenant.as_deref(),
                        period.as_deref(),
                        from.as_deref(),
                        to.as_deref(),
                    )
                    .await?;
                print!("{text}");
                return Ok(());
            }
            let Some(tenant) = tenant else {
                anyhow::bail!("name a tenant, or use --csv for every tenant");
            };
            (
                c.usage(&tenant, period.as_deref(), from.as_deref(), to.as_deref())
                    .await?,
                View::Table("rows", USAGE_COLUMNS),
            )
        }
        AdminCommand::Agents(a) => match a {
            AgentCommand::Suspend {
                tenant,
                agent,
                reason,
                hours,
            } => (
                c.suspend_agent(&tenant, &agent, &reason, hours).await?,
                View::Record(AGENT_SUSPENSION_COLUMNS),
            ),
            AgentCommand::Resume { tenant, agent } => (
                c.resume_agent(&tenant, &agent).await?,
                View::Record(AGENT_SUSPENSION_COLUMNS),
            ),
        },
        AdminCommand::Audit { after, limit } => (
            c.audit(after.as_deref(), limit).await?,
            View::Table("entries", AUDIT_COLUMNS),
        ),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    print!("{}", render(&value, &view));
    Ok(())
}

const TENANT_COLUMNS: &[&str] = &[
    "name",
    "status",
    "registration",
    "created_at",
    "suspended_reason",
];
const SHOW_COLUMNS: &[&str] = &[
    "name",
    "status",
    "registration",
    "created_at",
    "suspended_reason",
    "limits",
];
const PLAN_COLUMNS: &[&str] = &["name", "plan", "limits"];
const NOTIFY_COLUMNS: &[&str] = &["url", "updated_at"];
const USAGE_COLUMNS: &[&str] = &[
    "start",
    "messages_in",
    "messages_out",
    "federated_in",
    "federated_out",
    "bytes_stored",
    "agents",
    "connections",
    "bytes_held",
];
const DELETION_COLUMNS: &[&str] = &[
    "id",
    "tenant",
    "status",
    "started_at",
    "finished_at",
    "purged",
    "error",
];
const AGENT_COLUMNS: &[&str] = &[
    "address",
    "status",
    "owner_id",
    "created_at",
    "last_seen_at",
];

const KEY_COLUMNS: &[&str] = &[
    "id",
    "prefix",
    "owner_id",
    "valid",
    "created_at",
    "expires_at",
    "revoked_at",
];
const AGENT_SUSPENSION_COLUMNS: &[&str] = &[
    "address",
    "agent_id",
    "suspended",
    "suspended_at",
    "expires_at",
    "unsuspended_at",
];
const TOKEN_COLUMNS: &[&str] = &["id", "name", "scope", "tenant", "created_at", "revoked_at"];
const AUDIT_COLUMNS: &[&str] = &["at", "actor", "action", "target", "request_id"];

/// How an answer is shown.
enum View {
    /// The array under a member, as a table.
    Table(&'static str, &'static [&'static str]),
    /// One record, as a one-row table.
    Record(&'static [&'static str]),
    /// One record and, apart, the secret shown once under a member.
    Secret(&'static str, &'static [&'static str]),
}

/// An answer as text: a table with a header row, columns padded to their widest cell.
fn render(value: &Value, view: &View) -> String {
    let (rows, columns): (Vec<&Value>, &[&str]) = match view {
        View::Table(member, cols) => (
            value[*member]
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            cols,
        ),
        View::Record(cols) | View::Secret(_, cols) => (vec![value], cols),
    };
    fn cell(v: &Value) -> String {
        match v {
            Value::Null => "-".to_owned(),
            Value::Object(m) if m.is_empty() => "-".to_owned(),
            Value::String(s) => s.clone(),
            // Counts and the like: `agents=2 messages=5`.
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}={}", cell(v)))
                .collect::<Vec<_>>()
                .join(" "),
            other => other.to_string(),
        }
    }
    let mut table: Vec<Vec<String>> = vec![columns.iter().map(|c| c.to_uppercase()).collect()];
    for r in &rows {
        table.push(columns.iter().map(|c| cell(&r[*c])).collect());
    }
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            table
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &table {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(none)\n");
    }
    if let View::Table(..) = view
        && let Some(next) = value["next_cursor"].as_str()
    {
        out.push_str(&format!("(more: --after {next})\n"));
    }
    if let View::Secret(member, _) = view
        && let Some(secret) = value[*member].as_str()
    {
        out.push_str(&format!(
            "\n{member}: {secret}\n(shown once: store it now)\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_and_show_secrets_once() {
        let v = json!({"tenants": [
            {"name": "acme", "status": "active", "registration": "owner_key", "created_at": "2026-01-01T00:00:00Z", "suspended_reason": null},
            {"name": "b", "status": "suspended", "registration": "open", "created_at": "x", "suspended_reason": "abuse"}
        ], "next_cursor": "b"});
        let t = render(&v, &View::Table("tenants", TENANT_COLUMNS));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("NAME  STATUS"), "{t}");
        assert!(lines[1].starts_with("acme  active"), "{t}");
        assert!(lines[2].ends_with("abuse"), "{t}");
        assert_eq!(lines[3], "(more: --after b)");
        let k = json!({"id": "ok_1", "prefix": "uk_abc…", "key": "uk_secret"});
        let s = render(&k, &View::Secret("key", KEY_COLUMNS));
        assert!(
            s.contains("key: uk_secret") && s.contains("shown once"),
            "{s}"
        );
        assert!(
            render(
                &json!({"tokens": []}),
                &View::Table("tokens", TOKEN_COLUMNS)
            )
            .contains("(none)")
        );
    }

    #[test]
    fn a_deletion_shows_its_counts() {
        let d = json!({"id": "del_1", "tenant": "acme", "status": "done",
            "started_at": "a", "finished_at": "b", "error": null,
            "purged": {"agents": 2, "messages": 5}});
        let t = render(&d, &View::Record(DELETION_COLUMNS));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID     TENANT  STATUS"), "{t}");
        assert!(lines[1].contains("agents=2 messages=5"), "{t}");
        assert!(lines[1].ends_with('-'), "{t}");
    }
}
