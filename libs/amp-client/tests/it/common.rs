//! The provider the tests talk to: the kit's in-process `ampd` ([`Ampd`]), and the SDK's view
//! of it.

use amp_client::{Client, Identity};
use amp_proto::SecretKey;
pub(crate) use amp_testkit::ampd::Ampd;

/// The default provider domain of `ampd::Config`.
pub(crate) const DOMAIN: &str = "amp.test";

/// The SDK's view of an [`Ampd`].
pub(crate) trait ClientExt {
    /// An SDK client of it.
    fn client(&self) -> Client;
}

impl ClientExt for Ampd {
    fn client(&self) -> Client {
        Client::new(self.url()).expect("client")
    }
}

/// A tenant name no other test uses.
pub(crate) fn tenant(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Registers `name` in `tenant` through the SDK, with a fresh key.
pub(crate) async fn register(client: &Client, tenant: &str, name: &str) -> Identity {
    client
        .register(Some(tenant), name, &SecretKey::generate(), None)
        .await
        .expect("register")
}
