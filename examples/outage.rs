//! What a member costs while no server answers (issue 9): log lines and CPU of one member
//! through a first start without a server, an outage, a recovery, a second outage (the server
//! stopped: connections refused) and a third one (the server frozen with SIGSTOP: connections
//! accepted, nothing answered). Every log record of the process is counted by level and by
//! origin (zk-master, or the `zookeeper` crate); CPU is the process's own (`getrusage`), the
//! server being another process; RSS is the process's resident memory at the end of each phase.
//!
//! ```text
//! cargo run --release --features testing --example outage            # 12 s per outage
//! cargo run --release --features testing --example outage -- --outage-s 30 --print-logs
//! ```
//!
//! It checks the goals of the issue and exits with 1 when one is missed: in every outage at
//! most 3 records a second at WARN or above, none from the crate at ERROR, and under 1% of a
//! core. Every wait is bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use log::{Level, Log, Metadata, Record};
use zk_master::testing::ZkServer;
use zk_master::{Config, Election};

/// The session timeout of the issue's scenarios.
const SESSION: Duration = Duration::from_secs(4);
/// Longest wait for the member to be master again after a recovery.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);
/// Goals: records at WARN or above per second of outage, and share of one core.
const MAX_WARN_PER_S: f64 = 3.0;
const MAX_CPU: f64 = 0.01;

/// Counts every record: [ours, the crate's, others] × [ERROR, WARN, INFO and below].
struct Counter {
    counts: [[AtomicU64; 3]; 3],
    print: AtomicBool,
}

static COUNTER: Counter = Counter {
    counts: [
        [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
        [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    ],
    print: AtomicBool::new(false),
};

impl Log for Counter {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let origin = match record.target() {
            t if t.starts_with("zk_master") => 0,
            t if t.starts_with("zookeeper") => 1,
            _ => 2,
        };
        let level = match record.level() {
            Level::Error => 0,
            Level::Warn => 1,
            _ => 2,
        };
        self.counts[origin][level].fetch_add(1, Ordering::Relaxed);
        if self.print.load(Ordering::Relaxed) && level < 2 {
            eprintln!(
                "  {} {}: {}",
                record.level(),
                record.target(),
                record.args()
            );
        }
    }

    fn flush(&self) {}
}

/// Counts and CPU time at one moment.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    counts: [[u64; 3]; 3],
    cpu: Duration,
    /// Resident memory in KiB (0 if unknown), to see what an outage leaves behind.
    rss_kib: u64,
}

fn snapshot() -> Snapshot {
    let mut counts = [[0; 3]; 3];
    for (o, row) in COUNTER.counts.iter().enumerate() {
        for (l, c) in row.iter().enumerate() {
            counts[o][l] = c.load(Ordering::Relaxed);
        }
    }
    Snapshot {
        at: Instant::now(),
        counts,
        cpu: cpu_time(),
        rss_kib: rss_kib(),
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and keeps no pointer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is a valid `who`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// One phase's numbers; returns whether an outage met the goals.
fn report(name: &str, from: Snapshot, to: Snapshot, outage: bool) -> bool {
    let secs = to.at.duration_since(from.at).as_secs_f64();
    let d = |o: usize, l: usize| to.counts[o][l] - from.counts[o][l];
    let warn_up = d(0, 0) + d(0, 1) + d(1, 0) + d(1, 1) + d(2, 0) + d(2, 1);
    let cpu = (to.cpu - from.cpu).as_secs_f64();
    let share = cpu / secs;
    let met = warn_up as f64 <= MAX_WARN_PER_S * secs.max(1.0) && d(1, 0) == 0 && share < MAX_CPU;
    println!(
        "{name:<34} {secs:6.1} s  zk-master E/W/I {:>3}/{:>3}/{:>5}  crate E/W/I {:>6}/{:>5}/{:>5}  \
         CPU {:7.1} ms = {:6.2}% of a core  RSS {} KiB{}",
        d(0, 0),
        d(0, 1),
        d(0, 2),
        d(1, 0),
        d(1, 1),
        d(1, 2),
        cpu * 1000.0,
        share * 100.0,
        to.rss_kib,
        match (outage, met) {
            (false, _) => "",
            (true, true) => "  [goals met]",
            (true, false) => "  [GOALS MISSED]",
        }
    );
    !outage || met
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let outage = Duration::from_secs(
        flag(&args, "--outage-s")
            .and_then(|s| s.parse().ok())
            .unwrap_or(12),
    );
    COUNTER
        .print
        .store(args.iter().any(|a| a == "--print-logs"), Ordering::Relaxed);
    log::set_logger(&COUNTER).expect("the only logger");
    log::set_max_level(log::LevelFilter::Info);

    let mut server = ZkServer::start();
    let config = Config::new(server.connect_string())
        .group("/outage-bench")
        .session_timeout(SESSION)
        .connect_timeout(outage + RECOVERY_LIMIT);
    let mut all_met = true;

    // First start with no server: join waits for one.
    server.stop();
    let start = snapshot();
    let joining = thread::spawn(move || Election::join(config));
    thread::sleep(outage);
    all_met &= report("first start, no server", start, snapshot(), true);
    server.restart();
    let member = joining
        .join()
        .expect("join thread")
        .expect("joined once the server was back");
    let recovering = snapshot();
    assert!(
        member.wait_until_master(RECOVERY_LIMIT),
        "master after the first start"
    );
    thread::sleep(SESSION);
    report("recovery (master, 1 T)", recovering, snapshot(), false);

    for (i, frozen) in [(1, false), (2, false), (3, true)] {
        let kind = if frozen {
            "server frozen"
        } else {
            "server stopped"
        };
        let down = snapshot();
        if frozen {
            server.pause();
        } else {
            server.stop();
        }
        thread::sleep(outage);
        all_met &= report(&format!("outage {i} ({kind})"), down, snapshot(), true);
        if frozen {
            server.resume();
        } else {
            server.restart();
        }
        let recovering = snapshot();
        let master = member.wait_until_master(RECOVERY_LIMIT);
        thread::sleep(SESSION);
        report(
            &format!("recovery {i} (master: {master}, +1 T)"),
            recovering,
            snapshot(),
            false,
        );
    }
    drop(member);
    println!(
        "goals (every outage): at most {MAX_WARN_PER_S} records/s at WARN or above, none from \
         the crate at ERROR, under {:.0}% of a core: {}",
        MAX_CPU * 100.0,
        if all_met { "met" } else { "MISSED" }
    );
    if !all_met {
        std::process::exit(1);
    }
}
