//! Test support: real Apache ZooKeeper servers for integration tests.
//!
//! Every test that needs ZooKeeper starts its own server (or ensemble) on loopback, on free ports,
//! in a fresh temporary directory, so tests can run in parallel and never share state:
//!
//! * [`ZkServer`]: one standalone server (`ZooKeeperServerMain`), with stop / restart / pause.
//! * [`Ensemble`]: `n` quorum peers (`QuorumPeerMain`), with per-server kill / restart / pause.
//! * [`raw_client`]: a connected client of the `zookeeper` crate, to look at or disturb the
//!   state behind the library's back.
//! * [`wait_for`]: the bounded polling helper; every loop in a test must be bounded.
//! * [`proxy::Proxy`]: a TCP proxy to put network faults (delay, blackhole, cut) between a client
//!   and its server; [`overlap`]: the checker of the workers' `--trace-roles` files.
//!
//! The servers run from the Debian `zookeeper` package (jars in `/usr/share/java`). The environment
//! can override this: `ZK_CLASSPATH` (full Java classpath), `ZK_JAVA` (the `java` binary) and
//! `ZK_MASTER_KEEP_TEST_DIRS=1` (keep the temporary directories, with the server logs, after the
//! test). Server logs go to `zookeeper.log` in the server's directory, never to the test output;
//! when a test panics, the end of each server log is printed with the test's captured output.
//!
//! A JVM never outlives the test process: each one is started through a small `sh` wrapper whose
//! watcher reads a pipe held by the test process and kills the JVM when the pipe closes, which
//! happens however the test process ends (normal exit, panic, `process::exit`, even SIGKILL).
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use zookeeper::ZooKeeper;

pub mod overlap;
pub mod proxy;
mod worker;
#[allow(unused_imports)] // not every test binary starts workers
pub use worker::{worker_binary, LogLines, Worker};

/// Tick of every test server. Session timeouts are clamped by the servers to
/// `[2, 20]` ticks = 400 ms ..= 4 s unless [`ZkServerBuilder`] sets other bounds.
pub const TICK_TIME: Duration = Duration::from_millis(200);

/// How long [`ZkServer::start`], [`ZkServer::restart`], [`Ensemble::start`],
/// [`Ensemble::restart`] and [`Ensemble::wait_quorum`] wait before they panic.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`raw_client`] waits for a session before it panics.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Session timeout that [`raw_client`] asks for (servers clamp it, to 4 s by default).
pub const RAW_CLIENT_SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// Session timeout of most tests' members: expiry takes about this long.
pub const SESSION: Duration = Duration::from_millis(2000);

/// Bound for waits on something that should happen promptly.
pub const SOON: Duration = Duration::from_secs(10);

/// The usual member configuration of a test: `server`, `group`, [`SESSION`],
/// and [`SOON`] to connect.
pub fn member_config(server: &ZkServer, group: &str) -> zk_master::Config {
    zk_master::Config::new(server.connect_string())
        .group(group)
        .session_timeout(SESSION)
        .connect_timeout(SOON)
}

const POLL: Duration = Duration::from_millis(50);
const START_ATTEMPTS: usize = 3;
const JAR_DIR: &str = "/usr/share/java";

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

/// Initialises `env_logger` for tests (`RUST_LOG` picks the level; output is captured by the test
/// harness). Safe to call from every test, any number of times.
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Polls `f` every 10 ms until it returns `true`; panics with `what` if that takes longer than
/// `timeout`. `f` is always called at least once, and once more after the deadline.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            if f() {
                return;
            }
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends signal `sig` to process `pid`, a child of the test that is not reaped yet (so its pid
/// cannot have been reused). SIGSTOP and SIGCONT return only once every thread of the process
/// has stopped or resumed: `kill(2)` returns before the kernel stops each thread (a thread stops
/// when it next runs), so on a busy machine a process just sent SIGSTOP can still answer a
/// request.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers; the pid is a child we have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    let error = std::io::Error::last_os_error();
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {error}");
    match sig {
        libc::SIGSTOP => wait_until_stopped(pid, true),
        libc::SIGCONT => wait_until_stopped(pid, false),
        _ => {}
    }
}

/// Waits (at most 5 s) until every thread of process `pid` is stopped by a signal (`stopped`)
/// or none is.
fn wait_until_stopped(pid: u32, stopped: bool) {
    let what = if stopped { "stop" } else { "resume" };
    let all_threads = || {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone: nothing left to stop or resume
        };
        tasks.flatten().all(|task| {
            let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // "tid (comm) S ...": the state follows the last ')'; 'T' stopped, 't' traced.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            match state {
                None | Some('Z' | 'X') => true, // the thread exited meanwhile
                Some(s) => matches!(s, 'T' | 't') == stopped,
            }
        })
    };
    wait_for(
        Duration::from_secs(5),
        &format!("process {pid} to {what}"),
        all_threads,
    );
}

/// Returns a connected client of the `zookeeper` crate (requested session timeout
/// [`RAW_CLIENT_SESSION_TIMEOUT`]). See [`raw_client_with_timeout`].
pub fn raw_client(connect: &str) -> ZooKeeper {
    raw_client_with_timeout(connect, RAW_CLIENT_SESSION_TIMEOUT)
}

/// Returns a client of the `zookeeper` crate whose session is established: `exists("/")` has
/// succeeded on it. The crate's `connect()` returns before any session exists and its calls have no
/// timeout, so the connection is made on a helper thread and this panics if no session exists
/// after [`CONNECT_TIMEOUT`] (the helper thread may then stay blocked; the test fails anyway).
///
/// Drop raw clients before stopping or pausing their server: the crate's `Drop` sends a
/// CloseSession and waits for the answer.
pub fn raw_client_with_timeout(connect: &str, session_timeout: Duration) -> ZooKeeper {
    let (tx, rx) = mpsc::channel();
    let connect_string = connect.to_string();
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    thread::Builder::new()
        .name("raw-client-connect".into())
        .spawn(move || {
            let result = (|| {
                let name = connect_string.clone();
                let zk = ZooKeeper::connect(&connect_string, session_timeout, move |event| {
                    log::debug!("raw client {name}: {event:?}");
                })?;
                loop {
                    match zk.exists("/", false) {
                        Ok(_) => return Ok(zk),
                        Err(e) if Instant::now() >= deadline => return Err(e),
                        Err(_) => thread::sleep(POLL),
                    }
                }
            })();
            let _ = tx.send(result);
        })
        .expect("spawn raw-client-connect thread");
    match rx.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(1)) {
        Ok(Ok(zk)) => zk,
        Ok(Err(e)) => panic!("raw client could not get a session on {connect}: {e:?}"),
        Err(_) => panic!("raw client could not get a session on {connect} in {CONNECT_TIMEOUT:?}"),
    }
}

/// Sends a four-letter-word command (`srvr`, `stat`, `cons`, `mntr`, `ruok`...) to the server on
/// `127.0.0.1:port` and returns its answer, or `None` if it cannot be reached within about 1 s.
pub fn four_letter_word(port: u16, cmd: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream.write_all(cmd.as_bytes()).ok()?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}

/// The `Mode:` of the server on `127.0.0.1:port` according to `srvr` (`"standalone"`,
/// `"leader"`, `"follower"`, `"observer"`), or `None` if it is down, paused, or not serving
/// (e.g. an ensemble member still electing a leader).
pub fn server_mode(port: u16) -> Option<String> {
    let reply = four_letter_word(port, "srvr")?;
    reply
        .lines()
        .find_map(|line| line.strip_prefix("Mode:"))
        .map(|mode| mode.trim().to_string())
}

/// The Java classpath for the ZooKeeper server: `$ZK_CLASSPATH` if set, else the Debian jars
/// (`zookeeper.jar`, whose manifest lists its dependencies, plus `slf4j-simple.jar` as the
/// logging backend). Keep in step with `zk_classpath` in `scripts/zk-env`.
pub fn zk_classpath() -> String {
    if let Ok(cp) = std::env::var("ZK_CLASSPATH") {
        if !cp.is_empty() {
            return cp;
        }
    }
    let zk = Path::new(JAR_DIR).join("zookeeper.jar");
    assert!(
        zk.exists(),
        "{} not found: install ZooKeeper (`apt-get install zookeeper`, or run scripts/test), \
         or set ZK_CLASSPATH",
        zk.display()
    );
    let mut cp = zk.display().to_string();
    let slf4j = Path::new(JAR_DIR).join("slf4j-simple.jar");
    if slf4j.exists() {
        cp.push(':');
        cp.push_str(&slf4j.display().to_string());
    }
    cp
}

/// Fresh, empty, uniquely named directory under `std::env::temp_dir()`.
fn fresh_dir(kind: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    static CLEANUP: Once = Once::new();
    CLEANUP.call_once(remove_stale_dirs);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("zk-master-test-{}-{n}-{kind}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Removes directories left by test processes that died without running `Drop`.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("zk-master-test-") else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn keep_dirs() -> bool {
    std::env::var("ZK_MASTER_KEEP_TEST_DIRS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Returns `count` distinct ports that are free on 127.0.0.1 right now and that no other server of
/// this process got. Ports are taken below the kernel's ephemeral range when possible, so that a
/// client's outgoing connection cannot grab the port of a stopped server before it restarts.
fn free_ports(count: usize) -> Vec<u16> {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed_out = handed_out.get_or_insert_with(HashSet::new);

    let ephemeral_low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.saturating_sub(1));

    let mut held = Vec::new();
    let mut ports = Vec::new();
    let mut tries = 0;
    while ports.len() < count {
        tries += 1;
        let candidate = if high > low + 1000 && tries < 1000 {
            low + (random_u64() % u64::from(high - low)) as u16
        } else {
            0 // let the kernel choose
        };
        if candidate != 0 && handed_out.contains(&candidate) {
            continue;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", candidate)) {
            let port = listener.local_addr().expect("local_addr").port();
            if handed_out.insert(port) {
                ports.push(port);
                held.push(listener);
            }
        }
    }
    ports
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn print_log_tail_if_panicking(label: &str, dir: &Path) {
    if thread::panicking() {
        eprintln!(
            "---- last lines of {label} log ({}) ----\n{}\n----",
            dir.join("zookeeper.log").display(),
            tail(&dir.join("zookeeper.log"), 40)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One JVM
// ---------------------------------------------------------------------------------------------

/// `sh` wrapper: moves the pipe from the test process to fd 3, starts a watcher that kills the
/// JVM (this very pid, after `exec`) when that pipe reaches EOF, then execs the JVM with fd 3
/// closed. The watcher checks the pid still runs our command line (the zoo.cfg path is unique)
/// before killing, so a recycled pid is never hit.
const WRAPPER: &str = r#"marker=$1; shift
exec 3<&0 0</dev/null
me=$$
(
  read -r _ <&3
  if grep -qF -- "$marker" "/proc/$me/cmdline" 2>/dev/null; then kill -9 "$me" 2>/dev/null; fi
) &
exec "$@" 3<&-
"#;

/// A running ZooKeeper JVM. Its pid is the pid of the `Child` (the wrapper `exec`s into java).
struct ZkProcess {
    child: Child,
    /// Write end of the lifeline pipe; closing it makes the wrapper's watcher kill the JVM.
    lifeline: Option<ChildStdin>,
}

impl ZkProcess {
    fn spawn(main_class: &str, dir: &Path, cfg: &Path) -> ZkProcess {
        let java = std::env::var("ZK_JAVA").unwrap_or_else(|_| "java".to_string());
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("jvm.out"))
            .expect("open jvm.out");
        let err = out.try_clone().expect("clone jvm.out");
        let log = dir.join("zookeeper.log");
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("zk-wrapper")
            .arg(cfg)
            .arg(java)
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Xshare:auto",
                "-XX:-UsePerfData",
                "-Djava.net.preferIPv4Stack=true",
                "-Dzookeeper.jmx.log4j.disable=true",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS",
            ])
            .arg(format!(
                "-Dorg.slf4j.simpleLogger.logFile={}",
                log.display()
            ))
            .arg("-cp")
            .arg(zk_classpath())
            .arg(main_class)
            .arg(cfg)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sh/java for ZooKeeper: {e}"));
        let lifeline = child.stdin.take();
        ZkProcess { child, lifeline }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the JVM has not exited (a paused JVM is alive). The child is only reaped by
    /// `kill`, so its pid cannot be reused while `self` exists.
    fn is_alive(&self) -> bool {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Format: "pid (comm) S ..."; the comm may contain spaces, the state follows the last ')'.
        match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        }
    }

    /// SIGKILL (works on a paused JVM too) and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        self.lifeline.take();
        let _ = self.child.wait();
    }
}

impl Drop for ZkProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Standalone server
// ---------------------------------------------------------------------------------------------

/// Options for a [`ZkServer`]; get one from [`ZkServer::builder`].
#[derive(Debug, Clone, Default)]
pub struct ZkServerBuilder {
    min_session_timeout: Option<Duration>,
    max_session_timeout: Option<Duration>,
}

impl ZkServerBuilder {
    /// Server's `minSessionTimeout` (default 2 ticks = 400 ms).
    pub fn min_session_timeout(mut self, timeout: Duration) -> Self {
        self.min_session_timeout = Some(timeout);
        self
    }

    /// Server's `maxSessionTimeout` (default 20 ticks = 4 s).
    pub fn max_session_timeout(mut self, timeout: Duration) -> Self {
        self.max_session_timeout = Some(timeout);
        self
    }

    /// Starts the server and waits until it serves; see [`ZkServer::start`].
    pub fn start(self) -> ZkServer {
        ZkServer::start_with(self)
    }
}

/// A standalone ZooKeeper server on `127.0.0.1`, on a free port, with its own temporary data
/// directory (removed on drop). Killed on drop, and also if the test process dies.
pub struct ZkServer {
    dir: PathBuf,
    cfg: PathBuf,
    port: u16,
    process: Option<ZkProcess>,
}

impl ZkServer {
    /// Starts a server with default options and waits until it serves (`srvr` reports a mode).
    /// Panics if it is not ready within [`START_TIMEOUT`].
    pub fn start() -> ZkServer {
        Self::builder().start()
    }

    /// Options: session timeout bounds.
    pub fn builder() -> ZkServerBuilder {
        ZkServerBuilder::default()
    }

    fn start_with(options: ZkServerBuilder) -> ZkServer {
        let dir = fresh_dir("standalone");
        let cfg = dir.join("zoo.cfg");
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let port = free_ports(1)[0];
            let _ = fs::remove_dir_all(dir.join("data"));
            fs::create_dir_all(dir.join("data")).expect("create data dir");
            let mut text = common_config(&dir.join("data"), port);
            if let Some(t) = options.min_session_timeout {
                text.push_str(&format!("minSessionTimeout={}\n", t.as_millis()));
            }
            if let Some(t) = options.max_session_timeout {
                text.push_str(&format!("maxSessionTimeout={}\n", t.as_millis()));
            }
            fs::write(&cfg, text).expect("write zoo.cfg");
            let mut server = ZkServer {
                dir: dir.clone(),
                cfg: cfg.clone(),
                port,
                process: None,
            };
            match server.launch() {
                Ok(()) => return server,
                // Most likely the port was taken between our check and the JVM's bind.
                Err(e) => {
                    last_error = e;
                    server.dir = PathBuf::new(); // keep `dir` for the next attempt
                }
            }
        }
        let log = tail(&dir.join("zookeeper.log"), 40);
        panic!(
            "ZooKeeper server did not start: {last_error} (files left in {})\n{log}",
            dir.display()
        );
    }

    /// Spawns the JVM and waits until it serves. Err if it exits first.
    fn launch(&mut self) -> Result<(), String> {
        let process = ZkProcess::spawn(
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            &self.dir,
            &self.cfg,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server_mode(self.port).is_some() {
                self.process = Some(process);
                return Ok(());
            }
            if !process.is_alive() {
                return Err(format!("server on port {} exited", self.port));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "server on port {} not serving after {START_TIMEOUT:?}",
                    self.port
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// `"127.0.0.1:PORT"`.
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temporary directory (`zoo.cfg`, `data/`, `zookeeper.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    /// True if the JVM is alive (paused counts as alive).
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ZkProcess::is_alive)
    }

    /// Kills the server with SIGKILL (no clean shutdown, like a crash) and waits until it is
    /// gone. Sessions survive in the data dir and expire after a [`restart`](Self::restart) unless
    /// their clients reconnect in time. No-op if already stopped.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again (stopping it first if needed) with the same data dir and port,
    /// and waits until it serves. Panics if it is not ready within [`START_TIMEOUT`].
    pub fn restart(&mut self) {
        self.stop();
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            match self.launch() {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "ZooKeeper server did not restart: {last_error}\n{}",
            tail(&self.log_path(), 40)
        );
    }

    /// Freezes the JVM (SIGSTOP): it keeps its sockets open but answers nothing, like a hung
    /// server or a black-holed network. Remember to [`resume`](Self::resume); `Drop` copes anyway.
    pub fn pause(&self) {
        signal(
            self.process.as_ref().expect("server is stopped").pid(),
            libc::SIGSTOP,
        );
    }

    /// Unfreezes the JVM (SIGCONT).
    pub fn resume(&self) {
        signal(
            self.process.as_ref().expect("server is stopped").pid(),
            libc::SIGCONT,
        );
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        print_log_tail_if_panicking(&format!("ZooKeeper {}", self.connect_string()), &self.dir);
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn common_config(data_dir: &Path, client_port: u16) -> String {
    format!(
        "tickTime={}\n\
         dataDir={}\n\
         clientPort={client_port}\n\
         clientPortAddress=127.0.0.1\n\
         admin.enableServer=false\n\
         maxClientCnxns=0\n\
         4lw.commands.whitelist=*\n\
         forceSync=no\n",
        TICK_TIME.as_millis(),
        data_dir.display()
    )
}

// ---------------------------------------------------------------------------------------------
// Ensemble
// ---------------------------------------------------------------------------------------------

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
#[derive(Debug, Clone)]
pub struct EnsembleBuilder {
    n: usize,
    sync_limit: u32,
    peer_proxies: bool,
}

impl EnsembleBuilder {
    /// The servers' `syncLimit` in ticks (default 5): how long a follower goes without hearing
    /// from its leader (and the leader without an answer from a follower) before giving up.
    pub fn sync_limit(mut self, ticks: u32) -> Self {
        self.sync_limit = ticks;
        self
    }

    /// Servers reach each other only through proxies (see [`Ensemble::isolate`]); clients still
    /// connect to the servers' real client ports. Default: off, servers talk directly.
    pub fn peer_proxies(mut self, on: bool) -> Self {
        self.peer_proxies = on;
        self
    }

    /// Starts the servers and waits for a quorum; see [`Ensemble::start`].
    pub fn start(self) -> Ensemble {
        Ensemble::start_with(self)
    }
}

/// How [`Ensemble::isolate_with`] cuts a server off from its peers.
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
    quorum: proxy::Proxy,
    election: proxy::Proxy,
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
                        quorum: proxy::Proxy::to_port(ports[3 * to + 1]),
                        election: proxy::Proxy::to_port(ports[3 * to + 2]),
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

    /// The servers' `syncLimit`, in ticks of [`TICK_TIME`].
    pub fn sync_limit(&self) -> u32 {
        self.sync_limit
    }

    /// Cuts server `i` off from every other server, both ways, with
    /// [`Isolation::Blackhole`]; its client port stays reachable. Needs peer proxies.
    pub fn isolate(&self, i: usize) {
        self.isolate_with(i, Isolation::Blackhole);
    }

    /// Cuts server `i` off from every other server, both ways, as `how` says; its client port
    /// stays reachable. Needs peer proxies.
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
    pub fn heal(&self, i: usize) {
        for link in self.links_of(i) {
            link.quorum.set(proxy::Mode::Pass);
            link.election.set(proxy::Mode::Pass);
        }
    }

    /// Connections accepted so far by the peer proxies to and from server `i` (to check that
    /// the servers really talk through them).
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
        assert!(i < self.len(), "no server {i}");
        self.links.iter().filter(move |l| l.from == i || l.to == i)
    }

    /// Number of servers (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// All servers, comma-separated: `"127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3"`. Note that the
    /// `zookeeper` crate tries hosts in this order, so every client starts on server 0.
    pub fn connect_string(&self) -> String {
        let hosts: Vec<String> = (0..self.len())
            .map(|i| self.server_connect_string(i))
            .collect();
        hosts.join(",")
    }

    /// Connect string of server `i` alone: `"127.0.0.1:PORT"`.
    pub fn server_connect_string(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.members[i].client_port)
    }

    /// Client port of server `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.members[i].client_port
    }

    /// Directory of server `i` (`zoo.cfg`, `data/`, `zookeeper.log`).
    pub fn server_dir(&self, i: usize) -> &Path {
        &self.members[i].dir
    }

    /// True if the JVM of server `i` is alive (paused counts as alive).
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// Kills server `i` with SIGKILL and waits until it is gone. Does not wait for the others to
    /// elect a new leader: call [`wait_quorum`](Self::wait_quorum) for that.
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Starts server `i` again (killing it first if needed) with its data dir and ports, and
    /// waits until it serves as leader or follower. Panics after [`START_TIMEOUT`].
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
    pub fn pause(&self, i: usize) {
        let member = &self.members[i];
        signal(
            member.process.as_ref().expect("server is stopped").pid(),
            libc::SIGSTOP,
        );
        member.paused.store(true, Ordering::SeqCst);
    }

    /// Unfreezes server `i` (SIGCONT).
    pub fn resume(&self, i: usize) {
        let member = &self.members[i];
        signal(
            member.process.as_ref().expect("server is stopped").pid(),
            libc::SIGCONT,
        );
        member.paused.store(false, Ordering::SeqCst);
    }

    /// `srvr` mode of server `i` (see [`server_mode`]); `None` if it is down, paused or electing.
    pub fn mode(&self, i: usize) -> Option<String> {
        let member = &self.members[i];
        if !member.is_running() || member.paused.load(Ordering::SeqCst) {
            return None;
        }
        server_mode(member.client_port)
    }

    /// Index of the server whose `srvr` says `Mode: leader` (or `standalone`, for a 1-server
    /// ensemble), if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.len()).find(|&i| matches!(self.mode(i).as_deref(), Some("leader" | "standalone")))
    }

    /// Waits until every running, unpaused server serves (leader or follower) and exactly one of
    /// them is the leader. Panics after [`START_TIMEOUT`], or at once if no quorum can exist
    /// (fewer than a majority of servers running).
    pub fn wait_quorum(&self) {
        if let Err(e) = self.try_wait_quorum(START_TIMEOUT) {
            panic!("ensemble has no quorum: {e}");
        }
    }

    fn try_wait_quorum(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.len())
                .filter(|&i| self.members[i].is_running())
                .collect();
            if running.len() * 2 <= self.len() {
                return Err(format!(
                    "only {} of {} servers are running",
                    running.len(),
                    self.len()
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
