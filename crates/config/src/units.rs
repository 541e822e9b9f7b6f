//! Values written for humans: sizes ("1 MiB"), durations ("500ms") and
//! Unix file modes ("0600").

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A size in bytes, written `1048576`, `"64 KiB"`, `"1 MiB"`, `"2 MB"` or
/// `"1.5 GiB"`.
///
/// `KB`/`MB`/`GB`/`TB` are powers of 1000 and `KiB`/`MiB`/`GiB`/`TiB` powers
/// of 1024; a bare `K` or `M` is refused because readers disagree on it.
///
/// ```
/// use busbar_config::ByteSize;
/// assert_eq!("1 MiB".parse::<ByteSize>().unwrap().bytes(), 1 << 20);
/// assert_eq!("2MB".parse::<ByteSize>().unwrap().bytes(), 2_000_000);
/// assert!("12 K".parse::<ByteSize>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }

    /// The size in bytes as a `usize`, saturating on 32-bit targets.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

/// A size that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size `{0}`: expected a number of bytes with an optional unit (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB), e.g. \"1 MiB\"")]
pub struct ParseSizeError(pub String);

impl FromStr for ByteSize {
    type Err = ParseSizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseSizeError(s.to_owned());
        let text = s.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number = number.replace('_', "");
        if number.is_empty() {
            return Err(err());
        }
        let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" => 1 << 10,
            "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            _ => return Err(err()),
        };
        if let Ok(n) = number.parse::<u64>() {
            return n.checked_mul(multiplier).map(ByteSize).ok_or_else(err);
        }
        let n: f64 = number.parse().map_err(|_| err())?;
        let bytes = n * multiplier as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(err());
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0 % size == 0 {
                return write!(f, "{} {name}", self.0 / size);
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 1048576 or \"1 MiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration written `"500ms"`, `"10s"` or `"1m 30s"` (humantime syntax).
///
/// ```
/// use busbar_config::HumanDuration;
/// let d: HumanDuration = "1m 30s".parse().unwrap();
/// assert_eq!(d.0.as_secs(), 90);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = humantime::DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim()).map(HumanDuration)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(|e| {
            de::Error::custom(format!(
                "invalid duration `{text}`: {e} (write e.g. \"500ms\" or \"10s\")"
            ))
        })
    }
}

/// Unix permission bits of a socket file, written `"0600"` (octal text) or
/// `0o600` (a TOML octal integer).
///
/// ```
/// use busbar_config::FileMode;
/// assert_eq!("0660".parse::<FileMode>().unwrap().0, 0o660);
/// assert!("0999".parse::<FileMode>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileMode(pub u32);

/// A file mode that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid file mode `{0}`: expected octal permission bits such as \"0600\"")]
pub struct ParseModeError(pub String);

impl FromStr for FileMode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let text = s.trim();
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(FileMode(mode)),
            _ => Err(ParseModeError(s.to_owned())),
        }
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FileMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("octal permission bits such as \"0600\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FileMode, E> {
                match u32::try_from(v) {
                    Ok(mode) if mode <= 0o777 => Ok(FileMode(mode)),
                    _ => Err(E::custom(format!("file mode {v:o} is out of range"))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FileMode, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FileMode, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        for (text, bytes) in [
            ("0", 0),
            ("1024", 1024),
            ("1 KiB", 1024),
            ("1kib", 1024),
            ("64 KB", 64_000),
            ("1.5 MiB", 1_572_864),
            ("1_000 B", 1000),
            ("4 GiB", 4 << 30),
        ] {
            assert_eq!(text.parse::<ByteSize>().unwrap().bytes(), bytes, "{text}");
        }
        for bad in ["", "MiB", "1 M", "-1", "1 XB", "99999999999 TiB"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize::mib(64).to_string(), "64 MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000 B");
    }

    #[test]
    fn modes() {
        assert_eq!("600".parse::<FileMode>().unwrap(), FileMode(0o600));
        assert_eq!("0o700".parse::<FileMode>().unwrap(), FileMode(0o700));
        assert_eq!(FileMode(0o600).to_string(), "0600");
        assert!("1777".parse::<FileMode>().is_err());
        assert!("".parse::<FileMode>().is_err());
    }
}
