//! The flow model: what a flow file (`flows/*.yaml`) says, and what the
//! visual flow builder will edit. Plain data, no behaviour beyond small
//! helpers; loading, compiling and running live in `ledgerbridge-mapping`.
//!
//! A flow is a trigger, a graph of steps, the tables its mappings read
//! (tax rates, exchange rates, nominal codes, value maps), an error policy
//! and its own tests. Every struct rejects unknown keys, so a misspelt key
//! is an error naming its path instead of a silently ignored setting.
//! `schema/flow.schema.json` is generated from these types.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The file format this build reads (`version: 1`).
pub const FORMAT_VERSION: u32 = 1;

/// A flow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Ledgerbridge flow")]
pub struct FlowFile {
    /// Format version of the file; this build reads `1`.
    pub version: u32,
    /// The flow's name (`order-to-invoice`); runs and versions are kept under it.
    pub name: String,
    /// What the flow is for, in a sentence or two.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// What starts a run.
    pub trigger: Trigger,
    /// The connections the steps call, by alias: `kashflow: kashflow:main`
    /// (the part before `:` is the system: kashflow, ordercloud, xconnect, gateway).
    #[serde(default)]
    pub connections: BTreeMap<String, String>,
    /// Free settings the programs read as `.vars` (e.g. `home_currency`).
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Rates and lookup tables our mapping functions read.
    #[serde(default)]
    pub tables: Tables,
    /// What happens when a step fails, unless the step says otherwise.
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// The steps; the first one runs first. Each goes on to `next`, or to the
    /// step below it when `next` is absent; `end` stops the run.
    pub steps: Vec<Step>,
    /// Offline tests: a sample input, canned responses, the expected requests.
    #[serde(default)]
    pub tests: Vec<FlowTest>,
}

/// What starts a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A webhook from a connection, e.g. OrderCloud's order submit.
    Webhook {
        /// Connection alias (a key of `connections`).
        connection: String,
        /// The route the webhook is configured on, e.g. `v1/orders/{direction}/{orderID}/submit`.
        route: String,
        /// The HTTP verb of that route.
        #[serde(default = "default_verb")]
        verb: String,
    },
    /// A change found by polling a connection that has no webhooks
    /// (KashFlow). The run's input is `{source, kind, key, record}`: the
    /// poll source (`kashflow:products`), the kind of change, the record's
    /// key (a product code) and the record as listed.
    Poll {
        /// Connection alias (a key of `connections`).
        connection: String,
        /// What is listed, e.g. `products` (the source is `<system>:<resource>`).
        resource: String,
        /// The kind of change that starts a run, e.g. `product.stock`.
        change: String,
    },
    /// A schedule (daily reconciliation and the like).
    Schedule {
        /// Every so many seconds.
        every_secs: u64,
    },
    /// Only started by hand (`ledgerbridge runs start`) or by tests.
    Manual,
}

fn default_verb() -> String {
    "POST".to_owned()
}

/// One step of the graph. Exactly one of `fetch`, `map`, `condition`,
/// `action` and `write_back` is given.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique id; the step's output is `.steps.<id>` in later programs.
    pub id: String,
    /// Read from a connection (a lookup or enrichment); never changes anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<Call>,
    /// Compute a value with a VRL program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<MapStep>,
    /// Branch on a VRL condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Write to a target (create an invoice, post a payment), effectively once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Call>,
    /// Confirm to the source (e.g. PATCH the order's `xp`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_back: Option<Call>,
    /// The step to run after this one (`end` stops); default: the step below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Overrides the flow's error policy for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<ErrorPolicy>,
}

/// The kind of a step, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepKind<'a> {
    /// A read from a connection.
    Fetch(&'a Call),
    /// A mapping.
    Map(&'a MapStep),
    /// A branch.
    Condition(&'a Condition),
    /// A write to a target.
    Action(&'a Call),
    /// A confirmation to the source.
    WriteBack(&'a Call),
}

impl Step {
    /// The step's kind, or the names of the kinds given when that is not
    /// exactly one.
    pub fn kind(&self) -> Result<StepKind<'_>, Vec<&'static str>> {
        let mut kinds = Vec::new();
        let mut names = Vec::new();
        if let Some(call) = &self.fetch {
            kinds.push(StepKind::Fetch(call));
            names.push("fetch");
        }
        if let Some(map) = &self.map {
            kinds.push(StepKind::Map(map));
            names.push("map");
        }
        if let Some(condition) = &self.condition {
            kinds.push(StepKind::Condition(condition));
            names.push("condition");
        }
        if let Some(call) = &self.action {
            kinds.push(StepKind::Action(call));
            names.push("action");
        }
        if let Some(call) = &self.write_back {
            kinds.push(StepKind::WriteBack(call));
            names.push("write_back");
        }
        if kinds.len() == 1 {
            Ok(kinds[0])
        } else {
            Err(names)
        }
    }
}

/// A request to a connection. `path`, `body` and `key` are VRL programs
/// over the run's data (`.input`, `.vars`, `.steps`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Call {
    /// Connection alias (a key of `connections`).
    pub connection: String,
    /// HTTP method.
    pub method: Method,
    /// VRL program giving the path under the connection's base URL, e.g.
    /// `"/invoices"` or `"/v1/orders/Incoming/" + .input.RouteParams.orderID`.
    pub path: String,
    /// VRL program giving the JSON body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// VRL program giving the business key that makes the write effectively
    /// once (actions only), e.g. `"order:" + .input.RouteParams.orderID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// HTTP methods a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// Read.
    Get,
    /// Create.
    Post,
    /// Replace.
    Put,
    /// Change some fields.
    Patch,
    /// Remove.
    Delete,
}

impl Method {
    /// `GET`, `POST`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// A mapping step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapStep {
    /// VRL program; its value is the step's output.
    pub program: String,
    /// VRL program giving an array: the mapping then runs once per element
    /// (seen as `.item`, its position as `.index`) and the output is the
    /// array of results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub each: Option<String>,
}

/// A branch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// VRL program giving a boolean.
    #[serde(rename = "if")]
    pub when: String,
    /// Step to run when true (`end` stops).
    pub then: String,
    /// Step to run when false (`end` stops); default: the step below.
    #[serde(default, rename = "else", skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<String>,
}

/// What happens when a step fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorPolicy {
    /// Attempts for transient failures (5xx, timeouts, 429) before giving up.
    pub max_attempts: u32,
    /// First backoff in milliseconds; doubles each attempt, with full jitter.
    pub backoff_ms: u64,
    /// When the step cannot succeed (a validation error, a mapping error, or
    /// attempts used up).
    pub then: OnFailure,
}

impl Default for ErrorPolicy {
    fn default() -> Self {
        ErrorPolicy {
            max_attempts: 10,
            backoff_ms: 500,
            then: OnFailure::Park,
        }
    }
}

/// The last resort of an error policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Park the run in the dead-letter queue with its context: a human decides.
    #[default]
    Park,
    /// Record the failure, give the step a `null` output and go on.
    Skip,
    /// Fail the run for good.
    Fail,
}

/// The tables the finance functions read. Loaded and checked with the flow.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Tables {
    /// VAT: regions and rates by tax class (`tax_rate`, `tax_region`).
    pub tax: TaxTable,
    /// Exchange rates (`fx_rate`, `fx_convert`).
    pub fx: FxTable,
    /// Nominal (GL) codes (`nominal_code`).
    pub nominal: NominalTable,
    /// Value maps by name (`value_map`): `invoice_status: {Completed: Paid}`.
    pub value_maps: BTreeMap<String, BTreeMap<String, Value>>,
}

/// VAT rates by tax class and region.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TaxTable {
    /// Regions by name, each a list of ISO 3166 alpha-2 countries:
    /// `UK: [GB]`, `EU: [FR, DE, …]`. A country in no region is an export.
    pub regions: BTreeMap<String, Vec<String>>,
    /// Rates; the one whose class and region match and whose dates contain
    /// the day wins.
    pub rates: Vec<TaxRate>,
}

/// One VAT rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaxRate {
    /// Tax class (product `xp.TaxClass`): `standard`, `reduced`, `zero`, …
    /// (compared without case).
    pub class: String,
    /// A region name of `regions`, or `export` for countries in none.
    pub region: String,
    /// Percentage, e.g. `20`.
    pub rate: Amount,
    /// First day it applies (inclusive); absent: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub from: Option<NaiveDate>,
    /// Last day it applies (inclusive); absent: still in force.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub until: Option<NaiveDate>,
}

/// Exchange rates: units of each currency per one unit of `base`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct FxTable {
    /// The currency all rates are quoted against (ECB files: `EUR`).
    pub base: String,
    /// Rates given in the flow file.
    pub rates: Vec<FxRate>,
    /// A rates file, relative to the flow file: the ECB reference-rate XML
    /// (`eurofxref-hist.xml`, base EUR) or CSV with `date,currency,rate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// When a day has no rate, use the latest earlier one at most this many
    /// days old (weekends and holidays have no ECB rate); 0 = that day only.
    pub max_age_days: u32,
}

impl Default for FxTable {
    fn default() -> Self {
        FxTable {
            base: "GBP".to_owned(),
            rates: Vec::new(),
            file: None,
            max_age_days: 4,
        }
    }
}

/// One exchange rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FxRate {
    /// ISO 4217 code.
    pub currency: String,
    /// Units of `currency` per one unit of the base currency.
    pub rate: Amount,
    /// The day of the rate; absent: a standing rate used for any day that
    /// has no dated one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub date: Option<NaiveDate>,
}

/// Nominal (general-ledger) codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct NominalTable {
    /// Code when nothing else gives one (sales).
    pub default: i64,
    /// Named defaults: `shipping: 4010`, `discount: 4009`.
    pub named: BTreeMap<String, i64>,
    /// Codes by product code (compared without case), for products the
    /// ledger does not know.
    pub products: BTreeMap<String, i64>,
}

impl Default for NominalTable {
    fn default() -> Self {
        NominalTable {
            default: 4000,
            named: BTreeMap::new(),
            products: BTreeMap::new(),
        }
    }
}

/// An offline test of the flow: no connection is called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowTest {
    /// What the test shows.
    pub name: String,
    /// The trigger's payload (e.g. the webhook body).
    pub input: Value,
    /// Replaces `vars` for this test (merged key by key).
    #[serde(default)]
    pub vars: BTreeMap<String, Value>,
    /// Canned responses by step id for fetch, action and write-back steps;
    /// a step without one gets `200` with body `{}`.
    #[serde(default)]
    pub responses: BTreeMap<String, CannedResponse>,
    /// What must happen.
    pub expect: Expectation,
}

/// A canned response of a connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CannedResponse {
    /// HTTP status; 4xx is a validation failure, 5xx a transient one.
    #[serde(default = "ok_status")]
    pub status: u16,
    /// JSON body.
    #[serde(default)]
    pub body: Value,
}

fn ok_status() -> u16 {
    200
}

/// The expected outcome of a test.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Expectation {
    /// How the run ends.
    pub status: ExpectedStatus,
    /// The requests, in order; each compared in full (numbers by value,
    /// so `5`, `5.0` and `5.00` are equal). Absent: not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<Vec<ExpectedRequest>>,
    /// Outputs of steps by id (map steps), compared in full.
    pub outputs: BTreeMap<String, Value>,
    /// Text the failure message must contain (parked or failed runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_contains: Option<String>,
}

/// How a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExpectedStatus {
    /// Every step done.
    #[default]
    Completed,
    /// Parked in the dead-letter queue.
    Parked,
    /// Failed for good.
    Failed,
}

/// A request the flow must send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRequest {
    /// The step that sends it.
    pub step: String,
    /// HTTP method.
    pub method: Method,
    /// Path under the connection's base URL.
    pub path: String,
    /// JSON body; absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// A decimal amount (rates, percentages) written as a number or a string
/// in the file, kept exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount(pub Decimal);

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.normalize().to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => return Ok(Amount(Decimal::from(n))),
            // The shortest text that reads back as this float is what the
            // author wrote (`1.17`), so no binary noise enters.
            Raw::Float(f) => f.to_string(),
            Raw::Text(s) => s,
        };
        Decimal::from_str(text.trim())
            .map(Amount)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal number")))
    }
}

impl JsonSchema for Amount {
    fn schema_name() -> Cow<'static, str> {
        "Amount".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A decimal number, written as a number or a string (\"1.17\").",
            "type": ["number", "string"],
            "pattern": "^-?[0-9]+(\\.[0-9]+)?$"
        })
    }
}

/// The JSON Schema of flow files, as checked in at `schema/flow.schema.json`.
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(FlowFile)).unwrap_or(Value::Null)
}
