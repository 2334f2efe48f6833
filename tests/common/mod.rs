//! Test support: the library's `testing` feature (real ZooKeeper servers, ensembles, proxies;
//! see `src/testing`) plus what only these tests need.
//!
//! * [`raw_client`]: a connected client of the `zookeeper` crate, to look at or disturb the
//!   state behind the library's back.
//! * [`wait_for`]: the bounded polling helper; every loop in a test must be bounded.
//! * [`signal`]: signals to a child process (the example workers), waiting for SIGSTOP to land.
//! * [`Worker`]: the example worker as a child process; [`overlap`]: the checker of the
//!   workers' `--trace-roles` files.
#![allow(dead_code)]

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use zookeeper::ZooKeeper;

pub mod overlap;
pub mod traced_group;
mod worker;

#[allow(unused_imports)]
pub use worker::{worker_binary, LogLines, Worker};
#[allow(unused_imports)] // each test binary uses its own part
pub use zk_master::testing::{
    four_letter_word, freeze_process, proxy, server_mode, Ensemble, Isolation, ZkServer, TICK_TIME,
};

/// How long [`raw_client`] waits for a session before it panics.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Session timeout that [`raw_client`] asks for (servers clamp it, to 4 s by default).
pub const RAW_CLIENT_SESSION_TIMEOUT: Duration = Duration::from_secs(4);

/// Session timeout of most tests' members: expiry takes about this long.
pub const SESSION: Duration = Duration::from_millis(2000);

/// Bound for waits on something that should happen promptly.
pub const SOON: Duration = Duration::from_secs(10);

/// Joins, or panics with the error.
pub fn join(config: zk_master::Config) -> zk_master::Election {
    zk_master::Election::join(config).expect("join")
}

/// The children of `path`, sorted.
pub fn children(zk: &ZooKeeper, path: &str) -> Vec<String> {
    let mut children = zk.get_children(path, false).expect("get_children");
    children.sort();
    children
}

/// The usual member configuration of a test: `server`, `group`, [`SESSION`],
/// and [`SOON`] to connect.
pub fn member_config(server: &ZkServer, group: &str) -> zk_master::Config {
    zk_master::Config::new(server.connect_string())
        .group(group)
        .session_timeout(SESSION)
        .connect_timeout(SOON)
}

const POLL: Duration = Duration::from_millis(50);

/// Initialises `env_logger` for tests (`RUST_LOG` picks the level; output is captured by the test
/// harness). Safe to call from every test, any number of times.
pub fn init_logging() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Polls `f` every 10 ms until it returns `true`; panics with `what` if that takes longer than
/// `timeout`. `f` is always called at least once, and once more after the deadline.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        if Instant::now() >= deadline {
            if f() {
                return;
            }
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Sends signal `sig` to process `pid`, a child of the test that is not reaped yet (so its pid
/// cannot have been reused). SIGSTOP and SIGCONT return only once every thread of the process
/// has stopped or resumed: `kill(2)` returns before the kernel stops each thread (a thread stops
/// when it next runs), so on a busy machine a process just sent SIGSTOP can still answer a
/// request.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers; the pid is a child we have not reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    let error = std::io::Error::last_os_error();
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed: {error}");
    match sig {
        libc::SIGSTOP => freeze_process(pid, true),
        libc::SIGCONT => freeze_process(pid, false),
        _ => {}
    }
}

/// Returns a connected client of the `zookeeper` crate (requested session timeout
/// [`RAW_CLIENT_SESSION_TIMEOUT`]). See [`raw_client_with_timeout`].
pub fn raw_client(connect: &str) -> ZooKeeper {
    raw_client_with_timeout(connect, RAW_CLIENT_SESSION_TIMEOUT)
}

/// Returns a client of the `zookeeper` crate whose session is established: `exists("/")` has
/// succeeded on it. The crate's `connect()` returns before any session exists and its calls have no
/// timeout, so the connection is made on a helper thread and this panics if no session exists
/// after [`CONNECT_TIMEOUT`] (the helper thread may then stay blocked; the test fails anyway).
///
/// Drop raw clients before stopping or pausing their server: the crate's `Drop` sends a
/// CloseSession and waits for the answer.
pub fn raw_client_with_timeout(connect: &str, session_timeout: Duration) -> ZooKeeper {
    let (tx, rx) = mpsc::channel();
    let connect_string = connect.to_string();
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    thread::Builder::new()
        .name("raw-client-connect".into())
        .spawn(move || {
            let result = (|| {
                let name = connect_string.clone();
                let zk = ZooKeeper::connect(&connect_string, session_timeout, move |event| {
                    log::debug!("raw client {name}: {event:?}");
                })?;
                loop {
                    match zk.exists("/", false) {
                        Ok(_) => return Ok(zk),
                        Err(e) if Instant::now() >= deadline => return Err(e),
                        Err(_) => thread::sleep(POLL),
                    }
                }
            })();
            let _ = tx.send(result);
        })
        .expect("spawn raw-client-connect thread");
    match rx.recv_timeout(CONNECT_TIMEOUT + Duration::from_secs(1)) {
        Ok(Ok(zk)) => zk,
        Ok(Err(e)) => panic!("raw client could not get a session on {connect}: {e:?}"),
        Err(_) => panic!("raw client could not get a session on {connect} in {CONNECT_TIMEOUT:?}"),
    }
}
