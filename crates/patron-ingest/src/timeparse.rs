//! Timestamps in tabular files: an explicit strftime format, or one detected
//! from the first value and then used for every row (so a file is never read
//! half as day/month and half as month/day).

use chrono::{NaiveDate, NaiveDateTime};
use patron_model::Timestamp;

/// Formats tried, in order, when no `--time-format` is given. Month-first
/// comes before day-first for slashed dates (the common export convention);
/// pass `--time-format` for day-first files.
const CANDIDATES: &[&str] = &[
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
    "%Y%m%d",
    "%m/%d/%Y %H:%M:%S",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%d.%m.%Y %H:%M:%S",
    "%d.%m.%Y",
];

/// How a column of timestamps is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// RFC 3339 with offset.
    Rfc3339,
    /// Integer epoch milliseconds.
    EpochMillis,
    /// Integer epoch seconds.
    EpochSeconds,
    /// A strftime pattern, read as UTC.
    Pattern(String),
    /// Excel's serial dates: days (with a fraction for the time of day)
    /// since 1899-12-30, as spreadsheets store them (`--time-format excel`).
    ExcelSerial,
}

/// 1899-12-30T00:00:00Z, day 0 of Excel's serial dates, in Unix milliseconds.
const EXCEL_EPOCH_MS: i64 = -2_209_161_600_000;

impl TimeFormat {
    /// The format `--time-format` names: `excel`, or a strftime pattern.
    pub fn named(name: &str) -> Self {
        if name.trim().eq_ignore_ascii_case("excel") { Self::ExcelSerial } else { Self::Pattern(name.to_owned()) }
    }

    /// Picks the format that reads `sample`.
    pub fn detect(sample: &str) -> Option<Self> {
        let s = sample.trim();
        if Timestamp::parse_rfc3339(s).is_some() {
            return Some(Self::Rfc3339);
        }
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.len() {
                8 => Some(Self::Pattern("%Y%m%d".into())),
                9 | 10 => Some(Self::EpochSeconds),
                12 | 13 => Some(Self::EpochMillis),
                _ => None,
            };
        }
        CANDIDATES.iter().find(|f| parse_pattern(s, f).is_some()).map(|f| Self::Pattern((*f).to_owned()))
    }

    /// The other reading of a slashed date (`%m/%d/…` and `%d/%m/…`), if this
    /// is one: both read `01/12/2010`, as different days.
    pub fn twin(&self) -> Option<Self> {
        let Self::Pattern(p) = self else { return None };
        let swapped = if let Some(rest) = p.strip_prefix("%m/%d/") {
            format!("%d/%m/{rest}")
        } else {
            format!("%m/%d/{}", p.strip_prefix("%d/%m/")?)
        };
        Some(Self::Pattern(swapped))
    }

    /// Whether this reads the month first (else the day, for a slashed date).
    pub fn month_first(&self) -> bool {
        matches!(self, Self::Pattern(p) if p.starts_with("%m/"))
    }

    /// Reads one value.
    pub fn parse(&self, text: &str) -> Option<Timestamp> {
        let s = text.trim();
        match self {
            Self::Rfc3339 => Timestamp::parse_rfc3339(s),
            Self::EpochMillis => s.parse().ok().map(Timestamp::from_millis),
            Self::EpochSeconds => s.parse::<i64>().ok().and_then(|v| v.checked_mul(1000)).map(Timestamp::from_millis),
            Self::Pattern(p) => parse_pattern(s, p),
            Self::ExcelSerial => {
                let days: f64 = s.parse().ok().filter(|d: &f64| d.is_finite() && *d >= 0.0 && *d < 2_958_466.0)?;
                Some(Timestamp::from_millis(EXCEL_EPOCH_MS + (days * 86_400_000.0).round() as i64))
            }
        }
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Rfc3339 => "RFC 3339".into(),
            Self::EpochMillis => "epoch milliseconds".into(),
            Self::EpochSeconds => "epoch seconds".into(),
            Self::Pattern(p) => format!("{p:?}"),
            Self::ExcelSerial => "Excel serial days".into(),
        }
    }
}

fn parse_pattern(s: &str, pattern: &str) -> Option<Timestamp> {
    if let Ok(t) = NaiveDateTime::parse_from_str(s, pattern) {
        return Some(Timestamp::from_millis(t.and_utc().timestamp_millis()));
    }
    let date = NaiveDate::parse_from_str(s, pattern).ok()?;
    Some(Timestamp::from_millis(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_formats_of_real_exports() {
        let cases = [
            ("19970101", "1997-01-01T00:00:00.000Z"),
            ("2010-12-01 08:26:00", "2010-12-01T08:26:00.000Z"),
            ("12/1/2010 8:26", "2010-12-01T08:26:00.000Z"),
            ("2026-11-23T10:15:00Z", "2026-11-23T10:15:00.000Z"),
            ("2026-11-23T10:15:00", "2026-11-23T10:15:00.000Z"),
            ("1795000000000", "2026-11-18T11:06:40.000Z"),
        ];
        for (input, want) in cases {
            let f = TimeFormat::detect(input).unwrap_or_else(|| panic!("{input}"));
            assert_eq!(f.parse(input).unwrap().to_rfc3339(), want, "{input} as {}", f.describe());
        }
        assert!(TimeFormat::detect("next tuesday").is_none());
    }

    #[test]
    fn a_slashed_date_has_a_twin_read_the_other_way() {
        let month_first = TimeFormat::detect("12/1/2010 8:26").unwrap();
        let day_first = month_first.twin().unwrap();
        assert!(month_first.month_first() && !day_first.month_first());
        assert_eq!(day_first.parse("12/1/2010 8:26").unwrap().to_rfc3339(), "2010-01-12T08:26:00.000Z");
        assert_eq!(day_first.twin(), Some(month_first));
        assert_eq!(TimeFormat::detect("13/01/2010"), Some(TimeFormat::Pattern("%d/%m/%Y".into())));
        assert_eq!(TimeFormat::Rfc3339.twin(), None);
    }

    /// Issue 20: Excel serial dates could not be expressed at all.
    #[test]
    fn regression_excel_serial_dates_are_read_with_time_format_excel() {
        let f = TimeFormat::named("Excel");
        assert_eq!(f.parse("40513").unwrap().to_rfc3339(), "2010-12-01T00:00:00.000Z");
        assert_eq!(f.parse("40513.35").unwrap().to_rfc3339(), "2010-12-01T08:24:00.000Z");
        assert!(f.parse("-1").is_none() && f.parse("soon").is_none());
        assert_eq!(TimeFormat::named("%d/%m/%Y"), TimeFormat::Pattern("%d/%m/%Y".into()));
    }

    #[test]
    fn explicit_day_first_pattern() {
        let f = TimeFormat::Pattern("%d/%m/%Y".into());
        assert_eq!(f.parse("01/12/2010").unwrap().to_rfc3339(), "2010-12-01T00:00:00.000Z");
        assert!(f.parse("2010-12-01").is_none());
    }
}
