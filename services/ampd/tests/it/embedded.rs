//! The embedded store of a stopped `ampd`'s data directory, opened on the backend the suite
//! runs on (`AMP__STORE__BACKEND=fjall` or redb, see `amp_testkit::ampd::embedded_backend`),
//! for the tests that look at the rows themselves.

use std::path::Path;

use amp_store::ScannedRow;
use amp_store::fjall::{FjallConfig, FjallStore};
use amp_store::redb::{RedbConfig, RedbStore};
use amp_testkit::ampd::{StoreBackend, embedded_backend};

/// One embedded store.
pub(crate) enum Embedded {
    Redb(RedbStore),
    Fjall(FjallStore),
}

impl Embedded {
    /// Opens the store `ampd` kept in `data_dir`.
    pub(crate) fn open(data_dir: &Path) -> Self {
        match embedded_backend() {
            Some(StoreBackend::Fjall) => Self::Fjall(
                FjallStore::open(&FjallConfig::in_dir(data_dir)).expect("open the fjall store"),
            ),
            _ => Self::Redb(
                RedbStore::open(&RedbConfig::in_dir(data_dir)).expect("open the redb store"),
            ),
        }
    }

    /// Every row of every table.
    pub(crate) fn scan_rows(&self) -> Vec<ScannedRow> {
        match self {
            Self::Redb(s) => s.scan_rows(),
            Self::Fjall(s) => s.scan_rows(),
        }
        .expect("scan the store")
    }

    /// The store, for the API.
    pub(crate) fn into_store(self) -> amp_store::Store {
        match self {
            Self::Redb(s) => amp_store::Store::new(s),
            Self::Fjall(s) => amp_store::Store::new(s),
        }
    }
}
