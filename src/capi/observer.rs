//! `zkm_observer`: following a group without joining it, from C: its
//! members and masters with their data, and a callback on every change.

use std::ffi::c_void;
use std::sync::Arc;

use super::callbacks::{in_callback_of, zkm_role_cb, Registry};
use super::config::zkm_config;
use super::errors::{guard, zkm_result, Failure};
use super::view::{zkm_snapshot, OwnedSnapshot, Tables};
use crate::observer::Observer;

use zkm_result::*;

/// A follower of an election group that is not a member of it: an opaque
/// handle made by [`zkm_observer_watch`] and freed by [`zkm_observer_free`].
/// It creates nothing in the group, so it never becomes master, even in an
/// empty group. Thread-safe, as [`zkm_election`](super::zkm_election) is.
///
/// ```c
/// zkm_observer *observer = NULL;
/// if (zkm_observer_watch(config, &observer) == ZKM_OK) {
///     zkm_snapshot *s = NULL;
///     if (zkm_observer_snapshot_take(observer, &s) == ZKM_OK && s->masters_len > 0)
///         printf("master at %.*s\n", (int)s->masters[0].data_len, (const char *)s->masters[0].data);
///     zkm_snapshot_free(s);
///     zkm_observer_free(observer);
/// }
/// ```
pub struct zkm_observer {
    observer: Observer,
    registry: Arc<Registry>,
}

/// The observer behind `observer`, or `ZKM_ERR_NULL`.
///
/// # Safety
/// `observer` is NULL or a live pointer from [`zkm_observer_watch`].
unsafe fn live<'a>(observer: *const zkm_observer) -> Result<&'a zkm_observer, Failure> {
    // SAFETY: by the caller's contract.
    unsafe { observer.as_ref() }.ok_or_else(|| Failure::null("observer"))
}

/// Connects and reads the group of `config` (its connect string, group,
/// `masters`, credentials; its member data is not used). When it returns the
/// observer shows the group as it was, empty if the group does not exist yet
/// (it is then watched for its creation). `config` is read during the call
/// only. On success `*out` is a new observer the caller owns and frees with
/// [`zkm_observer_free`].
///
/// # Errors
/// `ZKM_ERR_NULL`; `ZKM_ERR_INVALID_CONFIG`; `ZKM_ERR_UNREACHABLE` when no
/// server answered within the connect timeout; `ZKM_ERR_ACCESS_DENIED` when
/// the group may not be read with these credentials.
///
/// ```c
/// zkm_observer *observer = NULL;
/// if (zkm_observer_watch(config, &observer) != ZKM_OK)
///     fprintf(stderr, "cannot follow the group: %s\n", zkm_last_error());
/// ```
///
/// # Safety
/// `config` is NULL or a live config; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_observer_watch(
    config: *const zkm_config,
    out: *mut *mut zkm_observer,
) -> zkm_result {
    guard("zkm_observer_watch", || {
        // SAFETY: by the caller's contract.
        let config = unsafe { config.as_ref() }.ok_or_else(|| Failure::null("config"))?;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let observer = Observer::watch(config.config.clone())?;
        let handle = Box::new(zkm_observer {
            observer,
            registry: Registry::new(),
        });
        // SAFETY: not NULL, writable by the caller's contract.
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(())
    })
}

/// Closes the observer's session, waits until none of its callbacks is
/// running, and frees it. No callback runs after it returns. NULL does
/// nothing and returns `ZKM_OK`.
///
/// # Errors
/// `ZKM_ERR_IN_CALLBACK` when called from one of this observer's own
/// callbacks: nothing is freed; free it from another thread.
///
/// ```c
/// zkm_observer_free(observer);
/// observer = NULL;
/// ```
///
/// # Safety
/// `observer` is NULL or a pointer from [`zkm_observer_watch`] not freed
/// before, that no other thread uses during or after the call.
#[no_mangle]
pub unsafe extern "C" fn zkm_observer_free(observer: *mut zkm_observer) -> zkm_result {
    guard("zkm_observer_free", || {
        if observer.is_null() {
            return Ok(());
        }
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(observer) }?;
        if in_callback_of(handle.registry.election) {
            return Err(Failure::new(
                ZKM_ERR_IN_CALLBACK,
                "zkm_observer_free called from one of the observer's own callbacks; \
                 free it from another thread",
            ));
        }
        handle.observer.close();
        handle.registry.close();
        // SAFETY: made by Box::into_raw in zkm_observer_watch, freed once.
        drop(unsafe { Box::from_raw(observer) });
        Ok(())
    })
}

/// Copies what the observer shows now: the members in election order and
/// the masters, each with its data, and the connection. The role is always
/// `ZKM_ROLE_OFFLINE`, `member` NULL and there is no fencing token. On
/// success `*out` is a new snapshot the caller frees with
/// [`zkm_snapshot_free`](super::zkm_snapshot_free).
///
/// # Errors
/// `ZKM_ERR_NULL`.
///
/// ```c
/// zkm_snapshot *s = NULL;
/// if (zkm_observer_snapshot_take(observer, &s) == ZKM_OK) {
///     printf("%zu members, %zu masters\n", s->members_len, s->masters_len);
///     zkm_snapshot_free(s);
/// }
/// ```
///
/// # Safety
/// `observer` is NULL or a live observer; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_observer_snapshot_take(
    observer: *const zkm_observer,
    out: *mut *mut zkm_snapshot,
) -> zkm_result {
    guard("zkm_observer_snapshot_take", || {
        // SAFETY: by the caller's contract.
        let o = &unsafe { live(observer) }?.observer;
        if out.is_null() {
            return Err(Failure::null("out"));
        }
        let now = o.snapshot();
        let tables = Tables::new(&now.masters, &now.members);
        let snapshot = zkm_snapshot {
            role: crate::role::Role::Offline.into(),
            connection: now.connection.into(),
            member: std::ptr::null(),
            masters: tables.masters.as_ptr(),
            masters_len: tables.masters.len(),
            members: tables.members.as_ptr(),
            members_len: tables.members.len(),
            has_fencing_token: false,
            fencing_token: 0,
            session_timeout_ms: 0,
        };
        let owned = Box::into_raw(Box::new(OwnedSnapshot { snapshot, tables }));
        // SAFETY: not NULL, writable by the caller's contract; the snapshot
        // is the first field of a repr(C) struct, so the pointers are equal.
        unsafe { out.write(owned.cast::<zkm_snapshot>()) };
        Ok(())
    })
}

/// Calls `callback(change, user_data)` on every change of the members, the
/// masters or the connection from now on, first with the state as it is
/// now. In `change`, the role is always `ZKM_ROLE_OFFLINE` and `member`
/// NULL; `masters` and `members` are the group's. Stores the callback's id
/// (never 0) in `*id` if `id` is not NULL. Callbacks run as the election's
/// do: on one library thread per observer, in order, never under a lock;
/// `user_data` must stay valid until [`zkm_observer_callback_remove`] or
/// [`zkm_observer_free`] returns.
///
/// # Errors
/// `ZKM_ERR_NULL` when `observer` or `callback` is NULL.
///
/// ```c
/// uint64_t id;
/// zkm_observer_on_change(observer, on_masters, &state, &id);
/// ```
///
/// # Safety
/// `observer` is NULL or a live observer; `callback` is safe to call with
/// `user_data` from the callback thread; `id` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn zkm_observer_on_change(
    observer: *const zkm_observer,
    callback: zkm_role_cb,
    user_data: *mut c_void,
    id: *mut u64,
) -> zkm_result {
    guard("zkm_observer_on_change", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(observer) }?;
        let callback = callback.ok_or_else(|| Failure::null("callback"))?;
        let new_id = handle
            .registry
            .add(callback, user_data, |f| handle.observer.on_change(f));
        if !id.is_null() {
            // SAFETY: not NULL, writable by the caller's contract.
            unsafe { id.write(new_id) };
        }
        Ok(())
    })
}

/// Removes a callback registered with [`zkm_observer_on_change`], as
/// [`zkm_callback_remove`](super::zkm_callback_remove) does for an election:
/// from another thread it waits until the callback is not running; from a
/// callback it does not wait.
///
/// # Errors
/// `ZKM_ERR_NULL`; `ZKM_ERR_UNKNOWN_CALLBACK` for an id not registered on
/// this observer (or already removed).
///
/// ```c
/// zkm_observer_callback_remove(observer, id);
/// ```
///
/// # Safety
/// `observer` is NULL or a live observer.
#[no_mangle]
pub unsafe extern "C" fn zkm_observer_callback_remove(
    observer: *const zkm_observer,
    id: u64,
) -> zkm_result {
    guard("zkm_observer_callback_remove", || {
        // SAFETY: by the caller's contract.
        let handle = unsafe { live(observer) }?;
        let rust_id = handle.registry.remove(id).ok_or_else(|| {
            Failure::new(
                ZKM_ERR_UNKNOWN_CALLBACK,
                format!("no callback {id} on this observer"),
            )
        })?;
        if let Some(rust_id) = rust_id {
            handle.observer.remove_callback(rust_id);
        }
        Ok(())
    })
}
