//! One 4 KiB read on a null bdev through the ring, at several queue depths,
//! next to the same I/O issued straight through `spdk-ring-sys` with a plain
//! C callback that resubmits from inside the completion (no ring): the floor
//! for this layer. Criterion reports time per I/O for both; a closing table
//! prints both again with their difference, which is what the ring costs.
//!
//! Needs SPDK (it starts an embedded no-huge runtime); without it, it says
//! it was skipped and exits.

#[cfg(not(spdk))]
fn main() {
    println!("ring_null: skipped: this build has no SPDK (see README.md to enable it)");
}

#[cfg(spdk)]
fn main() {
    use criterion::{BenchmarkId, Throughput};

    let (rt, desc) = null_bench::start("bench_ring_null");
    let mut c = null_bench::criterion();
    let mut group = c.benchmark_group("null_4k_read");
    for depth in [1usize, 8, 32, 128] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("ring", depth), &depth, |b, &depth| {
            let mut job = ring_job::RingJob::new(&desc, depth);
            b.iter_custom(|ios| job.run(ios));
        });
        group.bench_with_input(
            BenchmarkId::new("raw_callback", depth),
            &depth,
            |b, &depth| {
                b.iter_custom(|ios| raw_job::run(&rt, &desc, depth, ios));
            },
        );
    }
    group.finish();
    c.final_summary();
    print_ring_cost(&rt, &desc);
    drop(desc);
    drop(rt);
}

/// What the ring adds per I/O at each depth: the best of three alternating
/// timed runs of each path, the same jobs criterion measured above.
#[cfg(spdk)]
fn print_ring_cost(rt: &spdk_ring::SpdkRuntime, desc: &spdk_ring::BdevDesc) {
    const IOS: u64 = 1_000_000;
    println!("\nnull_4k_read, ns per I/O (best of 3 alternating runs of {IOS} I/Os):");
    println!(
        "{:>6} {:>10} {:>14} {:>12}",
        "depth", "ring", "raw_callback", "ring costs"
    );
    for depth in [1usize, 8, 32, 128] {
        let mut job = ring_job::RingJob::new(desc, depth);
        let (mut ring, mut raw) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            ring = ring.min(job.run(IOS).as_nanos() as f64 / IOS as f64);
            raw = raw.min(raw_job::run(rt, desc, depth, IOS).as_nanos() as f64 / IOS as f64);
        }
        println!("{depth:>6} {ring:>10.1} {raw:>14.1} {:>12.1}", ring - raw);
    }
}

#[cfg(spdk)]
#[path = "common/ring_job.rs"]
mod ring_job;

#[cfg(spdk)]
#[path = "common/null_bench.rs"]
mod null_bench;

/// The floor: `spdk_bdev_read_blocks` with a callback that resubmits.
#[cfg(spdk)]
mod raw_job {
    use spdk_ring::{sys, BdevDesc, DmaBuf, SpdkRuntime};
    use std::ffi::c_void;
    use std::time::{Duration, Instant};

    struct Job {
        desc: *mut sys::spdk_bdev_desc,
        ch: *mut sys::spdk_io_channel,
        remaining_to_issue: u64,
        outstanding: u64,
        next_lba: u64,
    }

    struct Slot {
        job: *mut Job,
        buf: *mut c_void,
    }

    /// # Safety
    /// `slot`, its job and its buffer outlive the I/O.
    unsafe fn submit(slot: *mut Slot) {
        // SAFETY: the caller's contract; a failed submit is counted as done
        // so the run still ends (the null bdev does not fail at these depths).
        unsafe {
            let job = &mut *(*slot).job;
            job.remaining_to_issue -= 1;
            job.next_lba = (job.next_lba + 7919) % (1 << 20);
            let rc = sys::spdk_bdev_read_blocks(
                job.desc,
                job.ch,
                (*slot).buf,
                job.next_lba,
                1,
                Some(done),
                slot.cast(),
            );
            if rc != 0 {
                job.outstanding -= 1;
            }
        }
    }

    unsafe extern "C" fn done(io: *mut sys::spdk_bdev_io, _ok: bool, ctx: *mut c_void) {
        // SAFETY: ctx is the Slot of this I/O; the bdev_io is ours to free.
        unsafe {
            sys::spdk_bdev_free_io(io);
            let slot = ctx as *mut Slot;
            let job = &mut *(*slot).job;
            if job.remaining_to_issue > 0 {
                submit(slot);
            } else {
                job.outstanding -= 1;
            }
        }
    }

    pub fn run(rt: &SpdkRuntime, desc: &BdevDesc, depth: usize, ios: u64) -> Duration {
        let ch = desc.io_channel().expect("channel");
        let mut bufs: Vec<DmaBuf> = (0..depth)
            .map(|_| DmaBuf::alloc(4096, 0).expect("dma"))
            .collect();
        let first = (depth as u64).min(ios);
        let mut job = Job {
            desc: desc.as_ptr(),
            ch: ch.as_ptr(),
            remaining_to_issue: ios,
            outstanding: first,
            next_lba: 0,
        };
        let job_ptr: *mut Job = &mut job;
        let mut slots: Vec<Slot> = bufs
            .iter_mut()
            .map(|b| Slot {
                job: job_ptr,
                buf: b.as_mut_ptr().cast(),
            })
            .collect();
        let start = Instant::now();
        for slot in slots.iter_mut().take(first as usize) {
            // SAFETY: slots, buffers and job live until `outstanding` is 0.
            unsafe { submit(slot) };
        }
        // SAFETY: the callbacks update `outstanding` on this thread, inside poll.
        while unsafe { std::ptr::read_volatile(&(*job_ptr).outstanding) } > 0 {
            rt.poll();
        }
        let elapsed = start.elapsed();
        drop(slots);
        drop(bufs);
        elapsed
    }
}
