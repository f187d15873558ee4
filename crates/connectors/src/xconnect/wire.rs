//! The xConnect HTTP shape, in one place.
//!
//! `POST {base}/contacts` with
//! `{"Identifiers": [{"Source", "Identifier"}], "PersonalInformation":
//! {"FirstName", "LastName"}, "Emails": {...}}` answers 201 `{"Id", ...}`,
//! or 409 when the identifier exists. `GET {base}/contacts?source=&identifier=`
//! answers the contact or 404.

use serde::Deserialize;
use serde_json::{json, Value};

use super::NewContact;

/// Path segments of the contacts collection under the base URL.
pub(super) const CONTACTS_PATH: &[&str] = &["contacts"];

/// The create body.
pub(super) fn create_body(contact: &NewContact<'_>) -> Value {
    let mut body = json!({
        "Identifiers": [{
            "Source": contact.source,
            "Identifier": contact.identifier,
            "IdentifierType": "Known",
        }],
        "PersonalInformation": {"FirstName": contact.first_name, "LastName": contact.last_name},
    });
    if let Some(email) = contact.email {
        body["Emails"] = json!({
            "PreferredKey": "Preferred",
            "PreferredEmail": {"SmtpAddress": email},
            "Others": {},
        });
    }
    body
}

/// The update body: the facets only (identifiers never change).
pub(super) fn update_body(contact: &NewContact<'_>) -> Value {
    let mut body = create_body(contact);
    if let Some(map) = body.as_object_mut() {
        map.remove("Identifiers");
    }
    body
}

/// The query of a lookup by identifier.
pub(super) fn lookup_query(source: &str, identifier: &str) -> [(&'static str, String); 2] {
    [
        ("source", source.to_owned()),
        ("identifier", identifier.to_owned()),
    ]
}

/// The part of a contact we read.
#[derive(Debug, Deserialize)]
pub(crate) struct Contact {
    #[serde(rename = "Id", alias = "ID", alias = "id")]
    pub id: String,
}
