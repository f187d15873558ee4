//! Product variants and their inventory: `GET /products/{productID}/variants`,
//! `GET`/`PATCH /products/{productID}/variants/{variantID}`.
//!
//! Real OrderCloud generates variants from a product's specs; the simulator
//! takes them from its seeds ([`super::config::VariantSeed`]). A variant's
//! stock (`Variant.Inventory`: `QuantityAvailable`, `NotificationPoint`,
//! `LastUpdated`) counts when its product tracks inventory
//! (`Inventory.Enabled`) per variant (`Inventory.VariantLevelTracking`);
//! setting `QuantityAvailable` otherwise is refused with
//! `Product.InventoryDisabled`, as it is for products.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;
use serde_json::{json, Map, Value};

use super::config::VariantSeed;
use super::error::{OcError, OcJson, OcPath, OcResult};
use super::list::ListQuery;
use super::{check_xp, deep_merge, now_text, object_body, OrderCloud, MAX_QUANTITY};

/// Variant fields in SDK order.
const VARIANT_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Description",
    "Active",
    "ShipWeight",
    "ShipHeight",
    "ShipWidth",
    "ShipLength",
    "Inventory",
    "xp",
];

/// The stored variant for a seed.
pub(crate) fn variant_from_seed(seed: &VariantSeed, now: &str) -> Value {
    let mut out = Map::new();
    for name in VARIANT_FIELDS {
        out.insert((*name).to_owned(), Value::Null);
    }
    out.insert("ID".to_owned(), json!(seed.id));
    out.insert("Name".to_owned(), json!(seed.name));
    out.insert("Active".to_owned(), json!(true));
    out.insert(
        "Inventory".to_owned(),
        json!({
            "QuantityAvailable": seed.quantity_available,
            "NotificationPoint": null,
            "LastUpdated": now,
        }),
    );
    Value::Object(out)
}

/// `GET /v1/products/{productID}/variants`.
pub(crate) async fn list_variants(
    State(oc): State<Arc<OrderCloud>>,
    OcPath(product_id): OcPath<String>,
    RawQuery(raw): RawQuery,
) -> OcResult<Json<Value>> {
    let query = ListQuery::parse(raw.as_deref(), &[])?;
    let store = oc.store();
    if !store.products.contains_key(&product_id) {
        return Err(OcError::not_found("Product", &product_id));
    }
    let items: Vec<Value> = store
        .variants
        .get(&product_id)
        .map(|v| v.values().cloned().collect())
        .unwrap_or_default();
    Ok(Json(query.apply(items, &["ID", "Name", "Description"])))
}

/// `GET /v1/products/{productID}/variants/{variantID}`.
pub(crate) async fn get_variant(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((product_id, variant_id)): OcPath<(String, String)>,
) -> OcResult<Json<Value>> {
    let store = oc.store();
    if !store.products.contains_key(&product_id) {
        return Err(OcError::not_found("Product", &product_id));
    }
    store
        .variants
        .get(&product_id)
        .and_then(|v| v.get(&variant_id))
        .map(|v| Json(v.clone()))
        .ok_or_else(|| OcError::not_found("Variant", &variant_id))
}

/// Applies the writable fields of `patch` to `variant`; `product` decides
/// whether its stock may be set.
fn apply_variant_patch(
    variant: &mut Value,
    product: &Value,
    patch: &Map<String, Value>,
) -> OcResult<()> {
    for (key, value) in patch {
        match key.as_str() {
            "xp" => {
                check_xp(value)?;
                if value.is_null() || variant["xp"].is_null() {
                    variant["xp"] = value.clone();
                } else {
                    deep_merge(&mut variant["xp"], value);
                }
            }
            "Inventory" => {
                let Some(inventory) = value.as_object() else {
                    return Err(OcError::validation(
                        "Inventory",
                        "Inventory must be an object.",
                    ));
                };
                if inventory.contains_key("QuantityAvailable") {
                    let tracked = &product["Inventory"];
                    if tracked["Enabled"] != Value::Bool(true)
                        || tracked["VariantLevelTracking"] != Value::Bool(true)
                    {
                        return Err(OcError::bad_request(
                            "Product.InventoryDisabled",
                            "Variant-level inventory is not tracked for this product; enable Inventory.Enabled and Inventory.VariantLevelTracking before setting a variant's QuantityAvailable.",
                        )
                        .with_data(json!({ "ProductID": product["ID"], "VariantID": variant["ID"] })));
                    }
                }
                let mut merged = variant["Inventory"].clone();
                for (k, v) in inventory {
                    match k.as_str() {
                        "QuantityAvailable" | "NotificationPoint" => {
                            let in_range = v
                                .as_i64()
                                .is_some_and(|q| (-MAX_QUANTITY..=MAX_QUANTITY).contains(&q));
                            if !(v.is_null() || in_range) {
                                return Err(OcError::validation(
                                    &format!("Inventory.{k}"),
                                    format!("{k} must be a whole number within ±{MAX_QUANTITY}."),
                                ));
                            }
                            merged[k.as_str()] = v.clone();
                        }
                        _ => {}
                    }
                }
                merged["LastUpdated"] = json!(now_text());
                variant["Inventory"] = merged;
            }
            "ID" => {}
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
                variant["Name"] = value.clone();
            }
            other if VARIANT_FIELDS.contains(&other) => variant[other] = value.clone(),
            _ => {}
        }
    }
    Ok(())
}

/// `PATCH /v1/products/{productID}/variants/{variantID}`.
pub(crate) async fn patch_variant(
    State(oc): State<Arc<OrderCloud>>,
    OcPath((product_id, variant_id)): OcPath<(String, String)>,
    OcJson(body): OcJson<Value>,
) -> OcResult<Json<Value>> {
    let fields = object_body(&body)?.clone();
    let mut store = oc.store();
    let product = store
        .products
        .get(&product_id)
        .cloned()
        .ok_or_else(|| OcError::not_found("Product", &product_id))?;
    let variant = store
        .variants
        .get_mut(&product_id)
        .and_then(|v| v.get_mut(&variant_id))
        .ok_or_else(|| OcError::not_found("Variant", &variant_id))?;
    let mut updated = variant.clone();
    apply_variant_patch(&mut updated, &product, &fields)?;
    *variant = updated.clone();
    Ok(Json(updated))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> VariantSeed {
        VariantSeed {
            id: "TEE-S".to_owned(),
            name: "Tee, small".to_owned(),
            quantity_available: 3,
        }
    }

    #[test]
    fn variant_stock_needs_variant_level_tracking() {
        let mut variant = variant_from_seed(&seed(), "2026-01-01T00:00:00+00:00");
        let patch = json!({"Inventory": {"QuantityAvailable": 9}});
        let patch = patch.as_object().expect("object");
        let untracked =
            json!({"ID": "TEE", "Inventory": {"Enabled": true, "VariantLevelTracking": false}});
        let err = apply_variant_patch(&mut variant, &untracked, patch).expect_err("refused");
        assert_eq!(err.code, "Product.InventoryDisabled");
        let tracked =
            json!({"ID": "TEE", "Inventory": {"Enabled": true, "VariantLevelTracking": true}});
        apply_variant_patch(&mut variant, &tracked, patch).expect("accepted");
        assert_eq!(variant["Inventory"]["QuantityAvailable"], json!(9));
        assert_eq!(variant["Name"], json!("Tee, small"));
    }
}
