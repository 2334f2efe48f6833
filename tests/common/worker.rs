//! The example worker as a child process, with its log lines readable one by one.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// How long to wait for an expected log line or an exit.
const LINE_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `examples/worker` process.
pub struct Worker {
    child: Child,
    log: LogLines,
}

/// The lines a child process writes to one of its pipes, read on a thread of their own and
/// echoed to the test output with a label.
pub struct LogLines {
    lines: Receiver<String>,
    /// Lines passed over by [`expect`](Self::expect), for its panic message.
    seen: Vec<String>,
}

impl LogLines {
    /// Follows `pipe`, echoing each line as `[label] line`.
    pub fn follow(pipe: impl Read + Send + 'static, label: &'static str) -> LogLines {
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("[{label}] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogLines {
            lines,
            seen: Vec::new(),
        }
    }

    /// Every line written, once the pipe closes (at most 20 s from now).
    pub fn all(&mut self) -> Vec<String> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => return self.seen.clone(),
            }
        }
    }

    /// Waits (at most 20 s) for a line that ends with `text` and returns it.
    pub fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.ends_with(text) => return line,
                Ok(line) => self.seen.push(line),
                Err(_) => panic!("no line ending in {text:?}; saw {:#?}", self.seen),
            }
        }
    }
}

/// The example binary, which `cargo test` builds next to the test binaries.
pub fn worker_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile_dir.join("examples").join("worker");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --example worker`",
        path.display()
    );
    path
}

impl Worker {
    /// Starts a worker on `connect` in `group` with the given session timeout.
    pub fn spawn(connect: &str, group: &str, session_timeout_ms: u64) -> Worker {
        Worker::spawn_with(&[
            "--connect",
            connect,
            "--group",
            group,
            "--session-timeout-ms",
            &session_timeout_ms.to_string(),
        ])
    }

    /// Starts a worker with these arguments.
    pub fn spawn_with(args: &[&str]) -> Worker {
        Worker::spawn_binary(&worker_binary(), args, "worker")
    }

    /// Starts another build of the worker (the C one) with these arguments, its log lines
    /// echoed as `[label] line`.
    pub fn spawn_binary(binary: &Path, args: &[&str], label: &'static str) -> Worker {
        let mut child = Command::new(binary)
            .args(args)
            .env("RUST_LOG", "info,zookeeper=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the example worker");
        let stderr = child.stderr.take().expect("stderr");
        Worker {
            child,
            log: LogLines::follow(stderr, label),
        }
    }

    /// Waits for a log line that ends with `text` and returns it.
    pub fn expect(&mut self, text: &str) -> String {
        self.log.expect(text)
    }

    /// Every line of its log so far, once it has exited (at most 20 s from now).
    pub fn log_after_exit(&mut self) -> Vec<String> {
        self.log.all()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to delete its node.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM.
    pub fn terminate(&self) {
        super::signal(self.pid(), libc::SIGTERM);
    }

    /// SIGINT, as ctrl-c sends.
    pub fn interrupt(&self) {
        super::signal(self.pid(), libc::SIGINT);
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("the worker did not exit within {LINE_TIMEOUT:?}");
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
