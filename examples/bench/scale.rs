//! Scale: N members of one group in this process (N handles), for N in `--scale`: time for all
//! to join, takeover latency, and per takeover the watch notifications the server delivered, its
//! packets and response bytes (`mntr`), the bytes this process's sockets to the server received
//! (`ss`, the sockets that stay open), and the watches set (`wchs`).

use std::collections::HashMap;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use zk_master::testing::four_letter_word;
use zk_master::{Config, Election};

use crate::stats::{median_f64, proc_status, summarize, JsonObject, Summary};
use crate::{join, Plan, LIMIT};

/// Session timeout of the scale members: long, so that a loaded machine does not expire them
/// (the server must allow it: scripts/bench sets maxSessionTimeout).
pub const SCALE_SESSION: Duration = Duration::from_secs(20);

/// Longest wait for every member to learn of a takeover.
const SETTLED: Duration = Duration::from_secs(60);

/// The figures of one group size.
pub struct Scale {
    pub members: usize,
    /// Whether the members ran in herd-free mode (`Config::herd_free`).
    pub herd_free: bool,
    /// Members joined when the join budget ran out, if it did.
    pub capped_at: Option<usize>,
    pub join_all: Duration,
    pub takeover: Option<Summary>,
    /// Medians per takeover, from the server's `mntr` (watch events fired, packets sent,
    /// response bytes) and from `ss` (bytes received by this process's sockets to the server).
    pub notifications: f64,
    pub packets: f64,
    pub response_bytes: f64,
    pub bytes_received: f64,
    /// Until every member knew the new master.
    pub settled: Option<Summary>,
    /// `wchs` with all joined ("N connections watching M paths / Total watches: K").
    pub watches: String,
    pub threads: u64,
    pub rss_kib: u64,
}

impl Scale {
    pub fn json(&self) -> String {
        let mut o = JsonObject::default();
        o.raw("members", self.members)
            .raw("herd_free", self.herd_free)
            .raw(
                "capped_at",
                self.capped_at.map_or("null".into(), |n| n.to_string()),
            )
            .num("join_all_s", self.join_all.as_secs_f64())
            .raw(
                "takeover_ms",
                self.takeover.as_ref().map_or("null".into(), Summary::json),
            )
            .raw(
                "settled_ms",
                self.settled.as_ref().map_or("null".into(), Summary::json),
            )
            .num("notifications_per_takeover", self.notifications)
            .num("server_packets_per_takeover", self.packets)
            .num("server_response_bytes_per_takeover", self.response_bytes)
            .num("bytes_received_per_takeover", self.bytes_received)
            .text("wchs", &self.watches)
            .raw("threads", self.threads)
            .raw("rss_kib", self.rss_kib);
        o.finish()
    }
}

/// The server's port, if `connect` is one `127.0.0.1:PORT` (the metrics need it).
pub fn server_port(connect: &str) -> Option<u16> {
    let (host, port) = connect.rsplit_once(':')?;
    (host == "127.0.0.1" || host == "localhost")
        .then(|| port.parse().ok())
        .flatten()
}

/// Counters of the server (`mntr`) and of this process's sockets (`ss`).
#[derive(Default)]
struct Counters {
    notifications: f64,
    packets: f64,
    response_bytes: f64,
    sockets: HashMap<String, f64>,
}

fn counters(port: u16) -> Counters {
    let mntr = four_letter_word(port, "mntr").unwrap_or_default();
    let value = |key: &str| -> f64 {
        mntr.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('\t'))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let notifications = ["created", "deleted", "children", "changed"]
        .iter()
        .map(|kind| value(&format!("zk_sum_node_{kind}_watch_count")))
        .sum();
    Counters {
        notifications,
        packets: value("zk_packets_sent"),
        response_bytes: value("zk_response_bytes"),
        sockets: socket_bytes_received(port),
    }
}

/// `bytes_received` of each TCP socket to 127.0.0.1:`port` (`ss -ti`), by local address: during
/// the scale run those are this process's sessions. Empty without `ss`.
fn socket_bytes_received(port: u16) -> HashMap<String, f64> {
    let Ok(out) = Command::new("ss")
        .args(["-tinH", "dst", &format!("127.0.0.1:{port}")])
        .output()
    else {
        return HashMap::new();
    };
    let mut sockets = HashMap::new();
    let mut local = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if !line.starts_with(char::is_whitespace) {
            // "ESTAB 0 0 127.0.0.1:41234 127.0.0.1:2181": the local address is the fourth word.
            local = line.split_whitespace().nth(3).map(str::to_owned);
            continue;
        }
        let received = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("bytes_received:")?.parse::<f64>().ok());
        if let (Some(local), Some(received)) = (&local, received) {
            sockets.insert(local.clone(), received);
        }
    }
    sockets
}

/// Bytes received between two snapshots by the sockets open in both (a closed session's
/// socket, such as the resigner's, drops out).
fn received_between(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> f64 {
    if after.is_empty() {
        return f64::NAN;
    }
    after
        .iter()
        .filter_map(|(local, a)| Some(a - before.get(local)?))
        .sum()
}

/// Runs each size of `plan.scale` in turn; stops after a size whose join ran out of budget.
/// Returns the figures and the last size's members, still joined.
pub fn bench_scale(config: &Config, connect: &str, plan: &Plan) -> (Vec<Scale>, Vec<Election>) {
    let Some(port) = server_port(connect) else {
        eprintln!("scale: skipped (needs one server on 127.0.0.1)");
        return (Vec::new(), Vec::new());
    };
    let (mut results, mut last) = (Vec::new(), Vec::new());
    for &members in &plan.scale {
        resign_all(std::mem::take(&mut last));
        let group = config
            .clone()
            .group(format!("{}/{members}", config.get_group()))
            .session_timeout(SCALE_SESSION)
            .herd_free(plan.herd_free);
        let (result, joined) = scale_one(&group, port, members, plan);
        let capped = result.capped_at.is_some();
        results.push(result);
        last = joined;
        if capped {
            break;
        }
    }
    (results, last)
}

fn scale_one(config: &Config, port: u16, members: usize, plan: &Plan) -> (Scale, Vec<Election>) {
    eprintln!(
        "scale: {members} members (join budget {} s) ...",
        plan.scale_budget.as_secs()
    );
    let start = Instant::now();
    let mut joined: Vec<Election> = Vec::with_capacity(members);
    let mut capped_at = None;
    for _ in 0..members {
        if start.elapsed() > plan.scale_budget {
            capped_at = Some(joined.len());
            break;
        }
        joined.push(join(config));
    }
    let join_all = start.elapsed();
    let name_of = |m: &Election| m.member_name().unwrap_or_default();
    let agree = |joined: &[Election], master: &str| {
        joined
            .iter()
            .all(|m| m.masters().first().map(|x| x.name()) == Some(master))
    };
    // Herd-free, a slave learns of a new master only when its own place changes: "everyone knows
    // the master" is then not a state to wait for (the new master's own promotion is).
    let everyone_told = !plan.herd_free;
    if let Some(first) = joined.first().map(name_of).filter(|_| everyone_told) {
        wait_until("all members to know the master", || agree(&joined, &first));
    }
    let watches = four_letter_word(port, "wchs")
        .unwrap_or_default()
        .lines()
        .collect::<Vec<_>>()
        .join(" / ");
    let status = proc_status();

    // The group keeps its size: after each takeover a new member joins at the back (not timed).
    let takeovers = if joined.len() >= 2 {
        plan.scale_rounds
    } else {
        0
    };
    let (mut latencies, mut settle_times, mut deltas) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..takeovers {
        thread::sleep(Duration::from_millis(200));
        let before = counters(port);
        let t0 = Instant::now();
        joined.remove(0).resign();
        assert!(
            joined[0].wait_until_master(LIMIT),
            "the next member did not take over"
        );
        latencies.push(t0.elapsed());
        let next = name_of(&joined[0]);
        if everyone_told {
            wait_until("all members to know the new master", || {
                agree(&joined, &next)
            });
            settle_times.push(t0.elapsed());
        }
        // Let the last reads' replies land before reading the counters.
        thread::sleep(Duration::from_millis(100));
        let after = counters(port);
        deltas.push([
            after.notifications - before.notifications,
            after.packets - before.packets,
            after.response_bytes - before.response_bytes,
            received_between(&before.sockets, &after.sockets),
        ]);
        joined.push(join(config));
        if everyone_told {
            wait_until("all members to know the newcomer's master", || {
                agree(&joined, &next)
            });
        }
    }
    let per = |i: usize| median_f64(&deltas.iter().map(|d: &[f64; 4]| d[i]).collect::<Vec<_>>());
    let result = Scale {
        members,
        herd_free: plan.herd_free,
        capped_at,
        join_all,
        takeover: (!latencies.is_empty()).then(|| summarize(&latencies)),
        settled: (!settle_times.is_empty()).then(|| summarize(&settle_times)),
        notifications: per(0),
        packets: per(1),
        response_bytes: per(2),
        bytes_received: per(3),
        watches,
        threads: status.threads,
        rss_kib: status.rss_kib,
    };
    (result, joined)
}

/// Resigns `members`, youngest first so that no takeover happens on the way out. With today's
/// herd every resign makes all the others read the group again: the largest size's members are
/// left to the process's exit instead (see `main`).
pub fn resign_all(mut members: Vec<Election>) {
    while let Some(member) = members.pop() {
        member.resign();
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLED;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "scale: timed out waiting for {what}"
        );
        thread::sleep(Duration::from_millis(2));
    }
}
