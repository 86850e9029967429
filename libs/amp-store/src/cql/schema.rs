//! The keyspace and the versioned migrations.
//!
//! Migrations are CQL files applied in order; each statement is idempotent (`IF NOT
//! EXISTS`), so one interrupted half-way is applied again whole. `schema_version` records
//! the last one applied. Several processes starting at once take a lease first (a
//! lightweight transaction), because concurrent schema changes through different
//! coordinators are unsafe on Cassandra; the others wait for the version to appear.

use std::time::Duration;

use scylla::client::session::Session;

use super::config::CqlStoreConfig;
use super::conn::unavailable;
use crate::{Error, Result};

/// The migrations, in order: `(version, CQL)`.
pub const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/0001_initial.cql")),
    (2, include_str!("migrations/0002_kv_expiry.cql")),
    (3, include_str!("migrations/0003_claims_in_buckets.cql")),
    (4, include_str!("migrations/0004_records.cql")),
    (5, include_str!("migrations/0005_attachments.cql")),
];

/// Table options that only ScyllaDB has: applied after the migrations when the server is
/// one (`tombstone_gc` in repair mode drops tombstones as soon as a repair has covered them,
/// instead of after `gc_grace_seconds`).
const SCYLLA_ONLY: &[&str] = &[
    "ALTER TABLE mailbox_entries WITH tombstone_gc = {'mode': 'repair'}",
    "ALTER TABLE mailbox_ids WITH tombstone_gc = {'mode': 'repair'}",
    "ALTER TABLE receipts WITH tombstone_gc = {'mode': 'repair'}",
    "ALTER TABLE jobs_due WITH tombstone_gc = {'mode': 'repair'}",
];

const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_version (id text PRIMARY KEY, version int, applied_at bigint, holder text)";

/// The statements of one migration file (comments dropped, split at `;`).
pub fn statements(cql: &str) -> Vec<String> {
    let text: String = cql
        .lines()
        .map(|l| match l.find("--") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// The statement creating the keyspace.
fn keyspace_cql(config: &CqlStoreConfig, scylla: bool) -> String {
    let tablets = if scylla {
        // LWT on tablet-based keyspaces is recent in ScyllaDB; vnodes work on every version.
        " AND tablets = {'enabled': false}"
    } else {
        ""
    };
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', '{}': {}}}{tablets}",
        config.keyspace, config.datacenter, config.replication_factor
    )
}

/// The whole schema as one CQL file, for `deploy/scylla/schema.cql` (a test keeps the file
/// equal to this).
pub fn schema_cql(config: &CqlStoreConfig) -> String {
    let mut out = String::from(
        "-- The CQL store's schema, for reading and for operators who apply it by hand\n\
         -- (`cqlsh -f`). Generated from libs/amp-store/src/cql/migrations (a test keeps the\n\
         -- two equal); the binaries apply the same migrations at start-up or with `migrate`.\n\
         -- Keyspace `amp`, replication factor 3 in datacenter1: edit to taste.\n\n",
    );
    out.push_str(&keyspace_cql(config, false));
    out.push_str(";\n\n");
    out.push_str(&format!("USE {};\n\n", config.keyspace));
    out.push_str(VERSION_TABLE);
    out.push_str(";\n");
    for (version, cql) in MIGRATIONS {
        out.push_str(&format!("\n-- Migration {version}\n"));
        for s in statements(cql) {
            out.push_str(&s);
            out.push_str(";\n");
        }
        out.push_str(&format!(
            "INSERT INTO schema_version (id, version) VALUES ('amp', {version});\n"
        ));
    }
    out
}

/// Whether the server is ScyllaDB (it has `system.scylla_local`; Cassandra does not).
pub(super) async fn is_scylla(session: &Session) -> bool {
    session
        .query_unpaged("SELECT key FROM system.scylla_local LIMIT 1", ())
        .await
        .is_ok()
}

/// The version recorded in the session's keyspace (0 when the table or row is missing).
pub(super) async fn current_version(session: &Session) -> Result<u32> {
    let res = match session
        .query_unpaged("SELECT version FROM schema_version WHERE id = 'amp'", ())
        .await
    {
        Ok(r) => r,
        // No table yet: nothing applied.
        Err(e) if e.to_string().contains("schema_version") => return Ok(0),
        Err(e) => return Err(unavailable("read the schema version", e)),
    };
    let rows = res
        .into_rows_result()
        .map_err(|e| Error::Corrupt(e.to_string()))?;
    let v = rows
        .maybe_first_row::<(Option<i32>,)>()
        .map_err(|e| Error::Corrupt(e.to_string()))?
        .and_then(|(v,)| v)
        .unwrap_or(0);
    Ok(u32::try_from(v).unwrap_or(0))
}

/// Creates the keyspace if missing, switches the session to it, and applies pending
/// migrations under a lease; returns the version now in force.
pub(super) async fn migrate(session: &Session, config: &CqlStoreConfig) -> Result<u32> {
    let scylla = is_scylla(session).await;
    session
        .query_unpaged(keyspace_cql(config, scylla), ())
        .await
        .map_err(|e| unavailable("create the keyspace", e))?;
    session
        .use_keyspace(&config.keyspace, false)
        .await
        .map_err(|e| unavailable("use the keyspace", e))?;
    session
        .query_unpaged(VERSION_TABLE, ())
        .await
        .map_err(|e| unavailable("create the schema_version table", e))?;
    let target = MIGRATIONS.last().map_or(0, |m| m.0);
    let me = format!("{}-{}", std::process::id(), super::wall_ms());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let current = current_version(session).await?;
        if current >= target {
            return Ok(current);
        }
        // The lease: one process migrates at a time; a crashed holder's lease expires.
        let lease = session
            .query_unpaged(
                "INSERT INTO schema_version (id, holder, applied_at) VALUES ('lock', ?, ?) IF NOT EXISTS USING TTL 60",
                (&me, super::wall_ms()),
            )
            .await
            .map_err(|e| unavailable("take the migration lease", e))?;
        if super::conn::Lwt::parse(lease)?.applied {
            let result = apply(session, current, scylla).await;
            let _ = session
                .query_unpaged("DELETE FROM schema_version WHERE id = 'lock'", ())
                .await;
            return result;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Unavailable(
                "another process has held the schema migration lease for 2 minutes".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether a refused `ALTER TABLE … ADD` says the column exists already.
fn already_there(error: &str) -> bool {
    let e = error.to_ascii_lowercase();
    e.contains("already exist") || e.contains("conflicts with an existing column")
}

async fn apply(session: &Session, current: u32, scylla: bool) -> Result<u32> {
    let mut version = current;
    for (v, cql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        for stmt in statements(cql) {
            match session.query_unpaged(stmt.as_str(), ()).await {
                Ok(_) => {}
                // `ALTER TABLE … ADD` has no IF NOT EXISTS on every server: a column that is
                // there already is a migration interrupted after that statement.
                Err(e) if stmt.starts_with("ALTER TABLE") && already_there(&e.to_string()) => {}
                Err(e) => return Err(unavailable(&format!("apply migration {v}"), e)),
            }
        }
        session
            .query_unpaged(
                "INSERT INTO schema_version (id, version, applied_at) VALUES ('amp', ?, ?)",
                (*v as i32, super::wall_ms()),
            )
            .await
            .map_err(|e| unavailable("record the schema version", e))?;
        tracing::info!(version = v, "CQL schema migration applied");
        version = *v;
    }
    if scylla {
        for stmt in SCYLLA_ONLY {
            session
                .query_unpaged(*stmt, ())
                .await
                .map_err(|e| unavailable("apply the ScyllaDB table options", e))?;
        }
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_drop_comments_and_split() {
        let s = statements(
            "-- a table\nCREATE TABLE x (a int PRIMARY KEY); -- trailing\n\n-- b\nCREATE TABLE y (b int PRIMARY KEY);\n",
        );
        assert_eq!(
            s,
            [
                "CREATE TABLE x (a int PRIMARY KEY)",
                "CREATE TABLE y (b int PRIMARY KEY)"
            ]
        );
        assert!(statements(MIGRATIONS[0].1).len() >= 10);
    }

    /// `deploy/scylla/schema.cql` is the migrations, so an operator reads what runs.
    #[test]
    fn deploy_schema_file_matches_the_migrations() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/scylla/schema.cql"
        );
        let expected = schema_cql(&CqlStoreConfig {
            replication_factor: 3,
            ..CqlStoreConfig::default()
        });
        if std::env::var("AMP_WRITE_SCHEMA").is_ok_and(|v| v == "1") {
            std::fs::write(path, &expected).expect("write deploy/scylla/schema.cql");
        }
        let file = std::fs::read_to_string(path).expect("deploy/scylla/schema.cql");
        assert!(
            file == expected,
            "deploy/scylla/schema.cql is stale; regenerate it with\n  AMP_WRITE_SCHEMA=1 cargo test -p amp-store deploy_schema_file"
        );
    }
}
