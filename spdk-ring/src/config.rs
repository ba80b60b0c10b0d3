//! Builds SPDK JSON configurations for the common bdevs without a JSON
//! dependency, so examples and tests read as what they configure.

use std::fmt::Write;

/// An SPDK `{"subsystems": [...]}` configuration with a `bdev` subsystem.
///
/// ```
/// use spdk_ring::JsonConfig;
/// let json = JsonConfig::new()
///     .malloc_bdev("Malloc0", 32768, 512)
///     .null_bdev("Null0", 262144, 4096)
///     .to_json();
/// assert!(json.contains("\"bdev_malloc_create\""));
/// ```
#[derive(Debug, Clone, Default)]
pub struct JsonConfig {
    /// `bdev_set_options` parameters, applied before the bdev subsystem starts.
    bdev_options: Vec<(String, u64)>,
    /// `(method, params JSON object)` in order.
    bdev_methods: Vec<(String, String)>,
}

/// JSON string literal for `s`.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl JsonConfig {
    pub fn new() -> Self {
        Self::default()
    }

    /// A RAM-backed bdev of `num_blocks` blocks of `block_size` bytes.
    pub fn malloc_bdev(self, name: &str, num_blocks: u64, block_size: u32) -> Self {
        let params = format!(
            "{{\"name\": {}, \"num_blocks\": {num_blocks}, \"block_size\": {block_size}}}",
            json_string(name)
        );
        self.method("bdev_malloc_create", params)
    }

    /// A bdev that discards writes and returns zeros without touching memory.
    pub fn null_bdev(self, name: &str, num_blocks: u64, block_size: u32) -> Self {
        let params = format!(
            "{{\"name\": {}, \"num_blocks\": {num_blocks}, \"block_size\": {block_size}}}",
            json_string(name)
        );
        self.method("bdev_null_create", params)
    }

    /// A bdev over a file or block device through Linux AIO.
    pub fn aio_bdev(self, name: &str, filename: &str, block_size: u32) -> Self {
        let params = format!(
            "{{\"name\": {}, \"filename\": {}, \"block_size\": {block_size}}}",
            json_string(name),
            json_string(filename)
        );
        self.method("bdev_aio_create", params)
    }

    /// Sets a `bdev_set_options` field, e.g. `("bdev_io_pool_size", 64)`.
    pub fn bdev_option(mut self, key: &str, value: u64) -> Self {
        self.bdev_options.push((key.to_string(), value));
        self
    }

    /// Any bdev-subsystem RPC method with its `params` object as JSON text.
    pub fn method(mut self, method: &str, params_json: String) -> Self {
        self.bdev_methods.push((method.to_string(), params_json));
        self
    }

    /// The configuration text.
    pub fn to_json(&self) -> String {
        let mut entries = Vec::new();
        if !self.bdev_options.is_empty() {
            let fields: Vec<String> = self
                .bdev_options
                .iter()
                .map(|(k, v)| format!("{}: {v}", json_string(k)))
                .collect();
            entries.push(format!(
                "{{\"method\": \"bdev_set_options\", \"params\": {{{}}}}}",
                fields.join(", ")
            ));
        }
        for (method, params) in &self.bdev_methods {
            entries.push(format!(
                "{{\"method\": {}, \"params\": {params}}}",
                json_string(method)
            ));
        }
        format!(
            "{{\"subsystems\": [{{\"subsystem\": \"bdev\", \"config\": [{}]}}]}}",
            entries.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_spdk_config_format() {
        let json = JsonConfig::new()
            .bdev_option("bdev_io_pool_size", 128)
            .malloc_bdev("M\"0", 8, 512)
            .to_json();
        assert_eq!(
            json,
            "{\"subsystems\": [{\"subsystem\": \"bdev\", \"config\": [\
             {\"method\": \"bdev_set_options\", \"params\": {\"bdev_io_pool_size\": 128}}, \
             {\"method\": \"bdev_malloc_create\", \"params\": \
             {\"name\": \"M\\\"0\", \"num_blocks\": 8, \"block_size\": 512}}]}]}"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(json_string("a\u{1}\n"), "\"a\\u0001\\n\"");
    }
}
