//! Differential test of the ring's two paths: the same random program of
//! entries, polls and reaps runs once with the lane allowed and once with
//! it disabled (`RingBuilder::lane(false)`), on a malloc bdev and on a delay
//! bdev, and everything a caller can observe must be equal: the sequence of
//! (user_data, result, flags, data read) of the completions, whether each
//! push was accepted, the counters, `cq_len`, `sq_space` and `in_flight`
//! after every poll, and the bdev's contents afterwards.
//!
//! `cargo test differential` selects it; `SPDK_RING_DIFFERENTIAL_SEEDS=n`
//! runs more seeds than the default.

#[cfg(spdk)]
#[path = "common/mod.rs"]
mod common;

#[path = "common/skipped.rs"]
#[macro_use]
mod skipped;
report_skipped_without_spdk!();

#[cfg(spdk)]
mod differential {
    use super::common::*;
    use spdk_ring::{
        opcode, BdevDesc, CompletionFlags, DmaBuf, Entry, EntryFlags, IoFailure, JsonConfig,
        OpenMode, Ring, SpdkThread, Target,
    };
    use std::time::Duration;

    /// Blocks of the test region at the start of each bdev.
    const REGION: u64 = 512;
    const BLOCK: usize = 512;
    const DEFAULT_SEEDS: u64 = 120;
    /// User data of the Cancels that end a program's timers.
    const CANCEL_AT_END: u64 = 1 << 32;
    /// Polls without progress after which a program's end counts as reached.
    const STALL_POLLS: usize = 1000;

    /// xorshift64*: a reproducible program per seed, no dependency.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Rng {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.below(100) < percent
        }
    }

    /// One entry of a program, built fresh for each run.
    #[derive(Clone, Debug)]
    enum Spec {
        Read {
            offset: u64,
            blocks: u64,
            buf_blocks: u64,
        },
        Write {
            offset: u64,
            blocks: u64,
            seed: u64,
        },
        /// A buffer that is not a whole number of blocks.
        BadLength {
            write: bool,
        },
        /// Past the end of the bdev.
        OutOfRange {
            write: bool,
        },
        ZeroBlocks,
        Nop,
        Cancel {
            victim: u64,
        },
        /// By count (a long time limit), or expiring at once.
        Timeout {
            count: u32,
        },
        /// Long: the linked entry wins and it completes ECANCELED.
        LinkTimeout,
    }

    #[derive(Clone, Debug)]
    enum Step {
        Push {
            spec: Spec,
            user_data: u64,
            flags: EntryFlags,
        },
        Poll,
        Submit,
        /// Take up to `n` completions, in place (`reap`) or owned.
        Reap {
            n: usize,
            in_place: bool,
        },
    }

    struct Program {
        sq: u32,
        cq: u32,
        max_in_flight: u32,
        steps: Vec<Step>,
    }

    fn program(seed: u64) -> Program {
        let mut rng = Rng::new(seed);
        let sq = [2, 4, 8, 16][rng.below(4) as usize];
        let cq = sq * (1 + rng.below(2) as u32);
        let max_in_flight = 1 + rng.below(u64::from(cq) + 4) as u32;
        let mut steps = Vec::new();
        let mut user_data = 0u64;
        // Phases: plain I/O only, ending with every completion taken so the
        // core is idle again (the lane's case), or every kind of entry mixed.
        let mut plain_share = 100;
        let mut phase_left = 0;
        for _ in 0..240 {
            if phase_left == 0 {
                if plain_share == 100 {
                    steps.push(Step::Reap {
                        n: usize::MAX,
                        in_place: rng.chance(50),
                    });
                }
                plain_share = [100, 100, 60, 30][rng.below(4) as usize];
                phase_left = 10 + rng.below(30);
            }
            phase_left -= 1;
            match rng.below(10) {
                0..=5 => {
                    user_data += 1;
                    let blocks = 1 + rng.below(8);
                    let offset = rng.below(REGION - blocks);
                    let plain = rng.chance(plain_share);
                    let spec = if plain {
                        if rng.chance(50) {
                            let buf_blocks = blocks + rng.below(2);
                            Spec::Read {
                                offset,
                                blocks,
                                buf_blocks,
                            }
                        } else {
                            Spec::Write {
                                offset,
                                blocks,
                                seed: rng.next(),
                            }
                        }
                    } else {
                        match rng.below(9) {
                            0 => Spec::BadLength {
                                write: rng.chance(50),
                            },
                            1 => Spec::OutOfRange {
                                write: rng.chance(50),
                            },
                            2 => Spec::ZeroBlocks,
                            3 => Spec::Nop,
                            4 => Spec::Cancel {
                                victim: user_data.saturating_sub(1 + rng.below(6)),
                            },
                            5 => Spec::Timeout {
                                count: rng.below(4) as u32,
                            },
                            6 => Spec::LinkTimeout,
                            _ => Spec::Read {
                                offset,
                                blocks,
                                buf_blocks: blocks,
                            },
                        }
                    };
                    let mut flags = EntryFlags::empty();
                    if !plain && rng.chance(40) {
                        flags |= EntryFlags::LINK;
                    }
                    if !plain && rng.chance(15) {
                        flags |= EntryFlags::DRAIN;
                    }
                    steps.push(Step::Push {
                        spec,
                        user_data,
                        flags,
                    });
                }
                6 | 7 => steps.push(Step::Poll),
                8 => steps.push(if rng.chance(20) {
                    Step::Submit
                } else {
                    Step::Poll
                }),
                _ => steps.push(Step::Reap {
                    n: rng.below(u64::from(cq) + 3) as usize,
                    in_place: rng.chance(50),
                }),
            }
        }
        Program {
            sq,
            cq,
            max_in_flight,
            steps,
        }
    }

    fn pattern(blocks: u64, seed: u64) -> DmaBuf {
        let mut buf = DmaBuf::alloc(blocks as usize * BLOCK, 0).unwrap();
        let mut rng = Rng::new(seed);
        for chunk in buf.chunks_mut(8) {
            let word = rng.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        buf
    }

    fn build(spec: &Spec, target: Target, num_blocks: u64) -> Entry {
        let long = Duration::from_secs(120);
        match *spec {
            Spec::Read {
                offset,
                blocks,
                buf_blocks,
            } => {
                let buf = DmaBuf::alloc_zeroed(buf_blocks as usize * BLOCK, 0).unwrap();
                let read = opcode::Read::new(target, buf, offset);
                if buf_blocks == blocks {
                    read.build()
                } else {
                    read.num_blocks(blocks).build()
                }
            }
            Spec::Write {
                offset,
                blocks,
                seed,
            } => opcode::Write::new(target, pattern(blocks, seed), offset).build(),
            Spec::BadLength { write } => {
                let buf = DmaBuf::alloc(BLOCK + 100, 0).unwrap();
                if write {
                    opcode::Write::new(target, buf, 0).build()
                } else {
                    opcode::Read::new(target, buf, 0).build()
                }
            }
            Spec::OutOfRange { write } => {
                let buf = DmaBuf::alloc(4 * BLOCK, 0).unwrap();
                if write {
                    opcode::Write::new(target, buf, num_blocks - 2).build()
                } else {
                    opcode::Read::new(target, buf, num_blocks - 2).build()
                }
            }
            Spec::ZeroBlocks => opcode::Read::new(target, DmaBuf::alloc(BLOCK, 0).unwrap(), 0)
                .num_blocks(0)
                .build(),
            Spec::Nop => opcode::Nop::new().build(),
            Spec::Cancel { victim } => opcode::Cancel::new(victim).build(),
            Spec::Timeout { count: 0 } => opcode::Timeout::new(Duration::ZERO).build(),
            Spec::Timeout { count } => opcode::Timeout::new(long).count(count).build(),
            Spec::LinkTimeout => opcode::LinkTimeout::new(long).build(),
        }
    }

    /// Everything a caller observes, in order.
    #[derive(Debug, PartialEq, Eq)]
    enum Seen {
        Pushed {
            user_data: u64,
            accepted: bool,
        },
        Polled {
            ready: usize,
            state: State,
        },
        Submitted {
            taken: usize,
            state: State,
        },
        Done {
            user_data: u64,
            result: Result<u64, i32>,
            flags: CompletionFlags,
            data: Option<u64>,
        },
    }

    #[derive(Debug, PartialEq, Eq)]
    struct State {
        cq_len: usize,
        sq_space: usize,
        sq_len: usize,
        in_flight: usize,
        overflowed: u64,
        enomem_retries: u64,
    }

    fn state(ring: &Ring) -> State {
        State {
            cq_len: ring.cq_len(),
            sq_space: ring.sq_space(),
            sq_len: ring.sq_len(),
            in_flight: ring.in_flight(),
            overflowed: ring.stats().overflowed,
            enomem_retries: ring.stats().enomem_retries,
        }
    }

    /// FNV-1a of a buffer's bytes.
    fn digest(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Takes one completion, in place or owned, as a caller would.
    fn take_one(ring: &mut Ring, in_place: bool) -> Option<Seen> {
        let seen =
            |user_data, result: Result<u64, IoFailure>, flags, buf: Option<DmaBuf>| Seen::Done {
                user_data,
                result: result.map_err(|e| e.errno().0),
                flags,
                data: buf.map(|b| digest(&b)),
            };
        if in_place {
            let mut done = ring.reap()?;
            let buf = done.take_buf();
            Some(seen(done.user_data(), done.result(), done.flags(), buf))
        } else {
            let mut done = ring.next_completion()?;
            let buf = done.take_buf();
            Some(seen(done.user_data(), done.result(), done.flags(), buf))
        }
    }

    /// What one run saw: the observations, a digest of the region
    /// afterwards, and how many I/Os took the lane.
    struct Outcome {
        seen: Vec<Seen>,
        region: u64,
        lane_ios: u64,
    }

    /// Runs `program` on `bdev` on an SPDK thread of its own, so the run
    /// gets fresh I/O channels: the delay bdev seeds each channel's random
    /// choice of latency class (which reorders its completions) with the
    /// current second, and a pair of runs within one second draws the same.
    fn run(program: &Program, bdev: &str, lane: bool) -> Outcome {
        let thread = SpdkThread::attach(&format!("differential-{lane}")).unwrap();
        let desc = BdevDesc::open(bdev, OpenMode::ReadWrite).unwrap();
        let outcome = run_on(program, &desc, lane);
        drop(desc);
        drop(thread);
        outcome
    }

    fn run_on(program: &Program, desc: &BdevDesc, lane: bool) -> Outcome {
        zero_region(desc);
        let mut ring = Ring::builder(program.sq)
            .cq_entries(program.cq)
            .max_in_flight(program.max_in_flight)
            .lane(lane)
            .build()
            .unwrap();
        let target = ring.register_bdev(desc).unwrap();
        let num_blocks = desc.bdev().num_blocks();
        let mut seen = Vec::new();
        let mut pushed = 0u64;
        for step in &program.steps {
            match step {
                Step::Push {
                    spec,
                    user_data,
                    flags,
                } => {
                    let entry = build(spec, target, num_blocks)
                        .user_data(*user_data)
                        .flags(*flags);
                    let accepted = ring.push(entry).is_ok();
                    pushed += u64::from(accepted);
                    seen.push(Seen::Pushed {
                        user_data: *user_data,
                        accepted,
                    });
                }
                Step::Poll => {
                    let ready = ring.poll();
                    seen.push(Seen::Polled {
                        ready,
                        state: state(&ring),
                    });
                }
                Step::Submit => {
                    let taken = ring.submit();
                    seen.push(Seen::Submitted {
                        taken,
                        state: state(&ring),
                    });
                }
                Step::Reap { n, in_place } => {
                    for _ in 0..*n {
                        match take_one(&mut ring, *in_place) {
                            Some(done) => seen.push(done),
                            None => break,
                        }
                    }
                }
            }
        }
        // Count Timeouts may still wait for completions that never come:
        // cancel every timer entry (those already done answer ENOENT).
        for step in &program.steps {
            if let Step::Push {
                spec: Spec::Timeout { .. } | Spec::LinkTimeout,
                user_data,
                ..
            } = step
            {
                let cancel = opcode::Cancel::new(*user_data).build();
                let mut entry = cancel.user_data(CANCEL_AT_END + user_data);
                // A full SQ of entries waiting for slots that armed timers
                // hold stays full: then the program ends with them stuck.
                for _ in 0..STALL_POLLS {
                    match ring.push(entry) {
                        Ok(()) => {
                            pushed += 1;
                            break;
                        }
                        Err(full) => entry = full.entry,
                    }
                    ring.poll();
                    while let Some(done) = take_one(&mut ring, true) {
                        seen.push(done);
                    }
                }
            }
        }
        // Whatever is left: poll until every entry completed or nothing
        // moves any more, then drain.
        let mut still = 0;
        while ring.sq_len() + ring.in_flight() > 0 && still < STALL_POLLS {
            let before = (ring.sq_len(), ring.in_flight(), ring.cq_len());
            ring.poll();
            if (ring.sq_len(), ring.in_flight(), ring.cq_len()) == before {
                still += 1;
            } else {
                still = 0;
            }
        }
        let stuck = (ring.sq_len() + ring.in_flight()) as u64;
        seen.push(Seen::Polled {
            ready: ring.cq_len(),
            state: state(&ring),
        });
        let mut completed = 0u64;
        while let Some(done) = take_one(&mut ring, completed % 2 == 0) {
            seen.push(done);
            completed += 1;
        }
        let taken = seen
            .iter()
            .filter(|s| matches!(s, Seen::Done { .. }))
            .count() as u64;
        assert_eq!(taken + stuck, pushed, "every accepted entry completes once");
        let lane_ios = ring.stats().lane_ios;
        drop(ring);
        Outcome {
            seen,
            region: region_digest(desc),
            lane_ios,
        }
    }

    fn now_s() -> libc::time_t {
        // SAFETY: time(NULL) only reads the clock.
        unsafe { libc::time(std::ptr::null_mut()) }
    }

    /// Runs `program` with and without the lane within one second (see `run`).
    fn run_pair(program: &Program, bdev: &str) -> (Outcome, Outcome) {
        loop {
            let start = now_s();
            let with_lane = run(program, bdev, true);
            let core_only = run(program, bdev, false);
            if now_s() == start {
                return (with_lane, core_only);
            }
        }
    }

    fn wait_one(ring: &mut Ring) -> Result<u64, i32> {
        ring.submit_and_wait(1, WAIT).unwrap();
        let done = ring.next_completion().unwrap();
        done.result().map_err(|e| e.errno().0)
    }

    fn zero_region(desc: &BdevDesc) {
        let mut ring = Ring::new(4).unwrap();
        let t = ring.register_bdev(desc).unwrap();
        let zeros = DmaBuf::alloc_zeroed(REGION as usize * BLOCK, 0).unwrap();
        ring.push(opcode::Write::new(t, zeros, 0).build()).unwrap();
        assert_eq!(wait_one(&mut ring), Ok(REGION * BLOCK as u64));
    }

    fn region_digest(desc: &BdevDesc) -> u64 {
        let mut ring = Ring::new(4).unwrap();
        let t = ring.register_bdev(desc).unwrap();
        let buf = DmaBuf::alloc_zeroed(REGION as usize * BLOCK, 0).unwrap();
        ring.push(opcode::Read::new(t, buf, 0).build()).unwrap();
        ring.submit_and_wait(1, WAIT).unwrap();
        let mut done = ring.next_completion().unwrap();
        assert_eq!(done.result(), Ok(REGION * BLOCK as u64));
        digest(&done.take_buf().unwrap())
    }

    fn seeds() -> u64 {
        std::env::var("SPDK_RING_DIFFERENTIAL_SEEDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_SEEDS)
    }

    /// Runs every seed with and without the lane on `bdev`.
    fn lane_and_core_agree_on(bdev: &str, first_seed: u64) {
        let (mut lane_total, mut overflowed_total) = (0, 0);
        for seed in first_seed..first_seed + seeds() {
            let program = program(seed);
            let (lane_run, core_run) = run_pair(&program, bdev);
            assert_eq!(core_run.lane_ios, 0, "a disabled lane takes nothing");
            let (with_lane, core_only) = (&lane_run.seen, &core_run.seen);
            if let Some(dir) = std::env::var_os("SPDK_RING_DIFFERENTIAL_DUMP") {
                for (name, trace) in [("lane", with_lane), ("core", core_only)] {
                    let path = std::path::Path::new(&dir).join(format!("{bdev}-{seed}-{name}"));
                    let text: String = trace.iter().map(|s| format!("{s:?}\n")).collect();
                    std::fs::write(path, format!("{:?}\n{text}", program.steps)).unwrap();
                }
            }
            if let Some(at) = with_lane
                .iter()
                .zip(core_only.iter())
                .position(|(a, b)| a != b)
            {
                let from = at.saturating_sub(6);
                panic!(
                    "seed {seed} on {bdev} (sq {}, cq {}, max_in_flight {}): the paths differ at \
                     observation {at}\n  lane: {:#?}\n  core: {:#?}",
                    program.sq,
                    program.cq,
                    program.max_in_flight,
                    &with_lane[from..(at + 3).min(with_lane.len())],
                    &core_only[from..(at + 3).min(core_only.len())],
                );
            }
            assert_eq!(with_lane.len(), core_only.len(), "seed {seed}");
            assert_eq!(
                lane_run.region, core_run.region,
                "seed {seed}: the bdev's contents"
            );
            lane_total += lane_run.lane_ios;
            if let Some(Seen::Polled { state, .. }) = with_lane
                .iter()
                .rev()
                .find(|s| matches!(s, Seen::Polled { .. }))
            {
                overflowed_total += state.overflowed;
            }
        }
        // The programs must exercise what they compare.
        assert!(lane_total > 1000, "only {lane_total} lane I/Os on {bdev}");
        assert!(overflowed_total > 0, "no overflow on {bdev}");
        eprintln!(
            "differential on {bdev}: {} seeds from {first_seed}, {lane_total} lane I/Os, \
             {overflowed_total} overflowed completions, identical",
            seeds()
        );
    }

    #[test]
    fn differential_lane_and_core_agree_on_malloc() {
        fixture();
        lane_and_core_agree_on("Malloc0", 1);
    }

    #[test]
    fn differential_lane_and_core_agree_on_a_delay_bdev() {
        let fx = fixture();
        fx.load_config(
            JsonConfig::new()
                .malloc_bdev("DelayBase", 2048, 512)
                .to_json(),
        )
        .recv()
        .unwrap()
        .unwrap();
        // Zero added latency keeps completions in a deterministic poll
        // (the delay bdev still completes them from its own poller, a
        // later point than malloc's).
        fx.bdev_method(
            "bdev_delay_create",
            r#"{"name": "Delay0", "base_bdev_name": "DelayBase", "avg_read_latency": 0,
                "p99_read_latency": 0, "avg_write_latency": 0, "p99_write_latency": 0}"#
                .into(),
        )
        .recv()
        .unwrap()
        .unwrap();
        lane_and_core_agree_on("Delay0", 10_001);
    }
}
