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
//! First sync. A customer with no state yet is either new to the other
//! system — then the whole record is written there — or already held by it:
//! a shopper's first order made their KashFlow customer from the order's
//! copy of the user, or both systems knew the person before the sync was set
//! up. Then neither record is known to be the current one: the order's copy
//! may be older than the user, and a change made on either side may have
//! its event still on the way (a webhook being retried, the next poll). So
//! the two records are compared field by field:
//! - equal: the baseline;
//! - empty on one side: filled from the other;
//! - owned (see below): the owner's value;
//! - changed on one side only, when the record both started from is known
//!   (whichever run creates the KashFlow customer — the order flow, from the
//!   order's copy of the user, or this flow, from the user — or the
//!   OrderCloud user notes what it created it with, [`base_name`]): the
//!   side that moved;
//! - changed by this very event — the keys of an OrderCloud PATCH or PUT
//!   body, the fields the KashFlow poll saw change (its snapshot keeps a
//!   short hash per field): the origin's value, as for any later change;
//! - otherwise unsettled: written nowhere, both values kept in the state,
//!   and a warning in the run. The first later event that changes the field
//!   on either side settles it with that side's value — an event naming the
//!   field, or a value other than the one that side held at the first sync.
//!   A first sync that leaves fields unsettled also queues a settling pass
//!   ([`settle`], `settle_after_secs` later): a field that no event has
//!   settled by then is settled if the sides now agree or one of them has
//!   moved since the first sync, and otherwise reported — the pass parks
//!   with both values — never left different in silence.
//!
//! A customer this flow created on the other side and whose state was not
//! saved (the engine killed between the create and the save) once had no
//! record to start from: the next first sync met a KashFlow change made in
//! between — one the poll saw as part of a creation, naming no field — as
//! unsettled, and no later event ever settled it: the KashFlow last name
//! never reached OrderCloud. The create now notes the base, whichever flow
//! makes it.
//!
//! Writing the whole origin record over an existing customer, as the first
//! sync once did, lost updates: a delayed "user created" webhook wrote the
//! user's old phone over one just changed in KashFlow, and the poll's event
//! of that change then found KashFlow equal to the state and dropped it.
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
/// The source named by the input of a settling pass (see [`settle`]).
pub const SETTLE_SOURCE: &str = "customer-sync:settle";

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
    /// Seconds after a first sync that left fields unsettled before the
    /// settling pass looks at them again (see [`settle`]); unset: three
    /// poll intervals, at least 60 s.
    pub settle_after_secs: Option<u64>,
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
            settle_after_secs: None,
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

    /// The wait before a settling pass (see [`settle`]).
    pub fn settle_after(&self) -> Duration {
        let secs = self
            .settle_after_secs
            .unwrap_or_else(|| 60.max(self.poll_interval_secs.saturating_mul(3)));
        Duration::from_secs(secs)
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
    /// Fields the two systems held different values of at this customer's
    /// first sync, with neither known to be the newer (see the module
    /// docs); `last` holds the first sync's origin value for them, which
    /// was not written anywhere. Absent in states saved before it existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unsettled: BTreeMap<String, Unsettled>,
}

/// The two values of an unsettled field, as the first sync read them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unsettled {
    /// OrderCloud's value.
    pub ordercloud: String,
    /// KashFlow's value.
    pub kashflow: String,
}

impl Unsettled {
    fn held_by(&self, side: Origin) -> &str {
        match side {
            Origin::Ordercloud => &self.ordercloud,
            Origin::Kashflow => &self.kashflow,
        }
    }
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

/// The store cursor holding the record a customer was created with in
/// KashFlow by the order flow (from the order's copy of the user): the two
/// records' common ancestor at the customer's first sync.
pub fn base_name(code: &str) -> String {
    format!("customer-sync-base:{code}")
}

/// Notes `record` as the record customer `code` was created with on one
/// side from the other's (see [`base_name`]). Called by whichever run
/// creates the KashFlow customer (the order flow, or this flow) or the
/// OrderCloud user (this flow), inside its ledgered create, just before the
/// POST: the run that creates is the one that notes, also when an earlier
/// run claimed the customer and died before creating it, and an attempt
/// killed after its POST has noted it already. (Noting it only when this
/// flow's own run had not claimed the customer left the customers this
/// flow created without a base: a first sync after a kill could then not
/// tell which side had moved.)
pub async fn save_base(
    store: &dyn ledgerbridge_store::Store,
    code: &str,
    record: &CustomerRecord,
) -> Result<(), Failure> {
    let text = serde_json::to_string(record)
        .map_err(|e| Failure::new(ErrorClass::Unknown, format!("encoding a base record: {e}")))?;
    store
        .set_cursor(&base_name(code), &text)
        .await
        .map_err(store_failure)
}

async fn load_base(ctx: &StepCtx<'_>, code: &str) -> Result<Option<CustomerRecord>, Failure> {
    let text = ctx
        .store()
        .cursor(&base_name(code))
        .await
        .map_err(store_failure)?;
    // Unreadable: as if unknown (the first sync then leaves differences unsettled).
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
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
    /// Fields the origin takes from the other system at a first sync: empty
    /// on the origin, or owned by the other system (written to the origin).
    #[serde(default)]
    pub taken: Vec<String>,
    /// Unsettled fields a settling pass could not settle (see [`settle`]):
    /// reported, the run parks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unresolved: Vec<String>,
}

/// What a run knows about its event besides the origin's record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Seen {
    /// The other system's record, read when the customer has no sync state
    /// yet; `None` when it is not there (or was not read).
    pub counterpart: Option<CustomerRecord>,
    /// The fields the event itself says were changed on the origin: the
    /// keys of an OrderCloud PATCH or PUT body, the fields the KashFlow
    /// poll saw change. Empty for a creation, or when it cannot tell.
    pub named: Vec<String>,
    /// The record both sides started from, when known: what the order flow
    /// created the KashFlow customer with (read with the counterpart).
    pub base: Option<CustomerRecord>,
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
        if input["source"].as_str() == Some(SETTLE_SOURCE) {
            let code = input["key"]
                .as_str()
                .ok_or_else(|| Failure::validation("the settling pass names no customer code"))?
                .to_owned();
            let state = load_state(ctx, &code).await?;
            if state.unsettled.is_empty() {
                let nobody = CustomerRecord::default();
                return Ok(settle(code, state, &nobody, &nobody));
            }
            if state.user_id.is_empty() {
                return Ok(none(
                    Origin::Kashflow,
                    &code,
                    state,
                    "no OrderCloud user to settle with",
                ));
            }
            let customer = self.kashflow.get_customer(&code).await?;
            let user = self
                .ordercloud
                .get_user(&state.buyer_id, &state.user_id)
                .await?;
            let (Some(customer), Some(user)) = (customer, user) else {
                return Ok(none(
                    Origin::Kashflow,
                    &code,
                    state,
                    "the customer is no longer on both sides",
                ));
            };
            return Ok(settle(
                code,
                state,
                &CustomerRecord::from_user(&user),
                &CustomerRecord::from_customer(&customer),
            ));
        }
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
            let mut seen = Seen::default();
            if input["kind"].as_str() == Some("customer.changed") {
                seen.named = input["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|f| FIELDS.contains(f))
                    .map(str::to_owned)
                    .collect();
            }
            if state.last.is_none() && !state.user_id.is_empty() {
                let user = self
                    .ordercloud
                    .get_user(&state.buyer_id, &state.user_id)
                    .await?;
                seen.counterpart = user.as_ref().map(CustomerRecord::from_user);
                seen.base = load_base(ctx, &code).await?;
            }
            return Ok(decide(
                &self.settings,
                Origin::Kashflow,
                code,
                state,
                record,
                &seen,
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
        let mut seen = Seen {
            named: named_in_request(input),
            ..Seen::default()
        };
        if state.last.is_none() {
            let customer = self.kashflow.get_customer(&code).await?;
            seen.counterpart = customer.as_ref().map(CustomerRecord::from_customer);
            seen.base = load_base(ctx, &code).await?;
        }
        Ok(decide(
            &self.settings,
            Origin::Ordercloud,
            code,
            state,
            record,
            &seen,
        ))
    }
}

/// Compares the origin's record with the last synced one: nothing to do
/// when equal; otherwise the fields that changed (and may change from this
/// origin) make the new state. A customer's first sync (no state yet)
/// takes the whole record when the other system does not hold the customer,
/// and otherwise reconciles the two records field by field (see the module
/// docs): agreeing fields become the baseline, empty ones are filled, owned
/// ones take the owner's value, the fields this event changed take the
/// origin's value, and the rest stay unsettled until a change of theirs.
pub fn decide(
    settings: &CustomerSyncSettings,
    origin: Origin,
    code: String,
    mut state: SyncState,
    record: CustomerRecord,
    seen: &Seen,
) -> Plan {
    let Some(last) = state.last.clone() else {
        if let Some(other) = &seen.counterpart {
            return first_sync_with_counterpart(settings, origin, code, state, record, other, seen);
        }
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
            taken: Vec::new(),
            unresolved: Vec::new(),
        };
    };
    let mut target = last.clone();
    let mut changed = Vec::new();
    let mut refused = Vec::new();
    let mut settled = Vec::new();
    for field in FIELDS {
        let value = record.get(field);
        if let Some(open) = state.unsettled.get(field) {
            // Neither side was known to be newer: the first change of this
            // field on either side settles it, with that side's value.
            if seen.named.iter().any(|n| n == field) || value != open.held_by(origin) {
                target.set(field, value);
                changed.push(field.to_owned());
                settled.push(field);
            }
            continue;
        }
        if last.get(field) == value {
            continue;
        }
        let allowed = match settings.owner(field) {
            Owner::Latest => true,
            Owner::Ordercloud => origin == Origin::Ordercloud,
            Owner::Kashflow => origin == Origin::Kashflow,
        };
        if allowed {
            target.set(field, value);
            changed.push(field.to_owned());
        } else {
            refused.push(field.to_owned());
        }
    }
    if changed.is_empty() && refused.is_empty() {
        metrics::counter!("ledgerbridge_customer_sync_total", "origin" => origin_name(origin), "outcome" => "unchanged").increment(1);
        return none(
            origin,
            &code,
            state,
            "no change since the last sync (our own write coming back, or a change to fields not synced)",
        );
    }
    for field in settled {
        state.unsettled.remove(field);
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
        taken: Vec::new(),
        unresolved: Vec::new(),
    }
}

/// The first sync of a customer the other system already holds: field by
/// field, what both hold is the baseline; a value only one side has fills
/// the other; a field with an owner takes the owner's value; a field the
/// event changed on the origin takes the origin's value (the change
/// processed last wins, as for any later change); any other difference is
/// left unsettled — written nowhere — since either side may hold the newer
/// value (an order's copy of an old record, or a change whose own event is
/// still to come).
fn first_sync_with_counterpart(
    settings: &CustomerSyncSettings,
    origin: Origin,
    code: String,
    mut state: SyncState,
    record: CustomerRecord,
    other: &CustomerRecord,
    seen: &Seen,
) -> Plan {
    let other_side = match origin {
        Origin::Ordercloud => Origin::Kashflow,
        Origin::Kashflow => Origin::Ordercloud,
    };
    let mut target = record.clone();
    let mut changed = Vec::new();
    let mut taken = Vec::new();
    let mut unsettled = BTreeMap::new();
    for field in FIELDS {
        let (mine, theirs) = (record.get(field), other.get(field));
        if mine == theirs {
            continue;
        }
        let base = seen.base.as_ref().map(|b| b.get(field));
        let winner = if theirs.is_empty() {
            Some(origin)
        } else if mine.is_empty() {
            Some(other_side)
        } else {
            match settings.owner(field) {
                Owner::Ordercloud => Some(Origin::Ordercloud),
                Owner::Kashflow => Some(Origin::Kashflow),
                // Only one side moved away from the common ancestor: its change.
                Owner::Latest if base == Some(theirs) => Some(origin),
                Owner::Latest if base == Some(mine) => Some(other_side),
                Owner::Latest if seen.named.iter().any(|n| n == field) => Some(origin),
                Owner::Latest => None,
            }
        };
        match winner {
            Some(side) if side == origin => changed.push(field.to_owned()),
            Some(_) => {
                target.set(field, theirs);
                taken.push(field.to_owned());
            }
            None => {
                let (ordercloud, kashflow) = match origin {
                    Origin::Ordercloud => (mine, theirs),
                    Origin::Kashflow => (theirs, mine),
                };
                unsettled.insert(
                    field.to_owned(),
                    Unsettled {
                        ordercloud: ordercloud.to_owned(),
                        kashflow: kashflow.to_owned(),
                    },
                );
            }
        }
    }
    metrics::counter!("ledgerbridge_customer_sync_total", "origin" => origin_name(origin), "outcome" => "first").increment(1);
    let mut reason = format!(
        "first sync of this customer, already in {}",
        side_name(other_side)
    );
    for (what, fields) in [("sent", &changed), ("taken", &taken)] {
        if !fields.is_empty() {
            reason.push_str(&format!("; {what}: {}", fields.join(", ")));
        }
    }
    if !unsettled.is_empty() {
        let names: Vec<&str> = unsettled.keys().map(String::as_str).collect();
        reason.push_str(&format!("; unsettled: {}", names.join(", ")));
    }
    state.last = Some(target);
    state.unsettled = unsettled;
    Plan {
        origin,
        action: "sync".to_owned(),
        reason,
        code,
        record,
        state,
        changed,
        refused: Vec::new(),
        taken,
        unresolved: Vec::new(),
    }
}

/// The settling pass of a customer whose first sync left fields unsettled,
/// run [`CustomerSyncSettings::settle_after`] later, with both systems
/// re-read. By then the events that were on their way at the first sync
/// have been processed and have settled the fields they changed; what is
/// still unsettled had no such event (a KashFlow change made before the
/// poll first listed the customer, or a value written by a run killed
/// before it saved the state), and would otherwise stay different for
/// good. Per field:
/// - both sides now agree: settled;
/// - only one side holds a value other than the one it held at the first
///   sync: that side changed it since (an event naming no field), and its
///   value goes to the other side;
/// - otherwise neither is known to be the newer: left as it is and
///   reported (`unresolved`: the run parks with both values; a change of
///   the field on either side settles it as usual).
pub fn settle(
    code: String,
    mut state: SyncState,
    ordercloud: &CustomerRecord,
    kashflow: &CustomerRecord,
) -> Plan {
    let Some(mut target) = state.last.clone() else {
        return none(
            Origin::Kashflow,
            &code,
            state,
            "no sync state: nothing to settle",
        );
    };
    if state.unsettled.is_empty() {
        return none(
            Origin::Kashflow,
            &code,
            state,
            "nothing unsettled (settled by a change meanwhile)",
        );
    }
    // KashFlow's values go to OrderCloud as changes from KashFlow,
    // OrderCloud's to KashFlow as fields KashFlow takes.
    let (mut changed, mut taken, mut agreed, mut unresolved) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (field, open) in &state.unsettled {
        let (oc, kf) = (ordercloud.get(field), kashflow.get(field));
        let moved = (oc != open.ordercloud, kf != open.kashflow);
        if oc == kf {
            target.set(field, oc);
            agreed.push(field.clone());
        } else if moved == (false, true) {
            target.set(field, kf);
            changed.push(field.clone());
        } else if moved == (true, false) {
            target.set(field, oc);
            taken.push(field.clone());
        } else {
            unresolved.push(field.clone());
        }
    }
    for field in changed.iter().chain(&taken).chain(&agreed) {
        state.unsettled.remove(field);
    }
    let mut reason = "settling pass".to_owned();
    for (what, fields) in [
        ("from KashFlow", &changed),
        ("from OrderCloud", &taken),
        ("agreed", &agreed),
        ("unresolved", &unresolved),
    ] {
        if !fields.is_empty() {
            reason.push_str(&format!("; {what}: {}", fields.join(", ")));
        }
    }
    let settled = !(changed.is_empty() && taken.is_empty() && agreed.is_empty());
    metrics::counter!("ledgerbridge_customer_sync_total", "origin" => "settle", "outcome" => if unresolved.is_empty() { "settled" } else { "unresolved" }).increment(1);
    state.last = Some(target);
    Plan {
        origin: Origin::Kashflow,
        action: if settled { "sync" } else { "none" }.to_owned(),
        reason,
        code,
        record: kashflow.clone(),
        state,
        changed,
        refused: Vec::new(),
        taken,
        unresolved,
    }
}

/// The failure that reports a settling pass's unresolved fields.
fn unresolved_failure(plan: &Plan) -> Failure {
    let fields: Vec<String> = plan
        .unresolved
        .iter()
        .map(|field| {
            let open = plan.state.unsettled.get(field).cloned().unwrap_or_default();
            format!(
                "{field} (OrderCloud {:?}, KashFlow {:?})",
                open.ordercloud, open.kashflow
            )
        })
        .collect();
    Failure::validation(format!(
        "customer {}: {} differ between OrderCloud and KashFlow since the first sync and no change on either side has settled them: neither is known to be the newer. Set the right value on one side (its change is then synced), then replay or discard this run",
        plan.code,
        fields.join(", ")
    ))
}

fn side_name(side: Origin) -> &'static str {
    match side {
        Origin::Ordercloud => "OrderCloud",
        Origin::Kashflow => "KashFlow",
    }
}

/// The synced fields an OrderCloud user webhook's request set: the keys of
/// a PATCH or PUT body. A creation (POST) names none: the new user is not a
/// change to what KashFlow may already hold.
fn named_in_request(input: &Value) -> Vec<String> {
    let verb = input["Verb"].as_str().unwrap_or_default();
    if !verb.eq_ignore_ascii_case("PATCH") && !verb.eq_ignore_ascii_case("PUT") {
        return Vec::new();
    }
    let Some(body) = input["Request"]["Body"].as_object() else {
        return Vec::new();
    };
    [
        ("FirstName", "first_name"),
        ("LastName", "last_name"),
        ("Email", "email"),
        ("Phone", "phone"),
    ]
    .into_iter()
    .filter(|(key, _)| body.contains_key(*key))
    .map(|(_, field)| field.to_owned())
    .collect()
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
        taken: Vec::new(),
        unresolved: Vec::new(),
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
    /// system; the refused changes and the fields taken from the other
    /// system, to the origin.
    pub fn fields_for(&self, target: Origin) -> Vec<String> {
        if target == self.origin {
            self.refused.iter().chain(&self.taken).cloned().collect()
        } else {
            self.changed.clone()
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
        if matches!(input["source"].as_str(), Some(POLL_SOURCE | SETTLE_SOURCE)) {
            return input["key"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Failure::validation("the poll event names no customer code"));
        }
        let (buyer, user_id) = user_of(input)?;
        let user = self.ordercloud.get_user(&buyer, &user_id).await?;
        Ok(self.code_for_user(user.as_ref(), &user_id))
    }

    /// Queues the settling pass of a customer left with unsettled fields
    /// (see [`settle`]), due [`CustomerSyncSettings::settle_after`] from
    /// now. Its id comes from the customer and its unsettled fields, so
    /// queueing it again (a repeated step, a later event while they are
    /// still open) changes nothing.
    async fn schedule_settle(&self, ctx: &StepCtx<'_>, plan: &Plan) -> Result<(), Failure> {
        use sha2::{Digest, Sha256};
        let open = serde_json::to_string(&plan.state.unsettled).unwrap_or_default();
        let digest = Sha256::digest(format!("{SETTLE_SOURCE}\n{}\n{open}", plan.code));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let now = chrono::Utc::now();
        let not_before = chrono::Duration::from_std(self.settings.settle_after())
            .ok()
            .and_then(|wait| now.checked_add_signed(wait))
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        let run = ledgerbridge_store::NewRun {
            id,
            flow: NAME.to_owned(),
            flow_version: self.version.clone(),
            input: json!({"source": SETTLE_SOURCE, "key": plan.code}),
            not_before,
        };
        ctx.store().enqueue(run).await.map_err(store_failure)
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
            if !plan.unresolved.is_empty() {
                return Err(unresolved_failure(&plan));
            }
            return Ok(json!({ "plan": encode(&plan)? }));
        }
        if !plan.state.unsettled.is_empty() {
            let fields: Vec<&str> = plan.state.unsettled.keys().map(String::as_str).collect();
            ctx.warnings.push(format!(
                "customer {}: {} differ between OrderCloud and KashFlow and neither is known to be the newer: left as they are until one side changes them",
                plan.code,
                fields.join(", ")
            ));
        }
        let to_kashflow = !plan.fields_for(Origin::Kashflow).is_empty();
        let kashflow = if to_kashflow {
            self.write_kashflow(ctx, &plan).await?
        } else {
            json!({"skipped": "nothing to write to KashFlow"})
        };
        let to_ordercloud = !plan.fields_for(Origin::Ordercloud).is_empty();
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
            Some(_)
                if plan.changed.is_empty()
                    && plan.taken.is_empty()
                    && plan.state.xconnect_id.is_some() =>
            {
                json!({"skipped": "nothing to write to xConnect"})
            }
            Some(xconnect) => {
                let (id, output) = self.write_xconnect(ctx, xconnect, &plan).await?;
                plan.state.xconnect_id = id;
                output
            }
        };
        let settling = ctx.input()["source"].as_str() == Some(SETTLE_SOURCE);
        if !settling && !plan.state.unsettled.is_empty() && ctx.mode != Mode::DryRun {
            // Before the state: a crash in between repeats the step, which
            // schedules the same pass again (a no-op).
            self.schedule_settle(ctx, &plan).await?;
        }
        save_state(ctx, &plan.code, &plan.state).await?;
        if !plan.unresolved.is_empty() {
            return Err(unresolved_failure(&plan));
        }
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
        let store = ctx.store();
        let base = CustomerRecord::from_customer(&customer);
        let created = ctx
            .write_once(
                key,
                planned,
                self.kashflow.target().limits().timeout,
                || async move { Ok(kashflow.get_customer(code_ref).await?.and_then(|c| c.code)) },
                || async move {
                    save_base(store, code_ref, &base).await?;
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
            current.set(&field, record.get(&field));
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
            let patch = record.user_patch(&fields);
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
        let store = ctx.store();
        let base = CustomerRecord::from_user(&user);
        let code_ref = &plan.code;
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
                    save_base(store, code_ref, &base).await?;
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
            listing.insert(code.clone(), snapshot_entry(&record));
            records.insert(code, json!(record));
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
        // Entries saved before they named their fields differ in text only.
        let mut reformatted = false;
        let mut changed = Vec::new();
        for key in &diff.changed {
            let old = snapshot.entries.get(key).map_or("", String::as_str);
            let new = diff.next.entries.get(key).map_or("", String::as_str);
            match changed_fields(old, new) {
                Some(fields) => changed.push((key, fields)),
                None => reformatted = true,
            }
        }
        let mut changes = Vec::new();
        let created = diff
            .created
            .iter()
            .map(|k| ("customer.created", k, Vec::new()));
        let changed = changed
            .into_iter()
            .map(|(k, fields)| ("customer.changed", k, fields));
        let deleted = diff
            .deleted
            .iter()
            .map(|k| ("customer.deleted", k, Vec::new()));
        for (kind, key, fields) in created.chain(changed).chain(deleted) {
            let fp = diff.next.entries.get(key).map_or("gone", String::as_str);
            changes.push(Change {
                kind: kind.to_owned(),
                key: key.clone(),
                dedupe_key: Snapshot::dedupe_key(&diff.next, kind, key, fp),
                record: records.get(key).cloned().unwrap_or(Value::Null),
                fields,
            });
        }
        let cursor = (!changes.is_empty() || reformatted || first).then(|| diff.next.encode());
        Ok(PollBatch {
            changes,
            cursor,
            listed,
            fetched: 0,
        })
    }
}

/// A customer's entry in the poll snapshot: the fingerprint of the whole
/// record, then a short hash per synced field (`whole/aaaa.bbbb.cccc.dddd`,
/// in [`FIELDS`] order), so that a change can name the fields it changed.
/// Entries saved before the per-field part existed hold `whole` only.
fn snapshot_entry(record: &CustomerRecord) -> String {
    let fields: Vec<String> = FIELDS
        .iter()
        .map(|field| fingerprint(&json!(record.get(field)))[..4].to_owned())
        .collect();
    format!("{}/{}", fingerprint(&json!(record)), fields.join("."))
}

/// The fields that changed between two snapshot entries of a customer;
/// `None` when the record did not change (only the entry's format did).
/// The field hashes are short: two values of one field may share one (1 in
/// 65,536), and that field is then not named; the change itself is still
/// seen through the whole record's fingerprint. Unknown (an old entry):
/// none named.
fn changed_fields(old: &str, new: &str) -> Option<Vec<String>> {
    let (old_whole, old_fields) = old.split_once('/').unwrap_or((old, ""));
    let (new_whole, new_fields) = new.split_once('/').unwrap_or((new, ""));
    if old_whole == new_whole {
        return None;
    }
    let (old_fields, new_fields): (Vec<&str>, Vec<&str>) = (
        old_fields.split('.').collect(),
        new_fields.split('.').collect(),
    );
    if old_fields.len() != FIELDS.len() || new_fields.len() != FIELDS.len() {
        return Some(Vec::new());
    }
    Some(
        FIELDS
            .iter()
            .zip(old_fields.iter().zip(&new_fields))
            .filter(|(_, (a, b))| a != b)
            .map(|(field, _)| (*field).to_owned())
            .collect(),
    )
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
            unsettled: BTreeMap::new(),
        }
    }

    fn named(fields: &[&str]) -> Seen {
        Seen {
            counterpart: None,
            named: fields.iter().map(|f| (*f).to_owned()).collect(),
            base: None,
        }
    }

    fn counterpart(other: CustomerRecord, fields: &[&str]) -> Seen {
        Seen {
            counterpart: Some(other),
            ..named(fields)
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
                &Seen::default(),
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
            &Seen::default(),
        );
        assert_eq!(plan.action, "sync");
        assert_eq!(plan.changed, vec!["last_name"]);
        assert_eq!(plan.refused, vec!["email"]);
        assert_eq!(plan.state.last, Some(record("Ada", "King", "ada@x", "01")));
    }

    #[test]
    fn a_first_sync_takes_the_whole_record_when_the_other_side_has_none() {
        let settings = CustomerSyncSettings::default();
        let plan = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("A", "B", "", ""),
            &Seen::default(),
        );
        assert_eq!(plan.action, "sync");
        assert_eq!(plan.changed.len(), FIELDS.len());
        assert_eq!(plan.state.last, Some(record("A", "B", "", "")));
        assert!(plan.state.unsettled.is_empty());
    }

    #[test]
    fn a_first_sync_with_a_counterpart_keeps_agreement_fills_gaps_and_leaves_differences_unsettled()
    {
        let settings = CustomerSyncSettings::default();
        let from_ordercloud = record("Ada", "Lovelace", "ada@x", "");
        let in_kashflow = record("Ada", "King", "", "01");
        let plan = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            from_ordercloud,
            &counterpart(in_kashflow, &[]),
        );
        assert_eq!(plan.action, "sync");
        assert_eq!(
            plan.changed,
            vec!["email"],
            "KashFlow's empty email is filled"
        );
        assert_eq!(
            plan.taken,
            vec!["phone"],
            "OrderCloud's empty phone is filled"
        );
        assert_eq!(plan.fields_for(Origin::Kashflow), vec!["email"]);
        assert_eq!(plan.fields_for(Origin::Ordercloud), vec!["phone"]);
        assert_eq!(
            plan.state.unsettled.get("last_name"),
            Some(&Unsettled {
                ordercloud: "Lovelace".to_owned(),
                kashflow: "King".to_owned()
            }),
            "neither last name is known to be newer: written nowhere"
        );
        assert_eq!(plan.state.unsettled.len(), 1);
        assert_eq!(
            plan.state.last,
            Some(record("Ada", "Lovelace", "ada@x", "01"))
        );
    }

    /// The lost update found by reading: the delayed "user created" webhook
    /// of a shopper whose KashFlow customer (made by the order flow) has a
    /// newer phone, whose poll event comes after.
    #[test]
    fn a_delayed_first_sync_leaves_a_newer_change_on_the_other_side_for_its_own_event() {
        let settings = CustomerSyncSettings::default();
        let created = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("Ada", "Lovelace", "ada@x", "01"),
            &counterpart(record("Ada", "Lovelace", "ada@x", "02"), &[]),
        );
        assert!(
            created.fields_for(Origin::Kashflow).is_empty(),
            "{created:?}"
        );
        assert!(
            created.fields_for(Origin::Ordercloud).is_empty(),
            "{created:?}"
        );
        assert!(created.state.unsettled.contains_key("phone"));
        // The poll's event of the KashFlow change: KashFlow's phone wins.
        let polled = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            created.state,
            record("Ada", "Lovelace", "ada@x", "02"),
            &named(&["phone"]),
        );
        assert_eq!(polled.action, "sync");
        assert_eq!(polled.fields_for(Origin::Ordercloud), vec!["phone"]);
        assert!(polled.state.unsettled.is_empty());
        assert_eq!(
            polled.state.last,
            Some(record("Ada", "Lovelace", "ada@x", "02"))
        );
        // Its echo from OrderCloud is dropped.
        let echo = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            polled.state,
            record("Ada", "Lovelace", "ada@x", "02"),
            &named(&["phone"]),
        );
        assert_eq!(echo.action, "none");
    }

    /// Found by the chaos soak: the KashFlow customer (made by the order
    /// flow) was changed before the poll first listed it, so the poll's event
    /// was a creation naming nothing, and the delayed "user created" webhook
    /// had left the field unsettled for good. The record the order flow
    /// created the customer with tells which side moved.
    #[test]
    fn a_first_sync_knowing_the_created_record_lets_the_side_that_moved_win() {
        let settings = CustomerSyncSettings::default();
        let base = record("Ben", "Okafor", "ben@x", "");
        let seen = Seen {
            base: Some(base.clone()),
            ..counterpart(record("Ben", "Cydson", "ben@x", ""), &[])
        };
        let from_ordercloud = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("Ben", "Okafor", "ben@x", ""),
            &seen,
        );
        assert_eq!(from_ordercloud.taken, vec!["last_name"], "KashFlow moved");
        assert!(from_ordercloud.changed.is_empty());
        assert!(from_ordercloud.state.unsettled.is_empty());
        assert_eq!(
            from_ordercloud.state.last,
            Some(record("Ben", "Cydson", "ben@x", ""))
        );
        // From KashFlow, with OrderCloud the side that moved: OrderCloud's
        // first name is taken, KashFlow's last name sent.
        let seen = Seen {
            base: Some(base),
            ..counterpart(record("Benedict", "Okafor", "ben@x", ""), &[])
        };
        let from_kashflow = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            state(None),
            record("Ben", "Cydson", "ben@x", ""),
            &seen,
        );
        assert_eq!(from_kashflow.taken, vec!["first_name"]);
        assert_eq!(from_kashflow.changed, vec!["last_name"]);
        assert!(from_kashflow.state.unsettled.is_empty());
    }

    #[test]
    fn an_unsettled_field_waits_for_a_change_of_its_own_not_of_another_field() {
        let settings = CustomerSyncSettings::default();
        // First sync from KashFlow's poll (a new last name there); OrderCloud
        // has a newer first name whose webhook is still to come.
        let first = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            state(None),
            record("Ada", "King", "ada@x", ""),
            &counterpart(record("Adeline", "Lovelace", "ada@x", ""), &["last_name"]),
        );
        assert_eq!(first.changed, vec!["last_name"], "the event's own change");
        assert!(first.state.unsettled.contains_key("first_name"));
        // KashFlow changes its phone: the first name is not this event's.
        let phone = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            first.state,
            record("Ada", "King", "ada@x", "03"),
            &named(&["phone"]),
        );
        assert_eq!(phone.changed, vec!["phone"]);
        assert!(phone.state.unsettled.contains_key("first_name"));
        // OrderCloud's webhook of its first-name PATCH: OrderCloud wins.
        let patch = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            phone.state,
            record("Adeline", "King", "ada@x", "03"),
            &named(&["first_name"]),
        );
        assert_eq!(patch.changed, vec!["first_name"]);
        assert!(patch.state.unsettled.is_empty());
        assert_eq!(
            patch.state.last,
            Some(record("Adeline", "King", "ada@x", "03"))
        );
    }

    #[test]
    fn an_unsettled_field_changed_after_the_first_sync_is_settled_even_unnamed() {
        let settings = CustomerSyncSettings::default();
        let first = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("Ada", "Lovelace", "", "01"),
            &counterpart(record("Ada", "Lovelace", "", "02"), &[]),
        );
        // A KashFlow event that cannot name its fields, but the phone is
        // not what KashFlow held at the first sync: it changed since.
        let later = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            first.state.clone(),
            record("Ada", "Lovelace", "", "04"),
            &Seen::default(),
        );
        assert_eq!(later.changed, vec!["phone"]);
        // The same value as at the first sync, unnamed: nothing settles.
        let same = decide(
            &settings,
            Origin::Kashflow,
            "OC-U1".to_owned(),
            first.state,
            record("Ada", "Lovelace", "", "02"),
            &Seen::default(),
        );
        assert_eq!(same.action, "none");
        assert!(same.state.unsettled.contains_key("phone"));
    }

    #[test]
    fn a_settling_pass_settles_agreement_and_the_side_that_moved_and_reports_the_rest() {
        let settings = CustomerSyncSettings::default();
        // Every field differs at the first sync, none known to be newer.
        let first = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("Ada", "Johnson", "a@x", "01"),
            &counterpart(record("Adeline", "Eveson", "b@x", "02"), &[]),
        );
        assert_eq!(first.state.unsettled.len(), 4);
        // Then, with no event having settled them: OrderCloud changed the
        // phone, KashFlow the last name, both now hold the same email, and
        // nobody touched the first name.
        let plan = settle(
            "OC-U1".to_owned(),
            first.state,
            &record("Ada", "Johnson", "c@x", "03"),
            &record("Adeline", "Adason", "c@x", "02"),
        );
        assert_eq!(plan.action, "sync");
        assert_eq!(plan.fields_for(Origin::Ordercloud), vec!["last_name"]);
        assert_eq!(plan.fields_for(Origin::Kashflow), vec!["phone"]);
        assert_eq!(plan.unresolved, vec!["first_name"]);
        assert_eq!(
            plan.state.unsettled.keys().collect::<Vec<_>>(),
            vec!["first_name"]
        );
        assert_eq!(plan.state.last, Some(record("Ada", "Adason", "c@x", "03")));
        assert!(unresolved_failure(&plan)
            .message
            .contains(r#"first_name (OrderCloud "Ada", KashFlow "Adeline")"#));
        // Settled meanwhile: nothing to do, nothing to report.
        let quiet = settle(
            "OC-U1".to_owned(),
            plan.state.clone(),
            &record("Ada", "Adason", "c@x", "03"),
            &record("Ada", "Adason", "c@x", "03"),
        );
        assert_eq!(quiet.action, "sync");
        assert!(quiet.unresolved.is_empty() && quiet.state.unsettled.is_empty());
        let done = settle(
            "OC-U1".to_owned(),
            quiet.state,
            &record("", "", "", ""),
            &record("", "", "", ""),
        );
        assert_eq!(done.action, "none");
        assert!(done.unresolved.is_empty());
    }

    #[test]
    fn a_first_sync_by_a_change_lets_the_origin_win_what_it_changed_and_owners_decide_theirs() {
        let mut settings = CustomerSyncSettings::default();
        settings.owners.insert("email".to_owned(), Owner::Kashflow);
        let plan = decide(
            &settings,
            Origin::Ordercloud,
            "OC-U1".to_owned(),
            state(None),
            record("Ada", "Lovelace", "oc@x", "01"),
            &counterpart(record("Ada", "King", "kf@x", "02"), &["phone", "email"]),
        );
        assert_eq!(plan.changed, vec!["phone"], "the PATCH's own field");
        assert_eq!(plan.taken, vec!["email"], "KashFlow owns email");
        assert_eq!(
            plan.state.unsettled.keys().collect::<Vec<_>>(),
            vec!["last_name"]
        );
        assert_eq!(
            plan.state.last,
            Some(record("Ada", "Lovelace", "kf@x", "01"))
        );
    }

    #[test]
    fn a_state_saved_before_unsettled_fields_existed_still_loads() {
        let text = r#"{"buyer_id":"B","user_id":"u1","xconnect_id":null,"last":{"first_name":"A","last_name":"B","email":"","phone":""}}"#;
        let loaded: SyncState = serde_json::from_str(text).unwrap();
        assert_eq!(loaded, state(Some(record("A", "B", "", ""))));
        assert_eq!(serde_json::to_string(&loaded).unwrap(), text);
    }

    #[test]
    fn an_ordercloud_webhook_names_the_fields_its_patch_or_put_set() {
        let patch = json!({"Verb": "PATCH", "Request": {"Body": {"Phone": "01", "xp": {}}}});
        assert_eq!(named_in_request(&patch), vec!["phone"]);
        let put = json!({"Verb": "PUT", "Request": {"Body": {"FirstName": "A", "LastName": "B", "Email": "e"}}});
        assert_eq!(
            named_in_request(&put),
            vec!["first_name", "last_name", "email"]
        );
        let post = json!({"Verb": "POST", "Request": {"Body": {"FirstName": "A"}}});
        assert!(named_in_request(&post).is_empty());
    }

    #[test]
    fn the_poll_names_the_fields_that_changed() {
        let old = snapshot_entry(&record("Ada", "Lovelace", "ada@x", "01"));
        let new = snapshot_entry(&record("Ada", "King", "ada@x", "02"));
        assert_eq!(
            changed_fields(&old, &new),
            Some(vec!["last_name".to_owned(), "phone".to_owned()])
        );
        assert_eq!(changed_fields(&old, &old), None);
        // An entry saved before the per-field part: the same record is no
        // change; a different one is a change that names nothing.
        let whole = old.split_once('/').unwrap().0.to_owned();
        assert_eq!(changed_fields(&whole, &old), None);
        assert_eq!(changed_fields(&whole, &new), Some(Vec::new()));
        assert_eq!(
            whole,
            fingerprint(&json!(record("Ada", "Lovelace", "ada@x", "01"))),
            "the whole-record part is the fingerprint saved before"
        );
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
