//! Event time: UTC epoch milliseconds, and the whole-day arithmetic the models use.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Milliseconds in a day.
pub const MS_PER_DAY: i64 = 86_400_000;

/// The earliest timestamp accepted: 1990-01-01T00:00:00Z.
pub const EARLIEST_MS: i64 = 631_152_000_000;

/// A UTC instant with millisecond precision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// From epoch milliseconds.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// Epoch milliseconds.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// Epoch microseconds (Arrow `TIMESTAMP` columns).
    pub const fn micros(self) -> i64 {
        self.0.saturating_mul(1000)
    }

    /// The UTC calendar day, counted from 1970-01-01.
    pub const fn day(self) -> i32 {
        self.0.div_euclid(MS_PER_DAY) as i32
    }

    /// 00:00 UTC of day `day`.
    pub const fn start_of_day(day: i32) -> Self {
        Self(day as i64 * MS_PER_DAY)
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        Self(Utc::now().timestamp_millis())
    }

    /// Parses RFC 3339 (`2026-11-23T10:15:00Z`, with offset or fraction).
    pub fn parse_rfc3339(text: &str) -> Option<Self> {
        DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| Self(t.timestamp_millis()))
    }

    /// Parses a bare date (`2026-11-23`) as 00:00 UTC, or RFC 3339.
    pub fn parse_date_or_rfc3339(text: &str) -> Option<Self> {
        Self::parse_rfc3339(text).or_else(|| {
            NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| Self(t.and_utc().timestamp_millis()))
        })
    }

    /// RFC 3339 with milliseconds, `Z` suffix.
    pub fn to_rfc3339(self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.0)
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        let jan1 = Timestamp::parse_date_or_rfc3339("1997-01-01").unwrap();
        let sep30 = Timestamp::parse_date_or_rfc3339("1997-09-30").unwrap();
        assert_eq!(sep30.day() - jan1.day(), 272, "the BTYD literature's T for CDNOW");
        let late = Timestamp::parse_rfc3339("1997-01-01T23:59:59+00:00").unwrap();
        assert_eq!(late.day(), jan1.day());
        let shifted = Timestamp::parse_rfc3339("1997-01-02T00:30:00+02:00").unwrap();
        assert_eq!(shifted.day(), jan1.day(), "offsets are converted to UTC first");
        assert_eq!(Timestamp::from_millis(-1).day(), -1);
    }

    #[test]
    fn round_trips_through_rfc3339() {
        let t = Timestamp::from_millis(1_795_000_000_123);
        assert_eq!(Timestamp::parse_rfc3339(&t.to_rfc3339()), Some(t));
    }
}
