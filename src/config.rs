//! [`FreqLimitParams`] from text: the compact form `"20/min burst 3"` through
//! [`FromStr`], and config files through serde (feature `serde`).
//!
//! Both go through [`FreqLimitParams::try_new`], so a value that parses is held
//! to the same rules, with the same [`ParamsError`], as one built in code.
//!
//! # The compact form
//!
//! `<limit>/<period>`, then optionally `burst <n>` (or `burst=<n>`); `burst`
//! defaults to 1. The period is a unit alone (`s`, `sec`, `second`, `m`, `min`,
//! `minute`, `h`, `hour`, `d`, `day`, plurals too), meaning one of it, or a
//! duration such as `10s`, `500ms`, `1m 30s` or `1h30m` (the
//! [`humantime`](https://docs.rs/humantime) syntax). Spaces around the parts
//! and the case of the words do not matter.
//!
//! ```
//! use std::time::Duration;
//! use tower_freqlimit::FreqLimitParams;
//!
//! let params: FreqLimitParams = "20/min burst 3".parse()?;
//! assert_eq!(params, FreqLimitParams::per_minute(20).with_burst(3));
//!
//! let params: FreqLimitParams = "5 / 10s".parse()?;
//! assert_eq!(params, FreqLimitParams::new(5, Duration::from_secs(10), 1));
//!
//! // Displayed in the same form, so it round-trips.
//! assert_eq!(params.to_string(), "5/10s");
//! # Ok::<(), tower_freqlimit::ParseParamsError>(())
//! ```
//!
//! # Config files (feature `serde`)
//!
//! A table `{ limit, period, burst }` (`burst` optional, unknown fields
//! refused), where `period` is a duration string (`"1m"`, `"500ms"`) or a
//! number of seconds; or the compact form as one string:
//!
//! ```toml
//! [limits]
//! per_chat = { limit = 1, period = "1s" }
//! per_group = { limit = 20, period = "1m", burst = 3 }
//! api = "100/s burst 20"
//! ```
//!
//! Serialization writes the table, with the period as a duration string.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::params::{FreqLimitParams, ParamsError};

/// Why text did not give [`FreqLimitParams`].
///
/// ```
/// use tower_freqlimit::{FreqLimitParams, ParamsError, ParseParamsError};
///
/// let err = "0/s".parse::<FreqLimitParams>().unwrap_err();
/// assert_eq!(err, ParseParamsError::Invalid(ParamsError::LimitZero));
/// assert_eq!(err.to_string(), "limit must be greater than 0");
///
/// let err = "20 per minute".parse::<FreqLimitParams>().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "expected `<limit>/<period> [burst <n>]`, such as `20/min burst 3`"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseParamsError {
    /// Not of the form `<limit>/<period> [burst <n>]`.
    Syntax,
    /// `limit` or `burst` (the field named) is not a whole number from 0 to
    /// 4 294 967 295.
    Number(&'static str),
    /// The period is neither a unit nor a duration; the duration parser's
    /// message.
    Period(String),
    /// Parsed, and refused by [`FreqLimitParams::try_new`].
    Invalid(ParamsError),
}

impl fmt::Display for ParseParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax => {
                f.write_str("expected `<limit>/<period> [burst <n>]`, such as `20/min burst 3`")
            }
            Self::Number(field) => write!(f, "{field} must be a whole number (a u32)"),
            Self::Period(why) => write!(
                f,
                "period must be a unit (s, min, h, day) or a duration such as `10s` or `1m 30s`: {why}"
            ),
            Self::Invalid(err) => fmt::Display::fmt(err, f),
        }
    }
}

impl std::error::Error for ParseParamsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Invalid(err) => Some(err),
            _ => None,
        }
    }
}

impl From<ParamsError> for ParseParamsError {
    fn from(err: ParamsError) -> Self {
        Self::Invalid(err)
    }
}

impl FromStr for FreqLimitParams {
    type Err = ParseParamsError;

    /// Parses the compact form (see [the module docs](crate::config)).
    fn from_str(text: &str) -> Result<Self, ParseParamsError> {
        let (limit, rest) = text.split_once('/').ok_or(ParseParamsError::Syntax)?;
        let limit = number(limit, "limit")?;
        let lower = rest.to_ascii_lowercase();
        let (period, burst) = match lower.find("burst") {
            Some(at) => {
                let burst = lower[at + "burst".len()..].trim_start();
                let burst = burst.strip_prefix('=').unwrap_or(burst);
                (&lower[..at], number(burst, "burst")?)
            }
            None => (lower.as_str(), 1),
        };
        let period = parse_period(period.trim().trim_end_matches(',').trim_end())?;
        Ok(Self::try_new(limit, period, burst)?)
    }
}

/// The compact form, which [`FromStr`] reads back: `20/1m burst 3`, with
/// `burst` left out when it is 1.
impl fmt::Display for FreqLimitParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.limit(),
            humantime::format_duration(self.period())
        )?;
        if self.burst() != 1 {
            write!(f, " burst {}", self.burst())?;
        }
        Ok(())
    }
}

fn number(text: &str, field: &'static str) -> Result<u32, ParseParamsError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ParseParamsError::Syntax);
    }
    text.parse().map_err(|_| ParseParamsError::Number(field))
}

/// A unit alone (one of it) or a humantime duration; `text` is lowercase.
fn parse_period(text: &str) -> Result<Duration, ParseParamsError> {
    const MINUTE: u64 = 60;
    const HOUR: u64 = 60 * MINUTE;
    let unit = match text {
        "" => return Err(ParseParamsError::Syntax),
        "ms" | "msec" | "millisecond" | "milliseconds" => return Ok(Duration::from_millis(1)),
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => MINUTE,
        "h" | "hr" | "hour" | "hours" => HOUR,
        "d" | "day" | "days" => 24 * HOUR,
        duration => {
            return humantime::parse_duration(duration)
                .map_err(|err| ParseParamsError::Period(err.to_string()));
        }
    };
    Ok(Duration::from_secs(unit))
}

#[cfg(feature = "serde")]
mod serde_impls {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, MapAccess, Visitor};
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::params::{FreqLimitParams, ParamsError};

    /// `{ limit, period, burst }` with the period as a duration string.
    impl Serialize for FreqLimitParams {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut table = serializer.serialize_struct("FreqLimitParams", 3)?;
            table.serialize_field("limit", &self.limit())?;
            let period = humantime::format_duration(self.period()).to_string();
            table.serialize_field("period", &period)?;
            table.serialize_field("burst", &self.burst())?;
            table.end()
        }
    }

    /// A table `{ limit, period, burst }` or the compact form as a string;
    /// validated like [`FreqLimitParams::try_new`].
    impl<'de> Deserialize<'de> for FreqLimitParams {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(ParamsVisitor)
        }
    }

    const FIELDS: &[&str] = &["limit", "period", "burst"];

    struct ParamsVisitor;

    impl<'de> Visitor<'de> for ParamsVisitor {
        type Value = FreqLimitParams;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(
                "a rate limit: a table { limit, period, burst } or a string such as \"20/min burst 3\"",
            )
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<FreqLimitParams, E> {
            text.parse().map_err(E::custom)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FreqLimitParams, A::Error> {
            let (mut limit, mut period, mut burst) = (None, None, None);
            while let Some(field) = map.next_key::<String>()? {
                match field.as_str() {
                    "limit" => set(&mut limit, map.next_value()?, "limit")?,
                    "period" => set(&mut period, map.next_value::<Period>()?.0, "period")?,
                    "burst" => set(&mut burst, map.next_value()?, "burst")?,
                    other => return Err(de::Error::unknown_field(other, FIELDS)),
                }
            }
            let limit = limit.ok_or_else(|| de::Error::missing_field("limit"))?;
            let period = period.ok_or_else(|| de::Error::missing_field("period"))?;
            FreqLimitParams::try_new(limit, period, burst.unwrap_or(1)).map_err(de::Error::custom)
        }
    }

    fn set<T, E: de::Error>(slot: &mut Option<T>, value: T, field: &'static str) -> Result<(), E> {
        if slot.replace(value).is_some() {
            return Err(E::duplicate_field(field));
        }
        Ok(())
    }

    /// A period: a duration string, or a number of seconds.
    struct Period(Duration);

    impl<'de> Deserialize<'de> for Period {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_any(PeriodVisitor)
        }
    }

    struct PeriodVisitor;

    impl Visitor<'_> for PeriodVisitor {
        type Value = Period;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"1m\" or \"500ms\", or a number of seconds")
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<Period, E> {
            super::parse_period(&text.trim().to_ascii_lowercase())
                .map(Period)
                .map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Period, E> {
            Ok(Period(Duration::from_secs(secs)))
        }

        fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Period, E> {
            u64::try_from(secs)
                .map(|secs| Period(Duration::from_secs(secs)))
                .map_err(|_| E::custom(ParamsError::PeriodZero))
        }

        fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Period, E> {
            if !secs.is_finite() {
                return Err(E::custom(ParamsError::PeriodNotFinite));
            }
            if secs <= 0.0 {
                return Err(E::custom(ParamsError::PeriodZero));
            }
            Duration::try_from_secs_f64(secs)
                .map(Period)
                .map_err(|_| E::custom(ParamsError::OutOfRange))
        }
    }
}
