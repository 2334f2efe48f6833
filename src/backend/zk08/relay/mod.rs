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

/// One connection of the crate's client, and its connection to a server.
struct Link {
    number: u64,
    down: TcpStream,
    up: TcpStream,
    /// Everything sent to the server goes through here, a frame at a time.
    writer: Mutex<TcpStream>,
    /// The server accepted the session: requests of ours may go out.
    ready: AtomicBool,
    /// Our requests waiting for their reply; `None` once the link is closed.
    waiting: Mutex<Option<HashMap<i32, Waiting>>>,
}

struct Waiting {
    op: Op,
    done: Done,
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

impl Link {
    /// Writes one whole frame to the server.
    fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.writer.lock().write_all(frame)
    }

    /// Closes both connections and fails every request still waiting.
    fn close(&self) {
        self.ready.store(false, Ordering::SeqCst);
        shut(&self.down, &self.up);
        let waiting = self.waiting.lock().take();
        for (_, w) in waiting.into_iter().flatten() {
            (w.done)(InjectedReply::Unanswered {
                link: Some(self.number),
                why: "the connection closed",
            });
        }
    }

    /// Hands a reply of ours to its callback. Err: the reply is malformed.
    fn answer(&self, chroot: &str, xid: i32, body: &[u8]) -> Result<(), ()> {
        let header = parse_header(body).ok_or(())?;
        let Some(w) = self.waiting.lock().as_mut().and_then(|m| m.remove(&xid)) else {
            return Ok(()); // not waited for (any more): drop it
        };
        let answer = if header.err == 0 {
            match parse_answer(chroot, &w.op, body) {
                Some(answer) => Some(answer),
                None => {
                    // Put it back so closing the link fails it.
                    if let Some(m) = self.waiting.lock().as_mut() {
                        m.insert(xid, w);
                    }
                    return Err(());
                }
            }
        } else {
            None
        };
        (w.done)(InjectedReply::Answered {
            link: self.number,
            err: header.err,
            answer,
        });
        Ok(())
    }
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

/// Serves one connection of the crate's client until either side closes.
fn link(down: TcpStream, inner: Arc<Inner>) {
    let _ = down.set_nodelay(true);
    let Some((up, response, pending)) = hold(&down, &inner) else {
        let _ = down.shutdown(Shutdown::Both);
        return;
    };
    let Some(answer) = parse_connect_response(response.get(4..).unwrap_or_default()) else {
        log::warn!("relay: a server sent a malformed connect response");
        return shut(&down, &up);
    };
    // Reported before the crate sees it, so an expired session is known
    // before the crate can act on it.
    (inner.on_handshake)(Handshake {
        session_id: answer.session_id,
        timeout_ms: answer.timeout_ms,
    });
    let granted = answer.timeout_ms > 0 && answer.session_id != 0;
    if granted {
        let mut session = inner.session.lock();
        if session.is_none() {
            *session = Some((answer.session_id, answer.password));
        }
    } else {
        // Expired: the crate would open a new session next; connect nowhere.
        inner.held_off.store(true, Ordering::SeqCst);
    }
    let mut down_write = match down.try_clone() {
        Ok(d) if granted => d,
        Ok(mut d) => {
            let _ = d.write_all(&response);
            return shut(&down, &up);
        }
        Err(_) => return shut(&down, &up),
    };
    if down_write.write_all(&response).is_err() {
        return shut(&down, &up);
    }
    let (Ok(down_read), Ok(up_write), Ok(up_read), Ok(down_kept), Ok(up_kept)) = (
        down.try_clone(),
        up.try_clone(),
        up.try_clone(),
        down.try_clone(),
        up.try_clone(),
    ) else {
        return shut(&down, &up);
    };
    let number = inner.link_numbers.fetch_add(1, Ordering::SeqCst);
    let link = Arc::new(Link {
        number,
        down: down_kept,
        up: up_kept,
        writer: Mutex::new(up_write),
        ready: AtomicBool::new(true),
        waiting: Mutex::new(Some(HashMap::new())),
    });
    {
        let mut links = inner.links.lock();
        if inner.stopped.load(Ordering::SeqCst) || inner.held_off.load(Ordering::SeqCst) {
            return shut(&down, &up);
        }
        links.push(link.clone());
    }
    let replies_inner = inner.clone();
    let replies_link = link.clone();
    let replies = thread::Builder::new()
        .name("zk-master-relay-replies".into())
        .spawn(move || server_to_client(up_read, down_write, &replies_inner, &replies_link));
    if let Ok(replies) = replies {
        client_to_server(Cursor::new(pending).chain(down_read), &link);
        let _ = replies.join();
    }
    link.close();
    shut(&down, &up);
    inner.links.lock().retain(|l| l.number != number);
}

/// Reads the crate's connect request and presents it to the servers until
/// one answers, holding the crate's connection quietly meanwhile (a hang-up
/// would make the crate log a warning and retry at once). `None` once the
/// crate hangs up, or the relay stops. Returns the server's connection, its
/// connect response, and what the crate sent behind its connect request.
fn hold(down: &TcpStream, inner: &Inner) -> Option<(TcpStream, Vec<u8>, Vec<u8>)> {
    let mut down = down;
    let mut pending = Vec::new();
    let mut chunk = [0u8; 4096];
    let asked = Instant::now();
    let mut next_try = asked;
    down.set_read_timeout(Some(RETRY_PAUSE)).ok()?;
    loop {
        if inner.stopped.load(Ordering::SeqCst) {
            return None;
        }
        let request_len = first_frame_len(&pending, MAX_HANDSHAKE).ok()?;
        let now = Instant::now();
        match request_len {
            None if now.duration_since(asked) > REQUEST_WAIT => return None,
            Some(len) if now >= next_try && !inner.held_off.load(Ordering::SeqCst) => {
                if let Some((up, response)) = pending.get(..len).and_then(|r| inner.handshake(r)) {
                    let _ = up.set_nodelay(true);
                    down.set_read_timeout(None).ok()?;
                    pending.drain(..len);
                    return Some((up, response, pending));
                }
                next_try = Instant::now() + RETRY_PAUSE;
            }
            _ => {}
        }
        match down.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                pending.extend_from_slice(chunk.get(..n)?);
                if pending.len() > MAX_PENDING {
                    return None;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
    }
}

/// Passes the crate's frames to the server, each whole under the writer
/// lock, until either side closes; then closes the link.
fn client_to_server(down: impl Read, link: &Link) {
    let mut down = BufReader::new(down);
    while let Some(frame) = read_frame(&mut down, MAX_FRAME) {
        if link.send(&frame).is_err() {
            log::debug!(
                "relay: link {} cut: a write to the server failed",
                link.number
            );
            break;
        }
    }
    link.close();
}

/// Passes the server's replies to the crate and takes ours out, noting the
/// highest zxid (presented on the next connection).
fn server_to_client(up: TcpStream, mut down: TcpStream, inner: &Inner, link: &Link) {
    let mut up = BufReader::new(up);
    while let Some(frame) = read_frame(&mut up, MAX_FRAME) {
        let body = frame.get(4..).unwrap_or_default();
        let Some(xid) = be_i32(body, 0) else {
            log::warn!("relay: link {} cut: a reply without a header", link.number);
            break;
        };
        if let Some(zxid) = be_i64(body, 4).filter(|&z| z > 0) {
            inner.last_zxid.fetch_max(zxid, Ordering::SeqCst);
        }
        if xid <= FIRST_XID {
            if link.answer(&inner.chroot, xid, body).is_err() {
                log::warn!("relay: link {} cut: a malformed reply to us", link.number);
                break;
            }
        } else if xid == NOTIFICATION_XID {
            match parse_notification(&inner.chroot, body) {
                Some((path, kind)) => (inner.on_watch)(path, kind),
                None => log::debug!("relay: a notification without a change of a node"),
            }
        } else if down.write_all(&frame).is_err() {
            break;
        }
    }
    link.close();
}

fn shut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests;
