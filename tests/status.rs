//! examples/status.rs against a live group: the table (order, masters, data,
//! sessions, claims), `--watch` printing joins, leaves and new masters, and
//! the flags. Run `cargo build --examples` first.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{member_config as config, wait_for, ZkServer, SOON};
use zk_master::Election;

/// The example binary, built next to the test binaries by `cargo build --examples`.
fn status_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join("examples").join("status");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples`",
        path.display()
    );
    path
}

fn join(server: &ZkServer, data: &[u8]) -> Election {
    Election::join(config(server, "/Roles/workers").data(data.to_vec())).expect("join")
}

fn status(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(status_binary())
        .args(args)
        .output()
        .expect("run status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn prints_members_in_order_with_masters_data_sessions_and_claims() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(&server, b"10.0.0.1:7000");
    let b = join(&server, b"10.0.0.2:7000");
    let c = join(&server, &[0, 1, 0xff]);
    assert!(a.wait_until_master(SOON));
    let members = c.members();
    let connect = server.connect_string();
    let (code, out, err) = status(&["--connect", &connect, "--group", "/Roles/workers"]);
    println!("{out}");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("group /Roles/workers: 3 members, 1 masters, connected\n"),
        "{out}"
    );
    let rows: Vec<&str> = out.lines().skip(2).take(3).collect();
    for (rank, (row, member)) in rows.iter().zip(&members).enumerate() {
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(fields[0], rank.to_string(), "{row}");
        assert_eq!(fields[1], member.name(), "election order: {row}");
        assert_eq!(
            fields[2],
            if rank == 0 { "master" } else { "slave" },
            "{row}"
        );
        let session = format!("0x{:x}", member.session_id().unwrap());
        assert_eq!(fields[3], session, "{row}");
        assert!(fields[4].ends_with('s'), "an age in seconds: {row}");
    }
    assert!(rows[0].ends_with("\"10.0.0.1:7000\""), "{}", rows[0]);
    assert!(
        rows[2].ends_with("0x0001ff"),
        "hex for binary data: {}",
        rows[2]
    );
    assert!(out.contains("claims: 3\n"), "{out}");
    assert_eq!(out.matches("held by its member").count(), 3, "{out}");
    drop(b);
}

#[test]
fn watch_prints_joins_leaves_and_masters_with_timestamps() {
    common::init_logging();
    let server = ZkServer::start();
    let a = join(&server, b"a");
    let b = join(&server, b"b");
    let connect = server.connect_string();
    let mut child = Command::new(status_binary())
        .args([
            "--connect",
            &connect,
            "--group",
            "/Roles/workers",
            "--watch",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn status --watch");
    let (lines_tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = |what: &str, pred: &dyn Fn(&str) -> bool| {
        wait_for(SOON, what, || {
            while let Ok(line) = lines.try_recv() {
                seen.push(line);
            }
            seen.iter().any(|l| pred(l))
        });
    };
    wait_line("the table", &|l| l == "claims: 2");
    let c = join(&server, b"c");
    let c_name = c.member_name().unwrap();
    wait_line("c joining", &|l| {
        l.ends_with(&format!("joined  {c_name} \"c\""))
    });
    let a_name = a.member_name().unwrap();
    a.resign();
    assert!(b.wait_until_master(SOON));
    let b_name = b.member_name().unwrap();
    wait_line("a leaving", &|l| l.ends_with(&format!("left    {a_name}")));
    wait_line("b leading", &|l| {
        l.ends_with(&format!("masters [\"{b_name}\"]"))
    });
    let stamped = seen
        .iter()
        .filter(|l| l.contains("joined") || l.contains("left"));
    for line in stamped {
        let stamp = line.split_whitespace().next().unwrap();
        assert!(
            stamp.len() == 13 && stamp.ends_with('Z'),
            "HH:MM:SS.mmmZ: {line}"
        );
    }
    common::signal(child.id(), libc::SIGINT);
    let (done_tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let exit = done
        .recv_timeout(Duration::from_secs(5))
        .expect("exits on ctrl-c");
    assert!(exit.expect("wait").success());
    println!("{}", seen.join("\n"));
}

#[test]
fn help_and_bad_flags() {
    let (code, out, _) = status(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--watch"), "{out}");
    let (code, _, err) = status(&["--masters", "two"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--masters takes a whole number") && err.contains("usage:"),
        "{err}"
    );
    let (code, _, err) = status(&["--group", "no-slash"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn flags_an_orphaned_claim() {
    common::init_logging();
    let server = ZkServer::start();
    let zk = common::raw_client(&server.connect_string());
    let acl = zookeeper::Acl::open_unsafe().clone();
    for path in ["/o", "/o.claims"] {
        zk.create(
            path,
            Vec::new(),
            acl.clone(),
            zookeeper::CreateMode::Persistent,
        )
        .expect("create");
    }
    let orphan = "/o.claims/7-worker0000000099";
    zk.create(orphan, Vec::new(), acl, zookeeper::CreateMode::Ephemeral)
        .expect("claim");
    let a = Election::join(config(&server, "/o")).expect("join");
    let connect = server.connect_string();
    let (code, out, err) = status(&["--connect", &connect, "--group", "/o"]);
    println!("{out}");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 members, 0 masters"), "{out}");
    assert!(
        out.contains("7-worker0000000099               ORPHANED: no member worker0000000099"),
        "{out}"
    );
    drop(a);
}
