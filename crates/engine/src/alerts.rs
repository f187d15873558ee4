//! Alerts: what a human must hear about — a reconciliation that found
//! differences, stock running low, a poll source that keeps failing.
//!
//! Raising an alert (1) logs it at WARN with its kind and summary, (2)
//! counts it in `ledgerbridge_alerts_total{kind}`, (3) appends it to the
//! hash-chained audit trail when a store is attached (action
//! `alert.<kind>`), and (4) POSTs it as JSON to `[alerts] webhook_url` when
//! one is configured (a chat or paging hook), retried a few times in the
//! background. Alerts of the same kind and key are raised at most once per
//! `repeat_after_secs`, so a condition that persists does not flood anyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use ledgerbridge_store::{NewAudit, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `[alerts]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where alerts are POSTed as JSON (`{"kind","key","summary","detail","raised_at"}`);
    /// empty: logs, metrics and the audit trail only.
    pub webhook_url: String,
    /// The same alert (kind + key) is raised again only after this long.
    pub repeat_after_secs: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: String::new(),
            repeat_after_secs: 3600,
        }
    }
}

/// One alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// What kind of trouble, e.g. `reconcile.differences`, `stock.low`.
    pub kind: String,
    /// What it is about (a product code, a date range): alerts of one kind
    /// and key are rate-limited together. May be empty.
    pub key: String,
    /// One line for a human.
    pub summary: String,
    /// Whatever helps act on it.
    pub detail: Value,
}

impl Alert {
    /// An alert of `kind` about `key`.
    pub fn new(
        kind: impl Into<String>,
        key: impl Into<String>,
        summary: impl Into<String>,
        detail: Value,
    ) -> Self {
        Alert {
            kind: kind.into(),
            key: key.into(),
            summary: summary.into(),
            detail,
        }
    }
}

/// Raises alerts. Cheap to clone.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    config: AlertsConfig,
    store: Option<Arc<dyn Store>>,
    http: Option<reqwest::Client>,
    last: Mutex<HashMap<(String, String), Instant>>,
    raised: Mutex<Vec<Alert>>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("webhook", &!self.inner.config.webhook_url.is_empty())
            .field("audit", &self.inner.store.is_some())
            .finish()
    }
}

impl Alerts {
    /// Alerts as configured; with a store, each is also audited.
    pub fn new(config: AlertsConfig, store: Option<Arc<dyn Store>>) -> Self {
        let http = (!config.webhook_url.is_empty()).then(|| {
            reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default()
        });
        Alerts {
            inner: Arc::new(Inner {
                config,
                store,
                http,
                last: Mutex::new(HashMap::new()),
                raised: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Logs and metrics only (tests, one-shot commands).
    pub fn log_only() -> Self {
        Self::new(AlertsConfig::default(), None)
    }

    /// Raises `alert` unless the same kind and key was raised within
    /// `repeat_after_secs`. Returns whether it was raised.
    pub async fn raise(&self, alert: Alert) -> bool {
        let now = Instant::now();
        let repeat = Duration::from_secs(self.inner.config.repeat_after_secs);
        {
            let mut last = lock(&self.inner.last);
            let id = (alert.kind.clone(), alert.key.clone());
            if let Some(at) = last.get(&id) {
                if now.duration_since(*at) < repeat {
                    return false;
                }
            }
            last.insert(id, now);
        }
        tracing::warn!(kind = %alert.kind, key = %alert.key, "ALERT: {}", alert.summary);
        metrics::counter!("ledgerbridge_alerts_total", "kind" => alert.kind.clone()).increment(1);
        {
            let mut raised = lock(&self.inner.raised);
            if raised.len() >= 1000 {
                raised.remove(0);
            }
            raised.push(alert.clone());
        }
        if let Some(store) = &self.inner.store {
            let entry = NewAudit {
                run_id: None,
                event_id: None,
                flow_version: None,
                action: format!("alert.{}", alert.kind),
                detail: json!({"key": alert.key, "summary": alert.summary, "detail": alert.detail}),
            };
            if let Err(err) = store.audit(entry).await {
                tracing::warn!(error = %err, kind = %alert.kind, "alert not written to the audit trail");
            }
        }
        if let Some(http) = &self.inner.http {
            let http = http.clone();
            let url = self.inner.config.webhook_url.clone();
            let body = json!({
                "kind": alert.kind,
                "key": alert.key,
                "summary": alert.summary,
                "detail": alert.detail,
                "raised_at": Utc::now().to_rfc3339(),
            });
            tokio::spawn(async move { post_with_retries(&http, &url, &body).await });
        }
        true
    }

    /// The alerts raised by this process, oldest first (at most the last 1,000).
    pub fn raised(&self) -> Vec<Alert> {
        lock(&self.inner.raised).clone()
    }
}

async fn post_with_retries(http: &reqwest::Client, url: &str, body: &Value) {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=4 {
        match http.post(url).json(body).send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => {
                tracing::warn!(status = %response.status(), attempt, "alert webhook refused the alert")
            }
            Err(err) => tracing::warn!(error = %err, attempt, "alert webhook unreachable"),
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    tracing::error!(
        url,
        "alert webhook gave up after 4 attempts; the alert is in the log and the audit trail"
    );
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_same_alert_is_not_repeated_within_the_window() {
        let alerts = Alerts::log_only();
        let alert = Alert::new("stock.low", "WID1", "WID1 has 2 left", json!({"left": 2}));
        assert!(alerts.raise(alert.clone()).await);
        assert!(!alerts.raise(alert.clone()).await);
        let other = Alert::new("stock.low", "KID1", "KID1 has 0 left", json!({}));
        assert!(alerts.raise(other).await);
        assert_eq!(alerts.raised().len(), 2);
    }
}
