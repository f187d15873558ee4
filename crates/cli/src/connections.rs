//! `[connections]` (the accounts flows talk to) and `[flows]` (the
//! pre-built flows' settings), and building the flow registry from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use ledgerbridge_connectors::gateway::{GatewayClient, GatewayConfig};
use ledgerbridge_connectors::kashflow::{KashFlowClient, KashFlowConfig};
use ledgerbridge_connectors::ordercloud::{Direction, OrderCloudClient, OrderCloudConfig};
use ledgerbridge_connectors::xconnect::{XConnectClient, XConnectConfig};
use ledgerbridge_engine::flows::customer_sync::{
    CustomerSync, CustomerSyncSettings, KashFlowCustomerPoll,
};
use ledgerbridge_engine::flows::inventory_sync::{
    InventorySync, InventorySyncSettings, KashFlowStockPoll,
};
use ledgerbridge_engine::flows::mapped_invoice::FlowFileMapping;
use ledgerbridge_engine::flows::order_to_invoice::{OrderToInvoice, OrderToInvoiceSettings};
use ledgerbridge_engine::flows::payments::{PaymentSettings, PaymentToInvoice};
use ledgerbridge_engine::{Alerts, FlowRegistry, PollSource};
use ledgerbridge_mapping::registry::{Registry, RegistryError};
use ledgerbridge_reconcile::Reconciler;
use ledgerbridge_store::Store;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// `[connections.*]`. Secrets may come from `…_FILE` variables.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// `[connections.kashflow]`
    pub kashflow: Option<KashFlowConfig>,
    /// `[connections.ordercloud]`
    pub ordercloud: Option<OrderCloudConfig>,
    /// `[connections.xconnect]`
    pub xconnect: Option<XConnectConfig>,
    /// `[connections.gateway]`: the payment gateway, read by reconciliation.
    pub gateway: Option<GatewayConfig>,
}

/// `[flows.*]`: which pre-built flows run, and their settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// `[flows.order-to-invoice]`
    #[serde(rename = "order-to-invoice")]
    pub order_to_invoice: OrderToInvoiceSettings,
    /// `[flows.customer-sync]`
    #[serde(rename = "customer-sync")]
    pub customer_sync: CustomerSyncSettings,
    /// `[flows.payment-to-invoice]`
    #[serde(rename = "payment-to-invoice")]
    pub payment_to_invoice: PaymentSettings,
    /// `[flows.inventory-sync]`
    #[serde(rename = "inventory-sync")]
    pub inventory_sync: InventorySyncSettings,
    /// Where each version of a loaded flow file is kept (one snapshot per
    /// content change), so a run can always name the mapping it ran under.
    pub registry_dir: PathBuf,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            order_to_invoice: OrderToInvoiceSettings::default(),
            customer_sync: CustomerSyncSettings::default(),
            payment_to_invoice: PaymentSettings::default(),
            inventory_sync: InventorySyncSettings::default(),
            registry_dir: PathBuf::from("data/flows"),
        }
    }
}

/// The business-key namespace of the KashFlow connection.
pub const KASHFLOW_CONNECTION: &str = "kashflow";
/// The name of the OrderCloud connection.
pub const ORDERCLOUD_CONNECTION: &str = "ordercloud";
/// The name of the gateway connection.
pub const GATEWAY_CONNECTION: &str = "gateway";
/// The name of the xConnect connection.
pub const XCONNECT_CONNECTION: &str = "xconnect";

/// Builds every flow whose connections are configured (alerts they raise
/// are logged only: for commands that replay or check, not the engine).
pub fn build_flows(config: &Config) -> anyhow::Result<FlowRegistry> {
    Ok(build(config, &Alerts::log_only())?.flows)
}

/// The enabled flows and the poll sources they need, over one client per
/// connection (so each connection's rate limit is shared by all of them).
pub struct Built {
    /// The flows, by name.
    pub flows: FlowRegistry,
    /// The poll sources (KashFlow has no webhooks).
    pub pollers: Vec<Arc<dyn PollSource>>,
}

/// Builds the flows and poll sources of the configuration. The flows share
/// one client per connection: one KashFlow session and rate limiter, and
/// one lock per invoice for payments, so two flows paying one invoice never
/// interleave. Flows raise their alerts (low stock) through `alerts`.
pub fn build(config: &Config, alerts: &Alerts) -> anyhow::Result<Built> {
    let mut flows = FlowRegistry::new();
    let mut pollers: Vec<Arc<dyn PollSource>> = Vec::new();
    let connections = &config.connections;
    let Some(kf) = &connections.kashflow else {
        return Ok(Built { flows, pollers });
    };
    let kashflow =
        KashFlowClient::new(KASHFLOW_CONNECTION, kf.clone()).context("[connections.kashflow]")?;
    let payments = &config.flows.payment_to_invoice;
    if payments.enabled {
        flows.register(Arc::new(PaymentToInvoice::new(
            payments.clone(),
            kashflow.clone(),
            KASHFLOW_CONNECTION,
            &kf.base_url,
        )));
    }
    let Some(oc) = &connections.ordercloud else {
        return Ok(Built { flows, pollers });
    };
    let ordercloud = OrderCloudClient::new(ORDERCLOUD_CONNECTION, oc.clone())
        .context("[connections.ordercloud]")?;
    let xconnect = match &connections.xconnect {
        Some(xc) => Some(
            XConnectClient::new(XCONNECT_CONNECTION, xc.clone())
                .context("[connections.xconnect]")?,
        ),
        None => None,
    };
    let settings = &config.flows.order_to_invoice;
    if settings.enabled {
        let mut flow = OrderToInvoice::new(
            settings.clone(),
            kashflow.clone(),
            KASHFLOW_CONNECTION,
            &kf.base_url,
            ordercloud.clone(),
            &oc.base_url,
        );
        if let Some(file) = &settings.mapping_file {
            flow = flow.with_flow_file(load_mapping(&config.flows.registry_dir, file)?);
        }
        if let Some(xconnect) = &xconnect {
            flow = flow.with_xconnect(xconnect.clone());
        }
        flows.register(Arc::new(flow));
    }
    let sync = &config.flows.customer_sync;
    if sync.enabled {
        sync.validate().map_err(anyhow::Error::msg)?;
        flows.register(Arc::new(CustomerSync::new(
            sync.clone(),
            kashflow.clone(),
            &kf.base_url,
            ordercloud.clone(),
            &oc.base_url,
            xconnect.clone(),
        )));
        pollers.push(Arc::new(KashFlowCustomerPoll::new(
            kashflow.clone(),
            std::time::Duration::from_secs(sync.poll_interval_secs),
            sync.initial_poll,
        )));
    }
    let stock = &config.flows.inventory_sync;
    if stock.enabled {
        stock.validate().map_err(anyhow::Error::msg)?;
        flows.register(Arc::new(InventorySync::new(
            stock.clone(),
            kashflow.clone(),
            ordercloud.clone(),
            &oc.base_url,
            alerts.clone(),
        )));
        pollers.push(Arc::new(KashFlowStockPoll::new(
            kashflow.clone(),
            std::time::Duration::from_secs(stock.poll_interval_secs),
        )));
    }
    Ok(Built { flows, pollers })
}

/// The reconciler over the configured connections: `None` without both
/// KashFlow and OrderCloud; gateway payments are checked when
/// `[connections.gateway]` is configured.
pub fn build_reconciler(
    config: &Config,
    store: Arc<dyn Store>,
) -> anyhow::Result<Option<Reconciler>> {
    let connections = &config.connections;
    let (Some(kf), Some(oc)) = (&connections.kashflow, &connections.ordercloud) else {
        return Ok(None);
    };
    let settings = &config.flows.order_to_invoice;
    let direction = match settings.direction.to_ascii_lowercase().as_str() {
        "outgoing" => Direction::Outgoing,
        "all" => Direction::All,
        _ => Direction::Incoming,
    };
    let kashflow =
        KashFlowClient::new(KASHFLOW_CONNECTION, kf.clone()).context("[connections.kashflow]")?;
    let ordercloud = OrderCloudClient::new(ORDERCLOUD_CONNECTION, oc.clone())
        .context("[connections.ordercloud]")?;
    let mut reconciler = Reconciler::new(
        ordercloud,
        direction,
        kashflow,
        KASHFLOW_CONNECTION,
        store,
        &settings.home_currency,
    );
    if let Some(gw) = &connections.gateway {
        let gateway =
            GatewayClient::new(GATEWAY_CONNECTION, gw.clone()).context("[connections.gateway]")?;
        reconciler = reconciler.with_gateway(gateway);
    }
    Ok(Some(reconciler))
}

/// Loads (and registers the version of) the invoice mapping flow file.
fn load_mapping(registry_dir: &Path, file: &Path) -> anyhow::Result<FlowFileMapping> {
    let registry = Registry::new(registry_dir);
    let loaded = match registry.load(file) {
        Ok(loaded) => loaded,
        Err(RegistryError::Invalid(errors)) => {
            let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
            anyhow::bail!(
                "[flows.order-to-invoice] mapping_file {} has {} error(s) \
                 (`ledgerbridge validate {}` shows them too):\n{}",
                file.display(),
                listed.len(),
                file.display(),
                listed.join("\n")
            );
        }
        Err(other) => {
            return Err(other).with_context(|| {
                format!("[flows.order-to-invoice] mapping_file {}", file.display())
            })
        }
    };
    FlowFileMapping::new(Arc::new(loaded)).map_err(anyhow::Error::msg)
}
