//! The ring at a fixed depth: every completion's buffer is resubmitted.
//! Shared by the `ring_null` and `async_null` benches.

use spdk_ring::{opcode, BdevDesc, DmaBuf, Ring, Target};
use std::time::{Duration, Instant};

pub struct RingJob {
    ring: Ring,
    target: Target,
    bufs: Vec<DmaBuf>,
    next_lba: u64,
}

impl RingJob {
    pub fn new(desc: &BdevDesc, depth: usize) -> RingJob {
        let mut ring = Ring::new(depth as u32).expect("ring");
        let target = ring.register_bdev(desc).expect("register");
        let bufs = (0..depth)
            .map(|_| DmaBuf::alloc(4096, 0).expect("dma"))
            .collect();
        RingJob {
            ring,
            target,
            bufs,
            next_lba: 0,
        }
    }

    /// Completes `ios` reads with `depth` in flight; returns the time.
    pub fn run(&mut self, ios: u64) -> Duration {
        let start = Instant::now();
        let (mut issued, mut done) = (0u64, 0u64);
        while done < ios {
            while issued < ios {
                let Some(buf) = self.bufs.pop() else { break };
                self.next_lba = (self.next_lba + 7919) % (1 << 20);
                let read = opcode::Read::new(self.target, buf, self.next_lba).build();
                self.ring.push(read).expect("one SQ entry per buffer");
                issued += 1;
            }
            self.ring.poll();
            while let Some(mut c) = self.ring.reap() {
                debug_assert!(c.is_ok());
                self.bufs
                    .push(c.take_buf().expect("reads return their buffer"));
                done += 1;
            }
        }
        start.elapsed()
    }
}
