//! Fault injection against real ZooKeeper servers, with worker processes
//! (`examples/worker.rs --trace-roles`) whose every change of `is_master()` is traced on
//! CLOCK_MONOTONIC, and a checker (tests/common/overlap.rs) that merges the traces.
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

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::overlap::{self, monotonic_ns, Event, Report, Source, TraceDir};
use common::proxy::{Mode, Proxy};
use common::{four_letter_word, raw_client, signal, worker_binary, Ensemble, ZkServer};
use zookeeper::ZooKeeper;

/// Session timeout of every worker. The servers' tick is 200 ms: sessions expire on 200 ms
/// boundaries. 2 s leaves room for a standalone server's restart (0.4-1.4 s seen on this
/// 2-core machine) to stay within it.
const SESSION: Duration = Duration::from_millis(2000);
/// Bound on the wait for a group to come back to N masters after a fault.
const RECOVERY: Duration = Duration::from_secs(30);
/// How long the recovered state must hold (a bit more than one lease renewal).
const HOLD: Duration = Duration::from_millis(500);
/// Bound on every other wait for something that should happen within a few session timeouts.
const SOON: Duration = Duration::from_secs(15);

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `d` in session timeouts.
fn in_t(d: Duration) -> String {
    format!("{:.2} T", d.as_secs_f64() / SESSION.as_secs_f64())
}

/// The sequence number of a member node name such as `worker0000000003`.
fn sequence(name: &str) -> u64 {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// A group of traced worker processes
// ---------------------------------------------------------------------------------------------

/// An `examples/worker` process whose log goes to a file next to its trace (the `zookeeper`
/// crate logs every attempt of its reconnect loop: thousands of lines during an outage).
struct Process {
    child: Child,
}

impl Process {
    fn spawn(args: &[&str], log: &Path) -> Process {
        let log = File::create(log).expect("create the worker's log");
        let child = Command::new(worker_binary())
            .args(args)
            .env("RUST_LOG", "info,zookeeper=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn the example worker");
        Process { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit (bounded) and returns the exit code.
    fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + SOON;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!("worker {} did not exit within {SOON:?}", self.pid());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Member {
    label: String,
    trace: PathBuf,
    log: PathBuf,
    process: Process,
    /// Its own proxy to the server, when the group uses proxies.
    proxy: Option<Proxy>,
    killed_at: Option<u64>,
}

/// Worker processes in one election group, each tracing its role to a file.
struct Group {
    name: String,
    path: String,
    masters: usize,
    /// Direct connect string of the server(s), for the raw client and proxy-less members.
    connect: String,
    /// Port every member's own proxy forwards to; `None`: members connect directly.
    proxy_to: Option<u16>,
    traces: TraceDir,
    members: Vec<Member>,
}

impl Group {
    /// Starts `count` members one after the other (each registered before the next starts, so
    /// the first N are the masters) and waits until the group is settled.
    fn start(
        name: &str,
        masters: usize,
        count: usize,
        connect: &str,
        proxy_to: Option<u16>,
    ) -> Group {
        let path = format!("/faults/{}", name.replace([' ', '/', ','], "-"));
        let mut group = Group {
            name: name.to_owned(),
            path,
            masters,
            connect: connect.to_owned(),
            proxy_to,
            traces: TraceDir::new(&name.replace([' ', '/', ','], "-")),
            members: Vec::new(),
        };
        for _ in 0..count {
            group.spawn_member();
        }
        group.wait_recovered("start");
        group
    }

    /// Starts one more member and waits until it has registered.
    fn spawn_member(&mut self) -> usize {
        let i = self.members.len();
        let label = format!("w{i}");
        let trace = self.traces.file(&format!("{label}.trace"));
        let log = self.traces.file(&format!("{label}.log"));
        let proxy = self.proxy_to.map(Proxy::to_port);
        let connect = proxy
            .as_ref()
            .map_or(self.connect.clone(), Proxy::connect_string);
        let process = Process::spawn(
            &[
                "--connect",
                &connect,
                "--group",
                &self.path,
                "--masters",
                &self.masters.to_string(),
                "--session-timeout-ms",
                &SESSION.as_millis().to_string(),
                "--data",
                &label,
                "--trace-roles",
                trace.to_str().expect("a UTF-8 temp path"),
            ],
            &log,
        );
        self.wait_registered(&label);
        self.members.push(Member {
            label,
            trace,
            log,
            process,
            proxy,
            killed_at: None,
        });
        i
    }

    /// Waits until a node of the group holds `label` as its data (each member's data is its
    /// label).
    fn wait_registered(&self, label: &str) {
        let zk = raw_client(&self.connect);
        common::wait_for(SOON, &format!("{} to register", label), || {
            let children = zk.get_children(&self.path, false).unwrap_or_default();
            children.iter().any(|child| {
                zk.get_data(&format!("{}/{child}", self.path), false)
                    .is_ok_and(|(data, _)| data == label.as_bytes())
            })
        });
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].killed_at.is_none())
    }

    fn source(&self, i: usize) -> Source {
        let m = &self.members[i];
        Source::read(&m.label, &m.trace).killed_at(m.killed_at)
    }

    fn sources(&self) -> Vec<Source> {
        (0..self.members.len()).map(|i| self.source(i)).collect()
    }

    /// The checker over every trace so far.
    fn report(&self) -> Report {
        overlap::check(self.masters, &self.sources(), monotonic_ns())
    }

    /// Live members whose last traced read returned true, with their node names.
    fn masters_now(&self) -> Vec<(usize, String)> {
        self.live()
            .filter_map(|i| {
                let source = self.source(i);
                source.current_master().map(|name| (i, name.to_owned()))
            })
            .collect()
    }

    /// The live master with the oldest node (for N = 2, the first of the two).
    fn a_master(&self) -> (usize, String) {
        self.masters_now()
            .into_iter()
            .min_by_key(|(_, name)| sequence(name))
            .unwrap_or_else(|| panic!("{}: no master right now", self.name))
    }

    /// Waits until the traces show exactly N masters, they are the first N nodes of the group,
    /// and the group has one node per live member, and that this holds for [`HOLD`]. Returns
    /// how long that took (the hold included).
    fn wait_recovered(&self, what: &str) -> Duration {
        let started = Instant::now();
        let zk = raw_client(&self.connect);
        let mut held_since: Option<Instant> = None;
        let mut last = String::new();
        loop {
            let state = self.settled(&zk);
            match state {
                Ok(()) => {
                    let since = *held_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= HOLD {
                        return started.elapsed();
                    }
                }
                Err(e) => {
                    held_since = None;
                    last = e;
                }
            }
            if started.elapsed() > RECOVERY {
                panic!(
                    "{} after {what}: not back to {} master(s) within {RECOVERY:?}: {last}\n{}",
                    self.name,
                    self.masters,
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn settled(&self, zk: &ZooKeeper) -> Result<(), String> {
        let masters = self.masters_now();
        if masters.len() != self.masters {
            return Err(format!("traces show masters {masters:?}"));
        }
        let mut children = zk
            .get_children(&self.path, false)
            .map_err(|e| format!("get_children: {e:?}"))?;
        children.sort_by_key(|c| sequence(c));
        let live = self.live().count();
        if children.len() != live {
            return Err(format!("{live} live members, nodes {children:?}"));
        }
        let first: HashSet<&String> = children.iter().take(self.masters).collect();
        let traced: HashSet<&String> = masters.iter().map(|(_, name)| name).collect();
        if first != traced {
            return Err(format!(
                "traces show masters {masters:?}, the group's first nodes are {first:?}"
            ));
        }
        Ok(())
    }

    /// Waits until no live member reads true.
    fn wait_no_master(&self, what: &str) {
        common::wait_for(SOON, &format!("{}: no master {what}", self.name), || {
            self.masters_now().is_empty()
        });
    }

    fn pid(&self, i: usize) -> u32 {
        self.members[i].process.pid()
    }

    fn proxy(&self, i: usize) -> &Proxy {
        self.members[i]
            .proxy
            .as_ref()
            .expect("this group's members have proxies")
    }

    /// SIGKILL; the kill time closes its interval if it was master.
    fn kill(&mut self, i: usize) {
        self.members[i].process.kill();
        self.members[i].killed_at = Some(monotonic_ns());
    }

    /// The last true read of member `i` at or after `since`, or `None` if it still reads true
    /// (or never did).
    fn stepped_down_at(&self, i: usize, since: u64) -> Option<u64> {
        let source = self.source(i);
        source.events.iter().find_map(|e| match e {
            Event::Slave { last_true, .. } if *last_true >= since => Some(*last_true),
            _ => None,
        })
    }

    /// Checks the traces after a fault that began at `mark`: no overlap, and prints the
    /// takeovers since then against the session timeout.
    fn check(&self, what: &str, mark: u64, recovered: Duration) -> Report {
        let report = self.report();
        report.assert_no_overlap(&format!("{}: {what} (fault at {mark} ns)", self.name));
        let mut line = format!(
            "[{} | {what}] longest overlap {:?}, recovered in {}",
            self.name,
            report.longest_overlap(),
            ms(recovered)
        );
        // From a little before the fault: a process frozen by SIGSTOP read true for the last
        // time just before it. The group was settled (no loss) for HOLD before every fault.
        let takeovers = report.takeovers_since(mark.saturating_sub(50_000_000));
        if takeovers.is_empty() {
            line.push_str("; no master lost its place");
        }
        for t in takeovers {
            match t.took {
                Some(took) => line.push_str(&format!(
                    "; {} -> {}: takeover {} ({})",
                    t.lost,
                    t.successor.as_deref().unwrap_or("?"),
                    ms(took),
                    in_t(took)
                )),
                None => line.push_str(&format!("; {} -> {}", t.lost, t.describe())),
            }
        }
        eprintln!("{line}");
        report
    }

    /// SIGTERM to every live member (they resign and write their exit lines), waits for their
    /// exits, and checks the whole traces once more.
    fn finish(mut self) -> Report {
        for i in self.live().collect::<Vec<_>>() {
            signal(self.pid(i), libc::SIGCONT); // in case a test left it frozen
            signal(self.pid(i), libc::SIGTERM);
        }
        for i in self.live().collect::<Vec<_>>() {
            assert_eq!(self.members[i].process.wait_exit(), Some(0));
        }
        let report = overlap::check(self.masters, &self.sources(), monotonic_ns());
        report.assert_no_overlap(&format!("{}: whole run", self.name));
        for m in &mut self.members {
            m.proxy.take();
        }
        report
    }
}

impl Drop for Group {
    /// When the test fails: every trace, and the end of every worker's log without the crate's
    /// reconnect noise. The files stay (see [`TraceDir`]).
    fn drop(&mut self) {
        if !thread::panicking() {
            return;
        }
        for m in &self.members {
            let trace = fs::read_to_string(&m.trace).unwrap_or_default();
            let log = fs::read_to_string(&m.log).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("zookeeper::io"))
                .collect();
            eprintln!(
                "---- {} {} (killed at {:?}) trace:\n{trace}---- {} log (end):\n{}",
                self.name,
                m.label,
                m.killed_at,
                m.label,
                lines[lines.len().saturating_sub(25)..].join("\n")
            );
        }
    }
}

/// Prints when the targeted master stepped down relative to the fault start.
fn print_step_down(group: &Group, i: usize, fault_at: u64, what: &str) {
    let line = match group.stepped_down_at(i, fault_at.saturating_sub(50_000_000)) {
        Some(last_true) if last_true >= fault_at => {
            let d = overlap::ns(last_true - fault_at);
            format!(
                "[{} | {what}] {} read true for the last time {} ({}) after the fault began",
                group.name,
                group.members[i].label,
                ms(d),
                in_t(d)
            )
        }
        Some(_) => format!(
            "[{} | {what}] {} read true for the last time before the fault began",
            group.name, group.members[i].label
        ),
        None => format!(
            "[{} | {what}] {} kept reading true throughout",
            group.name, group.members[i].label
        ),
    };
    eprintln!("{line}");
}

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

        // The members put their nodes (and the group) back as fast as they go: retry, bounded.
        let mark = monotonic_ns();
        let mut attempts = 0;
        while zk.exists(&group.path, false).expect("exists").is_some() {
            attempts += 1;
            assert!(attempts < 200, "could not delete the group");
            for child in zk.get_children(&group.path, false).unwrap_or_default() {
                zk.delete(&format!("{}/{child}", group.path), None).ok();
            }
            zk.delete(&group.path, None).ok();
        }
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

// ---------------------------------------------------------------------------------------------
// The checker on synthetic traces
// ---------------------------------------------------------------------------------------------

const MS: u64 = 1_000_000;

fn master(at: u64, member: &str) -> Event {
    Event::Master {
        at: at * MS,
        member: member.into(),
    }
}

fn slave(at: u64, member: &str, last_true: u64) -> Event {
    Event::Slave {
        at: at * MS,
        member: member.into(),
        last_true: last_true * MS,
    }
}

#[test]
fn checker_parses_traces_and_ignores_a_torn_last_line() {
    let text = "100 worker0000000001 master\n250 worker0000000001 slave 249\n300 worker00";
    let events = overlap::parse(text).expect("parse");
    assert_eq!(
        events,
        [
            Event::Master {
                at: 100,
                member: "worker0000000001".into()
            },
            Event::Slave {
                at: 250,
                member: "worker0000000001".into(),
                last_true: 249
            }
        ]
    );
    assert!(overlap::parse("1 a master\nx a master\n").is_err());
    assert!(overlap::parse("1 a boss\n").is_err());
    assert!(overlap::parse("1 a slave\n").is_err());
    assert_eq!(overlap::parse("").unwrap(), []);
}

#[test]
fn checker_finds_no_overlap_in_a_clean_handover() {
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(130, "n2")]);
    let report = overlap::check(1, &[a, b], 500 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    assert_eq!(report.longest_overlap(), Duration::ZERO);
    assert_eq!(report.takeovers.len(), 1);
    let t = &report.takeovers[0];
    assert_eq!(t.lost, "a/n1");
    assert_eq!(t.successor.as_deref(), Some("b/n2"));
    assert_eq!(t.took, Some(Duration::from_millis(30)));
    report.assert_no_overlap("clean");
}

#[test]
fn checker_measures_the_longest_overlap() {
    // a is master 0..100, b from 60 (40 ms overlap), c from 300 while a is master again 290..400.
    let a = Source::new(
        "a",
        vec![
            master(0, "n1"),
            slave(101, "n1", 100),
            master(290, "n4"),
            slave(401, "n4", 400),
        ],
    );
    let b = Source::new("b", vec![master(60, "n2"), slave(201, "n2", 200)]);
    let c = Source::new("c", vec![master(300, "n3")]);
    let report = overlap::check(1, &[a, b, c], 1000 * MS);
    assert_eq!(report.overlaps.len(), 2, "{report}");
    assert_eq!(report.overlaps[0].start, 60 * MS);
    assert_eq!(report.overlaps[0].end, 100 * MS);
    assert_eq!(report.overlaps[1].length(), Duration::from_millis(100));
    assert_eq!(report.longest_overlap(), Duration::from_millis(100));
    assert_eq!(report.overlaps[1].most, 2);
}

#[test]
#[should_panic(expected = "1 overlap(s), longest 40ms")]
fn checker_assertion_fails_on_an_overlap() {
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(60, "n2")]);
    overlap::check(1, &[a, b], 1000 * MS).assert_no_overlap("synthetic");
}

#[test]
fn checker_counts_against_n_masters() {
    // Two places: a and b masters together is fine; c joining them is an overlap of 10 ms.
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(0, "n2")]);
    let c = Source::new("c", vec![master(90, "n3")]);
    let report = overlap::check(2, &[a.clone(), b.clone(), c.clone()], 200 * MS);
    assert_eq!(
        report.longest_overlap(),
        Duration::from_millis(10),
        "{report}"
    );
    assert_eq!(report.overlaps[0].most, 3);
    let c_late = Source::new("c", vec![master(110, "n3")]);
    let report = overlap::check(2, &[a, b, c_late], 200 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    assert_eq!(report.takeovers.len(), 1);
    assert_eq!(report.takeovers[0].took, Some(Duration::from_millis(10)));
}

#[test]
fn checker_matches_an_early_successor_with_a_negative_gap() {
    // b reads true 5 ms before a stops: the successor of a's loss is b, 5 ms early; c then
    // follows b's loss normally.
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(95, "n2"), slave(301, "n2", 300)]);
    let c = Source::new("c", vec![master(320, "n3")]);
    let report = overlap::check(1, &[a, b, c], 1000 * MS);
    assert_eq!(report.longest_overlap(), Duration::from_millis(5));
    let t = &report.takeovers[0];
    assert_eq!(
        (t.successor.as_deref(), t.gap_ns, t.took),
        (Some("b/n2"), Some(-5_000_000), None)
    );
    assert_eq!(t.describe(), "b/n2 5ms BEFORE (overlap)");
    assert_eq!(report.takeovers[1].took, Some(Duration::from_millis(20)));
}

#[test]
fn checker_touching_intervals_overlap_for_zero_time() {
    let a = Source::new("a", vec![master(0, "n1"), slave(101, "n1", 100)]);
    let b = Source::new("b", vec![master(100, "n2")]);
    let report = overlap::check(1, &[a, b], 200 * MS);
    assert_eq!(report.overlaps.len(), 1, "{report}");
    assert_eq!(report.longest_overlap(), Duration::ZERO);
}

#[test]
fn checker_ends_a_killed_master_at_its_kill_time() {
    // a is killed at 500 while master: without the kill time its interval would be open and
    // overlap b (master from 1600) up to `now`.
    let a = Source::new("a", vec![master(0, "n1")]);
    let b = Source::new("b", vec![master(1600, "n2")]);
    let open = overlap::check(1, &[a.clone(), b.clone()], 2000 * MS);
    assert_eq!(open.longest_overlap(), Duration::from_millis(400));
    let report = overlap::check(1, &[a.killed_at(Some(500 * MS)), b], 2000 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    assert_eq!(report.takeovers[0].how, overlap::End::Killed);
    assert_eq!(report.takeovers[0].took, Some(Duration::from_millis(1100)));
    // A killed process is not a current master.
    let killed = Source::new("a", vec![master(0, "n1")]).killed_at(Some(1));
    assert_eq!(killed.current_master(), None);
}

#[test]
fn checker_takeovers_follow_losses_in_order_and_a_member_may_come_back() {
    // Two places. a and b lose theirs at 100 and 110; c takes one at 150, a (with a new node)
    // the other at 400. Then c exits at 600 and nobody follows yet.
    let a = Source::new(
        "a",
        vec![master(0, "n1"), slave(101, "n1", 100), master(400, "n5")],
    );
    let b = Source::new("b", vec![master(0, "n2"), slave(111, "n2", 110)]);
    let c = Source::new("c", vec![master(150, "n3"), slave(600, "n3", 600)]);
    let report = overlap::check(2, &[a, b, c], 1000 * MS);
    assert!(report.overlaps.is_empty(), "{report}");
    let seen: Vec<(String, Option<String>, Option<Duration>)> = report
        .takeovers
        .iter()
        .map(|t| (t.lost.clone(), t.successor.clone(), t.took))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "a/n1".to_owned(),
                Some("c/n3".to_owned()),
                Some(Duration::from_millis(50))
            ),
            (
                "b/n2".to_owned(),
                Some("a/n5".to_owned()),
                Some(Duration::from_millis(290))
            ),
            ("c/n3".to_owned(), None, None),
        ]
    );
    assert_eq!(report.takeovers_since(105 * MS).len(), 2);
    // a's last line is a master line: it reads true now.
    let a_now = Source::new(
        "a",
        vec![master(0, "n1"), slave(2, "n1", 1), master(3, "n5")],
    );
    assert_eq!(a_now.current_master(), Some("n5"));
}

#[test]
fn checker_reports_malformed_sequences() {
    let twice = Source::new("a", vec![master(0, "n1"), master(10, "n2")]);
    let orphan = Source::new("b", vec![slave(5, "n3", 4)]);
    let report = overlap::check(1, &[twice, orphan], 100 * MS);
    assert_eq!(report.anomalies.len(), 2, "{:?}", report.anomalies);
}

// ---------------------------------------------------------------------------------------------
// The proxy against a plain echo server
// ---------------------------------------------------------------------------------------------

mod proxy_checks {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread;
    use std::time::{Duration, Instant};

    use super::common::proxy::{Mode, Proxy};

    /// An echo server on loopback that stops when dropped.
    struct Echo {
        port: u16,
        stop: Arc<AtomicBool>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Echo {
        fn start() -> Echo {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = thread::spawn(move || {
                let mut conns: Vec<thread::JoinHandle<()>> = Vec::new();
                while !flag.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            let flag = flag.clone();
                            conns.push(thread::spawn(move || {
                                s.set_nonblocking(false).unwrap();
                                s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
                                let mut buf = [0u8; 4096];
                                while !flag.load(Ordering::SeqCst) {
                                    match s.read(&mut buf) {
                                        Ok(0) => break,
                                        Ok(n) => {
                                            if s.write_all(&buf[..n]).is_err() {
                                                break;
                                            }
                                        }
                                        Err(e)
                                            if matches!(
                                                e.kind(),
                                                ErrorKind::WouldBlock | ErrorKind::TimedOut
                                            ) => {}
                                        Err(_) => break,
                                    }
                                }
                            }));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            });
            Echo {
                port,
                stop,
                thread: Some(thread),
            }
        }
    }

    impl Drop for Echo {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::SeqCst);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    fn connect(proxy: &Proxy) -> TcpStream {
        let s = TcpStream::connect(proxy.addr()).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends `msg` and reads its echo, or `None` if nothing (or not all) came back in `wait`.
    /// Err if the connection was closed.
    fn round_trip(s: &mut TcpStream, msg: &[u8], wait: Duration) -> Result<Option<Duration>, ()> {
        let started = Instant::now();
        s.write_all(msg).map_err(|_| ())?;
        s.set_read_timeout(Some(wait)).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < msg.len() {
            match s.read(&mut buf) {
                Ok(0) => return Err(()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(_) => return Err(()),
            }
        }
        assert_eq!(got, msg);
        Ok(Some(started.elapsed()))
    }

    #[test]
    fn proxy_passes_delays_blackholes_cuts_and_refuses() {
        let echo = Echo::start();
        let proxy = Proxy::to_port(echo.port);
        let mut s = connect(&proxy);
        let fast = round_trip(&mut s, b"hello", Duration::from_secs(5))
            .unwrap()
            .expect("pass");
        assert!(fast < Duration::from_millis(200), "{fast:?}");

        proxy.set(Mode::Delay(Duration::from_millis(100)));
        let slow = round_trip(&mut s, b"slow", Duration::from_secs(5))
            .unwrap()
            .expect("delay");
        // 100 ms each way.
        assert!(slow >= Duration::from_millis(200), "{slow:?}");
        assert!(slow < Duration::from_millis(1000), "{slow:?}");

        proxy.set(Mode::Blackhole);
        assert_eq!(
            round_trip(&mut s, b"lost?", Duration::from_millis(300)),
            Ok(None),
            "nothing comes back, and no error"
        );
        // A new connection is accepted, and sees nothing either.
        let mut during = connect(&proxy);
        assert_eq!(
            round_trip(&mut during, b"new", Duration::from_millis(200)),
            Ok(None)
        );
        // Healed: the bytes held back arrive, in order.
        proxy.set(Mode::Pass);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut held = [0u8; 5];
        s.read_exact(&mut held).unwrap();
        assert_eq!(&held, b"lost?");
        let mut new = [0u8; 3];
        during
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        during.read_exact(&mut new).unwrap();
        assert_eq!(&new, b"new");

        // Cut, then pass: old connections end, new ones work.
        proxy.cut(Mode::Pass);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 8];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)), "cut");
        let mut again = connect(&proxy);
        assert!(round_trip(&mut again, b"again", Duration::from_secs(5))
            .unwrap()
            .is_some());

        // Cut, then refuse: new connections are closed at once.
        proxy.cut(Mode::Refuse);
        let mut refused = connect(&proxy);
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert!(matches!(refused.read(&mut buf), Ok(0) | Err(_)), "refused");
        proxy.set(Mode::Pass);
        let mut back = connect(&proxy);
        assert!(round_trip(&mut back, b"back", Duration::from_secs(5))
            .unwrap()
            .is_some());
        assert!(proxy.connections() >= 5);

        // Dropping the proxy stops its threads promptly, even with a blackholed connection.
        proxy.set(Mode::Blackhole);
        let _held_open = connect(&proxy);
        let dropped = Instant::now();
        drop(proxy);
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "{:?}",
            dropped.elapsed()
        );
        back.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(
            matches!(back.read(&mut buf), Ok(0) | Err(_)),
            "closed on drop"
        );
    }

    #[test]
    fn proxy_to_a_dead_target_closes_the_client() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // bound, then freed: nobody listens there
        let proxy = Proxy::to_port(port);
        let mut s = connect(&proxy);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
}
