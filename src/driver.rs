//! The election thread: feeds the core its inputs and the time, and carries
//! out its commands on a backend. It never waits on the network: the backend
//! answers through the same channel as the handle.

use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use parking_lot::Mutex;

use crate::backend::zk08::Zk08;
use crate::backend::{Backend, InputSink};
use crate::callbacks::{self, Dispatch};
use crate::config::Config;
use crate::core::{Command, Core, Input, Settings};
use crate::error::{Error, Result};
use crate::state::Shared;

/// What reaches the election thread.
pub(crate) enum Message {
    /// From the backend.
    Input(Input),
    Requeue(SyncSender<Result<()>>),
    Resign(SyncSender<()>),
}

/// What a handle (an `Election` or an `Observer`) holds of its running
/// driver: the status it publishes, the channels to it and to the callback
/// thread, and both threads.
pub(crate) struct Handles {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inputs: Sender<Message>,
    pub(crate) dispatch: Sender<Dispatch>,
    pub(crate) thread: JoinHandle<()>,
    pub(crate) callback_thread: JoinHandle<()>,
}

/// Checks `config`, then starts a callback thread and a driver thread
/// (`zk-master-<role>`) running a core with `settings` on the `zookeeper`
/// crate's backend. Returns the handles, and the channel on which the driver
/// reports how the join (or the first read, for an observer) ended.
pub(crate) fn start(
    config: &Config,
    settings: Settings,
    role: &'static str,
) -> Result<(Handles, Receiver<Result<()>>)> {
    config.validate()?;
    let ensemble = config.ensemble()?;
    let thread_error = |thread: &'static str| {
        move |e: std::io::Error| Error::Spawn {
            thread,
            source: e.into(),
        }
    };
    let shared = Arc::new(Shared::new());
    let (inputs, messages) = mpsc::channel();
    let (dispatch, callback_thread) = callbacks::spawn().map_err(thread_error("callbacks"))?;
    let backend_inputs = inputs.clone();
    // Runs on the backend's threads: a channel send only.
    let sink: InputSink = Arc::new(move |input| {
        let _ = backend_inputs.send(Message::Input(input));
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let driver = Driver {
        core: Core::new(settings, Instant::now(), seed),
        backend: Zk08::new(config, ensemble, sink),
        messages,
        shared: shared.clone(),
        dispatch: dispatch.clone(),
    };
    let (joined_tx, joined_rx) = mpsc::sync_channel(1);
    let thread = thread::Builder::new()
        .name(format!("zk-master-{role}"))
        .spawn(move || driver.run(joined_tx))
        .map_err(thread_error(role))?;
    let handles = Handles {
        shared,
        inputs,
        dispatch,
        thread,
        callback_thread,
    };
    Ok((handles, joined_rx))
}

/// Waits for the driver's report on how the start ended (see [`start`]) and
/// returns `handle` if it went well. On an error `handle` is dropped, which
/// ends both threads.
pub(crate) fn started<T>(
    handle: T,
    joined: &Receiver<Result<()>>,
    op: &'static str,
    role: &str,
) -> Result<T> {
    match joined.recv() {
        Ok(result) => result.map(|()| handle),
        Err(_) => Err(Error::Server {
            op,
            path: String::new(),
            reason: format!("the {role} thread ended"),
        }),
    }
}

/// Joins the callback thread once, unless called on it: a handle dropped by
/// one of its own callbacks cannot wait for itself (that thread ends when the
/// callback returns).
pub(crate) fn join_callbacks(thread: &Mutex<Option<JoinHandle<()>>>) {
    if let Some(callbacks) = thread.lock().take() {
        if callbacks.thread().id() != thread::current().id() {
            let _ = callbacks.join();
        }
    }
}

pub(crate) struct Driver<B: Backend> {
    pub(crate) core: Core,
    pub(crate) backend: B,
    pub(crate) messages: Receiver<Message>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) dispatch: Sender<Dispatch>,
}

impl<B: Backend> Driver<B> {
    /// Runs until the core is done: reports the join on `joined`, then the
    /// election until resigned (or until the handle is gone).
    pub(crate) fn run(mut self, joined: SyncSender<Result<()>>) {
        let mut joined = Some(joined);
        let mut requeues: VecDeque<SyncSender<Result<()>>> = VecDeque::new();
        let mut resigned: Vec<SyncSender<()>> = Vec::new();
        let mut close_by = None;
        loop {
            while let Some(command) = self.core.poll_command() {
                match command {
                    Command::Open {
                        session,
                        purpose,
                        timeout,
                    } => self.backend.open(session, purpose, timeout),
                    Command::Send {
                        session,
                        request,
                        op,
                    } => self.backend.send(session, request, op),
                    Command::Cut { session } => self.backend.cut(session),
                    Command::Close { session } => self.backend.close(session),
                    Command::Publish(view) => self.shared.publish(view),
                    Command::Notify(change) => {
                        let _ = self.dispatch.send(Dispatch::Change(change));
                    }
                    Command::Joined(result) => {
                        if let Some(joined) = joined.take() {
                            let _ = joined.send(result);
                        }
                    }
                    Command::Requeued(result) => {
                        if let Some(reply) = requeues.pop_front() {
                            let _ = reply.send(result);
                        }
                    }
                    Command::Resigned { close_by: at } => close_by = Some(at),
                }
            }
            if self.core.is_done() {
                self.backend
                    .wait_closed(close_by.unwrap_or_else(Instant::now));
                for reply in resigned {
                    let _ = reply.send(());
                }
                return;
            }
            let message = match self.core.poll_timeout() {
                Some(at) => {
                    let wait = at.saturating_duration_since(Instant::now());
                    self.messages.recv_timeout(wait)
                }
                None => self
                    .messages
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            let now = Instant::now();
            match message {
                Ok(Message::Input(input)) => self.core.handle(input, now),
                Ok(Message::Requeue(reply)) => {
                    requeues.push_back(reply);
                    self.core.handle(Input::Requeue, now);
                }
                Ok(Message::Resign(reply)) => {
                    resigned.push(reply);
                    self.core.handle(Input::Resign, now);
                }
                Err(RecvTimeoutError::Timeout) => self.core.handle_timeout(now),
                // Every sender is gone: the handle was dropped without resigning.
                Err(RecvTimeoutError::Disconnected) => self.core.handle(Input::Resign, now),
            }
        }
    }
}
