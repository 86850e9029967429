//! Moving an embedded store from redb onto fjall: [`redb_to_fjall`] copies every row of
//! every redb table into an empty fjall store, table by table, in bounded batches.
//!
//! The two backends hold the same tables with the same values (JSON, the mailbox row,
//! the attachment row); what differs is how keys and integers are written. redb's side
//! (`redb::export`) reads each row as its typed tuple, [`KeyPart`]s and a [`RowValue`];
//! fjall's side (`fjall::import`) writes them in the fjall key encoding, checked against the
//! layout fjall declares for the keyspace. The redb file's own list of tables drives the
//! copy: a table fjall has no keyspace for, or one this module cannot read, is an error
//! before anything is written, never a table left behind.

use std::fmt;
use std::path::{Path, PathBuf};

/// A component of a row's key, as redb types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyPart {
    /// A string.
    Str(String),
    /// A byte string (key hashes).
    Bytes(Vec<u8>),
    /// An unsigned integer (sequence numbers).
    U64(u64),
    /// A signed integer (times).
    I64(i64),
}

/// A row's value, as redb types it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RowValue {
    /// Bytes (JSON, a mailbox row, a string's UTF-8; empty for redb's `()`).
    Bytes(Vec<u8>),
    /// An unsigned integer.
    U64(u64),
    /// A signed integer.
    I64(i64),
}

/// One row read from the source: its key's components and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    /// The key, component by component.
    pub(crate) key: Vec<KeyPart>,
    /// The value.
    pub(crate) value: RowValue,
}

/// A key as text for error messages: `("tenant", "name")`, byte strings as hex.
pub(crate) struct KeyText<'a>(pub(crate) &'a [KeyPart]);

impl fmt::Display for KeyText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match p {
                KeyPart::Str(s) => write!(f, "{s:?}")?,
                KeyPart::Bytes(b) => {
                    f.write_str("0x")?;
                    for x in b {
                        write!(f, "{x:02x}")?;
                    }
                }
                KeyPart::U64(n) => write!(f, "{n}")?,
                KeyPart::I64(n) => write!(f, "{n}")?,
            }
        }
        f.write_str(")")
    }
}

/// What can go wrong in a migration.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The source database is open in another process (a running `ampd`): redb's file lock.
    #[error("{0} is in use by another process (is ampd running on this data directory?)")]
    SourceInUse(PathBuf),
    /// The source database cannot be opened or read.
    #[error("cannot read the redb store {path}: {cause}")]
    Source {
        /// The database file.
        path: PathBuf,
        /// What failed.
        cause: String,
    },
    /// The target already holds something: a migration only fills an empty store.
    #[error("the target {0} is not empty; a migration only fills an empty store")]
    TargetNotEmpty(PathBuf),
    /// The target cannot be created or written.
    #[error("cannot write the fjall store {path}: {cause}")]
    Target {
        /// The database directory.
        path: PathBuf,
        /// What failed.
        cause: String,
    },
    /// A table of the source that the target has no keyspace for (or this module cannot
    /// read): copying the rest would leave it behind.
    #[error("table `{0}` of the redb store has no fjall keyspace to go to")]
    UnknownTable(String),
    /// A row that cannot be written in the target's encoding.
    #[error("table `{table}`, key {key}: {reason}")]
    Unconvertible {
        /// The table.
        table: String,
        /// The row's key, as text.
        key: String,
        /// Why.
        reason: String,
    },
}

/// How many rows a table held, and so were copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    /// The table (the same name in both backends).
    pub table: String,
    /// Its rows.
    pub rows: u64,
}

/// How much one durable commit of the target holds at most: a batch is committed (and
/// fsynced) as soon as it reaches either bound, so memory stays bounded whatever the
/// store's size.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Rows per commit.
    pub rows: usize,
    /// Bytes of keys and values per commit.
    pub bytes: usize,
}

impl Default for Batch {
    /// 4096 rows or 16 MiB, whichever comes first.
    fn default() -> Self {
        Self {
            rows: 4096,
            bytes: 16 * 1024 * 1024,
        }
    }
}

/// Copies every row of every table of the redb store `redb_file` into a new fjall store in
/// the directory `fjall_dir`, which must not exist or be empty. Returns the rows per table,
/// in the fjall store's keyspace order. The source is read in one read transaction (a
/// consistent snapshot) and left as it was, except that redb's own opening repairs it
/// after a crash and adds any table it lacks, as `RedbStore::open` does.
///
/// Fails with [`MigrateError::SourceInUse`] when another process holds the redb file,
/// [`MigrateError::TargetNotEmpty`] when `fjall_dir` holds anything,
/// [`MigrateError::UnknownTable`] when redb holds a table fjall has none for,
/// [`MigrateError::Unconvertible`] for a row that cannot be written, and otherwise when
/// either store cannot be read or written. On failure `fjall_dir` holds a partial copy:
/// remove it before trying again.
pub fn redb_to_fjall(
    redb_file: &Path,
    fjall_dir: &Path,
    batch: Batch,
) -> Result<Vec<TableCount>, MigrateError> {
    let source = crate::redb::export::RedbExport::open(redb_file)?;
    let tables = source.tables()?;
    let target = crate::fjall::import::FjallImport::create(fjall_dir, batch)?;
    // Every table of the source must have somewhere to go before anything is copied.
    for t in &tables {
        if !target.has_keyspace(t) {
            return Err(MigrateError::UnknownTable(t.clone()));
        }
    }
    let mut out = Vec::new();
    for name in target.keyspaces() {
        let mut rows = 0;
        if tables.iter().any(|t| t == name) {
            let mut sink = target.table(name)?;
            source.export(name, &mut |row| sink.push(row))?;
            rows = sink.finish()?;
        }
        out.push(TableCount {
            table: name.to_owned(),
            rows,
        });
    }
    target.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_text_in_errors() {
        let key = [
            KeyPart::Str("t".into()),
            KeyPart::Bytes(vec![0, 0xab]),
            KeyPart::U64(7),
            KeyPart::I64(-1),
        ];
        assert_eq!(KeyText(&key).to_string(), r#"("t", 0x00ab, 7, -1)"#);
    }
}
