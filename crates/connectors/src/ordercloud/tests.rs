//! Model (de)serialization against the JSON examples of the OrderCloud
//! reference (`shared/reference/sitecore-ordercloud-api.md`).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::json;

use super::models::TokenResponse;
use super::*;

#[test]
fn order_from_the_webhook_example_parses() {
    let order: Order = serde_json::from_value(json!({
        "ID": "SO-1001", "FromCompanyID": "BUYER1", "FromUserID": "buyer01", "Status": "Open",
        "IsSubmitted": true, "Subtotal": 20, "ShippingCost": 5, "TaxCost": 1.5, "PromotionDiscount": 0,
        "Total": 26.5, "LineItemCount": 1, "DateSubmitted": "2025-01-15T10:00:00+00:00", "xp": null,
        "LineItems": null, "DateCreated": "2021-02-23T20:39:03.173+00:00"
    }))
    .unwrap();
    assert_eq!(order.id.as_deref(), Some("SO-1001"));
    assert_eq!(order.from_company_id.as_deref(), Some("BUYER1"));
    assert_eq!(order.total, Some(Decimal::from_str("26.5").unwrap()));
    assert_eq!(order.xp, None);
    assert_eq!(
        order.date_submitted.unwrap().to_rfc3339(),
        "2025-01-15T10:00:00+00:00"
    );
}

#[test]
fn list_pages_parse_including_empty_ones() {
    let page: ListPage<LineItem> = serde_json::from_value(json!({
        "Meta": {"Page": 1, "PageSize": 20, "TotalCount": 25, "TotalPages": 2, "ItemRange": [1, 20], "NextPageKey": null},
        "Items": [{"ID": "L1", "ProductID": "WID1", "Quantity": 2, "UnitPrice": 10, "LineSubtotal": 20, "LineTotal": 20,
                   "Product": {"ID": "WID1", "Name": "Widget", "xp": {"KashFlowCode": "WID1"}}, "Variant": null,
                   "Specs": []}]
    }))
    .unwrap();
    assert_eq!(page.meta.total_pages, Some(2));
    assert_eq!(page.meta.item_range, Some(vec![1, 20]));
    let line = &page.items[0];
    assert_eq!(
        line.product.as_ref().unwrap().xp,
        Some(json!({"KashFlowCode": "WID1"}))
    );
    assert_eq!(line.variant, None);

    let empty: ListPage<Order> = serde_json::from_value(json!({
        "Meta": {"Page": 1, "PageSize": 20, "TotalCount": 0, "TotalPages": 0, "ItemRange": [0, 0]}, "Items": []
    }))
    .unwrap();
    assert!(empty.items.is_empty());
}

#[test]
fn user_create_body_sends_only_what_is_set() {
    let user = User {
        id: Some("buyer02".to_owned()),
        username: Some("ada".to_owned()),
        password: Some(Secret::new("s3cret!")),
        first_name: Some("Ada".to_owned()),
        last_name: Some("Lovelace".to_owned()),
        email: Some("ada@example.com".to_owned()),
        active: Some(true),
        ..User::default()
    };
    assert_eq!(
        serde_json::to_value(&user).unwrap(),
        json!({"ID": "buyer02", "Username": "ada", "Password": "s3cret!", "FirstName": "Ada",
               "LastName": "Lovelace", "Email": "ada@example.com", "Active": true})
    );
    assert!(!format!("{user:?}").contains("s3cret!"));

    let read: User = serde_json::from_value(
        json!({"ID": "buyer02", "CompanyID": "BUYER1", "Password": null, "xp": {"a": 1}}),
    )
    .unwrap();
    assert_eq!(read.company_id.as_deref(), Some("BUYER1"));
    assert_eq!(read.password, None);
}

#[test]
fn webhook_body_carries_the_hash_key() {
    let webhook = Webhook {
        name: Some("order submitted".to_owned()),
        url: Some("http://127.0.0.1:9/hooks/ordercloud".to_owned()),
        hash_key: Some(Secret::new("sim-hash-key-123")),
        api_client_ids: Some(vec!["client-1".to_owned()]),
        webhook_routes: Some(vec![WebhookRoute {
            route: Some("v1/orders/{direction}/{orderID}/submit".to_owned()),
            verb: Some("POST".to_owned()),
        }]),
        config_data: Some(json!({"tenant": "acme"})),
        ..Webhook::default()
    };
    let body = serde_json::to_value(&webhook).unwrap();
    assert_eq!(body["HashKey"], "sim-hash-key-123");
    assert_eq!(body["ApiClientIDs"], json!(["client-1"]));
    assert_eq!(
        body["WebhookRoutes"][0]["Route"],
        "v1/orders/{direction}/{orderID}/submit"
    );
    assert!(!format!("{webhook:?}").contains("sim-hash-key-123"));
}

#[test]
fn product_inventory_parses() {
    let product: Product = serde_json::from_value(json!({
        "ID": "WID1", "Name": "Widget", "Active": true,
        "Inventory": {"Enabled": true, "NotificationPoint": null, "VariantLevelTracking": false,
                      "OrderCanExceed": false, "QuantityAvailable": 42, "LastUpdated": "2025-01-15T10:00:00+00:00"}
    }))
    .unwrap();
    let inventory = product.inventory.unwrap();
    assert_eq!(inventory.quantity_available, Some(42));
    assert_eq!(inventory.notification_point, None);
}

#[test]
fn token_answer_parses() {
    let token: TokenResponse = serde_json::from_str(
        r#"{"access_token": "abc", "token_type": "bearer", "expires_in": 35999, "refresh_token": null}"#,
    )
    .unwrap();
    assert_eq!(token.access_token, "abc");
    assert_eq!(token.expires_in, Some(35999));
}

#[test]
fn list_options_become_query_parameters() {
    let options = ListOptions {
        search: Some("ada".to_owned()),
        sort_by: Some("!DateSubmitted".to_owned()),
        page_size: Some(50),
        ..ListOptions::default()
    }
    .filter("xp.Invoiced", "!*")
    .filter("Status", "Open|Completed");
    let url = Url::parse("http://h/v1/orders/Incoming").unwrap();
    let url = options.apply(&url);
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(
        pairs,
        vec![
            ("search".to_owned(), "ada".to_owned()),
            ("sortBy".to_owned(), "!DateSubmitted".to_owned()),
            ("pageSize".to_owned(), "50".to_owned()),
            ("xp.Invoiced".to_owned(), "!*".to_owned()),
            ("Status".to_owned(), "Open|Completed".to_owned()),
        ]
    );
    let bare = ListOptions::default().apply(&Url::parse("http://h/v1/products").unwrap());
    assert_eq!(bare.as_str(), "http://h/v1/products");
}

#[test]
fn urls_live_under_v1_and_config_is_strict() {
    let client = OrderCloudClient::new(
        "ordercloud:test",
        OrderCloudConfig::new("http://127.0.0.1:9/oc", "client", Secret::new("s"), ""),
    )
    .unwrap();
    assert_eq!(
        client.url(&["orders", "Incoming", "SO 1"]).as_str(),
        "http://127.0.0.1:9/oc/v1/orders/Incoming/SO%201"
    );
    let err = serde_json::from_value::<OrderCloudConfig>(json!({
        "base_url": "x", "client_id": "c", "client_secret": "s", "scopes": "OrderAdmin"
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `scopes`"), "{err}");
}
