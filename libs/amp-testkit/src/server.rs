//! [`NatsServer`] (one node) and [`NatsCluster`] (N routed nodes).

use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::binary::nats_server_binary;
use crate::process::{Node, free_port, node_spec};

/// How long a new cluster's nodes may take, together, to be healthy (a meta leader elected).
const CLUSTER_START_DEADLINE: Duration = Duration::from_secs(30);

/// One `nats-server -js` on a free loopback port with a temporary store directory. Killed on
/// drop; the directory is removed after.
pub struct NatsServer {
    // Field order matters: the node (process) is dropped before its directory.
    node: Node,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients and JetStream is enabled.
    ///
    /// # Panics
    /// When no `nats-server` is found (see [`nats_server_binary`]) or it is not healthy in
    /// time (the panic carries its log).
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// [`start`](Self::start) with `config` appended to the generated server config: an
    /// `authorization { users = [..] }` block, a `tls { .. }` block (see
    /// [`TestPki`](crate::TestPki)), or both. Health is checked on the monitoring port, so
    /// neither gets in the way of the wait.
    ///
    /// # Panics
    /// Like [`start`](Self::start), and when the server refuses the config.
    pub fn start_with(config: &str) -> Self {
        Self::start_with_jetstream("", config)
    }

    /// [`start_with`](Self::start_with), with `jetstream` inside the config's
    /// `jetstream { .. }` block: its limits, such as `max_file_store: 16MB` (the space
    /// JetStream may use, which an operator sets below the volume's size).
    ///
    /// # Panics
    /// Like [`start_with`](Self::start_with).
    pub fn start_with_jetstream(jetstream: &str, config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("amp-nats-")
            .tempdir()
            .expect("create a temp dir");
        // A free port can be taken by another test between our probe and the server's
        // bind: a start that exits early is retried on fresh ports.
        let mut attempt = 0;
        let node = loop {
            attempt += 1;
            let mut spec = node_spec(dir.path(), "n0", "?js-enabled-only=true");
            spec.jetstream = jetstream.to_owned();
            spec.write_config(Some(config));
            let mut node = Node::new(nats_server_binary(), spec);
            node.spawn();
            match node.try_wait_healthy() {
                Ok(()) => break node,
                Err(e) if attempt < 3 => {
                    tracing::warn!(error = %e, "nats-server did not start; retrying on other ports");
                }
                Err(e) => panic!("{e}"),
            }
        };
        tracing::debug!(url = %format!("nats://127.0.0.1:{}", node.spec.port), "nats-server started");
        Self { node, dir }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.node.spec.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.node.spec.port
    }

    /// Kills the server with SIGKILL (no graceful shutdown, no final fsync).
    pub fn kill(&mut self) {
        self.node.kill();
    }

    /// Whether the process is running (not killed).
    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// Rewrites the `jetstream { .. }` block's extra lines (keeping the rest of the config
    /// but any `config` given at start) and has the running server reload its config
    /// (SIGHUP): `max_file_store` changes take effect without a restart.
    pub fn reload_jetstream(&mut self, jetstream: &str) {
        self.node.spec.jetstream = jetstream.to_owned();
        self.node.spec.write_config(None);
        self.node.reload();
    }

    /// Starts the server again on the same port and store directory (killing it first if it
    /// still runs) and waits until it is healthy.
    ///
    /// # Panics
    /// Like [`start`](Self::start).
    pub fn restart(&mut self) {
        self.node.kill();
        self.node.spawn();
        self.node.wait_healthy();
    }

    /// The server's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        self.node.log()
    }

    /// The temporary directory holding the config, store and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("running", &self.is_running())
            .finish()
    }
}

/// A JetStream cluster of N `nats-server`s on loopback, routed to each other
/// (`cluster { name, listen, routes }`), each with its own `server_name` and store directory.
/// Every node is killed on drop.
pub struct NatsCluster {
    nodes: Vec<Node>,
    /// With [`NatsCluster::start_isolatable`]: every route connection of node 0 (the ones
    /// its peers dial, and the ones it dials) passes through one of these links.
    node0_links: Vec<crate::Link>,
    dir: TempDir,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until each is healthy, which for a cluster node means it
    /// has found the JetStream meta leader (so streams with `size` replicas can be created).
    ///
    /// # Panics
    /// When `size` is 0, no `nats-server` is found, or a node is not healthy in time (the panic
    /// carries its log).
    pub fn start(size: usize) -> Self {
        Self::start_with_links(size, false)
    }

    /// [`start`](Self::start), with every route connection of node 0 through a [`crate::Link`]
    /// (its peers reach it at a link, advertised as its cluster address; it reaches each peer
    /// through a link of its own), so [`isolate_node0`](Self::isolate_node0) cuts node 0 off
    /// from its peers while its clients still reach it: a partition between NATS nodes, not
    /// between a client and its node.
    ///
    /// # Panics
    /// Like [`start`](Self::start); `size` must be at least 2.
    pub fn start_isolatable(size: usize) -> Self {
        assert!(size > 1, "isolating a node needs peers");
        Self::start_with_links(size, true)
    }

    /// Cuts every route connection of node 0 (see [`start_isolatable`](Self::start_isolatable)).
    ///
    /// # Panics
    /// When the cluster was not started isolatable.
    pub fn isolate_node0(&self) {
        assert!(
            !self.node0_links.is_empty(),
            "start the cluster with start_isolatable"
        );
        for link in &self.node0_links {
            link.cut();
        }
    }

    /// Heals what [`isolate_node0`](Self::isolate_node0) cut.
    pub fn heal_node0(&self) {
        for link in &self.node0_links {
            link.heal();
        }
    }

    fn start_with_links(size: usize, isolatable: bool) -> Self {
        assert!(size > 0, "a cluster needs at least one node");
        let dir = tempfile::Builder::new()
            .prefix("amp-nats-cluster-")
            .tempdir()
            .expect("create a temp dir");
        let binary = nats_server_binary();
        // Rarely, a freshly formed cluster elects no JetStream meta leader in time on a loaded
        // machine (or a probed free port is taken meanwhile): then it is started again, on
        // fresh ports and stores, up to three times.
        let mut attempt = 0;
        let mut links: Vec<crate::Link>;
        let nodes = loop {
            attempt += 1;
            let attempt_dir = dir.path().join(format!("attempt-{attempt}"));
            std::fs::create_dir_all(&attempt_dir).expect("create the attempt's dir");
            let cluster_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
            let route = |port: u16| format!("nats-route://127.0.0.1:{port}");
            let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
            // Node 0's routes through links: the one its peers dial (advertised as its
            // cluster address, so gossip hands out the link too), one per peer it dials.
            links = if isolatable {
                cluster_ports
                    .iter()
                    .map(|p| crate::Link::start(at(*p)))
                    .collect()
            } else {
                Vec::new()
            };
            let mut nodes: Vec<Node> = cluster_ports
                .iter()
                .enumerate()
                .map(|(i, cluster_port)| {
                    let spec = node_spec(&attempt_dir, &format!("n{i}"), "");
                    let routes: Vec<String> = cluster_ports
                        .iter()
                        .enumerate()
                        .map(|(j, port)| match (isolatable, i, j) {
                            // links[0] fronts node 0; links[j] (j > 0) is node 0's way to j.
                            (true, 0, j) if j > 0 => route(links[j].addr().port()),
                            (true, _, 0) => route(links[0].addr().port()),
                            _ => route(*port),
                        })
                        .collect();
                    let advertise = if isolatable && i == 0 {
                        format!("\n  advertise: {}", links[0].addr())
                    } else {
                        String::new()
                    };
                    let block = format!(
                        "cluster {{\n  name: amp-test\n  listen: 127.0.0.1:{cluster_port}{advertise}\n  \
                         routes: [{}]\n}}",
                        routes.join(", ")
                    );
                    spec.write_config(Some(&block));
                    Node::new(binary.clone(), spec)
                })
                .collect();
            // All nodes must run before any can elect a meta leader.
            for node in &mut nodes {
                node.spawn();
            }
            let deadline = Instant::now() + CLUSTER_START_DEADLINE;
            let last = attempt >= 3;
            let failed = nodes
                .iter_mut()
                .find_map(|node| node.wait_healthy_until(deadline, last).err());
            match failed {
                None => break nodes,
                Some(e) => {
                    tracing::warn!(attempt, error = %e, "the NATS cluster did not form; starting it again");
                    for node in &mut nodes {
                        node.kill();
                    }
                }
            }
        };
        Self {
            nodes,
            node0_links: links,
            dir,
        }
    }

    /// The client URLs of every node, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("nats://127.0.0.1:{}", node.spec.port))
            .collect()
    }

    /// How many nodes the cluster has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Kills node `i` with SIGKILL.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again on its ports and store directory (killing it first if it still
    /// runs) and waits until it is healthy (back in the cluster).
    ///
    /// # Panics
    /// When `i` is out of range or the node is not healthy in time.
    pub fn restart(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.kill();
        // Let the peers notice the route is gone before it comes back.
        thread::sleep(Duration::from_millis(50));
        node.spawn();
        node.wait_healthy();
    }

    /// Node `i`'s log so far.
    ///
    /// # Panics
    /// When `i` is out of range.
    pub fn log(&self, i: usize) -> String {
        self.nodes[i].log()
    }

    /// The temporary directory holding every node's config, store and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl std::fmt::Debug for NatsCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsCluster")
            .field("urls", &self.urls())
            .finish()
    }
}

/// The services that log in to NATS, each as its own user of `deploy/nats/auth.conf`.
pub const NATS_SERVICES: [&str; 4] = ["ingest", "router", "delivery", "federation"];

/// The server config of `deploy/nats/auth.conf` (for [`NatsServer::start_with`]) with each
/// service's password, `password(service)`, defined before it (in production they come from
/// nats-server's environment).
///
/// # Panics
/// When the file cannot be read.
pub fn nats_auth_config(password: impl Fn(&str) -> String) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/auth.conf");
    let auth =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut config = String::new();
    for s in NATS_SERVICES {
        config.push_str(&format!(
            "AMP_NATS_{}_PASSWORD: \"{}\"\n",
            s.to_uppercase(),
            password(s)
        ));
    }
    config + &auth
}
