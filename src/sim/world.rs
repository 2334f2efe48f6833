//! The simulated world: members running real cores, the ZooKeeper model, a
//! seeded event queue ordered by simulated time, and the checks.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::backend::{Client, ClientKey, ServerSession, Stale};
use super::faults::{Fault, Mix};
use super::model::Tree;
use super::{Rng, Stats, Violation};
use crate::core::{Command, Conn, Core, Input, Op, RequestId, SessionId, Settings, View};

/// Something that happens at a simulated instant.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    /// The member's core asked to be woken (stale unless `generation` matches).
    Wake {
        member: usize,
        generation: u64,
    },
    /// An input reaches the member (through its backend).
    Deliver {
        member: usize,
        input: Input,
    },
    /// A session's open request reaches the server.
    OpenArrive {
        key: ClientKey,
    },
    /// A request reaches the server on connection `conn`.
    Arrive {
        key: ClientKey,
        conn: Conn,
        request: RequestId,
        op: Op,
    },
    /// A session's close reaches the server.
    CloseArrive {
        server_session: i64,
    },
    /// A disconnected backend tries to reconnect.
    Reconnect {
        key: ClientKey,
    },
    Fault(Fault),
}

/// One member: a core, its clock, and what the faults did to it.
#[derive(Debug)]
pub(super) struct Member {
    pub(super) core: Core,
    /// Its clock runs at `1 + ppm / 1e6` of simulated time.
    ppm: i64,
    pub(super) frozen: bool,
    pub(super) partitioned: bool,
    /// Inputs that reached the member while it was frozen.
    pub(super) backlog: Vec<Input>,
    generation: u64,
    /// When the current wake-up is set for.
    wake_at: Option<Duration>,
    pub(super) view: Option<View>,
    pub(super) resigning: bool,
    pub(super) resigned: bool,
    group: String,
    /// An observer (watch-only core): the last of `members`, never faulted.
    pub(super) observer: bool,
}

impl Member {
    pub(super) fn node_path(&self) -> Option<String> {
        let name = self.view.as_ref()?.member.as_ref()?;
        Some(format!("{}/{name}", self.group))
    }
}

pub(super) struct World {
    pub(super) now: Duration,
    base: Instant,
    pub(super) rng: Rng,
    pub(super) mix: Mix,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    pub(super) members: Vec<Member>,
    pub(super) masters: usize,
    pub(super) session_timeout: Duration,
    pub(super) stale_length: Duration,
    pub(super) group: String,
    pub(super) claims_dir: String,
    pub(super) clients: BTreeMap<ClientKey, Client>,
    pub(super) tree: Tree,
    pub(super) sessions: BTreeMap<i64, ServerSession>,
    pub(super) next_server_session: i64,
    pub(super) server_up: bool,
    /// Whether this schedule's hand deletions are of claims (else of
    /// member nodes and the group).
    pub(super) claims_by_hand: bool,
    /// Once set, messages are neither slow nor lost.
    pub(super) calm: bool,
    pub(super) stale: Option<Stale>,
    pub(super) stats: Stats,
    trace: Option<VecDeque<String>>,
    /// Since when, and which, more than `masters` members are master.
    pub(super) overlap: Option<(Duration, Vec<usize>)>,
}

/// Lines of trace kept for a failure report (env `ZK_MASTER_SIM_TRACE`).
fn trace_lines_kept() -> usize {
    std::env::var("ZK_MASTER_SIM_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}
/// The ZooKeeper tick; sessions are granted 2 to 20 ticks.
pub(super) const TICK: Duration = Duration::from_millis(200);

impl World {
    pub(super) fn new(seed: u64, mix: Mix, trace: bool) -> World {
        let mut rng = Rng::new(seed);
        let count = 2 + rng.below(4) as usize;
        let masters = 1 + rng.below(count.min(3) as u64 - 1) as usize;
        let session_timeout = [1000, 2000, 2000, 5000][rng.below(4) as usize];
        let session_timeout = Duration::from_millis(session_timeout);
        let group = "/Roles/workers".to_owned();
        let claims_by_hand = rng.chance(0.3);
        let base = Instant::now();
        let settings = Settings {
            connect: "sim".into(),
            group: group.clone(),
            prefix: "worker".into(),
            masters,
            data: b"1".to_vec(),
            session_timeout,
            connect_timeout: Duration::from_secs(3600),
            lease_margin: None,
            // Both modes on every mix; from the seed, so no other draw moves.
            herd_free: seed % 2 == 1,
            observe: false,
            mutant: mix.mutant,
        };
        let observer = Settings {
            herd_free: false,
            observe: true,
            ..settings.clone()
        };
        let members = (0..=count)
            .map(|m| {
                let ppm = rng.below(2 * mix.clock_ppm as u64 + 1) as i64 - mix.clock_ppm;
                let settings = if m == count { &observer } else { &settings };
                Member {
                    core: Core::new(settings.clone(), base, rng.next()),
                    ppm,
                    frozen: false,
                    partitioned: false,
                    backlog: Vec::new(),
                    generation: 0,
                    wake_at: None,
                    view: None,
                    resigning: false,
                    resigned: false,
                    group: group.clone(),
                    observer: m == count,
                }
            })
            .collect();
        World {
            now: Duration::ZERO,
            base,
            rng,
            queue: BTreeMap::new(),
            seq: 0,
            members,
            masters,
            session_timeout,
            // syncLimit 5 ticks, as zoo_sample.cfg has it.
            stale_length: TICK * 5,
            claims_dir: format!("{group}.claims"),
            group,
            clients: BTreeMap::new(),
            tree: Tree::new(),
            sessions: BTreeMap::new(),
            next_server_session: 0x100,
            server_up: true,
            calm: false,
            claims_by_hand,
            stale: None,
            stats: Stats::default(),
            trace: trace.then(VecDeque::new),
            overlap: None,
            mix,
        }
    }

    /// The whole schedule: faults, then liveness, then resigning.
    pub(super) fn run_schedule(&mut self) -> Result<(), Violation> {
        for m in 0..self.members.len() {
            self.after_core(m);
        }
        let first = self
            .rng
            .between(Duration::from_millis(300), self.mix.fault_gap);
        self.schedule(first, Event::Fault(Fault::Pick));
        let faults_end = self.mix.fault_window;
        self.run_until(faults_end)?;
        if self.overlap.is_some() {
            self.run_until(faults_end + Duration::from_secs(120))?;
        }
        self.calm = true;
        if self.mix.promise_only {
            return Ok(());
        }
        self.check_liveness(faults_end)?;
        self.check_cleanliness()
    }

    /// Runs events and expiries up to `end`, checking the promise after each.
    pub(super) fn run_until(&mut self, end: Duration) -> Result<(), Violation> {
        loop {
            let next_event = self.queue.keys().next().map(|(t, _)| *t);
            let next_expiry = self.next_expiry();
            let lease_end = self.next_lease_end();
            let next = [next_event, next_expiry, lease_end]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end + Duration::from_nanos(1));
            if next > end {
                self.now = self.now.max(end);
                return Ok(());
            }
            self.now = next;
            if lease_end == Some(next) {
                // Only a lease ran out.
            } else if next_expiry == Some(next) {
                self.touch_sessions();
                self.expire_due();
            } else if let Some((_, event)) = self.queue.pop_first() {
                self.stats.events += 1;
                self.stats.calm_events += u64::from(self.calm);
                if self.is_stale_wake(&event) {
                    // Changes nothing; leases only run out meanwhile.
                    self.stats.stale_wakes += 1;
                    continue;
                }
                self.note(|| format!("{event:?}"));
                self.touch_sessions();
                self.handle(event);
            }
            self.check_promise()?;
            self.check_views()?;
        }
    }

    fn is_stale_wake(&self, event: &Event) -> bool {
        matches!(event, Event::Wake { member, generation } if self.members[*member].generation != *generation)
    }

    pub(super) fn schedule(&mut self, after: Duration, event: Event) {
        self.schedule_at(self.now + after, event);
    }

    pub(super) fn schedule_at(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Wake { member, generation } => {
                let m = &mut self.members[member];
                if generation == m.generation {
                    m.wake_at = None; // a frozen member is woken again at its thaw
                }
                if generation == m.generation && !m.frozen {
                    let now = self.local_now(member);
                    self.members[member].core.handle_timeout(now);
                    self.after_core(member);
                }
            }
            Event::Deliver { member, input } => self.deliver(member, input),
            Event::OpenArrive { key } => self.open_arrive(key),
            Event::Arrive {
                key,
                conn,
                request,
                op,
            } => self.arrive(key, conn, request, op),
            Event::CloseArrive { server_session } => self.end_server_session(server_session),
            Event::Reconnect { key } => self.reconnect(key),
            Event::Fault(fault) => self.apply_fault(fault),
        }
    }

    /// Gives `input` to the member's core now, or keeps it while frozen.
    pub(super) fn feed(&mut self, member: usize, input: Input) {
        if self.members[member].frozen {
            self.members[member].backlog.push(input);
            return;
        }
        let now = self.local_now(member);
        self.members[member].core.handle(input, now);
        self.after_core(member);
    }

    /// Carries out the core's commands and sets its next wake-up.
    fn after_core(&mut self, member: usize) {
        while let Some(command) = self.members[member].core.poll_command() {
            self.note(|| format!("  m{member} -> {}", short_command(&command)));
            self.carry_out(member, command);
        }
        self.wake(member);
    }

    pub(super) fn wake(&mut self, member: usize) {
        let at = self.members[member]
            .core
            .poll_timeout()
            .map(|at| self.global_time(member, at).max(self.now));
        let m = &mut self.members[member];
        if at.is_some() && at == m.wake_at {
            return; // already set for then
        }
        m.generation += 1;
        m.wake_at = at;
        let generation = m.generation;
        if let Some(at) = at {
            self.schedule_at(at, Event::Wake { member, generation });
        }
    }

    fn carry_out(&mut self, member: usize, command: Command) {
        match command {
            Command::Open {
                session,
                purpose,
                timeout,
            } => self.open(member, session, purpose, timeout),
            Command::Send {
                session,
                request,
                op,
            } => self.send(member, session, request, op),
            Command::Cut { session } => self.drop_connection((member, session)),
            Command::Close { session } => self.close((member, session)),
            Command::Publish(view) => {
                if view.role == crate::role::Role::Master {
                    self.stats.master_views += 1;
                }
                self.members[member].view = Some(view);
            }
            Command::Resigned { .. } => self.members[member].resigned = true,
            Command::Notify(_) | Command::Joined(_) | Command::Requeued(_) => {}
        }
    }

    /// The member's clock at the current simulated time.
    pub(super) fn local_now(&self, member: usize) -> Instant {
        self.base + self.local_elapsed(member, self.now)
    }

    fn local_elapsed(&self, member: usize, t: Duration) -> Duration {
        let ppm = 1_000_000 + self.members[member].ppm;
        let nanos = t.as_nanos() * ppm as u128 / 1_000_000;
        Duration::from_nanos(nanos as u64)
    }

    /// The first simulated time at which the member's clock reads `at`.
    pub(super) fn global_time(&self, member: usize, at: Instant) -> Duration {
        let local = at.saturating_duration_since(self.base);
        let ppm = 1_000_000 + self.members[member].ppm;
        let mut t = Duration::from_nanos((local.as_nanos() * 1_000_000 / ppm as u128) as u64);
        while self.local_elapsed(member, t) < local {
            t += Duration::from_nanos(1);
        }
        t
    }

    pub(super) fn is_master(&self, member: usize) -> bool {
        self.members[member]
            .core
            .is_master_at(self.local_now(member))
    }

    /// Adds a line to the trace, if tracing.
    pub(super) fn note(&mut self, line: impl FnOnce() -> String) {
        let now = self.now;
        if let Some(trace) = &mut self.trace {
            if trace.len() >= trace_lines_kept() {
                trace.pop_front();
            }
            trace.push_back(format!("{:>10.4}s {}", now.as_secs_f64(), line()));
        }
    }

    pub(super) fn trace_lines(&self) -> Vec<String> {
        self.trace.iter().flatten().cloned().collect()
    }

    /// A message's travel time: mostly fast, sometimes slow.
    pub(super) fn delay(&mut self) -> Duration {
        if !self.calm && self.rng.chance(self.mix.slow_chance) {
            self.rng.between(Duration::from_millis(5), self.mix.slow)
        } else {
            self.fast_delay()
        }
    }

    pub(super) fn fast_delay(&mut self) -> Duration {
        self.rng
            .between(Duration::from_micros(200), Duration::from_millis(5))
    }
}

/// A command, briefly, for the trace.
fn short_command(command: &Command) -> String {
    match command {
        Command::Publish(v) => format!(
            "Publish(role {:?}, lease_until {:?}, member {:?}, connection {:?})",
            v.role,
            v.lease_until.map(|_| "set"),
            v.member,
            v.connection
        ),
        Command::Notify(_) => "Notify".into(),
        other => format!("{other:?}"),
    }
}

/// For the trace: which session a key names.
pub(super) fn key_text(key: ClientKey) -> String {
    let (member, SessionId(id)) = key;
    format!("m{member}/s{id}")
}
