//! The HTTP face of the engine: webhook inbox, the runs API (the
//! dead-letter queue), reconciliation reports, health and metrics. Routes live by resource under
//! [`api`]; every error becomes an HTTP status in exactly one place
//! ([`error::ApiError`]).

pub mod api;
pub mod config;
pub mod error;
pub mod signature;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use ledgerbridge_engine::FlowRegistry;
use ledgerbridge_reconcile::Reconcile;
use ledgerbridge_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Notify;

pub use config::{GatewaySource, OrderCloudSource, ServerConfig, SourcesConfig};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The durable store.
    pub store: Arc<dyn Store>,
    /// Flows, to route events and to dry-run replays.
    pub flows: FlowRegistry,
    /// Woken after runs are queued so the engine claims them at once.
    pub wake: Arc<Notify>,
    /// Webhook sources and their secrets.
    pub sources: Arc<SourcesConfig>,
    /// Renders `/metrics`, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
    /// Reconciles a period (`/api/reconcile`); `None` when the KashFlow
    /// and OrderCloud connections are not configured.
    pub reconciler: Option<Arc<dyn Reconcile>>,
}

/// The whole application router.
pub fn router(state: AppState, config: &ServerConfig) -> Router {
    Router::new()
        .merge(api::health::router())
        .merge(api::webhooks::router(
            config.max_body_bytes,
            std::time::Duration::from_secs(config.body_timeout_secs.max(1)),
        ))
        .merge(api::runs::router())
        .merge(api::reconcile::router())
        .fallback(api::not_found)
        .with_state(state)
}

/// Binds and serves until `shutdown` resolves. Returns the bound address
/// through `bound` as soon as the listener is up.
pub async fn serve(
    state: AppState,
    config: &ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state, config);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
