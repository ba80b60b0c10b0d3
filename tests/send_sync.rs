//! The Send/Sync table of the design (see the crate docs) holds: checked at
//! compile time, so a regression fails the build of this test.

/// Fails to compile when `$t` implements `$trait` (two candidate impls make
/// the method call ambiguous).
#[cfg_attr(not(spdk), allow(unused_macros))]
macro_rules! assert_not_impl {
    ($t:ty: $trait:path) => {
        const _: fn() = || {
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            struct Invalid;
            impl<T: ?Sized + $trait> AmbiguousIfImpl<Invalid> for T {}
            let _ = <$t as AmbiguousIfImpl<_>>::some_item;
        };
    };
}

macro_rules! assert_impl {
    ($t:ty: $($trait:path),+) => {
        const _: fn() = || {
            fn check<T: ?Sized $(+ $trait)+>() {}
            check::<$t>();
        };
    };
}

assert_impl!(spdk_ring::Error: Send, Sync);
assert_impl!(spdk_ring::JsonConfig: Send, Sync);

#[cfg(spdk)]
mod with_spdk {
    use spdk_ring::*;

    assert_not_impl!(SpdkThread: Send);
    assert_not_impl!(SpdkThread: Sync);
    assert_not_impl!(CurrentThread: Send);
    assert_not_impl!(CurrentThread: Sync);
    assert_impl!(ThreadHandle: Send, Sync);
    assert_not_impl!(Bdev: Send);
    assert_not_impl!(Bdev: Sync);
    assert_not_impl!(BdevDesc: Send);
    assert_not_impl!(BdevDesc: Sync);
    assert_not_impl!(IoChannel: Send);
    assert_not_impl!(IoChannel: Sync);
    assert_impl!(DmaBuf: Send);
    assert_not_impl!(DmaBuf: Sync);
    assert_not_impl!(SpdkRuntime: Send);
    assert_not_impl!(SpdkRuntime: Sync);
    assert_not_impl!(Ring: Send);
    assert_not_impl!(Ring: Sync);
    // Many cores: a ring is reached from other threads only through its
    // sender, and only entries whose buffers may move are forwarded.
    assert_impl!(RingSender: Send, Sync, Clone);
    assert_impl!(ForwardEntry: Send);
    assert_not_impl!(ForwardEntry: Sync);
    assert_not_impl!(Entry: Send);
    assert_impl!(opcode::Read: Into<ForwardEntry>);
    assert_impl!(opcode::NvmePassthru: Into<ForwardEntry>);
    assert_not_impl!(opcode::BlobRead: Into<ForwardEntry>);
    assert_not_impl!(opcode::BlobOpen: Into<ForwardEntry>);
    assert_not_impl!(opcode::RawIo: Into<ForwardEntry>);
    assert_not_impl!(opcode::Readv: Into<ForwardEntry>);
    // A message may be built on any thread; the entry stays on its ring's.
    assert_impl!(opcode::MsgRing: Send, Sync, Clone);
    assert_not_impl!(opcode::MsgRing: Into<ForwardEntry>);
    assert_impl!(Cores: Send, Sync);
    assert_not_impl!(Poller: Send);
    assert_not_impl!(Poller: Sync);
    assert_not_impl!(nvme::NvmeController: Send);
    assert_not_impl!(nvme::NvmeController: Sync);
    assert_not_impl!(nvme::NvmeNamespace<'static>: Send);
    assert_not_impl!(nvme::NvmeNamespace<'static>: Sync);
}

/// The async layer lives on the ring's thread like the ring: nothing of it
/// may be sent to or shared with another.
#[cfg(all(spdk, feature = "futures"))]
mod with_futures {
    use spdk_ring::async_ring::{Drive, Submit, SubmitLinked};
    use spdk_ring::AsyncRing;

    assert_not_impl!(AsyncRing: Send);
    assert_not_impl!(AsyncRing: Sync);
    assert_not_impl!(Submit: Send);
    assert_not_impl!(Submit: Sync);
    assert_not_impl!(SubmitLinked<2>: Send);
    assert_not_impl!(Drive: Send);
    assert_not_impl!(Drive: Sync);
}

#[test]
fn send_sync_table_is_checked_at_compile_time() {
    // The assertions above are compile-time; reaching here means they held.
    // This runtime check guards the one property the compiler cannot see:
    // that the SPDK half of the table was compiled when SPDK is available.
    assert_eq!(spdk_ring::SPDK_AVAILABLE, cfg!(spdk));
}
