//! The provider's persistent identity: its Ed25519 signing key and the API-key pepper.
//!
//! Both are created on first start and reused ever after: a new key would change the
//! provider's fingerprint under its peers, and a new pepper would invalidate every API key
//! already issued. So an existing file that cannot be read or parsed stops the start-up
//! with an error naming it; it is never silently replaced.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use amp_proto::SecretKey;
use rand::RngCore;

/// Why the identity could not be loaded or created; the message names the file and what to
/// do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityError(String);

/// Bytes of a freshly generated pepper.
const PEPPER_LEN: usize = 32;
/// Fewest bytes accepted in an existing pepper file (operators may bring their own).
const MIN_PEPPER_LEN: usize = 16;

/// Reads the provider key from `path` (PKCS#8 PEM), or generates one and writes it there
/// (mode 0600) when the file does not exist.
///
/// # Errors
/// When the file exists but cannot be read or is not an Ed25519 PKCS#8 PEM, or when a new
/// key cannot be written.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, IdentityError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            warn_if_exposed(path);
            SecretKey::from_pkcs8_pem(&text).map_err(|e| {
                IdentityError(format!(
                    "provider key file {} is invalid ({e}); restore it, or delete it to create \
                     a new provider identity",
                    path.display()
                ))
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = SecretKey::generate();
            write_new_secret(path, key.to_pkcs8_pem().as_bytes()).map_err(|e| {
                IdentityError(format!(
                    "cannot write provider key file {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(
                path = %path.display(),
                fingerprint = %key.public().fingerprint(),
                "generated a new provider key"
            );
            Ok(key)
        }
        Err(e) => Err(IdentityError(format!(
            "cannot read provider key file {}: {e}",
            path.display()
        ))),
    }
}

/// Reads the API-key pepper from `path` (hex), or generates 32 random bytes and writes them
/// there (hex, mode 0600) when the file does not exist.
///
/// # Errors
/// When the file exists but cannot be read, is not hex or is shorter than 16 bytes, or when
/// a new pepper cannot be written.
pub fn load_or_create_pepper(path: &Path) -> Result<Vec<u8>, IdentityError> {
    match fs::read_to_string(path) {
        Ok(text) => {
            warn_if_exposed(path);
            let pepper = hex::decode(text.trim()).map_err(|e| {
                IdentityError(format!(
                    "key pepper file {} is not hex ({e}); restore it (a new pepper invalidates \
                     every issued API key)",
                    path.display()
                ))
            })?;
            if pepper.len() < MIN_PEPPER_LEN {
                return Err(IdentityError(format!(
                    "key pepper file {} holds {} bytes; at least {MIN_PEPPER_LEN} are required",
                    path.display(),
                    pepper.len()
                )));
            }
            Ok(pepper)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut pepper = vec![0u8; PEPPER_LEN];
            rand::rngs::OsRng.try_fill_bytes(&mut pepper).map_err(|e| {
                IdentityError(format!("cannot get random bytes for the key pepper: {e}"))
            })?;
            let text = format!("{}\n", hex::encode(&pepper));
            write_new_secret(path, text.as_bytes()).map_err(|e| {
                IdentityError(format!(
                    "cannot write key pepper file {}: {e}",
                    path.display()
                ))
            })?;
            tracing::info!(path = %path.display(), "generated a new API-key pepper");
            Ok(pepper)
        }
        Err(e) => Err(IdentityError(format!(
            "cannot read key pepper file {}: {e}",
            path.display()
        ))),
    }
}

/// Writes a secret file that must not exist yet, readable by the owner only.
///
/// The content goes to a temporary file first and is then hard-linked into place, so a
/// crash never leaves a half-written file behind (which the next start would refuse), and
/// a file that appeared meanwhile is never overwritten.
fn write_new_secret(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    // A leftover from a crashed earlier start with the same pid.
    let _ = fs::remove_file(&tmp);
    let written = write_private(&tmp, contents).and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        // Some filesystems have no hard links: create the file in place instead.
        Err(_) => write_private(path, contents)?,
    }
    // Make the new directory entry durable too (best effort: not every platform can).
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates `path` (which must not exist) with mode 0600 and writes `contents` durably.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Warns when a secret file is readable by group or others (it still works).
fn warn_if_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "secret file is accessible to group or others; chmod 600 it"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/provider-key.pem");
        let first = load_or_create_key(&path).expect("create");
        let second = load_or_create_key(&path).expect("reload");
        assert_eq!(first.public().fingerprint(), second.public().fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("sub"))
            .expect("read dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("provider-key.pem")]);
    }

    #[test]
    fn invalid_or_unreadable_key_is_refused_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("provider-key.pem");
        fs::write(&path, "not a key").expect("write");
        let err = load_or_create_key(&path).expect_err("invalid");
        assert!(err.to_string().contains("provider-key.pem"), "{err}");
        assert_eq!(fs::read_to_string(&path).expect("read"), "not a key");

        // A directory where the file should be cannot be read.
        let err = load_or_create_key(dir.path()).expect_err("unreadable");
        assert!(err.to_string().contains("cannot read"), "{err:#}");
    }

    #[test]
    fn pepper_is_created_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key-pepper");
        let first = load_or_create_pepper(&path).expect("create");
        assert_eq!(first.len(), PEPPER_LEN);
        assert_eq!(load_or_create_pepper(&path).expect("reload"), first);
        let text = fs::read_to_string(&path).expect("read");
        assert_eq!(text.trim(), hex::encode(&first));
    }

    #[test]
    fn bad_pepper_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key-pepper");
        fs::write(&path, "zz").expect("write");
        assert!(load_or_create_pepper(&path).is_err());
        fs::write(&path, "abcd\n").expect("write");
        let err = load_or_create_pepper(&path).expect_err("short");
        assert!(err.to_string().contains("at least"), "{err}");
    }
}
