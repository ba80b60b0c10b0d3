//! Microbenchmark of the FFI-free queue core, [`spdk_ring::queue::RingQueue`].
//!
//! # What is measured
//!
//! The ring's own bookkeeping per entry: `push` into the SQ, `submit` (admission
//! into a slot, the ordering pass, the call into the driver), `complete`,
//! `advance` and popping the completion. No SPDK is involved: the driver is a
//! stand-in that records the token in a preallocated `Vec` and answers
//! [`StartOutcome::Started`], and the benchmark itself plays SPDK's completion
//! callback by calling `complete(token, Ok(4096))`. That is the same sequence of
//! queue calls the SPDK bdev driver makes per I/O, minus SPDK.
//!
//! # Why
//!
//! SPDK spends on the order of 100 ns per I/O on a null bdev. The ring sits on
//! that path, so its per-entry cost has to stay well below that figure for the
//! ring API to be close to free. Every group reports `Throughput::Elements` of
//! the batch size, so criterion's throughput line gives entries per second and
//! the per-entry time is the iteration time divided by the batch size.
//!
//! # Groups
//!
//! * `nop`: push + submit + drain of `Nop` entries (no driver call at all):
//!   the floor of the SQ -> slot -> CQ path. Batches of 1, 8, 32 and 128.
//! * `io_roundtrip`: independent `Io` entries on one target, through the
//!   recording driver, completed, advanced and drained. Batches of 1, 8, 32
//!   and 128.
//! * `link_chain`: 32 `Io` entries as 8 LINK chains of 4. Each member starts
//!   only after its predecessor completed, so a round takes 4 complete/advance
//!   passes of 8 entries each.
//! * `drain_barrier`: 32 `Io` entries where every 8th one carries DRAIN, so a
//!   round alternates between 7 concurrent entries and one lone barrier.
//!
//! The measured loop does not allocate: the queue preallocates its tables and
//! the benchmark reuses its token vectors. Before measuring, each benchmark
//! runs one round and checks that every entry completed `Ok` and the queue is
//! idle again.
//!
//! Run with `cargo bench -p spdk-ring --bench ring_core` (add `-- --quick` for
//! a fast smoke run; `SPDK_RING_NO_SPDK=1` builds without SPDK, which this
//! benchmark does not need).

use std::hint::black_box;
use std::mem;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spdk_ring::queue::{
    Driver, EntryFlags, QueueConfig, RingQueue, StartOutcome, Submission, TargetId, Token,
};

/// The driver's operation: a stand-in for the SPDK driver's op (opcode, buffer, offset).
struct FakeIo {
    buf_id: u32,
}

/// Queue sizes for every benchmark: room for the largest batch with slack.
const CONFIG: QueueConfig = QueueConfig {
    sq_entries: 256,
    cq_entries: 512,
    max_in_flight: 256,
    max_targets: 1,
};

/// The only target the benchmarks use.
const TARGET: TargetId = TargetId(0);

/// Batch sizes of the `nop` and `io_roundtrip` groups.
const BATCHES: [usize; 4] = [1, 8, 32, 128];

/// Batch size of the `link_chain` and `drain_barrier` groups.
const ORDERED_BATCH: usize = 32;

/// Members per LINK chain in `link_chain`.
const CHAIN_LEN: usize = 4;

/// Every `DRAIN_EVERY`-th entry carries DRAIN in `drain_barrier`.
const DRAIN_EVERY: usize = 8;

/// Driver for Nop-only rounds: Nops never reach the driver.
struct NopDriver;

impl Driver<FakeIo> for NopDriver {
    fn start(&mut self, _token: Token, _target: TargetId, _op: &mut FakeIo) -> StartOutcome {
        unreachable!("Nop entries never reach the driver")
    }

    fn abort(&mut self, _token: Token, _target: TargetId, _op: &mut FakeIo) -> Result<(), ()> {
        Err(())
    }
}

/// Driver that accepts everything and records the token, like the SPDK driver handing the token
/// to its completion callback. `started` is preallocated and only ever cleared, never shrunk.
struct RecordingDriver {
    started: Vec<Token>,
}

impl RecordingDriver {
    fn new() -> Self {
        Self {
            started: Vec::with_capacity(CONFIG.max_in_flight as usize),
        }
    }
}

impl Driver<FakeIo> for RecordingDriver {
    fn start(&mut self, token: Token, _target: TargetId, op: &mut FakeIo) -> StartOutcome {
        // The real driver reads the op to build its SPDK call; keep that read alive.
        black_box(op.buf_id);
        self.started.push(token);
        StartOutcome::Started
    }

    fn abort(&mut self, _token: Token, _target: TargetId, _op: &mut FakeIo) -> Result<(), ()> {
        Err(())
    }
}

/// Pops every completion; returns how many succeeded.
fn drain(queue: &mut RingQueue<FakeIo>) -> usize {
    let mut ok = 0;
    for completion in queue.completions() {
        ok += usize::from(completion.result.is_ok());
        black_box(completion);
    }
    ok
}

/// One `nop` round: push `batch` Nops, submit, drain. Returns the number of `Ok` completions.
fn nop_round(queue: &mut RingQueue<FakeIo>, driver: &mut NopDriver, batch: usize) -> usize {
    for i in 0..batch {
        queue
            .push(Submission::nop(i as u64))
            .expect("SQ sized for the batch");
    }
    black_box(queue.submit(driver, 0));
    drain(queue)
}

/// One Io round: push `batch` Io entries (flags chosen per index), submit, then play the device:
/// complete every started token with `Ok(4096)` and `advance`, until nothing more starts; finally
/// drain the CQ. `pending` is a preallocated buffer swapped with the driver's token list so the
/// tokens can be completed while the driver is lent to `advance`. Returns the `Ok` completions.
fn io_round(
    queue: &mut RingQueue<FakeIo>,
    driver: &mut RecordingDriver,
    pending: &mut Vec<Token>,
    batch: usize,
    flags: impl Fn(usize) -> EntryFlags,
) -> usize {
    for i in 0..batch {
        let submission = Submission::io(TARGET, FakeIo { buf_id: i as u32 }, i as u64);
        queue
            .push(submission.with_flags(flags(i)))
            .expect("SQ sized for the batch");
    }
    black_box(queue.submit(driver, 0));
    while !driver.started.is_empty() {
        mem::swap(&mut driver.started, pending);
        for &token in pending.iter() {
            queue.complete(token, Ok(4096));
        }
        pending.clear();
        queue.advance(driver, 0);
    }
    drain(queue)
}

/// Criterion settings: short enough for the whole file to run in well under two minutes on two cores.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

fn new_queue() -> RingQueue<FakeIo> {
    RingQueue::new(CONFIG).expect("valid queue config")
}

/// Checks that a round left nothing behind, so the next one starts from the same state.
fn assert_idle(queue: &RingQueue<FakeIo>) {
    assert_eq!(queue.sq_len(), 0);
    assert_eq!(queue.in_flight(), 0);
    assert!(queue.is_quiescent());
    assert_eq!(queue.overflowed(), 0);
}

fn bench_nop(c: &mut Criterion) {
    let mut group = c.benchmark_group("nop");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut queue = new_queue();
            let mut driver = NopDriver;
            assert_eq!(nop_round(&mut queue, &mut driver, batch), batch);
            assert_idle(&queue);
            b.iter(|| nop_round(&mut queue, &mut driver, black_box(batch)));
        });
    }
    group.finish();
}

/// Benchmarks Io rounds of `batch` entries with per-index `flags` as `group/batch`.
fn bench_io(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    batch: usize,
    flags: fn(usize) -> EntryFlags,
) {
    group.throughput(Throughput::Elements(batch as u64));
    group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
        let mut queue = new_queue();
        let mut driver = RecordingDriver::new();
        let mut pending = Vec::with_capacity(CONFIG.max_in_flight as usize);
        assert_eq!(
            io_round(&mut queue, &mut driver, &mut pending, batch, flags),
            batch
        );
        assert_idle(&queue);
        b.iter(|| {
            io_round(
                &mut queue,
                &mut driver,
                &mut pending,
                black_box(batch),
                flags,
            )
        });
    });
}

fn no_flags(_: usize) -> EntryFlags {
    EntryFlags::empty()
}

/// LINK on every member but the last of each chain of `CHAIN_LEN`.
fn chain_flags(i: usize) -> EntryFlags {
    if i % CHAIN_LEN == CHAIN_LEN - 1 {
        EntryFlags::empty()
    } else {
        EntryFlags::LINK
    }
}

/// DRAIN on the 8th, 16th, ... entry.
fn drain_flags(i: usize) -> EntryFlags {
    if i % DRAIN_EVERY == DRAIN_EVERY - 1 {
        EntryFlags::DRAIN
    } else {
        EntryFlags::empty()
    }
}

fn bench_io_roundtrip(c: &mut Criterion) {
    let mut group = c.benchmark_group("io_roundtrip");
    for batch in BATCHES {
        bench_io(&mut group, batch, no_flags);
    }
    group.finish();
}

fn bench_link_chain(c: &mut Criterion) {
    let mut group = c.benchmark_group("link_chain");
    bench_io(&mut group, ORDERED_BATCH, chain_flags);
    group.finish();
}

fn bench_drain_barrier(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain_barrier");
    bench_io(&mut group, ORDERED_BATCH, drain_flags);
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_nop, bench_io_roundtrip, bench_link_chain, bench_drain_barrier
}
criterion_main!(benches);
