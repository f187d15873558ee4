//! OrderCloud simulator over real HTTP: OAuth, bearer check, orders, line
//! items, totals, inventory, users, products, payments, lists and filters,
//! error bodies, and webhooks (CRUD, signed delivery, retries, duplicates).

mod common;

use common::{eventually, num, ordercloud_session, start, start_receiver, status_and_json};
use ledgerbridge_sandbox::ordercloud::{
    oc_hash, ProductSeed, VariantSeed, WebhookFaults, WebhookSeed,
};
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn fast_config() -> SandboxConfig {
    let mut config = SandboxConfig::default();
    config.ordercloud.delivery.initial_backoff_ms = 10;
    config.ordercloud.delivery.max_backoff_ms = 50;
    config
}

#[tokio::test]
async fn token_grants_and_errors() {
    let sandbox = start(SandboxConfig::default()).await;
    let client = common::client();
    let url = format!("{}/oauth/token", sandbox.ordercloud_url());

    let (status, body) = status_and_json(
        client
            .post(&url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "ledgerbridge-sim-client"),
                ("client_secret", "sim-secret"),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 35999);
    assert_eq!(body["refresh_token"], Value::Null);
    assert!(body["access_token"].as_str().is_some_and(|t| !t.is_empty()));

    let (status, body) = status_and_json(
        client
            .post(&url)
            .form(&[
                ("grant_type", "password"),
                ("client_id", "ledgerbridge-storefront"),
                ("username", "buyer01"),
                ("password", "sim-password"),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for form in [
        vec![
            ("grant_type", "client_credentials"),
            ("client_id", "ledgerbridge-sim-client"),
            ("client_secret", "nope"),
        ],
        vec![
            ("grant_type", "password"),
            ("client_id", "ledgerbridge-storefront"),
            ("username", "buyer01"),
            ("password", "wrong"),
        ],
    ] {
        let (status, body) =
            status_and_json(client.post(&url).form(&form).send().await.expect("sent")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            json!({"error": "invalid_grant", "error_description": "Bad credentials.",
                   "Errors": [{"ErrorCode": "Auth.InvalidUsernameOrPassword", "Message": "Bad credentials.", "Data": null}]})
        );
    }

    let (status, body) = status_and_json(
        client
            .post(&url)
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Request.InvalidContentType");
}

#[tokio::test]
async fn refresh_tokens_and_expiry() {
    let mut config = SandboxConfig::default();
    config.ordercloud.refresh_token_seconds = 3600;
    config.ordercloud.access_token_seconds = 0;
    let sandbox = start(config).await;
    let client = common::client();
    let base = sandbox.ordercloud_url();
    let (_, body) = status_and_json(
        client
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "ledgerbridge-sim-client"),
                ("client_secret", "sim-secret"),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let access = body["access_token"].as_str().expect("token").to_owned();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
    // Lifetime 0: the token is already expired.
    let (status, body) = status_and_json(
        client
            .get(format!("{base}/v1/products"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["Errors"][0]["ErrorCode"], "InvalidToken");
    let (status, body) = status_and_json(
        client
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ledgerbridge-sim-client"),
                ("refresh_token", refresh.as_str()),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A refresh token is single-use.
    let (status, _) = status_and_json(
        client
            .post(format!("{base}/oauth/token"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", "ledgerbridge-sim-client"),
                ("refresh_token", refresh.as_str()),
            ])
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn bearer_check_and_error_formats() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let (status, body) = status_and_json(
        oc.client
            .get(format!("{}/v1/orders/Incoming", oc.base))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["Errors"][0]["ErrorCode"], "InvalidToken");
    assert!(body["Errors"][0].get("Data").is_some());

    let (status, body) = oc.get("/orders/Incoming/SO-404").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["Errors"][0]["ErrorCode"], "NotFound");
    assert_eq!(
        body["Errors"][0]["Data"],
        json!({"ObjectType": "Order", "ObjectID": "SO-404"})
    );

    let (status, body) = oc.get("/no/such/route").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["Errors"][0]["ErrorCode"], "NotFound");

    let (status, body) = status_and_json(
        oc.client
            .post(format!("{}/v1/orders/Outgoing", oc.base))
            .bearer_auth(&oc.token)
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Request.InvalidRequestBody");

    let (status, body) = oc.get("/products?pageSize=101").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["Errors"][0]["ErrorCode"].is_string());
}

#[tokio::test]
async fn order_lifecycle_totals_and_inventory() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let order = oc
        .order_with_lines("SO-1", &[("WID1", 2), ("WID2", 1)])
        .await;
    // WID1 10.00 x2 + WID2 25.50 = 45.5
    assert_eq!(order["Status"], "Unsubmitted");
    assert_eq!(num(&order["Subtotal"]), 45.5);
    assert_eq!(order["LineItemCount"], 2);
    assert_eq!(order["FromUserID"], "buyer01");
    assert_eq!(order["FromCompanyID"], "BUYER1");

    let (status, order) = oc
        .patch(
            "/orders/outgoing/SO-1",
            &json!({"ShippingCost": 5, "TaxCost": 1.5, "Status": "Completed", "Total": 1,
                    "xp": {"a": {"b": 1}}, "Comments": "hi"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["Status"], "Unsubmitted", "read-only fields ignored");
    assert_eq!(num(&order["Total"]), 52.0);
    let (_, order) = oc
        .patch(
            "/orders/Outgoing/SO-1",
            &json!({"xp": {"a": {"c": 2}, "d": true}}),
        )
        .await;
    assert_eq!(order["xp"], json!({"a": {"b": 1, "c": 2}, "d": true}));

    // Line items: list, get, patch (totals follow).
    let (status, lines) = oc.get("/orders/Outgoing/SO-1/lineitems").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines["Meta"]["TotalCount"], 2);
    assert_eq!(
        lines["Items"][0]["ProductID"], "WID1",
        "lines keep insertion order"
    );
    assert_eq!(lines["Items"][1]["ProductID"], "WID2");
    // Patch the WID1 line (IDs are generated, so find it by product).
    let line_id = lines["Items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|l| l["ProductID"] == "WID1")
        .and_then(|l| l["ID"].as_str())
        .expect("WID1 line")
        .to_owned();
    let (status, line) = oc
        .patch(
            &format!("/orders/Outgoing/SO-1/lineitems/{line_id}"),
            &json!({"Quantity": 3, "UnitPrice": 2.25}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{line}");
    assert_eq!(num(&line["LineSubtotal"]), 6.75);
    assert_eq!(num(&line["LineTotal"]), 6.75);
    let (status, _) = oc
        .get(&format!("/orders/Outgoing/SO-1/lineitems/{line_id}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, order) = oc.get("/orders/Incoming/SO-1").await;
    let subtotal = num(&order["Subtotal"]);
    assert_eq!(num(&order["Total"]), subtotal + 6.5);

    // Bill-to and ship-to.
    let address = json!({"ID": "home", "Street1": "1 High St", "City": "Leeds", "Country": "GB", "Zip": "LS1 1AA"});
    let (status, order) = oc.put("/orders/Outgoing/SO-1/billto", &address).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["BillingAddress"]["City"], "Leeds");
    assert_eq!(order["BillingAddressID"], "home");
    let (status, order) = oc
        .patch("/orders/Outgoing/SO-1/billto", &json!({"City": "York"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["BillingAddress"]["City"], "York");
    let (status, body) = oc
        .put(
            "/orders/Outgoing/SO-1/billto",
            &json!({"Street1": "x", "City": "Austin", "Country": "US"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "US needs State and Zip: {body}"
    );
    let (status, _) = oc.put("/orders/Outgoing/SO-1/shipto", &address).await;
    assert_eq!(status, StatusCode::OK);
    let (_, line) = oc
        .get(&format!("/orders/Outgoing/SO-1/lineitems/{line_id}"))
        .await;
    assert_eq!(line["ShippingAddress"]["Street1"], "1 High St");

    // Complete before submit is refused; submit decrements inventory.
    let (status, body) = oc
        .post("/orders/Outgoing/SO-1/complete", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["Errors"][0]["ErrorCode"],
        "Order.CannotCompleteBadStatus"
    );
    let (_, before) = oc.get("/products/WID2").await;
    let (status, order) = oc.post("/orders/Outgoing/SO-1/submit", &Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["Status"], "Open");
    assert_eq!(order["IsSubmitted"], true);
    assert!(order["DateSubmitted"].is_string());
    let (_, after) = oc.get("/products/WID2").await;
    assert_eq!(
        after["Inventory"]["QuantityAvailable"].as_i64(),
        before["Inventory"]["QuantityAvailable"]
            .as_i64()
            .map(|q| q - 1)
    );
    let (status, body) = oc.post("/orders/Outgoing/SO-1/submit", &Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["Errors"][0]["ErrorCode"],
        "Order.CannotSubmitBadStatus"
    );
    let (status, body) = oc.post("/orders/Outgoing/SO-1/cancel", &Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["Errors"][0]["ErrorCode"],
        "Order.CannotCancelInCurrentStatus"
    );
    let (status, order) = oc
        .post("/orders/Outgoing/SO-1/complete", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["Status"], "Completed");
    assert!(order["DateCompleted"].is_string());
    let (status, body) = oc.post("/orders/Outgoing/SO-1/ship", &json!({})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Order.CannotShipBadStatus");

    // Ship an open order; cancel an unsubmitted one.
    oc.order_with_lines("SO-2", &[("WID3", 1)]).await;
    oc.post("/orders/Outgoing/SO-2/submit", &Value::Null).await;
    let (status, order) = oc
        .post(
            "/orders/Outgoing/SO-2/ship",
            &json!({"TrackingNumber": "T1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{order}");
    assert_eq!(order["Status"], "Completed");
    let (_, lines) = oc.get("/orders/Outgoing/SO-2/lineitems").await;
    assert_eq!(lines["Items"][0]["QuantityShipped"], 1);
    let (_, shipments) = oc.get("/orders/Outgoing/SO-2/shipments").await;
    assert_eq!(shipments["Items"][0]["TrackingNumber"], "T1");
    oc.order_with_lines("SO-3", &[("WID3", 1)]).await;
    let (status, order) = oc.post("/orders/Outgoing/SO-3/cancel", &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(order["Status"], "Canceled");

    // 409 on an existing order ID; bad direction.
    let (status, _) = oc
        .post(
            "/orders/Outgoing",
            &json!({"ID": "SO-1", "FromUserID": "buyer01"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = oc.get("/orders/Sideways/SO-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn inventory_rules() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let (status, product) = oc
        .patch(
            "/products/WID4",
            &json!({"Inventory": {"QuantityAvailable": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{product}");
    assert_eq!(product["Inventory"]["QuantityAvailable"], 1);
    oc.order_with_lines("SO-INV", &[("WID4", 2)]).await;
    let (status, body) = oc
        .post("/orders/Outgoing/SO-INV/submit", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Inventory.Insufficient");
    oc.patch(
        "/products/WID4",
        &json!({"Inventory": {"OrderCanExceed": true}}),
    )
    .await;
    let (status, _) = oc
        .post("/orders/Outgoing/SO-INV/submit", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, product) = oc.get("/products/WID4").await;
    assert_eq!(product["Inventory"]["QuantityAvailable"], -1);

    let (status, body) = oc
        .patch(
            "/products/WID5",
            &json!({"Inventory": {"Enabled": false, "QuantityAvailable": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Product.InventoryDisabled");

    let (status, product) = oc
        .post(
            "/products",
            &json!({"ID": "NEW-1", "Name": "New", "xp": {"Price": 3}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{product}");
    let (status, _) = oc
        .post("/products", &json!({"ID": "NEW-1", "Name": "New"}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = oc.get("/products/NOPE").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn buyer_users() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let user = json!({"ID": "u1", "Username": "ann", "Password": "pw-123456", "FirstName": "Ann",
                      "LastName": "Lee", "Email": "ann@example.com", "Active": true, "xp": {"Tier": "gold"}});
    let (status, created) = oc.post("/buyers/BUYER1/users", &user).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["Password"], Value::Null);
    assert_eq!(created["CompanyID"], "BUYER1");
    let (status, body) = oc.post("/buyers/BUYER1/users", &user).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let mut other = user.clone();
    other["ID"] = json!("u2");
    let (status, body) = oc.post("/buyers/BUYER1/users", &other).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "User.UsernameMustBeUnique");
    let (status, body) = oc
        .post(
            "/buyers/BUYER1/users",
            &json!({"ID": "u3", "Username": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, patched) = oc
        .patch(
            "/buyers/BUYER1/users/u1",
            &json!({"LastName": "Li", "xp": {"Vip": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["LastName"], "Li");
    assert_eq!(patched["xp"], json!({"Tier": "gold", "Vip": true}));
    assert_eq!(patched["Password"], Value::Null);

    let mut replaced = user.clone();
    replaced["Email"] = json!("new@example.com");
    let (status, put) = oc.put("/buyers/BUYER1/users/u1", &replaced).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(put["Email"], "new@example.com");
    let (status, _) = oc
        .put(
            "/buyers/BUYER1/users/u9",
            &json!({"Username": "nine", "FirstName": "N",
        "LastName": "N", "Email": "n@example.com", "Active": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (status, got) = oc.get("/buyers/BUYER1/users/u1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["Password"], Value::Null);
    let (_, list) = oc.get("/buyers/BUYER1/users?Active=true&sortBy=!ID").await;
    let ids: Vec<&str> = list["Items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|u| u["ID"].as_str())
        .collect();
    assert_eq!(ids, ["u1", "buyer01"]);
    let (_, all) = oc.get("/buyerusers?search=ann").await;
    assert_eq!(all["Meta"]["TotalCount"], 1);
    let (status, _) = oc.get("/buyers/NOBUYER/users").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = oc.get("/buyers/BUYER1/users/ghost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn lists_filters_and_paging() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    for (id, product) in [("SO-A", "WID1"), ("SO-B", "WID6"), ("SO-C", "WID3")] {
        oc.order_with_lines(id, &[(product, 1)]).await;
        oc.patch(
            &format!("/orders/Outgoing/{id}"),
            &json!({"xp": {"Region": id.to_lowercase()}}),
        )
        .await;
    }
    oc.post("/orders/Outgoing/SO-A/submit", &Value::Null).await;
    oc.post("/orders/Outgoing/SO-B/submit", &Value::Null).await;

    // Submitted orders are the default list.
    let (_, list) = oc.get("/orders/Incoming").await;
    assert_eq!(list["Meta"]["TotalCount"], 2);
    let (_, list) = oc.get("/orders/Incoming?IsSubmitted=false").await;
    assert_eq!(list["Meta"]["TotalCount"], 1);
    assert_eq!(list["Items"][0]["ID"], "SO-C");
    let (status, body) = oc.get("/orders/Incoming?Status=Open|Unsubmitted").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["Errors"][0]["ErrorCode"],
        "Order.CannotMixSubmittedAndUnsubmitted"
    );

    let (_, list) = oc.get("/orders/All?Total=>100").await;
    assert_eq!(list["Items"][0]["ID"], "SO-B");
    assert_eq!(list["Meta"]["TotalCount"], 1);
    let (_, list) = oc.get("/orders/All?xp.Region=so-*&ID=!SO-A").await;
    assert_eq!(list["Items"][0]["ID"], "SO-B");
    let (_, list) = oc
        .get("/orders/All?FromUser.Email=buyer01*&sortBy=!Total&pageSize=1&page=2")
        .await;
    assert_eq!(list["Items"][0]["ID"], "SO-A");
    assert_eq!(list["Meta"]["ItemRange"], json!([2, 2]));
    assert_eq!(list["Meta"]["TotalPages"], 2);
    let (_, list) = oc.get("/orders/All?ID=SO-A|SO-B&ID=!SO-B").await;
    assert_eq!(list["Meta"]["TotalCount"], 1);

    let (_, list) = oc.get("/products?xp.TaxClass=zero&sortBy=ID").await;
    let ids: Vec<&str> = list["Items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["ID"].as_str())
        .collect();
    assert_eq!(ids, ["WID3", "WID4"]);
    let (_, list) = oc
        .get("/products?Inventory.QuantityAvailable=>0&search=deluxe")
        .await;
    assert_eq!(list["Items"][0]["ID"], "WID6");
    let (_, empty) = oc.get("/products?ID=none").await;
    assert_eq!(
        empty,
        json!({"Meta": {"Page": 1, "PageSize": 20, "TotalCount": 0, "TotalPages": 0, "ItemRange": [0, 0]}, "Items": []})
    );
}

#[tokio::test]
async fn payments() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    oc.order_with_lines("SO-P", &[("WID1", 1)]).await;
    let (status, payment) = oc
        .post(
            "/orders/Outgoing/SO-P/payments",
            &json!({"ID": "PAY1", "Type": "CreditCard", "Amount": 10, "Accepted": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{payment}");
    assert_eq!(payment["Transactions"], json!([]));
    let (status, _) = oc
        .post(
            "/orders/Outgoing/SO-P/payments",
            &json!({"ID": "PAY1", "Type": "CreditCard"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = oc
        .post("/orders/Outgoing/SO-P/payments", &json!({"Type": "Cash"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, payment) = oc
        .post(
            "/orders/Outgoing/SO-P/payments/PAY1/transactions",
            &json!({"Type": "Capture", "Amount": 10, "Succeeded": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(payment["Transactions"][0]["Succeeded"], true);
    let (_, list) = oc.get("/orders/Outgoing/SO-P/payments").await;
    assert_eq!(list["Meta"]["TotalCount"], 1);
    let (status, patched) = oc
        .patch(
            "/orders/Outgoing/SO-P/payments/PAY1",
            &json!({"Accepted": false}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["Accepted"], false);
}

fn integration_hook(url: &str) -> Value {
    json!({
        "ID": "hook1", "Name": "Ledgerbridge", "Url": url, "HashKey": "sim-hash-key-123",
        "ConfigData": {"tenant": "acme"}, "CustomAuthHeaderName": "X-Api-Key", "CustomAuthHeaderValue": "k-1",
        "WebhookRoutes": [
            {"Route": "v1/orders/{direction}/{orderID}/submit", "Verb": "POST"},
            {"Route": "v1/buyers/{buyerID}/users/{userID}", "Verb": "PATCH"},
            {"Route": "v1/buyers/{buyerID}/users", "Verb": "POST"},
            {"Route": "v1/orders/{direction}/{orderID}/payments", "Verb": "POST"}
        ]
    })
}

fn verify(received: &common::Received, key: &str) -> Value {
    let hash = received
        .headers
        .get("x-oc-hash")
        .and_then(|v| v.to_str().ok())
        .expect("X-oc-hash");
    assert_eq!(
        hash,
        oc_hash(key, &received.body),
        "signature over the raw body"
    );
    assert_eq!(
        received
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    serde_json::from_slice(&received.body).expect("JSON body")
}

#[tokio::test]
async fn webhook_crud() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let hook = integration_hook("http://127.0.0.1:9/hook");
    let (status, created) = oc.post("/webhooks", &hook).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["CustomAuthHeaderValue"], Value::Null, "write-only");
    assert_eq!(created["HashKey"], "sim-hash-key-123");
    let (status, _) = oc.post("/webhooks", &hook).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = oc
        .post(
            "/webhooks",
            &json!({"Name": "x", "Url": "ftp://x", "WebhookRoutes": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Webhook.UrlSchemeHttps");
    let (status, patched) = oc
        .patch("/webhooks/hook1", &json!({"Description": "d"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["Description"], "d");
    let (_, list) = oc.get("/webhooks").await;
    assert_eq!(list["Meta"]["TotalCount"], 1);
    let (status, _) = oc
        .put(
            "/webhooks/hook2",
            &integration_hook("https://example.invalid/x"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = oc.delete("/webhooks/hook1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = oc.get("/webhooks/hook1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn signed_webhook_delivery_for_submit_users_and_payments() {
    let receiver = start_receiver(0).await;
    let oc = ordercloud_session(fast_config()).await;
    let (status, _) = oc.post("/webhooks", &integration_hook(&receiver.url)).await;
    assert_eq!(status, StatusCode::CREATED);

    oc.order_with_lines("SO-1001", &[("WID1", 2)]).await;
    let (status, _) = oc
        .post("/orders/Outgoing/SO-1001/submit", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::CREATED);
    eventually("submit hook delivered", || receiver.received().len() == 1).await;
    let hit = &receiver.received()[0];
    let envelope = verify(hit, "sim-hash-key-123");
    assert_eq!(
        hit.headers.get("x-api-key").and_then(|v| v.to_str().ok()),
        Some("k-1")
    );
    assert_eq!(envelope["Route"], "v1/orders/{direction}/{orderID}/submit");
    assert_eq!(
        envelope["RouteParams"],
        json!({"direction": "Outgoing", "orderID": "SO-1001"})
    );
    assert_eq!(envelope["Verb"], "POST");
    assert_eq!(envelope["UserToken"], json!(oc.token));
    assert_eq!(envelope["ConfigData"], json!({"tenant": "acme"}));
    assert_eq!(envelope["Request"], json!({"Body": null, "Headers": null}));
    assert_eq!(envelope["Response"]["Body"]["Status"], "Open");
    assert_eq!(envelope["Response"]["Body"]["ID"], "SO-1001");
    assert_eq!(envelope["Response"]["Headers"], Value::Null);
    let date = envelope["Date"].as_str().expect("Date");
    assert!(
        date.ends_with("+00:00") && date.split('.').nth(1).is_some_and(|f| f.len() == 13),
        "{date}"
    );
    let log_id = envelope["LogID"].as_str().expect("LogID");
    assert!(uuid::Uuid::parse_str(log_id).is_ok());

    // Non-matching writes fire nothing; matching user and payment writes do.
    oc.patch("/orders/Outgoing/SO-1001", &json!({"xp": {"x": 1}}))
        .await;
    oc.patch("/buyers/BUYER1/users/buyer01", &json!({"Phone": "123"}))
        .await;
    oc.post(
        "/buyers/BUYER1/users",
        &json!({"ID": "u5", "Username": "u5", "FirstName": "U", "LastName": "V",
        "Email": "u5@example.com", "Active": true}),
    )
    .await;
    oc.post(
        "/orders/Outgoing/SO-1001/payments",
        &json!({"Type": "CreditCard", "Amount": 20, "Accepted": true}),
    )
    .await;
    eventually("three more hooks", || receiver.received().len() == 4).await;
    let routes: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| {
            verify(r, "sim-hash-key-123")["Route"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(routes.contains(&"v1/buyers/{buyerID}/users/{userID}".to_owned()));
    assert!(routes.contains(&"v1/buyers/{buyerID}/users".to_owned()));
    assert!(routes.contains(&"v1/orders/{direction}/{orderID}/payments".to_owned()));
    let patch_hit = receiver
        .received()
        .into_iter()
        .map(|r| verify(&r, "sim-hash-key-123"))
        .find(|e| e["Verb"] == "PATCH")
        .expect("PATCH hook");
    assert_eq!(patch_hit["Request"]["Body"], json!({"Phone": "123"}));
    assert_eq!(
        patch_hit["RouteParams"],
        json!({"buyerID": "BUYER1", "userID": "buyer01"})
    );

    // Failed writes fire nothing.
    oc.post("/orders/Outgoing/SO-1001/submit", &Value::Null)
        .await;
    let snapshot = oc.sandbox.sandbox().ordercloud.snapshot();
    assert_eq!(snapshot["Deliveries"].as_array().map(Vec::len), Some(4));
    assert!(snapshot["Deliveries"]
        .as_array()
        .expect("deliveries")
        .iter()
        .all(|d| d["state"] == "delivered"));
}

#[tokio::test]
async fn failed_deliveries_are_retried_and_recorded() {
    let receiver = start_receiver(2).await;
    let oc = ordercloud_session(fast_config()).await;
    oc.post("/webhooks", &integration_hook(&receiver.url)).await;
    oc.order_with_lines("SO-R", &[("WID1", 1)]).await;
    oc.post("/orders/Outgoing/SO-R/submit", &Value::Null).await;
    let ordercloud = &oc.sandbox.sandbox().ordercloud;
    eventually("delivered after retries", || {
        ordercloud
            .deliveries()
            .first()
            .is_some_and(|d| d.state == "delivered")
    })
    .await;
    let delivery = &ordercloud.deliveries()[0];
    let statuses: Vec<Option<u16>> = delivery.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert!(
        received.windows(2).all(|w| w[0].body == w[1].body),
        "retries resend the same bytes"
    );

    // Simulated send failures (no request leaves) are retried too.
    ordercloud.set_webhook_faults(WebhookFaults {
        fail_rate: 1.0,
        seed: Some(1),
        ..WebhookFaults::default()
    });
    oc.patch("/buyers/BUYER1/users/buyer01", &json!({"Phone": "1"}))
        .await;
    eventually("gave up", || {
        ordercloud
            .deliveries()
            .get(1)
            .is_some_and(|d| d.state == "failed")
    })
    .await;
    let failed = &ordercloud.deliveries()[1];
    assert_eq!(failed.attempts.len(), 5);
    assert!(failed
        .attempts
        .iter()
        .all(|a| a.status.is_none() && a.error.is_some()));
    assert_eq!(receiver.received().len(), 3);
}

#[tokio::test]
async fn duplicate_and_wrong_hash_faults() {
    let receiver = start_receiver(0).await;
    let mut config = fast_config();
    config.ordercloud.webhook_faults = WebhookFaults {
        duplicate_rate: 1.0,
        seed: Some(7),
        ..WebhookFaults::default()
    };
    let oc = ordercloud_session(config).await;
    oc.post("/webhooks", &integration_hook(&receiver.url)).await;
    oc.order_with_lines("SO-D", &[("WID1", 1)]).await;
    oc.post("/orders/Outgoing/SO-D/submit", &Value::Null).await;
    eventually("two copies", || receiver.received().len() == 2).await;
    let received = receiver.received();
    let first = verify(&received[0], "sim-hash-key-123");
    let second = verify(&received[1], "sim-hash-key-123");
    assert_eq!(first["LogID"], second["LogID"]);
    assert_eq!(received[0].body, received[1].body);

    let ordercloud = &oc.sandbox.sandbox().ordercloud;
    ordercloud.set_webhook_faults(WebhookFaults {
        wrong_hash_rate: 1.0,
        ..WebhookFaults::default()
    });
    oc.patch("/buyers/BUYER1/users/buyer01", &json!({"Phone": "1"}))
        .await;
    eventually("third", || receiver.received().len() == 3).await;
    let bad = &receiver.received()[2];
    let hash = bad
        .headers
        .get("x-oc-hash")
        .and_then(|v| v.to_str().ok())
        .expect("hash");
    assert_ne!(hash, oc_hash("sim-hash-key-123", &bad.body));
    assert!(ordercloud.deliveries()[2].wrong_hash);

    // Delays hold messages back; all still arrive.
    ordercloud.set_webhook_faults(WebhookFaults {
        delay_rate: 1.0,
        max_delay_ms: 30,
        ..WebhookFaults::default()
    });
    oc.patch("/buyers/BUYER1/users/buyer01", &json!({"Phone": "2"}))
        .await;
    eventually("fourth", || receiver.received().len() == 4).await;
    assert!(ordercloud.deliveries()[3].delayed_ms > 0);
}

#[tokio::test]
async fn webhooks_from_config_and_reset() {
    let receiver = start_receiver(0).await;
    let mut config = fast_config();
    config.ordercloud.webhooks = vec![WebhookSeed::integration("engine", &receiver.url, "cfg-key")];
    let oc = ordercloud_session(config).await;
    let (status, hook) = oc.get("/webhooks/engine").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hook["Url"], json!(receiver.url));
    oc.order_with_lines("SO-CFG", &[("WID2", 1)]).await;
    oc.post("/orders/Outgoing/SO-CFG/submit", &Value::Null)
        .await;
    eventually("configured hook fired", || receiver.received().len() == 1).await;
    verify(&receiver.received()[0], "cfg-key");
    // A payment and its transaction fire the integration hook too.
    let payment = json!({"ID": "PAY-1", "Type": "CreditCard", "Amount": 12.5, "Accepted": true});
    let (status, _) = oc.post("/orders/Outgoing/SO-CFG/payments", &payment).await;
    assert_eq!(status, StatusCode::CREATED);
    let transaction = json!({"ID": "T1", "Type": "Capture", "Amount": 12.5, "Succeeded": true});
    let (status, _) = oc
        .post(
            "/orders/Outgoing/SO-CFG/payments/PAY-1/transactions",
            &transaction,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    eventually("payment and transaction hooks fired", || {
        receiver.received().len() == 3
    })
    .await;
    let routes: Vec<Value> = receiver
        .received()
        .iter()
        .map(|d| serde_json::from_slice::<Value>(&d.body).expect("json")["Route"].clone())
        .collect();
    assert!(
        routes.contains(&json!(
            "v1/orders/{direction}/{orderID}/payments/{paymentID}/transactions"
        )),
        "{routes:?}"
    );

    oc.sandbox.sandbox().ordercloud.reset();
    let snapshot = oc.sandbox.sandbox().ordercloud.snapshot();
    assert_eq!(snapshot["Orders"], json!([]));
    assert_eq!(snapshot["Deliveries"], json!([]));
    assert_eq!(snapshot["Webhooks"].as_array().map(Vec::len), Some(1));
    let (status, _) = oc.get("/products").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "reset forgets tokens");
}

#[tokio::test]
async fn pre_hook_can_block_a_write() {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/pre",
        post(|| async { axum::Json(json!({"proceed": false, "body": {"reason": "blocked"}})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let hook = json!({"ID": "pre", "Name": "pre", "Url": format!("http://{addr}/pre"), "BeforeProcessRequest": true,
        "WebhookRoutes": [{"Route": "v1/orders/{direction}/{orderID}/submit", "Verb": "POST"}]});
    oc.post("/webhooks", &hook).await;
    oc.order_with_lines("SO-PRE", &[("WID1", 1)]).await;
    let (status, body) = oc
        .post("/orders/Outgoing/SO-PRE/submit", &Value::Null)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["Data"], json!({"reason": "blocked"}));
    let (_, order) = oc.get("/orders/Outgoing/SO-PRE").await;
    assert_eq!(order["Status"], "Unsubmitted");
}

#[tokio::test]
async fn hooks_fire_only_for_listed_api_clients() {
    let receiver = start_receiver(0).await;
    let oc = ordercloud_session(fast_config()).await;
    let added = oc.sandbox.sandbox().ordercloud.add_webhook(&WebhookSeed {
        api_client_ids: vec!["nobody".to_owned()],
        ..WebhookSeed::integration("", &receiver.url, "k")
    });
    assert_eq!(added, "webhook-1");
    let (status, _) = oc.get("/webhooks/webhook-1").await;
    assert_eq!(status, StatusCode::OK);
    let mut hook = integration_hook(&receiver.url);
    hook["ApiClientIDs"] = json!(["some-other-client"]);
    oc.post("/webhooks", &hook).await;
    let mut listed = integration_hook(&receiver.url);
    listed["ID"] = json!("hook2");
    listed["ApiClientIDs"] = json!(["ledgerbridge-sim-client"]);
    oc.post("/webhooks", &listed).await;
    oc.patch("/buyers/BUYER1/users/buyer01", &json!({"Phone": "9"}))
        .await;
    let ordercloud = &oc.sandbox.sandbox().ordercloud;
    eventually("listed hook delivered", || {
        ordercloud
            .deliveries()
            .iter()
            .any(|d| d.state == "delivered")
    })
    .await;
    let deliveries = ordercloud.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].subscription, "hook2");
    assert_eq!(deliveries[0].headers["X-Api-Key"], "<redacted>");
}

#[tokio::test]
async fn contract_details_last_updated_not_found_data_and_token_errors() {
    let oc = ordercloud_session(SandboxConfig::default()).await;
    let order = oc.order_with_lines("SO-LU", &[("WID1", 1)]).await;
    let before = order["LastUpdated"]
        .as_str()
        .expect("LastUpdated")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (status, patched) = oc
        .patch("/orders/Outgoing/SO-LU", &json!({"Comments": "later"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let after = patched["LastUpdated"].as_str().expect("LastUpdated");
    assert!(after > before.as_str(), "{before} -> {after}");

    // 404s name the object; 409s use IdExists.
    let (status, body) = oc.get("/orders/Outgoing/SO-LU/lineitems/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        body["Errors"][0]["Data"],
        json!({"ObjectType": "LineItem", "ObjectID": "nope"})
    );
    let (status, body) = oc.get("/buyers/BUYER1/users/ghost").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["Errors"][0]["Data"]["ObjectType"], "User");
    let (status, body) = oc
        .post(
            "/orders/Outgoing",
            &json!({"ID": "SO-LU", "FromUserID": "buyer01"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["Errors"][0]["ErrorCode"], "IdExists");
    let (status, body) = oc
        .post(
            "/orders/Outgoing/SO-LU/lineitems",
            &json!({"ProductID": "WID1", "Quantity": 3_000_000_000_i64}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "Quantity is a 32-bit int");
    assert_eq!(body["Errors"][0]["ErrorCode"], "ValidationFailure");

    // Token endpoint errors keep the OAuth fields and the Errors list.
    let url = format!("{}/oauth/token", oc.base);
    for (form, code) in [
        (
            vec![
                ("grant_type", "magic"),
                ("client_id", "ledgerbridge-sim-client"),
            ],
            "Request.InvalidGrantType",
        ),
        (
            vec![
                ("grant_type", "client_credentials"),
                ("client_id", "nobody"),
            ],
            "ApiClient.InvalidClientID",
        ),
        (
            vec![
                ("grant_type", "password"),
                ("client_id", "ledgerbridge-storefront"),
            ],
            "Auth.UsernameAndPasswordRequired",
        ),
    ] {
        let (status, body) =
            status_and_json(oc.client.post(&url).form(&form).send().await.expect("sent")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"].is_string(), "{body}");
        assert_eq!(body["Errors"][0]["ErrorCode"], code);
    }
}

/// The reference's `X-oc-hash` test vector, through the public function the
/// simulator signs every delivery with (deliveries are checked against it above).
#[test]
fn oc_hash_reproduces_the_reference_test_vector() {
    let body = r#"{"Route":"v1/orders/{direction}/{orderID}/submit","RouteParams":{"direction":"Outgoing","orderID":"SO-1001"},"Verb":"POST"}"#;
    assert_eq!(body.len(), 123);
    assert_eq!(
        oc_hash("sim-hash-key-123", body.as_bytes()),
        "ZG9XFQs1bvtppWMcyCe1kP3Lb+xUU03bq1xjaJXfW70="
    );
}

fn config_with_variants(variant_level_tracking: bool) -> SandboxConfig {
    let mut config = SandboxConfig::default();
    config.ordercloud.products.push(ProductSeed {
        id: "TEE".to_owned(),
        name: "Widget Tee".to_owned(),
        price: rust_decimal::Decimal::new(1500, 2),
        tax_class: "standard".to_owned(),
        inventory_enabled: true,
        quantity_available: 0,
        order_can_exceed: false,
        variant_level_tracking,
        variants: ["S", "M", "L"]
            .iter()
            .map(|size| VariantSeed {
                id: format!("TEE-{size}"),
                name: format!("Widget Tee, size {size}"),
                quantity_available: 10,
            })
            .collect(),
    });
    config
}

#[tokio::test]
async fn variants_and_their_inventory() {
    let oc = ordercloud_session(config_with_variants(true)).await;
    let (_, product) = oc.get("/products/TEE").await;
    assert_eq!(product["VariantCount"], 3);
    assert_eq!(product["Inventory"]["VariantLevelTracking"], true);

    let (status, list) = oc.get("/products/TEE/variants?sortBy=!ID").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["Meta"]["TotalCount"], 3);
    assert_eq!(list["Items"][0]["ID"], "TEE-S");
    let keys: Vec<&str> = list["Items"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        keys.contains(&"Inventory") && keys.contains(&"xp"),
        "{keys:?}"
    );

    let (status, variant) = oc
        .patch(
            "/products/TEE/variants/TEE-M",
            &json!({"Inventory": {"QuantityAvailable": 4}, "xp": {"Colour": "red"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{variant}");
    assert_eq!(variant["Inventory"]["QuantityAvailable"], 4);
    assert!(variant["Inventory"]["LastUpdated"].is_string());
    let (_, again) = oc.get("/products/TEE/variants/TEE-M").await;
    assert_eq!(again["Inventory"]["QuantityAvailable"], 4);
    assert_eq!(again["xp"]["Colour"], "red");
    assert_eq!(again["Name"], "Widget Tee, size M");

    let (status, body) = oc
        .patch(
            "/products/TEE/variants/TEE-M",
            &json!({"Inventory": {"QuantityAvailable": 1.5}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, body) = oc.get("/products/TEE/variants/TEE-XL").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["Errors"][0]["ErrorCode"], "NotFound");
    let (status, _) = oc.get("/products/NOPE/variants").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) = oc.get("/products/WID1/variants").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["Meta"]["TotalCount"], 0);

    // Without variant-level tracking a variant's stock cannot be set.
    let (status, body) = oc
        .patch(
            "/products/TEE",
            &json!({"Inventory": {"VariantLevelTracking": false}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = oc
        .patch(
            "/products/TEE/variants/TEE-S",
            &json!({"Inventory": {"QuantityAvailable": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["Errors"][0]["ErrorCode"], "Product.InventoryDisabled");
    // Other fields still change.
    let (status, _) = oc
        .patch("/products/TEE/variants/TEE-S", &json!({"Active": false}))
        .await;
    assert_eq!(status, StatusCode::OK);
}
