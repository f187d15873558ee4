//! `ledgerbridge run`: the engine and its HTTP server, until SIGTERM or
//! Ctrl-C, then a graceful stop (no new webhooks, no new claims, in-flight
//! runs finish their current step and release).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use ledgerbridge_engine::{Alerts, Engine, EngineHandle, FlowRegistry, PollSource, Pollers};
use ledgerbridge_reconcile::{schedule, Reconcile};
use ledgerbridge_server::AppState;
use ledgerbridge_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::connections;

/// Flags of `ledgerbridge run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Listen address (overrides [server] listen).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
}

pub async fn run(mut config: Config, args: RunArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    let app = App::start(&config).await?;
    crate::logging::say(format_args!(
        "ledgerbridge listening on http://{}",
        app.addr
    ));
    shutdown_signal().await;
    app.stop().await;
    Ok(())
}

/// The engine and server running in this process.
pub struct App {
    /// The server's bound address.
    pub addr: SocketAddr,
    /// The store both use.
    pub store: Arc<dyn Store>,
    engine: EngineHandle,
    pollers: Pollers,
    server: JoinHandle<std::io::Result<()>>,
    stop_server: oneshot::Sender<()>,
    /// The daily reconciliation, when `[reconcile] daily_at` is set.
    daily: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
}

impl App {
    /// Opens the store, builds the flows, starts the engine and the server.
    pub async fn start(config: &Config) -> anyhow::Result<App> {
        let metrics = install_metrics();
        let store = ledgerbridge_store::open(&config.database.url)
            .await
            .with_context(|| {
                format!("opening the database {}", redact_url(&config.database.url))
            })?;
        let alerts = Alerts::new(config.alerts.clone(), Some(store.clone()));
        let built = connections::build(config, &alerts)?;
        Self::start_with(config, store, built.flows, built.pollers, alerts, metrics).await
    }

    /// Like [`App::start`] with the store, flows, poll sources and alerts given.
    pub async fn start_with(
        config: &Config,
        store: Arc<dyn Store>,
        flows: FlowRegistry,
        poll_sources: Vec<Arc<dyn PollSource>>,
        alerts: Alerts,
        metrics: Option<PrometheusHandle>,
    ) -> anyhow::Result<App> {
        let engine = Engine::new(store.clone(), flows.clone(), config.engine.clone());
        let wake = engine.waker();
        let engine = engine.start();
        let pollers = Pollers::start(
            store.clone(),
            flows.clone(),
            wake.clone(),
            alerts.clone(),
            poll_sources,
        );
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        let addr = listener.local_addr()?;
        let reconciler: Option<Arc<dyn Reconcile>> =
            connections::build_reconciler(config, store.clone())?
                .map(|r| Arc::new(r) as Arc<dyn Reconcile>);
        let daily = start_daily_reconciliation(config, reconciler.clone(), store.clone(), alerts)?;
        let state = AppState {
            store: store.clone(),
            flows,
            wake,
            sources: Arc::new(config.sources.clone()),
            metrics,
            reconciler,
        };
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server_config = config.server.clone();
        let server = tokio::spawn(async move {
            ledgerbridge_server::serve(state, &server_config, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        tracing::info!(%addr, database = %redact_url(&config.database.url), "ledgerbridge is up");
        Ok(App {
            addr,
            store,
            engine,
            pollers,
            server,
            stop_server,
            daily,
        })
    }

    /// Stops taking webhooks and polling, then stops the engine gracefully.
    pub async fn stop(self) {
        if let Some((task, stop)) = self.daily {
            let _ = stop.send(());
            let _ = task.await;
        }
        let _ = self.stop_server.send(());
        self.pollers.stop().await;
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "server ended with an error"),
            Err(err) => tracing::warn!(error = %err, "server task failed"),
        }
        self.engine.shutdown().await;
    }
}

/// Starts the daily reconciliation when `[reconcile] daily_at` is set.
fn start_daily_reconciliation(
    config: &Config,
    reconciler: Option<Arc<dyn Reconcile>>,
    store: Arc<dyn Store>,
    alerts: Alerts,
) -> anyhow::Result<Option<(JoinHandle<()>, oneshot::Sender<()>)>> {
    let Some(at) = config.reconcile.daily_time().map_err(anyhow::Error::msg)? else {
        return Ok(None);
    };
    let Some(reconciler) = reconciler else {
        anyhow::bail!(
            "[reconcile] daily_at is set but reconciliation needs [connections.kashflow] and [connections.ordercloud]"
        );
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(schedule::run_daily(
        reconciler,
        store,
        Arc::new(EngineAlerts(alerts)),
        at,
        config.reconcile.lookback_days,
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Some((task, stop)))
}

/// The daily reconciliation's alerts through the engine's alerting (log,
/// metric, audit trail, `[alerts] webhook_url`).
struct EngineAlerts(Alerts);

#[async_trait::async_trait]
impl schedule::AlertSink for EngineAlerts {
    async fn raise(&self, kind: &str, summary: &str, detail: serde_json::Value) {
        let key = detail["period"].as_str().unwrap_or_default().to_owned();
        self.0
            .raise(ledgerbridge_engine::Alert::new(kind, key, summary, detail))
            .await;
    }
}

/// Installs the Prometheus recorder once per process.
pub fn install_metrics() -> Option<PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<Option<PrometheusHandle>> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let buckets = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(&buckets)
                .ok()?
                .install_recorder()
                .map_err(|err| tracing::warn!(error = %err, "metrics recorder not installed"))
                .ok()
        })
        .clone()
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("Ctrl-C: stopping"),
        _ = term => tracing::info!("SIGTERM: stopping"),
    }
}

/// A database URL with any password replaced, for logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{scheme}://{user}:[redacted]@{host}")
                } else {
                    url.to_owned()
                }
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_redacted_from_database_urls() {
        assert_eq!(
            redact_url("postgres://lb:hunter2@db:5432/lb"),
            "postgres://lb:[redacted]@db:5432/lb"
        );
        assert_eq!(redact_url("postgres://lb@db/lb"), "postgres://lb@db/lb");
        assert_eq!(redact_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
