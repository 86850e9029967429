//! The redb side of [`crate::migrate`]: every row of a table read as its typed tuple
//! ([`KeyPart`]s) and value ([`RowValue`]), in key order, from one read transaction.
//!
//! Keys are given as the tuples they stand for, not as redb writes them: `names` is keyed by
//! the string `tenant/name` here and by the pair (tenant, name) in fjall, so its key is split
//! at the first `/` (tenants never contain one; `count_active_names` relies on it too).

use std::path::{Path, PathBuf};

use ::redb::{
    Database, DatabaseError, MultimapTableHandle, ReadTransaction, ReadableTable, TableError,
    TableHandle,
};

use super::*;
use crate::migrate::{KeyPart, MigrateError, Row, RowValue};

/// Bytes of redb's page cache while a store is read out.
const READ_CACHE: usize = 32 * 1024 * 1024;

/// A redb database opened to be read out.
pub(crate) struct RedbExport {
    /// The file, for error messages.
    path: PathBuf,
    /// One read transaction for the whole copy: every table from the same snapshot.
    txn: ReadTransaction,
}

impl RedbExport {
    /// Opens an existing redb store, repairing it after a crash and adding any table it lacks
    /// (as [`RedbStore::open`] would), and starts the read transaction the copy reads from.
    ///
    /// Fails with [`MigrateError::SourceInUse`] when another process holds the file, and
    /// [`MigrateError::Source`] when it does not exist or is not a redb database.
    pub(crate) fn open(path: &Path) -> std::result::Result<Self, MigrateError> {
        let source = |cause: String| MigrateError::Source {
            path: path.to_owned(),
            cause,
        };
        // A copy reads every page once: redb's default cache (1 GiB) would only hold memory.
        let db = match Database::builder().set_cache_size(READ_CACHE).open(path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(MigrateError::SourceInUse(path.to_owned()));
            }
            Err(e) => return Err(source(e.to_string())),
        };
        prepare(&db, true).map_err(|e| source(e.to_string()))?;
        let txn = db.begin_read().map_err(|e| source(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            txn,
        })
    }

    /// A read failure of the source.
    fn failed(&self, e: impl std::fmt::Display) -> MigrateError {
        MigrateError::Source {
            path: self.path.clone(),
            cause: e.to_string(),
        }
    }

    /// The names of every table in the file (whatever this version of the store knows).
    ///
    /// Fails when the file cannot be read, or holds a multimap table (the store has none,
    /// and nothing would copy it).
    pub(crate) fn tables(&self) -> std::result::Result<Vec<String>, MigrateError> {
        let multimap = self
            .txn
            .list_multimap_tables()
            .map_err(|e| self.failed(e))?;
        if let Some(t) = multimap.into_iter().next() {
            return Err(MigrateError::UnknownTable(t.name().to_owned()));
        }
        let tables = self.txn.list_tables().map_err(|e| self.failed(e))?;
        Ok(tables.map(|t| t.name().to_owned()).collect())
    }

    /// Hands every row of `table` to `sink`, in key order.
    ///
    /// Fails with [`MigrateError::UnknownTable`] for a table this module cannot read, with
    /// [`MigrateError::Unconvertible`] for a `names` key without its `/`, when the file cannot
    /// be read, and with whatever `sink` fails with.
    pub(crate) fn export(
        &self,
        table: &str,
        sink: &mut dyn FnMut(Row) -> std::result::Result<(), MigrateError>,
    ) -> std::result::Result<(), MigrateError> {
        use KeyPart::{Bytes, I64, Str, U64};
        let bytes = |b: &[u8]| RowValue::Bytes(b.to_vec());
        let text = |s: &str| RowValue::Bytes(s.as_bytes().to_vec());
        let unit = |_: ()| RowValue::Bytes(Vec::new());
        macro_rules! rows {
            ($def:expr, |$k:ident, $v:ident| $key:expr, $value:expr) => {{
                let t = match self.txn.open_table($def) {
                    Ok(t) => t,
                    // A table not in the file has no rows.
                    Err(TableError::TableDoesNotExist(_)) => return Ok(()),
                    Err(e) => return Err(self.failed(e)),
                };
                for row in t.iter().map_err(|e| self.failed(e))? {
                    let (k, v) = row.map_err(|e| self.failed(e))?;
                    let ($k, $v) = (k.value(), v.value());
                    sink(Row {
                        key: $key,
                        value: $value,
                    })?;
                }
                Ok(())
            }};
        }
        match table {
            "agents" => rows!(AGENTS, |k, v| vec![Str(k.into())], bytes(v)),
            "names" => rows!(NAMES, |k, v| split_name(k)?, bytes(v)),
            "tenant_active" => rows!(TENANT_ACTIVE, |k, v| vec![Str(k.into())], RowValue::U64(v)),
            "owned" => rows!(
                OWNED,
                |k, v| vec![Str(k.0.into()), Str(k.1.into())],
                unit(v)
            ),
            "api_keys" => rows!(API_KEYS, |k, v| vec![Bytes(k.into())], bytes(v)),
            "agent_keys" => rows!(
                AGENT_KEYS,
                |k, v| vec![Str(k.0.into()), Bytes(k.1.into())],
                unit(v)
            ),
            "owners" => rows!(OWNERS, |k, v| vec![Str(k.into())], bytes(v)),
            "owner_keys" => rows!(OWNER_KEYS, |k, v| vec![Bytes(k.into())], text(v)),
            "mailbox" => rows!(MAILBOX, |k, v| vec![Str(k.0.into()), U64(k.1)], bytes(v)),
            "msg_index" => rows!(
                MSG_INDEX,
                |k, v| vec![Str(k.0.into()), Str(k.1.into())],
                bytes(v)
            ),
            "mbox_meta" => rows!(MBOX_META, |k, v| vec![Str(k.into())], bytes(v)),
            "expiry" => rows!(
                EXPIRY,
                |k, v| vec![I64(k.0), Str(k.1.into()), U64(k.2)],
                text(v)
            ),
            "receipts" => rows!(RECEIPTS, |k, v| vec![Str(k.0.into()), U64(k.1)], bytes(v)),
            "receipt_head" => rows!(RECEIPT_HEAD, |k, v| vec![Str(k.into())], RowValue::U64(v)),
            "jobs" => rows!(JOBS, |k, v| vec![I64(k.0), Str(k.1.into())], bytes(v)),
            "job_ids" => rows!(JOB_IDS, |k, v| vec![Str(k.into())], RowValue::I64(v)),
            "kv" => rows!(KV, |k, v| vec![Str(k.into())], bytes(v)),
            "kv_expires" => rows!(KV_EXPIRES, |k, v| vec![Str(k.into())], RowValue::I64(v)),
            "kv_expiry" => rows!(KV_EXPIRY, |k, v| vec![I64(k.0), Str(k.1.into())], unit(v)),
            "presence" => rows!(
                PRESENCE,
                |k, v| vec![Str(k.0.into()), Str(k.1.into())],
                RowValue::I64(v)
            ),
            "records" => rows!(
                RECORDS,
                |k, v| vec![Str(k.0.into()), Str(k.1.into())],
                bytes(v)
            ),
            "attachments" => rows!(ATTACHMENTS, |k, v| vec![Str(k.into())], bytes(v)),
            other => Err(MigrateError::UnknownTable(other.to_owned())),
        }
    }
}

/// A `names` key, `tenant/name`, as the pair it stands for.
///
/// Fails when it has no `/`.
fn split_name(key: &str) -> std::result::Result<Vec<KeyPart>, MigrateError> {
    let Some((tenant, name)) = key.split_once('/') else {
        return Err(MigrateError::Unconvertible {
            table: "names".into(),
            key: format!("{key:?}"),
            reason: "not of the form tenant/name".into(),
        });
    };
    Ok(vec![KeyPart::Str(tenant.into()), KeyPart::Str(name.into())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_key_splits_at_the_first_slash() {
        assert_eq!(
            split_name("t/a/b").expect("splits"),
            vec![KeyPart::Str("t".into()), KeyPart::Str("a/b".into())]
        );
        let e = split_name("no-slash").expect_err("refused");
        assert!(e.to_string().contains("names") && e.to_string().contains("no-slash"));
    }
}
