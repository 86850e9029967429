//! [`Bus`], the cheap-clone handle over a backend.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::BusBackend;

/// The bus as services hold it: a cheap-clone handle to some [`BusBackend`]. Derefs to the
/// backend, so `bus.publish(..)`, `bus.consume(..)` etc. work directly.
#[derive(Clone)]
pub struct Bus(Arc<dyn BusBackend>);

impl Bus {
    /// Wraps a backend.
    pub fn new(backend: impl BusBackend) -> Self {
        Self(Arc::new(backend))
    }

    /// Wraps an already shared backend.
    pub fn from_arc(backend: Arc<dyn BusBackend>) -> Self {
        Self(backend)
    }

    /// A fresh in-process bus (memory only; see [`crate::in_process`]).
    #[cfg(feature = "in-process")]
    pub fn in_process(config: crate::InProcessConfig) -> Self {
        Self::new(crate::InProcessBus::new(config))
    }

    /// Shuts the bus down (see [`BusBackend::close`]); every clone sees it.
    pub async fn shutdown(&self) {
        self.0.close().await;
    }
}

impl Deref for Bus {
    type Target = dyn BusBackend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("max_deliveries", &self.0.max_deliveries())
            .finish_non_exhaustive()
    }
}
