//! Entries that name no target: Nop, Cancel and the timers.

use crate::queue::{EntryKind, Submission};
use crate::ring::Entry;
use std::time::Duration;

fn control_entry(kind: EntryKind<crate::ring::op::IoOp>) -> Entry {
    Entry::from_submission(Submission::new(kind, 0))
}

fn nanos(after: Duration) -> u64 {
    u64::try_from(after.as_nanos()).unwrap_or(u64::MAX)
}

opcode! {
    /// Does nothing and completes `Ok(0)`; useful as a chain link or barrier.
    #[derive(Default)]
    pub struct Nop {
        ;;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::Nop)
    }
}

opcode! {
    /// Cancels the first live entry with `user_data`: not started → it
    /// completes `ECANCELED` and this `Ok(0)`; in flight → abort is requested
    /// (this `Ok(0)`, or `EALREADY` where the bdev cannot abort); unknown →
    /// `ENOENT`.
    #[derive(Clone, Copy)]
    pub struct Cancel {
        user_data: u64,
        ;;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::Cancel { user_data: self.user_data })
    }
}

opcode! {
    /// Completes `ETIME` after `after`, or `Ok(0)` once `count` other entries
    /// have completed (when `count` is set), whichever is first.
    #[derive(Clone, Copy)]
    pub struct Timeout {
        after: Duration,
        ;;
        /// Complete `Ok(0)` once this many other entries have completed.
        count: u32, default 0;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::Timeout { after_ns: nanos(self.after), count: self.count })
    }
}

opcode! {
    /// Bounds the entry before it, which must carry `LINK`: if that entry has
    /// not completed within `after`, it is aborted and this completes `ETIME`;
    /// otherwise this completes `ECANCELED`.
    #[derive(Clone, Copy)]
    pub struct LinkTimeout {
        after: Duration,
        ;;
    }
    pub fn build(self) -> Entry {
        control_entry(EntryKind::LinkTimeout { after_ns: nanos(self.after) })
    }
}
