//! SPDK's version, read from `spdk/version.h`.

use std::fmt;

/// The release an SPDK installation identifies itself as.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SpdkVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// Pre-release suffix such as `-pre`; empty for releases.
    pub suffix: String,
}

impl SpdkVersion {
    /// Parses the `#define SPDK_VERSION_*` lines of `spdk/version.h`.
    pub fn parse_header(text: &str) -> Option<SpdkVersion> {
        let mut major = None;
        let mut minor = None;
        let mut patch = None;
        let mut suffix = String::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            match name {
                "SPDK_VERSION_MAJOR" => major = value.parse().ok(),
                "SPDK_VERSION_MINOR" => minor = value.parse().ok(),
                "SPDK_VERSION_PATCH" => patch = value.parse().ok(),
                "SPDK_VERSION_SUFFIX" => suffix = value.trim_matches('"').to_string(),
                _ => {}
            }
        }
        Some(SpdkVersion {
            major: major?,
            minor: minor?,
            patch: patch?,
            suffix,
        })
    }

    /// A single comparable number, `major * 10000 + minor * 100 + patch`
    /// (26.09.0 is 260900), handy for `#[cfg]`-free version checks.
    pub fn as_number(&self) -> u32 {
        self.major * 10_000 + self.minor * 100 + self.patch
    }
}

impl fmt::Display for SpdkVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:02}.{}{}",
            self.major, self.minor, self.patch, self.suffix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_recorded_header() {
        let text = include_str!("../tests/fixtures/version-26.09-pre.txt");
        let v = SpdkVersion::parse_header(text).unwrap();
        assert_eq!(v.major, 26);
        assert_eq!(v.minor, 9);
        assert_eq!(v.patch, 0);
        assert_eq!(v.suffix, "-pre");
        assert_eq!(v.to_string(), "26.09.0-pre");
        assert_eq!(v.as_number(), 260_900);
    }

    #[test]
    fn missing_fields_are_rejected() {
        assert_eq!(
            SpdkVersion::parse_header("#define SPDK_VERSION_MAJOR 24\n"),
            None
        );
        assert_eq!(SpdkVersion::parse_header(""), None);
    }

    #[test]
    fn release_without_suffix_orders_by_number() {
        let old = SpdkVersion::parse_header(
            "#define SPDK_VERSION_MAJOR 24\n#define SPDK_VERSION_MINOR 1\n#define SPDK_VERSION_PATCH 1\n#define SPDK_VERSION_SUFFIX \"\"\n",
        )
        .unwrap();
        assert_eq!(old.to_string(), "24.01.1");
        assert!(old.as_number() < 260_900);
    }
}
