//! Intrusive doubly linked lists threaded through the slot table.
//!
//! Every slot can sit in one list of each [`ListKind`] at the same time; the
//! links live in a preallocated table indexed by slot, so linking, unlinking
//! and walking never allocate and removal from the middle is O(1).

/// Marker for "no slot".
pub(super) const NIL: u32 = u32::MAX;

/// The independent orders a slot can be part of.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(super) enum ListKind {
    /// Every live entry, in submission order (oldest first): DRAIN and Cancel look-ups walk it.
    Live = 0,
    /// Entries not yet started, in submission order: the start pass walks it.
    Waiting = 1,
    /// Not-yet-started Io entries of one target, in submission order (one list per target).
    Target = 2,
    /// Live DRAIN entries, in submission order: the head is the active barrier.
    Drain = 3,
}

const LIST_KINDS: usize = 4;

#[derive(Copy, Clone, Debug)]
struct Link {
    prev: u32,
    next: u32,
    linked: bool,
}

const UNLINKED: Link = Link {
    prev: NIL,
    next: NIL,
    linked: false,
};

/// Head, tail and length of one list.
#[derive(Copy, Clone, Debug)]
pub(super) struct List {
    pub(super) head: u32,
    tail: u32,
    len: u32,
}

impl List {
    pub(super) const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };

    pub(super) fn len(&self) -> u32 {
        self.len
    }
}

/// The link table: one set of `prev`/`next` pointers per slot and list kind.
#[derive(Debug)]
pub(super) struct Links {
    links: Vec<[Link; LIST_KINDS]>,
}

impl Links {
    pub(super) fn new(slots: usize) -> Self {
        Self {
            links: vec![[UNLINKED; LIST_KINDS]; slots],
        }
    }

    /// Bytes preallocated per slot.
    pub(super) fn bytes_per_slot() -> usize {
        std::mem::size_of::<[Link; LIST_KINDS]>()
    }

    fn link(&mut self, slot: u32, kind: ListKind) -> &mut Link {
        &mut self.links[slot as usize][kind as usize]
    }

    /// Appends `slot` to `list`; it must not already be in a list of this kind.
    pub(super) fn push_back(&mut self, list: &mut List, kind: ListKind, slot: u32) {
        debug_assert!(!self.link(slot, kind).linked, "slot already linked");
        let old_tail = list.tail;
        *self.link(slot, kind) = Link {
            prev: old_tail,
            next: NIL,
            linked: true,
        };
        if old_tail == NIL {
            list.head = slot;
        } else {
            self.link(old_tail, kind).next = slot;
        }
        list.tail = slot;
        list.len += 1;
    }

    /// Inserts `slot` before `before`, or appends it when `before` is [`NIL`]; `slot` must not
    /// already be in a list of this kind and `before` must be in `list`.
    pub(super) fn insert_before(
        &mut self,
        list: &mut List,
        kind: ListKind,
        before: u32,
        slot: u32,
    ) {
        if before == NIL {
            self.push_back(list, kind, slot);
            return;
        }
        debug_assert!(!self.link(slot, kind).linked, "slot already linked");
        debug_assert!(self.link(before, kind).linked, "anchor not linked");
        let prev = self.link(before, kind).prev;
        *self.link(slot, kind) = Link {
            prev,
            next: before,
            linked: true,
        };
        self.link(before, kind).prev = slot;
        if prev == NIL {
            list.head = slot;
        } else {
            self.link(prev, kind).next = slot;
        }
        list.len += 1;
    }

    /// Removes `slot` from `list` if it is in it; a no-op otherwise, so callers need not track membership.
    pub(super) fn unlink(&mut self, list: &mut List, kind: ListKind, slot: u32) {
        let Link { prev, next, linked } = *self.link(slot, kind);
        if !linked {
            return;
        }
        if prev == NIL {
            list.head = next;
        } else {
            self.link(prev, kind).next = next;
        }
        if next == NIL {
            list.tail = prev;
        } else {
            self.link(next, kind).prev = prev;
        }
        list.len -= 1;
        *self.link(slot, kind) = UNLINKED;
    }

    /// The slot after `slot` in its list of this kind, or [`NIL`].
    pub(super) fn next(&self, kind: ListKind, slot: u32) -> u32 {
        self.links[slot as usize][kind as usize].next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(links: &Links, list: &List, kind: ListKind) -> Vec<u32> {
        let mut out = Vec::new();
        let mut cur = list.head;
        while cur != NIL {
            out.push(cur);
            cur = links.next(kind, cur);
        }
        out
    }

    #[test]
    fn push_unlink_keeps_order_and_len() {
        let mut links = Links::new(5);
        let mut list = List::EMPTY;
        for slot in [3, 0, 4, 1] {
            links.push_back(&mut list, ListKind::Waiting, slot);
        }
        assert_eq!(collect(&links, &list, ListKind::Waiting), [3, 0, 4, 1]);
        links.unlink(&mut list, ListKind::Waiting, 0); // middle
        links.unlink(&mut list, ListKind::Waiting, 3); // head
        links.unlink(&mut list, ListKind::Waiting, 1); // tail
        links.unlink(&mut list, ListKind::Waiting, 2); // not linked: no-op
        assert_eq!(collect(&links, &list, ListKind::Waiting), [4]);
        assert_eq!(list.len(), 1);
        links.push_back(&mut list, ListKind::Waiting, 2);
        assert_eq!(collect(&links, &list, ListKind::Waiting), [4, 2]);
    }

    #[test]
    fn kinds_are_independent() {
        let mut links = Links::new(3);
        let mut live = List::EMPTY;
        let mut waiting = List::EMPTY;
        for slot in 0..3 {
            links.push_back(&mut live, ListKind::Live, slot);
        }
        links.push_back(&mut waiting, ListKind::Waiting, 2);
        links.push_back(&mut waiting, ListKind::Waiting, 0);
        links.unlink(&mut live, ListKind::Live, 2);
        assert_eq!(collect(&links, &live, ListKind::Live), [0, 1]);
        assert_eq!(collect(&links, &waiting, ListKind::Waiting), [2, 0]);
    }
}
