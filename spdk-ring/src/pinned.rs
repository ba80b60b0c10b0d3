//! Heap memory that SPDK (and our own lists) point into.
//!
//! Callback contexts, slot tables and the inbox are handed to SPDK as raw
//! pointers and written through them from callbacks. A `Box` would be the
//! obvious owner, but a `Box` is a unique pointer: moving it (say, when the
//! ring that owns it moves) asserts that nothing else points into it, which
//! under Rust's aliasing rules (Stacked Borrows) invalidates every raw
//! pointer taken before. [`Pinned`] owns the same allocation through a raw
//! pointer instead, so moving the owner asserts nothing.

use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// An owned heap allocation at a fixed address that raw pointers may keep
/// pointing into while the owner moves. Freed when dropped.
pub(crate) struct Pinned<T: ?Sized>(NonNull<T>);

impl<T: ?Sized> Pinned<T> {
    pub(crate) fn new(boxed: Box<T>) -> Pinned<T> {
        Pinned(NonNull::from(Box::leak(boxed)))
    }
}

impl<T> Pinned<T> {
    pub(crate) fn from_value(value: T) -> Pinned<T> {
        Pinned::new(Box::new(value))
    }
}

impl<T: ?Sized> Deref for Pinned<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: allocated in `new` and freed only in `drop`.
        unsafe { self.0.as_ref() }
    }
}

impl<T: ?Sized> DerefMut for Pinned<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // made through the owner.
        unsafe { self.0.as_mut() }
    }
}

impl<T: ?Sized> Drop for Pinned<T> {
    fn drop(&mut self) {
        // SAFETY: leaked from a `Box` in `new`, freed once, here.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::Pinned;
    use std::cell::Cell;

    #[test]
    fn pointers_taken_before_the_owner_moves_stay_usable() {
        // Under Miri this is the point of the type: with a `Box` owner the
        // write through `p` after the moves is undefined behaviour.
        let cells = Pinned::new((0..4).map(Cell::new).collect::<Box<[Cell<u32>]>>());
        let p: *const Cell<u32> = &cells[2];
        let moved = vec![cells];
        let owner = moved.into_iter().next().unwrap();
        // SAFETY: the allocation is alive (owned by `owner`).
        unsafe { (*p).set(7) };
        assert_eq!(
            owner.iter().map(Cell::get).collect::<Vec<_>>(),
            [0, 1, 7, 3]
        );
    }
}
