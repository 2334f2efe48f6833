//! A standalone ZooKeeper server.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::process::{
    common_config, free_ports, freeze_process, fresh_dir, keep_dirs, print_log_tail_if_panicking,
    tail, ZkProcess, POLL, START_ATTEMPTS,
};
use super::{server_mode, START_TIMEOUT};

/// Options for a [`ZkServer`]; get one from [`ZkServer::builder`].
///
/// ```no_run
/// use zk_master::testing::ZkServer;
/// let server = ZkServer::builder()
///     .max_session_timeout(std::time::Duration::from_secs(10))
///     .start();
/// ```
#[derive(Debug, Clone, Default)]
pub struct ZkServerBuilder {
    min_session_timeout: Option<Duration>,
    max_session_timeout: Option<Duration>,
}

impl ZkServerBuilder {
    /// Server's `minSessionTimeout` (default 2 ticks = 400 ms).
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::builder()
    ///     .min_session_timeout(std::time::Duration::from_millis(200))
    ///     .start();
    /// ```
    pub fn min_session_timeout(mut self, timeout: Duration) -> Self {
        self.min_session_timeout = Some(timeout);
        self
    }

    /// Server's `maxSessionTimeout` (default 20 ticks = 4 s).
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::builder()
    ///     .max_session_timeout(std::time::Duration::from_secs(30))
    ///     .start();
    /// ```
    pub fn max_session_timeout(mut self, timeout: Duration) -> Self {
        self.max_session_timeout = Some(timeout);
        self
    }

    /// Starts the server and waits until it serves; see [`ZkServer::start`].
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// println!("ZooKeeper at {}", server.connect_string());
    /// ```
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// println!("ZooKeeper at {}", server.connect_string());
    /// ```
    pub fn start(self) -> ZkServer {
        ZkServer::start_with(self)
    }
}

/// A standalone ZooKeeper server on `127.0.0.1`, on a free port, with its own temporary data
/// directory (removed on drop). Killed on drop, and also if the test process dies.
///
/// ```no_run
/// use zk_master::testing::ZkServer;
/// let mut server = ZkServer::start();
/// server.stop();
/// server.restart();
/// ```
pub struct ZkServer {
    dir: PathBuf,
    cfg: PathBuf,
    port: u16,
    process: Option<ZkProcess>,
}

impl ZkServer {
    /// Starts a server with default options and waits until it serves (`srvr` reports a mode).
    /// Panics if it is not ready within [`START_TIMEOUT`].
    pub fn start() -> ZkServer {
        Self::builder().start()
    }

    /// Options: session timeout bounds.
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::builder().start();
    /// ```
    pub fn builder() -> ZkServerBuilder {
        ZkServerBuilder::default()
    }

    fn start_with(options: ZkServerBuilder) -> ZkServer {
        let dir = fresh_dir("standalone");
        let cfg = dir.join("zoo.cfg");
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            let port = free_ports(1)[0];
            let _ = fs::remove_dir_all(dir.join("data"));
            fs::create_dir_all(dir.join("data")).expect("create data dir");
            let mut text = common_config(&dir.join("data"), port);
            if let Some(t) = options.min_session_timeout {
                text.push_str(&format!("minSessionTimeout={}\n", t.as_millis()));
            }
            if let Some(t) = options.max_session_timeout {
                text.push_str(&format!("maxSessionTimeout={}\n", t.as_millis()));
            }
            fs::write(&cfg, text).expect("write zoo.cfg");
            let mut server = ZkServer {
                dir: dir.clone(),
                cfg: cfg.clone(),
                port,
                process: None,
            };
            match server.launch() {
                Ok(()) => return server,
                // Most likely the port was taken between our check and the JVM's bind.
                Err(e) => {
                    last_error = e;
                    server.dir = PathBuf::new(); // keep `dir` for the next attempt
                }
            }
        }
        let log = tail(&dir.join("zookeeper.log"), 40);
        panic!(
            "ZooKeeper server did not start: {last_error} (files left in {})\n{log}",
            dir.display()
        );
    }

    /// Spawns the JVM and waits until it serves. Err if it exits first.
    fn launch(&mut self) -> Result<(), String> {
        let process = ZkProcess::spawn(
            "org.apache.zookeeper.server.ZooKeeperServerMain",
            &self.dir,
            &self.cfg,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if server_mode(self.port).is_some() {
                self.process = Some(process);
                return Ok(());
            }
            if !process.is_alive() {
                return Err(format!("server on port {} exited", self.port));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "server on port {} not serving after {START_TIMEOUT:?}",
                    self.port
                ));
            }
            thread::sleep(POLL);
        }
    }

    /// `"127.0.0.1:PORT"`.
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// let config = zk_master::Config::new(server.connect_string());
    /// ```
    pub fn connect_string(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The client port.
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// assert_eq!(server.connect_string(), format!("127.0.0.1:{}", server.port()));
    /// ```
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's temporary directory (`zoo.cfg`, `data/`, `zookeeper.log`).
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// assert!(server.dir().join("zoo.cfg").exists());
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's log file.
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// let log = std::fs::read_to_string(server.log_path()).unwrap_or_default();
    /// ```
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }

    /// True if the JVM is alive (paused counts as alive).
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let mut server = ZkServer::start();
    /// server.stop();
    /// assert!(!server.is_running());
    /// ```
    pub fn is_running(&self) -> bool {
        self.process.as_ref().is_some_and(ZkProcess::is_alive)
    }

    /// Kills the server with SIGKILL (no clean shutdown, like a crash) and waits until it is
    /// gone. Sessions survive in the data dir and expire after a [`restart`](Self::restart) unless
    /// their clients reconnect in time. No-op if already stopped.
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let mut server = ZkServer::start();
    /// server.stop(); // members lose their connection; their sessions live on in the data dir
    /// ```
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Starts the server again (stopping it first if needed) with the same data dir and port,
    /// and waits until it serves. Panics if it is not ready within [`START_TIMEOUT`].
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let mut server = ZkServer::start();
    /// server.restart(); // sessions whose clients come back in time survive
    /// ```
    pub fn restart(&mut self) {
        self.stop();
        let mut last_error = String::new();
        for _attempt in 0..START_ATTEMPTS {
            match self.launch() {
                Ok(()) => return,
                Err(e) => last_error = e,
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "ZooKeeper server did not restart: {last_error}\n{}",
            tail(&self.log_path(), 40)
        );
    }

    /// Freezes the JVM (SIGSTOP): it keeps its sockets open but answers nothing, like a hung
    /// server or a black-holed network. Remember to [`resume`](Self::resume); `Drop` copes anyway.
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// server.pause();
    /// // ... a member's lease lapses while nothing answers ...
    /// server.resume();
    /// ```
    pub fn pause(&self) {
        freeze_process(
            self.process.as_ref().expect("server is stopped").pid(),
            true,
        );
    }

    /// Unfreezes the JVM (SIGCONT).
    ///
    /// ```no_run
    /// use zk_master::testing::ZkServer;
    /// let server = ZkServer::start();
    /// server.pause();
    /// server.resume();
    /// ```
    pub fn resume(&self) {
        freeze_process(
            self.process.as_ref().expect("server is stopped").pid(),
            false,
        );
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
        if self.dir.as_os_str().is_empty() {
            return;
        }
        print_log_tail_if_panicking(&format!("ZooKeeper {}", self.connect_string()), &self.dir);
        if !keep_dirs() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
