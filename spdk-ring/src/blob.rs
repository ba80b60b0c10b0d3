//! SPDK's blobstore: thin-provisioned, persistent blobs on any bdev.
//!
//! A [`Blobstore`] lives on the SPDK thread that initialised or loaded it
//! (SPDK's *metadata thread*); it is `!Send`, and so are its [`Blob`]s.
//! Metadata operations have two forms: blocking helpers here, for set-up
//! code, and ring entries ([`opcode::BlobCreate`](crate::opcode::BlobCreate)
//! and friends) that complete through the ring like I/O. Blob data moves
//! only through the ring ([`Ring::register_blobstore`](crate::Ring::register_blobstore)).
//!
//! Lifetimes are enforced by ownership: a [`Blob`] holds its store, and a
//! ring's registration holds the store and its I/O channel, so the store
//! unloads only after every blob is closed and every registration is
//! dropped. Entries in flight hold their blob, so a blob cannot close under
//! SPDK's feet.
//!
//! ```no_run
//! use spdk_ring::blob::{BlobOptions, Blobstore, BlobstoreOptions};
//! # fn demo() -> spdk_ring::Result<()> {
//! let store = Blobstore::init("Malloc0", &BlobstoreOptions::default())?;
//! let id = store.create_blob(&BlobOptions { clusters: 4, ..Default::default() })?;
//! let blob = store.open_blob(id)?;
//! blob.set_xattr("name", b"log")?;
//! blob.sync_metadata()?;
//! drop(blob); // closes it
//! store.unload()?;
//! # Ok(()) }
//! ```

use crate::error::{Errno, Error, Result};
use crate::thread::SpdkThread;
use spdk_ring_sys as sys;
use std::cell::Cell;
use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::Duration;

/// How long the blocking helpers wait for SPDK.
pub const BLOB_OP_TIMEOUT: Duration = Duration::from_secs(60);

/// Fewest channel operations a store may have: what one blob I/O can hold
/// at once (see the ring's blob driver).
pub const MIN_CHANNEL_OPS: u32 = 4;

/// A blob's persistent id.
pub type BlobId = u64;

/// How a blobstore clears clusters it releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearMethod {
    Unmap,
    WriteZeroes,
    None,
}

/// Options of [`Blobstore::init`] and [`Blobstore::load`]; `None` keeps
/// SPDK's default.
#[derive(Debug, Clone, Default)]
pub struct BlobstoreOptions {
    /// Cluster size in bytes (SPDK default 1 MiB; a multiple of the 4 KiB page).
    pub cluster_size: Option<u32>,
    /// Metadata pages reserved at init (default: one per cluster).
    pub metadata_pages: Option<u32>,
    /// Channel operations per I/O channel (SPDK default 512, at least
    /// [`MIN_CHANNEL_OPS`]). A ring keeps at most a quarter of this many
    /// blob I/Os in flight per channel; more wait in the ring, in order.
    pub max_channel_ops: Option<u32>,
    /// Concurrent metadata operations (SPDK default 32).
    pub max_md_ops: Option<u32>,
    /// The store's type tag, at most 15 bytes: written at init, checked at
    /// load (a mismatch fails `EINVAL`).
    pub bstype: Option<String>,
    /// How clusters are cleared at init.
    pub clear_method: Option<ClearMethod>,
}

impl BlobstoreOptions {
    fn to_sys(&self) -> Result<sys::spdk_bs_opts> {
        // SAFETY: a plain C struct of integers, pointers and optional
        // function pointers, for which all-zero bytes are valid; init fills it.
        let mut opts: sys::spdk_bs_opts = unsafe { std::mem::zeroed() };
        // SAFETY: opts is writable and its true size is passed.
        unsafe { sys::spdk_bs_opts_init(&mut opts, std::mem::size_of::<sys::spdk_bs_opts>()) };
        if let Some(v) = self.cluster_size {
            opts.cluster_sz = v;
        }
        if let Some(v) = self.metadata_pages {
            opts.num_md_pages = v;
        }
        if let Some(v) = self.max_channel_ops {
            if v < MIN_CHANNEL_OPS {
                return Err(Error::InvalidArgument(format!(
                    "max_channel_ops {v}: one blob I/O may need {MIN_CHANNEL_OPS} channel operations"
                )));
            }
            opts.max_channel_ops = v;
        }
        if let Some(v) = self.max_md_ops {
            opts.max_md_ops = v;
        }
        if let Some(m) = self.clear_method {
            opts.clear_method = match m {
                ClearMethod::Unmap => sys::BS_CLEAR_WITH_UNMAP,
                ClearMethod::WriteZeroes => sys::BS_CLEAR_WITH_WRITE_ZEROES,
                ClearMethod::None => sys::BS_CLEAR_WITH_NONE,
            };
        }
        if let Some(t) = &self.bstype {
            let bytes = t.as_bytes();
            if bytes.len() >= sys::SPDK_BLOBSTORE_TYPE_LENGTH as usize || bytes.contains(&0) {
                return Err(Error::InvalidArgument(format!(
                    "blobstore type {t:?} must be at most {} bytes, without NUL",
                    sys::SPDK_BLOBSTORE_TYPE_LENGTH - 1
                )));
            }
            let mut bstype = [0 as std::os::raw::c_char; sys::SPDK_BLOBSTORE_TYPE_LENGTH as usize];
            for (dst, &src) in bstype.iter_mut().zip(bytes) {
                *dst = src as std::os::raw::c_char;
            }
            opts.bstype = sys::spdk_bs_type { bstype };
        }
        Ok(opts)
    }
}

/// Options of [`Blobstore::create_blob`] and
/// [`opcode::BlobCreate`](crate::opcode::BlobCreate).
#[derive(Debug, Clone, Default)]
pub struct BlobOptions {
    /// Initial size in clusters.
    pub clusters: u64,
    /// Allocate clusters on first write instead of now; never-written
    /// clusters read as zeros.
    pub thin_provision: bool,
    /// Extended attributes set at creation.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for PreparedBlobOpts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobOptions")
            .field("clusters", &self.opts.num_clusters)
            .field("thin_provision", &self.opts.thin_provision)
            .field("xattrs", &self._names)
            .finish()
    }
}

impl std::fmt::Debug for StoreInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobstore")
            .field("bdev", &self.bdev_name)
            .finish_non_exhaustive()
    }
}

/// What a store holds while open; shared by its handles.
pub(crate) struct StoreInner {
    bs: NonNull<sys::spdk_blob_store>,
    /// The metadata thread, kept alive while the store is loaded.
    pub(crate) thread: SpdkThread,
    bdev_name: String,
    unloaded: Cell<bool>,
    /// Blob operations one I/O channel can have outstanding.
    pub(crate) max_channel_ops: u32,
}

impl StoreInner {
    pub(crate) fn as_ptr(&self) -> *mut sys::spdk_blob_store {
        self.bs.as_ptr()
    }

    fn finish(&self, destroy: bool) -> Result<()> {
        self.unloaded.set(true);
        let what = if destroy {
            "blobstore destroy"
        } else {
            "blobstore unload"
        };
        wait_op(&self.thread, what, |ctx| {
            // SAFETY: the store is loaded and we are on its metadata thread;
            // nothing else holds it (this is the last reference).
            unsafe {
                if destroy {
                    sys::spdk_bs_destroy(self.as_ptr(), Some(op_done), ctx)
                } else {
                    sys::spdk_bs_unload(self.as_ptr(), Some(op_done), ctx)
                }
            }
        })
        .map(|_| ())
        .inspect(|_| settle(&self.thread))
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        if !self.unloaded.get() {
            if let Err(e) = self.finish(false) {
                eprintln!(
                    "spdk-ring: unloading the blobstore on {:?} failed: {e}",
                    self.bdev_name
                );
            }
        }
    }
}

/// A loaded blobstore. Dropping it unloads it (once no [`Blob`] or ring
/// registration holds it any more); [`unload`](Self::unload) does the same
/// and reports errors.
pub struct Blobstore {
    pub(crate) inner: Rc<StoreInner>,
}

impl std::fmt::Debug for Blobstore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blobstore")
            .field("bdev", &self.inner.bdev_name)
            .field("cluster_size", &self.cluster_size())
            .field("free_clusters", &self.free_clusters())
            .finish()
    }
}

/// The bdev module our blobstores claim their bdevs as (shown by SPDK
/// when someone else tries to claim one).
fn claim_module() -> *mut sys::spdk_bdev_module {
    static MODULE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MODULE.get_or_init(|| {
        // SAFETY: all-zero is valid for this C struct (null pointers,
        // absent callbacks); only the name is used for claims.
        let mut module: sys::spdk_bdev_module = unsafe { std::mem::zeroed() };
        module.name = c"spdk_ring_blobstore".as_ptr();
        Box::leak(Box::new(module)) as *mut sys::spdk_bdev_module as usize
    }) as *mut sys::spdk_bdev_module
}

unsafe extern "C" fn bs_dev_event(
    _event: sys::spdk_bdev_event_type,
    _bdev: *mut sys::spdk_bdev,
    _ctx: *mut c_void,
) {
    // Hot removal of the base bdev fails the store's I/O, which the ring
    // reports; nothing to record here.
}

impl Blobstore {
    /// Creates a new, empty blobstore on bdev `bdev_name` (erasing what the
    /// bdev held), on the current SPDK thread, which becomes its metadata
    /// thread.
    pub fn init(bdev_name: &str, options: &BlobstoreOptions) -> Result<Blobstore> {
        Blobstore::open(bdev_name, options, false)
    }

    /// Loads the blobstore on bdev `bdev_name`. After a crash (no clean
    /// unload) SPDK recovers the metadata from what was synced.
    pub fn load(bdev_name: &str, options: &BlobstoreOptions) -> Result<Blobstore> {
        Blobstore::open(bdev_name, options, true)
    }

    fn open(bdev_name: &str, options: &BlobstoreOptions, load: bool) -> Result<Blobstore> {
        let thread = SpdkThread::require_current()?;
        let mut opts = options.to_sys()?;
        let cname =
            CString::new(bdev_name).map_err(|_| Error::BdevNotFound(bdev_name.to_string()))?;
        let mut dev = std::ptr::null_mut();
        // SAFETY: on an SPDK thread; the name is a valid C string and dev
        // an out-pointer. The event callback needs no context.
        let rc = unsafe {
            sys::spdk_bdev_create_bs_dev_ext(
                cname.as_ptr(),
                Some(bs_dev_event),
                std::ptr::null_mut(),
                &mut dev,
            )
        };
        match rc {
            0 => {}
            rc if rc == -libc::ENODEV => return Err(Error::BdevNotFound(bdev_name.to_string())),
            rc if rc == -libc::EPERM => {
                return Err(Error::Busy(format!(
                    "bdev {bdev_name:?} is claimed by another user (a loaded blobstore?)"
                )))
            }
            rc => return Err(Error::from_rc(rc)),
        }
        // Claim the bdev, as SPDK's own blobstore users do, so no second
        // store (or other claimer) can open it while this one is loaded.
        // SAFETY: dev is the fresh bs_dev; the module lives forever.
        let rc = unsafe { sys::spdk_bs_bdev_claim(dev, claim_module()) };
        if rc != 0 {
            // SAFETY: dev was not handed to SPDK; destroyed once.
            unsafe {
                if let Some(destroy) = (*dev).destroy {
                    destroy(dev);
                }
            }
            return Err(Error::Busy(format!(
                "bdev {bdev_name:?} is claimed by another user ({})",
                Errno(-rc)
            )));
        }
        let what = if load {
            "blobstore load"
        } else {
            "blobstore init"
        };
        // The store owns `dev` from here: SPDK destroys it on failure too,
        // after the callback (see `settle`).
        let done = wait_op(&thread, what, |ctx| {
            // SAFETY: dev is a fresh bs_dev handed over to SPDK; opts is
            // initialised; ctx is the waiter the callback reports to.
            unsafe {
                if load {
                    sys::spdk_bs_load(dev, &mut opts, Some(op_with_store), ctx)
                } else {
                    sys::spdk_bs_init(dev, &mut opts, Some(op_with_store), ctx)
                }
            }
        })
        .inspect_err(|_| settle(&thread))?;
        let bs = NonNull::new(done.handle.cast::<sys::spdk_blob_store>())
            .ok_or(Error::Errno(Errno::EIO))?;
        Ok(Blobstore {
            inner: Rc::new(StoreInner {
                bs,
                thread,
                bdev_name: bdev_name.to_string(),
                unloaded: Cell::new(false),
                max_channel_ops: opts.max_channel_ops,
            }),
        })
    }

    /// Unloads the store, writing its metadata out cleanly. Fails `Busy`
    /// while blobs are open or rings have it registered (the store then
    /// unloads when the last of them is dropped).
    pub fn unload(self) -> Result<()> {
        self.finish(false)
    }

    /// Destroys the store: its metadata is erased, the bdev is free again.
    /// `Busy` as for [`unload`](Self::unload).
    pub fn destroy(self) -> Result<()> {
        self.finish(true)
    }

    fn finish(self, destroy: bool) -> Result<()> {
        let holders = Rc::strong_count(&self.inner) - 1;
        if holders > 0 {
            return Err(Error::Busy(format!(
                "the blobstore is held by {holders} open blob(s) or ring registration(s)"
            )));
        }
        self.inner.finish(destroy)
    }

    /// The bdev the store lives on.
    pub fn bdev_name(&self) -> &str {
        &self.inner.bdev_name
    }

    /// Bytes per io unit: the unit of blob I/O offsets and lengths.
    pub fn io_unit_size(&self) -> u64 {
        // SAFETY: the store is loaded while self exists (so for every getter here).
        unsafe { sys::spdk_bs_get_io_unit_size(self.inner.as_ptr()) }
    }

    /// Bytes per cluster: the unit of blob sizes and allocation.
    pub fn cluster_size(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::spdk_bs_get_cluster_size(self.inner.as_ptr()) }
    }

    /// Bytes per metadata page.
    pub fn page_size(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::spdk_bs_get_page_size(self.inner.as_ptr()) }
    }

    /// Clusters not allocated to any blob.
    pub fn free_clusters(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::spdk_bs_free_cluster_count(self.inner.as_ptr()) }
    }

    /// Clusters available for blob data.
    pub fn total_data_clusters(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::spdk_bs_total_data_cluster_count(self.inner.as_ptr()) }
    }

    /// Creates a blob; returns its id.
    pub fn create_blob(&self, options: &BlobOptions) -> Result<BlobId> {
        let prepared = PreparedBlobOpts::new(options)?;
        let done = wait_op(&self.inner.thread, "blob create", |ctx| {
            // SAFETY: store loaded, metadata thread; `prepared` (options,
            // xattr names and values) outlives the operation.
            unsafe {
                sys::spdk_bs_create_blob_ext(
                    self.inner.as_ptr(),
                    prepared.as_ptr(),
                    Some(op_with_id),
                    ctx,
                )
            }
        })?;
        Ok(done.id)
    }

    /// Opens blob `id` (`ENOENT` if there is none).
    pub fn open_blob(&self, id: BlobId) -> Result<Blob> {
        let done = wait_op(&self.inner.thread, "blob open", |ctx| {
            // SAFETY: store loaded, metadata thread.
            unsafe { sys::spdk_bs_open_blob(self.inner.as_ptr(), id, Some(op_with_blob), ctx) }
        })?;
        let blob = NonNull::new(done.handle.cast()).ok_or(Error::Errno(Errno::EIO))?;
        Ok(Blob::adopt(blob, self.inner.clone()))
    }

    /// Deletes blob `id`: `EBUSY` while it is open, `ENOENT` if there is none.
    pub fn delete_blob(&self, id: BlobId) -> Result<()> {
        wait_op(&self.inner.thread, "blob delete", |ctx| {
            // SAFETY: store loaded, metadata thread.
            unsafe { sys::spdk_bs_delete_blob(self.inner.as_ptr(), id, Some(op_done), ctx) }
        })
        .map(|_| ())
    }

    /// The ids of every blob in the store, in SPDK's iteration order.
    pub fn blob_ids(&self) -> Result<Vec<BlobId>> {
        let mut ids = Vec::new();
        let first = wait_op(&self.inner.thread, "blob iteration", |ctx| {
            // SAFETY: store loaded, metadata thread.
            unsafe { sys::spdk_bs_iter_first(self.inner.as_ptr(), Some(op_with_blob), ctx) }
        });
        let mut current = match first {
            Ok(done) => done.handle.cast::<sys::spdk_blob>(),
            Err(Error::Errno(Errno::ENOENT)) => return Ok(ids),
            Err(e) => return Err(e),
        };
        while !current.is_null() {
            // SAFETY: an open blob handed to us by the iterator.
            ids.push(unsafe { sys::spdk_blob_get_id(current) });
            let blob = current;
            // spdk_bs_iter_next closes `blob` and opens the next one.
            let next = wait_op(&self.inner.thread, "blob iteration", |ctx| {
                // SAFETY: blob is the iterator's open blob, handed back once.
                unsafe {
                    sys::spdk_bs_iter_next(self.inner.as_ptr(), blob, Some(op_with_blob), ctx)
                }
            });
            current = match next {
                Ok(done) => done.handle.cast(),
                Err(Error::Errno(Errno::ENOENT)) => std::ptr::null_mut(),
                Err(e) => return Err(e),
            };
        }
        Ok(ids)
    }

    /// Records `id` as the store's super blob (found again after a load
    /// with [`super_blob`](Self::super_blob)).
    pub fn set_super_blob(&self, id: BlobId) -> Result<()> {
        wait_op(&self.inner.thread, "set super blob", |ctx| {
            // SAFETY: store loaded, metadata thread.
            unsafe { sys::spdk_bs_set_super(self.inner.as_ptr(), id, Some(op_done), ctx) }
        })
        .map(|_| ())
    }

    /// The super blob's id, if one was set.
    pub fn super_blob(&self) -> Result<Option<BlobId>> {
        let done = wait_op(&self.inner.thread, "get super blob", |ctx| {
            // SAFETY: store loaded, metadata thread.
            unsafe { sys::spdk_bs_get_super(self.inner.as_ptr(), Some(op_with_id), ctx) }
        });
        match done {
            Ok(done) => Ok(Some(done.id)),
            Err(Error::Errno(Errno::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// [`BlobOptions`] as SPDK takes them, with the memory its pointers use.
pub(crate) struct PreparedBlobOpts {
    opts: sys::spdk_blob_opts,
    _names: Vec<CString>,
    _name_ptrs: Box<[*mut std::os::raw::c_char]>,
    _values: Box<[Vec<u8>]>,
}

unsafe extern "C" fn xattr_value(
    ctx: *mut c_void,
    name: *const std::os::raw::c_char,
    value: *mut *const c_void,
    value_len: *mut usize,
) {
    // SAFETY: ctx is the PreparedBlobOpts whose names SPDK iterates, alive
    // during the create call; name is one of its own C strings.
    let prepared = unsafe { &*(ctx as *const PreparedBlobOpts) };
    for (n, v) in prepared._names.iter().zip(prepared._values.iter()) {
        if n.as_ptr() == name {
            // SAFETY: out-pointers SPDK provides.
            unsafe {
                *value = v.as_ptr().cast();
                *value_len = v.len();
            }
            return;
        }
    }
    // SAFETY: as above; an unknown name gets no value.
    unsafe {
        *value = std::ptr::null();
        *value_len = 0;
    }
}

impl PreparedBlobOpts {
    pub(crate) fn new(options: &BlobOptions) -> Result<Box<PreparedBlobOpts>> {
        // SAFETY: all-zero is valid for this plain C struct; init fills it.
        let mut opts: sys::spdk_blob_opts = unsafe { std::mem::zeroed() };
        // SAFETY: opts is writable and its true size is passed.
        unsafe { sys::spdk_blob_opts_init(&mut opts, std::mem::size_of_val(&opts)) };
        opts.num_clusters = options.clusters;
        opts.thin_provision = options.thin_provision;
        let mut names = Vec::with_capacity(options.xattrs.len());
        let mut values = Vec::with_capacity(options.xattrs.len());
        for (name, value) in &options.xattrs {
            names.push(xattr_name(name)?);
            values.push(value.clone());
        }
        let name_ptrs: Box<[*mut std::os::raw::c_char]> =
            names.iter().map(|n| n.as_ptr() as *mut _).collect();
        let mut prepared = Box::new(PreparedBlobOpts {
            opts,
            _names: names,
            _name_ptrs: name_ptrs,
            _values: values.into_boxed_slice(),
        });
        let ctx = &*prepared as *const PreparedBlobOpts as *mut c_void;
        prepared.opts.xattrs.count = prepared._name_ptrs.len();
        prepared.opts.xattrs.names = prepared._name_ptrs.as_ptr() as *mut _;
        prepared.opts.xattrs.ctx = ctx;
        prepared.opts.xattrs.get_value = Some(xattr_value);
        Ok(prepared)
    }

    pub(crate) fn as_ptr(&self) -> *const sys::spdk_blob_opts {
        &self.opts
    }
}

fn xattr_name(name: &str) -> Result<CString> {
    CString::new(name)
        .map_err(|_| Error::InvalidArgument(format!("xattr name {name:?} contains NUL")))
}

/// What a ring entry or a [`Blob`] holds: the open blob and its store.
pub(crate) struct BlobInner {
    blob: NonNull<sys::spdk_blob>,
    pub(crate) store: Rc<StoreInner>,
    id: BlobId,
    closed: Cell<bool>,
}

impl BlobInner {
    pub(crate) fn as_ptr(&self) -> *mut sys::spdk_blob {
        self.blob.as_ptr()
    }

    /// Records that SPDK was asked to close the blob (by a ring entry).
    pub(crate) fn mark_closed(&self) {
        self.closed.set(true);
    }

    /// Closes the blob once; only called for the last reference.
    fn close_now(&self) -> Result<()> {
        if self.closed.replace(true) {
            return Ok(());
        }
        let blob = self.blob.as_ptr();
        wait_op(&self.store.thread, "blob close", |ctx| {
            // SAFETY: an open blob nobody else references, on the metadata
            // thread (BlobInner is !Send); closed once (flag above).
            unsafe { sys::spdk_blob_close(blob, Some(op_done), ctx) }
        })
        .map(|_| ())
    }
}

impl Drop for BlobInner {
    fn drop(&mut self) {
        if let Err(e) = self.close_now() {
            eprintln!("spdk-ring: closing blob {:#x} failed: {e}", self.id);
        }
    }
}

/// An open blob. Dropping it closes it (unsynced metadata changes are
/// written by the close). Entries in flight hold a clone, so the blob stays
/// open until they complete.
#[derive(Clone)]
pub struct Blob {
    pub(crate) inner: Rc<BlobInner>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("id", &self.id())
            .field("clusters", &self.num_clusters())
            .finish()
    }
}

impl Blob {
    pub(crate) fn adopt(blob: NonNull<sys::spdk_blob>, store: Rc<StoreInner>) -> Blob {
        // SAFETY: an open blob.
        let id = unsafe { sys::spdk_blob_get_id(blob.as_ptr()) };
        Blob {
            inner: Rc::new(BlobInner {
                blob,
                store,
                id,
                closed: Cell::new(false),
            }),
        }
    }

    pub fn id(&self) -> BlobId {
        self.inner.id
    }

    /// Size in io units (the unit of I/O offsets and lengths).
    pub fn num_io_units(&self) -> u64 {
        // SAFETY: the blob is open while self exists (so for every getter here).
        unsafe { sys::spdk_blob_get_num_io_units(self.inner.as_ptr()) }
    }

    /// Size in clusters.
    pub fn num_clusters(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::spdk_blob_get_num_clusters(self.inner.as_ptr()) }
    }

    /// Clusters that have storage behind them (all of them unless thin).
    pub fn num_allocated_clusters(&self) -> u64 {
        // SAFETY: as above.
        unsafe { sys::spdk_blob_get_num_allocated_clusters(self.inner.as_ptr()) }
    }

    pub fn is_thin_provisioned(&self) -> bool {
        // SAFETY: as above.
        unsafe { sys::spdk_blob_is_thin_provisioned(self.inner.as_ptr()) }
    }

    /// Resizes to `clusters` (in memory; [`sync_metadata`](Self::sync_metadata)
    /// persists it). `ENOSPC` when the store has too few free clusters.
    pub fn resize(&self, clusters: u64) -> Result<()> {
        let blob = self.inner.as_ptr();
        wait_op(&self.inner.store.thread, "blob resize", |ctx| {
            // SAFETY: open blob, metadata thread.
            unsafe { sys::spdk_blob_resize(blob, clusters, Some(op_done), ctx) }
        })
        .map(|_| ())
    }

    /// Writes the blob's metadata (size, xattrs) to the device.
    pub fn sync_metadata(&self) -> Result<()> {
        let blob = self.inner.as_ptr();
        wait_op(&self.inner.store.thread, "blob metadata sync", |ctx| {
            // SAFETY: open blob, metadata thread.
            unsafe { sys::spdk_blob_sync_md(blob, Some(op_done), ctx) }
        })
        .map(|_| ())
    }

    /// Sets an extended attribute (in memory until the metadata is synced).
    /// SPDK applies it at once, so it has no ring form.
    pub fn set_xattr(&self, name: &str, value: &[u8]) -> Result<()> {
        let cname = xattr_name(name)?;
        let len = u16::try_from(value.len()).map_err(|_| {
            Error::InvalidArgument(format!("xattr {name:?}: value over 65535 bytes"))
        })?;
        // SAFETY: open blob, metadata thread; SPDK copies name and value.
        let rc = unsafe {
            sys::spdk_blob_set_xattr(
                self.inner.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                len,
            )
        };
        errno_result(rc)
    }

    /// Removes an extended attribute (`ENOENT` if absent).
    pub fn remove_xattr(&self, name: &str) -> Result<()> {
        let cname = xattr_name(name)?;
        // SAFETY: open blob, metadata thread.
        let rc = unsafe { sys::spdk_blob_remove_xattr(self.inner.as_ptr(), cname.as_ptr()) };
        errno_result(rc)
    }

    /// An extended attribute's value, or `None`.
    pub fn xattr(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let cname = xattr_name(name)?;
        let (mut value, mut len) = (std::ptr::null::<c_void>(), 0usize);
        // SAFETY: open blob; out-pointers are ours. The value points into
        // the blob's metadata and is copied before anything can change it.
        let rc = unsafe {
            sys::spdk_blob_get_xattr_value(
                self.inner.as_ptr(),
                cname.as_ptr(),
                &mut value,
                &mut len,
            )
        };
        match rc {
            0 if value.is_null() => Ok(Some(Vec::new())),
            // SAFETY: SPDK returned `len` readable bytes at `value`.
            0 => Ok(Some(
                unsafe { std::slice::from_raw_parts(value.cast::<u8>(), len) }.to_vec(),
            )),
            rc if rc == -libc::ENOENT => Ok(None),
            rc => Err(Error::from_rc(rc)),
        }
    }

    /// The names of every extended attribute.
    pub fn xattr_names(&self) -> Result<Vec<String>> {
        let mut names = std::ptr::null_mut();
        // SAFETY: open blob; SPDK allocates `names`, freed below.
        let rc = unsafe { sys::spdk_blob_get_xattr_names(self.inner.as_ptr(), &mut names) };
        errno_result(rc)?;
        let mut out = Vec::new();
        // SAFETY: names is valid until freed; each entry is a C string.
        unsafe {
            for i in 0..sys::spdk_xattr_names_get_count(names) {
                let name = sys::spdk_xattr_names_get_name(names, i);
                out.push(
                    std::ffi::CStr::from_ptr(name)
                        .to_string_lossy()
                        .into_owned(),
                );
            }
            sys::spdk_xattr_names_free(names);
        }
        Ok(out)
    }

    /// Closes the blob now and reports errors. `Busy` while other clones or
    /// entries not yet reaped hold it; it then closes when the last of them
    /// is dropped.
    pub fn close(self) -> Result<()> {
        match Rc::try_unwrap(self.inner) {
            Ok(inner) => inner.close_now(),
            Err(shared) => Err(Error::Busy(format!(
                "blob {:#x} is held by {} entries or completions",
                shared.id,
                Rc::strong_count(&shared) - 1
            ))),
        }
    }
}

fn errno_result(rc: i32) -> Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(Error::from_rc(rc))
    }
}

/// Runs the thread until SPDK has finished tearing a store down. SPDK
/// calls back before it releases the store's bdev (through a message), so
/// without this the bdev would still be claimed right after an unload or
/// a failed load.
fn settle(thread: &SpdkThread) {
    thread.poll_until(Duration::from_secs(1), || thread.is_idle());
}

/// Where a blocking helper's callback leaves its outcome.
#[derive(Default)]
struct OpWaiter {
    done: Cell<bool>,
    rc: Cell<i32>,
    handle: Cell<*mut c_void>,
    id: Cell<u64>,
}

/// A finished metadata operation's outputs.
struct OpDone {
    handle: *mut c_void,
    id: u64,
}

/// Starts an SPDK metadata operation with `start(ctx)` and polls the
/// thread until its callback ran. On a time-out the waiter is leaked, so a
/// late callback writes into valid memory.
fn wait_op(
    thread: &SpdkThread,
    what: &'static str,
    start: impl FnOnce(*mut c_void),
) -> Result<OpDone> {
    let waiter = Box::new(OpWaiter::default());
    start(&*waiter as *const OpWaiter as *mut c_void);
    if !thread.poll_until(BLOB_OP_TIMEOUT, || waiter.done.get()) {
        Box::leak(waiter);
        return Err(Error::Timeout {
            what,
            after: BLOB_OP_TIMEOUT,
        });
    }
    match waiter.rc.get() {
        0 => Ok(OpDone {
            handle: waiter.handle.get(),
            id: waiter.id.get(),
        }),
        rc => Err(Error::from_rc(rc)),
    }
}

unsafe extern "C" fn op_done(ctx: *mut c_void, bserrno: i32) {
    // SAFETY: ctx is a live OpWaiter (kept until `done`, or leaked).
    let w = unsafe { &*(ctx as *const OpWaiter) };
    w.rc.set(bserrno);
    w.done.set(true);
}

unsafe extern "C" fn op_with_store(ctx: *mut c_void, bs: *mut sys::spdk_blob_store, bserrno: i32) {
    // SAFETY: as in op_done.
    let w = unsafe { &*(ctx as *const OpWaiter) };
    w.handle.set(bs.cast());
    w.rc.set(bserrno);
    w.done.set(true);
}

unsafe extern "C" fn op_with_blob(ctx: *mut c_void, blob: *mut sys::spdk_blob, bserrno: i32) {
    // SAFETY: as in op_done.
    let w = unsafe { &*(ctx as *const OpWaiter) };
    w.handle.set(blob.cast());
    w.rc.set(bserrno);
    w.done.set(true);
}

unsafe extern "C" fn op_with_id(ctx: *mut c_void, id: u64, bserrno: i32) {
    // SAFETY: as in op_done.
    let w = unsafe { &*(ctx as *const OpWaiter) };
    w.id.set(id);
    w.rc.set(bserrno);
    w.done.set(true);
}
