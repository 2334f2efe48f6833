//! Prints an election group: its members in election order, which are
//! masters, each member's data, session and age, and the claims. With
//! `--watch` it goes on printing every change, stamped with the time, until
//! ctrl-c. It only reads: it creates nothing, not even a missing group.
//!
//! ```text
//! cargo run --example status -- --connect 127.0.0.1:2181 --group /Roles/workers --watch
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zk_master::{Config, Member, Observer, RoleChange, Snapshot};

const USAGE: &str = "usage: status [--connect HOSTS] [--group PATH] [--masters N] \
[--auth USER:PASSWORD] [--watch]   (status --help explains them)";

const HELP: &str = "\
status: prints a zk-master election group: members in election order, which are masters,
each member's data (text, or hex when not printable), the session that owns its node and
its age, and the claims (one per member; a claim whose member node is gone holds promotions
back until its owner steps down). It only reads the group.

Options:
  --connect HOSTS           ZooKeeper servers, host:port[,host:port...][/chroot]
                            [default: 127.0.0.1:2181]
  --group PATH              the group's node [default: /Roles/workers]
  --masters N               how many members are masters at once, as the group's members
                            were configured [default: 1]
  --auth USER:PASSWORD      digest credentials, for a group readable only with them
                            [default: none]
  --watch                   after the group, print every change (members joining and
                            leaving, masters, connection) with a UTC timestamp, until ctrl-c
  -h, --help                print this help and exit

Environment:
  RUST_LOG                  log filter of env_logger [default: warn,zookeeper=off]

Exit status: 0 after printing (or ctrl-c with --watch), 1 when the group cannot be read,
2 on bad flags.
";

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,zookeeper=off"),
    )
    .init();
    let (config, watch) = match parse_args(std::env::args().skip(1)) {
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
    let title = format!("group {}", config.get_group());
    let observer = match Observer::watch(config) {
        Ok(observer) => observer,
        Err(e) => {
            eprintln!("cannot read the group: {e}");
            std::process::exit(1);
        }
    };
    print!("{}", render(&title, &observer.snapshot()));
    if !watch {
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let on_signal = stop.clone();
    if let Err(e) = ctrlc::set_handler(move || on_signal.store(true, Ordering::SeqCst)) {
        eprintln!("cannot handle ctrl-c: {e}");
        std::process::exit(1);
    }
    let changes = observer.subscribe();
    // The first change is the group as it is now: already printed.
    let mut last: Option<RoleChange> = None;
    while !stop.load(Ordering::SeqCst) {
        let Ok(change) = changes.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        if let Some(before) = &last {
            print!("{}", render_change(before, &change));
        }
        last = Some(change);
    }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<(Config, bool)>, String> {
    let (mut connect, mut group, mut masters) =
        ("127.0.0.1:2181".to_owned(), "/Roles/workers".to_owned(), 1);
    let (mut auth, mut watch) = (None, false);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--help" | "-h" => return Ok(None),
            "--watch" => watch = true,
            "--connect" => connect = value()?,
            "--group" => group = value()?,
            "--masters" => {
                let n = value()?;
                masters = n
                    .parse()
                    .map_err(|_| format!("--masters takes a whole number, not {n:?}"))?;
            }
            "--auth" => auth = Some(value()?),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let mut config = Config::new(connect).group(group).masters(masters);
    if let Some(auth) = auth {
        config = config.auth(auth);
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(Some((config, watch)))
}

/// The whole group, as a table.
fn render(title: &str, group: &Snapshot) -> String {
    let mut out = format!(
        "{title}: {} members, {} masters, {}\n",
        group.members.len(),
        group.masters.len(),
        group.connection
    );
    if !group.members.is_empty() {
        let _ = writeln!(
            out,
            "  {:>3}  {:<20} {:<7} {:<18} {:>9}  data",
            "#", "member", "role", "session", "age"
        );
    }
    for (rank, member) in group.members.iter().enumerate() {
        let role = if group.masters.iter().any(|m| m.name() == member.name()) {
            "master"
        } else {
            "slave"
        };
        let session = member
            .session_id()
            .map_or_else(|| "?".to_owned(), |id| format!("0x{id:x}"));
        let _ = writeln!(
            out,
            "  {rank:>3}  {:<20} {role:<7} {session:<18} {:>9}  {}",
            member.name(),
            age(member),
            printable(member.data())
        );
    }
    let _ = writeln!(out, "claims: {}", group.claims.len());
    // `<czxid in hex>-<member node name>`, listed in the order of the names.
    let named = |claim: &String| {
        claim
            .split_once('-')
            .map_or(claim.clone(), |(_, n)| n.to_owned())
    };
    let mut claims: Vec<(String, &String)> = group.claims.iter().map(|c| (named(c), c)).collect();
    claims.sort_by_key(|(name, _)| Member::parse(name, Vec::new()).map(|m| m.sequence()));
    for (name, claim) in claims {
        let held = group.members.iter().any(|m| m.name() == name);
        let state = if held {
            "held by its member".to_owned()
        } else {
            format!("ORPHANED: no member {name}; promotions wait until its owner steps down")
        };
        let _ = writeln!(out, "  {claim:<32} {state}");
    }
    out
}

/// What changed from `before` to `after`, one line each, stamped.
fn render_change(before: &RoleChange, after: &RoleChange) -> String {
    let stamp = utc_now();
    let mut out = String::new();
    let names = |ms: &[Member]| ms.iter().map(|m| m.name().to_owned()).collect::<Vec<_>>();
    for m in &after.members {
        if !before.members.iter().any(|b| b.name() == m.name()) {
            let _ = writeln!(out, "{stamp} joined  {} {}", m.name(), printable(m.data()));
        }
    }
    for m in &before.members {
        if !after.members.iter().any(|a| a.name() == m.name()) {
            let _ = writeln!(out, "{stamp} left    {}", m.name());
        }
    }
    if names(&before.masters) != names(&after.masters) {
        let _ = writeln!(out, "{stamp} masters {:?}", names(&after.masters));
    }
    if before.connection != after.connection {
        let _ = writeln!(out, "{stamp} connection {}", after.connection);
    }
    out
}

/// How long ago the member's node was created (by the server's clock).
fn age(member: &Member) -> String {
    let Some(created) = member.created() else {
        return "?".into();
    };
    let secs = SystemTime::now()
        .duration_since(created)
        .unwrap_or_default()
        .as_secs_f64();
    match secs {
        s if s < 120.0 => format!("{s:.1}s"),
        s if s < 7200.0 => format!("{:.1}m", s / 60.0),
        s => format!("{:.1}h", s / 3600.0),
    }
}

/// The data as text when it is printable, else as hex.
fn printable(data: &[u8]) -> String {
    match std::str::from_utf8(data) {
        Ok(text) if !text.chars().any(char::is_control) => format!("{text:?}"),
        _ => {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    }
}

/// The time of day in UTC, to the millisecond.
fn utc_now() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}
