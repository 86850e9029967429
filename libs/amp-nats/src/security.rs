//! [`NatsSecurity`]: who a client is to NATS and how the connection is encrypted.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// Authentication and TLS of one NATS connection. The default (nothing set) connects without
/// credentials over plain TCP, as a server without `authorization` and `tls` expects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSecurity {
    /// Who the client is (`[nats.auth]`).
    pub auth: NatsAuth,
    /// How the connection is encrypted (`[nats.tls]`).
    pub tls: NatsTls,
}

/// Credentials, at most one kind: a user and password, an nkey seed, or a `.creds` file
/// (a user JWT and its nkey seed, for servers run in operator mode). Secrets come from files
/// only, so a ConfigMap never holds one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsAuth {
    /// The user name (with `password_file`).
    pub user: Option<String>,
    /// File holding the user's password (a trailing newline is ignored).
    pub password_file: Option<PathBuf>,
    /// File holding an nkey seed (`SU…`), for a server that lists users by nkey.
    pub nkey_seed_file: Option<PathBuf>,
    /// A NATS `.creds` file (user JWT and nkey seed), for a server run in operator mode.
    pub credentials_file: Option<PathBuf>,
}

/// TLS. Any of these set makes TLS required: a client given a CA never falls back to plain
/// TCP with a server that does not offer TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsTls {
    /// Refuse a connection without TLS (also implied by `tls://` URLs).
    pub required: bool,
    /// PEM file of the CA(s) the server's certificate must chain to; unset: the system's
    /// roots.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate, for a server that verifies clients (with
    /// `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    pub key_file: Option<PathBuf>,
}

impl NatsAuth {
    /// Whether any credential is configured.
    pub fn is_set(&self) -> bool {
        self.user.is_some() || self.nkey_seed_file.is_some() || self.credentials_file.is_some()
    }
}

impl NatsTls {
    /// Whether the connection must use TLS.
    pub fn is_required(&self) -> bool {
        self.required || self.ca_file.is_some() || self.cert_file.is_some()
    }
}

impl NatsSecurity {
    /// Checks that the settings fit together; fails with [`Error::Config`] naming the
    /// settings at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(Error::Config(what.to_owned()));
        let a = &self.auth;
        let kinds = [
            a.user.is_some() || a.password_file.is_some(),
            a.nkey_seed_file.is_some(),
            a.credentials_file.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return bad(
                "auth: set one of user and password_file, nkey_seed_file or credentials_file",
            );
        }
        if a.user.is_some() != a.password_file.is_some() {
            return bad("auth: user and password_file go together");
        }
        if a.user.as_deref().is_some_and(str::is_empty) {
            return bad("auth.user is empty");
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return bad("tls: cert_file and key_file go together");
        }
        Ok(())
    }
}

/// Refuses server URLs that carry credentials (`nats://user:pass@host`, `nats://token@host`):
/// URLs are logged and kept in ConfigMaps, so credentials go in [`NatsAuth`] files.
///
/// Fails with [`Error::Config`], naming the URL's position, not the URL.
pub fn check_urls(urls: &[String]) -> Result<()> {
    for (i, url) in urls.iter().enumerate() {
        let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(Error::Config(format!(
                "NATS URL #{} carries credentials; put them in nats.auth (files) instead",
                i + 1
            )));
        }
    }
    Ok(())
}

/// Reads a secret file (trailing whitespace dropped); the error names the setting and path.
pub(crate) fn read_secret(setting: &'static str, path: &Path) -> Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end().to_owned())
        .map_err(|source| Error::File {
            setting,
            path: path.display().to_string(),
            source,
        })
}

/// Fails with [`Error::File`] when `path` cannot be opened for reading.
pub(crate) fn check_readable(setting: &'static str, path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .map(|_| ())
        .map_err(|source| Error::File {
            setting,
            path: path.display().to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let s: NatsSecurity = toml::from_str(
            "[auth]\nuser = \"router\"\npassword_file = \"/run/secrets/nats\"\n\
             [tls]\nca_file = \"/ca.pem\"\n",
        )
        .expect("parse");
        assert!(s.validate().is_ok());
        assert!(s.auth.is_set() && s.tls.is_required());
        assert!(NatsSecurity::default().validate().is_ok());
        assert!(!NatsSecurity::default().tls.is_required());
        assert!(toml::from_str::<NatsSecurity>("[auth]\npassword = \"x\"").is_err());
        for bad in [
            "[auth]\nuser = \"a\"",
            "[auth]\npassword_file = \"/p\"",
            "[auth]\nuser = \"a\"\npassword_file = \"/p\"\nnkey_seed_file = \"/s\"",
            "[auth]\nnkey_seed_file = \"/s\"\ncredentials_file = \"/c\"",
            "[tls]\ncert_file = \"/c\"",
        ] {
            let s: NatsSecurity = toml::from_str(bad).expect("parse");
            assert!(s.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn security_urls_with_credentials_are_refused_without_echoing_them() {
        let ok = ["nats://a:4222".to_owned(), "tls://b:4222/x@y".to_owned()];
        assert!(check_urls(&ok).is_ok());
        for url in ["nats://u:hunter2@a:4222", "hunter2@a:4222"] {
            let e = check_urls(&[url.to_owned()]).expect_err(url).to_string();
            assert!(!e.contains("hunter2"), "{e}");
        }
    }
}
