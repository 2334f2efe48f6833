//! The observer against real ZooKeeper servers: it follows joins, resigns,
//! data and session losses, tells callbacks and subscribers, computes the
//! masters as the members do (claims included), creates nothing, and
//! survives a server restart.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{member_config as config, raw_client, wait_for, ZkServer, SESSION, SOON};
use zk_master::{Config, Connection, Election, Observer, Role};
use zookeeper::{Acl, CreateMode, ZooKeeper};

fn observe(server: &ZkServer, group: &str) -> Observer {
    Observer::watch(config(server, group)).expect("observer")
}

fn join_with(server: &ZkServer, group: &str, data: &str) -> Election {
    Election::join(config(server, group).data(data.as_bytes().to_vec())).expect("join")
}

fn names(members: &[zk_master::Member]) -> Vec<String> {
    members.iter().map(|m| m.name().to_owned()).collect()
}

/// Every node under `path`, recursively, as full paths.
fn tree(zk: &ZooKeeper, path: &str) -> Vec<String> {
    let mut out = vec![path.to_owned()];
    let mut children = zk.get_children(path, false).unwrap_or_default();
    children.sort();
    for child in children {
        let full = if path == "/" {
            format!("/{child}")
        } else {
            format!("{path}/{child}")
        };
        out.extend(tree(zk, &full));
    }
    out
}

#[test]
fn follows_joins_resigns_and_member_data_from_before_the_group_exists() {
    common::init_logging();
    let server = ZkServer::start();
    let observer = observe(&server, "/Roles/workers");
    assert!(observer.members().is_empty(), "no group yet");
    assert_eq!(observer.connection().0, Connection::Connected);
    let heard: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
    let log = heard.clone();
    let id = observer.on_change(move |c| log.lock().unwrap().push(names(&c.masters)));
    let changes = observer.subscribe();

    let a = join_with(&server, "/Roles/workers", "10.0.0.1:7000");
    let b = join_with(&server, "/Roles/workers", "10.0.0.2:7000");
    let c = join_with(&server, "/Roles/workers", "10.0.0.3:7000");
    assert!(a.wait_until_master(SOON));
    let a_name = a.member_name().unwrap();
    // A member's claim comes a round trip after its node: the observer shows it once it has
    // heard of it.
    wait_for(
        SOON,
        "the observer sees three members and their claims",
        || {
            let seen = observer.snapshot();
            seen.members.len() == 3 && seen.claims.len() == 3
        },
    );
    let group = observer.snapshot();
    assert_eq!(names(&group.masters), std::slice::from_ref(&a_name));
    assert_eq!(
        group.masters,
        a.masters(),
        "the same masters as the members"
    );
    assert_eq!(group.members, c.members());
    assert_eq!(group.members[1].data(), b"10.0.0.2:7000");
    assert!(group.members.iter().all(|m| m.session_id().is_some()));
    assert!(group.members.iter().all(|m| m.created().is_some()));
    assert_eq!(
        group.claims.len(),
        3,
        "one claim a member: {:?}",
        group.claims
    );
    let found = observer.wait_for_master(SOON).expect("a master");
    assert_eq!(found.data(), b"10.0.0.1:7000");

    a.resign();
    assert!(b.wait_until_master(SOON));
    wait_for(SOON, "the observer sees b lead", || {
        names(&observer.masters()) == [b.member_name().unwrap()]
    });
    wait_for(SOON, "the callback heard b lead", || {
        heard.lock().unwrap().last() == Some(&vec![b.member_name().unwrap()])
    });
    let told: Vec<_> = changes.try_iter().collect();
    assert!(
        told.iter()
            .all(|c| c.new == Role::Offline && c.member.is_none()),
        "an observer is no member"
    );
    assert!(told.iter().any(|c| names(&c.masters) == [a_name.clone()]));
    assert!(told.iter().any(|c| c.members.len() == 2), "a left");

    observer.remove_callback(id);
    let before = heard.lock().unwrap().len();
    drop(b);
    wait_for(SOON, "c leads", || c.is_master());
    wait_for(SOON, "the observer sees c lead", || {
        observer.masters() == c.masters()
    });
    assert!(
        changes.recv_timeout(SOON).is_ok(),
        "the subscriber still hears"
    );
    assert_eq!(heard.lock().unwrap().len(), before, "removed");
    observer.close();
    assert!(observer.members().is_empty());
    let drained: Vec<_> = changes.try_iter().collect();
    drop(drained);
    assert!(
        changes.recv_timeout(SOON).is_err(),
        "disconnected once closed"
    );
}

#[test]
fn an_observer_creates_nothing() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = raw_client(&server.connect_string());
    let before = tree(&zk, "/");
    let observer = observe(&server, "/Roles/none");
    let quiet = Observer::watch(config(&server, "/Roles/none").masters(2)).expect("observer");
    std::thread::sleep(SESSION);
    assert_eq!(tree(&zk, "/"), before, "no node made for a missing group");
    drop((observer, quiet));

    let member = join_with(&server, "/g", "x");
    let before = tree(&zk, "/");
    let observer = observe(&server, "/g");
    assert_eq!(observer.members().len(), 1);
    std::thread::sleep(SESSION);
    assert_eq!(tree(&zk, "/"), before, "no node made in an existing group");
    drop(member);
}

#[test]
fn masters_wait_for_an_orphaned_claim_as_the_members_do() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = raw_client(&server.connect_string());
    let acl = Acl::open_unsafe().clone();
    for path in ["/c", "/c.claims"] {
        zk.create(path, Vec::new(), acl.clone(), CreateMode::Persistent)
            .expect("create");
    }
    // The claim of a member whose node was deleted by hand and who has not
    // stepped down yet.
    let orphan = "/c.claims/7-worker0000000099";
    zk.create(orphan, Vec::new(), acl, CreateMode::Ephemeral)
        .expect("claim");
    let observer = observe(&server, "/c");
    let a = join_with(&server, "/c", "a");
    assert_eq!(a.role(), Role::Slave, "a waits for the orphaned claim");
    wait_for(SOON, "the observer sees a", || {
        observer.members().len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(observer.masters().is_empty(), "no master while blocked");
    assert!(observer
        .snapshot()
        .claims
        .contains(&"7-worker0000000099".into()));

    zk.delete(orphan, None).expect("delete claim");
    assert!(a.wait_until_master(SOON));
    wait_for(SOON, "the observer sees a lead", || {
        observer.masters() == a.masters()
    });
}

#[test]
fn a_member_losing_its_session_leaves_the_observed_group() {
    common::init_logging();
    let server = ZkServer::start();
    let proxy = common::proxy::Proxy::to_port(server.port());
    let a = Election::join(
        Config::new(proxy.connect_string())
            .group("/lost")
            .session_timeout(SESSION),
    )
    .expect("join");
    let b = join_with(&server, "/lost", "b");
    let observer = observe(&server, "/lost");
    assert_eq!(names(&observer.masters()), [a.member_name().unwrap()]);
    proxy.set(common::proxy::Mode::Blackhole);
    assert!(b.wait_until_master(SESSION * 3));
    wait_for(SOON, "the observer sees b lead alone", || {
        names(&observer.members()) == [b.member_name().unwrap()]
            && observer.masters() == b.masters()
    });
    proxy.set(common::proxy::Mode::Pass);
    wait_for(Duration::from_secs(20), "a is back at the back", || {
        observer.members().len() == 2
    });
    assert_eq!(names(&observer.masters()), [b.member_name().unwrap()]);
}

#[test]
fn an_observer_survives_a_server_restart() {
    common::init_logging();
    let mut server = ZkServer::start();
    let observer = observe(&server, "/restart");
    let a = join_with(&server, "/restart", "a");
    wait_for(SOON, "a seen", || observer.members().len() == 1);
    server.restart();
    // The member may keep its session or come back in a new one: either
    // way the observer reads the group again once it is back.
    wait_for(Duration::from_secs(30), "a leads again", || a.is_master());
    let b = join_with(&server, "/restart", "b");
    wait_for(
        Duration::from_secs(30),
        "the observer follows after the restart",
        || {
            let group = observer.snapshot();
            group.connection == Connection::Connected
                && group.members == b.members()
                && group.members.len() == 2
                && group.masters == a.masters()
        },
    );
}

#[test]
fn a_bad_config_is_refused_and_an_unreachable_server_times_out() {
    common::init_logging();
    let bad = Observer::watch(Config::new("").group("/x"));
    assert!(
        matches!(bad, Err(zk_master::Error::InvalidConfig { .. })),
        "{bad:?}"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let start = std::time::Instant::now();
    let gone = Observer::watch(
        Config::new(format!("127.0.0.1:{port}"))
            .group("/x")
            .connect_timeout(Duration::from_secs(1)),
    );
    assert!(
        matches!(gone, Err(zk_master::Error::Unreachable { .. })),
        "{gone:?}"
    );
    assert!(start.elapsed() < SOON);
}

/// Prints how long after a resign the observer tells the new master
/// (`--nocapture` to see it); a measurement, not a timed assert.
#[test]
fn prints_how_soon_the_observer_tells_a_new_master() {
    common::init_logging();
    let server = ZkServer::start();
    let observer = observe(&server, "/latency");
    let changes = observer.subscribe();
    let mut members: std::collections::VecDeque<Election> = (0..2)
        .map(|_| join_with(&server, "/latency", "m"))
        .collect();
    let mut lags = Vec::new();
    for _ in 0..20 {
        let next = members[1].member_name().unwrap();
        while changes.try_recv().is_ok() {}
        let old = members.pop_front().unwrap();
        let start = std::time::Instant::now();
        old.resign();
        loop {
            let change = changes.recv_timeout(SOON).expect("a change");
            if change.masters.first().map(|m| m.name()) == Some(next.as_str()) {
                lags.push(start.elapsed());
                break;
            }
        }
        members.push_back(join_with(&server, "/latency", "m"));
    }
    lags.sort();
    println!(
        "observer told the new master after resign(): median {:?}, max {:?} (20 handovers)",
        lags[lags.len() / 2],
        lags[lags.len() - 1]
    );
}

#[test]
fn a_group_it_may_not_list_fails_at_once_with_access_denied() {
    common::init_logging();
    let server = ZkServer::start();
    let group = "/closed";
    let secure = || {
        config(&server, group)
            .auth("workers:s3cret")
            .readable_by_anyone(false)
    };
    let member = Election::join(secure().data(b"secret".to_vec())).expect("join");
    let started = std::time::Instant::now();
    match Observer::watch(config(&server, group)) {
        Err(zk_master::Error::AccessDenied { op, path, .. }) => {
            assert_eq!((op, path.as_str()), ("get_children", group));
        }
        other => panic!("expected AccessDenied, got {other:?}"),
    }
    assert!(
        started.elapsed() < SOON,
        "at once, not after the connect timeout"
    );
    let observer = Observer::watch(secure()).expect("watch with the credentials");
    let data: Vec<Vec<u8>> = observer
        .members()
        .iter()
        .map(|m| m.data().to_vec())
        .collect();
    assert_eq!(data, [b"secret".to_vec()]);
    drop(member);
}

#[test]
fn moves_to_another_server_of_an_ensemble_when_its_server_dies() {
    common::init_logging();
    let mut ensemble = common::Ensemble::start(3);
    ensemble.wait_quorum();
    let group = "/Roles/ensemble";
    let config = |connect: String, data: &str| {
        Config::new(connect)
            .group(group)
            .session_timeout(SESSION)
            .connect_timeout(SOON)
            .data(data.as_bytes().to_vec())
    };
    let data = |observer: &Observer| -> Vec<String> {
        observer
            .members()
            .iter()
            .map(|m| String::from_utf8_lossy(m.data()).into_owned())
            .collect()
    };
    // Whether server `i` has a client session (the observer's: the members
    // connect to server 2 only). `cons` shows a session id for a session's
    // connection, none for its own.
    let serves_a_client = |ensemble: &common::Ensemble, i: usize| {
        common::four_letter_word(ensemble.port(i), "cons")
            .is_some_and(|reply| reply.lines().any(|l| l.contains("sid=0x")))
    };
    // An observer on server 0 or 1 (it picks one of the three; try again
    // while it picks server 2).
    let (observer, its_server) = (0..20)
        .find_map(|_| {
            let observer = Observer::watch(config(ensemble.connect_string(), "")).expect("watch");
            (0..2)
                .find(|&i| serves_a_client(&ensemble, i))
                .map(|i| (observer, i))
        })
        .expect("an observer on server 0 or 1 in 20 tries");
    let first = Election::join(config(ensemble.server_connect_string(2), "first")).expect("join");
    wait_for(SOON, "the first member", || data(&observer) == ["first"]);
    ensemble.kill(its_server); // two of three left: still a quorum
    let second = Election::join(config(ensemble.server_connect_string(2), "second")).expect("join");
    wait_for(
        Duration::from_secs(30),
        "the observer follows on a live server",
        || {
            observer.connection().0 == Connection::Connected
                && data(&observer) == ["first", "second"]
        },
    );
    drop((first, second));
    wait_for(Duration::from_secs(30), "both gone", || {
        observer.members().is_empty()
    });
}
