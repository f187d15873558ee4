//! KashFlow resources as stored and written out (exact PascalCase names), and
//! the request bodies the simulator reads (all optional fields, so a `PUT`
//! can merge; required fields are checked by the operations).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::input::{struct_fields, FlexBool, FlexInt, InDate, KfDate};

/// Writes a decimal as an exact JSON number (`117.50`, not a string).
pub fn dec<S: serde::Serializer>(value: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    rust_decimal::serde::arbitrary_precision::serialize(value, serializer)
}

/// [`dec`] for optional values (`null` when absent).
pub fn opt_dec<S: serde::Serializer>(
    value: &Option<Decimal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => dec(value, serializer),
        None => serializer.serialize_none(),
    }
}

// ---------------------------------------------------------------- reference data

/// A currency (`GET /currencies`, embedded `Currency`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Currency {
    /// Internal id.
    pub id: i64,
    /// ISO code, e.g. `GBP`.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Symbol, e.g. `£`.
    pub symbol: String,
    /// Units of this currency per unit of the home currency.
    #[serde(serialize_with = "dec")]
    pub exchange_rate: Decimal,
    /// Whether the symbol follows the amount.
    pub display_symbol_on_right: bool,
}

/// A nominal code (`GET /nominals`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Nominal {
    /// Internal id.
    pub id: i64,
    /// The code, e.g. `4000`.
    pub code: i64,
    /// Name, e.g. `Sales`.
    pub name: String,
    /// Type name, e.g. `Sales`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Type number.
    pub nom_type: i64,
    /// Classification text.
    pub classification: String,
    /// Description.
    pub description: String,
    /// Default price when used as a product.
    #[serde(serialize_with = "dec")]
    pub price: Decimal,
    /// Default wholesale price.
    #[serde(serialize_with = "dec")]
    pub whole_sale_price: Decimal,
    /// Default VAT percentage.
    #[serde(rename = "VATRate", serialize_with = "dec")]
    pub vat_rate: Decimal,
    /// VAT exempt.
    #[serde(rename = "VATExempt")]
    pub vat_exempt: bool,
    /// Archived.
    pub archived: bool,
    /// Disallowed for VAT.
    pub disallowed: bool,
    /// Fill line items from it automatically.
    pub auto_fill_line_item: bool,
    /// Used as a product.
    pub is_product: bool,
    /// Stock is tracked.
    pub manage_stock_level: bool,
    /// Stock on hand.
    #[serde(serialize_with = "dec")]
    pub quantity_in_stock: Decimal,
    /// Warning threshold.
    #[serde(serialize_with = "dec")]
    pub stock_warning_quantity: Decimal,
}

/// A product (`GET /products`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Product {
    /// Internal id.
    pub id: i64,
    /// Product code (unique per nominal).
    pub code: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Nominal code the product lives under.
    pub nominal_code: i64,
    /// That nominal's id.
    pub nominal_id: i64,
    /// Unit price (net).
    #[serde(serialize_with = "dec")]
    pub price: Decimal,
    /// Wholesale unit price.
    #[serde(serialize_with = "dec")]
    pub whole_sale_price: Decimal,
    /// VAT percentage.
    #[serde(rename = "VATRate", serialize_with = "dec")]
    pub vat_rate: Decimal,
    /// VAT exempt.
    #[serde(rename = "VATExempt")]
    pub vat_exempt: bool,
    /// Fill line items from it automatically.
    pub auto_fill_line_item: bool,
    /// Stock is tracked (invoices then reduce `QuantityInStock`).
    pub manage_stock_level: bool,
    /// Stock on hand.
    #[serde(serialize_with = "dec")]
    pub quantity_in_stock: Decimal,
    /// Warning threshold.
    #[serde(serialize_with = "dec")]
    pub stock_warning_quantity: Decimal,
    /// Default product of its nominal.
    pub is_default: bool,
    /// In use.
    pub in_use: bool,
}

/// A configured VAT rate (`GET /vat/settings/vatrates`).
#[derive(Debug, Clone, Serialize)]
pub struct VatRate {
    /// Id.
    #[serde(rename = "VATId")]
    pub id: i64,
    /// Percentage.
    #[serde(rename = "VATRate", serialize_with = "dec")]
    pub rate: Decimal,
    /// Label, e.g. `20%`.
    #[serde(rename = "VATText")]
    pub text: String,
}

/// A tax (`GET /taxes`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tax {
    /// Id.
    pub id: i64,
    /// Code, e.g. `T1`.
    pub code: String,
    /// Description.
    pub description: String,
    /// Percentage.
    #[serde(serialize_with = "dec")]
    pub rate: Decimal,
    /// `supply` or `purchase` (not written out).
    #[serde(skip)]
    pub kind: &'static str,
}

/// A payment method (`GET /paymentmethods/invoice`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentMethod {
    /// Id, used as a payment's `Method`.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// A bank account (`GET /bankaccounts`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BankAccount {
    /// Id, used as a payment's `AccountId`.
    pub id: i64,
    /// Nominal code of the account, e.g. `1200`.
    pub code: i64,
    /// Name.
    pub account_name: String,
    /// The default account.
    pub is_default_account: bool,
    /// Archived.
    pub is_archived: bool,
    /// Default method of invoice payments into it.
    pub default_invoice_payment_type: PaymentMethod,
}

// ---------------------------------------------------------------- customers

/// A contact of a customer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Contact {
    /// Id.
    #[serde(default)]
    pub id: Option<FlexIntOut>,
    /// Full name.
    pub name: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// First name (KashFlow spells it `Firstname`).
    pub firstname: Option<String>,
    /// Last name.
    pub last_name: Option<String>,
    /// E-mail.
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
    pub is_primary: Option<FlexBoolOut>,
    /// Receives e-mails.
    pub receive_emails: Option<FlexBoolOut>,
}

/// A whole number read leniently and written as a number.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(from = "FlexInt", into = "i64")]
pub struct FlexIntOut(pub i64);

impl From<FlexInt> for FlexIntOut {
    fn from(value: FlexInt) -> Self {
        FlexIntOut(value.0)
    }
}

impl From<FlexIntOut> for i64 {
    fn from(value: FlexIntOut) -> Self {
        value.0
    }
}

/// A boolean read leniently and written as a boolean.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(from = "FlexBool", into = "bool")]
pub struct FlexBoolOut(pub bool);

impl From<FlexBool> for FlexBoolOut {
    fn from(value: FlexBool) -> Self {
        FlexBoolOut(value.0)
    }
}

impl From<FlexBoolOut> for bool {
    fn from(value: FlexBoolOut) -> Self {
        value.0
    }
}

/// An address (customer, invoice, delivery).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Address {
    /// Name (delivery addresses only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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
    /// ISO alpha-2 country code.
    pub country_code: Option<String>,
    /// Country name, resolved from the code (read-only).
    pub country_name: Option<String>,
}

/// A custom text or check box.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomBox {
    /// Label.
    pub name: String,
    /// Value (text or boolean).
    #[serde(default)]
    pub value: serde_json::Value,
}

/// Payment terms of a customer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentTerms {
    /// `AfterIssuedDate` or `AfterMonthEnd`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// Days.
    pub days: FlexIntOut,
}

/// A customer as stored and written out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Customer {
    /// Internal id.
    pub id: i64,
    /// Unique code (URL key).
    pub code: String,
    /// Name.
    pub name: String,
    /// Display name (the name).
    pub display_name: String,
    /// Note.
    pub note: String,
    /// Source id.
    pub source: i64,
    /// Discount percentage.
    #[serde(serialize_with = "dec")]
    pub discount_rate: Decimal,
    /// Show the discount on invoices.
    pub show_discount: bool,
    /// VAT number.
    #[serde(rename = "VATNumber")]
    pub vat_number: String,
    /// Print the VAT number on invoices.
    #[serde(rename = "AutoIncludeVATNumber")]
    pub auto_include_vat_number: bool,
    /// Wholesale pricing.
    pub receives_wholesale_pricing: bool,
    /// Default nominal code of its invoice lines (0 = none).
    pub default_nominal_code: i64,
    /// Default customer reference.
    pub default_customer_reference: String,
    /// Deliver to a custom address.
    pub use_custom_delivery_address: bool,
    /// Archived.
    pub is_archived: bool,
    /// Trade border type (1 = UK).
    pub trade_border_type: i64,
    /// Withholding tax applies.
    pub apply_withholding_tax: bool,
    /// Withholding tax percentage.
    #[serde(serialize_with = "dec")]
    pub withholding_tax_rate: Decimal,
    /// Currency (expanded).
    pub currency: Currency,
    /// Payment terms.
    pub payment_terms: PaymentTerms,
    /// Contacts.
    pub contacts: Vec<Contact>,
    /// Addresses.
    pub addresses: Vec<Address>,
    /// Delivery addresses.
    pub delivery_addresses: Vec<Address>,
    /// Custom text boxes.
    pub custom_text_boxes: Vec<CustomBox>,
    /// Custom check boxes.
    pub custom_check_boxes: Vec<CustomBox>,
    /// Created.
    pub created_date: KfDate,
    /// Last written (every create and update sets it).
    pub last_updated_date: KfDate,
    /// Number of invoices.
    pub invoice_count: i64,
    /// Sum of invoice net amounts.
    #[serde(serialize_with = "dec")]
    pub invoiced_net_amount: Decimal,
    /// Sum of invoice VAT amounts.
    #[serde(rename = "InvoicedVATAmount", serialize_with = "dec")]
    pub invoiced_vat_amount: Decimal,
    /// Sum of payments.
    #[serde(serialize_with = "dec")]
    pub total_paid_amount: Decimal,
    /// Gross invoiced minus paid.
    #[serde(serialize_with = "dec")]
    pub outstanding_balance: Decimal,
    /// First invoice date (`1900-01-01 12:00:00` when none, as KashFlow does).
    pub first_invoice_date: KfDate,
    /// Last invoice date (`1900-01-01 12:00:00` when none).
    pub last_invoice_date: KfDate,
}

/// Body of `POST /customers` and `PUT /customers/{code}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CustomerInput {
    pub code: Option<String>,
    pub name: Option<String>,
    pub note: Option<String>,
    pub source: Option<FlexInt>,
    pub discount_rate: Option<Decimal>,
    pub show_discount: Option<FlexBool>,
    #[serde(rename = "VATNumber")]
    pub vat_number: Option<String>,
    #[serde(rename = "AutoIncludeVATNumber")]
    pub auto_include_vat_number: Option<FlexBool>,
    pub receives_wholesale_pricing: Option<FlexBool>,
    pub default_nominal_code: Option<FlexInt>,
    pub default_customer_reference: Option<String>,
    pub use_custom_delivery_address: Option<FlexBool>,
    pub is_archived: Option<FlexBool>,
    pub trade_border_type: Option<FlexInt>,
    #[serde(alias = "ApplyWHT")]
    pub apply_withholding_tax: Option<FlexBool>,
    #[serde(alias = "WHTRate")]
    pub withholding_tax_rate: Option<Decimal>,
    pub currency: Option<CurrencyInput>,
    pub payment_terms: Option<PaymentTerms>,
    pub contacts: Option<Vec<Contact>>,
    pub addresses: Option<Vec<Address>>,
    pub delivery_addresses: Option<Vec<Address>>,
    pub custom_text_boxes: Option<Vec<CustomBox>>,
    pub custom_check_boxes: Option<Vec<CustomBox>>,
    pub create_customer_code_if_duplicate: Option<FlexBool>,
    pub create_customer_name_if_empty_or_null: Option<FlexBool>,
}

/// A `Currency` in a request: a code and optionally a rate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CurrencyInput {
    pub code: Option<String>,
    pub exchange_rate: Option<Decimal>,
}

// ---------------------------------------------------------------- invoices

/// A line of an invoice.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LineItem {
    /// Internal id.
    pub id: i64,
    /// Line number (1..n, sort order).
    pub number: i64,
    /// Description.
    pub description: String,
    /// Quantity.
    #[serde(serialize_with = "dec")]
    pub quantity: Decimal,
    /// Unit net price.
    #[serde(serialize_with = "dec")]
    pub rate: Decimal,
    /// VAT percentage.
    #[serde(rename = "VATLevel", serialize_with = "dec")]
    pub vat_level: Decimal,
    /// Line VAT money.
    #[serde(rename = "VATAmount", serialize_with = "dec")]
    pub vat_amount: Decimal,
    /// VAT exempt.
    #[serde(rename = "VATExempt")]
    pub vat_exempt: bool,
    /// Nominal code.
    pub nominal_code: i64,
    /// Nominal id.
    pub nominal_id: i64,
    /// Nominal name.
    pub nominal_name: String,
    /// Product code (empty when none).
    pub product_code: String,
    /// Product name (empty when none).
    pub product_name: String,
    /// Project (0 = none).
    pub project_number: i64,
    /// Unit price in the home currency.
    #[serde(serialize_with = "dec")]
    pub home_currency_rate: Decimal,
    /// VAT in the home currency.
    #[serde(rename = "HomeCurrencyVATAmount", serialize_with = "dec")]
    pub home_currency_vat_amount: Decimal,
}

/// A payment against an invoice.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentLine {
    /// Id.
    pub id: i64,
    /// The invoice paid.
    pub invoice_number: i64,
    /// Payment date.
    pub date: KfDate,
    /// Amount.
    #[serde(serialize_with = "dec")]
    pub amount: Decimal,
    /// Payment method id.
    pub method: i64,
    /// Bank account id.
    pub account_id: i64,
    /// Note.
    pub note: String,
    /// Reference.
    pub reference: String,
    /// Bulk payment id (0 = none).
    pub bulk_id: i64,
    /// Bulk payment number (0 = none).
    pub bulk_payment_number: i64,
    /// Processor name.
    pub payment_processor: String,
    /// An external refund.
    pub is_external_refund: bool,
    /// `/v2/documents/invoice/payment/<guid>`.
    pub permalink: String,
}

/// The invoice fields that list items carry (no lines, no payments).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvoiceHeader {
    /// Internal id.
    pub id: i64,
    /// Number (URL key).
    pub number: i64,
    /// Customer id.
    pub customer_id: i64,
    /// Customer code.
    pub customer_code: String,
    /// Customer name.
    pub customer_name: String,
    /// Customer reference (searched by `searchtext`).
    pub customer_reference: String,
    /// Issue date.
    pub issued_date: KfDate,
    /// Due date.
    pub due_date: KfDate,
    /// Date of the payment that cleared it.
    pub paid_date: Option<KfDate>,
    /// Date of the latest payment.
    pub last_payment_date: Option<KfDate>,
    /// Sum of line nets.
    #[serde(serialize_with = "dec")]
    pub net_amount: Decimal,
    /// Sum of line VAT.
    #[serde(rename = "VATAmount", serialize_with = "dec")]
    pub vat_amount: Decimal,
    /// Net plus VAT.
    #[serde(serialize_with = "dec")]
    pub gross_amount: Decimal,
    /// Gross in the home currency.
    #[serde(serialize_with = "dec")]
    pub home_currency_gross_amount: Decimal,
    /// Sum of payments.
    #[serde(serialize_with = "dec")]
    pub total_paid_amount: Decimal,
    /// Gross minus paid (negative when overpaid).
    #[serde(serialize_with = "dec")]
    pub due_amount: Decimal,
    /// `Paid` or `Unpaid`.
    pub status: &'static str,
    /// Currency with the invoice's exchange rate.
    pub currency: Currency,
    /// Project (0 = none).
    pub project_number: i64,
    /// Invoice address.
    pub address: Address,
    /// Delivery address.
    pub delivery_address: Address,
    /// Use the delivery address.
    pub use_custom_delivery_address: bool,
    /// Credit control.
    pub automatic_credit_control_enabled: bool,
    /// Days overdue (not tracked: 0).
    pub overdue_days: i64,
    /// E-mails sent (0).
    pub email_count: i64,
    /// Customer VAT number.
    #[serde(rename = "VATNumber")]
    pub vat_number: String,
    /// Customer discount.
    #[serde(serialize_with = "dec")]
    pub customer_discount: Decimal,
    /// `/v2/documents/invoice/<guid>`.
    pub permalink: String,
    /// `/v2/documents/invoice/packingslip/<guid>`.
    pub packing_slip_permalink: String,
    /// Reminder letters (none).
    pub reminder_letters: [u8; 0],
    /// Created.
    pub created_date: KfDate,
    /// Last written.
    pub last_updated_date: KfDate,
}

/// An invoice as stored.
#[derive(Debug, Clone)]
pub struct Invoice {
    /// Header and totals.
    pub header: InvoiceHeader,
    /// Lines.
    pub lines: Vec<LineItem>,
    /// Payments.
    pub payments: Vec<PaymentLine>,
}

/// Full invoice as `GET /invoices/{number}` writes it.
#[derive(Debug, Serialize)]
pub struct InvoiceDetail<'a> {
    #[serde(flatten)]
    pub header: &'a InvoiceHeader,
    #[serde(rename = "LineItems")]
    pub lines: &'a [LineItem],
    #[serde(rename = "PaymentLines")]
    pub payments: &'a [PaymentLine],
    #[serde(rename = "PreviousNumber")]
    pub previous_number: Option<i64>,
    #[serde(rename = "NextNumber")]
    pub next_number: Option<i64>,
}

/// Body of `POST /invoices` and `PUT /invoices/{number}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InvoiceInput {
    pub number: Option<FlexInt>,
    pub customer_code: Option<String>,
    pub issued_date: Option<InDate>,
    pub due_date: Option<InDate>,
    pub customer_reference: Option<String>,
    pub project_number: Option<FlexInt>,
    pub currency: Option<CurrencyInput>,
    pub address: Option<Address>,
    pub delivery_address: Option<Address>,
    pub use_custom_delivery_address: Option<FlexBool>,
    pub automatic_credit_control_enabled: Option<FlexBool>,
    pub update_customer_address: Option<FlexBool>,
    pub update_customer_delivery_address: Option<FlexBool>,
    pub line_items: Option<Vec<LineInput>>,
    pub payment_lines: Option<Vec<PaymentInput>>,
}

/// A line in a request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LineInput {
    /// Accepted and ignored: lines are renumbered 1..n in order.
    #[allow(dead_code)]
    pub number: Option<FlexInt>,
    pub description: Option<String>,
    pub quantity: Option<Decimal>,
    pub rate: Option<Decimal>,
    #[serde(rename = "VATLevel")]
    pub vat_level: Option<Decimal>,
    #[serde(rename = "VATAmount")]
    pub vat_amount: Option<Decimal>,
    #[serde(rename = "VATExempt")]
    pub vat_exempt: Option<FlexBool>,
    pub nominal_code: Option<FlexInt>,
    pub product_code: Option<String>,
    pub project_number: Option<FlexInt>,
}

/// A payment in a request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PaymentInput {
    pub id: Option<FlexInt>,
    pub date: Option<InDate>,
    pub amount: Option<Decimal>,
    pub method: Option<FlexInt>,
    pub account_id: Option<FlexInt>,
    pub note: Option<String>,
    pub reference: Option<String>,
    pub payment_processor: Option<String>,
    pub is_external_refund: Option<FlexBool>,
}

// ---------------------------------------------------------------- bulk payments

/// One invoice paid by a bulk payment.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BulkPaymentItem {
    /// The payment line's id on the invoice.
    pub id: i64,
    /// The invoice number.
    pub object_number: i64,
    /// Amount.
    #[serde(serialize_with = "dec")]
    pub amount: Decimal,
    /// Payment date.
    pub paid_date: KfDate,
    /// Reference.
    pub contact_reference: String,
}

/// A bulk payment (`/invoices/bulk/payments`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BulkPayment {
    /// Internal id (payments' `BulkId`).
    pub id: i64,
    /// Number (URL key).
    pub number: i64,
    /// Date.
    pub date: KfDate,
    /// Comment.
    pub comment: String,
    /// Bank account id.
    pub account_id: i64,
    /// Payment method id.
    pub method: i64,
    /// Reconciled (always false).
    pub reconciled: bool,
    /// `/v2/documents/invoice/bulkpayment/<guid>`.
    pub permalink: String,
    /// Invoices paid.
    pub payment_items: Vec<BulkPaymentItem>,
}

/// Body of `POST /invoices/bulk/payments`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BulkPaymentInput {
    pub date: Option<InDate>,
    pub comment: Option<String>,
    pub account_id: Option<FlexInt>,
    pub method: Option<FlexInt>,
    pub payment_items: Option<Vec<BulkItemInput>>,
}

/// One item of a bulk payment request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BulkItemInput {
    pub object_number: Option<FlexInt>,
    pub amount: Option<Decimal>,
    pub paid_date: Option<InDate>,
    pub contact_reference: Option<String>,
}

// ---------------------------------------------------------------- products, nominals, auth

/// Body of `POST /products` and `PUT /products/{nominal}/{code}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProductInput {
    pub code: Option<String>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub nominal_code: Option<FlexInt>,
    pub price: Option<Decimal>,
    pub whole_sale_price: Option<Decimal>,
    #[serde(rename = "VATRate")]
    pub vat_rate: Option<Decimal>,
    #[serde(rename = "VATExempt")]
    pub vat_exempt: Option<FlexBool>,
    pub auto_fill_line_item: Option<FlexBool>,
    pub manage_stock_level: Option<FlexBool>,
    pub quantity_in_stock: Option<Decimal>,
    pub stock_warning_quantity: Option<Decimal>,
    pub is_default: Option<FlexBool>,
    pub in_use: Option<FlexBool>,
}

/// Body of `POST /nominals`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NominalInput {
    pub code: Option<FlexInt>,
    pub name: Option<String>,
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    pub nom_type: Option<FlexInt>,
    pub description: Option<String>,
    #[serde(rename = "VATRate")]
    pub vat_rate: Option<Decimal>,
    #[serde(rename = "VATExempt")]
    pub vat_exempt: Option<FlexBool>,
    pub create_when_not_present: Option<FlexBool>,
}

/// Body of `POST /sessiontoken`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LoginInput {
    pub user_name: Option<String>,
    pub password: Option<String>,
}

/// Body of `PUT /sessiontoken`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemorableWordInput {
    pub temporary_token: Option<String>,
    pub memorable_word_list: Option<Vec<MemorableCharacter>>,
}

/// One requested memorable-word character.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MemorableCharacter {
    pub position: Option<FlexInt>,
    pub value: Option<String>,
}

/// Body of the control route `POST /_sandbox/kashflow/stock`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StockInput {
    pub code: Option<String>,
    pub nominal_code: Option<FlexInt>,
    pub quantity_in_stock: Option<Decimal>,
}

/// Field names of every request type (the case-insensitive key vocabulary).
pub fn request_field_names() -> Vec<&'static [&'static str]> {
    const EXTRA: &[&str] = &["ApplyWHT", "WHTRate"];
    vec![
        struct_fields::<CustomerInput>(),
        struct_fields::<CurrencyInput>(),
        struct_fields::<Contact>(),
        struct_fields::<Address>(),
        struct_fields::<CustomBox>(),
        struct_fields::<PaymentTerms>(),
        struct_fields::<InvoiceInput>(),
        struct_fields::<LineInput>(),
        struct_fields::<PaymentInput>(),
        struct_fields::<BulkPaymentInput>(),
        struct_fields::<BulkItemInput>(),
        struct_fields::<ProductInput>(),
        struct_fields::<NominalInput>(),
        struct_fields::<LoginInput>(),
        struct_fields::<MemorableWordInput>(),
        struct_fields::<MemorableCharacter>(),
        struct_fields::<StockInput>(),
        EXTRA,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_holds_canonical_names() {
        let names: Vec<&str> = request_field_names()
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for expected in [
            "CustomerCode",
            "VATLevel",
            "VATNumber",
            "Firstname",
            "MemorableWordList",
            "CreateCustomerCodeIfDuplicate",
            "ObjectNumber",
            "QuantityInStock",
            "Type",
        ] {
            assert!(names.contains(&expected), "{expected} missing");
        }
    }
}
