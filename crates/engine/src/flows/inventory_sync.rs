//! `inventory-sync`: KashFlow's stock levels reach the storefront. KashFlow
//! has no webhooks, so its products are polled ([`KashFlowStockPoll`]);
//! every product whose stock changed (and, on the very first poll, every
//! product whose stock KashFlow manages: stock must be right from the
//! start) starts a run that sets OrderCloud's
//! `Inventory.QuantityAvailable` of the product or variant it maps to.
//!
//! Mapping, `[flows.inventory-sync]`:
//! - `products = { "KF-CODE" = "productID" }` or `"productID/variantID"`
//!   names the target of a KashFlow code; `""` means "not synced" (the
//!   product is then left out of the report too);
//! - `map_same_codes = true` (the default) maps every other code to the
//!   OrderCloud product with the same ID, when there is one. Variants are
//!   only ever mapped through the table.
//!
//! Nothing is guessed: a code with no target, a target that does not
//! exist, or a target whose inventory OrderCloud does not track (tracking
//! off; a product tracked per variant mapped as a whole, or a variant of
//! one that is not) is skipped with a warning on the run, and listed by
//! [`inventory_report`] (`ledgerbridge inventory report`), which also
//! lists the OrderCloud products and variants with tracking on that no
//! KashFlow product feeds.
//!
//! Quantities: KashFlow keeps decimals, OrderCloud whole units; the
//! storefront gets [`stock_units`] (rounded down, never below zero).
//!
//! Ordering: a run never trusts the quantity its event carried. It reads
//! KashFlow's current stock, writes it, and reads KashFlow again: if the
//! stock moved meanwhile, it writes again. So whichever run ends last
//! leaves the latest value, whatever order runs end in.
//!
//! Low stock: when `low_stock_alert` is on (the default), a product at or
//! below its threshold — KashFlow's `StockWarningQuantity` when set (above
//! zero), else `low_stock_threshold` — raises one `stock.low` alert; it is
//! raised again only after the stock has been above the threshold (the
//! state is kept in the store, so a restart does not repeat it).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use ledgerbridge_connectors::kashflow::{KashFlowClient, Product as KashFlowProduct};
use ledgerbridge_connectors::ordercloud::{ListOptions, OrderCloudClient};
use ledgerbridge_core::{ErrorClass, Failure};
use ledgerbridge_mapping::functions::stock_units;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::alerts::{Alert, Alerts};
use crate::flow::{store_failure, Flow, Mode, StepCtx, Trigger};
use crate::poll::{fingerprint, Change, PollBatch, PollSource, Snapshot};

/// The flow's name.
pub const NAME: &str = "inventory-sync";
/// The poll source of KashFlow products (cursor name and event source).
pub const POLL_SOURCE: &str = "kashflow:products";
/// The kind of change the poll reports and the flow runs on.
pub const CHANGE_KIND: &str = "product.stock";
/// The alert raised for low stock.
pub const LOW_STOCK_ALERT: &str = "stock.low";

/// Times a run writes before giving up on a stock level that keeps moving
/// (the next poll starts another run).
const MAX_WRITES: usize = 3;

/// `[flows.inventory-sync]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventorySyncSettings {
    /// Run the flow and poll KashFlow's products (off by default: it
    /// overwrites the storefront's stock levels).
    pub enabled: bool,
    /// Seconds between polls of KashFlow's products.
    pub poll_interval_secs: u64,
    /// Map a KashFlow code with no entry in `products` to the OrderCloud
    /// product with the same ID.
    pub map_same_codes: bool,
    /// KashFlow product code → OrderCloud `productID` or
    /// `productID/variantID`; `""`: never synced.
    pub products: BTreeMap<String, String>,
    /// Raise `stock.low` alerts.
    pub low_stock_alert: bool,
    /// The threshold of products whose KashFlow `StockWarningQuantity` is
    /// 0 or absent; none: such products never alert.
    pub low_stock_threshold: Option<i64>,
}

impl Default for InventorySyncSettings {
    fn default() -> Self {
        InventorySyncSettings {
            enabled: false,
            poll_interval_secs: 60,
            map_same_codes: true,
            products: BTreeMap::new(),
            low_stock_alert: true,
            low_stock_threshold: None,
        }
    }
}

impl InventorySyncSettings {
    /// Checks the interval and every entry of the mapping table.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval_secs == 0 {
            return Err("[flows.inventory-sync] poll_interval_secs must be at least 1".to_owned());
        }
        for (code, target) in &self.products {
            if code.trim().is_empty() {
                return Err("[flows.inventory-sync.products] has an empty KashFlow code".to_owned());
            }
            StockTarget::parse(target).map_err(|e| {
                format!("[flows.inventory-sync.products] {code:?} = {target:?}: {e}")
            })?;
        }
        Ok(())
    }

    /// Where the table sends `code`: `None` when it has no entry,
    /// `Some(None)` when the entry says "not synced".
    pub fn table_entry(&self, code: &str) -> Option<Option<StockTarget>> {
        let text = self.products.get(code)?;
        // Checked by validate(); a bad entry reads as "not synced".
        Some(StockTarget::parse(text).ok().flatten())
    }

    /// The threshold of a KashFlow product: its `StockWarningQuantity`
    /// when above zero, else the configured default.
    pub fn threshold(&self, product: &KashFlowProduct) -> Option<Decimal> {
        match product.stock_warning_quantity {
            Some(level) if level > Decimal::ZERO => Some(level),
            _ => self.low_stock_threshold.map(Decimal::from),
        }
    }
}

/// An OrderCloud product or variant whose inventory a KashFlow product feeds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StockTarget {
    /// The product ID.
    pub product_id: String,
    /// The variant ID, for products tracked per variant.
    pub variant_id: Option<String>,
}

impl StockTarget {
    /// A whole product.
    pub fn product(id: &str) -> Self {
        StockTarget {
            product_id: id.to_owned(),
            variant_id: None,
        }
    }

    /// A variant of a product.
    pub fn variant(product_id: &str, variant_id: &str) -> Self {
        StockTarget {
            product_id: product_id.to_owned(),
            variant_id: Some(variant_id.to_owned()),
        }
    }

    /// `productID` or `productID/variantID`; `""` is `None` (not synced).
    pub fn parse(text: &str) -> Result<Option<StockTarget>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let mut parts = text.split('/');
        let product = parts.next().unwrap_or_default().trim();
        let variant = parts.next().map(str::trim);
        if parts.next().is_some() {
            return Err("write productID or productID/variantID (one slash at most)".to_owned());
        }
        if product.is_empty() || variant.is_some_and(str::is_empty) {
            return Err("the product ID and the variant ID must not be empty".to_owned());
        }
        Ok(Some(match variant {
            Some(variant) => StockTarget::variant(product, variant),
            None => StockTarget::product(product),
        }))
    }
}

impl fmt::Display for StockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.variant_id {
            Some(variant) => write!(f, "{}/{variant}", self.product_id),
            None => f.write_str(&self.product_id),
        }
    }
}

/// What the `sync` step did (journaled; the `low_stock` step reads it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncOutcome {
    /// The KashFlow product code.
    pub code: String,
    /// `set`, `unchanged` or `skipped`.
    pub action: String,
    /// Why, in words.
    pub reason: String,
    /// The OrderCloud product or variant (`productID[/variantID]`).
    pub target: Option<String>,
    /// KashFlow's `QuantityInStock` as last read.
    pub in_stock: Option<Decimal>,
    /// The units OrderCloud now holds (when set or unchanged).
    pub quantity: Option<i64>,
    /// What OrderCloud held before.
    pub previous: Option<i64>,
    /// The low-stock threshold of the product, if it has one.
    pub threshold: Option<Decimal>,
    /// Writes made (more than one when the stock moved during the run).
    pub writes: usize,
}

impl SyncOutcome {
    fn skipped(code: &str, reason: impl Into<String>) -> Self {
        SyncOutcome {
            code: code.to_owned(),
            action: "skipped".to_owned(),
            reason: reason.into(),
            ..SyncOutcome::default()
        }
    }
}

/// The flow.
pub struct InventorySync {
    settings: InventorySyncSettings,
    kashflow: KashFlowClient,
    ordercloud: OrderCloudClient,
    ordercloud_url: String,
    alerts: Alerts,
    triggers: Vec<Trigger>,
    version: String,
}

const STEPS: [&str; 2] = ["sync", "low_stock"];

/// The store cursor holding whether a product's low stock was alerted.
pub fn low_state_name(code: &str) -> String {
    format!("inventory-sync:low:{code}")
}

impl InventorySync {
    /// The flow over its connections (`ordercloud_url` is the base URL shown
    /// in dry runs); alerts go to `alerts`.
    pub fn new(
        settings: InventorySyncSettings,
        kashflow: KashFlowClient,
        ordercloud: OrderCloudClient,
        ordercloud_url: &str,
        alerts: Alerts,
    ) -> Self {
        let digest = fingerprint(&serde_json::to_value(&settings).unwrap_or(Value::Null));
        InventorySync {
            settings,
            kashflow,
            ordercloud,
            ordercloud_url: ordercloud_url.trim_end_matches('/').to_owned(),
            alerts,
            triggers: vec![Trigger::Poll {
                source: POLL_SOURCE.to_owned(),
                kind: CHANGE_KIND.to_owned(),
            }],
            version: format!("1+{digest}"),
        }
    }

    /// KashFlow's product as it is now: by nominal and code when the event
    /// names the nominal, else found in the listing.
    async fn read_kashflow(
        &self,
        code: &str,
        nominal: Option<i64>,
    ) -> Result<Option<KashFlowProduct>, Failure> {
        if let Some(nominal) = nominal {
            return self.kashflow.get_product(nominal, code).await;
        }
        let products = self.kashflow.list_products().await?;
        Ok(products
            .into_iter()
            .find(|p| p.code.as_deref() == Some(code)))
    }

    /// The target of `code`, or why there is none (a warning for the run).
    fn target_of(&self, code: &str) -> Result<(StockTarget, &'static str), (String, bool)> {
        match self.settings.table_entry(code) {
            Some(Some(target)) => Ok((target, "mapping table")),
            Some(None) => Err(("mapped to \"\" (not synced)".to_owned(), false)),
            None if self.settings.map_same_codes => Ok((StockTarget::product(code), "same code")),
            None => Err((
                format!(
                    "KashFlow product {code} has no entry in [flows.inventory-sync.products] \
                     (and map_same_codes is off): its stock is not synced"
                ),
                true,
            )),
        }
    }

    /// OrderCloud's current units of `target`, or why it cannot take stock.
    async fn current_units(
        &self,
        code: &str,
        target: &StockTarget,
        how: &str,
    ) -> Result<Result<Option<i64>, String>, Failure> {
        let Some(product) = self.ordercloud.get_product(&target.product_id).await? else {
            let why = if how == "same code" {
                format!("KashFlow product {code} has no OrderCloud product with the same ID and no entry in [flows.inventory-sync.products]: its stock is not synced")
            } else {
                format!(
                    "KashFlow product {code} maps to OrderCloud product {}, which does not exist",
                    target.product_id
                )
            };
            return Ok(Err(why));
        };
        let inventory = product.inventory.unwrap_or_default();
        if inventory.enabled != Some(true) {
            return Ok(Err(format!(
                "OrderCloud product {} (for KashFlow {code}) does not track inventory (Inventory.Enabled is off)",
                target.product_id
            )));
        }
        let per_variant = inventory.variant_level_tracking == Some(true);
        match &target.variant_id {
            None if per_variant => Ok(Err(format!(
                "OrderCloud product {} tracks stock per variant: map KashFlow {code} to {}/<variantID>",
                target.product_id, target.product_id
            ))),
            None => Ok(Ok(inventory.quantity_available)),
            Some(variant_id) if !per_variant => Ok(Err(format!(
                "KashFlow {code} maps to variant {target}, but OrderCloud product {} does not track stock per variant (Inventory.VariantLevelTracking is off)",
                target.product_id
            ))),
            Some(variant_id) => {
                match self
                    .ordercloud
                    .get_variant(&target.product_id, variant_id)
                    .await?
                {
                    Some(variant) => Ok(Ok(variant.inventory.and_then(|i| i.quantity_available))),
                    None => Ok(Err(format!(
                        "KashFlow product {code} maps to OrderCloud variant {target}, which does not exist"
                    ))),
                }
            }
        }
    }

    async fn write(
        &self,
        ctx: &mut StepCtx<'_>,
        target: &StockTarget,
        units: i64,
    ) -> Result<(), Failure> {
        if ctx.mode == Mode::DryRun {
            let url = match &target.variant_id {
                Some(v) => format!(
                    "{}/v1/products/{}/variants/{v}",
                    self.ordercloud_url, target.product_id
                ),
                None => format!("{}/v1/products/{}", self.ordercloud_url, target.product_id),
            };
            ctx.plan(
                "PATCH",
                &url,
                Some(json!({"Inventory": {"QuantityAvailable": units}})),
            );
            return Ok(());
        }
        match &target.variant_id {
            Some(variant) => {
                self.ordercloud
                    .patch_variant_inventory(&target.product_id, variant, units)
                    .await?;
            }
            None => {
                self.ordercloud
                    .patch_product_inventory(&target.product_id, units)
                    .await?;
            }
        }
        Ok(())
    }

    async fn sync(&self, ctx: &mut StepCtx<'_>) -> Result<SyncOutcome, Failure> {
        let input = ctx.input().clone();
        let code = input["key"]
            .as_str()
            .ok_or_else(|| Failure::validation("the poll event names no product code (key)"))?
            .to_owned();
        let nominal = input["record"]["NominalCode"].as_i64();
        let Some(product) = self.read_kashflow(&code, nominal).await? else {
            return Ok(SyncOutcome::skipped(
                &code,
                "the product no longer exists in KashFlow",
            ));
        };
        if product.manage_stock_level != Some(true) {
            return Ok(SyncOutcome::skipped(
                &code,
                "KashFlow does not manage this product's stock",
            ));
        }
        let (target, how) = match self.target_of(&code) {
            Ok(found) => found,
            Err((why, warn)) => {
                if warn {
                    ctx.warnings.push(why.clone());
                }
                return Ok(SyncOutcome::skipped(&code, why));
            }
        };
        let previous = match self.current_units(&code, &target, how).await? {
            Ok(units) => units,
            Err(why) => {
                ctx.warnings.push(why.clone());
                return Ok(SyncOutcome::skipped(&code, why));
            }
        };
        let mut outcome = SyncOutcome {
            code: code.clone(),
            target: Some(target.to_string()),
            previous,
            threshold: self.settings.threshold(&product),
            ..SyncOutcome::default()
        };
        let mut in_stock = product.quantity_in_stock.unwrap_or_default();
        let mut held = previous;
        for _ in 0..MAX_WRITES {
            let units = stock_units(in_stock);
            if held != Some(units) {
                self.write(ctx, &target, units).await?;
                outcome.writes += 1;
                held = Some(units);
            }
            if ctx.mode == Mode::DryRun {
                break;
            }
            // Read again: a change made meanwhile must not be overwritten
            // by this run's older value.
            let Some(now) = self.read_kashflow(&code, product.nominal_code).await? else {
                break;
            };
            let now_in_stock = now.quantity_in_stock.unwrap_or_default();
            if stock_units(now_in_stock) == units {
                in_stock = now_in_stock;
                break;
            }
            in_stock = now_in_stock;
        }
        outcome.in_stock = Some(in_stock);
        outcome.quantity = held;
        if outcome.writes == 0 {
            outcome.action = "unchanged".to_owned();
            outcome.reason = format!("{target} already holds {}", held.unwrap_or_default());
        } else {
            outcome.action = "set".to_owned();
            outcome.reason = format!(
                "{target}: {} → {} ({how})",
                previous.map_or("none".to_owned(), |p| p.to_string()),
                held.unwrap_or_default()
            );
        }
        metrics::counter!("ledgerbridge_inventory_sync_total", "outcome" => outcome.action.clone())
            .increment(1);
        Ok(outcome)
    }

    async fn low_stock(&self, ctx: &StepCtx<'_>) -> Result<Value, Failure> {
        if !self.settings.low_stock_alert {
            return Ok(json!({"skipped": "low_stock_alert is off"}));
        }
        let outcome = SyncOutcome::deserialize(ctx.output("sync")?).map_err(|e| {
            Failure::new(
                ErrorClass::Unknown,
                format!("journaled sync outcome cannot be read: {e}"),
            )
        })?;
        if outcome.action == "skipped" {
            return Ok(json!({"skipped": "stock not synced"}));
        }
        let (Some(threshold), Some(in_stock)) = (outcome.threshold, outcome.in_stock) else {
            return Ok(json!({"skipped": "no low-stock threshold"}));
        };
        let low = in_stock <= threshold;
        let state_name = low_state_name(&outcome.code);
        let state = ctx
            .store()
            .cursor(&state_name)
            .await
            .map_err(store_failure)?;
        let alerted = state.as_deref() == Some("low");
        if ctx.mode == Mode::DryRun {
            return Ok(json!({"low": low, "alert": low && !alerted}));
        }
        if low && !alerted {
            let target = outcome.target.clone().unwrap_or_default();
            self.alerts
                .raise(Alert::new(
                    LOW_STOCK_ALERT,
                    outcome.code.clone(),
                    format!(
                        "{} is low on stock: {} left (threshold {threshold}); OrderCloud {target} set to {}",
                        outcome.code,
                        in_stock.normalize(),
                        outcome.quantity.unwrap_or_default()
                    ),
                    json!({
                        "code": outcome.code,
                        "in_stock": in_stock.normalize().to_string(),
                        "threshold": threshold.normalize().to_string(),
                        "target": target,
                    }),
                ))
                .await;
            ctx.store()
                .set_cursor(&state_name, "low")
                .await
                .map_err(store_failure)?;
            return Ok(json!({"low": true, "alerted": true}));
        }
        if !low && alerted {
            // Back above the threshold: the next drop alerts again.
            ctx.store()
                .set_cursor(&state_name, "ok")
                .await
                .map_err(store_failure)?;
        }
        Ok(json!({"low": low, "alerted": false}))
    }
}

#[async_trait]
impl Flow for InventorySync {
    fn name(&self) -> &str {
        NAME
    }

    fn version(&self) -> &str {
        &self.version
    }

    fn triggers(&self) -> &[Trigger] {
        &self.triggers
    }

    fn steps(&self) -> &[&'static str] {
        &STEPS
    }

    async fn run_step(&self, step: &str, ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        match step {
            "sync" => {
                let outcome = self.sync(ctx).await?;
                serde_json::to_value(&outcome).map_err(|e| {
                    Failure::new(ErrorClass::Unknown, format!("encoding step output: {e}"))
                })
            }
            "low_stock" => self.low_stock(ctx).await,
            other => Err(Failure::new(
                ErrorClass::Unknown,
                format!("{NAME} has no step {other:?}"),
            )),
        }
    }
}

/// Polls KashFlow's products: lists every page, fingerprints each product's
/// stock (`QuantityInStock`, `ManageStockLevel`) and reports a
/// `product.stock` change for each product with managed stock whose
/// fingerprint differs from the last cycle's. The first cycle reports every
/// such product, so the storefront's stock is right from the start.
/// Products deleted in KashFlow are dropped from the snapshot without a
/// change (their OrderCloud stock is left alone).
pub struct KashFlowStockPoll {
    kashflow: KashFlowClient,
    interval: Duration,
}

impl KashFlowStockPoll {
    /// A poll of `kashflow`'s products every `interval`.
    pub fn new(kashflow: KashFlowClient, interval: Duration) -> Self {
        KashFlowStockPoll { kashflow, interval }
    }
}

/// The record a change carries (and the flow re-reads).
pub fn stock_record(product: &KashFlowProduct) -> Value {
    json!({
        "Code": product.code,
        "Name": product.name,
        "NominalCode": product.nominal_code,
        "ManageStockLevel": product.manage_stock_level.unwrap_or(false),
        "QuantityInStock": product.quantity_in_stock.map(|q| q.normalize().to_string()),
        "StockWarningQuantity": product.stock_warning_quantity.map(|q| q.normalize().to_string()),
    })
}

/// The fingerprint of a product's stock.
pub fn stock_fingerprint(product: &KashFlowProduct) -> String {
    fingerprint(&json!({
        "code": product.code,
        "managed": product.manage_stock_level.unwrap_or(false),
        "in_stock": product.quantity_in_stock.unwrap_or_default().normalize().to_string(),
    }))
}

/// The changes a listing makes against `snapshot`, and the snapshot to save.
pub fn stock_changes(snapshot: &Snapshot, products: &[KashFlowProduct]) -> (Vec<Change>, Snapshot) {
    let mut listing = BTreeMap::new();
    let mut records = BTreeMap::new();
    for product in products {
        let Some(code) = product.code.clone() else {
            continue;
        };
        listing.insert(code.clone(), stock_fingerprint(product));
        records.insert(code, product);
    }
    let diff = snapshot.diff(listing);
    let mut changes = Vec::new();
    for key in diff.created.iter().chain(&diff.changed) {
        let Some(product) = records.get(key) else {
            continue;
        };
        if product.manage_stock_level != Some(true) {
            continue;
        }
        let fp = diff.next.entries.get(key).map_or("", String::as_str);
        changes.push(Change {
            kind: CHANGE_KIND.to_owned(),
            key: key.clone(),
            dedupe_key: Snapshot::dedupe_key(&diff.next, CHANGE_KIND, key, fp),
            record: stock_record(product),
            fields: Vec::new(),
        });
    }
    (changes, diff.next)
}

#[async_trait]
impl PollSource for KashFlowStockPoll {
    fn name(&self) -> &str {
        POLL_SOURCE
    }

    fn interval(&self) -> Duration {
        self.interval
    }

    async fn poll(&self, cursor: Option<String>) -> Result<PollBatch, Failure> {
        let first = cursor.is_none();
        let snapshot = Snapshot::from_cursor(
            POLL_SOURCE,
            cursor.as_deref(),
            "delete the cursor to sync every product again",
        )?;
        let products = self.kashflow.list_products().await?;
        let listed = products.len();
        let (changes, next) = stock_changes(&snapshot, &products);
        let moved = next != snapshot;
        Ok(PollBatch {
            changes,
            cursor: (first || moved).then(|| next.encode()),
            listed,
            fetched: 0,
        })
    }
}

/// Products on one side only, and how the others pair up.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InventoryReport {
    /// KashFlow code → OrderCloud target, for the products that are synced.
    pub synced: Vec<ReportPair>,
    /// KashFlow products with managed stock and no OrderCloud target.
    pub kashflow_only: Vec<ReportItem>,
    /// OrderCloud products and variants with inventory tracking that no
    /// KashFlow product feeds.
    pub ordercloud_only: Vec<ReportItem>,
    /// Mappings that cannot work (a missing target, tracking off, a
    /// product tracked per variant mapped as a whole, a code KashFlow does
    /// not manage stock of).
    pub problems: Vec<ReportPair>,
    /// KashFlow codes mapped to `""` (deliberately not synced).
    pub not_synced: Vec<String>,
}

/// One KashFlow code and its OrderCloud target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportPair {
    /// The KashFlow product code.
    pub code: String,
    /// The OrderCloud target (`productID[/variantID]`).
    pub target: String,
    /// How it is mapped (`mapping table`, `same code`), or what is wrong.
    pub note: String,
}

/// A product on one side only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportItem {
    /// KashFlow code, or OrderCloud `productID[/variantID]`.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its stock on that side.
    pub quantity: Option<String>,
}

/// Lists both catalogues and reports which products are synced, which are
/// on one side only and which mappings cannot work. Reads only.
pub async fn inventory_report(
    settings: &InventorySyncSettings,
    kashflow: &KashFlowClient,
    ordercloud: &OrderCloudClient,
) -> Result<InventoryReport, Failure> {
    let kf_products = kashflow.list_products().await?;
    let oc_products = ordercloud.list_products(&ListOptions::default()).await?;
    let mut variants = BTreeMap::new();
    for product in &oc_products {
        let Some(id) = &product.id else { continue };
        let inventory = product.inventory.clone().unwrap_or_default();
        if inventory.enabled == Some(true) && inventory.variant_level_tracking == Some(true) {
            variants.insert(id.clone(), ordercloud.list_variants(id).await?);
        }
    }
    Ok(build_report(
        settings,
        &kf_products,
        &oc_products,
        &variants,
    ))
}

/// [`inventory_report`] over lists already read.
pub fn build_report(
    settings: &InventorySyncSettings,
    kf_products: &[KashFlowProduct],
    oc_products: &[ledgerbridge_connectors::ordercloud::Product],
    variants: &BTreeMap<String, Vec<ledgerbridge_connectors::ordercloud::Variant>>,
) -> InventoryReport {
    // Every OrderCloud target that takes stock, and why the others do not.
    let mut tracked: BTreeMap<StockTarget, ReportItem> = BTreeMap::new();
    let mut untracked: BTreeMap<StockTarget, String> = BTreeMap::new();
    for product in oc_products {
        let Some(id) = &product.id else { continue };
        let name = product.name.clone().unwrap_or_default();
        let inventory = product.inventory.clone().unwrap_or_default();
        if inventory.enabled != Some(true) {
            untracked.insert(
                StockTarget::product(id),
                "OrderCloud does not track its inventory".to_owned(),
            );
            continue;
        }
        if inventory.variant_level_tracking == Some(true) {
            untracked.insert(
                StockTarget::product(id),
                "tracked per variant: map to productID/variantID".to_owned(),
            );
            for variant in variants.get(id).map(Vec::as_slice).unwrap_or_default() {
                let Some(variant_id) = &variant.id else {
                    continue;
                };
                tracked.insert(
                    StockTarget::variant(id, variant_id),
                    ReportItem {
                        id: format!("{id}/{variant_id}"),
                        name: variant.name.clone().unwrap_or_default(),
                        quantity: variant
                            .inventory
                            .as_ref()
                            .and_then(|i| i.quantity_available)
                            .map(|q| q.to_string()),
                    },
                );
            }
            continue;
        }
        tracked.insert(
            StockTarget::product(id),
            ReportItem {
                id: id.clone(),
                name,
                quantity: inventory.quantity_available.map(|q| q.to_string()),
            },
        );
    }
    let mut report = InventoryReport::default();
    let mut fed = BTreeSet::new();
    let mut managed_codes = BTreeSet::new();
    for product in kf_products {
        let Some(code) = &product.code else { continue };
        if product.manage_stock_level != Some(true) {
            continue;
        }
        managed_codes.insert(code.clone());
        let (target, how) = match settings.table_entry(code) {
            Some(None) => {
                report.not_synced.push(code.clone());
                continue;
            }
            Some(Some(target)) => (target, "mapping table"),
            None if settings.map_same_codes => (StockTarget::product(code), "same code"),
            None => {
                report.kashflow_only.push(kashflow_item(product));
                continue;
            }
        };
        if tracked.contains_key(&target) {
            fed.insert(target.clone());
            report.synced.push(ReportPair {
                code: code.clone(),
                target: target.to_string(),
                note: how.to_owned(),
            });
        } else if let Some(why) = untracked.get(&target) {
            report.problems.push(ReportPair {
                code: code.clone(),
                target: target.to_string(),
                note: why.clone(),
            });
        } else if how == "same code" {
            report.kashflow_only.push(kashflow_item(product));
        } else {
            report.problems.push(ReportPair {
                code: code.clone(),
                target: target.to_string(),
                note: "no such OrderCloud product or variant".to_owned(),
            });
        }
    }
    for (code, text) in &settings.products {
        if !managed_codes.contains(code) && !text.trim().is_empty() {
            report.problems.push(ReportPair {
                code: code.clone(),
                target: text.clone(),
                note: "no KashFlow product with this code manages its stock".to_owned(),
            });
        }
    }
    for (target, item) in tracked {
        if !fed.contains(&target) {
            report.ordercloud_only.push(item);
        }
    }
    report
}

fn kashflow_item(product: &KashFlowProduct) -> ReportItem {
    ReportItem {
        id: product.code.clone().unwrap_or_default(),
        name: product.name.clone().unwrap_or_default(),
        quantity: product.quantity_in_stock.map(|q| q.normalize().to_string()),
    }
}

impl InventoryReport {
    /// The report as text for a terminal.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("Synced ({}):\n", self.synced.len()));
        for pair in &self.synced {
            out.push_str(&format!(
                "  {} → {} ({})\n",
                pair.code, pair.target, pair.note
            ));
        }
        out.push_str(&format!(
            "KashFlow only — stock managed, no OrderCloud product ({}):\n",
            self.kashflow_only.len()
        ));
        for item in &self.kashflow_only {
            out.push_str(&format!(
                "  {}  {}  in stock {}\n",
                item.id,
                item.name,
                item.quantity.as_deref().unwrap_or("-")
            ));
        }
        out.push_str(&format!(
            "OrderCloud only — inventory tracked, no KashFlow product ({}):\n",
            self.ordercloud_only.len()
        ));
        for item in &self.ordercloud_only {
            out.push_str(&format!(
                "  {}  {}  available {}\n",
                item.id,
                item.name,
                item.quantity.as_deref().unwrap_or("-")
            ));
        }
        if !self.problems.is_empty() {
            out.push_str(&format!(
                "Mappings that cannot work ({}):\n",
                self.problems.len()
            ));
            for pair in &self.problems {
                out.push_str(&format!(
                    "  {} → {}: {}\n",
                    pair.code, pair.target, pair.note
                ));
            }
        }
        if !self.not_synced.is_empty() {
            out.push_str(&format!(
                "Not synced by choice (mapped to \"\"): {}\n",
                self.not_synced.join(", ")
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerbridge_connectors::ordercloud::{
        Inventory, Product as OcProduct, Variant, VariantInventory,
    };

    fn kf(code: &str, managed: bool, in_stock: i64, warning: i64) -> KashFlowProduct {
        KashFlowProduct {
            code: Some(code.to_owned()),
            name: Some(format!("{code} name")),
            nominal_code: Some(4000),
            manage_stock_level: Some(managed),
            quantity_in_stock: Some(Decimal::from(in_stock)),
            stock_warning_quantity: Some(Decimal::from(warning)),
            ..KashFlowProduct::default()
        }
    }

    fn oc(id: &str, enabled: bool, per_variant: bool) -> OcProduct {
        OcProduct {
            id: Some(id.to_owned()),
            name: Some(format!("{id} name")),
            inventory: Some(Inventory {
                enabled: Some(enabled),
                variant_level_tracking: Some(per_variant),
                quantity_available: Some(7),
                ..Inventory::default()
            }),
            ..OcProduct::default()
        }
    }

    fn variant(id: &str) -> Variant {
        Variant {
            id: Some(id.to_owned()),
            name: Some(id.to_owned()),
            inventory: Some(VariantInventory {
                quantity_available: Some(1),
                ..VariantInventory::default()
            }),
            ..Variant::default()
        }
    }

    #[test]
    fn targets_parse_and_bad_ones_are_refused_with_the_key() {
        assert_eq!(
            StockTarget::parse("P1").unwrap(),
            Some(StockTarget::product("P1"))
        );
        assert_eq!(
            StockTarget::parse("TEE/TEE-S").unwrap(),
            Some(StockTarget::variant("TEE", "TEE-S"))
        );
        assert_eq!(StockTarget::parse(" ").unwrap(), None);
        assert!(StockTarget::parse("a/b/c").is_err());
        assert!(StockTarget::parse("/b").is_err());
        assert_eq!(
            StockTarget::variant("TEE", "TEE-S").to_string(),
            "TEE/TEE-S"
        );
        let mut settings = InventorySyncSettings::default();
        settings.products.insert("KF1".to_owned(), "A//".to_owned());
        let err = settings.validate().unwrap_err();
        assert!(err.contains("\"KF1\""), "{err}");
        settings.products.clear();
        settings.poll_interval_secs = 0;
        assert!(settings.validate().is_err());
    }

    #[test]
    fn the_threshold_is_kashflows_warning_level_else_the_default() {
        let mut settings = InventorySyncSettings::default();
        assert_eq!(
            settings.threshold(&kf("A", true, 3, 5)),
            Some(Decimal::from(5))
        );
        assert_eq!(settings.threshold(&kf("A", true, 3, 0)), None);
        settings.low_stock_threshold = Some(2);
        assert_eq!(
            settings.threshold(&kf("A", true, 3, 0)),
            Some(Decimal::from(2))
        );
    }

    #[test]
    fn the_first_poll_reports_every_managed_product_and_later_ones_only_changes() {
        let products = vec![
            kf("A", true, 10, 0),
            kf("B", true, 5, 0),
            kf("SHIP", false, 0, 0),
        ];
        let (changes, next) = stock_changes(&Snapshot::default(), &products);
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["A", "B"]);
        assert_eq!(changes[0].record["QuantityInStock"], "10");
        assert_eq!(changes[0].record["NominalCode"], 4000);
        assert_eq!(
            next.entries.len(),
            3,
            "unmanaged products are remembered too"
        );

        let (again, same) = stock_changes(&next, &products);
        assert!(again.is_empty());
        assert_eq!(same, next);

        let moved = vec![
            kf("A", true, 9, 0),
            kf("B", true, 5, 0),
            kf("SHIP", true, 0, 0),
        ];
        let (changes, later) = stock_changes(&next, &moved);
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(
            keys,
            ["A", "SHIP"],
            "a product whose stock becomes managed is a change"
        );
        assert_ne!(
            changes[0].dedupe_key,
            stock_changes(&Snapshot::default(), &products).0[0].dedupe_key
        );
        // A repeat of the same cycle gives the same dedupe keys.
        let (repeat, _) = stock_changes(&next, &moved);
        assert_eq!(repeat, changes);
        assert_eq!(later.generation, next.generation + 1);
    }

    #[test]
    fn the_report_pairs_products_and_lists_each_side_only() {
        let mut settings = InventorySyncSettings::default();
        settings
            .products
            .insert("TEE-S-KF".to_owned(), "TEE/TEE-S".to_owned());
        settings
            .products
            .insert("OLD".to_owned(), "GONE".to_owned());
        settings.products.insert("GIFT".to_owned(), String::new());
        settings
            .products
            .insert("NOSTOCK".to_owned(), "WID9".to_owned());
        let kf_products = vec![
            kf("WID1", true, 10, 0),
            kf("GAD1", true, 3, 0),
            kf("TEE-S-KF", true, 4, 0),
            kf("OLD", true, 1, 0),
            kf("GIFT", true, 1, 0),
            kf("WID2", true, 1, 0),
            kf("TEE", true, 1, 0),
            kf("SHIP", false, 0, 0),
            kf("NOSTOCK", false, 0, 0),
        ];
        let oc_products = vec![
            oc("WID1", true, false),
            oc("WID2", false, false),
            oc("OC-GIFT", true, false),
            oc("TEE", true, true),
        ];
        let mut variants = BTreeMap::new();
        variants.insert("TEE".to_owned(), vec![variant("TEE-S"), variant("TEE-M")]);
        let report = build_report(&settings, &kf_products, &oc_products, &variants);
        let pairs = |list: &[ReportPair]| -> Vec<String> {
            list.iter()
                .map(|p| format!("{}>{}", p.code, p.target))
                .collect()
        };
        assert_eq!(pairs(&report.synced), ["WID1>WID1", "TEE-S-KF>TEE/TEE-S"]);
        let ids =
            |list: &[ReportItem]| -> Vec<String> { list.iter().map(|i| i.id.clone()).collect() };
        assert_eq!(ids(&report.kashflow_only), ["GAD1"]);
        assert_eq!(ids(&report.ordercloud_only), ["OC-GIFT", "TEE/TEE-M"]);
        assert_eq!(
            pairs(&report.problems),
            ["OLD>GONE", "WID2>WID2", "TEE>TEE", "NOSTOCK>WID9"]
        );
        assert_eq!(report.not_synced, ["GIFT"]);
        let text = report.render();
        assert!(text.contains("KashFlow only"), "{text}");
        assert!(text.contains("TEE/TEE-M"), "{text}");
    }

    #[test]
    fn without_same_code_mapping_only_the_table_counts() {
        let settings = InventorySyncSettings {
            map_same_codes: false,
            ..InventorySyncSettings::default()
        };
        let report = build_report(
            &settings,
            &[kf("WID1", true, 10, 0)],
            &[oc("WID1", true, false)],
            &BTreeMap::new(),
        );
        assert!(report.synced.is_empty());
        assert_eq!(report.kashflow_only.len(), 1);
        assert_eq!(report.ordercloud_only.len(), 1);
    }
}
