//! The election against real ZooKeeper servers: roles, hand-over, ordering,
//! bad input and callbacks. How it rides out connection faults: tests/connection.rs.

mod common;

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    children, join, member_config as config, raw_client, wait_for, ZkServer, SESSION, SOON,
};
use zk_master::{Config, Election, Error, Role, RoleChange};
use zookeeper::{Acl, CreateMode};

fn names(election: &Election) -> Vec<String> {
    election
        .masters()
        .iter()
        .map(|m| m.name().to_owned())
        .collect()
}

#[test]
fn the_first_member_is_the_only_master() {
    common::init_logging();
    let server = ZkServer::start();
    let members: Vec<Election> = (0..3)
        .map(|_| join(config(&server, "/Roles/workers")))
        .collect();
    wait_for(SOON, "one master", || {
        members.iter().filter(|m| m.is_master()).count() == 1
    });
    assert!(members[0].is_master(), "the lowest sequence number leads");
    assert_eq!(members[0].role(), Role::Master);
    let first = members[0].member_name().expect("a member name");
    assert!(first.starts_with("worker"), "{first}");
    for slave in &members[1..] {
        wait_for(SOON, "the slaves see the master", || {
            names(slave) == [first.clone()]
        });
        assert_eq!(slave.role(), Role::Slave);
        assert_eq!(slave.fencing_token(), None);
    }
    let all = members[2].members();
    assert_eq!(all.len(), 3);
    assert!(
        all.iter().all(|m| m.data() == b"1"),
        "default data is \"1\""
    );
    assert!(members[0].fencing_token().is_some());
    assert_eq!(members[0].session_timeout(), Some(SESSION));
}

#[test]
fn five_members_with_two_masters() {
    common::init_logging();
    let server = ZkServer::start();
    let mut members: Vec<Election> = (0..5)
        .map(|_| join(config(&server, "/five").masters(2)))
        .collect();
    let masters = |members: &[Election]| members.iter().filter(|m| m.is_master()).count();
    wait_for(SOON, "two masters", || masters(&members) == 2);
    assert!(members[0].is_master() && members[1].is_master());
    members.remove(0).resign();
    wait_for(SOON, "the third member takes the free place", || {
        members[1].is_master() && masters(&members) == 2
    });
    assert_eq!(names(&members[3]).len(), 2);
}

#[test]
fn resign_hands_over_without_waiting_for_the_session_to_expire() {
    common::init_logging();
    let server = ZkServer::start();
    let slow = |c: Config| c.session_timeout(Duration::from_secs(4));
    let a = join(slow(config(&server, "/handover")));
    let b = join(slow(config(&server, "/handover")));
    let c = join(slow(config(&server, "/handover")));
    assert!(a.wait_until_master(SOON));
    let started = Instant::now();
    a.resign();
    assert!(b.wait_until_master(SOON));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: it waited for expiry"
    );
    assert!(!a.is_master());
    assert_eq!(a.role(), Role::Offline);
    a.resign(); // again: nothing happens
    assert_eq!(a.requeue(), Err(Error::Resigned));

    let zk = raw_client(&server.connect_string());
    assert_eq!(children(&zk, "/handover").len(), 2, "a's node is gone");
    drop(b); // dropping resigns too
    assert!(c.wait_until_master(Duration::from_secs(2)));
    assert_eq!(children(&zk, "/handover").len(), 1);
}

#[test]
fn requeue_steps_down_to_the_back_of_the_queue() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(config(&server, "/requeue"));
    let b = join(config(&server, "/requeue"));
    assert!(a.wait_until_master(SOON));
    let first_token = a.fencing_token().expect("master has a token");
    let old_name = a.member_name().unwrap();
    a.requeue().expect("requeue");
    assert!(b.wait_until_master(SOON));
    wait_for(SOON, "a is a slave", || a.role() == Role::Slave);
    let new_name = a.member_name().unwrap();
    assert!(
        new_name > old_name,
        "{new_name} should sort after {old_name}"
    );
    let second_token = b.fencing_token().expect("new master has a token");
    assert!(second_token > first_token, "fencing tokens grow");
}

#[test]
fn members_of_other_clients_order_by_sequence_number() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = raw_client(&server.connect_string());
    let create = |path: &str, mode| {
        zk.create(path, b"x".to_vec(), Acl::open_unsafe().clone(), mode)
            .expect("create")
    };
    create("/mixed", CreateMode::Persistent);
    create("/mixed/config", CreateMode::Persistent); // not a member: no sequence suffix
    let lock = create("/mixed/f9d0__lock__", CreateMode::EphemeralSequential);
    let ours = join(config(&server, "/mixed"));
    create("/mixed/aaa", CreateMode::EphemeralSequential); // sorts first by name, last by number
    wait_for(SOON, "three members seen", || ours.members().len() == 3);
    assert!(!ours.is_master());
    assert_eq!(
        names(&ours),
        [lock.trim_start_matches("/mixed/").to_owned()]
    );
    zk.delete(&lock, None).expect("delete");
    assert!(ours.wait_until_master(SOON), "ours is next by sequence");
}

#[test]
fn a_killed_member_is_replaced_once_its_session_expires() {
    common::init_logging();
    let server = ZkServer::start();
    let mut worker = common::Worker::spawn(&server.connect_string(), "/killed", 1000);
    worker.expect("I've become master!");
    let b = join(config(&server, "/killed"));
    assert!(!b.is_master());
    let killed = Instant::now();
    worker.kill();
    assert!(
        b.wait_until_master(SOON),
        "the successor takes over after expiry"
    );
    eprintln!(
        "takeover after SIGKILL: {:?} (session 1 s)",
        killed.elapsed()
    );
}

#[test]
fn bad_configuration_is_refused_before_anything_is_sent() {
    common::init_logging();
    let server = ZkServer::start();
    let bad = [
        ("masters", config(&server, "/bad/a").masters(0)),
        ("group", config(&server, "bad/a")),
        ("prefix", config(&server, "/bad/a").prefix("a/b")),
        (
            "session_timeout",
            config(&server, "/bad/a").session_timeout(Duration::ZERO),
        ),
        (
            "connect",
            Config::new(format!("{}/", server.connect_string())).group("/bad/a"),
        ),
        (
            "data",
            config(&server, "/bad/a").data(vec![0; zk_master::MAX_DATA_LEN + 1]),
        ),
    ];
    for (field, config) in bad {
        match Election::join(config) {
            Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: expected InvalidConfig, got {other:?}"),
        }
    }
    let zk = raw_client(&server.connect_string());
    assert!(
        zk.exists("/bad", false).expect("exists").is_none(),
        "nothing was created"
    );
}

#[test]
fn no_server_means_an_error_within_the_connect_timeout() {
    common::init_logging();
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A server that accepts connections but never answers: the crate alone would hang forever.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for connect in [
        format!("127.0.0.1:{closed_port}"),
        format!("127.0.0.1:{silent_port}"),
        format!("127.0.0.1:{closed_port},127.0.0.1:{silent_port}"),
    ] {
        let started = Instant::now();
        let result = Election::join(
            Config::new(connect.clone()).connect_timeout(Duration::from_millis(1500)),
        );
        let took = started.elapsed();
        assert!(
            matches!(result, Err(Error::Unreachable { .. })),
            "{connect}: {result:?}"
        );
        assert!(
            took < Duration::from_millis(3500),
            "{connect}: gave up after {took:?}"
        );
    }
}

#[test]
fn callbacks_run_in_order_off_the_lock_and_survive_panics() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(config(&server, "/callbacks"));
    let b = Arc::new(join(config(&server, "/callbacks")));
    assert!(a.wait_until_master(SOON));
    let seen: Arc<Mutex<Vec<(Role, Role, usize)>>> = Arc::default();
    b.on_change(|_| panic!("a callback that panics"));
    let (log, weak) = (seen.clone(), Arc::downgrade(&b));
    b.on_change(move |change: &RoleChange| {
        // Re-entrant calls: each would deadlock if the library held its lock here.
        let b = weak.upgrade().expect("b is alive");
        let _ = (
            b.role(),
            b.is_master(),
            b.members(),
            b.member_name(),
            b.fencing_token(),
        );
        // Changes of the masters alone (old == new) are told too; this test follows roles.
        if change.old != change.new {
            log.lock()
                .unwrap()
                .push((change.old, change.new, change.masters.len()));
        }
    });

    a.resign();
    assert!(b.wait_until_master(SOON));
    let c = join(config(&server, "/callbacks"));
    b.requeue().expect("requeue");
    assert!(c.wait_until_master(SOON));
    wait_for(SOON, "four changes", || seen.lock().unwrap().len() >= 4);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            // Told at registration: the role b held then.
            (Role::Offline, Role::Slave, 1),
            (Role::Slave, Role::Master, 1),
            (Role::Master, Role::Offline, 1),
            (Role::Offline, Role::Slave, 1),
        ]
    );
}

#[test]
fn a_subscription_sees_what_callbacks_see_and_ends_with_the_election() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(config(&server, "/subscribe"));
    assert!(a.wait_until_master(SOON));
    let b = join(config(&server, "/subscribe"));
    let changes = b.subscribe();
    let (heard_tx, heard) = std::sync::mpsc::channel();
    let id = b.on_change(move |change| {
        let _ = heard_tx.send((change.new, change.members.len()));
    });
    // Both are first told the state at registration.
    let now = changes
        .recv_timeout(SOON)
        .expect("the state at registration");
    assert_eq!((now.old, now.new), (Role::Offline, Role::Slave));
    assert_eq!(
        heard.recv_timeout(SOON).map(|(role, _)| role),
        Ok(Role::Slave)
    );
    a.resign();
    assert!(b.wait_until_master(SOON));
    let change = changes
        .iter()
        .find(|c| c.new == Role::Master)
        .expect("the promotion");
    assert_eq!((change.old, change.new), (Role::Slave, Role::Master));
    assert_eq!(change.masters.len(), 1);
    assert_eq!(
        change.members, change.masters,
        "a was the only other member"
    );
    let promoted = heard.iter().find(|(role, _)| *role == Role::Master);
    assert_eq!(promoted, Some((Role::Master, 1)));
    b.remove_callback(id);
    b.resign();
    let last: Vec<RoleChange> = changes.iter().collect();
    assert_eq!(last.last().map(|c| c.new), Some(Role::Offline), "{last:?}");
    assert!(heard.recv_timeout(SOON).is_err(), "removed, then dropped");
}

#[test]
fn the_example_worker_logs_like_the_original_and_exits_cleanly() {
    common::init_logging();
    let server = ZkServer::start();
    let mut first = common::Worker::spawn(&server.connect_string(), "/Roles/workers", 10_000);
    first.expect("register ok! I'm worker0000000000");
    first.expect("I've become master!");
    let mut second = common::Worker::spawn(&server.connect_string(), "/Roles/workers", 10_000);
    second.expect("register ok! I'm worker0000000001");
    second.expect("[worker0000000000] is masters, I'm slave");
    let stopped = Instant::now();
    first.terminate();
    first.expect("resigned; my node is deleted");
    assert_eq!(first.wait_exit(), Some(0));
    second.expect("I've become master!");
    eprintln!("takeover after SIGTERM: {:?}", stopped.elapsed());
    second.interrupt();
    assert_eq!(second.wait_exit(), Some(0));
    let zk = raw_client(&server.connect_string());
    assert!(
        children(&zk, "/Roles/workers").is_empty(),
        "no node left behind"
    );
}

/// Herd-free: each member watches only the members just ahead of it (the server's data watches
/// are its own node's deletion watch plus two per member ahead, its node and its claim,
/// `masters` members at most), and the
/// election still follows every leave: a master's, a member's from the middle of the queue, for
/// one master and for two.
#[test]
fn herd_free_members_watch_only_ahead_and_still_take_over_in_order() {
    common::init_logging();
    let server = ZkServer::start();
    for masters in [1, 2] {
        let group = format!("/herd{masters}");
        let mut members: Vec<Election> = (0..6)
            .map(|_| join(config(&server, &group).masters(masters).herd_free(true)))
            .collect();
        let is_master = |members: &[Election]| -> Vec<bool> {
            members.iter().map(Election::is_master).collect()
        };
        let first = |members: &[Election], n: usize| -> Vec<bool> {
            (0..members.len()).map(|i| i < n).collect()
        };
        wait_for(SOON, "the first members are masters", || {
            is_master(&members) == first(&members, masters)
        });
        // Data watches only (`wchs` does not count the watches on children): every member's
        // own node, and each slave's `masters` members ahead and their claims (the previous
        // round's members are gone, and their watches with their sessions).
        let expected = 6 + (masters..6).map(|_| 2 * masters).sum::<usize>();
        let mut summary = String::new();
        let counted = Instant::now();
        while !summary.contains(&format!("Total watches:{expected}\n")) && counted.elapsed() < SOON
        {
            thread::sleep(Duration::from_millis(20));
            summary = common::four_letter_word(server.port(), "wchs").unwrap_or_default();
        }
        assert!(
            summary.contains(&format!("Total watches:{expected}\n")),
            "{masters} master(s): not {expected} watches: {summary}"
        );

        // A member from the middle of the queue leaves: nobody's role changes, and the
        // member behind it now watches the one ahead of the leaver.
        members.remove(3).resign();
        // The master leaves: the next in line takes over.
        members.remove(0).resign();
        wait_for(SOON, "the next in line takes over", || {
            is_master(&members) == first(&members, masters)
        });
        // And again, down to the last one.
        while members.len() > 1 {
            members.remove(0).resign();
            wait_for(SOON, "the next in line takes over", || {
                is_master(&members) == first(&members, masters)
            });
        }
    }
}
