//! xConnect contacts: create a contact by identifier, or link to the one
//! that already has it.
//!
//! The HTTP shape (paths, JSON field names) lives in the private `wire` module alone, so it
//! can follow the real service or the sandbox without touching the logic.

mod config;
pub(crate) mod wire;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use http::Method;
use ledgerbridge_core::{ErrorClass, Failure};

pub use config::XConnectConfig;

use crate::delivery::Target;
use crate::error::ConfigError;
use crate::transport::{with_query, Body, Transport};

const SYSTEM: &str = "xconnect";
const NAME: &str = "xConnect";

/// Whether [`XConnectClient::create_or_link_contact`] made a new contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactLink {
    /// A new contact was created.
    Created,
    /// A contact with the identifier existed; we link to it.
    Linked,
}

/// The person to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewContact<'a> {
    /// Identifier source, e.g. `ordercloud`.
    pub source: &'a str,
    /// Identifier within the source, e.g. the OrderCloud user id.
    pub identifier: &'a str,
    /// First name.
    pub first_name: &'a str,
    /// Last name.
    pub last_name: &'a str,
    /// Preferred email, if known.
    pub email: Option<&'a str>,
}

/// A client of one xConnect service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct XConnectClient {
    inner: Arc<Transport>,
}

impl XConnectClient {
    /// A client for the connection named `connection` (metrics label).
    pub fn new(connection: &str, config: XConnectConfig) -> Result<Self, ConfigError> {
        let transport = Transport::new(SYSTEM, connection, &config.base_url, &config.limits)?;
        Ok(XConnectClient {
            inner: Arc::new(transport),
        })
    }

    /// The shared limiter of this connection.
    pub fn target(&self) -> &Target {
        self.inner.target()
    }

    /// Creates a contact with the identifier `(source, identifier)`; if one
    /// exists already (409), looks it up and links to it. Safe to retry
    /// after an uncertain outcome: the retry finds the first attempt's
    /// contact. Returns the contact id.
    pub async fn create_or_link_contact(
        &self,
        contact: NewContact<'_>,
    ) -> Result<(String, ContactLink), Failure> {
        let body = Body::json(&wire::create_body(&contact))?;
        let url = self.inner.url(wire::CONTACTS_PATH);
        let answer = self.inner.send(Method::POST, &url, &body, None).await?;
        let failure = match answer.ok(SYSTEM) {
            Ok(answer) => {
                let created: wire::Contact = answer.json(NAME)?;
                return Ok((created.id, ContactLink::Created));
            }
            Err(failure) => failure,
        };
        if failure.class != ErrorClass::Conflict {
            return Err(failure);
        }
        match self
            .find_contact(contact.source, contact.identifier)
            .await?
        {
            Some(id) => Ok((id, ContactLink::Linked)),
            None => Err(Failure::new(
                ErrorClass::Conflict,
                format!(
                    "{NAME}: creating contact {}/{} conflicted, but no contact has that identifier",
                    contact.source, contact.identifier
                ),
            )),
        }
    }

    /// Updates a contact's personal information and preferred email
    /// (`PATCH /contacts/{id}`, facets merged). A contact deleted meanwhile
    /// is `NotFound`.
    pub async fn update_contact(&self, id: &str, contact: NewContact<'_>) -> Result<(), Failure> {
        let mut path: Vec<&str> = wire::CONTACTS_PATH.to_vec();
        path.push(id);
        let url = self.inner.url(&path);
        let body = Body::json(&wire::update_body(&contact))?;
        let answer = self.inner.send(Method::PATCH, &url, &body, None).await?;
        answer.ok(SYSTEM)?;
        Ok(())
    }

    /// The id of the contact with identifier `(source, identifier)`, if any.
    pub async fn find_contact(
        &self,
        source: &str,
        identifier: &str,
    ) -> Result<Option<String>, Failure> {
        let url = with_query(
            &self.inner.url(wire::CONTACTS_PATH),
            &wire::lookup_query(source, identifier),
        );
        let answer = self
            .inner
            .send(Method::GET, &url, &Body::Empty, None)
            .await?;
        match answer.ok(SYSTEM) {
            Ok(answer) => {
                let found: wire::Contact = answer.json(NAME)?;
                Ok(Some(found.id))
            }
            Err(failure) if failure.class == ErrorClass::NotFound => Ok(None),
            Err(failure) => Err(failure),
        }
    }
}
