//! Buyers, buyer users and products (with inventory).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Map, Value};

use super::config::ProductSeed;
use super::error::{OcError, OcJson, OcPath, OcResult};
use super::list::ListQuery;
use super::{
    check_id, check_xp, decimal_value, deep_merge, id_from_body, now_text, object_body, OrderCloud,
    Store, MAX_QUANTITY,
};

/// User fields in SDK order.
const USER_FIELDS: &[&str] = &[
    "FailedLoginAttempts",
    "ID",
    "CompanyID",
    "Username",
    "Password",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "TermsAccepted",
    "Active",
    "xp",
    "AvailableRoles",
    "Locale",
    "DateCreated",
    "LastActive",
    "PasswordLastSetDate",
];

/// Puts every User field in place (missing ones `null`) and blanks `Password`.
pub(crate) fn normalize_user(user: Value) -> Value {
    let mut out = Map::new();
    for name in USER_FIELDS {
        out.insert(
            (*name).to_owned(),
            user.get(*name).cloned().unwrap_or(Value::Null),
        );
    }
    out.insert("Password".to_owned(), Value::Null);
    if out["FailedLoginAttempts"].is_null() {
        out.insert("FailedLoginAttempts".to_owned(), json!(0));
    }
    Value::Object(out)
}

fn check_buyer(store: &Store, buyer_id: &str) -> OcResult<()> {
    if store.buyers.iter().any(|b| b == buyer_id) {
        Ok(())
    } else {
        Err(OcError::not_found("Buyer", buyer_id))
    }
}

/// `GET /v1/buyers`.
pub(crate) async fn list_buyers(
    State(oc): State<Arc<OrderCloud>>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &[])?;
    let items: Vec<Value> = oc
        .store()
        .buyers
        .iter()
        .map(|b| json!({ "ID": b, "Name": b, "Active": true, "xp": null }))
        .collect();
    Ok(Json(query.apply(items, &["ID", "Name"])))
}

const USER_SEARCH: &[&str] = &["ID", "Username", "FirstName", "LastName", "Email"];

/// `GET /v1/buyers/{buyerID}/users`.
pub(crate) async fn list_users(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(buyer_id): OcPath<String>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &["userGroupID"])?;
    let store = oc.store();
    check_buyer(&store, &buyer_id)?;
    let items: Vec<Value> = store
        .users
        .values()
        .filter(|u| u["CompanyID"].as_str() == Some(&buyer_id))
        .cloned()
        .collect();
    Ok(Json(query.apply(items, USER_SEARCH)))
}

/// `GET /v1/buyerusers` (users of every buyer).
pub(crate) async fn list_all_users(
    State(oc): State<Arc<OrderCloud>>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &["userGroupID"])?;
    let items: Vec<Value> = oc.store().users.values().cloned().collect();
    Ok(Json(query.apply(items, USER_SEARCH)))
}

fn user_in_buyer<'a>(store: &'a Store, buyer_id: &str, user_id: &str) -> OcResult<&'a Value> {
    check_buyer(store, buyer_id)?;
    store
        .users
        .get(user_id)
        .filter(|u| u["CompanyID"].as_str() == Some(buyer_id))
        .ok_or_else(|| OcError::not_found("User", user_id))
}

/// `GET /v1/buyers/{buyerID}/users/{userID}`.
pub(crate) async fn get_user(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((buyer_id, user_id)): OcPath<(String, String)>,
) -> OcResult<Json<Value>> {
    let store = oc.store();
    Ok(Json(user_in_buyer(&store, &buyer_id, &user_id)?.clone()))
}

/// Validates a full User body and builds the stored user (without password).
fn build_user(buyer_id: &str, id: &str, body: &Value, existing: Option<&Value>) -> OcResult<Value> {
    let fields = object_body(body)?;
    let text = |name: &str, max: usize| -> OcResult<Value> {
        match fields.get(name) {
            Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= max => {
                Ok(json!(s))
            }
            Some(Value::String(s)) if !s.trim().is_empty() => Err(OcError::validation(
                name,
                format!("{name} may not exceed {max} characters."),
            )),
            _ => Err(OcError::validation(name, format!("{name} is required."))),
        }
    };
    let username = text("Username", 100)?;
    let first = text("FirstName", 100)?;
    let last = text("LastName", 100)?;
    let email = text("Email", 200)?;
    let active = match fields.get("Active") {
        Some(Value::Bool(b)) => *b,
        _ => {
            return Err(OcError::validation(
                "Active",
                "Active is required (true or false).",
            ))
        }
    };
    let xp = fields.get("xp").cloned().unwrap_or(Value::Null);
    check_xp(&xp)?;
    let now = now_text();
    let keep = |name: &str| {
        existing
            .and_then(|e| e.get(name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let field = |name: &str| fields.get(name).cloned().unwrap_or(Value::Null);
    Ok(normalize_user(json!({
        "ID": id,
        "CompanyID": buyer_id,
        "Username": username,
        "FirstName": first,
        "LastName": last,
        "Email": email,
        "Phone": field("Phone"),
        "TermsAccepted": field("TermsAccepted"),
        "Active": active,
        "xp": xp,
        "AvailableRoles": keep("AvailableRoles"),
        "Locale": keep("Locale"),
        "DateCreated": existing.map(|_| keep("DateCreated")).unwrap_or(json!(now)),
        "LastActive": keep("LastActive"),
        "PasswordLastSetDate": keep("PasswordLastSetDate"),
        "FailedLoginAttempts": keep("FailedLoginAttempts"),
    })))
}

fn check_username_unique(store: &Store, username: &Value, self_id: &str) -> OcResult<()> {
    let taken = store.users.values().any(|u| {
        u["ID"].as_str() != Some(self_id)
            && u["Username"].as_str().map(str::to_lowercase)
                == username.as_str().map(str::to_lowercase)
    });
    if taken {
        return Err(OcError::bad_request(
            "User.UsernameMustBeUnique",
            format!(
                "Username {} is already taken.",
                username.as_str().unwrap_or_default()
            ),
        )
        .with_data(json!({ "Username": username })));
    }
    Ok(())
}

fn save_password(store: &mut Store, user: &mut Value, body: &Value) {
    if let Some(password) = body.get("Password").and_then(Value::as_str) {
        if let Some(id) = user["ID"].as_str() {
            store.passwords.insert(id.to_owned(), password.to_owned());
        }
        user["PasswordLastSetDate"] = json!(now_text());
    }
}

/// `POST /v1/buyers/{buyerID}/users` (201; 409 on an existing ID).
pub(crate) async fn create_user(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(buyer_id): OcPath<String>,
    OcJson(body): OcJson<Value>,
) -> OcResult<(StatusCode, Json<Value>)> {
    object_body(&body)?;
    let id = id_from_body("User", &body)?;
    let mut store = oc.store();
    check_buyer(&store, &buyer_id)?;
    if store.users.contains_key(&id) {
        return Err(OcError::id_exists("User", &id));
    }
    let mut user = build_user(&buyer_id, &id, &body, None)?;
    check_username_unique(&store, &user["Username"], &id)?;
    save_password(&mut store, &mut user, &body);
    store.users.insert(id, user.clone());
    Ok((StatusCode::CREATED, Json(user)))
}

/// `PUT /v1/buyers/{buyerID}/users/{userID}`: create or replace (200).
pub(crate) async fn put_user(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((buyer_id, user_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    check_id("User", &user_id)?;
    let mut store = oc.store();
    check_buyer(&store, &buyer_id)?;
    let existing = store.users.get(&user_id).cloned();
    if let Some(e) = &existing {
        if e["CompanyID"].as_str() != Some(&buyer_id) {
            return Err(OcError::id_exists("User", &user_id));
        }
    }
    let mut user = build_user(&buyer_id, &user_id, &body, existing.as_ref())?;
    check_username_unique(&store, &user["Username"], &user_id)?;
    save_password(&mut store, &mut user, &body);
    store.users.insert(user_id, user.clone());
    Ok(Json(user))
}

/// `PATCH /v1/buyers/{buyerID}/users/{userID}`: partial update (`xp` deep-merged).
pub(crate) async fn patch_user(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((buyer_id, user_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let existing = user_in_buyer(&store, &buyer_id, &user_id)?.clone();
    let mut merged = existing.clone();
    for (key, value) in &fields {
        match key.as_str() {
            "xp" => {
                check_xp(value)?;
                if value.is_null() || merged["xp"].is_null() {
                    merged["xp"] = value.clone();
                } else {
                    deep_merge(&mut merged["xp"], value);
                }
            }
            "Username" | "FirstName" | "LastName" | "Email" | "Phone" | "TermsAccepted"
            | "Active" => {
                merged[key.as_str()] = value.clone();
            }
            _ => {}
        }
    }
    let mut user = build_user(&buyer_id, &user_id, &merged, Some(&existing))?;
    check_username_unique(&store, &user["Username"], &user_id)?;
    save_password(&mut store, &mut user, &body);
    store.users.insert(user_id, user.clone());
    Ok(Json(user))
}

/// Product fields in SDK order.
const PRODUCT_FIELDS: &[&str] = &[
    "OwnerID",
    "DefaultPriceScheduleID",
    "AutoForward",
    "ID",
    "ParentID",
    "IsParent",
    "IsBundle",
    "Name",
    "Description",
    "QuantityMultiplier",
    "ShipWeight",
    "ShipHeight",
    "ShipWidth",
    "ShipLength",
    "Active",
    "SpecCount",
    "VariantCount",
    "ShipFromAddressID",
    "Inventory",
    "DefaultSupplierID",
    "AllSuppliersCanSell",
    "Returnable",
    "DateCreated",
    "xp",
];

/// The stored product for a seed; the price lives in `xp.Price`.
pub(crate) fn product_from_seed(seed: &ProductSeed, now: &str) -> Value {
    normalize_product(json!({
        "ID": seed.id,
        "Name": seed.name,
        "Active": true,
        "QuantityMultiplier": 1,
        "Returnable": true,
        "VariantCount": seed.variants.len(),
        "DateCreated": now,
        "Inventory": {
            "Enabled": seed.inventory_enabled,
            "NotificationPoint": null,
            "VariantLevelTracking": seed.variant_level_tracking,
            "OrderCanExceed": seed.order_can_exceed,
            "QuantityAvailable": seed.quantity_available,
            "LastUpdated": now,
        },
        "xp": { "TaxClass": seed.tax_class, "Price": decimal_value(seed.price) },
    }))
}

fn normalize_product(product: Value) -> Value {
    let mut out = Map::new();
    for name in PRODUCT_FIELDS {
        out.insert(
            (*name).to_owned(),
            product.get(*name).cloned().unwrap_or(Value::Null),
        );
    }
    for (name, default) in [
        ("AutoForward", json!(false)),
        ("IsParent", json!(false)),
        ("IsBundle", json!(false)),
        ("SpecCount", json!(0)),
        ("VariantCount", json!(0)),
        ("AllSuppliersCanSell", json!(false)),
        ("Active", json!(false)),
        ("QuantityMultiplier", json!(1)),
    ] {
        if out[name].is_null() {
            out.insert(name.to_owned(), default);
        }
    }
    if out["Inventory"].is_null() {
        out.insert(
            "Inventory".to_owned(),
            json!({ "Enabled": false, "NotificationPoint": null, "VariantLevelTracking": false,
                    "OrderCanExceed": false, "QuantityAvailable": null, "LastUpdated": null }),
        );
    }
    Value::Object(out)
}

/// `GET /v1/products`.
pub(crate) async fn list_products(
    State(oc): State<Arc<OrderCloud>>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(
        raw.as_deref(),
        &["catalogID", "categoryID", "depth", "supplierID"],
    )?;
    let items: Vec<Value> = oc.store().products.values().cloned().collect();
    Ok(Json(query.apply(items, &["ID", "Name", "Description"])))
}

/// `GET /v1/products/{productID}`.
pub(crate) async fn get_product(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(product_id): OcPath<String>,
) -> OcResult<Json<Value>> {
    oc.store()
        .products
        .get(&product_id)
        .map(|p| Json(p.clone()))
        .ok_or_else(|| OcError::not_found("Product", &product_id))
}

/// Applies writable fields of `patch` to `product` (inventory merged, `xp`
/// deep-merged) and enforces `Product.InventoryDisabled`.
fn apply_product_patch(product: &mut Value, patch: &Map<String, Value>) -> OcResult<()> {
    for (key, value) in patch {
        match key.as_str() {
            "xp" => {
                check_xp(value)?;
                if value.is_null() || product["xp"].is_null() {
                    product["xp"] = value.clone();
                } else {
                    deep_merge(&mut product["xp"], value);
                }
            }
            "Inventory" => {
                let Some(inventory) = value.as_object() else {
                    return Err(OcError::validation(
                        "Inventory",
                        "Inventory must be an object.",
                    ));
                };
                let mut merged = product["Inventory"].clone();
                for (k, v) in inventory {
                    if k != "LastUpdated" {
                        merged[k.as_str()] = v.clone();
                    }
                }
                if inventory.contains_key("QuantityAvailable")
                    && merged["Enabled"] != Value::Bool(true)
                {
                    return Err(OcError::bad_request(
                        "Product.InventoryDisabled",
                        "Inventory tracking is disabled for this product; enable it before setting QuantityAvailable.",
                    )
                    .with_data(json!({ "ProductID": product["ID"] })));
                }
                if let Some(q) = inventory.get("QuantityAvailable") {
                    let in_range = q
                        .as_i64()
                        .is_some_and(|q| (-MAX_QUANTITY..=MAX_QUANTITY).contains(&q));
                    if !(q.is_null() || in_range) {
                        return Err(OcError::validation(
                            "Inventory.QuantityAvailable",
                            format!(
                                "QuantityAvailable must be a whole number within ±{MAX_QUANTITY}."
                            ),
                        ));
                    }
                }
                merged["LastUpdated"] = json!(now_text());
                product["Inventory"] = merged;
            }
            "ID" | "IsBundle" | "SpecCount" | "VariantCount" | "DateCreated" => {}
            "Name" => {
                if value
                    .as_str()
                    .is_none_or(|s| s.trim().is_empty() || s.chars().count() > 100)
                {
                    return Err(OcError::validation(
                        "Name",
                        "Name is required (max 100 characters).",
                    ));
                }
                product["Name"] = value.clone();
            }
            other if PRODUCT_FIELDS.contains(&other) => product[other] = value.clone(),
            _ => {}
        }
    }
    Ok(())
}

/// `PATCH /v1/products/{productID}`.
pub(crate) async fn patch_product(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(product_id): OcPath<String>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let product = store
        .products
        .get_mut(&product_id)
        .ok_or_else(|| OcError::not_found("Product", &product_id))?;
    let mut updated = product.clone();
    apply_product_patch(&mut updated, &fields)?;
    *product = updated.clone();
    Ok(Json(updated))
}

fn new_product(id: &str, fields: &Map<String, Value>, date_created: Value) -> OcResult<Value> {
    if fields
        .get("Name")
        .and_then(Value::as_str)
        .is_none_or(|s| s.trim().is_empty())
    {
        return Err(OcError::validation("Name", "Name is required."));
    }
    let mut product = normalize_product(json!({ "ID": id, "DateCreated": date_created }));
    let mut fields = fields.clone();
    let inventory = fields.remove("Inventory");
    apply_product_patch(&mut product, &fields)?;
    if let Some(inventory) = inventory {
        let mut enabled_first = Map::new();
        if let Some(enabled) = inventory.get("Enabled") {
            let mut first = Map::new();
            first.insert("Enabled".to_owned(), enabled.clone());
            enabled_first.insert("Inventory".to_owned(), Value::Object(first));
            apply_product_patch(&mut product, &enabled_first)?;
        }
        let mut rest = Map::new();
        rest.insert("Inventory".to_owned(), inventory);
        apply_product_patch(&mut product, &rest)?;
    }
    Ok(product)
}

/// `POST /v1/products` (201; 409 on an existing ID).
pub(crate) async fn create_product(
    State(oc): State<Arc<OrderCloud>>,
    OcJson(body): OcJson<Value>,
) -> OcResult<(StatusCode, Json<Value>)> {
    let fields = object_body(&body)?.clone();
    let id = id_from_body("Product", &body)?;
    let mut store = oc.store();
    if store.products.contains_key(&id) {
        return Err(OcError::id_exists("Product", &id));
    }
    let product = new_product(&id, &fields, json!(now_text()))?;
    store.products.insert(id, product.clone());
    Ok((StatusCode::CREATED, Json(product)))
}

/// `PUT /v1/products/{productID}`: create or replace.
pub(crate) async fn put_product(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(product_id): OcPath<String>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    check_id("Product", &product_id)?;
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let created = store
        .products
        .get(&product_id)
        .map(|p| p["DateCreated"].clone())
        .unwrap_or_else(|| json!(now_text()));
    let product = new_product(&product_id, &fields, created)?;
    store.products.insert(product_id, product.clone());
    Ok(Json(product))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inventory_patch_requires_tracking() {
        let mut product = normalize_product(json!({"ID": "P", "Name": "p"}));
        let patch = json!({"Inventory": {"QuantityAvailable": 4}});
        let err = apply_product_patch(&mut product, patch.as_object().expect("object"))
            .expect_err("disabled");
        assert_eq!(err.code, "Product.InventoryDisabled");
        let patch = json!({"Inventory": {"Enabled": true, "QuantityAvailable": 4}});
        apply_product_patch(&mut product, patch.as_object().expect("object")).expect("enabled");
        assert_eq!(product["Inventory"]["QuantityAvailable"], json!(4));
    }
}
