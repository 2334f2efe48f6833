//! An ensemble of ZooKeeper servers, optionally with proxies between them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{
    common_config, free_ports, freeze_process, fresh_dir, keep_dirs, print_log_tail_if_panicking,
    tail, ZkProcess, POLL, START_ATTEMPTS,
};
use super::proxy::{self, Proxy};
use super::{server_mode, START_TIMEOUT};

struct Member {
    dir: PathBuf,
    cfg: PathBuf,
    client_port: u16,
    process: Option<ZkProcess>,
    paused: AtomicBool,
}

impl Member {
    fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ZkProcess::is_alive)
    }

    fn spawn(&mut self) {
        self.process = Some(ZkProcess::spawn(
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            &self.dir,
            &self.cfg,
        ));
        self.paused.store(false, Ordering::SeqCst);
    }

    fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
        self.paused.store(false, Ordering::SeqCst);
    }
}

/// Options for an [`Ensemble`]; get one from [`Ensemble::builder`].
///
/// ```no_run
/// use zk_master::testing::Ensemble;
/// let ensemble = Ensemble::builder(3).sync_limit(10).peer_proxies(true).start();
/// ```
#[derive(Debug, Clone)]
pub struct EnsembleBuilder {
    n: usize,
    sync_limit: u32,
    peer_proxies: bool,
}

impl EnsembleBuilder {
    /// The servers' `syncLimit` in ticks (default 5): how long a follower goes without hearing
    /// from its leader (and the leader without an answer from a follower) before giving up.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).sync_limit(10).start();
    /// assert_eq!(ensemble.sync_limit(), 10);
    /// ```
    pub fn sync_limit(mut self, ticks: u32) -> Self {
        self.sync_limit = ticks;
        self
    }

    /// Servers reach each other only through proxies (see [`Ensemble::isolate`]); clients still
    /// connect to the servers' real client ports. Default: off, servers talk directly.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).peer_proxies(true).start();
    /// ensemble.isolate(0);
    /// ```
    pub fn peer_proxies(mut self, on: bool) -> Self {
        self.peer_proxies = on;
        self
    }

    /// Starts the servers and waits for a quorum; see [`Ensemble::start`].
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).start();
    /// ```
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// println!("{}", ensemble.connect_string());
    /// ```
    pub fn start(self) -> Ensemble {
        Ensemble::start_with(self)
    }
}

/// How [`Ensemble::isolate_with`] cuts a server off from its peers.
///
/// ```no_run
/// use zk_master::testing::Ensemble;
/// use zk_master::testing::Isolation;
/// let ensemble = Ensemble::builder(3).peer_proxies(true).start();
/// ensemble.isolate_with(1, Isolation::CutAndRefuse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Nothing moves on the peer connections, which stay open, and new ones hang: a network
    /// partition, noticed only through timeouts.
    Blackhole,
    /// Every peer connection is closed and new ones are closed at once: peers notice at once.
    CutAndRefuse,
}

/// The two proxies through which server `from` reaches server `to`'s quorum and election ports
/// (an ensemble with peer proxies has one per ordered pair of servers).
struct PeerLink {
    from: usize,
    to: usize,
    quorum: Proxy,
    election: Proxy,
}

/// An ensemble of ZooKeeper quorum peers (`QuorumPeerMain`) on `127.0.0.1`, each with its own
/// client, quorum and election port and its own data dir under one temporary directory (removed on
/// drop). `tickTime=200`, `initLimit=10`, `syncLimit=5` (see [`EnsembleBuilder::sync_limit`]),
/// `maxSessionTimeout=10000` (a leader election can take seconds on a loaded machine). Servers are
/// numbered from 0 in this API; server `i` has `myid` `i + 1`. Killed on drop, and also if the
/// test process dies.
///
/// With [`EnsembleBuilder::peer_proxies`], server `i`'s `zoo.cfg` lists every other server `j`
/// at the addresses of two proxies owned by the pair `i → j` (one to `j`'s quorum port, one to its
/// election port), and itself at its real ports (a server binds the ports of its own line). Every
/// connection between two servers then crosses one of these proxies, whichever side opens it, and
/// [`isolate`](Self::isolate) / [`heal`](Self::heal) switch them.
///
/// ```no_run
/// use zk_master::testing::Ensemble;
/// let mut ensemble = Ensemble::start(3);
/// let leader = ensemble.leader().expect("a leader");
/// ensemble.kill(leader);
/// ensemble.wait_quorum();
/// ```
pub struct Ensemble {
    dir: PathBuf,
    members: Vec<Member>,
    sync_limit: u32,
    /// Empty unless the ensemble was built with peer proxies. Dropped after the servers are
    /// killed (see `Drop`), so no server sees its peers vanish while it runs.
    links: Vec<PeerLink>,
}

impl Ensemble {
    /// Starts `n` servers (3 is the usual) and waits until they have a leader and every server
    /// serves ([`wait_quorum`](Self::wait_quorum)). Panics if that takes longer than
    /// [`START_TIMEOUT`].
    pub fn start(n: usize) -> Ensemble {
        Ensemble::builder(n).start()
    }

    /// Options for an ensemble of `n` servers: `syncLimit`, peer proxies.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).sync_limit(5).start();
    /// ```
    pub fn builder(n: usize) -> EnsembleBuilder {
        EnsembleBuilder {
            n,
            sync_limit: 5,
            peer_proxies: false,
        }
    }

    fn start_with(options: EnsembleBuilder) -> Ensemble {
        let n = options.n;
        assert!(n >= 1, "an ensemble needs at least one server");
        let dir = fresh_dir("ensemble");
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let mut ensemble = Ensemble::configure(&dir, &options);
            for member in &mut ensemble.members {
                member.spawn();
            }
            match ensemble.try_wait_quorum(START_TIMEOUT) {
                Ok(()) => return ensemble,
                Err(e) => {
                    last_error = e;
                    for member in &mut ensemble.members {
                        member.kill();
                    }
                    ensemble.dir = PathBuf::new(); // keep `dir` for the next attempt
                }
            }
        }
        let logs: Vec<String> = (0..n)
            .map(|i| {
                let d = dir.join(format!("server{}", i + 1));
                format!("-- server {i} --\n{}", tail(&d.join("zookeeper.log"), 20))
            })
            .collect();
        panic!(
            "ZooKeeper ensemble did not start: {last_error} (files left in {})\n{}",
            dir.display(),
            logs.join("\n")
        );
    }

    /// Writes configs (fresh ports, empty data dirs) for the members under `dir`, and starts
    /// the peer proxies if asked.
    fn configure(dir: &Path, options: &EnsembleBuilder) -> Ensemble {
        let n = options.n;
        let ports = free_ports(3 * n);
        let mut links = Vec::new();
        if options.peer_proxies {
            for from in 0..n {
                for to in (0..n).filter(|&to| to != from) {
                    links.push(PeerLink {
                        from,
                        to,
                        quorum: Proxy::to_port(ports[3 * to + 1]),
                        election: Proxy::to_port(ports[3 * to + 2]),
                    });
                }
            }
        }
        // The `server.N` lines as server `from` sees them.
        let servers = |from: usize| -> String {
            (0..n)
                .map(|to| {
                    let (quorum, election) = match links
                        .iter()
                        .find(|l: &&PeerLink| l.from == from && l.to == to)
                    {
                        Some(link) => (link.quorum.addr().port(), link.election.addr().port()),
                        None => (ports[3 * to + 1], ports[3 * to + 2]),
                    };
                    format!("server.{}=127.0.0.1:{quorum}:{election}\n", to + 1)
                })
                .collect()
        };
        let members = (0..n)
            .map(|i| {
                let member_dir = dir.join(format!("server{}", i + 1));
                let _ = fs::remove_dir_all(&member_dir);
                let data = member_dir.join("data");
                fs::create_dir_all(&data).expect("create data dir");
                fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("write myid");
                let cfg = member_dir.join("zoo.cfg");
                let text = format!(
                    "{}initLimit=10\nsyncLimit={}\nmaxSessionTimeout=10000\n{}",
                    common_config(&data, ports[3 * i]),
                    options.sync_limit,
                    servers(i)
                );
                fs::write(&cfg, text).expect("write zoo.cfg");
                Member {
                    dir: member_dir,
                    cfg,
                    client_port: ports[3 * i],
                    process: None,
                    paused: AtomicBool::new(false),
                }
            })
            .collect();
        Ensemble {
            dir: dir.to_path_buf(),
            members,
            sync_limit: options.sync_limit,
            links,
        }
    }

    /// The servers' `syncLimit`, in ticks of [`TICK_TIME`](super::TICK_TIME).
    pub fn sync_limit(&self) -> u32 {
        self.sync_limit
    }

    /// Cuts server `i` off from every other server, both ways, with
    /// [`Isolation::Blackhole`]; its client port stays reachable. Needs peer proxies.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).peer_proxies(true).start();
    /// ensemble.isolate(2); // server 2 still answers its clients, from stale data
    /// ensemble.heal(2);
    /// ```
    pub fn isolate(&self, i: usize) {
        self.isolate_with(i, Isolation::Blackhole);
    }

    /// Cuts server `i` off from every other server, both ways, as `how` says; its client port
    /// stays reachable. Needs peer proxies.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// use zk_master::testing::Isolation;
    /// let ensemble = Ensemble::builder(3).peer_proxies(true).start();
    /// ensemble.isolate_with(2, Isolation::CutAndRefuse);
    /// ```
    pub fn isolate_with(&self, i: usize, how: Isolation) {
        for link in self.links_of(i) {
            for p in [&link.quorum, &link.election] {
                match how {
                    Isolation::Blackhole => p.set(proxy::Mode::Blackhole),
                    Isolation::CutAndRefuse => p.cut(proxy::Mode::Refuse),
                }
            }
        }
    }

    /// Undoes [`isolate`](Self::isolate): every proxy between server `i` and the others passes
    /// again (held bytes go through, unless an end gave up meanwhile). Does not wait for the
    /// server to rejoin: call [`wait_quorum`](Self::wait_quorum).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).peer_proxies(true).start();
    /// ensemble.isolate(0);
    /// ensemble.heal(0);
    /// ensemble.wait_quorum();
    /// ```
    pub fn heal(&self, i: usize) {
        for link in self.links_of(i) {
            link.quorum.set(proxy::Mode::Pass);
            link.election.set(proxy::Mode::Pass);
        }
    }

    /// Connections accepted so far by the peer proxies to and from server `i` (to check that
    /// the servers really talk through them).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::builder(3).peer_proxies(true).start();
    /// assert!(ensemble.peer_connections(0) > 0);
    /// ```
    pub fn peer_connections(&self, i: usize) -> u64 {
        self.links_of(i)
            .map(|l| l.quorum.connections() + l.election.connections())
            .sum()
    }

    /// The links between server `i` and the others, both ways. Panics without peer proxies.
    fn links_of(&self, i: usize) -> impl Iterator<Item = &PeerLink> + '_ {
        assert!(
            !self.links.is_empty(),
            "this ensemble has no peer proxies: build it with Ensemble::builder(n).peer_proxies(true)"
        );
        assert!(i < self.size(), "no server {i}");
        self.links.iter().filter(move |l| l.from == i || l.to == i)
    }

    /// Number of servers (running or not).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// assert_eq!(ensemble.size(), 3);
    /// ```
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// All servers, comma-separated: `"127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"`. Note that the
    /// `zookeeper` crate tries hosts in this order, so every client starts on server 0.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// let config = zk_master::Config::new(ensemble.connect_string());
    /// ```
    pub fn connect_string(&self) -> String {
        let hosts: Vec<String> = (0..self.size())
            .map(|i| self.server_connect_string(i))
            .collect();
        hosts.join(",")
    }

    /// Connect string of server `i` alone: `"127.0.0.1:PORT"`.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// // A client that can only reach server 1:
    /// let config = zk_master::Config::new(ensemble.server_connect_string(1));
    /// ```
    pub fn server_connect_string(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Client port of server `i`.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// assert_eq!(ensemble.server_connect_string(0), format!("127.0.0.1:{}", ensemble.port(0)));
    /// ```
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Directory of server `i` (`zoo.cfg`, `data/`, `zookeeper.log`).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// assert!(ensemble.server_dir(0).join("zoo.cfg").exists());
    /// ```
    pub fn server_dir(&self, i: usize) -> &Path {
        &self.members[i].dir
    }

    /// True if the JVM of server `i` is alive (paused counts as alive).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let mut ensemble = Ensemble::start(3);
    /// ensemble.kill(0);
    /// assert!(!ensemble.is_running(0));
    /// ```
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Kills server `i` with SIGKILL and waits until it is gone. Does not wait for the others to
    /// elect a new leader: call [`wait_quorum`](Self::wait_quorum) for that.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let mut ensemble = Ensemble::start(3);
    /// ensemble.kill(0);
    /// ensemble.wait_quorum();
    /// ```
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts server `i` again (killing it first if needed) with its data dir and ports, and
    /// waits until it serves as leader or follower. Panics after [`START_TIMEOUT`].
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let mut ensemble = Ensemble::start(3);
    /// ensemble.kill(0);
    /// ensemble.restart(0);
    /// ```
    pub fn restart(&mut self, i: usize) {
        self.members[i].kill();
        self.members[i].spawn();
        let port = self.members[i].client_port;
        let deadline = Instant::now() + START_TIMEOUT;
        while server_mode(port).is_none() {
            if Instant::now() >= deadline || !self.members[i].is_running() {
                panic!(
                    "ensemble server {i} did not rejoin\n{}",
                    tail(&self.members[i].dir.join("zookeeper.log"), 40)
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Freezes server `i` (SIGSTOP). [`wait_quorum`](Self::wait_quorum) ignores paused servers.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// ensemble.pause(0);
    /// ensemble.wait_quorum(); // the other two
    /// ensemble.resume(0);
    /// ```
    pub fn pause(&self, i: usize) {
        let member = &self.members[i];
        freeze_process(
            member.process.as_ref().expect("server is stopped").pid(),
            true,
        );
        member.paused.store(true, Ordering::SeqCst);
    }

    /// Unfreezes server `i` (SIGCONT).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// ensemble.pause(0);
    /// ensemble.resume(0);
    /// ```
    pub fn resume(&self, i: usize) {
        let member = &self.members[i];
        freeze_process(
            member.process.as_ref().expect("server is stopped").pid(),
            false,
        );
        member.paused.store(false, Ordering::SeqCst);
    }

    /// `srvr` mode of server `i` (see [`server_mode`]); `None` if it is down, paused or electing.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// let modes: Vec<_> = (0..3).map(|i| ensemble.mode(i)).collect();
    /// ```
    pub fn mode(&self, i: usize) -> Option<String> {
        let member = &self.members[i];
        if !member.is_running() || member.paused.load(Ordering::SeqCst) {
            return None;
        }
        server_mode(member.client_port)
    }

    /// Index of the server whose `srvr` says `Mode: leader` (or `standalone`, for a 1-server
    /// ensemble), if any.
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let ensemble = Ensemble::start(3);
    /// let leader = ensemble.leader().expect("a leader after start");
    /// ```
    pub fn leader(&self) -> Option<usize> {
        (0..self.size()).find(|&i| matches!(self.mode(i).as_deref(), Some("leader" | "standalone")))
    }

    /// Waits until every running, unpaused server serves (leader or follower) and exactly one of
    /// them is the leader. Panics after [`START_TIMEOUT`], or at once if no quorum can exist
    /// (fewer than a majority of servers running).
    ///
    /// ```no_run
    /// use zk_master::testing::Ensemble;
    /// let mut ensemble = Ensemble::start(3);
    /// ensemble.kill(ensemble.leader().expect("a leader"));
    /// ensemble.wait_quorum();
    /// ```
    pub fn wait_quorum(&self) {
        if let Err(e) = self.try_wait_quorum(START_TIMEOUT) {
            panic!("ensemble has no quorum: {e}");
        }
    }

    fn try_wait_quorum(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.size())
                .filter(|&i| self.members[i].is_running())
                .collect();
            if running.len() * 2 <= self.size() {
                return Err(format!(
                    "only {} of {} servers are running",
                    running.len(),
                    self.size()
                ));
            }
            let live: Vec<usize> = running
                .into_iter()
                .filter(|&i| !self.members[i].paused.load(Ordering::SeqCst))
                .collect();
            let modes: Vec<Option<String>> = live.iter().map(|&i| self.mode(i)).collect();
            let leaders = modes
                .iter()
                .filter(|m| matches!(m.as_deref(), Some("leader" | "standalone")))
                .count();
            if leaders == 1 && modes.iter().all(Option::is_some) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "after {timeout:?}: modes of running servers {live:?}: {modes:?}"
                ));
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Ensemble {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
        if self.dir.as_os_str().is_empty() {
            return;
        }
        for (i, member) in self.members.iter().enumerate() {
            print_log_tail_if_panicking(&format!("ensemble server {i}"), &member.dir);
        }
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        // The proxies last (each drop joins its threads, about proxy::TICK).
        self.links.clear();
    }
}
