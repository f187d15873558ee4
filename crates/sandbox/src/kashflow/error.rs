//! KashFlow error bodies: every non-2xx answer is
//! `{"Error":"<Name>","Message":"<text>"}`.
//!
//! The auth names and messages are KashFlow's own; the other `Error` names
//! are our invention (the API documents none) and live in [`codes`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `Error` names used by the simulator. Only the auth ones are documented
/// KashFlow values; the rest are invented and kept here so they are easy to change.
pub mod codes {
    /// 401: missing, unknown or expired session token (documented).
    pub const INVALID_SESSION: &str = "InvalidSessionToken";
    /// 401: too many failed logins (documented).
    pub const ACCOUNT_LOCKED: &str = "AccountLocked";
    /// 400: wrong user name or password (name seen in a client, unverified).
    pub const INVALID_CREDENTIALS: &str = "InvalidCredentials";
    /// 400: wrong memorable-word characters.
    pub const INVALID_MEMORABLE_WORD: &str = "InvalidMemorableWord";
    /// 400: unknown or expired temporary token.
    pub const INVALID_TEMPORARY_TOKEN: &str = "InvalidTemporaryToken";
    /// 400: body not JSON, wrong types, missing or invalid fields.
    pub const VALIDATION: &str = "ValidationError";
    /// 400: customer `Code` already used.
    pub const DUPLICATE_CUSTOMER_CODE: &str = "DuplicateCustomerCode";
    /// 400: invoice `Number` already used.
    pub const DUPLICATE_INVOICE_NUMBER: &str = "DuplicateInvoiceNumber";
    /// 400: product `Code` already used under that nominal.
    pub const DUPLICATE_PRODUCT_CODE: &str = "DuplicateProductCode";
    /// 400: a referenced customer does not exist.
    pub const UNKNOWN_CUSTOMER: &str = "UnknownCustomer";
    /// 400: a referenced nominal code does not exist.
    pub const UNKNOWN_NOMINAL: &str = "UnknownNominalCode";
    /// 400: a referenced product does not exist.
    pub const UNKNOWN_PRODUCT: &str = "UnknownProduct";
    /// 400: `VATLevel` is not a configured rate.
    pub const INVALID_VAT_LEVEL: &str = "InvalidVATLevel";
    /// 400: unknown currency code.
    pub const UNKNOWN_CURRENCY: &str = "UnknownCurrency";
    /// 400: unknown payment `Method`.
    pub const UNKNOWN_PAYMENT_METHOD: &str = "UnknownPaymentMethod";
    /// 400: unknown bank `AccountId`.
    pub const UNKNOWN_BANK_ACCOUNT: &str = "UnknownBankAccount";
    /// 400: a payment line `Id` that is not on the invoice.
    pub const UNKNOWN_PAYMENT: &str = "UnknownPayment";
    /// 400: an invoice in a bulk payment does not exist.
    pub const UNKNOWN_INVOICE: &str = "UnknownInvoice";
    /// 400: the customer still has invoices.
    pub const CUSTOMER_HAS_INVOICES: &str = "CustomerHasInvoices";
    /// 404: unknown key or route.
    pub const NOT_FOUND: &str = "NotFound";
    /// 405: route exists, method does not.
    pub const METHOD_NOT_ALLOWED: &str = "MethodNotAllowed";
}

/// An error answer of the KashFlow simulator.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KfError {
    /// 400 with the given `Error` name.
    #[error("{message}")]
    BadRequest {
        /// The `Error` name (see [`codes`]).
        code: &'static str,
        /// The `Message`.
        message: String,
    },
    /// 401 `InvalidSessionToken`.
    #[error("Session token provided is invalid.")]
    InvalidSession,
    /// 401 `AccountLocked`.
    #[error("User account is locked, please contact administrator.")]
    AccountLocked,
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("The requested resource does not support this HTTP method.")]
    MethodNotAllowed,
}

impl KfError {
    /// A 400 with `code`.
    pub fn bad(code: &'static str, message: impl Into<String>) -> KfError {
        KfError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// A 400 `ValidationError`.
    pub fn validation(message: impl Into<String>) -> KfError {
        KfError::bad(codes::VALIDATION, message)
    }

    /// A 404.
    pub fn not_found(message: impl Into<String>) -> KfError {
        KfError::NotFound(message.into())
    }

    /// HTTP status and `Error` name; the one place errors map to statuses.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            KfError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            KfError::InvalidSession => (StatusCode::UNAUTHORIZED, codes::INVALID_SESSION),
            KfError::AccountLocked => (StatusCode::UNAUTHORIZED, codes::ACCOUNT_LOCKED),
            KfError::NotFound(_) => (StatusCode::NOT_FOUND, codes::NOT_FOUND),
            KfError::MethodNotAllowed => {
                (StatusCode::METHOD_NOT_ALLOWED, codes::METHOD_NOT_ALLOWED)
            }
        }
    }
}

impl IntoResponse for KfError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        crate::faults::error_response("kashflow", status, code, &self.to_string())
    }
}

/// Result of a KashFlow handler or state operation.
pub type KfResult<T> = Result<T, KfError>;
