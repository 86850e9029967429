//! The test kit itself: a server starts and stops, keeps JetStream data across a kill -9, and a
//! 3-node cluster forms.

use std::time::Duration;

use amp_testkit::cql::{CqlNode, cql_target};
use amp_testkit::{NatsCluster, NatsServer};
use async_nats::jetstream::{self, stream};

/// One test at a time: a test that kills a server frees its port, and a server another
/// test starts meanwhile may take it (a CQL node's restart once found a nats-server on
/// its port).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn connect(url: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .expect("connect");
    jetstream::new(client)
}

#[tokio::test]
async fn server_starts_and_stops() {
    let _serial = SERIAL.lock().await;
    let mut server = NatsServer::start();
    assert!(server.is_running());
    let client = async_nats::connect(server.url()).await.expect("connect");
    client.flush().await.expect("flush");
    server.kill();
    assert!(!server.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err(),
        "the port still accepts after kill"
    );
}

#[tokio::test]
async fn restart_keeps_jetstream_data() {
    let _serial = SERIAL.lock().await;
    let mut server = NatsServer::start();
    let js = connect(&server.url()).await;
    js.create_stream(stream::Config {
        name: "KIT".into(),
        subjects: vec!["kit.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
    js.publish("kit.a", "persisted".into())
        .await
        .expect("publish")
        .await
        .expect("ack");

    server.kill();
    server.restart();

    let js = connect(&server.url()).await;
    let mut stream = js.get_stream("KIT").await.expect("stream survives");
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
    let message = stream.get_raw_message(1).await.expect("message survives");
    assert_eq!(message.payload, "persisted");
}

#[tokio::test]
async fn three_node_cluster_forms() {
    let _serial = SERIAL.lock().await;
    let mut cluster = NatsCluster::start(3);
    assert_eq!(cluster.urls().len(), 3);
    let js = connect(&cluster.urls()[1]).await;
    let config = stream::Config {
        name: "KIT_R3".into(),
        subjects: vec!["kitr3.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    };
    // The meta leader may still be settling right after start.
    let mut created = None;
    for _ in 0..50 {
        match js.create_stream(config.clone()).await {
            Ok(stream) => {
                created = Some(stream);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let mut stream = created.expect("a replicas-3 stream can be created");
    let info = stream.info().await.expect("info");
    assert_eq!(info.config.num_replicas, 3);
    let cluster_info = info.cluster.as_ref().expect("cluster info");
    assert_eq!(cluster_info.replicas.len() + 1, 3, "{cluster_info:?}");

    // A published message survives the loss of one node.
    js.publish("kitr3.a", "r3".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    cluster.kill(0);
    let js = connect(&cluster.urls()[2]).await;
    let mut ok = false;
    for _ in 0..50 {
        if let Ok(mut stream) = js.get_stream("KIT_R3").await
            && let Ok(info) = stream.info().await
            && info.state.messages == 1
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ok, "the stream is not available after one node died");
    cluster.restart(0);
}

/// Sends a CQL `OPTIONS` request (protocol v4, stream 1) and expects `SUPPORTED`: the node
/// speaks CQL, checked without a driver.
fn assert_speaks_cql(contact_point: &str) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(contact_point).expect("connect to the CQL port");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    // version 4 request, flags 0, stream 1, opcode OPTIONS (0x05), body length 0
    stream
        .write_all(&[0x04, 0x00, 0x00, 0x01, 0x05, 0, 0, 0, 0])
        .expect("send OPTIONS");
    let mut header = [0_u8; 9];
    stream
        .read_exact(&mut header)
        .expect("read the response header");
    assert_eq!(header[0], 0x84, "a v4 response: {header:?}");
    assert_eq!(header[4], 0x06, "opcode SUPPORTED: {header:?}");
}

#[test]
fn cql_node_starts_is_killed_and_restarts() {
    let _serial = SERIAL.blocking_lock();
    let Some(mut node) = CqlNode::start_or_skip() else {
        return;
    };
    assert!(node.is_running());
    assert_speaks_cql(&node.contact_point());

    node.kill();
    assert!(!node.is_running());
    assert!(
        std::net::TcpStream::connect(node.contact_point()).is_err(),
        "the CQL port still accepts after kill"
    );

    node.restart();
    assert!(node.is_running());
    assert_speaks_cql(&node.contact_point());
    assert_eq!(
        node.log()
            .matches("Starting listening for CQL clients")
            .count(),
        2,
        "one start and one restart in the same log"
    );
}

#[test]
fn cql_target_is_one_node_for_the_process() {
    let _serial = SERIAL.blocking_lock();
    let Some(target) = cql_target() else {
        return;
    };
    assert_eq!(cql_target().as_deref(), Some(target.as_str()));
    assert_speaks_cql(&target);
}
