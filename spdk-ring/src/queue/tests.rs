//! Unit tests, one group per rule of the state machine.

use super::mock::{drained, immediate, io, linked, queue, reap, MockDriver, TestOp};
use super::*;

fn err(errno: i32) -> IoResult {
    Err(IoError::errno(errno))
}

fn timeout(user_data: u64, after_ns: u64, count: u32) -> Submission<TestOp> {
    Submission::new(EntryKind::Timeout { after_ns, count }, user_data)
}

fn link_timeout(user_data: u64, after_ns: u64) -> Submission<TestOp> {
    Submission::new(EntryKind::LinkTimeout { after_ns }, user_data)
}

fn cancel(user_data: u64, victim: u64) -> Submission<TestOp> {
    Submission::new(EntryKind::Cancel { user_data: victim }, user_data)
}

fn push_all(q: &mut RingQueue<TestOp>, entries: impl IntoIterator<Item = Submission<TestOp>>) {
    for entry in entries {
        q.push(entry).expect("SQ has room");
    }
}

/// A queue with a 2-entry SQ and CQ and room for 4 live entries on one target.
fn two_entry_queue() -> RingQueue<TestOp> {
    RingQueue::new(QueueConfig {
        sq_entries: 2,
        cq_entries: 2,
        max_in_flight: 4,
        max_targets: 1,
    })
    .unwrap()
}

// ----- configuration, SQ, tokens --------------------------------------------------------------

#[test]
fn config_is_validated() {
    let ok = QueueConfig {
        sq_entries: 4,
        cq_entries: 4,
        max_in_flight: 4,
        max_targets: 1,
    };
    assert!(RingQueue::<TestOp>::new(ok).is_ok());
    let zero = QueueConfig {
        max_in_flight: 0,
        ..ok
    };
    assert_eq!(
        RingQueue::<TestOp>::new(zero).unwrap_err(),
        ConfigError::Zero {
            field: "max_in_flight"
        }
    );
    for bad in [
        QueueConfig {
            sq_entries: 0,
            ..ok
        },
        QueueConfig {
            cq_entries: 0,
            ..ok
        },
        QueueConfig {
            max_targets: 0,
            ..ok
        },
    ] {
        assert!(matches!(bad.validate(), Err(ConfigError::Zero { .. })));
    }
    let small_cq = QueueConfig {
        cq_entries: 3,
        ..ok
    };
    assert_eq!(
        small_cq.validate(),
        Err(ConfigError::CqSmallerThanSq {
            sq_entries: 4,
            cq_entries: 3
        })
    );
    let huge = QueueConfig {
        max_in_flight: u32::MAX,
        ..ok
    };
    assert_eq!(huge.validate(), Err(ConfigError::TooManySlots(u32::MAX)));
}

#[test]
fn full_sq_hands_the_submission_back() {
    let mut q = two_entry_queue();
    push_all(&mut q, [io(0, 1), io(0, 2)]);
    assert_eq!(q.sq_space(), 0);
    let rejected = q.push(io(0, 3)).unwrap_err();
    assert_eq!(rejected.to_string(), "submission queue is full");
    let submission = rejected.into_submission();
    assert_eq!(submission.user_data, 3);
    assert!(matches!(
        submission.kind,
        EntryKind::Io {
            op: TestOp { id: 3 },
            ..
        }
    ));
    let mut driver = MockDriver::default();
    assert_eq!(q.submit(&mut driver, 0), 2);
    assert_eq!(q.sq_len(), 0);
    q.push(submission).unwrap();
    assert_eq!(q.sq_len(), 1);
}

#[test]
fn token_round_trips_through_u64() {
    let token = Token::new(7, 0xdead_beef);
    assert_eq!(Token::from_u64(token.to_u64()), token);
    assert_eq!(token.index(), 7);
    assert_eq!(token.generation(), 0xdead_beef);
}

#[test]
fn io_completes_with_its_op_and_stale_tokens_are_ignored() {
    let mut q = queue(1, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [io(0, 1)]);
    q.submit(&mut driver, 0);
    assert!(!q.is_quiescent());
    assert_eq!(q.started_in_driver(), 1);
    let old = driver.take(1);
    assert!(q.complete(old, Ok(4096)));
    assert!(q.is_quiescent());
    assert!(!q.complete(old, Ok(1)), "duplicate completion is stale");
    let completion = q.pop_completion().unwrap();
    assert_eq!(completion.user_data, 1);
    assert_eq!(completion.result, Ok(4096));
    assert_eq!(completion.op, Some(TestOp { id: 1 }));

    // The single slot is reused: the old token must not complete the new occupant.
    push_all(&mut q, [io(0, 2)]);
    q.submit(&mut driver, 0);
    let new = driver.take(2);
    assert_eq!(new.index(), old.index());
    assert_ne!(new.generation(), old.generation());
    assert!(!q.complete(old, Ok(1)));
    assert!(
        !q.complete(Token::from_u64(u64::MAX), Ok(1)),
        "index out of range"
    );
    assert_eq!(q.cq_len(), 0);
    assert!(q.complete(new, Ok(2)));
    assert_eq!(reap(&mut q), [(2, Ok(2))]);
}

#[test]
fn token_of_a_never_started_entry_is_stale() {
    let mut q = queue(2, 1);
    let mut driver = MockDriver::default();
    driver.script.push_back(StartOutcome::NoMem);
    push_all(&mut q, [io(0, 1)]);
    q.submit(&mut driver, 0);
    let token = driver.starts[0].token;
    assert!(!q.complete(token, Ok(0)));
    assert_eq!(q.cq_len(), 0);
    assert_eq!(q.in_flight(), 1);
}

// ----- completion queue -----------------------------------------------------------------------

#[test]
fn full_cq_spills_to_backlog_in_order() {
    let mut q = RingQueue::<TestOp>::new(QueueConfig {
        sq_entries: 2,
        cq_entries: 2,
        max_in_flight: 8,
        max_targets: 1,
    })
    .unwrap();
    let mut driver = MockDriver::default();
    for batch in 0..3 {
        push_all(
            &mut q,
            [Submission::nop(batch * 2), Submission::nop(batch * 2 + 1)],
        );
        q.submit(&mut driver, 0);
    }
    assert_eq!(q.cq_len(), 2);
    assert_eq!(q.backlog_len(), 4);
    assert_eq!(q.overflowed(), 4);
    let first = q.pop_completion().unwrap();
    assert_eq!(first.user_data, 0);
    assert_eq!(first.flags, CompletionFlags::empty());
    assert_eq!(q.cq_len(), 2, "refilled from the backlog");
    assert_eq!(q.backlog_len(), 3);
    // New completions queue behind the backlog, never ahead of it.
    push_all(&mut q, [Submission::nop(6)]);
    q.submit(&mut driver, 0);
    assert_eq!(q.overflowed(), 5);
    let order: Vec<(u64, bool)> = q
        .completions()
        .map(|c| (c.user_data, c.flags.contains(CompletionFlags::OVERFLOWED)))
        .collect();
    // 1 was posted into the CQ; 2..=6 went through the backlog.
    assert_eq!(
        order,
        [
            (1, false),
            (2, true),
            (3, true),
            (4, true),
            (5, true),
            (6, true)
        ]
    );
    assert_eq!(q.backlog_len(), 0);
    assert_eq!(q.overflowed(), 5, "a running total");
}

#[test]
fn completions_are_read_in_place_and_discarded_in_order() {
    let mut q = two_entry_queue();
    let mut driver = MockDriver::default();
    push_all(&mut q, [io(0, 1), io(0, 2)]);
    q.submit(&mut driver, 0);
    push_all(&mut q, [io(0, 3)]);
    q.submit(&mut driver, 0);
    for id in [2, 1, 3] {
        let token = driver.take(id);
        q.complete(token, Ok(id * 10));
    }
    assert_eq!((q.cq_len(), q.backlog_len()), (2, 1));
    // Seen in place: nothing moves until discarded, and the op can be lent out.
    let front = q.front_completion().unwrap();
    assert_eq!((front.user_data, front.result), (2, Ok(20)));
    let op = front.op.unwrap();
    assert_eq!(op.id, 2);
    op.id = 99;
    assert_eq!(q.front_completion().unwrap().op.map(|op| op.id), Some(99));
    assert!(q.discard_front());
    assert_eq!(
        (q.cq_len(), q.backlog_len()),
        (2, 0),
        "refilled from the backlog"
    );
    let mut order = Vec::new();
    while let Some(front) = q.front_completion() {
        order.push((front.user_data, front.result, front.flags));
        assert!(q.discard_front());
    }
    assert_eq!(
        order,
        [
            (1, Ok(10), CompletionFlags::empty()),
            (3, Ok(30), CompletionFlags::OVERFLOWED)
        ]
    );
    assert!(!q.discard_front());
    assert_eq!(q.in_flight(), 0);
    q.check_invariants();
}

#[test]
fn nop_completes_ok_zero_when_it_starts() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [Submission::nop(9)]);
    assert_eq!(q.submit(&mut driver, 0), 1);
    assert!(driver.starts.is_empty(), "no driver call for a Nop");
    assert_eq!(reap(&mut q), [(9, Ok(0))]);
}

#[test]
fn complete_resolves_but_never_starts() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(io(0, 1)), io(0, 2)]);
    q.submit(&mut driver, 0);
    let token = driver.take(1);
    assert!(q.complete(token, Ok(1)));
    assert_eq!(driver.started_ids(), [1], "complete() does not start");
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2]);
}

// ----- Immediate entries and SKIP_SUCCESS -----------------------------------------------------

fn skip_success(submission: Submission<TestOp>) -> Submission<TestOp> {
    let flags = submission.flags | EntryFlags::SKIP_SUCCESS;
    submission.with_flags(flags)
}

#[test]
fn immediate_entries_run_when_their_chain_reaches_them() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    driver.immediate_answers.insert(3, err(ENODEV));
    push_all(&mut q, [linked(io(0, 1)), immediate(2), immediate(3)]);
    q.submit(&mut driver, 0);
    assert_eq!(
        driver.immediates,
        [3],
        "2 waits for the write it is linked to"
    );
    assert_eq!(reap(&mut q), [(3, err(ENODEV))], "the driver's answer");
    let token = driver.take(1);
    q.complete(token, Ok(512));
    q.advance(&mut driver, 0);
    assert_eq!(driver.immediates, [3, 2]);
    assert_eq!(reap(&mut q), [(1, Ok(512)), (2, Ok(2))]);
    q.check_invariants();
}

#[test]
fn a_failed_link_cancels_an_immediate_entry_without_running_it() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(io(0, 1)), immediate(2)]);
    q.submit(&mut driver, 0);
    let token = driver.take(1);
    q.complete(token, err(EIO));
    q.advance(&mut driver, 0);
    assert_eq!(reap(&mut q), [(1, err(EIO)), (2, err(ECANCELED))]);
    assert!(driver.immediates.is_empty(), "never run");
}

#[test]
fn immediate_entries_wait_for_a_drain_and_in_push_order() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            io(0, 1),
            drained(Submission::nop(2)),
            immediate(3),
            immediate(4),
        ],
    );
    q.submit(&mut driver, 0);
    assert!(driver.immediates.is_empty(), "behind the DRAIN");
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.immediates, [3, 4]);
    assert_eq!(
        reap(&mut q),
        [(1, Ok(0)), (2, Ok(0)), (3, Ok(3)), (4, Ok(4))]
    );
}

#[test]
fn skip_success_posts_only_failures_and_its_chain_goes_on() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    driver.immediate_answers.insert(4, err(EIO));
    push_all(
        &mut q,
        [
            linked(skip_success(io(0, 1))),
            linked(skip_success(immediate(2))),
            skip_success(Submission::nop(3)),
            skip_success(immediate(4)),
        ],
    );
    q.submit(&mut driver, 0);
    let token = driver.take(1);
    q.complete(token, Ok(512));
    q.advance(&mut driver, 0);
    assert_eq!(
        driver.immediates,
        [4, 2],
        "the LINK successor ran after a skipped success"
    );
    assert_eq!(reap(&mut q), [(4, err(EIO))], "only the failure is posted");
    assert_eq!(q.in_flight(), 0);
    assert_eq!(q.free_slots(), 4, "skipped entries freed their slots");
    assert!(q.is_idle());
    q.check_invariants();
}

#[test]
fn a_cancelled_skip_success_entry_is_posted() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(io(0, 1)), skip_success(immediate(2))]);
    q.submit(&mut driver, 0);
    let token = driver.take(1);
    q.complete(token, err(EIO));
    assert_eq!(reap(&mut q), [(1, err(EIO)), (2, err(ECANCELED))]);
}

#[test]
fn skipped_successes_do_not_count_for_count_timeouts() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            timeout(1, 1_000, 1),
            skip_success(Submission::nop(2)),
            Submission::nop(3),
        ],
    );
    q.submit(&mut driver, 0);
    assert_eq!(
        reap(&mut q),
        [(3, Ok(0)), (1, Ok(0))],
        "Nop 3 was the one counted"
    );
    q.check_invariants();
}

// ----- LINK -----------------------------------------------------------------------------------

#[test]
fn chain_members_start_one_after_another() {
    let mut q = queue(8, 2);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [linked(io(0, 1)), linked(Submission::nop(2)), io(1, 3)],
    );
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1]);
    let token = driver.take(1);
    q.complete(token, Ok(512));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3], "Nop ran in between");
    let token = driver.take(3);
    q.complete(token, Ok(7));
    assert_eq!(reap(&mut q), [(1, Ok(512)), (2, Ok(0)), (3, Ok(7))]);
}

#[test]
fn chain_failure_cancels_the_rest_in_order_returning_ops() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            linked(io(0, 1)),
            linked(io(0, 2)),
            linked(Submission::nop(3)),
            io(0, 4),
            io(0, 5),
        ],
    );
    q.submit(&mut driver, 0);
    let token = driver.take(1);
    q.complete(token, err(EIO));
    q.advance(&mut driver, 0);
    let done = reap(&mut q);
    assert_eq!(
        done[..4],
        [
            (1, err(EIO)),
            (2, err(ECANCELED)),
            (3, err(ECANCELED)),
            (4, err(ECANCELED)),
        ]
    );
    assert_eq!(
        driver.started_ids(),
        [1, 5],
        "entry after the chain is independent"
    );
}

#[test]
fn ecanceled_result_also_breaks_the_chain() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(io(0, 1)), io(0, 2)]);
    q.submit(&mut driver, 0);
    let token = driver.take(1);
    q.complete(token, err(ECANCELED));
    assert_eq!(reap(&mut q), [(1, err(ECANCELED)), (2, err(ECANCELED))]);
}

#[test]
fn open_chain_ends_at_the_sq_tail_at_submit_time() {
    let mut q = queue(4, 2);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(io(0, 1))]);
    q.submit(&mut driver, 0);
    push_all(&mut q, [io(1, 2)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2], "2 is not linked to 1");
    let token = driver.take(1);
    q.complete(token, err(EIO));
    assert_eq!(reap(&mut q), [(1, err(EIO))]);
}

#[test]
fn chain_moves_into_slots_as_a_unit() {
    let mut q = queue(2, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [io(0, 1), linked(io(0, 2)), io(0, 3)]);
    assert_eq!(
        q.submit(&mut driver, 0),
        1,
        "chain of 2 does not fit in 1 free slot"
    );
    assert_eq!(q.sq_len(), 2);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    assert_eq!(q.submit(&mut driver, 0), 2);
    assert_eq!(driver.started_ids(), [1, 2]);
}

#[test]
fn chain_longer_than_the_slot_table_fails_einval() {
    let mut q = queue(2, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            linked(io(0, 1)),
            linked(Submission::nop(2)),
            io(0, 3),
            io(0, 4),
        ],
    );
    assert_eq!(q.submit(&mut driver, 0), 4);
    assert_eq!(driver.started_ids(), [4]);
    assert_eq!(
        reap(&mut q),
        [(1, err(EINVAL)), (2, err(EINVAL)), (3, err(EINVAL))]
    );
}

#[test]
fn failed_start_completes_at_once_and_fails_the_chain() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    driver
        .by_id
        .insert(1, StartOutcome::Failed(IoError::errno(ENODEV)));
    push_all(&mut q, [linked(io(0, 1)), io(0, 2), io(0, 3)]);
    q.submit(&mut driver, 0);
    assert_eq!(
        reap(&mut q),
        [(1, err(ENODEV)), (2, err(ECANCELED))],
        "3 is still running"
    );
    assert_eq!(driver.started_ids(), [3]);
    assert!(q.is_quiescent() == driver.running.is_empty());
}

#[test]
fn unknown_target_fails_einval_without_a_driver_call() {
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [io(5, 1)]);
    q.submit(&mut driver, 0);
    assert!(driver.starts.is_empty());
    assert_eq!(reap(&mut q), [(1, err(EINVAL))]);
}

// ----- DRAIN ----------------------------------------------------------------------------------

#[test]
fn drain_waits_for_earlier_and_holds_back_later() {
    let mut q = queue(8, 3);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            io(0, 1),
            io(1, 2),
            drained(io(2, 3)),
            io(0, 4),
            Submission::nop(5),
        ],
    );
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2]);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2], "2 still running");
    let token = driver.take(2);
    q.complete(token, err(EIO));
    q.advance(&mut driver, 0);
    assert_eq!(
        driver.started_ids(),
        [1, 2, 3],
        "an earlier failure does not matter"
    );
    assert_eq!(q.cq_len(), 2);
    let token = driver.take(3);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2, 3, 4]);
    let done: Vec<u64> = reap(&mut q).into_iter().map(|(ud, _)| ud).collect();
    assert_eq!(done, [1, 2, 3, 5]);
}

// ----- entries outside the core (the ring's lane) -----------------------------------------------

#[test]
fn a_drain_waits_for_entries_outside_the_core() {
    let mut q = queue(8, 2);
    let mut driver = MockDriver::default();
    assert!(q.is_idle());
    q.set_outside_pending(2);
    push_all(&mut q, [drained(io(0, 1)), io(1, 2)]);
    q.submit(&mut driver, 0);
    assert!(driver.started_ids().is_empty(), "outside entries are older");
    q.set_outside_pending(1);
    q.advance(&mut driver, 0);
    assert!(driver.started_ids().is_empty(), "one is still outside");
    q.set_outside_pending(0);
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1]);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2]);
}

#[test]
fn entries_outside_the_core_count_against_max_in_flight() {
    // 4 live entries at most; 3 run outside.
    let mut q = queue(4, 1);
    let mut driver = MockDriver::default();
    q.set_outside_pending(3);
    push_all(&mut q, [io(0, 1), io(0, 2)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1]);
    assert_eq!(q.sq_len(), 1, "2 waits in the SQ for room");
    q.set_outside_pending(2);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2]);
}

#[test]
fn cancel_looks_outside_the_core_first() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver {
        outside: vec![(7, Ok(())), (8, Err(()))],
        ..MockDriver::default()
    };
    // An entry with the same user data in the core is younger: the outside one is cancelled.
    push_all(&mut q, [io(0, 7)]);
    q.submit(&mut driver, 0);
    push_all(&mut q, [cancel(100, 7), cancel(101, 8), cancel(102, 9)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.outside_cancels, [7, 8, 9]);
    assert!(driver.aborts.is_empty(), "the core's entry 7 is left alone");
    assert_eq!(
        reap(&mut q),
        [(100, Ok(0)), (101, err(EALREADY)), (102, err(ENOENT))]
    );
}

#[test]
fn completions_outside_the_core_count_for_timeouts() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [timeout(1, 1_000_000, 3)]);
    q.submit(&mut driver, 0);
    assert!(!q.is_idle(), "an armed timeout is live");
    q.post_outside(2);
    assert_eq!(q.cq_len(), 2, "outside completions are in the CQ");
    q.post_outside(1);
    assert_eq!(q.cq_len(), 4, "the third satisfied the Timeout");
    for _ in 0..3 {
        assert_eq!(q.front(), CqFront::Outside(CompletionFlags::empty()));
        assert!(reap(&mut q).is_empty(), "own ones wait behind outside ones");
        q.pop_outside();
    }
    assert_eq!(reap(&mut q), [(1, Ok(0))]);
    assert_eq!(q.front(), CqFront::Empty);
    assert!(q.is_idle());
}

#[test]
fn the_core_is_idle_only_when_empty() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    assert!(q.is_idle());
    push_all(&mut q, [io(0, 1)]);
    assert!(!q.is_idle(), "an entry in the SQ");
    q.submit(&mut driver, 0);
    assert!(!q.is_idle(), "an entry in flight");
    let token = driver.take(1);
    q.complete(token, Ok(0));
    assert!(!q.is_idle(), "a completion not taken");
    assert_eq!(reap(&mut q), [(1, Ok(0))]);
    assert!(q.is_idle());
}

#[test]
fn drain_nop_is_a_pure_barrier() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [io(0, 1), drained(Submission::nop(2)), io(0, 3)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1]);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3]);
    assert_eq!(reap(&mut q), [(1, Ok(0)), (2, Ok(0))]);
}

#[test]
fn consecutive_drains_run_one_at_a_time() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [drained(io(0, 1)), drained(io(0, 2))]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1]);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 2]);
}

// ----- Cancel ---------------------------------------------------------------------------------

#[test]
fn cancel_of_a_waiting_entry_cancels_it_and_its_chain() {
    let mut q = queue(8, 2);
    let mut driver = MockDriver::default();
    driver.script.push_back(StartOutcome::NoMem);
    push_all(&mut q, [linked(io(0, 1)), io(1, 2), cancel(3, 1)]);
    q.submit(&mut driver, 0);
    assert_eq!(
        reap(&mut q),
        [(1, err(ECANCELED)), (2, err(ECANCELED)), (3, Ok(0))]
    );
    assert!(
        q.is_blocked(TargetId(0)),
        "the block outlives the cancelled entry"
    );
    assert_eq!(q.in_flight(), 0);
}

#[test]
fn cancel_of_a_running_entry_asks_the_driver_to_abort() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [io(0, 1)]);
    q.submit(&mut driver, 0);
    push_all(&mut q, [cancel(2, 1)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.aborts.len(), 1);
    assert_eq!(driver.aborts[0].1, 1);
    assert_eq!(reap(&mut q), [(2, Ok(0))]);
    let token = driver.take(1);
    q.complete(token, err(ECANCELED));
    assert_eq!(reap(&mut q), [(1, err(ECANCELED))]);
}

#[test]
fn cancel_fails_ealready_when_the_target_cannot_abort() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver {
        abort_fails: true,
        ..MockDriver::default()
    };
    push_all(&mut q, [io(0, 1), cancel(2, 1)]);
    q.submit(&mut driver, 0);
    assert_eq!(reap(&mut q), [(2, err(EALREADY))]);
    let token = driver.take(1);
    q.complete(token, Ok(4096));
    assert_eq!(reap(&mut q), [(1, Ok(4096))]);
}

#[test]
fn cancel_of_an_armed_timeout() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [timeout(1, 1_000, 0), cancel(2, 1)]);
    q.submit(&mut driver, 0);
    assert_eq!(reap(&mut q), [(1, err(ECANCELED)), (2, Ok(0))]);
    assert_eq!(q.next_deadline(), None);
}

#[test]
fn cancel_of_an_unknown_user_data_is_enoent() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [cancel(1, 42), cancel(2, 2)]);
    q.submit(&mut driver, 0);
    assert_eq!(
        reap(&mut q),
        [(1, err(ENOENT)), (2, err(ENOENT))],
        "a Cancel never matches itself"
    );
}

#[test]
fn cancelled_chain_member_completes_after_its_running_predecessor() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [linked(io(0, 1)), linked(io(0, 2)), io(0, 3), cancel(4, 2)],
    );
    q.submit(&mut driver, 0);
    assert_eq!(reap(&mut q), [(4, Ok(0))]);
    let token = driver.take(1);
    q.complete(token, Ok(1));
    q.advance(&mut driver, 0);
    assert_eq!(
        reap(&mut q),
        [(1, Ok(1)), (2, err(ECANCELED)), (3, err(ECANCELED))]
    );
    assert_eq!(driver.started_ids(), [1]);
}

#[test]
fn cancel_obeys_link_and_drain_itself() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    // The DRAIN cancel runs only once 1 has completed, so it finds nothing.
    push_all(&mut q, [io(0, 1), drained(cancel(2, 1)), io(0, 3)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1]);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(reap(&mut q), [(1, Ok(0)), (2, err(ENOENT))]);
    assert_eq!(driver.started_ids(), [1, 3]);
    let token = driver.take(3);
    q.complete(token, Ok(0));
    reap(&mut q);

    // A Cancel in a chain runs only after its predecessor succeeds.
    push_all(&mut q, [io(0, 5), linked(io(0, 6)), cancel(7, 5)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3, 5, 6]);
    assert!(driver.aborts.is_empty());
    let token = driver.take(6);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.aborts.len(), 1);
    assert_eq!(driver.aborts[0].1, 5);
    assert_eq!(reap(&mut q), [(6, Ok(0)), (7, Ok(0))]);
}

// ----- Timeout --------------------------------------------------------------------------------

#[test]
fn timeout_expires_with_etime() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [timeout(1, 100, 0)]);
    q.submit(&mut driver, 1_000);
    assert_eq!(q.next_deadline(), Some(1_100));
    q.advance(&mut driver, 1_099);
    assert_eq!(q.cq_len(), 0);
    q.advance(&mut driver, 1_100);
    assert_eq!(reap(&mut q), [(1, err(ETIME))]);
    assert_eq!(q.next_deadline(), None);
}

#[test]
fn timeout_with_count_completes_after_that_many_completions() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            Submission::nop(1),
            timeout(2, 1_000, 2),
            io(0, 3),
            Submission::nop(4),
        ],
    );
    q.submit(&mut driver, 0);
    // Nop 1 completed before the timeout armed; Nop 4 after: one of two.
    assert_eq!(reap(&mut q), [(1, Ok(0)), (4, Ok(0))]);
    let token = driver.take(3);
    q.complete(token, Ok(0));
    assert_eq!(reap(&mut q), [(3, Ok(0)), (2, Ok(0))]);
    assert_eq!(q.next_deadline(), None, "deadline disarmed");
}

#[test]
fn expired_timeout_in_a_chain_fails_it() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(timeout(1, 10, 0)), io(0, 2)]);
    q.submit(&mut driver, 0);
    q.advance(&mut driver, 10);
    assert_eq!(reap(&mut q), [(1, err(ETIME)), (2, err(ECANCELED))]);
    assert!(driver.starts.is_empty());
}

// ----- LinkTimeout ----------------------------------------------------------------------------

#[test]
fn link_timeout_is_cancelled_when_its_target_finishes_first() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [linked(io(0, 1)), linked(link_timeout(2, 100)), io(0, 3)],
    );
    q.submit(&mut driver, 0);
    assert_eq!(q.next_deadline(), Some(100));
    let token = driver.take(1);
    q.complete(token, Ok(8));
    q.advance(&mut driver, 50);
    assert_eq!(reap(&mut q), [(1, Ok(8)), (2, err(ECANCELED))]);
    assert_eq!(
        driver.started_ids(),
        [1, 3],
        "chain continues on the target's success"
    );
    assert_eq!(q.next_deadline(), None);
}

#[test]
fn link_timeout_firing_aborts_the_target() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [linked(io(0, 1)), linked(link_timeout(2, 100)), io(0, 3)],
    );
    q.submit(&mut driver, 0);
    q.advance(&mut driver, 100);
    assert_eq!(driver.aborts.len(), 1);
    assert_eq!(reap(&mut q), [(2, err(ETIME))]);
    let token = driver.take(1);
    q.complete(token, err(ECANCELED));
    q.advance(&mut driver, 100);
    assert_eq!(reap(&mut q), [(1, err(ECANCELED)), (3, err(ECANCELED))]);
}

#[test]
fn chain_after_a_fired_link_timeout_follows_the_target_result() {
    // The driver cannot abort: the target's real (successful) result lets the chain go on.
    let mut q = queue(8, 1);
    let mut driver = MockDriver {
        abort_fails: true,
        ..MockDriver::default()
    };
    push_all(
        &mut q,
        [linked(io(0, 1)), linked(link_timeout(2, 100)), io(0, 3)],
    );
    q.submit(&mut driver, 0);
    q.advance(&mut driver, 150);
    assert_eq!(driver.aborts.len(), 1);
    assert_eq!(reap(&mut q), [(2, err(ETIME))]);
    let token = driver.take(1);
    q.complete(token, Ok(4096));
    q.advance(&mut driver, 150);
    assert_eq!(reap(&mut q), [(1, Ok(4096))]);
    assert_eq!(driver.started_ids(), [1, 3]);
}

#[test]
fn link_timeout_arms_only_when_its_target_starts() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    driver.script.push_back(StartOutcome::NoMem);
    push_all(&mut q, [linked(io(0, 1)), link_timeout(2, 100)]);
    q.submit(&mut driver, 0);
    assert_eq!(q.next_deadline(), None);
    q.advance(&mut driver, 1_000);
    assert_eq!(q.cq_len(), 0);
    q.unblock(TargetId(0));
    q.advance(&mut driver, 1_000);
    assert_eq!(q.next_deadline(), Some(1_100));
}

#[test]
fn link_timeout_on_a_timeout_target_cancels_it() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(timeout(1, 500, 0)), link_timeout(2, 100)]);
    q.submit(&mut driver, 0);
    q.advance(&mut driver, 100);
    assert_eq!(reap(&mut q), [(2, err(ETIME)), (1, err(ECANCELED))]);
    assert!(driver.aborts.is_empty());
}

#[test]
fn misplaced_link_timeouts_fail_einval() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    // Chain head, after another LinkTimeout, and with DRAIN: none can attach.
    push_all(
        &mut q,
        [
            linked(link_timeout(1, 10)),
            io(0, 2),
            linked(io(0, 3)),
            linked(link_timeout(4, 10)),
            linked(link_timeout(5, 10)),
            io(0, 6),
        ],
    );
    q.submit(&mut driver, 0);
    assert_eq!(reap(&mut q), [(1, err(EINVAL)), (2, err(ECANCELED))]);
    let token = driver.take(3);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(
        reap(&mut q),
        [
            (3, Ok(0)),
            (4, err(ECANCELED)),
            (5, err(EINVAL)),
            (6, err(ECANCELED))
        ]
    );
    push_all(&mut q, [linked(io(0, 7)), drained(link_timeout(8, 10))]);
    q.submit(&mut driver, 0);
    let token = driver.take(7);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(reap(&mut q), [(7, Ok(0)), (8, err(EINVAL))]);
}

#[test]
fn cancel_of_an_armed_link_timeout_keeps_the_chain_on_the_target() {
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            linked(io(0, 1)),
            linked(link_timeout(2, 100)),
            io(0, 3),
            cancel(4, 2),
        ],
    );
    q.submit(&mut driver, 0);
    assert_eq!(reap(&mut q), [(2, err(ECANCELED)), (4, Ok(0))]);
    assert_eq!(q.next_deadline(), None);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3]);
}

// ----- ENOMEM ---------------------------------------------------------------------------------

#[test]
fn nomem_blocks_only_its_target_until_unblocked() {
    let mut q = queue(8, 2);
    let mut driver = MockDriver::default();
    driver.by_id.insert(1, StartOutcome::NoMem);
    push_all(&mut q, [io(0, 1), io(1, 2), io(0, 3), io(1, 4)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [2, 4]);
    assert!(q.is_blocked(TargetId(0)));
    q.advance(&mut driver, 0);
    assert_eq!(driver.starts.len(), 3, "no retry while blocked");
    q.unblock(TargetId(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [2, 4, 1, 3]);
    let attempts: Vec<u64> = driver.starts.iter().map(|call| call.id).collect();
    assert_eq!(
        attempts,
        [1, 2, 4, 1, 3],
        "retried once, nothing duplicated"
    );
}

#[test]
fn io_entries_of_a_target_start_in_push_order() {
    // Ready entries of a target start in push order; a chain member waiting for its predecessor
    // does not hold back later independent entries of its target (io_uring runs chains
    // concurrently with everything else).
    let mut q = queue(8, 2);
    let mut driver = MockDriver::default();
    push_all(&mut q, [linked(io(1, 1)), io(0, 2), io(0, 3), io(0, 4)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3, 4]);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3, 4, 2]);
}

#[test]
fn a_blocked_target_holds_back_its_ready_chain_members_in_push_order() {
    // NoMem blocks the target: a chain member that becomes ready takes its push-order place in
    // the line, and everything starts in push order once the target is unblocked.
    let mut q = queue(8, 2);
    let mut driver = MockDriver::default();
    driver.by_id.insert(2, StartOutcome::NoMem);
    push_all(&mut q, [linked(io(1, 1)), io(0, 5), io(0, 2), io(0, 3)]);
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1], "2 answered NoMem");
    assert!(q.is_blocked(TargetId(0)));
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(
        driver.started_ids(),
        [1],
        "nothing starts on a blocked target"
    );
    driver.by_id.remove(&2);
    q.unblock(TargetId(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 5, 2, 3]);
}

#[test]
fn a_chain_member_ready_late_is_not_queued_behind_a_drain() {
    // 2 waits for 1; the DRAIN entry 4 waits for 2. Were 2 queued behind 4 on their shared
    // target, neither could ever start.
    let mut q = queue(8, 1);
    let mut driver = MockDriver::default();
    push_all(
        &mut q,
        [
            linked(io(0, 1)),
            io(0, 2),
            io(0, 3),
            drained(io(0, 4)),
            io(0, 5),
        ],
    );
    q.submit(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3]);
    for id in [3, 1] {
        let token = driver.take(id);
        q.complete(token, Ok(0));
        q.advance(&mut driver, 0);
    }
    assert_eq!(driver.started_ids(), [1, 3, 2]);
    let token = driver.take(2);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3, 2, 4]);
    let token = driver.take(4);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 0);
    assert_eq!(driver.started_ids(), [1, 3, 2, 4, 5]);
}

// ----- shutdown -------------------------------------------------------------------------------

#[test]
fn cancel_unstarted_then_draining_the_driver_completes_everything_once() {
    let mut q = RingQueue::<TestOp>::new(QueueConfig {
        sq_entries: 16,
        cq_entries: 16,
        max_in_flight: 6,
        max_targets: 2,
    })
    .unwrap();
    let mut driver = MockDriver::default();
    driver.by_id.insert(3, StartOutcome::NoMem);
    push_all(
        &mut q,
        [
            linked(io(0, 1)),
            io(0, 2),
            io(1, 3),
            io(1, 4),
            timeout(5, 1_000, 0),
            drained(Submission::nop(6)),
            io(0, 7),
        ],
    );
    q.submit(&mut driver, 0);
    assert_eq!(q.sq_len(), 1);
    assert_eq!(driver.started_ids(), [1]);
    assert_eq!(
        q.cancel_unstarted(),
        6,
        "2 (deferred), 3, 4, 5, 6 and 7 in the SQ"
    );
    assert_eq!(q.next_deadline(), None);
    let token = driver.take(1);
    q.complete(token, Ok(0));
    q.advance(&mut driver, 5_000);
    assert!(q.is_quiescent());
    let mut done = reap(&mut q);
    done.sort_by_key(|&(ud, _)| ud);
    assert_eq!(
        done,
        [
            (1, Ok(0)),
            (2, err(ECANCELED)),
            (3, err(ECANCELED)),
            (4, err(ECANCELED)),
            (5, err(ECANCELED)),
            (6, err(ECANCELED)),
            (7, err(ECANCELED)),
        ]
    );
    assert_eq!(q.in_flight(), 0);
    assert_eq!(driver.started_ids(), [1]);
}

// ----- errors ---------------------------------------------------------------------------------

#[test]
fn io_error_displays_errno_name_and_nvme_status() {
    assert_eq!(
        IoError::errno(ECANCELED).to_string(),
        "ECANCELED (errno 125)"
    );
    assert_eq!(IoError::errno(ETIME).to_string(), "ETIME (errno 62)");
    assert_eq!(IoError::errno(99).to_string(), "unknown error (errno 99)");
    let status = NvmeStatus {
        sct: 0,
        sc: 0x81,
        cdw0: 0,
        dnr: true,
        more: false,
    };
    assert_eq!(
        IoError::with_nvme(EIO, status).to_string(),
        "EIO (errno 5), NVMe sct 0x0 sc 0x81 dnr"
    );
    for errno in [
        ECANCELED, ETIME, ENOENT, EALREADY, EINVAL, ENODEV, ENOMEM, EIO,
    ] {
        assert!(errno_name(errno).is_some());
    }
}
