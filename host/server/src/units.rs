//! Units and time shared by every layer: sizes and durations as operators write them, and the clock
//! as the store records it (milliseconds since the Unix epoch) and the API shows it (RFC 3339).
//! A leaf: it imports nothing from this crate.

use serde::Deserialize;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A size in bytes, written as a number or with a unit: `64MiB`, `512KiB`, `1GiB`, `100KB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{s}` is not a size (e.g. 64MiB)"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            other => return Err(format!("unknown unit `{other}` in `{s}`")),
        };
        n.checked_mul(mul)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A length of time, written as operators do: `10s`, `15m`, `30days`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s.trim())
            .map(Span)
            .map_err(|e| format!("`{s}` is not a duration (e.g. 10s, 15m, 30days): {e}"))
    }
}

impl fmt::Display for Span {
    /// Whole days as days (humantime would write 365 days as months and hours).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DAY: u64 = 24 * 3600;
        let secs = self.0.as_secs();
        if secs >= DAY && secs.is_multiple_of(DAY) && self.0.subsec_nanos() == 0 {
            write!(f, "{}days", secs / DAY)
        } else {
            write!(f, "{}", humantime::format_duration(self.0))
        }
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Now, in whole seconds since the Unix epoch (0 if the clock is before it).
pub fn now_secs() -> u64 {
    now_ms() / 1000
}

/// A millisecond Unix time as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: u64) -> String {
    rfc3339_at(UNIX_EPOCH + Duration::from_millis(ms))
}

/// A point in time as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_at(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!("64MiB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("100KB".parse::<ByteSize>(), Ok(ByteSize(100_000)));
        assert_eq!("42".parse::<ByteSize>(), Ok(ByteSize(42)));
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn byte_sizes_deserialize_from_numbers_and_text() {
        #[derive(Deserialize)]
        struct Holder {
            size: ByteSize,
        }
        let n: Holder = toml::from_str("size = 42").unwrap();
        assert_eq!(n.size, ByteSize(42));
        let t: Holder = toml::from_str("size = \"2KiB\"").unwrap();
        assert_eq!(t.size, ByteSize(2048));
        assert!(toml::from_str::<Holder>("size = \"2XB\"").is_err());
    }

    #[test]
    fn spans_parse_and_show_as_operators_write_them() {
        assert_eq!("10s".parse::<Span>(), Ok(Span(Duration::from_secs(10))));
        assert_eq!(
            "1h 30m".parse::<Span>(),
            Ok(Span(Duration::from_secs(5400)))
        );
        assert!("soon".parse::<Span>().is_err());
        assert_eq!(
            Span(Duration::from_secs(365 * 24 * 3600)).to_string(),
            "365days"
        );
        assert_eq!(Span(Duration::from_secs(900)).to_string(), "15m");
        let round_trip: Span = Span(Duration::from_secs(90)).to_string().parse().unwrap();
        assert_eq!(round_trip, Span(Duration::from_secs(90)));
        #[derive(Deserialize)]
        struct Holder {
            span: Span,
        }
        let held: Holder = toml::from_str("span = \"30days\"").unwrap();
        assert_eq!(held.span, Span(Duration::from_secs(30 * 24 * 3600)));
    }

    #[test]
    fn times_show_as_rfc3339_utc_with_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert!(now_ms() > 1_700_000_000_000);
        let (before, secs) = (now_ms() / 1000, now_secs());
        assert!(secs >= before && secs <= now_ms() / 1000);
    }
}
