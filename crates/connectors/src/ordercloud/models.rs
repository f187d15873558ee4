//! OrderCloud v1 resources, as the API spells them (`ID`, `FromCompanyID`,
//! lower-case `xp`).
//!
//! Every field is optional and `None` is not serialized, so the same types
//! serve as create bodies; unknown fields are ignored. Money is an exact
//! [`Decimal`]; dates are UTC.

use chrono::{DateTime, Utc};
use ledgerbridge_core::Secret;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::serde_util::api_model;

/// One page of a list: `{"Meta": {...}, "Items": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListPage<T> {
    /// Paging information.
    #[serde(rename = "Meta", default)]
    pub meta: Meta,
    /// The items of this page.
    #[serde(rename = "Items", default = "Vec::new")]
    pub items: Vec<T>,
}

api_model! {
    /// Paging information of a [`ListPage`].
    pub struct Meta {
        /// 1-based page number.
        pub page: Option<u64>,
        /// Page size.
        pub page_size: Option<u64>,
        /// Items in all pages.
        pub total_count: Option<u64>,
        /// Number of pages.
        pub total_pages: Option<u64>,
        /// `[first, last]` item numbers of this page.
        pub item_range: Option<Vec<u64>>,
        /// Key of the next page (line items across orders only).
        pub next_page_key: Option<String>,
    }
}

api_model! {
    /// An order (`/orders/{direction}/{orderID}`). `Status` is read-only:
    /// it changes only through the action endpoints.
    pub struct Order {
        /// Order id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// The user who placed it (read-only).
        pub from_user: Option<User>,
        /// Buyer id.
        #[serde(rename = "FromCompanyID")]
        pub from_company_id: Option<String>,
        /// Seller or supplier id.
        #[serde(rename = "ToCompanyID")]
        pub to_company_id: Option<String>,
        /// Id of the user who placed it.
        #[serde(rename = "FromUserID")]
        pub from_user_id: Option<String>,
        /// Billing address id.
        #[serde(rename = "BillingAddressID")]
        pub billing_address_id: Option<String>,
        /// Billing address (read-only).
        pub billing_address: Option<Address>,
        /// Shipping address id; null when lines ship to different addresses.
        #[serde(rename = "ShippingAddressID")]
        pub shipping_address_id: Option<String>,
        /// Comments.
        pub comments: Option<String>,
        /// Number of lines (read-only).
        pub line_item_count: Option<i64>,
        /// `Unsubmitted`, `AwaitingApproval`, `Declined`, `Open`,
        /// `Completed` or `Canceled` (read-only).
        pub status: Option<String>,
        /// Created.
        pub date_created: Option<DateTime<Utc>>,
        /// Submitted.
        pub date_submitted: Option<DateTime<Utc>>,
        /// Approved.
        pub date_approved: Option<DateTime<Utc>>,
        /// Declined.
        pub date_declined: Option<DateTime<Utc>>,
        /// Canceled.
        pub date_canceled: Option<DateTime<Utc>>,
        /// Completed.
        pub date_completed: Option<DateTime<Utc>>,
        /// Last change.
        pub last_updated: Option<DateTime<Utc>>,
        /// Sum of line subtotals (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub subtotal: Option<Decimal>,
        /// Shipping.
        #[serde(with = "crate::serde_util::money")]
        pub shipping_cost: Option<Decimal>,
        /// Tax.
        #[serde(with = "crate::serde_util::money")]
        pub tax_cost: Option<Decimal>,
        /// Gratuity.
        #[serde(with = "crate::serde_util::money")]
        pub gratuity: Option<Decimal>,
        /// Fees (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub fees: Option<Decimal>,
        /// Promotion discount (read-only).
        #[serde(with = "crate::serde_util::money")]
        pub promotion_discount: Option<Decimal>,
        /// Currency code; may be null (read-only).
        pub currency: Option<String>,
        /// Total = subtotal + tax + shipping + gratuity + fees - discount.
        #[serde(with = "crate::serde_util::money")]
        pub total: Option<Decimal>,
        /// Submitted (read-only).
        pub is_submitted: Option<bool>,
        /// Subscription id (read-only).
        #[serde(rename = "SubscriptionID")]
        pub subscription_id: Option<String>,
        /// Extended properties (PATCH merges).
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// A buyer user (also the type of `Order.FromUser`).
    pub struct User {
        /// User id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Buyer id (read-only).
        #[serde(rename = "CompanyID")]
        pub company_id: Option<String>,
        /// User name, unique in the marketplace.
        pub username: Option<String>,
        /// Password (write-only; always null when read).
        #[serde(serialize_with = "expose_secret")]
        pub password: Option<Secret>,
        /// First name.
        pub first_name: Option<String>,
        /// Last name.
        pub last_name: Option<String>,
        /// Email.
        pub email: Option<String>,
        /// Phone.
        pub phone: Option<String>,
        /// When the terms were accepted.
        pub terms_accepted: Option<DateTime<Utc>>,
        /// Active.
        pub active: Option<bool>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
        /// Roles (read-only).
        pub available_roles: Option<Vec<String>>,
        /// Locale (read-only).
        pub locale: Option<Value>,
        /// Created (read-only).
        pub date_created: Option<DateTime<Utc>>,
        /// Last active (read-only).
        pub last_active: Option<DateTime<Utc>>,
        /// Password last set (read-only).
        pub password_last_set_date: Option<DateTime<Utc>>,
        /// Failed logins (read-only).
        pub failed_login_attempts: Option<i64>,
    }
}

api_model! {
    /// An address.
    pub struct Address {
        /// Address id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Created (read-only).
        pub date_created: Option<DateTime<Utc>>,
        /// Company.
        pub company_name: Option<String>,
        /// First name.
        pub first_name: Option<String>,
        /// Last name.
        pub last_name: Option<String>,
        /// Street line 1.
        pub street1: Option<String>,
        /// Street line 2.
        pub street2: Option<String>,
        /// City.
        pub city: Option<String>,
        /// State (US/CA).
        pub state: Option<String>,
        /// Zip or post code.
        pub zip: Option<String>,
        /// Two-letter country code.
        pub country: Option<String>,
        /// Phone.
        pub phone: Option<String>,
        /// Label.
        pub address_name: Option<String>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// An order line.
    pub struct LineItem {
        /// Line id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Product id.
        #[serde(rename = "ProductID")]
        pub product_id: Option<String>,
        /// Quantity (at least 1).
        pub quantity: Option<i64>,
        /// Bundle item id.
        #[serde(rename = "BundleItemID")]
        pub bundle_item_id: Option<String>,
        /// Is a bundle.
        pub is_bundle: Option<bool>,
        /// Added.
        pub date_added: Option<DateTime<Utc>>,
        /// Quantity shipped.
        pub quantity_shipped: Option<i64>,
        /// Unit price.
        #[serde(with = "crate::serde_util::money")]
        pub unit_price: Option<Decimal>,
        /// Promotion discount.
        #[serde(with = "crate::serde_util::money")]
        pub promotion_discount: Option<Decimal>,
        /// Subtotal minus discount.
        #[serde(with = "crate::serde_util::money")]
        pub line_total: Option<Decimal>,
        /// Unit price times quantity.
        #[serde(with = "crate::serde_util::money")]
        pub line_subtotal: Option<Decimal>,
        /// Cost center.
        pub cost_center: Option<String>,
        /// Date needed.
        pub date_needed: Option<DateTime<Utc>>,
        /// Shipping account.
        pub shipping_account: Option<String>,
        /// Shipping address id.
        #[serde(rename = "ShippingAddressID")]
        pub shipping_address_id: Option<String>,
        /// Ship-from address id.
        #[serde(rename = "ShipFromAddressID")]
        pub ship_from_address_id: Option<String>,
        /// The product as ordered.
        pub product: Option<LineItemProduct>,
        /// The variant as ordered.
        pub variant: Option<LineItemVariant>,
        /// Shipping address.
        pub shipping_address: Option<Address>,
        /// Ship-from address.
        pub ship_from_address: Option<Address>,
        /// Supplier id.
        #[serde(rename = "SupplierID")]
        pub supplier_id: Option<String>,
        /// Inventory record id.
        #[serde(rename = "InventoryRecordID")]
        pub inventory_record_id: Option<String>,
        /// Price schedule id.
        #[serde(rename = "PriceScheduleID")]
        pub price_schedule_id: Option<String>,
        /// On sale.
        pub is_on_sale: Option<bool>,
        /// Price overridden.
        pub price_overridden: Option<bool>,
        /// Chosen specs.
        pub specs: Option<Vec<LineItemSpec>>,
        /// Order id (lists across orders only).
        #[serde(rename = "OrderID")]
        pub order_id: Option<String>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// The product as captured on a line.
    pub struct LineItemProduct {
        /// Product id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Returnable.
        pub returnable: Option<bool>,
        /// Quantity multiplier.
        pub quantity_multiplier: Option<i64>,
        /// Weight.
        #[serde(with = "crate::serde_util::money")]
        pub ship_weight: Option<Decimal>,
        /// Height.
        #[serde(with = "crate::serde_util::money")]
        pub ship_height: Option<Decimal>,
        /// Width.
        #[serde(with = "crate::serde_util::money")]
        pub ship_width: Option<Decimal>,
        /// Length.
        #[serde(with = "crate::serde_util::money")]
        pub ship_length: Option<Decimal>,
        /// Default supplier.
        #[serde(rename = "DefaultSupplierID")]
        pub default_supplier_id: Option<String>,
        /// Parent product.
        #[serde(rename = "ParentID")]
        pub parent_id: Option<String>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// The variant as captured on a line.
    pub struct LineItemVariant {
        /// Variant id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Weight.
        #[serde(with = "crate::serde_util::money")]
        pub ship_weight: Option<Decimal>,
        /// Height.
        #[serde(with = "crate::serde_util::money")]
        pub ship_height: Option<Decimal>,
        /// Width.
        #[serde(with = "crate::serde_util::money")]
        pub ship_width: Option<Decimal>,
        /// Length.
        #[serde(with = "crate::serde_util::money")]
        pub ship_length: Option<Decimal>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// A spec chosen on a line.
    pub struct LineItemSpec {
        /// Spec id.
        #[serde(rename = "SpecID")]
        pub spec_id: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Option id.
        #[serde(rename = "OptionID")]
        pub option_id: Option<String>,
        /// Value.
        pub value: Option<String>,
        /// Markup type.
        pub price_markup_type: Option<String>,
        /// Markup.
        #[serde(with = "crate::serde_util::money")]
        pub price_markup: Option<Decimal>,
    }
}

api_model! {
    /// A product.
    pub struct Product {
        /// Owner id.
        #[serde(rename = "OwnerID")]
        pub owner_id: Option<String>,
        /// Default price schedule.
        #[serde(rename = "DefaultPriceScheduleID")]
        pub default_price_schedule_id: Option<String>,
        /// Auto-forward to supplier.
        pub auto_forward: Option<bool>,
        /// Product id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Parent product id.
        #[serde(rename = "ParentID")]
        pub parent_id: Option<String>,
        /// Is a parent.
        pub is_parent: Option<bool>,
        /// Is a bundle (read-only).
        pub is_bundle: Option<bool>,
        /// Name.
        pub name: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Quantity multiplier.
        pub quantity_multiplier: Option<i64>,
        /// Weight.
        #[serde(with = "crate::serde_util::money")]
        pub ship_weight: Option<Decimal>,
        /// Height.
        #[serde(with = "crate::serde_util::money")]
        pub ship_height: Option<Decimal>,
        /// Width.
        #[serde(with = "crate::serde_util::money")]
        pub ship_width: Option<Decimal>,
        /// Length.
        #[serde(with = "crate::serde_util::money")]
        pub ship_length: Option<Decimal>,
        /// Active.
        pub active: Option<bool>,
        /// Number of specs (read-only).
        pub spec_count: Option<i64>,
        /// Number of variants (read-only).
        pub variant_count: Option<i64>,
        /// Ship-from address id.
        #[serde(rename = "ShipFromAddressID")]
        pub ship_from_address_id: Option<String>,
        /// Stock.
        pub inventory: Option<Inventory>,
        /// Default supplier id.
        #[serde(rename = "DefaultSupplierID")]
        pub default_supplier_id: Option<String>,
        /// All suppliers can sell.
        pub all_suppliers_can_sell: Option<bool>,
        /// Returnable.
        pub returnable: Option<bool>,
        /// Created (read-only).
        pub date_created: Option<DateTime<Utc>>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// Product-level stock.
    pub struct Inventory {
        /// Tracking and enforcement on.
        pub enabled: Option<bool>,
        /// Low-stock notification level.
        pub notification_point: Option<i64>,
        /// Tracked per variant.
        pub variant_level_tracking: Option<bool>,
        /// Orders may exceed stock.
        pub order_can_exceed: Option<bool>,
        /// Available quantity (decremented on submit).
        pub quantity_available: Option<i64>,
        /// Last change (read-only).
        pub last_updated: Option<DateTime<Utc>>,
    }
}

api_model! {
    /// A product variant.
    pub struct Variant {
        /// Variant id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Active.
        pub active: Option<bool>,
        /// Variant-level stock.
        pub inventory: Option<VariantInventory>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// Variant-level stock.
    pub struct VariantInventory {
        /// Available quantity.
        pub quantity_available: Option<i64>,
        /// Low-stock notification level.
        pub notification_point: Option<i64>,
        /// Last change (read-only).
        pub last_updated: Option<DateTime<Utc>>,
    }
}

api_model! {
    /// A payment on an order (`/orders/{direction}/{orderID}/payments`).
    pub struct Payment {
        /// Payment id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// `CreditCard`, `SpendingAccount`, `PurchaseOrder`.
        pub r#type: Option<String>,
        /// Created.
        pub date_created: Option<DateTime<Utc>>,
        /// Credit card id.
        #[serde(rename = "CreditCardID")]
        pub credit_card_id: Option<String>,
        /// Spending account id.
        #[serde(rename = "SpendingAccountID")]
        pub spending_account_id: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Amount.
        #[serde(with = "crate::serde_util::money")]
        pub amount: Option<Decimal>,
        /// Currency.
        pub currency: Option<String>,
        /// Accepted.
        pub accepted: Option<bool>,
        /// Gateway transactions.
        pub transactions: Option<Vec<PaymentTransaction>>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// One gateway transaction of a [`Payment`].
    pub struct PaymentTransaction {
        /// Transaction id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Type.
        pub r#type: Option<String>,
        /// Executed.
        pub date_executed: Option<DateTime<Utc>>,
        /// Currency.
        pub currency: Option<String>,
        /// Amount.
        #[serde(with = "crate::serde_util::money")]
        pub amount: Option<Decimal>,
        /// Succeeded.
        pub succeeded: Option<bool>,
        /// Gateway result code.
        pub result_code: Option<String>,
        /// Gateway result message.
        pub result_message: Option<String>,
        /// Extended properties.
        #[serde(rename = "xp")]
        pub xp: Option<Value>,
    }
}

api_model! {
    /// A webhook configuration (`/webhooks`).
    pub struct Webhook {
        /// Webhook id.
        #[serde(rename = "ID")]
        pub id: Option<String>,
        /// Name.
        pub name: Option<String>,
        /// Description.
        pub description: Option<String>,
        /// Where to POST (https in production).
        pub url: Option<String>,
        /// HMAC key for `X-oc-hash` (at most 50 characters).
        #[serde(serialize_with = "expose_secret")]
        pub hash_key: Option<Secret>,
        /// Roles added to the payload's `UserToken`.
        pub elevated_roles: Option<Vec<String>>,
        /// Copied into every payload.
        pub config_data: Option<Value>,
        /// Pre-hook (OrderCloud waits for `{"proceed": ...}`).
        pub before_process_request: Option<bool>,
        /// Fires only for requests made with these API clients.
        #[serde(rename = "ApiClientIDs")]
        pub api_client_ids: Option<Vec<String>>,
        /// Routes and verbs that trigger it.
        pub webhook_routes: Option<Vec<WebhookRoute>>,
        /// Delivery config id.
        #[serde(rename = "DeliveryConfigID")]
        pub delivery_config_id: Option<String>,
        /// Extra header name sent to `Url`.
        pub custom_auth_header_name: Option<String>,
        /// Extra header value (write-only).
        #[serde(serialize_with = "expose_secret")]
        pub custom_auth_header_value: Option<Secret>,
    }
}

api_model! {
    /// A route that triggers a webhook, e.g.
    /// `{"Route": "v1/orders/{direction}/{orderID}/submit", "Verb": "POST"}`.
    pub struct WebhookRoute {
        /// Route template with version prefix, no leading slash.
        pub route: Option<String>,
        /// `POST`, `PUT`, `PATCH` or `DELETE`.
        pub verb: Option<String>,
    }
}

/// Secrets in request bodies are sent as they are (they are meant for the
/// target); `Debug` still redacts them.
fn expose_secret<S: Serializer>(value: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

/// The token endpoint's answer.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub expires_in: Option<u64>,
}
