//! The example worker side by side with the original Python script (kazoo), in one group.

mod common;

use std::process::{Child, Command, Stdio};

use common::{LogLines, Worker, ZkServer};

/// The original script and its stdout lines; `None` without python3 and kazoo.
fn original(connect: &str) -> Option<(Child, LogLines)> {
    let has_kazoo = Command::new("python3")
        .args(["-c", "import kazoo"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_kazoo {
        eprintln!("SKIPPED: python3 with kazoo is not installed (scripts/test installs it)");
        return None;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/original_worker.py");
    let mut child = Command::new("python3")
        .args([script, connect, "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the original script");
    let stdout = child.stdout.take().expect("stdout");
    Some((child, LogLines::follow(stdout, "original")))
}

#[test]
fn the_worker_and_the_original_script_share_a_group() {
    common::init_logging();
    let server = ZkServer::start();
    let Some((mut script, mut lines)) = original(&server.connect_string()) else {
        return;
    };
    lines.expect("register ok! I'm worker0000000000");
    lines.expect("I've become master!");

    let mut ours = Worker::spawn(&server.connect_string(), "/Roles/workers", 2000);
    ours.expect("register ok! I'm worker0000000001");
    ours.expect("[worker0000000000] is masters, I'm slave");

    // The script has no clean exit: its node goes when its session expires.
    let _ = script.kill();
    let _ = script.wait();
    ours.expect("I've become master!");

    let Some((mut second, mut lines)) = original(&server.connect_string()) else {
        return;
    };
    lines.expect("register ok! I'm worker0000000002");
    lines.expect("['worker0000000001'] is masters, I'm slave");
    ours.terminate();
    assert_eq!(ours.wait_exit(), Some(0));
    lines.expect("I've become master!");
    let _ = second.kill();
    let _ = second.wait();
}
