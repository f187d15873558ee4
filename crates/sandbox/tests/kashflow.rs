//! The KashFlow simulator over real HTTP: login, expiry, customers,
//! invoices (totals, VAT rounding), payments, bulk payments, reference data,
//! pagination and error bodies.

mod common;

use common::{kashflow_login, kashflow_session, num, status_and_json};
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["Error"], code, "{body}");
    assert!(
        body["Message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

fn widget_invoice(customer: &str, reference: &str) -> Value {
    json!({
        "CustomerCode": customer,
        "IssuedDate": "2025-03-01 00:00:00",
        "DueDate": "2025-03-31 00:00:00",
        "CustomerReference": reference,
        "Currency": {"Code": "GBP"},
        "LineItems": [{
            "Description": "Widget", "Quantity": 2, "Rate": 12.5, "VATLevel": 20,
            "VATAmount": 5.0, "VATExempt": false, "NominalCode": 4000,
            "ProductCode": "WID1", "ProjectNumber": 0
        }]
    })
}

#[tokio::test]
async fn login_needs_the_right_memorable_word_characters() {
    let config = SandboxConfig::default();
    let sandbox = common::start(config.clone()).await;
    let client = common::client();
    let base = sandbox.kashflow_url();

    // Wrong password: 400 InvalidCredentials.
    let (status, body) = status_and_json(
        client
            .post(format!("{base}/sessiontoken"))
            .json(&json!({"UserName": "sim", "Password": "nope"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "InvalidCredentials");

    // Lower-case keys work; three distinct 1-based positions come back.
    let (status, step1) = status_and_json(
        client
            .post(format!("{base}/sessiontoken"))
            .json(&json!({"username": "sim", "password": "sim-password"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{step1}");
    let positions: Vec<u64> = step1["MemorableWordList"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            assert_eq!(e["Value"], "");
            e["Position"].as_u64().expect("position")
        })
        .collect();
    assert_eq!(positions.len(), 3);
    assert!(positions.iter().all(|p| (1..=9).contains(p)));
    assert_eq!(step1["IsAdmin"], true);
    assert_eq!(step1["PackageName"], "Business");
    let guid = step1["TemporaryToken"].as_str().expect("token");
    assert_eq!(guid.len(), 36);

    // Wrong characters: 400.
    let wrong: Vec<Value> = positions
        .iter()
        .map(|p| json!({"Position": p, "Value": "z"}))
        .collect();
    let (status, body) = status_and_json(
        client
            .put(format!("{base}/sessiontoken"))
            .json(&json!({"TemporaryToken": guid, "MemorableWordList": wrong}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "InvalidMemorableWord",
    );

    // Right characters, upper case: a session that works.
    let word: Vec<char> = "PINEAPPLE".chars().collect();
    let right: Vec<Value> = positions
        .iter()
        .map(|p| json!({"position": p, "value": word[*p as usize - 1].to_string()}))
        .collect();
    let (status, step2) = status_and_json(
        client
            .put(format!("{base}/sessiontoken"))
            .json(&json!({"temporarytoken": guid, "memorablewordlist": right}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{step2}");
    assert_eq!(step2["CompanyName"], "Sim Ltd");
    let token = step2["SessionToken"].as_str().expect("session token");

    // No header, a bad header, a good header.
    let (status, body) = status_and_json(
        client
            .get(format!("{base}/currencies"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "InvalidSessionToken",
    );
    assert_eq!(body["Message"], "Session token provided is invalid.");
    let (status, _) = status_and_json(
        client
            .get(format!("{base}/currencies"))
            .header("Authorization", "Bearer abc")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = status_and_json(
        client
            .get(format!("{base}/currencies"))
            .header("Authorization", format!("KfToken {}", token.to_lowercase()))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Logout ends the session.
    let (status, body) = status_and_json(
        client
            .delete(format!("{base}/sessiontoken/{token}"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, _) = status_and_json(
        client
            .get(format!("{base}/currencies"))
            .header("Authorization", format!("KfToken {token}"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn account_locks_after_configured_failures() {
    let mut config = SandboxConfig::default();
    config.kashflow.lock_after_failures = 2;
    let sandbox = common::start(config).await;
    let client = common::client();
    let url = format!("{}/sessiontoken", sandbox.kashflow_url());
    for expected in ["InvalidCredentials", "AccountLocked", "AccountLocked"] {
        let (status, body) = status_and_json(
            client
                .post(&url)
                .json(&json!({"UserName": "sim", "Password": "bad"}))
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(body["Error"], expected, "{body}");
        let want = if expected == "AccountLocked" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        assert_eq!(status, want);
    }
}

#[tokio::test]
async fn sessions_expire_by_ttl_and_by_force() {
    // A zero idle lifetime: the session is already expired at its first use.
    let mut config = SandboxConfig::default();
    config.kashflow.session_ttl_secs = 0;
    let session = kashflow_session(config).await;
    let (status, body) = session.get("/currencies").await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "InvalidSessionToken",
    );

    // Forced expiry through the control API.
    let session = kashflow_session(SandboxConfig::default()).await;
    assert_eq!(session.get("/currencies").await.0, StatusCode::OK);
    let control = format!("{}/kashflow/expire-sessions", session.sandbox.control_url());
    let (status, body) =
        status_and_json(session.client.post(control).send().await.expect("sent")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["expired"], 1);
    let (status, body) = session.get("/currencies").await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "InvalidSessionToken",
    );
    // Logging in again works.
    let config = SandboxConfig::default();
    let token = kashflow_login(&session.client, &session.base, &config).await;
    assert!(!token.is_empty());
}

#[tokio::test]
async fn temporary_token_expires() {
    let mut config = SandboxConfig::default();
    config.kashflow.temp_token_ttl_secs = 0;
    let sandbox = common::start(config).await;
    let client = common::client();
    let base = sandbox.kashflow_url();
    let (_, step1) = status_and_json(
        client
            .post(format!("{base}/sessiontoken"))
            .json(&json!({"UserName": "sim", "Password": "sim-password"}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    let word: Vec<char> = "pineapple".chars().collect();
    let answers: Vec<Value> = step1["MemorableWordList"]
        .as_array()
        .expect("list")
        .iter()
        .map(|e| {
            let p = e["Position"].as_u64().expect("position") as usize;
            json!({"Position": p, "Value": word[p - 1].to_string()})
        })
        .collect();
    let (status, body) = status_and_json(
        client
            .put(format!("{base}/sessiontoken"))
            .json(&json!({"TemporaryToken": step1["TemporaryToken"], "MemorableWordList": answers}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "InvalidTemporaryToken",
    );
}

#[tokio::test]
async fn customers_crud_codes_and_filters() {
    let session = kashflow_session(SandboxConfig::default()).await;

    // Generated code, expanded currency, zero aggregates, dates.
    let first = session
        .create_customer(json!({"name": "Ada Lovelace", "contacts": [{"firstname": "Ada", "Email": "ada@example.com"}],
            "Addresses": [{"Line1": "1 Analytical St", "CountryCode": "GB"}]}))
        .await;
    assert_eq!(first["Code"], "SIMC0001");
    assert_eq!(first["Name"], "Ada Lovelace");
    assert_eq!(first["Currency"]["Code"], "GBP");
    assert_eq!(first["Currency"]["Symbol"], "£");
    assert_eq!(num(&first["OutstandingBalance"]), 0.0);
    assert_eq!(first["InvoiceCount"], 0);
    assert_eq!(first["Contacts"][0]["Firstname"], "Ada");
    assert_eq!(first["Addresses"][0]["CountryName"], "United Kingdom");
    assert_eq!(first["FirstInvoiceDate"], "1900-01-01 12:00:00");
    let created = first["CreatedDate"].as_str().expect("CreatedDate");
    assert_eq!(created.len(), 19, "{created}");
    assert!(first["Id"].as_i64().is_some());

    // Explicit code; duplicate 400 unless CreateCustomerCodeIfDuplicate.
    session
        .create_customer(json!({"Code": "ACME", "Name": "Acme Ltd", "VatNumber": "GB123"}))
        .await;
    let (status, body) = session
        .post("/customers", &json!({"Code": "ACME", "Name": "Acme again"}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "DuplicateCustomerCode",
    );
    let other = session
        .create_customer(
            json!({"Code": "ACME", "Name": "Acme again", "CreateCustomerCodeIfDuplicate": true}),
        )
        .await;
    assert_ne!(other["Code"], "ACME");

    // Name required unless CreateCustomerNameIfEmptyOrNull.
    let (status, body) = session.post("/customers", &json!({"Code": "NONAME"})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    session
        .create_customer(json!({"Code": "NONAME", "CreateCustomerNameIfEmptyOrNull": 1}))
        .await;

    // Get, 404.
    let (status, acme) = session.get("/customers/ACME").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(acme["VATNumber"], "GB123");
    let (status, body) = session.get("/customers/NOPE").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NotFound");

    // PUT merges; LastUpdatedDate moves; code change answers 201.
    let (status, updated) = session
        .put("/customers/ACME", &json!({"Note": "good payer"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["Name"], "Acme Ltd");
    assert_eq!(updated["Note"], "good payer");
    assert!(updated["LastUpdatedDate"].as_str() >= acme["LastUpdatedDate"].as_str());
    let (status, renamed) = session
        .put("/customers/ACME", &json!({"Code": "ACME2"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{renamed}");
    assert_eq!(
        session.get("/customers/ACME").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(session.get("/customers/ACME2").await.0, StatusCode::OK);

    // Filters.
    let (_, found) = session.get("/customers?searchtext=lovelace").await;
    assert_eq!(found["MetaData"]["TotalRecords"], 1);
    assert_eq!(found["Data"][0]["Code"], "SIMC0001");
    let (_, found) = session.get("/customers?NameStartsWith=acme").await;
    assert_eq!(found["MetaData"]["TotalRecords"], 2);
    let (_, found) = session
        .get("/customers?lastupdatedfrom=2000-01-01&sortby=LastUpdatedDate&order=desc")
        .await;
    assert_eq!(found["Data"][0]["Code"], "ACME2");

    // Delete 204, then 404.
    let (status, _) = session.delete("/customers/ACME2").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        session.delete("/customers/ACME2").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_input_answers_kashflow_400_bodies() {
    let session = kashflow_session(SandboxConfig::default()).await;
    let (status, body) = session.post_raw("/customers", "{not json").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    let (status, body) = session.post_raw("/customers", "").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    let (status, body) = session.post("/customers", &json!({"Name": 42})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    assert!(
        body["Message"].as_str().is_some_and(|m| m.contains("Name")),
        "{body}"
    );
    let (status, body) = session
        .post(
            "/invoices",
            &json!({"CustomerCode": "X", "LineItems": [{"Quantity": "lots"}]}),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    assert!(
        body["Message"]
            .as_str()
            .is_some_and(|m| m.contains("Quantity")),
        "{body}"
    );
    let (status, body) = session.post("/invoices", &json!({})).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    let (status, body) = session.get("/invoices?page=zero").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    let (status, body) = session.get("/invoices?sortby=colour").await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "ValidationError");
    // Unknown route and wrong method: JSON too.
    let (status, body) = session.get("/no/such/route").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NotFound");
    let (status, body) = session.delete("/currencies").await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
    );
    let (status, body) = session.get("/invoices/abc").await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NotFound");
}

#[tokio::test]
async fn invoices_totals_vat_numbers_and_filters() {
    let session = kashflow_session(SandboxConfig::default()).await;
    session
        .create_customer(json!({"Code": "SIMC0001", "Name": "Ada", "Addresses": [{"Line1": "1 St", "CountryCode": "GB"}]}))
        .await;

    // §10's example body.
    let invoice = session
        .create_invoice(widget_invoice("SIMC0001", "ORDER-1042"))
        .await;
    assert_eq!(invoice["Number"], 1);
    assert_eq!(num(&invoice["NetAmount"]), 25.0);
    assert_eq!(num(&invoice["VATAmount"]), 5.0);
    assert_eq!(num(&invoice["GrossAmount"]), 30.0);
    assert_eq!(invoice["Status"], "Unpaid");
    assert_eq!(num(&invoice["TotalPaidAmount"]), 0.0);
    assert_eq!(invoice["PaidDate"], Value::Null);
    assert_eq!(invoice["IssuedDate"], "2025-03-01 00:00:00");
    assert_eq!(invoice["LineItems"][0]["Number"], 1);
    assert_eq!(invoice["LineItems"][0]["ProductName"], "Widget");
    assert_eq!(invoice["PaymentLines"], json!([]));
    assert_eq!(invoice["Address"]["Line1"], "1 St");
    assert!(invoice["Permalink"]
        .as_str()
        .is_some_and(|p| p.starts_with("/v2/documents/invoice/")));

    // Missing VATAmount: round(Q*R*L/100, 2) half away from zero; D's 17.5% example shape.
    let mut body = widget_invoice("SIMC0001", "ORDER-1043");
    body["LineItems"] = json!([
        {"Description": "a", "Quantity": 1, "Rate": 0.125, "VATLevel": 20, "NominalCode": 4000},
        {"Description": "b", "Quantity": 3, "Rate": 1.15, "VATLevel": 5, "NominalCode": 4000},
        {"Description": "c", "Quantity": 1, "Rate": 10, "VATExempt": 1, "NominalCode": 4000}
    ]);
    let invoice = session.create_invoice(body).await;
    // a: 0.125*0.20 = 0.025 -> 0.03; b: 3.45*0.05 = 0.1725 -> 0.17.
    assert_eq!(num(&invoice["LineItems"][0]["VATAmount"]), 0.03);
    assert_eq!(num(&invoice["LineItems"][1]["VATAmount"]), 0.17);
    assert_eq!(num(&invoice["LineItems"][2]["VATAmount"]), 0.0);
    assert_eq!(invoice["LineItems"][2]["VATExempt"], true);
    // Net 0.125 + 3.45 + 10 = 13.575 -> 13.58.
    assert_eq!(num(&invoice["NetAmount"]), 13.58);
    assert_eq!(num(&invoice["VATAmount"]), 0.20);
    assert_eq!(num(&invoice["GrossAmount"]), 13.78);
    assert_eq!(invoice["LineItems"][2]["Number"], 3);

    // Explicit Number used if free, 400 if taken; auto numbering continues after it.
    let mut body = widget_invoice("SIMC0001", "ORDER-1044");
    body["Number"] = json!(1044);
    assert_eq!(session.create_invoice(body.clone()).await["Number"], 1044);
    let (status, err) = session.post("/invoices", &body).await;
    assert_error(
        status,
        &err,
        StatusCode::BAD_REQUEST,
        "DuplicateInvoiceNumber",
    );
    let next = session
        .create_invoice(widget_invoice("SIMC0001", "ORDER-1045"))
        .await;
    assert_eq!(next["Number"], 1045);

    // Validation: unknown customer, nominal, VAT level, currency.
    let (status, err) = session
        .post("/invoices", &widget_invoice("NOBODY", "x"))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "UnknownCustomer");
    let mut body = widget_invoice("SIMC0001", "x");
    body["LineItems"][0]["NominalCode"] = json!(9999);
    body["LineItems"][0]["ProductCode"] = json!("");
    let (status, err) = session.post("/invoices", &body).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "UnknownNominalCode");
    let mut body = widget_invoice("SIMC0001", "x");
    body["LineItems"][0]["VATLevel"] = json!(17.5);
    let (status, err) = session.post("/invoices", &body).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "InvalidVATLevel");
    let mut body = widget_invoice("SIMC0001", "x");
    body["Currency"] = json!({"Code": "XYZ"});
    let (status, err) = session.post("/invoices", &body).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "UnknownCurrency");

    // Dates in: offset, ISO with T, date-only.
    let mut body = widget_invoice("SIMC0001", "ORDER-DATES");
    body["IssuedDate"] = json!("2025-04-01T10:00:00+01:00");
    body["DueDate"] = json!("2025-05-01");
    let invoice = session.create_invoice(body).await;
    assert_eq!(invoice["IssuedDate"], "2025-04-01 09:00:00");
    assert_eq!(invoice["DueDate"], "2025-05-01 00:00:00");

    // List items omit lines and payments; filters.
    let (status, list) = session.get("/invoices?searchtext=ORDER-1042").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["MetaData"]["TotalRecords"], 1);
    assert_eq!(list["Data"][0]["CustomerReference"], "ORDER-1042");
    assert!(list["Data"][0].get("LineItems").is_none());
    assert!(list["Data"][0].get("PaymentLines").is_none());
    let (_, list) = session
        .get("/invoices?customercode=SIMC0001&statusfilter=Unpaid")
        .await;
    assert_eq!(list["MetaData"]["TotalRecords"], 5);
    let (_, list) = session
        .get("/invoices?issuedatefrom=2025-04-01&issuedateto=2025-04-30T23:59:59")
        .await;
    assert_eq!(list["MetaData"]["TotalRecords"], 1);
    let (_, list) = session.get("/invoices?sortby=5&order=DESC").await;
    assert_eq!(num(&list["Data"][0]["GrossAmount"]), 30.0);

    // PUT replaces lines; Number change answers 201; DELETE 204 then 404.
    let (status, updated) = session
        .put("/invoices/1", &json!({"LineItems": [{"Description": "One", "Quantity": 1, "Rate": 100, "VATLevel": 20}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(num(&updated["GrossAmount"]), 120.0);
    assert_eq!(updated["LineItems"].as_array().map(Vec::len), Some(1));
    assert_eq!(updated["CustomerReference"], "ORDER-1042");
    let (status, moved) = session.put("/invoices/1", &json!({"Number": 5000})).await;
    assert_eq!(status, StatusCode::CREATED, "{moved}");
    assert_eq!(session.get("/invoices/1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        session.delete("/invoices/5000").await.0,
        StatusCode::NO_CONTENT
    );
    let (status, err) = session.delete("/invoices/5000").await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "NotFound");

    // The customer's aggregates follow its invoices; it cannot be deleted now.
    let (_, customer) = session.get("/customers/SIMC0001").await;
    assert_eq!(customer["InvoiceCount"], 4);
    let (status, err) = session.delete("/customers/SIMC0001").await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "CustomerHasInvoices");
}

#[tokio::test]
async fn payments_partial_full_over_and_refunded() {
    let session = kashflow_session(SandboxConfig::default()).await;
    session
        .create_customer(json!({"Code": "C1", "Name": "Payer"}))
        .await;
    let invoice = session
        .create_invoice(widget_invoice("C1", "ORDER-1"))
        .await;
    let number = invoice["Number"].as_i64().expect("number");
    let path = format!("/invoices/{number}");

    // Partial.
    let (status, partial) = session
        .put(&path, &json!({"PaymentLines": [{"Date": "2025-03-02 00:00:00", "Amount": 10.0, "Method": 1, "AccountId": 1, "Note": "part"}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{partial}");
    assert_eq!(partial["Status"], "Unpaid");
    assert_eq!(num(&partial["TotalPaidAmount"]), 10.0);
    assert_eq!(num(&partial["DueAmount"]), 20.0);
    assert_eq!(partial["LastPaymentDate"], "2025-03-02 00:00:00");
    let first_id = partial["PaymentLines"][0]["Id"].clone();
    assert!(partial["PaymentLines"][0]["Permalink"]
        .as_str()
        .is_some_and(|p| p.starts_with("/v2/documents/invoice/payment/")));

    // Keep the first (by Id), add the rest: Paid, PaidDate = clearing payment's date.
    let (status, paid) = session
        .put(
            &path,
            &json!({"PaymentLines": [
                {"Id": first_id},
                {"Date": "2025-03-05 00:00:00", "Amount": 20.0, "Method": 2, "AccountId": 1}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{paid}");
    assert_eq!(paid["Status"], "Paid");
    assert_eq!(paid["PaidDate"], "2025-03-05 00:00:00");
    assert_eq!(num(&paid["DueAmount"]), 0.0);
    assert_eq!(paid["PaymentLines"][0]["Id"], first_id);
    let (_, list) = session.get("/invoices?statusfilter=paid").await;
    assert_eq!(list["MetaData"]["TotalRecords"], 1);

    // Overpayment accepted.
    let (status, over) = session
        .put(&path, &json!({"PaymentLines": [{"Amount": 50, "Method": 1, "AccountId": 1, "Date": "2025-03-01"}]}))
        .await;
    assert_eq!(status, StatusCode::OK, "{over}");
    assert_eq!(over["Status"], "Paid");
    assert_eq!(num(&over["DueAmount"]), -20.0);

    // A refund made outside KashFlow: a negative line flagged IsExternalRefund.
    let over_id = over["PaymentLines"][0]["Id"].clone();
    let (status, refunded) = session
        .put(
            &path,
            &json!({"PaymentLines": [
                {"Id": over_id},
                {"Amount": -25.0, "Method": 1, "AccountId": 1, "Date": "2025-03-06", "Reference": "re_1", "IsExternalRefund": true}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refunded}");
    assert_eq!(refunded["Status"], "Unpaid");
    assert_eq!(num(&refunded["TotalPaidAmount"]), 25.0);
    assert_eq!(num(&refunded["DueAmount"]), 5.0);
    assert_eq!(refunded["PaymentLines"][1]["IsExternalRefund"], true);
    assert_eq!(refunded["PaymentLines"][1]["Reference"], "re_1");

    // Unknown method / account / payment id: 400.
    for (payment, code) in [
        (
            json!({"Amount": 1, "Method": 99, "AccountId": 1}),
            "UnknownPaymentMethod",
        ),
        (
            json!({"Amount": 1, "Method": 1, "AccountId": 99}),
            "UnknownBankAccount",
        ),
        (json!({"Id": 424242, "Amount": 1}), "UnknownPayment"),
        (json!({"Method": 1}), "ValidationError"),
    ] {
        let (status, err) = session
            .put(&path, &json!({"PaymentLines": [payment]}))
            .await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, code);
    }

    // Payments on create.
    let mut body = widget_invoice("C1", "ORDER-2");
    body["PaymentLines"] = json!([{"Date": "2025-03-02 00:00:00", "Amount": 30.0, "Method": 1, "AccountId": 1, "Note": "Order 2"}]);
    let created = session.create_invoice(body).await;
    assert_eq!(created["Status"], "Paid");
    assert_eq!(
        created["PaymentLines"][0]["InvoiceNumber"],
        created["Number"]
    );

    // Customer totals: paid 50 - 25 + 30, outstanding 60 - 55.
    let (_, customer) = session.get("/customers/C1").await;
    assert_eq!(num(&customer["TotalPaidAmount"]), 55.0);
    assert_eq!(num(&customer["OutstandingBalance"]), 5.0);
}

#[tokio::test]
async fn bulk_payments_pay_several_invoices() {
    let session = kashflow_session(SandboxConfig::default()).await;
    session
        .create_customer(json!({"Code": "C1", "Name": "Payer"}))
        .await;
    let a = session.create_invoice(widget_invoice("C1", "A")).await["Number"].clone();
    let b = session.create_invoice(widget_invoice("C1", "B")).await["Number"].clone();
    let (status, bulk) = session
        .post("/invoices/bulk/payments", &json!({
            "Date": "2025-03-10 00:00:00", "AccountId": 1, "Method": 1, "Comment": "batch",
            "PaymentItems": [{"ObjectNumber": a, "Amount": 30.0}, {"ObjectNumber": b, "Amount": 12.5}]
        }))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bulk}");
    let bulk_number = bulk["Number"].as_i64().expect("Number");
    assert!(bulk["PaymentItems"][0]["Id"].as_i64().is_some());
    assert!(bulk["PaymentItems"][1]["Id"].as_i64().is_some());

    let (_, first) = session.get(&format!("/invoices/{a}")).await;
    assert_eq!(first["Status"], "Paid");
    assert_eq!(first["PaidDate"], "2025-03-10 00:00:00");
    assert_eq!(first["PaymentLines"][0]["BulkPaymentNumber"], bulk_number);
    let (_, second) = session.get(&format!("/invoices/{b}")).await;
    assert_eq!(second["Status"], "Unpaid");
    assert_eq!(num(&second["DueAmount"]), 17.5);

    let (status, fetched) = session
        .get(&format!("/invoices/bulk/payments/{bulk_number}"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fetched["Comment"], "batch");

    // An unknown invoice rejects the whole batch.
    let (status, err) = session
        .post("/invoices/bulk/payments", &json!({
            "AccountId": 1, "Method": 1,
            "PaymentItems": [{"ObjectNumber": b, "Amount": 1}, {"ObjectNumber": 999, "Amount": 1}]
        }))
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "UnknownInvoice");
    let (_, second) = session.get(&format!("/invoices/{b}")).await;
    assert_eq!(second["PaymentLines"].as_array().map(Vec::len), Some(1));

    // Deleting the bulk payment takes its payments back off.
    let (status, _) = session
        .delete(&format!("/invoices/bulk/payments/{bulk_number}"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, first) = session.get(&format!("/invoices/{a}")).await;
    assert_eq!(first["Status"], "Unpaid");
    assert_eq!(first["PaymentLines"], json!([]));
}

#[tokio::test]
async fn pagination_envelope_keeps_the_query() {
    let session = kashflow_session(SandboxConfig::default()).await;
    for i in 0..5 {
        session
            .create_customer(json!({"Code": format!("P{i}"), "Name": format!("Pager {i}")}))
            .await;
    }
    let (status, page) = session
        .get("/customers?namestartswith=Pager&perpage=2&page=2&sortby=Code")
        .await;
    assert_eq!(status, StatusCode::OK);
    let meta = &page["MetaData"];
    assert_eq!(meta["TotalRecords"], 5);
    assert_eq!(page["Data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["Data"][0]["Code"], "P2");
    let base = session.url("/customers");
    assert_eq!(
        meta["NextPageUrl"],
        format!("{base}?namestartswith=Pager&perpage=2&page=3&sortby=Code")
    );
    assert_eq!(
        meta["PreviousPageUrl"],
        format!("{base}?namestartswith=Pager&perpage=2&page=1&sortby=Code")
    );
    assert_eq!(
        meta["LastPageUrl"],
        format!("{base}?namestartswith=Pager&perpage=2&page=3&sortby=Code")
    );
    // Following NextPageUrl verbatim reaches the last page, whose NextPageUrl is null.
    let next = meta["NextPageUrl"].as_str().expect("next").to_owned();
    let response = session
        .client
        .get(next)
        .header("Authorization", format!("KfToken {}", session.token))
        .send()
        .await
        .expect("sent");
    let (_, last) = status_and_json(response).await;
    assert_eq!(last["Data"].as_array().map(Vec::len), Some(1));
    assert_eq!(last["MetaData"]["NextPageUrl"], Value::Null);
    // Descending by name.
    let (_, desc) = session
        .get("/customers?namestartswith=pager&sortby=0&order=desc")
        .await;
    assert_eq!(desc["Data"][0]["Name"], "Pager 4");
    // First page without page parameter: no PreviousPageUrl.
    let (_, first) = session.get("/customers?perpage=2").await;
    assert_eq!(first["MetaData"]["PreviousPageUrl"], Value::Null);
    assert_eq!(
        first["MetaData"]["FirstPageUrl"],
        format!("{base}?perpage=2&page=1")
    );
}

#[tokio::test]
async fn reference_data_and_products_with_stock() {
    let session = kashflow_session(SandboxConfig::default()).await;

    let (status, nominals) = session.get("/nominals").await;
    assert_eq!(status, StatusCode::OK);
    let sales = nominals
        .as_array()
        .expect("bare array")
        .iter()
        .find(|n| n["Code"] == 4000)
        .expect("4000")
        .clone();
    assert_eq!(sales["Id"], 11);
    assert_eq!(sales["Name"], "Sales");
    assert_eq!(num(&sales["VATRate"]), 20.0);
    let (status, one) = session.get("/nominals/4000").await;
    assert_eq!(
        (status, one["Name"].clone()),
        (StatusCode::OK, json!("Sales"))
    );
    assert_eq!(session.get("/nominals/1").await.0, StatusCode::NOT_FOUND);
    let (_, filtered) = session.get("/nominals?type=purchases").await;
    assert_eq!(filtered.as_array().map(Vec::len), Some(1));

    let (_, products) = session.get("/products").await;
    assert!(products["MetaData"]["TotalRecords"].as_u64() >= Some(1));
    let (status, widget) = session.get("/products/4000/WID1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(widget["Id"], 5);
    assert_eq!(num(&widget["Price"]), 12.5);
    assert_eq!(widget["NominalId"], 11);
    let (_, under) = session.get("/nominals/4000/products").await;
    assert!(under
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["Code"] == "WID1")));
    let (_, all) = session.get("/products/list").await;
    assert!(all.as_array().is_some());

    // Stock: invoicing a stock-managed product reduces it; the control API sets it.
    let stock_before = num(&widget["QuantityInStock"]);
    session
        .create_customer(json!({"Code": "C1", "Name": "Stock"}))
        .await;
    session.create_invoice(widget_invoice("C1", "S1")).await;
    let (_, widget) = session.get("/products/4000/WID1").await;
    assert_eq!(num(&widget["QuantityInStock"]), stock_before - 2.0);
    let control = format!("{}/kashflow/stock", session.sandbox.control_url());
    let (status, body) = status_and_json(
        session
            .client
            .post(&control)
            .json(&json!({"Code": "WID1", "QuantityInStock": 7}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, widget) = session.get("/products/4000/WID1").await;
    assert_eq!(num(&widget["QuantityInStock"]), 7.0);
    let (status, _) = status_and_json(
        session
            .client
            .post(&control)
            .json(&json!({"Code": "NOPE", "QuantityInStock": 7}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Product CRUD.
    let (status, created) = session
        .post("/products", &json!({"Code": "NEW1", "Name": "New", "NominalCode": 4000, "Price": 3.5, "ManageStockLevel": true, "QuantityInStock": 4}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _) = session
        .put("/products/4000/NEW1", &json!({"Price": 4}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = session.delete("/products/4000/NEW1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, err) = session.get("/products/4000/NEW1").await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "NotFound");

    // Nominal create, get-or-create.
    let (status, _) = session
        .post(
            "/nominals",
            &json!({"Code": 4050, "Name": "Services", "VATRate": 20}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, existing) = session
        .post(
            "/nominals",
            &json!({"Code": 4000, "Name": "x", "CreateWhenNotPresent": true}),
        )
        .await;
    assert_eq!(
        (status, existing["Name"].clone()),
        (StatusCode::OK, json!("Sales"))
    );

    // VAT rates, taxes, currencies, payment methods, bank accounts.
    let (_, rates) = session.get("/vat/settings/vatrates").await;
    let rates: Vec<f64> = rates
        .as_array()
        .expect("bare array")
        .iter()
        .map(|r| num(&r["VATRate"]))
        .collect();
    assert_eq!(rates, vec![0.0, 5.0, 20.0]);
    let (_, taxes) = session.get("/taxes?type=supply").await;
    assert!(taxes["Tax"].as_array().is_some_and(|t| !t.is_empty()));
    let (_, currencies) = session.get("/currencies").await;
    assert_eq!(currencies[0]["Code"], "GBP");
    assert_eq!(currencies[0]["Name"], "British Pounds");
    assert_eq!(currencies[0]["DisplaySymbolOnRight"], false);
    let (_, methods) = session.get("/paymentmethods/invoice").await;
    assert_eq!(methods[0], json!({"Id": 1, "Name": "Card"}));
    let (_, banks) = session.get("/bankaccounts").await;
    assert_eq!(banks[0]["Code"], 1200);
    assert_eq!(banks[0]["IsDefaultAccount"], true);
    let (status, bank) = session.get("/bankaccounts/1").await;
    assert_eq!(
        (status, bank["AccountName"].clone()),
        (StatusCode::OK, json!("Current Account"))
    );
    let (_, countries) = session.get("/countries/vatrates?date=20250301").await;
    assert_eq!(countries, json!({}));
}

#[tokio::test]
async fn reset_and_snapshot_through_control_api() {
    let session = kashflow_session(SandboxConfig::default()).await;
    session
        .create_customer(json!({"Code": "C1", "Name": "Snap"}))
        .await;
    let control = session.sandbox.control_url();
    let (status, state) = status_and_json(
        session
            .client
            .get(format!("{control}/kashflow"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["Customers"][0]["Code"], "C1");
    assert_eq!(state["Sessions"]["ActiveSessions"], 1);
    let (status, all) = status_and_json(
        session
            .client
            .get(format!("{control}/state"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(all.get("kashflow").is_some() && all.get("faults").is_some());
    let (status, _) = status_and_json(
        session
            .client
            .post(format!("{control}/reset"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Reset also ends sessions.
    assert_eq!(session.get("/customers").await.0, StatusCode::UNAUTHORIZED);
    let (_, state) = status_and_json(
        session
            .client
            .get(format!("{control}/kashflow"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(state["Customers"], json!([]));
}

#[tokio::test]
async fn list_defaults_caps_date_offsets_and_header_logout() {
    let mut config = SandboxConfig::default();
    config.kashflow.default_per_page = 2;
    config.kashflow.max_per_page = 3;
    config.kashflow.dates_with_offset = true;
    let session = kashflow_session(config.clone()).await;
    for i in 0..5 {
        session
            .create_customer(json!({"Code": format!("L{i}"), "Name": format!("List {i}")}))
            .await;
    }
    let (status, page) = session.get("/customers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["Data"].as_array().map(Vec::len), Some(2), "default");
    assert_eq!(page["MetaData"]["TotalRecords"], 5);
    let (_, page) = session.get("/customers?perpage=100").await;
    assert_eq!(page["Data"].as_array().map(Vec::len), Some(3), "capped");

    // Dates go out with " +00:00"; input with an offset is still read.
    let created = page["Data"][0]["CreatedDate"]
        .as_str()
        .expect("CreatedDate");
    assert!(created.ends_with(" +00:00"), "{created}");
    let invoice = session
        .create_invoice(
            json!({"CustomerCode": "L0", "IssuedDate": "2025-03-01 00:00:00 +00:00",
            "LineItems": [{"Quantity": 1, "Rate": 1, "VATLevel": 0, "NominalCode": 4000}]}),
        )
        .await;
    assert_eq!(invoice["IssuedDate"], "2025-03-01 00:00:00 +00:00");

    // DELETE /sessiontoken with the session header logs out too.
    let (status, body) = session.delete("/sessiontoken").await;
    assert_eq!((status, body), (StatusCode::OK, json!({})));
    let (status, body) = session.get("/customers").await;
    assert_error(
        status,
        &body,
        StatusCode::UNAUTHORIZED,
        "InvalidSessionToken",
    );
}

#[tokio::test]
async fn invoice_pages_see_writes_made_between_them() {
    let session = kashflow_session(SandboxConfig::default()).await;
    session
        .create_customer(json!({"Code": "PAGE1", "Name": "Pager"}))
        .await;
    for i in 0..5 {
        session
            .create_invoice(widget_invoice("PAGE1", &format!("R-{i}")))
            .await;
    }
    let list = "/invoices?customercode=PAGE1&perpage=2";
    let (_, first) = session.get(&format!("{list}&page=1")).await;
    assert_eq!(first["MetaData"]["TotalRecords"], 5);
    assert_eq!(num(&first["MetaData"]["TotalAmount"]), 150.0);
    let (_, third) = session.get(&format!("{list}&page=3")).await;
    assert_eq!(third["Data"].as_array().map(Vec::len), Some(1));

    // A new invoice: the next page of the same query counts and lists it.
    let added = session
        .create_invoice(widget_invoice("PAGE1", "R-added"))
        .await;
    let (_, third) = session.get(&format!("{list}&page=3")).await;
    assert_eq!(third["MetaData"]["TotalRecords"], 6);
    assert_eq!(num(&third["MetaData"]["TotalAmount"]), 180.0);
    assert_eq!(third["Data"][1]["Number"], added["Number"]);

    // A changed invoice: its new reference shows on a page already read.
    let number = first["Data"][0]["Number"].as_i64().expect("number");
    let mut body = widget_invoice("PAGE1", "R-changed");
    body["Number"] = json!(number);
    let (status, _) = session.put(&format!("/invoices/{number}"), &body).await;
    assert_eq!(status, StatusCode::OK);
    let (_, first) = session.get(&format!("{list}&page=1")).await;
    assert_eq!(first["Data"][0]["CustomerReference"], "R-changed");

    // A deleted invoice leaves the count and the pages.
    let (status, _) = session.delete(&format!("/invoices/{number}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, first) = session.get(&format!("{list}&page=1")).await;
    assert_eq!(first["MetaData"]["TotalRecords"], 5);
    assert_ne!(first["Data"][0]["Number"], json!(number));
}
