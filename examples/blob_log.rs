//! An append-only log in a blob, the way a database keeps its write-ahead
//! log on SPDK's blobstore: records are appended through the ring, the
//! log's tail is an xattr made durable by a metadata sync LINKed after the
//! record writes, and a restart replays every record.
//!
//! The store lives in a file (an AIO bdev), so the log survives the process:
//!
//! ```text
//! cargo run --release --example blob_log -- append "first" "second"
//! cargo run --release --example blob_log -- replay
//! cargo run --release --example blob_log -- --file /tmp/my.log append "third"
//! cargo run --release --example blob_log -- reset
//! ```
//!
//! One record per 4 KiB io unit: a little-endian u32 length, then the bytes.

#[cfg(not(spdk))]
fn main() {
    eprintln!(
        "blob_log: this build has no SPDK. Install SPDK under /usr/local, or set \
         SPDK_DIR=/path/to/spdk or PKG_CONFIG_PATH=/path/to/spdk/lib/pkgconfig, then rebuild."
    );
    std::process::exit(2);
}

#[cfg(spdk)]
fn main() {
    if let Err(e) = log::run(std::env::args().skip(1).collect()) {
        eprintln!("blob_log: {e}");
        std::process::exit(1);
    }
}

#[cfg(spdk)]
mod log {
    use spdk_ring::blob::{Blob, BlobOptions, Blobstore, BlobstoreOptions};
    use spdk_ring::{
        opcode, DmaBuf, EntryFlags, Error, JsonConfig, LogLevel, Ring, SpdkRuntime, Target,
    };
    use std::time::Duration;

    const STORE_TYPE: &str = "blob_log";
    const TAIL: &str = "tail";
    const FILE_BYTES: u64 = 64 << 20;
    const WAIT: Duration = Duration::from_secs(10);

    type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

    pub fn run(mut args: Vec<String>) -> Result<()> {
        let mut file = std::env::temp_dir().join("spdk-ring-blob-log.img");
        if args.first().map(String::as_str) == Some("--file") && args.len() > 1 {
            file = args[1].clone().into();
            args.drain(..2);
        }
        let (command, records) = match args.split_first() {
            Some((c, rest)) => (c.as_str(), rest),
            None => ("demo", &[][..]),
        };
        if command == "reset" {
            let _ = std::fs::remove_file(&file);
            println!("removed {}", file.display());
            return Ok(());
        }
        if !matches!(command, "append" | "replay" | "demo") {
            return Err(format!(
                "unknown command {command:?}: use append <record>..., replay, reset or \
                 no command (append two records, then replay)"
            )
            .into());
        }
        let fresh = !file.exists();
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&file)?;
        if f.metadata()?.len() < FILE_BYTES {
            f.set_len(FILE_BYTES)?;
        }
        let _rt = SpdkRuntime::builder()
            .name("blob_log")
            .no_huge(true)
            .mem_size_mb(512)
            .log_level(LogLevel::Error)
            .json_config(
                JsonConfig::new()
                    .aio_bdev("Log0", &file.to_string_lossy(), 4096)
                    .to_json(),
            )
            .build()?;
        let options = BlobstoreOptions {
            bstype: Some(STORE_TYPE.into()),
            ..Default::default()
        };
        let store = if fresh {
            Blobstore::init("Log0", &options)?
        } else {
            Blobstore::load("Log0", &options)?
        };
        let mut log = Log::open(&store)?;
        println!(
            "log {} in {}: {} records",
            log.blob.id(),
            file.display(),
            log.tail
        );
        match command {
            "append" => log.append(records)?,
            "replay" => log.replay()?,
            _ => {
                log.append(&["hello".into(), format!("pid {}", std::process::id())])?;
                log.replay()?;
            }
        }
        drop(log);
        store.unload()?;
        Ok(())
    }

    struct Log {
        ring: Ring,
        target: Target,
        blob: Blob,
        /// Records written and made durable.
        tail: u64,
        io_unit: usize,
    }

    impl Log {
        /// The store's super blob, or a new one made the super blob.
        fn open(store: &Blobstore) -> Result<Log> {
            let blob = match store.super_blob()? {
                Some(id) => store.open_blob(id)?,
                None => {
                    let id = store.create_blob(&BlobOptions {
                        clusters: 1,
                        thin_provision: true,
                        xattrs: vec![(TAIL.into(), 0u64.to_le_bytes().to_vec())],
                    })?;
                    store.set_super_blob(id)?;
                    store.open_blob(id)?
                }
            };
            let tail = blob
                .xattr(TAIL)?
                .and_then(|v| Some(u64::from_le_bytes(v.try_into().ok()?)))
                .ok_or("the log blob has no valid tail xattr")?;
            let mut ring = Ring::new(64)?;
            let target = ring.register_blobstore(store)?;
            Ok(Log {
                ring,
                target,
                blob,
                tail,
                io_unit: store.io_unit_size() as usize,
            })
        }

        /// Writes the records after the tail, then (LINKed, so only if
        /// every write succeeded) syncs the metadata that moves the tail.
        fn append(&mut self, records: &[String]) -> Result<()> {
            let needed = self.tail + records.len() as u64;
            if needed > self.blob.num_io_units() {
                let per_cluster = self.blob.num_io_units() / self.blob.num_clusters().max(1);
                let clusters = needed.div_ceil(per_cluster.max(1));
                self.blob.resize(clusters)?;
            }
            for (i, record) in records.iter().enumerate() {
                let bytes = record.as_bytes();
                if bytes.len() + 4 > self.io_unit {
                    return Err(format!("record {i} is over {} bytes", self.io_unit - 4).into());
                }
                let mut unit = vec![0u8; self.io_unit];
                unit[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                unit[4..4 + bytes.len()].copy_from_slice(bytes);
                let entry = opcode::BlobWrite::new(
                    self.target,
                    &self.blob,
                    DmaBuf::from_slice(&unit)?,
                    self.tail + i as u64,
                )
                .build()
                .user_data(i as u64)
                .flags(EntryFlags::LINK);
                self.ring.push(entry).map_err(|_| "submission queue full")?;
            }
            self.blob.set_xattr(TAIL, &needed.to_le_bytes())?;
            let sync = opcode::BlobSyncMetadata::new(self.target, &self.blob)
                .build()
                .user_data(u64::MAX);
            self.ring.push(sync).map_err(|_| "submission queue full")?;
            self.ring.submit_and_wait(records.len() + 1, WAIT)?;
            for done in self.ring.completions() {
                if let Err(e) = done.result() {
                    // Roll the in-memory tail back; the durable one never moved.
                    self.blob.set_xattr(TAIL, &self.tail.to_le_bytes())?;
                    return Err(Error::from(e).into());
                }
            }
            println!("appended {} records (durable)", records.len());
            self.tail = needed;
            Ok(())
        }

        /// Reads every record back, in order.
        fn replay(&mut self) -> Result<()> {
            let mut next = 0;
            while next < self.tail {
                let batch = (self.tail - next).min(64);
                let buf = DmaBuf::alloc_zeroed(batch as usize * self.io_unit, 0)?;
                let entry = opcode::BlobRead::new(self.target, &self.blob, buf, next).build();
                self.ring.push(entry).map_err(|_| "submission queue full")?;
                self.ring.submit_and_wait(1, WAIT)?;
                let mut done = self.ring.next_completion().ok_or("no completion")?;
                done.result().map_err(Error::from)?;
                let buf = done.take_buf().ok_or("read without its buffer")?;
                for (i, unit) in buf.chunks(self.io_unit).enumerate() {
                    let len = u32::from_le_bytes(unit[..4].try_into()?) as usize;
                    let text = unit.get(4..4 + len).ok_or("corrupt record length")?;
                    println!("  #{}: {}", next + i as u64, String::from_utf8_lossy(text));
                }
                next += batch;
            }
            Ok(())
        }
    }
}
