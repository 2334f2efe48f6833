//! The election thread: feeds the core its inputs and the time, and carries
//! out its commands on a backend. It never waits on the network: the backend
//! answers through the same channel as the handle.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use crate::backend::Backend;
use crate::callbacks::Dispatch;
use crate::core::{Command, Core, Input};
use crate::error::Result;
use crate::state::Shared;

/// What reaches the election thread.
pub(crate) enum Message {
    /// From the backend.
    Input(Input),
    Requeue(SyncSender<Result<()>>),
    Resign(SyncSender<()>),
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
