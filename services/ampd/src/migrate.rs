//! `ampd --migrate-store`: the data directory's redb store (`amp.redb`) copied onto fjall
//! (`amp.fjall`), after which a plain start picks fjall ([`Config::embedded_backend`]).
//!
//! The copy goes to `amp.fjall.partial` and is renamed into place only once complete, so an
//! interrupted run never leaves an `amp.fjall` that a start would take for the store (a
//! leftover `.partial` is removed and the copy redone). `amp.redb` is left as the backup.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use amp_store::migrate::{self, Batch, TableCount};
use anyhow::Context;

use crate::config::{FJALL_DIR, REDB_FILE};
use crate::{Config, StoreBackend};

/// What a migration did.
#[derive(Debug)]
pub struct Migrated {
    /// The redb store copied (kept as the backup).
    pub redb: PathBuf,
    /// The fjall store written.
    pub fjall: PathBuf,
    /// Rows per table.
    pub counts: Vec<TableCount>,
    /// How long the copy took.
    pub elapsed: Duration,
    /// Set when the config names `backend = "redb"`, which would keep using the old store.
    pub pinned_to_redb: bool,
}

impl fmt::Display for Migrated {
    /// The rows per table, the total, the time and where things are: what `ampd
    /// --migrate-store` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "migrated {} -> {}",
            self.redb.display(),
            self.fjall.display()
        )?;
        for c in &self.counts {
            writeln!(f, "  {:<14} {:>12}", c.table, c.rows)?;
        }
        let total: u64 = self.counts.iter().map(|c| c.rows).sum();
        let secs = self.elapsed.as_secs_f64();
        writeln!(
            f,
            "  {:<14} {:>12} rows in {secs:.2} s ({:.0} rows/s)",
            "total",
            total,
            total as f64 / secs.max(1e-9)
        )?;
        write!(
            f,
            "{} is kept as the backup; the next start uses {}",
            self.redb.display(),
            self.fjall.display()
        )?;
        if self.pinned_to_redb {
            write!(
                f,
                "\nnote: the config sets store.backend = \"redb\", which keeps using {}: set it to \
                 \"embedded\" (or \"fjall\")",
                self.redb.display()
            )?;
        }
        Ok(())
    }
}

/// Copies `<data_dir>/amp.redb` into `<data_dir>/amp.fjall` (through `amp.fjall.partial`,
/// renamed once complete) and returns what was copied.
///
/// # Errors
/// When there is no `amp.redb`, when `amp.fjall` exists already, when the redb store is in
/// use by a running `ampd`, when a leftover `amp.fjall.partial` cannot be removed, and when
/// the copy or the rename fails (the partial copy is removed then).
pub fn migrate_store(config: &Config) -> anyhow::Result<Migrated> {
    let dir = &config.server.data_dir;
    let redb = dir.join(REDB_FILE);
    let fjall = dir.join(FJALL_DIR);
    let partial = dir.join(format!("{FJALL_DIR}.partial"));
    if !redb.is_file() {
        anyhow::bail!(
            "no redb store to migrate: {} does not exist",
            redb.display()
        );
    }
    if fjall.exists() {
        anyhow::bail!(
            "{} exists already: the store is migrated (or was never redb); nothing done",
            fjall.display()
        );
    }
    if partial.exists() {
        // An interrupted run's copy: never trusted, always redone.
        remove(&partial)?;
    }
    let start = Instant::now();
    let counts = match migrate::redb_to_fjall(&redb, &partial, Batch::default()) {
        Ok(counts) => counts,
        Err(e) => {
            if partial.exists() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            return Err(e.into());
        }
    };
    std::fs::rename(&partial, &fjall)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), fjall.display()))?;
    sync_dir(dir)?;
    Ok(Migrated {
        redb,
        fjall,
        counts,
        elapsed: start.elapsed(),
        pinned_to_redb: config.store.backend == StoreBackend::Redb,
    })
}

/// Removes a leftover partial copy.
fn remove(partial: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(partial).with_context(|| {
        format!(
            "cannot remove {} (left by an interrupted migration)",
            partial.display()
        )
    })
}

/// Makes the rename durable: the directory's entry is synced, not only the files.
fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the data directory {}", dir.display()))
}
