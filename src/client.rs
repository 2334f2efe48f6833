//! The only module that touches the `zookeeper` crate.
//!
//! The crate's calls wait for their reply without a timeout, its listeners
//! run on its I/O thread under a lock, a panicking watcher kills its event
//! thread, and it neither reports session expiry nor says which session it
//! has (../shared/NOTES.md). So here:
//! - the crate talks to the servers through a [`Relay`] of ours, which reads
//!   the session id and granted timeout of every connection, and can cut a
//!   connection to a server that stopped answering;
//! - every call runs on a thread of ours that owns the crate client, and the
//!   caller waits for the answer only until a deadline; a call that misses it
//!   cuts the connection, so the crate reconnects (elsewhere if it can);
//! - the crate's listener and watchers only update atomics and hand a
//!   [`Notice`] to the election thread: they never block and never panic;
//! - dropping a [`Client`] never blocks: its thread closes the crate client
//!   (which may take as long as the network does) on its own.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use zookeeper::{
    Acl, CreateMode, WatchedEvent, WatchedEventType, ZkError, ZkResult, ZkState, ZooKeeper,
};

use crate::relay::{Handshake, Relay};

/// Something a client reports to the election thread, tagged with the
/// client's generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The connection dropped; the session may still be alive.
    Disconnected(u64),
    /// Connected again in the same session. Watches are gone.
    Reconnected(u64),
    /// The session is gone (expired, closed, replaced by a new one) or the
    /// crate gave up: only a new client helps.
    Dead(u64),
    /// A watch on a group fired.
    Changed(u64),
    /// A watched node was deleted.
    Deleted(u64, String),
}

/// Where notices go: a function that must not block.
pub(crate) type NoticeSink = Arc<dyn Fn(Notice) + Send + Sync>;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The node does not exist.
    NoNode,
    /// The node exists already.
    NodeExists,
    /// The connection dropped, or the call missed its deadline (and the
    /// connection was cut): the session may survive.
    Interrupted(String),
    /// The client is dead: only a new one helps.
    Lost(String),
    /// The server refused the operation for lack of permission.
    Denied(String),
    /// The server refused the operation.
    Refused(String),
}

/// What a member node's stat tells us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeStat {
    /// The session that owns the node (0 for a persistent node).
    pub(crate) owner: i64,
    /// The transaction that created the node: grows with every creation.
    pub(crate) czxid: i64,
}

/// Who may do what with the nodes a client creates.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    /// Digest `user:password`, sent after every connect.
    pub(crate) credentials: Option<String>,
    /// With credentials: whether everyone may read (and so see the masters).
    pub(crate) readable_by_anyone: bool,
}

impl Access {
    /// The ACL of created nodes: open without credentials; with them, all
    /// rights to sessions authenticated as the same user, and reading to
    /// everyone if wanted.
    fn acl(&self) -> Vec<Acl> {
        if self.credentials.is_none() {
            return Acl::open_unsafe().clone();
        }
        let mut acl = Acl::creator_all().clone();
        if self.readable_by_anyone {
            acl.extend(Acl::read_unsafe().iter().cloned());
        }
        acl
    }
}

/// What the crate's threads and the relay tell us about one client.
#[derive(Default)]
struct Link {
    /// Counts lost connections: a reply renews a lease only if this did not
    /// change between the request and the reply.
    epoch: AtomicU64,
    connected: AtomicBool,
    dead: AtomicBool,
    /// The crate's I/O thread has ended (its state is `Closed`).
    closed: AtomicBool,
    /// The session of the first connection; 0 until it is known.
    session_id: AtomicI64,
    /// The timeout the server granted, in milliseconds.
    timeout_ms: AtomicU64,
}

/// What the client thread is asked to do.
enum Job {
    /// Run a call and send its answer on.
    Call(Box<dyn FnOnce(&ZooKeeper) + Send>),
    /// Close the session, then say so.
    Close(SyncSender<()>),
}

/// One crate client, its relay, and the thread of ours that makes its calls.
/// Clones share the client; it closes when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Client {
    jobs: Sender<Job>,
    link: Arc<Link>,
    relay: Arc<Relay>,
    generation: u64,
    sink: NoticeSink,
    access: Arc<Access>,
}

impl Client {
    /// Starts a client for `hosts` (`host:port`, tried from `first` on) with
    /// an optional chroot. Returns at once; the first call waits for the
    /// session.
    pub(crate) fn start(
        hosts: &[String],
        first: usize,
        chroot: &str,
        timeout: Duration,
        generation: u64,
        sink: NoticeSink,
        access: Arc<Access>,
    ) -> Result<Client, CallError> {
        let link = Arc::new(Link::default());
        let on_handshake = {
            let (link, sink) = (link.clone(), sink.clone());
            Box::new(move |h: Handshake| {
                let known = link.session_id.load(Ordering::SeqCst);
                if h.session_id == 0 || h.timeout_ms <= 0 || (known != 0 && known != h.session_id) {
                    // Expired, and the crate is about to get a new session silently.
                    if !link.dead.swap(true, Ordering::SeqCst) {
                        sink(Notice::Dead(generation));
                    }
                    return;
                }
                link.session_id.store(h.session_id, Ordering::SeqCst);
                link.timeout_ms.store(h.timeout_ms as u64, Ordering::SeqCst);
            })
        };
        let relay = Arc::new(
            Relay::start(hosts.to_vec(), first, on_handshake)
                .map_err(|e| CallError::Lost(format!("cannot start the relay: {e}")))?,
        );
        let connect = format!("{}{chroot}", relay.addr());
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (thread_link, thread_sink, thread_relay) = (link.clone(), sink.clone(), relay.clone());
        thread::Builder::new()
            .name(format!("zk-master-calls-{generation}"))
            .spawn(move || {
                let watch_sink = thread_sink.clone();
                let default_watcher = move |e: WatchedEvent| {
                    if e.event_type != WatchedEventType::None {
                        watch_sink(Notice::Changed(generation));
                    }
                };
                let Ok(zk) = ZooKeeper::connect(&connect, timeout, default_watcher) else {
                    thread_link.dead.store(true, Ordering::SeqCst);
                    return;
                };
                let listener_link = thread_link.clone();
                zk.add_listener(move |state| {
                    if let Some(notice) = listener_link.on_state(state, generation) {
                        thread_sink(notice);
                    }
                });
                let mut closing = None;
                for job in job_rx {
                    match job {
                        Job::Call(call) => call(&zk),
                        Job::Close(done) => {
                            closing = Some(done);
                            break;
                        }
                    }
                }
                // The crate's drop closes the session, or fails at once if the
                // crate is reconnecting; its I/O thread then goes on until it
                // gives up. The relay must outlive it: a refused connection
                // would make it spin.
                drop(zk);
                if let Some(done) = closing {
                    let _ = done.send(());
                }
                let limit = Instant::now() + timeout * 2 + Duration::from_secs(3);
                while !thread_link.closed.load(Ordering::SeqCst) && Instant::now() < limit {
                    thread::sleep(Duration::from_millis(50));
                }
                drop(thread_relay);
            })
            .map_err(|e| CallError::Lost(format!("cannot start a thread: {e}")))?;
        Ok(Client {
            jobs,
            link,
            relay,
            generation,
            sink,
            access,
        })
    }

    /// This client's generation, as in its notices.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// False once the session is gone or the crate gave up.
    pub(crate) fn is_alive(&self) -> bool {
        !self.link.dead.load(Ordering::SeqCst)
    }

    /// The number of connections lost so far.
    pub(crate) fn epoch(&self) -> u64 {
        self.link.epoch.load(Ordering::SeqCst)
    }

    /// The session id, once a server granted one.
    pub(crate) fn session_id(&self) -> Option<i64> {
        Some(self.link.session_id.load(Ordering::SeqCst)).filter(|&id| id != 0)
    }

    /// The session timeout the server granted, once known.
    pub(crate) fn granted_timeout(&self) -> Option<Duration> {
        Some(self.link.timeout_ms.load(Ordering::SeqCst))
            .filter(|&ms| ms != 0)
            .map(Duration::from_millis)
    }

    /// True when a reply received now, to a request sent in `epoch`, came on
    /// the same connection of session `session`.
    pub(crate) fn same_connection(&self, epoch: u64, session: i64) -> bool {
        self.is_alive()
            && self.link.connected.load(Ordering::SeqCst)
            && self.epoch() == epoch
            && self.session_id() == Some(session)
    }

    /// Runs `op` on the client thread and waits for it until `deadline`.
    fn call<T: Send + 'static>(
        &self,
        deadline: Instant,
        op: impl FnOnce(&ZooKeeper) -> ZkResult<T> + Send + 'static,
    ) -> Result<T, CallError> {
        if !self.is_alive() {
            return Err(CallError::Lost("the session is gone".into()));
        }
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let job = Job::Call(Box::new(move |zk| {
            let _ = reply_tx.send(op(zk));
        }));
        self.jobs
            .send(job)
            .map_err(|_| CallError::Lost("the client thread ended".into()))?;
        let wait = deadline.saturating_duration_since(Instant::now());
        match reply_rx.recv_timeout(wait) {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.classify(e)),
            Err(RecvTimeoutError::Timeout) => {
                // The server stopped answering: make the crate reconnect, which
                // also fails the stuck call and frees the client thread.
                self.relay.cut();
                Err(CallError::Interrupted(format!("no reply within {wait:?}")))
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(CallError::Lost("the client thread ended".into()))
            }
        }
    }

    fn classify(&self, e: ZkError) -> CallError {
        match e {
            ZkError::NoNode => CallError::NoNode,
            ZkError::NodeExists => CallError::NodeExists,
            ZkError::ConnectionLoss | ZkError::OperationTimeout if self.is_alive() => {
                CallError::Interrupted(format!("{e:?}"))
            }
            ZkError::ConnectionLoss | ZkError::SessionExpired | ZkError::SessionMoved => {
                CallError::Lost(format!("{e:?}"))
            }
            ZkError::NoAuth | ZkError::AuthFailed | ZkError::InvalidACL => {
                CallError::Denied(format!("{e:?}"))
            }
            other => CallError::Refused(format!("{other:?}")),
        }
    }

    /// Closes the session (which deletes its ephemeral nodes), waiting for it
    /// until `deadline` at most, and not at all while disconnected (the
    /// crate could not close it before it reconnects).
    pub(crate) fn close(&self, deadline: Instant) {
        let (done_tx, done) = mpsc::sync_channel(1);
        let connected = self.link.connected.load(Ordering::SeqCst);
        if self.jobs.send(Job::Close(done_tx)).is_ok() && connected {
            let _ = done.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    /// Sends the credentials, if any. Needed after every (re)connect: the crate
    /// does not resend them.
    pub(crate) fn authenticate(&self, deadline: Instant) -> Result<(), CallError> {
        let Some(credentials) = self.access.credentials.clone() else {
            return Ok(());
        };
        self.call(deadline, move |zk| {
            zk.add_auth("digest", credentials.into_bytes())
        })
    }

    /// Creates the persistent node `path`; an existing node is fine.
    pub(crate) fn ensure_persistent(&self, path: &str, deadline: Instant) -> Result<(), CallError> {
        self.ensure(path, CreateMode::Persistent, deadline)
    }

    /// Creates an ephemeral sequential node named `prefix_path` + sequence and
    /// returns its full path.
    pub(crate) fn create_member(
        &self,
        prefix_path: &str,
        data: Vec<u8>,
        deadline: Instant,
    ) -> Result<String, CallError> {
        let (path, acl) = (prefix_path.to_owned(), self.access.acl());
        self.call(deadline, move |zk| {
            zk.create(&path, data, acl, CreateMode::EphemeralSequential)
        })
    }

    /// Creates the ephemeral node `path` with no data; an existing node is fine.
    pub(crate) fn ensure_ephemeral(&self, path: &str, deadline: Instant) -> Result<(), CallError> {
        self.ensure(path, CreateMode::Ephemeral, deadline)
    }

    /// Creates `path` with no data in `mode`; an existing node is fine.
    fn ensure(&self, path: &str, mode: CreateMode, deadline: Instant) -> Result<(), CallError> {
        let (path, acl) = (path.to_owned(), self.access.acl());
        match self.call(deadline, move |zk| zk.create(&path, Vec::new(), acl, mode)) {
            Ok(_) | Err(CallError::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `path` whatever its version.
    pub(crate) fn delete(&self, path: &str, deadline: Instant) -> Result<(), CallError> {
        let path = path.to_owned();
        self.call(deadline, move |zk| zk.delete(&path, None))
    }

    /// The stat of `path`, or `None` if it does not exist. Sets no watch.
    pub(crate) fn stat(
        &self,
        path: &str,
        deadline: Instant,
    ) -> Result<Option<NodeStat>, CallError> {
        let path = path.to_owned();
        let stat = self.call(deadline, move |zk| zk.exists(&path, false))?;
        Ok(stat.map(|s| NodeStat {
            owner: s.ephemeral_owner,
            czxid: s.czxid,
        }))
    }

    /// The children of `path`, leaving a watch that reports
    /// [`Notice::Changed`] when they change or the node goes.
    pub(crate) fn children_watched(
        &self,
        path: &str,
        deadline: Instant,
    ) -> Result<Vec<String>, CallError> {
        let path = path.to_owned();
        let (sink, generation) = (self.sink.clone(), self.generation);
        self.call(deadline, move |zk| {
            zk.get_children_w(&path, move |_: WatchedEvent| {
                sink(Notice::Changed(generation))
            })
        })
    }

    /// The data of `path` and the session that owns it (0: persistent).
    pub(crate) fn data(&self, path: &str, deadline: Instant) -> Result<(Vec<u8>, i64), CallError> {
        let path = path.to_owned();
        self.call(deadline, move |zk| {
            zk.get_data(&path, false)
                .map(|(data, stat)| (data, stat.ephemeral_owner))
        })
    }

    /// The children of `path`, without a watch.
    pub(crate) fn children(&self, path: &str, deadline: Instant) -> Result<Vec<String>, CallError> {
        let path = path.to_owned();
        self.call(deadline, move |zk| zk.get_children(&path, false))
    }

    /// Leaves a watch that reports [`Notice::Deleted`] when `path` goes.
    /// Returns whether the node exists.
    pub(crate) fn watch_deletion(&self, path: &str, deadline: Instant) -> Result<bool, CallError> {
        let (watched, sink, generation) = (path.to_owned(), self.sink.clone(), self.generation);
        let path = path.to_owned();
        let stat = self.call(deadline, move |zk| {
            zk.exists_w(&path, move |e: WatchedEvent| {
                if e.event_type == WatchedEventType::NodeDeleted {
                    sink(Notice::Deleted(generation, watched.clone()));
                }
            })
        })?;
        Ok(stat.is_some())
    }
}

impl Link {
    /// Tracks the crate's state changes; returns what the election thread
    /// must hear of.
    #[allow(deprecated)] // the crate still reports its deprecated NotConnected state
    fn on_state(&self, state: ZkState, generation: u64) -> Option<Notice> {
        match state {
            ZkState::Connected | ZkState::ConnectedReadOnly => {
                let was = self.connected.swap(true, Ordering::SeqCst);
                let reconnected = !was && self.epoch.load(Ordering::SeqCst) > 0;
                (reconnected && !self.dead.load(Ordering::SeqCst))
                    .then_some(Notice::Reconnected(generation))
            }
            ZkState::Connecting | ZkState::NotConnected => {
                if self.connected.swap(false, Ordering::SeqCst) {
                    self.epoch.fetch_add(1, Ordering::SeqCst);
                    return Some(Notice::Disconnected(generation));
                }
                None
            }
            ZkState::Closed | ZkState::AuthFailed => {
                if state == ZkState::Closed {
                    self.closed.store(true, Ordering::SeqCst);
                }
                self.connected.store(false, Ordering::SeqCst);
                self.epoch.fetch_add(1, Ordering::SeqCst);
                (!self.dead.swap(true, Ordering::SeqCst)).then_some(Notice::Dead(generation))
            }
            ZkState::Associating => None,
        }
    }
}
