//! [`TestPki`]: a throwaway CA with a server certificate for `127.0.0.1`/`localhost` and a
//! client certificate, made by the `openssl` command at test time (no key or certificate is
//! checked in, and no crate is needed for it).

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

/// A CA, a server certificate (`serverAuth`, SANs `IP:127.0.0.1` and `DNS:localhost`) and a
/// client certificate (`clientAuth`), all P-256 and valid for a day, as PEM files in a
/// temporary directory removed on drop.
pub struct TestPki {
    dir: TempDir,
}

impl TestPki {
    /// Generates the CA and both certificates.
    ///
    /// # Panics
    /// When `openssl` is not on `PATH` or fails (the panic carries its stderr).
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("amp-pki-")
            .tempdir()
            .expect("create a temp dir");
        let d = dir.path();
        let p = |name: &str| d.join(name).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            d,
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    &p("ca-key.pem"),
                    "-out",
                    &p("ca.pem"),
                    "-days",
                    "1",
                    "-subj",
                    "/CN=amp-test-ca",
                ],
            ]
            .concat(),
        );
        for (who, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "extendedKeyUsage=clientAuth\n"),
        ] {
            let ext_path = d.join(format!("{who}.ext"));
            std::fs::write(&ext_path, ext).expect("write the extensions file");
            openssl(
                d,
                &[
                    &["req"],
                    &ec[..],
                    &[
                        "-keyout",
                        &p(&format!("{who}-key.pem")),
                        "-out",
                        &p(&format!("{who}.csr")),
                        "-subj",
                        &format!("/CN=amp-test-{who}"),
                    ],
                ]
                .concat(),
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &p(&format!("{who}.csr")),
                    "-CA",
                    &p("ca.pem"),
                    "-CAkey",
                    &p("ca-key.pem"),
                    "-CAcreateserial",
                    "-days",
                    "1",
                    "-out",
                    &p(&format!("{who}-cert.pem")),
                    "-extfile",
                    &ext_path.display().to_string(),
                ],
            );
        }
        Self { dir }
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The server certificate (PEM).
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server-cert.pem")
    }

    /// The server's private key (PEM).
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server-key.pem")
    }

    /// The client certificate (PEM).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client-cert.pem")
    }

    /// The client's private key (PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client-key.pem")
    }

    /// A `tls { .. }` block for [`NatsServer::start_with`](crate::NatsServer::start_with):
    /// the server certificate, and with `verify` clients must present a certificate signed
    /// by the CA.
    pub fn server_block(&self, verify: bool) -> String {
        format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: {verify}\n}}\n",
            self.server_cert().display(),
            self.server_key().display(),
            self.ca().display(),
        )
    }
}

impl std::fmt::Debug for TestPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPki")
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("run openssl (needed for the TLS tests): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
