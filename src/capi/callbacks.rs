//! C callbacks of one election: registered and unregistered by id, called on
//! the election's callback thread in order, never while a lock is held.
//!
//! The registry adds to Rust's callbacks what C needs to free its
//! `user_data` safely: once `zkm_callback_remove` (from another thread) or
//! `zkm_election_free` returns, the callback is not running and never runs
//! again. A thread-local marks the callback thread while it runs a callback,
//! so that freeing the election from inside its own callback is refused
//! instead of waiting for itself.

use std::cell::Cell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::view::{zkm_role_change, OwnedChange};
use crate::callbacks::CallbackId;
use crate::role::RoleChange;

/// A role-change callback: called with the change (valid until it returns)
/// and the `user_data` given at registration, on the election's callback
/// thread, one change at a time, in order.
///
/// ```c
/// static void on_change(const zkm_role_change *change, void *user_data) {
///     int *changes = user_data;
///     (*changes)++;
/// }
/// ```
pub type zkm_role_cb =
    Option<unsafe extern "C" fn(change: *const zkm_role_change, user_data: *mut c_void)>;

/// The caller's `user_data`, handed to the callback thread. The caller
/// promises, by registering it, that the callback may use it from there.
#[derive(Clone, Copy)]
struct UserData(*mut c_void);

// SAFETY: the pointer is only passed back to the caller's own callback; what
// it points to is the caller's to make safe to use from the callback thread.
unsafe impl Send for UserData {}

thread_local! {
    /// The election whose callback this thread is running now, 0 for none.
    static RUNNING_FOR: Cell<u64> = const { Cell::new(0) };
}

/// Whether this thread is inside a callback of election `id`.
pub(crate) fn in_callback_of(id: u64) -> bool {
    RUNNING_FOR.with(Cell::get) == id
}

/// The C callbacks of one election.
pub(crate) struct Registry {
    /// The election's id, for [`in_callback_of`]; never 0.
    pub(crate) election: u64,
    state: Mutex<State>,
    /// Signalled when a callback returns.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// The live callbacks: C id to Rust id (None while registering).
    live: HashMap<u64, Option<CallbackId>>,
    /// The callback running now.
    running: Option<u64>,
    /// Set by `zkm_election_free`: nothing runs any more.
    closed: bool,
}

impl Registry {
    pub(crate) fn new() -> Arc<Registry> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Arc::new(Registry {
            election: NEXT.fetch_add(1, Ordering::Relaxed),
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
        })
    }

    /// Registers `callback` with `register` (which hands a Rust closure to
    /// the election) and returns the C id, never 0.
    pub(crate) fn add(
        self: &Arc<Registry>,
        callback: unsafe extern "C" fn(*const zkm_role_change, *mut c_void),
        user_data: *mut c_void,
        register: impl FnOnce(Box<dyn FnMut(&RoleChange) + Send>) -> CallbackId,
    ) -> u64 {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        self.state.lock().live.insert(id, None);
        let registry = Arc::clone(self);
        let user_data = UserData(user_data);
        let rust_id = register(Box::new(move |change: &RoleChange| {
            registry.call(id, callback, user_data, change);
        }));
        if let Some(slot) = self.state.lock().live.get_mut(&id) {
            *slot = Some(rust_id);
        }
        id
    }

    /// Runs callback `id` for `change` if it is still registered.
    fn call(
        &self,
        id: u64,
        callback: unsafe extern "C" fn(*const zkm_role_change, *mut c_void),
        user_data: UserData,
        change: &RoleChange,
    ) {
        {
            let mut state = self.state.lock();
            if state.closed || !state.live.contains_key(&id) {
                return;
            }
            state.running = Some(id);
        }
        // Marks the thread until the callback has returned, even by a panic.
        let _running = Running {
            registry: self,
            outer: RUNNING_FOR.with(|r| r.replace(self.election)),
        };
        let view = OwnedChange::new(change);
        // SAFETY: the caller registered a function of this type; the change
        // lives until it returns; the user data is the caller's own.
        unsafe { callback(&view.change, user_data.0) };
    }

    /// Forgets callback `id` and returns its Rust id (None if unknown). Unless
    /// called from inside a callback of this election, waits until the
    /// callback is not running.
    pub(crate) fn remove(&self, id: u64) -> Option<Option<CallbackId>> {
        let mut state = self.state.lock();
        let rust_id = state.live.remove(&id)?;
        if !in_callback_of(self.election) {
            while state.running == Some(id) {
                self.idle.wait(&mut state);
            }
        }
        Some(rust_id)
    }

    /// Stops every callback for good, and waits for the one running now to
    /// return. Must not be called from a callback of this election.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        while state.running.is_some() {
            self.idle.wait(&mut state);
        }
    }
}

/// While a callback runs: on drop, the thread is no longer in it, and a
/// `zkm_callback_remove` or `zkm_election_free` waiting for it goes on.
struct Running<'a> {
    registry: &'a Registry,
    /// The election whose callback the thread was running before (none: 0).
    outer: u64,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        RUNNING_FOR.with(|r| r.set(self.outer));
        self.registry.state.lock().running = None;
        self.registry.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::{Connection, Role};
    use std::sync::atomic::AtomicBool;
    use std::sync::mpsc;
    use std::thread;
    use std::time::{Duration, Instant};

    /// What the test callback shares with the test: it signals its start,
    /// then blocks until released.
    struct Gate {
        started: Mutex<Option<mpsc::Sender<()>>>,
        release: Mutex<bool>,
        released: Condvar,
        returned: AtomicBool,
        calls: AtomicU64,
    }

    unsafe extern "C" fn blocking(_: *const zkm_role_change, user_data: *mut c_void) {
        // SAFETY: the test passes a Gate that outlives the registration.
        let gate = unsafe { &*user_data.cast::<Gate>() };
        gate.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(started) = gate.started.lock().take() {
            let _ = started.send(());
        }
        let mut release = gate.release.lock();
        while !*release {
            gate.released.wait(&mut release);
        }
        gate.returned.store(true, Ordering::SeqCst);
    }

    fn change() -> RoleChange {
        RoleChange {
            old: Role::Offline,
            new: Role::Slave,
            member: Some("worker0000000001".into()),
            masters: Vec::new(),
            members: Vec::new(),
            connection: Connection::Connected,
            at: Instant::now(),
        }
    }

    #[test]
    fn removing_waits_for_the_running_callback_and_it_never_runs_again() {
        let (started_tx, started) = mpsc::channel();
        let gate = Arc::new(Gate {
            started: Mutex::new(Some(started_tx)),
            release: Mutex::new(false),
            released: Condvar::new(),
            returned: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        });
        let registry = Registry::new();
        let mut rust_callback = None;
        let id = registry.add(blocking, Arc::as_ptr(&gate) as *mut c_void, |f| {
            rust_callback = Some(f);
            CallbackId::next()
        });
        let mut rust_callback = rust_callback.expect("registered");
        let callback_thread = thread::spawn(move || {
            rust_callback(&change());
            rust_callback(&change()); // after the removal: not called
        });
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("called");
        let releaser_gate = gate.clone();
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            *releaser_gate.release.lock() = true;
            releaser_gate.released.notify_all();
        });
        assert!(registry.remove(id).is_some());
        assert!(
            gate.returned.load(Ordering::SeqCst),
            "remove returned first"
        );
        assert!(registry.remove(id).is_none(), "already removed");
        releaser.join().unwrap();
        callback_thread.join().unwrap();
        assert_eq!(
            gate.calls.load(Ordering::SeqCst),
            1,
            "not called after removal"
        );
        assert!(!in_callback_of(registry.election));
    }

    #[test]
    fn closing_waits_for_the_running_callback_and_stops_every_callback() {
        let (started_tx, started) = mpsc::channel();
        let gate = Arc::new(Gate {
            started: Mutex::new(Some(started_tx)),
            release: Mutex::new(false),
            released: Condvar::new(),
            returned: AtomicBool::new(false),
            calls: AtomicU64::new(0),
        });
        let registry = Registry::new();
        let mut callbacks = Vec::new();
        for _ in 0..2 {
            registry.add(blocking, Arc::as_ptr(&gate) as *mut c_void, |f| {
                callbacks.push(f);
                CallbackId::next()
            });
        }
        let callback_thread = thread::spawn(move || {
            for callback in &mut callbacks {
                callback(&change()); // the second one runs after the close: not called
            }
        });
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("called");
        let releaser_gate = gate.clone();
        let releaser = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            *releaser_gate.release.lock() = true;
            releaser_gate.released.notify_all();
        });
        registry.close();
        assert!(gate.returned.load(Ordering::SeqCst), "close returned first");
        releaser.join().unwrap();
        callback_thread.join().unwrap();
        assert_eq!(
            gate.calls.load(Ordering::SeqCst),
            1,
            "nothing runs after close"
        );
    }
}
