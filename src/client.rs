//! The only module that touches the `zookeeper` crate.
//!
//! The crate's calls wait for their reply without a timeout, its listeners
//! run on its I/O thread under a lock, and a panicking watcher kills its event
//! thread (../shared/NOTES.md). So here:
//! - every call runs on a thread of ours that owns the crate client, and the
//!   caller waits for the answer only until a deadline; a call that misses it
//!   marks the client broken, and the caller replaces the client;
//! - the crate's listener and watchers only set a flag and hand a [`Notice`]
//!   to the election thread: they never block and never panic;
//! - dropping a [`Client`] never blocks: its thread closes the crate client
//!   (which may hang for as long as the network does) on its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use zookeeper::{
    Acl, CreateMode, WatchedEvent, WatchedEventType, ZkError, ZkResult, ZkState, ZooKeeper,
};

/// Something the crate's threads report to the election thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The client of this generation lost its connection: its session may be
    /// gone, and its watches are.
    Disconnected(u64),
    /// A watch set by the client of this generation fired.
    Changed(u64),
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
    /// The client is gone: connection lost, session ended, or a deadline
    /// missed. Only a new client helps.
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

/// What the client thread is asked to do.
enum Job {
    /// Run a call and send its answer on.
    Call(Box<dyn FnOnce(&ZooKeeper) + Send>),
    /// Close the session, then say so.
    Close(SyncSender<()>),
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

/// One crate client and the thread of ours that makes its calls. Clones
/// share the client; the crate client closes when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Client {
    jobs: Sender<Job>,
    broken: Arc<AtomicBool>,
    generation: u64,
    sink: NoticeSink,
    access: Arc<Access>,
}

impl Client {
    /// Starts a crate client for `connect` (hosts tried in the order given).
    /// Returns at once; the first call waits for the session.
    pub(crate) fn start(
        connect: &str,
        timeout: std::time::Duration,
        generation: u64,
        sink: NoticeSink,
        access: Arc<Access>,
        deadline: Instant,
    ) -> Result<Client, CallError> {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let broken = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::sync_channel(1);
        let (flag, listener_sink, watch_sink) = (broken.clone(), sink.clone(), sink.clone());
        let connect = connect.to_owned();
        thread::Builder::new()
            .name(format!("zk-master-calls-{generation}"))
            .spawn(move || {
                let default_watcher = move |e: WatchedEvent| {
                    if e.event_type != WatchedEventType::None {
                        watch_sink(Notice::Changed(generation));
                    }
                };
                let zk = match ZooKeeper::connect(&connect, timeout, default_watcher) {
                    Ok(zk) => zk,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let connected = AtomicBool::new(false);
                zk.add_listener(move |state| {
                    if ends_connection(state, &connected) {
                        flag.store(true, Ordering::SeqCst);
                        listener_sink(Notice::Disconnected(generation));
                    }
                });
                let _ = started_tx.send(Ok(()));
                for job in job_rx {
                    match job {
                        Job::Call(call) => call(&zk),
                        Job::Close(done) => {
                            drop(zk); // the crate's drop closes the session
                            let _ = done.send(());
                            return;
                        }
                    }
                }
                // Every clone is gone: the crate's drop closes the session, however long it takes.
            })
            .map_err(|e| CallError::Lost(format!("cannot start a thread: {e}")))?;
        match started_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => Ok(Client {
                jobs,
                broken,
                generation,
                sink,
                access,
            }),
            Ok(Err(e)) => Err(CallError::Refused(format!("connect: {e:?}"))),
            Err(_) => Err(CallError::Lost("the client thread ended".into())),
        }
    }

    /// False once the client lost its connection or missed a deadline.
    pub(crate) fn is_healthy(&self) -> bool {
        !self.broken.load(Ordering::SeqCst)
    }

    /// Runs `op` on the client thread and waits for it until `deadline`.
    fn call<T: Send + 'static>(
        &self,
        deadline: Instant,
        op: impl FnOnce(&ZooKeeper) -> ZkResult<T> + Send + 'static,
    ) -> Result<T, CallError> {
        if !self.is_healthy() {
            return Err(CallError::Lost("connection lost".into()));
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
                self.broken.store(true, Ordering::SeqCst);
                Err(CallError::Lost(format!("no reply within {wait:?}")))
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
            ZkError::ConnectionLoss | ZkError::SessionExpired | ZkError::SessionMoved => {
                self.broken.store(true, Ordering::SeqCst);
                CallError::Lost(format!("{e:?}"))
            }
            ZkError::NoAuth | ZkError::AuthFailed | ZkError::InvalidACL => {
                CallError::Denied(format!("{e:?}"))
            }
            other => CallError::Refused(format!("{other:?}")),
        }
    }

    /// Closes the session (which deletes its ephemeral nodes), waiting for it
    /// until `deadline` at most.
    pub(crate) fn close(&self, deadline: Instant) {
        let (done_tx, done) = mpsc::sync_channel(1);
        if self.jobs.send(Job::Close(done_tx)).is_ok() {
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
        let (path, acl) = (path.to_owned(), self.access.acl());
        let created = self.call(deadline, move |zk| {
            zk.create(&path, Vec::new(), acl, CreateMode::Persistent)
        });
        match created {
            Ok(_) | Err(CallError::NodeExists) => Ok(()),
            Err(e) => Err(e),
        }
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
}

/// Whether `state` means the connection was lost, given whether the client
/// was `connected` before (the first `Connecting` is not a loss).
#[allow(deprecated)] // the crate still reports its deprecated NotConnected state
fn ends_connection(state: ZkState, connected: &AtomicBool) -> bool {
    match state {
        ZkState::Connected | ZkState::ConnectedReadOnly => {
            connected.store(true, Ordering::SeqCst);
            false
        }
        ZkState::Connecting => connected.load(Ordering::SeqCst),
        ZkState::NotConnected | ZkState::Closed | ZkState::AuthFailed => true,
        ZkState::Associating => false,
    }
}
