//! Benchmarks of zk-master against a real standalone ZooKeeper server started with the
//! `testing` feature (`zk_master::testing`): cost of `is_master()`, join latency, graceful takeover
//! latency, and memory and threads per member.
//!
//! ```text
//! cargo run --release --features testing --example bench
//! cargo run --release --features testing --example bench -- --connect 127.0.0.1:2181   # use a running server
//! ```
//!
//! Every loop is bounded. Latencies are wall-clock (`Instant`, monotonic) on this machine;
//! the numbers are medians because the machine is small and noisy.

use std::fs;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use zk_master::{Config, Election};

/// Calls per `is_master()` run, and runs (the median is reported).
const CALLS: u64 = 10_000_000;
const RUNS: usize = 5;
/// Rounds of the join and takeover benchmarks, of which the first `WARMUP` are discarded.
const ROUNDS: usize = 60;
const WARMUP: usize = 10;
/// Members joined for the memory benchmark.
const MEMBERS: usize = 20;
/// Session timeout of every member (the harness server allows at most 4 s).
const SESSION: Duration = Duration::from_secs(4);
/// Longest wait for any single event; a round that exceeds it fails the benchmark.
const LIMIT: Duration = Duration::from_secs(15);
/// Pause after a member joins, so the others have handled its watch event before we measure.
const SETTLE: Duration = Duration::from_millis(50);

const USAGE: &str = "usage: bench [--connect HOST:PORT] [--rounds N]";

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let (connect, rounds) = parse_args();

    // Keep the server alive for the whole run; `None` when a server was given.
    let server = if connect.is_none() {
        eprintln!("starting a standalone ZooKeeper server ...");
        Some(zk_master::testing::ZkServer::start())
    } else {
        None
    };
    let connect = connect.unwrap_or_else(|| server.as_ref().unwrap().connect_string());
    eprintln!("server: {connect}");
    let run_id = std::process::id();
    let config = |name: &str| {
        Config::new(connect.clone())
            .group(format!("/bench/{run_id}/{name}"))
            .masters(1)
            .session_timeout(SESSION)
    };

    // Memory first, while the process is still fresh.
    let memory = bench_memory(&config("memory"));
    let is_master = bench_is_master(&config("is-master"));
    let join = bench_join(&config("join"), rounds);
    let takeover = bench_takeover(&config("takeover"), rounds);

    // Sessions close on the library's threads after resign() returns: let them end before the
    // server goes, and report any that do not.
    let left = wait_for_threads(1, Duration::from_secs(5));

    print_table(&connect, &memory, &is_master, &join, &takeover, rounds);
    let end = proc_status();
    println!(
        "{:<44} {:>10} {:>10}",
        "end of run (all resigned)", end.rss_kib, end.threads
    );
    println!(
        "{:<44} {:>10}",
        "library threads left 5 s after last resign", left
    );
    print_summary(&is_master, &join, &takeover);
    drop(server);
}

/// Waits (bounded) until the process has at most `threads` threads; returns how many remain
/// besides those.
fn wait_for_threads(threads: u64, limit: Duration) -> u64 {
    let deadline = Instant::now() + limit;
    loop {
        let now = proc_status().threads;
        if now <= threads || Instant::now() >= deadline {
            return now.saturating_sub(threads);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn observer_name(observe: Observe) -> &'static str {
    match observe {
        Observe::Spin => "spin",
        Observe::SpinYield => "yield",
        Observe::Wait => "wait",
    }
}

/// One machine-readable line (read by scripts/bench).
fn print_summary(is_master: &IsMaster, join: &Join, takeover: &[Takeover]) {
    let mut line = format!(
        "summary: is_master_ns={:.1} is_master_2t_ns={:.1} join_median_ms={:.3}",
        is_master.one_thread,
        is_master.two_threads,
        ms(join.join.median)
    );
    for (observe, t) in OBSERVERS.iter().zip(takeover) {
        let name = observer_name(*observe);
        line.push_str(&format!(
            " takeover_{name}_median_ms={:.3} takeover_{name}_p90_ms={:.3} resign_{name}_median_ms={:.3}",
            ms(t.latency.median),
            ms(t.latency.p90),
            ms(t.resign.median)
        ));
    }
    println!("{line}");
}

fn parse_args() -> (Option<String>, usize) {
    let mut connect = None;
    let mut rounds = ROUNDS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next().unwrap_or_else(|| {
                eprintln!("{name} needs a value\n{USAGE}");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--connect" => connect = Some(value("--connect")),
            "--rounds" => {
                rounds = value("--rounds")
                    .parse()
                    .ok()
                    .filter(|&n: &usize| n > WARMUP && n <= 10_000)
                    .unwrap_or_else(|| {
                        eprintln!("--rounds must be a number from {} to 10000", WARMUP + 1);
                        std::process::exit(2)
                    })
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            // `cargo bench`-style harness flags are ignored.
            "--bench" => {}
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    (connect, rounds)
}

fn join(config: &Config) -> Election {
    Election::join(config.clone()).unwrap_or_else(|e| panic!("join failed: {e}"))
}

/// Joins a member that must become master (its group is empty).
fn join_master(config: &Config) -> Election {
    let election = join(config);
    assert!(
        election.wait_until_master(LIMIT),
        "{:?} did not become master",
        election.member_name()
    );
    election
}

/// Joins a member that must stay a slave (its group has a master).
fn join_slave(config: &Config) -> Election {
    let election = join(config);
    assert!(
        !election.is_master(),
        "{:?} is master in a group with a master",
        election.member_name()
    );
    election
}

// ---------------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------------

/// Summary of a sample of durations.
struct Summary {
    n: usize,
    median: Duration,
    p90: Duration,
    min: Duration,
    max: Duration,
}

fn summarize(samples: &[Duration]) -> Summary {
    assert!(!samples.is_empty());
    let mut v = samples.to_vec();
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    // Nearest-rank percentile.
    let p90 = v[(n * 9).div_ceil(10) - 1];
    Summary {
        n,
        median,
        p90,
        min: v[0],
        max: v[n - 1],
    }
}

fn median_f64(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// /proc/self/status
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct ProcSnapshot {
    rss_kib: u64,
    threads: u64,
}

fn proc_status() -> ProcSnapshot {
    let text = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
    };
    ProcSnapshot {
        rss_kib: field("VmRSS:"),
        threads: field("Threads:"),
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Memory and threads per member
// ---------------------------------------------------------------------------------------------

struct Memory {
    before: ProcSnapshot,
    one: ProcSnapshot,
    all: ProcSnapshot,
    after_resign: ProcSnapshot,
}

fn bench_memory(config: &Config) -> Memory {
    eprintln!("memory: joining 1 then {MEMBERS} members ...");
    // Let stray startup threads (the harness's port probing etc.) finish first.
    thread::sleep(Duration::from_millis(200));
    let before = proc_status();
    let mut members = vec![join_master(config)];
    thread::sleep(SETTLE);
    let one = proc_status();
    for _ in 1..MEMBERS {
        members.push(join_slave(config));
    }
    thread::sleep(Duration::from_millis(300));
    let all = proc_status();
    assert_eq!(
        members.iter().filter(|m| m.is_master()).count(),
        1,
        "exactly one master expected"
    );
    // Resign from the back so that no takeover happens on the way.
    while let Some(member) = members.pop() {
        member.resign();
    }
    // Threads end shortly after resign: wait (bounded) until the count is back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after_resign = proc_status();
    while after_resign.threads > before.threads && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        after_resign = proc_status();
    }
    Memory {
        before,
        one,
        all,
        after_resign,
    }
}

// ---------------------------------------------------------------------------------------------
// 2. is_master() cost
// ---------------------------------------------------------------------------------------------

struct IsMaster {
    /// Median over runs of ns per call, one thread.
    one_thread: f64,
    /// Median over runs of ns per call, two threads at once (per thread, the slower of the two).
    two_threads: f64,
    /// Median over runs of ns per `Instant::now()`, for reference.
    instant_now: f64,
    /// Calls that returned false (the lease lapsed while measuring).
    false_answers: u64,
}

/// Calls `is_master()` `CALLS` times; returns (ns per call, false answers).
fn spin_is_master(election: &Election) -> (f64, u64) {
    let mut trues = 0u64;
    let start = Instant::now();
    for _ in 0..CALLS {
        trues += u64::from(black_box(black_box(election).is_master()));
    }
    let elapsed = start.elapsed();
    (elapsed.as_nanos() as f64 / CALLS as f64, CALLS - trues)
}

fn bench_is_master(config: &Config) -> IsMaster {
    eprintln!("is_master(): {RUNS} runs of {CALLS} calls, 1 and 2 threads ...");
    let election = join_master(config);
    thread::sleep(SETTLE);
    let mut false_answers = 0;

    // Warm-up run, not counted.
    spin_is_master(&election);

    let mut one = Vec::new();
    for _ in 0..RUNS {
        let (ns, falses) = spin_is_master(&election);
        one.push(ns);
        false_answers += falses;
    }

    let mut two = Vec::new();
    for _ in 0..RUNS {
        let barrier = Barrier::new(2);
        let results: Vec<(f64, u64)> = thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        spin_is_master(&election)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("is_master thread panicked"))
                .collect()
        });
        two.push(results.iter().map(|r| r.0).fold(0.0, f64::max));
        false_answers += results.iter().map(|r| r.1).sum::<u64>();
    }

    let mut now = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        for _ in 0..CALLS {
            black_box(Instant::now());
        }
        now.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
    }

    election.resign();
    IsMaster {
        one_thread: median_f64(&one),
        two_threads: median_f64(&two),
        instant_now: median_f64(&now),
        false_answers,
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Join latency
// ---------------------------------------------------------------------------------------------

struct Join {
    join: Summary,
    resign: Summary,
}

fn bench_join(config: &Config, rounds: usize) -> Join {
    eprintln!("join: {rounds} rounds of joining a slave ...");
    let master = join_master(config);
    let mut joins = Vec::new();
    let mut resigns = Vec::new();
    for round in 0..rounds {
        thread::sleep(SETTLE);
        let start = Instant::now();
        let slave = join_slave(config);
        let joined = start.elapsed();
        thread::sleep(SETTLE);
        let start = Instant::now();
        slave.resign();
        let resigned = start.elapsed();
        if round >= WARMUP {
            joins.push(joined);
            resigns.push(resigned);
        }
    }
    assert!(master.is_master(), "the master lost its role");
    master.resign();
    Join {
        join: summarize(&joins),
        resign: summarize(&resigns),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Graceful takeover latency
// ---------------------------------------------------------------------------------------------

/// How the successor B watches for its promotion, on a thread of its own.
#[derive(Clone, Copy, PartialEq)]
enum Observe {
    /// `while !b.is_master() {}`: a busy loop, as a program that polls would.
    Spin,
    /// The same loop with `thread::yield_now()` between calls.
    SpinYield,
    /// `b.wait_until_master(..)`: blocks on a condition variable.
    Wait,
}

const OBSERVERS: [Observe; 3] = [Observe::Spin, Observe::SpinYield, Observe::Wait];

/// Latencies of one way of observing: A.resign() called → B seen master, and A.resign()'s
/// own duration.
struct Takeover {
    latency: Summary,
    resign: Summary,
}

/// One round: A master, B slave; returns (A.resign() called → B seen master, A.resign() duration).
fn takeover_round(config: &Config, observe: Observe) -> (Duration, Duration) {
    let a = join_master(config);
    let b = join_slave(config);
    assert_eq!(
        b.session_timeout(),
        Some(SESSION),
        "granted session timeout"
    );
    thread::sleep(SETTLE);
    let ready = AtomicBool::new(false);
    let (seen, resign_start, resign_took) = thread::scope(|s| {
        let observer = s.spawn(|| {
            let deadline = Instant::now() + LIMIT;
            ready.store(true, Ordering::Release);
            match observe {
                Observe::Spin | Observe::SpinYield => loop {
                    if b.is_master() {
                        return Instant::now();
                    }
                    assert!(Instant::now() < deadline, "B never became master");
                    if observe == Observe::SpinYield {
                        thread::yield_now();
                    }
                },
                Observe::Wait => {
                    assert!(b.wait_until_master(LIMIT), "B never became master");
                    Instant::now()
                }
            }
        });
        // Bounded: the observer sets the flag first thing.
        let deadline = Instant::now() + LIMIT;
        while !ready.load(Ordering::Acquire) {
            assert!(Instant::now() < deadline, "observer thread did not start");
            std::hint::spin_loop();
        }
        if observe == Observe::Wait {
            // Give it time to block on the condition variable.
            thread::sleep(Duration::from_millis(5));
        }
        let start = Instant::now();
        a.resign();
        let took = start.elapsed();
        let seen = observer.join().expect("observer thread panicked");
        (seen, start, took)
    });
    assert!(!a.is_master());
    b.resign();
    (seen.saturating_duration_since(resign_start), resign_took)
}

/// Rounds of the three observers, interleaved so that drift of the machine hits all alike.
fn bench_takeover(config: &Config, rounds: usize) -> Vec<Takeover> {
    eprintln!(
        "takeover: {rounds} rounds x {} observers ...",
        OBSERVERS.len()
    );
    let mut latency = vec![Vec::new(); OBSERVERS.len()];
    let mut resign = vec![Vec::new(); OBSERVERS.len()];
    for round in 0..rounds {
        for (i, &observe) in OBSERVERS.iter().enumerate() {
            let (seen, took) = takeover_round(config, observe);
            if round >= WARMUP {
                latency[i].push(seen);
                resign[i].push(took);
            }
        }
    }
    latency
        .iter()
        .zip(&resign)
        .map(|(l, r)| Takeover {
            latency: summarize(l),
            resign: summarize(r),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 6. Report
// ---------------------------------------------------------------------------------------------

fn print_table(
    connect: &str,
    memory: &Memory,
    is_master: &IsMaster,
    join: &Join,
    takeover: &[Takeover],
    rounds: usize,
) {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "zk-master bench  server {connect}  cores {cores}  session timeout {}s  rounds {rounds} (first {WARMUP} discarded)",
        SESSION.as_secs()
    );
    println!();
    println!(
        "{:<44} {:>10} {:>10} {:>10} {:>10}",
        "latency (ms)", "median", "p90", "max", "min"
    );
    let row = |name: &str, s: &Summary| {
        println!(
            "{:<44} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
            format!("{name} (n={})", s.n),
            ms(s.median),
            ms(s.p90),
            ms(s.max),
            ms(s.min)
        );
    };
    row("join as slave", &join.join);
    row("resign of a slave", &join.resign);
    for (observe, t) in OBSERVERS.iter().zip(takeover) {
        let how = match observe {
            Observe::Spin => "B.is_master() spin",
            Observe::SpinYield => "B.is_master() spin+yield",
            Observe::Wait => "B.wait_until_master()",
        };
        row(&format!("takeover, {how}"), &t.latency);
        row(
            &format!("  A.resign() itself, {}", observer_name(*observe)),
            &t.resign,
        );
    }
    println!();
    println!("{:<44} {:>10}", "is_master() (ns/call, median of 5)", "ns");
    println!("{:<44} {:>10.1}", "1 thread", is_master.one_thread);
    println!(
        "{:<44} {:>10.1}",
        "2 threads at once (slower thread)", is_master.two_threads
    );
    println!(
        "{:<44} {:>10.1}",
        "Instant::now() alone (reference)", is_master.instant_now
    );
    println!(
        "{:<44} {:>10}",
        "calls that returned false (lease lapsed)", is_master.false_answers
    );
    println!();
    let kib = |a: &ProcSnapshot, b: &ProcSnapshot| b.rss_kib as f64 - a.rss_kib as f64;
    let threads = |a: &ProcSnapshot, b: &ProcSnapshot| b.threads as f64 - a.threads as f64;
    let m = memory;
    println!("{:<44} {:>10} {:>10}", "memory", "RSS KiB", "threads");
    println!(
        "{:<44} {:>10} {:>10}",
        "before joining", m.before.rss_kib, m.before.threads
    );
    println!(
        "{:<44} {:>10} {:>10}",
        "1 member", m.one.rss_kib, m.one.threads
    );
    println!(
        "{:<44} {:>10} {:>10}",
        format!("{MEMBERS} members"),
        m.all.rss_kib,
        m.all.threads
    );
    println!(
        "{:<44} {:>10} {:>10}",
        "after all resigned", m.after_resign.rss_kib, m.after_resign.threads
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "per member: first",
        kib(&m.before, &m.one),
        threads(&m.before, &m.one)
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        format!("per member: average of {MEMBERS}"),
        kib(&m.before, &m.all) / MEMBERS as f64,
        threads(&m.before, &m.all) / MEMBERS as f64
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        format!("per member: members 2..{MEMBERS}"),
        kib(&m.one, &m.all) / (MEMBERS - 1) as f64,
        threads(&m.one, &m.all) / (MEMBERS - 1) as f64
    );
}
