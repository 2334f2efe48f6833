//! Real ZooKeeper servers for your own tests (feature `testing`), the harness zk-master's own
//! tests run on: what Curator users get from `curator-test`'s `TestingServer` and
//! `TestingCluster`.
//!
//! * [`ZkServer`]: one standalone server, with stop, restart, pause and resume.
//! * [`Ensemble`]: `n` quorum peers, with kill, restart, pause and resume per server, and
//!   optionally [proxies between the servers](EnsembleBuilder::peer_proxies) to cut one off
//!   from the others while its clients still reach it.
//! * [`Proxy`](proxy::Proxy): a TCP proxy to put network faults (delay, blackhole, cut, refuse) between a
//!   client and its server.
//!
//! Every server runs on `127.0.0.1`, on free ports, in a fresh temporary directory, with
//! `tickTime` [`TICK_TIME`] (200 ms), so session timeouts can be as short as 400 ms and an expiry
//! takes about a second. Tests can therefore run in parallel and never share state. A JVM never
//! outlives the test process: each is started through a small `sh` wrapper that kills it when a
//! pipe held by the test process closes, however that process ends (even SIGKILL).
//!
//! The servers run from Debian's `zookeeper` package (`apt-get install zookeeper`: jars in
//! `/usr/share/java`) and need `java` and `sh`. The environment can override this: `ZK_CLASSPATH`
//! (the full Java classpath), `ZK_JAVA` (the `java` binary) and `ZK_MASTER_KEEP_TEST_DIRS=1` (keep
//! the temporary directories, with the server logs, after the test). Server logs go to
//! `zookeeper.log` in the server's directory; when a test panics, the end of each log is printed
//! with the test's captured output.
//!
//! This module is for tests: its functions panic, with the server's log, when a server cannot
//! start or a precondition fails, as a test should.
//!
//! # Example
//! In `Cargo.toml`:
//! ```toml
//! [dev-dependencies]
//! zk-master = { version = "0.2", features = ["testing"] }
//! ```
//! Then a test of your service's failover:
//! ```
//! use std::time::Duration;
//! use zk_master::testing::ZkServer;
//! use zk_master::{Config, Election};
//!
//! let server = ZkServer::start();
//! let config = || {
//!     Config::new(server.connect_string())
//!         .group("/my-service")
//!         .session_timeout(Duration::from_secs(2))
//! };
//! let first = Election::join(config())?;
//! let second = Election::join(config())?;
//! assert!(first.is_master() && !second.is_master());
//! first.resign();
//! assert!(second.wait_until_master(Duration::from_secs(10)));
//! # Ok::<(), zk_master::Error>(())
//! ```

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

mod ensemble;
mod process;
pub mod proxy;
mod server;

pub use ensemble::{Ensemble, EnsembleBuilder, Isolation};
pub use process::freeze_process;
pub use server::{ZkServer, ZkServerBuilder};

/// The servers' `tickTime`. Servers clamp session timeouts to `[2, 20]` ticks = 400 ms ..= 4 s
/// unless [`ZkServerBuilder`] sets other bounds.
///
/// ```
/// # #[cfg(feature = "testing")] {
/// use std::time::Duration;
/// assert_eq!(zk_master::testing::TICK_TIME, Duration::from_millis(200));
/// # }
/// ```
pub const TICK_TIME: Duration = Duration::from_millis(200);

/// How long [`ZkServer::start`], [`ZkServer::restart`], [`Ensemble::start`],
/// [`Ensemble::restart`] and [`Ensemble::wait_quorum`] wait before they panic.
///
/// ```
/// # #[cfg(feature = "testing")] {
/// assert!(zk_master::testing::START_TIMEOUT.as_secs() >= 10);
/// # }
/// ```
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a four-letter-word command (`srvr`, `stat`, `cons`, `mntr`, `ruok`...) to the server on
/// `127.0.0.1:port` and returns its answer, or `None` if it cannot be reached within about 1 s.
///
/// ```no_run
/// use zk_master::testing::{four_letter_word, proxy::Proxy, server_mode, ZkServer};
/// let server = ZkServer::start();
/// let mntr = four_letter_word(server.port(), "mntr").unwrap_or_default();
/// ```
pub fn four_letter_word(port: u16, cmd: &str) -> Option<String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .ok()?;
    stream.write_all(cmd.as_bytes()).ok()?;
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    Some(reply)
}

/// The `Mode:` of the server on `127.0.0.1:port` according to `srvr` (`"standalone"`,
/// `"leader"`, `"follower"`, `"observer"`), or `None` if it is down, paused, or not serving
/// (e.g. an ensemble member still electing a leader).
///
/// ```no_run
/// use zk_master::testing::{four_letter_word, proxy::Proxy, server_mode, ZkServer};
/// let server = ZkServer::start();
/// assert_eq!(server_mode(server.port()).as_deref(), Some("standalone"));
/// ```
pub fn server_mode(port: u16) -> Option<String> {
    let reply = four_letter_word(port, "srvr")?;
    reply
        .lines()
        .find_map(|line| line.strip_prefix("Mode:"))
        .map(|mode| mode.trim().to_string())
}
