//! Direct NVMe access (no bdev layer): transport ids, controllers and their
//! namespaces, with identify data.
//!
//! A controller is detached when the last handle to it is dropped; anything
//! that uses it (namespaces borrow it, and I/O queue pairs will own a
//! reference) keeps it attached, so it can never be detached under a user.
//!
//! ```no_run
//! use spdk_ring::nvme::{NvmeController, TransportId};
//! let trid: TransportId = "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 \
//!                          subnqn:nqn.2016-06.io.spdk:cnode1".parse()?;
//! let ctrlr = NvmeController::connect(&trid, &Default::default())?;
//! println!("{} serial {}", ctrlr.data().model_number, ctrlr.data().serial_number);
//! for ns in ctrlr.namespaces() {
//!     println!("ns {}: {} x {} B", ns.id(), ns.num_sectors(), ns.sector_size());
//! }
//! # Ok::<(), spdk_ring::Error>(())
//! ```

use crate::env::{live_env, EnvToken};
use crate::error::{Error, Result};
use spdk_ring_sys as sys;
use std::ffi::{c_void, CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::Arc;

/// The transport of a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Pcie,
    Tcp,
    Rdma,
    /// Another transport SPDK knows by this name.
    Other(String),
}

/// Where a controller is: SPDK's `spdk_nvme_transport_id`.
#[derive(Clone)]
pub struct TransportId {
    raw: sys::spdk_nvme_transport_id,
}

fn c_chars_to_string(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl TransportId {
    /// Parses SPDK's form, e.g. `"trtype:PCIe traddr:0000:04:00.0"` or
    /// `"trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn..."`.
    pub fn parse(text: &str) -> Result<TransportId> {
        let invalid = || Error::InvalidArgument(format!("not an NVMe transport id: {text:?}"));
        let c = CString::new(text).map_err(|_| invalid())?;
        let mut raw = sys::spdk_nvme_transport_id::default();
        // SAFETY: raw is a writable transport id; c is NUL-terminated.
        let rc = unsafe { sys::spdk_nvme_transport_id_parse(&mut raw, c.as_ptr()) };
        if rc != 0 || raw.trtype == 0 {
            return Err(invalid());
        }
        Ok(TransportId { raw })
    }

    /// An NVMe/TCP target (IPv4) and subsystem.
    pub fn tcp(ipv4: &str, port: u16, subnqn: &str) -> Result<TransportId> {
        TransportId::parse(&format!(
            "trtype:TCP adrfam:IPv4 traddr:{ipv4} trsvcid:{port} subnqn:{subnqn}"
        ))
    }

    /// A local PCIe controller by its address, e.g. `"0000:04:00.0"`.
    pub fn pcie(bdf: &str) -> Result<TransportId> {
        TransportId::parse(&format!("trtype:PCIe traddr:{bdf}"))
    }

    pub fn transport(&self) -> Transport {
        match self.raw.trtype {
            sys::SPDK_NVME_TRANSPORT_PCIE => Transport::Pcie,
            sys::SPDK_NVME_TRANSPORT_TCP => Transport::Tcp,
            sys::SPDK_NVME_TRANSPORT_RDMA => Transport::Rdma,
            _ => Transport::Other(c_chars_to_string(&self.raw.trstring)),
        }
    }

    pub fn traddr(&self) -> String {
        c_chars_to_string(&self.raw.traddr)
    }

    /// The service id (TCP/RDMA port); empty for PCIe.
    pub fn trsvcid(&self) -> String {
        c_chars_to_string(&self.raw.trsvcid)
    }

    /// The subsystem NQN; empty for PCIe.
    pub fn subnqn(&self) -> String {
        c_chars_to_string(&self.raw.subnqn)
    }

    pub fn as_raw(&self) -> &sys::spdk_nvme_transport_id {
        &self.raw
    }
}

impl FromStr for TransportId {
    type Err = Error;
    fn from_str(s: &str) -> Result<TransportId> {
        TransportId::parse(s)
    }
}

impl fmt::Display for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: returns a static string for any transport type value.
        let trtype =
            unsafe { CStr::from_ptr(sys::spdk_nvme_transport_id_trtype_str(self.raw.trtype)) };
        write!(
            f,
            "trtype:{} traddr:{}",
            trtype.to_string_lossy(),
            self.traddr()
        )?;
        for (key, value) in [("trsvcid", self.trsvcid()), ("subnqn", self.subnqn())] {
            if !value.is_empty() {
                write!(f, " {key}:{value}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for TransportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TransportId({self})")
    }
}

/// Connection options; unset fields keep SPDK's defaults.
#[derive(Debug, Clone, Default)]
pub struct ControllerOptions {
    /// I/O queue pairs to negotiate.
    pub num_io_queues: Option<u32>,
    /// Entries per I/O queue.
    pub io_queue_size: Option<u32>,
    /// Keep-alive timeout; fabrics controllers drop hosts that miss it.
    pub keep_alive_timeout_ms: Option<u32>,
    /// The host NQN to present.
    pub hostnqn: Option<String>,
}

impl ControllerOptions {
    fn to_raw(&self) -> Result<sys::spdk_nvme_ctrlr_opts> {
        let mut opts = sys::spdk_nvme_ctrlr_opts::default();
        // SAFETY: opts is writable and its true size is passed.
        unsafe {
            sys::spdk_nvme_ctrlr_get_default_ctrlr_opts(&mut opts, std::mem::size_of_val(&opts))
        };
        if let Some(n) = self.num_io_queues {
            opts.num_io_queues = n;
        }
        if let Some(n) = self.io_queue_size {
            opts.io_queue_size = n;
        }
        if let Some(ms) = self.keep_alive_timeout_ms {
            opts.keep_alive_timeout_ms = ms;
        }
        if let Some(nqn) = &self.hostnqn {
            if nqn.len() >= opts.hostnqn.len() || nqn.contains('\0') {
                return Err(Error::InvalidArgument(format!(
                    "host NQN {nqn:?} is too long or has NUL"
                )));
            }
            opts.hostnqn.fill(0);
            for (dst, src) in opts.hostnqn.iter_mut().zip(nqn.bytes()) {
                *dst = src as libc::c_char;
            }
        }
        Ok(opts)
    }
}

/// Identify Controller data (the fields most programs look at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerData {
    pub vendor_id: u16,
    pub subsystem_vendor_id: u16,
    pub serial_number: String,
    pub model_number: String,
    pub firmware_revision: String,
    /// Maximum data transfer size as a power of two of the minimum page size (0: no limit).
    pub mdts: u8,
    pub controller_id: u16,
    /// Number of namespaces (NN).
    pub num_namespaces: u32,
    pub subnqn: String,
}

impl ControllerData {
    /// Decodes the 4096-byte Identify Controller structure (NVMe base
    /// specification, figure "Identify Controller Data Structure"); bindgen
    /// cannot lay out SPDK's packed version, so this reads the bytes.
    fn from_bytes(b: &[u8; 4096]) -> ControllerData {
        let text = |range: std::ops::Range<usize>| {
            String::from_utf8_lossy(&b[range])
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        ControllerData {
            vendor_id: u16::from_le_bytes([b[0], b[1]]),
            subsystem_vendor_id: u16::from_le_bytes([b[2], b[3]]),
            serial_number: text(4..24),
            model_number: text(24..64),
            firmware_revision: text(64..72),
            mdts: b[77],
            controller_id: u16::from_le_bytes([b[78], b[79]]),
            num_namespaces: u32::from_le_bytes([b[516], b[517], b[518], b[519]]),
            subnqn: text(768..1024),
        }
    }
}

struct CtrlrInner {
    ptr: NonNull<sys::spdk_nvme_ctrlr>,
    _env: Arc<EnvToken>,
}

impl Drop for CtrlrInner {
    fn drop(&mut self) {
        // SAFETY: the last handle is gone, so nothing uses the controller;
        // it was attached by spdk_nvme_connect/probe and is detached once.
        unsafe { sys::spdk_nvme_detach(self.ptr.as_ptr()) };
    }
}

/// An attached NVMe controller. `!Send`: operate it from the thread that
/// attached it. Dropping the last handle detaches it.
#[derive(Clone)]
pub struct NvmeController {
    inner: Rc<CtrlrInner>,
}

impl fmt::Debug for NvmeController {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmeController")
            .field("trid", &self.transport_id())
            .finish()
    }
}

/// Collects the controllers a probe attaches.
struct ProbeContext {
    attached: Vec<NonNull<sys::spdk_nvme_ctrlr>>,
    options: sys::spdk_nvme_ctrlr_opts,
}

unsafe extern "C" fn probe_accept(
    ctx: *mut c_void,
    _trid: *const sys::spdk_nvme_transport_id,
    opts: *mut sys::spdk_nvme_ctrlr_opts,
) -> bool {
    // SAFETY: ctx is the ProbeContext alive for the probe call; opts is
    // SPDK's writable options for this controller.
    unsafe { *opts = (*(ctx as *const ProbeContext)).options };
    true
}

unsafe extern "C" fn probe_attached(
    ctx: *mut c_void,
    _trid: *const sys::spdk_nvme_transport_id,
    ctrlr: *mut sys::spdk_nvme_ctrlr,
    _opts: *const sys::spdk_nvme_ctrlr_opts,
) {
    // SAFETY: ctx is the ProbeContext alive for the probe call, used by
    // this thread only. Pushing cannot unwind past here: contained.
    let ctx = unsafe { &mut *(ctx as *mut ProbeContext) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(ctrlr) = NonNull::new(ctrlr) {
            ctx.attached.push(ctrlr);
        }
    }));
}

impl NvmeController {
    /// Connects to (attaches) the controller at `trid`, synchronously.
    pub fn connect(trid: &TransportId, options: &ControllerOptions) -> Result<NvmeController> {
        let env = live_env()?;
        let opts = options.to_raw()?;
        // SAFETY: trid and opts are valid for the call; the size is opts'.
        let ctrlr =
            unsafe { sys::spdk_nvme_connect(&trid.raw, &opts, std::mem::size_of_val(&opts)) };
        let ptr = NonNull::new(ctrlr).ok_or_else(|| Error::NvmeConnect {
            trid: trid.to_string(),
        })?;
        Ok(NvmeController {
            inner: Rc::new(CtrlrInner { ptr, _env: env }),
        })
    }

    /// Attaches every controller `trid` finds: local PCIe devices, or the
    /// subsystems a fabrics discovery service reports.
    pub fn probe(trid: &TransportId, options: &ControllerOptions) -> Result<Vec<NvmeController>> {
        let env = live_env()?;
        let mut ctx = ProbeContext {
            attached: Vec::new(),
            options: options.to_raw()?,
        };
        // SAFETY: ctx outlives the synchronous probe; the callbacks match
        // SPDK's signatures and only touch ctx.
        let rc = unsafe {
            sys::spdk_nvme_probe(
                &trid.raw,
                (&mut ctx as *mut ProbeContext).cast(),
                Some(probe_accept),
                Some(probe_attached),
                None,
            )
        };
        let controllers: Vec<NvmeController> = ctx
            .attached
            .into_iter()
            .map(|ptr| NvmeController {
                inner: Rc::new(CtrlrInner {
                    ptr,
                    _env: env.clone(),
                }),
            })
            .collect();
        if rc != 0 && controllers.is_empty() {
            return Err(Error::NvmeConnect {
                trid: trid.to_string(),
            });
        }
        Ok(controllers)
    }

    fn ptr(&self) -> *mut sys::spdk_nvme_ctrlr {
        self.inner.ptr.as_ptr()
    }

    /// Identify Controller data.
    pub fn data(&self) -> ControllerData {
        // SAFETY: an attached controller's identify data is 4096 bytes that
        // live as long as the controller (we hold it).
        let bytes = unsafe { &*(sys::spdk_nvme_ctrlr_get_data(self.ptr()) as *const [u8; 4096]) };
        ControllerData::from_bytes(bytes)
    }

    /// Where the controller is.
    pub fn transport_id(&self) -> TransportId {
        TransportId {
            // SAFETY: the controller's own transport id, copied.
            raw: unsafe { *sys::spdk_nvme_ctrlr_get_transport_id(self.ptr()) },
        }
    }

    /// The active namespaces, by id.
    pub fn namespaces(&self) -> Vec<NvmeNamespace<'_>> {
        let mut out = Vec::new();
        // SAFETY: iterating the active namespace list of an attached controller.
        let mut nsid = unsafe { sys::spdk_nvme_ctrlr_get_first_active_ns(self.ptr()) };
        while nsid != 0 {
            if let Some(ns) = self.namespace(nsid) {
                out.push(ns);
            }
            // SAFETY: as above.
            nsid = unsafe { sys::spdk_nvme_ctrlr_get_next_active_ns(self.ptr(), nsid) };
        }
        out
    }

    /// Namespace `nsid`, if it is active.
    pub fn namespace(&self, nsid: u32) -> Option<NvmeNamespace<'_>> {
        // SAFETY: any nsid may be asked; SPDK returns null or a namespace
        // owned by the controller.
        let ns = NonNull::new(unsafe { sys::spdk_nvme_ctrlr_get_ns(self.ptr(), nsid) })?;
        // SAFETY: ns belongs to the attached controller.
        unsafe { sys::spdk_nvme_ns_is_active(ns.as_ptr()) }.then_some(NvmeNamespace {
            ns,
            _ctrlr: PhantomData,
        })
    }

    /// Processes admin completions and keep-alive; fabrics controllers must
    /// have this called regularly. Returns how many completions it handled.
    pub fn process_admin_completions(&self) -> Result<u32> {
        // SAFETY: attached controller, used from its thread.
        let rc = unsafe { sys::spdk_nvme_ctrlr_process_admin_completions(self.ptr()) };
        if rc < 0 {
            return Err(Error::from_rc(rc));
        }
        Ok(rc as u32)
    }

    pub fn as_ptr(&self) -> *mut sys::spdk_nvme_ctrlr {
        self.ptr()
    }
}

/// Identify Namespace data: sizes in logical blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceData {
    /// NSZE: total size.
    pub size: u64,
    /// NCAP: capacity that may be allocated.
    pub capacity: u64,
    /// NUSE: blocks currently allocated.
    pub utilization: u64,
    /// Number of LBA formats the namespace supports.
    pub num_lba_formats: u8,
}

/// An active namespace, borrowed from its controller.
#[derive(Clone, Copy)]
pub struct NvmeNamespace<'c> {
    ns: NonNull<sys::spdk_nvme_ns>,
    _ctrlr: PhantomData<&'c NvmeController>,
}

impl NvmeNamespace<'_> {
    pub fn id(&self) -> u32 {
        // SAFETY: the namespace lives while its controller is borrowed.
        unsafe { sys::spdk_nvme_ns_get_id(self.ns.as_ptr()) }
    }
    /// Bytes per sector (logical block), without metadata.
    pub fn sector_size(&self) -> u32 {
        // SAFETY: as in id().
        unsafe { sys::spdk_nvme_ns_get_sector_size(self.ns.as_ptr()) }
    }
    pub fn num_sectors(&self) -> u64 {
        // SAFETY: as in id().
        unsafe { sys::spdk_nvme_ns_get_num_sectors(self.ns.as_ptr()) }
    }
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: as in id().
        unsafe { sys::spdk_nvme_ns_get_size(self.ns.as_ptr()) }
    }
    /// Identify Namespace data (the size fields).
    pub fn data(&self) -> NamespaceData {
        // SAFETY: the namespace's identify data lives with its controller,
        // which is borrowed; the struct's layout is checked at build time.
        let d = unsafe { &*sys::spdk_nvme_ns_get_data(self.ns.as_ptr()) };
        NamespaceData {
            size: d.nsze,
            capacity: d.ncap,
            utilization: d.nuse,
            num_lba_formats: d.nlbaf + 1,
        }
    }
    /// Metadata bytes per sector (0 without metadata).
    pub fn metadata_size(&self) -> u32 {
        // SAFETY: as in id().
        unsafe { sys::spdk_nvme_ns_get_md_size(self.ns.as_ptr()) }
    }
    pub fn as_ptr(&self) -> *mut sys::spdk_nvme_ns {
        self.ns.as_ptr()
    }
}

impl fmt::Debug for NvmeNamespace<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NvmeNamespace")
            .field("id", &self.id())
            .field("sector_size", &self.sector_size())
            .field("num_sectors", &self.num_sectors())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_controller_fields_come_from_their_spec_offsets() {
        let mut b = [0u8; 4096];
        b[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x1af4u16.to_le_bytes());
        b[4..24].copy_from_slice(b"SERIAL42            ");
        b[24..64].copy_from_slice(&[b' '; 40]);
        b[24..31].copy_from_slice(b"a model");
        b[64..72].copy_from_slice(b"fw1.0   ");
        b[77] = 5;
        b[78..80].copy_from_slice(&7u16.to_le_bytes());
        b[516..520].copy_from_slice(&32u32.to_le_bytes());
        b[768..780].copy_from_slice(b"nqn.test:one");
        let d = ControllerData::from_bytes(&b);
        assert_eq!(
            d,
            ControllerData {
                vendor_id: 0x1b36,
                subsystem_vendor_id: 0x1af4,
                serial_number: "SERIAL42".into(),
                model_number: "a model".into(),
                firmware_revision: "fw1.0".into(),
                mdts: 5,
                controller_id: 7,
                num_namespaces: 32,
                subnqn: "nqn.test:one".into(),
            }
        );
    }
}
