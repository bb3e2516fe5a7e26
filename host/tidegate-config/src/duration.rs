//! Human durations in config files: `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"`; `"0"` disables a
//! timeout.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A duration stored as milliseconds, written in config as `"5s"`, `"250ms"`, `"2m"` or `"1h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Millis(pub u64);

impl Millis {
    /// The duration, or `None` when it is zero (zero disables a timeout).
    pub fn get(self) -> Option<Duration> {
        (self.0 > 0).then(|| Duration::from_millis(self.0))
    }

    /// The duration; zero stays zero.
    pub fn duration(self) -> Duration {
        Duration::from_millis(self.0)
    }
}

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Millis, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. \"250ms\", \"5s\", \"2m\""))?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("invalid duration unit {other:?} in {s:?}")),
    };
    n.checked_mul(factor)
        .map(Millis)
        .ok_or_else(|| format!("duration {s:?} is too large"))
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Millis(n)),
            Raw::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Millis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", self.0))
    }
}
