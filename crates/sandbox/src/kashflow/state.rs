//! The KashFlow simulator's data and every write rule: customers, invoices
//! (lines, VAT, totals in decimal arithmetic), payments and bulk payments,
//! products (stock), nominals. Pure and synchronous: the routes take the lock,
//! call in here, and release it before any `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{Duration, NaiveDateTime, NaiveTime};
use rust_decimal::{Decimal, RoundingStrategy};
use uuid::Uuid;

use super::config::KashFlowConfig;
use super::error::{codes, KfError, KfResult};
use super::input::{KfDate, ListQuery, Order};
use super::model::*;
use super::seed;

/// Nominal code of invoice lines that name none, when the customer has no default.
pub const DEFAULT_SALES_NOMINAL: i64 = 4000;
/// Payment terms of a customer created without any.
pub const DEFAULT_PAYMENT_DAYS: i64 = 30;
/// KashFlow's "never" date for `FirstInvoiceDate`/`LastInvoiceDate`.
pub const NEVER_DATE: &str = "1900-01-01 12:00:00";
/// Invoice status once payments cover the gross amount.
pub const STATUS_PAID: &str = "Paid";
/// Invoice status otherwise.
pub const STATUS_UNPAID: &str = "Unpaid";

/// Rounds money to 2 places, half away from zero.
pub fn round2(value: Decimal) -> Decimal {
    value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero)
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// One customer's invoices and the running sums behind its read-only
/// aggregates (`InvoiceCount`, `InvoicedNetAmount`, `OutstandingBalance`,
/// first and last invoice dates), so an invoice change costs the same
/// however many invoices the customer has.
#[derive(Debug, Default)]
struct CustomerInvoices {
    numbers: BTreeSet<i64>,
    sums: InvoiceSums,
    /// Issue dates, each with how many of the invoices have it.
    issued: BTreeMap<NaiveDateTime, usize>,
}

#[derive(Debug, Default, Clone, Copy)]
struct InvoiceSums {
    net: Decimal,
    vat: Decimal,
    gross: Decimal,
    paid: Decimal,
}

/// Everything the simulator holds.
#[derive(Debug)]
pub struct Data {
    with_offset: bool,
    customer_code_prefix: String,
    /// Customers by id.
    pub customers: BTreeMap<i64, Customer>,
    customer_ids: HashMap<String, i64>,
    customer_invoices: HashMap<i64, CustomerInvoices>,
    /// Invoices by number.
    pub invoices: BTreeMap<i64, Invoice>,
    /// Bulk payments by number.
    pub bulk_payments: BTreeMap<i64, BulkPayment>,
    /// Nominals by code.
    pub nominals: BTreeMap<i64, Nominal>,
    /// Products by id.
    pub products: BTreeMap<i64, Product>,
    /// Configured VAT rates.
    pub vat_rates: Vec<VatRate>,
    /// Taxes.
    pub taxes: Vec<Tax>,
    /// Currencies; the first is the home currency.
    pub currencies: Vec<Currency>,
    /// Invoice payment methods.
    pub payment_methods: Vec<PaymentMethod>,
    /// Bank accounts.
    pub bank_accounts: Vec<BankAccount>,
    next_id: i64,
    next_customer_code: u64,
    next_invoice_number: i64,
    next_bulk_number: i64,
}

impl Data {
    /// Fresh data per configuration (seeded reference data unless disabled).
    pub fn new(config: &KashFlowConfig) -> Data {
        let mut data = Data {
            with_offset: config.dates_with_offset,
            customer_code_prefix: config.customer_code_prefix.clone(),
            customers: BTreeMap::new(),
            customer_ids: HashMap::new(),
            customer_invoices: HashMap::new(),
            invoices: BTreeMap::new(),
            bulk_payments: BTreeMap::new(),
            nominals: BTreeMap::new(),
            products: BTreeMap::new(),
            vat_rates: Vec::new(),
            taxes: Vec::new(),
            currencies: Vec::new(),
            payment_methods: Vec::new(),
            bank_accounts: Vec::new(),
            next_id: seed::FIRST_GENERATED_ID,
            next_customer_code: 1,
            next_invoice_number: config.first_invoice_number.max(1),
            next_bulk_number: 1,
        };
        seed::currencies(&mut data.currencies);
        if config.seed_reference_data {
            seed::reference_data(&mut data);
        }
        data
    }

    /// A date rendered per configuration.
    pub fn date(&self, at: NaiveDateTime) -> KfDate {
        KfDate::new(at, self.with_offset)
    }

    fn never(&self) -> KfDate {
        let at = super::input::parse_date(NEVER_DATE).unwrap_or_default();
        // The sentinel never carries an offset.
        KfDate::new(at, false)
    }

    fn next_id(&mut self) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    // ------------------------------------------------------------ lookups

    /// A customer by code.
    pub fn customer(&self, code: &str) -> KfResult<&Customer> {
        self.customer_ids
            .get(code)
            .and_then(|id| self.customers.get(id))
            .ok_or_else(|| KfError::not_found(format!("Customer {code} was not found.")))
    }

    /// An invoice by number.
    pub fn invoice(&self, number: i64) -> KfResult<&Invoice> {
        self.invoices
            .get(&number)
            .ok_or_else(|| KfError::not_found(format!("Invoice {number} was not found.")))
    }

    /// Full invoice for `GET /invoices/{number}`.
    pub fn invoice_detail(&self, number: i64) -> KfResult<InvoiceDetail<'_>> {
        let invoice = self.invoice(number)?;
        Ok(InvoiceDetail {
            header: &invoice.header,
            lines: &invoice.lines,
            payments: &invoice.payments,
            previous_number: self.invoices.range(..number).next_back().map(|(n, _)| *n),
            next_number: self.invoices.range(number + 1..).next().map(|(n, _)| *n),
        })
    }

    fn currency(&self, code: &str) -> KfResult<&Currency> {
        self.currencies
            .iter()
            .find(|c| c.code.eq_ignore_ascii_case(code))
            .ok_or_else(|| {
                KfError::bad(
                    codes::UNKNOWN_CURRENCY,
                    format!("Currency {code} is not set up."),
                )
            })
    }

    fn home_currency(&self) -> Currency {
        self.currencies.first().cloned().unwrap_or_else(seed::gbp)
    }

    fn nominal(&self, code: i64, field: &str) -> KfResult<&Nominal> {
        self.nominals.get(&code).ok_or_else(|| {
            KfError::bad(
                codes::UNKNOWN_NOMINAL,
                format!("{field}: nominal code {code} does not exist."),
            )
        })
    }

    /// A product by nominal and code.
    pub fn product(&self, nominal_code: i64, code: &str) -> KfResult<&Product> {
        self.products
            .values()
            .find(|p| p.nominal_code == nominal_code && p.code.eq_ignore_ascii_case(code))
            .ok_or_else(|| {
                KfError::not_found(format!(
                    "Product {code} under nominal {nominal_code} was not found."
                ))
            })
    }

    fn product_id_for_line(&self, code: &str, nominal: Option<i64>) -> Option<i64> {
        let matches = |p: &&Product| p.code.eq_ignore_ascii_case(code);
        nominal
            .and_then(|n| {
                self.products
                    .values()
                    .filter(matches)
                    .find(|p| p.nominal_code == n)
            })
            .or_else(|| self.products.values().find(matches))
            .map(|p| p.id)
    }

    fn check_vat_level(&self, level: Decimal, field: &str) -> KfResult<()> {
        if self.vat_rates.iter().any(|r| r.rate == level) {
            return Ok(());
        }
        let known: Vec<String> = self
            .vat_rates
            .iter()
            .map(|r| r.rate.normalize().to_string())
            .collect();
        Err(KfError::bad(
            codes::INVALID_VAT_LEVEL,
            format!(
                "{field}: VAT level {} is not a configured rate ({}).",
                level.normalize(),
                known.join(", ")
            ),
        ))
    }

    fn check_method(&self, method: i64, field: &str) -> KfResult<()> {
        if self.payment_methods.iter().any(|m| m.id == method) {
            Ok(())
        } else {
            Err(KfError::bad(
                codes::UNKNOWN_PAYMENT_METHOD,
                format!("{field}: payment method {method} does not exist."),
            ))
        }
    }

    fn check_account(&self, account: i64, field: &str) -> KfResult<()> {
        if self.bank_accounts.iter().any(|a| a.id == account) {
            Ok(())
        } else {
            Err(KfError::bad(
                codes::UNKNOWN_BANK_ACCOUNT,
                format!("{field}: bank account {account} does not exist."),
            ))
        }
    }

    fn default_method(&self) -> i64 {
        self.payment_methods.first().map(|m| m.id).unwrap_or(0)
    }

    fn default_account(&self) -> i64 {
        self.bank_accounts
            .iter()
            .find(|a| a.is_default_account)
            .or(self.bank_accounts.first())
            .map(|a| a.id)
            .unwrap_or(0)
    }

    fn resolve_address(address: Address) -> Address {
        let country_name = address
            .country_code
            .as_deref()
            .and_then(seed::country_name)
            .map(str::to_owned);
        Address {
            country_name: country_name.or(address.country_name),
            ..address
        }
    }

    // ------------------------------------------------------------ customers

    fn generate_customer_code(&mut self) -> String {
        loop {
            let code = format!(
                "{}{:04}",
                self.customer_code_prefix, self.next_customer_code
            );
            self.next_customer_code += 1;
            if !self.customer_ids.contains_key(&code) {
                return code;
            }
        }
    }

    /// `POST /customers`.
    pub fn create_customer(
        &mut self,
        input: CustomerInput,
        now: NaiveDateTime,
    ) -> KfResult<&Customer> {
        let name = non_empty(input.name.clone());
        let create_name = input
            .create_customer_name_if_empty_or_null
            .is_some_and(|f| f.0);
        if name.is_none() && !create_name {
            return Err(KfError::validation(
                "Name is required (or set CreateCustomerNameIfEmptyOrNull).",
            ));
        }
        let code = match non_empty(input.code.clone()) {
            Some(code) if self.customer_ids.contains_key(&code) => {
                if input.create_customer_code_if_duplicate.is_some_and(|f| f.0) {
                    self.generate_customer_code()
                } else {
                    return Err(KfError::bad(
                        codes::DUPLICATE_CUSTOMER_CODE,
                        format!("Customer code {code} is already in use."),
                    ));
                }
            }
            Some(code) => code,
            None => self.generate_customer_code(),
        };
        let name = name.unwrap_or_else(|| code.clone());
        let currency = match input.currency.as_ref().and_then(|c| c.code.as_deref()) {
            Some(code) => self.currency(code)?.clone(),
            None => self.home_currency(),
        };
        let default_nominal_code = input.default_nominal_code.map_or(0, |n| n.0);
        if default_nominal_code != 0 {
            self.nominal(default_nominal_code, "DefaultNominalCode")?;
        }
        let created = self.date(now);
        let never = self.never();
        let customer = Customer {
            id: self.next_id(),
            code: code.clone(),
            display_name: name.clone(),
            name,
            note: input.note.unwrap_or_default(),
            source: input.source.map_or(0, |s| s.0),
            discount_rate: input.discount_rate.unwrap_or_default(),
            show_discount: input.show_discount.is_some_and(|f| f.0),
            vat_number: input.vat_number.unwrap_or_default(),
            auto_include_vat_number: input.auto_include_vat_number.is_some_and(|f| f.0),
            receives_wholesale_pricing: input.receives_wholesale_pricing.is_some_and(|f| f.0),
            default_nominal_code,
            default_customer_reference: input.default_customer_reference.unwrap_or_default(),
            use_custom_delivery_address: input.use_custom_delivery_address.is_some_and(|f| f.0),
            is_archived: input.is_archived.is_some_and(|f| f.0),
            trade_border_type: input.trade_border_type.map_or(1, |t| t.0),
            apply_withholding_tax: input.apply_withholding_tax.is_some_and(|f| f.0),
            withholding_tax_rate: input.withholding_tax_rate.unwrap_or_default(),
            currency,
            payment_terms: input.payment_terms.unwrap_or(PaymentTerms {
                kind: "AfterIssuedDate".to_owned(),
                days: FlexIntOut(DEFAULT_PAYMENT_DAYS),
            }),
            contacts: input.contacts.unwrap_or_default(),
            addresses: input
                .addresses
                .unwrap_or_default()
                .into_iter()
                .map(Self::resolve_address)
                .collect(),
            delivery_addresses: input
                .delivery_addresses
                .unwrap_or_default()
                .into_iter()
                .map(Self::resolve_address)
                .collect(),
            custom_text_boxes: input.custom_text_boxes.unwrap_or_default(),
            custom_check_boxes: input.custom_check_boxes.unwrap_or_default(),
            created_date: created.clone(),
            last_updated_date: created,
            invoice_count: 0,
            invoiced_net_amount: Decimal::ZERO,
            invoiced_vat_amount: Decimal::ZERO,
            total_paid_amount: Decimal::ZERO,
            outstanding_balance: Decimal::ZERO,
            first_invoice_date: never.clone(),
            last_invoice_date: never,
        };
        let id = customer.id;
        self.customer_ids.insert(code, id);
        Ok(self.customers.entry(id).or_insert(customer))
    }

    /// `PUT /customers/{code}`: supplied fields replace. Returns the customer
    /// and whether its code changed.
    pub fn update_customer(
        &mut self,
        code: &str,
        input: CustomerInput,
        now: NaiveDateTime,
    ) -> KfResult<(&Customer, bool)> {
        let id = self.customer(code)?.id;
        let new_code = non_empty(input.code.clone()).filter(|c| c != code);
        if let Some(new_code) = &new_code {
            if self.customer_ids.contains_key(new_code) {
                return Err(KfError::bad(
                    codes::DUPLICATE_CUSTOMER_CODE,
                    format!("Customer code {new_code} is already in use."),
                ));
            }
        }
        if let Some(name) = &input.name {
            if name.trim().is_empty() {
                return Err(KfError::validation("Name cannot be empty."));
            }
        }
        let currency = match input.currency.as_ref().and_then(|c| c.code.as_deref()) {
            Some(code) => Some(self.currency(code)?.clone()),
            None => None,
        };
        if let Some(nominal) = input.default_nominal_code.filter(|n| n.0 != 0) {
            self.nominal(nominal.0, "DefaultNominalCode")?;
        }
        let updated = self.date(now);
        let Some(customer) = self.customers.get_mut(&id) else {
            return Err(KfError::not_found(format!(
                "Customer {code} was not found."
            )));
        };
        if let Some(new_code) = &new_code {
            customer.code = new_code.clone();
        }
        if let Some(name) = input.name {
            customer.name = name.trim().to_owned();
            customer.display_name = customer.name.clone();
        }
        macro_rules! set {
            ($field:ident) => {
                if let Some(value) = input.$field {
                    customer.$field = value;
                }
            };
            ($field:ident, flag) => {
                if let Some(value) = input.$field {
                    customer.$field = value.0;
                }
            };
        }
        set!(note);
        set!(source, flag);
        set!(discount_rate);
        set!(show_discount, flag);
        set!(vat_number);
        set!(auto_include_vat_number, flag);
        set!(receives_wholesale_pricing, flag);
        set!(default_nominal_code, flag);
        set!(default_customer_reference);
        set!(use_custom_delivery_address, flag);
        set!(is_archived, flag);
        set!(trade_border_type, flag);
        set!(apply_withholding_tax, flag);
        set!(withholding_tax_rate);
        set!(payment_terms);
        set!(contacts);
        set!(custom_text_boxes);
        set!(custom_check_boxes);
        if let Some(currency) = currency {
            customer.currency = currency;
        }
        if let Some(addresses) = input.addresses {
            customer.addresses = addresses.into_iter().map(Self::resolve_address).collect();
        }
        if let Some(addresses) = input.delivery_addresses {
            customer.delivery_addresses =
                addresses.into_iter().map(Self::resolve_address).collect();
        }
        customer.last_updated_date = updated;
        let (customer_code, customer_name) = (customer.code.clone(), customer.name.clone());
        if let Some(new_code) = &new_code {
            self.customer_ids.remove(code);
            self.customer_ids.insert(new_code.clone(), id);
        }
        // Invoices show the customer's current code and name.
        let numbers = self
            .customer_invoices
            .get(&id)
            .map(|ledger| ledger.numbers.clone())
            .unwrap_or_default();
        for number in numbers {
            if let Some(invoice) = self.invoices.get_mut(&number) {
                invoice.header.customer_code.clone_from(&customer_code);
                invoice.header.customer_name.clone_from(&customer_name);
            }
        }
        let customer = self
            .customers
            .get(&id)
            .ok_or_else(|| KfError::not_found(format!("Customer {code} was not found.")))?;
        Ok((customer, new_code.is_some()))
    }

    /// `DELETE /customers/{code}`; 400 while it has invoices.
    pub fn delete_customer(&mut self, code: &str) -> KfResult<()> {
        let id = self.customer(code)?.id;
        if self
            .customer_invoices
            .get(&id)
            .is_some_and(|ledger| !ledger.numbers.is_empty())
        {
            return Err(KfError::bad(
                codes::CUSTOMER_HAS_INVOICES,
                format!("Customer {code} has invoices and cannot be deleted."),
            ));
        }
        self.customer_ids.remove(code);
        self.customers.remove(&id);
        self.customer_invoices.remove(&id);
        Ok(())
    }

    /// Writes a customer's read-only aggregates from its running sums
    /// (constant time: the sums follow every invoice change, see
    /// [`CustomerInvoices`]).
    fn recompute_customer(&mut self, customer_id: i64) {
        let never = self.never();
        let with_offset = self.with_offset;
        let Some(customer) = self.customers.get_mut(&customer_id) else {
            return;
        };
        let ledger = self.customer_invoices.get(&customer_id);
        let sums = ledger.map(|l| l.sums).unwrap_or_default();
        let date = |at: Option<&NaiveDateTime>| {
            at.map_or_else(|| never.clone(), |at| KfDate::new(*at, with_offset))
        };
        customer.invoice_count =
            ledger.map_or(0, |l| i64::try_from(l.numbers.len()).unwrap_or(i64::MAX));
        customer.invoiced_net_amount = sums.net;
        customer.invoiced_vat_amount = sums.vat;
        customer.total_paid_amount = sums.paid;
        customer.outstanding_balance = sums.gross - sums.paid;
        customer.first_invoice_date = date(ledger.and_then(|l| l.issued.keys().next()));
        customer.last_invoice_date = date(ledger.and_then(|l| l.issued.keys().next_back()));
    }

    /// Takes an invoice's amounts out of its customer's sums (before the
    /// invoice changes or goes).
    fn unbook(&mut self, header: &InvoiceHeader) {
        if let Some(ledger) = self.customer_invoices.get_mut(&header.customer_id) {
            ledger.sums.net -= header.net_amount;
            ledger.sums.vat -= header.vat_amount;
            ledger.sums.gross -= header.gross_amount;
            ledger.sums.paid -= header.total_paid_amount;
            if let Some(count) = ledger.issued.get_mut(&header.issued_date.at) {
                *count -= 1;
                if *count == 0 {
                    ledger.issued.remove(&header.issued_date.at);
                }
            }
        }
    }

    /// Adds an invoice's amounts to its customer's sums (after it was
    /// created or changed).
    fn book(&mut self, header: &InvoiceHeader) {
        let ledger = self
            .customer_invoices
            .entry(header.customer_id)
            .or_default();
        ledger.sums.net += header.net_amount;
        ledger.sums.vat += header.vat_amount;
        ledger.sums.gross += header.gross_amount;
        ledger.sums.paid += header.total_paid_amount;
        *ledger.issued.entry(header.issued_date.at).or_default() += 1;
    }

    // ------------------------------------------------------------ invoices

    fn build_lines(
        &mut self,
        inputs: Vec<LineInput>,
        customer_default_nominal: i64,
        exchange_rate: Decimal,
    ) -> KfResult<Vec<LineItem>> {
        let mut lines = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            let field = format!("LineItems[{index}]");
            let product_code = non_empty(input.product_code.clone());
            let product = match &product_code {
                Some(code) => {
                    let id = self
                        .product_id_for_line(code, input.nominal_code.map(|n| n.0))
                        .ok_or_else(|| {
                            KfError::bad(
                                codes::UNKNOWN_PRODUCT,
                                format!("{field}.ProductCode: product {code} does not exist."),
                            )
                        })?;
                    self.products.get(&id).cloned()
                }
                None => None,
            };
            let nominal_code = match (input.nominal_code, &product) {
                (Some(code), _) if code.0 != 0 => code.0,
                (_, Some(product)) => product.nominal_code,
                _ if customer_default_nominal != 0 => customer_default_nominal,
                _ => DEFAULT_SALES_NOMINAL,
            };
            let nominal = self
                .nominal(nominal_code, &format!("{field}.NominalCode"))?
                .clone();
            let quantity = input.quantity.unwrap_or(Decimal::ONE);
            let rate = match (input.rate, &product) {
                (Some(rate), _) => rate,
                (None, Some(product)) => product.price,
                (None, None) => {
                    return Err(KfError::validation(format!("{field}.Rate is required.")))
                }
            };
            let vat_exempt = match (input.vat_exempt, &product) {
                (Some(flag), _) => flag.0,
                (None, Some(product)) => product.vat_exempt,
                (None, None) => false,
            };
            let vat_level = if vat_exempt {
                input.vat_level.unwrap_or(Decimal::ZERO)
            } else {
                let level = input
                    .vat_level
                    .or(product.as_ref().map(|p| p.vat_rate))
                    .unwrap_or(nominal.vat_rate);
                self.check_vat_level(level, &format!("{field}.VATLevel"))?;
                level
            };
            let vat_amount = if vat_exempt {
                Decimal::ZERO
            } else {
                match input.vat_amount {
                    Some(amount) => amount,
                    None => round2(quantity * rate * vat_level / Decimal::ONE_HUNDRED),
                }
            };
            let description = input
                .description
                .or_else(|| product.as_ref().map(|p| p.name.clone()))
                .unwrap_or_default();
            lines.push(LineItem {
                id: self.next_id(),
                number: i64::try_from(index + 1).unwrap_or(i64::MAX),
                description,
                quantity,
                rate,
                vat_level,
                vat_amount,
                vat_exempt,
                nominal_code,
                nominal_id: nominal.id,
                nominal_name: nominal.name.clone(),
                product_code: product.as_ref().map(|p| p.code.clone()).unwrap_or_default(),
                product_name: product.as_ref().map(|p| p.name.clone()).unwrap_or_default(),
                project_number: input.project_number.map_or(0, |p| p.0),
                home_currency_rate: (rate / exchange_rate)
                    .round_dp_with_strategy(4, RoundingStrategy::MidpointAwayFromZero),
                home_currency_vat_amount: round2(vat_amount / exchange_rate),
            });
        }
        Ok(lines)
    }

    /// Builds the payment list from a request; entries with an `Id` update
    /// the existing payment of that id, others are new.
    fn build_payments(
        &mut self,
        invoice_number: i64,
        inputs: Vec<PaymentInput>,
        existing: &[PaymentLine],
        now: NaiveDateTime,
    ) -> KfResult<Vec<PaymentLine>> {
        let mut payments = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.into_iter().enumerate() {
            let field = format!("PaymentLines[{index}]");
            let previous = match input.id.filter(|id| id.0 != 0) {
                Some(id) => Some(existing.iter().find(|p| p.id == id.0).cloned().ok_or_else(
                    || {
                        KfError::bad(
                            codes::UNKNOWN_PAYMENT,
                            format!(
                                "{field}.Id: payment {} is not on invoice {invoice_number}.",
                                id.0
                            ),
                        )
                    },
                )?),
                None => None,
            };
            let amount = match (input.amount, &previous) {
                (Some(amount), _) => amount,
                (None, Some(previous)) => previous.amount,
                (None, None) => {
                    return Err(KfError::validation(format!("{field}.Amount is required.")))
                }
            };
            if amount.is_zero() {
                return Err(KfError::validation(format!(
                    "{field}.Amount cannot be zero."
                )));
            }
            let method = input
                .method
                .map(|m| m.0)
                .or(previous.as_ref().map(|p| p.method))
                .unwrap_or_else(|| self.default_method());
            self.check_method(method, &format!("{field}.Method"))?;
            let account_id = input
                .account_id
                .map(|a| a.0)
                .or(previous.as_ref().map(|p| p.account_id))
                .unwrap_or_else(|| self.default_account());
            self.check_account(account_id, &format!("{field}.AccountId"))?;
            let date = match (input.date, &previous) {
                (Some(date), _) => self.date(date.0),
                (None, Some(previous)) => previous.date.clone(),
                (None, None) => self.date(now),
            };
            let payment = match previous {
                Some(previous) => PaymentLine {
                    date,
                    amount,
                    method,
                    account_id,
                    note: input.note.unwrap_or(previous.note.clone()),
                    reference: input.reference.unwrap_or(previous.reference.clone()),
                    payment_processor: input
                        .payment_processor
                        .unwrap_or(previous.payment_processor.clone()),
                    is_external_refund: input
                        .is_external_refund
                        .map_or(previous.is_external_refund, |f| f.0),
                    ..previous
                },
                None => PaymentLine {
                    id: self.next_id(),
                    invoice_number,
                    date,
                    amount,
                    method,
                    account_id,
                    note: input.note.unwrap_or_default(),
                    reference: input.reference.unwrap_or_default(),
                    bulk_id: 0,
                    bulk_payment_number: 0,
                    payment_processor: input.payment_processor.unwrap_or_default(),
                    is_external_refund: input.is_external_refund.is_some_and(|f| f.0),
                    permalink: format!("/v2/documents/invoice/payment/{}", Uuid::new_v4()),
                },
            };
            payments.push(payment);
        }
        Ok(payments)
    }

    /// Changes managed stock by `sign * quantity` for every product line.
    fn apply_stock(&mut self, lines: &[LineItem], sign: Decimal) {
        for line in lines.iter().filter(|l| !l.product_code.is_empty()) {
            let product = self
                .products
                .values_mut()
                .find(|p| p.nominal_code == line.nominal_code && p.code == line.product_code);
            if let Some(product) = product.filter(|p| p.manage_stock_level) {
                product.quantity_in_stock += sign * line.quantity;
            }
        }
    }

    fn insert_invoice(&mut self, invoice: Invoice) {
        let number = invoice.header.number;
        let customer_id = invoice.header.customer_id;
        self.book(&invoice.header);
        self.customer_invoices
            .entry(customer_id)
            .or_default()
            .numbers
            .insert(number);
        self.invoices.insert(number, invoice);
        self.recompute_customer(customer_id);
    }

    fn remove_invoice(&mut self, number: i64) -> Option<Invoice> {
        let invoice = self.invoices.remove(&number)?;
        let customer_id = invoice.header.customer_id;
        self.unbook(&invoice.header);
        if let Some(ledger) = self.customer_invoices.get_mut(&customer_id) {
            ledger.numbers.remove(&number);
        }
        self.recompute_customer(customer_id);
        Some(invoice)
    }

    /// `POST /invoices`.
    pub fn create_invoice(&mut self, input: InvoiceInput, now: NaiveDateTime) -> KfResult<i64> {
        let customer_code = non_empty(input.customer_code.clone())
            .ok_or_else(|| KfError::validation("CustomerCode is required."))?;
        let customer = self
            .customer_ids
            .get(&customer_code)
            .and_then(|id| self.customers.get(id))
            .cloned()
            .ok_or_else(|| {
                KfError::bad(
                    codes::UNKNOWN_CUSTOMER,
                    format!("CustomerCode: customer {customer_code} does not exist."),
                )
            })?;
        let number = match input.number.filter(|n| n.0 != 0) {
            Some(number) if number.0 < 0 => {
                return Err(KfError::validation(
                    "Number must be a positive whole number.",
                ))
            }
            Some(number) if self.invoices.contains_key(&number.0) => {
                return Err(KfError::bad(
                    codes::DUPLICATE_INVOICE_NUMBER,
                    format!("Invoice number {} is already in use.", number.0),
                ))
            }
            Some(number) => number.0,
            None => {
                while self.invoices.contains_key(&self.next_invoice_number) {
                    self.next_invoice_number += 1;
                }
                self.next_invoice_number
            }
        };
        self.next_invoice_number = self.next_invoice_number.max(number + 1);
        let currency = match input.currency.as_ref().and_then(|c| c.code.as_deref()) {
            Some(code) => self.currency(code)?.clone(),
            None => customer.currency.clone(),
        };
        let currency = Currency {
            exchange_rate: input
                .currency
                .as_ref()
                .and_then(|c| c.exchange_rate)
                .unwrap_or(currency.exchange_rate),
            ..currency
        };
        if currency.exchange_rate <= Decimal::ZERO {
            return Err(KfError::validation(
                "Currency.ExchangeRate must be above zero.",
            ));
        }
        let lines = self.build_lines(
            input.line_items.unwrap_or_default(),
            customer.default_nominal_code,
            currency.exchange_rate,
        )?;
        let payments =
            self.build_payments(number, input.payment_lines.unwrap_or_default(), &[], now)?;
        let issued = input
            .issued_date
            .map_or_else(|| now.date().and_time(NaiveTime::MIN), |d| d.0);
        let due = input.due_date.map_or_else(
            || issued + Duration::days(customer.payment_terms.days.0),
            |d| d.0,
        );
        let uuid = Uuid::new_v4();
        let header = InvoiceHeader {
            id: self.next_id(),
            number,
            customer_id: customer.id,
            customer_code: customer.code.clone(),
            customer_name: customer.name.clone(),
            customer_reference: input.customer_reference.unwrap_or_default(),
            issued_date: self.date(issued),
            due_date: self.date(due),
            paid_date: None,
            last_payment_date: None,
            net_amount: Decimal::ZERO,
            vat_amount: Decimal::ZERO,
            gross_amount: Decimal::ZERO,
            home_currency_gross_amount: Decimal::ZERO,
            total_paid_amount: Decimal::ZERO,
            due_amount: Decimal::ZERO,
            status: STATUS_UNPAID,
            currency,
            project_number: input.project_number.map_or(0, |p| p.0),
            address: input
                .address
                .map(Self::resolve_address)
                .or_else(|| customer.addresses.first().cloned())
                .unwrap_or_default(),
            delivery_address: input
                .delivery_address
                .map(Self::resolve_address)
                .or_else(|| customer.delivery_addresses.first().cloned())
                .unwrap_or_default(),
            use_custom_delivery_address: input
                .use_custom_delivery_address
                .map_or(customer.use_custom_delivery_address, |f| f.0),
            automatic_credit_control_enabled: input
                .automatic_credit_control_enabled
                .is_some_and(|f| f.0),
            overdue_days: 0,
            email_count: 0,
            vat_number: customer.vat_number.clone(),
            customer_discount: customer.discount_rate,
            permalink: format!("/v2/documents/invoice/{uuid}"),
            packing_slip_permalink: format!("/v2/documents/invoice/packingslip/{uuid}"),
            reminder_letters: [],
            created_date: self.date(now),
            last_updated_date: self.date(now),
        };
        let mut invoice = Invoice {
            header,
            lines,
            payments,
        };
        recompute_totals(&mut invoice);
        self.copy_addresses_to_customer(
            &invoice.header,
            input.update_customer_address.is_some_and(|f| f.0),
            input.update_customer_delivery_address.is_some_and(|f| f.0),
            now,
        );
        self.apply_stock(&invoice.lines, Decimal::NEGATIVE_ONE);
        self.insert_invoice(invoice);
        Ok(number)
    }

    /// `PUT /invoices/{number}`: supplied fields replace; `LineItems` and
    /// `PaymentLines` replace all. Returns the (possibly new) number and
    /// whether it changed.
    pub fn update_invoice(
        &mut self,
        number: i64,
        input: InvoiceInput,
        now: NaiveDateTime,
    ) -> KfResult<(i64, bool)> {
        let mut invoice = self.invoice(number)?.clone();
        let new_number = input
            .number
            .map(|n| n.0)
            .filter(|n| *n != 0 && *n != number);
        if let Some(new_number) = new_number {
            if new_number < 0 {
                return Err(KfError::validation(
                    "Number must be a positive whole number.",
                ));
            }
            if self.invoices.contains_key(&new_number) {
                return Err(KfError::bad(
                    codes::DUPLICATE_INVOICE_NUMBER,
                    format!("Invoice number {new_number} is already in use."),
                ));
            }
        }
        let customer = match non_empty(input.customer_code.clone()) {
            Some(code) => self
                .customer_ids
                .get(&code)
                .and_then(|id| self.customers.get(id))
                .cloned()
                .ok_or_else(|| {
                    KfError::bad(
                        codes::UNKNOWN_CUSTOMER,
                        format!("CustomerCode: customer {code} does not exist."),
                    )
                })?,
            None => self
                .customers
                .get(&invoice.header.customer_id)
                .cloned()
                .ok_or_else(|| {
                    KfError::bad(
                        codes::UNKNOWN_CUSTOMER,
                        "The invoice's customer no longer exists.",
                    )
                })?,
        };
        if let Some(currency_input) = &input.currency {
            let base = match currency_input.code.as_deref() {
                Some(code) => self.currency(code)?.clone(),
                None => invoice.header.currency.clone(),
            };
            let exchange_rate = currency_input.exchange_rate.unwrap_or(base.exchange_rate);
            if exchange_rate <= Decimal::ZERO {
                return Err(KfError::validation(
                    "Currency.ExchangeRate must be above zero.",
                ));
            }
            invoice.header.currency = Currency {
                exchange_rate,
                ..base
            };
        }
        let target_number = new_number.unwrap_or(number);
        let new_lines = match input.line_items {
            Some(lines) => Some(self.build_lines(
                lines,
                customer.default_nominal_code,
                invoice.header.currency.exchange_rate,
            )?),
            None => None,
        };
        let new_payments = match input.payment_lines {
            Some(payments) => {
                Some(self.build_payments(target_number, payments, &invoice.payments, now)?)
            }
            None => None,
        };
        // Everything is valid: apply.
        let old_lines = invoice.lines.clone();
        let h = &mut invoice.header;
        h.number = target_number;
        h.customer_id = customer.id;
        h.customer_code = customer.code.clone();
        h.customer_name = customer.name.clone();
        if let Some(reference) = input.customer_reference {
            h.customer_reference = reference;
        }
        if let Some(issued) = input.issued_date {
            h.issued_date = KfDate::new(issued.0, self.with_offset);
        }
        if let Some(due) = input.due_date {
            h.due_date = KfDate::new(due.0, self.with_offset);
        }
        if let Some(project) = input.project_number {
            h.project_number = project.0;
        }
        if let Some(address) = input.address {
            h.address = Self::resolve_address(address);
        }
        if let Some(address) = input.delivery_address {
            h.delivery_address = Self::resolve_address(address);
        }
        if let Some(flag) = input.use_custom_delivery_address {
            h.use_custom_delivery_address = flag.0;
        }
        if let Some(flag) = input.automatic_credit_control_enabled {
            h.automatic_credit_control_enabled = flag.0;
        }
        h.last_updated_date = KfDate::new(now, self.with_offset);
        if let Some(lines) = new_lines {
            invoice.lines = lines;
        }
        if let Some(payments) = new_payments {
            invoice.payments = payments;
        }
        for payment in &mut invoice.payments {
            payment.invoice_number = target_number;
        }
        recompute_totals(&mut invoice);
        self.copy_addresses_to_customer(
            &invoice.header,
            input.update_customer_address.is_some_and(|f| f.0),
            input.update_customer_delivery_address.is_some_and(|f| f.0),
            now,
        );
        self.remove_invoice(number);
        self.apply_stock(&old_lines, Decimal::ONE);
        self.apply_stock(&invoice.lines, Decimal::NEGATIVE_ONE);
        self.next_invoice_number = self.next_invoice_number.max(target_number + 1);
        self.insert_invoice(invoice);
        Ok((target_number, new_number.is_some()))
    }

    /// `UpdateCustomerAddress`/`UpdateCustomerDeliveryAddress`: the invoice's
    /// address becomes the customer's first (delivery) address.
    fn copy_addresses_to_customer(
        &mut self,
        header: &InvoiceHeader,
        address: bool,
        delivery: bool,
        now: NaiveDateTime,
    ) {
        if !address && !delivery {
            return;
        }
        let updated = self.date(now);
        let Some(customer) = self.customers.get_mut(&header.customer_id) else {
            return;
        };
        let put_first = |list: &mut Vec<Address>, value: &Address| match list.first_mut() {
            Some(first) => *first = value.clone(),
            None => list.push(value.clone()),
        };
        if address {
            put_first(&mut customer.addresses, &header.address);
        }
        if delivery {
            put_first(&mut customer.delivery_addresses, &header.delivery_address);
        }
        customer.last_updated_date = updated;
    }

    /// `DELETE /invoices/{number}` (stock of product lines is restored).
    pub fn delete_invoice(&mut self, number: i64) -> KfResult<()> {
        let invoice = self
            .remove_invoice(number)
            .ok_or_else(|| KfError::not_found(format!("Invoice {number} was not found.")))?;
        self.apply_stock(&invoice.lines, Decimal::ONE);
        Ok(())
    }

    // ------------------------------------------------------------ bulk payments

    /// `POST /invoices/bulk/payments`: all items are checked before any is applied.
    pub fn create_bulk_payment(
        &mut self,
        input: BulkPaymentInput,
        now: NaiveDateTime,
    ) -> KfResult<&BulkPayment> {
        let items = input.payment_items.unwrap_or_default();
        if items.is_empty() {
            return Err(KfError::validation(
                "PaymentItems must hold at least one item.",
            ));
        }
        let method = input.method.map_or_else(|| self.default_method(), |m| m.0);
        self.check_method(method, "Method")?;
        let account_id = input
            .account_id
            .map_or_else(|| self.default_account(), |a| a.0);
        self.check_account(account_id, "AccountId")?;
        let date = input.date.map_or(now, |d| d.0);
        let mut checked = Vec::with_capacity(items.len());
        for (index, item) in items.into_iter().enumerate() {
            let field = format!("PaymentItems[{index}]");
            let number = item
                .object_number
                .ok_or_else(|| KfError::validation(format!("{field}.ObjectNumber is required.")))?
                .0;
            if !self.invoices.contains_key(&number) {
                return Err(KfError::bad(
                    codes::UNKNOWN_INVOICE,
                    format!("{field}.ObjectNumber: invoice {number} does not exist."),
                ));
            }
            let amount = item
                .amount
                .ok_or_else(|| KfError::validation(format!("{field}.Amount is required.")))?;
            if amount.is_zero() {
                return Err(KfError::validation(format!(
                    "{field}.Amount cannot be zero."
                )));
            }
            checked.push((
                number,
                amount,
                item.paid_date.map_or(date, |d| d.0),
                item.contact_reference.unwrap_or_default(),
            ));
        }
        let bulk_id = self.next_id();
        let bulk_number = self.next_bulk_number;
        self.next_bulk_number += 1;
        let comment = input.comment.unwrap_or_default();
        let mut payment_items = Vec::with_capacity(checked.len());
        let mut touched = BTreeSet::new();
        for (number, amount, paid_date, reference) in checked {
            let payment = PaymentLine {
                id: self.next_id(),
                invoice_number: number,
                date: self.date(paid_date),
                amount,
                method,
                account_id,
                note: comment.clone(),
                reference: reference.clone(),
                bulk_id,
                bulk_payment_number: bulk_number,
                payment_processor: String::new(),
                is_external_refund: false,
                permalink: format!("/v2/documents/invoice/payment/{}", Uuid::new_v4()),
            };
            payment_items.push(BulkPaymentItem {
                id: payment.id,
                object_number: number,
                amount,
                paid_date: payment.date.clone(),
                contact_reference: reference,
            });
            if let Some(mut invoice) = self.invoices.remove(&number) {
                self.unbook(&invoice.header);
                invoice.payments.push(payment);
                invoice.header.last_updated_date = KfDate::new(now, self.with_offset);
                recompute_totals(&mut invoice);
                self.book(&invoice.header);
                touched.insert(invoice.header.customer_id);
                self.invoices.insert(number, invoice);
            }
        }
        for customer_id in touched {
            self.recompute_customer(customer_id);
        }
        let bulk = BulkPayment {
            id: bulk_id,
            number: bulk_number,
            date: self.date(date),
            comment,
            account_id,
            method,
            reconciled: false,
            permalink: format!("/v2/documents/invoice/bulkpayment/{}", Uuid::new_v4()),
            payment_items,
        };
        Ok(self.bulk_payments.entry(bulk_number).or_insert(bulk))
    }

    /// A bulk payment by number.
    pub fn bulk_payment(&self, number: i64) -> KfResult<&BulkPayment> {
        self.bulk_payments
            .get(&number)
            .ok_or_else(|| KfError::not_found(format!("Bulk payment {number} was not found.")))
    }

    /// `DELETE /invoices/bulk/payments/{number}`: its payments leave the invoices.
    pub fn delete_bulk_payment(&mut self, number: i64, now: NaiveDateTime) -> KfResult<()> {
        let bulk = self
            .bulk_payments
            .remove(&number)
            .ok_or_else(|| KfError::not_found(format!("Bulk payment {number} was not found.")))?;
        let mut touched = BTreeSet::new();
        for item in &bulk.payment_items {
            if let Some(mut invoice) = self.invoices.remove(&item.object_number) {
                let before = invoice.payments.len();
                self.unbook(&invoice.header);
                invoice.payments.retain(|p| p.bulk_id != bulk.id);
                if invoice.payments.len() != before {
                    invoice.header.last_updated_date = KfDate::new(now, self.with_offset);
                    recompute_totals(&mut invoice);
                    touched.insert(invoice.header.customer_id);
                }
                self.book(&invoice.header);
                self.invoices.insert(item.object_number, invoice);
            }
        }
        for customer_id in touched {
            self.recompute_customer(customer_id);
        }
        Ok(())
    }

    // ------------------------------------------------------------ products and nominals

    /// `POST /products`.
    pub fn create_product(&mut self, input: ProductInput) -> KfResult<&Product> {
        let code = non_empty(input.code.clone())
            .ok_or_else(|| KfError::validation("Code is required."))?;
        let nominal_code = input
            .nominal_code
            .ok_or_else(|| KfError::validation("NominalCode is required."))?
            .0;
        let nominal = self.nominal(nominal_code, "NominalCode")?.clone();
        if self.product(nominal_code, &code).is_ok() {
            return Err(KfError::bad(
                codes::DUPLICATE_PRODUCT_CODE,
                format!("Product {code} already exists under nominal {nominal_code}."),
            ));
        }
        let vat_rate = input.vat_rate.unwrap_or(nominal.vat_rate);
        let vat_exempt = input.vat_exempt.map_or(nominal.vat_exempt, |f| f.0);
        if !vat_exempt {
            self.check_vat_level(vat_rate, "VATRate")?;
        }
        let product = Product {
            id: self.next_id(),
            name: input.name.unwrap_or_else(|| code.clone()),
            code,
            description: input.description.unwrap_or_default(),
            nominal_code,
            nominal_id: nominal.id,
            price: input.price.unwrap_or_default(),
            whole_sale_price: input.whole_sale_price.unwrap_or_default(),
            vat_rate,
            vat_exempt,
            auto_fill_line_item: input.auto_fill_line_item.is_some_and(|f| f.0),
            manage_stock_level: input.manage_stock_level.is_some_and(|f| f.0),
            quantity_in_stock: input.quantity_in_stock.unwrap_or_default(),
            stock_warning_quantity: input.stock_warning_quantity.unwrap_or_default(),
            is_default: input.is_default.is_some_and(|f| f.0),
            in_use: input.in_use.is_none_or(|f| f.0),
        };
        let id = product.id;
        Ok(self.products.entry(id).or_insert(product))
    }

    /// `PUT /products/{nominal}/{code}`: supplied fields replace.
    pub fn update_product(
        &mut self,
        nominal_code: i64,
        code: &str,
        input: ProductInput,
    ) -> KfResult<&Product> {
        let id = self.product(nominal_code, code)?.id;
        if let Some(level) = input.vat_rate {
            if !input.vat_exempt.is_some_and(|f| f.0) {
                self.check_vat_level(level, "VATRate")?;
            }
        }
        let target_nominal = match input.nominal_code {
            Some(n) => self.nominal(n.0, "NominalCode")?.clone(),
            None => self.nominal(nominal_code, "NominalCode")?.clone(),
        };
        let new_code = non_empty(input.code.clone()).unwrap_or_else(|| code.to_owned());
        if (target_nominal.code != nominal_code || !new_code.eq_ignore_ascii_case(code))
            && self.product(target_nominal.code, &new_code).is_ok()
        {
            return Err(KfError::bad(
                codes::DUPLICATE_PRODUCT_CODE,
                format!(
                    "Product {new_code} already exists under nominal {}.",
                    target_nominal.code
                ),
            ));
        }
        let product = self
            .products
            .get_mut(&id)
            .ok_or_else(|| KfError::not_found(format!("Product {code} was not found.")))?;
        product.code = new_code;
        product.nominal_code = target_nominal.code;
        product.nominal_id = target_nominal.id;
        macro_rules! set {
            ($field:ident) => {
                if let Some(value) = input.$field {
                    product.$field = value;
                }
            };
            ($field:ident, flag) => {
                if let Some(value) = input.$field {
                    product.$field = value.0;
                }
            };
        }
        set!(name);
        set!(description);
        set!(price);
        set!(whole_sale_price);
        set!(vat_rate);
        set!(vat_exempt, flag);
        set!(auto_fill_line_item, flag);
        set!(manage_stock_level, flag);
        set!(quantity_in_stock);
        set!(stock_warning_quantity);
        set!(is_default, flag);
        set!(in_use, flag);
        Ok(product)
    }

    /// `DELETE /products/{nominal}/{code}`.
    pub fn delete_product(&mut self, nominal_code: i64, code: &str) -> KfResult<()> {
        let id = self.product(nominal_code, code)?.id;
        self.products.remove(&id);
        Ok(())
    }

    /// Sets a product's stock (control API). Without a nominal the first
    /// product with that code is used.
    pub fn set_stock(
        &mut self,
        code: &str,
        nominal_code: Option<i64>,
        quantity: Decimal,
    ) -> KfResult<&Product> {
        let id = self
            .product_id_for_line(code, nominal_code)
            .filter(|id| {
                nominal_code
                    .is_none_or(|n| self.products.get(id).is_some_and(|p| p.nominal_code == n))
            })
            .ok_or_else(|| KfError::not_found(format!("Product {code} was not found.")))?;
        let product = self
            .products
            .get_mut(&id)
            .ok_or_else(|| KfError::not_found(format!("Product {code} was not found.")))?;
        product.quantity_in_stock = quantity;
        Ok(product)
    }

    /// A nominal by code (404 when unknown).
    pub fn nominal_by_code(&self, code: i64) -> KfResult<&Nominal> {
        self.nominals
            .get(&code)
            .ok_or_else(|| KfError::not_found(format!("Nominal code {code} was not found.")))
    }

    /// `POST /nominals`; returns the nominal and whether it was created
    /// (`CreateWhenNotPresent` returns an existing one).
    pub fn create_nominal(&mut self, input: NominalInput) -> KfResult<(&Nominal, bool)> {
        let code = input
            .code
            .ok_or_else(|| KfError::validation("Code is required."))?
            .0;
        if code <= 0 {
            return Err(KfError::validation("Code must be a positive whole number."));
        }
        if self.nominals.contains_key(&code) {
            if input.create_when_not_present.is_some_and(|f| f.0) {
                let nominal = self.nominal_by_code(code)?;
                return Ok((nominal, false));
            }
            return Err(KfError::validation(format!(
                "Nominal code {code} already exists."
            )));
        }
        let name = non_empty(input.name).ok_or_else(|| KfError::validation("Name is required."))?;
        let vat_rate = input.vat_rate.unwrap_or_default();
        let vat_exempt = input.vat_exempt.is_some_and(|f| f.0);
        if !vat_exempt {
            self.check_vat_level(vat_rate, "VATRate")?;
        }
        let nominal = Nominal {
            id: self.next_id(),
            code,
            name,
            kind: input.kind.unwrap_or_else(|| "Sales".to_owned()),
            nom_type: input.nom_type.map_or(1, |n| n.0),
            classification: String::new(),
            description: input.description.unwrap_or_default(),
            price: Decimal::ZERO,
            whole_sale_price: Decimal::ZERO,
            vat_rate,
            vat_exempt,
            archived: false,
            disallowed: false,
            auto_fill_line_item: false,
            is_product: false,
            manage_stock_level: false,
            quantity_in_stock: Decimal::ZERO,
            stock_warning_quantity: Decimal::ZERO,
        };
        Ok((self.nominals.entry(code).or_insert(nominal), true))
    }
}

/// Recomputes totals, paid amount, status and dates from lines and payments.
pub fn recompute_totals(invoice: &mut Invoice) {
    let net: Decimal = invoice.lines.iter().map(|l| l.quantity * l.rate).sum();
    let net = round2(net);
    let vat: Decimal = invoice.lines.iter().map(|l| l.vat_amount).sum();
    let gross = net + vat;
    let paid: Decimal = invoice.payments.iter().map(|p| p.amount).sum();
    let h = &mut invoice.header;
    h.net_amount = net;
    h.vat_amount = vat;
    h.gross_amount = gross;
    h.home_currency_gross_amount = round2(gross / h.currency.exchange_rate);
    h.total_paid_amount = paid;
    h.due_amount = gross - paid;
    h.last_payment_date = invoice.payments.iter().map(|p| &p.date).max().cloned();
    // The payment that brings the running total to the gross amount clears it.
    let mut by_date: Vec<&PaymentLine> = invoice.payments.iter().collect();
    by_date.sort_by(|a, b| a.date.cmp(&b.date).then(a.id.cmp(&b.id)));
    let mut running = Decimal::ZERO;
    let mut cleared = None;
    for payment in by_date {
        running += payment.amount;
        if running >= gross {
            cleared = Some(payment.date.clone());
            break;
        }
    }
    match cleared {
        Some(date) if !invoice.payments.is_empty() && paid >= gross => {
            h.status = STATUS_PAID;
            h.paid_date = Some(date);
        }
        _ => {
            h.status = STATUS_UNPAID;
            h.paid_date = None;
        }
    }
}

// ---------------------------------------------------------------- list sorting and filtering

#[derive(Clone, Copy)]
enum CustomerSort {
    Id,
    Name,
    Code,
    TotalPaid,
    Outstanding,
    Created,
    LastUpdated,
}

fn customer_sort(sort_by: Option<&str>) -> KfResult<CustomerSort> {
    let Some(key) = sort_by else {
        return Ok(CustomerSort::Id);
    };
    Ok(match key.to_ascii_lowercase().as_str() {
        "0" | "name" => CustomerSort::Name,
        "1" | "code" => CustomerSort::Code,
        "3" | "totalpaidamount" => CustomerSort::TotalPaid,
        "4" | "outstandingbalance" => CustomerSort::Outstanding,
        "createddate" | "creationdate" => CustomerSort::Created,
        "lastupdateddate" | "lastupdated" => CustomerSort::LastUpdated,
        "id" => CustomerSort::Id,
        other => {
            return Err(KfError::validation(format!(
                "sortby `{other}` is not a customer sort (Name/0, Code/1, TotalPaidAmount/3, OutstandingBalance/4, CreatedDate, LastUpdatedDate, Id)."
            )))
        }
    })
}

/// Customers for `GET /customers` (filters: `searchtext` on code, name and
/// contacts' e-mails; `namestartswith`; `filterarchived`;
/// `startcreationdate`/`endcreationdate`; and, our addition since KashFlow
/// has no change feed, `lastupdatedfrom`/`lastupdatedto`).
pub fn list_customers<'a>(data: &'a Data, query: &ListQuery) -> KfResult<Vec<&'a Customer>> {
    let sort = customer_sort(query.sort_by.as_deref())?;
    let search = query.filter("searchtext").map(str::to_lowercase);
    let starts = query.filter("namestartswith").map(str::to_lowercase);
    let archived = query.bool_filter("filterarchived")?;
    let created_from = query.date_filter("startcreationdate")?;
    let created_to = query.date_filter("endcreationdate")?;
    let updated_from = query.date_filter("lastupdatedfrom")?;
    let updated_to = query.date_filter("lastupdatedto")?;
    let mut customers: Vec<&Customer> = data
        .customers
        .values()
        .filter(|c| {
            search.as_deref().is_none_or(|s| {
                c.code.to_lowercase().contains(s)
                    || c.name.to_lowercase().contains(s)
                    || c.contacts.iter().any(|contact| {
                        contact
                            .email
                            .as_deref()
                            .is_some_and(|e| e.to_lowercase().contains(s))
                    })
            })
        })
        .filter(|c| {
            starts
                .as_deref()
                .is_none_or(|s| c.name.to_lowercase().starts_with(s))
        })
        .filter(|c| archived.is_none_or(|a| c.is_archived == a))
        .filter(|c| created_from.is_none_or(|f| c.created_date.at >= f))
        .filter(|c| created_to.is_none_or(|t| c.created_date.at <= t))
        .filter(|c| updated_from.is_none_or(|f| c.last_updated_date.at >= f))
        .filter(|c| updated_to.is_none_or(|t| c.last_updated_date.at <= t))
        .collect();
    customers.sort_by(|a, b| {
        let primary = match sort {
            CustomerSort::Id => a.id.cmp(&b.id),
            CustomerSort::Name => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
            CustomerSort::Code => a.code.cmp(&b.code),
            CustomerSort::TotalPaid => a.total_paid_amount.cmp(&b.total_paid_amount),
            CustomerSort::Outstanding => a.outstanding_balance.cmp(&b.outstanding_balance),
            CustomerSort::Created => a.created_date.cmp(&b.created_date),
            CustomerSort::LastUpdated => a.last_updated_date.cmp(&b.last_updated_date),
        };
        let primary = if query.order == Order::Desc {
            primary.reverse()
        } else {
            primary
        };
        primary.then(a.id.cmp(&b.id))
    });
    Ok(customers)
}

#[derive(Clone, Copy)]
enum InvoiceSort {
    Number,
    CustomerReference,
    CustomerName,
    IssuedDate,
    DueDate,
    Gross,
    Net,
    Status,
    PaidDate,
    Due,
    Vat,
    Project,
    LastUpdated,
}

fn invoice_sort(sort_by: Option<&str>) -> KfResult<InvoiceSort> {
    let Some(key) = sort_by else {
        return Ok(InvoiceSort::Number);
    };
    Ok(match key.to_ascii_lowercase().as_str() {
        "0" | "number" | "10" | "type" => InvoiceSort::Number,
        "1" | "customerref" | "customerreference" => InvoiceSort::CustomerReference,
        "2" | "customername" => InvoiceSort::CustomerName,
        "3" | "invoicedate" | "issueddate" => InvoiceSort::IssuedDate,
        "4" | "paymentduedate" | "duedate" => InvoiceSort::DueDate,
        "5" | "grossamount" => InvoiceSort::Gross,
        "6" | "netamount" => InvoiceSort::Net,
        "7" | "status" => InvoiceSort::Status,
        "8" | "paymentpaiddate" | "paiddate" => InvoiceSort::PaidDate,
        "9" | "dueamount" => InvoiceSort::Due,
        "11" | "vatamount" => InvoiceSort::Vat,
        "12" | "project" | "projectnumber" => InvoiceSort::Project,
        "lastupdateddate" => InvoiceSort::LastUpdated,
        other => {
            return Err(KfError::validation(format!(
                "sortby `{other}` is not an invoice sort (0-12 or a name such as Number, IssuedDate, GrossAmount)."
            )))
        }
    })
}

/// Invoices for `GET /invoices` (filters `customercode`, `statusfilter`,
/// `projectnumber`, `issuedatefrom`/`issuedateto`, `searchtext` on
/// `CustomerReference`).
pub fn list_invoices<'a>(data: &'a Data, query: &ListQuery) -> KfResult<Vec<&'a InvoiceHeader>> {
    let sort = invoice_sort(query.sort_by.as_deref())?;
    let customer = query.filter("customercode");
    let status = match query
        .filter("statusfilter")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("all") => None,
        Some("paid") => Some(STATUS_PAID),
        Some("unpaid") => Some(STATUS_UNPAID),
        Some(other) => {
            return Err(KfError::validation(format!(
                "statusfilter `{other}` is not Paid, Unpaid or All."
            )))
        }
    };
    let project = match query.filter("projectnumber") {
        None => None,
        Some(text) => Some(text.parse::<i64>().map_err(|_| {
            KfError::validation(format!("projectnumber `{text}` is not a whole number."))
        })?),
    };
    let from = query.date_filter("issuedatefrom")?;
    let to = query.date_filter("issuedateto")?;
    let search = query.filter("searchtext").map(str::to_lowercase);
    let mut headers: Vec<&InvoiceHeader> = data
        .invoices
        .values()
        .map(|i| &i.header)
        .filter(|h| customer.is_none_or(|c| h.customer_code.eq_ignore_ascii_case(c)))
        .filter(|h| status.is_none_or(|s| h.status == s))
        .filter(|h| project.is_none_or(|p| h.project_number == p))
        .filter(|h| from.is_none_or(|f| h.issued_date.at >= f))
        .filter(|h| to.is_none_or(|t| h.issued_date.at <= t))
        .filter(|h| {
            search
                .as_deref()
                .is_none_or(|s| h.customer_reference.to_lowercase().contains(s))
        })
        .collect();
    if let InvoiceSort::Number = sort {
        // Already in number order (the map's key): no sort of the whole set.
        if query.order == Order::Desc {
            headers.reverse();
        }
        return Ok(headers);
    }
    headers.sort_by(|a, b| {
        let primary = match sort {
            InvoiceSort::Number => a.number.cmp(&b.number),
            InvoiceSort::CustomerReference => a.customer_reference.cmp(&b.customer_reference),
            InvoiceSort::CustomerName => a.customer_name.cmp(&b.customer_name),
            InvoiceSort::IssuedDate => a.issued_date.cmp(&b.issued_date),
            InvoiceSort::DueDate => a.due_date.cmp(&b.due_date),
            InvoiceSort::Gross => a.gross_amount.cmp(&b.gross_amount),
            InvoiceSort::Net => a.net_amount.cmp(&b.net_amount),
            InvoiceSort::Status => a.status.cmp(b.status),
            InvoiceSort::PaidDate => a.paid_date.cmp(&b.paid_date),
            InvoiceSort::Due => a.due_amount.cmp(&b.due_amount),
            InvoiceSort::Vat => a.vat_amount.cmp(&b.vat_amount),
            InvoiceSort::Project => a.project_number.cmp(&b.project_number),
            InvoiceSort::LastUpdated => a.last_updated_date.cmp(&b.last_updated_date),
        };
        let primary = if query.order == Order::Desc {
            primary.reverse()
        } else {
            primary
        };
        primary.then(a.number.cmp(&b.number))
    });
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(text: &str) -> Decimal {
        Decimal::from_str(text).expect("decimal literal")
    }

    /// Checks every customer's aggregates against a recount of the invoices.
    fn assert_aggregates_match_a_recount(data: &Data, step: &str) {
        for customer in data.customers.values() {
            let invoices: Vec<&InvoiceHeader> = data
                .invoices
                .values()
                .map(|i| &i.header)
                .filter(|h| h.customer_id == customer.id)
                .collect();
            let sum = |f: fn(&InvoiceHeader) -> Decimal| invoices.iter().map(|h| f(h)).sum();
            let gross: Decimal = sum(|h| h.gross_amount);
            let paid: Decimal = sum(|h| h.total_paid_amount);
            let what = format!("{step}: customer {}", customer.code);
            assert_eq!(customer.invoice_count as usize, invoices.len(), "{what}");
            assert_eq!(
                customer.invoiced_net_amount,
                sum(|h| h.net_amount),
                "{what}"
            );
            assert_eq!(
                customer.invoiced_vat_amount,
                sum(|h| h.vat_amount),
                "{what}"
            );
            assert_eq!(customer.total_paid_amount, paid, "{what}");
            assert_eq!(customer.outstanding_balance, gross - paid, "{what}");
            let never = data.never().at;
            let first = invoices.iter().map(|h| h.issued_date.at).min();
            let last = invoices.iter().map(|h| h.issued_date.at).max();
            assert_eq!(
                customer.first_invoice_date.at,
                first.unwrap_or(never),
                "{what}"
            );
            assert_eq!(
                customer.last_invoice_date.at,
                last.unwrap_or(never),
                "{what}"
            );
        }
    }

    #[test]
    fn customer_aggregates_follow_every_invoice_change() {
        use super::super::input::parse_body;
        let mut data = Data::new(&KashFlowConfig::default());
        let now = NaiveDateTime::parse_from_str("2025-03-01 12:00:00", "%Y-%m-%d %H:%M:%S")
            .expect("date");
        for code in ["A", "B"] {
            let body = format!(r#"{{"Code":"{code}","Name":"{code}"}}"#);
            data.create_customer(parse_body(body.as_bytes()).expect("input"), now)
                .expect("customer");
        }
        let invoice = |customer: &str, date: &str, quantity: u32| {
            let body = format!(
                r#"{{"CustomerCode":"{customer}","IssuedDate":"{date}","LineItems":[{{"Quantity":{quantity},"Rate":12.5,"VATLevel":20,"NominalCode":4000}}]}}"#
            );
            parse_body::<InvoiceInput>(body.as_bytes()).expect("invoice input")
        };
        let mut numbers = Vec::new();
        for (customer, date, quantity) in [
            ("A", "2025-01-10", 1),
            ("A", "2025-01-05", 2),
            ("A", "2025-01-10", 3),
            ("B", "2025-02-01", 4),
        ] {
            numbers.push(
                data.create_invoice(invoice(customer, date, quantity), now)
                    .expect("invoice"),
            );
        }
        assert_aggregates_match_a_recount(&data, "created");

        let bulk = format!(
            r#"{{"AccountId":1,"Method":1,"PaymentItems":[{{"ObjectNumber":{},"Amount":15}},{{"ObjectNumber":{},"Amount":100}}]}}"#,
            numbers[0], numbers[3]
        );
        let bulk_number = data
            .create_bulk_payment(parse_body(bulk.as_bytes()).expect("bulk input"), now)
            .expect("bulk")
            .number;
        assert_aggregates_match_a_recount(&data, "bulk paid");

        data.update_invoice(numbers[1], invoice("B", "2024-12-31", 7), now)
            .expect("moved to B");
        assert_aggregates_match_a_recount(&data, "updated");

        data.delete_invoice(numbers[0]).expect("deleted");
        assert_aggregates_match_a_recount(&data, "deleted");

        data.delete_bulk_payment(bulk_number, now)
            .expect("bulk deleted");
        assert_aggregates_match_a_recount(&data, "bulk deleted");

        for number in [numbers[1], numbers[2], numbers[3]] {
            data.delete_invoice(number).expect("deleted");
        }
        assert_aggregates_match_a_recount(&data, "all deleted");
        assert!(data.customers.values().all(|c| c.invoice_count == 0));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        assert_eq!(round2(d("2.345")), d("2.35"));
        assert_eq!(round2(d("-2.345")), d("-2.35"));
        assert_eq!(round2(d("2.344")), d("2.34"));
        assert_eq!(round2(d("0.125")), d("0.13"));
    }
}
