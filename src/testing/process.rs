//! One ZooKeeper JVM, and what starting one needs: the classpath, a fresh directory, free ports,
//! a configuration, and a lifeline that kills the JVM when the test process ends.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use super::TICK_TIME;

/// How often start-up and quorum waits look again.
pub(super) const POLL: Duration = Duration::from_millis(50);
/// A server that fails to start (most likely: its port was taken between our check and the
/// JVM's bind) is tried again on other ports, this many times in all.
pub(super) const START_ATTEMPTS: usize = 3;
const JAR_DIR: &str = "/usr/share/java";

/// Freezes process `pid` (SIGSTOP, `frozen`) or lets it run again (SIGCONT), and returns once
/// every thread of it has stopped or resumed: a thread stops only when it next runs, so on a busy
/// machine a process just sent SIGSTOP can still answer a request. For a server, a worker of
/// yours, anything that should look hung. `pid` should be a child not reaped yet, so that it
/// cannot have been reused. Uses the `kill` command, so the library needs no `unsafe`.
///
/// # Panics
/// If the signal cannot be sent, or the threads have not all stopped (or resumed) within 5 s.
///
/// ```no_run
/// use zk_master::testing::freeze_process;
/// let mut worker = std::process::Command::new("my-service").spawn()?;
/// freeze_process(worker.id(), true); // a hung worker: its lease lapses, a successor takes over
/// freeze_process(worker.id(), false);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn freeze_process(pid: u32, frozen: bool) {
    let sig = if frozen { "-STOP" } else { "-CONT" };
    let status = Command::new("kill").arg(sig).arg(pid.to_string()).status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "kill {sig} {pid} failed: {status:?}"
    );
    wait_until_stopped(pid, frozen);
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
    let deadline = Instant::now() + Duration::from_secs(5);
    while !all_threads() {
        assert!(
            Instant::now() < deadline,
            "process {pid} did not {what} within 5 s"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The Java classpath for the ZooKeeper server: `$ZK_CLASSPATH` if set, else the Debian jars
/// (`zookeeper.jar`, whose manifest lists its dependencies, plus `slf4j-simple.jar` as the
/// logging backend). Keep in step with `zk_classpath` in `scripts/zk-env`.
pub(super) fn zk_classpath() -> String {
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
pub(super) fn fresh_dir(kind: &str) -> PathBuf {
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
pub(super) fn remove_stale_dirs() {
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

pub(super) fn keep_dirs() -> bool {
    std::env::var("ZK_MASTER_KEEP_TEST_DIRS").is_ok_and(|v| !v.is_empty() && v != "0")
}

pub(super) fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// Returns `count` distinct ports that are free on 127.0.0.1 right now and that no other server of
/// this process got. Ports are taken below the kernel's ephemeral range when possible, so that a
/// client's outgoing connection cannot grab the port of a stopped server before it restarts.
pub(super) fn free_ports(count: usize) -> Vec<u16> {
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

pub(super) fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(super) fn print_log_tail_if_panicking(label: &str, dir: &Path) {
    if thread::panicking() {
        eprintln!(
            "---- last lines of {label} log ({}) ----\n{}\n----",
            dir.join("zookeeper.log").display(),
            tail(&dir.join("zookeeper.log"), 40)
        );
    }
}

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
pub(super) struct ZkProcess {
    child: Child,
    /// Write end of the lifeline pipe; closing it makes the wrapper's watcher kill the JVM.
    lifeline: Option<ChildStdin>,
}

impl ZkProcess {
    pub(super) fn spawn(main_class: &str, dir: &Path, cfg: &Path) -> ZkProcess {
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

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the JVM has not exited (a paused JVM is alive). The child is only reaped by
    /// `kill`, so its pid cannot be reused while `self` exists.
    pub(super) fn is_alive(&self) -> bool {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Format: "pid (comm) S ..."; the comm may contain spaces, the state follows the last ')'.
        match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        }
    }

    /// SIGKILL (works on a paused JVM too) and reap.
    pub(super) fn kill(&mut self) {
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

pub(super) fn common_config(data_dir: &Path, client_port: u16) -> String {
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
