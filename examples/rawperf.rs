//! `rawperf`: the floor for this layer. The same load as `ringperf`, issued
//! straight through `spdk-ring-sys` by a plain C-style callback that
//! resubmits from inside the completion (as bdevperf does), with no ring.
//! Accepts the same flags (single core). Like `ringperf` (and bdevperf,
//! which keeps a latency histogram per job), it records every I/O's
//! latency in the same histogram, so the comparison is of the I/O path
//! alone, not of the bookkeeping around it.
//!
//! With `RAWPERF_RESUBMIT_AFTER_POLL=1` in the environment the callbacks
//! only note which I/O finished, and the loop resubmits those after each
//! poll (latency then read once per poll, as ringperf does): the floor for
//! a design that hands completions back before resubmitting.
//!
//! `cargo run --release --example rawperf -- -q 128 -o 4096 -w randread -t 5`

#[cfg(spdk)]
#[path = "perf/mod.rs"]
mod perf;

#[cfg(not(spdk))]
fn main() {
    eprintln!("rawperf: this build has no SPDK; see README.md for how to enable it.");
    std::process::exit(2);
}

#[cfg(spdk)]
mod raw {
    use super::perf::{Histogram, Pattern};
    use spdk_ring::sys;
    use std::ffi::c_void;

    /// Everything the callback needs; lives on the job's stack until every
    /// I/O has completed.
    pub struct Job {
        pub desc: *mut sys::spdk_bdev_desc,
        pub ch: *mut sys::spdk_io_channel,
        pub pattern: Pattern,
        pub blocks_per_io: u64,
        pub deadline: u64,
        pub ios: u64,
        pub errors: u64,
        pub outstanding: usize,
        pub submit_failures: u64,
        pub latency: Histogram,
        /// `RAWPERF_RESUBMIT_AFTER_POLL` mode: callbacks only note their slot
        /// here, and the loop resubmits after each poll, as any completion
        /// queue must (the floor for a ring rather than for a callback).
        pub defer: bool,
        pub ready: Vec<*mut Slot>,
    }

    /// One in-flight I/O: its buffer, its job and when it was submitted.
    pub struct Slot {
        pub job: *mut Job,
        pub buf: *mut c_void,
        pub submitted_at: u64,
    }

    /// Submits the next I/O of `slot`; false if SPDK refused it.
    ///
    /// # Safety
    /// `slot` and its job are alive until the I/O completes; the buffer
    /// holds `blocks_per_io` blocks.
    pub unsafe fn submit(slot: *mut Slot) -> bool {
        // SAFETY: the caller's contract.
        unsafe {
            let job = &mut *(*slot).job;
            let (offset, read) = job.pattern.next();
            let f = if read {
                sys::spdk_bdev_read_blocks
            } else {
                sys::spdk_bdev_write_blocks
            };
            let rc = f(
                job.desc,
                job.ch,
                (*slot).buf,
                offset,
                job.blocks_per_io,
                Some(done),
                slot.cast(),
            );
            if rc != 0 {
                job.submit_failures += 1;
                job.outstanding -= 1;
                return false;
            }
            true
        }
    }

    unsafe extern "C" fn done(bdev_io: *mut sys::spdk_bdev_io, success: bool, ctx: *mut c_void) {
        // SAFETY: ctx is the Slot this I/O was submitted with; the bdev_io
        // is ours to free. Nothing here can panic.
        unsafe {
            sys::spdk_bdev_free_io(bdev_io);
            let slot = ctx as *mut Slot;
            let job = &mut *(*slot).job;
            if job.defer {
                if success {
                    job.ios += 1;
                } else {
                    job.errors += 1;
                }
                job.ready.push(slot);
                return;
            }
            let now = sys::spdk_get_ticks();
            job.latency.record(now - (*slot).submitted_at);
            if success {
                job.ios += 1;
            } else {
                job.errors += 1;
            }
            if now < job.deadline {
                (*slot).submitted_at = now;
                submit(slot);
            } else {
                job.outstanding -= 1;
            }
        }
    }
}

#[cfg(spdk)]
fn main() {
    use perf::{Options, Report};
    let options = Options::from_args_or_exit("rawperf");
    match run(&options) {
        Ok(report) => {
            Report::print_table(std::slice::from_ref(&report));
            if options.report_json {
                println!(
                    "{{\"tool\": \"rawperf\", \"results\": [{}]}}",
                    report.json(&options)
                );
            }
        }
        Err(e) => {
            eprintln!("rawperf: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(spdk)]
fn run(o: &perf::Options) -> Result<perf::Report, String> {
    use perf::{Histogram, Pattern, Report};
    use spdk_ring::{clock, BdevDesc, DmaBuf};

    if o.cores()?.len() != 1 {
        return Err("-m: rawperf runs on one core".into());
    }
    let err = |e: spdk_ring::Error| e.to_string();
    let rt = o.start_runtime("rawperf")?;
    let mode = o.open_mode();
    let desc =
        BdevDesc::open(&o.bdev, mode).map_err(|e| format!("{e}: name an existing bdev with -T"))?;
    let ch = desc.io_channel().map_err(err)?;
    let bdev = desc.bdev();
    let pattern = Pattern::new(o, bdev.block_size(), bdev.num_blocks(), 0x9E37_79B9)?;
    let hz = clock::ticks_hz();
    let align = perf::bdevperf_buf_align(&desc);
    let mut bufs: Vec<DmaBuf> = (0..o.queue_depth)
        .map(|_| DmaBuf::alloc(o.io_size, align))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    let start = clock::ticks();
    let mut job = raw::Job {
        desc: desc.as_ptr(),
        ch: ch.as_ptr(),
        blocks_per_io: pattern.blocks_per_io(),
        pattern,
        deadline: start + o.seconds * hz,
        ios: 0,
        errors: 0,
        outstanding: o.queue_depth,
        submit_failures: 0,
        latency: Histogram::new(),
        defer: std::env::var_os("RAWPERF_RESUBMIT_AFTER_POLL").is_some(),
        ready: Vec::with_capacity(o.queue_depth),
    };
    let job_ptr: *mut raw::Job = &mut job;
    let mut slots: Vec<raw::Slot> = bufs
        .iter_mut()
        .map(|b| raw::Slot {
            job: job_ptr,
            buf: b.as_mut_ptr().cast(),
            submitted_at: start,
        })
        .collect();
    for slot in slots.iter_mut() {
        // SAFETY: slots, bufs and job outlive every I/O: we poll below until
        // none is outstanding before any of them is dropped.
        unsafe { raw::submit(slot) };
    }
    // SAFETY: reading the counter the callbacks update on this same thread.
    while unsafe { std::ptr::read_volatile(&(*job_ptr).outstanding) } > 0 {
        rt.poll();
        // SAFETY: as above. No `&mut Job` is held across `submit`, which
        // may run a callback (an immediate failure) that updates the job.
        unsafe {
            if (*job_ptr).defer && !(*job_ptr).ready.is_empty() {
                let now = clock::ticks();
                // Callbacks run by the submissions below append after `n`:
                // they wait for the next round.
                let n = (*job_ptr).ready.len();
                for i in 0..n {
                    let slot = (&(*job_ptr).ready)[i];
                    (*job_ptr).latency.record(now - (*slot).submitted_at);
                    if now < (*job_ptr).deadline {
                        (*slot).submitted_at = now;
                        raw::submit(slot);
                    } else {
                        (*job_ptr).outstanding -= 1;
                    }
                }
                (*job_ptr).ready.drain(..n);
            }
        }
    }
    let end = clock::ticks();
    if job.submit_failures > 0 {
        return Err(format!(
            "{} submissions failed (raise the bdev_io pool or lower -q)",
            job.submit_failures
        ));
    }
    drop(slots);
    drop(bufs);
    drop(ch);
    drop(desc);
    Ok(Report {
        label: format!("{} (raw callbacks)", o.bdev),
        ios: job.ios,
        errors: job.errors,
        seconds: (end - start) as f64 / hz as f64,
        io_size: o.io_size,
        latency: Some(job.latency),
        ticks_hz: hz,
    })
}
