//! Submission entries as callers build them, and the full-SQ error.

use super::op::IoOp;
use crate::queue::{EntryFlags, Submission};
use std::fmt;

/// A submission entry, built by an [`opcode`](super::opcode) builder.
pub struct Entry {
    pub(crate) submission: Submission<IoOp>,
}

impl Entry {
    pub(crate) fn from_submission(submission: Submission<IoOp>) -> Entry {
        Entry { submission }
    }

    /// The caller's tag, returned unchanged in the completion.
    pub fn user_data(mut self, user_data: u64) -> Entry {
        self.submission.user_data = user_data;
        self
    }

    /// `LINK`, `DRAIN` and `SKIP_SUCCESS`, with io_uring's meaning
    /// (`SKIP_SUCCESS` is `IOSQE_CQE_SKIP_SUCCESS`: a success posts no
    /// completion, and the buffers the entry carried are freed with it).
    pub fn flags(mut self, flags: EntryFlags) -> Entry {
        self.submission.flags = flags;
        self
    }

    pub fn get_user_data(&self) -> u64 {
        self.submission.user_data
    }

    pub fn get_flags(&self) -> EntryFlags {
        self.submission.flags
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("user_data", &self.submission.user_data)
            .field("flags", &self.submission.flags)
            .finish_non_exhaustive()
    }
}

/// The SQ was full; the entry is handed back untouched.
#[derive(Debug)]
pub struct PushError {
    pub entry: Entry,
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "submission queue is full (entry user_data {})",
            self.entry.get_user_data()
        )
    }
}

impl std::error::Error for PushError {}
