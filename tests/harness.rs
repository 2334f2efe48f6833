//! Checks of the test harness itself (tests/common): real ZooKeeper servers start, serve, restart
//! with their data, and an ensemble survives the loss of its leader.

mod common;

use std::time::{Duration, Instant};

use common::{raw_client, wait_for, Ensemble, ZkServer};
use zookeeper::{Acl, CreateMode, ZooKeeper};

fn create(zk: &ZooKeeper, path: &str, data: &[u8]) {
    zk.create(
        path,
        data.to_vec(),
        Acl::open_unsafe().clone(),
        CreateMode::Persistent,
    )
    .unwrap_or_else(|e| panic!("create {path}: {e:?}"));
}

#[test]
fn standalone_server_serves_a_raw_client() {
    common::init_logging();
    let started = Instant::now();
    let server = ZkServer::start();
    eprintln!("standalone server ready in {:?}", started.elapsed());
    assert!(server.is_running());
    assert_eq!(
        server.connect_string(),
        format!("127.0.0.1:{}", server.port())
    );
    assert_eq!(
        common::server_mode(server.port()).as_deref(),
        Some("standalone")
    );

    let zk = raw_client(&server.connect_string());
    create(&zk, "/harness", b"");
    create(&zk, "/harness/a", b"1");
    create(&zk, "/harness/b", b"2");
    let mut children = zk.get_children("/harness", false).unwrap();
    children.sort();
    assert_eq!(children, ["a", "b"]);
}

#[test]
fn restart_keeps_data_and_drop_cleans_up() {
    common::init_logging();
    let mut server = ZkServer::builder()
        .max_session_timeout(Duration::from_secs(2))
        .start();
    let dir = server.dir().to_path_buf();
    let port = server.port();
    {
        let zk = raw_client(&server.connect_string());
        create(&zk, "/kept", b"data");
    }

    server.stop();
    assert!(!server.is_running());
    assert!(common::server_mode(port).is_none());

    let started = Instant::now();
    server.restart();
    eprintln!("standalone restart ready in {:?}", started.elapsed());
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    {
        let zk = raw_client(&server.connect_string());
        let (data, _stat) = zk.get_data("/kept", false).unwrap();
        assert_eq!(data, b"data");
    }

    // A paused server answers nothing, a resumed one serves again.
    server.pause();
    assert!(server.is_running());
    assert!(common::server_mode(port).is_none());
    server.resume();
    wait_for(Duration::from_secs(5), "resumed server to serve", || {
        common::server_mode(port).is_some()
    });

    drop(server);
    assert!(!dir.exists(), "{} not removed", dir.display());
}

#[test]
fn ensemble_survives_losing_its_leader() {
    common::init_logging();
    let started = Instant::now();
    let mut ensemble = Ensemble::start(3);
    eprintln!("3-server ensemble ready in {:?}", started.elapsed());
    let leader = ensemble.leader().expect("a leader after start");

    {
        let zk = raw_client(&ensemble.connect_string());
        create(&zk, "/ensemble", b"before");
    }

    ensemble.kill(leader);
    assert!(!ensemble.is_running(leader));
    let started = Instant::now();
    ensemble.wait_quorum();
    eprintln!("new leader elected in {:?}", started.elapsed());
    let new_leader = ensemble.leader().expect("a leader after the kill");
    assert_ne!(new_leader, leader);

    {
        // The full connect string still works, whichever server is gone.
        let zk = raw_client(&ensemble.connect_string());
        let (data, _stat) = zk.get_data("/ensemble", false).unwrap();
        assert_eq!(data, b"before");
        create(&zk, "/ensemble/after", b"");
    }

    let started = Instant::now();
    ensemble.restart(leader);
    eprintln!("old leader rejoined in {:?}", started.elapsed());
    ensemble.wait_quorum();
    {
        let zk = raw_client(&ensemble.server_connect_string(leader));
        wait_for(
            Duration::from_secs(5),
            "rejoined server to see /ensemble/after",
            || zk.exists("/ensemble/after", false).unwrap().is_some(),
        );
    }
}
