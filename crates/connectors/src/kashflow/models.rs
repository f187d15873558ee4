//! KashFlow REST v2 resources, as the API spells them.
//!
//! Every field is optional (KashFlow omits and nulls fields freely, and a
//! PUT should only carry what the caller set); unknown fields are ignored.
//! Money and quantities are exact [`Decimal`]s written as JSON numbers.
//! Dates stay strings in KashFlow's own format (`"2025-03-01 00:00:00"`,
//! sometimes with `" +00:00"`); see [`parse_date`] and [`format_date`].

use chrono::{DateTime, NaiveDate, NaiveDateTime};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::serde_util::api_model;

api_model! {
    /// A customer (`/customers/{code}`).
    pub struct Customer {
        /// Internal id (read-only).
        pub id: Option<i64>,
        /// The customer code, unique per account; the URL key.
        pub code: Option<String>,
        /// Customer name (required on create).
        pub name: Option<String>,
        /// Display name (read-only).
        pub display_name: Option<String>,
        /// Free-text note.
        pub note: Option<String>,
        /// Source id.
        pub source: Option<i64>,
        /// Discount rate, percent.
        #[serde(with = "crate::serde_util::money")]
        pub discount_rate: Option<Decimal>,
        /// Whether the discount is shown on invoices.
        pub show_discount: Option<bool>,
        /// VAT registration number.
        #[serde(rename = "VATNumber", alias = "VatNumber")]
        pub vat_number: Option<String>,
        /// Print the VAT number on documents.
        #[serde(rename = "AutoIncludeVATNumber")]
        pub auto_include_vat_number: Option<bool>,
        /// Customer gets wholesale prices.
        pub receives_wholesale_pricing: Option<bool>,
        /// Default nominal code for lines.
        pub default_nominal_code: Option<i64>,
        /// Default customer reference on invoices.
        pub default_customer_reference: Option<String>,
        /// Use the delivery address on documents.
        pub use_custom_delivery_address: Option<bool>,
        /// Archived customers are hidden in lists.
        pub is_archived: Option<bool>,
        /// Trading currency (`{"Code": "GBP"}` on write).
        pub currency: Option<Currency>,
        /// Payment terms.
        pub payment_terms: Option<PaymentTerms>,
        /// Contacts.
        pub contacts: Option<Vec<Contact>>,
        /// Billing addresses.
        pub addresses: Option<Vec<Address>>,
        /// Delivery addresses.
        pub delivery_addresses: Option<Vec<Address>>,
        /// Custom text fields.
        pub custom_text_boxes: Option<Vec<CustomField>>,
        /// Custom check boxes.
        pub custom_check_boxes: Option<Vec<CustomField>>,
        /// On create: invent a new code if `Code` is taken (creates a second
        /// customer; not a dedupe).
        pub create_customer_code_if_duplicate: Option<bool>,
        /// On create: invent a name if `Name` is empty.
        pub create_customer_name_if_empty_or_null: Option<bool>,
        /// Created (read-only).
        pub created_date: Option<String>,
        /// Last updated (read-only).
        pub last_updated_date: Option<String>,
        /// Number of invoices (read-only).
        pub invoice_count: Option<i64>,
        /// Invoiced net total (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub invoiced_net_amount: Option<Decimal>,
        /// Invoiced VAT total (read-only).
        #[serde(rename = "InvoicedVATAmount", with = "crate::serde_util::money")]
        pub invoiced_vat_amount: Option<Decimal>,
        /// Paid total (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub total_paid_amount: Option<Decimal>,
        /// Outstanding balance (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub outstanding_balance: Option<Decimal>,
        /// First invoice date; `"1900-01-01 12:00:00"` means never (read-only).
        pub first_invoice_date: Option<String>,
        /// Last invoice date (read-only).
        pub last_invoice_date: Option<String>,
    }
}

api_model! {
    /// A contact person of a customer.
    pub struct Contact {
        /// Contact id.
        pub id: Option<i64>,
        /// Full name.
        pub name: Option<String>,
        /// Title (Mr, Ms, ...).
        pub title: Option<String>,
        /// First name (KashFlow spells it `Firstname`).
        #[serde(rename = "Firstname", alias = "FirstName")]
        pub first_name: Option<String>,
        /// Last name.
        pub last_name: Option<String>,
        /// Email address.
        pub email: Option<String>,
        /// Telephone.
        pub telephone: Option<String>,
        /// Mobile.
        pub mobile: Option<String>,
        /// Fax.
        pub fax: Option<String>,
        /// Website.
        pub website: Option<String>,
        /// Primary contact.
        pub is_primary: Option<bool>,
        /// Receives emails.
        pub receive_emails: Option<bool>,
    }
}

api_model! {
    /// A postal address (customer, invoice, delivery).
    pub struct Address {
        /// Name (delivery addresses).
        pub name: Option<String>,
        /// Line 1.
        pub line1: Option<String>,
        /// Line 2.
        pub line2: Option<String>,
        /// Line 3.
        pub line3: Option<String>,
        /// Line 4.
        pub line4: Option<String>,
        /// Post code.
        pub post_code: Option<String>,
        /// ISO 3166 alpha-2 country code.
        pub country_code: Option<String>,
        /// Country name (read-only, resolved from the code).
        pub country_name: Option<String>,
    }
}

api_model! {
    /// A custom field `{Name, Value}`.
    pub struct CustomField {
        /// Field name.
        pub name: Option<String>,
        /// Field value (text or boolean).
        pub value: Option<serde_json::Value>,
    }
}

api_model! {
    /// Payment terms of a customer.
    pub struct PaymentTerms {
        /// `AfterIssuedDate` or `AfterMonthEnd`.
        pub r#type: Option<String>,
        /// Number of days.
        pub days: Option<i64>,
    }
}

api_model! {
    /// A currency (`GET /currencies`, and embedded in customers and invoices).
    pub struct Currency {
        /// Id.
        pub id: Option<i64>,
        /// ISO code, e.g. `GBP`.
        pub code: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Symbol, e.g. `£`.
        pub symbol: Option<String>,
        /// Exchange rate to the home currency.
        #[serde(with = "crate::serde_util::money")]
        pub exchange_rate: Option<Decimal>,
        /// Symbol after the amount.
        pub display_symbol_on_right: Option<bool>,
    }
}

api_model! {
    /// A sales invoice (`/invoices/{number}`).
    pub struct Invoice {
        /// Internal id (read-only).
        pub id: Option<i64>,
        /// Invoice number, the URL key; auto-assigned when omitted.
        pub number: Option<i64>,
        /// Customer id (read-only).
        pub customer_id: Option<i64>,
        /// Customer code (required on create).
        pub customer_code: Option<String>,
        /// Customer name (read-only).
        pub customer_name: Option<String>,
        /// Issue date.
        pub issued_date: Option<String>,
        /// Due date.
        pub due_date: Option<String>,
        /// The customer's reference; we put the source order id here.
        pub customer_reference: Option<String>,
        /// Project number (0 = none).
        pub project_number: Option<i64>,
        /// Currency (`{"Code", "ExchangeRate"}` on write).
        pub currency: Option<Currency>,
        /// Billing address (from the customer if omitted).
        pub address: Option<Address>,
        /// Delivery address.
        pub delivery_address: Option<Address>,
        /// Use the delivery address.
        pub use_custom_delivery_address: Option<bool>,
        /// Copy the address back to the customer.
        pub update_customer_address: Option<bool>,
        /// Copy the delivery address back to the customer.
        pub update_customer_delivery_address: Option<bool>,
        /// Credit control reminders.
        pub automatic_credit_control_enabled: Option<bool>,
        /// Lines; a PUT with `LineItems` replaces all lines. Absent in lists.
        pub line_items: Option<Vec<LineItem>>,
        /// Payments; a PUT with `PaymentLines` replaces all payments
        /// (entries without `Id` are new). Absent in lists.
        pub payment_lines: Option<Vec<PaymentLine>>,
        /// Net total (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub net_amount: Option<Decimal>,
        /// VAT total (read-only).
        #[serde(rename = "VATAmount", with = "crate::serde_util::money")]
        pub vat_amount: Option<Decimal>,
        /// Gross total (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub gross_amount: Option<Decimal>,
        /// Gross in the home currency (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub home_currency_gross_amount: Option<Decimal>,
        /// Paid so far (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub total_paid_amount: Option<Decimal>,
        /// Still due (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub due_amount: Option<Decimal>,
        /// `Paid`, `Unpaid`, ... (read-only).
        pub status: Option<String>,
        /// Date fully paid; may be null even when `Status` is `Paid`.
        pub paid_date: Option<String>,
        /// Date of the last payment (read-only).
        pub last_payment_date: Option<String>,
        /// Days overdue (read-only).
        pub overdue_days: Option<i64>,
        /// Emails sent (read-only).
        pub email_count: Option<i64>,
        /// Customer VAT number (read-only).
        #[serde(rename = "VATNumber")]
        pub vat_number: Option<String>,
        /// Customer discount (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub customer_discount: Option<Decimal>,
        /// `/v2/documents/invoice/<guid>` (read-only).
        pub permalink: Option<String>,
        /// Packing slip link (read-only).
        pub packing_slip_permalink: Option<String>,
        /// Created (read-only).
        pub created_date: Option<String>,
    }
}

api_model! {
    /// One invoice line. Send `VATLevel` explicitly (even `0`): KashFlow
    /// applies a default rate when it is missing.
    pub struct LineItem {
        /// Line id and sort order; omit (or 0) for new lines.
        pub number: Option<i64>,
        /// Description.
        pub description: Option<String>,
        /// Quantity.
        #[serde(with = "crate::serde_util::money")]
        pub quantity: Option<Decimal>,
        /// Unit net price.
        #[serde(with = "crate::serde_util::money")]
        pub rate: Option<Decimal>,
        /// VAT percentage, e.g. `20`.
        #[serde(rename = "VATLevel", with = "crate::serde_util::money")]
        pub vat_level: Option<Decimal>,
        /// Line VAT amount.
        #[serde(rename = "VATAmount", with = "crate::serde_util::money")]
        pub vat_amount: Option<Decimal>,
        /// VAT exempt (accepts `0`/`1`).
        #[serde(rename = "VATExempt", with = "crate::serde_util::lenient_bool")]
        pub vat_exempt: Option<bool>,
        /// Nominal code, e.g. `4000`.
        pub nominal_code: Option<i64>,
        /// Product code.
        pub product_code: Option<String>,
        /// Project number (0 = none).
        pub project_number: Option<i64>,
        /// Product name (read-only).
        pub product_name: Option<String>,
        /// Nominal id (read-only).
        pub nominal_id: Option<i64>,
        /// Nominal name (read-only).
        pub nominal_name: Option<String>,
        /// Project name (read-only).
        pub project_name: Option<String>,
        /// Rate in the home currency (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub home_currency_rate: Option<Decimal>,
        /// VAT in the home currency (read-only).
        #[serde(rename = "HomeCurrencyVATAmount", with = "crate::serde_util::money")]
        pub home_currency_vat_amount: Option<Decimal>,
    }
}

api_model! {
    /// One payment on an invoice (`PaymentLines[]`).
    pub struct PaymentLine {
        /// Payment id (read-only; absent for a new payment).
        pub id: Option<i64>,
        /// Payment date.
        pub date: Option<String>,
        /// Amount.
        #[serde(with = "crate::serde_util::money")]
        pub amount: Option<Decimal>,
        /// Payment method id ([`PaymentMethod::id`]).
        pub method: Option<i64>,
        /// Bank account id ([`BankAccount::id`]).
        pub account_id: Option<i64>,
        /// Note.
        pub note: Option<String>,
        /// Reference; [`super::KashFlowClient::add_payment`] uses it to
        /// recognise a payment already recorded.
        pub reference: Option<String>,
        /// Bulk payment id.
        pub bulk_id: Option<i64>,
        /// Bulk payment number (read-only).
        pub bulk_payment_number: Option<i64>,
        /// Invoice number (read-only).
        pub invoice_number: Option<i64>,
        /// `/v2/documents/invoice/payment/<guid>` (read-only).
        pub permalink: Option<String>,
        /// Bank transaction id (read-only).
        pub bank_transaction_id: Option<serde_json::Value>,
        /// Payment processor.
        pub payment_processor: Option<serde_json::Value>,
        /// External refund.
        pub is_external_refund: Option<bool>,
    }
}

api_model! {
    /// A bulk payment (`POST /invoices/bulk/payments`).
    pub struct BulkPayment {
        /// Number (read-only, assigned on create).
        pub number: Option<i64>,
        /// Payment date.
        pub date: Option<String>,
        /// Comment.
        pub comment: Option<String>,
        /// Bank account id.
        pub account_id: Option<i64>,
        /// Payment method id.
        pub method: Option<i64>,
        /// The invoices paid.
        pub payment_items: Option<Vec<BulkPaymentItem>>,
        /// Reconciled (read-only).
        pub reconciled: Option<bool>,
        /// Document link (read-only).
        pub permalink: Option<String>,
    }
}

api_model! {
    /// One invoice inside a [`BulkPayment`].
    pub struct BulkPaymentItem {
        /// Id (read-only).
        pub id: Option<i64>,
        /// Invoice number.
        pub object_number: Option<i64>,
        /// Amount.
        #[serde(with = "crate::serde_util::money")]
        pub amount: Option<Decimal>,
        /// Paid date.
        pub paid_date: Option<String>,
        /// Contact reference.
        pub contact_reference: Option<String>,
    }
}

api_model! {
    /// A product (lives under a nominal code; the same `Code` may exist
    /// under two nominals).
    pub struct Product {
        /// Id.
        pub id: Option<i64>,
        /// Product code.
        pub code: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Nominal code it belongs to.
        pub nominal_code: Option<i64>,
        /// Nominal id.
        pub nominal_id: Option<i64>,
        /// Sale price.
        #[serde(with = "crate::serde_util::money")]
        pub price: Option<Decimal>,
        /// Wholesale price.
        #[serde(with = "crate::serde_util::money")]
        pub whole_sale_price: Option<Decimal>,
        /// VAT percentage.
        #[serde(rename = "VATRate", with = "crate::serde_util::money")]
        pub vat_rate: Option<Decimal>,
        /// VAT exempt.
        #[serde(rename = "VATExempt", with = "crate::serde_util::lenient_bool")]
        pub vat_exempt: Option<bool>,
        /// Fill line items automatically.
        pub auto_fill_line_item: Option<bool>,
        /// Stock is tracked.
        pub manage_stock_level: Option<bool>,
        /// Quantity in stock.
        #[serde(with = "crate::serde_util::money")]
        pub quantity_in_stock: Option<Decimal>,
        /// Low-stock warning level.
        #[serde(with = "crate::serde_util::money")]
        pub stock_warning_quantity: Option<Decimal>,
        /// Default product of its nominal.
        pub is_default: Option<bool>,
        /// In use.
        pub in_use: Option<bool>,
    }
}

api_model! {
    /// A nominal code (`GET /nominals`).
    pub struct Nominal {
        /// Id.
        pub id: Option<i64>,
        /// Code, e.g. `4000`.
        pub code: Option<i64>,
        /// Name.
        pub name: Option<String>,
        /// Type, e.g. `Sales`.
        pub r#type: Option<String>,
        /// Numeric type.
        pub nom_type: Option<i64>,
        /// Classification.
        pub classification: Option<serde_json::Value>,
        /// Archived.
        pub archived: Option<bool>,
        /// Disallowed.
        pub disallowed: Option<bool>,
        /// Description.
        pub description: Option<String>,
        /// Price.
        #[serde(with = "crate::serde_util::money")]
        pub price: Option<Decimal>,
        /// Wholesale price.
        #[serde(with = "crate::serde_util::money")]
        pub whole_sale_price: Option<Decimal>,
        /// Default VAT percentage.
        #[serde(rename = "VATRate", with = "crate::serde_util::money")]
        pub vat_rate: Option<Decimal>,
        /// VAT exempt.
        #[serde(rename = "VATExempt", with = "crate::serde_util::lenient_bool")]
        pub vat_exempt: Option<bool>,
        /// Is a product nominal.
        pub is_product: Option<bool>,
        /// Stock is tracked.
        pub manage_stock_level: Option<bool>,
        /// Quantity in stock.
        #[serde(with = "crate::serde_util::money")]
        pub quantity_in_stock: Option<Decimal>,
    }
}

api_model! {
    /// A configured VAT rate (`GET /vat/settings/vatrates`).
    pub struct VatRate {
        /// Id.
        #[serde(rename = "VATId")]
        pub vat_id: Option<i64>,
        /// Percentage.
        #[serde(rename = "VATRate", with = "crate::serde_util::money")]
        pub vat_rate: Option<Decimal>,
        /// Label, e.g. `20%`.
        #[serde(rename = "VATText")]
        pub vat_text: Option<String>,
    }
}

api_model! {
    /// A bank account (`GET /bankaccounts`); payments name it by `Id`.
    pub struct BankAccount {
        /// Id (the payment `AccountId`).
        pub id: Option<i64>,
        /// Nominal code of the account, e.g. `1200`.
        pub code: Option<i64>,
        /// Name.
        pub account_name: Option<String>,
        /// Default account.
        pub is_default_account: Option<bool>,
        /// Archived.
        pub is_archived: Option<bool>,
        /// Default invoice payment type (`{"Id", "Name"}`).
        pub default_invoice_payment_type: Option<serde_json::Value>,
    }
}

api_model! {
    /// An invoice payment method (`GET /paymentmethods/invoice`).
    pub struct PaymentMethod {
        /// Id (the payment `Method`).
        pub id: Option<i64>,
        /// Name.
        pub name: Option<String>,
    }
}

/// A page of a list endpoint: `{"Data": [...], "MetaData": {...}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    #[serde(rename = "Data", default = "Vec::new")]
    pub data: Vec<T>,
    #[serde(rename = "MetaData", default)]
    pub meta: Option<PageMeta>,
}

/// Paging metadata of a list page.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct PageMeta {
    pub total_records: Option<u64>,
    pub next_page_url: Option<String>,
}

/// Step 1 of the login: `POST /sessiontoken`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TemporaryToken {
    pub temporary_token: String,
    #[serde(default)]
    pub memorable_word_list: Vec<MemorableWordPosition>,
}

/// A requested memorable-word character (1-based position).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct MemorableWordPosition {
    pub position: usize,
    #[serde(default)]
    pub value: String,
}

/// Step 2 of the login: `PUT /sessiontoken`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SessionToken {
    pub session_token: String,
}

/// Parses a KashFlow date: `"YYYY-MM-DD HH:mm:ss"` with or without an
/// offset (`" +05:30"`), ISO 8601 with `T`, or date-only. The offset, if
/// any, is dropped (KashFlow dates are local to the account).
pub fn parse_date(text: &str) -> Option<NaiveDateTime> {
    let text = text.trim();
    for format in [
        "%Y-%m-%d %H:%M:%S %:z",
        "%Y-%m-%d %H:%M:%S%.f %:z",
        "%Y-%m-%dT%H:%M:%S%.f%:z",
    ] {
        if let Ok(at) = DateTime::parse_from_str(text, format) {
            return Some(at.naive_local());
        }
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(at) = NaiveDateTime::parse_from_str(text, format) {
            return Some(at);
        }
    }
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

/// Formats a date the way KashFlow writes it: `"YYYY-MM-DD HH:mm:ss"`.
pub fn format_date(at: NaiveDateTime) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}
