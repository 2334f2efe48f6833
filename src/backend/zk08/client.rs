//! One session of the `zookeeper` crate: its relay, and the thread of ours
//! that makes its calls.
//!
//! - No request of ours goes through the crate, whose calls block one at a
//!   time (and which has no `sync`): the thread hands each to the relay,
//!   which writes it on the crate's connection and goes on at once, so
//!   requests leave in the order asked without waiting for each other. The
//!   relay's reply thread reports each answer to the driver as an
//!   [`Input::Reply`], and each watch notification as an [`Input::Watch`].
//!   A request left unanswered is freed by [`Client::cut`], which the core
//!   asks for when it misses its deadline.
//! - The crate keeps the connection (its pings, its reconnects) and sends
//!   the credentials. Its listener only updates atomics and hands an input
//!   on: it never blocks and never panics.
//! - The crate does not resend credentials after a reconnect: the calls
//!   thread does, before it reports the connection.
//! - When the crate gives up (it ends `Closed` once its last ping is older
//!   than the timeout, however short the outage), the library does not: the
//!   thread replaces it with a fresh crate client, whose connect request the
//!   relay rewrites to resume the same session. Only the server's refusal
//!   (the session expired) loses the session.
//! - Dropping the client never blocks: its thread closes the crate client
//!   if it is connected (which may take as long as the network does),
//!   retires the relay (it connects nowhere any more, so a crate client still
//!   reconnecting gives up quietly), waits for the crate's I/O thread to end,
//!   and only then drops the relay (a refused connection would make the
//!   crate spin).
//! - A crate client that is not connected is never dropped: its `Drop`
//!   would try to close the session, fail, and log an ERROR. It is
//!   forgotten once its I/O thread has ended (its own threads are gone by
//!   then; what stays is a few hundred bytes).

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use zookeeper::{Subscription, WatchedEvent, ZkError, ZkState, ZooKeeper};

use super::relay::{AclEntry, Handshake, InjectedReply, Relay};
use crate::backend::InputSink;
use crate::core::{Answer, Failure, Input, Op, RequestId, SessionId, WatchKind};

/// Who may do what with the nodes a client creates.
#[derive(Debug, Clone)]
pub(super) struct Access {
    /// Digest `user:password`, sent after every connect.
    pub(super) credentials: Option<String>,
    /// With credentials: whether everyone may read (and so see the masters).
    pub(super) readable_by_anyone: bool,
}

impl Access {
    /// The ACL of created nodes: open without credentials; with them, all
    /// rights to sessions authenticated as the same user, and reading to
    /// everyone if wanted.
    fn acl(&self) -> Vec<AclEntry> {
        const ALL: i32 = 31;
        const READ: i32 = 1;
        let anyone = |perms| AclEntry {
            perms,
            scheme: "world",
            id: "anyone",
        };
        if self.credentials.is_none() {
            return vec![anyone(ALL)];
        }
        let mut acl = vec![AclEntry {
            perms: ALL,
            scheme: "auth",
            id: "",
        }];
        if self.readable_by_anyone {
            acl.push(anyone(READ));
        }
        acl
    }
}

/// What the crate's threads and the relay tell us about one client.
#[derive(Default)]
struct Link {
    /// Counts lost connections: the number of the current connection.
    epoch: AtomicU64,
    connected: AtomicBool,
    /// The session is gone (expired, or no client can be made); reported once.
    dead: AtomicBool,
    /// The crate's I/O thread has ended (its state is `Closed`).
    closed: AtomicBool,
    /// The session of the first connection; 0 until it is known.
    session_id: AtomicI64,
    /// The timeout the server granted, in milliseconds.
    timeout_ms: AtomicU64,
}

/// What the client thread is asked to do, in order.
enum Job {
    /// Authenticate and report the connection (first or again).
    Connected,
    Call(SessionId, RequestId, Op),
    /// Remove the session's watches on a path.
    Unwatch(String),
    /// The crate client gave up: go on in the same session with a new one.
    Replace,
    /// Close the session, then say so.
    Close(SyncSender<()>),
}

/// Where a session's inputs go, tagged with the numbers the core knows it
/// by: one election's member and watcher share a ZooKeeper session.
#[derive(Clone)]
struct Reporter {
    sessions: Arc<Mutex<Vec<SessionId>>>,
    sink: InputSink,
    link: Arc<Link>,
}

impl Reporter {
    fn input(&self, input: Input) {
        (self.sink)(input);
    }

    /// Reports `input(session)` for every session of the core on this one,
    /// in the order they were attached.
    fn each(&self, input: impl Fn(SessionId) -> Input) {
        let sessions = self.sessions.lock().clone();
        for session in sessions {
            self.input(input(session));
        }
    }

    /// Reports the session lost, once.
    fn lost(&self, why: &str) {
        if !self.link.dead.swap(true, Ordering::SeqCst) {
            self.each(|session| Input::Lost {
                session,
                why: why.to_owned(),
            });
        }
    }

    fn watch(&self, path: String, kind: WatchKind) {
        self.each(|session| Input::Watch {
            session,
            path: path.clone(),
            kind,
        });
    }

    /// The connection, as `session` should be told of it, if connected.
    fn connected(&self, session: SessionId, epoch: u64) -> Input {
        let link = &self.link;
        Input::Connected {
            session,
            conn: epoch,
            server_session: link.session_id.load(Ordering::SeqCst),
            granted: Duration::from_millis(link.timeout_ms.load(Ordering::SeqCst)),
        }
    }
}

/// One crate client, its relay, and the thread of ours that makes its calls.
pub(super) struct Client {
    jobs: Sender<Job>,
    reporter: Reporter,
    relay: Arc<Relay>,
    closed: Option<mpsc::Receiver<()>>,
}

/// Where a session connects, and as whom.
pub(super) struct Target<'a> {
    pub(super) hosts: &'a [String],
    pub(super) first: usize,
    pub(super) chroot: &'a str,
    pub(super) access: Arc<Access>,
}

impl Client {
    /// Starts a client; its connection is reported to `sink` when made.
    pub(super) fn start(
        target: &Target<'_>,
        session: SessionId,
        timeout: Duration,
        sink: InputSink,
    ) -> std::io::Result<Client> {
        let link = Arc::new(Link::default());
        let reporter = Reporter {
            sessions: Arc::new(Mutex::new(vec![session])),
            sink,
            link,
        };
        let client_reporter = reporter.clone();
        let on_handshake = {
            let reporter = reporter.clone();
            Box::new(move |h: Handshake| {
                let link = &reporter.link;
                let known = link.session_id.load(Ordering::SeqCst);
                if h.session_id == 0 || h.timeout_ms <= 0 || (known != 0 && known != h.session_id) {
                    // Expired, and the crate is about to get a new session silently.
                    return reporter.lost("the session expired");
                }
                link.session_id.store(h.session_id, Ordering::SeqCst);
                link.timeout_ms.store(h.timeout_ms as u64, Ordering::SeqCst);
            })
        };
        let on_watch = {
            let reporter = reporter.clone();
            Box::new(move |path, kind| reporter.watch(path, kind))
        };
        let relay = Arc::new(Relay::start(
            target.hosts.to_vec(),
            target.first,
            target.chroot,
            target.access.acl(),
            on_handshake,
            on_watch,
        )?);
        let connect = format!("{}{}", relay.addr(), target.chroot);
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let thread_relay = relay.clone();
        let listener_jobs = jobs.clone();
        let access = target.access.clone();
        thread::Builder::new()
            .name(format!("zk-master-calls-{}", session.0))
            .spawn(move || {
                let calls = Calls {
                    reporter,
                    access,
                    jobs: listener_jobs,
                };
                calls.run(&connect, timeout, job_rx, thread_relay);
            })?;
        // The first connection: reported once the first call (the
        // credentials, or a probe) has gone through.
        let _ = jobs.send(Job::Connected);
        Ok(Client {
            jobs,
            reporter: client_reporter,
            relay,
            closed: None,
        })
    }

    /// Sends `op` for `session`, one of the core's sessions on this one.
    pub(super) fn send(&self, session: SessionId, request: RequestId, op: Op) {
        let _ = self.jobs.send(Job::Call(session, request, op));
    }

    /// Makes `session` another of the core's sessions on this one: it is
    /// told what the first is told from now on, and of the connection at
    /// once if there is one.
    pub(super) fn attach(&self, session: SessionId) {
        self.reporter.sessions.lock().push(session);
        let link = &self.reporter.link;
        let epoch = link.epoch.load(Ordering::SeqCst);
        if link.connected.load(Ordering::SeqCst) && !link.dead.load(Ordering::SeqCst) {
            self.reporter.input(self.reporter.connected(session, epoch));
        }
    }

    /// Removes the session's watches on `path`, after what was sent before.
    pub(super) fn unwatch(&self, path: String) {
        let _ = self.jobs.send(Job::Unwatch(path));
    }

    /// Whether `session` is one of the core's sessions on this one.
    pub(super) fn carries(&self, session: SessionId) -> bool {
        self.reporter.sessions.lock().contains(&session)
    }

    /// Tells `session` nothing more. True if no session of the core is left
    /// on this one.
    pub(super) fn detach(&self, session: SessionId) -> bool {
        let mut sessions = self.reporter.sessions.lock();
        sessions.retain(|s| *s != session);
        sessions.is_empty()
    }

    /// Tells no session of the core anything more: the ones it told so far.
    pub(super) fn detach_all(&self) -> Vec<SessionId> {
        std::mem::take(&mut *self.reporter.sessions.lock())
    }

    /// Drops the connection; the crate reconnects, through the next host.
    pub(super) fn cut(&self) {
        self.relay.cut();
    }

    /// Asks the thread to close the session (which deletes its ephemeral
    /// nodes), unless it is disconnected: the crate could not close it before
    /// it reconnects.
    pub(super) fn close(&mut self) {
        let (done_tx, done) = mpsc::sync_channel(1);
        if self.jobs.send(Job::Close(done_tx)).is_ok()
            && self.reporter.link.connected.load(Ordering::SeqCst)
        {
            self.closed = Some(done);
        }
    }

    /// True while an asked close has not been confirmed.
    pub(super) fn closing(&mut self) -> bool {
        match &self.closed {
            Some(done) => matches!(done.try_recv(), Err(mpsc::TryRecvError::Empty)),
            None => false,
        }
    }

    /// Waits for an asked close until `deadline` at most.
    pub(super) fn wait_closed(&mut self, deadline: Instant) {
        if let Some(done) = self.closed.take() {
            let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }
}

/// A crate client, and our listener on it.
type CrateClient = (ZooKeeper, Subscription);

/// Lets go of a crate client without its `Drop`, which would try to close
/// the session and log an ERROR when it cannot: our listener is removed (so
/// nothing of ours is kept), the rest is leaked. Call it only once the
/// client is `Closed` or the relay retired (then it ends on its own).
fn forget((zk, listening): CrateClient) {
    zk.remove_listener(listening);
    std::mem::forget(zk);
}

/// The client thread.
struct Calls {
    reporter: Reporter,
    access: Arc<Access>,
    /// For the crate's listener to ask for a reconnect's credentials.
    jobs: Sender<Job>,
}

impl Calls {
    fn run(self, connect: &str, timeout: Duration, jobs: mpsc::Receiver<Job>, relay: Arc<Relay>) {
        let Some(mut crate_client) = self.start_crate_client(connect, timeout) else {
            return self.reporter.lost("the connect string was refused");
        };
        let link = &self.reporter.link;
        let mut closing = None;
        for job in jobs {
            let (zk, _) = &crate_client;
            match job {
                Job::Connected => self.connected(zk),
                Job::Call(session, request, op) => self.send(&relay, session, request, op),
                Job::Unwatch(path) => relay.remove_watches(&path),
                Job::Replace if link.closed.load(Ordering::SeqCst) => {
                    if link.dead.load(Ordering::SeqCst) {
                        continue;
                    }
                    log::info!("the zookeeper client gave up: resuming the session with a new one");
                    let Some(fresh) = self.start_crate_client(connect, timeout) else {
                        self.reporter.lost("the connect string was refused");
                        continue;
                    };
                    forget(std::mem::replace(&mut crate_client, fresh));
                    link.closed.store(false, Ordering::SeqCst);
                    let _ = self.jobs.send(Job::Connected);
                }
                Job::Replace => {}
                Job::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
        }
        // A connected crate client closes the session as it drops; one that
        // is reconnecting would fail to, and log an ERROR: it is left to give
        // up against the retired relay, and forgotten.
        let kept = if link.connected.load(Ordering::SeqCst) && !link.closed.load(Ordering::SeqCst) {
            drop(crate_client);
            None
        } else {
            Some(crate_client)
        };
        if let Some(done) = closing {
            let _ = done.send(());
        }
        relay.retire();
        // The crate gives up at most a timeout after its last ping, at its
        // next connect timeout (2 s).
        let limit = Instant::now() + timeout * 2 + Duration::from_secs(3);
        while !link.closed.load(Ordering::SeqCst) && Instant::now() < limit {
            thread::sleep(Duration::from_millis(50));
        }
        if let Some(crate_client) = kept {
            forget(crate_client);
        }
        drop(relay);
    }

    /// Connects a crate client through the relay, and listens to its states.
    fn start_crate_client(&self, connect: &str, timeout: Duration) -> Option<CrateClient> {
        // Notifications never reach the crate: the relay takes them.
        let default_watcher = |_: WatchedEvent| {};
        // Out of file descriptors, the crate panics (an unwrap in its io
        // setup) instead of returning an error: contained, it is a failed
        // attempt like any other.
        let zk = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ZooKeeper::connect(connect, timeout, default_watcher)
        }))
        .ok()?
        .ok()?;
        let (listener_reporter, listener_jobs) = (self.reporter.clone(), self.jobs.clone());
        let listening =
            zk.add_listener(move |state| on_state(&listener_reporter, &listener_jobs, state));
        Some((zk, listening))
    }

    /// Sends the credentials (or, without any, a probe that waits for the
    /// connection), then reports the connection.
    fn connected(&self, zk: &ZooKeeper) {
        let link = &self.reporter.link;
        if link.connected.load(Ordering::SeqCst) {
            return; // reported already (asked twice)
        }
        let epoch = link.epoch.load(Ordering::SeqCst);
        let done = match &self.access.credentials {
            Some(credentials) => zk.add_auth("digest", credentials.clone().into_bytes()),
            None => zk.exists("/", false).map(|_| ()),
        };
        match done {
            Ok(()) if link.epoch.load(Ordering::SeqCst) == epoch => {
                link.connected.store(true, Ordering::SeqCst);
                if link.dead.load(Ordering::SeqCst) {
                    return;
                }
                self.reporter
                    .each(|session| self.reporter.connected(session, epoch));
            }
            // The connection dropped meanwhile: the listener asks again.
            Ok(()) => {}
            Err(ZkError::ConnectionLoss | ZkError::OperationTimeout)
                if !link.dead.load(Ordering::SeqCst) && !link.closed.load(Ordering::SeqCst) =>
            {
                if link.epoch.load(Ordering::SeqCst) == epoch
                    && !link.connected.load(Ordering::SeqCst)
                {
                    // Never connected yet: try again (the crate is still connecting).
                    thread::sleep(Duration::from_millis(20));
                    let _ = self.jobs.send(Job::Connected);
                }
            }
            Err(e) => self.reporter.lost(&format!("no session: {e:?}")),
        }
    }

    /// Sends a request through the relay, without waiting: the reply is
    /// reported from the relay's thread. It counts as `via` the connection
    /// only if the crate saw no disconnect in between (a reply always comes
    /// back on the relay link its request left on).
    fn send(&self, relay: &Relay, session: SessionId, request: RequestId, op: Op) {
        let link = &self.reporter.link;
        let epoch = link.epoch.load(Ordering::SeqCst);
        let was_connected = link.connected.load(Ordering::SeqCst);
        let exists = matches!(op, Op::Exists { .. });
        let reporter = self.reporter.clone();
        relay.request(
            op,
            Box::new(move |reply| {
                let link = &reporter.link;
                let answered = matches!(reply, InjectedReply::Answered { .. });
                let same = answered
                    && was_connected
                    && link.connected.load(Ordering::SeqCst)
                    && !link.dead.load(Ordering::SeqCst)
                    && link.epoch.load(Ordering::SeqCst) == epoch;
                reporter.input(Input::Reply {
                    session,
                    request,
                    via: same.then_some(epoch),
                    result: injected_result(exists, reply),
                });
            }),
        );
    }
}

/// The result of a request: a missing node is no failure for an `exists`.
fn injected_result(exists: bool, reply: InjectedReply) -> Result<Answer, Failure> {
    match reply {
        InjectedReply::Unanswered { why, .. } => Err(Failure::Interrupted(why.to_owned())),
        InjectedReply::Answered {
            err: 0,
            answer: Some(answer),
            ..
        } => Ok(answer),
        InjectedReply::Answered { err: NO_NODE, .. } if exists => Ok(Answer::Stat(None)),
        InjectedReply::Answered { err, .. } => Err(match err {
            NO_NODE => Failure::NoNode,
            NODE_EXISTS => Failure::NodeExists,
            NO_AUTH | AUTH_FAILED | INVALID_ACL => Failure::Denied(format!("error {err}")),
            CONNECTION_LOSS | OPERATION_TIMEOUT | SESSION_EXPIRED | SESSION_MOVED => {
                Failure::Interrupted(format!("error {err}"))
            }
            _ => Failure::Refused(format!("error {err}")),
        }),
    }
}

/// ZooKeeper's error codes, as the server sends them.
const CONNECTION_LOSS: i32 = -4;
const OPERATION_TIMEOUT: i32 = -7;
const NO_NODE: i32 = -101;
const NO_AUTH: i32 = -102;
const NODE_EXISTS: i32 = -110;
const SESSION_EXPIRED: i32 = -112;
const INVALID_ACL: i32 = -114;
const AUTH_FAILED: i32 = -115;
const SESSION_MOVED: i32 = -118;

/// Tracks the crate's state changes, on its I/O thread: atomics and channel
/// sends only.
#[allow(deprecated)] // the crate still reports its deprecated NotConnected state
fn on_state(reporter: &Reporter, jobs: &Sender<Job>, state: ZkState) {
    let link = &reporter.link;
    match state {
        ZkState::Connected | ZkState::ConnectedReadOnly => {
            let reconnected =
                link.epoch.load(Ordering::SeqCst) > 0 && !link.connected.load(Ordering::SeqCst);
            if reconnected && !link.dead.load(Ordering::SeqCst) {
                // Credentials first: the calls thread reports the connection.
                let _ = jobs.send(Job::Connected);
            }
        }
        ZkState::Connecting | ZkState::NotConnected => {
            if link.connected.swap(false, Ordering::SeqCst) {
                link.epoch.fetch_add(1, Ordering::SeqCst);
                reporter.each(|session| Input::Disconnected { session });
            }
        }
        ZkState::Closed => {
            link.closed.store(true, Ordering::SeqCst);
            link.epoch.fetch_add(1, Ordering::SeqCst);
            if link.connected.swap(false, Ordering::SeqCst) {
                reporter.each(|session| Input::Disconnected { session });
            }
            // The session may well live on: go on in it with a new client.
            let _ = jobs.send(Job::Replace);
        }
        ZkState::AuthFailed => {
            link.connected.store(false, Ordering::SeqCst);
            link.epoch.fetch_add(1, Ordering::SeqCst);
            reporter.lost("the server refused the credentials");
        }
        ZkState::Associating => {}
    }
}
