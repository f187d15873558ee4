//! xConnect simulator over real HTTP: create, duplicate identifier 409,
//! lookup by identifier, get and patch facets.

mod common;

use common::{start, status_and_json};
use ledgerbridge_sandbox::SandboxConfig;
use reqwest::StatusCode;
use serde_json::{json, Value};

#[tokio::test]
async fn contacts_by_identifier() {
    let sandbox = start(SandboxConfig::default()).await;
    let client = common::client();
    let base = sandbox.xconnect_url();
    let contact = json!({
        "Identifiers": [{"Source": "ordercloud", "Identifier": "buyer01"}],
        "PersonalInformation": {"FirstName": "Bea", "LastName": "Buyer"},
        "Emails": {"PreferredKey": "Home", "Home": {"SmtpAddress": "bea@example.com"}}
    });
    let (status, created) = status_and_json(
        client
            .post(format!("{base}/contacts"))
            .json(&contact)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["Id"].as_str().expect("Id").to_owned();
    assert_eq!(created["PersonalInformation"]["FirstName"], "Bea");
    let identifiers = created["Identifiers"].as_array().expect("identifiers");
    assert!(
        identifiers
            .iter()
            .any(|i| i["IdentifierType"] == "Anonymous"),
        "alias added"
    );

    let (status, conflict) = status_and_json(
        client
            .post(format!("{base}/contacts"))
            .json(&contact)
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(conflict["error"]["code"], "AlreadyExists");
    assert_eq!(conflict["error"]["existingContactId"], json!(id));

    let (status, found) = status_and_json(
        client
            .get(format!(
                "{base}/contacts?source=ordercloud&identifier=buyer01"
            ))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(found["Id"], json!(id));
    let (status, missing) = status_and_json(
        client
            .get(format!(
                "{base}/contacts?source=ordercloud&identifier=nobody"
            ))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["error"]["code"], "NotFound");

    let (status, patched) = status_and_json(
        client
            .patch(format!("{base}/contacts/{id}"))
            .json(&json!({"PersonalInformation": {"JobTitle": "Buyer"},
                          "Identifiers": [{"Source": "kashflow", "Identifier": "CUST-1"}]}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        patched["PersonalInformation"],
        json!({"FirstName": "Bea", "LastName": "Buyer", "JobTitle": "Buyer"})
    );
    let (status, by_new) = status_and_json(
        client
            .get(format!("{base}/contacts?source=kashflow&identifier=CUST-1"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_new["Id"], json!(id));

    let (status, got) = status_and_json(
        client
            .get(format!("{base}/contacts/{id}"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["PersonalInformation"]["JobTitle"], "Buyer");
    let (status, _) = status_and_json(
        client
            .get(format!("{base}/contacts/nope"))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, body) = status_and_json(
        client
            .post(format!("{base}/contacts"))
            .header("Content-Type", "application/json")
            .body("{bad")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].is_string());
    let (status, _) = status_and_json(
        client
            .post(format!("{base}/contacts"))
            .json(&json!({"Identifiers": []}))
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    sandbox.sandbox().xconnect.reset();
    assert_eq!(
        sandbox.sandbox().xconnect.snapshot()["contacts"],
        Value::Array(vec![])
    );
}
