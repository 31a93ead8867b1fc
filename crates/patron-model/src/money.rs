//! Money: exact decimal parsing, integer minor units, currencies and conversion.
//!
//! Amounts arrive as JSON numbers or decimal strings. They are parsed as exact
//! decimals, line totals (price × quantity) are computed exactly and rounded
//! once to minor units (half to even), and the result is converted to the
//! engine's base currency with the configured rate table. Sums of minor units
//! are then exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::quote::preview;

/// An exact decimal: `mantissa × 10^(−scale)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    /// Signed digits.
    pub mantissa: i128,
    /// Digits after the decimal point.
    pub scale: u32,
}

/// Why a decimal did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// Empty or not a number (the text, quoted and shortened).
    #[error("{0} is not a decimal number")]
    NotANumber(String),
    /// Too many digits or too large an exponent to hold exactly (the text, quoted and shortened).
    #[error("{0} is out of range")]
    OutOfRange(String),
}

const MAX_SCALE: u32 = 18;

impl Decimal {
    /// Parses `[-+]digits[.digits][e[-+]digits]`. `NaN`, `inf` and anything
    /// else non-finite are rejected.
    pub fn parse(text: &str) -> Result<Self, DecimalError> {
        let bad = || DecimalError::NotANumber(preview(text));
        let range = || DecimalError::OutOfRange(preview(text));
        let trimmed = text.trim();
        let (negative, body) = match trimmed.as_bytes().first() {
            Some(b'-') => (true, &trimmed[1..]),
            Some(b'+') => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let (number, exponent) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], body[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (body, 0),
        };
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        // Accumulate the digits without allocating; more than 30 significant
        // digits cannot be held exactly.
        let (mut mantissa, mut significant) = (0i128, 0usize);
        for b in int_part.bytes().chain(frac_part.bytes()) {
            if !b.is_ascii_digit() {
                return Err(bad());
            }
            if significant > 0 || b != b'0' {
                significant += 1;
                if significant > 30 {
                    return Err(range());
                }
                mantissa = mantissa * 10 + i128::from(b - b'0');
            }
        }
        let mut scale = frac_part.len() as i64 - i64::from(exponent);
        while scale < 0 {
            mantissa = mantissa.checked_mul(10).ok_or_else(range)?;
            scale += 1;
        }
        // Drop trailing zeros so equal values compare equal.
        while scale > 0 && mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        if scale > i64::from(MAX_SCALE) || mantissa.unsigned_abs() > 10u128.pow(30) {
            return Err(range());
        }
        Ok(Self { mantissa: if negative { -mantissa } else { mantissa }, scale: scale as u32 })
    }

    /// Whether the value is below zero.
    pub fn is_negative(&self) -> bool {
        self.mantissa < 0
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The value as `f64` (for counts such as quantities).
    pub fn to_f64(&self) -> f64 {
        self.mantissa as f64 / 10f64.powi(self.scale as i32)
    }

    /// self + other, exactly; `None` on overflow.
    pub fn checked_add(&self, other: &Decimal) -> Option<Decimal> {
        let scale = self.scale.max(other.scale);
        let a = self.mantissa.checked_mul(10i128.checked_pow(scale - self.scale)?)?;
        let b = other.mantissa.checked_mul(10i128.checked_pow(scale - other.scale)?)?;
        Some(Decimal { mantissa: a.checked_add(b)?, scale })
    }

    /// The absolute value.
    pub fn abs(&self) -> Decimal {
        Decimal { mantissa: self.mantissa.abs(), scale: self.scale }
    }

    /// Exact decimal text (`-12.34`), readable by [`Decimal::parse`].
    pub fn to_text(&self) -> String {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let sign = if self.mantissa < 0 { "-" } else { "" };
        if scale == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    }

    /// self × other, exactly; `None` on overflow.
    pub fn checked_mul(&self, other: &Decimal) -> Option<Decimal> {
        Some(Decimal { mantissa: self.mantissa.checked_mul(other.mantissa)?, scale: self.scale + other.scale })
    }

    /// Rounds to `exponent` decimal places as an integer count of minor units
    /// (half to even); `None` if it does not fit in i64.
    pub fn to_minor_units(&self, exponent: u32) -> Option<i64> {
        let value = if self.scale <= exponent {
            self.mantissa.checked_mul(10i128.checked_pow(exponent - self.scale)?)?
        } else {
            let divisor = 10i128.checked_pow(self.scale - exponent)?;
            let quotient = self.mantissa.div_euclid(divisor);
            let remainder = self.mantissa.rem_euclid(divisor);
            let twice = remainder * 2;
            if twice > divisor || (twice == divisor && quotient % 2 != 0) { quotient + 1 } else { quotient }
        };
        i64::try_from(value).ok()
    }
}

/// An ISO 4217 currency code with its number of minor-unit digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// ISO 4217 codes Patron knows, with their minor-unit digits.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

impl Currency {
    /// Looks up an ISO 4217 code (case-insensitive).
    pub fn from_code(code: &str) -> Option<Self> {
        let upper = code.trim().to_ascii_uppercase();
        CURRENCIES.iter().find(|(c, _)| *c == upper).map(|(c, e)| {
            let b = c.as_bytes();
            Self { code: [b[0], b[1], b[2]], exponent: *e }
        })
    }

    /// The three-letter code.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.code).unwrap_or("???")
    }

    /// Digits of the minor unit (2 for EUR, 0 for JPY).
    pub fn exponent(&self) -> u32 {
        u32::from(self.exponent)
    }

    /// Minor units in one major unit (100 for EUR, 1 for JPY).
    pub fn minor_per_major(&self) -> f64 {
        10f64.powi(self.exponent.into())
    }

    /// Minor units as a major-unit float (for reporting in base currency).
    pub fn to_major(&self, minor: i64) -> f64 {
        minor as f64 / self.minor_per_major()
    }
}

impl std::fmt::Display for Currency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(code: String) -> Result<Self, String> {
        Self::from_code(&code).ok_or_else(|| format!("unknown currency code {code:?}"))
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.code().to_owned()
    }
}

/// The engine's base currency and how many base units one unit of each other
/// currency is worth. A currency without a rate is rejected, never guessed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurrencyTable {
    /// All money is reported in this currency.
    pub base: Currency,
    /// Base-currency value of one major unit of each other currency.
    #[serde(default)]
    pub rates: BTreeMap<Currency, f64>,
}

impl Default for CurrencyTable {
    fn default() -> Self {
        Self::only(Currency::from_code("EUR").expect("EUR is in the table"))
    }
}

/// Why a configured rate table cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RateError {
    /// A rate that is not a positive finite number.
    #[error("{currency} = {rate}: a rate must be a positive number (the value of one {currency} in the base currency)")]
    NotPositive {
        /// The currency.
        currency: Currency,
        /// The configured rate.
        rate: f64,
    },
    /// A rate for the base currency itself (it is 1 by definition).
    #[error("{currency} is the base currency; it needs no rate")]
    BaseHasRate {
        /// The base currency.
        currency: Currency,
    },
}

impl CurrencyTable {
    /// Checks a configured table: every rate positive and finite, none for the base.
    pub fn check(&self) -> Result<(), RateError> {
        if self.rates.contains_key(&self.base) {
            return Err(RateError::BaseHasRate { currency: self.base });
        }
        match self.rates.iter().find(|(_, rate)| !(rate.is_finite() && **rate > 0.0)) {
            Some((&currency, &rate)) => Err(RateError::NotPositive { currency, rate }),
            None => Ok(()),
        }
    }

    /// A table that accepts only `base`.
    pub fn only(base: Currency) -> Self {
        Self { base, rates: BTreeMap::new() }
    }

    /// Converts an exact amount in `currency` to base-currency minor units.
    pub fn to_base_minor(&self, amount: &Decimal, currency: Currency) -> Result<i64, String> {
        if currency == self.base {
            return amount
                .to_minor_units(self.base.exponent())
                .ok_or_else(|| "amount does not fit in 64-bit minor units".to_owned());
        }
        let rate = self.rates.get(&currency).ok_or_else(|| {
            format!("no exchange rate from {currency} to the base currency {}; add one to [currency.rates]", self.base)
        })?;
        let base = amount.to_f64() * rate * self.base.minor_per_major();
        if !base.is_finite() || base.abs() > 9.0e18 {
            return Err("converted amount is out of range".into());
        }
        Ok(base.round_ties_even() as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_table_is_checked_rate_by_rate() {
        let eur = Currency::from_code("EUR").unwrap();
        let usd = Currency::from_code("USD").unwrap();
        let table = |rates: &[(Currency, f64)]| CurrencyTable { base: eur, rates: rates.iter().copied().collect() };
        assert_eq!(table(&[(usd, 0.92)]).check(), Ok(()));
        for rate in [0.0, -0.92, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(table(&[(usd, rate)]).check(), Err(RateError::NotPositive { currency, .. }) if currency == usd)
            );
        }
        assert_eq!(table(&[(eur, 1.0)]).check(), Err(RateError::BaseHasRate { currency: eur }));
        let converted = table(&[(usd, 0.92)]).to_base_minor(&Decimal::parse("11.77").unwrap(), usd).unwrap();
        assert_eq!(converted, 1083, "11.77 USD at 0.92 is 10.8284 EUR, 1083 cents");
    }

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(Decimal::parse("59.90").unwrap(), Decimal { mantissa: 599, scale: 1 });
        assert_eq!(Decimal::parse("1e3").unwrap(), Decimal { mantissa: 1000, scale: 0 });
        assert_eq!(Decimal::parse("-0.5").unwrap(), Decimal { mantissa: -5, scale: 1 });
        assert_eq!(Decimal::parse(".5").unwrap(), Decimal { mantissa: 5, scale: 1 });
        for bad in ["", "abc", "NaN", "inf", "1.2.3", "--1", "1e", "."] {
            assert!(Decimal::parse(bad).is_err(), "{bad}");
        }
        assert!(Decimal::parse("1e400").is_err());
    }

    #[test]
    fn rounds_half_to_even_into_minor_units() {
        let minor = |s: &str| Decimal::parse(s).unwrap().to_minor_units(2).unwrap();
        assert_eq!(minor("59.90"), 5990);
        assert_eq!(minor("0.125"), 12);
        assert_eq!(minor("0.135"), 14);
        assert_eq!(minor("-0.125"), -12);
        assert_eq!(minor("3"), 300);
    }

    #[test]
    fn adds_and_prints_exactly() {
        let sum = Decimal::parse("0.1").unwrap().checked_add(&Decimal::parse("0.25").unwrap()).unwrap();
        assert_eq!(sum.to_text(), "0.35");
        assert_eq!(Decimal::parse("-0.05").unwrap().to_text(), "-0.05");
        assert_eq!(Decimal::parse("-0.05").unwrap().abs().to_text(), "0.05");
    }

    #[test]
    fn line_totals_are_exact() {
        // 3 × 0.10 is 0.30 exactly, not 0.30000000000000004.
        let total = Decimal::parse("0.10").unwrap().checked_mul(&Decimal::parse("3").unwrap()).unwrap();
        assert_eq!(total.to_minor_units(2), Some(30));
    }

    #[test]
    fn unknown_currency_is_rejected_not_guessed() {
        let table = CurrencyTable::default();
        let usd = Currency::from_code("usd").unwrap();
        assert!(table.to_base_minor(&Decimal::parse("1").unwrap(), usd).unwrap_err().contains("no exchange rate"));
        let mut rates = BTreeMap::new();
        rates.insert(usd, 0.5);
        let table = CurrencyTable { rates, ..table };
        assert_eq!(table.to_base_minor(&Decimal::parse("3").unwrap(), usd), Ok(150));
        assert!(Currency::from_code("XYZ").is_none());
    }
}
