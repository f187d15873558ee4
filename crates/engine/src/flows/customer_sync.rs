//! `customer-sync`: customers agree everywhere. An OrderCloud buyer user
//! created or changed (webhook) updates its KashFlow customer; a KashFlow
//! customer created or changed (found by polling, KashFlow has no webhooks)
//! updates its OrderCloud user; both keep the xConnect contact current.
//!
//! What is synced is one small record per person — first name, last name,
//! email, phone ([`CustomerRecord`]) — and for each customer the record as
//! last synced is kept (the sync state, in the store). Every run re-reads
//! the side its event came from and compares it with that state:
//! - equal: nothing to do. This is how our own write coming back as an
//!   event (the OrderCloud webhook of our PATCH, the poll that sees our
//!   KashFlow update) is recognised and dropped: no ping-pong;
//! - different: the fields that changed go to the other systems, and the
//!   state becomes the new record.
//!
//! A customer is synced by one run at a time: read, write and save happen
//! in one journaled step under the customer's lock, so the echo of a write
//! (which waits for that lock) always finds the new state. The step is safe
//! to repeat after a crash: the writes set values, creations go through the
//! ledger, and the state is saved only after the writes.
//!
//! Conflicts: each field has an owner (`[flows.customer-sync.owners]`):
//! `latest` (the default: the change processed last wins, and because every
//! run re-reads its source both sides converge), `ordercloud` or `kashflow`
//! (changes made on the other system to that field are reverted there, with
//! a warning).
//!
//! Identity: the KashFlow code of an OrderCloud user is the order flow's
//! (`OC-` + user id, upper-cased), so a buyer who ordered already has their
//! customer linked. A KashFlow customer with no OrderCloud user gets one in
//! `buyer_id`, with id `kf-<code>`. The xConnect contact is identified by
//! the OrderCloud user id (as the order flow does); a 409 is resolved by
//! linking the existing contact.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ledgerbridge_connectors::kashflow::{Contact, Customer, KashFlowClient};
use ledgerbridge_connectors::ordercloud::{ListOptions, OrderCloudClient, User};
use ledgerbridge_connectors::xconnect::{NewContact, XConnectClient};
use ledgerbridge_core::{BusinessKey, ErrorClass, Failure};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::flow::{store_failure, Flow, Mode, PlannedRequest, StepCtx, Trigger};
use crate::flows::order_to_invoice::customer_code;
use crate::poll::{fingerprint, Change, PollBatch, PollSource, Snapshot};

/// The flow's name.
pub const NAME: &str = "customer-sync";
/// The poll source of KashFlow customers (cursor name and event source).
pub const POLL_SOURCE: &str = "kashflow:customers";

/// Which system's value of a field wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// The change processed last wins.
    Latest,
    /// Only OrderCloud's changes count; KashFlow's are reverted.
    Ordercloud,
    /// Only KashFlow's changes count; OrderCloud's are reverted.
    Kashflow,
}

/// What the first poll of KashFlow customers does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitialPoll {
    /// Remember every customer as it is; sync only later changes.
    Baseline,
    /// Treat every existing customer as new: push them all.
    SyncAll,
}

/// `[flows.customer-sync]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CustomerSyncSettings {
    /// Run the flow (needs the KashFlow and OrderCloud connections).
    pub enabled: bool,
    /// The buyer in which KashFlow customers without an OrderCloud user get
    /// one; empty: such customers reach xConnect only (with a warning).
    pub buyer_id: String,
    /// Prefix of KashFlow codes made from OrderCloud user ids; must equal
    /// `[flows.order-to-invoice] customer_code_prefix`.
    pub customer_code_prefix: String,
    /// Prefix of OrderCloud user ids made from KashFlow codes.
    pub user_id_prefix: String,
    /// Seconds between polls of KashFlow's customers.
    pub poll_interval_secs: u64,
    /// What the very first poll does (`baseline` or `sync_all`).
    pub initial_poll: InitialPoll,
    /// Owner per field (`first_name`, `last_name`, `email`, `phone`);
    /// fields not named are `latest`.
    pub owners: BTreeMap<String, Owner>,
}

impl Default for CustomerSyncSettings {
    fn default() -> Self {
        CustomerSyncSettings {
            enabled: true,
            buyer_id: String::new(),
            customer_code_prefix: "OC-".to_owned(),
            user_id_prefix: "kf-".to_owned(),
            poll_interval_secs: 60,
            initial_poll: InitialPoll::Baseline,
            owners: BTreeMap::new(),
        }
    }
}

impl CustomerSyncSettings {
    /// Checks the owners table names known fields.
    pub fn validate(&self) -> Result<(), String> {
        for field in self.owners.keys() {
            if !FIELDS.contains(&field.as_str()) {
                return Err(format!(
                    "[flows.customer-sync.owners] has {field:?}, which is not a synced field; use {}",
                    FIELDS.join(", ")
                ));
            }
        }
        if self.poll_interval_secs == 0 {
            return Err("[flows.customer-sync] poll_interval_secs must be at least 1".to_owned());
        }
        Ok(())
    }

    fn owner(&self, field: &str) -> Owner {
        self.owners.get(field).copied().unwrap_or(Owner::Latest)
    }
}

/// The synced fields, in order.
pub const FIELDS: [&str; 4] = ["first_name", "last_name", "email", "phone"];

/// One person as every system sees them: the fields we sync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// First name.
    pub first_name: String,
    /// Last name.
    pub last_name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: String,
}

fn clean(value: Option<&String>) -> String {
    value.map(|v| v.trim().to_owned()).unwrap_or_default()
}

impl CustomerRecord {
    fn get(&self, field: &str) -> &str {
        match field {
            "first_name" => &self.first_name,
            "last_name" => &self.last_name,
            "email" => &self.email,
            _ => &self.phone,
        }
    }

    fn set(&mut self, field: &str, value: &str) {
        let slot = match field {
            "first_name" => &mut self.first_name,
            "last_name" => &mut self.last_name,
            "email" => &mut self.email,
            _ => &mut self.phone,
        };
        value.clone_into(slot);
    }

    /// The record of an OrderCloud user.
    pub fn from_user(user: &User) -> Self {
        CustomerRecord {
            first_name: clean(user.first_name.as_ref()),
            last_name: clean(user.last_name.as_ref()),
            email: clean(user.email.as_ref()),
            phone: clean(user.phone.as_ref()),
        }
    }

    /// The record of a KashFlow customer: its primary contact (or first),
    /// names split from `Name` when the contact has none.
    pub fn from_customer(customer: &Customer) -> Self {
        let contacts = customer.contacts.as_deref().unwrap_or_default();
        let contact = contacts
            .iter()
            .find(|c| c.is_primary == Some(true))
            .or_else(|| contacts.first());
        let mut record = CustomerRecord::default();
        if let Some(contact) = contact {
            record.first_name = clean(contact.first_name.as_ref());
            record.last_name = clean(contact.last_name.as_ref());
            record.email = clean(contact.email.as_ref());
            record.phone = clean(contact.telephone.as_ref().or(contact.mobile.as_ref()));
        }
        if record.first_name.is_empty() && record.last_name.is_empty() {
            let name = clean(customer.name.as_ref());
            match name.split_once(' ') {
                Some((first, last)) => {
                    record.first_name = first.to_owned();
                    record.last_name = last.trim().to_owned();
                }
                None => record.first_name = name,
            }
        }
        record
    }

    /// "First Last".
    pub fn name(&self) -> String {
        [self.first_name.as_str(), self.last_name.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn some(value: &str) -> Option<String> {
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// `customer` with this record written into its name and primary contact
    /// (other contacts and every other field kept).
    pub fn apply_to_customer(&self, customer: &Customer) -> Customer {
        let mut contacts = customer.contacts.clone().unwrap_or_default();
        let index = contacts
            .iter()
            .position(|c| c.is_primary == Some(true))
            .unwrap_or(0);
        if contacts.is_empty() {
            contacts.push(Contact::default());
        }
        let contact = &mut contacts[index];
        contact.name = Self::some(&self.name());
        contact.first_name = Self::some(&self.first_name);
        contact.last_name = Self::some(&self.last_name);
        contact.email = Self::some(&self.email);
        contact.telephone = Self::some(&self.phone);
        Customer {
            name: Self::some(&self.name()).or_else(|| customer.name.clone()),
            contacts: Some(contacts),
            ..Customer::default()
        }
    }

    /// The OrderCloud PATCH body setting `fields` (only those: a
    /// concurrent change to another field in OrderCloud is kept).
    pub fn user_patch(&self, fields: &[String]) -> Value {
        let mut patch = serde_json::Map::new();
        for field in fields {
            let (name, value) = match field.as_str() {
                "first_name" => ("FirstName", json!(self.first_name)),
                "last_name" => ("LastName", json!(self.last_name)),
                "email" => ("Email", json!(self.email)),
                _ => ("Phone", json!(Self::some(&self.phone))),
            };
            patch.insert(name.to_owned(), value);
        }
        Value::Object(patch)
    }
}

/// What is kept per customer between runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// The OrderCloud buyer of the linked user (empty: none).
    pub buyer_id: String,
    /// The linked OrderCloud user (empty: none).
    pub user_id: String,
    /// The linked xConnect contact.
    pub xconnect_id: Option<String>,
    /// The record as last synced.
    pub last: Option<CustomerRecord>,
}

/// The store cursor holding a customer's sync state.
pub fn state_name(code: &str) -> String {
    format!("customer-sync:{code}")
}

async fn load_state(ctx: &StepCtx<'_>, code: &str) -> Result<SyncState, Failure> {
    let text = ctx
        .store()
        .cursor(&state_name(code))
        .await
        .map_err(store_failure)?;
    match text {
        None => Ok(SyncState::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            Failure::new(
                ErrorClass::Unknown,
                format!("the sync state of customer {code} cannot be read: {e}"),
            )
        }),
    }
}

async fn save_state(ctx: &StepCtx<'_>, code: &str, state: &SyncState) -> Result<(), Failure> {
    if ctx.mode == Mode::DryRun {
        return Ok(());
    }
    let text = serde_json::to_string(state)
        .map_err(|e| Failure::new(ErrorClass::Unknown, format!("encoding sync state: {e}")))?;
    ctx.store()
        .set_cursor(&state_name(code), &text)
        .await
        .map_err(store_failure)
}

/// Where a run's event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An OrderCloud user webhook.
    Ordercloud,
    /// A KashFlow customer poll.
    Kashflow,
}

/// The decision of the `plan` step (journaled; later steps act on it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Where the change came from.
    pub origin: Origin,
    /// `sync` or `none`.
    pub action: String,
    /// Why, in words.
    pub reason: String,
    /// The KashFlow customer code.
    pub code: String,
    /// The origin's record as read.
    pub record: CustomerRecord,
    /// The state to save before writing (and what the systems should hold).
    pub state: SyncState,
    /// Fields whose change goes to the other systems.
    pub changed: Vec<String>,
    /// Fields changed on the origin that the other system owns (reverted there).
    pub refused: Vec<String>,
}

/// The flow.
pub struct CustomerSync {
    settings: CustomerSyncSettings,
    kashflow: KashFlowClient,
    kashflow_connection: String,
    kashflow_url: String,
    ordercloud: OrderCloudClient,
    ordercloud_connection: String,
    ordercloud_url: String,
    xconnect: Option<XConnectClient>,
    triggers: Vec<Trigger>,
    version: String,
    locks: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

const STEPS: [&str; 1] = ["sync"];

impl CustomerSync {
    /// The flow over its connections (`*_connection` name the ledger
    /// namespaces, `*_url` the base URLs shown in dry runs).
    pub fn new(
        settings: CustomerSyncSettings,
        kashflow: KashFlowClient,
        kashflow_url: &str,
        ordercloud: OrderCloudClient,
        ordercloud_url: &str,
        xconnect: Option<XConnectClient>,
    ) -> Self {
        let user_route = |route: &str, verb: &str| Trigger::OrderCloud {
            route: route.to_owned(),
            verb: verb.to_owned(),
        };
        let poll = |kind: &str| Trigger::Poll {
            source: POLL_SOURCE.to_owned(),
            kind: kind.to_owned(),
        };
        let triggers = vec![
            user_route("v1/buyers/{buyerID}/users", "POST"),
            user_route("v1/buyers/{buyerID}/users/{userID}", "PATCH"),
            user_route("v1/buyers/{buyerID}/users/{userID}", "PUT"),
            poll("customer.created"),
            poll("customer.changed"),
        ];
        let digest = fingerprint(&json!({
            "settings": serde_json::to_value(&settings).unwrap_or(Value::Null),
            "xconnect": xconnect.is_some(),
        }));
        CustomerSync {
            settings,
            kashflow,
            kashflow_connection: "kashflow".to_owned(),
            kashflow_url: kashflow_url.trim_end_matches('/').to_owned(),
            ordercloud,
            ordercloud_connection: "ordercloud".to_owned(),
            ordercloud_url: ordercloud_url.trim_end_matches('/').to_owned(),
            xconnect,
            triggers,
            version: format!("2+{digest}"),
            locks: std::sync::Mutex::default(),
        }
    }

    /// The OrderCloud user a KashFlow code belongs to, for a customer with
    /// no sync state yet: the user whose id makes this code (the order
    /// flow's customers), if `buyer_id` has one.
    async fn user_for_code(&self, code: &str) -> Result<Option<String>, Failure> {
        let buyer = &self.settings.buyer_id;
        if buyer.is_empty() {
            return Ok(None);
        }
        let prefix = &self.settings.customer_code_prefix;
        if let Some(rest) = code.strip_prefix(prefix.as_str()) {
            for guess in [rest.to_ascii_lowercase(), rest.to_owned()] {
                if let Some(user) = self.ordercloud.get_user(buyer, &guess).await? {
                    if let Some(id) = user.id.filter(|id| customer_code(prefix, id) == code) {
                        return Ok(Some(id));
                    }
                }
            }
            let options = ListOptions {
                search: Some(rest.to_owned()),
                ..ListOptions::default()
            };
            let users = self.ordercloud.list_users(buyer, &options).await?;
            if let Some(id) = users
                .into_iter()
                .filter_map(|u| u.id)
                .find(|id| customer_code(prefix, id) == code)
            {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    async fn plan(&self, ctx: &StepCtx<'_>) -> Result<Plan, Failure> {
        let input = ctx.input();
        if input["source"].as_str() == Some(POLL_SOURCE) {
            let code = input["key"]
                .as_str()
                .ok_or_else(|| Failure::validation("the poll event names no customer code"))?
                .to_owned();
            let mut state = load_state(ctx, &code).await?;
            let Some(customer) = self.kashflow.get_customer(&code).await? else {
                return Ok(none(
                    Origin::Kashflow,
                    &code,
                    state,
                    "the customer no longer exists in KashFlow",
                ));
            };
            if state.user_id.is_empty() {
                match self.user_for_code(&code).await? {
                    Some(user) => {
                        state.buyer_id.clone_from(&self.settings.buyer_id);
                        state.user_id = user;
                    }
                    None if !self.settings.buyer_id.is_empty() => {
                        state.buyer_id.clone_from(&self.settings.buyer_id);
                        state.user_id = format!(
                            "{}{}",
                            self.settings.user_id_prefix,
                            code.to_ascii_lowercase()
                        );
                    }
                    None => {}
                }
            }
            let record = CustomerRecord::from_customer(&customer);
            return Ok(decide(
                &self.settings,
                Origin::Kashflow,
                code,
                state,
                record,
            ));
        }
        let (buyer, user_id) = user_of(input)?;
        let user = self.ordercloud.get_user(&buyer, &user_id).await?;
        let code = self.code_for_user(user.as_ref(), &user_id);
        let mut state = load_state(ctx, &code).await?;
        state.buyer_id = buyer.clone();
        state.user_id.clone_from(&user_id);
        let Some(user) = user else {
            return Ok(none(
                Origin::Ordercloud,
                &code,
                state,
                "the user no longer exists in OrderCloud",
            ));
        };
        let record = CustomerRecord::from_user(&user);
        Ok(decide(
            &self.settings,
            Origin::Ordercloud,
            code,
            state,
            record,
        ))
    }
}

/// Compares the origin's record with the last synced one: nothing to do
/// when equal; otherwise the fields that changed (and may change from this
/// origin) make the new state.
pub fn decide(
    settings: &CustomerSyncSettings,
    origin: Origin,
    code: String,
    mut state: SyncState,
    record: CustomerRecord,
) -> Plan {
    let Some(last) = state.last.clone() else {
        state.last = Some(record.clone());
        metrics::counter!("ledgerbridge_customer_sync_total", "origin" => origin_name(origin), "outcome" => "first").increment(1);
        return Plan {
            origin,
            action: "sync".to_owned(),
            reason: "first sync of this customer".to_owned(),
            code,
            record,
            state,
            changed: FIELDS.iter().map(|f| (*f).to_owned()).collect(),
            refused: Vec::new(),
        };
    };
    if last == record {
        metrics::counter!("ledgerbridge_customer_sync_total", "origin" => origin_name(origin), "outcome" => "unchanged").increment(1);
        return none(
            origin,
            &code,
            state,
            "no change since the last sync (our own write coming back, or a change to fields not synced)",
        );
    }
    let mut target = last.clone();
    let mut changed = Vec::new();
    let mut refused = Vec::new();
    for field in FIELDS {
        if last.get(field) == record.get(field) {
            continue;
        }
        let allowed = match settings.owner(field) {
            Owner::Latest => true,
            Owner::Ordercloud => origin == Origin::Ordercloud,
            Owner::Kashflow => origin == Origin::Kashflow,
        };
        if allowed {
            target.set(field, record.get(field));
            changed.push(field.to_owned());
        } else {
            refused.push(field.to_owned());
        }
    }
    metrics::counter!("ledgerbridge_customer_sync_total", "origin" => origin_name(origin), "outcome" => "changed").increment(1);
    state.last = Some(target);
    Plan {
        origin,
        action: "sync".to_owned(),
        reason: format!("changed: {}", changed.join(", ")),
        code,
        record,
        state,
        changed,
        refused,
    }
}

/// The buyer and user an OrderCloud user webhook names.
fn user_of(input: &Value) -> Result<(String, String), Failure> {
    let params = &input["RouteParams"];
    let buyer = params["buyerID"]
        .as_str()
        .ok_or_else(|| Failure::validation("the webhook names no buyer (RouteParams.buyerID)"))?
        .to_owned();
    let user_id = params["userID"]
        .as_str()
        .or_else(|| input["Response"]["Body"]["ID"].as_str())
        .ok_or_else(|| {
            Failure::validation(
                "the webhook names no user: RouteParams.userID and Response.Body.ID are both missing",
            )
        })?
        .to_owned();
    Ok((buyer, user_id))
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Ordercloud => "ordercloud",
        Origin::Kashflow => "kashflow",
    }
}

fn none(origin: Origin, code: &str, state: SyncState, reason: &str) -> Plan {
    Plan {
        origin,
        action: "none".to_owned(),
        reason: reason.to_owned(),
        code: code.to_owned(),
        record: state.last.clone().unwrap_or_default(),
        state,
        changed: Vec::new(),
        refused: Vec::new(),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Value, Failure> {
    serde_json::to_value(value).map_err(|e| {
        Failure::new(
            ErrorClass::Unknown,
            format!("cannot encode step output: {e}"),
        )
    })
}

impl Plan {
    /// The fields this run writes to `target`: the changes, to the other
    /// system; the refused changes, back to the origin.
    pub fn fields_for(&self, target: Origin) -> &[String] {
        if target == self.origin {
            &self.refused
        } else {
            &self.changed
        }
    }
}

#[async_trait]
impl Flow for CustomerSync {
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
        if step != "sync" {
            return Err(Failure::new(
                ErrorClass::Unknown,
                format!("{NAME} has no step {step:?}"),
            ));
        }
        // One customer is synced by one run at a time (in this process):
        // the run reads its source, writes the other systems and saves the
        // state under the customer's lock, so the echo of its writes (which
        // waits for the lock) always finds the new state and is dropped.
        let code = self.code_of(ctx).await?;
        let lock = self.lock_for(&code);
        let result = {
            let _guard = lock.lock().await;
            self.sync(ctx).await
        };
        self.unlock(&code, lock);
        result
    }
}

impl CustomerSync {
    /// The KashFlow code the run is about (read before taking its lock).
    async fn code_of(&self, ctx: &StepCtx<'_>) -> Result<String, Failure> {
        let input = ctx.input();
        if input["source"].as_str() == Some(POLL_SOURCE) {
            return input["key"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Failure::validation("the poll event names no customer code"));
        }
        let (buyer, user_id) = user_of(input)?;
        let user = self.ordercloud.get_user(&buyer, &user_id).await?;
        Ok(self.code_for_user(user.as_ref(), &user_id))
    }

    /// A user we created for a KashFlow customer names its code in xp;
    /// any other user's code is derived from its id, as the order flow does.
    fn code_for_user(&self, user: Option<&User>, user_id: &str) -> String {
        user.and_then(|u| u.xp.as_ref())
            .and_then(|xp| xp["KashFlowCustomerCode"].as_str())
            .map_or_else(
                || customer_code(&self.settings.customer_code_prefix, user_id),
                str::to_owned,
            )
    }

    fn lock_for(&self, code: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        locks.entry(code.to_owned()).or_default().clone()
    }

    fn unlock(&self, code: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self
            .locks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Ours and the map's: nobody else waits; forget it.
        if Arc::strong_count(&lock) <= 2 {
            locks.remove(code);
        }
    }

    /// Plan, write, then save the state (see [`CustomerSync::run_step`]).
    /// Safe to repeat after a crash: the writes set values (creations go
    /// through the ledger), and the state is saved only after them.
    async fn sync(&self, ctx: &mut StepCtx<'_>) -> Result<Value, Failure> {
        let mut plan = self.plan(ctx).await?;
        if !plan.refused.is_empty() {
            ctx.warnings.push(format!(
                "customer {}: {} changed in {} but owned by the other system; reverted there",
                plan.code,
                plan.refused.join(", "),
                origin_name(plan.origin)
            ));
        }
        if plan.action != "sync" {
            return Ok(json!({ "plan": encode(&plan)? }));
        }
        let to_kashflow = match plan.origin {
            Origin::Ordercloud => !plan.changed.is_empty() || !plan.refused.is_empty(),
            Origin::Kashflow => !plan.refused.is_empty(),
        };
        let kashflow = if to_kashflow {
            self.write_kashflow(ctx, &plan).await?
        } else {
            json!({"skipped": "nothing to write to KashFlow"})
        };
        let to_ordercloud = match plan.origin {
            Origin::Kashflow => !plan.changed.is_empty() || !plan.refused.is_empty(),
            Origin::Ordercloud => !plan.refused.is_empty(),
        };
        let ordercloud = if !to_ordercloud {
            json!({"skipped": "nothing to write to OrderCloud"})
        } else if plan.state.user_id.is_empty() {
            ctx.warnings.push(format!(
                "KashFlow customer {} has no OrderCloud user and [flows.customer-sync] buyer_id is empty: not synced to OrderCloud",
                plan.code
            ));
            json!({"skipped": "no OrderCloud user and no buyer_id to create one in"})
        } else {
            self.write_ordercloud(ctx, &plan).await?
        };
        let xconnect = match &self.xconnect {
            None => json!({"skipped": "no xConnect connection"}),
            Some(_) if plan.changed.is_empty() => {
                json!({"skipped": "nothing to write to xConnect"})
            }
            Some(xconnect) => {
                let (id, output) = self.write_xconnect(ctx, xconnect, &plan).await?;
                plan.state.xconnect_id = id;
                output
            }
        };
        save_state(ctx, &plan.code, &plan.state).await?;
        Ok(json!({
            "plan": encode(&plan)?,
            "kashflow": kashflow,
            "ordercloud": ordercloud,
            "xconnect": xconnect,
        }))
    }
    async fn write_kashflow(&self, ctx: &mut StepCtx<'_>, plan: &Plan) -> Result<Value, Failure> {
        let record = plan.state.last.clone().unwrap_or_default();
        let code = plan.code.clone();
        if let Some(existing) = self.kashflow.get_customer(&code).await? {
            return self.update_kashflow(ctx, plan, &existing).await;
        }
        let mut customer = record.apply_to_customer(&Customer::default());
        customer.code = Some(code.clone());
        if customer.name.is_none() {
            customer.name = Some(code.clone());
        }
        let planned = PlannedRequest {
            step: ctx.step.to_owned(),
            method: "POST".to_owned(),
            url: format!("{}/customers", self.kashflow_url),
            body: Some(encode(&customer)?),
        };
        let key = BusinessKey::new(&self.kashflow_connection, "customer", &code);
        let kashflow = &self.kashflow;
        let code_ref = &code;
        let created = ctx
            .write_once(
                key,
                planned,
                self.kashflow.target().limits().timeout,
                || async move { Ok(kashflow.get_customer(code_ref).await?.and_then(|c| c.code)) },
                || async move {
                    match kashflow.create_customer(&customer).await {
                        Ok(created) => Ok(created.code.unwrap_or_else(|| code_ref.clone())),
                        // Created meanwhile by another flow (the invoice of
                        // this customer's first order): link it.
                        Err(f)
                            if f.class == ErrorClass::Validation
                                && kashflow.get_customer(code_ref).await?.is_some() =>
                        {
                            Ok(code_ref.clone())
                        }
                        Err(f) => Err(f),
                    }
                },
            )
            .await?;
        // A customer created by someone else holds their values: bring this
        // run's fields in line (nothing is written when they already agree).
        if ctx.mode != Mode::DryRun {
            if let Some(existing) = self.kashflow.get_customer(&created).await? {
                let updated = self.update_kashflow(ctx, plan, &existing).await?;
                if updated.get("updated").is_some() {
                    return Ok(json!({"linked": created, "updated": created}));
                }
            }
        }
        metrics::counter!("ledgerbridge_customer_sync_writes_total", "target" => "kashflow", "how" => "create").increment(1);
        Ok(json!({"created": created}))
    }

    /// Sets this run's fields on an existing KashFlow customer. Only those:
    /// a concurrent change to another field in KashFlow is kept (and synced
    /// by its own run).
    async fn update_kashflow(
        &self,
        ctx: &mut StepCtx<'_>,
        plan: &Plan,
        existing: &Customer,
    ) -> Result<Value, Failure> {
        let record = plan.state.last.clone().unwrap_or_default();
        let code = plan.code.clone();
        let url = format!("{}/customers/{code}", self.kashflow_url);
        let before = CustomerRecord::from_customer(existing);
        let mut current = before.clone();
        for field in plan.fields_for(Origin::Kashflow) {
            current.set(field, record.get(field));
        }
        if current == before {
            return Ok(json!({"skipped": "KashFlow already holds these values"}));
        }
        let update = current.apply_to_customer(existing);
        if ctx.mode == Mode::DryRun {
            ctx.plan("PUT", &url, Some(encode(&update)?));
        } else {
            self.kashflow.update_customer(&code, &update).await?;
        }
        metrics::counter!("ledgerbridge_customer_sync_writes_total", "target" => "kashflow", "how" => "update").increment(1);
        Ok(json!({"updated": code}))
    }

    async fn write_ordercloud(&self, ctx: &mut StepCtx<'_>, plan: &Plan) -> Result<Value, Failure> {
        let record = plan.state.last.clone().unwrap_or_default();
        let buyer = plan.state.buyer_id.clone();
        let user_id = plan.state.user_id.clone();
        let url = format!("{}/v1/buyers/{buyer}/users/{user_id}", self.ordercloud_url);
        if let Some(user) = self.ordercloud.get_user(&buyer, &user_id).await? {
            let before = CustomerRecord::from_user(&user);
            let fields = plan.fields_for(Origin::Ordercloud);
            if fields.iter().all(|f| before.get(f) == record.get(f)) {
                return Ok(json!({"skipped": "OrderCloud already holds these values"}));
            }
            let patch = record.user_patch(fields);
            if ctx.mode == Mode::DryRun {
                ctx.plan("PATCH", &url, Some(patch));
            } else {
                self.ordercloud.patch_user(&buyer, &user_id, &patch).await?;
            }
            metrics::counter!("ledgerbridge_customer_sync_writes_total", "target" => "ordercloud", "how" => "update").increment(1);
            return Ok(json!({"updated": format!("{buyer}/{user_id}")}));
        }
        let user = User {
            id: Some(user_id.clone()),
            username: Some(user_id.clone()),
            first_name: Some(record.first_name.clone()),
            last_name: Some(record.last_name.clone()),
            email: Some(record.email.clone()),
            phone: CustomerRecord::some(&record.phone),
            active: Some(true),
            xp: Some(json!({"KashFlowCustomerCode": plan.code})),
            ..User::default()
        };
        let planned = PlannedRequest {
            step: ctx.step.to_owned(),
            method: "POST".to_owned(),
            url: format!("{}/v1/buyers/{buyer}/users", self.ordercloud_url),
            body: Some(encode(&user)?),
        };
        let key = BusinessKey::new(
            &self.ordercloud_connection,
            "user",
            format!("{buyer}/{user_id}"),
        );
        let ordercloud = &self.ordercloud;
        let (buyer_ref, user_ref) = (&buyer, &user_id);
        let created = ctx
            .write_once(
                key,
                planned,
                self.ordercloud.target().limits().timeout,
                || async move {
                    Ok(ordercloud
                        .get_user(buyer_ref, user_ref)
                        .await?
                        .and_then(|u| u.id))
                },
                || async move {
                    match ordercloud.create_user(buyer_ref, &user).await {
                        Ok(created) => Ok(created.id.unwrap_or_else(|| user_ref.clone())),
                        // Created meanwhile (a webhook-started run, a person): link it.
                        Err(f) if f.class == ErrorClass::Conflict => Ok(user_ref.clone()),
                        Err(f) => Err(f),
                    }
                },
            )
            .await?;
        metrics::counter!("ledgerbridge_customer_sync_writes_total", "target" => "ordercloud", "how" => "create").increment(1);
        Ok(json!({"created": format!("{buyer}/{created}")}))
    }

    async fn write_xconnect(
        &self,
        ctx: &mut StepCtx<'_>,
        xconnect: &XConnectClient,
        plan: &Plan,
    ) -> Result<(Option<String>, Value), Failure> {
        let record = plan.state.last.clone().unwrap_or_default();
        let (source, identifier) = if plan.state.user_id.is_empty() {
            ("kashflow", plan.code.clone())
        } else {
            ("ordercloud", plan.state.user_id.clone())
        };
        let contact = NewContact {
            source,
            identifier: &identifier,
            first_name: &record.first_name,
            last_name: &record.last_name,
            email: (!record.email.is_empty()).then_some(record.email.as_str()),
        };
        if ctx.mode == Mode::DryRun {
            ctx.plan(
                "PUT",
                &format!("xconnect contact {source}/{identifier}"),
                Some(encode(&record)?),
            );
            return Ok((
                plan.state.xconnect_id.clone(),
                json!({"planned": identifier}),
            ));
        }
        let (id, how) = match &plan.state.xconnect_id {
            Some(id) => match xconnect.update_contact(id, contact).await {
                Ok(()) => (id.clone(), "updated"),
                Err(f) if f.class == ErrorClass::NotFound => {
                    let (id, _) = xconnect.create_or_link_contact(contact).await?;
                    (id, "recreated")
                }
                Err(f) => return Err(f),
            },
            None => {
                // Created or, on a 409, found and linked; then brought up to date.
                let (id, link) = xconnect.create_or_link_contact(contact).await?;
                if link == ledgerbridge_connectors::xconnect::ContactLink::Linked {
                    xconnect.update_contact(&id, contact).await?;
                }
                (id, "linked")
            }
        };
        metrics::counter!("ledgerbridge_customer_sync_writes_total", "target" => "xconnect", "how" => how).increment(1);
        Ok((Some(id.clone()), json!({"contact": id, "how": how})))
    }
}

/// Polls KashFlow's customers: lists every page (the API has no "changed
/// since" filter), fingerprints each customer's synced fields, and reports
/// the customers whose fingerprint differs from the last cycle's. Unchanged
/// customers are never fetched one by one; the flow reads each changed one
/// once.
pub struct KashFlowCustomerPoll {
    kashflow: KashFlowClient,
    interval: Duration,
    initial: InitialPoll,
}

impl KashFlowCustomerPoll {
    /// A poll of `kashflow`'s customers every `interval`.
    pub fn new(kashflow: KashFlowClient, interval: Duration, initial: InitialPoll) -> Self {
        KashFlowCustomerPoll {
            kashflow,
            interval,
            initial,
        }
    }
}

#[async_trait]
impl PollSource for KashFlowCustomerPoll {
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
            "delete the cursor to start again from a baseline",
        )?;
        let customers = self.kashflow.list_customers().await?;
        let listed = customers.len();
        let mut records = BTreeMap::new();
        let mut listing = BTreeMap::new();
        for customer in customers {
            let Some(code) = customer.code.clone() else {
                continue;
            };
            let record = CustomerRecord::from_customer(&customer);
            let value = json!(record);
            listing.insert(code.clone(), fingerprint(&value));
            records.insert(code, value);
        }
        let diff = snapshot.diff(listing);
        if diff.is_empty() {
            return Ok(PollBatch {
                changes: Vec::new(),
                cursor: first.then(|| diff.next.encode()),
                listed,
                fetched: 0,
            });
        }
        if first && self.initial == InitialPoll::Baseline {
            return Ok(PollBatch {
                changes: Vec::new(),
                cursor: Some(diff.next.encode()),
                listed,
                fetched: 0,
            });
        }
        let mut changes = Vec::new();
        for (kind, keys) in [
            ("customer.created", &diff.created),
            ("customer.changed", &diff.changed),
            ("customer.deleted", &diff.deleted),
        ] {
            for key in keys {
                let fp = diff.next.entries.get(key).map_or("gone", String::as_str);
                changes.push(Change {
                    kind: kind.to_owned(),
                    key: key.clone(),
                    dedupe_key: Snapshot::dedupe_key(&diff.next, kind, key, fp),
                    record: records.get(key).cloned().unwrap_or(Value::Null),
                });
            }
        }
        Ok(PollBatch {
            changes,
            cursor: Some(diff.next.encode()),
            listed,
            fetched: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(first: &str, last: &str, email: &str, phone: &str) -> CustomerRecord {
        CustomerRecord {
            first_name: first.to_owned(),
            last_name: last.to_owned(),
            email: email.to_owned(),
            phone: phone.to_owned(),
        }
    }

    #[test]
    fn a_kashflow_customer_reads_as_its_primary_contact_or_its_name() {
        let customer: Customer = serde_json::from_value(json!({
            "Code": "C1", "Name": "Ada Lovelace",
            "Contacts": [
                {"Firstname": "Other", "LastName": "Person", "Email": "o@x"},
                {"Firstname": "Ada", "LastName": "Lovelace", "Email": "ada@x", "Telephone": "01", "IsPrimary": true}
            ]
        }))
        .unwrap();
        assert_eq!(
            CustomerRecord::from_customer(&customer),
            record("Ada", "Lovelace", "ada@x", "01")
        );
        let bare: Customer =
            serde_json::from_value(json!({"Code": "C2", "Name": "Grace Brewster Hopper"})).unwrap();
        assert_eq!(
            CustomerRecord::from_customer(&bare),
            record("Grace", "Brewster Hopper", "", "")
        );
    }

    #[test]
    fn applying_a_record_keeps_other_contacts_and_fields() {
        let customer: Customer = serde_json::from_value(json!({
            "Code": "C1", "Name": "Old", "Note": "keep",
            "Contacts": [{"Firstname": "A", "Email": "a@x"}, {"Firstname": "B", "IsPrimary": true}]
        }))
        .unwrap();
        let update = record("New", "Name", "n@x", "").apply_to_customer(&customer);
        assert_eq!(update.name.as_deref(), Some("New Name"));
        assert_eq!(
            update.note, None,
            "PUT merges: untouched fields are not sent"
        );
        let contacts = update.contacts.unwrap();
        assert_eq!(contacts[0].first_name.as_deref(), Some("A"));
        assert_eq!(contacts[1].first_name.as_deref(), Some("New"));
        assert_eq!(contacts[1].email.as_deref(), Some("n@x"));
    }

    fn state(last: Option<CustomerRecord>) -> SyncState {
        SyncState {
            buyer_id: "B".to_owned(),
            user_id: "u1".to_owned(),
            xconnect_id: None,
            last,
        }
    }

    #[test]
    fn our_own_write_coming_back_is_dropped() {
        let settings = CustomerSyncSettings::default();
        let synced = record("Ada", "Lovelace", "ada@x", "01");
        for origin in [Origin::Ordercloud, Origin::Kashflow] {
            let plan = decide(
                &settings,
                origin,
                "OC-U1".to_owned(),
                state(Some(synced.clone())),
                synced.clone(),
            );
            assert_eq!(plan.action, "none");
            assert!(plan.changed.is_empty());
        }
    }

    #[test]
    fn only_changed_fields_travel_and_owned_fields_are_reverted() {
        let mut settings = CustomerSyncSettings::default();
        settings
            .owners
            .insert("email".to_owned(), Owner::Ordercloud);
        let synced = record("Ada", "Lovelace", "ada@x", "01");
        let from_kashflow = record("Ada", "King", "other@x", "01");
        let plan = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            state(Some(synced)),
            from_kashflow,
        );
        assert_eq!(plan.action, "sync");
        assert_eq!(plan.changed, vec!["last_name"]);
        assert_eq!(plan.refused, vec!["email"]);
        assert_eq!(plan.state.last, Some(record("Ada", "King", "ada@x", "01")));
    }

    #[test]
    fn a_first_sync_takes_the_whole_record() {
        let settings = CustomerSyncSettings::default();
        let plan = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("A", "B", "", ""),
        );
        assert_eq!(plan.action, "sync");
        assert_eq!(plan.changed.len(), FIELDS.len());
        assert_eq!(plan.state.last, Some(record("A", "B", "", "")));
    }

    #[test]
    fn unknown_owner_fields_are_refused() {
        let mut settings = CustomerSyncSettings::default();
        settings.owners.insert("email".to_owned(), Owner::Kashflow);
        assert!(settings.validate().is_ok());
        settings.owners.insert("mail".to_owned(), Owner::Kashflow);
        let err = settings.validate().unwrap_err();
        assert!(err.contains("\"mail\""), "{err}");
    }
}
