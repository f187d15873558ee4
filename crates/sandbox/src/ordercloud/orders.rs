//! Orders (by direction), line items, addresses, payments and shipments,
//! with totals recomputed in decimal arithmetic after every change.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::error::{OcError, OcJson, OcPath, OcResult};
use super::list::{
    matches_expression, page_bounds, page_envelope_parts, text_lower_bound, ListQuery,
};
use super::order_map::OrderList;
use super::{
    check_xp, decimal_of, decimal_value, deep_merge, id_from_body, money_field, now_text,
    object_body, LineItems, OrderCloud, Store, MAX_QUANTITY,
};

type Created = (StatusCode, Json<Value>);

/// Accepts `Incoming`, `Outgoing` and `All` in any case.
fn check_direction(direction: &str) -> OcResult<()> {
    match direction.to_ascii_lowercase().as_str() {
        "incoming" | "outgoing" | "all" => Ok(()),
        _ => Err(OcError::not_found("Direction", direction)),
    }
}

fn order<'a>(store: &'a Store, direction: &str, id: &str) -> OcResult<&'a Value> {
    check_direction(direction)?;
    store
        .orders
        .get(id)
        .ok_or_else(|| OcError::not_found("Order", id))
}

fn order_mut<'a>(store: &'a mut Store, direction: &str, id: &str) -> OcResult<&'a mut Value> {
    check_direction(direction)?;
    store
        .orders
        .get_mut(id)
        .ok_or_else(|| OcError::not_found("Order", id))
}

fn status_of(order: &Value) -> &str {
    order["Status"].as_str().unwrap_or_default()
}

/// Recomputes line totals, `Subtotal`, `LineItemCount`, `PromotionDiscount`
/// and `Total` (section 3 formulas).
fn recompute(store: &mut Store, order_id: &str) {
    let mut subtotal = Decimal::ZERO;
    let mut promotion = Decimal::ZERO;
    let mut count = 0u64;
    if let Some(lines) = store.line_items.get_mut(order_id) {
        for line in lines.values_mut() {
            let unit = decimal_of(&line["UnitPrice"]).unwrap_or_default();
            let quantity = Decimal::from(line["Quantity"].as_i64().unwrap_or(0));
            // Inputs are bounded (MAX_MONEY, MAX_QUANTITY), so saturation
            // never happens in practice; it only rules out a panic.
            let line_subtotal = unit.saturating_mul(quantity);
            let line_promo = decimal_of(&line["PromotionDiscount"]).unwrap_or_default();
            line["LineSubtotal"] = decimal_value(line_subtotal);
            line["LineTotal"] = decimal_value(line_subtotal.saturating_sub(line_promo));
            subtotal = subtotal.saturating_add(line_subtotal);
            promotion = promotion.saturating_add(line_promo);
            count += 1;
        }
    }
    let Some(order) = store.orders.get_mut(order_id) else {
        return;
    };
    let money = |field: &str| decimal_of(&order[field]).unwrap_or_default();
    let total = ["TaxCost", "ShippingCost", "Gratuity", "Fees"]
        .into_iter()
        .fold(subtotal, |sum, field| sum.saturating_add(money(field)))
        .saturating_sub(promotion);
    order["Subtotal"] = decimal_value(subtotal);
    order["PromotionDiscount"] = decimal_value(promotion);
    order["LineItemCount"] = json!(count);
    order["Total"] = decimal_value(total);
}

fn touch(store: &mut Store, order_id: &str) {
    if let Some(order) = store.orders.get_mut(order_id) {
        order["LastUpdated"] = json!(now_text());
    }
}

/// The OrderUser view of a buyer user.
fn order_user(user: &Value) -> Value {
    let mut user = user.clone();
    if let Some(map) = user.as_object_mut() {
        map.remove("FailedLoginAttempts");
        map.insert("Password".to_owned(), Value::Null);
    }
    user
}

/// `GET /v1/orders/{direction}`.
pub(crate) async fn list_orders(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(direction): OcPath<String>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    check_direction(&direction)?;
    let mut query = ListQuery::parse(raw.as_deref(), &["buyerID", "supplierID", "from", "to"])?;
    let params: Vec<(String, String)> = raw
        .as_deref()
        .and_then(|r| serde_urlencoded::from_str(r).ok())
        .unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Submitted and unsubmitted orders come from different indexes.
    let mut wants_unsubmitted = false;
    let mut wants_submitted = false;
    for (key, expr) in &query.filters {
        if key.eq_ignore_ascii_case("IsSubmitted") {
            if matches_expression(Some(&json!(false)), expr) {
                wants_unsubmitted = true;
            }
            if matches_expression(Some(&json!(true)), expr) {
                wants_submitted = true;
            }
        }
        if key.eq_ignore_ascii_case("Status") {
            for status in ["Unsubmitted", "AwaitingApproval"] {
                wants_unsubmitted |= matches_expression(Some(&json!(status)), expr);
            }
            for status in ["Open", "Completed", "Canceled", "Declined"] {
                wants_submitted |= matches_expression(Some(&json!(status)), expr);
            }
        }
    }
    if wants_unsubmitted && wants_submitted {
        return Err(OcError::bad_request(
            "Order.CannotMixSubmittedAndUnsubmitted",
            "A list cannot mix submitted and unsubmitted orders.",
        ));
    }
    if !wants_unsubmitted {
        query
            .filters
            .push(("IsSubmitted".to_owned(), "true".to_owned()));
    }
    if let Some(buyer) = param("buyerID") {
        query.filters.push(("FromCompanyID".to_owned(), buyer));
    }
    if let Some(from) = param("from") {
        query
            .filters
            .push(("DateCreated".to_owned(), format!("!<{from}")));
    }
    if let Some(to) = param("to") {
        query
            .filters
            .push(("DateCreated".to_owned(), format!("!>{to}")));
    }
    let mut store = oc.store();
    Ok(Json(page_of_orders(&mut store, query)))
}

/// Fields searched when `searchOn` is absent.
const ORDER_SEARCH: &[&str] = &[
    "ID",
    "Comments",
    "FromUserID",
    "FromUser.FirstName",
    "FromUser.LastName",
    "FromUser.Email",
];

/// One page of the orders `query` lists. The whole list (without the page)
/// is kept in the store until an order changes, so the other pages of the
/// query only slice it. A list sorted by `ID` with a keyset filter
/// `ID=>X` (one term, `X` neither a date nor a number) is kept without
/// that filter: the orders passing it are the list's suffix after `X`,
/// found by a binary search, so keyset pages share one list too.
fn page_of_orders(store: &mut Store, query: ListQuery) -> Value {
    let sorted_by_id = query.sort.len() == 1 && query.sort[0] == ("ID".to_owned(), false);
    let keyset = query
        .filters
        .iter()
        .enumerate()
        .filter(|_| sorted_by_id)
        .find_map(|(at, (path, expr))| {
            (path == "ID")
                .then(|| text_lower_bound(expr))
                .flatten()
                .map(|lower| (at, lower))
        });
    let mut listed = query.clone();
    if let Some((at, _)) = keyset {
        listed.filters.remove(at);
    }
    let key = listed.key_without_page();
    let list = match store.orders.cached_list(&key) {
        Some(list) => list,
        None => {
            let selected = listed.select(store.orders.iter(), ORDER_SEARCH);
            let list = Arc::new(OrderList {
                text_ids: selected.iter().all(|(_, order)| order["ID"].is_string()),
                keys: selected.into_iter().map(|(id, _)| id.clone()).collect(),
            });
            store.orders.keep_list(key, Arc::clone(&list));
            list
        }
    };
    let id_text = |key: &String| store.orders[key]["ID"].as_str();
    let from = match &keyset {
        None => 0,
        Some((_, lower)) => {
            if !list.text_ids {
                // An ID that is not a text: no suffix to search for.
                return query.apply_refs(store.orders.values(), ORDER_SEARCH);
            }
            list.keys.partition_point(|key| {
                id_text(key).is_some_and(|id| id.to_lowercase().as_str() <= lower.as_str())
            })
        }
    };
    let list = &list.keys[from..];
    let (start, len) = page_bounds(list.len(), query.page, query.page_size);
    let items: Vec<Value> = list[start..start + len]
        .iter()
        .map(|key| store.orders[key].clone())
        .collect();
    page_envelope_parts(list.len() as u64, items, query.page, query.page_size)
}

/// `POST /v1/orders/{direction}` (201). `FromUserID` in the body (a
/// simulator extension) places the order for that buyer user; otherwise the
/// token's user.
pub(crate) async fn create_order(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(direction): OcPath<String>,
    Extension(caller): Extension<Caller>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Created> {
    check_direction(&direction)?;
    let body = if body.is_null() { json!({}) } else { body };
    let fields = object_body(&body)?;
    let id = id_from_body("Order", &body)?;
    let mut store = oc.store();
    if store.orders.contains_key(&id) {
        return Err(OcError::id_exists("Order", &id));
    }
    let user_id = match fields.get("FromUserID").and_then(Value::as_str) {
        Some(u) => u.to_owned(),
        None => caller.user_id.clone().ok_or_else(|| {
            OcError::validation("FromUserID", "The token acts as no user; give FromUserID.")
        })?,
    };
    let user = store
        .users
        .get(&user_id)
        .ok_or_else(|| OcError::not_found("User", &user_id))?
        .clone();
    let xp = fields.get("xp").cloned().unwrap_or(Value::Null);
    check_xp(&xp)?;
    let comments = optional_string(fields, "Comments", 2000)?;
    let currency = optional_string(fields, "Currency", 3)?;
    let now = now_text();
    let order = json!({
        "ID": id,
        "FromUser": order_user(&user),
        "FromCompanyID": user["CompanyID"],
        "ToCompanyID": "sim-marketplace",
        "FromUserID": user_id,
        "BillingAddressID": fields.get("BillingAddressID").cloned().unwrap_or(Value::Null),
        "BillingAddress": null,
        "ShippingAddressID": fields.get("ShippingAddressID").cloned().unwrap_or(Value::Null),
        "Comments": comments,
        "LineItemCount": 0,
        "Status": "Unsubmitted",
        "DateCreated": now,
        "DateSubmitted": null,
        "DateApproved": null,
        "DateDeclined": null,
        "DateCanceled": null,
        "DateCompleted": null,
        "LastUpdated": now,
        "Subtotal": 0,
        "ShippingCost": decimal_value(money_field(&body, "ShippingCost")?.unwrap_or_default()),
        "TaxCost": decimal_value(money_field(&body, "TaxCost")?.unwrap_or_default()),
        "Gratuity": decimal_value(money_field(&body, "Gratuity")?.unwrap_or_default()),
        "Fees": 0,
        "PromotionDiscount": 0,
        "Currency": currency,
        "Total": 0,
        "IsSubmitted": false,
        "SubscriptionID": null,
        "xp": xp,
    });
    store.orders.insert(id.clone(), order);
    store.line_items.insert(id.clone(), LineItems::default());
    recompute(&mut store, &id);
    Ok((StatusCode::CREATED, Json(store.orders[&id].clone())))
}

fn optional_string(fields: &Map<String, Value>, name: &str, max: usize) -> OcResult<Value> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(Value::Null),
        Some(Value::String(s)) if s.chars().count() <= max => Ok(Value::String(s.clone())),
        Some(Value::String(_)) => Err(OcError::validation(
            name,
            format!("{name} may not exceed {max} characters."),
        )),
        Some(_) => Err(OcError::validation(
            name,
            format!("{name} must be a string."),
        )),
    }
}

/// `GET /v1/orders/{direction}/{orderID}`.
pub(crate) async fn get_order(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
) -> OcResult<Json<Value>> {
    let store = oc.store();
    Ok(Json(order(&store, &direction, &order_id)?.clone()))
}

/// `PATCH /v1/orders/{direction}/{orderID}`: writable top-level fields are
/// replaced, `xp` deep-merged, read-only fields ignored.
pub(crate) async fn patch_order(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let current = order_mut(&mut store, &direction, &order_id)?;
    let mut updated = current.clone();
    for (key, value) in &fields {
        match key.as_str() {
            "xp" => {
                check_xp(value)?;
                if value.is_null() || updated["xp"].is_null() {
                    updated["xp"] = value.clone();
                } else {
                    deep_merge(&mut updated["xp"], value);
                }
            }
            "Comments" => updated["Comments"] = optional_string(&fields, "Comments", 2000)?,
            "Currency" => updated["Currency"] = optional_string(&fields, "Currency", 3)?,
            "BillingAddressID" | "ShippingAddressID" => {
                updated[key.as_str()] = optional_string(&fields, key, 100)?
            }
            "ShippingCost" | "TaxCost" | "Gratuity" => {
                let amount = money_field(&body, key)?.unwrap_or_default();
                updated[key.as_str()] = decimal_value(amount);
            }
            _ => {} // read-only or unknown: ignored
        }
    }
    updated["LastUpdated"] = json!(now_text());
    *current = updated;
    recompute(&mut store, &order_id);
    Ok(Json(store.orders[&order_id].clone()))
}

/// `POST .../submit`: Unsubmitted → Open, inventory decremented (201).
pub(crate) async fn submit(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
) -> OcResult<Created> {
    let mut store = oc.store();
    let current = order(&store, &direction, &order_id)?;
    if status_of(current) != "Unsubmitted" {
        return Err(OcError::bad_request(
            "Order.CannotSubmitBadStatus",
            format!(
                "Order {order_id} cannot be submitted from status {}.",
                status_of(current)
            ),
        ));
    }
    let mut needed: BTreeMap<String, i64> = BTreeMap::new();
    for line in store
        .line_items
        .get(&order_id)
        .into_iter()
        .flat_map(|m| m.values())
    {
        let product = line["ProductID"].as_str().unwrap_or_default().to_owned();
        let quantity = line["Quantity"].as_i64().unwrap_or(0);
        let entry = needed.entry(product).or_default();
        *entry = entry.saturating_add(quantity);
    }
    for (product_id, quantity) in &needed {
        let Some(product) = store.products.get(product_id) else {
            continue;
        };
        let inventory = &product["Inventory"];
        if inventory["Enabled"] != Value::Bool(true)
            || inventory["OrderCanExceed"] == Value::Bool(true)
        {
            continue;
        }
        let available = inventory["QuantityAvailable"].as_i64().unwrap_or(0);
        if available < *quantity {
            return Err(OcError::bad_request(
                "Inventory.Insufficient",
                format!("Not enough inventory for product {product_id}: {available} available, {quantity} requested."),
            )
            .with_data(json!({ "ProductID": product_id, "QuantityAvailable": available, "QuantityRequested": quantity })));
        }
    }
    let now = now_text();
    for (product_id, quantity) in &needed {
        if let Some(product) = store.products.get_mut(product_id) {
            let inventory = &mut product["Inventory"];
            if inventory["Enabled"] == Value::Bool(true) {
                let available = inventory["QuantityAvailable"].as_i64().unwrap_or(0);
                inventory["QuantityAvailable"] = json!(available.saturating_sub(*quantity));
                inventory["LastUpdated"] = json!(now);
            }
        }
    }
    let current = order_mut(&mut store, &direction, &order_id)?;
    current["Status"] = json!("Open");
    current["IsSubmitted"] = json!(true);
    current["DateSubmitted"] = json!(now);
    current["LastUpdated"] = json!(now);
    Ok((StatusCode::CREATED, Json(current.clone())))
}

/// `POST .../complete`: Open → Completed.
pub(crate) async fn complete(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
) -> OcResult<Json<Value>> {
    let mut store = oc.store();
    let current = order_mut(&mut store, &direction, &order_id)?;
    if status_of(current) != "Open" {
        return Err(OcError::bad_request(
            "Order.CannotCompleteBadStatus",
            format!(
                "Order {order_id} cannot be completed from status {}.",
                status_of(current)
            ),
        ));
    }
    let now = now_text();
    current["Status"] = json!("Completed");
    current["DateCompleted"] = json!(now);
    current["LastUpdated"] = json!(now);
    Ok(Json(current.clone()))
}

/// `POST .../cancel`: only before the order is Open.
pub(crate) async fn cancel(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
) -> OcResult<Json<Value>> {
    let mut store = oc.store();
    let current = order_mut(&mut store, &direction, &order_id)?;
    if !matches!(status_of(current), "Unsubmitted" | "AwaitingApproval") {
        return Err(OcError::bad_request(
            "Order.CannotCancelInCurrentStatus",
            format!(
                "Order {order_id} cannot be canceled from status {}.",
                status_of(current)
            ),
        ));
    }
    let now = now_text();
    current["Status"] = json!("Canceled");
    current["DateCanceled"] = json!(now);
    current["LastUpdated"] = json!(now);
    Ok(Json(current.clone()))
}

/// `POST .../ship`: ships every line of an Open order, which completes it (201).
pub(crate) async fn ship(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Created> {
    let body = if body.is_null() { json!({}) } else { body };
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let current = order(&store, &direction, &order_id)?;
    if status_of(current) != "Open" {
        return Err(OcError::bad_request(
            "Order.CannotShipBadStatus",
            format!(
                "Order {order_id} cannot be shipped from status {}.",
                status_of(current)
            ),
        ));
    }
    let buyer = current["FromCompanyID"].clone();
    let shipment_id = id_from_body("Shipment", &body)?;
    if store.shipments.contains_key(&shipment_id) {
        return Err(OcError::id_exists("Shipment", &shipment_id));
    }
    let now = now_text();
    let field = |name: &str| fields.get(name).cloned().unwrap_or(Value::Null);
    let shipment = json!({
        "ID": shipment_id,
        "BuyerID": buyer,
        "Shipper": field("Shipper"),
        "DateShipped": fields.get("DateShipped").cloned().unwrap_or(json!(now)),
        "DateDelivered": field("DateDelivered"),
        "TrackingNumber": field("TrackingNumber"),
        "Cost": field("Cost"),
        "OwnerID": null,
        "xp": field("xp"),
        "Account": field("Account"),
        "FromAddressID": field("FromAddressID"),
        "ToAddressID": field("ToAddressID"),
        "FromAddress": null,
        "ToAddress": null,
    });
    store
        .shipments
        .insert(shipment_id, (order_id.clone(), shipment));
    if let Some(lines) = store.line_items.get_mut(&order_id) {
        for line in lines.values_mut() {
            line["QuantityShipped"] = line["Quantity"].clone();
        }
    }
    let current = order_mut(&mut store, &direction, &order_id)?;
    current["Status"] = json!("Completed");
    current["DateCompleted"] = json!(now);
    current["LastUpdated"] = json!(now);
    Ok((StatusCode::CREATED, Json(current.clone())))
}

/// Validates and normalizes an Address (section 3).
fn address(body: &Value) -> OcResult<Value> {
    let fields = object_body(body)?;
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or("")
    };
    for required in ["Street1", "City", "Country"] {
        if text(required).is_empty() {
            return Err(OcError::validation(
                required,
                format!("Address.{required} is required."),
            ));
        }
    }
    if text("Street1").chars().count() > 100 {
        return Err(OcError::validation(
            "Street1",
            "Address.Street1 may not exceed 100 characters.",
        ));
    }
    let country = text("Country");
    if country.chars().count() != 2 {
        return Err(OcError::validation(
            "Country",
            "Address.Country must be a 2-character code.",
        ));
    }
    if matches!(country.to_ascii_uppercase().as_str(), "US" | "CA") {
        for required in ["State", "Zip"] {
            if text(required).is_empty() {
                return Err(OcError::validation(
                    required,
                    format!("Address.{required} is required for US and CA."),
                ));
            }
        }
    }
    let xp = fields.get("xp").cloned().unwrap_or(Value::Null);
    check_xp(&xp)?;
    let mut out = Map::new();
    for name in [
        "ID",
        "DateCreated",
        "CompanyName",
        "FirstName",
        "LastName",
        "Street1",
        "Street2",
        "City",
        "State",
        "Zip",
        "Country",
        "Phone",
        "AddressName",
    ] {
        out.insert(
            name.to_owned(),
            fields.get(name).cloned().unwrap_or(Value::Null),
        );
    }
    out.insert("xp".to_owned(), xp);
    Ok(Value::Object(out))
}

fn merged_address(existing: &Value, patch: &Value) -> OcResult<Value> {
    object_body(patch)?;
    let mut merged = if existing.is_object() {
        existing.clone()
    } else {
        json!({})
    };
    deep_merge(&mut merged, patch);
    address(&merged)
}

fn set_billto(
    oc: &OrderCloud,
    direction: &str,
    order_id: &str,
    body: &Value,
    patch: bool,
) -> OcResult<Json<Value>> {
    let mut store = oc.store();
    let current = order_mut(&mut store, direction, order_id)?;
    let addr = if patch {
        merged_address(&current["BillingAddress"], body)?
    } else {
        address(body)?
    };
    current["BillingAddressID"] = addr["ID"].clone();
    current["BillingAddress"] = addr;
    current["LastUpdated"] = json!(now_text());
    Ok(Json(current.clone()))
}

/// `PUT .../billto`.
pub(crate) async fn put_billto(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    set_billto(&oc, &direction, &order_id, &body, false)
}

/// `PATCH .../billto`.
pub(crate) async fn patch_billto(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    set_billto(&oc, &direction, &order_id, &body, true)
}

fn set_shipto(
    oc: &OrderCloud,
    direction: &str,
    order_id: &str,
    body: &Value,
    patch: bool,
) -> OcResult<Json<Value>> {
    let mut store = oc.store();
    order(&store, direction, order_id)?;
    let mut address_id = Value::Null;
    if let Some(lines) = store.line_items.get_mut(order_id) {
        for line in lines.values_mut() {
            let addr = if patch {
                merged_address(&line["ShippingAddress"], body)?
            } else {
                address(body)?
            };
            address_id = addr["ID"].clone();
            line["ShippingAddressID"] = addr["ID"].clone();
            line["ShippingAddress"] = addr;
        }
    }
    if !patch {
        address(body)?;
    }
    let current = order_mut(&mut store, direction, order_id)?;
    current["ShippingAddressID"] = address_id;
    current["LastUpdated"] = json!(now_text());
    Ok(Json(current.clone()))
}

/// `PUT .../shipto`: sets the shipping address of every line item.
pub(crate) async fn put_shipto(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    set_shipto(&oc, &direction, &order_id, &body, false)
}

/// `PATCH .../shipto`.
pub(crate) async fn patch_shipto(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    set_shipto(&oc, &direction, &order_id, &body, true)
}

/// `GET .../lineitems`.
pub(crate) async fn list_line_items(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &[])?;
    let store = oc.store();
    order(&store, &direction, &order_id)?;
    let items: Vec<Value> = store
        .line_items
        .get(&order_id)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    Ok(Json(
        query.apply(items, &["ID", "ProductID", "Product.Name"]),
    ))
}

/// `GET .../lineitems/{lineItemID}`.
pub(crate) async fn get_line_item(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, line_id)): OcPath<(String, String, String)>,
) -> OcResult<Json<Value>> {
    let store = oc.store();
    order(&store, &direction, &order_id)?;
    store
        .line_items
        .get(&order_id)
        .and_then(|m| m.get(&line_id))
        .map(|l| Json(l.clone()))
        .ok_or_else(|| OcError::not_found("LineItem", &line_id))
}

fn quantity_of(body: &Value) -> OcResult<Option<i64>> {
    match body.get("Quantity") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(q) if (1..=MAX_QUANTITY).contains(&q) => Ok(Some(q)),
            _ => Err(OcError::validation(
                "Quantity",
                format!("Quantity must be a whole number from 1 to {MAX_QUANTITY}."),
            )),
        },
    }
}

/// `POST .../lineitems` (201); `UnitPrice` defaults to the product's price.
pub(crate) async fn create_line_item(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Created> {
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let current = order(&store, &direction, &order_id)?;
    if status_of(current) != "Unsubmitted" {
        return Err(OcError::bad_request(
            "Order.CannotModifyBadStatus",
            format!(
                "Line items of order {order_id} cannot change in status {}.",
                status_of(current)
            ),
        ));
    }
    let product_id = fields
        .get("ProductID")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| OcError::validation("ProductID", "ProductID is required."))?
        .to_owned();
    let product = store
        .products
        .get(&product_id)
        .ok_or_else(|| OcError::not_found("Product", &product_id))?
        .clone();
    let quantity = quantity_of(&body)?
        .ok_or_else(|| OcError::validation("Quantity", "Quantity is required."))?;
    let given_price = money_field(&body, "UnitPrice")?;
    let list_price = decimal_of(&product["xp"]["Price"]);
    let unit_price = given_price.or(list_price).unwrap_or_default();
    let line_id = id_from_body("LineItem", &body)?;
    if store
        .line_items
        .get(&order_id)
        .is_some_and(|m| m.contains_key(&line_id))
    {
        return Err(OcError::id_exists("LineItem", &line_id));
    }
    let shipping = match fields.get("ShippingAddress") {
        None | Some(Value::Null) => Value::Null,
        Some(a) => address(a)?,
    };
    let xp = fields.get("xp").cloned().unwrap_or(Value::Null);
    check_xp(&xp)?;
    let field = |name: &str| fields.get(name).cloned().unwrap_or(Value::Null);
    let line = json!({
        "ID": line_id,
        "ProductID": product_id,
        "Quantity": quantity,
        "BundleItemID": null,
        "IsBundle": false,
        "DateAdded": now_text(),
        "QuantityShipped": 0,
        "UnitPrice": decimal_value(unit_price),
        "PromotionDiscount": 0,
        "LineTotal": 0,
        "LineSubtotal": 0,
        "CostCenter": field("CostCenter"),
        "DateNeeded": field("DateNeeded"),
        "ShippingAccount": field("ShippingAccount"),
        "ShippingAddressID": if shipping.is_null() { field("ShippingAddressID") } else { shipping["ID"].clone() },
        "ShipFromAddressID": field("ShipFromAddressID"),
        "Product": line_product(&product),
        "Variant": null,
        "ShippingAddress": shipping,
        "ShipFromAddress": null,
        "SupplierID": null,
        "InventoryRecordID": field("InventoryRecordID"),
        "PriceScheduleID": product["DefaultPriceScheduleID"],
        "IsOnSale": false,
        "PriceOverridden": given_price.is_some(),
        "Specs": fields.get("Specs").cloned().unwrap_or(json!([])),
        "IncomingOrderID": order_id,
        "OutgoingOrderID": order_id,
        "InvitationID": null,
        "xp": xp,
    });
    store
        .line_items
        .entry(order_id.clone())
        .or_default()
        .insert(line);
    recompute(&mut store, &order_id);
    touch(&mut store, &order_id);
    let line = store
        .line_items
        .get(&order_id)
        .and_then(|m| m.get(&line_id))
        .cloned()
        .unwrap_or(Value::Null);
    Ok((StatusCode::CREATED, Json(line)))
}

fn line_product(product: &Value) -> Value {
    let mut out = Map::new();
    for name in [
        "ID",
        "Name",
        "Description",
        "Returnable",
        "QuantityMultiplier",
        "ShipWeight",
        "ShipHeight",
        "ShipWidth",
        "ShipLength",
        "DefaultSupplierID",
        "ParentID",
        "xp",
    ] {
        out.insert(
            name.to_owned(),
            product.get(name).cloned().unwrap_or(Value::Null),
        );
    }
    Value::Object(out)
}

/// `PATCH .../lineitems/{lineItemID}`: Quantity, UnitPrice, addresses and xp.
pub(crate) async fn patch_line_item(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, line_id)): OcPath<(String, String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let quantity = quantity_of(&body)?;
    let unit_price = money_field(&body, "UnitPrice")?;
    let mut store = oc.store();
    order(&store, &direction, &order_id)?;
    let line = store
        .line_items
        .get_mut(&order_id)
        .and_then(|m| m.get_mut(&line_id))
        .ok_or_else(|| OcError::not_found("LineItem", &line_id))?;
    let mut updated = line.clone();
    if let Some(q) = quantity {
        updated["Quantity"] = json!(q);
    }
    if let Some(p) = unit_price {
        updated["UnitPrice"] = decimal_value(p);
        updated["PriceOverridden"] = json!(true);
    }
    for (key, value) in &fields {
        match key.as_str() {
            "xp" => {
                check_xp(value)?;
                if value.is_null() || updated["xp"].is_null() {
                    updated["xp"] = value.clone();
                } else {
                    deep_merge(&mut updated["xp"], value);
                }
            }
            "ShippingAddress" => {
                let addr = merged_address(&updated["ShippingAddress"], value)?;
                updated["ShippingAddressID"] = addr["ID"].clone();
                updated["ShippingAddress"] = addr;
            }
            "CostCenter" | "DateNeeded" | "ShippingAccount" | "ShippingAddressID"
            | "ShipFromAddressID" | "InventoryRecordID" | "Specs" => {
                updated[key.as_str()] = value.clone()
            }
            _ => {}
        }
    }
    *line = updated;
    recompute(&mut store, &order_id);
    touch(&mut store, &order_id);
    let line = store
        .line_items
        .get(&order_id)
        .and_then(|m| m.get(&line_id))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Json(line))
}

/// `DELETE .../lineitems/{lineItemID}` (204; unsubmitted orders only).
pub(crate) async fn delete_line_item(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, line_id)): OcPath<(String, String, String)>,
) -> OcResult<StatusCode> {
    let mut store = oc.store();
    let current = order(&store, &direction, &order_id)?;
    if status_of(current) != "Unsubmitted" {
        return Err(OcError::bad_request(
            "Order.CannotModifyBadStatus",
            format!(
                "Line items of order {order_id} cannot change in status {}.",
                status_of(current)
            ),
        ));
    }
    store
        .line_items
        .get_mut(&order_id)
        .and_then(|m| m.remove(&line_id))
        .ok_or_else(|| OcError::not_found("LineItem", &line_id))?;
    recompute(&mut store, &order_id);
    touch(&mut store, &order_id);
    Ok(StatusCode::NO_CONTENT)
}

fn set_line_shipto(
    oc: &OrderCloud,
    direction: &str,
    order_id: &str,
    line_id: &str,
    body: &Value,
    patch: bool,
) -> OcResult<Json<Value>> {
    let mut store = oc.store();
    order(&store, direction, order_id)?;
    let line = store
        .line_items
        .get_mut(order_id)
        .and_then(|m| m.get_mut(line_id))
        .ok_or_else(|| OcError::not_found("LineItem", line_id))?;
    let addr = if patch {
        merged_address(&line["ShippingAddress"], body)?
    } else {
        address(body)?
    };
    line["ShippingAddressID"] = addr["ID"].clone();
    line["ShippingAddress"] = addr;
    let line = line.clone();
    touch(&mut store, order_id);
    Ok(Json(line))
}

/// `PUT .../lineitems/{lineItemID}/shipto`.
pub(crate) async fn put_line_shipto(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, line_id)): OcPath<(String, String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    set_line_shipto(&oc, &direction, &order_id, &line_id, &body, false)
}

/// `PATCH .../lineitems/{lineItemID}/shipto`.
pub(crate) async fn patch_line_shipto(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, line_id)): OcPath<(String, String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    set_line_shipto(&oc, &direction, &order_id, &line_id, &body, true)
}

/// `GET .../payments`.
pub(crate) async fn list_payments(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &[])?;
    let store = oc.store();
    order(&store, &direction, &order_id)?;
    let items: Vec<Value> = store
        .payments
        .get(&order_id)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    Ok(Json(query.apply(items, &["ID", "Description", "Type"])))
}

fn payment_type(value: Option<&Value>) -> OcResult<Value> {
    match value.and_then(Value::as_str) {
        Some(t @ ("PurchaseOrder" | "CreditCard" | "SpendingAccount")) => Ok(json!(t)),
        _ => Err(OcError::validation(
            "Type",
            "Payment.Type must be PurchaseOrder, CreditCard or SpendingAccount.",
        )),
    }
}

fn bool_field(fields: &Map<String, Value>, name: &str) -> OcResult<Option<bool>> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(OcError::validation(
            name,
            format!("{name} must be true or false."),
        )),
    }
}

/// `POST .../payments` (201): `Type`, `Amount`, `Accepted`, `Description`, `xp`.
pub(crate) async fn create_payment(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Created> {
    let fields = object_body(&body)?.clone();
    let kind = payment_type(fields.get("Type"))?;
    let amount = money_field(&body, "Amount")?;
    let accepted = bool_field(&fields, "Accepted")?.unwrap_or(false);
    let xp = fields.get("xp").cloned().unwrap_or(Value::Null);
    check_xp(&xp)?;
    let payment_id = id_from_body("Payment", &body)?;
    let mut store = oc.store();
    order(&store, &direction, &order_id)?;
    let payments = store.payments.entry(order_id.clone()).or_default();
    if payments.contains_key(&payment_id) {
        return Err(OcError::id_exists("Payment", &payment_id));
    }
    let field = |name: &str| fields.get(name).cloned().unwrap_or(Value::Null);
    let payment = json!({
        "ID": payment_id,
        "Type": kind,
        "DateCreated": now_text(),
        "CreditCardID": field("CreditCardID"),
        "SpendingAccountID": field("SpendingAccountID"),
        "Description": field("Description"),
        "Amount": amount.map(decimal_value).unwrap_or(Value::Null),
        "Accepted": accepted,
        "xp": xp,
        "Transactions": [],
    });
    payments.insert(payment_id, payment.clone());
    touch(&mut store, &order_id);
    Ok((StatusCode::CREATED, Json(payment)))
}

/// `GET .../payments/{paymentID}`.
pub(crate) async fn get_payment(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, payment_id)): OcPath<(String, String, String)>,
) -> OcResult<Json<Value>> {
    let store = oc.store();
    order(&store, &direction, &order_id)?;
    store
        .payments
        .get(&order_id)
        .and_then(|m| m.get(&payment_id))
        .map(|p| Json(p.clone()))
        .ok_or_else(|| OcError::not_found("Payment", &payment_id))
}

/// `PATCH .../payments/{paymentID}`: `Accepted`, `Amount`, `Description`, `xp`.
pub(crate) async fn patch_payment(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, payment_id)): OcPath<(String, String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let accepted = bool_field(&fields, "Accepted")?;
    let amount = money_field(&body, "Amount")?;
    let mut store = oc.store();
    order(&store, &direction, &order_id)?;
    let payment = store
        .payments
        .get_mut(&order_id)
        .and_then(|m| m.get_mut(&payment_id))
        .ok_or_else(|| OcError::not_found("Payment", &payment_id))?;
    let mut updated = payment.clone();
    if let Some(a) = accepted {
        updated["Accepted"] = json!(a);
    }
    if let Some(a) = amount {
        updated["Amount"] = decimal_value(a);
    }
    if let Some(d) = fields.get("Description") {
        updated["Description"] = d.clone();
    }
    if let Some(xp) = fields.get("xp") {
        check_xp(xp)?;
        if xp.is_null() || updated["xp"].is_null() {
            updated["xp"] = xp.clone();
        } else {
            deep_merge(&mut updated["xp"], xp);
        }
    }
    *payment = updated.clone();
    touch(&mut store, &order_id);
    Ok(Json(updated))
}

/// `POST .../payments/{paymentID}/transactions` (201, returns the Payment).
pub(crate) async fn create_transaction(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id, payment_id)): OcPath<(String, String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Created> {
    let fields = object_body(&body)?.clone();
    let amount = money_field(&body, "Amount")?;
    let succeeded = bool_field(&fields, "Succeeded")?.unwrap_or(false);
    let transaction_id = id_from_body("PaymentTransaction", &body)?;
    let mut store = oc.store();
    order(&store, &direction, &order_id)?;
    let payment = store
        .payments
        .get_mut(&order_id)
        .and_then(|m| m.get_mut(&payment_id))
        .ok_or_else(|| OcError::not_found("Payment", &payment_id))?;
    let field = |name: &str| fields.get(name).cloned().unwrap_or(Value::Null);
    let transaction = json!({
        "ID": transaction_id,
        "Type": field("Type"),
        "DateExecuted": fields.get("DateExecuted").cloned().unwrap_or(json!(now_text())),
        "Amount": amount.map(decimal_value).unwrap_or(Value::Null),
        "Succeeded": succeeded,
        "ResultCode": field("ResultCode"),
        "ResultMessage": field("ResultMessage"),
        "xp": field("xp"),
    });
    if let Some(list) = payment["Transactions"].as_array_mut() {
        list.push(transaction);
    }
    let payment = payment.clone();
    Ok((StatusCode::CREATED, Json(payment)))
}

/// `GET .../shipments` of one order.
pub(crate) async fn list_order_shipments(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((direction, order_id)): OcPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &[])?;
    let store = oc.store();
    order(&store, &direction, &order_id)?;
    let items: Vec<Value> = store
        .shipments
        .values()
        .filter(|(o, _)| *o == order_id)
        .map(|(_, s)| s.clone())
        .collect();
    Ok(Json(
        query.apply(items, &["ID", "TrackingNumber", "Shipper"]),
    ))
}

/// `GET /v1/shipments?orderID=`.
pub(crate) async fn list_shipments(
    State(oc): State<Arc<OrderCloud>>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &["orderID"])?;
    let params: Vec<(String, String)> = raw
        .as_deref()
        .and_then(|r| serde_urlencoded::from_str(r).ok())
        .unwrap_or_default();
    let order_filter = params
        .iter()
        .find(|(k, _)| k == "orderID")
        .map(|(_, v)| v.clone());
    let store = oc.store();
    let items: Vec<Value> = store
        .shipments
        .values()
        .filter(|(o, _)| order_filter.as_ref().is_none_or(|f| f == o))
        .map(|(_, s)| s.clone())
        .collect();
    Ok(Json(
        query.apply(items, &["ID", "TrackingNumber", "Shipper"]),
    ))
}

#[cfg(test)]
mod list_tests {
    use super::*;

    fn store_with(ids: &[&str]) -> Store {
        let mut store = Store::default();
        for (i, id) in ids.iter().enumerate() {
            store.orders.insert(
                (*id).to_owned(),
                json!({
                    "ID": id,
                    "IsSubmitted": true,
                    "Status": if i % 3 == 0 { "Completed" } else { "Open" },
                    "DateSubmitted": format!("2026-11-{:02}T10:00:00+00:00", 1 + i % 28),
                }),
            );
        }
        store
    }

    fn ids(page: &Value) -> Vec<String> {
        page["Items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| o["ID"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Keyset paging through `page_of_orders` and through the plain list
    /// engine give the same pages, Meta included.
    fn assert_keyset_pages_match(store: &mut Store, filters: &str, page_size: u64) {
        let mut last: Option<String> = None;
        let mut seen = 0;
        loop {
            let mut raw = format!("sortBy=ID&pageSize={page_size}{filters}");
            if let Some(last) = &last {
                raw.push_str(&format!(
                    "&ID={}",
                    serde_urlencoded::to_string([("x", format!(">{last}"))])
                        .expect("encoded")
                        .trim_start_matches("x=")
                ));
            }
            let query = ListQuery::parse(Some(&raw), &[]).expect("query");
            let plain = query.apply_refs(store.orders.values(), ORDER_SEARCH);
            let fast = page_of_orders(store, query);
            assert_eq!(fast, plain, "{raw}");
            let page = ids(&fast);
            seen += page.len();
            if (page.len() as u64) < page_size {
                break;
            }
            last = page.last().cloned();
        }
        assert!(seen > 0, "{filters}");
    }

    #[test]
    fn keyset_pages_match_the_plain_list() {
        // Mixed case (sorted case-insensitively), digits, IDs equal but for
        // case, a prefix of another.
        let mut names: Vec<String> = (0..60).map(|i| format!("ord-{i}")).collect();
        names.extend(
            ["ORD-7", "Ord-70", "abc", "ABC", "Zed", "zed-1", "ä-1", "_x"].map(String::from),
        );
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut store = store_with(&refs);
        for size in [1, 7, 20, 100] {
            assert_keyset_pages_match(&mut store, "", size);
            assert_keyset_pages_match(&mut store, "&Status=Open", size);
            assert_keyset_pages_match(
                &mut store,
                "&DateSubmitted=%3E2026-11-05T00:00:00%2B00:00&search=ord",
                size,
            );
        }
        // Numeric pages of a non-keyset query, and a bound that is a number
        // (compared numerically: not cut from the kept list).
        for raw in [
            "sortBy=!ID&pageSize=9&page=3",
            "pageSize=5&page=2&Status=Completed",
            "sortBy=ID&ID=%3E5&pageSize=10",
            "sortBy=ID&ID=%3Eord-3|abc&pageSize=10",
            "sortBy=ID&ID=!%3Eord-3&pageSize=10",
            "sortBy=ID&pageSize=10&page=99",
        ] {
            let query = ListQuery::parse(Some(raw), &[]).expect("query");
            let plain = query.apply_refs(store.orders.values(), ORDER_SEARCH);
            assert_eq!(page_of_orders(&mut store, query.clone()), plain, "{raw}");
            // Twice: the second answer comes from the kept list.
            assert_eq!(page_of_orders(&mut store, query), plain, "{raw}");
        }
    }

    #[test]
    fn a_list_paged_after_a_write_sees_the_write() {
        let mut store = store_with(&["a", "b", "c", "d"]);
        let query = |raw: &str| ListQuery::parse(Some(raw), &[]).expect("query");
        let first = page_of_orders(&mut store, query("sortBy=ID&pageSize=2&Status=Open"));
        assert_eq!(first["Meta"]["TotalCount"], 2);
        assert_eq!(ids(&first), ["b", "c"]);

        // A new order that the query selects.
        store.orders.insert(
            "bb".to_owned(),
            json!({"ID": "bb", "IsSubmitted": true, "Status": "Open"}),
        );
        let next = page_of_orders(
            &mut store,
            query("sortBy=ID&pageSize=2&Status=Open&ID=%3Eb"),
        );
        assert_eq!(next["Meta"]["TotalCount"], 2);
        assert_eq!(ids(&next), ["bb", "c"]);

        // A changed order that the query no longer selects.
        if let Some(order) = store.orders.get_mut("c") {
            order["Status"] = json!("Completed");
        }
        let again = page_of_orders(&mut store, query("sortBy=ID&pageSize=2&Status=Open"));
        assert_eq!(again["Meta"]["TotalCount"], 2);
        assert_eq!(ids(&again), ["b", "bb"]);
        let next = page_of_orders(
            &mut store,
            query("sortBy=ID&pageSize=2&Status=Open&ID=%3Eb"),
        );
        assert_eq!(ids(&next), ["bb"]);
    }
}
