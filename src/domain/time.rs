//! Points in time as the domain sees them: milliseconds since the Unix epoch, UTC.
//!
//! Owns arithmetic and ISO 8601 formatting. It must not read the clock: callers pass `now` in,
//! so every decision is deterministic and testable.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The instant `millis` milliseconds after the epoch.
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the epoch (JWT `iat`/`exp`).
    pub const fn seconds(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// This instant moved forward by `duration` (saturating).
    pub fn plus(self, duration: Duration) -> Timestamp {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(millis))
    }

    /// How long after `earlier` this instant is (zero when it is not after it).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// ISO 8601 / RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T07:03:56.123Z`.
    pub fn to_iso8601(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            Ok(moment) => {
                let text = moment.format(&Rfc3339).unwrap_or_default();
                // Rfc3339 prints as many fraction digits as needed; the contract shows
                // milliseconds, so normalise to exactly three.
                normalise_fraction(&text)
            }
            Err(_) => String::from("9999-12-31T23:59:59.999Z"),
        }
    }

    /// Parses an RFC 3339 instant.
    pub fn parse_iso8601(text: &str) -> Option<Timestamp> {
        let moment = OffsetDateTime::parse(text, &Rfc3339).ok()?;
        i64::try_from(moment.unix_timestamp_nanos() / 1_000_000)
            .ok()
            .map(Timestamp)
    }
}

fn normalise_fraction(text: &str) -> String {
    let body = text.trim_end_matches('Z');
    let (seconds, fraction) = match body.split_once('.') {
        Some((seconds, fraction)) => (seconds, fraction),
        None => (body, ""),
    };
    let mut millis: String = fraction.chars().take(3).collect();
    while millis.len() < 3 {
        millis.push('0');
    }
    format!("{seconds}.{millis}Z")
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}", self.to_iso8601())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.to_iso8601())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_iso8601_with_milliseconds() {
        assert_eq!(
            Timestamp::from_millis(0).to_iso8601(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_795_000_000_123).to_iso8601(),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(1_795_000_000_100).to_iso8601(),
            "2026-11-18T11:06:40.100Z"
        );
    }

    #[test]
    fn parses_what_it_prints() {
        let moment = Timestamp::from_millis(1_795_000_000_123);
        assert_eq!(Timestamp::parse_iso8601(&moment.to_iso8601()), Some(moment));
    }

    #[test]
    fn arithmetic_saturates() {
        let moment = Timestamp::from_millis(1000);
        assert_eq!(moment.plus(Duration::from_secs(2)).millis(), 3000);
        assert_eq!(moment.since(Timestamp::from_millis(5000)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_millis(i64::MAX)
                .plus(Duration::from_secs(1))
                .millis(),
            i64::MAX
        );
    }
}
