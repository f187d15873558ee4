//! Small helpers shared by both backends: paging limits, lease arithmetic,
//! and the stored forms of enums and errors.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

use crate::{IntentState, Result, RunError, RunState, StoreError};

/// `list_runs` page size when the filter says 0.
pub(crate) const DEFAULT_PAGE: u32 = 100;
/// Largest `list_runs` page.
pub(crate) const MAX_PAGE: u32 = 1000;
/// Largest number of runs one `claim` hands out.
pub(crate) const MAX_CLAIM: u32 = 1000;
/// Largest number of audit records one `audit_since` returns.
pub(crate) const MAX_AUDIT_PAGE: u32 = 10_000;

/// The effective page size of a `RunFilter::limit`.
pub(crate) fn page_size(limit: u32) -> i64 {
    let limit = if limit == 0 { DEFAULT_PAGE } else { limit };
    i64::from(limit.min(MAX_PAGE))
}

/// `now + lease_for`, saturating at the year 9999 (both backends store it).
pub(crate) fn lease_expiry(now: DateTime<Utc>, lease_for: Duration) -> DateTime<Utc> {
    let far_future = Utc
        .with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    TimeDelta::from_std(lease_for)
        .ok()
        .and_then(|delta| now.checked_add_signed(delta))
        .map_or(far_future, |at| at.min(far_future))
}

/// `now`, truncated to the microsecond precision both backends keep.
pub(crate) fn now_micros() -> DateTime<Utc> {
    truncate_micros(Utc::now())
}

/// Drops sub-microsecond precision.
pub(crate) fn truncate_micros(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// Parses a stored run state.
pub(crate) fn parse_state(name: &str) -> Result<RunState> {
    RunState::parse(name).ok_or_else(|| StoreError::Fatal(format!("unknown run state {name:?}")))
}

/// The stored JSON of a run error.
pub(crate) fn error_json(error: &RunError) -> Result<String> {
    serde_json::to_string(error).map_err(|e| StoreError::Fatal(format!("encode run error: {e}")))
}

/// Parses the stored JSON of a run error.
pub(crate) fn parse_error_json(text: &str) -> Result<RunError> {
    serde_json::from_str(text).map_err(|e| StoreError::Fatal(format!("corrupt run error: {e}")))
}

/// The stored `(state, external_id)` pair of an intent.
pub(crate) fn parse_intent_state(state: &str, external_id: Option<String>) -> Result<IntentState> {
    match (state, external_id) {
        ("pending", _) => Ok(IntentState::Pending),
        ("linked", Some(external_id)) => Ok(IntentState::Linked { external_id }),
        (other, _) => Err(StoreError::Fatal(format!("corrupt intent state {other:?}"))),
    }
}

/// Errors a migration list check can report.
pub(crate) fn newer_schema(version: i64, known: i64) -> StoreError {
    StoreError::Fatal(format!(
        "database schema version {version} is newer than this build supports ({known}); \
         upgrade ledgerbridge"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_defaults_and_caps() {
        assert_eq!(page_size(0), 100);
        assert_eq!(page_size(7), 7);
        assert_eq!(page_size(5000), 1000);
    }

    #[test]
    fn lease_expiry_saturates() {
        let now = Utc::now();
        assert_eq!(
            lease_expiry(now, Duration::from_secs(30)),
            now + TimeDelta::seconds(30)
        );
        let far = lease_expiry(now, Duration::MAX);
        assert_eq!(far.format("%Y").to_string(), "9999");
    }
}
