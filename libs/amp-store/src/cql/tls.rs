//! [`CqlTlsConfig`]: TLS to the CQL cluster (`[store.cql.tls]`), and the driver's TLS
//! context built from it.
//!
//! The driver verifies a node's certificate against the node's IP address (the address it
//! connects to, discovered from the cluster). Certificates issued for a DNS name instead
//! are checked against `server_name`; `verify_hostname = false` checks the chain only.

use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode, SslVersion};
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509StoreContextRef};
use scylla::client::session::OpenSsl010Config;
use serde::Deserialize;

use crate::{Error, Result};

/// `X509_V_ERR_HOSTNAME_MISMATCH`: the certificate is not valid for the expected name.
const HOSTNAME_MISMATCH: i32 = 62;
/// `X509_V_ERR_IP_ADDRESS_MISMATCH`: the certificate is not valid for the node's address.
const IP_ADDRESS_MISMATCH: i32 = 64;

/// TLS to the cluster: the `[store.cql.tls]` section. Files are PEM (mounted Secrets);
/// their contents are never logged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CqlTlsConfig {
    /// Connect over TLS. Default false.
    pub enabled: bool,
    /// The CA certificates (PEM) that sign the nodes' certificates; only these are
    /// trusted. Default: the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// A client certificate chain (PEM), for clusters that require mutual TLS. Needs
    /// `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The private key (PEM) of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// The name every node's certificate must be valid for (a DNS name in its
    /// subjectAltName), when the certificates name the cluster rather than each node's IP
    /// address. Default: each node's IP address.
    pub server_name: Option<String>,
    /// Check that the certificate is valid for the node (its IP address, or `server_name`).
    /// Off only checks that a trusted CA signed it. Default true.
    pub verify_hostname: bool,
}

impl Default for CqlTlsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            verify_hostname: true,
        }
    }
}

/// A config error naming the field.
fn bad(what: &str) -> Error {
    Error::Unavailable(format!("invalid CQL store config: tls.{what}"))
}

impl CqlTlsConfig {
    /// Checks the settings; fails with [`Error::Unavailable`] naming the bad field.
    pub fn validate(&self) -> Result<()> {
        if !self.enabled {
            let set = [
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
                ("server_name", self.server_name.is_some()),
            ];
            if let Some((name, _)) = set.iter().find(|(_, s)| *s) {
                return Err(bad(&format!(
                    "{name} is set but tls.enabled is false (a forgotten `enabled = true`?)"
                )));
            }
            return Ok(());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => return Err(bad("cert_file needs key_file")),
            (None, Some(_)) => return Err(bad("key_file needs cert_file")),
            _ => {}
        }
        if let Some(name) = &self.server_name
            && (name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '/'))
        {
            return Err(bad("server_name must be a host name"));
        }
        if self.server_name.is_some() && !self.verify_hostname {
            return Err(bad("server_name is set but verify_hostname is false"));
        }
        Ok(())
    }

    /// The driver's TLS context, or `None` when TLS is off.
    ///
    /// Fails, naming the file and what is wrong with it, when a file cannot be read, holds
    /// no PEM certificate or key, or the key does not belong to the certificate.
    pub(crate) fn context(&self) -> Result<Option<OpenSsl010Config>> {
        if !self.enabled {
            return Ok(None);
        }
        let ssl = |what: &str, e: openssl::error::ErrorStack| {
            Error::Unavailable(format!("CQL TLS: cannot {what}: {e}"))
        };
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(|e| ssl("set up", e))?;
        builder
            .set_min_proto_version(Some(SslVersion::TLS1_2))
            .map_err(|e| ssl("require TLS 1.2", e))?;
        if let Some(ca_file) = &self.ca_file {
            let mut store = X509StoreBuilder::new().map_err(|e| ssl("set up", e))?;
            for cert in read_certs("ca_file", ca_file)? {
                store
                    .add_cert(cert)
                    .map_err(|e| ssl(&format!("trust {}", ca_file.display()), e))?;
            }
            // Only the configured CAs: not the system's store as well.
            builder.set_cert_store(store.build());
        }
        if let (Some(cert_file), Some(key_file)) = (&self.cert_file, &self.key_file) {
            let mut chain = read_certs("cert_file", cert_file)?.into_iter();
            if let Some(leaf) = chain.next() {
                builder
                    .set_certificate(&leaf)
                    .map_err(|e| ssl(&format!("use {}", cert_file.display()), e))?;
            }
            for cert in chain {
                builder
                    .add_extra_chain_cert(cert)
                    .map_err(|e| ssl(&format!("use {}", cert_file.display()), e))?;
            }
            let pem = read_file("key_file", key_file)?;
            let key = PKey::private_key_from_pem(&pem).map_err(|e| {
                Error::Unavailable(format!(
                    "CQL TLS: key_file {} holds no PEM private key: {e}",
                    key_file.display()
                ))
            })?;
            builder
                .set_private_key(&key)
                .map_err(|e| ssl(&format!("use {}", key_file.display()), e))?;
            builder.check_private_key().map_err(|_| {
                Error::Unavailable(format!(
                    "CQL TLS: key_file {} is not the key of cert_file {}",
                    key_file.display(),
                    cert_file.display()
                ))
            })?;
        }
        if let Some(name) = &self.server_name {
            builder
                .verify_param_mut()
                .set_host(name)
                .map_err(|e| ssl(&format!("check certificates for {name}"), e))?;
        }
        // The driver asks OpenSSL to match each node's IP address. With `server_name` the
        // name is matched instead (above), so an address mismatch alone is forgiven; with
        // `verify_hostname = false` any name or address mismatch is.
        let by_name = self.server_name.is_some();
        let check_name = self.verify_hostname;
        builder.set_verify_callback(
            SslVerifyMode::PEER,
            move |ok, ctx: &mut X509StoreContextRef| {
                ok || match ctx.error().as_raw() {
                    IP_ADDRESS_MISMATCH => by_name || !check_name,
                    HOSTNAME_MISMATCH => !check_name,
                    _ => false,
                }
            },
        );
        Ok(Some(OpenSsl010Config::new(builder)))
    }

    /// A hint for a failed connection over TLS: what to check, by the error's words.
    pub(crate) fn hint(&self, error: &str) -> Option<String> {
        if !self.enabled {
            return None;
        }
        let e = error.to_ascii_lowercase();
        let ca = self
            .ca_file
            .as_ref()
            .map_or("the system's trust store".to_owned(), |p| {
                format!("ca_file {}", p.display())
            });
        if (e.contains("certificate required") || e.contains("handshake failure"))
            && self.cert_file.is_none()
        {
            Some(
                "TLS handshake failed: the node requires a client certificate (set cert_file and key_file)"
                    .to_owned(),
            )
        } else if e.contains("certificate verify failed") || e.contains("self-signed") {
            Some(format!(
                "TLS handshake failed: the node's certificate is not signed by a CA in {ca}, or \
                 is not valid for {}",
                self.server_name
                    .as_deref()
                    .map_or("the node's address".to_owned(), |n| n.to_owned())
            ))
        } else if e.contains("connection broken") || e.contains("connection reset") {
            // TLS 1.3: a node that refuses the client's certificate (or its absence) closes
            // the connection after the handshake, which the driver sees as a broken one.
            Some(if self.cert_file.is_none() {
                "the node closed the TLS connection: if it requires client certificates, set cert_file and key_file".to_owned()
            } else {
                "the node closed the TLS connection: is cert_file signed by a CA the node trusts?"
                    .to_owned()
            })
        } else if e.contains("wrong version number") || e.contains("unexpected eof") {
            Some("TLS handshake failed: does the node serve TLS on this port?".to_owned())
        } else if e.contains("ssl") || e.contains("tls") {
            Some("TLS handshake failed".to_owned())
        } else {
            None
        }
    }
}

fn read_file(field: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Unavailable(format!(
            "CQL TLS: cannot read {field} {}: {e}",
            path.display()
        ))
    })
}

/// Every certificate of a PEM file; at least one.
fn read_certs(field: &str, path: &Path) -> Result<Vec<X509>> {
    let pem = read_file(field, path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| {
        Error::Unavailable(format!(
            "CQL TLS: {field} {} is not PEM certificates: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(Error::Unavailable(format!(
            "CQL TLS: {field} {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> CqlTlsConfig {
        CqlTlsConfig {
            enabled: true,
            ..CqlTlsConfig::default()
        }
    }

    fn err(c: &CqlTlsConfig) -> String {
        match c.validate().and_then(|()| c.context().map(|_| ())) {
            Ok(()) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn cql_tls_settings_are_checked_by_name() {
        assert!(CqlTlsConfig::default().validate().is_ok());
        assert!(on().validate().is_ok());
        let off_with_ca = CqlTlsConfig {
            ca_file: Some("/x.pem".into()),
            ..CqlTlsConfig::default()
        };
        assert!(err(&off_with_ca).contains("tls.ca_file is set but tls.enabled is false"));
        let half = CqlTlsConfig {
            cert_file: Some("/c.pem".into()),
            ..on()
        };
        assert!(err(&half).contains("cert_file needs key_file"));
        let contradiction = CqlTlsConfig {
            server_name: Some("db.example".into()),
            verify_hostname: false,
            ..on()
        };
        assert!(err(&contradiction).contains("verify_hostname"));
    }

    #[test]
    fn cql_tls_file_errors_name_the_file_and_the_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing-ca.pem");
        let e = err(&CqlTlsConfig {
            ca_file: Some(missing.clone()),
            ..on()
        });
        assert!(
            e.contains("cannot read ca_file") && e.contains("missing-ca.pem"),
            "{e}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").expect("write");
        let e = err(&CqlTlsConfig {
            ca_file: Some(garbage.clone()),
            ..on()
        });
        assert!(e.contains("garbage.pem") && e.contains("PEM"), "{e}");
        let e = err(&CqlTlsConfig {
            cert_file: Some(garbage.clone()),
            key_file: Some(garbage),
            ..on()
        });
        assert!(e.contains("cert_file") && e.contains("PEM"), "{e}");
    }
}
