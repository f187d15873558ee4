//! Money in decimal arithmetic. VRL has no decimal type, so money travels
//! through programs as strings (`"12.34"`) and every money function parses,
//! computes in `rust_decimal` and writes a string back. A JSON number read
//! from a payload (`12.5`) is accepted too: the shortest text of the float
//! is what the sender wrote, so no binary noise enters.

use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use vrl::value::Value;

/// Reads a decimal from a VRL value: a numeric string, an integer or a float.
pub fn decimal_of(value: &Value, what: &str) -> Result<Decimal, String> {
    match value {
        Value::Integer(n) => Ok(Decimal::from(*n)),
        Value::Float(f) => parse(&f.into_inner().to_string(), what),
        Value::Bytes(_) | Value::String(_) => {
            let text = value.to_str_lossy().unwrap_or_default();
            parse(&text, what)
        }
        other => Err(format!(
            "{what} must be a decimal number (\"12.34\" or 12.34), not {}",
            describe(other)
        )),
    }
}

fn parse(text: &str, what: &str) -> Result<Decimal, String> {
    let trimmed = text.trim();
    Decimal::from_str(trimmed)
        .or_else(|_| Decimal::from_scientific(trimmed))
        .map_err(|_| format!("{what} must be a decimal number, not {text:?}"))
}

/// 2 dp, half away from zero (`2.345 → 2.35`, `-2.345 → -2.35`).
pub fn round_money(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

/// A decimal as a VRL string, trailing zeros kept as computed.
pub fn to_value(value: Decimal) -> Value {
    Value::from(value.to_string())
}

/// A rounded amount as a VRL string with exactly 2 decimals (`"45.00"`).
pub fn to_money_value(value: Decimal) -> Value {
    Value::from(format!("{:.2}", round_money(value)))
}

/// Short description of a value's type for error messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Integer(n) => format!("the integer {n}"),
        Value::Float(f) => format!("the float {f}"),
        Value::Boolean(b) => format!("the boolean {b}"),
        Value::Bytes(_) | Value::String(_) => {
            format!("the string {:?}", value.to_str_lossy().unwrap_or_default())
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
        Value::Timestamp(t) => format!("the timestamp {t}"),
        Value::Regex(_) => "a regex".to_owned(),
    }
}

/// A decimal as a JSON-ready float, only when the float prints back as the
/// same number (up to 15 significant digits); otherwise an error, so a
/// request never carries a silently changed amount.
pub fn to_exact_float(value: Decimal) -> Result<f64, String> {
    // Up to 15 significant digits a decimal always survives the trip through
    // the nearest f64 and its shortest text: no check needed.
    let value = value.normalize();
    if value.mantissa().unsigned_abs() < 1_000_000_000_000_000 {
        if let Some(float) = rust_decimal::prelude::ToPrimitive::to_f64(&value) {
            return Ok(float);
        }
    }
    let float: f64 = value
        .to_string()
        .parse()
        .map_err(|_| format!("{value} cannot be written as a number"))?;
    let back = Decimal::from_str(&float.to_string()).ok();
    if back.map(|b| b == value).unwrap_or(false) {
        Ok(float)
    } else {
        Err(format!(
            "{value} has too many digits to be sent as a JSON number exactly; round it first"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vrl::prelude::NotNan;

    #[test]
    fn rounding_is_half_away_from_zero() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(round_money(d("2.345")), d("2.35"));
        assert_eq!(round_money(d("-2.345")), d("-2.35"));
        assert_eq!(round_money(d("2.344999")), d("2.34"));
        assert_eq!(round_money(d("0.005")), d("0.01"));
    }

    #[test]
    fn floats_from_json_keep_their_written_digits() {
        let v = Value::Float(NotNan::new(0.1_f64).unwrap());
        assert_eq!(
            decimal_of(&v, "x").unwrap(),
            Decimal::from_str("0.1").unwrap()
        );
        let v = Value::Float(NotNan::new(12.5_f64).unwrap());
        assert_eq!(
            decimal_of(&v, "x").unwrap(),
            Decimal::from_str("12.5").unwrap()
        );
        assert!(decimal_of(&Value::Null, "amount")
            .unwrap_err()
            .contains("amount"));
    }

    proptest! {
        #[test]
        fn rounded_money_is_within_half_a_penny(cents in -10_000_000_000i64..10_000_000_000, extra in 0u32..1000) {
            let value = Decimal::new(cents * 1000 + i64::from(extra), 5);
            let rounded = round_money(value);
            prop_assert!(rounded.scale() <= 2);
            prop_assert!((rounded - value).abs() <= Decimal::new(5, 3));
            // Symmetric: rounding commutes with negation.
            prop_assert_eq!(round_money(-value), -rounded);
        }

        #[test]
        fn up_to_15_digits_survive_the_float_edge(mantissa in -999_999_999_999_999i64..999_999_999_999_999, scale in 0u32..15) {
            let value = Decimal::new(mantissa, scale);
            let float = to_exact_float(value).unwrap();
            prop_assert_eq!(Decimal::from_str(&float.to_string()).unwrap(), value);
        }

        #[test]
        fn two_dp_amounts_survive_the_float_edge(cents in -100_000_000_000i64..100_000_000_000) {
            let value = Decimal::new(cents, 2);
            let float = to_exact_float(value).unwrap();
            prop_assert_eq!(Decimal::from_str(&float.to_string()).unwrap(), value);
        }
    }
}
