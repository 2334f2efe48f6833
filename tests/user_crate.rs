//! A user's crate tests its own service with the `testing` feature, as the docs of
//! `zk_master::testing` tell it to: a fresh crate, outside this repository, whose only
//! dependency is zk-master (by path, with `features = ["testing"]`), built and tested by cargo.

use std::fs;
use std::path::Path;
use std::process::Command;

const MANIFEST: &str = r#"[package]
name = "my-service"
version = "0.1.0"
edition = "2021"

[dependencies]

[dev-dependencies]
zk-master = { path = "ZK_MASTER", features = ["testing"] }
"#;

/// The test a user would paste from the docs of `zk_master::testing`.
const FAILOVER_TEST: &str = r#"use std::time::Duration;
use zk_master::testing::ZkServer;
use zk_master::{Config, Election};

#[test]
fn the_second_instance_takes_over_when_the_first_resigns() {
    let server = ZkServer::start();
    let config = || {
        Config::new(server.connect_string())
            .group("/my-service")
            .session_timeout(Duration::from_secs(2))
    };
    let first = Election::join(config()).unwrap();
    let second = Election::join(config()).unwrap();
    assert!(first.is_master() && !second.is_master());
    first.resign();
    assert!(second.wait_until_master(Duration::from_secs(10)));
}
"#;

#[test]
fn a_users_crate_tests_its_failover_with_the_testing_feature() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("zk-master-user-crate-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("src")).unwrap();
    fs::create_dir_all(dir.join("tests")).unwrap();
    let manifest = MANIFEST.replace("ZK_MASTER", &repo.display().to_string());
    fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    fs::write(dir.join("src/lib.rs"), "//! A service with a master.\n").unwrap();
    fs::write(dir.join("tests/failover.rs"), FAILOVER_TEST).unwrap();
    // Our lock file: the same dependency versions, so nothing is fetched (--offline).
    fs::copy(repo.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();

    // A target directory of its own (cargo holds ours while this test runs), kept between runs.
    let target = repo.join("target").join("user-crate");
    let output = Command::new(env!("CARGO"))
        .args(["test", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = fs::remove_dir_all(&dir);
    assert!(
        output.status.success(),
        "the user's crate failed its test:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the failover test did not run:\n{stdout}"
    );
}
