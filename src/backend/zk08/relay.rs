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
//!   answers, and keeps its session if the ensemble still has it;
//! - it has no `sync`, and every reply it sees restarts its ping timer:
//!   [`Relay::request`] sends a `sync` or an `exists` of our own on the
//!   crate's connection, in the session's order, and takes its reply out of
//!   the stream before the crate could see it.
//!
//! After the handshake the relay reads whole frames both ways: the crate's
//! frames and ours go to the server whole, one at a time, under a writer
//! lock; replies whose xid is one of ours (below [`FIRST_XID`], a range the
//! crate never uses) go to their waiting callback, all others to the crate.

use std::collections::HashMap;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;

use crate::core::Stat;

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
/// Longest write to a server: a server that stops reading must not hang
/// whoever writes (the crate's frames, or a caller of [`Relay::request`]).
/// The link is cut instead.
const UPSTREAM_WRITE: Duration = Duration::from_secs(1);
/// Largest frame passed either way. ZooKeeper's own limit (jute.maxbuffer)
/// is 1 MiB by default; anything far beyond it is garbage, and cuts the link.
const MAX_FRAME: usize = 16 << 20;
/// The xid of our first request; ours count down from it. The crate counts
/// up from 1 and the server gives meaning to -1 (notification) and -2
/// (ping); the crate also uses -4 (auth) and -8 (set watches).
pub(crate) const FIRST_XID: i32 = -1001;
/// ZooKeeper opcodes.
const OP_EXISTS: i32 = 3;
const OP_SYNC: i32 = 9;
/// Reply header: xid, zxid, err.
const REPLY_HEADER: usize = 16;
/// A serialized Stat: 6 longs and 5 ints (see [`parse_stat`]).
const STAT_LEN: usize = 68;

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

/// A request the relay sends on the crate's connection itself. Paths are
/// the client's: the relay puts the chroot in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Injected {
    /// Completes once the server has caught up with the leader.
    Sync { path: String },
    /// The stat of `path`, without a watch.
    Exists { path: String },
}

/// How an injected request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum InjectedReply {
    /// The server answered on relay link `link`: a reply only ever comes
    /// back on the link its request left on. `err` is ZooKeeper's error code
    /// (0: ok); `stat` is set for an `Exists` answered ok.
    Answered {
        link: u64,
        err: i32,
        stat: Option<Stat>,
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
    /// Put in front of the paths of injected requests ("" for none).
    chroot: String,
    /// Index of the host to try first on the next connection.
    next: AtomicUsize,
    stopped: AtomicBool,
    /// Every live connection, to cut them and to send on them.
    links: Mutex<Vec<Arc<Link>>>,
    link_numbers: AtomicU64,
    /// The next xid of ours.
    xids: AtomicI32,
    on_handshake: HandshakeSink,
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
    exists: bool,
    done: Done,
}

impl Relay {
    /// Starts a relay to `hosts` (`host:port`), trying `first` first;
    /// `chroot` is the client's ("" for none, else like `/app`).
    pub(crate) fn start(
        hosts: Vec<String>,
        first: usize,
        chroot: &str,
        on_handshake: HandshakeSink,
    ) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            next: AtomicUsize::new(first % hosts.len().max(1)),
            hosts,
            chroot: chroot.trim_end_matches('/').to_owned(),
            stopped: AtomicBool::new(false),
            links: Mutex::new(Vec::new()),
            link_numbers: AtomicU64::new(0),
            xids: AtomicI32::new(FIRST_XID),
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

    /// Sends `op` on the newest connection whose session the server
    /// accepted, between two of the crate's frames, so the server sees it
    /// after everything the crate sent before and before everything it sends
    /// after. `done` gets the reply, which the crate never sees; or, at
    /// once, [`InjectedReply::Unanswered`] when no such connection is up, and
    /// when the connection breaks first. Blocks only for the writer lock and
    /// one socket write (at most [`UPSTREAM_WRITE`], then the link is cut).
    pub(crate) fn request(&self, op: Injected, done: Done) {
        let link = self
            .inner
            .links
            .lock()
            .iter()
            .filter(|l| l.ready.load(Ordering::SeqCst))
            .max_by_key(|l| l.number)
            .cloned();
        let Some(link) = link else {
            return done(InjectedReply::Unanswered {
                link: None,
                why: "not connected",
            });
        };
        let xid = self.inner.next_xid();
        let (exists, frame) = match &op {
            Injected::Sync { path } => (false, self.inner.frame(xid, OP_SYNC, path, None)),
            Injected::Exists { path } => {
                (true, self.inner.frame(xid, OP_EXISTS, path, Some(false)))
            }
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
            waiting.insert(xid, Waiting { exists, done });
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

    fn next_xid(&self) -> i32 {
        let previous = self
            .xids
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |x| {
                Some(if x <= i32::MIN + 1 { FIRST_XID } else { x - 1 })
            });
        previous.unwrap_or(FIRST_XID)
    }

    /// A whole request frame: length, xid, type, path (with the chroot),
    /// and the watch flag if any.
    fn frame(&self, xid: i32, op: i32, path: &str, watch: Option<bool>) -> Vec<u8> {
        let full = if self.chroot.is_empty() {
            path.to_owned()
        } else if path == "/" {
            self.chroot.clone()
        } else {
            format!("{}{path}", self.chroot)
        };
        let mut body = Vec::with_capacity(16 + full.len());
        body.extend_from_slice(&xid.to_be_bytes());
        body.extend_from_slice(&op.to_be_bytes());
        body.extend_from_slice(&(full.len() as i32).to_be_bytes());
        body.extend_from_slice(full.as_bytes());
        if let Some(watch) = watch {
            body.push(u8::from(watch));
        }
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
        frame.extend_from_slice(&body);
        frame
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
    fn answer(&self, xid: i32, body: &[u8]) -> Result<(), ()> {
        let header = parse_header(body).ok_or(())?;
        let Some(w) = self.waiting.lock().as_mut().and_then(|m| m.remove(&xid)) else {
            return Ok(()); // not waited for (any more): drop it
        };
        let stat = if w.exists && header.err == 0 {
            match body.get(REPLY_HEADER..).and_then(parse_stat) {
                Some(stat) => Some(stat),
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
            stat,
        });
        Ok(())
    }
}

struct ReplyHeader {
    err: i32,
}

fn be_i32(b: &[u8], at: usize) -> Option<i32> {
    b.get(at..at.checked_add(4)?)?
        .try_into()
        .ok()
        .map(i32::from_be_bytes)
}

fn be_i64(b: &[u8], at: usize) -> Option<i64> {
    b.get(at..at.checked_add(8)?)?
        .try_into()
        .ok()
        .map(i64::from_be_bytes)
}

fn parse_header(body: &[u8]) -> Option<ReplyHeader> {
    be_i64(body, 4)?;
    Some(ReplyHeader {
        err: be_i32(body, 12)?,
    })
}

/// Stat: czxid, mzxid, ctime, mtime (longs), version, cversion, aversion
/// (ints), ephemeralOwner (long), dataLength, numChildren (ints), pzxid (long).
fn parse_stat(record: &[u8]) -> Option<Stat> {
    if record.len() < STAT_LEN {
        return None;
    }
    Some(Stat {
        czxid: be_i64(record, 0)?,
        owner: be_i64(record, 44)?,
    })
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
    let _ = up.set_write_timeout(Some(UPSTREAM_WRITE));
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
    let link = Arc::new(Link {
        number,
        down: down_kept,
        up: up_kept,
        writer: Mutex::new(up_write),
        ready: AtomicBool::new(false),
        waiting: Mutex::new(Some(HashMap::new())),
    });
    {
        let mut links = inner.links.lock();
        if inner.stopped.load(Ordering::SeqCst) {
            return;
        }
        links.push(link.clone());
    }
    let replies_inner = inner.clone();
    let replies_link = link.clone();
    let replies = thread::Builder::new()
        .name("zk-master-relay-replies".into())
        .spawn(move || server_to_client(up_read, down_write, &replies_inner, &replies_link));
    if let Ok(replies) = replies {
        client_to_server(down_read, &link);
        if !replies.join().unwrap_or(false) {
            // The server took the connection but never answered the
            // handshake: try another one next time.
            inner.advance();
        }
    }
    link.close();
    shut(&down, &up);
    inner.links.lock().retain(|l| l.number != number);
}

/// Reads one frame (length and body); `None` at the end of the stream, on
/// an error, or for a length out of bounds.
fn read_frame(from: &mut impl Read, limit: usize) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    from.read_exact(&mut len).ok()?;
    let size = usize::try_from(i32::from_be_bytes(len))
        .ok()
        .filter(|&n| n <= limit)?;
    let mut frame = vec![0; 4 + size];
    frame.get_mut(..4)?.copy_from_slice(&len);
    from.read_exact(frame.get_mut(4..)?).ok()?;
    Some(frame)
}

/// Passes the crate's frames to the server, each whole under the writer
/// lock, until either side closes; then closes the link.
fn client_to_server(down: TcpStream, link: &Link) {
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

/// Passes the server's replies to the crate, reading the connect response
/// on the way, and takes ours out. The connect response is reported before
/// the crate sees it, so an expired session is known before the crate can
/// act on the new one it opens next. Returns whether a connect response came.
fn server_to_client(up: TcpStream, mut down: TcpStream, inner: &Inner, link: &Link) -> bool {
    let _ = up.set_read_timeout(Some(HANDSHAKE_WAIT));
    let mut up = BufReader::new(up);
    let Some(frame) = read_frame(&mut up, MAX_HANDSHAKE) else {
        link.close();
        return false;
    };
    let _ = up.get_ref().set_read_timeout(None);
    // ConnectResponse: protocolVersion, timeOut, sessionId, passwd, [readOnly].
    let body = frame.get(4..).unwrap_or_default();
    let handshake = be_i32(body, 4).zip(be_i64(body, 8));
    if let Some((timeout_ms, session_id)) = handshake {
        (inner.on_handshake)(Handshake {
            session_id,
            timeout_ms,
        });
    }
    if down.write_all(&frame).is_err() {
        link.close();
        return true;
    }
    if matches!(handshake, Some((t, s)) if t > 0 && s != 0) {
        link.ready.store(true, Ordering::SeqCst);
    }
    while let Some(frame) = read_frame(&mut up, MAX_FRAME) {
        let body = frame.get(4..).unwrap_or_default();
        let Some(xid) = be_i32(body, 0) else {
            log::warn!("relay: link {} cut: a reply without a header", link.number);
            break;
        };
        if xid <= FIRST_XID {
            if link.answer(xid, body).is_err() {
                log::warn!("relay: link {} cut: a malformed reply to us", link.number);
                break;
            }
        } else if down.write_all(&frame).is_err() {
            break;
        }
    }
    link.close();
    true
}

fn shut(a: &TcpStream, b: &TcpStream) {
    let _ = a.shutdown(Shutdown::Both);
    let _ = b.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{self, Receiver};
    use std::time::Instant;

    use super::*;

    const SESSION: i64 = 0x1234;
    const CZXID: i64 = 7;
    const SOON: Duration = Duration::from_secs(2);

    /// A request as the fake server read it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Seen {
        xid: i32,
        op: i32,
        path: String,
    }

    fn ustring(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(&(s.len() as i32).to_be_bytes());
        out.extend_from_slice(s);
    }

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    fn reply_header(xid: i32, err: i32) -> Vec<u8> {
        let mut body = xid.to_be_bytes().to_vec();
        body.extend_from_slice(&5i64.to_be_bytes());
        body.extend_from_slice(&err.to_be_bytes());
        body
    }

    /// The reply the fake server sends to the client's own request.
    fn own_reply(xid: i32, path: &str) -> Vec<u8> {
        let mut body = reply_header(xid, 0);
        body.extend_from_slice(format!("reply to {path}").as_bytes());
        framed(&body)
    }

    /// A fake ZooKeeper server: answers the connect request, then the
    /// client's requests with `own_reply`, and ours as a server would,
    /// except for paths ending in `/silent` (no answer), `/drop` (hangs up),
    /// `/huge`, `/negative`, `/short`, `/badstat` (malformed replies),
    /// `/missing` (NoNode). Every request read is reported, in order.
    fn fake_server() -> (String, Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let (seen_tx, seen) = mpsc::channel();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let seen_tx = seen_tx.clone();
                thread::spawn(move || serve(stream, &seen_tx));
            }
        });
        (addr, seen)
    }

    fn serve(mut stream: TcpStream, seen: &mpsc::Sender<Seen>) {
        if read_frame(&mut stream, MAX_FRAME).is_none() {
            return;
        }
        let mut response = 0i32.to_be_bytes().to_vec();
        response.extend_from_slice(&4000i32.to_be_bytes());
        response.extend_from_slice(&SESSION.to_be_bytes());
        ustring(&mut response, &[9; 16]);
        response.push(0);
        if stream.write_all(&framed(&response)).is_err() {
            return;
        }
        while let Some(frame) = read_frame(&mut stream, MAX_FRAME) {
            let body = frame.get(4..).unwrap_or_default();
            let xid = be_i32(body, 0).expect("xid");
            let op = be_i32(body, 4).expect("type");
            let path = be_i32(body, 8)
                .and_then(|n| body.get(12..12 + usize::try_from(n).ok()?))
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .unwrap_or_default();
            let _ = seen.send(Seen {
                xid,
                op,
                path: path.clone(),
            });
            let reply = if xid > FIRST_XID {
                own_reply(xid, &path)
            } else if path.ends_with("/silent") {
                continue;
            } else if path.ends_with("/drop") {
                return;
            } else if path.ends_with("/huge") {
                i32::MAX.to_be_bytes().to_vec()
            } else if path.ends_with("/negative") {
                (-5i32).to_be_bytes().to_vec()
            } else if path.ends_with("/short") {
                framed(&xid.to_be_bytes()[..2])
            } else if path.ends_with("/badstat") {
                let mut body = reply_header(xid, 0);
                body.extend_from_slice(&[0; 10]);
                framed(&body)
            } else if path.ends_with("/missing") {
                framed(&reply_header(xid, -101))
            } else if op == OP_SYNC {
                let mut body = reply_header(xid, 0);
                ustring(&mut body, path.as_bytes());
                framed(&body)
            } else {
                let mut body = reply_header(xid, 0);
                for long in [CZXID, 8, 9, 10] {
                    body.extend_from_slice(&long.to_be_bytes());
                }
                body.extend_from_slice(&[0; 12]);
                body.extend_from_slice(&SESSION.to_be_bytes());
                body.extend_from_slice(&[0; 16]);
                framed(&body)
            };
            if stream.write_all(&reply).is_err() {
                return;
            }
        }
    }

    fn relay(server: &str, chroot: &str) -> Relay {
        Relay::start(vec![server.to_owned()], 0, chroot, Box::new(|_| {})).expect("relay")
    }

    /// Connects as the crate would, and waits for the relay to take
    /// requests of ours on that connection.
    fn client(relay: &Relay) -> TcpStream {
        let mut stream = TcpStream::connect(relay.addr()).expect("connect");
        stream.set_read_timeout(Some(SOON)).expect("timeout");
        let mut request = Vec::new();
        for int in [0i32, 0, 0, 4000] {
            request.extend_from_slice(&int.to_be_bytes());
        }
        request.extend_from_slice(&0i64.to_be_bytes());
        ustring(&mut request, &[0; 16]);
        stream.write_all(&framed(&request)).expect("write");
        let response = read_frame(&mut stream, MAX_FRAME).expect("connect response");
        assert_eq!(be_i64(&response, 12), Some(SESSION));
        let deadline = Instant::now() + SOON;
        while !relay
            .inner
            .links
            .lock()
            .iter()
            .any(|l| l.ready.load(Ordering::SeqCst))
        {
            assert!(Instant::now() < deadline, "the link never got ready");
            thread::sleep(Duration::from_millis(1));
        }
        stream
    }

    fn own_request(xid: i32, path: &str) -> Vec<u8> {
        let mut body = xid.to_be_bytes().to_vec();
        body.extend_from_slice(&4i32.to_be_bytes()); // getData
        ustring(&mut body, path.as_bytes());
        body.push(0);
        framed(&body)
    }

    fn send(relay: &Relay, op: Injected) -> Receiver<InjectedReply> {
        let (tx, rx) = mpsc::channel();
        relay.request(
            op,
            Box::new(move |reply| {
                let _ = tx.send(reply);
            }),
        );
        rx
    }

    fn exists(path: &str) -> Injected {
        Injected::Exists { path: path.into() }
    }

    fn sync(path: &str) -> Injected {
        Injected::Sync { path: path.into() }
    }

    fn seen(seen: &Receiver<Seen>) -> Seen {
        seen.recv_timeout(SOON).expect("a request at the server")
    }

    /// The client sees no more bytes, and (if `closed`) the end of stream.
    fn assert_quiet(client: &mut TcpStream, closed: bool) {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut byte = [0u8; 1];
        match client.read(&mut byte) {
            Ok(0) => assert!(closed, "the link closed"),
            Ok(_) => panic!("unexpected bytes reached the client"),
            Err(e) => assert!(
                !closed
                    && matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ),
                "{e}"
            ),
        }
    }

    #[test]
    fn injected_replies_never_reach_the_client_and_order_is_kept() {
        let (server, seen_rx) = fake_server();
        let relay = relay(&server, "");
        let mut client = client(&relay);
        client.write_all(&own_request(1, "/a")).expect("write");
        assert_eq!(seen(&seen_rx).xid, 1);
        let synced = send(&relay, sync("/m"));
        let renewed = send(&relay, exists("/m"));
        let missing = send(&relay, exists("/missing"));
        client.write_all(&own_request(2, "/b")).expect("write");
        // A ping: xid -2, type 11, no record.
        let ping = framed(&[(-2i32).to_be_bytes(), 11i32.to_be_bytes()].concat());
        client.write_all(&ping).expect("write");
        let order: Vec<(i32, i32)> = (0..5)
            .map(|_| seen(&seen_rx))
            .map(|s| (s.xid, s.op))
            .collect();
        assert_eq!(
            order,
            [
                (-1001, OP_SYNC),
                (-1002, OP_EXISTS),
                (-1003, OP_EXISTS),
                (2, 4),
                (-2, 11)
            ]
        );
        assert_eq!(read_frame(&mut client, MAX_FRAME), Some(own_reply(1, "/a")));
        assert_eq!(read_frame(&mut client, MAX_FRAME), Some(own_reply(2, "/b")));
        assert_eq!(read_frame(&mut client, MAX_FRAME), Some(own_reply(-2, "")));
        assert_quiet(&mut client, false);
        let answered = |stat| InjectedReply::Answered {
            link: 0,
            err: 0,
            stat,
        };
        assert_eq!(synced.recv_timeout(SOON), Ok(answered(None)));
        let stat = Stat {
            owner: SESSION,
            czxid: CZXID,
        };
        assert_eq!(renewed.recv_timeout(SOON), Ok(answered(Some(stat))));
        assert_eq!(
            missing.recv_timeout(SOON),
            Ok(InjectedReply::Answered {
                link: 0,
                err: -101,
                stat: None
            })
        );
    }

    #[test]
    fn a_request_goes_out_between_whole_frames() {
        let (server, seen_rx) = fake_server();
        let relay = relay(&server, "");
        let mut client = client(&relay);
        let frame = own_request(1, "/a/long/enough/path");
        let (first, rest) = frame.split_at(9);
        client.write_all(first).expect("write");
        thread::sleep(Duration::from_millis(50));
        let renewed = send(&relay, exists("/m"));
        client.write_all(rest).expect("write");
        assert_eq!(
            seen(&seen_rx),
            Seen {
                xid: -1001,
                op: OP_EXISTS,
                path: "/m".into()
            }
        );
        assert_eq!(
            seen(&seen_rx),
            Seen {
                xid: 1,
                op: 4,
                path: "/a/long/enough/path".into()
            }
        );
        assert!(matches!(
            renewed.recv_timeout(SOON),
            Ok(InjectedReply::Answered { err: 0, .. })
        ));
        assert_eq!(
            read_frame(&mut client, MAX_FRAME),
            Some(own_reply(1, "/a/long/enough/path"))
        );
        assert_quiet(&mut client, false);
    }

    #[test]
    fn a_request_without_a_link_fails_at_once() {
        let (server, _seen) = fake_server();
        let relay = relay(&server, "");
        let reply = send(&relay, exists("/m"));
        assert_eq!(
            reply.try_recv(),
            Ok(InjectedReply::Unanswered {
                link: None,
                why: "not connected"
            })
        );
    }

    #[test]
    fn a_cut_fails_waiting_requests_at_once() {
        let (server, seen_rx) = fake_server();
        let relay = relay(&server, "");
        let mut client = client(&relay);
        let waiting = send(&relay, sync("/silent"));
        seen(&seen_rx);
        let start = Instant::now();
        relay.cut();
        assert!(matches!(
            waiting.recv_timeout(SOON),
            Ok(InjectedReply::Unanswered { link: Some(0), .. })
        ));
        assert!(start.elapsed() < Duration::from_millis(200));
        assert_quiet(&mut client, true);
        let reply = send(&relay, exists("/m"));
        assert!(matches!(
            reply.try_recv(),
            Ok(InjectedReply::Unanswered { link: None, .. })
        ));
    }

    #[test]
    fn a_server_hanging_up_fails_waiting_requests() {
        let (server, _seen) = fake_server();
        let relay = relay(&server, "");
        let mut client = client(&relay);
        let waiting = send(&relay, exists("/silent"));
        let dropped = send(&relay, exists("/drop"));
        for reply in [waiting, dropped] {
            assert!(matches!(
                reply.recv_timeout(SOON),
                Ok(InjectedReply::Unanswered { link: Some(0), .. })
            ));
        }
        assert_quiet(&mut client, true);
    }

    #[test]
    fn a_malformed_reply_cuts_the_link() {
        let (server, _seen) = fake_server();
        let relay = relay(&server, "");
        for path in ["/huge", "/negative", "/short", "/badstat"] {
            let mut client = client(&relay);
            let reply = send(&relay, exists(path));
            assert!(
                matches!(
                    reply.recv_timeout(SOON),
                    Ok(InjectedReply::Unanswered { .. })
                ),
                "{path}"
            );
            assert_quiet(&mut client, true);
        }
        // The relay still serves the next connection.
        let _client = client(&relay);
        assert!(matches!(
            send(&relay, sync("/")).recv_timeout(SOON),
            Ok(InjectedReply::Answered { err: 0, .. })
        ));
    }

    #[test]
    fn the_chroot_goes_in_front_of_paths() {
        let (server, seen_rx) = fake_server();
        let relay = relay(&server, "/app");
        let _client = client(&relay);
        let replies = [
            send(&relay, exists("/x/y")),
            send(&relay, sync("/")),
            send(&relay, exists("/")),
        ];
        let paths: Vec<String> = (0..3).map(|_| seen(&seen_rx).path).collect();
        assert_eq!(paths, ["/app/x/y", "/app", "/app"]);
        for reply in replies {
            assert!(matches!(
                reply.recv_timeout(SOON),
                Ok(InjectedReply::Answered { err: 0, .. })
            ));
        }
        let plain = relay_paths("");
        assert_eq!(plain, ["/x/y", "/"]);
    }

    fn relay_paths(chroot: &str) -> Vec<String> {
        let (server, seen_rx) = fake_server();
        let relay = relay(&server, chroot);
        let _client = client(&relay);
        let _a = send(&relay, exists("/x/y"));
        let _b = send(&relay, sync("/"));
        (0..2).map(|_| seen(&seen_rx).path).collect()
    }
}
