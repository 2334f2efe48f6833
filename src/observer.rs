//! Following a group without joining it.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::callbacks::{self, CallbackId, Dispatch, Subscription};
use crate::config::Config;
use crate::core::{Settings, View};
use crate::driver::{self, Message};
use crate::error::Result;
use crate::member::Member;
use crate::role::{Connection, RoleChange};
use crate::state::Shared;

/// Follows an election group without taking part: the members and masters
/// with their data, kept up to date by a thread of the library, with a
/// callback and a receiver on every change. For dashboards, and for the
/// processes that only need to find the master (as with Curator's
/// `PathChildrenCache` or kazoo's `ChildrenWatch`, but with the masters
/// computed as the members compute them).
///
/// It creates nothing in ZooKeeper, not even the group: it reads and watches
/// the group and its claims in a session of its own, which it renews and
/// opens again after a loss (reading the group again, since watches do not
/// survive), under the same deadlines as an [`Election`](crate::Election).
/// The masters it tells are the first N members in election order (N from
/// [`Config::masters`]), except while a claim names a member node that is
/// gone: then the members wait for its owner to step down, and the observer
/// keeps only the masters it had already told.
///
/// Of the [`Config`], it uses the connect string, group, masters, timeouts
/// and credentials; the prefix, data and herd-free mode are for members.
///
/// ```no_run
/// use std::time::Duration;
/// use zk_master::{Config, Observer};
///
/// let observer = Observer::watch(Config::new("127.0.0.1:2181").group("/Roles/workers"))?;
/// if let Some(master) = observer.wait_for_master(Duration::from_secs(10)) {
///     println!("send work to {}", String::from_utf8_lossy(master.data()));
/// }
/// # Ok::<(), zk_master::Error>(())
/// ```
pub struct Observer {
    shared: Arc<Shared>,
    inputs: Sender<Message>,
    dispatch: Sender<Dispatch>,
    thread: Mutex<Option<JoinHandle<()>>>,
    callback_thread: Mutex<Option<JoinHandle<()>>>,
}

/// The group as an [`Observer`] last read it.
///
/// ```no_run
/// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
/// let group = observer.snapshot();
/// println!("{} members, masters {:?}, {}", group.members.len(), group.masters, group.connection);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Every member in election order, with its data, session and creation time.
    pub members: Vec<Member>,
    /// The masters, in election order: the first of `members`.
    pub masters: Vec<Member>,
    /// The claims' node names (`<czxid in hex>-<member node name>`), sorted:
    /// each member holds one while it has its node; one whose member node is
    /// gone holds promotions back until its owner steps down.
    pub claims: Vec<String>,
    /// The state of the observer's link to ZooKeeper: while not
    /// `Connected`, what it shows may be out of date.
    pub connection: Connection,
    /// When `connection` began.
    pub connection_since: Instant,
}

impl Observer {
    /// Connects and reads the group: when it returns, [`members`](Self::members)
    /// and [`masters`](Self::masters) show the group as it was (empty if the
    /// group does not exist yet; it is then watched for its creation).
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`]: a field of `config` is unusable; nothing was sent.
    /// - [`Error::Unreachable`]: the group could not be read within the connect timeout.
    /// - [`Error::AccessDenied`]: the group's ACL does not let these credentials list it;
    ///   reported at once, without retrying.
    /// - [`Error::Spawn`]: the operating system refused to start one of the library's threads.
    ///
    /// # Example
    /// ```no_run
    /// use zk_master::{Config, Observer};
    ///
    /// let observer = Observer::watch(Config::new("127.0.0.1:2181").masters(2))?;
    /// for m in observer.members() {
    ///     println!("{} {:?}", m.name(), m.data());
    /// }
    /// # Ok::<(), zk_master::Error>(())
    /// ```
    pub fn watch(config: Config) -> Result<Observer> {
        let (handles, joined) = driver::start(&config, Settings::observer(&config), "observer")?;
        let observer = Observer {
            shared: handles.shared,
            inputs: handles.inputs,
            dispatch: handles.dispatch,
            thread: Mutex::new(Some(handles.thread)),
            callback_thread: Mutex::new(Some(handles.callback_thread)),
        };
        driver::started(observer, &joined, "watch", "observer")
    }

    /// The group as last read: members, masters, claims and connection, all
    /// from the same read.
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let group = observer.snapshot();
    /// assert!(group.masters.len() <= group.members.len());
    /// ```
    pub fn snapshot(&self) -> Snapshot {
        snapshot_of(&self.shared.status.lock())
    }

    /// Every member, in election order, with its data.
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// println!("{} members", observer.members().len());
    /// ```
    pub fn members(&self) -> Vec<Member> {
        self.shared.status.lock().members.clone()
    }

    /// The masters, in election order, with their data (see [`Observer`] for
    /// how they are computed).
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// for master in observer.masters() {
    ///     println!("master {} at {}", master.name(), String::from_utf8_lossy(master.data()));
    /// }
    /// ```
    pub fn masters(&self) -> Vec<Member> {
        self.shared.status.lock().masters.clone()
    }

    /// The state of the observer's link to ZooKeeper, and when it began.
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let (connection, since) = observer.connection();
    /// println!("{connection} for {:?}", since.elapsed());
    /// ```
    pub fn connection(&self) -> (Connection, Instant) {
        let status = self.shared.status.lock();
        (status.connection, status.connection_since)
    }

    /// Waits until the group has a master, or `timeout` has passed, or the
    /// observer is closed; returns the first master, if any. A timeout too
    /// long to add to the clock waits without limit.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// match observer.wait_for_master(Duration::from_secs(5)) {
    ///     Some(master) => println!("master is {}", master.name()),
    ///     None => println!("no master yet"),
    /// }
    /// ```
    pub fn wait_for_master(&self, timeout: Duration) -> Option<Member> {
        let deadline = Instant::now().checked_add(timeout);
        let mut status = self.shared.status.lock();
        loop {
            if let Some(master) = status.masters.first() {
                return Some(master.clone());
            }
            if status.resigned {
                return None;
            }
            match deadline {
                Some(deadline) => {
                    if self
                        .shared
                        .changed
                        .wait_until(&mut status, deadline)
                        .timed_out()
                    {
                        return status.masters.first().cloned();
                    }
                }
                None => self.shared.changed.wait(&mut status),
            }
        }
    }

    /// Calls `callback` on every change of the members, the masters or the
    /// connection from now on (first with the group as it is now). The
    /// [`RoleChange`] it gets has the members, masters, connection and time;
    /// its roles are always [`Role::Offline`](crate::Role::Offline) and its
    /// member `None`, since an observer is not a member. Callbacks run as
    /// those of [`Election::on_change`](crate::Election::on_change) do: on one
    /// library thread, in order, never while the library holds a lock.
    /// Returns the id that [`remove_callback`](Self::remove_callback) takes.
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// observer.on_change(|change| {
    ///     let names: Vec<&str> = change.masters.iter().map(|m| m.name()).collect();
    ///     println!("masters {names:?} of {} members", change.members.len());
    /// });
    /// ```
    pub fn on_change<F>(&self, callback: F) -> CallbackId
    where
        F: FnMut(&RoleChange) + Send + 'static,
    {
        callbacks::register(&self.dispatch, Box::new(callback))
    }

    /// Removes a callback registered with [`on_change`](Self::on_change); it
    /// runs for no change after this call. Does not wait; an unknown id does
    /// nothing.
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let id = observer.on_change(|change| println!("{} members", change.members.len()));
    /// observer.remove_callback(id);
    /// ```
    pub fn remove_callback(&self, id: CallbackId) {
        callbacks::unregister(&self.dispatch, id);
    }

    /// The changes from now on (first the group as it is now), as a channel:
    /// the same changes as the [callbacks](Self::on_change), queued without
    /// limit. It disconnects once the observer is closed; dropping it
    /// unsubscribes.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let changes = observer.subscribe();
    /// while let Ok(change) = changes.recv_timeout(Duration::from_secs(60)) {
    ///     println!("{} masters", change.masters.len());
    /// }
    /// ```
    #[must_use = "dropping a Subscription unsubscribes at once"]
    pub fn subscribe(&self) -> Subscription {
        callbacks::subscribe(&self.dispatch)
    }

    /// Stops following the group and closes the session. Callbacks are
    /// dropped after the last change; subscriptions disconnect once it is
    /// read. Calling it again does nothing; dropping the observer calls it.
    ///
    /// ```no_run
    /// # let observer = zk_master::Observer::watch(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// observer.close();
    /// assert!(observer.members().is_empty());
    /// ```
    pub fn close(&self) {
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        let (reply, done) = mpsc::sync_channel(1);
        if self.inputs.send(Message::Resign(reply)).is_ok() {
            let _ = done.recv();
        }
        let _ = thread.join();
        let _ = self.dispatch.send(Dispatch::Close);
    }
}

fn snapshot_of(view: &View) -> Snapshot {
    Snapshot {
        members: view.members.clone(),
        masters: view.masters.clone(),
        claims: view.claims.clone(),
        connection: view.connection,
        connection_since: view.connection_since,
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.close();
        let _ = self.dispatch.send(Dispatch::Close);
        driver::join_callbacks(&self.callback_thread);
    }
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.shared.status.lock();
        f.debug_struct("Observer")
            .field("members", &status.members.len())
            .field("masters", &status.masters)
            .finish()
    }
}
