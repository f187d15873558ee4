//! Seeded reference data of the KashFlow simulator (reference §10): nominals,
//! products, VAT rates, taxes, currencies, payment methods, bank accounts,
//! and the country names addresses resolve.

use rust_decimal::Decimal;

use super::model::*;
use super::state::Data;

/// Ids handed out at run time start here, above every seeded id.
pub const FIRST_GENERATED_ID: i64 = 1000;

fn dec(units: i64, scale: u32) -> Decimal {
    Decimal::new(units, scale)
}

/// The home currency.
pub fn gbp() -> Currency {
    Currency {
        id: 1,
        code: "GBP".to_owned(),
        name: "British Pounds".to_owned(),
        symbol: "£".to_owned(),
        exchange_rate: dec(10, 1),
        display_symbol_on_right: false,
    }
}

/// Currencies (always present: GBP is the home currency).
pub fn currencies(into: &mut Vec<Currency>) {
    into.push(gbp());
    into.push(Currency {
        id: 2,
        code: "EUR".to_owned(),
        name: "Euro".to_owned(),
        symbol: "€".to_owned(),
        exchange_rate: dec(117, 2),
        display_symbol_on_right: false,
    });
    into.push(Currency {
        id: 3,
        code: "USD".to_owned(),
        name: "US Dollars".to_owned(),
        symbol: "$".to_owned(),
        exchange_rate: dec(127, 2),
        display_symbol_on_right: false,
    });
}

fn nominal(
    id: i64,
    code: i64,
    name: &str,
    kind: &str,
    nom_type: i64,
    vat_rate: Decimal,
) -> Nominal {
    Nominal {
        id,
        code,
        name: name.to_owned(),
        kind: kind.to_owned(),
        nom_type,
        classification: kind.to_owned(),
        description: String::new(),
        price: Decimal::ZERO,
        whole_sale_price: Decimal::ZERO,
        vat_rate,
        vat_exempt: false,
        archived: false,
        disallowed: false,
        auto_fill_line_item: false,
        is_product: false,
        manage_stock_level: false,
        quantity_in_stock: Decimal::ZERO,
        stock_warning_quantity: Decimal::ZERO,
    }
}

#[allow(clippy::too_many_arguments)]
fn product(
    id: i64,
    code: &str,
    name: &str,
    nominal: &Nominal,
    price: Decimal,
    wholesale: Decimal,
    vat_rate: Decimal,
    stock: Option<i64>,
) -> Product {
    Product {
        id,
        code: code.to_owned(),
        name: name.to_owned(),
        description: String::new(),
        nominal_code: nominal.code,
        nominal_id: nominal.id,
        price,
        whole_sale_price: wholesale,
        vat_rate,
        vat_exempt: false,
        auto_fill_line_item: false,
        manage_stock_level: stock.is_some(),
        quantity_in_stock: Decimal::from(stock.unwrap_or(0)),
        stock_warning_quantity: Decimal::from(if stock.is_some() { 5 } else { 0 }),
        is_default: false,
        in_use: true,
    }
}

/// Everything but currencies.
pub fn reference_data(data: &mut Data) {
    let twenty = dec(200, 1);
    let zero = dec(0, 1);
    let five = dec(50, 1);
    data.vat_rates = vec![
        VatRate {
            id: 1,
            rate: zero,
            text: "0%".to_owned(),
        },
        VatRate {
            id: 2,
            rate: five,
            text: "5%".to_owned(),
        },
        VatRate {
            id: 3,
            rate: twenty,
            text: "20%".to_owned(),
        },
    ];
    data.taxes = vec![
        Tax {
            id: 1,
            code: "T0".to_owned(),
            description: "Zero rated".to_owned(),
            rate: zero,
            kind: "supply",
        },
        Tax {
            id: 2,
            code: "T5".to_owned(),
            description: "Reduced rate".to_owned(),
            rate: five,
            kind: "supply",
        },
        Tax {
            id: 3,
            code: "T1".to_owned(),
            description: "Standard rate".to_owned(),
            rate: twenty,
            kind: "supply",
        },
        Tax {
            id: 4,
            code: "T1".to_owned(),
            description: "Standard rate".to_owned(),
            rate: twenty,
            kind: "purchase",
        },
        Tax {
            id: 5,
            code: "T0".to_owned(),
            description: "Zero rated".to_owned(),
            rate: zero,
            kind: "purchase",
        },
    ];
    let sales = nominal(11, 4000, "Sales", "Sales", 1, twenty);
    let shipping = nominal(12, 4010, "Shipping", "Sales", 1, twenty);
    let books = nominal(13, 4020, "Books and zero-rated sales", "Sales", 1, zero);
    let other = nominal(14, 4900, "Other income", "Sales", 1, twenty);
    let purchases = nominal(21, 5000, "Purchases", "Purchases", 2, twenty);
    let bank = nominal(31, 1200, "Current Account", "Bank", 3, zero);
    data.products.clear();
    for (id, p) in [
        (
            5,
            product(
                5,
                "WID1",
                "Widget",
                &sales,
                dec(125, 1),
                dec(100, 1),
                twenty,
                Some(100),
            ),
        ),
        (
            6,
            product(
                6,
                "GAD1",
                "Gadget",
                &sales,
                dec(2999, 2),
                dec(2000, 2),
                twenty,
                Some(50),
            ),
        ),
        (
            7,
            product(
                7,
                "BOOK1",
                "Book",
                &books,
                dec(899, 2),
                dec(600, 2),
                zero,
                Some(200),
            ),
        ),
        (
            8,
            product(
                8,
                "SHIP",
                "Shipping",
                &shipping,
                dec(495, 2),
                dec(495, 2),
                twenty,
                None,
            ),
        ),
        (
            9,
            product(
                9,
                "GIFT",
                "Gift wrap",
                &other,
                dec(250, 2),
                dec(100, 2),
                twenty,
                None,
            ),
        ),
        // The rest of the storefront's catalogue (the OrderCloud simulator
        // seeds WID1..WID6), so that only deliberately unknown products miss.
        (
            10,
            product(
                10,
                "WID2",
                "Widget Two",
                &sales,
                dec(2550, 2),
                dec(1800, 2),
                twenty,
                Some(100),
            ),
        ),
        (
            11,
            product(
                11,
                "WID3",
                "Children's Widget",
                &books,
                dec(799, 2),
                dec(500, 2),
                zero,
                Some(100),
            ),
        ),
        (
            12,
            product(
                12,
                "WID4",
                "Widget Book",
                &books,
                dec(1250, 2),
                dec(900, 2),
                zero,
                Some(100),
            ),
        ),
        (
            13,
            product(
                13,
                "WID5",
                "Energy-Saving Widget",
                &sales,
                dec(4999, 2),
                dec(3500, 2),
                five,
                Some(100),
            ),
        ),
        (
            14,
            product(
                14,
                "WID6",
                "Widget Deluxe",
                &sales,
                dec(12000, 2),
                dec(9000, 2),
                twenty,
                Some(100),
            ),
        ),
    ] {
        data.products.insert(id, p);
    }
    data.nominals.clear();
    for n in [sales, shipping, books, other, purchases, bank] {
        data.nominals.insert(n.code, n);
    }
    let card = PaymentMethod {
        id: 1,
        name: "Card".to_owned(),
    };
    data.payment_methods = vec![
        card.clone(),
        PaymentMethod {
            id: 2,
            name: "PayPal".to_owned(),
        },
        PaymentMethod {
            id: 3,
            name: "Bank Transfer".to_owned(),
        },
        PaymentMethod {
            id: 4,
            name: "Cash".to_owned(),
        },
    ];
    data.bank_accounts = vec![
        BankAccount {
            id: 1,
            code: 1200,
            account_name: "Current Account".to_owned(),
            is_default_account: true,
            is_archived: false,
            default_invoice_payment_type: card.clone(),
        },
        BankAccount {
            id: 2,
            code: 1210,
            account_name: "Card Clearing".to_owned(),
            is_default_account: false,
            is_archived: false,
            default_invoice_payment_type: card,
        },
    ];
}

/// Country name of an ISO alpha-2 code (a small table; unknown codes have none).
pub fn country_name(code: &str) -> Option<&'static str> {
    const COUNTRIES: &[(&str, &str)] = &[
        ("GB", "United Kingdom"),
        ("IE", "Ireland"),
        ("FR", "France"),
        ("DE", "Germany"),
        ("ES", "Spain"),
        ("IT", "Italy"),
        ("NL", "Netherlands"),
        ("BE", "Belgium"),
        ("US", "United States"),
        ("CA", "Canada"),
        ("AU", "Australia"),
        ("IN", "India"),
    ];
    COUNTRIES
        .iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(code.trim()))
        .map(|(_, name)| *name)
}
