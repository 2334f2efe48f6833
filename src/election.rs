//! The handle a program holds while it takes part in an election.

use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::callbacks::{self, CallbackId, Dispatch, Subscription};
use crate::config::Config;
use crate::core::Settings;
use crate::driver::{self, Message};
use crate::error::{Error, Result};
use crate::member::Member;
use crate::metrics::Metrics;
use crate::role::{Connection, Role, RoleChange};
use crate::state::Shared;

/// Membership of one process in an election group.
///
/// [`Election::join`] registers the member; from then on a thread of the
/// library keeps the session, watches the group and updates the role. Every
/// method takes `&self` and may be called from any thread, including from a
/// role-change callback. Dropping the handle resigns, then waits for a
/// callback that is running to return (unless the drop happens inside one),
/// so that no thread of the election outlives it.
///
/// ```no_run
/// use zk_master::{Config, Election};
///
/// let election = Election::join(Config::new("127.0.0.1:2181"))?;
/// loop {
///     if election.is_master() {
///         // do the master's work
///     }
///     # break;
/// }
/// # Ok::<(), zk_master::Error>(())
/// ```
pub struct Election {
    shared: Arc<Shared>,
    inputs: Sender<Message>,
    dispatch: Sender<Dispatch>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Joined on drop, so that no thread of the election outlives its handle.
    callback_thread: Mutex<Option<JoinHandle<()>>>,
}

impl Election {
    /// Connects, creates the group path if missing, registers this member and
    /// learns its first role: when it returns, [`role`](Self::role) is
    /// `Master` (with its first lease) or `Slave`. Gives up with [`Error::Unreachable`] once the
    /// connect timeout has passed without a server answering; a bad
    /// configuration gives [`Error::InvalidConfig`] before anything is sent.
    ///
    /// # Errors
    /// - [`Error::InvalidConfig`]: a field of `config` is unusable; nothing was sent.
    /// - [`Error::Unreachable`]: no server completed a session handshake within the connect
    ///   timeout (the library retries until then).
    /// - [`Error::AccessDenied`]: the group's ACL, or a parent's, does not admit these
    ///   credentials; reported at once, without retrying.
    /// - [`Error::Server`]: a server refused or failed an operation (such as creating the group
    ///   path) for another reason.
    /// - [`Error::Spawn`]: the operating system refused to start one of the library's threads.
    ///
    /// # Example
    /// ```no_run
    /// use std::time::Duration;
    /// use zk_master::{Config, Election};
    ///
    /// let config = Config::new("127.0.0.1:2181").masters(2).connect_timeout(Duration::from_secs(3));
    /// let election = Election::join(config)?;
    /// println!("joined as {}", election.member_name().unwrap_or_default());
    /// # Ok::<(), zk_master::Error>(())
    /// ```
    pub fn join(config: Config) -> Result<Election> {
        let (handles, joined) = driver::start(&config, Settings::new(&config), "election")?;
        let election = Election {
            shared: handles.shared,
            inputs: handles.inputs,
            dispatch: handles.dispatch,
            thread: Mutex::new(Some(handles.thread)),
            callback_thread: Mutex::new(Some(handles.callback_thread)),
        };
        driver::started(election, &joined, "join", "election")
    }

    /// True while this member is master and its lease holds. Never blocks: it
    /// reads an atomic and the monotonic clock, so a process that wakes from a
    /// long pause reads `false` before any network event is handled.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// if election.is_master() {
    ///     println!("I've become master!");
    /// }
    /// ```
    pub fn is_master(&self) -> bool {
        self.shared.is_master()
    }

    /// The current role; [`Role::Master`] exactly when [`is_master`](Self::is_master) is true.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// println!("I am {}", election.role());
    /// ```
    pub fn role(&self) -> Role {
        let status = self.shared.status.lock();
        self.shared.role(&status)
    }

    /// This member's node name, such as `worker0000000003`, while it has one.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// println!("register ok! I'm {}", election.member_name().unwrap_or_default());
    /// ```
    pub fn member_name(&self) -> Option<String> {
        self.shared.status.lock().member.clone()
    }

    /// The first N members, in election order, with their data: the masters,
    /// or the members about to be (a member promoted because a node was
    /// deleted by hand waits until that node's owner has stepped down).
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let names: Vec<String> = election.masters().iter().map(|m| m.name().to_owned()).collect();
    /// println!("{names:?} is masters");
    /// ```
    pub fn masters(&self) -> Vec<Member> {
        self.shared.status.lock().masters.clone()
    }

    /// Every member, in election order, with their data.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// for member in election.members() {
    ///     println!("{} {:?}", member.name(), member.data());
    /// }
    /// ```
    pub fn members(&self) -> Vec<Member> {
        self.shared.status.lock().members.clone()
    }

    /// The state of the link to ZooKeeper, and when it began.
    ///
    /// ```no_run
    /// use zk_master::Connection;
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let (connection, since) = election.connection();
    /// if connection != Connection::Connected {
    ///     println!("{connection} for {:?}", since.elapsed());
    /// }
    /// ```
    pub fn connection(&self) -> (Connection, Instant) {
        let status = self.shared.status.lock();
        (status.connection, status.connection_since)
    }

    /// The session timeout the server granted, once known.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// println!("session timeout: {:?}", election.session_timeout());
    /// ```
    pub fn session_timeout(&self) -> Option<Duration> {
        self.shared.status.lock().session_timeout
    }

    /// A snapshot of the election's counters and timers, for monitoring: see
    /// [`Metrics`]. Cheap: a copy under the status lock, no network.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let m = election.metrics();
    /// println!("zk_master_is_master {}", u8::from(m.is_master));
    /// println!("zk_master_session_losses_total {}", m.session_losses);
    /// ```
    pub fn metrics(&self) -> Metrics {
        let (counters, timeout) = {
            let status = self.shared.status.lock();
            (status.counters, status.session_timeout)
        };
        Metrics::new(self.shared.is_master(), counters, timeout)
    }

    /// While master: the creation zxid of this member's node. It grows
    /// strictly from one master to the next, so a resource that remembers the
    /// highest token it has seen can refuse writes from a deposed master.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// if let Some(token) = election.fencing_token() {
    ///     println!("writing with token {token}");
    /// }
    /// ```
    pub fn fencing_token(&self) -> Option<u64> {
        let status = self.shared.status.lock();
        status
            .token
            .filter(|_| self.shared.role(&status) == Role::Master)
    }

    /// Waits until this member is master, or `timeout` has passed, or the
    /// election is resigned. Returns whether it is master. A timeout too long
    /// to add to the clock (such as [`Duration::MAX`]) waits without limit.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// if election.wait_until_master(Duration::from_secs(30)) {
    ///     println!("I've become master!");
    /// }
    /// ```
    #[must_use = "it returns false when the timeout passed before this member became master"]
    pub fn wait_until_master(&self, timeout: Duration) -> bool {
        // None: beyond what an Instant can hold, so no deadline at all.
        let deadline = Instant::now().checked_add(timeout);
        let mut status = self.shared.status.lock();
        while !self.shared.is_master() {
            if status.resigned {
                return false;
            }
            let timed_out = match deadline {
                Some(deadline) => self
                    .shared
                    .changed
                    .wait_until(&mut status, deadline)
                    .timed_out(),
                None => {
                    self.shared.changed.wait(&mut status);
                    false
                }
            };
            if timed_out {
                return self.shared.is_master();
            }
        }
        true
    }

    /// Calls `callback` on every change of role or of connection from now
    /// on. The [`RoleChange`] it gets holds everything about the election at
    /// that change (old and new role, this member's name, the masters and
    /// every member with their data, the connection, the time), so the
    /// callback never needs to capture this handle; if it calls into the
    /// handle anyway, let it hold a [`Weak`](std::sync::Weak), not an
    /// [`Arc`], or the handle is never dropped.
    ///
    /// Callbacks and [subscriptions](Self::subscribe) are served by one thread
    /// of the library, in the order they were registered, change after
    /// change, one at a time, never while the library holds a lock; a
    /// callback may call any method of this handle. A callback that panics is
    /// logged and the election goes on. Returns the id that
    /// [`remove_callback`](Self::remove_callback) takes.
    ///
    /// ```no_run
    /// use zk_master::Role;
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// election.on_change(|change| match change.new {
    ///     Role::Master => println!("I've become master!"),
    ///     _ => println!("{:?} is masters, I'm {}", change.masters, change.new),
    /// });
    /// ```
    pub fn on_change<F>(&self, callback: F) -> CallbackId
    where
        F: FnMut(&RoleChange) + Send + 'static,
    {
        callbacks::register(&self.dispatch, Box::new(callback))
    }

    /// Removes a callback registered with [`on_change`](Self::on_change), and
    /// drops it. It takes effect in order: the callback still runs for the
    /// changes that happened before this call (the callback thread may not
    /// have reached them yet), and for none after. Does not wait, so a
    /// callback may remove itself or another; an unknown id does nothing.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let id = election.on_change(|change| println!("now {}", change.new));
    /// if election.wait_until_master(std::time::Duration::from_secs(30)) {
    ///     election.remove_callback(id); // quiet from now on
    /// }
    /// ```
    pub fn remove_callback(&self, id: CallbackId) {
        callbacks::unregister(&self.dispatch, id);
    }

    /// The changes of role and connection from now on, as a channel that
    /// another thread can block on, poll, or iterate (see [`Subscription`]).
    /// It gets the same changes as the [callbacks](Self::on_change), in the
    /// same order, from the same library thread, and queues them without
    /// limit: a slow reader never holds up the election or the callbacks. It
    /// disconnects after the last change once the election is resigned or the
    /// handle dropped; dropping it unsubscribes.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use zk_master::Role;
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let changes = election.subscribe();
    /// while let Ok(change) = changes.recv_timeout(Duration::from_secs(60)) {
    ///     if change.new == Role::Master {
    ///         println!("I've become master!");
    ///     }
    /// }
    /// ```
    #[must_use = "dropping a Subscription unsubscribes at once"]
    pub fn subscribe(&self) -> Subscription {
        callbacks::subscribe(&self.dispatch)
    }

    /// Steps down and joins again at the back of the queue, in the same
    /// session: the node is deleted (so the next member takes over at once)
    /// and a new one created.
    ///
    /// # Errors
    /// [`Error::Resigned`] once the election was resigned: there is no queue to go back to.
    /// Without a connection the call succeeds: the member joins at the back when it can.
    ///
    /// # Example
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// if election.is_master() {
    ///     election.requeue()?; // let someone else lead for a while
    /// }
    /// # Ok::<(), zk_master::Error>(())
    /// ```
    pub fn requeue(&self) -> Result<()> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.inputs
            .send(Message::Requeue(reply))
            .map_err(|_| Error::Resigned)?;
        answer.recv().map_err(|_| Error::Resigned)?
    }

    /// Leaves the election: steps down at once, deletes this member's node so
    /// a successor takes over without waiting for a session timeout, and
    /// closes the session. Returns when the node is deleted or the attempt has
    /// timed out. Callbacks still get the last change, then are dropped;
    /// [subscriptions](Self::subscribe) disconnect once it is read. Calling it
    /// again does nothing; dropping the handle calls it.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// election.resign();
    /// assert!(!election.is_master());
    /// ```
    pub fn resign(&self) {
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        let (reply, done) = mpsc::sync_channel(1);
        if self.inputs.send(Message::Resign(reply)).is_ok() {
            let _ = done.recv();
        }
        let _ = thread.join();
        // The election thread has sent its last change: subscriptions may
        // disconnect once they have read it, and callbacks be dropped.
        let _ = self.dispatch.send(Dispatch::Close);
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.resign();
        // Resigning closed the callback thread already, unless it was
        // resigned before it had an election thread (the unit tests' handle).
        let _ = self.dispatch.send(Dispatch::Close);
        driver::join_callbacks(&self.callback_thread);
    }
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.shared.status.lock();
        f.debug_struct("Election")
            .field("member", &status.member)
            .field("role", &self.shared.role(&status))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::View;
    use std::thread;

    /// A handle with its callback thread but no election thread, fed by hand.
    fn detached() -> Election {
        let (dispatch, callback_thread) = callbacks::spawn().expect("callback thread");
        Election {
            shared: Arc::new(Shared::new()),
            inputs: mpsc::channel().0,
            dispatch,
            thread: Mutex::new(None),
            callback_thread: Mutex::new(Some(callback_thread)),
        }
    }

    fn status(role: Role, lease_until: Option<Instant>, resigned: bool) -> View {
        let mut status = View::clone(&Shared::new().status.lock());
        status.role = role;
        status.lease_until = lease_until;
        status.resigned = resigned;
        status
    }

    fn change(new: Role) -> RoleChange {
        RoleChange {
            old: Role::Offline,
            new,
            member: None,
            masters: Vec::new(),
            members: Vec::new(),
            connection: Connection::Connected,
            at: Instant::now(),
        }
    }

    #[test]
    fn subscriptions_and_callbacks_hear_the_changes_the_election_thread_sends() {
        let election = detached();
        let (heard_tx, heard) = mpsc::channel();
        let id = election.on_change(move |c| heard_tx.send(c.new).unwrap());
        let changes = election.subscribe();
        let wait = Duration::from_secs(5);
        // What the election thread does on a change.
        election
            .dispatch
            .send(Dispatch::Change(change(Role::Slave)))
            .unwrap();
        assert_eq!(changes.recv_timeout(wait).map(|c| c.new), Ok(Role::Slave));
        assert_eq!(heard.recv_timeout(wait), Ok(Role::Slave));
        election.remove_callback(id);
        election
            .dispatch
            .send(Dispatch::Change(change(Role::Master)))
            .unwrap();
        assert_eq!(changes.recv_timeout(wait).map(|c| c.new), Ok(Role::Master));
        assert!(heard.recv_timeout(wait).is_err(), "removed");
        drop(election);
        assert!(changes.recv_timeout(Duration::MAX).is_err(), "disconnected");
    }

    #[test]
    fn waiting_without_limit_does_not_overflow_the_clock() {
        let election = Arc::new(detached());
        let publisher = election.clone();
        let promote = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            let lease = Instant::now() + Duration::from_secs(60);
            publisher
                .shared
                .publish(status(Role::Master, Some(lease), false));
        });
        assert!(election.wait_until_master(Duration::MAX));
        promote.join().unwrap();

        // A resigned election ends even an unbounded wait.
        election.shared.publish(status(Role::Offline, None, false));
        let publisher = election.clone();
        let resign = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            publisher.shared.publish(status(Role::Offline, None, true));
        });
        assert!(!election.wait_until_master(Duration::MAX));
        resign.join().unwrap();
    }
}
