//! Paths only a user's program walks, each found by trying the library as a
//! new user would (issue 8): callbacks at a lapse, for the role held at join
//! and for a change of masters; the view after resign; a join started before
//! the server; durations too large for the clock.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{member_config as config, ZkServer, SOON};
use zk_master::{Connection, Election, Role, RoleChange, Subscription};

/// Receives changes until one matches, within `SOON`.
fn until(changes: &Subscription, what: &str, f: impl Fn(&RoleChange) -> bool) {
    let deadline = Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match changes.recv_timeout(left) {
            Ok(change) if f(&change) => return,
            Ok(_) => {}
            Err(e) => panic!("no change {what} within {SOON:?}: {e}"),
        }
    }
}

#[test]
fn a_lapsed_lease_is_told_to_callbacks_within_milliseconds() {
    common::init_logging();
    let mut server = ZkServer::start();
    let election = Election::join(config(&server, "/lapse")).expect("join");
    assert!(election.wait_until_master(SOON));
    let (tx, changes) = mpsc::channel();
    election.on_change(move |change| {
        let _ = tx.send((change.clone(), Instant::now()));
    });
    let (told, _) = changes.recv_timeout(SOON).expect("the role held at join");
    assert_eq!(told.new, Role::Master, "the role held at join is told");
    server.stop();
    let stopped = Instant::now();
    let mut false_at = None;
    while false_at.is_none() && stopped.elapsed() < SOON {
        if !election.is_master() {
            false_at = Some(Instant::now());
        }
        thread::sleep(Duration::from_millis(1));
    }
    let false_at = false_at.expect("the lease lapses with the server gone");
    let deadline = Instant::now() + SOON;
    let called_at = loop {
        let (change, at) = changes
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a callback for the lapse");
        // Master -> Master changes tell of the connection (suspended) meanwhile.
        if change.old == Role::Master && change.new != Role::Master {
            break at;
        }
    };
    let gap = called_at.saturating_duration_since(false_at);
    eprintln!(
        "is_master() false {:?} after the stop, callback {gap:?} later",
        false_at - stopped
    );
    assert!(gap < Duration::from_millis(200), "callback {gap:?} late");
}

#[test]
fn a_slave_is_told_when_the_masters_change() {
    common::init_logging();
    let server = ZkServer::start();
    let a = Election::join(config(&server, "/follow")).expect("join a");
    let b = Election::join(config(&server, "/follow")).expect("join b");
    let c = Election::join(config(&server, "/follow")).expect("join c");
    assert!(a.wait_until_master(SOON));
    let changes = c.subscribe();
    until(&changes, "telling c's role", |ch| ch.new == Role::Slave);
    let b_name = b.member_name().expect("b's node");
    a.resign();
    until(&changes, "naming b master", |ch| {
        ch.new == Role::Slave && ch.masters.first().map(|m| m.name()) == Some(b_name.as_str())
    });
}

#[test]
fn resign_clears_the_view() {
    common::init_logging();
    let server = ZkServer::start();
    let a = Election::join(config(&server, "/cleared")).expect("join");
    assert!(a.wait_until_master(SOON));
    a.resign();
    assert!(!a.is_master());
    assert_eq!(a.role(), Role::Offline);
    assert!(
        a.masters().is_empty(),
        "masters after resign: {:?}",
        a.masters()
    );
    assert!(
        a.members().is_empty(),
        "members after resign: {:?}",
        a.members()
    );
    assert_eq!(a.connection().0, Connection::Lost);
    assert_eq!(a.fencing_token(), None);
}

#[test]
fn join_retries_until_the_server_starts() {
    common::init_logging();
    let mut server = ZkServer::start();
    let config = config(&server, "/early");
    server.stop();
    let joining = thread::spawn(move || {
        let started = Instant::now();
        (Election::join(config), started.elapsed())
    });
    thread::sleep(Duration::from_millis(1500));
    server.restart();
    let (joined, took) = joining.join().expect("join thread");
    let election = joined.expect("join retries until a server answers");
    eprintln!("joined {took:?} after starting, the server came up after 1.5 s");
    assert!(took >= Duration::from_millis(1500));
    assert!(election.wait_until_master(SOON));
}

#[test]
fn durations_too_large_for_the_clock_saturate() {
    common::init_logging();
    let server = ZkServer::start();
    let config = config(&server, "/forever").connect_timeout(Duration::MAX);
    let election = Election::join(config).expect("join with Duration::MAX");
    assert!(election.wait_until_master(Duration::MAX));
}

/// The first run of the example worker: the group is missing, the worker
/// creates it, becomes master and exits on SIGTERM. Nothing there is worth a
/// warning, and a user who sees one learns to ignore them.
#[test]
fn a_first_run_in_a_missing_group_logs_no_warning() {
    common::init_logging();
    let server = ZkServer::start();
    let mut worker = common::Worker::spawn(&server.connect_string(), "/first/run", 2000);
    worker.expect("I've become master!");
    worker.terminate();
    assert_eq!(worker.wait_exit(), Some(0));
    let log = worker.log_after_exit();
    let noisy: Vec<&String> = log
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(noisy.is_empty(), "warnings on a clean run: {noisy:#?}");
}

/// `worker --help` explains every flag with its default and exits 0; a bad
/// flag prints the usage on stderr and exits 2.
#[test]
fn the_example_worker_explains_its_flags() {
    let help = std::process::Command::new(common::worker_binary())
        .arg("--help")
        .output()
        .expect("run worker --help");
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--connect",
        "--group",
        "--masters",
        "--session-timeout-ms",
        "--lease-margin-ms",
        "--auth",
        "--data",
        "--trace-roles",
        "RUST_LOG",
    ] {
        // The flag's line and its continuation lines (indented past the flag column).
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .enumerate()
            .take_while(|(i, l)| *i == 0 || l.starts_with("                "))
            .map(|(_, l)| l)
            .collect();
        assert!(!block.is_empty(), "--help does not explain {flag}:\n{text}");
        assert!(
            block.concat().contains("[default:"),
            "--help gives no default for {flag}: {block:?}"
        );
    }
    let bad = std::process::Command::new(common::worker_binary())
        .arg("--bogus")
        .output()
        .expect("run worker --bogus");
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("unknown flag --bogus") && err.contains("usage:"),
        "{err}"
    );
}

/// Every change a master is told lists it among the masters, while others
/// join and leave. (A read of the group in progress once showed the masters
/// as empty: the example worker logged "I've become master!" on every join.)
#[test]
fn a_master_is_always_among_the_masters_it_is_told() {
    common::init_logging();
    let server = ZkServer::start();
    let a = Election::join(config(&server, "/told/masters")).expect("join a");
    let changes = a.subscribe();
    let b = Election::join(config(&server, "/told/masters")).expect("join b");
    let c = Election::join(config(&server, "/told/masters")).expect("join c");
    b.resign();
    drop(c);
    let me = a.member_name().expect("a member name");
    let mut seen = 0;
    while let Ok(change) = changes.recv_timeout(Duration::from_millis(500)) {
        seen += 1;
        if change.new == Role::Master {
            let names: Vec<&str> = change.masters.iter().map(|m| m.name()).collect();
            assert_eq!(
                names,
                [me.as_str()],
                "a master told other masters: {change:?}"
            );
        }
        assert!(seen < 1000, "changes never stop coming");
    }
    assert!(seen >= 1, "not even the role at join was told");
}

/// `join` returns once the role is known: a member among the first N is
/// master when it returns, not `Offline` for one more round trip.
#[test]
fn join_returns_the_role_it_will_hold() {
    common::init_logging();
    let server = ZkServer::start();
    // A race (the first lease against the group read): a few rounds catch it.
    for round in 0..5 {
        let config = config(&server, &format!("/join/role{round}")).masters(2);
        let first = Election::join(config.clone()).expect("join first");
        assert_eq!(first.role(), Role::Master);
        let second = Election::join(config.clone()).expect("join second");
        assert_eq!(second.role(), Role::Master, "round {round}");
        assert!(second.is_master());
        let third = Election::join(config).expect("join third");
        assert_eq!(third.role(), Role::Slave);
    }
}
