//! [`S3Server`]: a real S3-compatible server for the S3 blob backend's tests: `s3s-fs` (the
//! file-system server of the `s3s` project, installed with cargo), on a free loopback port with a
//! temporary root directory, SigV4 credentials required, killed on drop.
//!
//! The binary is `$S3S_FS_BIN`, else `s3s-fs` on `PATH`, else
//! `${XDG_CACHE_HOME:-~/.cache}/amp-tools/s3s-fs/bin/s3s-fs`, where `deploy/test.sh` installs
//! it (`cargo install s3s-fs --locked`, once per machine). Without one, [`S3Server::start`]
//! says `S3 TEST SKIPPED` loudly and returns `None`; with `AMP_REQUIRE_S3=1` (CI) it panics.

use std::env;
use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::free_port;

/// The access key id the server requires.
pub const S3_ACCESS_KEY: &str = "amptestaccesskey";
/// The secret access key the server requires.
pub const S3_SECRET_KEY: &str = "amptestsecretkey0123456789abcdef";

/// A running `s3s-fs`.
pub struct S3Server {
    child: Child,
    port: u16,
    dir: TempDir,
}

fn binary() -> Option<PathBuf> {
    if let Some(p) = env::var_os("S3S_FS_BIN").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(path) = env::var_os("PATH")
        && let Some(found) = env::split_paths(&path)
            .map(|d| d.join("s3s-fs"))
            .find(|p| p.is_file())
    {
        return Some(found);
    }
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let p = cache.join("amp-tools/s3s-fs/bin/s3s-fs");
    p.is_file().then_some(p)
}

impl S3Server {
    /// Starts a server holding the (empty) buckets `buckets` and waits until it accepts
    /// connections. `None` (and a loud line on stderr) when no `s3s-fs` is installed.
    ///
    /// # Panics
    /// With `AMP_REQUIRE_S3=1` when no `s3s-fs` is installed; when it does not start in time.
    pub fn start(buckets: &[&str]) -> Option<Self> {
        let Some(bin) = binary() else {
            let why = "no s3s-fs ($S3S_FS_BIN, PATH, ~/.cache/amp-tools/s3s-fs/bin): install it \
                       with `cargo install s3s-fs --version 0.14.1 --locked --features binary \
                       --root ~/.cache/amp-tools/s3s-fs` (deploy/test.sh does)";
            assert!(
                env::var("AMP_REQUIRE_S3").as_deref() != Ok("1"),
                "AMP_REQUIRE_S3=1 and the S3 test cannot run: {why}"
            );
            // Straight to the stderr handle: the harness captures eprintln! of passing tests.
            let line =
                format!("\n!!!! S3 TEST SKIPPED: {why}; AMP_REQUIRE_S3=1 makes this a failure.\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("amp-s3-")
            .tempdir()
            .expect("create a temp dir");
        let root = dir.path().join("root");
        for b in buckets {
            // s3s-fs keeps a bucket as a directory of its root.
            std::fs::create_dir_all(root.join(b)).expect("create the bucket directory");
        }
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("s3s-fs.log")).expect("log file");
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut server = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("s3s-fs exited ({status}): {}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen in time: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the server keeps bucket `bucket`'s objects (to look at what was stored).
    pub fn bucket_dir(&self, bucket: &str) -> PathBuf {
        self.dir.path().join("root").join(bucket)
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("s3s-fs.log")).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
