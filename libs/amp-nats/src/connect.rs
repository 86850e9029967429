//! [`connect`]: a NATS client with the configured credentials and TLS.

use async_nats::{Client, ConnectError, ConnectErrorKind, ConnectOptions};

use crate::security::{check_readable, read_secret};
use crate::{Error, NatsSecurity, Result, check_urls};

/// Connects to one of `urls` with `options` (name, timeouts, callbacks: the caller's) plus the
/// credentials and TLS of `security`, read from their files now.
///
/// Fails with [`Error::Config`] when the settings contradict each other or a URL carries
/// credentials, [`Error::File`] when a file cannot be read, [`Error::Auth`] when NATS refuses
/// the credentials (or wants some and none are set), [`Error::Tls`] when the TLS handshake
/// fails, [`Error::Unreachable`] otherwise. No message holds a secret.
pub async fn connect(
    urls: &[String],
    security: &NatsSecurity,
    options: ConnectOptions,
) -> Result<Client> {
    check_urls(urls)?;
    security.validate()?;
    install_crypto_provider();
    let options = apply(security, options).await?;
    options
        .connect(urls)
        .await
        .map_err(|e| describe(&e, urls, security))
}

/// Installs ring as the process's rustls crypto back end, once (a no-op when one is
/// installed already). Both back ends are compiled into the services (async-nats brings
/// ring, the S3 client of the blob store aws-lc-rs), and rustls then refuses to pick one by
/// itself: the first TLS connection to NATS would panic.
pub fn install_crypto_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// `options` with the credentials and TLS of `security`.
async fn apply(security: &NatsSecurity, mut options: ConnectOptions) -> Result<ConnectOptions> {
    let auth = &security.auth;
    if let (Some(user), Some(path)) = (&auth.user, &auth.password_file) {
        let password = read_secret("nats auth.password_file", path)?;
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(path) = &auth.nkey_seed_file {
        let seed = read_secret("nats auth.nkey_seed_file", path)?;
        options = options.nkey(seed);
    }
    if let Some(path) = &auth.credentials_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(|source| Error::File {
                setting: "nats auth.credentials_file",
                path: path.display().to_string(),
                source,
            })?;
    }
    let tls = &security.tls;
    if let Some(path) = &tls.ca_file {
        check_readable("nats tls.ca_file", path)?;
        options = options.add_root_certificates(path.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        check_readable("nats tls.cert_file", cert)?;
        check_readable("nats tls.key_file", key)?;
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options.require_tls(tls.is_required()))
}

/// What went wrong, in terms of the settings to check. The client's errors name the server's
/// verdict ("authorization violation") and TLS failures, never the credentials sent.
fn describe(e: &ConnectError, urls: &[String], security: &NatsSecurity) -> Error {
    match e.kind() {
        ConnectErrorKind::AuthorizationViolation if security.auth.is_set() => Error::Auth(format!(
            "NATS at {urls:?} refused the credentials (authorization violation): check \
                 nats.auth (user and password_file, nkey_seed_file or credentials_file) \
                 against the server's users"
        )),
        ConnectErrorKind::AuthorizationViolation => Error::Auth(format!(
            "NATS at {urls:?} requires authentication (authorization violation) and no \
             credentials are configured: set nats.auth"
        )),
        ConnectErrorKind::Authentication => Error::Auth(format!(
            "cannot authenticate to NATS at {urls:?} with the configured nkey or credentials \
             file: {e}"
        )),
        ConnectErrorKind::Tls => tls_error(e, urls),
        // rustls reports a bad certificate or a server without TLS as invalid data.
        ConnectErrorKind::Io if security.tls.is_required() && is_invalid_data(e) => {
            tls_error(e, urls)
        }
        _ => Error::Unreachable(format!("cannot connect to NATS at {urls:?}: {e}")),
    }
}

fn tls_error(e: &ConnectError, urls: &[String]) -> Error {
    Error::Tls(format!(
        "TLS with NATS at {urls:?} failed (check nats.tls: ca_file, cert_file, key_file, \
             and that the server offers TLS): {e}"
    ))
}

fn is_invalid_data(e: &ConnectError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
}
