//! A TCP link that can be cut: a forwarder on a loopback port in front of one upstream
//! address, for network-partition tests without network namespaces or root.
//!
//! [`Link::cut`] behaves like a network that silently drops packets, not like a refused
//! connection: open connections stay open and nothing more is forwarded either way (what
//! was sent waits in the kernel's buffers, unacknowledged by the other side, as it would on
//! a dead route); a new connection is accepted but never reaches the upstream until
//! [`Link::heal`]. Healing resumes forwarding on the connections that are still open.
//!
//! Plain threads, no runtime: usable from any test. Everything stops on drop.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// How often a stalled forwarder looks at the link's state again.
const POLL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    cut: AtomicBool,
    closed: AtomicBool,
    /// Every socket of every connection, to shut them down on drop.
    sockets: parking_lot::Mutex<Vec<TcpStream>>,
}

/// A forwarder to one upstream address that can be cut and healed.
pub struct Link {
    addr: SocketAddr,
    state: Arc<State>,
}

impl Link {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a link port");
        let addr = listener.local_addr().expect("link address");
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept_state.closed.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let state = Arc::clone(&accept_state);
                thread::spawn(move || connect(state, client, upstream));
            }
        });
        Self { addr, state }
    }

    /// The loopback address clients connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://127.0.0.1:<port>`, for a NATS upstream.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops forwarding, both ways, on every connection (and holds new ones).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.closed.store(true, Ordering::SeqCst);
        for socket in self.state.sockets.lock().drain(..) {
            let _ = socket.shutdown(Shutdown::Both);
        }
        // Wakes the accept loop so it sees `closed`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Connects `client` to `upstream` once the link is not cut, then forwards both ways.
fn connect(state: Arc<State>, client: TcpStream, upstream: SocketAddr) {
    while state.cut.load(Ordering::SeqCst) {
        if state.closed.load(Ordering::SeqCst) {
            return;
        }
        thread::sleep(POLL);
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut sockets = state.sockets.lock();
        if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
            sockets.push(c);
            sockets.push(s);
        }
    }
    let back = Arc::clone(&state);
    thread::spawn(move || pump(&back, server2, client2));
    pump(&state, client, server);
}

/// Copies `from` to `to` while the link is up; stalls (reads nothing) while it is cut.
fn pump(state: &State, mut from: TcpStream, mut to: TcpStream) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if state.closed.load(Ordering::SeqCst) {
            break;
        }
        if state.cut.load(Ordering::SeqCst) {
            thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                // A read already under way when the link was cut: what it got waits for the
                // heal like everything else, so a cut is never late by one read.
                while state.cut.load(Ordering::SeqCst) && !state.closed.load(Ordering::SeqCst) {
                    thread::sleep(POLL);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_link_forwards_nothing_until_healed() {
        let upstream = TcpListener::bind("127.0.0.1:0").expect("bind");
        let up_addr = upstream.local_addr().expect("addr");
        // An echo server.
        thread::spawn(move || {
            for s in upstream.incoming() {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let link = Link::start(up_addr);
        let mut c = TcpStream::connect(link.addr()).expect("connect");
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 5];
        c.write_all(b"hello").expect("write");
        c.read_exact(&mut buf).expect("echo through the link");
        assert_eq!(&buf, b"hello");

        link.cut();
        assert!(link.is_cut());
        c.write_all(b"again").expect("write while cut");
        let err = c
            .read_exact(&mut buf)
            .expect_err("nothing comes back while cut");
        assert!(
            matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{err}"
        );

        link.heal();
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.read_exact(&mut buf)
            .expect("what waited arrives after heal");
        assert_eq!(&buf, b"again");
    }
}
