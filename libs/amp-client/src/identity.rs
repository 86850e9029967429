//! An agent's identity: its Ed25519 key and what the provider answered at registration,
//! kept in two owner-only (0600) files: the key as PKCS#8 PEM and the registration as JSON.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use amp_proto::SecretKey;
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::error::{ClientError, Result};
use crate::types::Registration;

/// Version of the identity JSON file.
const FILE_VERSION: u32 = 1;

/// A registered agent: the key it signs with and the registration (address, API key, agent
/// id, provider). Cheap to share by reference; the SDK takes `&Identity` on every call.
#[derive(Clone)]
pub struct Identity {
    key: SecretKey,
    registration: Registration,
    /// `Bearer <api_key>`, built once so that calls do not format it again.
    bearer: HeaderValue,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("address", &self.registration.address)
            .field("agent_id", &self.registration.agent_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u32,
    registration: Registration,
}

impl Identity {
    /// An identity from a key and its registration.
    ///
    /// Fails when the API key cannot be sent in an HTTP header.
    pub fn new(key: SecretKey, registration: Registration) -> Result<Self> {
        let mut bearer = HeaderValue::from_str(&format!("Bearer {}", registration.api_key))
            .map_err(|_| ClientError::Invalid("the API key is not a valid header value".into()))?;
        bearer.set_sensitive(true);
        Ok(Self {
            key,
            registration,
            bearer,
        })
    }

    /// The signing key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// The provider's registration answer.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    /// The agent's full address (the `from` of everything it sends).
    pub fn address(&self) -> &str {
        &self.registration.address
    }

    /// The API key.
    pub fn api_key(&self) -> &str {
        &self.registration.api_key
    }

    /// The provider's id for the agent.
    pub fn agent_id(&self) -> &str {
        &self.registration.agent_id
    }

    /// The route URL the provider gave at registration.
    pub fn route_url(&self) -> &str {
        &self.registration.provider.route_url
    }

    pub(crate) fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// Writes the registration to `json_path` and the key to `key_path`, both created 0600
    /// and replaced atomically.
    ///
    /// Fails when a file cannot be written.
    pub fn save(&self, json_path: &Path, key_path: &Path) -> Result<()> {
        save_key(key_path, &self.key)?;
        let file = IdentityFile {
            version: FILE_VERSION,
            registration: self.registration.clone(),
        };
        let mut text = serde_json::to_vec_pretty(&file)
            .map_err(|e| ClientError::decode("identity file", e))?;
        text.push(b'\n');
        write_private(json_path, &text)
    }

    /// Reads what [`Identity::save`] wrote.
    ///
    /// Fails when a file is missing or unreadable, or its content is not an identity or key.
    pub fn load(json_path: &Path, key_path: &Path) -> Result<Self> {
        let key = load_key(key_path)?;
        let text = std::fs::read(json_path).map_err(|e| io(json_path, e))?;
        let file: IdentityFile =
            serde_json::from_slice(&text).map_err(|e| ClientError::decode("identity file", e))?;
        if file.version != FILE_VERSION {
            return Err(ClientError::Invalid(format!(
                "{}: identity file version {} is not supported",
                json_path.display(),
                file.version
            )));
        }
        Self::new(key, file.registration)
    }
}

/// Writes `key` as PKCS#8 PEM to `path`, 0600, atomically.
///
/// Fails when the file cannot be written.
pub fn save_key(path: &Path, key: &SecretKey) -> Result<()> {
    write_private(path, key.to_pkcs8_pem().as_bytes())
}

/// Reads a PKCS#8 PEM Ed25519 key.
///
/// Fails when the file is unreadable or holds no Ed25519 private key.
pub fn load_key(path: &Path) -> Result<SecretKey> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    SecretKey::from_pkcs8_pem(&text).map_err(|e| {
        ClientError::Invalid(format!(
            "{}: not an Ed25519 PKCS#8 private key ({e})",
            path.display()
        ))
    })
}

/// Writes `bytes` to `path` readable by the owner only: a 0600 temporary file beside it,
/// synced, then renamed over it, so that a crash never leaves a half-written key and the
/// secret is never readable by others, not even for a moment.
///
/// Fails when the directory or the file cannot be written.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand_u32()
    ));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(path, e));
    }
    Ok(())
}

fn rand_u32() -> u32 {
    // Collisions only matter between concurrent writers of the same file; the clock's
    // nanoseconds suffice and keep `rand` out of this crate's dependencies.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

fn io(path: &Path, source: std::io::Error) -> ClientError {
    ClientError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ProviderRef;

    fn registration() -> Registration {
        Registration {
            address: "alice@acme.amp.test".into(),
            short_address: Some("alice@acme.amp.test".into()),
            agent_id: "agt_1".into(),
            tenant: Some("acme".into()),
            api_key: "amp_live_sk_x".into(),
            fingerprint: None,
            provider: ProviderRef {
                name: "amp.test".into(),
                endpoint: "http://127.0.0.1:1/v1".into(),
                route_url: "http://127.0.0.1:1/v1/route".into(),
            },
        }
    }

    #[test]
    fn save_and_load_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = dir.path().join("sub/identity.json");
        let pem = dir.path().join("sub/key.pem");
        let id = Identity::new(SecretKey::generate(), registration()).expect("identity");
        id.save(&json, &pem).expect("save");
        // Saving again replaces the files.
        id.save(&json, &pem).expect("save again");
        let back = Identity::load(&json, &pem).expect("load");
        assert_eq!(back.registration(), id.registration());
        assert_eq!(back.key().public(), id.key().public());
        #[cfg(unix)]
        for p in [&json, &pem] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(p).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", p.display());
        }
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn a_bad_key_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = dir.path().join("key.pem");
        std::fs::write(&pem, "not a key").expect("write");
        assert!(matches!(load_key(&pem), Err(ClientError::Invalid(_))));
        assert!(matches!(
            load_key(&dir.path().join("missing.pem")),
            Err(ClientError::Io { .. })
        ));
    }

    #[test]
    fn debug_does_not_print_the_api_key() {
        let id = Identity::new(SecretKey::generate(), registration()).expect("identity");
        let s = format!("{id:?}");
        assert!(!s.contains("amp_live_sk_x"), "{s}");
    }
}
