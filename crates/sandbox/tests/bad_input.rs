//! Bad input never panics: every write route of every simulator (and the
//! control API) gets malformed, mistyped and out-of-range bodies, and odd
//! paths and queries; each request must get an answer (a panicking handler
//! would drop the connection), never a 5xx, and every error body must be in
//! the service's own error format.

mod common;

use common::{kashflow_login, ordercloud_token, start};
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Bodies sent to every write route.
const BODIES: &[&[u8]] = &[
    b"",
    b"{not json",
    b"null",
    b"[]",
    b"\"text\"",
    b"42",
    b"{}",
    b"\xff\xfe\x00garbage",
    b"{\"ID\": 5, \"Code\": {}, \"Name\": [1], \"Number\": \"x\", \"LineItems\": \"no\", \"PaymentLines\": {}, \"xp\": 3}",
    b"{\"ID\": \"../../etc\", \"Code\": \"\", \"Name\": \"\", \"Number\": -1, \"Quantity\": -5, \"Amount\": -1}",
    b"{\"Number\": 1e999, \"Quantity\": 1e999, \"Rate\": 1e999, \"Amount\": 1e999, \"amount\": 1e999, \"UnitPrice\": 1e999}",
    b"{\"Number\": 99999999999999999999999, \"Amount\": 79228162514264337593543950335, \"amount\": 9223372036854775807, \"fee\": 9223372036854775807}",
    b"{\"CustomerCode\": \"C\", \"LineItems\": [{\"Quantity\": 79228162514264337593543950335, \"Rate\": 79228162514264337593543950335, \"VATLevel\": 20, \"NominalCode\": 4000}]}",
    b"{\"ProductID\": \"WID1\", \"Quantity\": 9223372036854775807, \"UnitPrice\": 79228162514264337593543950335}",
    b"{\"Quantity\": 0.5, \"VATLevel\": \"twenty\", \"Date\": \"yesterday\", \"IssuedDate\": \"2025-13-45 99:99:99\"}",
    b"{\"Inventory\": {\"QuantityAvailable\": 1e40, \"Enabled\": \"yes\"}, \"xp\": {\"a\": null}}",
    b"{\"Identifiers\": [{\"Source\": 1, \"Identifier\": null}], \"PersonalInformation\": 7}",
    b"{\"amount\": -1, \"currency\": 5, \"payment_intent\": [], \"metadata\": \"x\"}",
    b"{\"WebhookRoutes\": [{\"Route\": null, \"Verb\": 3}], \"Url\": \"http://[::1\", \"HashKey\": 5}",
    b"{\"PaymentItems\": [{\"ObjectNumber\": -9223372036854775808, \"Amount\": 1e308}], \"AccountId\": \"one\"}",
    b"{\"MemorableWordList\": [{\"Position\": -1, \"Value\": \"abc\"}, {\"Position\": 99999999999}], \"TemporaryToken\": 5, \"UserName\": [], \"Password\": {}}",
];

const CONTENT_TYPES: &[&str] = &["application/json", "text/plain"];

#[derive(Clone, Copy)]
enum Shape {
    KashFlow,
    OrderCloud,
    OAuth,
    XConnect,
    Gateway,
    Control,
}

fn shape_problem(shape: Shape, body: &Value) -> Option<String> {
    let ok = match shape {
        Shape::KashFlow => body["Error"].is_string() && body["Message"].is_string(),
        Shape::OrderCloud => {
            body["Errors"][0]["ErrorCode"].is_string()
                && body["Errors"][0]["Message"].is_string()
                && body["Errors"][0].get("Data").is_some()
        }
        Shape::OAuth => {
            body["Errors"][0]["ErrorCode"].is_string()
                && (body.get("error").is_none() || body["error"].is_string())
        }
        Shape::XConnect | Shape::Control => {
            body["error"]["code"].is_string() && body["error"]["message"].is_string()
        }
        Shape::Gateway => {
            body["error"]["type"].is_string()
                && body["error"]["code"].is_string()
                && body["error"]["message"].is_string()
        }
    };
    (!ok).then(|| format!("error body not in the service's format: {body}"))
}

struct Sweep {
    client: reqwest::Client,
    problems: Vec<String>,
    requests: usize,
}

impl Sweep {
    async fn check(
        &mut self,
        shape: Shape,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Option<(&str, &[u8])>,
    ) {
        self.requests += 1;
        let mut request = self.client.request(method.clone(), url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header("Content-Type", content_type)
                .body(bytes.to_vec());
        }
        let shown_body = body
            .map(|(ct, b)| format!(" [{ct}] {}", String::from_utf8_lossy(b)))
            .unwrap_or_default();
        let what = format!("{method} {url}{shown_body}");
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => {
                self.problems.push(format!("{what}: no answer ({err})"));
                return;
            }
        };
        let status = response.status();
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(err) => {
                self.problems
                    .push(format!("{what}: {status}, body cut off ({err})"));
                return;
            }
        };
        if status.is_server_error() {
            self.problems.push(format!(
                "{what}: {status} {}",
                String::from_utf8_lossy(&bytes)
            ));
            return;
        }
        if status.is_success() || status == StatusCode::NO_CONTENT {
            return;
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(json) => {
                if let Some(problem) = shape_problem(shape, &json) {
                    self.problems.push(format!("{what}: {status} {problem}"));
                }
            }
            Err(_) => self.problems.push(format!(
                "{what}: {status} body is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )),
        }
    }

    /// Every body with every content type to `method url`.
    async fn bodies(
        &mut self,
        shape: Shape,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
    ) {
        for content_type in CONTENT_TYPES {
            for body in BODIES {
                self.check(
                    shape,
                    method.clone(),
                    url,
                    headers,
                    Some((content_type, body)),
                )
                .await;
            }
        }
    }
}

#[tokio::test]
async fn no_route_panics_or_answers_5xx_on_bad_input() {
    let config = SandboxConfig::default();
    let sandbox = start(config.clone()).await;
    let client = common::client();
    let mut sweep = Sweep {
        client: client.clone(),
        problems: Vec::new(),
        requests: 0,
    };

    // KashFlow: set up a customer and an invoice so keyed routes exist.
    let kf = sandbox.kashflow_url();
    let token = kashflow_login(&client, &kf, &config).await;
    let kf_auth = [("Authorization", format!("KfToken {token}"))];
    let setup = [
        ("/customers", r#"{"Code":"C","Name":"C"}"#),
        (
            "/invoices",
            r#"{"CustomerCode":"C","LineItems":[{"Quantity":1,"Rate":1,"VATLevel":20,"NominalCode":4000}]}"#,
        ),
        (
            "/invoices/bulk/payments",
            r#"{"AccountId":1,"Method":1,"PaymentItems":[{"ObjectNumber":1,"Amount":0.5}]}"#,
        ),
    ];
    for (path, body) in setup {
        let response = client
            .post(format!("{kf}{path}"))
            .header("Authorization", format!("KfToken {token}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("setup sent");
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
    }
    for (method, path) in [
        (Method::POST, "/sessiontoken"),
        (Method::PUT, "/sessiontoken"),
        (Method::POST, "/customers"),
        (Method::PUT, "/customers/C"),
        (Method::POST, "/invoices"),
        (Method::PUT, "/invoices/1"),
        (Method::POST, "/invoices/bulk/payments"),
        (Method::POST, "/products"),
        (Method::PUT, "/products/4000/WID2"),
        (Method::POST, "/nominals"),
    ] {
        sweep
            .bodies(Shape::KashFlow, method, &format!("{kf}{path}"), &kf_auth)
            .await;
    }
    for path in [
        "/customers?page=0",
        "/customers?page=99999999999999999999999",
        "/customers?perpage=-1",
        "/customers?perpage=100000000",
        "/customers?sortby=99&order=sideways",
        "/customers?sortby=&order=",
        "/invoices?issuedatefrom=yesterday&issuedateto=2025-02-30",
        "/invoices?statusfilter=Maybe&customercode=%FF%FE",
        "/invoices?page=2&perpage=1&page=3",
        "/invoices/99999999999999999999999",
        "/invoices/-1",
        "/invoices/1.5",
        "/invoices/%20",
        "/invoices/bulk/payments/abc",
        "/invoices/bulk/payments/99999999999999999999",
        "/customers/%00",
        "/customers/%E2%82%AC",
        "/products/abc/WID1",
        "/products/4000/",
        "/products/99999999999999999999/WID1",
        "/nominals/abc",
        "/nominals/abc/products",
        "/nominals?type=%FF",
        "/countries/vatrates?date=notadate",
        "/paymentmethods/purchase",
        "/paymentmethods/%2F..",
        "/bankaccounts/abc",
        "/bankaccounts/-5",
        "/taxes?type=nonsense",
        "//customers",
        "/customers/C/extra/segments",
        "/customers/%FF",
        "/invoices/%FF",
        "/products/%FF/%FE",
        "/nominals/%FF/products",
        "/paymentmethods/%FF",
        "/bankaccounts/%FF",
    ] {
        sweep
            .check(
                Shape::KashFlow,
                Method::GET,
                &format!("{kf}{path}"),
                &kf_auth,
                None,
            )
            .await;
    }
    for path in [
        "/customers/%00",
        "/invoices/abc",
        "/invoices/bulk/payments/-1",
        "/products/x/y",
        "/sessiontoken/not-a-guid",
    ] {
        sweep
            .check(
                Shape::KashFlow,
                Method::DELETE,
                &format!("{kf}{path}"),
                &kf_auth,
                None,
            )
            .await;
    }
    for header in ["KfToken", "KfToken ", "KfToken %FF", "kftoken x y z", ""] {
        sweep
            .check(
                Shape::KashFlow,
                Method::GET,
                &format!("{kf}/customers"),
                &[("Authorization", header.to_owned())],
                None,
            )
            .await;
    }

    // OrderCloud.
    let oc = sandbox.ordercloud_url();
    for content_type in [
        "application/x-www-form-urlencoded",
        "application/json",
        "multipart/form-data",
    ] {
        for body in BODIES.iter().copied().chain([
            &b"grant_type=client_credentials"[..],
            b"grant_type=password&client_id=ledgerbridge-storefront",
            b"grant_type=refresh_token&client_id=ledgerbridge-sim-client&refresh_token=",
            b"grant_type=magic&client_id=x",
            b"grant_type=client_credentials&client_id=%FF&client_secret=%",
            b"grant_type=client_credentials&grant_type=password",
        ]) {
            sweep
                .check(
                    Shape::OAuth,
                    Method::POST,
                    &format!("{oc}/oauth/token"),
                    &[],
                    Some((content_type, body)),
                )
                .await;
        }
    }
    let bearer = ordercloud_token(&client, &oc).await;
    let oc_auth = [("Authorization", format!("Bearer {bearer}"))];
    let v1 = format!("{oc}/v1");
    for (path, body) in [
        ("/orders/Outgoing", r#"{"ID":"O1","FromUserID":"buyer01"}"#),
        (
            "/orders/Outgoing/O1/lineitems",
            r#"{"ID":"L1","ProductID":"WID1","Quantity":1}"#,
        ),
        ("/orders/Outgoing", r#"{"ID":"O2","FromUserID":"buyer01"}"#),
        (
            "/orders/Outgoing/O2/lineitems",
            r#"{"ID":"L2","ProductID":"WID1","Quantity":1}"#,
        ),
        (
            "/orders/Outgoing/O2/payments",
            r#"{"ID":"P1","Type":"CreditCard","Amount":1}"#,
        ),
    ] {
        let response = client
            .post(format!("{v1}{path}"))
            .bearer_auth(&bearer)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("setup sent");
        assert_eq!(response.status(), StatusCode::CREATED, "{path}");
    }
    for (method, path) in [
        (Method::POST, "/orders/Outgoing"),
        (Method::PATCH, "/orders/Outgoing/O1"),
        (Method::PUT, "/orders/Outgoing/O1/billto"),
        (Method::PATCH, "/orders/Outgoing/O1/billto"),
        (Method::PUT, "/orders/Outgoing/O1/shipto"),
        (Method::PATCH, "/orders/Outgoing/O1/shipto"),
        (Method::POST, "/orders/Outgoing/O1/lineitems"),
        (Method::PATCH, "/orders/Outgoing/O1/lineitems/L1"),
        (Method::PUT, "/orders/Outgoing/O1/lineitems/L1/shipto"),
        (Method::PATCH, "/orders/Outgoing/O1/lineitems/L1/shipto"),
        (Method::POST, "/orders/Outgoing/O2/payments"),
        (Method::PATCH, "/orders/Outgoing/O2/payments/P1"),
        (Method::POST, "/orders/Outgoing/O2/payments/P1/transactions"),
        (Method::POST, "/buyers/BUYER1/users"),
        (Method::PATCH, "/buyers/BUYER1/users/buyer01"),
        (Method::PUT, "/buyers/BUYER1/users/buyer01"),
        (Method::POST, "/products"),
        (Method::PATCH, "/products/WID2"),
        (Method::PUT, "/products/WID3"),
        (Method::POST, "/webhooks"),
        (Method::PUT, "/webhooks/h1"),
        (Method::PATCH, "/webhooks/h1"),
        // Action routes take no body (ship takes a Shipment); last, as they change status.
        (Method::POST, "/orders/Outgoing/O2/ship"),
        (Method::POST, "/orders/Outgoing/O2/complete"),
        (Method::POST, "/orders/Outgoing/O2/cancel"),
        (Method::POST, "/orders/Outgoing/O1/submit"),
    ] {
        sweep
            .bodies(Shape::OrderCloud, method, &format!("{v1}{path}"), &oc_auth)
            .await;
    }
    for path in [
        "/orders/Incoming?page=0",
        "/orders/Incoming?page=-1",
        "/orders/Incoming?page=99999999999999999999999",
        "/orders/Incoming?pageSize=0",
        "/orders/Incoming?pageSize=abc",
        "/orders/All?sortBy=!",
        "/orders/All?sortBy=,,,!!x",
        "/orders/All?search=&searchOn=&searchType=Nonsense",
        "/orders/All?xp.=1&.=2&xp..a=3",
        "/orders/All?Total=>abc&Total=<&DateCreated=>notadate",
        "/orders/All?ID=****&ID=|||&ID=!",
        "/orders/All?ID=%FF%FE",
        "/orders/All?%FF=1",
        "/orders/All?a=1&a=2&a=3&a=4",
        "/orders/Sideways",
        "/orders/Outgoing/%00",
        "/orders/Outgoing/O1/lineitems/nope",
        "/orders/Outgoing/nope/lineitems",
        "/orders/Outgoing/O1/payments/nope",
        "/buyers/%20/users",
        "/buyerusers?pageSize=101",
        "/products/%E2%82%AC",
        "/products?Inventory.QuantityAvailable=>x",
        "/shipments?orderID=nope",
        "/webhooks/nope",
        "/v1/v1/orders",
        "/orders/%FF",
        "/orders/Outgoing/%FF",
        "/orders/Outgoing/O1/lineitems/%FF",
        "/buyers/%FF/users/%FE",
        "/products/%FF",
        "/webhooks/%FF",
    ] {
        sweep
            .check(
                Shape::OrderCloud,
                Method::GET,
                &format!("{v1}{path}"),
                &oc_auth,
                None,
            )
            .await;
    }
    for header in ["Bearer", "Bearer ", "bearer x", "Basic abc", "Bearer %FF"] {
        sweep
            .check(
                Shape::OrderCloud,
                Method::GET,
                &format!("{v1}/products"),
                &[("Authorization", header.to_owned())],
                None,
            )
            .await;
    }
    sweep
        .check(
            Shape::OrderCloud,
            Method::DELETE,
            &format!("{v1}/orders/Outgoing/O1/lineitems/nope"),
            &oc_auth,
            None,
        )
        .await;
    sweep
        .check(
            Shape::OrderCloud,
            Method::DELETE,
            &format!("{v1}/webhooks/nope"),
            &oc_auth,
            None,
        )
        .await;

    // xConnect.
    let xc = sandbox.xconnect_url();
    sweep
        .bodies(
            Shape::XConnect,
            Method::POST,
            &format!("{xc}/contacts"),
            &[],
        )
        .await;
    sweep
        .bodies(
            Shape::XConnect,
            Method::PATCH,
            &format!("{xc}/contacts/nope"),
            &[],
        )
        .await;
    for path in [
        "/contacts?source=&identifier=",
        "/contacts?source=a",
        "/contacts?identifier=%FF",
        "/contacts/%00",
        "/contacts/%FF",
        "/nothing",
    ] {
        sweep
            .check(
                Shape::XConnect,
                Method::GET,
                &format!("{xc}{path}"),
                &[],
                None,
            )
            .await;
    }

    // Gateway.
    let gw = sandbox.gateway_url();
    let gw_auth = [("Authorization", "Bearer sk_test_sim".to_owned())];
    for path in [
        "/v1/payment_intents",
        "/v1/refunds",
        "/v1/payouts",
        "/v1/webhook_endpoints",
    ] {
        sweep
            .bodies(
                Shape::Gateway,
                Method::POST,
                &format!("{gw}{path}"),
                &gw_auth,
            )
            .await;
        for content_type in ["application/x-www-form-urlencoded"] {
            for body in [
                &b"amount=abc&currency=gbp"[..],
                b"amount=-5&currency=",
                b"amount=9223372036854775807&currency=gbp&fee=9223372036854775807",
                b"amount=1&metadata[=x&metadata]=y&metadata[a][b]=c",
                b"%FF%FE=%",
                b"payment_intent=pi_nope&amount=1",
                b"url=not a url",
            ] {
                sweep
                    .check(
                        Shape::Gateway,
                        Method::POST,
                        &format!("{gw}{path}"),
                        &gw_auth,
                        Some((content_type, body)),
                    )
                    .await;
            }
        }
    }
    for path in [
        "/v1/payment_intents/%00",
        "/v1/refunds/nope",
        "/v1/payouts/%FF",
        "/v1/payouts/nope",
        "/v1/events?limit=-1&starting_after=%FF",
        "/v1/nothing",
    ] {
        sweep
            .check(
                Shape::Gateway,
                Method::GET,
                &format!("{gw}{path}"),
                &gw_auth,
                None,
            )
            .await;
    }

    // Control API.
    let control = sandbox.control_url();
    // Setting KashFlow stock answers in KashFlow's format.
    sweep
        .bodies(
            Shape::KashFlow,
            Method::POST,
            &format!("{control}/kashflow/stock"),
            &[],
        )
        .await;
    for (method, path) in [
        (Method::PUT, "/faults"),
        (Method::POST, "/faults/rules"),
        (Method::PUT, "/ordercloud/webhook-faults"),
        (Method::PATCH, "/gateway/webhook-faults"),
    ] {
        sweep
            .bodies(Shape::Control, method, &format!("{control}{path}"), &[])
            .await;
    }
    for path in [
        "/nothing",
        "/kashflow/webhook-faults",
        "/%FF",
        "/%FF/webhook-faults",
    ] {
        sweep
            .check(
                Shape::Control,
                Method::GET,
                &format!("{control}{path}"),
                &[],
                None,
            )
            .await;
    }

    // The sandbox still serves after all that.
    let response = client
        .get(format!("{kf}/currencies"))
        .header("Authorization", format!("KfToken {token}"))
        .send()
        .await
        .expect("still serving");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(sweep.requests > 1000, "{} requests", sweep.requests);
    assert!(
        sweep.problems.is_empty(),
        "{} of {} requests misbehaved:\n{}",
        sweep.problems.len(),
        sweep.requests,
        sweep.problems.join("\n")
    );
}
