//! The target ring's half of forwarding: entries taken from its mailbox
//! start through its own driver (its targets, its checks, its channels and
//! qpairs, on its thread), each in a driver slot of its own past the
//! core's; SPDK's callback lands in the ring's inbox like any other, and
//! the ring's drain hands the result back here instead of to its core.

use super::{Forwarded, Forwarding};
use crate::queue::{Driver, IoResult, StartOutcome, Token};
use crate::ring::Ring;

impl Forwarding {
    /// The forwarded entry in driver slot `index` finished: back it goes.
    pub(in crate::ring) fn finished(&mut self, index: u32, result: IoResult) {
        let slot = index - self.base;
        if let Some(forwarded) = self.running[slot as usize].take() {
            self.free.push(slot);
            forwarded.finish(result);
        }
        // A slot came free: the mailbox may hold entries that waited for one.
        self.leftover = true;
    }
}

impl Ring {
    /// Starts forwarded entries: those SPDK turned away with ENOMEM first,
    /// in order, then new ones from the mailbox while slots are free.
    pub(super) fn run_forwarded(&mut self) {
        while let Some(&slot) = self.forwarding.waiting.front() {
            if self.start_forwarded(slot) == StartOutcome::NoMem {
                self.forwarding.leftover = true;
                return;
            }
            self.forwarding.waiting.pop_front();
        }
        while let Some(slot) = self.forwarding.free.pop() {
            let Some(forwarded) = self.forwarding.shared.inbox.pop() else {
                self.forwarding.free.push(slot);
                return;
            };
            self.forwarding.running[slot as usize] = Some(forwarded);
            if self.start_forwarded(slot) == StartOutcome::NoMem {
                self.forwarding.waiting.push_back(slot);
                self.forwarding.leftover = true;
                return;
            }
        }
        if !self.forwarding.shared.inbox.is_empty() {
            // Every slot is busy: a completion will free one.
            self.forwarding.leftover = true;
        }
    }

    /// Starts the entry in `slot` on this ring's driver; one that fails to
    /// start goes back at once with its errno.
    fn start_forwarded(&mut self, slot: u32) -> StartOutcome {
        let f = &mut *self.forwarding;
        let index = f.base + slot;
        let Some(forwarded) = f.running[slot as usize].as_mut() else {
            return StartOutcome::Started;
        };
        let Forwarded { entry, .. } = forwarded;
        let token = Token::from_u64(u64::from(index));
        let outcome = self.driver.start(token, entry.target, &mut entry.op);
        if let StartOutcome::Failed(e) = outcome {
            if let Some(forwarded) = f.running[slot as usize].take() {
                f.free.push(slot);
                forwarded.finish(Err(e));
            }
        }
        outcome
    }

    /// SPDK finished the forwarded entry in driver slot `index` (recorded
    /// in the inbox like a core entry's completion).
    pub(in crate::ring) fn forwarded_done(&mut self, index: u32) {
        let ctx = &self.driver.slots[index as usize];
        let (target, result) = (ctx.target.get(), ctx.result());
        self.driver.note_done(target);
        self.forwarding.finished(index, result);
    }
}
