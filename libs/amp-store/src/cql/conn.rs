//! The driver session, every statement prepared once, and the helpers that turn driver
//! results into our types.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::speculative_execution::SimpleSpeculativeExecutionPolicy;
use scylla::response::query_result::{QueryResult, QueryRowsResult};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};

use super::config::{CqlConsistency, CqlStoreConfig};
use crate::{Error, Millis, Result};

/// A store error for a failed request: the store is unreachable or refused (503 upstream).
pub(super) fn unavailable(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("CQL store: cannot {what}: {e}"))
}

/// A store error for a result that does not have the shape we wrote.
pub(super) fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("CQL store: {e}"))
}

/// Opens a session on the cluster (not yet in the keyspace).
pub(super) async fn open_session(config: &CqlStoreConfig) -> Result<Session> {
    let consistency = match config.consistency {
        CqlConsistency::LocalQuorum => Consistency::LocalQuorum,
        CqlConsistency::Quorum => Consistency::Quorum,
        CqlConsistency::One => Consistency::One,
    };
    let serial = match config.consistency {
        CqlConsistency::Quorum => SerialConsistency::Serial,
        _ => SerialConsistency::LocalSerial,
    };
    let policy = DefaultPolicy::builder()
        .prefer_datacenter(config.datacenter.clone())
        .token_aware(true)
        .permit_dc_failover(false)
        .build();
    let mut profile = ExecutionProfile::builder()
        .consistency(consistency)
        .serial_consistency(Some(serial))
        .request_timeout(Some(config.request_timeout()))
        .load_balancing_policy(policy);
    if config.speculative_after_ms > 0 {
        // Only statements marked idempotent are ever sent twice (the driver checks).
        profile = profile.speculative_execution_policy(Some(Arc::new(
            SimpleSpeculativeExecutionPolicy {
                max_retry_count: 1,
                retry_interval: Duration::from_millis(config.speculative_after_ms),
            },
        )));
    }
    let points: Vec<&str> = config
        .contact_points
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let mut builder = SessionBuilder::new()
        .known_nodes(&points)
        .connection_timeout(Duration::from_millis(config.connect_timeout_ms.max(1)))
        .default_execution_profile_handle(profile.build().into_handle());
    let tls = config.tls.context()?;
    let over = if tls.is_some() { " over TLS" } else { "" };
    builder = builder.tls_context(tls);
    if let Some(user) = &config.username {
        builder = builder.user(
            user.clone(),
            config.resolved_password()?.unwrap_or_default(),
        );
    }
    let connect = builder.build();
    match tokio::time::timeout(
        Duration::from_millis(config.connect_timeout_ms.max(1) + 1_000),
        connect,
    )
    .await
    {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => {
            let e = e.to_string();
            let hint = config
                .tls
                .hint(&e)
                .map_or(String::new(), |h| format!(" ({h})"));
            Err(Error::Unavailable(format!(
                "cannot reach the CQL cluster{over} at {}: {e}{hint}",
                points.join(", ")
            )))
        }
        Err(_) => Err(Error::Unavailable(format!(
            "cannot reach the CQL cluster{over} at {}: no answer within {} ms",
            points.join(", "),
            config.connect_timeout_ms
        ))),
    }
}

/// The outcome of a lightweight transaction: applied or not, and the current values of the
/// columns the server returned when not (the row that was there, the head that moved).
#[derive(Debug)]
pub(super) struct Lwt {
    pub(super) applied: bool,
    /// Every returned row, by column name.
    rows: Vec<HashMap<String, CqlValue>>,
}

impl Lwt {
    /// Reads a conditional statement's or batch's answer.
    pub(super) fn parse(res: QueryResult) -> Result<Self> {
        let rows = res.into_rows_result().map_err(corrupt)?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        let mut applied = false;
        let mut out = Vec::new();
        for row in rows.rows::<Row>().map_err(corrupt)? {
            let row = row.map_err(corrupt)?;
            let mut map = HashMap::new();
            for (name, value) in names.iter().zip(row.columns) {
                if let Some(v) = value {
                    map.insert(name.clone(), v);
                }
            }
            if let Some(a) = map.get("[applied]").and_then(CqlValue::as_boolean) {
                applied = applied || a;
            }
            out.push(map);
        }
        Ok(Self { applied, rows: out })
    }

    /// The first returned row whose column `col` satisfies `test`.
    pub(super) fn row_where(
        &self,
        col: &str,
        test: impl Fn(&CqlValue) -> bool,
    ) -> Option<LwtRow<'_>> {
        self.rows
            .iter()
            .find(|r| r.get(col).is_some_and(&test))
            .map(LwtRow)
    }

    /// A text column of the first row that has it.
    pub(super) fn text(&self, col: &str) -> Option<String> {
        self.rows
            .iter()
            .find_map(|r| r.get(col).and_then(CqlValue::as_text).cloned())
    }

    /// A bigint column of the first row that has it.
    pub(super) fn bigint(&self, col: &str) -> Option<i64> {
        self.rows
            .iter()
            .find_map(|r| r.get(col).and_then(CqlValue::as_bigint))
    }
}

/// One row of a conditional statement's answer.
pub(super) struct LwtRow<'a>(&'a HashMap<String, CqlValue>);

impl LwtRow<'_> {
    /// A text column.
    pub(super) fn text(&self, col: &str) -> Option<String> {
        self.0.get(col).and_then(CqlValue::as_text).cloned()
    }

    /// A bigint column.
    pub(super) fn bigint(&self, col: &str) -> Option<i64> {
        self.0.get(col).and_then(CqlValue::as_bigint)
    }
}

/// Rows of a result.
pub(super) fn rows(res: QueryResult) -> Result<QueryRowsResult> {
    res.into_rows_result().map_err(corrupt)
}

/// How long past its expiry the cluster keeps a row. Readers compare `expires_at` with
/// their clock and never serve an expired row; the TTL only collects the garbage, so a
/// little slack keeps a row for a reader whose clock is behind the cluster's.
pub(super) const TTL_GRACE_MS: Millis = 5_000;

/// A TTL in seconds for a row that must live until `until`, plus [`TTL_GRACE_MS`] (at
/// least 1 s; CQL's cap is 20 years).
pub(super) fn ttl_until(until: Millis, now: Millis) -> i32 {
    let secs = (until.saturating_add(TTL_GRACE_MS).saturating_sub(now) + 999) / 1000;
    secs.clamp(1, 630_720_000) as i32
}

macro_rules! statements {
    ($( $(#[$doc:meta])* $name:ident [$idem:expr] = $cql:expr ; )*) => {
        /// Every statement of the store, prepared once at connect.
        pub(super) struct Stmts {
            $( $(#[$doc])* pub(super) $name: PreparedStatement, )*
        }

        impl Stmts {
            async fn prepare(session: &Session) -> Result<Self> {
                Ok(Self {
                    $( $name: prepare(session, $cql, $idem).await?, )*
                })
            }
        }
    };
}

async fn prepare(session: &Session, cql: &str, idempotent: bool) -> Result<PreparedStatement> {
    let mut p = session
        .prepare(cql)
        .await
        .map_err(|e| unavailable(&format!("prepare `{cql}`"), e))?;
    p.set_is_idempotent(idempotent);
    Ok(p)
}

statements! {
    // Registry.
    agent_get [true] = "SELECT record, active, key_hashes, last_seen_at FROM agents WHERE id = ?";
    agent_put [true] = "INSERT INTO agents (id, record, active, key_hashes) VALUES (?, ?, true, ?)";
    agent_update [false] = "UPDATE agents SET record = ? WHERE id = ? IF active = true";
    agent_deregister [false] = "UPDATE agents SET record = ?, active = false WHERE id = ? IF active = true";
    agent_touch [true] = "UPDATE agents SET last_seen_at = ? WHERE id = ?";
    agent_add_key [true] = "UPDATE agents SET key_hashes = key_hashes + ? WHERE id = ?";
    agent_clear_keys [true] = "UPDATE agents SET key_hashes = null WHERE id = ?";
    name_get [true] = "SELECT agent_id, hold_until, claimed_at FROM agent_names WHERE tenant = ? AND name = ?";
    name_claim [false] = "INSERT INTO agent_names (tenant, name, agent_id, claimed_at, address, alias) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS";
    name_take [false] = "UPDATE agent_names SET agent_id = ?, claimed_at = ?, hold_until = null, address = ?, alias = ? WHERE tenant = ? AND name = ? IF agent_id = ?";
    name_hold [false] = "UPDATE agent_names SET hold_until = ? WHERE tenant = ? AND name = ? IF agent_id = ?";
    name_alias [false] = "UPDATE agent_names SET alias = ? WHERE tenant = ? AND name = ? IF agent_id = ?";
    names_list [true] = "SELECT name, agent_id, hold_until, address, alias FROM agent_names WHERE tenant = ? AND name > ?";
    key_get [true] = "SELECT agent_id, created_at, valid_until FROM api_keys WHERE hash = ?";
    key_put [true] = "INSERT INTO api_keys (hash, agent_id, created_at, valid_until) VALUES (?, ?, ?, ?)";
    key_limit [true] = "UPDATE api_keys SET valid_until = ? WHERE hash = ?";
    key_delete [true] = "DELETE FROM api_keys WHERE hash = ?";
    owner_get [true] = "SELECT record FROM owners WHERE id = ?";
    owner_put [true] = "INSERT INTO owners (id, record) VALUES (?, ?)";
    owner_key_get [true] = "SELECT owner_id FROM owner_keys WHERE hash = ?";
    owner_key_put [true] = "INSERT INTO owner_keys (hash, owner_id) VALUES (?, ?)";
    owned_put [true] = "INSERT INTO owned_agents (owner_id, agent_id) VALUES (?, ?)";
    owned_delete [true] = "DELETE FROM owned_agents WHERE owner_id = ? AND agent_id = ?";
    owned_count [true] = "SELECT COUNT(*) FROM owned_agents WHERE owner_id = ?";
    // Purge (tenant deletion): everything about an agent, for good.
    agent_delete [true] = "DELETE FROM agents WHERE id = ?";
    name_delete [false] = "DELETE FROM agent_names WHERE tenant = ? AND name = ? IF agent_id = ?";
    entries_ids [true] = "SELECT seq, message_id FROM mailbox_entries WHERE agent = ? AND bucket = ?";
    id_delete [true] = "DELETE FROM mailbox_ids WHERE agent = ? AND message_id = ?";
    receipts_count [true] = "SELECT COUNT(*) FROM receipts WHERE agent = ?";
    receipts_delete [true] = "DELETE FROM receipts WHERE agent = ?";
    presence_delete_all [true] = "DELETE FROM presence WHERE agent = ?";

    // Operator records.
    record_get [true] = "SELECT value FROM records WHERE collection = ? AND id = ?";
    record_create [false] = "INSERT INTO records (collection, id, value) VALUES (?, ?, ?) IF NOT EXISTS";
    record_replace [true] = "INSERT INTO records (collection, id, value) VALUES (?, ?, ?)";
    record_list [true] = "SELECT id, value FROM records WHERE collection = ? AND id > ? LIMIT ?";
    record_take [false] = "DELETE FROM records WHERE collection = ? AND id = ? IF EXISTS";

    // Mailboxes.
    id_get [true] = "SELECT sender, signature, seq, acked, expires_at, from_bucket FROM mailbox_ids WHERE agent = ? AND message_id = ?";
    // The writer's lower bound of its entry's bucket; the timestamp makes the smallest win.
    id_intent [true] = "UPDATE mailbox_ids USING TTL ? AND TIMESTAMP ? SET from_bucket = ? WHERE agent = ? AND message_id = ?";
    id_record [true] = "UPDATE mailbox_ids USING TTL ? SET sender = ?, signature = ?, seq = ?, expires_at = ? WHERE agent = ? AND message_id = ?";
    id_ack [true] = "UPDATE mailbox_ids USING TTL ? SET acked = true WHERE agent = ? AND message_id = ?";
    entry_insert [false] = "INSERT INTO mailbox_entries (agent, bucket, seq, message_id, sender, data, queued_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?";
    // A message id's claim in the entry's partition (`seq` = a negative key from the id).
    claim_insert [false] = "INSERT INTO mailbox_entries (agent, bucket, seq, message_id, sender, signature, entry_seq, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS USING TTL ?";
    claim_find_serial [true] = "SELECT message_id, sender, signature, entry_seq, expires_at FROM mailbox_entries WHERE agent = ? AND bucket = ? AND seq = ?";
    head_cas [false] = "UPDATE mailbox_entries USING TTL ? SET head = ? WHERE agent = ? AND bucket = ? IF head = ?";
    bucket_head [true] = "SELECT head FROM mailbox_entries WHERE agent = ? AND bucket = ? LIMIT 1";
    entries_scan [true] = "SELECT seq, message_id, sender, queued_at, expires_at, acked FROM mailbox_entries WHERE agent = ? AND bucket = ? AND seq >= ?";
    entries_data [true] = "SELECT seq, message_id, sender, data, queued_at, expires_at, acked FROM mailbox_entries WHERE agent = ? AND bucket = ? AND seq >= ? AND seq <= ?";
    entries_bodies [true] = "SELECT seq, data FROM mailbox_entries WHERE agent = ? AND bucket = ? AND seq >= ? AND seq <= ?";
    entry_ack [true] = "UPDATE mailbox_entries USING TTL ? SET acked = true WHERE agent = ? AND bucket = ? AND seq = ?";
    bucket_delete [true] = "DELETE FROM mailbox_entries WHERE agent = ? AND bucket = ?";
    meta_get [true] = "SELECT head, bucket, floor FROM mailbox_meta WHERE agent = ?";
    meta_head [true] = "UPDATE mailbox_meta USING TIMESTAMP ? SET head = ?, bucket = ? WHERE agent = ?";
    meta_floor [true] = "UPDATE mailbox_meta USING TIMESTAMP ? SET floor = ? WHERE agent = ?";
    meta_delete [true] = "DELETE FROM mailbox_meta USING TIMESTAMP ? WHERE agent = ?";

    // Receipts.
    receipt_head [true] = "SELECT head FROM receipts WHERE agent = ? LIMIT 1";
    receipt_insert [false] = "INSERT INTO receipts (agent, seq, data, created_at, expires_at) VALUES (?, ?, ?, ?, ?) USING TTL ?";
    receipt_head_cas [false] = "UPDATE receipts SET head = ? WHERE agent = ? IF head = ?";
    receipts_list [true] = "SELECT seq, data, created_at, expires_at FROM receipts WHERE agent = ? AND seq > ?";
    receipts_drop [true] = "DELETE FROM receipts WHERE agent = ? AND seq <= ?";

    // Jobs.
    job_get [true] = "SELECT kind, shard, due_at, attempt, data FROM jobs WHERE id = ?";
    job_put [true] = "INSERT INTO jobs (id, kind, shard, due_at, attempt, data) VALUES (?, ?, ?, ?, ?, ?)";
    job_claim [false] = "UPDATE jobs SET due_at = ? WHERE id = ? IF due_at = ? AND attempt = ?";
    job_delete [true] = "DELETE FROM jobs WHERE id = ?";
    due_put [true] = "INSERT INTO jobs_due (kind, shard, due_at, id) VALUES (?, ?, ?, ?)";
    due_delete [true] = "DELETE FROM jobs_due WHERE kind = ? AND shard = ? AND due_at = ? AND id = ?";
    due_scan [true] = "SELECT due_at, id FROM jobs_due WHERE kind = ? AND shard = ? AND due_at <= ? LIMIT ?";

    // Presence.
    presence_put [true] = "INSERT INTO presence (agent, session, until) VALUES (?, ?, ?) USING TTL ?";
    presence_delete [true] = "DELETE FROM presence WHERE agent = ? AND session = ?";
    presence_list [true] = "SELECT session, until FROM presence WHERE agent = ?";
    online_put [true] = "INSERT INTO presence_online (shard, agent, until) VALUES (?, ?, ?) USING TTL ? AND TIMESTAMP ?";
    online_delete [true] = "DELETE FROM presence_online USING TIMESTAMP ? WHERE shard = ? AND agent = ?";
    online_scan [true] = "SELECT until FROM presence_online WHERE shard = ?";

    // Small values.
    kv_get [true] = "SELECT value, expires_at FROM kv WHERE key = ?";
    kv_put [true] = "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, null)";
    kv_put_ttl [true] = "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?) USING TTL ?";
    kv_delete [true] = "DELETE FROM kv WHERE key = ?";

    // Attachments.
    att_get [true] = "SELECT revision, record FROM attachments WHERE id = ?";
    att_create [false] = "INSERT INTO attachments (id, revision, record) VALUES (?, 1, ?) IF NOT EXISTS";
    att_replace [false] = "UPDATE attachments SET revision = ?, record = ? WHERE id = ? IF revision = ?";
    att_delete [true] = "DELETE FROM attachments WHERE id = ?";
}

/// The session in the keyspace, with every statement prepared.
pub(super) struct Conn {
    pub(super) session: Session,
    pub(super) st: Stmts,
}

impl Conn {
    /// Connects, migrates when configured, and prepares.
    pub(super) async fn connect(config: &CqlStoreConfig) -> Result<Self> {
        let session = open_session(config).await?;
        if config.migrate_on_start {
            super::schema::migrate(&session, config).await?;
        } else {
            session
                .use_keyspace(&config.keyspace, false)
                .await
                .map_err(|e| unavailable(&format!("use keyspace {}", config.keyspace), e))?;
            let have = super::schema::current_version(&session).await?;
            let want = super::schema::MIGRATIONS.last().map_or(0, |m| m.0);
            if have < want {
                return Err(Error::Unavailable(format!(
                    "CQL schema version {have} is older than this build's {want}: run the binary with --migrate first"
                )));
            }
        }
        let mut st = Stmts::prepare(&session).await?;
        // Reads that must see (and complete) appends still in flight: serial consistency.
        let serial = match config.consistency {
            CqlConsistency::Quorum => Consistency::Serial,
            _ => Consistency::LocalSerial,
        };
        st.claim_find_serial.set_consistency(serial);
        Ok(Self { session, st })
    }

    /// Whether the store can serve requests now (for `/readyz`).
    pub(super) async fn ping(&self) -> bool {
        // A read of one partition of the keyspace at the store's consistency: it needs as
        // many live replicas as a write does (a quorum), so a cluster that has lost them
        // (Cassandra's `Unavailable`) is not ready, although a node still answers.
        tokio::time::timeout(
            Duration::from_secs(2),
            self.session
                .query_unpaged("SELECT key FROM kv WHERE key = 'amp-ready-probe'", ()),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Runs a prepared statement.
    pub(super) async fn exec(
        &self,
        what: &str,
        stmt: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<QueryResult> {
        self.session
            .execute_unpaged(stmt, values)
            .await
            .map_err(|e| unavailable(what, e))
    }

    /// Runs a prepared statement and returns its rows.
    pub(super) async fn query(
        &self,
        what: &str,
        stmt: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<QueryRowsResult> {
        rows(self.exec(what, stmt, values).await?)
    }

    /// Runs a conditional statement.
    pub(super) async fn lwt(
        &self,
        what: &str,
        stmt: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Lwt> {
        Lwt::parse(self.exec(what, stmt, values).await?)
    }
}
