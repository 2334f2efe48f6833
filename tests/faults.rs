//! Fault injection against real ZooKeeper servers, with worker processes
//! (`examples/worker.rs --trace-roles`) whose every change of `is_master()` is traced on
//! CLOCK_MONOTONIC (tests/common/traced_group.rs), and a checker (tests/common/overlap.rs, itself
//! tested in tests/overlap_checker.rs) that merges the traces.
//!
//! Each scenario runs with one master and with two, among three members; after it the checker's
//! longest overlap must be zero (not even two true reads at the same nanosecond), and the group
//! must come back to exactly N masters: the N members the traces show reading true are the first
//! N nodes of the group, and the group holds one node per live member. Takeover times (a master's
//! last true read to its successor's first) are printed against the session timeout; run with
//! `--nocapture` to see them.
//!
//! A seeded random nemesis draws faults in random order: `ZK_MASTER_NEMESIS_SEED` (decimal or
//! 0x-hex; printed by every run) and `ZK_MASTER_NEMESIS_RUNS` (default 2).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::overlap::monotonic_ns;
use common::proxy::Mode;
use common::traced_group::*;
use common::{four_letter_word, freeze_process, raw_client, signal, Ensemble, ZkServer};
use zookeeper::ZooKeeper;

// ---------------------------------------------------------------------------------------------
// Scenarios on a standalone server
// ---------------------------------------------------------------------------------------------

fn partition(length: Duration, label: &str) {
    common::init_logging();
    let server = ZkServer::start();
    for masters in [1, 2] {
        let name = format!("partition {label} n{masters}");
        let group = Group::start(
            &name,
            masters,
            3,
            &server.connect_string(),
            Some(server.port()),
        );
        let (m, _) = group.a_master();
        let mark = monotonic_ns();
        group.proxy(m).set(Mode::Blackhole);
        thread::sleep(length);
        group.proxy(m).set(Mode::Pass);
        let recovered = group.wait_recovered("the partition");
        print_step_down(&group, m, mark, "partition");
        group.check(
            &format!("partition of the master for {}", ms(length)),
            mark,
            recovered,
        );
        group.finish();
    }
}

#[test]
fn partition_of_the_master_shorter_than_the_session() {
    partition(SESSION / 2, "T/2");
}

#[test]
fn partition_of_the_master_longer_than_the_session() {
    partition(SESSION * 2, "2T");
}

fn pause(length: Duration, label: &str) {
    common::init_logging();
    let server = ZkServer::start();
    for masters in [1, 2] {
        let name = format!("sigstop {label} n{masters}");
        let group = Group::start(&name, masters, 3, &server.connect_string(), None);
        let (m, _) = group.a_master();
        let mark = monotonic_ns();
        signal(group.pid(m), libc::SIGSTOP);
        thread::sleep(length);
        signal(group.pid(m), libc::SIGCONT);
        let recovered = group.wait_recovered("SIGSTOP/SIGCONT");
        print_step_down(&group, m, mark, "sigstop");
        group.check(
            &format!("SIGSTOP of the master for {}", ms(length)),
            mark,
            recovered,
        );
        group.finish();
    }
}

#[test]
fn sigstop_of_the_master_shorter_than_the_session() {
    pause(SESSION / 2, "T/2");
}

#[test]
fn sigstop_of_the_master_longer_than_the_session() {
    pause(SESSION * 2, "2T");
}

#[test]
fn sigkill_of_the_master() {
    common::init_logging();
    let server = ZkServer::start();
    for masters in [1, 2] {
        let name = format!("sigkill n{masters}");
        let mut group = Group::start(&name, masters, 3, &server.connect_string(), None);
        let (m, _) = group.a_master();
        let mark = monotonic_ns();
        group.kill(m);
        let recovered = group.wait_recovered("SIGKILL");
        group.check("SIGKILL of the master", mark, recovered);
        group.finish();
    }
}

fn restart(down: Duration, label: &str) {
    common::init_logging();
    let mut server = ZkServer::start();
    for masters in [1, 2] {
        let name = format!("restart {label} n{masters}");
        let group = Group::start(&name, masters, 3, &server.connect_string(), None);
        let mark = monotonic_ns();
        let stopped = Instant::now();
        server.stop();
        group.wait_no_master("while the server is down");
        let all_down = stopped.elapsed();
        thread::sleep(down.saturating_sub(stopped.elapsed()));
        server.restart();
        let outage = stopped.elapsed();
        let recovered = group.wait_recovered("the restart");
        let beyond = if down.is_zero() && outage >= SESSION {
            " (meant to be within the session timeout: the machine is slow)"
        } else {
            ""
        };
        eprintln!(
            "[{name}] server down for {} ({}){beyond}, every member stepped down within {}",
            ms(outage),
            in_t(outage),
            ms(all_down)
        );
        group.check(
            &format!("server restart after {}", ms(outage)),
            mark,
            recovered,
        );
        group.finish();
    }
}

#[test]
fn standalone_restart_within_the_session() {
    // No wait: the outage is the JVM's start-up, below the session timeout on a quiet machine
    // (printed: on a loaded one it may take longer).
    restart(Duration::ZERO, "at once");
}

#[test]
fn standalone_restart_beyond_the_session() {
    restart(SESSION * 2, "after 2T");
}

#[test]
fn deleted_master_node_and_group() {
    common::init_logging();
    let server = ZkServer::start();
    for masters in [1, 2] {
        let name = format!("deleted n{masters}");
        let group = Group::start(&name, masters, 3, &server.connect_string(), None);
        let zk = raw_client(&server.connect_string());

        let (_, node) = group.a_master();
        let mark = monotonic_ns();
        zk.delete(&format!("{}/{node}", group.path), None)
            .expect("delete the master's node");
        let recovered = group.wait_recovered("the deletion of the master's node");
        group.check("master's node deleted by hand", mark, recovered);

        // The members put their nodes (and the group) back faster than this client deletes them
        // one at a time: they are paused meanwhile (a few milliseconds, well within their
        // leases), and hear of the deletions once resumed. Bounded retries all the same.
        let mark = monotonic_ns();
        let pids: Vec<u32> = group
            .live()
            .map(|i| group.members[i].process.pid())
            .collect();
        pids.iter().for_each(|&pid| freeze_process(pid, true));
        let mut attempts = 0;
        while zk.exists(&group.path, false).expect("exists").is_some() {
            attempts += 1;
            assert!(attempts < 200, "could not delete the group");
            for child in zk.get_children(&group.path, false).unwrap_or_default() {
                zk.delete(&format!("{}/{child}", group.path), None).ok();
            }
            zk.delete(&group.path, None).ok();
        }
        pids.iter().for_each(|&pid| freeze_process(pid, false));
        let recovered = group.wait_recovered("the deletion of the group");
        group.check(
            &format!("group deleted by hand ({attempts} attempt(s))"),
            mark,
            recovered,
        );
        drop(zk);
        group.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// A 3-server ensemble
// ---------------------------------------------------------------------------------------------

/// The server whose `cons` lists the session that owns `node`.
fn server_of_node(ensemble: &Ensemble, zk: &ZooKeeper, node: &str) -> Option<usize> {
    let owner = zk.exists(node, false).ok()??.ephemeral_owner;
    let needle = format!("sid=0x{:x}", owner as u64);
    (0..ensemble.size()).find(|&i| {
        ensemble.mode(i).is_some()
            && four_letter_word(ensemble.port(i), "cons").is_some_and(|r| r.contains(&needle))
    })
}

#[test]
fn ensemble_server_loss_leader_loss_and_quorum_loss() {
    common::init_logging();
    let mut ensemble = Ensemble::start(3);
    for masters in [1, 2] {
        let name = format!("ensemble n{masters}");
        let group = Group::start(&name, masters, 3, &ensemble.connect_string(), None);

        // 1. Kill the server the (first) master is connected to.
        let (_, node) = group.a_master();
        let path = format!("{}/{node}", group.path);
        let mut server = None;
        common::wait_for(SOON, "the master's server in `cons`", || {
            let zk = raw_client(&ensemble.connect_string());
            server = server_of_node(&ensemble, &zk, &path);
            server.is_some()
        });
        let server = server.expect("found");
        let mark = monotonic_ns();
        ensemble.kill(server);
        let recovered = group.wait_recovered("the loss of the master's server");
        group.check(
            &format!("kill of server {server}, the master's"),
            mark,
            recovered,
        );
        ensemble.restart(server);
        ensemble.wait_quorum();

        // 2. Kill the leader.
        let leader = ensemble.leader().expect("a leader");
        let mark = monotonic_ns();
        ensemble.kill(leader);
        ensemble.wait_quorum();
        let recovered = group.wait_recovered("the loss of the leader");
        group.check(
            &format!("kill of server {leader}, the leader"),
            mark,
            recovered,
        );
        ensemble.restart(leader);
        ensemble.wait_quorum();

        // 3. Take quorum away, then give it back.
        let mark = monotonic_ns();
        let gone = [(leader + 1) % 3, (leader + 2) % 3];
        let stopped = Instant::now();
        for &i in &gone {
            ensemble.kill(i);
        }
        group.wait_no_master("without a quorum");
        let all_down = stopped.elapsed();
        thread::sleep(SESSION.saturating_sub(stopped.elapsed()));
        for &i in &gone {
            ensemble.restart(i);
        }
        ensemble.wait_quorum();
        let outage = stopped.elapsed();
        let recovered = group.wait_recovered("the return of the quorum");
        eprintln!(
            "[{name}] no quorum for {} ({}), every member stepped down within {}",
            ms(outage),
            in_t(outage),
            ms(all_down)
        );
        group.check(
            &format!("quorum lost for {} (servers {gone:?})", ms(outage)),
            mark,
            recovered,
        );
        group.finish();
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded random nemesis
// ---------------------------------------------------------------------------------------------

/// xorshift64*: tiny, seedable, good enough to draw faults.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `low..=high`.
    fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }

    /// Between `low` and `high` hundredths of the session timeout.
    fn session_part(&mut self, low: u64, high: u64) -> Duration {
        SESSION * self.range(low, high) as u32 / 100
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
        }
        _ => default,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Blackhole a member's proxy for a while.
    Partition { master: bool, length: Duration },
    /// SIGSTOP a member for a while.
    Pause { master: bool, length: Duration },
    /// SIGKILL the (first) master and start a new member.
    Kill,
    /// Close a member's connections.
    Cut { master: bool },
    /// Add latency to each chunk of a member's traffic for a while.
    Delay {
        master: bool,
        latency: Duration,
        length: Duration,
    },
    /// Delete the (first) master's node by hand.
    DeleteNode,
    /// Kill the server and start it again with its data after a while.
    Restart { down: Duration },
}

impl Fault {
    /// A random fault.
    fn draw(rng: &mut Rng) -> Fault {
        let master = rng.range(0, 3) != 0; // mostly the master
        let kind = rng.range(0, 6);
        match kind {
            0 => Fault::Partition {
                master,
                length: rng.session_part(10, 200),
            },
            1 => Fault::Pause {
                master,
                length: rng.session_part(10, 200),
            },
            2 => Fault::Kill,
            3 => Fault::Cut { master },
            4 => Fault::Delay {
                master,
                latency: rng.session_part(5, 40),
                length: rng.session_part(50, 200),
            },
            5 => Fault::DeleteNode,
            _ => Fault::Restart {
                down: rng.session_part(0, 150),
            },
        }
    }
}

/// Time for faults in one nemesis run; no new fault starts after it.
const NEMESIS_BUDGET: Duration = Duration::from_secs(40);
const NEMESIS_MAX_FAULTS: usize = 6;

#[test]
fn seeded_random_nemesis() {
    common::init_logging();
    let seed = env_u64("ZK_MASTER_NEMESIS_SEED", 0x5eed_2024);
    let runs = env_u64("ZK_MASTER_NEMESIS_RUNS", 2);
    let mut server = ZkServer::start();
    for run in 0..runs {
        let run_seed = seed.wrapping_add(run);
        let mut rng = Rng::new(run_seed);
        let count = rng.range(3, 5) as usize;
        let masters = rng.range(1, 2) as usize;
        let name = format!("nemesis run {run} seed {run_seed:#x} n{masters} of {count}");
        eprintln!("[{name}] starting (ZK_MASTER_NEMESIS_SEED={seed:#x})");
        let mut group = Group::start(
            &name,
            masters,
            count,
            &server.connect_string(),
            Some(server.port()),
        );
        let started = Instant::now();
        let mut faults = Vec::new();
        while faults.len() < NEMESIS_MAX_FAULTS && started.elapsed() < NEMESIS_BUDGET {
            let fault = Fault::draw(&mut rng);
            let (master, _) = group.a_master();
            let live: Vec<usize> = group.live().collect();
            let target = |pick_master: bool, rng: &mut Rng| {
                if pick_master {
                    master
                } else {
                    live[rng.range(0, live.len() as u64 - 1) as usize]
                }
            };
            let mark = monotonic_ns();
            let what = match fault {
                Fault::Partition { master, length } => {
                    let i = target(master, &mut rng);
                    group.proxy(i).set(Mode::Blackhole);
                    thread::sleep(length);
                    group.proxy(i).set(Mode::Pass);
                    format!("partition of w{i} for {}", ms(length))
                }
                Fault::Pause { master, length } => {
                    let i = target(master, &mut rng);
                    signal(group.pid(i), libc::SIGSTOP);
                    thread::sleep(length);
                    signal(group.pid(i), libc::SIGCONT);
                    format!("SIGSTOP of w{i} for {}", ms(length))
                }
                Fault::Kill => {
                    group.kill(master);
                    group.spawn_member();
                    format!("SIGKILL of w{master}, a new member joins")
                }
                Fault::Cut { master } => {
                    let i = target(master, &mut rng);
                    group.proxy(i).cut(Mode::Pass);
                    format!("connections of w{i} cut")
                }
                Fault::Delay {
                    master,
                    latency,
                    length,
                } => {
                    let i = target(master, &mut rng);
                    group.proxy(i).set(Mode::Delay(latency));
                    thread::sleep(length);
                    group.proxy(i).set(Mode::Pass);
                    format!("{} latency for w{i} during {}", ms(latency), ms(length))
                }
                Fault::DeleteNode => {
                    let (_, node) = group.a_master();
                    let zk = raw_client(&server.connect_string());
                    zk.delete(&format!("{}/{node}", group.path), None).ok();
                    format!("node {node} of w{master} deleted by hand")
                }
                Fault::Restart { down } => {
                    server.stop();
                    thread::sleep(down);
                    server.restart();
                    format!("server restart after {}", ms(down))
                }
            };
            let recovered = group.wait_recovered(&what);
            group.check(&what, mark, recovered);
            faults.push(what);
        }
        let report = group.finish();
        let takeovers: Vec<String> = report
            .takeover_times()
            .iter()
            .map(|d| format!("{} ({})", ms(*d), in_t(*d)))
            .collect();
        let line = format!(
            "[{name}] {} fault(s) in {:?}: longest overlap {:?}; takeovers {}",
            faults.len(),
            started.elapsed(),
            report.longest_overlap(),
            takeovers.join(", ")
        );
        eprintln!("{line}");
    }
}
