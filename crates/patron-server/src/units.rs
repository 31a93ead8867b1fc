//! One grammar for the quantities on the command line, so that a value typed
//! for one command means the same on every other:
//!
//! - a **duration** is `250ms`, `10s`, `5m`, `1h`, `35d` or a bare number of
//!   seconds (`30`, `0.5`);
//! - a **size** is `512KiB`, `16MiB`, `1GiB` (or `KB`/`MB`/`GB`, powers of ten)
//!   or a bare number of bytes;
//! - a **listen address** is `host:port` with an IP address or `localhost`;
//! - a **server URL** is `http://host:port` (a bare `host:port` means the same).
//!
//! These are clap value parsers: a bad value is refused before the command
//! starts, with the flag's name and the accepted forms in the message.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Why a command-line value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum UnitError {
    #[error("{0:?} is not a duration: use 250ms, 10s, 5m, 1h, 35d or a number of seconds")]
    NotADuration(String),
    #[error("{0:?} is not a size: use a number of bytes or 512KiB, 16MiB, 1GiB (KB, MB, GB: powers of ten)")]
    NotASize(String),
    #[error("{0:?} must be more than zero")]
    Zero(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} is not a listen address: use host:port, for example 127.0.0.1:8080")]
    NotAnAddress(String),
    #[error("{0:?} is not a server URL: use http://host:port, for example http://127.0.0.1:8080")]
    NotAUrl(String),
    #[error("{0:?} is not a deduplication horizon: use whole days such as 35d, or \"forever\"")]
    NotAHorizon(String),
    #[error("{0:?}: only http:// is supported by this client (put a TLS-terminating proxy in front for https)")]
    UnsupportedScheme(String),
}

/// Splits `12.5MiB` into `(12.5, "MiB")`.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some((value, unit.trim()))
}

/// A duration that may be zero (`0s` turns a warm-up off).
pub(crate) fn duration_or_zero(text: &str) -> Result<Duration, UnitError> {
    let text = text.trim();
    let not_a_duration = || UnitError::NotADuration(text.to_owned());
    let (value, unit) = number_and_unit(text).ok_or_else(not_a_duration)?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(not_a_duration()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| UnitError::TooLarge(text.to_owned()))
}

/// A duration of more than zero.
pub(crate) fn duration(text: &str) -> Result<Duration, UnitError> {
    let parsed = duration_or_zero(text)?;
    if parsed.is_zero() {
        return Err(UnitError::Zero(text.trim().to_owned()));
    }
    Ok(parsed)
}

/// How long event ids are remembered: whole days (`None`: forever).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DedupHorizon(pub(crate) Option<u32>);

/// The horizon of `serve`, also used by the commands that open a data
/// directory without the flag (`demo`, `query --data-dir`).
pub(crate) const DEFAULT_HORIZON: DedupHorizon = DedupHorizon(Some(patron_state::DEFAULT_DEDUP_HORIZON_DAYS));

/// A deduplication horizon: `forever`, or a duration of at least one day in
/// whole days (`35d`, `840h`).
pub(crate) fn dedup_horizon(text: &str) -> Result<DedupHorizon, UnitError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") {
        return Ok(DedupHorizon(None));
    }
    let days = duration(text)?.as_secs_f64() / 86_400.0;
    if days < 1.0 || days.fract() != 0.0 {
        return Err(UnitError::NotAHorizon(text.to_owned()));
    }
    u32::try_from(days as u64).map(|d| DedupHorizon(Some(d))).map_err(|_| UnitError::TooLarge(text.to_owned()))
}

/// A size in bytes, more than zero.
pub(crate) fn size(text: &str) -> Result<u64, UnitError> {
    let text = text.trim();
    let not_a_size = || UnitError::NotASize(text.to_owned());
    let (value, unit) = number_and_unit(text).ok_or_else(not_a_size)?;
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kib" | "k" => 1024.0,
        "mib" | "m" => 1024.0 * 1024.0,
        "gib" | "g" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => return Err(not_a_size()),
    };
    let bytes = (value * scale).round();
    if bytes < 1.0 {
        return Err(UnitError::Zero(text.to_owned()));
    }
    if bytes >= u64::MAX as f64 {
        return Err(UnitError::TooLarge(text.to_owned()));
    }
    Ok(bytes as u64)
}

/// A size that must fit in memory (`usize`).
pub(crate) fn memory_size(text: &str) -> Result<usize, UnitError> {
    usize::try_from(size(text)?).map_err(|_| UnitError::TooLarge(text.trim().to_owned()))
}

/// A listen address: `host:port` with an IP address or `localhost`.
pub(crate) fn listen_address(text: &str) -> Result<SocketAddr, UnitError> {
    let text = text.trim();
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = text.strip_prefix("localhost:").and_then(|p| p.parse::<u16>().ok());
    port.map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
        .ok_or_else(|| UnitError::NotAnAddress(text.to_owned()))
}

/// A server's base URL, normalised to `http://host:port` without a trailing slash.
pub(crate) fn server_url(text: &str) -> Result<String, UnitError> {
    let text = text.trim().trim_end_matches('/');
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some((_, _)) => return Err(UnitError::UnsupportedScheme(text.to_owned())),
        None => text,
    };
    let valid_host = |host: &str| {
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
    };
    let valid = match rest.rsplit_once(':') {
        Some((host, port)) => valid_host(host) && port.parse::<u16>().is_ok(),
        None => valid_host(rest),
    };
    if !valid {
        return Err(UnitError::NotAUrl(text.to_owned()));
    }
    Ok(format!("http://{rest}"))
}

/// A date (`YYYY-MM-DD`, or an RFC 3339 time) as days since 1970-01-01 (UTC).
pub(crate) fn day(text: &str) -> Result<i32, String> {
    patron_model::Timestamp::parse_date_or_rfc3339(text)
        .map(patron_model::Timestamp::day)
        .ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD)"))
}

/// A source named by `--source` (`segment`, `ga4`, `shopify`, `snowplow`).
pub(crate) fn source(text: &str) -> Result<patron_sources::Source, String> {
    patron_sources::Source::parse(text).ok_or_else(|| {
        let known: Vec<&str> = patron_sources::Source::ALL.iter().map(|s| s.as_str()).collect();
        format!("{text:?} is not one of {}", known.join(", "))
    })
}

/// A CSV delimiter named by `--delimiter`: one ASCII character, or `tab`.
pub(crate) fn delimiter(text: &str) -> Result<u8, String> {
    match text {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        one if one.len() == 1 && one.is_ascii() && !one.as_bytes()[0].is_ascii_alphanumeric() => Ok(one.as_bytes()[0]),
        other => Err(format!("{other:?} is not a delimiter: give one character such as , ; | or the word tab")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_one_form_everywhere() {
        assert_eq!(duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration_or_zero("0s"), Ok(Duration::ZERO));
        assert_eq!(duration("0s"), Err(UnitError::Zero("0s".into())));
        assert_eq!(duration("5 parsecs"), Err(UnitError::NotADuration("5 parsecs".into())));
        assert_eq!(duration("-3s"), Err(UnitError::NotADuration("-3s".into())));
        assert_eq!(duration("1e400"), Err(UnitError::NotADuration("1e400".into())));
        assert!(matches!(duration("99999999999999999999999h"), Err(UnitError::TooLarge(_))));
    }

    #[test]
    fn dedup_horizons_are_whole_days_or_forever() {
        assert_eq!(duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert_eq!(dedup_horizon("35d"), Ok(DedupHorizon(Some(35))));
        assert_eq!(dedup_horizon("48h"), Ok(DedupHorizon(Some(2))));
        assert_eq!(dedup_horizon("Forever"), Ok(DedupHorizon(None)));
        assert_eq!(dedup_horizon("12h"), Err(UnitError::NotAHorizon("12h".into())));
        assert_eq!(dedup_horizon("1.5d"), Err(UnitError::NotAHorizon("1.5d".into())));
        assert_eq!(dedup_horizon("0d"), Err(UnitError::Zero("0d".into())));
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert_eq!(size("16mib"), Ok(16 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("512KiB"), Ok(512 << 10));
        assert_eq!(size("2MB"), Ok(2_000_000));
        assert_eq!(size("1048576"), Ok(1 << 20));
        assert_eq!(size("1.5KiB"), Ok(1536));
        assert_eq!(size("0"), Err(UnitError::Zero("0".into())));
        assert_eq!(size("lots"), Err(UnitError::NotASize("lots".into())));
        assert_eq!(size("3 furlongs"), Err(UnitError::NotASize("3 furlongs".into())));
        assert!(matches!(size("99999999999GiB"), Err(UnitError::TooLarge(_))));
    }

    #[test]
    fn addresses_and_urls_have_one_spelling() {
        assert_eq!(listen_address("127.0.0.1:8080"), Ok("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(listen_address("localhost:5433"), Ok("127.0.0.1:5433".parse().unwrap()));
        assert_eq!(listen_address("[::1]:9"), Ok("[::1]:9".parse().unwrap()));
        assert!(listen_address("8080").is_err());
        assert!(listen_address("127.0.0.1").is_err());
        assert_eq!(server_url("http://127.0.0.1:8080/"), Ok("http://127.0.0.1:8080".into()));
        assert_eq!(server_url("127.0.0.1:8080"), Ok("http://127.0.0.1:8080".into()));
        assert_eq!(server_url("localhost"), Ok("http://localhost".into()));
        assert!(matches!(server_url("https://example.com"), Err(UnitError::UnsupportedScheme(_))));
        assert!(server_url("http://a b:80").is_err());
        assert!(server_url("http://host:port").is_err());
    }
}
