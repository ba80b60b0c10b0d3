//! `ringperf`: a bdevperf-style load generator built on the ring.
//!
//! It accepts bdevperf's own flags where they overlap (`--json`, `-T`, `-q`,
//! `-o`, `-w`, `-M`, `-t`, `-m`, `--no-huge`, `-s`), so the same command line
//! runs both; `scripts/compare-bdevperf` does exactly that. One ring per
//! core of `-m`. Prints IOPS, MiB/s and latency (average, p50, p99, p99.9),
//! as a table and, with `--report-json`, as JSON.
//!
//! `--forward` (with `-m 0x3`): core 0 generates the I/O and forwards each
//! entry to core 1's ring ([`Ring::forward`](spdk_ring::Ring::forward)),
//! which runs it; completions come back to core 0's ring. Beside a
//! one-core run it gives the cost of forwarding per entry.
//!
//! `cargo run --release --example ringperf -- -q 128 -o 4096 -w randread -t 5`

#[cfg(spdk)]
#[path = "perf/mod.rs"]
mod perf;

#[cfg(not(spdk))]
fn main() {
    eprintln!("ringperf: this build has no SPDK; see README.md for how to enable it.");
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() {
    use perf::{Options, Report};
    let options = Options::from_args_or_exit("ringperf");
    match run(&options) {
        Ok(reports) => {
            Report::print_table(&reports);
            let f = spdk_ring::EntryFootprint::get();
            println!(
                "ring memory: {} B per SQ entry, {} B per CQ entry, {} B per in-flight slot, \
                 {} B per lane slot",
                f.sq_entry, f.cq_entry, f.in_flight_slot, f.lane_slot
            );
            if options.report_json {
                let jobs: Vec<String> = reports.iter().map(|r| r.json(&options)).collect();
                println!(
                    "{{\"tool\": \"ringperf\", \"results\": [{}]}}",
                    jobs.join(", ")
                );
            }
        }
        Err(e) => {
            eprintln!("ringperf: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(spdk)]
fn run(o: &perf::Options) -> Result<Vec<perf::Report>, String> {
    use perf::{Histogram, Report};
    use spdk_ring::{Bdev, SpdkThread};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let cores = o.cores()?;
    let rt = o.start_runtime("ringperf")?;
    match o.nvme_target() {
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) => {}
        None => {
            if let Err(e) = Bdev::lookup(&o.bdev) {
                return Err(format!(
                    "{e}: name an existing bdev of the configuration with -T"
                ));
            }
        }
    }
    if o.forward {
        return forwarded(o, &cores, rt);
    }
    let progress: Arc<Vec<AtomicU64>> = Arc::new(cores.iter().map(|_| AtomicU64::new(0)).collect());
    let start_flag = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (index, &core) in cores.iter().enumerate().skip(1) {
        let (o, progress, start_flag) = (o.clone(), progress.clone(), start_flag.clone());
        let worker = SpdkThread::spawn(&format!("ringperf-{core}"), move |_| {
            perf::pin_to_core(core);
            while !start_flag.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            job(&o, core, &progress[index], None, None)
        })
        .map_err(|e| e.to_string())?;
        workers.push(worker);
    }
    start_flag.store(true, Ordering::Release);
    let mut reports = vec![job(
        o,
        cores[0],
        &progress[0],
        if o.quiet { None } else { Some(&progress) },
        None,
    )?];
    for worker in workers {
        reports.push(worker.join().map_err(|e| e.to_string())??);
    }
    drop(rt);
    if reports.len() > 1 {
        let mut latency = Histogram::new();
        for r in &reports {
            latency.merge(r.latency.as_ref().expect("ring jobs measure latency"));
        }
        let total = Report {
            label: "Total".into(),
            ios: reports.iter().map(|r| r.ios).sum(),
            errors: reports.iter().map(|r| r.errors).sum(),
            seconds: reports.iter().map(|r| r.seconds).fold(0.0, f64::max),
            io_size: o.io_size,
            latency: Some(latency),
            ticks_hz: reports[0].ticks_hz,
        };
        reports.push(total);
    }
    Ok(reports)
}

/// Where `--forward` sends core 0's entries: core 1's ring, and its target.
#[cfg(spdk)]
struct ForwardTo {
    sender: spdk_ring::RingSender,
    target: spdk_ring::Target,
    block_size: u32,
    num_blocks: u64,
    align: usize,
}

/// `--forward`: core 1 runs a ring that only executes what core 0's job
/// forwards to it.
#[cfg(spdk)]
fn forwarded(
    o: &perf::Options,
    cores: &[usize],
    rt: spdk_ring::SpdkRuntime,
) -> Result<Vec<perf::Report>, String> {
    use spdk_ring::{BdevDesc, Ring, SpdkThread};
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    if cores.len() != 2 || o.nvme.is_some() {
        return Err("--forward needs a bdev and two cores (-m 0x3)".into());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (opts, stop_flag, core) = (o.clone(), stop.clone(), cores[1]);
    let executor = SpdkThread::spawn(&format!("ringperf-{core}"), move |_| {
        perf::pin_to_core(core);
        let err = |e: spdk_ring::Error| e.to_string();
        let depth = opts.queue_depth as u32;
        let setup = (|| {
            let desc = BdevDesc::open(&opts.bdev, opts.open_mode()).map_err(err)?;
            let mut ring = Ring::builder(depth)
                .forward_entries(depth)
                .build()
                .map_err(err)?;
            let target = ring.register_bdev(&desc).map_err(err)?;
            let bdev = desc.bdev();
            let to = ForwardTo {
                sender: ring.sender(),
                target,
                block_size: bdev.block_size(),
                num_blocks: bdev.num_blocks(),
                align: perf::bdevperf_buf_align(&desc),
            };
            Ok::<_, String>((desc, ring, to))
        })();
        let (_desc, mut ring) = match setup {
            Ok((desc, ring, to)) => {
                let _ = tx.send(Ok(to));
                (desc, ring)
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        while !stop_flag.load(Ordering::Relaxed) {
            ring.poll();
        }
    })
    .map_err(|e| e.to_string())?;
    let to = rx.recv().map_err(|e| e.to_string())??;
    let progress = [AtomicU64::new(0)];
    let shown = if o.quiet { None } else { Some(&progress[..]) };
    let report = job(o, cores[0], &progress[0], shown, Some(&to));
    stop.store(true, Ordering::Relaxed);
    executor.join().map_err(|e| e.to_string())?;
    drop(rt);
    let mut report = report?;
    report.label = format!("forwarded {} -> {}", cores[0], cores[1]);
    Ok(vec![report])
}

/// One core's job: a ring at depth `-q`, refilled from its completions
/// (forwarded to another core's ring with `forward`).
#[cfg(spdk)]
fn job(
    o: &perf::Options,
    core: usize,
    done_counter: &std::sync::atomic::AtomicU64,
    progress: Option<&[std::sync::atomic::AtomicU64]>,
    forward: Option<&ForwardTo>,
) -> Result<perf::Report, String> {
    use perf::{Histogram, Pattern, Report};
    use spdk_ring::nvme::{ControllerOptions, NvmeController, TransportId};
    use spdk_ring::{clock, opcode, BdevDesc, DmaBuf, ForwardEntry, Ring};
    use std::sync::atomic::Ordering;

    let err = |e: spdk_ring::Error| e.to_string();
    let depth = o.queue_depth;
    let mut ring = Ring::builder(depth as u32)
        .forward_entries(depth as u32)
        .build()
        .map_err(err)?;
    // Keep what the target needs alive for the whole job.
    let mut _desc = None;
    let mut _ctrlr = None;
    // Buffer alignment: as bdevperf for bdevs; page-aligned for NVMe.
    let nvme = if forward.is_some() {
        None
    } else {
        o.nvme_target()
    };
    let (target, block_size, num_blocks, align) = match nvme {
        Some(spec) => {
            let (trid, nsid) = spec?;
            let trid: TransportId = trid.parse().map_err(err)?;
            let ctrlr =
                NvmeController::connect(&trid, &ControllerOptions::default()).map_err(err)?;
            let ns = ctrlr
                .namespace(nsid)
                .ok_or_else(|| format!("-r: namespace {nsid} is not active"))?;
            let geometry = (ns.sector_size(), ns.num_sectors());
            let target = ring
                .register_nvme_namespace(&ctrlr, nsid, None)
                .map_err(err)?;
            _ctrlr = Some(ctrlr);
            (target, geometry.0, geometry.1, 0)
        }
        None if forward.is_some() => {
            let to = forward.expect("matched");
            (to.target, to.block_size, to.num_blocks, to.align)
        }
        None => {
            let mode = o.open_mode();
            let desc = BdevDesc::open(&o.bdev, mode).map_err(err)?;
            let bdev = desc.bdev();
            let target = ring.register_bdev(&desc).map_err(err)?;
            let align = perf::bdevperf_buf_align(&desc);
            _desc = Some(desc);
            (target, bdev.block_size(), bdev.num_blocks(), align)
        }
    };
    let mut pattern = Pattern::new(o, block_size, num_blocks, 0x9E37_79B9 ^ core as u64)?;
    let mut submitted_at = vec![0u64; depth];
    let mut latency = Histogram::new();
    let hz = clock::ticks_hz();
    let (mut ios, mut errors, mut outstanding) = (0u64, 0u64, 0usize);

    let mut issue = |ring: &mut Ring, slot: usize, buf: DmaBuf| {
        let (offset, read) = pattern.next();
        if let Some(to) = forward {
            let entry = if read {
                ForwardEntry::from(opcode::Read::new(target, buf, offset))
            } else {
                ForwardEntry::from(opcode::Write::new(target, buf, offset))
            };
            ring.forward(&to.sender, entry.user_data(slot as u64))
                .expect("both rings forward as many entries as there are slots");
            return;
        }
        let entry = if read {
            opcode::Read::new(target, buf, offset).build()
        } else {
            opcode::Write::new(target, buf, offset).build()
        };
        ring.push(entry.user_data(slot as u64))
            .expect("one SQ entry per slot");
    };

    let start = clock::ticks();
    let deadline = start + o.seconds * hz;
    for (slot, at) in submitted_at.iter_mut().enumerate() {
        let buf = DmaBuf::alloc(o.io_size, align).map_err(err)?;
        issue(&mut ring, slot, buf);
        *at = start;
        outstanding += 1;
    }
    let mut next_report = start + hz;
    let mut last_total = 0u64;
    loop {
        ring.poll();
        let now = clock::ticks();
        loop {
            let Some(mut done) = ring.reap() else { break };
            let slot = done.user_data() as usize;
            latency.record(now - submitted_at[slot]);
            if done.is_ok() {
                ios += 1;
            } else {
                errors += 1;
            }
            let buf = done
                .take_buf()
                .expect("read and write entries return their buffer");
            drop(done);
            if now < deadline {
                issue(&mut ring, slot, buf);
                submitted_at[slot] = now;
            } else {
                outstanding -= 1;
            }
        }
        if now >= next_report {
            // Once a second: the cores' counters share a cache line, and
            // storing on every pass made the cores fight over it.
            done_counter.store(ios, Ordering::Relaxed);
            if let Some(all) = progress {
                let total: u64 = all.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                let elapsed = (now - start) / hz;
                eprint!(
                    "\r{elapsed:>4} s  {:>12.0} IOPS   ",
                    (total - last_total) as f64
                );
                last_total = total;
            }
            next_report += hz;
        }
        if outstanding == 0 {
            break;
        }
    }
    if progress.is_some() {
        eprintln!();
    }
    let end = clock::ticks();
    drop(ring);
    Ok(Report {
        label: format!(
            "{} (core {core})",
            if o.nvme.is_some() {
                "NVMe"
            } else {
                o.bdev.as_str()
            }
        ),
        ios,
        errors,
        seconds: (end - start) as f64 / hz as f64,
        io_size: o.io_size,
        latency: Some(latency),
        ticks_hz: hz,
    })
}
