//! A loopback relay between one `zookeeper` crate client and the servers.
//!
//! The crate connects to this relay instead of to the servers, which lets us
//! contain what it gets wrong (../shared/NOTES.md):
//! - it retries a refused connection in a tight loop, a whole core and an
//!   error line each time, until its session timeout: here the crate's
//!   connection always succeeds, and when no server answers the relay hangs
//!   up after a pause, so the crate retries a few times a second at most;
//! - it tries hosts in the given order and resolves them once: the relay
//!   tries them from a random start and resolves them at every attempt;
//! - it hides the session id and the timeout the server granted, and gets a
//!   new session silently after an expiry: the relay reads both from every
//!   connect response that passes through and reports them;
//! - it never notices a server that stopped answering: [`Relay::cut`] drops
//!   the connection, so the crate reconnects, to another server if one
//!   answers, and keeps its session if the ensemble still has it.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

/// Longest wait for one server to accept a connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(1);
/// Pause before hanging up on the crate when no server accepted.
const NO_SERVER_PAUSE: Duration = Duration::from_millis(300);
/// Longest wait for a server's answer to the crate's connect request. A
/// server that took the connection but does not answer (hung, or in the
/// start-up window where ZooKeeper 3.8.0 leaves connections hanging) is
/// dropped, so the crate retries now instead of after its fixed 2 s.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(1);
/// Largest connect response we accept (it is about 40 bytes).
const MAX_HANDSHAKE: usize = 4096;

/// What a server said when the crate's client connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handshake {
    /// The session; 0 when the server refused it (an expired session).
    pub(crate) session_id: i64,
    /// The session timeout granted, in milliseconds; 0 when refused.
    pub(crate) timeout_ms: i32,
}

/// Called on the relay's own threads for every connect response.
pub(crate) type HandshakeSink = Box<dyn Fn(Handshake) + Send + Sync>;

/// A relay listening on a loopback port of its own. Dropping it stops it.
pub(crate) struct Relay {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

struct Inner {
    hosts: Vec<String>,
    /// Index of the host to try first on the next connection.
    next: AtomicUsize,
    stopped: AtomicBool,
    /// Both ends of every live connection, by link number, to cut them.
    links: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    link_numbers: AtomicU64,
    on_handshake: HandshakeSink,
}

impl Relay {
    /// Starts a relay to `hosts` (`host:port`), trying `first` first.
    pub(crate) fn start(
        hosts: Vec<String>,
        first: usize,
        on_handshake: HandshakeSink,
    ) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            next: AtomicUsize::new(first % hosts.len().max(1)),
            hosts,
            stopped: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            link_numbers: AtomicU64::new(0),
            on_handshake,
        });
        let accepting = inner.clone();
        thread::Builder::new()
            .name("zk-master-relay".into())
            .spawn(move || accept_loop(&listener, &accepting))?;
        Ok(Relay { addr, inner })
    }

    /// The address the crate's client should connect to.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every live connection; the crate reconnects, through the next host.
    pub(crate) fn cut(&self) {
        self.inner.advance();
        self.inner.cut_all();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.cut_all();
        // Wake the accept loop so it sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, UPSTREAM_CONNECT);
    }
}

impl Inner {
    fn advance(&self) {
        let n = self.hosts.len().max(1);
        let _ = self
            .next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |i| Some((i + 1) % n));
    }

    fn cut_all(&self) {
        for (_, down, up) in self.links.lock().drain(..) {
            shut(&down, &up);
        }
    }

    /// The first host, from `next` on, that accepts a connection.
    fn connect_upstream(&self) -> Option<TcpStream> {
        for _ in 0..self.hosts.len() {
            let i = self.next.load(Ordering::SeqCst) % self.hosts.len();
            let stream = self.hosts.get(i).and_then(|host| {
                let addr = host.to_socket_addrs().ok()?.next()?;
                TcpStream::connect_timeout(&addr, UPSTREAM_CONNECT).ok()
            });
            if stream.is_some() {
                return stream;
            }
            log::debug!(
                "relay: {} does not accept connections",
                self.hosts.get(i).map_or("?", |h| h)
            );
            self.advance();
        }
        None
    }
}

fn accept_loop(listener: &TcpListener, inner: &Arc<Inner>) {
    for down in listener.incoming() {
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(down) = down else {
            // Out of descriptors, most likely: do not spin while it lasts.
            thread::sleep(NO_SERVER_PAUSE);
            continue;
        };
        let inner = inner.clone();
        let spawned = thread::Builder::new()
            .name("zk-master-relay-link".into())
            .spawn(move || link(down, inner));
        if spawned.is_err() {
            log::warn!("relay: cannot start a thread for a connection");
        }
    }
}

/// Serves one connection of the crate's client until either side closes.
fn link(down: TcpStream, inner: Arc<Inner>) {
    let Some(up) = inner.connect_upstream() else {
        // Hang up after a pause, having read what the crate sent, so it sees
        // a clean end of stream (an unread request would make the close a
        // reset, which the crate logs as an error).
        let mut down = down;
        let _ = down.set_read_timeout(Some(NO_SERVER_PAUSE));
        let mut sink = [0u8; 1024];
        while matches!(down.read(&mut sink), Ok(n) if n > 0) {}
        let _ = down.shutdown(Shutdown::Both);
        return;
    };
    let _ = (down.set_nodelay(true), up.set_nodelay(true));
    let (Ok(down_read), Ok(up_write), Ok(up_read), Ok(down_write), Ok(down_kept), Ok(up_kept)) = (
        down.try_clone(),
        up.try_clone(),
        up.try_clone(),
        down.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return;
    };
    let number = inner.link_numbers.fetch_add(1, Ordering::SeqCst);
    {
        let mut links = inner.links.lock();
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        links.push((number, down_kept, up_kept));
    }
    let replies_inner = inner.clone();
    let replies = thread::Builder::new()
        .name("zk-master-relay-replies".into())
        .spawn(move || server_to_client(up_read, down_write, &replies_inner));
    if let Ok(replies) = replies {
        copy_all(down_read, up_write);
        if !replies.join().unwrap_or(false) {
            // The server took the connection but never answered the
            // handshake: try another one next time.
            inner.advance();
        }
    }
    shut(&down, &up);
    inner.links.lock().retain(|(n, _, _)| *n != number);
}

/// Copies the server's replies, reading the connect response on the way.
/// The response is reported before the crate sees it, so an expired session
/// is known before the crate can act on the new one it opens next.
/// Returns whether a connect response came.
fn server_to_client(mut up: TcpStream, mut down: TcpStream, inner: &Inner) -> bool {
    let mut len = [0u8; 4];
    let _ = up.set_read_timeout(Some(HANDSHAKE_WAIT));
    let handshake = up.read_exact(&mut len).and_then(|()| {
        let size = usize::try_from(i32::from_be_bytes(len))
            .ok()
            .filter(|&n| n <= MAX_HANDSHAKE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad connect response"))?;
        let mut body = vec![0; size];
        up.read_exact(&mut body)?;
        Ok(body)
    });
    let Ok(body) = handshake else {
        shut(&down, &up);
        return false;
    };
    let _ = up.set_read_timeout(None);
    // ConnectResponse: protocolVersion, timeOut, sessionId, passwd, [readOnly].
    let int = body
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_be_bytes);
    let long = body
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes);
    if let (Some(timeout_ms), Some(session_id)) = (int, long) {
        (inner.on_handshake)(Handshake {
            session_id,
            timeout_ms,
        });
    }
    if down
        .write_all(&len)
        .and_then(|()| down.write_all(&body))
        .is_err()
    {
        shut(&down, &up);
        return true;
    }
    copy_all(up, down);
    true
}

/// Copies until either side closes, then closes both.
fn copy_all(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(buf.get(..n).unwrap_or_default()).is_err() {
                    break;
                }
            }
        }
    }
    shut(&from, &to);
}

fn shut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}
