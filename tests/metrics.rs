//! `Election::metrics` against real ZooKeeper servers: the counters move
//! with what happens to the member (a lease lapse while the server is
//! frozen, a reconnect in the same session, a session loss).

mod common;

use std::time::Duration;

use common::{member_config as config, wait_for, ZkServer, SESSION};
use zk_master::{Config, Election};

#[test]
fn a_steady_master_renews_and_counts_one_transition() {
    common::init_logging();
    let server = ZkServer::start();
    let a = Election::join(config(&server, "/m")).expect("join");
    assert!(a.is_master());
    std::thread::sleep(SESSION);
    let m = a.metrics();
    assert!(m.is_master);
    assert_eq!(m.role_transitions, 1, "offline -> master: {m:?}");
    assert_eq!((m.reconnects, m.session_losses, m.lease_lapses), (0, 0, 0));
    assert_eq!(m.session_timeout, Some(SESSION));
    let age = m.since_last_renewal().expect("renewed");
    assert!(age < SESSION / 2, "renewals keep coming: {age:?}");
}

#[test]
fn a_frozen_server_lapses_the_lease_and_a_reconnect_is_counted() {
    common::init_logging();
    let server = ZkServer::start();
    let a = Election::join(config(&server, "/m")).expect("join");
    assert!(a.is_master());
    server.pause();
    wait_for(SESSION * 2, "the lease lapses", || !a.is_master());
    server.resume();
    wait_for(Duration::from_secs(30), "master again", || a.is_master());
    let m = a.metrics();
    assert_eq!(m.lease_lapses, 1, "{m:?}");
    assert!(
        m.role_transitions >= 3,
        "master, then not, then master: {m:?}"
    );
    assert!(
        m.reconnects + m.session_losses >= 1,
        "the cut connection came back, in the session or a new one: {m:?}"
    );
}

#[test]
fn a_session_lost_behind_a_partition_is_counted() {
    common::init_logging();
    let server = ZkServer::start();
    let proxy = common::proxy::Proxy::to_port(server.port());
    let a = Election::join(
        Config::new(proxy.connect_string())
            .group("/m")
            .session_timeout(SESSION),
    )
    .expect("join");
    assert!(a.is_master());
    proxy.set(common::proxy::Mode::Blackhole);
    // Longer than the session: the server expires it; the member learns so
    // when it reaches the server again.
    wait_for(SESSION * 2, "the lease lapses", || !a.is_master());
    std::thread::sleep(SESSION * 2);
    proxy.set(common::proxy::Mode::Pass);
    wait_for(Duration::from_secs(20), "master in a new session", || {
        a.is_master() && a.metrics().session_losses >= 1
    });
    let m = a.metrics();
    assert!(m.is_master && m.session_losses >= 1, "{m:?}");
    assert_eq!(
        m.lease_lapses, 1,
        "the lease ran out before the session was given up: {m:?}"
    );
    assert!(m.role_transitions >= 3, "{m:?}");
}
