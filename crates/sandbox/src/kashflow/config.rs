//! Configuration of the KashFlow simulator. Every invented value ([inf] in
//! the API reference) has its default here, in one place.

use serde::{Deserialize, Serialize};

/// Configuration of the KashFlow REST v2 simulator (`[kashflow]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KashFlowConfig {
    /// Login user name (compared case-insensitively).
    pub username: String,
    /// Login password.
    pub password: String,
    /// Memorable word; step 2 asks for three of its characters (1-based).
    pub memorable_word: String,
    /// `CompanyName` returned by `PUT /sessiontoken`.
    pub company_name: String,
    /// Sliding session lifetime: a session unused for this long expires.
    pub session_ttl_secs: u64,
    /// Lifetime of the temporary token between the two login steps.
    pub temp_token_ttl_secs: u64,
    /// Lock the account after this many failed logins in a row (0 = never).
    pub lock_after_failures: u32,
    /// `perpage` when a list request has none.
    pub default_per_page: usize,
    /// Largest `perpage` honoured (bigger values are capped).
    pub max_per_page: usize,
    /// Append `" +00:00"` to every date written out.
    pub dates_with_offset: bool,
    /// Prefix of generated customer codes (`SIMC0001`).
    pub customer_code_prefix: String,
    /// First invoice number handed out when a create omits `Number`.
    pub first_invoice_number: i64,
    /// Seed the reference data (nominals, products, VAT rates, currencies,
    /// bank accounts, payment methods) at start and on reset.
    pub seed_reference_data: bool,
}

impl Default for KashFlowConfig {
    fn default() -> Self {
        KashFlowConfig {
            username: "sim".to_owned(),
            password: "sim-password".to_owned(),
            memorable_word: "pineapple".to_owned(),
            company_name: "Sim Ltd".to_owned(),
            session_ttl_secs: 60 * 60,
            temp_token_ttl_secs: 5 * 60,
            lock_after_failures: 0,
            default_per_page: 50,
            max_per_page: 500,
            dates_with_offset: false,
            customer_code_prefix: "SIMC".to_owned(),
            first_invoice_number: 1,
            seed_reference_data: true,
        }
    }
}
