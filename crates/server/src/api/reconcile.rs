//! `GET /api/reconcile?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=json|csv]`:
//! the reconciliation report of a period (JSON by default, or CSV).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ledgerbridge_reconcile::{Format, Period, ReconcileError};
use serde::Deserialize;

use crate::error::ApiError;
use crate::AppState;

/// Routes under `/api/reconcile`.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/reconcile", get(report))
}

/// Query of `GET /api/reconcile`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileQuery {
    /// First day, `YYYY-MM-DD` (UTC).
    pub from: Option<String>,
    /// Last day, inclusive.
    pub to: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

async fn report(
    State(state): State<AppState>,
    query: Result<Query<ReconcileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|err| {
        ApiError::BadRequest(format!(
            "{}; use ?from=YYYY-MM-DD&to=YYYY-MM-DD[&format=json|csv]",
            err.body_text()
        ))
    })?;
    let (Some(from), Some(to)) = (query.from.as_deref(), query.to.as_deref()) else {
        return Err(ApiError::BadRequest(
            "from and to are required: ?from=YYYY-MM-DD&to=YYYY-MM-DD".to_owned(),
        ));
    };
    let period = Period::parse(from, to).map_err(ApiError::BadRequest)?;
    let format = match query.format.as_deref().map(Format::parse) {
        None => Format::Json,
        Some(Ok(Format::Table) | Err(_)) => {
            return Err(ApiError::BadRequest(
                "format must be json or csv".to_owned(),
            ))
        }
        Some(Ok(format)) => format,
    };
    let Some(reconciler) = state.reconciler.clone() else {
        return Err(ApiError::NotConfigured(
            "reconciliation needs [connections.kashflow] and [connections.ordercloud] \
             (and [connections.gateway] to check gateway payments)"
                .to_owned(),
        ));
    };
    let report = reconciler
        .reconcile(period)
        .await
        .map_err(|err| match err {
            ReconcileError::Fetch { .. } => ApiError::Upstream(err.to_string()),
            ReconcileError::Store(store) => ApiError::from(store),
            other => ApiError::Internal(other.to_string()),
        })?;
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        _ => "application/json",
    };
    Ok((
        [(header::CONTENT_TYPE, content_type)],
        report.render(format),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use ledgerbridge_reconcile::{reconcile, Inputs, LedgerData, Reconcile, Report};
    use tower::ServiceExt;

    use super::*;

    /// Answers every period with an empty report.
    struct Empty;

    #[async_trait]
    impl Reconcile for Empty {
        async fn reconcile(&self, period: Period) -> Result<Report, ReconcileError> {
            Ok(reconcile(&Inputs {
                period,
                orders: Vec::new(),
                invoices: Vec::new(),
                gateway: None,
                ledger: LedgerData::default(),
            }))
        }
    }

    async fn get(reconciler: Option<Arc<dyn Reconcile>>, uri: &str) -> (StatusCode, String) {
        let store = ledgerbridge_store::open("sqlite::memory:").await.unwrap();
        let state = AppState {
            store,
            flows: ledgerbridge_engine::FlowRegistry::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
            sources: Arc::default(),
            metrics: None,
            reconciler,
        };
        let response = router()
            .with_state(state)
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn reports_refusals_and_errors() {
        let some: Option<Arc<dyn Reconcile>> = Some(Arc::new(Empty));
        let (status, body) =
            get(some.clone(), "/api/reconcile?from=2026-11-01&to=2026-11-30").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["period"]["from"], "2026-11-01");
        let (status, body) = get(
            some.clone(),
            "/api/reconcile?from=2026-11-01&to=2026-11-30&format=csv",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            body.starts_with(ledgerbridge_reconcile::CSV_HEADER),
            "{body}"
        );
        let (status, body) =
            get(some.clone(), "/api/reconcile?from=2026-11-31&to=2026-12-01").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.contains("YYYY-MM-DD"), "{body}");
        let (status, _) = get(some.clone(), "/api/reconcile?from=2026-11-01").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = get(
            some,
            "/api/reconcile?from=2026-11-01&to=2026-11-02&format=xml",
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = get(None, "/api/reconcile?from=2026-11-01&to=2026-11-02").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("[connections.kashflow]"), "{body}");
    }
}
