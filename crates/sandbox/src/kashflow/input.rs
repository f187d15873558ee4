//! Reading KashFlow requests: a JSON extractor with case-insensitive keys
//! whose every rejection is a KashFlow 400 body, lenient scalar types
//! (booleans as `0`/`1`, numbers as strings), KashFlow date formats, and list
//! query parameters (`page`, `perpage`, `sortby`, `order`, filters).

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use rust_decimal::Decimal;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::error::{KfError, KfResult};

/// A JSON body whose keys are matched case-insensitively against the
/// PascalCase names of `T` (and of every other request type of the
/// simulator). Malformed JSON, wrong types and missing required fields
/// answer 400 `ValidationError` naming the field.
#[derive(Debug)]
pub struct KfJson<T>(pub T);

impl<S, T> FromRequest<S> for KfJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = KfError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                KfError::validation(format!("Cannot read the request body: {rejection}"))
            })?;
        parse_body(&bytes).map(KfJson)
    }
}

/// Parses a request body into `T` with case-insensitive keys.
pub fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> KfResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KfError::validation(
            "The request body is empty; send a JSON object.",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|err| KfError::validation(format!("The request body is not valid JSON: {err}")))?;
    from_value(normalize_keys(value))
}

/// Deserializes an already key-normalized value, naming the failing field.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> KfResult<T> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." {
            KfError::validation(format!("Invalid request: {inner}"))
        } else {
            KfError::validation(format!("Invalid value for {path}: {inner}"))
        }
    })
}

/// Field names of every request type, by lower-case spelling.
static VOCABULARY: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    let mut vocabulary = HashMap::new();
    for names in super::model::request_field_names() {
        for name in names {
            vocabulary.insert(name.to_ascii_lowercase(), *name);
        }
    }
    vocabulary
});

/// Rewrites every object key to the canonical spelling of a known field
/// (`customercode` -> `CustomerCode`, `VatNumber` -> `VATNumber`); unknown keys are kept.
pub fn normalize_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (key, inner) in map {
                let key = match VOCABULARY.get(&key.to_ascii_lowercase()) {
                    Some(canonical) => (*canonical).to_owned(),
                    None => key,
                };
                out.insert(key, normalize_keys(inner));
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.into_iter().map(normalize_keys).collect())
        }
        other => other,
    }
}

/// The field names serde's derive declares for struct `T` (read by
/// deserializing from a probe that records them).
pub fn struct_fields<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("field probe"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field probe"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// A boolean that also accepts `0`/`1` and `"true"`/`"false"` (KashFlow
/// examples show `VATExempt: 0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlexBool(pub bool);

impl<'de> Deserialize<'de> for FlexBool {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let flag = match &value {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::Number(n) => match n.to_string().as_str() {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            },
            serde_json::Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            _ => None,
        };
        flag.map(FlexBool).ok_or_else(|| {
            de::Error::custom(format!(
                "expected a boolean (true/false or 0/1), found {value}"
            ))
        })
    }
}

/// A whole number that also accepts a string of digits and a JSON number
/// with a zero fraction (`4000.0`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlexInt(pub i64);

impl<'de> Deserialize<'de> for FlexInt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let text = match &value {
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::String(s) => s.trim().to_owned(),
            other => {
                return Err(de::Error::custom(format!(
                    "expected a whole number, found {}",
                    json_kind(other)
                )))
            }
        };
        if let Ok(v) = text.parse::<i64>() {
            return Ok(FlexInt(v));
        }
        match text.parse::<Decimal>() {
            Ok(d) if d.fract().is_zero() => i64::try_from(d)
                .map(FlexInt)
                .map_err(|_| de::Error::custom(format!("{text} is out of range"))),
            _ => Err(de::Error::custom(format!(
                "expected a whole number, found `{text}`"
            ))),
        }
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A date read from a request: `YYYY-MM-DD HH:mm:ss` with or without an
/// offset, ISO 8601 with `T`, or date-only. Offsets are converted to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InDate(pub NaiveDateTime);

impl<'de> Deserialize<'de> for InDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_date(&text).map(InDate).ok_or_else(|| {
            de::Error::custom(format!(
                "`{text}` is not a date (use YYYY-MM-DD HH:mm:ss, ISO 8601 or YYYY-MM-DD)"
            ))
        })
    }
}

/// Parses the date forms KashFlow clients send (see [`InDate`]).
pub fn parse_date(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    const NAIVE: [&str; 5] = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ];
    for format in NAIVE {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at);
        }
    }
    const WITH_OFFSET: [&str; 4] = [
        "%Y-%m-%d %H:%M:%S %:z",
        "%Y-%m-%d %H:%M:%S%:z",
        "%Y-%m-%d %H:%M:%S%.f %:z",
        "%Y-%m-%d %H:%M:%S %z",
    ];
    for format in WITH_OFFSET {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.naive_utc());
        }
    }
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at.naive_utc());
    }
    for format in ["%Y-%m-%d", "%Y%m%d"] {
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return Some(date.and_time(NaiveTime::MIN));
        }
    }
    None
}

/// A date as stored and written out: the instant and its pre-rendered text
/// (`YYYY-MM-DD HH:mm:ss`, optionally with ` +00:00`), so reads never format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KfDate {
    /// The instant (UTC).
    pub at: NaiveDateTime,
    text: Box<str>,
}

impl KfDate {
    /// Renders `at` once, with or without the ` +00:00` suffix.
    pub fn new(at: NaiveDateTime, with_offset: bool) -> KfDate {
        // What `%Y-%m-%d %H:%M:%S` gives, without parsing the format string
        // on every write (a measurable share of an invoice POST); chrono
        // keeps the unusual years (signed, five digits).
        let mut text = if (0..=9999).contains(&at.year()) {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                at.year(),
                at.month(),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            )
        } else {
            at.format("%Y-%m-%d %H:%M:%S").to_string()
        };
        if with_offset {
            text.push_str(" +00:00");
        }
        KfDate {
            at,
            text: text.into_boxed_str(),
        }
    }

    /// The rendered text.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialOrd for KfDate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KfDate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Serialize for KfDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Sort direction of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Ascending (default).
    #[default]
    Asc,
    /// Descending.
    Desc,
}

/// Parsed list parameters; keys are case-insensitive.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// 1-based page.
    pub page: usize,
    /// Items per page (already capped).
    pub per_page: usize,
    /// Raw `sortby` (an int or a name), if any.
    pub sort_by: Option<String>,
    /// Direction.
    pub order: Order,
    /// Every parameter, lower-case key -> value (filters are read from here).
    pub params: HashMap<String, String>,
    /// The parameters in request order, original spelling (to rebuild page URLs).
    pub pairs: Vec<(String, String)>,
}

impl ListQuery {
    /// Parses a raw query string.
    pub fn parse(
        raw: Option<&str>,
        default_per_page: usize,
        max_per_page: usize,
    ) -> KfResult<ListQuery> {
        let pairs: Vec<(String, String)> = match raw {
            Some(raw) => serde_urlencoded::from_str(raw)
                .map_err(|err| KfError::validation(format!("Invalid query string: {err}")))?,
            None => Vec::new(),
        };
        let params: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let positive = |name: &str| -> KfResult<Option<usize>> {
            match params.get(name).map(|v| v.trim()).filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n >= 1 => Ok(Some(n)),
                    _ => Err(KfError::validation(format!(
                        "Query parameter {name} must be a whole number of at least 1, not `{v}`."
                    ))),
                },
            }
        };
        let page = positive("page")?.unwrap_or(1);
        let per_page = positive("perpage")?
            .unwrap_or(default_per_page)
            .min(max_per_page.max(1));
        let order = match params.get("order").map(|v| v.trim().to_ascii_lowercase()) {
            None => Order::Asc,
            Some(v) if v.is_empty() || v == "asc" || v == "ascending" || v == "0" => Order::Asc,
            Some(v) if v == "desc" || v == "descending" || v == "1" => Order::Desc,
            Some(v) => {
                return Err(KfError::validation(format!(
                    "Query parameter order must be Asc or Desc, not `{v}`."
                )))
            }
        };
        let sort_by = params
            .get("sortby")
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        Ok(ListQuery {
            page,
            per_page,
            sort_by,
            order,
            params,
            pairs,
        })
    }

    /// Every parameter but `page` and `perpage`, in one canonical text:
    /// two queries with the same key list the same items in the same order.
    pub fn key_without_page(&self) -> String {
        let mut params: Vec<(&String, &String)> = self
            .params
            .iter()
            .filter(|(k, _)| k.as_str() != "page" && k.as_str() != "perpage")
            .collect();
        params.sort();
        serde_urlencoded::to_string(&params).unwrap_or_default()
    }

    /// A filter parameter (non-empty), by lower-case name.
    pub fn filter(&self, name: &str) -> Option<&str> {
        self.params
            .get(name)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A date filter parameter, 400 if it is not a date.
    pub fn date_filter(&self, name: &str) -> KfResult<Option<NaiveDateTime>> {
        match self.filter(name) {
            None => Ok(None),
            Some(text) => parse_date(text).map(Some).ok_or_else(|| {
                KfError::validation(format!(
                    "Query parameter {name} is not a date: `{text}` (use YYYY-MM-DD or ISO 8601)."
                ))
            }),
        }
    }

    /// A boolean filter parameter, 400 if it is not `true`/`false`/`0`/`1`.
    pub fn bool_filter(&self, name: &str) -> KfResult<Option<bool>> {
        match self.filter(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(None),
            Some("true" | "1") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(other) => Err(KfError::validation(format!(
                "Query parameter {name} must be true or false, not `{other}`."
            ))),
        }
    }

    /// The query string with `page` set to `page` (other parameters kept in order).
    pub fn with_page(&self, page: usize) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::with_capacity(self.pairs.len() + 1);
        let mut replaced = false;
        for (key, value) in &self.pairs {
            if key.eq_ignore_ascii_case("page") {
                if !replaced {
                    pairs.push((key, page.to_string()));
                    replaced = true;
                }
            } else {
                pairs.push((key, value.clone()));
            }
        }
        if !replaced {
            pairs.push(("page", page.to_string()));
        }
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_render_like_the_strftime_pattern() {
        for text in [
            "2025-03-01T00:00:00",
            "0999-12-31T23:59:59",
            "2024-02-29T07:08:09",
        ] {
            let at: NaiveDateTime = text.parse().expect("date");
            let expected = at.format("%Y-%m-%d %H:%M:%S").to_string();
            assert_eq!(KfDate::new(at, false).as_str(), expected);
            assert_eq!(KfDate::new(at, true).as_str(), format!("{expected} +00:00"));
        }
        let far: NaiveDateTime = "+12345-01-01T00:00:00".parse().expect("date");
        assert_eq!(
            KfDate::new(far, false).as_str(),
            far.format("%Y-%m-%d %H:%M:%S").to_string()
        );
    }

    #[test]
    fn parses_kashflow_date_forms() {
        let noon = NaiveDate::from_ymd_opt(2025, 3, 1)
            .and_then(|d| d.and_hms_opt(12, 0, 0))
            .expect("valid");
        assert_eq!(parse_date("2025-03-01 12:00:00"), Some(noon));
        assert_eq!(parse_date("2025-03-01 17:30:00 +05:30"), Some(noon));
        assert_eq!(parse_date("2025-03-01 12:00:00 +00:00"), Some(noon));
        assert_eq!(parse_date("2025-03-01T12:00:00"), Some(noon));
        assert_eq!(parse_date("2025-03-01T12:00:00Z"), Some(noon));
        assert_eq!(parse_date("2025-03-01T13:00:00+01:00"), Some(noon));
        assert_eq!(parse_date("2025-03-01T12:00:00.000"), Some(noon));
        assert_eq!(parse_date("2025-03-01"), noon.date().and_hms_opt(0, 0, 0));
        assert_eq!(parse_date("20250301"), noon.date().and_hms_opt(0, 0, 0));
        assert_eq!(parse_date("01/03/2025"), None);
        assert_eq!(parse_date(""), None);
    }

    #[test]
    fn renders_dates() {
        let at = parse_date("2025-03-01 12:00:00").expect("valid");
        assert_eq!(KfDate::new(at, false).as_str(), "2025-03-01 12:00:00");
        assert_eq!(KfDate::new(at, true).as_str(), "2025-03-01 12:00:00 +00:00");
    }

    #[test]
    fn list_query_keeps_other_parameters_in_page_urls() {
        let query = ListQuery::parse(
            Some("SortBy=Number&PAGE=2&perpage=10&searchtext=a%20b"),
            50,
            100,
        )
        .expect("valid");
        assert_eq!(query.page, 2);
        assert_eq!(query.per_page, 10);
        assert_eq!(query.sort_by.as_deref(), Some("Number"));
        assert_eq!(query.filter("searchtext"), Some("a b"));
        assert_eq!(
            query.with_page(3),
            "SortBy=Number&PAGE=3&perpage=10&searchtext=a+b"
        );
        let capped = ListQuery::parse(Some("perpage=1000"), 50, 100).expect("valid");
        assert_eq!(capped.per_page, 100);
        assert!(ListQuery::parse(Some("page=0"), 50, 100).is_err());
        assert!(ListQuery::parse(Some("order=sideways"), 50, 100).is_err());
    }

    #[test]
    fn flexible_scalars() {
        let b: FlexBool = serde_json::from_str("1").expect("valid");
        assert!(b.0);
        let b: FlexBool = serde_json::from_str("false").expect("valid");
        assert!(!b.0);
        assert!(serde_json::from_str::<FlexBool>("2").is_err());
        let n: FlexInt = serde_json::from_str("\"4000\"").expect("valid");
        assert_eq!(n.0, 4000);
        let n: FlexInt = serde_json::from_str("4000.0").expect("valid");
        assert_eq!(n.0, 4000);
        assert!(serde_json::from_str::<FlexInt>("40.5").is_err());
    }
}
