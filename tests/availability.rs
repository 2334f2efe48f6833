//! Keeping the session (issue 9): through a flapping network (connections cut every 1.5 s and
//! every 0.5 s, with a 4 s session), and through a standalone server restarted for longer than
//! the session had left (the server restores the session from its log and counts its timeout
//! afresh). The `zookeeper` crate gives up in both cases; the library resumes the same session.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{init_logging, proxy::Mode, proxy::Proxy, wait_for, ZkServer, SOON};
use zk_master::{Config, Connection, Election, Role};

/// The session timeout of the scenarios.
const TIMEOUT: Duration = Duration::from_secs(4);

/// Counts, by polling every 5 ms, what a member went through: sessions lost (its connection
/// turned `Lost`), mastership lost, and the time neither it nor `other` was master.
struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Seen>>,
}

/// What a [`Watch`] saw.
#[derive(Debug)]
struct Seen {
    sessions_lost: usize,
    masterships_lost: usize,
    masterless: Duration,
}

impl Watch {
    fn start(member: Arc<Election>, other: Arc<Election>) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = thread::spawn(move || {
            let mut seen = Seen {
                sessions_lost: 0,
                masterships_lost: 0,
                masterless: Duration::ZERO,
            };
            let mut was_lost = false;
            let mut was_master = member.is_master();
            let mut last = Instant::now();
            while !stopping.load(Ordering::SeqCst) {
                let is_lost = member.connection().0 == Connection::Lost;
                seen.sessions_lost += usize::from(is_lost && !was_lost);
                was_lost = is_lost;
                let is_master = member.is_master();
                seen.masterships_lost += usize::from(was_master && !is_master);
                was_master = is_master;
                let now = Instant::now();
                if !is_master && !other.is_master() {
                    seen.masterless += now - last;
                }
                last = now;
                thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        Watch {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("watch thread"))
            .expect("started")
    }
}

fn config(connect: String, group: &str) -> Config {
    Config::new(connect)
        .group(group)
        .session_timeout(TIMEOUT)
        .connect_timeout(SOON)
}

/// A master joined through `master_connect`, then a slave through `slave_connect`, each
/// waited for in its role.
fn master_and_slave(
    master_connect: String,
    slave_connect: String,
    group: &str,
) -> (Arc<Election>, Arc<Election>) {
    let master = Arc::new(Election::join(config(master_connect, group)).expect("join"));
    assert!(
        master.wait_until_master(SOON),
        "the first member became master"
    );
    let slave = Arc::new(Election::join(config(slave_connect, group)).expect("join"));
    wait_for(SOON, "the second member to be slave", || {
        slave.role() == Role::Slave
    });
    (master, slave)
}

/// Cuts the master's connections `cuts` times, every `every`; the member must keep its session
/// (and node) through all of them.
fn flap(group: &str, every: Duration, cuts: usize) {
    init_logging();
    let server = ZkServer::start();
    let proxy = Proxy::to_port(server.port());
    let (master, slave) = master_and_slave(proxy.connect_string(), server.connect_string(), group);
    let name = master.member_name();
    let watch = Watch::start(master.clone(), slave.clone());
    let started = Instant::now();
    for i in 1..=cuts {
        let next = started + every * i as u32;
        thread::sleep(next.saturating_duration_since(Instant::now()));
        proxy.cut(Mode::Pass);
    }
    // Let the last reconnect land, then look.
    wait_for(SOON, "the master to be connected again", || {
        master.connection().0 == Connection::Connected
    });
    let seen = watch.finish();
    eprintln!("flap every {every:?}, {cuts} cuts: {seen:?}");
    assert_eq!(
        seen.sessions_lost, 0,
        "sessions lost through {cuts} cuts every {every:?}"
    );
    assert_eq!(master.member_name(), name, "the member node was kept");
    wait_for(SOON, "the master to hold its lease again", || {
        master.is_master()
    });
}

#[test]
fn session_kept_through_cuts_every_1500_ms() {
    flap("/avail-flap-1500", Duration::from_millis(1500), 60);
}

#[test]
fn session_kept_through_cuts_every_500_ms() {
    flap("/avail-flap-500", Duration::from_millis(500), 60);
}

/// A standalone server stopped for longer than a whole session timeout, so longer than the
/// time the session had left, then started again: it restores the session from its log with a
/// fresh timeout, and the member resumes it, keeping its node and its mastership.
#[test]
fn session_kept_through_a_standalone_restart_longer_than_its_time_left() {
    init_logging();
    let mut server = ZkServer::start();
    let group = "/avail-restart";
    let (master, slave) = master_and_slave(server.connect_string(), server.connect_string(), group);
    let (name, token) = (master.member_name(), master.fencing_token());
    let watch = Watch::start(master.clone(), slave.clone());
    server.stop();
    let stopped = Instant::now();
    thread::sleep(TIMEOUT + Duration::from_millis(500));
    server.restart();
    let down = stopped.elapsed();
    assert!(master.wait_until_master(SOON), "the master is master again");
    let seen = watch.finish();
    eprintln!("standalone server down {down:?} (session {TIMEOUT:?}): {seen:?}");
    assert_eq!(seen.sessions_lost, 0, "the session was lost");
    assert_eq!(master.member_name(), name, "the member node was kept");
    assert_eq!(master.fencing_token(), token, "the same node");
    assert_eq!(slave.role(), Role::Slave, "the slave stayed slave");
}
