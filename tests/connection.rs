//! How a member rides out connection faults, against real ZooKeeper servers: a server that
//! stops answering, restarts, reconnects within the session, an expired session, an ensemble
//! losing a server, a node or group deleted by hand, and no server at all.

mod common;

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    children, join, member_config as config, raw_client, wait_for, ZkServer, SESSION, SOON,
};
use zk_master::{Config, Election, Role};

#[test]
fn a_server_that_stops_answering_costs_the_lease_not_the_process() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(config(&server, "/paused"));
    let b = join(config(&server, "/paused"));
    assert!(a.wait_until_master(SOON));
    let first = a.member_name().unwrap();
    server.pause(); // the crate's calls would now block with no timeout
    let paused = Instant::now();
    wait_for(SOON, "a steps down", || !a.is_master());
    eprintln!(
        "master stepped down {:?} after the server froze",
        paused.elapsed()
    );
    assert!(paused.elapsed() < SESSION + Duration::from_millis(500));
    let dropped = Instant::now();
    drop(b); // resigning cannot reach the server, and must not hang
    assert!(
        dropped.elapsed() < SESSION,
        "drop took {:?}",
        dropped.elapsed()
    );
    server.resume();
    assert!(
        a.wait_until_master(Duration::from_secs(20)),
        "a leads again"
    );
    // A frozen server does not expire sessions, so `a` may have kept its node; if it
    // had to start a new session, its old node must be gone. Either way one node is left.
    eprintln!("{first} is now {}", a.member_name().unwrap());
    let zk = raw_client(&server.connect_string());
    wait_for(SOON, "a's current node is the only one left", || {
        children(&zk, "/paused") == [a.member_name().unwrap()]
    });
}

#[test]
fn a_restarted_server_gets_the_members_back_with_their_watches() {
    common::init_logging();
    let mut server = ZkServer::start();
    let a = join(config(&server, "/restart"));
    let b = join(config(&server, "/restart"));
    assert!(a.wait_until_master(SOON));
    server.stop();
    wait_for(SOON, "nobody is master while the server is down", || {
        !a.is_master() && !b.is_master()
    });
    thread::sleep(Duration::from_secs(1));
    server.restart();
    wait_for(Duration::from_secs(20), "one master again", || {
        a.is_master() ^ b.is_master()
    });
    let (master, slave) = if a.is_master() { (&a, &b) } else { (&b, &a) };
    wait_for(SOON, "two members", || slave.members().len() == 2);
    master.resign();
    assert!(
        slave.wait_until_master(SOON),
        "the re-armed watch saw the master go"
    );
}

#[test]
fn an_idle_member_keeps_its_session_while_others_come_and_go() {
    common::init_logging();
    let server = ZkServer::start();
    let short = Duration::from_millis(1200);
    let a = join(config(&server, "/idle").session_timeout(short));
    assert!(a.wait_until_master(SOON));
    let name = a.member_name();
    let started = Instant::now();
    while started.elapsed() < short * 5 {
        // Each join and leave sends `a` a watch notification, which resets the crate's ping timer.
        let other = join(config(&server, "/idle").session_timeout(short));
        thread::sleep(Duration::from_millis(150));
        drop(other);
        assert!(
            a.is_master(),
            "a lost mastership after {:?}",
            started.elapsed()
        );
    }
    assert_eq!(a.member_name(), name, "same node, same session");
}

#[test]
fn a_deleted_node_or_group_makes_the_member_join_again() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(config(&server, "/deleted/group"));
    let b = join(config(&server, "/deleted/group"));
    assert!(a.wait_until_master(SOON));
    let zk = raw_client(&server.connect_string());
    let node = format!("/deleted/group/{}", a.member_name().unwrap());
    zk.delete(&node, None).expect("delete a's node");
    assert!(b.wait_until_master(SOON), "b takes over");
    wait_for(SOON, "a joins again at the back", || {
        a.role() == Role::Slave
    });

    // The members put their nodes back as fast as we delete them: retry until the group goes.
    let mut attempts = 0;
    while zk
        .exists("/deleted/group", false)
        .expect("exists")
        .is_some()
    {
        attempts += 1;
        assert!(attempts < 200, "could not delete the group");
        for child in zk.get_children("/deleted/group", false).unwrap_or_default() {
            zk.delete(&format!("/deleted/group/{child}"), None).ok();
        }
        zk.delete("/deleted/group", None).ok();
    }
    wait_for(SOON, "both are members again", || {
        a.members().len() == 2 && a.is_master() ^ b.is_master()
    });
}

#[test]
fn many_members_create_a_deep_group_path_at_once() {
    common::init_logging();
    let server = ZkServer::start();
    let connect = server.connect_string();
    let joins: Vec<_> = (0..6)
        .map(|_| {
            let config = Config::new(connect.clone())
                .group("/a/b/c/d")
                .session_timeout(SESSION);
            thread::spawn(move || Election::join(config))
        })
        .collect();
    let members: Vec<Election> = joins
        .into_iter()
        .map(|j| j.join().unwrap().expect("concurrent join"))
        .collect();
    wait_for(SOON, "one master of six", || {
        members.iter().filter(|m| m.is_master()).count() == 1 && members[5].members().len() == 6
    });
}

#[test]
fn a_reconnect_within_the_session_keeps_node_watch_and_credentials() {
    common::init_logging();
    let mut server = ZkServer::builder()
        .max_session_timeout(Duration::from_secs(4))
        .start();
    let secure = |c: Config| {
        c.auth("workers:s3cret")
            .session_timeout(Duration::from_secs(4))
    };
    let a = join(secure(config(&server, "/kept")));
    let b = join(secure(config(&server, "/kept")));
    assert!(a.wait_until_master(SOON));
    let (names_before, sessions) = (a.member_name(), a.session_timeout());
    let changes: Arc<Mutex<Vec<zk_master::Connection>>> = Arc::default();
    let seen = changes.clone();
    a.on_change(move |c| seen.lock().unwrap().push(c.connection));

    server.stop();
    wait_for(SOON, "a is suspended", || {
        a.connection().0 == zk_master::Connection::Suspended
    });
    server.restart(); // well within the 4 s session: the server still has it
    wait_for(SOON, "a is connected again", || {
        a.connection().0 == zk_master::Connection::Connected
    });
    assert!(a.wait_until_master(SOON), "mastership regained");
    assert_eq!(a.member_name(), names_before, "same node, same session");
    assert_eq!(a.session_timeout(), sessions);

    // Deleting our node needs the credentials, which the crate forgets on reconnect;
    // b sees it go only through a watch set after the reconnect.
    a.resign();
    assert!(
        b.wait_until_master(SOON),
        "the watch was re-armed and the resign allowed"
    );
    let changes = changes.lock().unwrap().clone();
    assert!(
        changes.contains(&zk_master::Connection::Suspended),
        "callbacks saw the suspension: {changes:?}"
    );
}

#[test]
fn no_server_costs_little_cpu() {
    common::init_logging();
    let mut server = ZkServer::start();
    let a = join(config(&server, "/cpu"));
    assert!(a.wait_until_master(SOON));
    server.stop();
    wait_for(SOON, "a is suspended or lost", || {
        a.connection().0 != zk_master::Connection::Connected
    });
    let (cpu_before, started) = (process_cpu(), Instant::now());
    thread::sleep(Duration::from_secs(4));
    let share = (process_cpu() - cpu_before).as_secs_f64() / started.elapsed().as_secs_f64();
    eprintln!(
        "cpu while no server answers: {:.1}% of one core",
        share * 100.0
    );
    // The crate alone spins a whole core here; the goal is under 5%, checked by the
    // benchmark. This bound only catches a return of the spin on a noisy machine.
    assert!(share < 0.25, "{:.1}% of a core", share * 100.0);
    server.restart();
    assert!(a.wait_until_master(Duration::from_secs(20)), "a comes back");
}

/// User plus system CPU time of this process so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

#[test]
fn losing_a_server_of_the_ensemble_costs_neither_session_nor_mastership() {
    common::init_logging();
    let mut ensemble = common::Ensemble::start(3);
    let config = || {
        Config::new(ensemble.connect_string())
            .group("/ensemble")
            .session_timeout(Duration::from_secs(8))
            .lease_margin(Duration::from_millis(1200)) // covers (syncLimit + 1) x tickTime
    };
    let a = join(config());
    let b = join(config());
    assert!(a.wait_until_master(SOON));
    let name = a.member_name();
    let suspensions = Arc::new(Mutex::new(0));
    let counter = suspensions.clone();
    a.on_change(move |c| {
        if c.connection == zk_master::Connection::Suspended {
            *counter.lock().unwrap() += 1;
        }
    });
    // Kill each server in turn, the leader last: whichever one `a` uses is among them.
    let leader = ensemble.leader().expect("a leader");
    let order: Vec<usize> = (0..3).filter(|&i| i != leader).chain([leader]).collect();
    for i in order {
        let before = *suspensions.lock().unwrap();
        ensemble.kill(i);
        // If `a` used this server it is suspended within moments; give it two seconds.
        let started = Instant::now();
        while *suspensions.lock().unwrap() == before && started.elapsed() < Duration::from_secs(2) {
            thread::sleep(Duration::from_millis(20));
        }
        wait_for(
            Duration::from_secs(20),
            "a is connected and master again",
            || a.connection().0 == zk_master::Connection::Connected && a.is_master(),
        );
        assert_eq!(
            a.member_name(),
            name,
            "same node, so same session, after losing server {i}"
        );
        ensemble.restart(i);
        ensemble.wait_quorum();
    }
    assert!(
        *suspensions.lock().unwrap() >= 1,
        "a's server was among those killed"
    );
    a.resign();
    assert!(b.wait_until_master(SOON));
}

#[test]
fn an_expired_session_is_reported_lost_then_a_new_one_connected() {
    common::init_logging();
    let server = ZkServer::start();
    let proxy = common::proxy::Proxy::to_port(server.port());
    let through_proxy = Config::new(proxy.connect_string())
        .group("/expired")
        .session_timeout(SESSION);
    let a = join(through_proxy);
    let b = join(config(&server, "/expired"));
    assert!(a.wait_until_master(SOON));
    let first = a.member_name();
    let seen: Arc<Mutex<Vec<(zk_master::Connection, Role)>>> = Arc::default();
    let log = seen.clone();
    a.on_change(move |c| log.lock().unwrap().push((c.connection, c.new)));

    // A partition longer than the session: the server expires it while `a` hears nothing.
    proxy.set(common::proxy::Mode::Blackhole);
    assert!(
        b.wait_until_master(SESSION * 3),
        "b takes over once a's session expires"
    );
    assert!(!a.is_master(), "a's lease ended before b's takeover");
    proxy.set(common::proxy::Mode::Pass);
    wait_for(
        Duration::from_secs(20),
        "a is back in a new session",
        || a.connection().0 == zk_master::Connection::Connected && a.role() == Role::Slave,
    );
    assert_ne!(
        a.member_name(),
        first,
        "a new node at the back of the queue"
    );
    let seen = seen.lock().unwrap().clone();
    let connections: Vec<_> = seen.iter().map(|(c, _)| *c).collect();
    let lost = connections
        .iter()
        .position(|c| *c == zk_master::Connection::Lost);
    let back = connections
        .iter()
        .rposition(|c| *c == zk_master::Connection::Connected);
    assert!(
        lost.is_some() && back > lost,
        "callbacks saw lost, then connected: {seen:?}"
    );
}

#[test]
fn a_clamped_session_timeout_is_reported_and_the_largest_data_fits() {
    common::init_logging();
    let server = ZkServer::builder()
        .min_session_timeout(Duration::from_millis(1000))
        .max_session_timeout(Duration::from_millis(3000))
        .start();
    let long = join(config(&server, "/clamp").session_timeout(Duration::from_secs(30)));
    assert_eq!(long.session_timeout(), Some(Duration::from_millis(3000)));
    let short = join(config(&server, "/clamp").session_timeout(Duration::from_millis(300)));
    assert_eq!(short.session_timeout(), Some(Duration::from_millis(1000)));
    assert!(
        long.wait_until_master(SOON),
        "the lease counts with the granted 3 s"
    );

    let big = vec![b'x'; zk_master::MAX_DATA_LEN];
    let member = join(config(&server, "/clamp").data(big.clone()));
    wait_for(SOON, "three members", || member.members().len() == 3);
    let data_of = |name: Option<String>| {
        let members = member.members();
        members
            .iter()
            .find(|m| Some(m.name()) == name.as_deref())
            .map(|m| m.data().len())
    };
    assert_eq!(data_of(member.member_name()), Some(big.len()));
}
