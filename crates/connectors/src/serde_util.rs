//! Small serde helpers shared by the connector configs and models.

/// Durations in configuration files: a number of seconds (`30`, `0.5`) or a
/// string with a unit (`"500ms"`, `"30s"`, `"45m"`, `"1h"`). Serialized as a
/// string with the largest exact unit.
pub mod duration {
    use std::time::Duration;

    use serde::{de, Deserialize, Deserializer, Serializer};

    /// Serializes `value` as `"<n><unit>"`.
    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*value))
    }

    /// Accepts a number of seconds or a string with a unit.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // Through `Value`, not an untagged enum: serde_json's
        // `arbitrary_precision` breaks numbers inside untagged enums.
        let parsed = match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_f64()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok()),
            serde_json::Value::String(text) => parse(&text),
            _ => None,
        };
        parsed.ok_or_else(|| {
            de::Error::custom(
                "invalid duration: expected seconds or a string like \"500ms\", \"30s\", \"45m\", \"1h\"",
            )
        })
    }

    /// Parses `"500ms"`, `"30s"`, `"1.5s"`, `"45m"`, `"1h"` or a bare number
    /// of seconds.
    pub fn parse(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let scale = match unit.trim() {
            "ms" => 0.001,
            "" | "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(number * scale).ok()
    }

    /// The inverse of [`parse`] for whole units.
    pub fn format(value: Duration) -> String {
        let millis = value.as_millis();
        if !millis.is_multiple_of(1000) {
            return format!("{millis}ms");
        }
        let secs = value.as_secs();
        if secs != 0 && secs.is_multiple_of(3600) {
            format!("{}h", secs / 3600)
        } else if secs != 0 && secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        }
    }
}

/// Optional money and quantity fields as exact JSON numbers
/// (`117.5000` stays `117.5000`). Accepts numbers and numeric strings.
pub mod money {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer};

    /// Writes the decimal as a JSON number with its exact digits.
    pub fn serialize<S: Serializer>(value: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        rust_decimal::serde::arbitrary_precision_option::serialize(value, s)
    }

    /// Reads a JSON number, a numeric string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        rust_decimal::serde::arbitrary_precision_option::deserialize(d)
    }
}

/// Booleans that some KashFlow examples write as `0`/`1` (e.g. `VATExempt`).
pub mod lenient_bool {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use serde_json::Value;

    /// Writes a plain boolean (or `null`).
    pub fn serialize<S: Serializer>(value: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(b) => s.serialize_bool(*b),
            None => s.serialize_none(),
        }
    }

    /// Reads `true`/`false`, `0`/`1`, `"true"`/`"false"` or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(b)),
            Value::Number(n) if n.as_i64() == Some(0) => Ok(Some(false)),
            Value::Number(n) if n.as_i64() == Some(1) => Ok(Some(true)),
            Value::String(t) if t.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Value::String(t) if t.eq_ignore_ascii_case("false") => Ok(Some(false)),
            _ => Err(de::Error::custom("expected a boolean, 0 or 1")),
        }
    }
}

/// Declares an API model: every field is an `Option`, missing fields
/// deserialize to `None`, `None` is not serialized (so a PUT or PATCH only
/// carries what was set), unknown fields are ignored, and names are
/// PascalCase unless a field says otherwise.
macro_rules! api_model {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$field_meta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "PascalCase", default)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(skip_serializing_if = "Option::is_none")]
                pub $field: $ty,
            )*
        }
    };
}

pub(crate) use api_model;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::duration;

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(duration::parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration::parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(duration::parse("30"), Some(Duration::from_secs(30)));
        assert_eq!(duration::parse("45m"), Some(Duration::from_secs(2700)));
        assert_eq!(duration::parse("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(duration::parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration::parse("ten"), None);
        assert_eq!(duration::parse("5 fortnights"), None);
        assert_eq!(duration::parse("-1s"), None);
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_secs(2700),
            Duration::from_secs(7200),
            Duration::ZERO,
        ] {
            assert_eq!(duration::parse(&duration::format(d)), Some(d));
        }
    }
}
