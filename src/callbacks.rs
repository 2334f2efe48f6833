//! Runs user callbacks on a thread of their own: in order, one at a time,
//! with no lock of the library held, and a panic contained to the callback.

use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Sender};
use std::thread;

use crate::role::RoleChange;

/// A callback as registered with [`Election::on_change`](crate::Election::on_change).
pub(crate) type Callback = Box<dyn FnMut(&RoleChange) + Send>;

/// What the callback thread is asked to do, in order.
pub(crate) enum Dispatch {
    Register(Callback),
    Change(RoleChange),
}

/// Starts the callback thread. It ends when every sender is dropped, after
/// running what was already sent.
pub(crate) fn spawn() -> std::io::Result<Sender<Dispatch>> {
    let (tx, rx) = mpsc::channel::<Dispatch>();
    thread::Builder::new()
        .name("zk-master-callbacks".into())
        .spawn(move || {
            let mut callbacks: Vec<Callback> = Vec::new();
            for message in rx {
                match message {
                    Dispatch::Register(callback) => callbacks.push(callback),
                    Dispatch::Change(change) => {
                        for callback in &mut callbacks {
                            let run = panic::catch_unwind(AssertUnwindSafe(|| callback(&change)));
                            if run.is_err() {
                                log::error!(
                                    "a role-change callback panicked; the election goes on"
                                );
                            }
                        }
                    }
                }
            }
        })?;
    Ok(tx)
}
