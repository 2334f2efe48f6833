//! A group of traced worker processes (`examples/worker.rs --trace-roles`) for the fault tests:
//! each member behind its own proxy or not, its log in a file next to its trace, and the checks
//! that the group came back to N masters with no overlap.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use zookeeper::ZooKeeper;

use super::overlap::{self, monotonic_ns, Event, Report, Source, TraceDir};
use super::proxy::Proxy;
use super::{raw_client, signal, worker_binary};

/// Session timeout of every worker. The servers' tick is 200 ms: sessions expire on 200 ms
/// boundaries. 2 s leaves room for a standalone server's restart (0.4-1.4 s seen on this
/// 2-core machine) to stay within it.
pub const SESSION: Duration = Duration::from_millis(2000);
/// Bound on the wait for a group to come back to N masters after a fault.
pub const RECOVERY: Duration = Duration::from_secs(30);
/// How long the recovered state must hold (a bit more than one lease renewal).
pub const HOLD: Duration = Duration::from_millis(500);
/// Bound on every other wait for something that should happen within a few session timeouts.
pub const SOON: Duration = Duration::from_secs(15);

pub fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `d` in session timeouts.
pub fn in_t(d: Duration) -> String {
    format!("{:.2} T", d.as_secs_f64() / SESSION.as_secs_f64())
}

/// The sequence number of a member node name such as `worker0000000003`.
pub fn sequence(name: &str) -> u64 {
    let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    name[name.len() - digits..].parse().unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------------
// A group of traced worker processes
// ---------------------------------------------------------------------------------------------

/// An `examples/worker` process whose log goes to a file next to its trace (the `zookeeper`
/// crate logs every attempt of its reconnect loop: thousands of lines during an outage).
pub struct Process {
    pub child: Child,
}

impl Process {
    pub fn spawn(args: &[&str], log: &Path) -> Process {
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

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit (bounded) and returns the exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
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

pub struct Member {
    pub label: String,
    pub trace: PathBuf,
    pub log: PathBuf,
    pub process: Process,
    /// Its own proxy to the server, when the group uses proxies.
    pub proxy: Option<Proxy>,
    pub killed_at: Option<u64>,
}

/// Worker processes in one election group, each tracing its role to a file.
pub struct Group {
    pub name: String,
    pub path: String,
    pub masters: usize,
    /// Direct connect string of the server(s), for the raw client and proxy-less members.
    pub connect: String,
    /// Port every member's own proxy forwards to; `None`: members connect directly.
    pub proxy_to: Option<u16>,
    pub traces: TraceDir,
    pub members: Vec<Member>,
}

impl Group {
    /// Starts `count` members one after the other (each registered before the next starts, so
    /// the first N are the masters) and waits until the group is settled.
    pub fn start(
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
    pub fn spawn_member(&mut self) -> usize {
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
    pub fn wait_registered(&self, label: &str) {
        let zk = raw_client(&self.connect);
        super::wait_for(SOON, &format!("{} to register", label), || {
            let children = zk.get_children(&self.path, false).unwrap_or_default();
            children.iter().any(|child| {
                zk.get_data(&format!("{}/{child}", self.path), false)
                    .is_ok_and(|(data, _)| data == label.as_bytes())
            })
        });
    }

    pub fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|&i| self.members[i].killed_at.is_none())
    }

    pub fn source(&self, i: usize) -> Source {
        let m = &self.members[i];
        Source::read(&m.label, &m.trace).killed_at(m.killed_at)
    }

    pub fn sources(&self) -> Vec<Source> {
        (0..self.members.len()).map(|i| self.source(i)).collect()
    }

    /// The checker over every trace so far.
    pub fn report(&self) -> Report {
        overlap::check(self.masters, &self.sources(), monotonic_ns())
    }

    /// Live members whose last traced read returned true, with their node names.
    pub fn masters_now(&self) -> Vec<(usize, String)> {
        self.live()
            .filter_map(|i| {
                let source = self.source(i);
                source.current_master().map(|name| (i, name.to_owned()))
            })
            .collect()
    }

    /// The live master with the oldest node (for N = 2, the first of the two).
    pub fn a_master(&self) -> (usize, String) {
        self.masters_now()
            .into_iter()
            .min_by_key(|(_, name)| sequence(name))
            .unwrap_or_else(|| panic!("{}: no master right now", self.name))
    }

    /// Waits until the traces show exactly N masters, they are the first N nodes of the group,
    /// and the group has one node per live member, and that this holds for [`HOLD`]. Returns
    /// how long that took (the hold included).
    pub fn wait_recovered(&self, what: &str) -> Duration {
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

    pub fn settled(&self, zk: &ZooKeeper) -> Result<(), String> {
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
    pub fn wait_no_master(&self, what: &str) {
        super::wait_for(SOON, &format!("{}: no master {what}", self.name), || {
            self.masters_now().is_empty()
        });
    }

    pub fn pid(&self, i: usize) -> u32 {
        self.members[i].process.pid()
    }

    pub fn proxy(&self, i: usize) -> &Proxy {
        self.members[i]
            .proxy
            .as_ref()
            .expect("this group's members have proxies")
    }

    /// SIGKILL; the kill time closes its interval if it was master.
    pub fn kill(&mut self, i: usize) {
        self.members[i].process.kill();
        self.members[i].killed_at = Some(monotonic_ns());
    }

    /// The last true read of member `i` at or after `since`, or `None` if it still reads true
    /// (or never did).
    pub fn stepped_down_at(&self, i: usize, since: u64) -> Option<u64> {
        let source = self.source(i);
        source.events.iter().find_map(|e| match e {
            Event::Slave { last_true, .. } if *last_true >= since => Some(*last_true),
            _ => None,
        })
    }

    /// Checks the traces after a fault that began at `mark`: no overlap, and prints the
    /// takeovers since then against the session timeout.
    pub fn check(&self, what: &str, mark: u64, recovered: Duration) -> Report {
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
    pub fn finish(mut self) -> Report {
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
pub fn print_step_down(group: &Group, i: usize, fault_at: u64, what: &str) {
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
