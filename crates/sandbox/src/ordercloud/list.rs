//! The generic list engine behind every OrderCloud list endpoint (section 5):
//! filters (`*`, `|`, `!`, `>`, `<`, repeated-key AND, dot paths into nested
//! fields and `xp`), `search`/`searchOn`/`searchType`, `sortBy` (with `!`
//! for descending) and `page`/`pageSize` paging into the `{Meta, Items}`
//! envelope. Works over `serde_json::Value` objects.

use std::cmp::Ordering;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::error::OcError;

/// Default `pageSize`.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Largest accepted `pageSize`.
pub const MAX_PAGE_SIZE: u64 = 100;

/// Query parameters with a meaning other than "filter on this property".
const RESERVED: &[&str] = &[
    "page",
    "pageSize",
    "sortBy",
    "search",
    "searchOn",
    "searchType",
    "pageKey",
];

/// A parsed list query.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// 1-based page.
    pub page: u64,
    /// Items per page.
    pub page_size: u64,
    /// `(path, descending)` sort keys.
    pub sort: Vec<(String, bool)>,
    /// Search text.
    pub search: Option<String>,
    /// Fields to search (empty: the endpoint's defaults).
    pub search_on: Vec<String>,
    /// `searchType`.
    pub search_type: SearchType,
    /// `(path, expression)` filters; repeated paths are ANDed.
    pub filters: Vec<(String, String)>,
}

/// The `searchType` values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchType {
    /// Any term in any field (default).
    #[default]
    AnyTerm,
    /// All terms, each in any field.
    AllTermsAnyField,
    /// All terms in one field.
    AllTermsSameField,
    /// The whole phrase in one field.
    ExactPhrase,
    /// A field starting with the phrase.
    ExactPhrasePrefix,
}

impl ListQuery {
    /// Parses a raw query string. `extra_reserved` names endpoint-specific
    /// parameters that are not filters (e.g. `buyerID`).
    pub fn parse(raw: Option<&str>, extra_reserved: &[&str]) -> Result<ListQuery, OcError> {
        let pairs: Vec<(String, String)> = match raw {
            Some(raw) => serde_urlencoded::from_str(raw).map_err(|err| {
                OcError::bad_request("InvalidRequest", format!("Bad query string: {err}"))
            })?,
            None => Vec::new(),
        };
        let mut query = ListQuery {
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
            ..ListQuery::default()
        };
        for (key, value) in pairs {
            match key.as_str() {
                "page" => query.page = parse_positive("page", &value, u64::MAX)?,
                "pageSize" => query.page_size = parse_positive("pageSize", &value, MAX_PAGE_SIZE)?,
                "sortBy" => {
                    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        match part.strip_prefix('!') {
                            Some(path) => query.sort.push((path.to_owned(), true)),
                            None => query.sort.push((part.to_owned(), false)),
                        }
                    }
                }
                "search" => query.search = Some(value).filter(|s| !s.trim().is_empty()),
                "searchOn" => {
                    query.search_on = value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                "searchType" => {
                    query.search_type = match value.to_ascii_lowercase().as_str() {
                        "anyterm" => SearchType::AnyTerm,
                        "alltermsanyfield" => SearchType::AllTermsAnyField,
                        "alltermssamefield" => SearchType::AllTermsSameField,
                        "exactphrase" => SearchType::ExactPhrase,
                        "exactphraseprefix" => SearchType::ExactPhrasePrefix,
                        _ => {
                            return Err(OcError::validation(
                                "searchType",
                                format!("Unknown searchType '{value}'."),
                            ))
                        }
                    }
                }
                k if RESERVED.contains(&k) || extra_reserved.contains(&k) => {}
                _ => query.filters.push((key, value)),
            }
        }
        Ok(query)
    }

    /// Applies filters, search, sort and paging to `items`; `default_search`
    /// lists the fields searched when `searchOn` is absent.
    pub fn apply(&self, items: Vec<Value>, default_search: &[&str]) -> Value {
        self.apply_refs(items.iter(), default_search)
    }

    /// [`ListQuery::apply`] over borrowed items: only the page is copied.
    pub fn apply_refs<'a>(
        &self,
        items: impl Iterator<Item = &'a Value>,
        default_search: &[&str],
    ) -> Value {
        let kept: Vec<&Value> = self
            .select(items.map(|item| ((), item)), default_search)
            .into_iter()
            .map(|(_, item)| item)
            .collect();
        page_envelope_refs(&kept, self.page, self.page_size)
    }

    /// The items that pass the filters and the search, in list order
    /// (sorted, ties in the order given), each with its tag; no paging.
    pub fn select<'a, T>(
        &self,
        items: impl Iterator<Item = (T, &'a Value)>,
        default_search: &[&str],
    ) -> Vec<(T, &'a Value)> {
        let filters = self.compiled_filters();
        let mut kept: Vec<(T, &Value)> = items
            .filter(|(_, item)| {
                filters.iter().all(|filter| filter.matches(item))
                    && self.matches_search(item, default_search)
            })
            .collect();
        if !self.sort.is_empty() {
            kept.sort_by(|(_, a), (_, b)| {
                for (path, desc) in &self.sort {
                    let ord = compare_values(lookup(a, path), lookup(b, path));
                    let ord = if *desc { ord.reverse() } else { ord };
                    if ord != Ordering::Equal {
                        return ord;
                    }
                }
                Ordering::Equal
            });
        }
        kept
    }

    /// Everything but the page, in one canonical text: two queries with the
    /// same key select the same items in the same order.
    pub fn key_without_page(&self) -> String {
        format!(
            "{:?}",
            (
                &self.sort,
                &self.search,
                &self.search_on,
                self.search_type,
                &self.filters
            )
        )
    }

    /// True when `item` passes every filter.
    pub fn matches_filters(&self, item: &Value) -> bool {
        self.compiled_filters()
            .iter()
            .all(|filter| filter.matches(item))
    }

    /// The filters parsed once for a whole list, the cheap ones first (they
    /// are ANDed, so the order changes nothing but the time).
    fn compiled_filters(&self) -> Vec<CompiledFilter<'_>> {
        let mut filters: Vec<CompiledFilter<'_>> = self
            .filters
            .iter()
            .map(|(path, expr)| CompiledFilter {
                path,
                terms: expr.split('|').map(Term::parse).collect(),
            })
            .collect();
        filters.sort_by_key(|f| f.terms.iter().any(|t| t.parses_dates()));
        filters
    }

    fn matches_search(&self, item: &Value, default_search: &[&str]) -> bool {
        let Some(search) = &self.search else {
            return true;
        };
        let fields: Vec<String> = if self.search_on.is_empty() {
            default_search.iter().map(|s| (*s).to_owned()).collect()
        } else {
            self.search_on.clone()
        };
        let texts: Vec<String> = fields.iter().flat_map(|f| search_texts(item, f)).collect();
        let phrase = search.to_lowercase();
        let terms: Vec<&str> = phrase.split_whitespace().collect();
        match self.search_type {
            SearchType::AnyTerm => terms.iter().any(|t| texts.iter().any(|x| x.contains(t))),
            SearchType::AllTermsAnyField => {
                terms.iter().all(|t| texts.iter().any(|x| x.contains(t)))
            }
            SearchType::AllTermsSameField => {
                texts.iter().any(|x| terms.iter().all(|t| x.contains(t)))
            }
            SearchType::ExactPhrase => texts.iter().any(|x| x.contains(phrase.trim())),
            SearchType::ExactPhrasePrefix => texts.iter().any(|x| x.starts_with(phrase.trim())),
        }
    }
}

/// Lower-cased texts of the field at `path`; `xp.*` means every value in `xp`.
fn search_texts(item: &Value, path: &str) -> Vec<String> {
    if let Some(prefix) = path.strip_suffix(".*") {
        return match lookup(item, prefix) {
            Some(Value::Object(map)) => map.values().filter_map(scalar_text).collect(),
            _ => Vec::new(),
        };
    }
    lookup(item, path)
        .and_then(scalar_text)
        .into_iter()
        .collect()
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.to_lowercase()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_positive(name: &str, value: &str, max: u64) -> Result<u64, OcError> {
    match value.trim().parse::<u64>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ if max == u64::MAX => Err(OcError::validation(
            name,
            format!("{name} must be a whole number of at least 1."),
        )),
        _ => Err(OcError::validation(
            name,
            format!("{name} must be a whole number between 1 and {max}."),
        )),
    }
}

/// Builds `{Meta, Items}` for one page of `items`.
pub fn page_envelope(items: Vec<Value>, page: u64, page_size: u64) -> Value {
    let refs: Vec<&Value> = items.iter().collect();
    page_envelope_refs(&refs, page, page_size)
}

/// [`page_envelope`] over borrowed items: only the page is copied.
pub fn page_envelope_refs(items: &[&Value], page: u64, page_size: u64) -> Value {
    let start = (page - 1).saturating_mul(page_size);
    let page_items: Vec<Value> = items
        .iter()
        .skip(usize::try_from(start).unwrap_or(usize::MAX))
        .take(usize::try_from(page_size).unwrap_or(usize::MAX))
        .map(|item| (*item).clone())
        .collect();
    page_envelope_parts(items.len() as u64, page_items, page, page_size)
}

/// The first index and the length of `page` in a list of `total` items.
pub fn page_bounds(total: usize, page: u64, page_size: u64) -> (usize, usize) {
    let start = usize::try_from((page - 1).saturating_mul(page_size)).unwrap_or(usize::MAX);
    let len = usize::try_from(page_size).unwrap_or(usize::MAX);
    (start.min(total), len.min(total - start.min(total)))
}

/// [`page_envelope`] from the list's size and the items of `page`.
pub fn page_envelope_parts(total: u64, page_items: Vec<Value>, page: u64, page_size: u64) -> Value {
    if total == 0 {
        return json!({
            "Meta": { "Page": 1, "PageSize": page_size, "TotalCount": 0, "TotalPages": 0, "ItemRange": [0, 0] },
            "Items": []
        });
    }
    let total_pages = total.div_ceil(page_size);
    let start = (page - 1).saturating_mul(page_size);
    let range = if page_items.is_empty() {
        json!([0, 0])
    } else {
        json!([start + 1, start + page_items.len() as u64])
    };
    json!({
        "Meta": {
            "Page": page,
            "PageSize": page_size,
            "TotalCount": total,
            "TotalPages": total_pages,
            "ItemRange": range,
            "NextPageKey": null
        },
        "Items": page_items
    })
}

/// The value at a dot path (`xp.Billed`, `FromUser.Email`); property names
/// match case-insensitively when there is no exact match.
pub fn lookup<'a>(item: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = item;
    for segment in path.split('.') {
        let map = current.as_object()?;
        current = match map.get(segment) {
            Some(v) => v,
            None => map
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(segment))
                .map(|(_, v)| v)?,
        };
    }
    Some(current)
}

/// True when `value` satisfies one filter expression (`Open|Completed`,
/// `!Smith`, `*son`, `>10`, `!*`, ...). Arrays match when any element does.
pub fn matches_expression(value: Option<&Value>, expr: &str) -> bool {
    expr.split('|').any(|term| Term::parse(term).matches(value))
}

/// The lower-cased `X` of a filter expression `>X` whose comparison with a
/// text is `text.to_lowercase() > X.to_lowercase()` and nothing else: one
/// term, not negated, `X` neither a date nor a number. Over items sorted by
/// that text ascending, the items passing it are a suffix.
pub fn text_lower_bound(expr: &str) -> Option<String> {
    if expr.contains('|') {
        return None;
    }
    let bound = expr.strip_prefix('>')?;
    let bound = Bound::parse(bound);
    (bound.instant.is_none() && bound.decimal.is_none()).then_some(bound.lower)
}

/// One filter (`path=expr`) with its `|` terms parsed.
struct CompiledFilter<'a> {
    path: &'a str,
    terms: Vec<Term>,
}

impl CompiledFilter<'_> {
    fn matches(&self, item: &Value) -> bool {
        let value = lookup(item, self.path);
        self.terms.iter().any(|term| term.matches(value))
    }
}

/// One term of a filter expression, its text parsed once (a list would
/// otherwise parse the same bound again for every item).
struct Term {
    negated: bool,
    test: Test,
}

enum Test {
    Greater(Bound),
    Less(Bound),
    /// Equality or a `*` pattern, lower-cased.
    Like {
        pattern: String,
        decimal: Option<Decimal>,
    },
}

/// The right side of `>` or `<`, read every way a value may be compared.
struct Bound {
    text: String,
    lower: String,
    instant: Option<chrono::DateTime<chrono::Utc>>,
    decimal: Option<Decimal>,
}

impl Bound {
    fn parse(text: &str) -> Bound {
        Bound {
            text: text.to_owned(),
            lower: text.to_lowercase(),
            instant: parse_instant(text),
            decimal: to_decimal(text),
        }
    }
}

impl Term {
    fn parse(term: &str) -> Term {
        let (negated, term) = match term.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, term),
        };
        let test = if let Some(bound) = term.strip_prefix('>') {
            Test::Greater(Bound::parse(bound))
        } else if let Some(bound) = term.strip_prefix('<') {
            Test::Less(Bound::parse(bound))
        } else {
            Test::Like {
                pattern: term.to_lowercase(),
                decimal: to_decimal(term),
            }
        };
        Term { negated, test }
    }

    /// True when comparing with this term may parse dates (the costly part).
    fn parses_dates(&self) -> bool {
        match &self.test {
            Test::Greater(bound) | Test::Less(bound) => bound.instant.is_some(),
            Test::Like { .. } => false,
        }
    }

    fn matches(&self, value: Option<&Value>) -> bool {
        let positive = match value {
            Some(Value::Array(items)) => items.iter().any(|v| self.matches_positive(Some(v))),
            other => self.matches_positive(other),
        };
        positive != self.negated
    }

    fn matches_positive(&self, value: Option<&Value>) -> bool {
        let value = match value {
            None | Some(Value::Null) => return false,
            Some(v) => v,
        };
        let (pattern, decimal) = match &self.test {
            Test::Greater(bound) => {
                return compare_to_bound(value, bound) == Some(Ordering::Greater)
            }
            Test::Less(bound) => return compare_to_bound(value, bound) == Some(Ordering::Less),
            Test::Like { pattern, decimal } => (pattern, decimal),
        };
        match value {
            Value::String(s) => like(s, pattern),
            Value::Number(n) => {
                if let (Some(a), Some(b)) = (to_decimal(&n.to_string()), decimal) {
                    return a == *b;
                }
                wildcard_match(&n.to_string().to_lowercase(), pattern)
            }
            Value::Bool(b) => wildcard_match(if *b { "true" } else { "false" }, pattern),
            _ => pattern == "*",
        }
    }
}

/// `wildcard_match(&text.to_lowercase(), pattern)` without copying ASCII
/// text that is compared whole.
fn like(text: &str, pattern: &str) -> bool {
    if text.is_ascii() && !pattern.contains('*') {
        return text.eq_ignore_ascii_case(pattern) && pattern.is_ascii();
    }
    wildcard_match(&text.to_lowercase(), pattern)
}

/// Compares a stored value with a filter bound: numerically when both are
/// numbers, as instants when both are dates, else as case-insensitive text.
fn compare_to_bound(value: &Value, bound: &Bound) -> Option<Ordering> {
    match value {
        Value::Number(n) => Some(to_decimal(&n.to_string())?.cmp(bound.decimal.as_ref()?)),
        Value::String(s) => {
            if let Some(b) = bound.instant {
                if let Some(order) = compare_same_shape_instants(s, &bound.text) {
                    return Some(order);
                }
                if let Some(a) = parse_instant(s) {
                    return Some(a.cmp(&b));
                }
            }
            if let Some(b) = bound.decimal {
                if let Some(a) = to_decimal(s) {
                    return Some(a.cmp(&b));
                }
            }
            Some(compare_lowercase(s, &bound.lower))
        }
        _ => None,
    }
}

/// `value` and `bound` (a valid RFC 3339 instant such as
/// `2026-11-02T00:00:00+00:00`) compared without parsing, when `value` has
/// the very same shape: digits where the bound has digits, the same
/// separators and the same offset. Then their bytes order them as instants
/// when `value` is a valid instant, and as the lower-cased text comparison
/// would when it is not, so the answer is the same either way.
fn compare_same_shape_instants(value: &str, bound: &str) -> Option<Ordering> {
    let (value_bytes, bound_bytes) = (value.as_bytes(), bound.as_bytes());
    if value_bytes.len() != bound_bytes.len() || bound_bytes.len() < 20 || bound_bytes[10] != b'T' {
        return None;
    }
    // The offset (after the seconds and any fraction) must be identical.
    let offset = bound_bytes[19..]
        .iter()
        .position(|b| matches!(b, b'Z' | b'+' | b'-'))?
        + 19;
    if value_bytes[offset..] != bound_bytes[offset..] {
        return None;
    }
    let same_shape = value_bytes[..offset]
        .iter()
        .zip(&bound_bytes[..offset])
        .all(|(v, b)| {
            if b.is_ascii_digit() {
                v.is_ascii_digit()
            } else {
                v == b
            }
        });
    same_shape.then(|| value_bytes.cmp(bound_bytes))
}

/// `text.to_lowercase().cmp(lower)`, without copying ASCII text.
fn compare_lowercase(text: &str, lower: &str) -> Ordering {
    if text.is_ascii() && lower.is_ascii() {
        return text
            .bytes()
            .map(|b| b.to_ascii_lowercase())
            .cmp(lower.bytes());
    }
    text.to_lowercase().as_str().cmp(lower)
}

fn parse_instant(text: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&chrono::Utc));
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

fn to_decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    Decimal::from_str(text)
        .ok()
        .or_else(|| Decimal::from_scientific(text).ok())
}

/// `*` matches any run of characters; everything else literally.
pub fn wildcard_match(text: &str, pattern: &str) -> bool {
    if !pattern.contains('*') {
        return text == pattern;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(pos) => rest = &rest[pos + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// Sort order: nulls last, numbers numerically, strings case-insensitively.
fn compare_values(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    let a = a.filter(|v| !v.is_null());
    let b = b.filter(|v| !v.is_null());
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            match (to_decimal(&x.to_string()), to_decimal(&y.to_string())) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => x.to_string().cmp(&y.to_string()),
            }
        }
        (Some(Value::String(x)), Some(Value::String(y))) => compare_case_insensitive(x, y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
    }
}

/// `x.to_lowercase().cmp(&y.to_lowercase())`, without copying ASCII text
/// (a sort makes this comparison many times per item).
fn compare_case_insensitive(x: &str, y: &str) -> Ordering {
    if x.is_ascii() && y.is_ascii() {
        return x
            .bytes()
            .map(|b| b.to_ascii_lowercase())
            .cmp(y.bytes().map(|b| b.to_ascii_lowercase()));
    }
    x.to_lowercase().cmp(&y.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(raw: &str) -> ListQuery {
        ListQuery::parse(Some(raw), &[]).expect("valid query")
    }

    fn items() -> Vec<Value> {
        vec![
            json!({"ID": "a", "Name": "Ann Smith", "Total": 10.5, "Status": "Open", "xp": {"Billed": true, "Tags": ["x", "y"]}, "Date": "2024-01-02T00:00:00+00:00"}),
            json!({"ID": "b", "Name": "Bob Jones", "Total": 2, "Status": "Completed", "xp": {"Billed": null}, "Date": "2023-12-31T00:00:00+00:00"}),
            json!({"ID": "c", "Name": "Cat Smithson", "Total": 100, "Status": "Canceled", "xp": null, "Date": "2024-06-01T00:00:00+00:00"}),
        ]
    }

    fn ids(page: &Value) -> Vec<String> {
        page["Items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|i| i["ID"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn exact_or_and_negation() {
        assert_eq!(ids(&q("Status=open").apply(items(), &[])), ["a"]);
        assert_eq!(
            ids(&q("Status=Open|Completed").apply(items(), &[])),
            ["a", "b"]
        );
        assert_eq!(ids(&q("Status=!Open").apply(items(), &[])), ["b", "c"]);
        assert_eq!(
            ids(&q("Status=!Open&Status=!Completed").apply(items(), &[])),
            ["c"]
        );
    }

    #[test]
    fn wildcards_and_absence() {
        assert_eq!(ids(&q("Name=*Smith*").apply(items(), &[])), ["a", "c"]);
        assert_eq!(ids(&q("Name=*Smith").apply(items(), &[])), ["a"]);
        assert_eq!(ids(&q("Name=Bob*").apply(items(), &[])), ["b"]);
        assert_eq!(ids(&q("xp.Billed=!*").apply(items(), &[])), ["b", "c"]);
        assert_eq!(ids(&q("xp.Billed=*").apply(items(), &[])), ["a"]);
        assert_eq!(ids(&q("xp.Tags=y").apply(items(), &[])), ["a"]);
    }

    #[test]
    fn comparisons_numbers_and_dates() {
        assert_eq!(ids(&q("Total=>5").apply(items(), &[])), ["a", "c"]);
        assert_eq!(ids(&q("Total=<10.5").apply(items(), &[])), ["b"]);
        assert_eq!(ids(&q("Total=!<10.5").apply(items(), &[])), ["a", "c"]);
        assert_eq!(ids(&q("Total=2").apply(items(), &[])), ["b"]);
        assert_eq!(ids(&q("Date=>2024-01-01").apply(items(), &[])), ["a", "c"]);
        assert_eq!(ids(&q("xp.Billed=true").apply(items(), &[])), ["a"]);
    }

    #[test]
    fn sort_and_search() {
        assert_eq!(
            ids(&q("sortBy=!Total").apply(items(), &[])),
            ["c", "a", "b"]
        );
        assert_eq!(
            ids(&q("sortBy=Status,ID").apply(items(), &[])),
            ["c", "b", "a"]
        );
        assert_eq!(
            ids(&q("search=smith").apply(items(), &["Name"])),
            ["a", "c"]
        );
        assert_eq!(
            ids(&q("search=bob%20smith").apply(items(), &["Name"])),
            ["a", "b", "c"]
        );
        assert_eq!(
            ids(&q("search=bob%20smith&searchType=AllTermsAnyField").apply(items(), &["Name"])),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(&q("search=open&searchOn=Status,ID").apply(items(), &["Name"])),
            ["a"]
        );
    }

    #[test]
    fn paging_meta() {
        let page = q("pageSize=2&page=2").apply(items(), &[]);
        assert_eq!(ids(&page), ["c"]);
        assert_eq!(
            page["Meta"],
            json!({"Page": 2, "PageSize": 2, "TotalCount": 3, "TotalPages": 2, "ItemRange": [3, 3], "NextPageKey": null})
        );
        let empty = q("Status=Nope").apply(items(), &[]);
        assert_eq!(
            empty,
            json!({"Meta": {"Page": 1, "PageSize": 20, "TotalCount": 0, "TotalPages": 0, "ItemRange": [0, 0]}, "Items": []})
        );
    }

    #[test]
    fn bad_paging_is_rejected() {
        for raw in ["pageSize=101", "pageSize=0", "page=0", "page=x"] {
            let err = ListQuery::parse(Some(raw), &[]).expect_err(raw);
            assert_eq!(err.status, axum::http::StatusCode::BAD_REQUEST);
        }
        assert!(ListQuery::parse(Some("pageSize=100"), &[]).is_ok());
    }

    #[test]
    fn instants_compare_the_same_with_or_without_parsing() {
        let bound = Bound::parse("2026-11-02T09:00:00+00:00");
        let cases = [
            ("2026-11-02T10:00:00+00:00", Ordering::Greater),
            ("2026-11-02T09:00:00+00:00", Ordering::Equal),
            // Another offset: parsed (08:00 UTC).
            ("2026-11-02T10:00:00+02:00", Ordering::Less),
            // Not an instant: compared as text, as before.
            ("2026-13-02T10:00:00+00:00", Ordering::Greater),
            ("2026-11-02", Ordering::Less),
        ];
        for (value, expected) in cases {
            assert_eq!(
                compare_to_bound(&json!(value), &bound),
                Some(expected),
                "{value}"
            );
        }
        assert_eq!(compare_case_insensitive("abc", "ABD"), Ordering::Less);
        assert_eq!(compare_lowercase("B-2", "b-10"), Ordering::Greater);
    }

    #[test]
    fn wildcard_matcher() {
        assert!(wildcard_match("abc", "a*c"));
        assert!(wildcard_match("abc", "*"));
        assert!(wildcard_match("abcbc", "a*bc"));
        assert!(!wildcard_match("abd", "a*c"));
    }
}
