//! nginx in front of a provider, configured as a hosted deployment runs it: `/v1/ws` and
//! `/api/v1/ws` go to delivery with the WebSocket upgrade headers, everything else round
//! robin to the ingest replicas, `X-Forwarded-For` set, bodies up to 1 MiB passed on (so the
//! provider, not the proxy, answers an oversize body), and up to 26 MiB, unbuffered, on the
//! attachment upload URL and the direct upload endpoint. Every answer carries
//! `X-Amp-Upstream: <ip:port>`, the replica that served it, so a test can prove that a read
//! crossed replicas.
//!
//! nginx runs unprivileged-style from a temp dir (`-p <dir>`, error log, pid file and temp
//! paths there, nothing under `/etc` or `/var`) as one process (`master_process off`): with
//! no master, a SIGKILL on drop cannot orphan workers still holding the port, and no worker
//! drops to `nobody` and loses access to the temp dir.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long nginx may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The nginx to run: `nginx` on `PATH`, else `/usr/sbin/nginx`; `None` when neither exists.
pub fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let sbin = PathBuf::from("/usr/sbin/nginx");
        sbin.is_file().then_some(sbin)
    })
}

/// [`nginx_binary`], or the decision to skip: with `AMP_REQUIRE_NATS=1` (CI) a missing nginx
/// is a failure; without it the test prints a loud line and should return.
///
/// # Panics
/// When nginx is missing and `AMP_REQUIRE_NATS=1`.
pub fn nginx_or_skip(test: &str) -> Option<PathBuf> {
    if let Some(nginx) = nginx_binary() {
        return Some(nginx);
    }
    let required = std::env::var("AMP_REQUIRE_NATS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "nginx not found on PATH or at /usr/sbin/nginx, and AMP_REQUIRE_NATS=1 is set: \
         install it (`apt-get install nginx-light`; deploy/test.sh does so as root)"
    );
    eprintln!(
        "PARITY TEST SKIPPED: no nginx ({test}); install it with `apt-get install nginx-light` \
         (CI sets AMP_REQUIRE_NATS=1, which makes this a failure)"
    );
    None
}

/// A running nginx on a loopback port; killed on drop.
pub struct Proxy {
    port: u16,
    child: Child,
    // Last: the process is killed before its directory goes.
    dir: TempDir,
}

impl Proxy {
    /// Starts `nginx` on `127.0.0.1:port` in front of `ingest` (base URLs, round robin) and
    /// `delivery` (WebSockets; when `None`, the first ingest, which is `ampd` serving both),
    /// and waits until `/v1/health` answers 200 through it.
    ///
    /// # Panics
    /// When a URL is not `http://ip:port`, or nginx does not start in time (the panic carries
    /// its error log).
    pub fn start(nginx: &Path, port: u16, ingest: &[String], delivery: Option<&str>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("amp-nginx-")
            .tempdir()
            .expect("temp dir");
        let upstream = |urls: &[&str]| -> String {
            urls.iter()
                .map(|u| format!("        server {};\n", host_port(u)))
                .collect()
        };
        let ingest_refs: Vec<&str> = ingest.iter().map(String::as_str).collect();
        let delivery = delivery.unwrap_or(ingest_refs[0]);
        let d = dir.path().display();
        // Forwarding headers a hosted deployment sets; `proxy_next_upstream off` so that a
        // refused request is answered as the replica answered it, never silently retried on
        // the other one (a retried POST /v1/route would hide the duplicate rule).
        let forwarded = "proxy_http_version 1.1;\n            \
             proxy_set_header Host $http_host;\n            \
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n            \
             proxy_set_header X-Forwarded-Proto $scheme;\n            \
             proxy_set_header X-Real-IP $remote_addr;\n            \
             proxy_next_upstream off;";
        let websocket = format!(
            "proxy_pass http://delivery;\n            {forwarded}\n            \
             proxy_set_header Upgrade $http_upgrade;\n            \
             proxy_set_header Connection $connection_upgrade;\n            \
             proxy_read_timeout 3600s;\n            proxy_send_timeout 3600s;"
        );
        let config = format!(
            "master_process off;\n\
             daemon off;\n\
             error_log {d}/error.log warn;\n\
             pid {d}/nginx.pid;\n\
             events {{\n    worker_connections 1024;\n}}\n\
             http {{\n    \
                 access_log off;\n    \
                 client_body_temp_path {d}/client_body;\n    \
                 proxy_temp_path {d}/proxy;\n    \
                 fastcgi_temp_path {d}/fastcgi;\n    \
                 uwsgi_temp_path {d}/uwsgi;\n    \
                 scgi_temp_path {d}/scgi;\n    \
                 client_max_body_size 1m;\n    \
                 client_body_buffer_size 1m;\n    \
                 map $http_upgrade $connection_upgrade {{\n        default upgrade;\n        '' close;\n    }}\n    \
                 upstream ingest {{\n{ingest_servers}        keepalive 32;\n    }}\n    \
                 upstream delivery {{\n{delivery_servers}    }}\n    \
                 server {{\n        \
                     listen 127.0.0.1:{port};\n        \
                     add_header X-Amp-Upstream $upstream_addr always;\n        \
                     location = /v1/ws {{\n            {websocket}\n        }}\n        \
                     location = /api/v1/ws {{\n            {websocket}\n        }}\n        \
                     location ~ ^/(v1/|api/v1/)?attachments/([^/]+/upload|upload/direct)$ {{\n            \
                         client_max_body_size 26m;\n            \
                         proxy_request_buffering off;\n            \
                         proxy_pass http://ingest;\n            \
                         {forwarded}\n            \
                         proxy_set_header Connection \"\";\n        \
                     }}\n        \
                     location / {{\n            \
                         proxy_pass http://ingest;\n            \
                         {forwarded}\n            \
                         proxy_set_header Connection \"\";\n            \
                         proxy_read_timeout 120s;\n        \
                     }}\n    \
                 }}\n\
             }}\n",
            ingest_servers = upstream(&ingest_refs),
            delivery_servers = upstream(&[delivery]),
        );
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, config).expect("write nginx.conf");
        let log = std::fs::File::create(dir.path().join("stderr.log")).expect("nginx stderr");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", nginx.display()));
        let mut proxy = Self { port, child, dir };
        proxy.wait_ready();
        proxy
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("nginx exited with {status} at start:\n{}", self.log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening on {addr} after {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// nginx's error log and stderr so far.
    pub fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name));
        format!(
            "{}{}",
            read("stderr.log").unwrap_or_default(),
            read("error.log").unwrap_or_default()
        )
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // One process (no master, no workers): SIGKILL leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ip:port` of `http://ip:port`.
fn host_port(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{url} is not http://ip:port"));
    rest.trim_end_matches('/')
}
