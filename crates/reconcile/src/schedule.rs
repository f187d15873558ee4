//! The daily reconciliation: at `daily_at` (UTC) every day, the
//! `lookback_days` days before today are reconciled; the report's counts
//! go to the audit trail (`reconcile.report`) and, when anything differs,
//! an alert is raised.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use ledgerbridge_store::{NewAudit, Store};
use serde_json::json;

use crate::fetch::Reconcile;
use crate::model::Period;
use crate::report::Report;

/// The audit action of a daily report.
pub const AUDIT_ACTION: &str = "reconcile.report";
/// The alert kind raised when a daily report has differences.
pub const ALERT_KIND: &str = "reconcile.differences";

/// Where alerts go. The binary adapts the engine's alerting to it; kept
/// to one method so the scheduler does not depend on how alerts are sent.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// Raises one alert.
    async fn raise(&self, kind: &str, summary: &str, detail: serde_json::Value);
}

/// Alerts as warnings in the log only.
#[derive(Debug, Default)]
pub struct LogAlerts;

#[async_trait]
impl AlertSink for LogAlerts {
    async fn raise(&self, kind: &str, summary: &str, detail: serde_json::Value) {
        tracing::warn!(alert = kind, %detail, "{summary}");
    }
}

/// The next instant at `at` (UTC) strictly after `now`.
pub fn next_run(now: DateTime<Utc>, at: NaiveTime) -> DateTime<Utc> {
    let today = now.date_naive().and_time(at).and_utc();
    if today > now {
        today
    } else {
        today + Duration::days(1)
    }
}

/// The period a run at `now` covers: the `lookback_days` days before today.
pub fn lookback_period(now: DateTime<Utc>, lookback_days: u32) -> Period {
    let today = now.date_naive();
    let days = i64::from(lookback_days.max(1));
    Period {
        from: today - Duration::days(days),
        to: today - Duration::days(1),
    }
}

/// Reconciles `period` once, audits the counts and alerts on differences.
pub async fn run_once(
    reconciler: &dyn Reconcile,
    store: &dyn Store,
    alerts: &dyn AlertSink,
    period: Period,
) -> Result<Report, String> {
    let report = match reconciler.reconcile(period).await {
        Ok(report) => report,
        Err(err) => {
            let summary = format!(
                "daily reconciliation of {} – {} failed: {err}",
                period.from, period.to
            );
            alerts
                .raise(
                    "reconcile.failed",
                    &summary,
                    json!({"error": err.to_string()}),
                )
                .await;
            return Err(summary);
        }
    };
    let summary = report.summary();
    if let Err(err) = store
        .audit(NewAudit {
            run_id: None,
            event_id: None,
            flow_version: None,
            action: AUDIT_ACTION.to_owned(),
            detail: summary.clone(),
        })
        .await
    {
        tracing::warn!(error = %err, "the reconciliation report could not be audited");
    }
    if report.difference_count() > 0 {
        let text = format!(
            "reconciliation of {} – {}: {} difference(s)",
            period.from,
            period.to,
            report.difference_count()
        );
        alerts.raise(ALERT_KIND, &text, summary).await;
    } else {
        tracing::info!(from = %period.from, to = %period.to, "reconciliation: no differences");
    }
    Ok(report)
}

/// Runs [`run_once`] every day at `at` until `stop` resolves.
pub async fn run_daily(
    reconciler: Arc<dyn Reconcile>,
    store: Arc<dyn Store>,
    alerts: Arc<dyn AlertSink>,
    at: NaiveTime,
    lookback_days: u32,
    stop: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(stop);
    loop {
        let now = Utc::now();
        let next = next_run(now, at);
        let wait = (next - now).to_std().unwrap_or_default();
        tracing::info!(next = %next, "daily reconciliation scheduled");
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let period = lookback_period(Utc::now(), lookback_days);
        if let Err(err) =
            run_once(reconciler.as_ref(), store.as_ref(), alerts.as_ref(), period).await
        {
            tracing::error!(%err, "daily reconciliation failed");
        }
    }
}
