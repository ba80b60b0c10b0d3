//! The checks a read or write must pass before it reaches SPDK, worked out
//! once per target (when it is registered, unregistered or removed) and
//! used by both paths: the core's bdev start and the lane. Errnos come in
//! one order: the target gone (`EBADF` unregistered, `ENODEV` removed),
//! `EBADF` for a write through a read-only descriptor, `ENOTSUP`, then
//! `EINVAL` for the length and the range.

use super::TargetState;
use crate::bdev::IoTypes;
use crate::ring::op::WHOLE_BUFFER;

/// Blocks of an I/O over `buf_len` bytes: the explicit count, which the
/// buffer must hold, or the whole buffer, which must be whole blocks.
pub(super) fn blocks_for(buf_len: usize, num_blocks: u32, block_size: u32) -> Result<u64, i32> {
    let bs = block_size as usize;
    match num_blocks {
        0 => Err(libc::EINVAL),
        WHOLE_BUFFER if buf_len == 0 || buf_len % bs != 0 => Err(libc::EINVAL),
        WHOLE_BUFFER => Ok((buf_len / bs) as u64),
        n if (n as usize).saturating_mul(bs) > buf_len => Err(libc::EINVAL),
        n => Ok(u64::from(n)),
    }
}

/// A target's read and write checks, as plain words.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RwChecks {
    num_blocks: u64,
    block_size: u32,
    /// log2 of the block size when it is a power of two, else `u32::MAX`.
    block_shift: u32,
    /// `block_size - 1` (for power-of-two block sizes).
    block_mask: u64,
    /// 0 when reads may start, else the errno every read fails with.
    read_errno: i32,
    write_errno: i32,
}

impl RwChecks {
    /// Nothing passes: not a bdev target.
    pub(crate) const NONE: RwChecks = RwChecks {
        num_blocks: 0,
        block_size: 1,
        block_shift: 0,
        block_mask: 0,
        read_errno: libc::EBADF,
        write_errno: libc::EBADF,
    };

    pub(crate) fn of(t: &TargetState) -> RwChecks {
        let gone = if t.unregistered {
            libc::EBADF
        } else if t.removed || t.bdev_channel().is_none() {
            libc::ENODEV
        } else {
            0
        };
        let unless_gone = |errno: i32| if gone != 0 { gone } else { errno };
        let block_size = t.block_size.max(1);
        RwChecks {
            num_blocks: t.num_blocks,
            block_size,
            block_mask: u64::from(block_size) - 1,
            block_shift: if block_size.is_power_of_two() {
                block_size.trailing_zeros()
            } else {
                u32::MAX
            },
            read_errno: unless_gone(if t.io_types.contains(IoTypes::READ) {
                0
            } else {
                libc::ENOTSUP
            }),
            write_errno: unless_gone(if !t.writable {
                libc::EBADF
            } else if !t.io_types.contains(IoTypes::WRITE) {
                libc::ENOTSUP
            } else {
                0
            }),
        }
    }

    pub(crate) fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The blocks a read or write of `buf_len` bytes covers, if it may
    /// start: every check in one test (which one failed is
    /// [`RwChecks::errno`]'s business, off the hot path).
    #[inline]
    pub(crate) fn pass(
        &self,
        write: bool,
        buf_len: usize,
        offset: u64,
        num_blocks: u32,
    ) -> Option<u64> {
        let errno = if write {
            self.write_errno
        } else {
            self.read_errno
        };
        let n = self.blocks(buf_len, num_blocks).ok()?;
        let in_range = offset
            .checked_add(n)
            .is_some_and(|end| end <= self.num_blocks);
        (errno == 0 && in_range).then_some(n)
    }

    /// Why [`RwChecks::pass`] said no.
    #[cold]
    #[inline(never)]
    pub(crate) fn errno(&self, write: bool, buf_len: usize, num_blocks: u32) -> i32 {
        let errno = if write {
            self.write_errno
        } else {
            self.read_errno
        };
        if errno != 0 {
            return errno;
        }
        match self.blocks(buf_len, num_blocks) {
            Err(errno) => errno,
            // Past the end of the bdev.
            Ok(_) => libc::EINVAL,
        }
    }

    /// [`blocks_for`] with a shift instead of a division for the usual
    /// power-of-two block sizes.
    #[inline]
    fn blocks(&self, buf_len: usize, num_blocks: u32) -> Result<u64, i32> {
        if self.block_shift == u32::MAX {
            return blocks_for(buf_len, num_blocks, self.block_size);
        }
        let len = buf_len as u64;
        let shift = self.block_shift;
        match num_blocks {
            0 => Err(libc::EINVAL),
            WHOLE_BUFFER if len == 0 || len & self.block_mask != 0 => Err(libc::EINVAL),
            WHOLE_BUFFER => Ok(len >> shift),
            n if u64::from(n) << shift > len => Err(libc::EINVAL),
            n => Ok(u64::from(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_counts_are_validated_against_buffers() {
        assert_eq!(blocks_for(4096, WHOLE_BUFFER, 512), Ok(8));
        assert_eq!(blocks_for(4000, WHOLE_BUFFER, 512), Err(libc::EINVAL));
        assert_eq!(blocks_for(4096, 4, 512), Ok(4));
        assert_eq!(blocks_for(4096, 9, 512), Err(libc::EINVAL));
        assert_eq!(blocks_for(4096, 0, 512), Err(libc::EINVAL));
        assert_eq!(
            blocks_for(4096, crate::ring::op::encode_num_blocks(u64::MAX), 512),
            Err(libc::EINVAL)
        );
    }

    /// The shift form agrees with the division form on every case that
    /// matters: both paths must compute the same blocks and errnos.
    #[test]
    fn shift_and_division_agree() {
        for bs in [512u32, 4096] {
            let checks = RwChecks {
                num_blocks: 1 << 20,
                block_size: bs,
                block_shift: bs.trailing_zeros(),
                block_mask: u64::from(bs) - 1,
                read_errno: 0,
                write_errno: 0,
            };
            for len in [0, 1, 511, 512, 513, 4095, 4096, 8192, 8193] {
                for n in [0, 1, 2, 8, 9, WHOLE_BUFFER] {
                    assert_eq!(
                        checks.blocks(len, n),
                        blocks_for(len, n, bs),
                        "len {len} n {n} bs {bs}"
                    );
                }
            }
        }
    }
}
