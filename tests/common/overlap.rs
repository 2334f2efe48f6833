//! The overlap checker: merges the role traces of several workers (`examples/worker.rs
//! --trace-roles FILE`) and measures what the election promises, on CLOCK_MONOTONIC nanoseconds
//! shared by every process of the machine:
//!
//! * **overlap**: the longest time during which more than N members read `is_master() == true`;
//! * **takeover**: for each loss of mastership, the time from that master's last true read to
//!   its successor's first true read.
//!
//! A trace has two kinds of lines, appended (and flushed) one by one by a worker:
//!
//! ```text
//! <ns> <member> master                 first read that returned true
//! <ns> <member> slave <last-true ns>   first read that returned false after it (or the exit)
//! ```
//!
//! A member is master from its `master` line's ns to the matching `slave` line's last-true ns. A
//! process killed (SIGKILL) while master writes no `slave` line: its interval ends at the kill time
//! that the test passes in ([`Source::killed_at`]); without one it is still open and ends at the
//! `now` given to [`check`].

use std::collections::VecDeque;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// CLOCK_MONOTONIC in nanoseconds, the clock of the traces.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Nanoseconds as a `Duration`.
pub fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

/// One line of a trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `<at> <member> master`.
    Master { at: u64, member: String },
    /// `<at> <member> slave <last_true>`.
    Slave {
        at: u64,
        member: String,
        last_true: u64,
    },
}

impl Event {
    pub fn at(&self) -> u64 {
        match self {
            Event::Master { at, .. } | Event::Slave { at, .. } => *at,
        }
    }
}

/// Parses a trace. A last line without its newline is being written (or its writer was killed
/// in the middle of the `write`): it is ignored. Any other malformed line is an error.
pub fn parse(text: &str) -> Result<Vec<Event>, String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    let mut events = Vec::new();
    for (i, line) in complete.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |w: &str| w.parse::<u64>().map_err(|_| bad("not a number"));
        let event = match words.as_slice() {
            [at, member, "master"] => Event::Master {
                at: number(at)?,
                member: member.to_string(),
            },
            [at, member, "slave", last_true] => Event::Slave {
                at: number(at)?,
                member: member.to_string(),
                last_true: number(last_true)?,
            },
            _ => {
                return Err(bad(
                    "not `<ns> <member> master` or `<ns> <member> slave <ns>`",
                ))
            }
        };
        events.push(event);
    }
    Ok(events)
}

/// The trace of one worker process.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// A label for reports, such as `w2` or the pid.
    pub label: String,
    pub events: Vec<Event>,
    /// When the process was killed (SIGKILL) if it was: an interval still open ends there.
    pub killed_at: Option<u64>,
}

impl Source {
    pub fn new(label: impl Into<String>, events: Vec<Event>) -> Source {
        Source {
            label: label.into(),
            events,
            killed_at: None,
        }
    }

    /// Reads and parses a trace file; a missing file is an empty trace (the worker has not
    /// opened it yet). Panics on a malformed trace.
    pub fn read(label: impl Into<String>, path: &Path) -> Source {
        let label = label.into();
        let text = fs::read_to_string(path).unwrap_or_default();
        let events =
            parse(&text).unwrap_or_else(|e| panic!("trace of {label} ({}): {e}", path.display()));
        Source::new(label, events)
    }

    pub fn killed_at(mut self, at: Option<u64>) -> Source {
        self.killed_at = at;
        self
    }

    /// The member this process reads as master now, judging by its trace: its last line is a
    /// `master` line and it was not killed. (A process frozen by SIGSTOP counts, as it reads
    /// nothing: resume it before asking.)
    pub fn current_master(&self) -> Option<&str> {
        if self.killed_at.is_some() {
            return None;
        }
        match self.events.last() {
            Some(Event::Master { member, .. }) => Some(member),
            _ => None,
        }
    }
}

/// A time during which one member read true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interval {
    pub source: String,
    pub member: String,
    /// The first read that returned true.
    pub start: u64,
    /// The last read that returned true, the kill time, or `now` for an open interval.
    pub end: u64,
    pub how: End,
}

/// How an [`Interval`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A `slave` line: a false read, or the exit.
    SteppedDown,
    /// The process was killed while master.
    Killed,
    /// Still master at `now`.
    Open,
}

/// A time during which more than N members read true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub start: u64,
    pub end: u64,
    /// Most members reading true at once during it.
    pub most: usize,
    /// The intervals that took part, as `source/member [start, end]`.
    pub members: Vec<String>,
}

impl Overlap {
    pub fn length(&self) -> Duration {
        ns(self.end - self.start)
    }
}

/// The loss of a master place, and who took it next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    /// `source/member` that lost it.
    pub lost: String,
    /// Its last true read (or its kill time).
    pub lost_at: u64,
    pub how: End,
    /// `source/member` whose first true read came next, if any yet.
    pub successor: Option<String>,
    /// Successor's first true read minus `lost_at`, in nanoseconds: negative when the
    /// successor read true before this master stopped (an overlap).
    pub gap_ns: Option<i64>,
    /// The same when it is not negative: the takeover time.
    pub took: Option<Duration>,
}

impl Takeover {
    /// `"succ after 1.2 ms"`, `"succ 3 ms BEFORE (overlap)"` or `"nobody yet"`.
    pub fn describe(&self) -> String {
        match (&self.successor, self.gap_ns) {
            (Some(s), Some(gap)) if gap >= 0 => format!("{s} after {:?}", ns(gap as u64)),
            (Some(s), Some(gap)) => {
                format!("{s} {:?} BEFORE (overlap)", ns(gap.unsigned_abs()))
            }
            _ => "nobody yet".to_owned(),
        }
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub masters: usize,
    pub intervals: Vec<Interval>,
    /// Every time during which more than `masters` members read true, in time order.
    pub overlaps: Vec<Overlap>,
    pub takeovers: Vec<Takeover>,
    /// Problems in the traces themselves (a `slave` line with no `master` line before it...).
    pub anomalies: Vec<String>,
}

impl Report {
    /// The longest overlap; zero if there is none.
    pub fn longest_overlap(&self) -> Duration {
        self.overlaps
            .iter()
            .map(Overlap::length)
            .max()
            .unwrap_or_default()
    }

    /// The takeover times: successors that read true after the loss.
    pub fn takeover_times(&self) -> Vec<Duration> {
        self.takeovers.iter().filter_map(|t| t.took).collect()
    }

    /// Takeovers of intervals that ended after `since`.
    pub fn takeovers_since(&self, since: u64) -> Vec<&Takeover> {
        self.takeovers
            .iter()
            .filter(|t| t.lost_at >= since)
            .collect()
    }

    /// Panics, with every overlap and the trace lines around it, unless there is none (not even
    /// one of zero length: two members read true at the very same nanosecond).
    pub fn assert_no_overlap(&self, context: &str) {
        if self.overlaps.is_empty() && self.anomalies.is_empty() {
            return;
        }
        panic!(
            "{context}: {} overlap(s), longest {:?}; anomalies {:?}\n{}",
            self.overlaps.len(),
            self.longest_overlap(),
            self.anomalies,
            self.overlaps
                .iter()
                .map(|o| format!(
                    "  {:?} with up to {} masters (> {}): {}",
                    o.length(),
                    o.most,
                    self.masters,
                    o.members.join(", ")
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

impl fmt::Display for Report {
    /// One line per takeover and the longest overlap, times relative to nothing (durations).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "longest overlap {:?} ({} overlap(s)), {} interval(s), masters = {}",
            self.longest_overlap(),
            self.overlaps.len(),
            self.intervals.len(),
            self.masters
        )?;
        for t in &self.takeovers {
            let how = match t.how {
                End::SteppedDown => "stepped down",
                End::Killed => "killed",
                End::Open => "open",
            };
            match (&t.successor, t.took) {
                (Some(s), Some(took)) => writeln!(f, "  {} {how} -> {s} after {took:?}", t.lost)?,
                _ => writeln!(f, "  {} {how} -> no successor yet", t.lost)?,
            }
        }
        Ok(())
    }
}

/// Merges the traces and measures overlap and takeovers for `masters` master places. Open
/// intervals end at `now` (pass the current [`monotonic_ns`]).
pub fn check(masters: usize, sources: &[Source], now: u64) -> Report {
    let mut report = Report {
        masters,
        ..Report::default()
    };
    for source in sources {
        let mut open: Option<(String, u64)> = None;
        for event in &source.events {
            match (event, open.take()) {
                (Event::Master { at, member }, None) => open = Some((member.clone(), *at)),
                (Event::Master { at, member }, Some((previous, start))) => {
                    report.anomalies.push(format!(
                        "{}: {member} master at {at} while {previous} (since {start}) never \
                         stepped down",
                        source.label
                    ));
                    open = Some((member.clone(), *at));
                }
                (
                    Event::Slave {
                        member, last_true, ..
                    },
                    Some((master, start)),
                ) => {
                    if *member != master {
                        report.anomalies.push(format!(
                            "{}: slave line for {member} closes {master}",
                            source.label
                        ));
                    }
                    if *last_true < start {
                        report.anomalies.push(format!(
                            "{}: {member} last true {last_true} before its first {start}",
                            source.label
                        ));
                    }
                    report.intervals.push(Interval {
                        source: source.label.clone(),
                        member: master,
                        start,
                        end: (*last_true).max(start),
                        how: End::SteppedDown,
                    });
                }
                (Event::Slave { at, member, .. }, None) => report.anomalies.push(format!(
                    "{}: {member} slave at {at} without a master line",
                    source.label
                )),
            }
        }
        if let Some((member, start)) = open {
            let (end, how) = match source.killed_at {
                Some(killed) => (killed, End::Killed),
                None => (now, End::Open),
            };
            report.intervals.push(Interval {
                source: source.label.clone(),
                member,
                start,
                end: end.max(start),
                how,
            });
        }
    }
    report
        .intervals
        .sort_by_key(|i| (i.start, i.end, i.source.clone()));
    report.overlaps = overlaps(masters, &report.intervals);
    report.takeovers = takeovers(masters, &report.intervals);
    report
}

fn label(interval: &Interval) -> String {
    format!("{}/{}", interval.source, interval.member)
}

/// Sweeps the interval ends in time order. Intervals are closed: one that starts at the very
/// nanosecond another ends overlaps it (for zero time).
fn overlaps(masters: usize, intervals: &[Interval]) -> Vec<Overlap> {
    // (time, 0 = start / 1 = end, index): starts before ends at the same time.
    let mut points: Vec<(u64, u8, usize)> = intervals
        .iter()
        .enumerate()
        .flat_map(|(i, iv)| [(iv.start, 0, i), (iv.end, 1, i)])
        .collect();
    points.sort();
    let mut active: Vec<usize> = Vec::new();
    let mut found = Vec::new();
    let mut current: Option<Overlap> = None;
    for (at, kind, i) in points {
        if kind == 0 {
            active.push(i);
            if active.len() > masters {
                let over = current.get_or_insert_with(|| Overlap {
                    start: at,
                    end: at,
                    most: 0,
                    members: Vec::new(),
                });
                over.most = over.most.max(active.len());
                for &j in &active {
                    let iv = &intervals[j];
                    let text = format!("{} [{}, {}]", label(iv), iv.start, iv.end);
                    if !over.members.contains(&text) {
                        over.members.push(text);
                    }
                }
            }
        } else {
            // Still over the limit up to this very end.
            if let Some(over) = current.as_mut() {
                over.end = at;
            }
            active.retain(|&j| j != i);
            if active.len() <= masters {
                found.extend(current.take());
            }
        }
    }
    found
}

/// Matches each loss of a place with the next first-true read of anyone, in time order: the
/// oldest unfilled loss gets the next start. A start that finds no pending loss fills a free
/// place, or, if it makes more than N masters (an overlap), is the successor of the next loss,
/// with a negative gap.
fn takeovers(masters: usize, intervals: &[Interval]) -> Vec<Takeover> {
    let mut points: Vec<(u64, u8, usize)> = Vec::new();
    for (i, iv) in intervals.iter().enumerate() {
        points.push((iv.start, 1, i));
        if iv.how != End::Open {
            points.push((iv.end, 0, i));
        }
    }
    // Losses before starts at the same time, so a successor at the same ns is matched.
    points.sort();
    let mut takeovers: Vec<Takeover> = Vec::new();
    let mut active = 0usize;
    let mut pending: VecDeque<usize> = VecDeque::new();
    let mut early: VecDeque<(u64, usize)> = VecDeque::new();
    for (at, kind, i) in points {
        let iv = &intervals[i];
        if kind == 0 {
            active = active.saturating_sub(1);
            let mut takeover = Takeover {
                lost: label(iv),
                lost_at: iv.end,
                how: iv.how,
                successor: None,
                gap_ns: None,
                took: None,
            };
            match early.pop_front() {
                Some((start, j)) => {
                    takeover.successor = Some(label(&intervals[j]));
                    takeover.gap_ns = Some(start as i64 - iv.end as i64);
                }
                None => pending.push_back(takeovers.len()),
            }
            takeovers.push(takeover);
        } else {
            active += 1;
            if let Some(t) = pending.pop_front() {
                takeovers[t].successor = Some(label(iv));
                takeovers[t].gap_ns = Some(at as i64 - takeovers[t].lost_at as i64);
                takeovers[t].took = Some(ns(at - takeovers[t].lost_at));
            } else if active > masters {
                early.push_back((at, i));
            }
        }
    }
    takeovers
}

/// Trace files of the workers of one test, in a temporary directory removed on drop (kept when
/// the test panics, or with `ZK_MASTER_KEEP_TEST_DIRS=1`).
pub struct TraceDir {
    dir: PathBuf,
}

impl TraceDir {
    pub fn new(name: &str) -> TraceDir {
        let dir = std::env::temp_dir().join(format!(
            "zk-master-traces-{}-{name}-{}",
            std::process::id(),
            monotonic_ns()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TraceDir { dir }
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TraceDir {
    fn drop(&mut self) {
        let keep =
            std::env::var("ZK_MASTER_KEEP_TEST_DIRS").is_ok_and(|v| !v.is_empty() && v != "0");
        if std::thread::panicking() || keep {
            eprintln!("role traces kept in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
