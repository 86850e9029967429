//! The fjall side of [`crate::migrate`]: rows given as typed tuples written into an empty
//! store, each key in the [`keys`](super::keys) encoding of its keyspace's layout (`purge::layout`, the
//! one [`FjallStore::scan_rows`](super::FjallStore::scan_rows) reads by) and each integer value as 8 bytes big-endian,
//! in batches of bounded rows and bytes, each batch one durable commit.

use std::path::{Path, PathBuf};

use ::fjall::{PersistMode, SingleWriterTxKeyspace};

use super::Db;
use super::keys::Key;
use super::purge::{Part, Value, layout};
use super::writer::check_key;
use crate::migrate::{Batch, KeyPart, KeyText, MigrateError, Row, RowValue};

/// The block cache of an import: it reads nothing back, so a small one.
const SIZES: super::Sizes = super::Sizes {
    cache_bytes: 8 * 1024 * 1024,
    journal_bytes: super::MIN_JOURNAL_BYTES,
    workers: 0,
};

/// An empty fjall store being filled.
pub(crate) struct FjallImport {
    /// The database directory, for error messages.
    path: PathBuf,
    /// The database.
    db: Db,
    /// The most per commit.
    batch: Batch,
}

impl FjallImport {
    /// Creates the store in `dir`, which must not exist or be empty.
    ///
    /// Fails with [`MigrateError::TargetNotEmpty`] when it holds anything (or an existing
    /// store with rows), and [`MigrateError::Target`] when it cannot be created.
    pub(crate) fn create(dir: &Path, batch: Batch) -> Result<Self, MigrateError> {
        let failed = |e: &dyn std::fmt::Display| MigrateError::Target {
            path: dir.to_owned(),
            cause: e.to_string(),
        };
        match std::fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(MigrateError::TargetNotEmpty(dir.to_owned()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(failed(&e)),
        }
        std::fs::create_dir_all(dir).map_err(|e| failed(&e))?;
        let db = Db::open(dir, SIZES).map_err(|e| failed(&e))?;
        // Another process may have filled it between the look and the open (fjall's lock is
        // taken now): make sure.
        for (_, ks) in db.ks.all() {
            if ks.first_key_value().is_some() {
                return Err(MigrateError::TargetNotEmpty(dir.to_owned()));
            }
        }
        Ok(Self {
            path: dir.to_owned(),
            db,
            batch: Batch {
                rows: batch.rows.max(1),
                bytes: batch.bytes.max(1),
            },
        })
    }

    /// Every keyspace's name, in the store's order.
    pub(crate) fn keyspaces(&self) -> Vec<&'static str> {
        self.db.ks.all().iter().map(|(name, _)| *name).collect()
    }

    /// Whether the store has a keyspace `name`.
    pub(crate) fn has_keyspace(&self, name: &str) -> bool {
        self.db.ks.all().iter().any(|(n, _)| *n == name)
    }

    /// A writer of the keyspace `name`.
    ///
    /// Fails with [`MigrateError::UnknownTable`] when there is no such keyspace.
    pub(crate) fn table(&self, name: &str) -> Result<TableImport<'_>, MigrateError> {
        let ks = self
            .db
            .ks
            .all()
            .into_iter()
            .find_map(|(n, ks)| (n == name).then_some(ks))
            .ok_or_else(|| MigrateError::UnknownTable(name.to_owned()))?;
        let (parts, value) = layout(name);
        Ok(TableImport {
            import: self,
            ks,
            name: name.to_owned(),
            parts,
            value,
            pending: Vec::new(),
            pending_bytes: 0,
            rows: 0,
        })
    }

    /// Syncs every keyspace and closes the store.
    ///
    /// Fails when the final sync fails.
    pub(crate) fn close(self) -> Result<(), MigrateError> {
        self.db
            .db
            .persist(PersistMode::SyncAll)
            .map_err(|e| MigrateError::Target {
                path: self.path.clone(),
                cause: e.to_string(),
            })
    }
}

/// Rows of one keyspace being written.
pub(crate) struct TableImport<'a> {
    /// The store.
    import: &'a FjallImport,
    /// The keyspace.
    ks: &'a SingleWriterTxKeyspace,
    /// Its name.
    name: String,
    /// How its keys are encoded.
    parts: &'static [Part],
    /// How its values are stored.
    value: Value,
    /// Converted rows not yet committed.
    pending: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of keys and values in `pending`.
    pending_bytes: usize,
    /// Rows converted so far.
    rows: u64,
}

impl TableImport<'_> {
    /// Converts a row and queues it; commits the batch once it is full.
    ///
    /// Fails with [`MigrateError::Unconvertible`] when the row does not fit the keyspace's
    /// layout, and [`MigrateError::Target`] when a commit fails.
    pub(crate) fn push(&mut self, row: Row) -> Result<(), MigrateError> {
        let key = encode_key(self.parts, &row.key);
        let value = encode_value(self.value, row.value);
        let (key, value) = match key.and_then(|k| Ok((k, value?))) {
            Ok(kv) => kv,
            Err(reason) => {
                return Err(MigrateError::Unconvertible {
                    table: self.name.clone(),
                    key: KeyText(&row.key).to_string(),
                    reason,
                });
            }
        };
        if let Err(e) = check_key(&key) {
            return Err(MigrateError::Unconvertible {
                table: self.name.clone(),
                key: KeyText(&row.key).to_string(),
                reason: e.to_string(),
            });
        }
        self.pending_bytes += key.len() + value.len();
        self.pending.push((key, value));
        self.rows += 1;
        if self.pending.len() >= self.import.batch.rows
            || self.pending_bytes >= self.import.batch.bytes
        {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits the pending rows in one durable transaction.
    fn commit(&mut self) -> Result<(), MigrateError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .import
            .db
            .db
            .write_tx()
            .durability(Some(PersistMode::SyncData));
        for (k, v) in self.pending.drain(..) {
            tx.insert(self.ks, k, v);
        }
        self.pending_bytes = 0;
        tx.commit().map_err(|e| MigrateError::Target {
            path: self.import.path.clone(),
            cause: format!("keyspace `{}`: {e}", self.name),
        })
    }

    /// Commits what is pending; returns the rows written.
    ///
    /// Fails when the commit fails.
    pub(crate) fn finish(mut self) -> Result<u64, MigrateError> {
        self.commit()?;
        Ok(self.rows)
    }
}

/// A key in the [`keys`](super::keys) encoding of `parts`; with no parts, one byte string
/// stored raw (the key hashes).
///
/// Fails, saying why, when the components are not those of the layout.
fn encode_key(parts: &[Part], key: &[KeyPart]) -> Result<Vec<u8>, String> {
    if parts.is_empty() {
        return match key {
            [KeyPart::Bytes(b)] => Ok(b.clone()),
            _ => Err("expected one raw byte string".into()),
        };
    }
    if parts.len() != key.len() {
        return Err(format!(
            "expected {} key components, found {}",
            parts.len(),
            key.len()
        ));
    }
    let mut out = Key::new();
    for (i, (want, got)) in parts.iter().zip(key).enumerate() {
        out = match (want, got) {
            (Part::Str, KeyPart::Str(s)) => out.str(s),
            (Part::Bytes, KeyPart::Bytes(b)) => out.bytes(b),
            (Part::U64, KeyPart::U64(n)) => out.u64(*n),
            (Part::I64, KeyPart::I64(n)) => out.i64(*n),
            (want, _) => return Err(format!("key component {i} is not a {want:?}")),
        };
    }
    Ok(out.done())
}

/// A value as the keyspace stores it.
///
/// Fails, saying why, when its type is not the layout's.
fn encode_value(how: Value, value: RowValue) -> Result<Vec<u8>, String> {
    match (how, value) {
        (Value::Text | Value::Revised, RowValue::Bytes(b)) => Ok(b),
        (Value::U64, RowValue::U64(n)) => Ok(n.to_be_bytes().to_vec()),
        (Value::I64, RowValue::I64(n)) => Ok(n.to_be_bytes().to_vec()),
        (how, value) => Err(format!(
            "a {value:?} value where the keyspace holds {how:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout_or_are_refused() {
        let (parts, _) = layout("expiry");
        let key = [
            KeyPart::I64(-3),
            KeyPart::Str("agt_1".into()),
            KeyPart::U64(9),
        ];
        assert_eq!(
            encode_key(parts, &key).expect("encodes"),
            Key::new().i64(-3).str("agt_1").u64(9).done()
        );
        assert!(encode_key(parts, &key[..2]).is_err(), "too few components");
        let swapped = [
            KeyPart::Str("agt_1".into()),
            KeyPart::I64(-3),
            KeyPart::U64(9),
        ];
        assert!(encode_key(parts, &swapped).is_err(), "wrong types");
        let (raw, _) = layout("api_keys");
        assert_eq!(
            encode_key(raw, &[KeyPart::Bytes(vec![1, 0, 2])]).expect("raw"),
            vec![1, 0, 2]
        );
        assert!(encode_key(raw, &[KeyPart::Str("x".into())]).is_err());
    }

    #[test]
    fn integer_values_are_big_endian_and_typed() {
        assert_eq!(
            encode_value(Value::I64, RowValue::I64(-2)).expect("i64"),
            (-2i64).to_be_bytes().to_vec()
        );
        assert_eq!(
            encode_value(Value::U64, RowValue::U64(5)).expect("u64"),
            5u64.to_be_bytes().to_vec()
        );
        assert!(encode_value(Value::U64, RowValue::Bytes(vec![1])).is_err());
        assert!(encode_value(Value::Text, RowValue::I64(1)).is_err());
    }
}
