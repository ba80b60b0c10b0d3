//! Rust versions of SPDK helpers that bindgen cannot express: macros from
//! the headers. Each mirrors the header's definition exactly.

use crate::generated::{spdk_nvme_cpl, SPDK_NVME_SCT_GENERIC, SPDK_NVME_SC_SUCCESS};

/// The status half of a completion: `(sct, sc)`, with the phase bit dropped.
#[inline]
pub fn spdk_nvme_cpl_status(cpl: &spdk_nvme_cpl) -> (u16, u16) {
    // SAFETY: both union members are plain 16-bit data over the same bytes;
    // every bit pattern is a valid `status_raw`.
    let raw = unsafe { cpl.__bindgen_anon_1.status_raw };
    // Layout from nvme_spec.h: bit 0 phase, bits 1..=8 SC, bits 9..=11 SCT.
    ((raw >> 9) & 0x7, (raw >> 1) & 0xff)
}

/// `spdk_nvme_cpl_is_error(cpl)`: the command did not succeed.
#[inline]
pub fn spdk_nvme_cpl_is_error(cpl: &spdk_nvme_cpl) -> bool {
    let (sct, sc) = spdk_nvme_cpl_status(cpl);
    sc != SPDK_NVME_SC_SUCCESS as u16 || sct != SPDK_NVME_SCT_GENERIC as u16
}

/// `spdk_nvme_cpl_is_success(cpl)`.
#[inline]
pub fn spdk_nvme_cpl_is_success(cpl: &spdk_nvme_cpl) -> bool {
    !spdk_nvme_cpl_is_error(cpl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generated::spdk_nvme_cpl__bindgen_ty_1;

    fn cpl_with_raw(raw: u16) -> spdk_nvme_cpl {
        spdk_nvme_cpl {
            __bindgen_anon_1: spdk_nvme_cpl__bindgen_ty_1 { status_raw: raw },
            ..Default::default()
        }
    }

    #[test]
    fn status_matches_bindgen_bitfield_accessors() {
        // SCT=2 (media error), SC=0x81, phase=1.
        let raw = (2 << 9) | (0x81 << 1) | 1;
        let cpl = cpl_with_raw(raw);
        // SAFETY: reading the bitfield view of plain data.
        let status = unsafe { cpl.__bindgen_anon_1.status };
        assert_eq!(spdk_nvme_cpl_status(&cpl), (status.sct(), status.sc()));
        assert_eq!(spdk_nvme_cpl_status(&cpl), (2, 0x81));
        assert!(spdk_nvme_cpl_is_error(&cpl));
    }

    #[test]
    fn phase_bit_alone_is_success() {
        assert!(spdk_nvme_cpl_is_success(&cpl_with_raw(1)));
        assert!(!spdk_nvme_cpl_is_success(&cpl_with_raw(1 << 9)));
    }
}
