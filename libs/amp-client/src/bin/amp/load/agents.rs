//! The agents of a load run: registered across tenants, or read back from a `--reuse` file
//! (0600: it holds keys and API keys) so that later runs skip registration.

use std::path::Path;
use std::sync::Arc;

use amp_client::identity::write_private;
use amp_client::{Client, Identity, Registration};
use amp_proto::SecretKey;
use anyhow::{Context as _, bail};
use futures::{StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};

/// Registrations in flight at once.
const REGISTER_CONCURRENCY: usize = 16;
/// Version of the reuse file.
const FILE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct ReuseFile {
    version: u32,
    /// The provider URL the agents were registered with.
    provider: String,
    /// Tenant names are `<prefix>t<n>`.
    prefix: String,
    tenants: usize,
    agents: Vec<SavedAgent>,
}

#[derive(Serialize, Deserialize)]
struct SavedAgent {
    key_pem: String,
    registration: Registration,
}

/// `n` agents across `tenants` tenants: those of `reuse` when it exists (registering more if
/// it holds fewer), else new ones, saved to `reuse` when given.
///
/// Fails when registration is refused (e.g. `rate_limited`: raise the provider's
/// registration limit) or the file is unreadable or from another provider.
pub(crate) async fn obtain(
    client: &Client,
    provider: &str,
    n: usize,
    tenants: usize,
    reuse: Option<&Path>,
) -> anyhow::Result<Vec<Identity>> {
    let mut file = match reuse {
        Some(p) if p.exists() => {
            let text = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let f: ReuseFile = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not an `amp load` agents file", p.display()))?;
            if f.version != FILE_VERSION {
                bail!("{}: unsupported version {}", p.display(), f.version);
            }
            if f.provider.trim_end_matches('/') != provider.trim_end_matches('/') {
                bail!(
                    "{} holds agents of {}, not {provider}: use another --reuse file",
                    p.display(),
                    f.provider
                );
            }
            f
        }
        _ => ReuseFile {
            version: FILE_VERSION,
            provider: provider.to_owned(),
            prefix: format!("ld{:06x}", random_u32() & 0xff_ffff),
            tenants: tenants.max(1),
            agents: Vec::new(),
        },
    };
    let mut identities = Vec::with_capacity(n);
    for a in file.agents.iter().take(n) {
        let key = SecretKey::from_pkcs8_pem(&a.key_pem)
            .map_err(|e| anyhow::anyhow!("a key in the reuse file is invalid: {e}"))?;
        identities.push(Identity::new(key, a.registration.clone())?);
    }
    if identities.len() < n {
        let start = identities.len();
        let prefix: Arc<str> = Arc::from(file.prefix.as_str());
        let tenant_count = file.tenants.max(1);
        let fresh: Vec<Identity> = futures::stream::iter(start..n)
            .map(|i| {
                let client = client.clone();
                let prefix = prefix.clone();
                async move {
                    let tenant = format!("{prefix}t{}", i % tenant_count);
                    let key = SecretKey::generate();
                    client
                        .register(Some(&tenant), &format!("a{i}"), &key, None)
                        .await
                        .with_context(|| format!("registering agent {i} in tenant {tenant}"))
                }
            })
            .buffered(REGISTER_CONCURRENCY)
            .try_collect()
            .await?;
        for id in fresh {
            file.agents.push(SavedAgent {
                key_pem: id.key().to_pkcs8_pem(),
                registration: id.registration().clone(),
            });
            identities.push(id);
        }
        if let Some(p) = reuse {
            let mut text = serde_json::to_vec_pretty(&file)?;
            text.push(b'\n');
            write_private(p, &text)?;
        }
    }
    Ok(identities)
}

/// How many tenants the agents span.
pub(crate) fn tenant_count(agents: &[Identity]) -> usize {
    let mut t: Vec<&str> = agents
        .iter()
        .filter_map(|a| a.registration().tenant.as_deref())
        .collect();
    t.sort_unstable();
    t.dedup();
    t.len().max(1)
}

fn random_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Mix in the pid so that runs started in the same nanosecond still differ.
    (nanos as u32) ^ std::process::id().rotate_left(16)
}
