//! The sandbox: faithful local simulators of KashFlow REST v2, OrderCloud v1
//! (with signed webhooks), xConnect and a Stripe-style payment gateway, on one
//! loopback listener under path prefixes, with fault injection and a
//! storefront load driver.
//!
//! Layout of the listener:
//!
//! | Prefix | Service |
//! |---|---|
//! | `/kashflow/v2` | [`kashflow::KashFlow`] |
//! | `/ordercloud` | [`ordercloud::OrderCloud`] (`/oauth/token`, `/v1/...`) |
//! | `/xconnect` | [`xconnect::XConnect`] |
//! | `/gateway` | [`gateway::Gateway`] |
//! | `/_sandbox` | control API ([`control`]) |
//!
//! Every service router is wrapped in the fault middleware ([`faults::layer`])
//! under its service name.

pub mod config;
pub mod control;
pub mod driver;
pub mod faults;
pub mod gateway;
pub mod kashflow;
pub mod ordercloud;
pub mod xconnect;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{ConfigError, SandboxConfig};

/// Path prefix of the KashFlow simulator.
pub const KASHFLOW_PREFIX: &str = "/kashflow/v2";
/// Path prefix of the OrderCloud simulator.
pub const ORDERCLOUD_PREFIX: &str = "/ordercloud";
/// Path prefix of the xConnect simulator.
pub const XCONNECT_PREFIX: &str = "/xconnect";
/// Path prefix of the payment gateway simulator.
pub const GATEWAY_PREFIX: &str = "/gateway";
/// Path prefix of the control API.
pub const CONTROL_PREFIX: &str = "/_sandbox";

/// All simulators and the fault injector, sharing one configuration.
///
/// Cloning is cheap (every part is behind an `Arc`) and clones share state.
#[derive(Clone)]
pub struct Sandbox {
    /// The configuration the sandbox was built from.
    pub config: Arc<SandboxConfig>,
    /// The KashFlow REST v2 simulator.
    pub kashflow: Arc<kashflow::KashFlow>,
    /// The OrderCloud v1 simulator.
    pub ordercloud: Arc<ordercloud::OrderCloud>,
    /// The xConnect simulator.
    pub xconnect: Arc<xconnect::XConnect>,
    /// The payment gateway simulator.
    pub gateway: Arc<gateway::Gateway>,
    /// The runtime-changeable fault rules.
    pub faults: Arc<faults::Faults>,
}

impl Sandbox {
    /// Builds every simulator from `config`. Webhook delivery specs among
    /// `[faults] specs` become the start-up webhook faults of their service.
    pub fn new(mut config: SandboxConfig) -> Sandbox {
        config.apply_webhook_fault_specs();
        let kashflow = kashflow::KashFlow::new(&config.kashflow);
        let ordercloud = ordercloud::OrderCloud::new(&config.ordercloud);
        let xconnect = xconnect::XConnect::new(&config.xconnect);
        let gateway = gateway::Gateway::new(&config.gateway);
        let faults = Arc::new(faults::Faults::new(&config.faults));
        let (kashflow_sessions, ordercloud_tokens) =
            (Arc::clone(&kashflow), Arc::clone(&ordercloud));
        faults.set_session_expirer(Arc::new(move |service: &str| match service {
            "kashflow" => {
                kashflow_sessions.expire_sessions();
            }
            "ordercloud" => {
                ordercloud_tokens.expire_tokens();
            }
            _ => {}
        }));
        Sandbox {
            config: Arc::new(config),
            kashflow,
            ordercloud,
            xconnect,
            gateway,
            faults,
        }
    }

    /// The whole HTTP surface: every service under its prefix, each wrapped
    /// in the fault middleware, plus the control API.
    pub fn router(&self) -> Router {
        let faults = &self.faults;
        Router::new()
            .nest(
                KASHFLOW_PREFIX,
                self.kashflow
                    .router()
                    .layer(faults::layer("kashflow", Arc::clone(faults))),
            )
            .nest(
                ORDERCLOUD_PREFIX,
                self.ordercloud
                    .router()
                    .layer(faults::layer("ordercloud", Arc::clone(faults))),
            )
            .nest(
                XCONNECT_PREFIX,
                self.xconnect
                    .router()
                    .layer(faults::layer("xconnect", Arc::clone(faults))),
            )
            .nest(
                GATEWAY_PREFIX,
                self.gateway
                    .router()
                    .layer(faults::layer("gateway", Arc::clone(faults))),
            )
            .nest(CONTROL_PREFIX, control::router(self.clone()))
            .fallback(control::not_found)
    }

    /// Every service's state as one JSON document (what `GET /_sandbox/state` returns).
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "kashflow": self.kashflow.snapshot(),
            "ordercloud": self.ordercloud.snapshot(),
            "xconnect": self.xconnect.snapshot(),
            "gateway": self.gateway.snapshot(),
            "faults": self.faults_snapshot(),
        })
    }

    /// Request fault rules, seed and counters plus the webhook delivery
    /// faults of each webhook-sending service (what `GET /_sandbox/faults` returns).
    pub fn faults_snapshot(&self) -> serde_json::Value {
        let mut snapshot = self.faults.snapshot();
        snapshot["webhooks"] = serde_json::json!({
            "ordercloud": self.ordercloud.webhook_faults(),
            "gateway": self.gateway.webhook_faults(),
        });
        snapshot
    }

    /// The webhook delivery faults of `service` (`ordercloud` or `gateway`);
    /// `None` for a service that sends no webhooks.
    pub fn webhook_faults(&self, service: &str) -> Option<ordercloud::WebhookFaults> {
        match service {
            "ordercloud" => Some(self.ordercloud.webhook_faults()),
            "gateway" => Some(self.gateway.webhook_faults()),
            _ => None,
        }
    }

    /// Replaces the webhook delivery faults of `service` (`ordercloud` or
    /// `gateway`) after validating them.
    pub fn set_webhook_faults(
        &self,
        service: &str,
        faults: ordercloud::WebhookFaults,
    ) -> Result<(), String> {
        faults.validate()?;
        match service {
            "ordercloud" => self.ordercloud.set_webhook_faults(faults),
            "gateway" => self.gateway.set_webhook_faults(faults),
            other => {
                return Err(format!(
                    "{other} sends no webhooks (use ordercloud or gateway)"
                ))
            }
        }
        Ok(())
    }

    /// Applies a webhook delivery spec to the current faults of its service
    /// (modes the spec does not name are kept).
    pub fn apply_webhook_spec(&self, spec: &faults::WebhookFaultsSpec) -> Result<(), String> {
        let mut current = self.webhook_faults(&spec.service).ok_or_else(|| {
            format!(
                "{} sends no webhooks (use ordercloud or gateway)",
                spec.service
            )
        })?;
        spec.apply_to(&mut current);
        self.set_webhook_faults(&spec.service, current)
    }

    /// Returns every service and the fault rules to their configured initial state.
    pub fn reset(&self) {
        self.kashflow.reset();
        self.ordercloud.reset();
        self.xconnect.reset();
        self.gateway.reset();
        self.faults.reset();
    }

    /// Binds `addr` (port 0 picks a free port) and serves [`Sandbox::router`]
    /// in a background task until [`RunningSandbox::shutdown`] is called or
    /// the handle is dropped.
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let router = self.router();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    // A send or a dropped sender both mean "stop".
                    let _ = stop_rx.await;
                })
                .await
        });
        Ok(RunningSandbox {
            addr,
            sandbox: self,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }
}

/// Starts a sandbox with `config` on `addr`; shorthand for
/// `Sandbox::new(config).serve(addr)`.
pub async fn serve(config: SandboxConfig, addr: SocketAddr) -> std::io::Result<RunningSandbox> {
    Sandbox::new(config).serve(addr).await
}

/// A sandbox serving HTTP in a background task.
///
/// Dropping the handle stops the server as well (gracefully, without waiting).
pub struct RunningSandbox {
    /// The address actually bound.
    pub addr: SocketAddr,
    /// The simulators being served (shared with the server task).
    pub sandbox: Sandbox,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl RunningSandbox {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The simulators being served.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// `http://127.0.0.1:PORT` (the bound IP and port).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Base URL of the KashFlow simulator, e.g. `http://127.0.0.1:PORT/kashflow/v2`.
    pub fn kashflow_url(&self) -> String {
        format!("{}{KASHFLOW_PREFIX}", self.base_url())
    }

    /// Base URL of the OrderCloud simulator (`/oauth/token` and `/v1/...` live under it).
    pub fn ordercloud_url(&self) -> String {
        format!("{}{ORDERCLOUD_PREFIX}", self.base_url())
    }

    /// Base URL of the xConnect simulator.
    pub fn xconnect_url(&self) -> String {
        format!("{}{XCONNECT_PREFIX}", self.base_url())
    }

    /// Base URL of the payment gateway simulator.
    pub fn gateway_url(&self) -> String {
        format!("{}{GATEWAY_PREFIX}", self.base_url())
    }

    /// Base URL of the control API.
    pub fn control_url(&self) -> String {
        format!("{}{CONTROL_PREFIX}", self.base_url())
    }

    /// Stops accepting connections, lets in-flight requests finish and waits
    /// for the server task.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for RunningSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSandbox")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}
