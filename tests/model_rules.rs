//! The rules of the simulator's ZooKeeper model (`src/sim/model.rs`, `src/sim/backend.rs`,
//! `src/sim/server.rs`, `src/sim/faults.rs`), each checked against a real ZooKeeper server, so
//! the model cannot drift from ZooKeeper unnoticed. Every test names the model code it checks
//! and the faults of the simulator that rely on the rule.
//!
//! The servers run with `tickTime` = [`TICK_TIME`] (200 ms), as the model's `TICK` does.
//! Every wait is bounded; everything runs on loopback.

mod common;

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::proxy::{Mode, Proxy};
use common::{
    four_letter_word, raw_client, raw_client_with_timeout, wait_for, Ensemble, ZkServer, TICK_TIME,
};
use zookeeper::{Acl, CreateMode, WatchedEvent, WatchedEventType, ZkError, ZooKeeper};

const SOON: Duration = Duration::from_secs(10);

fn create(zk: &ZooKeeper, path: &str, mode: CreateMode) -> Result<String, ZkError> {
    zk.create(path, b"x".to_vec(), Acl::open_unsafe().clone(), mode)
}

/// The name of a node created at `path` (its last component).
fn name(path: &str) -> &str {
    &path[path.rfind('/').map_or(0, |i| i + 1)..]
}

/// `(session id, granted timeout)` of every client connection of the server on `port` that has
/// a session, from the `cons` four-letter word (`sid=0x…`, `to=…`).
fn sessions(port: u16) -> Vec<(i64, Duration)> {
    let text = four_letter_word(port, "cons").expect("cons answers");
    let field = |line: &str, key: &str| -> Option<String> {
        let start = line.find(key)? + key.len();
        let rest = &line[start..];
        let end = rest.find([',', ')']).unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    };
    text.lines()
        .filter_map(|line| {
            let sid = field(line, "sid=0x")?;
            let to = field(line, ",to=")?;
            let sid = u64::from_str_radix(&sid, 16).ok()? as i64;
            Some((sid, Duration::from_millis(to.parse().ok()?)))
        })
        .collect()
}

/// Drops a client on a thread of its own: the crate's `Drop` sends a CloseSession and waits for
/// the answer, which never comes from a server it cannot reach.
fn abandon(zk: ZooKeeper) {
    thread::spawn(move || drop(zk));
}

/// Runs `f` on a thread; the receiver gets its result and when it came.
fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Receiver<(T, Instant)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let result = f();
        let _ = tx.send((result, Instant::now()));
    });
    rx
}

/// A client whose default watcher forwards every node event (path and type) into a channel:
/// `exists(path, true)` and `get_children(path, true)` set watches that report there, and the
/// crate keeps that watcher, so a watch the server fires twice would be seen twice.
fn watching_client(connect: &str) -> (ZooKeeper, Receiver<(String, WatchedEventType)>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let zk = ZooKeeper::connect(connect, Duration::from_secs(4), move |e: WatchedEvent| {
        if let Some(path) = e.path {
            let _ = tx.lock().unwrap().send((path, e.event_type));
        }
    })
    .expect("connect");
    wait_for(SOON, "a session", || zk.exists("/", false).is_ok());
    (zk, rx)
}

/// No further node event within `quiet`.
fn assert_quiet(rx: &Receiver<(String, WatchedEventType)>, quiet: Duration, what: &str) {
    match rx.recv_timeout(quiet) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("{what}: a one-shot watch fired again: {other:?}"),
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Rule 1, sequential names. Checks `src/sim/model.rs`, `Tree::create` (the parent's
/// `next_sequence`, formatted `{sequence:010}`), and `Node::next_sequence` starting at 0 in a
/// node created afresh.
///
/// The suffix is `%010d` of a counter kept per parent: the number of children created under it
/// so far, sequential or not (deletions do not count). The model counted only its sequential
/// creates until this test; harmless so far (the core creates no other child under the group),
/// now fixed. The simulator relies on it for the members' names and their election order
/// (every join and requeue), and on the restart at 0 for `DeleteGroup`:
/// a group deleted and created again gives out the same names again, which the core must not
/// mistake for its own node.
#[test]
fn sequential_names_count_per_parent_and_start_again_with_the_parent() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = raw_client(&server.connect_string());
    create(&zk, "/seq", CreateMode::Persistent).unwrap();
    create(&zk, "/other", CreateMode::Persistent).unwrap();
    let seq = |parent: &str| {
        let path = create(
            &zk,
            &format!("{parent}/m-"),
            CreateMode::EphemeralSequential,
        )
        .unwrap();
        name(&path).to_owned()
    };
    assert_eq!(seq("/seq"), "m-0000000000");
    assert_eq!(seq("/seq"), "m-0000000001");
    // Per parent: /other has a counter of its own.
    assert_eq!(seq("/other"), "m-0000000000");
    // A persistent, non-sequential child counts too.
    create(&zk, "/seq/plain", CreateMode::Persistent).unwrap();
    assert_eq!(seq("/seq"), "m-0000000003");
    // A deletion does not: the suffix counts the children created. (`Stat::cversion` counts
    // deletions too: ZooKeeper keeps the creations and reports 2 x creations - children.)
    zk.delete("/seq/plain", None).unwrap();
    assert_eq!(seq("/seq"), "m-0000000004");
    zk.delete("/seq/m-0000000000", None).unwrap();
    let (_, stat) = zk.get_data("/seq", false).unwrap();
    assert_eq!(stat.cversion, 2 * 5 - 3, "5 created, 3 left");
    assert_eq!(seq("/seq"), "m-0000000005");
    // The parent deleted and created again: the counter starts at 0, names come back.
    for child in zk.get_children("/seq", false).unwrap() {
        zk.delete(&format!("/seq/{child}"), None).unwrap();
    }
    zk.delete("/seq", None).unwrap();
    create(&zk, "/seq", CreateMode::Persistent).unwrap();
    assert_eq!(seq("/seq"), "m-0000000000");
}

/// Rule 2a, ephemeral nodes belong to their session and go when it is closed. Checks
/// `src/sim/model.rs`, `Tree::create` (`owner` = the session for an ephemeral node, 0 for a
/// persistent one; `Stat::owner`) and `Tree::end_session` (its ephemeral nodes are deleted, and
/// the watches on them fire), reached from `src/sim/server.rs`, `World::end_server_session`
/// after a close (`src/sim/backend.rs`, `World::close` / `send_close`).
///
/// The simulator relies on it for `Resign` (a resigning member closes its session and its node
/// goes at once, so the next member takes over without waiting for an expiry), for the watcher
/// sessions a backend gives up (`watcher_gives_up`), and on the owner for the core's check that
/// the node it finds is its own.
#[test]
fn ephemeral_nodes_are_owned_by_their_session_and_go_when_it_closes() {
    common::init_logging();
    let server = ZkServer::start();
    let (observer, events) = watching_client(&server.connect_string());
    create(&observer, "/eph", CreateMode::Persistent).unwrap();
    let before: Vec<i64> = sessions(server.port()).iter().map(|s| s.0).collect();
    let owner = raw_client(&server.connect_string());
    let sid = sessions(server.port())
        .into_iter()
        .map(|s| s.0)
        .find(|s| !before.contains(s))
        .expect("the new client's session in cons");
    let node = create(&owner, "/eph/n-", CreateMode::EphemeralSequential).unwrap();
    create(&owner, "/eph/plain", CreateMode::Persistent).unwrap();
    let (_, stat) = observer.get_data(&node, false).unwrap();
    assert_eq!(stat.ephemeral_owner, sid, "owner = the creating session");
    let (_, stat) = observer.get_data("/eph/plain", false).unwrap();
    assert_eq!(stat.ephemeral_owner, 0, "a persistent node has no owner");

    assert!(observer.exists(&node, true).unwrap().is_some());
    owner.close().unwrap();
    // The close is answered once the session is gone, nodes included.
    assert!(observer.exists(&node, false).unwrap().is_none());
    assert_eq!(
        events.recv_timeout(SOON).unwrap(),
        (node.clone(), WatchedEventType::NodeDeleted)
    );
    assert!(
        observer.exists("/eph/plain", false).unwrap().is_some(),
        "persistent nodes stay"
    );
    drop(owner);
}

/// Rule 2b, a silent session expires one session timeout after the server last heard from it,
/// rounded up to the next tick, and not before. Checks `src/sim/server.rs`,
/// `World::touch_sessions` (a connected, reachable session is heard continuously),
/// `World::next_expiry` / `World::expire_due` (expiry at `heard + timeout`) and
/// `Tree::end_session` (the ephemeral nodes go).
///
/// The model expires a session at exactly `heard + timeout`; ZooKeeper's `ExpiryQueue` rounds
/// `heard + timeout` up to the next multiple of the tick (strictly after), so the real expiry
/// comes up to one tick later. The model is the earlier, harsher case for the lease, which is
/// what the checks need; this test asserts the server's window `(timeout, timeout + tick]`.
///
/// The simulator relies on it for `Partition` (longer than the timeout), `Freeze`,
/// `FreezeMasterThenDelete`, `cut_after_renewal`, and `StaleEnd` (a stale follower's clients):
/// the lease of a master must end before the successor can see its node go.
#[test]
fn a_silent_session_expires_one_timeout_after_it_was_last_heard() {
    common::init_logging();
    let server = ZkServer::start();
    let observer = raw_client(&server.connect_string());
    create(&observer, "/silent", CreateMode::Persistent).unwrap();
    // Timeouts on and off the tick grid, all at once (each behind a proxy of its own).
    let timeouts = [1000, 1300, 2000].map(Duration::from_millis);
    let mut cases = Vec::new();
    for (i, &timeout) in timeouts.iter().enumerate() {
        let proxy = Proxy::to_port(server.port());
        let zk = raw_client_with_timeout(&proxy.connect_string(), timeout);
        let path = format!("/silent/s{i}");
        create(&zk, &path, CreateMode::Ephemeral).unwrap();
        cases.push((timeout, proxy, zk, path));
    }
    let granted: Vec<Duration> = sessions(server.port()).iter().map(|s| s.1).collect();
    for &timeout in &timeouts {
        assert!(granted.contains(&timeout), "{timeout:?} granted as asked");
    }
    // The last thing each server hears: a request, then the network goes silent.
    let mut silent = Vec::new();
    for (timeout, proxy, zk, path) in cases {
        let sent = Instant::now();
        zk.exists(&path, false).unwrap();
        proxy.set(Mode::Blackhole);
        let cut = Instant::now();
        silent.push((timeout, proxy, zk, path, sent, cut));
    }
    let mut gone: Vec<Option<Instant>> = vec![None; silent.len()];
    let deadline = Instant::now() + Duration::from_secs(10);
    while gone.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, case) in silent.iter().enumerate() {
            if gone[i].is_none() && observer.exists(&case.3, false).unwrap().is_none() {
                gone[i] = Some(Instant::now());
            }
        }
        thread::sleep(Duration::from_millis(5));
    }
    let mut report = Vec::new();
    for ((timeout, proxy, zk, path, sent, cut), gone) in silent.into_iter().zip(gone) {
        let gone = gone.unwrap_or_else(|| panic!("{path} never expired"));
        let after_cut = gone - cut;
        let after_sent = gone - sent;
        report.push(format!(
            "timeout {} ms: gone {} ms after the cut",
            ms(timeout),
            ms(after_cut)
        ));
        assert!(
            after_sent >= timeout,
            "{path}: expired {} ms after its last request, before the timeout of {} ms",
            ms(after_sent),
            ms(timeout)
        );
        // One tick of rounding up, plus room for a loaded machine.
        let bound = timeout + TICK_TIME + Duration::from_millis(600);
        assert!(
            after_cut <= bound,
            "{path}: expired {} ms after the last it could hear, over {} ms",
            ms(after_cut),
            ms(bound)
        );
        abandon(zk);
        drop(proxy);
    }
    eprintln!("expiry: {}", report.join("; "));
}

/// Rule 3, the granted session timeout is the asked one clamped to `[2, 20]` ticks (the
/// server's default `minSessionTimeout` and `maxSessionTimeout`). Checks `src/sim/backend.rs`,
/// `World::open_arrive` (`client.asked.clamp(TICK * 2, TICK * 20)`), whose result the member is
/// told in `Input::Connected { granted }`.
///
/// Read here from the server's `cons` (`to=`): the `zookeeper` crate does not expose the
/// ConnectResponse's timeout; the library's relay does (`Election::session_timeout`, checked
/// with other bounds by `a_clamped_session_timeout_is_reported_and_the_largest_data_fits` in
/// tests/connection.rs). Every schedule of the simulator relies on it: its 5 s sessions are
/// granted 4 s, and the core computes its lease from the granted timeout.
#[test]
fn the_granted_timeout_is_clamped_to_two_and_twenty_ticks() {
    common::init_logging();
    let server = ZkServer::start();
    for (asked, granted) in [
        (100, TICK_TIME.as_millis() as u64 * 2),
        (1000, 1000),
        (2500, 2500),
        (60_000, TICK_TIME.as_millis() as u64 * 20),
    ] {
        let before: Vec<i64> = sessions(server.port()).iter().map(|s| s.0).collect();
        let zk = raw_client_with_timeout(&server.connect_string(), Duration::from_millis(asked));
        let new: Vec<(i64, Duration)> = sessions(server.port())
            .into_iter()
            .filter(|s| !before.contains(&s.0))
            .collect();
        assert_eq!(
            new.iter().map(|s| s.1).collect::<Vec<_>>(),
            [Duration::from_millis(granted)],
            "asked {asked} ms"
        );
        drop(zk);
    }
}

/// Rule 4, watches. Checks `src/sim/model.rs`, `Tree::apply` (an exists watch is set whether the
/// node exists or not; a child watch only on an existing node), `Tree::create` /
/// `Tree::delete` (`fire_exists` on creation and deletion, `fire_children` of the parent on a
/// child's creation or deletion and of the node itself on its deletion) and `fire` (watches are
/// removed as they fire: one-shot), delivered by `src/sim/backend.rs`, `World::dispatch`.
///
/// The simulator relies on it wherever a member waits: on its predecessor's node (`DeleteNode`,
/// `Resign`, expiries), on the group's children (joins, `Requeue`, `DeleteGroup`, in which the
/// watched group itself goes), on a claim (`DeleteClaim`, `FreezeMasterThenDelete`); and, being
/// one-shot, on the core setting each watch again.
#[test]
fn watches_fire_once_on_creation_deletion_and_child_changes() {
    common::init_logging();
    let server = ZkServer::start();
    let (zk, events) = watching_client(&server.connect_string());
    let other = raw_client(&server.connect_string());
    let quiet = Duration::from_millis(500);
    create(&zk, "/w", CreateMode::Persistent).unwrap();

    let next = || events.recv_timeout(SOON).expect("a watch fires");
    let event = |path: &str, kind| (path.to_owned(), kind);

    // Child watch: fires once on a child's creation...
    assert!(zk.get_children("/w", true).unwrap().is_empty());
    create(&other, "/w/a", CreateMode::Persistent).unwrap();
    assert_eq!(next(), event("/w", WatchedEventType::NodeChildrenChanged));
    create(&other, "/w/b", CreateMode::Persistent).unwrap();
    assert_quiet(&events, quiet, "child watch after a second child");
    // ...and on a child's deletion.
    zk.get_children("/w", true).unwrap();
    other.delete("/w/b", None).unwrap();
    assert_eq!(next(), event("/w", WatchedEventType::NodeChildrenChanged));
    // Child watch on a node that is then deleted: NodeDeleted.
    zk.get_children("/w/a", true).unwrap();
    other.delete("/w/a", None).unwrap();
    assert_eq!(next(), event("/w/a", WatchedEventType::NodeDeleted));
    // (The deletion of /w/a changed /w's children, but /w's watch had fired already.)
    assert_quiet(&events, quiet, "child watches after the deletion");
    // A child watch is not set on a missing node: its creation fires nothing.
    assert!(matches!(
        zk.get_children("/w/a", true),
        Err(ZkError::NoNode)
    ));
    create(&other, "/w/a", CreateMode::Persistent).unwrap();
    create(&other, "/w/a/c", CreateMode::Persistent).unwrap();
    assert_quiet(&events, quiet, "a child watch asked on a missing node");

    // Exists watch on a missing node: fires once, on its creation.
    assert!(zk.exists("/w/e", true).unwrap().is_none());
    create(&other, "/w/e", CreateMode::Persistent).unwrap();
    assert_eq!(next(), event("/w/e", WatchedEventType::NodeCreated));
    other.delete("/w/e", None).unwrap();
    assert_quiet(&events, quiet, "exists watch after a deletion");
    // Exists watch on an existing node: fires once, on its deletion.
    create(&other, "/w/e", CreateMode::Persistent).unwrap();
    assert!(zk.exists("/w/e", true).unwrap().is_some());
    other.delete("/w/e", None).unwrap();
    assert_eq!(next(), event("/w/e", WatchedEventType::NodeDeleted));
    create(&other, "/w/e", CreateMode::Persistent).unwrap();
    assert_quiet(&events, quiet, "exists watch after a creation");
    drop(other);
    drop(zk);
}

/// Rule 5, the errors the core relies on. Checks `src/sim/model.rs`, `Tree::create` (`NoNode`
/// under a missing parent, `NodeExists` for an existing path, `Refused` under an ephemeral
/// parent), `Tree::delete` (`NoNode` for a missing node, `Refused` when it has children) and
/// `Tree::read` (`NoNode` for data or children of a missing node, `Stat(None)` for exists).
///
/// The simulator relies on them after `DeleteGroup` (a member's create under the deleted group
/// fails with `NoNode` and it creates the group again), `DeleteNode` / `DeleteClaim` (reads and
/// deletes of a node deleted by hand give `NoNode`, which the core must take for "gone"), and
/// on concurrent creates of the group path (`NodeExists`).
#[test]
fn missing_and_existing_nodes_give_the_errors_of_the_model() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = raw_client(&server.connect_string());
    assert!(matches!(
        create(&zk, "/none/child", CreateMode::EphemeralSequential),
        Err(ZkError::NoNode)
    ));
    assert!(matches!(
        create(&zk, "/none/child", CreateMode::Persistent),
        Err(ZkError::NoNode)
    ));
    create(&zk, "/e", CreateMode::Persistent).unwrap();
    assert!(matches!(
        create(&zk, "/e", CreateMode::Persistent),
        Err(ZkError::NodeExists)
    ));
    assert!(matches!(zk.delete("/none", None), Err(ZkError::NoNode)));
    assert!(matches!(zk.get_data("/none", false), Err(ZkError::NoNode)));
    assert!(matches!(
        zk.get_children("/none", false),
        Err(ZkError::NoNode)
    ));
    assert!(zk.exists("/none", false).unwrap().is_none());
    // The model's `Refused` cases.
    create(&zk, "/e/eph", CreateMode::Ephemeral).unwrap();
    assert!(matches!(
        create(&zk, "/e/eph/child", CreateMode::Persistent),
        Err(ZkError::NoChildrenForEphemerals)
    ));
    assert!(matches!(zk.delete("/e", None), Err(ZkError::NotEmpty)));
}

/// Rule 6, a restarted standalone server keeps its sessions, with their ephemeral nodes, and
/// counts their timeouts afresh from the restart. Checks `src/sim/faults.rs`,
/// `World::restart_server` (every connection drops, sessions stay) and `World::server_up`
/// (`heard = now` for every session), with `src/sim/server.rs`, `World::next_expiry` (nothing
/// expires while the server is down) and `src/sim/backend.rs`, `World::reconnect` (the same
/// session again).
///
/// Session A (a 20 s timeout, on a server that allows it, so that the crate's reconnect loop
/// outlasts the restart) comes back and finds its node. Session B (3 s) never comes back: the
/// server was down longer than B's timeout, yet B's node is still there after the restart and
/// goes about one timeout after it. The simulator relies on it for `ServerRestart`.
#[test]
fn a_restarted_server_keeps_sessions_and_counts_their_timeouts_afresh() {
    common::init_logging();
    let mut server = ZkServer::builder()
        .max_session_timeout(Duration::from_secs(30))
        .start();
    let a_timeout = Duration::from_secs(20);
    let b_timeout = Duration::from_secs(3);
    let a = raw_client_with_timeout(&server.connect_string(), a_timeout);
    create(&a, "/r", CreateMode::Persistent).unwrap();
    let a_node = create(&a, "/r/a", CreateMode::Ephemeral).unwrap();
    let a_owner = a.exists(&a_node, false).unwrap().unwrap().ephemeral_owner;
    let proxy = Proxy::to_port(server.port());
    let b = raw_client_with_timeout(&proxy.connect_string(), b_timeout);
    let b_node = create(&b, "/r/b", CreateMode::Ephemeral).unwrap();
    let b_heard = Instant::now();
    proxy.set(Mode::Blackhole);

    server.stop();
    let stopped = Instant::now();
    thread::sleep(b_timeout + Duration::from_millis(500));
    let restarting = Instant::now();
    server.restart();
    let serving = Instant::now();
    let observer = raw_client(&server.connect_string());
    let first_look = Instant::now();
    let b_still_there = observer.exists(&b_node, false).unwrap().is_some();
    let mut b_gone = None;
    let deadline = Instant::now() + SOON;
    while Instant::now() < deadline {
        if observer.exists(&b_node, false).unwrap().is_none() {
            b_gone = Some(Instant::now());
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let b_gone = b_gone.expect("B's session expires after the restart");
    eprintln!(
        "restart: down {} ms (B silent {} ms before the restart), serving {} ms after the \
         launch; B's node seen {} ms after serving, gone {} ms after serving",
        ms(restarting - stopped),
        ms(restarting - b_heard),
        ms(serving - restarting),
        ms(first_look - serving),
        ms(b_gone - serving),
    );
    assert!(
        b_still_there,
        "B's node survives a downtime longer than B's timeout (looked {} ms after serving)",
        ms(first_look - serving)
    );
    assert!(
        b_gone - restarting >= b_timeout,
        "B expired {} ms after the launch, before its timeout",
        ms(b_gone - restarting)
    );
    let bound = b_timeout + TICK_TIME + Duration::from_millis(800);
    assert!(
        b_gone - serving <= bound,
        "B expired {} ms after the restart, over {} ms",
        ms(b_gone - serving),
        ms(bound)
    );

    // A reconnects by itself (the crate retries) within its timeout: same session, same node.
    wait_for(SOON, "A to reconnect", || a.exists("/r", false).is_ok());
    let stat = observer.exists(&a_node, false).unwrap();
    assert_eq!(stat.map(|s| s.ephemeral_owner), Some(a_owner));
    assert!(sessions(server.port()).iter().any(|s| s.0 == a_owner));
    abandon(b);
    drop(proxy);
}

/// Rule 7, a follower cut off from its leader answers reads from its stale copy, answers no
/// write (nor anything behind a write on the same session), and drops its clients after about
/// `syncLimit` × tick. Checks `src/sim/server.rs`, `World::stale_follower` (the snapshot, and
/// `stale_length` = 5 ticks = `syncLimit` 5 × `tickTime`) and `World::stale_end` (its clients
/// are dropped), and `src/sim/backend.rs`, `World::arrive` (`Tree::read` on the snapshot for a
/// read; a write, and everything after it, waits in `Stale::waiting`).
///
/// A `sync` cannot be sent with the `zookeeper` crate; the library's relay sends it, and
/// tests/ensemble_partition.rs checks the whole case end to end. The simulator relies on it for
/// `StaleFollower` and `StaleEnd`.
#[test]
fn a_cut_off_follower_serves_stale_reads_no_writes_then_drops_its_clients() {
    common::init_logging();
    let ensemble = Ensemble::builder(3).peer_proxies(true).start();
    let leader = ensemble.leader().expect("a leader");
    let f = (0..3).find(|&i| i != leader).unwrap();
    let serving = TICK_TIME * ensemble.sync_limit();
    let writer = raw_client(&ensemble.server_connect_string(leader));
    create(&writer, "/stale", CreateMode::Persistent).unwrap();
    // Long sessions: the crate must not give up on its own during the test.
    let session = Duration::from_secs(8);
    let reader = Arc::new(raw_client_with_timeout(
        &ensemble.server_connect_string(f),
        session,
    ));
    let blocked = Arc::new(raw_client_with_timeout(
        &ensemble.server_connect_string(f),
        session,
    ));
    wait_for(SOON, "the follower to have /stale", || {
        reader.exists("/stale", false).unwrap().is_some()
    });

    ensemble.isolate(f);
    let cut = Instant::now();
    create(&writer, "/fresh", CreateMode::Persistent).unwrap();
    let fresh = Instant::now();
    // A write on the follower, then a read behind it on the same session.
    let write = {
        let zk = blocked.clone();
        in_thread(move || create(&zk, "/from-follower", CreateMode::Persistent))
    };
    thread::sleep(Duration::from_millis(50));
    let read_behind = {
        let zk = blocked.clone();
        in_thread(move || zk.exists("/stale", false))
    };
    // Reads on another session: stale, until the follower drops the connection.
    let mut last_stale_read = None;
    let dropped = loop {
        let zk = reader.clone();
        let read = in_thread(move || zk.exists("/fresh", false));
        match read.recv_timeout(SOON) {
            Ok((Ok(None), at)) => last_stale_read = Some(at),
            Ok((Ok(Some(_)), _)) => panic!("a cut-off follower saw a write made after the cut"),
            Ok((Err(_), at)) => break at,
            Err(_) => panic!("a read on the follower neither answered nor failed"),
        }
        assert!(
            cut.elapsed() < SOON,
            "the follower never dropped its clients"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let write = write
        .recv_timeout(SOON)
        .expect("the write fails when dropped");
    let read_behind = read_behind
        .recv_timeout(SOON)
        .expect("the read behind it fails when dropped");
    let last_stale_read = last_stale_read.expect("at least one stale read");
    eprintln!(
        "stale follower (syncLimit x tick = {} ms): /fresh written {} ms after the cut; last \
         stale read {} ms, clients dropped {} ms after the cut; write: {:?} at {} ms; read \
         behind it: {:?} at {} ms",
        ms(serving),
        ms(fresh - cut),
        ms(last_stale_read - cut),
        ms(dropped - cut),
        write.0,
        ms(write.1 - cut),
        read_behind.0.as_ref().map(|_| ()),
        ms(read_behind.1 - cut),
    );
    assert!(
        last_stale_read > fresh,
        "stale reads after the leader's write"
    );
    assert!(write.0.is_err(), "the follower answers no write");
    assert!(write.1 >= dropped - Duration::from_millis(100));
    assert!(
        read_behind.0.is_err(),
        "a read behind a waiting write is not answered"
    );
    assert!(
        dropped - cut >= serving / 2,
        "dropped after {} ms",
        ms(dropped - cut)
    );
    assert!(
        dropped - cut <= serving * 2 + Duration::from_millis(1000),
        "dropped after {} ms",
        ms(dropped - cut)
    );
    assert!(
        writer.exists("/from-follower", false).unwrap().is_none(),
        "the follower's write never reached the leader"
    );
    drop(writer);
    ensemble.heal(f);
    if let Ok(reader) = Arc::try_unwrap(reader) {
        abandon(reader);
    }
    if let Ok(blocked) = Arc::try_unwrap(blocked) {
        abandon(blocked);
    }
}

/// Rule 8, a session's requests are applied and answered in the order they were sent. Checks
/// `src/sim/backend.rs`, `World::send` (`last_arrival`: a session's requests reach the server in
/// order) and `World::deliver_later` (`last_delivery`: its replies and watches reach the member
/// in order).
///
/// The requests are sent while the server is paused (SIGSTOP), 100 ms apart from threads of
/// their own, so they wait together and the server takes them all at once. The simulator relies
/// on it under every fault with slow messages (`slow_chance`, `slow_replies_only`): e.g. the
/// core's create of its node followed by the read of the group sees the node.
#[test]
fn a_sessions_requests_are_answered_in_order() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = Arc::new(raw_client(&server.connect_string()));
    create(&zk, "/order", CreateMode::Persistent).unwrap();
    let gap = Duration::from_millis(100);
    server.pause();
    let created = {
        let zk = zk.clone();
        in_thread(move || create(&zk, "/order/x", CreateMode::Persistent))
    };
    thread::sleep(gap);
    let seen = {
        let zk = zk.clone();
        in_thread(move || zk.exists("/order/x", false))
    };
    thread::sleep(gap);
    let deleted = {
        let zk = zk.clone();
        in_thread(move || zk.delete("/order/x", None))
    };
    thread::sleep(gap);
    let unseen = {
        let zk = zk.clone();
        in_thread(move || zk.exists("/order/x", false))
    };
    thread::sleep(gap);
    let sequential: Vec<_> = (0..4)
        .map(|_| {
            let zk = zk.clone();
            let rx = in_thread(move || create(&zk, "/order/s-", CreateMode::EphemeralSequential));
            thread::sleep(gap);
            rx
        })
        .collect();
    server.resume();
    assert_eq!(created.recv_timeout(SOON).unwrap().0.unwrap(), "/order/x");
    assert!(seen.recv_timeout(SOON).unwrap().0.unwrap().is_some());
    deleted.recv_timeout(SOON).unwrap().0.unwrap();
    assert!(unseen.recv_timeout(SOON).unwrap().0.unwrap().is_none());
    let names: Vec<String> = sequential
        .into_iter()
        .map(|rx| rx.recv_timeout(SOON).unwrap().0.unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "sequence numbers in the order of sending");
}
