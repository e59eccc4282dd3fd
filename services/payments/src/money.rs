//! Money as the providers write it: integers in minor units (Stripe) or decimal strings
//! (PayPal, `"12.34"`). Converted exactly, digit by digit: a float never holds an amount.

/// Why an amount could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("`{0}` is not a decimal amount")]
    Malformed(String),
    #[error("`{value}` has more decimals than {currency} allows ({exponent})")]
    TooPrecise {
        value: String,
        currency: String,
        exponent: u32,
    },
    #[error("`{0}` is out of range")]
    OutOfRange(String),
    #[error("a negative amount cannot be sent: {0}")]
    Negative(i64),
}

/// Digits after the decimal point for `currency` (ISO 4217): 0 for the zero-decimal
/// currencies the providers list, 3 for the dinars, 2 for everything else.
pub fn exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "HUF" | "ISK" | "JPY" | "KMF" | "KRW" | "MGA" | "PYG"
        | "RWF" | "TWD" | "UGX" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "JOD" | "KWD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

/// `"12.34"` in EUR → 1234. Fewer decimals than the currency's are padded (`"12.3"` → 1230);
/// more are refused rather than rounded.
pub fn parse_decimal(value: &str, currency: &str) -> Result<i64, MoneyError> {
    let exp = exponent(currency);
    let malformed = || MoneyError::Malformed(value.to_owned());
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(malformed());
    }
    if digits.contains('.') && fraction.is_empty() {
        return Err(malformed());
    }
    let fraction_len = u32::try_from(fraction.len()).map_err(|_| malformed())?;
    if fraction_len > exp {
        return Err(MoneyError::TooPrecise {
            value: value.to_owned(),
            currency: currency.to_owned(),
            exponent: exp,
        });
    }
    let out_of_range = || MoneyError::OutOfRange(value.to_owned());
    let whole: i64 = whole.parse().map_err(|_| out_of_range())?;
    let fraction: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| out_of_range())?
    };
    let scale = 10_i64.pow(exp);
    let minor = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(fraction * 10_i64.pow(exp - fraction_len)))
        .ok_or_else(out_of_range)?;
    Ok(if negative { -minor } else { minor })
}

/// 1234 in EUR → `"12.34"`; 500 in JPY → `"500"`.
pub fn format_decimal(minor: i64, currency: &str) -> Result<String, MoneyError> {
    if minor < 0 {
        return Err(MoneyError::Negative(minor));
    }
    let exp = exponent(currency);
    if exp == 0 {
        return Ok(minor.to_string());
    }
    let scale = 10_i64.pow(exp);
    let width = usize::try_from(exp).unwrap_or(2);
    Ok(format!(
        "{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = width
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_convert_exactly_both_ways() {
        assert_eq!(parse_decimal("12.34", "EUR"), Ok(1234));
        assert_eq!(parse_decimal("0.1", "USD"), Ok(10));
        assert_eq!(parse_decimal("7", "EUR"), Ok(700));
        assert_eq!(parse_decimal("500", "JPY"), Ok(500));
        assert_eq!(parse_decimal("1.234", "KWD"), Ok(1234));
        assert_eq!(format_decimal(1234, "EUR").as_deref(), Ok("12.34"));
        assert_eq!(format_decimal(5, "EUR").as_deref(), Ok("0.05"));
        assert_eq!(format_decimal(500, "JPY").as_deref(), Ok("500"));
        assert_eq!(format_decimal(1234, "KWD").as_deref(), Ok("1.234"));
    }

    #[test]
    fn amounts_that_are_not_plain_decimals_are_refused() {
        for bad in ["", ".5", "5.", "1e3", "1,00", " 1.00", "abc", "1.2.3"] {
            assert!(parse_decimal(bad, "EUR").is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_decimal("1.001", "EUR"),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert!(matches!(
            parse_decimal("99999999999999999999", "EUR"),
            Err(MoneyError::OutOfRange(_))
        ));
    }
}
