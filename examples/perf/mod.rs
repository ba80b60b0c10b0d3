//! Shared by `ringperf`, `asyncperf` and `rawperf`: bdevperf-compatible options, a
//! preallocated latency histogram, the workload's offset generator and the
//! report.
#![allow(dead_code)]

use std::time::Duration;

pub const DEFAULT_BDEV: &str = "Null0";

/// Options, spelled as bdevperf spells them where they overlap.
#[derive(Debug, Clone)]
pub struct Options {
    /// NVMe mode: the controller's transport id (spdk_nvme_perf's `-r`),
    /// with an optional `ns:N` (default namespace 1).
    pub nvme: Option<String>,
    pub json: Option<String>,
    pub bdev: String,
    pub queue_depth: usize,
    pub io_size: usize,
    pub workload: Workload,
    pub read_percent: u32,
    pub seconds: u64,
    pub core_mask: String,
    pub no_huge: bool,
    pub mem_mb: u32,
    pub report_json: bool,
    pub quiet: bool,
    /// ringperf `--forward`: core 0 generates the I/O, core 1's ring runs it.
    pub forward: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Read,
    Write,
    RandRead,
    RandWrite,
    Rw,
    RandRw,
}

impl Workload {
    fn parse(s: &str) -> Option<Workload> {
        Some(match s {
            "read" => Workload::Read,
            "write" => Workload::Write,
            "randread" => Workload::RandRead,
            "randwrite" => Workload::RandWrite,
            "rw" => Workload::Rw,
            "randrw" => Workload::RandRw,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Rw => "rw",
            Workload::RandRw => "randrw",
        }
    }
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }
    fn default_read_percent(self) -> u32 {
        match self {
            Workload::Read | Workload::RandRead => 100,
            Workload::Write | Workload::RandWrite => 0,
            Workload::Rw | Workload::RandRw => 50,
        }
    }
}

pub fn usage(program: &str) -> String {
    format!(
        "usage: {program} [options]\n\
         \x20 --json FILE     SPDK JSON config (default: built-in Null0 4 KiB x 1M blocks and Malloc0 64 MiB)\n\
         \x20 -T BDEV         target bdev (default {DEFAULT_BDEV})\n\
         \x20 -r TRID         NVMe mode: a controller's transport id, as spdk_nvme_perf -r (ns:N picks the namespace, default 1)\n\
         \x20 -q DEPTH        queue depth per core (default 128)\n\
         \x20 -o BYTES        I/O size (default 4096)\n\
         \x20 -w WORKLOAD     read|write|randread|randwrite|rw|randrw (default randread)\n\
         \x20 -M PERCENT      read share of rw/randrw (default 50)\n\
         \x20 -t SECONDS      run time (default 10)\n\
         \x20 -m MASK         core mask, one job per core (default 0x1)\n\
         \x20 -C             every core runs a job on the bdev (always so; accepted for bdevperf's command line)\n\
         \x20 --forward       ringperf, -m with two cores: core 0 generates the I/O and forwards it to core 1's ring\n\
         \x20 --no-huge       no hugepages (needs -s; default on)\n\
         \x20 -s MB           memory size (default 1024)\n\
         \x20 --report-json   print the results as JSON too\n\
         \x20 --quiet         no progress line"
    )
}

impl Options {
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            nvme: None,
            json: None,
            bdev: DEFAULT_BDEV.into(),
            queue_depth: 128,
            io_size: 4096,
            workload: Workload::RandRead,
            read_percent: u32::MAX,
            seconds: 10,
            core_mask: "0x1".into(),
            no_huge: true,
            mem_mb: 1024,
            report_json: false,
            quiet: false,
            forward: false,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match flag.as_str() {
                "--json" => o.json = Some(value("--json")?),
                "-r" => o.nvme = Some(value("-r")?),
                "-T" => o.bdev = value("-T")?,
                "-q" => o.queue_depth = number(&value("-q")?, "-q", 1, 65536)? as usize,
                "-o" => o.io_size = number(&value("-o")?, "-o", 1, 1 << 30)? as usize,
                "-w" => {
                    let w = value("-w")?;
                    o.workload =
                        Workload::parse(&w).ok_or_else(|| format!("-w: unknown workload {w:?}"))?;
                }
                "-M" => o.read_percent = number(&value("-M")?, "-M", 0, 100)? as u32,
                "-t" => o.seconds = number(&value("-t")?, "-t", 1, 86_400)?,
                "-m" => o.core_mask = value("-m")?,
                "-s" => o.mem_mb = number(&value("-s")?, "-s", 64, 1 << 20)? as u32,
                "--no-huge" => o.no_huge = true,
                "--report-json" => o.report_json = true,
                "--quiet" => o.quiet = true,
                // bdevperf's "every core sends to each bdev": what the
                // ring tools always do with -m.
                "-C" => {}
                "--forward" => o.forward = true,
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown option {other:?}")),
            }
        }
        if o.read_percent == u32::MAX {
            o.read_percent = o.workload.default_read_percent();
        } else if !matches!(o.workload, Workload::Rw | Workload::RandRw) {
            return Err("-M applies only to rw and randrw".into());
        }
        Ok(o)
    }

    /// The command line's options; prints usage and exits on `--help`
    /// (status 0) or a bad option (status 2).
    pub fn from_args_or_exit(program: &str) -> Options {
        match Options::parse(std::env::args().skip(1)) {
            Ok(o) => o,
            Err(e) if e.is_empty() => {
                println!("{}", usage(program));
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("{program}: {e}\n{}", usage(program));
                std::process::exit(2);
            }
        }
    }

    /// Starts SPDK embedded as the options say (core mask, memory, config).
    pub fn start_runtime(&self, name: &str) -> Result<spdk_ring::SpdkRuntime, String> {
        spdk_ring::SpdkRuntime::builder()
            .name(name)
            .core_mask(self.core_mask.clone())
            .no_huge(self.no_huge)
            .mem_size_mb(self.mem_mb)
            .log_level(spdk_ring::LogLevel::Error)
            .json_config(self.config_text()?)
            .build()
            .map_err(|e| e.to_string())
    }

    /// Read-only unless the workload writes.
    pub fn open_mode(&self) -> spdk_ring::OpenMode {
        if self.read_percent == 100 {
            spdk_ring::OpenMode::ReadOnly
        } else {
            spdk_ring::OpenMode::ReadWrite
        }
    }

    /// Cores of the mask, lowest first.
    pub fn cores(&self) -> Result<Vec<usize>, String> {
        let hex = self
            .core_mask
            .trim_start_matches("0x")
            .trim_start_matches("0X");
        let mask = u64::from_str_radix(hex, 16)
            .map_err(|_| format!("-m: bad core mask {:?}", self.core_mask))?;
        let cores: Vec<usize> = (0..64).filter(|c| mask & (1 << c) != 0).collect();
        if cores.is_empty() {
            return Err("-m: the core mask selects no core".into());
        }
        Ok(cores)
    }

    pub fn run_time(&self) -> Duration {
        Duration::from_secs(self.seconds)
    }

    /// The NVMe transport id without its `ns:N` part, and the namespace id.
    pub fn nvme_target(&self) -> Option<Result<(String, u32), String>> {
        let text = self.nvme.as_ref()?;
        let mut nsid = 1;
        let mut rest = Vec::new();
        for word in text.split_whitespace() {
            match word.strip_prefix("ns:") {
                Some(n) => match n.parse() {
                    Ok(n) => nsid = n,
                    Err(_) => return Some(Err(format!("-r: bad namespace {word:?}"))),
                },
                None => rest.push(word),
            }
        }
        Some(Ok((rest.join(" "), nsid)))
    }

    /// What the jobs run against, for labels and reports.
    pub fn target_name(&self) -> String {
        match self.nvme_target() {
            Some(Ok((trid, nsid))) => format!("{trid} ns {nsid}"),
            _ => self.bdev.clone(),
        }
    }

    /// The built-in configuration: a null and a malloc bdev.
    pub fn default_config() -> String {
        spdk_ring::JsonConfig::new()
            .null_bdev("Null0", 1 << 20, 4096)
            .malloc_bdev("Malloc0", 131072, 512)
            .to_json()
    }

    pub fn config_text(&self) -> Result<String, String> {
        match &self.json {
            Some(path) => std::fs::read_to_string(path).map_err(|e| format!("--json {path}: {e}")),
            None => Ok(Options::default_config()),
        }
    }
}

fn number(s: &str, flag: &str, min: u64, max: u64) -> Result<u64, String> {
    let v: u64 = s
        .parse()
        .map_err(|_| format!("{flag}: {s:?} is not a number"))?;
    if v < min || v > max {
        return Err(format!("{flag}: {v} is outside {min}..={max}"));
    }
    Ok(v)
}

/// Picks each I/O's offset and direction, without allocating.
pub struct Pattern {
    blocks_per_io: u64,
    slots: u64,
    next_seq: u64,
    rng: u64,
    random: bool,
    read_percent: u32,
}

impl Pattern {
    pub fn new(
        o: &Options,
        block_size: u32,
        num_blocks: u64,
        seed: u64,
    ) -> Result<Pattern, String> {
        if o.io_size % block_size as usize != 0 {
            return Err(format!(
                "-o {}: not a multiple of the bdev's block size {block_size}",
                o.io_size
            ));
        }
        let blocks_per_io = (o.io_size / block_size as usize) as u64;
        let slots = num_blocks / blocks_per_io;
        if slots == 0 {
            return Err(format!("-o {}: larger than the bdev", o.io_size));
        }
        Ok(Pattern {
            blocks_per_io,
            slots,
            next_seq: 0,
            rng: seed | 1,
            random: o.workload.is_random(),
            read_percent: o.read_percent,
        })
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// (offset in blocks, is_read) of the next I/O.
    #[inline]
    pub fn next(&mut self) -> (u64, bool) {
        let slot = if self.random {
            self.next_random() % self.slots
        } else {
            let s = self.next_seq;
            self.next_seq = (s + 1) % self.slots;
            s
        };
        let read = match self.read_percent {
            100 => true,
            0 => false,
            pct => (self.next_random() % 100) < u64::from(pct),
        };
        (slot * self.blocks_per_io, read)
    }

    pub fn blocks_per_io(&self) -> u64 {
        self.blocks_per_io
    }
}

/// Log-linear latency histogram in ticks: 32 sub-buckets per power of two
/// (about 3 % resolution), preallocated, O(1) to record.
pub struct Histogram {
    buckets: Box<[u64; Histogram::BUCKETS]>,
    count: u64,
    sum: u128,
}

impl Histogram {
    const SUB_BITS: u32 = 5;
    const BUCKETS: usize = (64 - Self::SUB_BITS as usize + 1) << Self::SUB_BITS;

    pub fn new() -> Histogram {
        Histogram {
            buckets: Box::new([0; Histogram::BUCKETS]),
            count: 0,
            sum: 0,
        }
    }

    #[inline]
    pub fn record(&mut self, ticks: u64) {
        self.buckets[Self::index(ticks)] += 1;
        self.count += 1;
        self.sum += u128::from(ticks);
    }

    #[inline]
    fn index(v: u64) -> usize {
        let sub = 1u64 << Self::SUB_BITS;
        if v < sub {
            return v as usize;
        }
        let e = 63 - v.leading_zeros();
        let shift = e - Self::SUB_BITS;
        (((shift + 1) as u64) << Self::SUB_BITS | ((v >> shift) - sub)) as usize
    }

    /// Lowest value of bucket `i` (its representative).
    fn value(i: usize) -> u64 {
        let sub = 1usize << Self::SUB_BITS;
        if i < sub {
            return i as u64;
        }
        let shift = (i >> Self::SUB_BITS) - 1;
        ((sub + (i & (sub - 1))) as u64) << shift
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    pub fn percentile(&self, p: f64) -> u64 {
        let target = ((self.count as f64) * p / 100.0).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::value(i);
            }
        }
        0
    }
}

/// One job's (or the total's) results.
pub struct Report {
    pub label: String,
    pub ios: u64,
    pub errors: u64,
    pub seconds: f64,
    pub io_size: usize,
    pub latency: Option<Histogram>,
    pub ticks_hz: u64,
}

impl Report {
    pub fn iops(&self) -> f64 {
        self.ios as f64 / self.seconds
    }

    fn us(&self, ticks: f64) -> f64 {
        ticks * 1e6 / self.ticks_hz as f64
    }

    pub fn print_table(reports: &[Report]) {
        println!(
            "{:<28} {:>12} {:>10} {:>8} {:>9} {:>9} {:>9} {:>10}",
            "job", "IOPS", "MiB/s", "errors", "avg(us)", "p50(us)", "p99(us)", "p99.9(us)"
        );
        for r in reports {
            let mibs = r.iops() * r.io_size as f64 / (1 << 20) as f64;
            match &r.latency {
                Some(h) => println!(
                    "{:<28} {:>12.0} {:>10.1} {:>8} {:>9.2} {:>9.2} {:>9.2} {:>10.2}",
                    r.label,
                    r.iops(),
                    mibs,
                    r.errors,
                    r.us(h.mean()),
                    r.us(h.percentile(50.0) as f64),
                    r.us(h.percentile(99.0) as f64),
                    r.us(h.percentile(99.9) as f64)
                ),
                None => println!(
                    "{:<28} {:>12.0} {:>10.1} {:>8} {:>9} {:>9} {:>9} {:>10}",
                    r.label,
                    r.iops(),
                    mibs,
                    r.errors,
                    "-",
                    "-",
                    "-",
                    "-"
                ),
            }
        }
    }

    pub fn json(&self, o: &Options) -> String {
        let lat = match &self.latency {
            Some(h) => format!(
                ", \"latency_us\": {{\"avg\": {:.3}, \"p50\": {:.3}, \"p99\": {:.3}, \"p99_9\": {:.3}}}",
                self.us(h.mean()),
                self.us(h.percentile(50.0) as f64),
                self.us(h.percentile(99.0) as f64),
                self.us(h.percentile(99.9) as f64)
            ),
            None => String::new(),
        };
        format!(
            "{{\"job\": \"{}\", \"bdev\": \"{}\", \"workload\": \"{}\", \"queue_depth\": {}, \"io_size\": {}, \
             \"seconds\": {:.3}, \"ios\": {}, \"errors\": {}, \"iops\": {:.1}, \"mib_per_s\": {:.2}{lat}}}",
            self.label,
            o.target_name(),
            o.workload.name(),
            o.queue_depth,
            o.io_size,
            self.seconds,
            self.ios,
            self.errors,
            self.iops(),
            self.iops() * self.io_size as f64 / (1 << 20) as f64,
        )
    }
}

/// The alignment bdevperf gives its I/O buffers: the bdev's own
/// requirement (`spdk_bdev_get_buf_align`), often just 1, rather than
/// [`DmaBuf::alloc`](spdk_ring::DmaBuf::alloc)'s page-aligned default, so
/// the three tools move data between buffers placed alike (a malloc bdev
/// read is a memcpy into them).
pub fn bdevperf_buf_align(desc: &spdk_ring::BdevDesc) -> usize {
    // SAFETY: an open descriptor has a live bdev; both calls only read it.
    let align = unsafe {
        let bdev = spdk_ring::sys::spdk_bdev_desc_get_bdev(desc.as_ptr());
        spdk_ring::sys::spdk_bdev_get_buf_align(bdev)
    };
    align.max(1)
}

/// Pins the calling OS thread to `core`.
pub fn pin_to_core(core: usize) {
    // SAFETY: cpu_set_t is plain data; the calls only read it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(test)]
mod tests {}
