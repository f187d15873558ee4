//! `[reconcile]`: the daily reconciliation inside `ledgerbridge run`.

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

/// ```toml
/// [reconcile]
/// daily_at = "02:00"     # UTC; empty or absent: no daily reconciliation
/// lookback_days = 1      # reconcile the N days before today
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Time of day (UTC, `HH:MM`) of the daily run; empty disables it.
    pub daily_at: String,
    /// How many days before today the daily run covers (yesterday = 1).
    pub lookback_days: u32,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            daily_at: String::new(),
            lookback_days: 1,
        }
    }
}

impl ReconcileConfig {
    /// The time of the daily run; `Ok(None)` when disabled, an error
    /// naming the key when `daily_at` is not `HH:MM` or `lookback_days` is 0.
    pub fn daily_time(&self) -> Result<Option<NaiveTime>, String> {
        let text = self.daily_at.trim();
        if text.is_empty() {
            return Ok(None);
        }
        if self.lookback_days == 0 {
            return Err("[reconcile] lookback_days must be at least 1 (1 = yesterday)".to_owned());
        }
        NaiveTime::parse_from_str(text, "%H:%M")
            .map(Some)
            .map_err(|_| {
                format!(
                    "[reconcile] daily_at = {text:?} is not a time of day; write it as HH:MM in UTC, e.g. \"02:00\""
                )
            })
    }
}
