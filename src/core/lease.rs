//! The lease: renewals (a `sync` and an `exists` of our node, sent
//! together) and what they prove; see the module docs of [`super`].

use std::time::{Duration, Instant};

use super::{later, Answer, Conn, Core, Failure, RequestId, Why};

/// The default lease margin: a tenth of the session timeout, for the delay
/// between the servers and the drift of clocks; see the README's
/// "Guarantees".
pub(crate) fn default_margin(timeout: Duration) -> Duration {
    timeout / 10
}

/// The least time from a renewal's answer to the next renewal: a quarter of
/// the timeout, which is at least half a server tick (a server grants no
/// less than two ticks). A follower reports what its clients did to the
/// leader every half tick; so by the time the next renewal's `sync` has
/// passed through the leader, the previous renewal was reported.
pub(super) fn renewal_gap(timeout: Duration) -> Duration {
    timeout / 4
}

/// What the next renewal's lease is counted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Base {
    /// A touch of the session by the leader itself, no earlier than `at`:
    /// its creation (`at`: when it was asked for) or its revalidation on a
    /// reconnect (`at`: when the last answered renewal was sent).
    Leader { conn: Conn, at: Instant },
    /// A renewal sent at `sent` and answered at `answered` on `conn`.
    Renewal {
        conn: Conn,
        sent: Instant,
        answered: Instant,
    },
}

impl Core {
    /// Whether a renewal will be due: a node is held and none is in flight.
    pub(super) fn renewal_due_soon(&self) -> bool {
        self.node.own().is_some()
            && !self
                .pending
                .values()
                .any(|p| matches!(p.why, Why::Renew { .. } | Why::RenewSync))
    }

    /// The answer to a renewal (or a confirmation) of our node.
    pub(super) fn on_renewed(
        &mut self,
        path: &str,
        result: Result<Answer, Failure>,
        proof: Option<(Instant, Conn)>,
        now: Instant,
    ) {
        self.renew_at = later(now, renewal_gap(self.timeout));
        let Some(own) = self.node.own() else { return };
        if own.path != path {
            return;
        }
        match result {
            Ok(Answer::Stat(Some(stat))) if stat.owner == own.owner => {
                self.extend_lease(proof, now)
            }
            #[cfg(test)]
            Ok(Answer::Stat(Some(_))) if self.settings.mutant == super::Mutant::NoOwnerCheck => {
                self.extend_lease(proof, now)
            }
            Ok(_) => self.step_down_from_deleted_node(now),
            Err(e) => self.member_failed("exists", path, e, now),
        }
    }

    /// The `sync` ahead of a renewal was answered: on `via`, if on the
    /// connection it left on.
    pub(super) fn on_renew_synced(
        &mut self,
        request: RequestId,
        result: Result<Answer, Failure>,
        via: Option<Conn>,
        now: Instant,
    ) {
        match result {
            Ok(_) if via.is_some() => self.synced = Some(request),
            Ok(_) | Err(Failure::Interrupted(_)) => {}
            Err(e) => self.member_failed("sync", "/", e, now),
        }
    }

    /// A renewal sent at `sent` on `conn` was answered now: a server in touch
    /// with the leader showed our node alive in our session. The leader has
    /// heard of the session at the base (see [`Base`]), so it cannot
    /// expire it before the base + timeout; the lease ends a margin earlier.
    pub(super) fn extend_lease(&mut self, proof: Option<(Instant, Conn)>, now: Instant) {
        let Some((sent, conn)) = proof else { return };
        let gap = renewal_gap(self.timeout);
        let from = match self.base {
            Some(Base::Leader { conn: c, at }) if c == conn => Some(at),
            Some(Base::Renewal {
                conn: c,
                sent: before,
                answered,
            }) if c == conn && later(answered, gap) <= sent => Some(before),
            _ => None,
        };
        self.base = Some(Base::Renewal {
            conn,
            sent,
            answered: now,
        });
        let Some(from) = from else { return };
        self.counters.last_renewal = Some(now);
        let end = later(from, self.timeout.saturating_sub(self.margin));
        if self.lease_until.is_none_or(|current| end > current) {
            self.lease_until = Some(end);
        }
    }
}
