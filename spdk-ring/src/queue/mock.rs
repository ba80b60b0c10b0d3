//! Test driver: records every call, answers from a script, and keeps started
//! ops so a test can complete them later in any order.

use std::collections::{HashMap, VecDeque};

use super::{
    Completion, Driver, EntryFlags, EntryKind, IoResult, QueueConfig, RingQueue, StartOutcome,
    Submission, TargetId, Token,
};

/// The test `Op`: just an id (tests use the entry's user_data) so returned ops can be checked.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct TestOp {
    pub(super) id: u64,
}

/// One `Driver::start` call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) struct StartCall {
    pub(super) token: Token,
    pub(super) target: TargetId,
    pub(super) id: u64,
    pub(super) outcome: StartOutcome,
}

#[derive(Debug, Default)]
pub(super) struct MockDriver {
    /// Every start call, including NoMem and Failed answers.
    pub(super) starts: Vec<StartCall>,
    /// Every abort call: (token, op id).
    pub(super) aborts: Vec<(Token, u64)>,
    /// Ops answered `Started` and not yet completed by the test: (token, op id).
    pub(super) running: Vec<(Token, u64)>,
    /// Answers for the next start calls, front first; `Started` when empty.
    pub(super) script: VecDeque<StartOutcome>,
    /// One-shot answers for a specific op id; take precedence over `script`.
    pub(super) by_id: HashMap<u64, StartOutcome>,
    /// What `abort` answers.
    pub(super) abort_fails: bool,
    /// User data of entries the driver runs outside the core, oldest first, and what
    /// `cancel_outside` answers for them.
    pub(super) outside: Vec<(u64, Result<(), ()>)>,
    /// Every `cancel_outside` call: the user data asked for.
    pub(super) outside_cancels: Vec<u64>,
    /// Every `run_immediate` call: the op id.
    pub(super) immediates: Vec<u64>,
    /// What `run_immediate` answers for an op id; `Ok(id)` when absent.
    pub(super) immediate_answers: HashMap<u64, IoResult>,
}

impl Driver<TestOp> for MockDriver {
    fn start(&mut self, token: Token, target: TargetId, op: &mut TestOp) -> StartOutcome {
        let outcome = self
            .by_id
            .remove(&op.id)
            .or_else(|| self.script.pop_front())
            .unwrap_or(StartOutcome::Started);
        self.starts.push(StartCall {
            token,
            target,
            id: op.id,
            outcome,
        });
        if outcome == StartOutcome::Started {
            self.running.push((token, op.id));
        }
        outcome
    }

    fn abort(&mut self, token: Token, _target: TargetId, op: &mut TestOp) -> Result<(), ()> {
        self.aborts.push((token, op.id));
        if self.abort_fails {
            Err(())
        } else {
            Ok(())
        }
    }

    fn run_immediate(&mut self, op: &mut TestOp) -> IoResult {
        self.immediates.push(op.id);
        self.immediate_answers.remove(&op.id).unwrap_or(Ok(op.id))
    }

    fn cancel_outside(&mut self, user_data: u64) -> Option<Result<(), ()>> {
        self.outside_cancels.push(user_data);
        self.outside
            .iter()
            .find(|(ud, _)| *ud == user_data)
            .map(|&(_, answer)| answer)
    }
}

impl MockDriver {
    /// Removes the running op `id` and returns its token.
    pub(super) fn take(&mut self, id: u64) -> Token {
        let pos = self
            .running
            .iter()
            .position(|&(_, running)| running == id)
            .unwrap_or_else(|| panic!("op {id} is not running"));
        self.running.remove(pos).0
    }

    /// Ids of successful starts, in order.
    pub(super) fn started_ids(&self) -> Vec<u64> {
        self.starts
            .iter()
            .filter(|call| call.outcome == StartOutcome::Started)
            .map(|call| call.id)
            .collect()
    }
}

/// A queue with `targets` targets and SQ/CQ large enough not to matter unless a test says so.
pub(super) fn queue(slots: u32, targets: u32) -> RingQueue<TestOp> {
    RingQueue::new(QueueConfig {
        sq_entries: 64,
        cq_entries: 64,
        max_in_flight: slots,
        max_targets: targets,
    })
    .expect("valid config")
}

pub(super) fn io(target: u32, id: u64) -> Submission<TestOp> {
    Submission::io(TargetId(target), TestOp { id }, id)
}

/// An [`EntryKind::Immediate`] entry whose op and user_data are `id`.
pub(super) fn immediate(id: u64) -> Submission<TestOp> {
    Submission::new(EntryKind::Immediate { op: TestOp { id } }, id)
}

pub(super) fn linked(submission: Submission<TestOp>) -> Submission<TestOp> {
    let flags = submission.flags | EntryFlags::LINK;
    submission.with_flags(flags)
}

pub(super) fn drained(submission: Submission<TestOp>) -> Submission<TestOp> {
    let flags = submission.flags | EntryFlags::DRAIN;
    submission.with_flags(flags)
}

/// Pops every completion as (user_data, result), checking that Io ops came back with their entry.
pub(super) fn reap(queue: &mut RingQueue<TestOp>) -> Vec<(u64, IoResult)> {
    queue
        .completions()
        .map(
            |Completion {
                 user_data,
                 result,
                 op,
                 ..
             }| {
                if let Some(op) = op {
                    assert_eq!(op.id, user_data, "op returned with its own entry");
                }
                (user_data, result)
            },
        )
        .collect()
}

/// Proptest settings: `cases` normally, `miri_cases` under Miri, where failure files are off
/// because Miri's isolation forbids file system access.
pub(super) fn proptest_config(cases: u32, miri_cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::with_cases(cases);
    if cfg!(miri) {
        config.cases = miri_cases;
        config.failure_persistence = None;
    }
    config
}
