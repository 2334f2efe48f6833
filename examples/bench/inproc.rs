//! In-process measurements: memory and threads per member, `is_master()` cost, join latency,
//! graceful takeover latency, and the floor (one raw read round trip).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use zk_master::{Config, Election};

use crate::stats::{median_f64, proc_status, summarize, ProcSnapshot, Summary};
use crate::{join, join_master, join_slave, Plan, LIMIT, SETTLE};

/// Calls per `is_master()` run, and runs (the median is reported).
const CALLS: u64 = 10_000_000;
const RUNS: usize = 5;

// ---------------------------------------------------------------------------------------------
// Memory and threads per member
// ---------------------------------------------------------------------------------------------

pub struct Memory {
    pub members: usize,
    pub before: ProcSnapshot,
    pub one: ProcSnapshot,
    pub all: ProcSnapshot,
    pub after_resign: ProcSnapshot,
}

pub fn bench_memory(config: &Config, members: usize) -> Memory {
    eprintln!("memory: joining 1 then {members} members ...");
    // Let stray startup threads (the harness's port probing etc.) finish first.
    thread::sleep(Duration::from_millis(200));
    let before = proc_status();
    let mut joined = vec![join_master(config)];
    thread::sleep(SETTLE);
    let one = proc_status();
    for _ in 1..members {
        joined.push(join_slave(config));
    }
    thread::sleep(Duration::from_millis(300));
    let all = proc_status();
    assert_eq!(
        joined.iter().filter(|m| m.is_master()).count(),
        1,
        "exactly one master expected"
    );
    // Resign from the back so that no takeover happens on the way.
    while let Some(member) = joined.pop() {
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
        members,
        before,
        one,
        all,
        after_resign,
    }
}

// ---------------------------------------------------------------------------------------------
// is_master() cost
// ---------------------------------------------------------------------------------------------

pub struct IsMaster {
    /// Median over runs of ns per call, one thread.
    pub one_thread: f64,
    /// Median over runs of ns per call, two threads at once (per thread, the slower of the two).
    pub two_threads: f64,
    /// Median over runs of ns per `Instant::now()`, for reference.
    pub instant_now: f64,
    /// Calls that returned false (the lease lapsed while measuring).
    pub false_answers: u64,
}

/// Calls `is_master()` `calls` times; returns (ns per call, false answers).
fn spin_is_master(election: &Election, calls: u64) -> (f64, u64) {
    let mut trues = 0u64;
    let start = Instant::now();
    for _ in 0..calls {
        trues += u64::from(black_box(black_box(election).is_master()));
    }
    let elapsed = start.elapsed();
    (elapsed.as_nanos() as f64 / calls as f64, calls - trues)
}

pub fn bench_is_master(config: &Config, plan: &Plan) -> IsMaster {
    let calls = if plan.quick { CALLS / 100 } else { CALLS };
    eprintln!("is_master(): {RUNS} runs of {calls} calls, 1 and 2 threads ...");
    let election = join_master(config);
    thread::sleep(SETTLE);
    let mut false_answers = 0;

    // Warm-up run, not counted.
    spin_is_master(&election, calls);

    let mut one = Vec::new();
    for _ in 0..RUNS {
        let (ns, falses) = spin_is_master(&election, calls);
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
                        spin_is_master(&election, calls)
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
        for _ in 0..calls {
            black_box(Instant::now());
        }
        now.push(start.elapsed().as_nanos() as f64 / calls as f64);
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
// Join latency
// ---------------------------------------------------------------------------------------------

pub struct Join {
    /// `Election::join` into an empty group (connect included) until it returns as master: what
    /// the peers' join is measured as.
    pub master: Summary,
    /// `Election::join` of a second member until it returns as slave.
    pub slave: Summary,
    /// `resign()` of that slave.
    pub resign: Summary,
}

pub fn bench_join(config: &Config, plan: &Plan) -> Join {
    let rounds = plan.rounds;
    eprintln!("join: {rounds} rounds of joining an empty group, then as a slave ...");
    let mut masters = Vec::new();
    for round in 0..rounds {
        let fresh = config
            .clone()
            .group(format!("{}/{round}", config.get_group()));
        thread::sleep(SETTLE);
        let start = Instant::now();
        let election = join(&fresh);
        let joined = start.elapsed();
        assert!(election.is_master(), "join into an empty group: not master");
        election.resign();
        if round >= plan.warmup {
            masters.push(joined);
        }
    }
    let slave_group = config
        .clone()
        .group(format!("{}/slave", config.get_group()));
    let master = join_master(&slave_group);
    let mut joins = Vec::new();
    let mut resigns = Vec::new();
    for round in 0..rounds {
        thread::sleep(SETTLE);
        let start = Instant::now();
        let slave = join_slave(&slave_group);
        let joined = start.elapsed();
        thread::sleep(SETTLE);
        let start = Instant::now();
        slave.resign();
        let resigned = start.elapsed();
        if round >= plan.warmup {
            joins.push(joined);
            resigns.push(resigned);
        }
    }
    assert!(master.is_master(), "the master lost its role");
    master.resign();
    Join {
        master: summarize(&masters),
        slave: summarize(&joins),
        resign: summarize(&resigns),
    }
}

// ---------------------------------------------------------------------------------------------
// Graceful takeover latency
// ---------------------------------------------------------------------------------------------

/// How the successor B watches for its promotion, on a thread of its own.
#[derive(Clone, Copy, PartialEq)]
pub enum Observe {
    /// `while !b.is_master() {}`: a busy loop, as a program that polls would.
    Spin,
    /// The same loop with `thread::yield_now()` between calls.
    SpinYield,
    /// `b.wait_until_master(..)`: blocks on a condition variable.
    Wait,
}

pub const OBSERVERS: [Observe; 3] = [Observe::Wait, Observe::Spin, Observe::SpinYield];

pub fn observer_name(observe: Observe) -> &'static str {
    match observe {
        Observe::Spin => "spin",
        Observe::SpinYield => "yield",
        Observe::Wait => "wait",
    }
}

/// Latencies of one way of observing: A.resign() called → B seen master, and A.resign()'s
/// own duration.
pub struct Takeover {
    pub observe: Observe,
    pub latency: Summary,
    pub resign: Summary,
}

/// One round: A master, B slave; returns (A.resign() called → B seen master, A.resign() duration).
fn takeover_round(config: &Config, observe: Observe) -> (Duration, Duration) {
    let a = join_master(config);
    let b = join_slave(config);
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

/// Rounds of the observers, interleaved so that drift of the machine hits all alike (only
/// `wait_until_master` with `--quick`).
pub fn bench_takeover(config: &Config, plan: &Plan) -> Vec<Takeover> {
    let observers = if plan.quick {
        &OBSERVERS[..1]
    } else {
        &OBSERVERS[..]
    };
    eprintln!(
        "takeover: {} rounds x {} observers ...",
        plan.rounds,
        observers.len()
    );
    let mut latency = vec![Vec::new(); observers.len()];
    let mut resign = vec![Vec::new(); observers.len()];
    for round in 0..plan.rounds {
        for (i, &observe) in observers.iter().enumerate() {
            let (seen, took) = takeover_round(config, observe);
            if round >= plan.warmup {
                latency[i].push(seen);
                resign[i].push(took);
            }
        }
    }
    observers
        .iter()
        .zip(latency.iter().zip(&resign))
        .map(|(&observe, (l, r))| Takeover {
            observe,
            latency: summarize(l),
            resign: summarize(r),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The floor: one raw read round trip
// ---------------------------------------------------------------------------------------------

/// What the floor is measured with: the library's own client path (the `zookeeper` crate behind
/// its relay) is internal, so a plain client of the same crate, connected directly.
pub const FLOOR_HOW: &str = "exists(\"/\") on a raw zookeeper 0.8 client (the crate the library \
uses), connected directly: the library's relay is internal, so its own path adds a hop";

/// `exists("/")` round trips on a raw client of the `zookeeper` crate.
pub fn bench_floor(connect: &str, plan: &Plan) -> Summary {
    let calls = plan.rounds * 5;
    eprintln!("floor: {calls} exists() round trips on a raw zookeeper client ...");
    // The crate's connect returns before a session exists and its calls have no timeout: connect
    // on a helper thread, bounded by LIMIT.
    let (tx, rx) = mpsc::channel();
    let connect = connect.to_owned();
    thread::spawn(move || {
        let zk = zookeeper::ZooKeeper::connect(&connect, Duration::from_secs(4), |_| {});
        let _ = tx.send(zk);
    });
    let zk = rx
        .recv_timeout(LIMIT)
        .expect("raw client: no answer")
        .expect("raw client: connect failed");
    let deadline = Instant::now() + LIMIT;
    while zk.exists("/", false).is_err() {
        assert!(Instant::now() < deadline, "raw client: no session");
        thread::sleep(Duration::from_millis(20));
    }
    let mut samples = Vec::new();
    for i in 0..calls + plan.warmup {
        let start = Instant::now();
        zk.exists("/", false).expect("raw exists");
        if i >= plan.warmup {
            samples.push(start.elapsed());
        }
    }
    summarize(&samples)
}
