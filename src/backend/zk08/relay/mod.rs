//! A loopback relay between one `zookeeper` crate client and the servers.
//!
//! The crate connects to this relay instead of to the servers, which lets us
//! contain what it gets wrong (../shared/NOTES.md):
//! - it retries a refused connection in a tight loop, a whole core and an
//!   error line each time, and logs a warning for every connection that
//!   ends: here the crate's connection always succeeds, and while no server
//!   answers the relay holds it quietly (trying the servers again every
//!   [`RETRY_PAUSE`]) until a server answers or the crate's own 2 s connect
//!   timeout ends it, so the crate logs at INFO only and stays idle;
//! - it tries hosts in the given order and resolves them once: the relay
//!   tries them from a random start and resolves them at every attempt;
//! - it hides the session id and the timeout the server granted, and gets a
//!   new session silently after an expiry: the relay reads both from every
//!   connect response that passes through and reports them;
//! - it gives up its session once its last ping is older than the timeout,
//!   however short the outage was: the relay keeps the session id and
//!   password of the first connect response and presents them in every later
//!   connect request (its own, or a fresh crate client's), so the session is
//!   resumed whenever a server still has it. Only a server's refusal (timeout
//!   0: expired) ends it, and from then on the relay connects nowhere, so a
//!   crate client can never get a new session silently behind our back;
//! - it never notices a server that stopped answering: [`Relay::cut`] drops
//!   the connection, so the crate reconnects, to another server if one
//!   answers, and keeps its session if the ensemble still has it;
//! - its calls block, one at a time, behind an I/O thread and (for watches)
//!   an event thread, on a socket without TCP_NODELAY, and it has no `sync`:
//!   every request of ours goes out through [`Relay::request`] instead, on
//!   the crate's connection, in the session's order, without waiting for
//!   the one before; its reply and the watch notifications are taken out of
//!   the stream before the crate could see them (every reply it sees would
//!   also restart its ping timer). The crate keeps the connection and its
//!   pings, and sends the credentials.
//!
//! After the handshake the relay reads whole frames both ways: the crate's
//! frames and ours go to the server whole, one at a time, under a writer
//! lock; replies whose xid is one of ours (below [`FIRST_XID`], a range the
//! crate never uses) go to their waiting callback, notifications to the
//! watch sink, all others to the crate.

use std::collections::HashMap;
use std::io::{self, BufReader, Cursor, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::core::{Answer, Op, WatchKind};

mod wire;

use wire::{
    be_i32, be_i64, first_frame_len, parse_answer, parse_connect_response, parse_header,
    parse_notification, read_frame, remove_watches_frame, request_frame, resume_request, MAX_FRAME,
    NOTIFICATION_XID,
};
pub(crate) use wire::{AclEntry, FIRST_XID};

/// Longest wait for one server to accept a connection.
const UPSTREAM_CONNECT: Duration = Duration::from_secs(1);
/// Pause between two rounds of tries while no server answers (the crate's
/// connection is held meanwhile), and after a failed accept.
const RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Longest wait for the crate's connect request.
const REQUEST_WAIT: Duration = Duration::from_secs(2);
/// Most bytes the crate may send behind its connect request while held.
const MAX_PENDING: usize = 1 << 20;
/// Longest wait for a server's answer to the crate's connect request. A
/// server that took the connection but does not answer (hung, or in the
/// start-up window where ZooKeeper 3.8.0 leaves connections hanging) is
/// dropped, so the crate retries now instead of after its fixed 2 s.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(1);
/// Largest connect response we accept (it is about 40 bytes).
const MAX_HANDSHAKE: usize = 4096;
/// Longest write to a server: a server that stops reading must not hang
/// whoever writes (the crate's frames, or a caller of [`Relay::request`]).
/// The link is cut instead.
const UPSTREAM_WRITE: Duration = Duration::from_secs(1);

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

/// Called on the relay's reply thread for every watch notification, with
/// the client's path.
pub(crate) type WatchSink = Box<dyn Fn(String, WatchKind) + Send + Sync>;

/// How a request of ours ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InjectedReply {
    /// The server answered on relay link `link`: a reply only ever comes
    /// back on the link its request left on. `err` is ZooKeeper's error code
    /// (0: ok, and then `answer` is set).
    Answered {
        link: u64,
        err: i32,
        answer: Option<Answer>,
    },
    /// No answer: no connection was up (`link` is `None`), or the link
    /// broke before the answer. The request may have reached the server.
    Unanswered {
        link: Option<u64>,
        why: &'static str,
    },
}

/// Called once with the outcome of an injected request, on the relay's
/// thread that read the reply, or on the caller's when it cannot go out.
pub(crate) type Done = Box<dyn FnOnce(InjectedReply) + Send>;

/// A relay listening on a loopback port of its own. Dropping it stops it.
pub(crate) struct Relay {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

struct Inner {
    hosts: Vec<String>,
    /// Put in front of the paths of our requests ("" for none), and taken
    /// off those of replies and notifications.
    chroot: String,
    /// The ACL of the nodes we create.
    acl: Vec<AclEntry>,
    on_watch: WatchSink,
    /// Index of the host to try first on the next connection.
    next: AtomicUsize,
    stopped: AtomicBool,
    /// Every live connection, to cut them and to send on them.
    links: Mutex<Vec<Arc<Link>>>,
    link_numbers: AtomicU64,
    /// The next xid of ours.
    xids: AtomicI32,
    on_handshake: HandshakeSink,
    /// The session id and password to present on every connection, once a
    /// server granted them.
    session: Mutex<Option<(i64, Vec<u8>)>>,
    /// The highest zxid a server sent us: a server behind it refuses us.
    last_zxid: AtomicI64,
    /// No more connections to servers: the session expired, or the relay
    /// was retired.
    held_off: AtomicBool,
    /// No server answered the last round of tries (logged once an outage).
    outage: AtomicBool,
}

impl Relay {
    /// Starts a relay to `hosts` (`host:port`), trying `first` first;
    /// `chroot` is the client's ("" for none, else like `/app`), `acl` that
    /// of the nodes it creates.
    pub(crate) fn start(
        hosts: Vec<String>,
        first: usize,
        chroot: &str,
        acl: Vec<AclEntry>,
        on_handshake: HandshakeSink,
        on_watch: WatchSink,
    ) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            next: AtomicUsize::new(first % hosts.len().max(1)),
            hosts,
            chroot: chroot.trim_end_matches('/').to_owned(),
            acl,
            on_watch,
            stopped: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            link_numbers: AtomicU64::new(0),
            xids: AtomicI32::new(FIRST_XID),
            on_handshake,
            session: Mutex::new(None),
            last_zxid: AtomicI64::new(0),
            held_off: AtomicBool::new(false),
            outage: AtomicBool::new(false),
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

    /// Connects nowhere any more and drops every live connection: the
    /// crate's client, held quietly, gives up on its own (it would spin on a
    /// refused connection once the relay is dropped).
    pub(crate) fn retire(&self) {
        self.inner.held_off.store(true, Ordering::SeqCst);
        self.inner.cut_all();
    }

    /// Sends `op` on the newest connection whose session the server
    /// accepted, between two of the crate's frames, so the server sees it
    /// after everything the crate sent before and before everything it sends
    /// after. `done` gets the reply, which the crate never sees; or, at
    /// once, [`InjectedReply::Unanswered`] when no such connection is up, and
    /// when the connection breaks first. Blocks only for the writer lock and
    /// one socket write (at most [`UPSTREAM_WRITE`], then the link is cut).
    /// Removes the session's watches on `path`, on the newest connection
    /// (a connection's watches end with it), in the session's order. Its
    /// reply is dropped: a path without watches is no failure worth a word.
    pub(crate) fn remove_watches(&self, path: &str) {
        let Some(link) = self.inner.newest_ready() else {
            return;
        };
        let xid = self.inner.next_xid();
        if let Some(frame) = remove_watches_frame(&self.inner.chroot, xid, path) {
            if link.send(&frame).is_err() {
                link.close();
            }
        }
    }

    pub(crate) fn request(&self, op: Op, done: Done) {
        let Some(link) = self.inner.newest_ready() else {
            return done(InjectedReply::Unanswered {
                link: None,
                why: "not connected",
            });
        };
        let xid = self.inner.next_xid();
        let Some(frame) = request_frame(&self.inner.chroot, xid, &op, &self.inner.acl) else {
            return done(InjectedReply::Unanswered {
                link: None,
                why: "the request is too large",
            });
        };
        {
            let mut waiting = link.waiting.lock();
            let Some(waiting) = waiting.as_mut() else {
                drop(waiting);
                return done(InjectedReply::Unanswered {
                    link: Some(link.number),
                    why: "the connection closed",
                });
            };
            waiting.insert(xid, Waiting { op, done });
        }
        if link.send(&frame).is_err() {
            log::debug!(
                "relay: link {} cut: a write to the server failed",
                link.number
            );
            link.close();
        }
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
        let links: Vec<_> = self.links.lock().drain(..).collect();
        for link in links {
            link.close();
        }
    }

    /// The newest connection whose session the server accepted.
    fn newest_ready(&self) -> Option<Arc<Link>> {
        self.links
            .lock()
            .iter()
            .filter(|l| l.ready.load(Ordering::SeqCst))
            .max_by_key(|l| l.number)
            .cloned()
    }

    fn next_xid(&self) -> i32 {
        let previous = self
            .xids
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                Some(if x <= i32::MIN + 1 { FIRST_XID } else { x - 1 })
            });
        previous.unwrap_or(FIRST_XID)
    }

    /// Presents the crate's connect `request` (rewritten to resume our
    /// session once there is one) to the first host, from `next` on, that
    /// answers it: that connection and the whole connect response.
    fn handshake(&self, request: &[u8]) -> Option<(TcpStream, Vec<u8>)> {
        let request = match &*self.session.lock() {
            Some((id, password)) => {
                let zxid = self.last_zxid.load(Ordering::SeqCst);
                resume_request(request, *id, password, zxid)?
            }
            None => request.to_vec(),
        };
        for _ in 0..self.hosts.len() {
            let i = self.next.load(Ordering::SeqCst) % self.hosts.len();
            let host = self.hosts.get(i).map_or("?", |h| h);
            if let Some(answered) = try_host(host, &request) {
                if self.outage.swap(false, Ordering::SeqCst) {
                    log::info!("relay: {host} answers again");
                }
                return Some(answered);
            }
            log::debug!("relay: {host} does not answer");
            self.advance();
        }
        if !self.outage.swap(true, Ordering::SeqCst) {
            log::warn!(
                "no ZooKeeper server answers ({}): trying again every {RETRY_PAUSE:?}",
                self.hosts.join(",")
            );
        }
        None
    }
}

/// Connects to `host`, sends `request`, and reads the connect response.
fn try_host(host: &str, request: &[u8]) -> Option<(TcpStream, Vec<u8>)> {
    let addr = host.to_socket_addrs().ok()?.next()?;
    let mut up = TcpStream::connect_timeout(&addr, UPSTREAM_CONNECT).ok()?;
    let _ = up.set_nodelay(true);
    up.set_write_timeout(Some(UPSTREAM_WRITE)).ok()?;
    up.set_read_timeout(Some(HANDSHAKE_WAIT)).ok()?;
    up.write_all(request).ok()?;
    // A server that took the connection but does not answer (hung, or in
    // the start-up window where ZooKeeper 3.8.0 leaves connections hanging)
    // is left for the next one.
    let response = read_frame(&mut up, MAX_HANDSHAKE)?;
    up.set_read_timeout(None).ok()?;
    Some((up, response))
}

fn accept_loop(listener: &TcpListener, inner: &Arc<Inner>) {
    for down in listener.incoming() {
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(down) = down else {
            // Out of descriptors, most likely: do not spin while it lasts.
            thread::sleep(RETRY_PAUSE);
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

mod link;

use link::{link, Link, Waiting};

#[cfg(test)]
mod tests;
