use serde_json::json;

use super::*;

#[test]
fn create_body_has_the_documented_shape() {
    let contact = NewContact {
        source: "ordercloud",
        identifier: "buyer01",
        first_name: "Ada",
        last_name: "Lovelace",
        email: Some("ada@example.com"),
    };
    let body = wire::create_body(&contact);
    assert_eq!(
        body["Identifiers"],
        json!([{"Source": "ordercloud", "Identifier": "buyer01", "IdentifierType": "Known"}])
    );
    assert_eq!(
        body["PersonalInformation"],
        json!({"FirstName": "Ada", "LastName": "Lovelace"})
    );
    assert!(body["Emails"].to_string().contains("ada@example.com"));

    let without_email = wire::create_body(&NewContact {
        email: None,
        ..contact
    });
    assert!(without_email.get("Emails").is_none());
}

#[test]
fn contact_id_is_read_from_common_spellings() {
    for body in [r#"{"Id":"c-1"}"#, r#"{"ID":"c-1","Identifiers":[]}"#] {
        let contact: wire::Contact = serde_json::from_str(body).unwrap();
        assert_eq!(contact.id, "c-1");
    }
}
