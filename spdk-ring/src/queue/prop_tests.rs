//! Property tests: random pushes (kinds, flags, targets), random driver answers
//! (NoMem, Failed, abort refusals), completions in random order, stale tokens,
//! unblocks, time steps and lazy reaping (so the CQ overflows), then shutdown.
//! Checked: (0) liveness: every admitted entry completes once the driver
//! finishes its work, without a shutdown, (1) every accepted user_data completes exactly once, (2) chains
//! complete in push order and fail as a unit, (3) DRAIN is a full barrier,
//! (4) Io entries of a target that had no chain predecessor start in push
//! order, (5) stale tokens never
//! complete anything; plus the queue's internal invariants after every step.

use std::collections::{HashMap, VecDeque};

use proptest::prelude::*;

use super::mock::{proptest_config, MockDriver, TestOp};
use super::ring::TraceEvent;
use super::*;

/// Registered targets; Io entries also draw target `TARGETS`, which is unknown to the queue.
const TARGETS: u32 = 3;

#[derive(Clone, Debug)]
enum KindSpec {
    Io(u32),
    Nop,
    /// Picks one of the last few pushed entries, or None for a user_data nobody has.
    Cancel(Option<usize>),
    Timeout {
        after_ns: u64,
        count: u32,
    },
    LinkTimeout {
        after_ns: u64,
    },
}

#[derive(Clone, Debug)]
enum Action {
    Push {
        kind: KindSpec,
        link: bool,
        drain: bool,
    },
    /// An Io entry with LINK followed by its LinkTimeout, so link timeouts are often valid.
    PushGuarded {
        target: u32,
        after_ns: u64,
        link: bool,
    },
    Submit,
    Advance(u64),
    Complete {
        pick: usize,
        result: u8,
    },
    Stale {
        pick: usize,
    },
    Unblock(u32),
    Pop(usize),
}

#[derive(Clone, Debug)]
struct Scenario {
    sq_entries: u32,
    cq_extra: u32,
    slots: u32,
    abort_fails: bool,
    outcomes: Vec<u8>,
    actions: Vec<Action>,
}

fn kind_strategy() -> impl Strategy<Value = KindSpec> {
    prop_oneof![
        6 => (0..TARGETS).prop_map(KindSpec::Io),
        1 => prop_oneof![(0..TARGETS).prop_map(KindSpec::Io), Just(KindSpec::Io(TARGETS))],
        1 => Just(KindSpec::Nop),
        2 => proptest::option::weighted(0.9, any::<usize>()).prop_map(KindSpec::Cancel),
        1 => (0u64..40, 0u32..3).prop_map(|(after_ns, count)| KindSpec::Timeout { after_ns, count }),
        2 => (0u64..20).prop_map(|after_ns| KindSpec::LinkTimeout { after_ns }),
    ]
}

fn action_strategy() -> impl Strategy<Value = Action> {
    prop_oneof![
        10 => (kind_strategy(), proptest::bool::weighted(0.35), proptest::bool::weighted(0.1))
            .prop_map(|(kind, link, drain)| Action::Push { kind, link, drain }),
        2 => (0..TARGETS, 0u64..12, any::<bool>())
            .prop_map(|(target, after_ns, link)| Action::PushGuarded { target, after_ns, link }),
        3 => Just(Action::Submit),
        3 => (0u64..30).prop_map(Action::Advance),
        5 => (any::<usize>(), 0u8..5).prop_map(|(pick, result)| Action::Complete { pick, result }),
        1 => any::<usize>().prop_map(|pick| Action::Stale { pick }),
        1 => (0..TARGETS).prop_map(Action::Unblock),
        2 => (0usize..6).prop_map(Action::Pop),
    ]
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    (
        1u32..8,
        0u32..4,
        1u32..8,
        any::<bool>(),
        proptest::collection::vec(0u8..10, 0..60),
        proptest::collection::vec(action_strategy(), 1..160),
    )
        .prop_map(
            |(sq_entries, cq_extra, slots, abort_fails, outcomes, actions)| Scenario {
                sq_entries,
                cq_extra,
                slots,
                abort_fails,
                outcomes,
                actions,
            },
        )
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Tag {
    Io(u32),
    Nop,
    Cancel,
    Timeout,
    LinkTimeout,
}

#[derive(Debug)]
struct Pushed {
    tag: Tag,
    /// LINK as the queue will see it (cleared when the entry was the SQ tail at a submit).
    link: bool,
    drain: bool,
}

#[derive(Debug)]
struct Chain {
    members: Vec<u64>,
    /// Longer than the slot table: every member must fail EINVAL.
    oversize: bool,
}

struct Harness {
    q: RingQueue<TestOp>,
    driver: MockDriver,
    sq_entries: usize,
    slots: usize,
    now: u64,
    /// Indexed by user_data (= push index of accepted entries).
    pushed: Vec<Pushed>,
    model_sq: VecDeque<u64>,
    chains: Vec<Chain>,
    results: HashMap<u64, IoResult>,
    popped: Vec<u64>,
    finished_tokens: Vec<Token>,
    blocked: [bool; TARGETS as usize],
    seen_starts: usize,
    seen_aborts: usize,
}

fn err(errno: i32) -> IoResult {
    Err(IoError::errno(errno))
}

impl Harness {
    fn new(scenario: &Scenario) -> Self {
        let config = QueueConfig {
            sq_entries: scenario.sq_entries,
            cq_entries: scenario.sq_entries + scenario.cq_extra,
            max_in_flight: scenario.slots,
            max_targets: TARGETS,
        };
        let mut q = RingQueue::new(config).unwrap();
        q.enable_trace();
        let mut driver = MockDriver {
            abort_fails: scenario.abort_fails,
            ..MockDriver::default()
        };
        driver.script = scenario
            .outcomes
            .iter()
            .map(|&choice| match choice {
                0 => StartOutcome::NoMem,
                1 => StartOutcome::Failed(IoError::errno(ENODEV)),
                _ => StartOutcome::Started,
            })
            .collect();
        Self {
            q,
            driver,
            sq_entries: scenario.sq_entries as usize,
            slots: scenario.slots as usize,
            now: 0,
            pushed: Vec::new(),
            model_sq: VecDeque::new(),
            chains: Vec::new(),
            results: HashMap::new(),
            popped: Vec::new(),
            finished_tokens: Vec::new(),
            blocked: [false; TARGETS as usize],
            seen_starts: 0,
            seen_aborts: 0,
        }
    }

    fn run(&mut self, action: &Action) {
        match *action {
            Action::Push {
                ref kind,
                link,
                drain,
            } => self.push(kind, link, drain),
            Action::PushGuarded {
                target,
                after_ns,
                link,
            } => {
                self.push(&KindSpec::Io(target), true, false);
                self.push(&KindSpec::LinkTimeout { after_ns }, link, false);
            }
            Action::Submit => self.submit(),
            Action::Advance(dt) => {
                self.now += dt;
                self.q.advance(&mut self.driver, self.now);
            }
            Action::Complete { pick, result } => {
                if !self.driver.running.is_empty() {
                    let (token, _) = self.driver.running.remove(pick % self.driver.running.len());
                    let result = match result {
                        0..=2 => Ok(512),
                        3 => err(EIO),
                        _ => err(ECANCELED),
                    };
                    assert!(self.q.complete(token, result), "live token accepted");
                    self.finished_tokens.push(token);
                }
            }
            Action::Stale { pick } => self.complete_stale(pick),
            Action::Unblock(target) => {
                self.q.unblock(TargetId(target));
                self.blocked[target as usize] = false;
            }
            Action::Pop(n) => {
                for _ in 0..n {
                    let Some(completion) = self.q.pop_completion() else {
                        break;
                    };
                    self.record(completion);
                }
            }
        }
        self.check_step();
    }

    fn push(&mut self, kind: &KindSpec, link: bool, drain: bool) {
        let user_data = self.pushed.len() as u64;
        let (kind, tag) = match *kind {
            KindSpec::Io(target) => (
                EntryKind::Io {
                    target: TargetId(target),
                    op: TestOp { id: user_data },
                },
                Tag::Io(target),
            ),
            KindSpec::Nop => (EntryKind::Nop, Tag::Nop),
            KindSpec::Cancel(pick) => {
                // Mostly recent entries, which are likely still live.
                let victim = match pick {
                    Some(pick) if user_data > 0 => user_data - 1 - (pick as u64 % user_data.min(6)),
                    _ => u64::MAX - 7,
                };
                (EntryKind::Cancel { user_data: victim }, Tag::Cancel)
            }
            KindSpec::Timeout { after_ns, count } => {
                (EntryKind::Timeout { after_ns, count }, Tag::Timeout)
            }
            KindSpec::LinkTimeout { after_ns } => {
                (EntryKind::LinkTimeout { after_ns }, Tag::LinkTimeout)
            }
        };
        let mut flags = EntryFlags::empty();
        flags.set(EntryFlags::LINK, link);
        flags.set(EntryFlags::DRAIN, drain);
        let submission = Submission {
            kind,
            user_data,
            flags,
        };
        match self.q.push(submission) {
            Ok(()) => {
                self.pushed.push(Pushed { tag, link, drain });
                self.model_sq.push_back(user_data);
            }
            Err(rejected) => {
                assert_eq!(
                    self.model_sq.len(),
                    self.sq_entries,
                    "rejected only when full"
                );
                assert_eq!(rejected.submission.user_data, user_data);
                assert_eq!(rejected.submission.flags, flags);
            }
        }
    }

    fn submit(&mut self) {
        if let Some(&last) = self.model_sq.back() {
            self.pushed[last as usize].link = false;
        }
        let taken = self.q.submit(&mut self.driver, self.now);
        let taken: Vec<u64> = self.model_sq.drain(..taken).collect();
        self.group_into_chains(&taken, true);
    }

    /// Records the chains of entries that left the SQ; `submitted` is false at shutdown, where
    /// the SQ is cancelled wholesale and no length limit applies.
    fn group_into_chains(&mut self, entries: &[u64], submitted: bool) {
        let mut members = Vec::new();
        for &user_data in entries {
            members.push(user_data);
            if !self.pushed[user_data as usize].link {
                let oversize = submitted && members.len() > self.slots;
                self.chains.push(Chain {
                    members: std::mem::take(&mut members),
                    oversize,
                });
            }
        }
        assert!(members.is_empty(), "submit stopped inside a chain");
    }

    fn complete_stale(&mut self, pick: usize) {
        let running: Vec<Token> = self.driver.running.iter().map(|&(t, _)| t).collect();
        let mut candidates = self.finished_tokens.clone();
        candidates.extend(
            self.driver
                .starts
                .iter()
                .filter(|call| !running.contains(&call.token))
                .map(|call| call.token),
        );
        candidates.push(Token::from_u64(u64::MAX));
        let token = candidates[pick % candidates.len()];
        let pending = self.q.cq_len() + self.q.backlog_len();
        let in_flight = self.q.in_flight();
        assert!(
            !self.q.complete(token, Ok(1)),
            "stale token {token:?} accepted"
        );
        assert_eq!(self.q.cq_len() + self.q.backlog_len(), pending);
        assert_eq!(self.q.in_flight(), in_flight);
    }

    fn record(&mut self, completion: Completion<TestOp>) {
        let user_data = completion.user_data;
        let tag = self.pushed[user_data as usize].tag;
        match (&completion.op, tag) {
            (Some(op), Tag::Io(_)) => assert_eq!(op.id, user_data, "op returned to its entry"),
            (None, Tag::Io(_)) => panic!("Io entry {user_data} completed without its op"),
            (Some(_), _) => panic!("non-Io entry {user_data} carries an op"),
            (None, _) => {}
        }
        let previous = self.results.insert(user_data, completion.result);
        assert!(previous.is_none(), "user_data {user_data} completed twice");
        self.popped.push(user_data);
    }

    fn check_step(&mut self) {
        self.q.check_invariants();
        for call in &self.driver.starts[self.seen_starts..] {
            let target = call.target.0 as usize;
            assert!(
                target < TARGETS as usize,
                "unknown target reached the driver"
            );
            assert!(!self.blocked[target], "start on blocked target {target}");
            if call.outcome == StartOutcome::NoMem {
                self.blocked[target] = true;
            }
        }
        self.seen_starts = self.driver.starts.len();
        for &(token, _) in &self.driver.aborts[self.seen_aborts..] {
            assert!(
                self.driver.running.iter().any(|&(t, _)| t == token),
                "abort for an op that is not running"
            );
        }
        self.seen_aborts = self.driver.aborts.len();
        for target in 0..TARGETS {
            assert_eq!(
                self.q.is_blocked(TargetId(target)),
                self.blocked[target as usize]
            );
        }
        assert_eq!(self.q.started_in_driver(), self.driver.running.len());
        assert_eq!(self.q.is_quiescent(), self.driver.running.is_empty());
        assert_eq!(self.q.sq_len(), self.model_sq.len());
    }

    /// Liveness: once the driver answers `Started` to everything and finishes what it runs,
    /// targets are unblocked and time moves on, every admitted entry completes without a
    /// shutdown (an ordering rule that can wait on itself shows up here as a stall).
    fn settle(&mut self) {
        self.driver.script.clear();
        self.driver.by_id.clear();
        for round in 0.. {
            assert!(
                round < 10_000,
                "stalled: {} entries never complete",
                self.q.in_flight()
            );
            for target in 0..TARGETS {
                self.q.unblock(TargetId(target));
                self.blocked[target as usize] = false;
            }
            while let Some((token, _)) = self.driver.running.pop() {
                assert!(self.q.complete(token, Ok(512)));
            }
            self.now += 1 << 40;
            self.q.advance(&mut self.driver, self.now);
            while let Some(completion) = self.q.pop_completion() {
                self.record(completion);
            }
            self.check_step();
            if self.driver.running.is_empty() && self.q.in_flight() == 0 {
                break;
            }
        }
    }

    /// Shutdown: cancel what has not started, then let the driver finish what it has.
    fn shut_down(&mut self) {
        if let Some(&last) = self.model_sq.back() {
            self.pushed[last as usize].link = false;
        }
        let in_sq: Vec<u64> = self.model_sq.drain(..).collect();
        let cancelled = self.q.cancel_unstarted();
        assert!(cancelled >= in_sq.len());
        self.group_into_chains(&in_sq, false);
        let starts_before = self.driver.starts.len();
        for round in 0.. {
            assert!(round < 1_000, "shutdown does not converge");
            while let Some((token, _)) = self.driver.running.pop() {
                assert!(self.q.complete(token, err(ECANCELED)));
            }
            self.q.advance(&mut self.driver, self.now);
            while let Some(completion) = self.q.pop_completion() {
                self.record(completion);
            }
            self.check_step();
            if self.driver.running.is_empty() && self.q.in_flight() == 0 {
                break;
            }
        }
        assert_eq!(
            self.driver.starts.len(),
            starts_before,
            "nothing starts after shutdown"
        );
        assert!(self.q.is_quiescent());
    }

    fn check_final(&mut self, trace: &[TraceEvent]) {
        // (1) exactly once (duplicates were caught in `record`).
        for user_data in 0..self.pushed.len() as u64 {
            assert!(
                self.results.contains_key(&user_data),
                "{user_data} never completed"
            );
        }
        assert_eq!(self.results.len(), self.pushed.len());

        let mut post_at = HashMap::new();
        let mut first_start_at = HashMap::new();
        let mut posted_order = Vec::new();
        for (at, event) in trace.iter().enumerate() {
            match *event {
                TraceEvent::Post(user_data) => {
                    assert!(post_at.insert(user_data, at).is_none());
                    posted_order.push(user_data);
                }
                TraceEvent::Start(user_data) => {
                    first_start_at.entry(user_data).or_insert(at);
                }
            }
        }
        // The CQ plus backlog deliver in posting order.
        assert_eq!(posted_order, self.popped);

        self.check_chains(&post_at, &first_start_at);
        self.check_drains(&post_at, &first_start_at);

        // (4) per-target start order: the driver calls of a target for entries that were ready
        // when pushed (no chain predecessor) are in push order (a NoMem retry repeats the same
        // entry, nothing overtakes it). Later chain members join when their predecessor
        // succeeds; their order is property (2).
        let chained: std::collections::HashSet<u64> = self
            .chains
            .iter()
            .flat_map(|chain| chain.members.iter().skip(1).copied())
            .collect();
        for target in 0..TARGETS {
            let ids: Vec<u64> = self
                .driver
                .starts
                .iter()
                .filter(|call| call.target == TargetId(target) && !chained.contains(&call.id))
                .map(|call| call.id)
                .collect();
            assert!(
                ids.windows(2).all(|pair| pair[0] <= pair[1]),
                "target {target} started out of order: {ids:?}"
            );
        }
    }

    /// (2) per chain: push-order completion, success-gated starts, failure cancels the rest.
    fn check_chains(&self, post_at: &HashMap<u64, usize>, first_start_at: &HashMap<u64, usize>) {
        for chain in &self.chains {
            if chain.oversize {
                for user_data in &chain.members {
                    assert_eq!(self.results[user_data], err(EINVAL), "oversize {chain:?}");
                }
                continue;
            }
            let mut previous: Option<u64> = None;
            let mut failed_at: Option<u64> = None;
            for (i, &user_data) in chain.members.iter().enumerate() {
                let result = self.results[&user_data];
                if self.is_attached_link_timeout(&chain.members, i) {
                    let target = chain.members[i - 1];
                    if failed_at.is_some() && failed_at != Some(target) {
                        assert_eq!(result, err(ECANCELED), "{user_data} in {chain:?}");
                    } else {
                        assert!(
                            result == err(ECANCELED) || result == err(ETIME),
                            "link timeout {user_data}: {result:?}"
                        );
                    }
                    if result == err(ETIME) {
                        let target_start = first_start_at.get(&target).copied();
                        assert!(target_start.is_some_and(|at| at < post_at[&user_data]));
                    }
                    continue;
                }
                if let Some(previous) = previous {
                    assert!(
                        post_at[&previous] < post_at[&user_data],
                        "chain {chain:?} completed out of order"
                    );
                    if failed_at.is_none() {
                        if let Some(&start) = first_start_at.get(&user_data) {
                            assert!(post_at[&previous] < start, "started before predecessor");
                        }
                    }
                }
                if failed_at.is_some() {
                    assert_eq!(
                        result,
                        err(ECANCELED),
                        "{user_data} after failure in {chain:?}"
                    );
                    assert!(
                        !first_start_at.contains_key(&user_data),
                        "{user_data} started"
                    );
                } else if result.is_err() {
                    failed_at = Some(user_data);
                }
                previous = Some(user_data);
            }
        }
    }

    /// (3) DRAIN: starts after everything earlier completed; nothing later starts before it completed.
    fn check_drains(&self, post_at: &HashMap<u64, usize>, first_start_at: &HashMap<u64, usize>) {
        for (drain, pushed) in self.pushed.iter().enumerate() {
            if !pushed.drain {
                continue;
            }
            let drain = drain as u64;
            if let Some(&start) = first_start_at.get(&drain) {
                for earlier in 0..drain {
                    assert!(
                        post_at[&earlier] < start,
                        "DRAIN {drain} started before {earlier} completed"
                    );
                }
            }
            for later in drain + 1..self.pushed.len() as u64 {
                if let Some(&start) = first_start_at.get(&later) {
                    assert!(
                        post_at[&drain] < start,
                        "{later} started before DRAIN {drain} completed"
                    );
                }
            }
        }
    }

    fn is_attached_link_timeout(&self, members: &[u64], i: usize) -> bool {
        let this = &self.pushed[members[i] as usize];
        i > 0
            && this.tag == Tag::LinkTimeout
            && !this.drain
            && self.pushed[members[i - 1] as usize].tag != Tag::LinkTimeout
    }
}

fn run_scenario(scenario: &Scenario) {
    let mut harness = Harness::new(scenario);
    for action in &scenario.actions {
        harness.run(action);
    }
    harness.settle();
    harness.shut_down();
    let trace = harness.q.take_trace();
    harness.check_final(&trace);
}

proptest! {
    #![proptest_config(proptest_config(256, 6))]

    #[test]
    fn random_workloads_keep_every_guarantee(scenario in scenario_strategy()) {
        run_scenario(&scenario);
    }
}

/// A fixed busy scenario, so the harness itself is exercised even if proptest is filtered out.
#[test]
fn harness_smoke_scenario() {
    let mut actions = Vec::new();
    for i in 0..40u64 {
        actions.push(Action::Push {
            kind: match i % 5 {
                0 => KindSpec::Io(0),
                1 => KindSpec::LinkTimeout { after_ns: 5 },
                2 => KindSpec::Io(1),
                3 => KindSpec::Cancel(Some(i as usize)),
                _ => KindSpec::Timeout {
                    after_ns: 7,
                    count: 1,
                },
            },
            link: i % 3 != 2,
            drain: i % 11 == 0,
        });
        if i % 4 == 3 {
            actions.push(Action::Submit);
            actions.push(Action::Advance(3));
            actions.push(Action::Complete {
                pick: i as usize,
                result: (i % 3) as u8,
            });
            actions.push(Action::Stale { pick: i as usize });
        }
    }
    run_scenario(&Scenario {
        sq_entries: 6,
        cq_extra: 0,
        slots: 5,
        abort_fails: false,
        outcomes: vec![5, 0, 5, 1, 5, 5],
        actions,
    });
}

/// What the CQ model holds per ready completion: own (its user_data) or outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ready {
    Own(u64),
    Outside,
}

#[derive(Clone, Debug)]
enum CqAction {
    /// A Nop pushed and submitted: the core posts it at once.
    Own,
    /// Completions posted outside the core (the ring's lane).
    Outside(u32),
    /// Take up to this many completions from the front, whichever store holds it.
    Pop(usize),
}

fn cq_action() -> impl Strategy<Value = CqAction> {
    prop_oneof![
        3 => Just(CqAction::Own),
        3 => (1u32..5).prop_map(CqAction::Outside),
        2 => (0usize..6).prop_map(CqAction::Pop),
    ]
}

proptest! {
    #![proptest_config(proptest_config(256, 16))]

    /// Outside completions share the CQ with the core's own exactly as own ones do: one bound
    /// (beyond it, flagged OVERFLOWED and counted), one order (posting order), one `cq_len`.
    /// The model is a single FIFO where a completion overflowed if the FIFO held `cq_entries`.
    #[test]
    fn outside_completions_share_the_cq_bound_flags_and_order(
        cq_entries in 1u32..6,
        actions in proptest::collection::vec(cq_action(), 1..80),
    ) {
        let mut q = RingQueue::<TestOp>::new(QueueConfig {
            sq_entries: 1,
            cq_entries,
            max_in_flight: 1,
            max_targets: 1,
        })
        .expect("valid config");
        let mut driver = MockDriver::default();
        let mut model: VecDeque<(Ready, bool)> = VecDeque::new();
        let mut next_user_data = 0u64;
        let post = |model: &mut VecDeque<(Ready, bool)>, ready: Ready| {
            let flagged = model.len() >= cq_entries as usize;
            model.push_back((ready, flagged));
            u64::from(flagged)
        };
        let mut overflowed = 0u64;
        for action in actions {
            match action {
                CqAction::Own => {
                    next_user_data += 1;
                    let nop = Submission::new(EntryKind::Nop, next_user_data);
                    prop_assert!(q.push(nop).is_ok());
                    q.submit(&mut driver, 0);
                    overflowed += post(&mut model, Ready::Own(next_user_data));
                }
                CqAction::Outside(n) => {
                    q.post_outside(n);
                    for _ in 0..n {
                        overflowed += post(&mut model, Ready::Outside);
                    }
                }
                CqAction::Pop(n) => {
                    for _ in 0..n {
                        let expected = model.pop_front();
                        let got = match q.front() {
                            CqFront::Empty => None,
                            CqFront::Outside(flags) => {
                                q.pop_outside();
                                Some((Ready::Outside, flags.contains(CompletionFlags::OVERFLOWED)))
                            }
                            CqFront::Own => {
                                let c = q.pop_completion().expect("own completion in front");
                                Some((Ready::Own(c.user_data), c.flags.contains(CompletionFlags::OVERFLOWED)))
                            }
                        };
                        prop_assert_eq!(got, expected);
                    }
                }
            }
            q.check_invariants();
            prop_assert_eq!(q.cq_len(), model.len().min(cq_entries as usize));
            prop_assert_eq!(q.overflowed(), overflowed);
        }
    }
}
