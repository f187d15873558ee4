//! Turning a target's answer (or the lack of one) into a [`Failure`].
//!
//! One table for every target, in [`classify`], plus a few per-target
//! overrides for answers we know better than their status code (KashFlow's
//! SQL timeout comes back as a 400). Messages quote the target in its own
//! words so a parked run tells the operator what to fix.

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use http::StatusCode;
use ledgerbridge_core::{ErrorClass, Failure};
use serde::Deserialize;

/// Longest excerpt of an unparsed error body kept in a message.
const MAX_BODY_EXCERPT: usize = 300;

/// The systems whose error bodies and quirks we know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    KashFlow,
    OrderCloud,
    XConnect,
    Other,
}

impl System {
    /// `"kashflow"`, `"kashflow:main"`, `"KashFlow"` all name KashFlow.
    fn of(target: &str) -> System {
        let kind = target.split(':').next().unwrap_or(target).trim();
        if kind.eq_ignore_ascii_case("kashflow") {
            System::KashFlow
        } else if kind.eq_ignore_ascii_case("ordercloud") {
            System::OrderCloud
        } else if kind.eq_ignore_ascii_case("xconnect") {
            System::XConnect
        } else {
            System::Other
        }
    }

    fn display(self, target: &str) -> &str {
        match self {
            System::KashFlow => "KashFlow",
            System::OrderCloud => "OrderCloud",
            System::XConnect => "xConnect",
            System::Other => target,
        }
    }
}

/// Classifies a non-2xx answer.
///
/// `target` names the system (`"kashflow"`, `"ordercloud"`, `"xconnect"`,
/// optionally followed by `:<connection>`); it selects the error-body format
/// and the per-target overrides. `retry_after` is the parsed `Retry-After`
/// header (see [`parse_retry_after`]).
///
/// | Status | Class |
/// |---|---|
/// | 400, 422 | Validation (KashFlow `-2146232060` / "Execution Timeout Expired": Transient; OrderCloud `Api.Offline`: Transient) |
/// | 401, 403 | Auth |
/// | 404, 410 | NotFound |
/// | 409 | Conflict |
/// | 408, 423, 425 | Transient |
/// | 429 | RateLimited |
/// | other 4xx | Validation |
/// | 5xx | Transient |
/// | anything else | Unknown |
pub fn classify(
    status: StatusCode,
    body: &str,
    retry_after: Option<Duration>,
    target: &str,
) -> Failure {
    let system = System::of(target);
    let detail = ErrorDetail::parse(system, body);
    let class = match status.as_u16() {
        400 | 422 if detail.is_known_transient(system) => ErrorClass::Transient,
        400 | 422 => ErrorClass::Validation,
        401 | 403 => ErrorClass::Auth,
        404 | 410 => ErrorClass::NotFound,
        409 => ErrorClass::Conflict,
        408 | 423 | 425 => ErrorClass::Transient,
        429 => ErrorClass::RateLimited,
        400..=499 => ErrorClass::Validation,
        500..=599 => ErrorClass::Transient,
        _ => ErrorClass::Unknown,
    };
    let message = detail.message(system.display(target), status);
    Failure::new(class, message).with_retry_after(retry_after)
}

/// Classifies a failure to get any answer at all.
///
/// A connect error means the request never left: transient, outcome
/// certain. A timeout, a connection closed after sending, or a failure
/// while reading the body means the target may have acted: transient and
/// `outcome_uncertain`. `what` says which call failed, e.g.
/// `"POST /invoices"`.
pub fn classify_transport_error(error: &reqwest::Error, target: &str, what: &str) -> Failure {
    let system = System::of(target);
    let name = system.display(target);
    let reason = error_chain(error);
    if error.is_connect() {
        return Failure::transient(format!("{name} {what}: cannot connect: {reason}"));
    }
    if error.is_builder() {
        return Failure::new(
            ErrorClass::Unknown,
            format!("{name} {what}: cannot build the request: {reason}"),
        );
    }
    if error.is_timeout() {
        return Failure::transient(format!("{name} {what}: timed out: {reason}")).uncertain();
    }
    if error.is_body() || error.is_decode() {
        return Failure::transient(format!(
            "{name} {what}: failed reading the response: {reason}"
        ))
        .uncertain();
    }
    Failure::transient(format!(
        "{name} {what}: connection failed after sending: {reason}"
    ))
    .uncertain()
}

/// `error` and its sources, joined with `": "`, without the URL.
fn error_chain(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(error);
    while let Some(err) = current {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    parts.join(": ")
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate,
/// RFC 850 or asctime). A date in the past gives zero.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    parse_retry_after_at(value, Utc::now())
}

/// [`parse_retry_after`] relative to `now` (for tests).
pub fn parse_retry_after_at(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    for format in ["%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"] {
        if let Ok(at) = NaiveDateTime::parse_from_str(value, format) {
            return Some(at.and_utc());
        }
    }
    None
}

/// What an error body says, in whichever format the target uses.
#[derive(Debug, Default)]
struct ErrorDetail {
    /// `(code, message)` pairs; code or message may be empty.
    entries: Vec<(String, String)>,
    /// The raw body, when it could not be parsed.
    raw: String,
}

/// KashFlow: `{"Error": "...", "Message": "..."}`; also plain
/// `{"Message": "..."}` bodies from other services.
#[derive(Deserialize)]
struct KashFlowBody {
    #[serde(rename = "Error", default)]
    error: Option<serde_json::Value>,
    #[serde(rename = "Message", alias = "message", default)]
    message: Option<String>,
}

/// OrderCloud: `{"Errors": [{"ErrorCode", "Message", "Data"}]}`; the
/// OAuth form `{"error", "error_description", "Errors"}`; and OData
/// (xConnect): `{"error": {"code", "message"}}`.
#[derive(Deserialize)]
struct OrderCloudBody {
    #[serde(rename = "Errors", default)]
    errors: Vec<OrderCloudError>,
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct OrderCloudError {
    #[serde(rename = "ErrorCode", default)]
    error_code: Option<String>,
    #[serde(rename = "Message", default)]
    message: Option<String>,
}

impl ErrorDetail {
    fn parse(system: System, body: &str) -> ErrorDetail {
        let mut detail = ErrorDetail::default();
        if let Ok(oc) = serde_json::from_str::<OrderCloudBody>(body) {
            for e in oc.errors {
                detail.entries.push((
                    e.error_code.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                ));
            }
            if detail.entries.is_empty() {
                match oc.error {
                    Some(serde_json::Value::Object(odata)) => {
                        let field = |name: &str| {
                            odata
                                .get(name)
                                .and_then(|v| v.as_str())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (code, message) = (field("code"), field("message"));
                        if !code.is_empty() || !message.is_empty() {
                            detail.entries.push((code, message));
                        }
                    }
                    Some(serde_json::Value::String(code)) => {
                        detail
                            .entries
                            .push((code, oc.error_description.unwrap_or_default()));
                    }
                    _ => {
                        if let Some(description) = oc.error_description {
                            detail.entries.push((String::new(), description));
                        }
                    }
                }
            }
        }
        if detail.entries.is_empty() || system == System::KashFlow {
            if let Ok(kf) = serde_json::from_str::<KashFlowBody>(body) {
                let code = match kf.error {
                    Some(serde_json::Value::String(s)) => s,
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                let message = kf.message.unwrap_or_default();
                if !code.is_empty() || !message.is_empty() {
                    detail.entries = vec![(code, message)];
                }
            }
        }
        if detail.entries.is_empty() {
            detail.raw = excerpt(body);
        }
        detail
    }

    fn is_known_transient(&self, system: System) -> bool {
        self.entries.iter().any(|(code, message)| match system {
            System::KashFlow => {
                code == "-2146232060" || message.contains("Execution Timeout Expired")
            }
            System::OrderCloud => code == "Api.Offline",
            System::XConnect | System::Other => false,
        })
    }

    fn message(&self, name: &str, status: StatusCode) -> String {
        let code = status.as_u16();
        if self.entries.is_empty() {
            if self.raw.is_empty() {
                let reason = status.canonical_reason().unwrap_or("error");
                return format!("{name} {code} {reason}");
            }
            return format!("{name} {code}: {}", self.raw);
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(
                |(error, message)| match (error.is_empty(), message.is_empty()) {
                    (false, false) => format!("{error}: {message}"),
                    (false, true) => error.clone(),
                    (true, _) => message.clone(),
                },
            )
            .collect();
        format!("{name} {code} {}", parts.join("; "))
    }
}

fn excerpt(body: &str) -> String {
    let body = body.trim();
    if body.chars().count() <= MAX_BODY_EXCERPT {
        return body.to_owned();
    }
    let cut: String = body.chars().take(MAX_BODY_EXCERPT).collect();
    format!("{cut}…")
}
