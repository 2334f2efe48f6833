//! Benchmarks of zk-master against a real ZooKeeper server: join latency, graceful takeover
//! latency, the floor (one raw read round trip), `is_master()` cost, memory and threads per
//! member, and the scale of one group (N members in this process). `scripts/bench` runs it next
//! to kazoo's and Curator's recipes on one server and prints them side by side.
//!
//! ```text
//! cargo run --release --features testing --example bench                   # starts its own server
//! cargo run --release --features testing --example bench -- --connect 127.0.0.1:2181 --json out.json
//! cargo run --release --features testing --example bench -- --quick       # a smoke run
//! ```
//!
//! Every loop is bounded. Latencies are wall-clock (`Instant`, monotonic) on this machine; the
//! numbers are medians (and p90) because the machine is small and noisy.

mod inproc;
mod scale;
mod stats;

use std::thread;
use std::time::{Duration, Instant};

use zk_master::{Config, Election};

use inproc::{observer_name, IsMaster, Join, Memory, Takeover, FLOOR_HOW};
use scale::{Scale, SCALE_SESSION};
use stats::{ms, proc_status, JsonObject, ProcSnapshot, Summary};

/// Session timeout of every member but the scale ones (the default server allows at most 4 s).
const SESSION: Duration = Duration::from_secs(4);
/// Longest wait for any single event; a round that exceeds it fails the benchmark.
pub const LIMIT: Duration = Duration::from_secs(15);
/// Pause after a member joins, so the others have handled its watch event before we measure.
pub const SETTLE: Duration = Duration::from_millis(50);

const USAGE: &str = "usage: bench [--connect HOST:PORT] [--rounds N] [--quick] [--json FILE] \
[--scale N,N,..] [--scale-rounds N] [--scale-budget-s S] [--scale-only] [--herd-free]";

const HELP: &str = "\
bench: zk-master's benchmarks against a real ZooKeeper server.

Options:
  --connect HOST:PORT   a running server [default: start one with the testing feature, whose
                        sessions are capped at 4 s, so the scale members get 4 s, not 20 s]
  --rounds N            rounds of the join and takeover benchmarks, the first 10 discarded
                        [default: 60]
  --quick               a smoke run: 4 rounds (first 1 discarded), 1/100 of the is_master()
                        calls, one takeover observer, scale 1,2,10 with 2 takeovers
  --json FILE           also write the results to FILE as one JSON object
  --scale N,N,..        group sizes of the scale benchmark [default: 1,2,10,100]; empty: skip
  --scale-rounds N      takeovers per size; a new member joins after each, so the size holds
                        [default: 5]
  --scale-budget-s S    a size whose members take longer than S seconds to join is cut there,
                        and no larger size is tried [default: 120]
  --scale-only          run the scale benchmark alone
  --herd-free           scale members in herd-free mode (Config::herd_free): a member watches
                        only the one ahead of it, so slaves are not told of every takeover
";

/// What to run, from the flags.
pub struct Plan {
    pub rounds: usize,
    pub warmup: usize,
    pub quick: bool,
    pub json: Option<String>,
    pub scale: Vec<usize>,
    pub scale_rounds: usize,
    pub scale_budget: Duration,
    /// Only the scale benchmark.
    pub scale_only: bool,
    /// Scale members in herd-free mode (`Config::herd_free`).
    pub herd_free: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let (connect, plan) = parse_args().unwrap_or_else(|message| {
        eprintln!("{message}\n{USAGE}");
        std::process::exit(2)
    });

    // Keep the server alive for the whole run; `None` when a server was given.
    let server = connect.is_none().then(|| {
        eprintln!("starting a standalone ZooKeeper server ...");
        zk_master::testing::ZkServer::builder()
            .max_session_timeout(SCALE_SESSION * 3)
            .start()
    });
    let connect = connect.unwrap_or_else(|| server.as_ref().unwrap().connect_string());
    eprintln!("server: {connect}");
    let run_id = std::process::id();
    let config = |name: &str| {
        Config::new(connect.clone())
            .group(format!("/bench/{run_id}/{name}"))
            .masters(1)
            .session_timeout(SESSION)
    };

    if plan.scale_only {
        let (scale, last_members) = scale::bench_scale(&config("scale"), &connect, &plan);
        print_scale(&scale);
        let mut o = JsonObject::default();
        o.text("impl", "zk-master")
            .text("version", env!("CARGO_PKG_VERSION"));
        scale_json(&mut o, &scale);
        write_json(&plan, o.finish());
        // See below: the largest group is left to the process's exit.
        std::mem::forget(last_members);
        drop(server);
        std::process::exit(0);
    }

    // Memory first, while the process is still fresh.
    let memory = inproc::bench_memory(&config("memory"), if plan.quick { 5 } else { 20 });
    let is_master = inproc::bench_is_master(&config("is-master"), &plan);
    let join = inproc::bench_join(&config("join"), &plan);
    let takeover = inproc::bench_takeover(&config("takeover"), &plan);
    let floor = inproc::bench_floor(&connect, &plan);
    // Sessions close on the library's threads after resign() returns: let them end before the
    // scale members come, and report any that do not.
    let left = wait_for_threads(1, Duration::from_secs(5));
    let (scale, last_members) = scale::bench_scale(&config("scale"), &connect, &plan);

    print_table(
        &connect, &plan, &memory, &is_master, &join, &takeover, &floor,
    );
    print_scale(&scale);
    println!(
        "{:<44} {:>10}",
        "library threads left 5 s after last resign (before scale)", left
    );
    write_json(
        &plan,
        to_json(&memory, &is_master, &join, &takeover, &floor, &scale),
    );
    // The largest group is not resigned member by member (each resign makes all the others read
    // the group again): the server expires its sessions after the process exits.
    std::mem::forget(last_members);
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

fn parse_args() -> Result<(Option<String>, Plan), String> {
    let mut connect = None;
    let mut plan = Plan {
        rounds: 60,
        warmup: 10,
        quick: false,
        json: None,
        scale: vec![1, 2, 10, 100],
        scale_rounds: 5,
        scale_budget: Duration::from_secs(120),
        scale_only: false,
        herd_free: false,
    };
    let (mut rounds, mut scale, mut scale_rounds) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |text: String| {
            text.parse::<usize>()
                .map_err(|_| format!("{arg} takes a whole number, not {text:?}"))
        };
        match arg.as_str() {
            "--connect" => connect = Some(value()?),
            "--rounds" => rounds = Some(number(value()?)?),
            "--quick" => plan.quick = true,
            "--scale-only" => plan.scale_only = true,
            "--herd-free" => plan.herd_free = true,
            "--json" => plan.json = Some(value()?),
            "--scale" => {
                let list = value()?;
                scale = Some(
                    list.split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| number(s.to_owned()).and_then(|n| positive(&arg, n)))
                        .collect::<Result<Vec<_>, _>>()?,
                );
            }
            "--scale-rounds" => scale_rounds = Some(number(value()?)?),
            "--scale-budget-s" => plan.scale_budget = Duration::from_secs(number(value()?)? as u64),
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0)
            }
            // `cargo bench`-style harness flags are ignored.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if plan.quick {
        (plan.rounds, plan.warmup, plan.scale_rounds) = (4, 1, 2);
        plan.scale = vec![1, 2, 10];
    }
    plan.rounds = rounds.unwrap_or(plan.rounds);
    plan.scale = scale.unwrap_or(plan.scale);
    plan.scale_rounds = scale_rounds.unwrap_or(plan.scale_rounds);
    if plan.rounds <= plan.warmup || plan.rounds > 10_000 {
        return Err(format!(
            "--rounds must be from {} to 10000",
            plan.warmup + 1
        ));
    }
    Ok((connect, plan))
}

fn positive(flag: &str, n: usize) -> Result<usize, String> {
    (n > 0)
        .then_some(n)
        .ok_or_else(|| format!("{flag}: sizes must be at least 1"))
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

/// Writes `json` to the `--json` file, if one was given; exits 1 if it cannot.
fn write_json(plan: &Plan, json: String) {
    if let Some(path) = &plan.json {
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("cannot write {path}: {e}");
            std::process::exit(1);
        }
    }
}

fn scale_json(o: &mut JsonObject, scale: &[Scale]) {
    let sizes: Vec<String> = scale.iter().map(Scale::json).collect();
    o.raw("scale", format!("[{}]", sizes.join(", ")));
}

fn to_json(
    memory: &Memory,
    is_master: &IsMaster,
    join: &Join,
    takeover: &[Takeover],
    floor: &Summary,
    scale: &[Scale],
) -> String {
    let mut o = JsonObject::default();
    o.text("impl", "zk-master")
        .text("version", env!("CARGO_PKG_VERSION"))
        .raw("join_ms", join.master.json())
        .raw("join_slave_ms", join.slave.json())
        .raw("resign_slave_ms", join.resign.json());
    for t in takeover {
        let key = match observer_name(t.observe) {
            "wait" => "takeover_ms".to_owned(),
            other => format!("takeover_{other}_ms"),
        };
        o.raw(&key, t.latency.json());
        o.raw(
            &format!("resign_{}_ms", observer_name(t.observe)),
            t.resign.json(),
        );
    }
    let m = memory;
    let per_kth = |f: fn(&ProcSnapshot) -> u64| {
        (f(&m.all) as f64 - f(&m.one) as f64) / (m.members - 1) as f64
    };
    o.raw("floor_ms", floor.json())
        .text("floor_how", FLOOR_HOW)
        .num("is_master_ns", is_master.one_thread)
        .num("is_master_2t_ns", is_master.two_threads)
        .raw("is_master_false_answers", is_master.false_answers)
        .num(
            "first_member_kib",
            m.one.rss_kib as f64 - m.before.rss_kib as f64,
        )
        .num(
            "first_member_threads",
            m.one.threads as f64 - m.before.threads as f64,
        )
        .num("kth_member_kib", per_kth(|s| s.rss_kib))
        .num("kth_member_threads", per_kth(|s| s.threads));
    scale_json(&mut o, scale);
    o.finish()
}

fn print_table(
    connect: &str,
    plan: &Plan,
    memory: &Memory,
    is_master: &IsMaster,
    join: &Join,
    takeover: &[Takeover],
    floor: &Summary,
) {
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "zk-master bench  server {connect}  cores {cores}  session timeout {}s  rounds {} (first {} discarded)",
        SESSION.as_secs(),
        plan.rounds,
        plan.warmup
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
    row("join an empty group (connect included)", &join.master);
    row("join as slave", &join.slave);
    row("resign of a slave", &join.resign);
    for t in takeover {
        let name = observer_name(t.observe);
        row(&format!("takeover, B observes by {name}"), &t.latency);
        row(&format!("  A.resign() itself, {name}"), &t.resign);
    }
    row("floor: raw exists() round trip", floor);
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
    let m = memory;
    let kib = |a: &ProcSnapshot, b: &ProcSnapshot| b.rss_kib as f64 - a.rss_kib as f64;
    let threads = |a: &ProcSnapshot, b: &ProcSnapshot| b.threads as f64 - a.threads as f64;
    println!("{:<44} {:>10} {:>10}", "memory", "RSS KiB", "threads");
    for (name, s) in [
        ("before joining", &m.before),
        ("1 member", &m.one),
        (&format!("{} members", m.members) as &str, &m.all),
        ("after all resigned", &m.after_resign),
    ] {
        println!("{:<44} {:>10} {:>10}", name, s.rss_kib, s.threads);
    }
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        "per member: first",
        kib(&m.before, &m.one),
        threads(&m.before, &m.one)
    );
    println!(
        "{:<44} {:>10.1} {:>10.1}",
        format!("per member: members 2..{}", m.members),
        kib(&m.one, &m.all) / (m.members - 1) as f64,
        threads(&m.one, &m.all) / (m.members - 1) as f64
    );
}

fn print_scale(scale: &[Scale]) {
    if scale.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<8} {:>10} {:>12} {:>12} {:>10} {:>10} {:>12} {:>12} {:>8}",
        "members",
        "join all s",
        "takeover ms",
        "settled ms",
        "notif/t",
        "packets/t",
        "resp B/t",
        "recv B/t",
        "threads"
    );
    for s in scale {
        let median = |x: &Option<Summary>| x.as_ref().map_or(f64::NAN, |s| ms(s.median));
        let members = match s.capped_at {
            Some(n) => format!("{n}/{}", s.members),
            None => s.members.to_string(),
        };
        println!(
            "{:<8} {:>10.2} {:>12.3} {:>12.3} {:>10.0} {:>10.0} {:>12.0} {:>12.0} {:>8}",
            members,
            s.join_all.as_secs_f64(),
            median(&s.takeover),
            median(&s.settled),
            s.notifications,
            s.packets,
            s.response_bytes,
            s.bytes_received,
            s.threads
        );
        println!("         wchs: {}", s.watches);
    }
}
