//! [`Rate`]: how fast a bucket refills, and its `"100/s"` spelling.

use std::fmt;
use std::time::Duration;

/// A refill rate: `count` tokens every `period` (`"100/s"` is 100 per 1 s,
/// `"600/m"` is 600 per 60 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per `period`; [`Rate::parse`] never yields 0.
    pub count: u32,
    /// The period `count` tokens are spread over.
    pub period: Duration,
}

/// The shape error, kept in one place so every malformed spelling reads the
/// same to the operator.
const SHAPE: &str = "rate must look like \"100/s\" or \"600/m\"";

impl Rate {
    /// Parses `"100/s"`, `"600/m"`, `"10/h"`, `"5/d"`, and nginx's spelling
    /// with an `r` (`"100r/s"`). Surrounding whitespace is ignored.
    ///
    /// Errors are plain words for the operator (the caller adds where the
    /// value came from): `rate must look like "100/s" or "600/m"`,
    /// `rate must be above 0`, `rate must be at most 4294967295 per period`.
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text.trim().split_once('/').ok_or(SHAPE)?;
        let count = count.strip_suffix('r').unwrap_or(count);
        // `u32::from_str` takes a leading `+`; a rate is digits only.
        if count.is_empty() || !count.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SHAPE.into());
        }
        let period = match unit {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(60 * 60),
            "d" => Duration::from_secs(24 * 60 * 60),
            _ => return Err(SHAPE.into()),
        };
        // Digits only, so the one way to fail is overflow.
        let count: u32 = count
            .parse()
            .map_err(|_| format!("rate must be at most {} per period", u32::MAX))?;
        if count == 0 {
            return Err("rate must be above 0".into());
        }
        Ok(Rate { count, period })
    }

    /// Tokens per second (infinite for a zero `period`).
    pub fn per_second(&self) -> f64 {
        f64::from(self.count) / self.period.as_secs_f64()
    }

    /// The time between two tokens (`period / count`), at least 1 ns; a
    /// `count` of 0 is taken as 1.
    pub fn interval(&self) -> Duration {
        (self.period / self.count.max(1)).max(Duration::from_nanos(1))
    }
}

/// `100/s`, `600/m`, `10/h`, `5/d`; any other period as `{count}/{period:?}`.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            _ if self.period.subsec_nanos() != 0 => None,
            1 => Some("s"),
            60 => Some("m"),
            3600 => Some("h"),
            86400 => Some("d"),
            _ => None,
        };
        match unit {
            Some(unit) => write!(f, "{}/{unit}", self.count),
            None => write!(f, "{}/{:?}", self.count, self.period),
        }
    }
}
