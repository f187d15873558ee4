//! Our VRL functions: money, tax, FX, nominal codes, names, addresses,
//! dates, value maps, and the few general helpers our flows need (we build
//! VRL without its standard library to keep the build small).
//!
//! Each function is a [`Native`]: a name, its parameters and a plain Rust
//! closure over the resolved arguments. The finance tables are captured
//! when the flow is compiled, so a call is a lookup, never I/O.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use vrl::compiler::expression::Query;
use vrl::compiler::prelude::*;

use crate::money::{decimal_of, describe, round_money, to_exact_float, to_money_value, to_value};
use crate::tables::Finance;

type Body = dyn Fn(&[&Value]) -> Result<Value, String> + Send + Sync;

/// Most parameters any of our functions takes.
const MAX_PARAMETERS: usize = 4;

/// What a function returns, for VRL's type checker.
#[derive(Debug, Clone, Copy)]
enum Returns {
    Text,
    Integer,
    Float,
    Boolean,
    Array,
    Object,
    Any,
}

/// One of our functions.
#[derive(Clone)]
pub struct Native {
    name: &'static str,
    usage: &'static str,
    parameters: &'static [Parameter],
    returns: Returns,
    fallible: bool,
    body: Arc<Body>,
}

impl fmt::Debug for Native {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Native").field("name", &self.name).finish()
    }
}

impl Function for Native {
    fn identifier(&self) -> &'static str {
        self.name
    }

    fn usage(&self) -> &'static str {
        self.usage
    }

    fn category(&self) -> &'static str {
        "Ledgerbridge"
    }

    fn return_kind(&self) -> u16 {
        match self.returns {
            Returns::Text => kind::BYTES,
            Returns::Integer => kind::INTEGER,
            Returns::Float => kind::FLOAT,
            Returns::Boolean => kind::BOOLEAN,
            Returns::Array => kind::ARRAY,
            Returns::Object => kind::OBJECT,
            Returns::Any => kind::ANY,
        }
    }

    fn examples(&self) -> &'static [Example] {
        &[]
    }

    fn parameters(&self) -> &'static [Parameter] {
        self.parameters
    }

    fn compile(
        &self,
        _state: &TypeState,
        _ctx: &mut FunctionCompileContext,
        arguments: ArgumentList,
    ) -> Compiled {
        // A path argument (`.steps.products.Data`, `order.Lines`) is read
        // in place at run time instead of copied: lookups in fetched lists
        // stay cheap.
        let args = self
            .parameters
            .iter()
            .map(|p| match arguments.optional_query(p.keyword) {
                Ok(Some(query)) if query.is_external() || query.as_variable().is_some() => {
                    Some(Arg::Path(Box::new(query)))
                }
                _ => arguments.optional(p.keyword).map(Arg::Expr),
            })
            .collect();
        Ok(NativeCall {
            function: self.clone(),
            args,
        }
        .as_expr())
    }
}

#[derive(Debug, Clone)]
enum Arg {
    /// A path into the run's data or a variable, read by reference.
    Path(Box<Query>),
    /// Any other expression, evaluated.
    Expr(Box<dyn Expression>),
}

#[derive(Debug, Clone)]
struct NativeCall {
    function: Native,
    args: Vec<Option<Arg>>,
}

static NULL: Value = Value::Null;

fn read<'a>(query: &Query, ctx: &'a Context<'_>) -> &'a Value {
    let found = match query.external_path() {
        Some(path) => ctx.target().target_get(path).ok().flatten(),
        None => query
            .variable_ident()
            .and_then(|ident| ctx.state().variable(ident))
            .and_then(|value| value.get(query.path())),
    };
    found.unwrap_or(&NULL)
}

impl FunctionExpression for NativeCall {
    fn resolve(&self, ctx: &mut Context<'_>) -> Resolved {
        let count = self.args.len().min(MAX_PARAMETERS);
        let mut owned: [Value; MAX_PARAMETERS] = std::array::from_fn(|_| Value::Null);
        for (slot, arg) in owned.iter_mut().zip(&self.args) {
            if let Some(Arg::Expr(expr)) = arg {
                *slot = expr.resolve(ctx)?;
            }
        }
        let ctx: &Context<'_> = ctx;
        let mut refs: [&Value; MAX_PARAMETERS] = [&NULL; MAX_PARAMETERS];
        for (index, arg) in self.args.iter().take(count).enumerate() {
            refs[index] = match arg {
                Some(Arg::Path(query)) => read(query, ctx),
                _ => &owned[index],
            };
        }
        (self.function.body)(&refs[..count])
            .map_err(|message| ExpressionError::from(format!("{}: {message}", self.function.name)))
    }

    fn type_def(&self, _: &TypeState) -> TypeDef {
        let def = match self.function.returns {
            Returns::Text => TypeDef::bytes(),
            Returns::Integer => TypeDef::integer(),
            Returns::Float => TypeDef::float(),
            Returns::Boolean => TypeDef::boolean(),
            Returns::Array => TypeDef::array(Collection::any()),
            Returns::Object => TypeDef::object(Collection::any()),
            Returns::Any => TypeDef::any(),
        };
        if self.function.fallible {
            def.fallible()
        } else {
            def.infallible()
        }
    }
}

macro_rules! params {
    ($($p:expr),* $(,)?) => {{
        const PARAMETERS: &[Parameter] = &[$($p),*];
        PARAMETERS
    }};
}

const fn req(keyword: &'static str, description: &'static str) -> Parameter {
    Parameter::required(keyword, kind::ANY, description)
}

const fn opt(keyword: &'static str, description: &'static str) -> Parameter {
    Parameter::optional(keyword, kind::ANY, description)
}

fn native(
    name: &'static str,
    usage: &'static str,
    parameters: &'static [Parameter],
    returns: Returns,
    fallible: bool,
    body: impl Fn(&[&Value]) -> Result<Value, String> + Send + Sync + 'static,
) -> Box<dyn Function> {
    Box::new(Native {
        name,
        usage,
        parameters,
        returns,
        fallible,
        body: Arc::new(body),
    })
}

/// The result of checked decimal arithmetic, or the error for a result
/// beyond what a decimal holds (about ±7.9 × 10²⁸).
fn within_range(result: Option<Decimal>) -> Result<Decimal, String> {
    result.ok_or_else(|| {
        "the result is beyond the largest amount a decimal holds (28 digits)".to_owned()
    })
}

fn text(value: &Value, what: &str) -> Result<String, String> {
    match value {
        Value::Bytes(_) | Value::String(_) => {
            Ok(value.to_str_lossy().unwrap_or_default().into_owned())
        }
        Value::Integer(n) => Ok(n.to_string()),
        other => Err(format!("{what} must be a string, not {}", describe(other))),
    }
}

fn opt_text(value: &Value) -> Option<String> {
    match value {
        Value::Bytes(_) | Value::String(_) => {
            Some(value.to_str_lossy().unwrap_or_default().trim().to_owned())
                .filter(|s| !s.is_empty())
        }
        Value::Integer(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A day from `YYYY-MM-DD`, an ISO-8601 timestamp, KashFlow's
/// `YYYY-MM-DD HH:mm:ss` or a VRL timestamp.
pub fn day_of(value: &Value, what: &str) -> Result<NaiveDate, String> {
    if let Value::Timestamp(t) = value {
        return Ok(t.date_naive());
    }
    let raw = text(value, what)?;
    // A timestamp's day is its UTC day, as KashFlow's dates are UTC.
    if raw.trim().len() > 10 {
        if let Ok(at) = instant_of(value, what) {
            return Ok(at.date_naive());
        }
    }
    let head = raw.trim().get(..10).unwrap_or(raw.trim());
    NaiveDate::parse_from_str(head, "%Y-%m-%d")
        .map_err(|_| format!("{what} must be a date (YYYY-MM-DD or ISO-8601), not {raw:?}"))
}

/// An instant from ISO-8601 (with offset or `Z`; without one it is UTC),
/// KashFlow's `YYYY-MM-DD HH:mm:ss`, a bare date, or a VRL timestamp.
pub fn instant_of(value: &Value, what: &str) -> Result<DateTime<Utc>, String> {
    if let Value::Timestamp(t) = value {
        return Ok(*t);
    }
    let raw = text(value, what)?;
    let s = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc());
    }
    Err(format!(
        "{what} must be an ISO-8601 timestamp (2025-01-15T10:00:00Z) or YYYY-MM-DD HH:mm:ss, not {s:?}"
    ))
}

fn json_of(value: &Value) -> serde_json::Value {
    value.clone().try_into().unwrap_or(serde_json::Value::Null)
}

/// `address_lines` for a value: an OrderCloud address object (Street1,
/// Street2, City, State) or an array of strings → exactly `n` entries,
/// empty parts dropped and order kept; surplus parts join the last line
/// with `, `; missing lines are `null`.
pub fn address_lines(address: &Value, n: usize) -> Result<Vec<Option<String>>, String> {
    if n == 0 {
        return Err("n must be at least 1".to_owned());
    }
    let parts: Vec<String> = match address {
        Value::Object(map) => ["Street1", "Street2", "City", "State"]
            .iter()
            .filter_map(|k| map.get(*k).and_then(opt_text))
            .collect(),
        Value::Array(items) => items.iter().filter_map(opt_text).collect(),
        Value::Bytes(_) | Value::String(_) => text(address, "address")?
            .split([',', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Null => Vec::new(),
        other => {
            return Err(format!(
                "address must be an object, an array or a string, not {}",
                describe(other)
            ))
        }
    };
    let mut lines: Vec<Option<String>> = Vec::with_capacity(n);
    for (index, part) in parts.iter().enumerate() {
        if index < n - 1 || parts.len() == n {
            lines.push(Some(part.clone()));
        } else {
            lines.push(Some(parts[index..].join(", ")));
            break;
        }
    }
    lines.resize(n, None);
    Ok(lines)
}

/// Full name from parts: trimmed, empty parts dropped, one space between.
pub fn join_name(parts: &[&Value]) -> String {
    parts
        .iter()
        .filter_map(|part| opt_text(part))
        .collect::<Vec<_>>()
        .join(" ")
}

fn remove_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !matches!(v, Value::Null))
                .map(|(k, v)| (k, remove_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(remove_nulls).collect()),
        other => other,
    }
}

/// Strings compared trimmed and without case (no allocation for UTF-8
/// text); anything else by value.
fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a.to_str_lossy(), b.to_str_lossy()) {
        (Some(x), Some(y)) => x.trim().eq_ignore_ascii_case(y.trim()),
        _ => a == b,
    }
}

/// Whole units a storefront may sell of a stock quantity (KashFlow keeps
/// decimals; OrderCloud whole numbers): rounded down, never below zero,
/// capped at `i32::MAX` (OrderCloud's largest quantity).
pub fn stock_units(quantity: Decimal) -> i64 {
    if quantity <= Decimal::ZERO {
        return 0;
    }
    rust_decimal::prelude::ToPrimitive::to_i64(&quantity.floor())
        .unwrap_or(i64::MAX)
        .min(i64::from(i32::MAX))
}

/// The names of our functions, for the README's table and error hints.
pub const NAMES: &[&str] = &[
    "money",
    "money_add",
    "money_sub",
    "money_mul",
    "money_div",
    "money_sum",
    "round_money",
    "line_total",
    "vat_amount",
    "money_cmp",
    "to_number",
    "stock_units",
    "tax_rate",
    "tax_region",
    "fx_rate",
    "fx_convert",
    "nominal_code",
    "value_map",
    "join_name",
    "split_name",
    "address_lines",
    "kashflow_date",
    "iso_date",
    "add_days",
    "date_of",
    "upcase",
    "downcase",
    "strip_prefix",
    "to_string",
    "length",
    "push",
    "concat",
    "includes",
    "last",
    "find",
    "compact",
    "invoice_totals",
    "kashflow_address",
    "flatten",
    "first_of",
    "account_code",
    "now",
];

/// All our functions, bound to a flow's tables.
pub fn all(finance: Arc<Finance>) -> Vec<Box<dyn Function>> {
    let mut fns: Vec<Box<dyn Function>> = Vec::new();

    // --- money -----------------------------------------------------------
    fns.push(native(
        "money",
        "A decimal string from a number or a numeric string (`money(12.5)` → \"12.5\").",
        params![req("value", "number or numeric string")],
        Returns::Text,
        true,
        |a| Ok(to_value(decimal_of(a[0], "value")?)),
    ));
    fns.push(native(
        "money_add",
        "a + b in decimal.",
        params![req("a", "amount"), req("b", "amount")],
        Returns::Text,
        true,
        |a| {
            let sum = decimal_of(a[0], "a")?.checked_add(decimal_of(a[1], "b")?);
            Ok(to_value(within_range(sum)?))
        },
    ));
    fns.push(native(
        "money_sub",
        "a − b in decimal.",
        params![req("a", "amount"), req("b", "amount")],
        Returns::Text,
        true,
        |a| {
            let difference = decimal_of(a[0], "a")?.checked_sub(decimal_of(a[1], "b")?);
            Ok(to_value(within_range(difference)?))
        },
    ));
    fns.push(native(
        "money_mul",
        "a × b in decimal (not rounded).",
        params![req("a", "amount"), req("b", "amount")],
        Returns::Text,
        true,
        |a| {
            let product = decimal_of(a[0], "a")?.checked_mul(decimal_of(a[1], "b")?);
            Ok(to_value(within_range(product)?))
        },
    ));
    fns.push(native(
        "money_div",
        "a ÷ b in decimal (not rounded).",
        params![req("a", "amount"), req("b", "amount")],
        Returns::Text,
        true,
        |a| {
            let divisor = decimal_of(a[1], "b")?;
            if divisor.is_zero() {
                return Err("division by zero".to_owned());
            }
            Ok(to_value(within_range(
                decimal_of(a[0], "a")?.checked_div(divisor),
            )?))
        },
    ));
    fns.push(native(
        "money_sum",
        "Sum of an array of amounts (or of field `field` of an array of objects); nulls count as zero.",
        params![
            req("values", "array"),
            opt("field", "field of each object to add")
        ],
        Returns::Text,
        true,
        |a| {
            let Value::Array(items) = a[0] else {
                return Err(format!("values must be an array, not {}", describe(a[0])));
            };
            let field = opt_text(a[1]);
            let mut total = Decimal::ZERO;
            for (index, item) in items.iter().enumerate() {
                let value = match (&field, item) {
                    (Some(f), Value::Object(map)) => {
                        map.get(f.as_str()).cloned().unwrap_or(Value::Null)
                    }
                    _ => item.clone(),
                };
                if matches!(value, Value::Null) {
                    continue;
                }
                total = within_range(
                    total.checked_add(decimal_of(&value, &format!("values[{index}]"))?),
                )?;
            }
            Ok(to_value(total))
        },
    ));
    fns.push(native(
        "round_money",
        "Rounds to 2 dp, half away from zero.",
        params![req("value", "amount")],
        Returns::Text,
        true,
        |a| Ok(to_money_value(decimal_of(a[0], "value")?)),
    ));
    fns.push(native(
        "line_total",
        "quantity × unit price, rounded to 2 dp.",
        params![req("quantity", "number"), req("unit_price", "amount")],
        Returns::Text,
        true,
        |a| {
            let total = decimal_of(a[0], "quantity")?.checked_mul(decimal_of(a[1], "unit_price")?);
            Ok(to_money_value(within_range(total)?))
        },
    ));
    fns.push(native(
        "vat_amount",
        "net × rate% , rounded to 2 dp (`vat_amount(\"3.33\", \"5\")` → \"0.17\").",
        params![req("net", "amount"), req("rate", "percentage")],
        Returns::Text,
        true,
        |a| {
            let vat = decimal_of(a[0], "net")?
                .checked_mul(decimal_of(a[1], "rate")?)
                .map(|product| product / Decimal::ONE_HUNDRED);
            Ok(to_money_value(within_range(vat)?))
        },
    ));
    fns.push(native(
        "money_cmp",
        "−1, 0 or 1 as a <, =, > b.",
        params![req("a", "amount"), req("b", "amount")],
        Returns::Integer,
        true,
        |a| {
            Ok(Value::Integer(
                match decimal_of(a[0], "a")?.cmp(&decimal_of(a[1], "b")?) {
                    std::cmp::Ordering::Less => -1,
                    std::cmp::Ordering::Equal => 0,
                    std::cmp::Ordering::Greater => 1,
                },
            ))
        },
    ));
    fns.push(native(
        "to_number",
        "An amount as a JSON number, for request bodies; an error if it cannot be sent exactly.",
        params![req("value", "amount")],
        Returns::Float,
        true,
        |a| {
            let d = decimal_of(a[0], "value")?;
            if d.fract().is_zero() {
                if let Some(n) = rust_decimal::prelude::ToPrimitive::to_i64(&d) {
                    return Ok(Value::Integer(n));
                }
            }
            let float = NotNan::new(to_exact_float(d)?).map_err(|_| "not a number")?;
            Ok(Value::Float(float))
        },
    ));

    fns.push(native(
        "stock_units",
        "Whole units a storefront may sell of a stock quantity: rounded down, never below 0 (`stock_units(\"7.5\")` → 7).",
        params![req("quantity", "number or numeric string")],
        Returns::Integer,
        true,
        |a| Ok(Value::Integer(stock_units(decimal_of(a[0], "quantity")?))),
    ));

    // --- tax and FX --------------------------------------------------------
    let f = finance.clone();
    fns.push(native(
        "tax_rate",
        "VAT percentage for a tax class, a country and a day, from tables.tax.",
        params![
            req("tax_class", "standard, reduced, zero, …"),
            req("country", "ISO alpha-2"),
            req("date", "the tax point")
        ],
        Returns::Text,
        true,
        move |a| {
            Ok(to_value(f.tax_rate(
                &text(a[0], "tax_class")?,
                &text(a[1], "country")?,
                day_of(a[2], "date")?,
            )?))
        },
    ));
    let f = finance.clone();
    fns.push(native(
        "tax_region",
        "The VAT region of a country (tables.tax.regions), or \"export\".",
        params![req("country", "ISO alpha-2")],
        Returns::Text,
        true,
        move |a| {
            Ok(Value::from(
                f.tax_region(&text(a[0], "country")?).to_owned(),
            ))
        },
    ));
    let f = finance.clone();
    fns.push(native(
        "fx_rate",
        "Units of `to` per one `from` on a day (6 dp), from tables.fx.",
        params![
            req("from", "ISO 4217"),
            req("to", "ISO 4217"),
            req("date", "the day")
        ],
        Returns::Text,
        true,
        move |a| {
            Ok(to_value(f.fx_rate(
                &text(a[0], "from")?,
                &text(a[1], "to")?,
                day_of(a[2], "date")?,
            )?))
        },
    ));
    let f = finance.clone();
    fns.push(native(
        "fx_convert",
        "An amount converted between currencies on a day, rounded to 2 dp.",
        params![
            req("amount", "amount"),
            req("from", "ISO 4217"),
            req("to", "ISO 4217"),
            req("date", "the day")
        ],
        Returns::Text,
        true,
        move |a| {
            Ok(to_money_value(f.fx_convert(
                decimal_of(a[0], "amount")?,
                &text(a[1], "from")?,
                &text(a[2], "to")?,
                day_of(a[3], "date")?,
            )?))
        },
    ));

    // --- lookups -----------------------------------------------------------
    let f = finance.clone();
    fns.push(native("nominal_code", "`code` if given, else the product's code in tables.nominal.products, else the named default, else tables.nominal.default.",
        params![req("code", "the known code or null"), opt("product", "product code"), opt("default", "name in tables.nominal.named")], Returns::Integer, true,
        move |a| {
            let known = match a[0] {
                Value::Null => None,
                Value::Integer(n) => Some(*n),
                other => Some(text(other, "code")?.trim().parse::<i64>().map_err(|_| format!("code must be an integer, not {}", describe(other)))?),
            };
            Ok(Value::Integer(f.nominal_code(known, opt_text(a[1]).as_deref(), opt_text(a[2]).as_deref())?))
        }));
    let f = finance;
    fns.push(native(
        "value_map",
        "Looks `key` up in tables.value_maps.<name>; `default` when absent (else an error).",
        params![
            req("name", "map name"),
            req("key", "value to map"),
            opt("default", "value when the key is absent")
        ],
        Returns::Any,
        true,
        move |a| {
            let default = (!matches!(a[2], Value::Null)).then(|| json_of(a[2]));
            let key = opt_text(a[1]).unwrap_or_default();
            Ok(Value::from(f.value_map(
                &text(a[0], "name")?,
                &key,
                default.as_ref(),
            )?))
        },
    ));

    // --- names and addresses -----------------------------------------------
    fns.push(native(
        "join_name",
        "Joins name parts with one space, skipping null and empty ones.",
        params![
            req("first", "part"),
            opt("second", "part"),
            opt("third", "part")
        ],
        Returns::Text,
        false,
        |a| Ok(Value::from(join_name(a))),
    ));
    fns.push(native(
        "split_name",
        "\"Ada King Lovelace\" → {\"first\": \"Ada King\", \"last\": \"Lovelace\"}.",
        params![req("name", "full name")],
        Returns::Object,
        true,
        |a| {
            let full = opt_text(a[0]).unwrap_or_default();
            let words: Vec<&str> = full.split_whitespace().collect();
            let (first, last) = match words.len() {
                0 => (String::new(), String::new()),
                1 => (words[0].to_owned(), String::new()),
                n => (words[..n - 1].join(" "), words[n - 1].to_owned()),
            };
            let mut map = ObjectMap::new();
            map.insert("first".into(), Value::from(first));
            map.insert("last".into(), Value::from(last));
            Ok(Value::Object(map))
        },
    ));
    fns.push(native("address_lines", "An address (object, array or text) → exactly n lines; empty parts dropped, missing lines null, surplus joined into the last.",
        params![req("address", "address"), req("n", "number of lines")], Returns::Array, true,
        |a| {
            let n = a[1].as_integer().filter(|n| (1..=20).contains(n)).ok_or("n must be an integer from 1 to 20")?;
            let lines = address_lines(a[0], n as usize)?;
            Ok(Value::Array(lines.into_iter().map(|l| l.map(Value::from).unwrap_or(Value::Null)).collect()))
        }));

    // --- dates -------------------------------------------------------------
    fns.push(native(
        "kashflow_date",
        "ISO-8601 → KashFlow's `YYYY-MM-DD HH:mm:ss` (UTC).",
        params![req("value", "timestamp")],
        Returns::Text,
        true,
        |a| {
            Ok(Value::from(
                instant_of(a[0], "value")?
                    .format("%Y-%m-%d %H:%M:%S")
                    .to_string(),
            ))
        },
    ));
    fns.push(native("iso_date", "KashFlow's `YYYY-MM-DD HH:mm:ss` (or any accepted form) → ISO-8601 UTC (`2025-01-15T10:00:00Z`).",
        params![req("value", "timestamp")], Returns::Text, true,
        |a| Ok(Value::from(instant_of(a[0], "value")?.to_rfc3339_opts(SecondsFormat::Secs, true)))));
    fns.push(native(
        "add_days",
        "A timestamp plus n days, as ISO-8601 UTC.",
        params![req("value", "timestamp"), req("days", "integer")],
        Returns::Text,
        true,
        |a| {
            let days = a[1].as_integer().ok_or("days must be an integer")?;
            let start = instant_of(a[0], "value")?;
            let at = Duration::try_days(days)
                .and_then(|days| start.checked_add_signed(days))
                .ok_or_else(|| format!("{start} plus {days} days is beyond the calendar"))?;
            Ok(Value::from(at.to_rfc3339_opts(SecondsFormat::Secs, true)))
        },
    ));
    fns.push(native(
        "date_of",
        "The day (`YYYY-MM-DD`) of a timestamp.",
        params![req("value", "timestamp")],
        Returns::Text,
        true,
        |a| {
            Ok(Value::from(
                day_of(a[0], "value")?.format("%Y-%m-%d").to_string(),
            ))
        },
    ));

    // --- general helpers (VRL's stdlib is not built in) ------------------------
    fns.push(native(
        "upcase",
        "Upper case.",
        params![req("value", "string")],
        Returns::Text,
        true,
        |a| Ok(Value::from(text(a[0], "value")?.to_uppercase())),
    ));
    fns.push(native(
        "downcase",
        "Lower case.",
        params![req("value", "string")],
        Returns::Text,
        true,
        |a| Ok(Value::from(text(a[0], "value")?.to_lowercase())),
    ));
    fns.push(native(
        "strip_prefix",
        "The text without `prefix` when it starts with it (case-insensitive), else null (`strip_prefix(\"OC-ADA\", \"oc-\")` → \"ADA\").",
        params![req("value", "string"), req("prefix", "string")],
        Returns::Any,
        false,
        |a| {
            let value = opt_text(a[0]).unwrap_or_default();
            let prefix = opt_text(a[1]).unwrap_or_default();
            let starts = value
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(&prefix));
            Ok(if starts {
                Value::from(value[prefix.len()..].to_owned())
            } else {
                Value::Null
            })
        },
    ));
    fns.push(native(
        "to_string",
        "Any scalar as a string (null → \"\").",
        params![req("value", "scalar")],
        Returns::Text,
        false,
        |a| {
            Ok(Value::from(match a[0] {
                Value::Null => String::new(),
                Value::Float(f) => f.to_string(),
                Value::Boolean(b) => b.to_string(),
                other => opt_text(other).unwrap_or_default(),
            }))
        },
    ));
    fns.push(native(
        "length",
        "Length of an array, object or string.",
        params![req("value", "collection")],
        Returns::Integer,
        true,
        |a| {
            Ok(Value::Integer(match a[0] {
                Value::Array(v) => v.len() as i64,
                Value::Object(m) => m.len() as i64,
                Value::Bytes(b) => b.len() as i64,
                Value::Null => 0,
                other => {
                    return Err(format!(
                        "value must be an array, object or string, not {}",
                        describe(other)
                    ))
                }
            }))
        },
    ));
    fns.push(native(
        "push",
        "The array with one more item at its end.",
        params![req("array", "array"), req("item", "item")],
        Returns::Array,
        true,
        |a| {
            let Value::Array(items) = a[0] else {
                return Err(format!("array must be an array, not {}", describe(a[0])));
            };
            let mut items = items.clone();
            items.push(a[1].clone());
            Ok(Value::Array(items))
        },
    ));
    fns.push(native(
        "concat",
        "Two arrays end to end (null counts as empty).",
        params![req("a", "array"), req("b", "array")],
        Returns::Array,
        true,
        |a| {
            let mut out = Vec::new();
            for (value, name) in [(a[0], "a"), (a[1], "b")] {
                match value {
                    Value::Array(items) => out.extend(items.iter().cloned()),
                    Value::Null => {}
                    other => {
                        return Err(format!("{name} must be an array, not {}", describe(other)))
                    }
                }
            }
            Ok(Value::Array(out))
        },
    ));
    fns.push(native(
        "includes",
        "Whether the array holds the item (strings compared without case).",
        params![req("array", "array"), req("item", "item")],
        Returns::Boolean,
        true,
        |a| match a[0] {
            Value::Array(items) => Ok(Value::Boolean(items.iter().any(|i| loosely_equal(i, a[1])))),
            Value::Null => Ok(Value::Boolean(false)),
            other => Err(format!("array must be an array, not {}", describe(other))),
        },
    ));
    fns.push(native(
        "last",
        "The last element of an array, or null when it is empty (the latest refund of a charge, say).",
        params![req("array", "array")],
        Returns::Any,
        true,
        |a| match a[0] {
            Value::Array(items) => Ok(items.last().cloned().unwrap_or(Value::Null)),
            Value::Null => Ok(Value::Null),
            other => Err(format!("array must be an array, not {}", describe(other))),
        },
    ));
    fns.push(native("find", "The first object of an array whose `field` equals `value` (strings without case), or null: a lookup in a fetched list.",
        params![req("array", "array of objects"), req("field", "field name"), req("value", "value")], Returns::Any, true,
        |a| {
            let field = text(a[1], "field")?;
            match a[0] {
                Value::Array(items) => Ok(items
                    .iter()
                    .find(|item| matches!(item, Value::Object(map) if map.get(field.as_str()).is_some_and(|v| loosely_equal(v, a[2]))))
                    .cloned()
                    .unwrap_or(Value::Null)),
                Value::Null => Ok(Value::Null),
                other => Err(format!("array must be an array, not {}", describe(other))),
            }
        }));
    fns.push(native(
        "invoice_totals",
        "Totals of invoice lines as KashFlow computes them: net = Σ round(Quantity × Rate), vat = Σ VATAmount, gross = net + vat (strings).",
        params![req("lines", "array of {Quantity, Rate, VATAmount}")],
        Returns::Object,
        true,
        |a| {
            let Value::Array(items) = a[0] else {
                return Err(format!("lines must be an array, not {}", describe(a[0])));
            };
            let mut net = Decimal::ZERO;
            let mut vat = Decimal::ZERO;
            for (index, item) in items.iter().enumerate() {
                let Value::Object(line) = item else {
                    return Err(format!("lines[{index}] must be an object"));
                };
                let field = |name: &str| line.get(name).cloned().unwrap_or(Value::Null);
                let quantity = decimal_of(&field("Quantity"), &format!("lines[{index}].Quantity"))?;
                let rate = decimal_of(&field("Rate"), &format!("lines[{index}].Rate"))?;
                let line_net = within_range(quantity.checked_mul(rate))?;
                net = within_range(net.checked_add(round_money(line_net)))?;
                let line_vat = match field("VATAmount") {
                    Value::Null => Decimal::ZERO,
                    value => decimal_of(&value, &format!("lines[{index}].VATAmount"))?,
                };
                vat = within_range(vat.checked_add(line_vat))?;
            }
            let mut map = ObjectMap::new();
            map.insert("net".into(), to_money_value(net));
            map.insert("vat".into(), to_money_value(vat));
            map.insert("gross".into(), to_money_value(within_range(net.checked_add(vat))?));
            Ok(Value::Object(map))
        },
    ));
    fns.push(native(
        "kashflow_address",
        "An OrderCloud address as KashFlow's: address_lines(address, 4) as Line1–Line4 (absent when empty), PostCode from Zip, CountryCode upper-cased.",
        params![req("address", "OrderCloud address object")],
        Returns::Object,
        true,
        |a| {
            let Value::Object(source) = a[0] else {
                return Err(format!("address must be an object, not {}", describe(a[0])));
            };
            let mut out = ObjectMap::new();
            for (index, line) in address_lines(a[0], 4)?.into_iter().enumerate() {
                if let Some(line) = line {
                    out.insert(format!("Line{}", index + 1).into(), Value::from(line));
                }
            }
            if let Some(zip) = source.get("Zip").filter(|v| !matches!(v, Value::Null)) {
                out.insert("PostCode".into(), zip.clone());
            }
            if let Some(country) = source.get("Country").and_then(opt_text) {
                out.insert("CountryCode".into(), Value::from(country.to_uppercase()));
            }
            Ok(Value::Object(out))
        },
    ));
    fns.push(native(
        "flatten",
        "An array of arrays as one array (one level; non-arrays kept).",
        params![req("value", "array")],
        Returns::Array,
        true,
        |a| match a[0] {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::Array(inner) => out.extend(inner.iter().cloned()),
                        Value::Null => {}
                        other => out.push(other.clone()),
                    }
                }
                Ok(Value::Array(out))
            }
            Value::Null => Ok(Value::Array(Vec::new())),
            other => Err(format!("value must be an array, not {}", describe(other))),
        },
    ));
    fns.push(native(
        "first_of",
        "The first argument that is neither null nor an empty string (else null): `first_of(.a, .b, \"default\")`.",
        params![req("a", "value"), opt("b", "value"), opt("c", "value"), opt("d", "value")],
        Returns::Any,
        false,
        |a| Ok(a
            .iter()
            .find(|v| match v {
                Value::Null => false,
                Value::Bytes(_) | Value::String(_) => opt_text(v).is_some(),
                _ => true,
            })
            .map(|v| (*v).clone())
            .unwrap_or(Value::Null)),
    ));
    fns.push(native(
        "account_code",
        "An account code from any text: upper case, characters outside A-Z 0-9 - _ replaced by - (`account_code(\"OC-\", \"jo@x.com\")` → \"OC-JO-X-COM\").",
        params![req("prefix", "kept as is"), req("value", "text")],
        Returns::Text,
        true,
        |a| {
            let cleaned: String = text(a[1], "value")?
                .chars()
                .map(|c| {
                    let c = c.to_ascii_uppercase();
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }
                })
                .collect();
            Ok(Value::from(format!("{}{cleaned}", opt_text(a[0]).unwrap_or_default())))
        },
    ));
    fns.push(native(
        "now",
        "The current instant, ISO-8601 UTC (avoid in tested mappings: tests want fixed inputs).",
        params![],
        Returns::Text,
        false,
        |_| {
            Ok(Value::from(
                Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
            ))
        },
    ));
    fns.push(native(
        "compact",
        "The value with null fields removed from every object in it.",
        params![req("value", "value")],
        Returns::Any,
        false,
        |a| Ok(remove_nulls(a[0].clone())),
    ));
    fns
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn address_lines_drop_empties_and_fold_the_surplus() {
        let mut map = ObjectMap::new();
        map.insert("Street1".into(), Value::from("1 High St"));
        map.insert("Street2".into(), Value::from(" "));
        map.insert("City".into(), Value::from("Leeds"));
        let address = Value::Object(map);
        assert_eq!(
            address_lines(&address, 4).unwrap(),
            vec![
                Some("1 High St".to_owned()),
                Some("Leeds".to_owned()),
                None,
                None
            ]
        );
        let text = Value::from("Flat 2, 1 High St, Leeds, West Yorkshire");
        assert_eq!(
            address_lines(&text, 2).unwrap(),
            vec![
                Some("Flat 2".to_owned()),
                Some("1 High St, Leeds, West Yorkshire".to_owned())
            ]
        );
    }

    #[test]
    fn dates_convert_both_ways() {
        let at = instant_of(&Value::from("2025-01-15T11:00:00+01:00"), "v").unwrap();
        assert_eq!(
            at.format("%Y-%m-%d %H:%M:%S").to_string(),
            "2025-01-15 10:00:00"
        );
        let back = instant_of(&Value::from("2025-01-15 10:00:00"), "v").unwrap();
        assert_eq!(back, at);
        assert!(instant_of(&Value::from("15/01/2025"), "v")
            .unwrap_err()
            .contains("ISO-8601"));
    }

    #[test]
    fn stock_units_round_down_and_never_go_negative() {
        assert_eq!(stock_units(Decimal::new(75, 1)), 7);
        assert_eq!(stock_units(Decimal::new(12, 0)), 12);
        assert_eq!(stock_units(Decimal::new(-3, 0)), 0);
        assert_eq!(stock_units(Decimal::new(9, 1)), 0);
        assert_eq!(stock_units(Decimal::MAX), i64::from(i32::MAX));
    }

    #[test]
    fn every_documented_name_is_a_function() {
        let fns = all(std::sync::Arc::new(Finance::default()));
        let mut names: Vec<&str> = fns.iter().map(|f| f.identifier()).collect();
        names.sort_unstable();
        let mut documented = NAMES.to_vec();
        documented.sort_unstable();
        assert_eq!(names, documented);
    }

    proptest! {
        #[test]
        fn kashflow_dates_round_trip(secs in 0i64..4_102_444_800) {
            let at = DateTime::from_timestamp(secs, 0).unwrap();
            let kashflow = at.format("%Y-%m-%d %H:%M:%S").to_string();
            let iso = at.to_rfc3339_opts(SecondsFormat::Secs, true);
            prop_assert_eq!(instant_of(&Value::from(kashflow), "v").unwrap(), at);
            prop_assert_eq!(instant_of(&Value::from(iso), "v").unwrap(), at);
        }

        #[test]
        fn address_lines_always_give_n_lines_and_lose_nothing(parts in proptest::collection::vec("[a-z]{0,5}", 0..8), n in 1usize..6) {
            let value = Value::Array(parts.iter().map(|p| Value::from(p.clone())).collect());
            let lines = address_lines(&value, n).unwrap();
            prop_assert_eq!(lines.len(), n);
            let kept: Vec<&String> = parts.iter().filter(|p| !p.is_empty()).collect();
            let joined = lines.iter().flatten().cloned().collect::<Vec<_>>().join(", ");
            prop_assert_eq!(joined, kept.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
        }
    }
}
