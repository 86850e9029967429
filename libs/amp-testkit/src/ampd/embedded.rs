//! The embedded store of a stopped `ampd`'s data directory, opened on the backend `ampd`
//! picked for it (`ampd::Config::embedded_backend`: fjall, unless the suite runs with
//! `AMP__STORE__BACKEND=redb`), for the tests that look at the rows themselves.

use std::path::Path;

use super::StoreBackend;
use amp_store::ScannedRow;
use amp_store::fjall::{FjallConfig, FjallStore};
use amp_store::redb::{RedbConfig, RedbStore};

/// One embedded store.
pub enum Embedded {
    /// `amp.redb`.
    Redb(RedbStore),
    /// `amp.fjall`.
    Fjall(FjallStore),
}

impl Embedded {
    /// Opens the store `ampd` kept in `data_dir`.
    pub fn open(data_dir: &Path) -> Self {
        let mut config = ampd::Config::default();
        config.server.data_dir = data_dir.to_owned();
        super::test_config(&mut config);
        match config.embedded_backend() {
            StoreBackend::Fjall => Self::Fjall(
                FjallStore::open(&FjallConfig::in_dir(data_dir)).expect("open the fjall store"),
            ),
            _ => Self::Redb(
                RedbStore::open(&RedbConfig::in_dir(data_dir)).expect("open the redb store"),
            ),
        }
    }

    /// Every row of every table.
    pub fn scan_rows(&self) -> Vec<ScannedRow> {
        match self {
            Self::Redb(s) => s.scan_rows(),
            Self::Fjall(s) => s.scan_rows(),
        }
        .expect("scan the store")
    }

    /// The store, for the API.
    pub fn into_store(self) -> amp_store::Store {
        match self {
            Self::Redb(s) => amp_store::Store::new(s),
            Self::Fjall(s) => amp_store::Store::new(s),
        }
    }
}
