//! Fault injection for every simulator: latency, 5xx shares, token-bucket
//! rate limits (429 + `Retry-After`), connection resets, commit-then-drop,
//! validation 400s, KashFlow's transient "Execution Timeout Expired" 400 and
//! forced session expiry (KashFlow sessions, OrderCloud access tokens).
//!
//! Rules are changeable at runtime (`/_sandbox/faults`) and apply per service
//! (or `*`), optionally only to a route prefix (relative to the service
//! prefix, e.g. `/invoices`) and a method. Random shares come from one RNG
//! that is seeded when a `seed` is configured, so a given request sequence
//! meets the same faults every run.
//!
//! Rules are written as JSON/TOML objects or as compact specs
//! (see [`parse_fault_spec`]):
//!
//! ```text
//! kashflow:error_rate=0.1            10% of kashflow requests answer 500
//! kashflow:error_rate=5%,status=503  5% answer 503
//! kashflow:rate_limit=60/min         token bucket, burst defaults to 10 s worth
//! kashflow:rate_limit=60/min,burst=5
//! *:latency=5..20ms                  uniform random latency everywhere
//! kashflow/invoices:commit_then_drop=1,method=POST
//! kashflow:execution_timeout=0.2     20% of GETs answer KashFlow's SQL-timeout 400
//! ordercloud:reset=0.1               10% of connections closed with no response
//! kashflow:validation_400=0.1
//! kashflow:expire_sessions=0.05
//! ```
//!
//! Outbound webhook deliveries (OrderCloud and the gateway) have their own
//! fault modes ([`WebhookFaults`]), written with the target
//! `SERVICE/webhooks` (see [`parse_spec`]):
//!
//! ```text
//! ordercloud/webhooks:fail_rate=0.2,duplicate_rate=0.1
//! gateway/webhooks:delay_rate=50%,max_delay=2s,seed=7
//! ordercloud/webhooks:wrong_hash_rate=0.05
//! ```

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::ordercloud::WebhookFaults;

/// When `burst` is not given for a rate limit, the bucket holds this many
/// seconds' worth of requests (at least one).
pub const DEFAULT_BURST_SECONDS: u32 = 10;

/// The `Message` of KashFlow's transient SQL timeout, as observed live.
pub const EXECUTION_TIMEOUT_MESSAGE: &str = "Execution Timeout Expired.  The timeout period elapsed prior to completion of the operation or the server is not responding.";

/// The `Error` code of KashFlow's transient SQL timeout, as observed live.
pub const EXECUTION_TIMEOUT_CODE: &str = "-2146232060";

/// One kind of fault and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Delay every matching request by a uniform random time in `min_ms..=max_ms`.
    Latency {
        /// Lower bound, milliseconds.
        min_ms: u64,
        /// Upper bound, milliseconds (equal to `min_ms` for a fixed delay).
        max_ms: u64,
    },
    /// Answer a share of requests with `status` and the service's error body.
    ErrorRate {
        /// Share of requests, 0.0 to 1.0.
        rate: f64,
        /// 500, 502 or 503.
        #[serde(default = "default_error_status")]
        status: u16,
    },
    /// A token bucket; an empty bucket answers 429 with `Retry-After`.
    RateLimit {
        /// Refill rate.
        per_minute: u32,
        /// Bucket capacity.
        burst: u32,
    },
    /// Close the connection without a response for a share of requests
    /// (the handler is not called).
    ConnectionReset {
        /// Share of requests, 0.0 to 1.0.
        rate: f64,
    },
    /// Call the handler (the write happens), then close the connection
    /// without a response.
    CommitThenDrop {
        /// Share of requests, 0.0 to 1.0.
        rate: f64,
    },
    /// Answer a share of requests 400 with a validation error body.
    #[serde(rename = "validation_400")]
    Validation400 {
        /// Share of requests, 0.0 to 1.0.
        rate: f64,
    },
    /// Answer a share of GET requests with KashFlow's transient
    /// `{"Error":"-2146232060","Message":"Execution Timeout Expired. ..."}` 400.
    ExecutionTimeout {
        /// Share of GET requests, 0.0 to 1.0.
        rate: f64,
    },
    /// Before a share of requests, expire every session of the service
    /// (KashFlow session tokens, OrderCloud access and refresh tokens); the
    /// request then meets the 401 a real expiry gives.
    ExpireSessions {
        /// Share of requests, 0.0 to 1.0.
        rate: f64,
    },
}

fn default_error_status() -> u16 {
    500
}

impl Fault {
    /// The snake_case name used in specs, counters and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Latency { .. } => "latency",
            Fault::ErrorRate { .. } => "error_rate",
            Fault::RateLimit { .. } => "rate_limit",
            Fault::ConnectionReset { .. } => "connection_reset",
            Fault::CommitThenDrop { .. } => "commit_then_drop",
            Fault::Validation400 { .. } => "validation_400",
            Fault::ExecutionTimeout { .. } => "execution_timeout",
            Fault::ExpireSessions { .. } => "expire_sessions",
        }
    }

    fn validate(&self) -> Result<(), String> {
        let check_rate = |rate: f64| {
            if (0.0..=1.0).contains(&rate) {
                Ok(())
            } else {
                Err(format!(
                    "{}: rate {rate} is outside 0.0..=1.0 (write 0.1 or 10%)",
                    self.name()
                ))
            }
        };
        match *self {
            Fault::Latency { min_ms, max_ms } if min_ms > max_ms => Err(format!(
                "latency: minimum {min_ms}ms is above maximum {max_ms}ms"
            )),
            Fault::Latency { .. } => Ok(()),
            Fault::ErrorRate { rate, status } => {
                if !matches!(status, 500 | 502 | 503) {
                    return Err(format!(
                        "error_rate: status {status} is not one of 500, 502, 503"
                    ));
                }
                check_rate(rate)
            }
            Fault::RateLimit { per_minute, burst } => {
                if per_minute == 0 || burst == 0 {
                    Err("rate_limit: per_minute and burst must be at least 1".to_owned())
                } else {
                    Ok(())
                }
            }
            Fault::ConnectionReset { rate }
            | Fault::CommitThenDrop { rate }
            | Fault::Validation400 { rate }
            | Fault::ExecutionTimeout { rate }
            | Fault::ExpireSessions { rate } => check_rate(rate),
        }
    }
}

/// A fault and where it applies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `kashflow`, `ordercloud`, `xconnect`, `gateway` or `*` (all).
    pub service: String,
    /// Only paths (relative to the service prefix) starting with this, e.g. `/invoices`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_prefix: Option<String>,
    /// Only this HTTP method (case-insensitive), e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// What happens.
    pub fault: Fault,
}

impl FaultRule {
    /// Checks parameters (rates within 0..=1, statuses, bounds).
    pub fn validate(&self) -> Result<(), String> {
        if self.service.is_empty() {
            return Err("fault rule: service is empty (use a service name or *)".to_owned());
        }
        self.fault.validate()
    }

    fn matches(&self, service: &str, method: &Method, path: &str) -> bool {
        (self.service == "*" || self.service.eq_ignore_ascii_case(service))
            && self
                .route_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix))
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
    }
}

/// Reads one rule from JSON: a spec string (`"kashflow:error_rate=0.1"`) or a
/// rule object; validated.
///
/// (Not an untagged serde enum: with serde_json's arbitrary-precision numbers,
/// untagged enums cannot read floats such as `"rate": 1.0`.)
pub fn rule_from_json(value: serde_json::Value) -> Result<FaultRule, String> {
    let rule = match value {
        serde_json::Value::String(spec) => parse_fault_spec(&spec)?,
        other @ serde_json::Value::Object(_) => serde_json::from_value::<FaultRule>(other)
            .map_err(|err| format!("invalid fault rule: {err}"))?,
        other => {
            return Err(format!(
                "a fault rule is a spec string or an object, not `{other}`"
            ))
        }
    };
    rule.validate()?;
    Ok(rule)
}

/// Reads one spec from JSON: a spec string (request rule or webhook
/// delivery spec, see [`parse_spec`]) or a request rule object; validated.
pub fn spec_from_json(value: serde_json::Value) -> Result<FaultSpec, String> {
    match value {
        serde_json::Value::String(spec) => parse_spec(&spec),
        other => rule_from_json(other).map(FaultSpec::Rule),
    }
}

/// The `[faults]` configuration section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Seed of the fault RNG; with a seed the same request sequence meets the
    /// same faults. Without one the RNG is seeded from the OS.
    pub seed: Option<u64>,
    /// Rules as objects.
    pub rules: Vec<FaultRule>,
    /// Rules as compact specs (see [`parse_fault_spec`]), applied after `rules`.
    pub specs: Vec<String>,
}

impl FaultsConfig {
    /// Every configured request rule, specs parsed, all validated. Webhook
    /// delivery specs (`ordercloud/webhooks:...`) are checked but not
    /// returned; see [`FaultsConfig::webhook_specs`].
    pub fn all_rules(&self) -> Result<Vec<FaultRule>, String> {
        let mut rules = Vec::with_capacity(self.rules.len() + self.specs.len());
        for rule in &self.rules {
            rule.validate()?;
            rules.push(rule.clone());
        }
        for spec in &self.specs {
            if let FaultSpec::Rule(rule) = parse_spec(spec)? {
                rules.push(rule);
            }
        }
        Ok(rules)
    }

    /// The webhook delivery specs among `specs`, in order, all validated.
    pub fn webhook_specs(&self) -> Result<Vec<WebhookFaultsSpec>, String> {
        let mut found = Vec::new();
        for spec in &self.specs {
            if let FaultSpec::Webhooks(webhooks) = parse_spec(spec)? {
                found.push(webhooks);
            }
        }
        Ok(found)
    }
}

/// The services that send webhooks, whose deliveries take [`WebhookFaults`].
pub const WEBHOOK_SERVICES: [&str; 2] = ["ordercloud", "gateway"];

/// What a compact spec describes: a request fault rule, or fault modes for
/// one service's outbound webhook deliveries.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultSpec {
    /// `SERVICE[/ROUTE_PREFIX]:KIND=VALUE...`, applied to incoming requests.
    Rule(FaultRule),
    /// `SERVICE/webhooks:fail_rate=...`, applied to outgoing deliveries.
    Webhooks(WebhookFaultsSpec),
}

/// Webhook delivery fault modes named by a spec such as
/// `ordercloud/webhooks:fail_rate=0.2,duplicate_rate=0.1`. Modes the spec
/// does not name keep their current value when it is applied.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookFaultsSpec {
    /// `ordercloud` or `gateway`.
    pub service: String,
    /// [`WebhookFaults::fail_rate`].
    pub fail_rate: Option<f64>,
    /// [`WebhookFaults::duplicate_rate`].
    pub duplicate_rate: Option<f64>,
    /// [`WebhookFaults::delay_rate`].
    pub delay_rate: Option<f64>,
    /// [`WebhookFaults::max_delay_ms`].
    pub max_delay_ms: Option<u64>,
    /// [`WebhookFaults::wrong_hash_rate`].
    pub wrong_hash_rate: Option<f64>,
    /// [`WebhookFaults::seed`].
    pub seed: Option<u64>,
}

impl WebhookFaultsSpec {
    /// Sets the modes this spec names on `faults`.
    pub fn apply_to(&self, faults: &mut WebhookFaults) {
        if let Some(rate) = self.fail_rate {
            faults.fail_rate = rate;
        }
        if let Some(rate) = self.duplicate_rate {
            faults.duplicate_rate = rate;
        }
        if let Some(rate) = self.delay_rate {
            faults.delay_rate = rate;
        }
        if let Some(ms) = self.max_delay_ms {
            faults.max_delay_ms = ms;
        }
        if let Some(rate) = self.wrong_hash_rate {
            faults.wrong_hash_rate = rate;
        }
        if let Some(seed) = self.seed {
            faults.seed = Some(seed);
        }
    }
}

/// The keys of a webhook delivery spec (with aliases), for detection and messages.
const WEBHOOK_KEYS: &str =
    "fail_rate, duplicate_rate, delay_rate, max_delay, wrong_hash_rate, seed";

fn is_webhook_key(key: &str) -> bool {
    matches!(
        key,
        "fail_rate"
            | "duplicate_rate"
            | "delay_rate"
            | "max_delay"
            | "max_delay_ms"
            | "wrong_hash_rate"
            | "seed"
    )
}

/// Parses `ordercloud/webhooks:fail_rate=0.2,duplicate_rate=10%,...`.
fn parse_webhook_spec(
    spec: &str,
    service: &str,
    action: &str,
) -> Result<WebhookFaultsSpec, String> {
    let bad = |why: &str| format!("fault spec `{spec}`: {why}");
    let service = service.to_ascii_lowercase();
    if !WEBHOOK_SERVICES.contains(&service.as_str()) {
        return Err(bad(&format!(
            "{service} sends no webhooks (use ordercloud/webhooks or gateway/webhooks)"
        )));
    }
    let mut parsed = WebhookFaultsSpec {
        service,
        ..WebhookFaultsSpec::default()
    };
    for part in action.split(',') {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| bad(&format!("`{part}` is not KEY=VALUE")))?;
        let key = key.trim().to_ascii_lowercase();
        let value = value.trim();
        let rate = || parse_rate(value).map_err(|why| bad(&why));
        match key.as_str() {
            "fail_rate" => parsed.fail_rate = Some(rate()?),
            "duplicate_rate" => parsed.duplicate_rate = Some(rate()?),
            "delay_rate" => parsed.delay_rate = Some(rate()?),
            "wrong_hash_rate" => parsed.wrong_hash_rate = Some(rate()?),
            "max_delay" | "max_delay_ms" => {
                parsed.max_delay_ms = Some(parse_duration_ms(value).map_err(|why| bad(&why))?);
            }
            "seed" => {
                let seed = value
                    .parse::<u64>()
                    .map_err(|_| bad(&format!("seed `{value}` is not a whole number")))?;
                parsed.seed = Some(seed);
            }
            other => {
                return Err(bad(&format!(
                    "unknown webhook fault `{other}` (use {WEBHOOK_KEYS})"
                )))
            }
        }
    }
    Ok(parsed)
}

/// Parses any compact spec: a request rule (see [`parse_fault_spec`]) or,
/// for the target `ordercloud/webhooks` or `gateway/webhooks` with the keys
/// `fail_rate`, `duplicate_rate`, `delay_rate`, `max_delay` (e.g. `500ms`),
/// `wrong_hash_rate` and `seed`, webhook delivery fault modes.
pub fn parse_spec(spec: &str) -> Result<FaultSpec, String> {
    let trimmed = spec.trim();
    let Some((target, action)) = trimmed.split_once(':') else {
        return parse_fault_spec(trimmed).map(FaultSpec::Rule);
    };
    let first_key = action
        .split_once('=')
        .map(|(key, _)| key.trim().to_ascii_lowercase());
    let webhook_target = target
        .split_once('/')
        .filter(|(_, route)| route.eq_ignore_ascii_case("webhooks"));
    match (webhook_target, first_key.as_deref()) {
        (Some((service, _)), Some(key)) if is_webhook_key(key) => {
            parse_webhook_spec(trimmed, service, action).map(FaultSpec::Webhooks)
        }
        (None, Some(key)) if is_webhook_key(key) => Err(format!(
            "fault spec `{trimmed}`: {key} is a webhook delivery fault; write it as ordercloud/webhooks:{key}=... or gateway/webhooks:{key}=..."
        )),
        _ => parse_fault_spec(trimmed).map(FaultSpec::Rule),
    }
}

/// Parses a compact fault spec: `SERVICE[/ROUTE_PREFIX]:KIND=VALUE[,OPTION=VALUE...]`.
///
/// Kinds: `latency=10ms` | `latency=5..20ms` (also `s`), `error_rate=0.1` or
/// `10%` (option `status=503`), `rate_limit=60/min` (also `/s`, `/h`; option
/// `burst=N`), `reset=R` (alias `connection_reset`), `commit_then_drop=R`,
/// `validation_400=R`, `execution_timeout=R`, `expire_sessions=R`. Every kind
/// takes option `method=POST`.
///
/// Webhook delivery specs (`ordercloud/webhooks:fail_rate=0.2`) are not
/// request rules and are refused here; [`parse_spec`] reads both.
pub fn parse_fault_spec(spec: &str) -> Result<FaultRule, String> {
    let spec = spec.trim();
    let bad = |why: &str| format!("fault spec `{spec}`: {why}");
    let (target, action) = spec
        .split_once(':')
        .ok_or_else(|| bad("expected SERVICE:KIND=VALUE, e.g. kashflow:error_rate=0.1"))?;
    let (service, route_prefix) = match target.find('/') {
        Some(slash) => (&target[..slash], Some(target[slash..].to_owned())),
        None => (target, None),
    };
    if service.is_empty() {
        return Err(bad(
            "missing service (kashflow, ordercloud, xconnect, gateway or *)",
        ));
    }
    let mut parts = action.split(',');
    let head = parts.next().unwrap_or_default();
    if head
        .split_once('=')
        .is_some_and(|(kind, _)| is_webhook_key(&kind.trim().to_ascii_lowercase()))
    {
        return Err(bad(
            "this is a webhook delivery spec, not a request rule (read it with parse_spec)",
        ));
    }
    let (kind, value) = head
        .split_once('=')
        .ok_or_else(|| bad("expected KIND=VALUE after the colon"))?;
    let mut options = BTreeMap::new();
    for option in parts {
        let (key, val) = option
            .split_once('=')
            .ok_or_else(|| bad(&format!("option `{option}` is not KEY=VALUE")))?;
        options.insert(key.trim().to_ascii_lowercase(), val.trim().to_owned());
    }
    let method = options.remove("method").map(|m| m.to_ascii_uppercase());
    let value = value.trim();
    let rate = || parse_rate(value).map_err(|why| bad(&why));
    let fault = match kind.trim().to_ascii_lowercase().as_str() {
        "latency" => {
            let (min_ms, max_ms) = parse_latency(value).map_err(|why| bad(&why))?;
            Fault::Latency { min_ms, max_ms }
        }
        "error_rate" | "error" | "errors" => {
            let status = match options.remove("status") {
                Some(s) => s
                    .parse::<u16>()
                    .map_err(|_| bad(&format!("status `{s}` is not a number")))?,
                None => default_error_status(),
            };
            Fault::ErrorRate {
                rate: rate()?,
                status,
            }
        }
        "rate_limit" | "ratelimit" => {
            let per_minute = parse_per_minute(value).map_err(|why| bad(&why))?;
            let burst = match options.remove("burst") {
                Some(b) => b
                    .parse::<u32>()
                    .map_err(|_| bad(&format!("burst `{b}` is not a whole number")))?,
                None => (per_minute * DEFAULT_BURST_SECONDS / 60).max(1),
            };
            Fault::RateLimit { per_minute, burst }
        }
        "reset" | "connection_reset" => Fault::ConnectionReset { rate: rate()? },
        "commit_then_drop" | "drop_after_commit" => Fault::CommitThenDrop { rate: rate()? },
        "validation_400" | "validation" => Fault::Validation400 { rate: rate()? },
        "execution_timeout" | "sql_timeout" => Fault::ExecutionTimeout { rate: rate()? },
        "expire_sessions" | "session_expiry" => Fault::ExpireSessions { rate: rate()? },
        other => {
            return Err(bad(&format!(
                "unknown kind `{other}` (latency, error_rate, rate_limit, reset, commit_then_drop, validation_400, execution_timeout, expire_sessions)"
            )))
        }
    };
    if let Some(key) = options.keys().next() {
        return Err(bad(&format!(
            "option `{key}` does not apply to {}",
            fault.name()
        )));
    }
    let rule = FaultRule {
        service: service.to_ascii_lowercase(),
        route_prefix,
        method,
        fault,
    };
    rule.validate().map_err(|why| bad(&why))?;
    Ok(rule)
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let (number, scale) = match value.strip_suffix('%') {
        Some(percent) => (percent.trim(), 100.0),
        None => (value, 1.0),
    };
    let parsed: f64 = number
        .parse()
        .map_err(|_| format!("rate `{value}` is not a number like 0.1 or 10%"))?;
    let rate = parsed / scale;
    if !(0.0..=1.0).contains(&rate) {
        return Err(format!("rate `{value}` is outside 0..1 (0%..100%)"));
    }
    Ok(rate)
}

fn parse_duration_ms(value: &str) -> Result<u64, String> {
    let value = value.trim();
    let (number, factor) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1.0)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000.0)
    } else {
        (value, 1.0)
    };
    let parsed: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("duration `{value}` is not like 10ms or 1.5s"))?;
    if !parsed.is_finite() || parsed < 0.0 {
        return Err(format!("duration `{value}` must be zero or more"));
    }
    Ok((parsed * factor).round() as u64)
}

fn parse_latency(value: &str) -> Result<(u64, u64), String> {
    match value.split_once("..") {
        Some((low, high)) => {
            // A unit written once at the end (`5..20ms`) applies to both ends.
            let unit = if high.ends_with("ms") {
                "ms"
            } else if high.ends_with('s') {
                "s"
            } else {
                ""
            };
            let low = if low.ends_with('s') {
                low.to_owned()
            } else {
                format!("{low}{unit}")
            };
            let min = parse_duration_ms(&low)?;
            let max = parse_duration_ms(high)?;
            if min > max {
                return Err(format!("latency range `{value}` has minimum above maximum"));
            }
            Ok((min, max))
        }
        None => {
            let fixed = parse_duration_ms(value)?;
            Ok((fixed, fixed))
        }
    }
}

fn parse_per_minute(value: &str) -> Result<u32, String> {
    let (count, unit) = value
        .split_once('/')
        .ok_or_else(|| format!("rate limit `{value}` is not like 60/min, 2/s or 1000/h"))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("rate limit count `{count}` is not a whole number"))?;
    let per_minute = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "second" => count.saturating_mul(60),
        "m" | "min" | "minute" => count,
        "h" | "hour" => count.div_ceil(60),
        other => return Err(format!("rate limit unit `{other}` is not s, min or h")),
    };
    if per_minute == 0 {
        return Err(format!("rate limit `{value}` allows no requests"));
    }
    Ok(per_minute)
}

/// A token bucket of one rate-limit rule.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn new(per_minute: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            tokens: f64::from(burst),
            capacity: f64::from(burst),
            per_second: f64::from(per_minute) / 60.0,
            refilled_at: Instant::now(),
        }
    }

    /// Takes a token, or says after how many whole seconds one will be there.
    fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_second;
        Err((wait.ceil() as u64).max(1))
    }
}

struct ActiveRule {
    rule: FaultRule,
    bucket: Option<TokenBucket>,
}

impl ActiveRule {
    fn new(rule: FaultRule) -> ActiveRule {
        let bucket = match rule.fault {
            Fault::RateLimit { per_minute, burst } => Some(TokenBucket::new(per_minute, burst)),
            _ => None,
        };
        ActiveRule { rule, bucket }
    }
}

struct State {
    rules: Vec<ActiveRule>,
    seed: Option<u64>,
    rng: StdRng,
    counters: BTreeMap<String, u64>,
}

/// A function that expires every session of the named service (installed
/// by [`crate::Sandbox`]); services without sessions ignore it.
pub type SessionExpirer = Arc<dyn Fn(&str) + Send + Sync>;

/// The runtime-changeable fault rules, their RNG and counters.
pub struct Faults {
    initial: FaultsConfig,
    state: Mutex<State>,
    /// True while any rule is active: lets requests skip the lock when
    /// there are no faults (the common case, and every benchmark's).
    any_rules: AtomicBool,
    session_expirer: OnceLock<SessionExpirer>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("initial", &self.initial)
            .finish_non_exhaustive()
    }
}

/// What the middleware does with one request.
#[derive(Debug, Default)]
struct Decision {
    latency: Duration,
    expire_sessions: bool,
    reject: Option<Rejection>,
    reset: bool,
    commit_then_drop: bool,
}

#[derive(Debug)]
enum Rejection {
    RateLimited { retry_after_secs: u64 },
    Status(u16),
    Validation,
    ExecutionTimeout,
}

impl Faults {
    /// Builds the injector from configuration. Invalid configured rules are
    /// skipped with a warning ([`SandboxConfig`](crate::SandboxConfig) loading
    /// rejects them earlier).
    pub fn new(config: &FaultsConfig) -> Faults {
        let faults = Faults {
            initial: config.clone(),
            state: Mutex::new(State {
                rules: Vec::new(),
                seed: config.seed,
                rng: make_rng(config.seed),
                counters: BTreeMap::new(),
            }),
            session_expirer: OnceLock::new(),
            any_rules: AtomicBool::new(false),
        };
        faults.reset();
        faults
    }

    /// Installs the function that [`Fault::ExpireSessions`] calls. Only the
    /// first call has an effect.
    pub fn set_session_expirer(&self, expirer: SessionExpirer) {
        let _ = self.session_expirer.set(expirer);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the rules inconsistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Back to the configured rules and seed, counters zeroed.
    pub fn reset(&self) {
        let rules = match self.initial.all_rules() {
            Ok(rules) => rules,
            Err(why) => {
                tracing::warn!(%why, "ignoring invalid configured fault rules");
                Vec::new()
            }
        };
        let mut state = self.lock();
        state.rules = rules.into_iter().map(ActiveRule::new).collect();
        state.seed = self.initial.seed;
        state.rng = make_rng(self.initial.seed);
        state.counters.clear();
        self.note_rules(&state);
    }

    /// Keeps [`Faults::any_rules`] in step with the rules (called with the lock held).
    fn note_rules(&self, state: &State) {
        self.any_rules
            .store(!state.rules.is_empty(), Ordering::Release);
    }

    /// The active rules.
    pub fn rules(&self) -> Vec<FaultRule> {
        self.lock().rules.iter().map(|r| r.rule.clone()).collect()
    }

    /// Replaces every rule (validated first; nothing changes on error). A
    /// `seed` re-seeds the RNG.
    pub fn replace(&self, rules: Vec<FaultRule>, seed: Option<u64>) -> Result<(), String> {
        for rule in &rules {
            rule.validate()?;
        }
        let mut state = self.lock();
        state.rules = rules.into_iter().map(ActiveRule::new).collect();
        if seed.is_some() {
            state.seed = seed;
            state.rng = make_rng(seed);
        }
        self.note_rules(&state);
        Ok(())
    }

    /// Adds one rule after the others.
    pub fn add(&self, rule: FaultRule) -> Result<(), String> {
        rule.validate()?;
        let mut state = self.lock();
        state.rules.push(ActiveRule::new(rule));
        self.note_rules(&state);
        Ok(())
    }

    /// Removes every rule (counters are kept).
    pub fn clear(&self) {
        let mut state = self.lock();
        state.rules.clear();
        self.note_rules(&state);
    }

    /// How many faults of each kind were injected, keyed `service.kind`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.lock().counters.clone()
    }

    /// Rules, seed and counters as JSON (what `GET /_sandbox/faults` returns).
    pub fn snapshot(&self) -> serde_json::Value {
        let state = self.lock();
        let rules: Vec<&FaultRule> = state.rules.iter().map(|r| &r.rule).collect();
        serde_json::json!({
            "seed": state.seed,
            "rules": rules,
            "counters": state.counters,
        })
    }

    fn decide(&self, service: &str, method: &Method, path: &str) -> Decision {
        let mut decision = Decision::default();
        if !self.any_rules.load(Ordering::Acquire) {
            return decision;
        }
        let mut state = self.lock();
        if state.rules.is_empty() {
            return decision;
        }
        let State {
            rules,
            rng,
            counters,
            ..
        } = &mut *state;
        let now = Instant::now();
        let mut hit = |name: &str| {
            *counters.entry(format!("{service}.{name}")).or_insert(0) += 1;
        };
        for active in rules.iter_mut() {
            if !active.rule.matches(service, method, path) {
                continue;
            }
            let roll = |rng: &mut StdRng, rate: f64| {
                rate >= 1.0 || (rate > 0.0 && rng.gen::<f64>() < rate)
            };
            match active.rule.fault {
                Fault::Latency { min_ms, max_ms } => {
                    let ms = if max_ms > min_ms {
                        rng.gen_range(min_ms..=max_ms)
                    } else {
                        min_ms
                    };
                    decision.latency += Duration::from_millis(ms);
                    hit("latency");
                }
                Fault::RateLimit { .. } => {
                    if decision.reject.is_some() {
                        continue;
                    }
                    if let Some(bucket) = active.bucket.as_mut() {
                        if let Err(retry_after_secs) = bucket.take(now) {
                            decision.reject = Some(Rejection::RateLimited { retry_after_secs });
                            hit("rate_limit");
                        }
                    }
                }
                Fault::ExpireSessions { rate } => {
                    if roll(rng, rate) {
                        decision.expire_sessions = true;
                        hit("expire_sessions");
                    }
                }
                Fault::ErrorRate { rate, status } => {
                    if decision.reject.is_none() && roll(rng, rate) {
                        decision.reject = Some(Rejection::Status(status));
                        hit("error_rate");
                    }
                }
                Fault::Validation400 { rate } => {
                    if decision.reject.is_none() && roll(rng, rate) {
                        decision.reject = Some(Rejection::Validation);
                        hit("validation_400");
                    }
                }
                Fault::ExecutionTimeout { rate } => {
                    if decision.reject.is_none() && method == Method::GET && roll(rng, rate) {
                        decision.reject = Some(Rejection::ExecutionTimeout);
                        hit("execution_timeout");
                    }
                }
                Fault::ConnectionReset { rate } => {
                    if !decision.reset && decision.reject.is_none() && roll(rng, rate) {
                        decision.reset = true;
                        hit("connection_reset");
                    }
                }
                Fault::CommitThenDrop { rate } => {
                    if !decision.commit_then_drop && decision.reject.is_none() && roll(rng, rate) {
                        decision.commit_then_drop = true;
                        hit("commit_then_drop");
                    }
                }
            }
        }
        decision
    }
}

fn make_rng(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_entropy(),
    }
}

/// A JSON error response in `service`'s own error format:
/// kashflow `{"Error","Message"}`, ordercloud `{"Errors":[{"ErrorCode","Message","Data"}]}`,
/// xconnect `{"error":{"code","message"}}` (OData), gateway
/// `{"error":{"type","code","message"}}` (Stripe style).
pub fn error_response(service: &str, status: StatusCode, code: &str, message: &str) -> Response {
    let body = match service {
        "kashflow" => serde_json::json!({ "Error": code, "Message": message }),
        "ordercloud" => serde_json::json!({
            "Errors": [{ "ErrorCode": code, "Message": message, "Data": null }]
        }),
        "gateway" => serde_json::json!({
            "error": { "type": "api_error", "code": code, "message": message }
        }),
        _ => serde_json::json!({ "error": { "code": code, "message": message } }),
    };
    (status, axum::Json(body)).into_response()
}

/// A response whose body fails at once: hyper aborts the connection without
/// completing a response, so the client sees a connection error, not a status.
fn dropped_connection() -> Response {
    let failing = futures::stream::once(async {
        Err::<bytes::Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection dropped",
        ))
    });
    Response::new(Body::from_stream(failing))
}

fn rejection_response(service: &str, rejection: Rejection) -> Response {
    match rejection {
        Rejection::RateLimited { retry_after_secs } => {
            let (code, message) = match service {
                "ordercloud" => ("TooManyRequests", "Rate limit exceeded. Retry later."),
                "kashflow" => ("TooManyRequests", "Too many requests. Retry later."),
                _ => ("rate_limited", "Too many requests. Retry later."),
            };
            let mut response =
                error_response(service, StatusCode::TOO_MANY_REQUESTS, code, message);
            response.headers_mut().insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs),
            );
            response
        }
        Rejection::Status(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let code = match service {
                "kashflow" => "InternalServerError",
                "ordercloud" => "ServerError",
                _ => "server_error",
            };
            error_response(
                service,
                status,
                code,
                "An error has occurred (injected fault).",
            )
        }
        Rejection::Validation => {
            let code = match service {
                "ordercloud" => "ValidationFailure",
                "kashflow" => "ValidationError",
                _ => "validation_error",
            };
            error_response(
                service,
                StatusCode::BAD_REQUEST,
                code,
                "The request is invalid (injected validation fault).",
            )
        }
        Rejection::ExecutionTimeout => error_response(
            service,
            StatusCode::BAD_REQUEST,
            EXECUTION_TIMEOUT_CODE,
            EXECUTION_TIMEOUT_MESSAGE,
        ),
    }
}

/// The fault middleware for `service`, for `Router::layer`.
pub fn layer(service: &'static str, faults: Arc<Faults>) -> FaultLayer {
    FaultLayer { service, faults }
}

/// A tower layer applying the fault rules of one service; built by [`layer`].
#[derive(Clone)]
pub struct FaultLayer {
    service: &'static str,
    faults: Arc<Faults>,
}

impl<S> tower::Layer<S> for FaultLayer {
    type Service = FaultService<S>;

    fn layer(&self, inner: S) -> FaultService<S> {
        FaultService {
            service: self.service,
            faults: Arc::clone(&self.faults),
            inner,
        }
    }
}

/// The service produced by [`FaultLayer`].
#[derive(Clone)]
pub struct FaultService<S> {
    service: &'static str,
    faults: Arc<Faults>,
    inner: S,
}

impl<S> tower::Service<Request> for FaultService<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // Take the service that was polled ready; leave a fresh clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let service = self.service;
        let decision = self
            .faults
            .decide(service, request.method(), request.uri().path());
        let faults = Arc::clone(&self.faults);
        Box::pin(async move {
            if !decision.latency.is_zero() {
                tokio::time::sleep(decision.latency).await;
            }
            if decision.expire_sessions {
                if let Some(expire) = faults.session_expirer.get() {
                    expire(service);
                }
            }
            if let Some(rejection) = decision.reject {
                return Ok(rejection_response(service, rejection));
            }
            if decision.reset {
                return Ok(dropped_connection());
            }
            let response = inner.call(request).await?;
            if decision.commit_then_drop {
                drop(response);
                return Ok(dropped_connection());
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        let rule = parse_fault_spec("kashflow:error_rate=0.1").expect("valid");
        assert_eq!(rule.service, "kashflow");
        assert_eq!(
            rule.fault,
            Fault::ErrorRate {
                rate: 0.1,
                status: 500
            }
        );

        let rule = parse_fault_spec("kashflow:error_rate=5%,status=503").expect("valid");
        assert_eq!(
            rule.fault,
            Fault::ErrorRate {
                rate: 0.05,
                status: 503
            }
        );

        let rule = parse_fault_spec("kashflow:rate_limit=60/min").expect("valid");
        assert_eq!(
            rule.fault,
            Fault::RateLimit {
                per_minute: 60,
                burst: 10
            }
        );

        let rule = parse_fault_spec("kashflow:rate_limit=2/s,burst=1").expect("valid");
        assert_eq!(
            rule.fault,
            Fault::RateLimit {
                per_minute: 120,
                burst: 1
            }
        );

        let rule = parse_fault_spec("*:latency=5..20ms").expect("valid");
        assert_eq!(rule.service, "*");
        assert_eq!(
            rule.fault,
            Fault::Latency {
                min_ms: 5,
                max_ms: 20
            }
        );

        let rule = parse_fault_spec("gateway:latency=1.5s").expect("valid");
        assert_eq!(
            rule.fault,
            Fault::Latency {
                min_ms: 1500,
                max_ms: 1500
            }
        );

        let rule =
            parse_fault_spec("kashflow/invoices:commit_then_drop=1,method=post").expect("valid");
        assert_eq!(rule.route_prefix.as_deref(), Some("/invoices"));
        assert_eq!(rule.method.as_deref(), Some("POST"));
        assert_eq!(rule.fault, Fault::CommitThenDrop { rate: 1.0 });
    }

    #[test]
    fn rejects_bad_specs_with_reasons() {
        let cases = [
            ("kashflow", "expected SERVICE:KIND=VALUE"),
            ("kashflow:error_rate", "expected KIND=VALUE"),
            ("kashflow:error_rate=2", "outside"),
            ("kashflow:error_rate=0.1,status=404", "not one of 500"),
            ("kashflow:rate_limit=60", "not like 60/min"),
            ("kashflow:latency=20..5ms", "minimum above maximum"),
            ("kashflow:explode=1", "unknown kind"),
            ("kashflow:reset=0.1,burst=3", "does not apply"),
            (":reset=0.1", "missing service"),
        ];
        for (spec, expected) in cases {
            let err = parse_fault_spec(spec).expect_err(spec);
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    async fn body_of(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn error_bodies_follow_each_service() {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        let kashflow = body_of(error_response("kashflow", status, "E", "m")).await;
        assert_eq!(kashflow, serde_json::json!({"Error": "E", "Message": "m"}));
        let ordercloud = body_of(error_response("ordercloud", status, "E", "m")).await;
        assert_eq!(
            ordercloud,
            serde_json::json!({"Errors": [{"ErrorCode": "E", "Message": "m", "Data": null}]})
        );
        let gateway = body_of(error_response("gateway", status, "E", "m")).await;
        assert_eq!(gateway["error"]["message"], "m");
        let xconnect = body_of(error_response("xconnect", status, "E", "m")).await;
        assert_eq!(xconnect["error"]["code"], "E");
        let limited = rejection_response(
            "ordercloud",
            Rejection::RateLimited {
                retry_after_secs: 3,
            },
        );
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }

    #[test]
    fn token_bucket_refuses_when_empty_and_says_when() {
        let mut bucket = TokenBucket::new(60, 2);
        let now = Instant::now();
        assert!(bucket.take(now).is_ok());
        assert!(bucket.take(now).is_ok());
        assert_eq!(bucket.take(now), Err(1));
        assert!(bucket.take(now + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn seeded_shares_repeat() {
        let config = FaultsConfig {
            seed: Some(7),
            specs: vec!["kashflow:error_rate=0.5".to_owned()],
            ..FaultsConfig::default()
        };
        let run = || {
            let faults = Faults::new(&config);
            (0..64)
                .map(|_| {
                    faults
                        .decide("kashflow", &Method::GET, "/x")
                        .reject
                        .is_some()
                })
                .collect::<Vec<_>>()
        };
        let first = run();
        assert_eq!(first, run());
        assert!(first.iter().any(|hit| *hit) && first.iter().any(|hit| !*hit));
    }
}
