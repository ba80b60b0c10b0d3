//! The `log` feature's bridge: SPDK calls [`forward_to_log`] instead of
//! printing, and each of its lines becomes one `log` record.
//!
//! | SPDK level | `log` level |
//! |------------|-------------|
//! | ERROR      | Error       |
//! | WARN       | Warn        |
//! | NOTICE     | Info        |
//! | INFO       | Debug       |
//! | DEBUG      | Trace       |
//!
//! The target is `spdk::<source file stem>` (`spdk::bdev` for `bdev.c`),
//! or `spdk` for lines SPDK prints without a source location. SPDK's file
//! and line are the record's; its function is the `function` key-value.
//!
//! Only lines the logger enables are formatted, into a stack buffer:
//! nothing here allocates, and text past 1023 bytes is cut (marked `…`).

use ::log::{Level, Metadata, Record};
use spdk_ring_sys as sys;
use std::ffi::{c_char, c_int, CStr};
use std::fmt::{self, Write as _};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Bytes of formatted text kept per line, NUL included (SPDK's own first
/// pass uses the same).
const MESSAGE_CAPACITY: usize = 1024;
const TARGET_CAPACITY: usize = 64;
const TARGET_ROOT: &str = "spdk";
const TARGET_PREFIX: &str = "spdk::";

/// What `spdk_log_open` and `spdk_app_opts.log` are given.
pub(crate) const CALLBACK: sys::spdk_log_cb = Some(forward_to_log);

/// SPDK's `spdk_log_cb`: `file` and `func` are NULL or NUL-terminated,
/// `format` is a printf format that `args` matches, all valid for the call
/// (what `spdk_vlog` passes). Never unwinds into SPDK: if the logger
/// panics, that one line is lost.
unsafe extern "C" fn forward_to_log(
    level: c_int,
    file: *const c_char,
    line: c_int,
    func: *const c_char,
    format: *const c_char,
    args: *mut sys::__va_list_tag,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let Some(level) = level_of(level) else { return };
        if level > ::log::max_level() || format.is_null() {
            return;
        }
        // SAFETY: SPDK's file name is NULL or its NUL-terminated __FILE__.
        let file = unsafe { c_text(file) };
        let mut target_buf = [0u8; TARGET_CAPACITY];
        let target = target(file, &mut target_buf);
        let logger = ::log::logger();
        if !logger.enabled(&Metadata::builder().level(level).target(target).build()) {
            return;
        }
        let mut buf = [0u8; MESSAGE_CAPACITY];
        // SAFETY: buf is writable for its length; format and args are
        // SPDK's matching pair, consumed once, here.
        let needed = unsafe {
            sys::vsnprintf(
                buf.as_mut_ptr().cast(),
                buf.len() as std::ffi::c_ulong,
                format,
                args,
            )
        };
        let message = message(&buf, needed);
        // SAFETY: SPDK's function name is NULL or its NUL-terminated __func__.
        let function = unsafe { c_text(func) };
        let fields = function.map(|name| ("function", name));
        logger.log(
            &Record::builder()
                .level(level)
                .target(target)
                .file(file)
                .line(u32::try_from(line).ok())
                .key_values(&fields)
                .args(format_args!("{message}"))
                .build(),
        );
    }));
}

/// # Safety
/// `text` is NULL or NUL-terminated and outlives `'a`.
unsafe fn c_text<'a>(text: *const c_char) -> Option<&'a str> {
    if text.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated, as the caller promises.
    unsafe { CStr::from_ptr(text) }.to_str().ok()
}

/// `None` for SPDK_LOG_DISABLED, which SPDK itself never prints.
fn level_of(spdk_level: c_int) -> Option<Level> {
    Some(match spdk_level {
        sys::SPDK_LOG_ERROR => Level::Error,
        sys::SPDK_LOG_WARN => Level::Warn,
        sys::SPDK_LOG_NOTICE => Level::Info,
        sys::SPDK_LOG_INFO => Level::Debug,
        level if level >= sys::SPDK_LOG_DEBUG => Level::Trace,
        _ => return None,
    })
}

/// `spdk::<stem>` built in `buf`, or `spdk` when there is no file or its
/// stem is not a plain identifier (or does not fit).
fn target<'a>(file: Option<&str>, buf: &'a mut [u8; TARGET_CAPACITY]) -> &'a str {
    let Some(stem) = file.and_then(component) else {
        return TARGET_ROOT;
    };
    let len = TARGET_PREFIX.len() + stem.len();
    if len > buf.len() {
        return TARGET_ROOT;
    }
    buf[..TARGET_PREFIX.len()].copy_from_slice(TARGET_PREFIX.as_bytes());
    buf[TARGET_PREFIX.len()..len].copy_from_slice(stem.as_bytes());
    std::str::from_utf8(&buf[..len]).unwrap_or(TARGET_ROOT)
}

/// `bdev_malloc` for `module/bdev/malloc/bdev_malloc.c`.
fn component(file: &str) -> Option<&str> {
    let name = file.rsplit('/').next()?;
    let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
    let plain = !stem.is_empty() && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain.then_some(stem)
}

/// SPDK's formatted line as the record shows it.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    text: &'a [u8],
    cut: bool,
}

/// `needed` is vsnprintf's result: the full length, or negative on error.
fn message(buf: &[u8], needed: c_int) -> Message<'_> {
    let Ok(needed) = usize::try_from(needed) else {
        return Message {
            text: b"",
            cut: false,
        };
    };
    let cut = needed >= buf.len();
    let mut text = &buf[..needed.min(buf.len() - 1)];
    // SPDK ends its lines with a newline; a record has none.
    while let [rest @ .., b'\n' | b'\r'] = text {
        text = rest;
    }
    Message { text, cut }
}

impl fmt::Display for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.text.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        if self.cut {
            f.write_char('…')?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_map_spdk_notice_to_info_and_drop_disabled() {
        assert_eq!(level_of(sys::SPDK_LOG_ERROR), Some(Level::Error));
        assert_eq!(level_of(sys::SPDK_LOG_WARN), Some(Level::Warn));
        assert_eq!(level_of(sys::SPDK_LOG_NOTICE), Some(Level::Info));
        assert_eq!(level_of(sys::SPDK_LOG_INFO), Some(Level::Debug));
        assert_eq!(level_of(sys::SPDK_LOG_DEBUG), Some(Level::Trace));
        assert_eq!(level_of(sys::SPDK_LOG_DISABLED), None);
    }

    #[test]
    fn log_target_is_spdk_and_the_source_file_stem() {
        let mut buf = [0; TARGET_CAPACITY];
        assert_eq!(target(Some("bdev.c"), &mut buf), "spdk::bdev");
        let mut buf = [0; TARGET_CAPACITY];
        let path = Some("module/bdev/malloc/bdev_malloc.c");
        assert_eq!(target(path, &mut buf), "spdk::bdev_malloc");
        let mut buf = [0; TARGET_CAPACITY];
        assert_eq!(target(None, &mut buf), "spdk");
        let mut buf = [0; TARGET_CAPACITY];
        assert_eq!(target(Some("odd-name.c"), &mut buf), "spdk");
        let long = format!("{}.c", "x".repeat(TARGET_CAPACITY));
        let mut buf = [0; TARGET_CAPACITY];
        assert_eq!(target(Some(&long), &mut buf), "spdk");
    }

    #[test]
    fn log_message_loses_the_newline_and_marks_a_cut() {
        let mut buf = [0u8; 16];
        buf[..6].copy_from_slice(b"hello\n");
        let whole = message(&buf, 6);
        assert_eq!(whole.to_string(), "hello");
        buf.copy_from_slice(b"0123456789abcde\0");
        let cut = message(&buf, 40);
        assert_eq!(cut.to_string(), "0123456789abcde…");
        assert_eq!(message(&buf, -1).to_string(), "");
    }

    #[test]
    fn log_message_shows_invalid_utf8_as_replacement() {
        let buf = *b"a\xffb\n\0";
        assert_eq!(message(&buf, 4).to_string(), "a\u{FFFD}b");
    }
}
