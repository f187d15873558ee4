//! How a failure is classified, and therefore what the engine does next.
//!
//! Every error that crosses a connector boundary becomes a [`Failure`] with
//! an [`ErrorClass`]. The engine's policy is driven by the class alone:
//! transient failures are retried with backoff, rate-limited ones wait for
//! the target, auth failures refresh credentials once, and validation or
//! conflict failures are parked for a human.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What kind of failure happened, from the engine's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorClass {
    /// The target rejected the data (a 400 with a reason). Retrying the
    /// same request cannot succeed: park at once with the target's message.
    Validation,
    /// The object conflicts with one that already exists (a 409, a
    /// duplicate key). Usually resolved by linking to the existing object.
    Conflict,
    /// The target asked us to slow down (429), possibly with `Retry-After`.
    RateLimited,
    /// A network failure, timeout, 5xx, or a known transient 4xx. Retry.
    Transient,
    /// Credentials were refused (401/403). Refresh once, then park.
    Auth,
    /// The target does not know the object (404).
    NotFound,
    /// Anything we could not classify. Treated like transient, but reported.
    Unknown,
}

impl ErrorClass {
    /// Stable lower-case name, used in the store, metrics and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Validation => "validation",
            ErrorClass::Conflict => "conflict",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Transient => "transient",
            ErrorClass::Auth => "auth",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Unknown => "unknown",
        }
    }

    /// Parses the name written by [`ErrorClass::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "validation" => ErrorClass::Validation,
            "conflict" => ErrorClass::Conflict,
            "rate_limited" => ErrorClass::RateLimited,
            "transient" => ErrorClass::Transient,
            "auth" => ErrorClass::Auth,
            "not_found" => ErrorClass::NotFound,
            "unknown" => ErrorClass::Unknown,
            _ => return None,
        })
    }

    /// Whether waiting and trying the same thing again can help.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorClass::RateLimited | ErrorClass::Transient | ErrorClass::Unknown
        )
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified failure of one step, with the target's own words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{class}: {message}")]
pub struct Failure {
    /// What kind of failure this is.
    pub class: ErrorClass,
    /// Human-readable reason, quoting the target where it gave one.
    pub message: String,
    /// How long the target asked us to wait (`Retry-After`), if it did.
    #[serde(
        default,
        with = "opt_duration_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<Duration>,
    /// Whether the request may have reached the target and taken effect
    /// (a timeout after sending, a dropped response). Writes that fail
    /// this way must be checked before they are retried.
    #[serde(default)]
    pub outcome_uncertain: bool,
}

impl Failure {
    /// A failure of the given class with a message.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        Failure {
            class,
            message: message.into(),
            retry_after: None,
            outcome_uncertain: false,
        }
    }

    /// Shorthand for [`ErrorClass::Validation`].
    pub fn validation(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Validation, message)
    }

    /// Shorthand for [`ErrorClass::Transient`].
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Transient, message)
    }

    /// Sets the wait the target asked for.
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait;
        self
    }

    /// Marks the outcome as uncertain: the write may have happened.
    pub fn uncertain(mut self) -> Self {
        self.outcome_uncertain = true;
        self
    }
}

mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_round_trip() {
        for class in [
            ErrorClass::Validation,
            ErrorClass::Conflict,
            ErrorClass::RateLimited,
            ErrorClass::Transient,
            ErrorClass::Auth,
            ErrorClass::NotFound,
            ErrorClass::Unknown,
        ] {
            assert_eq!(ErrorClass::parse(class.as_str()), Some(class));
        }
        assert_eq!(ErrorClass::parse("nope"), None);
    }

    #[test]
    fn failure_serializes_retry_after_in_ms() {
        let f = Failure::new(ErrorClass::RateLimited, "slow down")
            .with_retry_after(Some(Duration::from_secs(2)));
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["retry_after"], 2000);
        let back: Failure = serde_json::from_value(json).unwrap();
        assert_eq!(back, f);
    }
}
