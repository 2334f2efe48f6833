//! `zkm_election`: joining, reading the role and the group, requeueing,
//! resigning and freeing, and registering callbacks.

use std::ffi::c_void;
use std::sync::Arc;

use super::callbacks::{in_callback_of, zkm_role_cb, Registry};
use super::config::zkm_config;
use super::errors::{guard, guard_value, zkm_result, Failure};
use super::view::{zkm_role, zkm_snapshot, OwnedSnapshot, Tables};
use crate::election::Election;

use zkm_result::*;

/// Membership of this process in an election group: an opaque handle made by
/// [`zkm_join`] and freed by [`zkm_election_free`].
///
/// Thread-safe: every function may be called on the same handle from any
/// thread at once, including from its own callbacks (except
/// `zkm_election_free`, see there).
///
/// ```c
/// zkm_election *election = NULL;
/// if (zkm_join(config, &election) == ZKM_OK) {
///     if (zkm_is_master(election))
///         puts("I've become master!");
///     zkm_election_free(election);
/// }
/// ```
pub struct zkm_election {
    election: Election,
    registry: Arc<Registry>,
}

/// The election behind `election`, or `ZKM_ERR_NULL`.
///
/// # Safety
/// `election` is NULL or a live pointer from [`zkm_join`].
unsafe fn live<'a>(election: *const zkm_election) -> Result<&'a zkm_election, Failure> {
    // SAFETY: by the caller's contract.
    unsafe { election.as_ref() }.ok_or_else(|| Failure::null("election"))
}

/// Connects, creates the group path if missing, registers this member and
/// learns its first role: on success the role is master or slave. Blocks
/// until then, or until the connect timeout has passed.
///
/// `config` is read during the call only: it may be changed or freed right
/// after. On success `*out` is a new election the caller owns and frees with
/// [`zkm_election_free`]; on failure `*out` is left unchanged.
///
/// After a failure to reach a server, the library's network threads for the
/// abandoned attempt end on their own within 2 × session timeout + 3 s (the
/// `zookeeper` crate's close cannot be waited for): a process that exits
/// sooner leaves them to the system, and valgrind then reports their stacks
/// as "possibly lost".
///
/// # Errors
/// `ZKM_ERR_NULL`; `ZKM_ERR_INVALID_CONFIG` before anything is sent;
/// `ZKM_ERR_UNREACHABLE` when no server answered in time;
/// `ZKM_ERR_ACCESS_DENIED`, `ZKM_ERR_SERVER`, `ZKM_ERR_SPAWN` as their names
/// say. `zkm_last_error()` tells more.
///
/// ```c
/// zkm_election *election = NULL;
/// zkm_result rc = zkm_join(config, &election);
/// if (rc != ZKM_OK) {
///     fprintf(stderr, "cannot join: %s\n", zkm_last_error());
///     exit(1);
/// }
/// ```
///
/// # Safety
/// `config` is NULL or a live configuration; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_join(
    config: *const zkm_config,
    out: *mut *mut zkm_election,
) -> zkm_result {
    guard("zkm_join", || {
        // SAFETY: by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let election = Election::join(config.config.clone())?;
        let handle = Box::new(zkm_election {
            election,
            registry: Registry::new(),
        });
        // SAFETY: not NULL, writable by the caller's contract.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Resigns (as [`zkm_resign`]), waits until no callback of this election is
/// running, and frees the election. No callback runs after it returns, so
/// their `user_data` may be freed then. NULL does nothing and returns
/// `ZKM_OK`.
///
/// # Errors
/// `ZKM_ERR_IN_CALLBACK` when called from inside one of this election's own
/// callbacks (it would wait for itself): nothing is freed; free it from
/// another thread, such as the one that joined.
///
/// ```c
/// zkm_election_free(election);
/// election = NULL;
/// ```
///
/// # Safety
/// `election` is NULL or a pointer from [`zkm_join`] not freed before, that
/// no other thread uses during or after the call.
#[no_mangle]
pub unsafe extern "C" fn zkm_election_free(election: *mut zkm_election) -> zkm_result {
    guard("zkm_election_free", || {
        if election.is_null() {
            return Ok(());
        }
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(election) }?;
        if in_callback_of(handle.registry.election) {
            return Err(Failure::new(
                ZKM_ERR_IN_CALLBACK,
                "zkm_election_free called from one of the election's own callbacks; \
                 free it from another thread",
            ));
        }
        handle.election.resign();
        handle.registry.close();
        // SAFETY: made by Box::into_raw in zkm_join, freed once.
        drop(unsafe { Box::from_raw(election) });
        Ok(())
    })
}

/// True while this member is master and its lease holds. Never blocks: it
/// reads an atomic and the monotonic clock. False for NULL.
///
/// ```c
/// while (running) {
///     if (zkm_is_master(election))
///         do_the_masters_work();
///     usleep(100000);
/// }
/// ```
///
/// # Safety
/// `election` is NULL or a live election.
#[no_mangle]
pub unsafe extern "C" fn zkm_is_master(election: *const zkm_election) -> bool {
    guard_value("zkm_is_master", false, || {
        // SAFETY: by the caller's contract.
        unsafe { election.as_ref() }.is_some_and(|e| e.election.is_master())
    })
}

/// The current role; `ZKM_ROLE_MASTER` exactly when [`zkm_is_master`] is
/// true. `ZKM_ROLE_OFFLINE` for NULL.
///
/// ```c
/// printf("I am %s\n", zkm_role_of(election) == ZKM_ROLE_SLAVE ? "slave" : "not slave");
/// ```
///
/// # Safety
/// `election` is NULL or a live election.
#[no_mangle]
pub unsafe extern "C" fn zkm_role_of(election: *const zkm_election) -> zkm_role {
    guard_value("zkm_role_of", zkm_role::ZKM_ROLE_OFFLINE, || {
        // SAFETY: by the caller's contract.
        unsafe { election.as_ref() }
            .map_or(zkm_role::ZKM_ROLE_OFFLINE, |e| e.election.role().into())
    })
}

/// While master: the creation zxid of this member's node, which grows
/// strictly from one master to the next. Stored in `*token`.
///
/// # Errors
/// `ZKM_ERR_NULL`; `ZKM_ERR_NOT_MASTER` when not master (`*token` is then
/// unchanged).
///
/// ```c
/// uint64_t token;
/// if (zkm_fencing_token(election, &token) == ZKM_OK)
///     write_with_token(token);
/// ```
///
/// # Safety
/// `election` is NULL or a live election; `token` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_fencing_token(
    election: *const zkm_election,
    token: *mut u64,
) -> zkm_result {
    guard("zkm_fencing_token", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(election) }?;
        if token.is_null() {
            return Err(Failure::null("token"));
        }
        let value = handle
            .election
            .fencing_token()
            .ok_or_else(|| Failure::new(ZKM_ERR_NOT_MASTER, "not master: no fencing token"))?;
        // SAFETY: not NULL, writable by the caller's contract.
        unsafe { token.write(value) };
        Ok(())
    })
}

/// The counters a service alerts on, as [`zkm_election_metrics`] copies them.
/// A plain struct: the caller owns it (on its stack, say); nothing to free.
///
/// ```c
/// zkm_metrics m;
/// if (zkm_election_metrics(election, &m) == ZKM_OK && m.lease_lapses > 0)
///     fprintf(stderr, "lease lapsed %llu times\n", (unsigned long long)m.lease_lapses);
/// ```
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct zkm_metrics {
    /// What `zkm_is_master` said when the metrics were taken.
    pub is_master: bool,
    /// Changes of role, from any role to another.
    pub role_transitions: u64,
    /// Reconnects of the member session that kept the session.
    pub reconnects: u64,
    /// Member sessions lost; each costs the member its place in the queue.
    pub session_losses: u64,
    /// Times a master's lease ran out before a renewal extended it.
    pub lease_lapses: u64,
    /// Milliseconds since a renewal last extended the lease; -1 before the first.
    pub ms_since_last_renewal: i64,
    /// The session timeout the server granted, in milliseconds; -1 until known.
    pub session_timeout_ms: i64,
}

/// Copies the election's metrics into `*out`: cheap (a copy under the
/// status lock), callable from any thread, and from a callback.
///
/// # Errors
/// `ZKM_ERR_NULL`.
///
/// ```c
/// zkm_metrics m;
/// zkm_election_metrics(election, &m);
/// printf("zk_master_is_master %d\n", m.is_master);
/// ```
///
/// # Safety
/// `election` is NULL or a live election; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_election_metrics(
    election: *const zkm_election,
    out: *mut zkm_metrics,
) -> zkm_result {
    guard("zkm_election_metrics", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(election) }?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let m = handle.election.metrics();
        let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let metrics = zkm_metrics {
            is_master: m.is_master,
            role_transitions: m.role_transitions,
            reconnects: m.reconnects,
            session_losses: m.session_losses,
            lease_lapses: m.lease_lapses,
            ms_since_last_renewal: m.since_last_renewal().map_or(-1, millis),
            session_timeout_ms: m.session_timeout.map_or(-1, millis),
        };
        // SAFETY: not NULL, writable by the caller's contract.
        unsafe { out.write(metrics) };
        Ok(())
    })
}

/// Copies the state of the election now (role, connection, member name,
/// masters and members with their data, fencing token, granted timeout).
/// On success `*out` is a new snapshot the caller owns and frees with
/// [`zkm_snapshot_free`]; its pointers stay valid until then.
///
/// The fields are read one after the other, so a change that happens during
/// the call may show in some and not in others; a callback's
/// `zkm_role_change` is consistent.
///
/// # Errors
/// `ZKM_ERR_NULL`.
///
/// ```c
/// zkm_snapshot *s = NULL;
/// if (zkm_snapshot_take(election, &s) == ZKM_OK) {
///     printf("register ok! I'm %s\n", s->member ? s->member : "");
///     zkm_snapshot_free(s);
/// }
/// ```
///
/// # Safety
/// `election` is NULL or a live election; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_snapshot_take(
    election: *const zkm_election,
    out: *mut *mut zkm_snapshot,
) -> zkm_result {
    guard("zkm_snapshot_take", || {
        // SAFETY: by the caller's contract.
        let e = &unsafe { live(election) }?.election;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let mut tables = Tables::new(&e.masters(), &e.members());
        let member = tables.optional(e.member_name().as_deref());
        let token = e.fencing_token();
        let snapshot = zkm_snapshot {
            role: e.role().into(),
            connection: e.connection().0.into(),
            member,
            masters: tables.masters.as_ptr(),
            masters_len: tables.masters.len(),
            members: tables.members.as_ptr(),
            members_len: tables.members.len(),
            has_fencing_token: token.is_some(),
            fencing_token: token.unwrap_or(0),
            session_timeout_ms: e
                .session_timeout()
                .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        };
        let owned = Box::into_raw(Box::new(OwnedSnapshot { snapshot, tables }));
        // SAFETY: not NULL, writable by the caller's contract; the snapshot
        // is the first field of a repr(C) struct, so the pointers are equal.
        unsafe { out.write(owned.cast::<zkm_snapshot>()) };
        Ok(())
    })
}

/// Frees a snapshot made by [`zkm_snapshot_take`]. NULL does nothing.
///
/// ```c
/// zkm_snapshot_free(s);
/// ```
///
/// # Safety
/// `snapshot` is NULL or a pointer from [`zkm_snapshot_take`] not freed
/// before.
#[no_mangle]
pub unsafe extern "C" fn zkm_snapshot_free(snapshot: *mut zkm_snapshot) {
    if !snapshot.is_null() {
        // SAFETY: made by Box::into_raw of an OwnedSnapshot in
        // zkm_snapshot_take (same address), freed once.
        drop(unsafe { Box::from_raw(snapshot.cast::<OwnedSnapshot>()) });
    }
}

/// Steps down and joins again at the back of the queue, in the same session:
/// the node is deleted (so the next member takes over at once) and a new one
/// created. Blocks until the new node exists.
///
/// # Errors
/// `ZKM_ERR_NULL`; `ZKM_ERR_RESIGNED` after [`zkm_resign`]; a server error.
///
/// ```c
/// if (zkm_is_master(election))
///     zkm_requeue(election);   /* let someone else lead for a while */
/// ```
///
/// # Safety
/// `election` is NULL or a live election.
#[no_mangle]
pub unsafe extern "C" fn zkm_requeue(election: *const zkm_election) -> zkm_result {
    guard("zkm_requeue", || {
        // SAFETY: by the caller's contract.
        Ok(unsafe { live(election) }?.election.requeue()?)
    })
}

/// Leaves the election: steps down, deletes this member's node so a
/// successor takes over at once, and closes the session. Blocks until the
/// node is deleted or the attempt timed out. Callbacks get the last change,
/// then are dropped. Calling it again does nothing; [`zkm_election_free`]
/// calls it. Allowed from a callback of the same election.
///
/// # Errors
/// `ZKM_ERR_NULL`.
///
/// ```c
/// zkm_resign(election);
/// assert(!zkm_is_master(election));
/// ```
///
/// # Safety
/// `election` is NULL or a live election.
#[no_mangle]
pub unsafe extern "C" fn zkm_resign(election: *const zkm_election) -> zkm_result {
    guard("zkm_resign", || {
        // SAFETY: by the caller's contract.
        unsafe { live(election) }?.election.resign();
        Ok(())
    })
}

/// Calls `callback(change, user_data)` on every change of role, of
/// connection or of the masters from now on, first with the state as it is
/// now (as a change from `ZKM_ROLE_OFFLINE`). Stores the new callback's id
/// (never 0) in `*id` if `id` is not NULL.
///
/// Callbacks run on one thread of the library (one per election), one at a
/// time, in the order of the changes, never while the library holds a lock.
/// A callback may call any function on this election except
/// [`zkm_election_free`]. `user_data` is passed as is and never freed by the
/// library: it must stay valid until [`zkm_callback_remove`] or
/// [`zkm_election_free`] returns.
///
/// # Errors
/// `ZKM_ERR_NULL` when `election` or `callback` is NULL.
///
/// ```c
/// uint64_t id;
/// zkm_on_change(election, on_change, &state, &id);
/// ```
///
/// # Safety
/// `election` is NULL or a live election; `callback` is safe to call with
/// `user_data` from the callback thread; `id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_on_change(
    election: *const zkm_election,
    callback: zkm_role_cb,
    user_data: *mut c_void,
    id: *mut u64,
) -> zkm_result {
    guard("zkm_on_change", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(election) }?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        let new_id = handle
            .registry
            .add(callback, user_data, |f| handle.election.on_change(f));
        if !id.is_null() {
            // SAFETY: not NULL, writable by the caller's contract.
            unsafe { id.write(new_id) };
        }
        Ok(())
    })
}

/// Removes a callback registered with [`zkm_on_change`]. Called from any
/// thread but the callback thread, it waits until the callback is not
/// running: once it returns the callback never runs again and its
/// `user_data` may be freed. Called from a callback (to remove itself or
/// another), it does not wait, and the removed callback does not run again
/// after the running one returns.
///
/// # Errors
/// `ZKM_ERR_NULL`; `ZKM_ERR_UNKNOWN_CALLBACK` for an id not registered on
/// this election (or already removed).
///
/// ```c
/// zkm_callback_remove(election, id);
/// free(state);
/// ```
///
/// # Safety
/// `election` is NULL or a live election.
#[no_mangle]
pub unsafe extern "C" fn zkm_callback_remove(election: *const zkm_election, id: u64) -> zkm_result {
    guard("zkm_callback_remove", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(election) }?;
        let rust_id = handle.registry.remove(id).ok_or_else(|| {
            Failure::new(
                ZKM_ERR_UNKNOWN_CALLBACK,
                format!("no callback {id} on this election"),
            )
        })?;
        if let Some(rust_id) = rust_id {
            handle.election.remove_callback(rust_id);
        }
        Ok(())
    })
}
