//! The original election script, ported and made right: it steps down when it
//! is no longer among the first N, keeps its watch across reconnects, and on
//! ctrl-c or SIGTERM deletes its node at once. It logs from a callback and
//! sleeps until the next change or signal: no polling, no CPU while idle.
//!
//! ```text
//! cargo run --example worker -- --connect 127.0.0.1:2181 --group /Roles/workers \
//!     --masters 1 --session-timeout-ms 10000
//! ```
//!
//! With `--trace-roles FILE` it polls `is_master()` about every millisecond and appends every
//! change of what it returns to FILE, stamped with CLOCK_MONOTONIC nanoseconds (one clock for all
//! processes of the machine), for the fault-injection tests (tests/faults.rs):
//!
//! ```text
//! <ns> <member> master                 the first read that returned true
//! <ns> <member> slave <last-true ns>   the first read that returned false after it, or the exit
//! ```
//!
//! A read is stamped conservatively: a `master` line carries the clock read just before the call
//! that returned true, the last-true value the clock read just after the last call that did. So
//! the interval `[master ns, last-true ns]` covers every moment the process could have acted as
//! master. `<member>` is the node name current at the read (it changes when the library joins
//! again with a new node).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use zk_master::{Config, Election, Role, RoleChange};

const USAGE: &str = "usage: worker [--connect HOSTS] [--group PATH] [--masters N] \
[--session-timeout-ms MS] [--lease-margin-ms MS] [--auth USER:PASSWORD] [--data TEXT] \
[--trace-roles FILE]   (worker --help explains them)";

const HELP: &str = "\
worker: the zk-master example worker. It joins a group, logs \"I've become master!\" or
\"[<masters>] is masters, I'm slave\" on every change, and on ctrl-c or SIGTERM deletes its
node at once so the next member takes over.

Options (each takes a value):
  --connect HOSTS           ZooKeeper servers, host:port[,host:port...][/chroot]
                            [default: 127.0.0.1:2181]
  --group PATH              the group's node; created if missing [default: /Roles/workers]
  --masters N               how many members are masters at once [default: 1]
  --session-timeout-ms MS   the session timeout asked of the server; the server may clamp
                            it to its own bounds [default: 10000]
  --lease-margin-ms MS      how long before the server could expire the session the worker
                            stops believing it is master [default: a tenth of the timeout]
  --auth USER:PASSWORD      digest credentials: only sessions with them may then create or
                            delete members; anyone may still read the group [default: none]
  --data TEXT               the member node's data [default: 1]
  --trace-roles FILE        append every change of is_master() to FILE, stamped with
                            CLOCK_MONOTONIC nanoseconds (for the fault tests) [default: none]
  -h, --help                print this help and exit

Environment:
  RUST_LOG                  log filter of env_logger [default: info,zookeeper=warn];
                            RUST_LOG=debug shows every session, read and lease renewal

Exit status: 0 after a clean exit (ctrl-c, SIGTERM), 1 when it cannot join, 2 on bad flags.
";

/// How often the main loop polls `is_master()` with `--trace-roles`.
const TRACE_EVERY: Duration = Duration::from_millis(1);

/// What wakes the main thread.
enum Event {
    /// ctrl-c or SIGTERM.
    Stop,
    /// A change of role or of the masters, from the library's callback thread.
    Change(RoleChange),
}

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,zookeeper=warn"),
    )
    .init();
    let (config, trace_path) = match parse_args(std::env::args().skip(1)) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            print!("{HELP}");
            return;
        }
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // Set before joining: a signal that comes during the join is acted on right after it.
    let (events, next_event) = mpsc::channel();
    let on_signal = events.clone();
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = on_signal.send(Event::Stop);
    }) {
        log::error!("cannot handle ctrl-c: {e}");
        std::process::exit(1);
    }
    let mut trace = match trace_path.as_deref().map(RoleTrace::open).transpose() {
        Ok(trace) => trace,
        Err(e) => {
            log::error!("cannot open the role trace: {e}");
            std::process::exit(1);
        }
    };
    let election = match Election::join(config) {
        Ok(election) => election,
        Err(e) => {
            log::error!("cannot join: {e}");
            std::process::exit(1);
        }
    };
    log::info!(
        "register ok! I'm {}",
        election.member_name().unwrap_or_default()
    );
    // Told the role held now at once, then every change, in order.
    election.on_change(move |change| {
        let _ = events.send(Event::Change(change.clone()));
    });

    let mut log = ChangeLog::default();
    match trace.as_mut() {
        // Asleep until something happens: no polling, no CPU while idle.
        None => {
            while let Ok(Event::Change(change)) = next_event.recv() {
                log.record(&change);
                // The master's work would start or stop here, on change.new.
            }
        }
        // The fault tests' mode: every change of is_master() as it happens.
        Some(trace) => loop {
            let master = trace.poll(&election);
            match next_event.try_recv() {
                Ok(Event::Change(change)) => log.record(&change),
                Ok(Event::Stop) | Err(mpsc::TryRecvError::Disconnected) => break,
                Err(mpsc::TryRecvError::Empty) => {}
            }
            if master {
                // The master's work goes here; it runs only while is_master() holds.
            }
            std::thread::sleep(TRACE_EVERY);
        },
    }
    if let Some(trace) = trace.as_mut() {
        // No read after the loop: the last one that returned true is the last master moment.
        trace.finish();
    }
    election.resign();
    log::info!("resigned; my node is deleted");
}

/// The script's log lines: one for each change of role or of the masters.
#[derive(Default)]
struct ChangeLog {
    last: Option<(bool, Vec<String>)>,
}

impl ChangeLog {
    fn record(&mut self, change: &RoleChange) {
        let master = change.new == Role::Master;
        let masters: Vec<String> = change.masters.iter().map(|m| m.name().to_owned()).collect();
        let seen = (master, masters);
        if self.last.as_ref() == Some(&seen) {
            return;
        }
        if master {
            log::info!("I've become master!");
        } else {
            log::info!("[{}] is masters, I'm {}", seen.1.join(", "), change.new);
        }
        self.last = Some(seen);
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, unlike the
/// private origin of `std::time::Instant`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `--trace-roles`: every change of what `is_master()` returns, one flushed line each.
struct RoleTrace {
    file: File,
    /// While the last read returned true: the member it was for and when that read ended.
    master: Option<(String, u64)>,
}

impl RoleTrace {
    fn open(path: &str) -> std::io::Result<RoleTrace> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RoleTrace { file, master: None })
    }

    /// Reads `is_master()` once, records a change, and returns what it read.
    fn poll(&mut self, election: &Election) -> bool {
        let before = monotonic_ns();
        let master = election.is_master();
        let after = monotonic_ns();
        if !master {
            if let Some((name, last_true)) = self.master.take() {
                self.line(&format!("{before} {name} slave {last_true}\n"));
            }
            return false;
        }
        // A clone of a short string under an uncontended lock: cheap enough once a millisecond,
        // and exact even if the library moved to a new node between two reads.
        let name = election.member_name().unwrap_or_else(|| "?".to_owned());
        match &mut self.master {
            Some((current, last_true)) if *current == name => *last_true = after,
            _ => {
                if let Some((old, last_true)) = self.master.take() {
                    self.line(&format!("{before} {old} slave {last_true}\n"));
                }
                self.line(&format!("{before} {name} master\n"));
                self.master = Some((name, after));
            }
        }
        true
    }

    /// At exit: a member still master steps down now.
    fn finish(&mut self) {
        if let Some((name, last_true)) = self.master.take() {
            self.line(&format!("{} {name} slave {last_true}\n", monotonic_ns()));
        }
    }

    /// One `write` of the whole line (the file is in append mode), flushed at once.
    fn line(&mut self, line: &str) {
        if let Err(e) = self
            .file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
        {
            log::error!("cannot write the role trace: {e}");
        }
    }
}

/// The configuration and the trace file; `None` for `--help`.
type Parsed = Option<(Config, Option<String>)>;

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Parsed, String> {
    let (mut connect, mut group, mut masters) =
        ("127.0.0.1:2181".to_owned(), "/Roles/workers".to_owned(), 1);
    let (mut timeout_ms, mut data) = (10_000, b"1".to_vec());
    let (mut trace, mut auth, mut margin_ms) = (None, None, None);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |value: String| -> Result<u64, String> {
            value
                .parse()
                .map_err(|_| format!("{flag} takes a whole number, not {value:?}"))
        };
        match flag.as_str() {
            "--connect" => connect = value()?,
            "--group" => group = value()?,
            "--masters" => masters = number(value()?)? as usize,
            "--session-timeout-ms" => timeout_ms = number(value()?)?,
            "--lease-margin-ms" => margin_ms = Some(number(value()?)?),
            "--auth" => auth = Some(value()?),
            "--data" => data = value()?.into_bytes(),
            "--trace-roles" => trace = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let mut config = Config::new(connect)
        .group(group)
        .masters(masters)
        .session_timeout(Duration::from_millis(timeout_ms))
        .data(data);
    if let Some(auth) = auth {
        config = config.auth(auth);
    }
    if let Some(ms) = margin_ms {
        config = config.lease_margin(Duration::from_millis(ms));
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(Some((config, trace)))
}
