//! A TCP proxy on loopback that a test can switch at runtime, to put network faults between a
//! ZooKeeper client and its server.
//!
//! [`Proxy::start`] listens on a free `127.0.0.1` port and forwards every connection to the
//! target, with one pair of threads per connection (one per direction). [`Proxy::set`] switches
//! every connection, current and future, between:
//!
//! * [`Mode::Pass`] forwards;
//! * [`Mode::Delay`] forwards each chunk that much later (order kept);
//! * [`Mode::Blackhole`] is a network partition. Connections stay open and new ones are accepted,
//!   but nothing moves in either direction: the proxy stops reading, so the bytes wait in the
//!   kernel's buffers as they would in TCP retransmissions, and go through, in order, when the
//!   mode is switched back (unless one end gave up meanwhile). A connection accepted during the
//!   blackhole reaches the target only after it. The client sees no error;
//! * [`Mode::Refuse`] accepts new connections and closes them at once (like a server that is
//!   down); current ones go on.
//!
//! [`Proxy::cut`] closes every current connection (both ends see EOF), then applies a mode.
//! Dropping the proxy stops all of its threads and closes every connection; every thread checks
//! for that at least every [`TICK`], so the drop takes about that long.
//!
//! ```no_run
//! use zk_master::testing::proxy::{Mode, Proxy};
//! use zk_master::testing::ZkServer;
//!
//! let server = ZkServer::start();
//! let proxy = Proxy::to_port(server.port());
//! let config = zk_master::Config::new(proxy.connect_string());
//! proxy.set(Mode::Blackhole); // a partition between the client and its server
//! proxy.cut(Mode::Pass); // every connection closed, new ones pass
//! ```

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest a proxy thread goes without looking at the mode and the stop flag.
///
/// ```no_run
/// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
/// let proxy = Proxy::to_port(2181);
/// drop(proxy); // takes about TICK
/// ```
pub const TICK: Duration = Duration::from_millis(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CHUNK: usize = 16 * 1024;

/// What the proxy does with the traffic.
///
/// ```no_run
/// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
/// let proxy = Proxy::to_port(2181);
/// proxy.set(Mode::Delay(std::time::Duration::from_millis(50)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything.
    Pass,
    /// Forward each chunk this much later, in order.
    Delay(Duration),
    /// A network partition: connections stay open, nothing moves either way, new connections
    /// are accepted but reach the target only after the blackhole ends.
    Blackhole,
    /// Accept new connections and close them at once, like a server that is down; current
    /// connections go on.
    Refuse,
}

const PASS: u64 = 0;
const BLACKHOLE: u64 = 1;
const REFUSE: u64 = 2;
const DELAY: u64 = 3; // + delay in microseconds << 2

fn encode(mode: Mode) -> u64 {
    match mode {
        Mode::Pass => PASS,
        Mode::Blackhole => BLACKHOLE,
        Mode::Refuse => REFUSE,
        Mode::Delay(d) => DELAY | ((d.as_micros() as u64) << 2),
    }
}

fn decode(value: u64) -> Mode {
    match value & 3 {
        PASS => Mode::Pass,
        BLACKHOLE => Mode::Blackhole,
        REFUSE => Mode::Refuse,
        _ => Mode::Delay(Duration::from_micros(value >> 2)),
    }
}

/// State shared by the proxy's threads.
struct Shared {
    target: SocketAddr,
    mode: AtomicU64,
    /// Bumped by `cut`: a connection of an older generation closes.
    generation: AtomicU64,
    stop: AtomicBool,
    connections: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn mode(&self) -> Mode {
        decode(self.mode.load(Ordering::SeqCst))
    }

    /// Whether a connection of `generation` must close.
    fn closing(&self, generation: u64) -> bool {
        self.stop.load(Ordering::SeqCst) || self.generation.load(Ordering::SeqCst) != generation
    }

    fn spawn(self: &Arc<Self>, name: &str, f: impl FnOnce() + Send + 'static) {
        let handle = thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .expect("spawn a proxy thread");
        let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
        threads.retain(|t| !t.is_finished());
        threads.push(handle);
    }
}

/// A switchable TCP proxy from a free port on 127.0.0.1 to a target on loopback.
///
/// ```no_run
/// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
/// let server = ZkServer::start();
/// let proxy = Proxy::to_port(server.port());
/// let config = zk_master::Config::new(proxy.connect_string());
/// // ... join through the proxy, then partition the member from its server:
/// proxy.set(Mode::Blackhole);
/// ```
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `target` (which must be on loopback) in [`Mode::Pass`].
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::start(([127, 0, 0, 1], 2181).into());
    /// ```
    pub fn start(target: SocketAddr) -> Proxy {
        assert!(
            target.ip().is_loopback(),
            "the proxy only forwards to loopback, not {target}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            target,
            mode: AtomicU64::new(PASS),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let state = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("proxy-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, state))
            .expect("spawn the proxy acceptor");
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Starts a proxy to `127.0.0.1:port`.
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let server = ZkServer::start();
    /// let proxy = Proxy::to_port(server.port());
    /// ```
    pub fn to_port(port: u16) -> Proxy {
        Proxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Where clients connect.
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::to_port(2181);
    /// assert!(proxy.addr().ip().is_loopback());
    /// ```
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `"127.0.0.1:PORT"` of the proxy.
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::to_port(2181);
    /// let config = zk_master::Config::new(proxy.connect_string());
    /// ```
    pub fn connect_string(&self) -> String {
        self.addr.to_string()
    }

    /// The current mode.
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::to_port(2181);
    /// assert_eq!(proxy.mode(), Mode::Pass);
    /// ```
    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Switches every connection, current and future.
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::to_port(2181);
    /// proxy.set(Mode::Blackhole);
    /// proxy.set(Mode::Pass);
    /// ```
    pub fn set(&self, mode: Mode) {
        self.shared.mode.store(encode(mode), Ordering::SeqCst);
    }

    /// Closes every current connection, then switches to `then` ([`Mode::Pass`] to let clients
    /// reconnect at once, [`Mode::Refuse`] to keep them out).
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::to_port(2181);
    /// proxy.cut(Mode::Pass); // clients reconnect at once
    /// ```
    pub fn cut(&self, then: Mode) {
        // The mode first, so a client that reconnects at once meets it.
        self.set(then);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// How many connections were accepted so far.
    ///
    /// ```no_run
    /// use zk_master::testing::{proxy::{Mode, Proxy}, ZkServer};
    /// let proxy = Proxy::to_port(2181);
    /// assert_eq!(proxy.connections(), 0);
    /// ```
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Every thread looks at the stop flag at least every TICK (reads and writes time out),
        // and a connection's first thread may start its second one: join until none is left.
        for _round in 0..4 {
            let threads: Vec<JoinHandle<()>> = std::mem::take(
                &mut *self
                    .shared
                    .threads
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            if threads.is_empty() {
                break;
            }
            for t in threads {
                let _ = t.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                if shared.mode() == Mode::Refuse {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let generation = shared.generation.load(Ordering::SeqCst);
                let state = shared.clone();
                shared.spawn("proxy-up", move || {
                    connect_and_pump(client, state, generation)
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("proxy accept: {e}");
                thread::sleep(TICK);
            }
        }
    }
}

/// The first thread of a connection: waits out a blackhole, connects to the target, starts the
/// other direction's thread and pumps client → target.
fn connect_and_pump(client: TcpStream, shared: Arc<Shared>, generation: u64) {
    while shared.mode() == Mode::Blackhole {
        if shared.closing(generation) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        thread::sleep(TICK);
    }
    if shared.closing(generation) || shared.mode() == Mode::Refuse {
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let _ = client.set_nonblocking(false);
    let server = match TcpStream::connect_timeout(&shared.target, CONNECT_TIMEOUT) {
        Ok(server) if !shared.closing(generation) => server,
        Ok(server) => {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        Err(_) => {
            // The target is down: the client sees its connection closed.
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone()) else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        return;
    };
    let state = shared.clone();
    shared.spawn("proxy-down", move || {
        pump(server_back, client_back, &state, generation)
    });
    pump(client, server, &shared, generation);
}

/// Copies `from` → `to` according to the mode until either end closes, the connection is cut or
/// the proxy stops; then closes both ends (which ends the other direction's thread too).
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, generation: u64) {
    let _ = from.set_read_timeout(Some(TICK));
    let _ = to.set_write_timeout(Some(TICK));
    // Chunks read and not yet written, with the time each may go.
    let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut buf = vec![0u8; CHUNK];
    let mut eof = false;
    'pump: while !shared.closing(generation) {
        let mode = shared.mode();
        if mode == Mode::Blackhole {
            // Neither read nor write: like a partition, bytes wait where they are.
            thread::sleep(TICK);
            continue;
        }
        // Write what is due.
        let now = Instant::now();
        while queue.front().is_some_and(|(due, _)| *due <= now) {
            let (_, chunk) = queue.front_mut().expect("a chunk");
            match to.write(chunk) {
                Ok(0) => break 'pump,
                Ok(n) => {
                    chunk.drain(..n);
                    if chunk.is_empty() {
                        queue.pop_front();
                    }
                }
                Err(e) if is_timeout(&e) => continue 'pump, // the peer reads slowly: look again
                Err(_) => break 'pump,
            }
        }
        if eof {
            if queue.is_empty() {
                break;
            }
            thread::sleep(TICK.min(until_due(&queue)));
            continue;
        }
        // Read more, waiting at most until the next chunk is due.
        let wait = until_due(&queue).clamp(Duration::from_millis(1), TICK);
        let _ = from.set_read_timeout(Some(wait));
        match from.read(&mut buf) {
            Ok(0) => eof = true,
            Ok(n) => {
                let delay = match shared.mode() {
                    Mode::Delay(d) => d,
                    _ => Duration::ZERO,
                };
                queue.push_back((Instant::now() + delay, buf[..n].to_vec()));
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn until_due(queue: &VecDeque<(Instant, Vec<u8>)>) -> Duration {
    match queue.front() {
        Some((due, _)) => due.saturating_duration_since(Instant::now()),
        None => TICK,
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
