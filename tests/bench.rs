//! The bench example (examples/bench) runs end to end against a test server with a tiny round
//! count and writes its JSON. `scripts/bench` runs it for real, next to kazoo and Curator; this
//! test needs neither. Build the example first: `cargo build --examples`.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::ZkServer;

/// The whole quick run takes a few seconds; on a loaded machine allow much more.
const RUN_LIMIT: Duration = Duration::from_secs(180);

fn bench_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join("bench");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples`",
        path.display()
    );
    path
}

#[test]
fn bench_example_runs_quick_and_writes_its_json() {
    common::init_logging();
    // Scale members ask for 20 s sessions.
    let server = ZkServer::builder()
        .max_session_timeout(Duration::from_secs(60))
        .start();
    let json =
        std::env::temp_dir().join(format!("zk-master-bench-test-{}.json", std::process::id()));
    let mut child = Command::new(bench_binary())
        .args([
            "--connect",
            &server.connect_string(),
            "--quick",
            "--rounds",
            "3",
        ])
        .args(["--scale", "1,2", "--json"])
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the bench example");
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the bench") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the bench example did not finish in {RUN_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "the bench example failed: {status}");
    let text = std::fs::read_to_string(&json).expect("the bench's JSON file");
    let _ = std::fs::remove_file(&json);
    for key in [
        "\"join_ms\"",
        "\"takeover_ms\"",
        "\"floor_ms\"",
        "\"is_master_ns\"",
        "\"kth_member_threads\"",
        "\"members\": 2",
    ] {
        assert!(text.contains(key), "no {key} in the bench's JSON: {text}");
    }
    // Two members: the resign wakes the one other member (two watches at most), and the
    // server's counters say so.
    let fired: f64 = text
        .split("\"notifications_per_takeover\": ")
        .nth(2) // the first is the 1-member group's (null)
        .and_then(|rest| rest.split([',', '}']).next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no notifications for 2 members in {text}"));
    assert!(
        (1.0..=2.0).contains(&fired),
        "a 2-member takeover fired {fired} watches: {text}"
    );
}
