//! Runs user callbacks on a thread of their own: in order, one at a time,
//! with no lock of the library held, and a panic contained to the callback.
//! The same thread feeds [`Subscription`]s, so callbacks and subscribers see
//! the same changes in the same order.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvError, RecvTimeoutError, Sender, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::role::RoleChange;

/// A callback as registered with [`Election::on_change`](crate::Election::on_change).
pub(crate) type Callback = Box<dyn FnMut(&RoleChange) + Send>;

/// Names a callback registered with
/// [`Election::on_change`](crate::Election::on_change), so that
/// [`Election::remove_callback`](crate::Election::remove_callback) can remove
/// it. Unique within the process.
///
/// ```no_run
/// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
/// let id: zk_master::CallbackId = election.on_change(|change| println!("now {}", change.new));
/// election.remove_callback(id);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallbackId(u64);

impl CallbackId {
    /// A fresh id, never handed out before in this process.
    pub(crate) fn next() -> CallbackId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        CallbackId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What the callback thread is asked to do, in order.
pub(crate) enum Dispatch {
    /// Call this callback on every later change, until removed.
    Register(CallbackId, Callback),
    /// Forget a callback; later changes do not reach it.
    Remove(CallbackId),
    /// Send every later change to this subscriber, until its receiver is gone.
    Subscribe(Sender<RoleChange>),
    /// The election is over: drop every callback and subscriber (so the
    /// subscriptions disconnect once they have read what was sent before),
    /// and end the thread.
    Close,
    /// Tell every callback and subscriber, in the order they were registered.
    Change(RoleChange),
}

/// Someone told of changes, in registration order.
enum Listener {
    Callback(CallbackId, Callback),
    Subscriber(Sender<RoleChange>),
}

/// Registers `callback` on the callback thread behind `dispatch`: what
/// `Election::on_change` and `Observer::on_change` do.
pub(crate) fn register(dispatch: &Sender<Dispatch>, callback: Callback) -> CallbackId {
    let id = CallbackId::next();
    let _ = dispatch.send(Dispatch::Register(id, callback));
    id
}

/// Removes callback `id`, in order with the changes.
pub(crate) fn unregister(dispatch: &Sender<Dispatch>, id: CallbackId) {
    let _ = dispatch.send(Dispatch::Remove(id));
}

/// A new subscription to the changes the thread behind `dispatch` tells. If
/// that thread is gone, the sender goes with the failed message and the
/// subscription reads as disconnected.
pub(crate) fn subscribe(dispatch: &Sender<Dispatch>) -> Subscription {
    let (subscriber, subscription) = Subscription::new();
    let _ = dispatch.send(Dispatch::Subscribe(subscriber));
    subscription
}

/// Starts the callback thread. It ends at [`Dispatch::Close`] or when every
/// sender is dropped, after running what was sent before; the handle lets the
/// election's owner wait for that, so that no thread of a dropped election
/// outlives it.
pub(crate) fn spawn() -> std::io::Result<(Sender<Dispatch>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<Dispatch>();
    let thread = thread::Builder::new()
        .name("zk-master-callbacks".into())
        .spawn(move || run(rx))?;
    Ok((tx, thread))
}

fn run(rx: Receiver<Dispatch>) {
    let mut listeners: Vec<Listener> = Vec::new();
    // The last change: a new listener is first told the state it describes,
    // as a change from offline, so the role held at join is never missed.
    let mut current: Option<RoleChange> = None;
    for message in rx {
        match message {
            Dispatch::Register(id, callback) => {
                let mut listener = Listener::Callback(id, callback);
                if tell(&mut listener, current.as_ref().map(replay).as_ref()) {
                    listeners.push(listener);
                }
            }
            Dispatch::Subscribe(subscriber) => {
                let mut listener = Listener::Subscriber(subscriber);
                if tell(&mut listener, current.as_ref().map(replay).as_ref()) {
                    listeners.push(listener);
                }
            }
            Dispatch::Remove(id) => {
                listeners.retain(|l| !matches!(l, Listener::Callback(i, _) if *i == id));
            }
            // Dropping the listeners disconnects the subscriptions; later
            // messages fail to send, and a later subscription reads as
            // disconnected.
            Dispatch::Close => return,
            Dispatch::Change(change) => {
                listeners.retain_mut(|listener| tell(listener, Some(&change)));
                current = Some(change);
            }
        }
    }
}

/// The state `change` left, told as a change from offline.
fn replay(change: &RoleChange) -> RoleChange {
    RoleChange {
        old: crate::role::Role::Offline,
        ..change.clone()
    }
}

/// Tells one listener of `change`, if any; returns whether to keep it.
fn tell(listener: &mut Listener, change: Option<&RoleChange>) -> bool {
    let Some(change) = change else { return true };
    match listener {
        Listener::Callback(_, callback) => {
            let run = panic::catch_unwind(AssertUnwindSafe(|| callback(change)));
            if run.is_err() {
                log::error!("a role-change callback panicked; the election goes on");
            }
            true
        }
        // Unbounded: never blocks this thread. A dropped receiver fails the
        // send, and its subscriber goes.
        Listener::Subscriber(subscriber) => subscriber.send(change.clone()).is_ok(),
    }
}

/// The changes of role and connection of one election, as a channel: what
/// [`Election::subscribe`](crate::Election::subscribe) returns. It receives
/// every change that happens after it was made, in the order the callbacks
/// see them, from the same library thread. Unread changes queue without
/// limit, and never hold up the election or the callbacks. It disconnects
/// (the calls return their `Disconnected` error, and iteration ends) once it
/// has returned the last change, after the election is resigned or its
/// handle dropped. Dropping it unsubscribes.
///
/// The errors are those of [`std::sync::mpsc`].
///
/// ```no_run
/// use zk_master::{Config, Election, Role};
///
/// let election = Election::join(Config::new("127.0.0.1:2181"))?;
/// let changes = election.subscribe();
/// std::thread::spawn(move || {
///     for change in changes {
///         if change.new == Role::Master {
///             println!("I've become master!");
///         }
///     }
/// });
/// # Ok::<(), zk_master::Error>(())
/// ```
#[derive(Debug)]
pub struct Subscription {
    changes: Receiver<RoleChange>,
}

impl Subscription {
    /// A subscription, and the sender the callback thread feeds it through.
    pub(crate) fn new() -> (Sender<RoleChange>, Subscription) {
        let (tx, changes) = mpsc::channel();
        (tx, Subscription { changes })
    }

    /// Waits for the next change. Errs once the election is over and every
    /// change was read.
    ///
    /// # Errors
    /// [`RecvError`] once the election is over (resigned or dropped) and every change was read.
    ///
    /// # Example
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let changes = election.subscribe();
    /// while let Ok(change) = changes.recv() {
    ///     println!("{} -> {}", change.old, change.new);
    /// }
    /// ```
    pub fn recv(&self) -> Result<RoleChange, RecvError> {
        self.changes.recv()
    }

    /// The next change if one is waiting: never blocks.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when no change is waiting; [`TryRecvError::Disconnected`] once the
    /// election is over and every change was read.
    ///
    /// # Example
    /// ```no_run
    /// use std::sync::mpsc::TryRecvError;
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let changes = election.subscribe();
    /// match changes.try_recv() {
    ///     Ok(change) => println!("now {}", change.new),
    ///     Err(TryRecvError::Empty) => println!("nothing new"),
    ///     Err(TryRecvError::Disconnected) => println!("the election is over"),
    /// }
    /// ```
    pub fn try_recv(&self) -> Result<RoleChange, TryRecvError> {
        self.changes.try_recv()
    }

    /// Waits at most `timeout` for the next change. A timeout too long for
    /// the clock (such as [`Duration::MAX`]) waits like [`recv`](Self::recv).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when no change came in time;
    /// [`RecvTimeoutError::Disconnected`] once the election is over and every change was read.
    ///
    /// # Example
    /// ```no_run
    /// use std::sync::mpsc::RecvTimeoutError;
    /// use std::time::Duration;
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let changes = election.subscribe();
    /// match changes.recv_timeout(Duration::from_secs(5)) {
    ///     Ok(change) => println!("now {}", change.new),
    ///     Err(RecvTimeoutError::Timeout) => println!("no change in 5 s"),
    ///     Err(RecvTimeoutError::Disconnected) => println!("the election is over"),
    /// }
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<RoleChange, RecvTimeoutError> {
        self.changes.recv_timeout(timeout)
    }

    /// Every change, waiting for each, until the election is over.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// for change in election.subscribe().iter() {
    ///     println!("now {}", change.new);
    /// }
    /// ```
    pub fn iter(&self) -> mpsc::Iter<'_, RoleChange> {
        self.changes.iter()
    }

    /// The changes waiting now, without blocking.
    ///
    /// ```no_run
    /// # let election = zk_master::Election::join(zk_master::Config::new("127.0.0.1:2181")).unwrap();
    /// let changes = election.subscribe();
    /// let latest = changes.try_iter().last();
    /// ```
    pub fn try_iter(&self) -> mpsc::TryIter<'_, RoleChange> {
        self.changes.try_iter()
    }
}

impl<'a> IntoIterator for &'a Subscription {
    type Item = RoleChange;
    type IntoIter = mpsc::Iter<'a, RoleChange>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl IntoIterator for Subscription {
    type Item = RoleChange;
    type IntoIter = mpsc::IntoIter<RoleChange>;

    fn into_iter(self) -> Self::IntoIter {
        self.changes.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::{Connection, Role};
    use std::time::Instant;

    fn change(new: Role) -> RoleChange {
        RoleChange {
            old: Role::Offline,
            new,
            member: Some("worker0000000001".into()),
            masters: Vec::new(),
            members: Vec::new(),
            connection: Connection::Connected,
            at: Instant::now(),
        }
    }

    const WAIT: Duration = Duration::from_secs(5);

    #[test]
    fn callbacks_and_subscribers_see_the_same_changes_in_order() {
        let (dispatch, _thread) = spawn().unwrap();
        let (seen_tx, seen) = mpsc::channel();
        let first = seen_tx.clone();
        dispatch
            .send(Dispatch::Register(
                CallbackId::next(),
                Box::new(move |c| first.send(("callback", c.new)).unwrap()),
            ))
            .unwrap();
        dispatch
            .send(Dispatch::Register(
                CallbackId::next(),
                Box::new(|_| panic!("a broken callback")),
            ))
            .unwrap();
        let (subscriber, subscription) = Subscription::new();
        dispatch.send(Dispatch::Subscribe(subscriber)).unwrap();
        let last = seen_tx;
        dispatch
            .send(Dispatch::Register(
                CallbackId::next(),
                Box::new(move |c| last.send(("late callback", c.new)).unwrap()),
            ))
            .unwrap();
        for role in [Role::Slave, Role::Master, Role::Offline] {
            dispatch.send(Dispatch::Change(change(role))).unwrap();
        }
        for role in [Role::Slave, Role::Master, Role::Offline] {
            assert_eq!(subscription.recv_timeout(WAIT).unwrap().new, role);
            assert_eq!(seen.recv_timeout(WAIT).unwrap(), ("callback", role));
            assert_eq!(seen.recv_timeout(WAIT).unwrap(), ("late callback", role));
        }
        assert_eq!(subscription.try_recv(), Err(TryRecvError::Empty));
        drop(dispatch);
        assert_eq!(subscription.recv(), Err(RecvError), "the thread ended");
    }

    #[test]
    fn removed_callbacks_and_dropped_subscriptions_hear_no_more() {
        let (dispatch, _thread) = spawn().unwrap();
        let (seen_tx, seen) = mpsc::channel();
        let id = CallbackId::next();
        dispatch
            .send(Dispatch::Register(
                id,
                Box::new(move |c| seen_tx.send(c.new).unwrap()),
            ))
            .unwrap();
        let (subscriber, dropped) = Subscription::new();
        dispatch.send(Dispatch::Subscribe(subscriber)).unwrap();
        drop(dropped);
        let (subscriber, kept) = Subscription::new();
        dispatch.send(Dispatch::Subscribe(subscriber)).unwrap();
        dispatch
            .send(Dispatch::Change(change(Role::Slave)))
            .unwrap();
        dispatch.send(Dispatch::Remove(id)).unwrap();
        dispatch
            .send(Dispatch::Change(change(Role::Master)))
            .unwrap();
        assert_eq!(kept.recv_timeout(WAIT).unwrap().new, Role::Slave);
        assert_eq!(kept.recv_timeout(WAIT).unwrap().new, Role::Master);
        assert_eq!(seen.recv_timeout(WAIT), Ok(Role::Slave));
        // Removing dropped the callback, and with it the only sender.
        assert_eq!(seen.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
    }

    #[test]
    fn closing_disconnects_subscriptions_after_what_was_sent() {
        let (dispatch, _thread) = spawn().unwrap();
        let (subscriber, subscription) = Subscription::new();
        dispatch.send(Dispatch::Subscribe(subscriber)).unwrap();
        dispatch
            .send(Dispatch::Change(change(Role::Offline)))
            .unwrap();
        dispatch.send(Dispatch::Close).unwrap();
        let (subscriber, late) = Subscription::new();
        // Fails once the thread has ended; the subscriber goes with it.
        let _ = dispatch.send(Dispatch::Subscribe(subscriber));
        let changes: Vec<Role> = subscription.into_iter().map(|c| c.new).collect();
        assert_eq!(changes, [Role::Offline]);
        assert_eq!(
            late.recv_timeout(WAIT).unwrap_err(),
            RecvTimeoutError::Disconnected
        );
        assert!(late.recv_timeout(Duration::MAX).is_err(), "no overflow");
    }
}
