//! Where SPDK's callbacks leave what happened, for the ring to drain after
//! each `spdk_thread_poll`: finished slots in a fixed FIFO of indices, the
//! rarer events in a queue, admin completions (any thread) in a mailbox.
//! Callbacks never touch the core, so one that SPDK runs synchronously
//! inside a submit call is as safe as one that runs later.

use crate::queue::{IoError, Token};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use super::SlotIovecs;

/// A core event produced by an SPDK callback.
#[derive(Debug)]
pub(crate) enum Event {
    Done {
        token: Token,
        target: u32,
        result: Result<u64, IoError>,
        /// Lane completions SPDK had reported before this one.
        lane_before: u64,
    },
    Unblock {
        target: u32,
    },
}

/// Where callbacks leave their events. Its address is stable (boxed) and it
/// outlives every callback: the ring quiesces before freeing it.
pub(crate) struct Inbox {
    /// Slots whose I/O finished, in completion order (the common event).
    pub(crate) done: IndexRing,
    /// Everything else: unblocks, admin completions, and (never in
    /// practice) an I/O completion that found `done` full.
    pub(crate) events: RefCell<VecDeque<Event>>,
    /// Set if a callback body panicked (the panic is contained there and
    /// re-raised by the ring on the caller's side).
    pub(crate) callback_panicked: Cell<bool>,
    /// Completions of admin commands, which arrive on whichever thread
    /// processes the controller's admin queue.
    pub(crate) admin: AdminMailbox,
    /// The driver's per-slot scatter lists, for the NVMe SGL callbacks
    /// (null until the driver exists).
    pub(crate) sgl_table: Cell<*const SlotIovecs>,
    /// The lane's count of finished entries (null until the driver exists):
    /// each core completion notes it, so the ring hands the two paths'
    /// completions to the core in the order SPDK reported them.
    pub(crate) lane_finished: Cell<*const Cell<u64>>,
}

/// The thread-safe part of the inbox. A controller's admin queue is shared
/// by every thread using the controller, and any of them (another ring, or
/// a caller of `NvmeController::process_admin_completions`) may run our
/// admin callbacks; admin commands are rare, so a lock is fine here.
pub(crate) struct AdminMailbox {
    pub(crate) done: std::sync::Mutex<Vec<Event>>,
    pub(crate) callback_panicked: std::sync::atomic::AtomicBool,
}

/// A fixed FIFO of slot indices in `Cell`s, so callbacks (possibly inside a
/// submit call) can append to it through a shared reference. The inbox's
/// holds slots whose I/O finished, oldest first, read by the ring between
/// SPDK calls. An in-flight I/O finishes once before its
/// slot can start another, so `max_in_flight` cells never overflow; if one
/// ever did, the completion would go to the growable queue, not be lost.
pub(crate) struct IndexRing {
    cells: Box<[Cell<u32>]>,
    head: Cell<u32>,
    len: Cell<u32>,
}

impl IndexRing {
    pub(crate) fn with_capacity(n: usize) -> IndexRing {
        IndexRing {
            cells: (0..n.max(1)).map(|_| Cell::new(0)).collect(),
            head: Cell::new(0),
            len: Cell::new(0),
        }
    }

    /// Appends `index`; false if full.
    #[inline]
    pub(crate) fn push(&self, index: u32) -> bool {
        let (len, cap) = (self.len.get(), self.cells.len() as u32);
        if len == cap {
            return false;
        }
        let mut at = self.head.get() + len;
        if at >= cap {
            at -= cap;
        }
        self.cells[at as usize].set(index);
        self.len.set(len + 1);
        true
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.get() == 0
    }

    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let len = self.len.get();
        if len == 0 {
            return None;
        }
        let head = self.head.get();
        let index = self.cells[head as usize].get();
        let next = head + 1;
        self.head.set(if next == self.cells.len() as u32 {
            0
        } else {
            next
        });
        self.len.set(len - 1);
        Some(index)
    }
}

impl Inbox {
    /// An inbox for `n` I/Os in flight at once.
    pub(crate) fn with_capacity(n: usize) -> Inbox {
        Inbox {
            done: IndexRing::with_capacity(n),
            // Room for an event per in-flight entry, as when every
            // completion went through here (admin commands still do).
            events: RefCell::new(VecDeque::with_capacity(n)),
            callback_panicked: Cell::new(false),
            sgl_table: Cell::new(std::ptr::null()),
            lane_finished: Cell::new(std::ptr::null()),
            admin: AdminMailbox {
                done: std::sync::Mutex::new(Vec::new()),
                callback_panicked: std::sync::atomic::AtomicBool::new(false),
            },
        }
    }

    /// Moves finished admin commands into `events`; returns how many.
    pub(crate) fn collect_admin(&self) -> u32 {
        let mut done = self.admin.done.lock().unwrap_or_else(|e| e.into_inner());
        let n = done.len() as u32;
        // Admin callbacks may run on another thread: they are ordered after
        // the lane completions reported before they were collected, here.
        let lane_now = self.lane_callbacks();
        self.events
            .borrow_mut()
            .extend(done.drain(..).map(|event| match event {
                Event::Done {
                    token,
                    target,
                    result,
                    ..
                } => Event::Done {
                    token,
                    target,
                    result,
                    lane_before: lane_now,
                },
                other => other,
            }));
        if self
            .admin
            .callback_panicked
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.callback_panicked.set(true);
        }
        n
    }

    /// Lane completions SPDK reported so far (ring thread only).
    #[inline]
    pub(crate) fn lane_callbacks(&self) -> u64 {
        let counter = self.lane_finished.get();
        if counter.is_null() {
            return 0;
        }
        // SAFETY: set by the driver to its lane's counter, which lives as
        // long as the driver, and the driver is dropped before the inbox;
        // read on the ring's thread only.
        unsafe { (*counter).get() }
    }

    pub(super) fn post(&self, event: Event) {
        // A callback never runs while the ring borrows the inbox: the ring
        // only borrows it to drain, outside any SPDK call.
        self.events.borrow_mut().push_back(event);
    }

    /// Records that the I/O of `slot` finished with `result`.
    #[inline]
    pub(super) fn finished(&self, slot: &SlotCtx, result: Result<u64, IoError>) {
        slot.set_result(result);
        let lane_before = self.lane_callbacks();
        slot.lane_before.set(lane_before);
        if !self.done.push(slot.index) {
            self.post(Event::Done {
                token: slot.token.get(),
                target: slot.target.get(),
                result,
                lane_before,
            });
        }
    }
}

/// Per in-flight slot: the callback argument SPDK holds. One per core slot,
/// in a boxed slice that never moves while the ring lives.
pub(crate) struct SlotCtx {
    pub(super) inbox: *const Inbox,
    /// This context's index in the slot table (= its tokens' index).
    pub(super) index: u32,
    pub(crate) token: Cell<Token>,
    pub(crate) target: Cell<u32>,
    /// The result, written by the callback and read when the ring drains
    /// the inbox, as plain words (`Ok` value, errno or 0, NVMe status):
    /// read back with the widths they were written with, they never stall
    /// the load on the store.
    pub(super) value: Cell<u64>,
    pub(super) errno: Cell<i32>,
    pub(super) nvme: Cell<Option<crate::error::NvmeStatus>>,
    /// Bytes a successful completion reports.
    pub(super) bytes: Cell<u64>,
    /// Attach the NVMe status to failures (NVMe-backed bdev).
    pub(super) nvme_backed: Cell<bool>,
    /// Lane completions SPDK had reported when this one came.
    pub(crate) lane_before: Cell<u64>,
}

impl SlotCtx {
    #[inline]
    pub(super) fn set_result(&self, result: Result<u64, IoError>) {
        match result {
            Ok(value) => {
                self.value.set(value);
                self.errno.set(0);
            }
            Err(e) => {
                // 0 means success here; a failure always carries an errno.
                self.errno
                    .set(if e.errno == 0 { libc::EIO } else { e.errno });
                self.nvme.set(e.nvme);
            }
        }
    }

    /// What the callback recorded.
    #[inline]
    pub(crate) fn result(&self) -> Result<u64, IoError> {
        match self.errno.get() {
            0 => Ok(self.value.get()),
            errno => Err(IoError {
                errno,
                nvme: self.nvme.get(),
            }),
        }
    }
}
