//! Model (de)serialization against the JSON examples of the KashFlow
//! reference (`shared/reference/kashflow-api.md`).

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::json;

use super::models::{Page, SessionToken, TemporaryToken};
use super::*;

fn dec(text: &str) -> Decimal {
    Decimal::from_str(text).expect("decimal")
}

#[test]
fn login_answers_parse() {
    let step1: TemporaryToken = serde_json::from_str(
        r#"{"TemporaryToken":"0f6a3c1e-8a7e-4b8e-9f57-1c1f2e9d0a11","MemorableWordList":[{"Position":1,"Value":""},{"Position":4,"Value":""},{"Position":6,"Value":""}],"IsAdmin":true,"SubscriptionExpired":false,"HasTemporaryPassword":false,"PackageName":"Business","PartnerId":0}"#,
    )
    .unwrap();
    let positions: Vec<usize> = step1
        .memorable_word_list
        .iter()
        .map(|p| p.position)
        .collect();
    assert_eq!(positions, vec![1, 4, 6]);

    let step2: SessionToken = serde_json::from_str(
        r#"{"SessionToken":"496F5DBA-DBB2-42A3-9645-DA0253220C9E","CompanyName":"Sim Ltd","IsAdmin":true}"#,
    )
    .unwrap();
    assert_eq!(step2.session_token, "496F5DBA-DBB2-42A3-9645-DA0253220C9E");
}

#[test]
fn invoice_create_body_matches_the_reference_example() {
    let invoice = Invoice {
        customer_code: Some("SIMC0001".to_owned()),
        issued_date: Some("2025-03-01 00:00:00".to_owned()),
        due_date: Some("2025-03-31 00:00:00".to_owned()),
        customer_reference: Some("ORDER-1042".to_owned()),
        currency: Some(Currency {
            code: Some("GBP".to_owned()),
            ..Currency::default()
        }),
        line_items: Some(vec![LineItem {
            description: Some("Widget".to_owned()),
            quantity: Some(dec("2")),
            rate: Some(dec("12.5")),
            vat_level: Some(dec("20")),
            vat_amount: Some(dec("5.0")),
            vat_exempt: Some(false),
            nominal_code: Some(4000),
            product_code: Some("WID1".to_owned()),
            project_number: Some(0),
            ..LineItem::default()
        }]),
        ..Invoice::default()
    };
    let expected = json!({"CustomerCode":"SIMC0001","IssuedDate":"2025-03-01 00:00:00","DueDate":"2025-03-31 00:00:00","CustomerReference":"ORDER-1042","Currency":{"Code":"GBP"},"LineItems":[{"Description":"Widget","Quantity":2,"Rate":12.5,"VATLevel":20,"VATAmount":5.0,"VATExempt":false,"NominalCode":4000,"ProductCode":"WID1","ProjectNumber":0}]});
    assert_eq!(serde_json::to_value(&invoice).unwrap(), expected);
    // Exact digits go out as numbers, not strings or rounded floats.
    let text = serde_json::to_string(&invoice).unwrap();
    assert!(text.contains(r#""Rate":12.5,"#), "{text}");
    assert!(text.contains(r#""VATAmount":5.0,"#), "{text}");
}

#[test]
fn invoice_detail_parses_with_exact_money() {
    let invoice: Invoice = serde_json::from_str(r#"{
        "Id": 77, "Number": 1042, "CustomerId": 3, "CustomerCode": "SIMC0001", "CustomerName": "Acme",
        "IssuedDate": "2025-03-01 00:00:00", "DueDate": "2025-03-31 00:00:00 +00:00",
        "CustomerReference": "ORDER-1042",
        "Currency": {"Code": "GBP", "Name": "British Pounds", "Symbol": "£", "ExchangeRate": 1.0, "DisplaySymbolOnRight": false},
        "NetAmount": 100.0000, "VATAmount": 17.5000, "GrossAmount": 117.5000, "TotalPaidAmount": 0,
        "Status": "Unpaid", "PaidDate": null, "Permalink": "/v2/documents/invoice/9b1c",
        "LineItems": [{"Number": 1, "Description": "Widget", "Quantity": 10, "Rate": 10.00,
                       "VATLevel": 17.5, "VATAmount": 17.5, "VATExempt": 0, "NominalCode": 4000,
                       "ProductCode": "WID1", "ProjectNumber": 0, "SomethingNew": [1, 2]}],
        "PaymentLines": [],
        "ReminderLetters": []
    }"#)
    .unwrap();
    assert_eq!(invoice.number, Some(1042));
    assert_eq!(invoice.gross_amount, Some(dec("117.5000")));
    assert_eq!(invoice.gross_amount.unwrap().to_string(), "117.5000");
    assert_eq!(invoice.paid_date, None);
    let line = &invoice.line_items.as_ref().unwrap()[0];
    assert_eq!(line.vat_exempt, Some(false));
    assert_eq!(line.vat_level, Some(dec("17.5")));
    assert_eq!(invoice.payment_lines.as_deref(), Some(&[][..]));
}

#[test]
fn payment_line_and_bulk_payment_match_the_reference_examples() {
    let payment = PaymentLine {
        date: Some("2025-03-02 00:00:00".to_owned()),
        amount: Some(dec("30.0")),
        method: Some(1),
        account_id: Some(1),
        note: Some("Order 1042".to_owned()),
        ..PaymentLine::default()
    };
    assert_eq!(
        serde_json::to_value(&payment).unwrap(),
        json!({"Date":"2025-03-02 00:00:00","Amount":30.0,"Method":1,"AccountId":1,"Note":"Order 1042"})
    );

    let bulk: BulkPayment = serde_json::from_value(json!({
        "Number": 5, "Date": "2025-03-02 00:00:00", "AccountId": 1, "Method": 1, "Comment": "batch",
        "PaymentItems": [{"Id": 9, "ObjectNumber": 1042, "Amount": 30.0}], "Reconciled": false
    }))
    .unwrap();
    assert_eq!(bulk.number, Some(5));
    let item = &bulk.payment_items.unwrap()[0];
    assert_eq!(
        (item.id, item.object_number, item.amount),
        (Some(9), Some(1042), Some(dec("30.0")))
    );
}

#[test]
fn customer_round_trips_kashflow_spellings() {
    let customer: Customer = serde_json::from_value(json!({
        "Id": 1, "Code": "SIMC0001", "Name": "Acme Ltd", "VATNumber": "GB123",
        "Currency": {"Code": "GBP"}, "PaymentTerms": {"Type": "AfterIssuedDate", "Days": 30},
        "Contacts": [{"Firstname": "Ada", "LastName": "Lovelace", "Email": "ada@example.com", "IsPrimary": true}],
        "Addresses": [{"Line1": "1 High St", "PostCode": "AB1 2CD", "CountryCode": "GB", "CountryName": "United Kingdom"}],
        "OutstandingBalance": 0, "FirstInvoiceDate": "1900-01-01 12:00:00"
    }))
    .unwrap();
    let contact = &customer.contacts.as_ref().unwrap()[0];
    assert_eq!(contact.first_name.as_deref(), Some("Ada"));
    assert_eq!(
        customer.payment_terms.as_ref().unwrap().r#type.as_deref(),
        Some("AfterIssuedDate")
    );
    let back = serde_json::to_value(&customer).unwrap();
    assert_eq!(back["Contacts"][0]["Firstname"], "Ada");
    assert_eq!(back["VATNumber"], "GB123");
    assert_eq!(back["PaymentTerms"]["Type"], "AfterIssuedDate");
    assert!(back.get("Note").is_none(), "unset fields are not sent");

    // The D doc table's spelling is accepted too.
    let alt: Customer = serde_json::from_value(json!({"VatNumber": "GB9"})).unwrap();
    assert_eq!(alt.vat_number.as_deref(), Some("GB9"));
}

#[test]
fn reference_data_examples_parse() {
    let nominals: Vec<Nominal> = serde_json::from_str(
        r#"[{"Id":11,"Code":4000,"Name":"Sales","Type":"Sales","NomType":1,"VATRate":20.0,"VATExempt":false,"Archived":false}]"#,
    )
    .unwrap();
    assert_eq!(nominals[0].code, Some(4000));
    assert_eq!(nominals[0].r#type.as_deref(), Some("Sales"));

    let products: Page<Product> = serde_json::from_str(
        r#"{"Data":[{"Id":5,"Code":"WID1","Name":"Widget","NominalCode":4000,"NominalId":11,"Price":12.5,"WholeSalePrice":10.0,"VATRate":20.0,"VATExempt":false,"InUse":true}],
            "MetaData":{"TotalRecords":1,"FirstPageUrl":"http://h/v2/products?page=1","LastPageUrl":"http://h/v2/products?page=1","NextPageUrl":null,"PreviousPageUrl":null}}"#,
    )
    .unwrap();
    assert_eq!(products.data[0].price, Some(dec("12.5")));
    let meta = products.meta.unwrap();
    assert_eq!(meta.total_records, Some(1));
    assert_eq!(meta.next_page_url, None);

    let rates: Vec<VatRate> = serde_json::from_str(
        r#"[{"VATId":1,"VATRate":0.0,"VATText":"0%"},{"VATId":2,"VATRate":5.0,"VATText":"5%"},{"VATId":3,"VATRate":20.0,"VATText":"20%"}]"#,
    )
    .unwrap();
    assert_eq!(rates[2].vat_rate, Some(dec("20.0")));
    assert_eq!(rates[2].vat_text.as_deref(), Some("20%"));

    let currencies: Vec<Currency> = serde_json::from_str(
        r#"[{"Code":"GBP","Name":"British Pounds","Symbol":"£","ExchangeRate":1.0,"DisplaySymbolOnRight":false}]"#,
    )
    .unwrap();
    assert_eq!(currencies[0].symbol.as_deref(), Some("£"));

    let methods: Vec<PaymentMethod> =
        serde_json::from_str(r#"[{"Id":1,"Name":"Card"},{"Id":2,"Name":"PayPal"}]"#).unwrap();
    assert_eq!(methods[1].name.as_deref(), Some("PayPal"));

    let banks: Vec<BankAccount> = serde_json::from_str(
        r#"[{"Id":1,"Code":1200,"AccountName":"Current Account","IsDefaultAccount":true,"IsArchived":false,"DefaultInvoicePaymentType":{"Id":1,"Name":"Card"}}]"#,
    )
    .unwrap();
    assert_eq!(banks[0].code, Some(1200));
}

#[test]
fn dates_parse_in_every_kashflow_form() {
    let expected = NaiveDate::from_ymd_opt(2025, 3, 1)
        .unwrap()
        .and_hms_opt(12, 30, 0)
        .unwrap();
    assert_eq!(parse_date("2025-03-01 12:30:00"), Some(expected));
    assert_eq!(parse_date("2025-03-01 12:30:00 +05:30"), Some(expected));
    assert_eq!(parse_date("2025-03-01T12:30:00+00:00"), Some(expected));
    assert_eq!(parse_date("2025-03-01T12:30:00"), Some(expected));
    assert_eq!(
        parse_date("2025-03-01"),
        NaiveDate::from_ymd_opt(2025, 3, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
    );
    assert_eq!(parse_date("yesterday"), None);
    assert_eq!(format_date(expected), "2025-03-01 12:30:00");
}

#[test]
fn invoice_filter_builds_the_documented_query() {
    let filter = InvoiceFilter {
        customer_code: Some("SIMC0001".to_owned()),
        status: Some("Unpaid".to_owned()),
        issued_from: NaiveDate::from_ymd_opt(2025, 1, 1),
        issued_to: NaiveDate::from_ymd_opt(2025, 1, 31),
        search_text: Some("ORDER-1".to_owned()),
        project_number: None,
    };
    let keys: Vec<&str> = filter.query().iter().map(|(k, _)| *k).collect();
    assert_eq!(
        keys,
        [
            "customercode",
            "statusfilter",
            "issuedatefrom",
            "issuedateto",
            "searchtext"
        ]
    );
    assert_eq!(filter.query()[2].1, "2025-01-01");
}

#[test]
fn config_rejects_unknown_keys_and_hides_secrets() {
    let config: KashFlowConfig = serde_json::from_value(json!({
        "base_url": "http://127.0.0.1:1/v2", "username": "u", "password": "p4ss",
        "memorable_word": "pineapple", "session_renew_after": "30m"
    }))
    .unwrap();
    assert_eq!(config.session_renew_after, Duration::from_secs(1800));
    let printed = format!("{config:?}");
    assert!(
        !printed.contains("p4ss") && !printed.contains("pineapple"),
        "{printed}"
    );
    let err = serde_json::from_value::<KashFlowConfig>(json!({
        "base_url": "x", "username": "u", "password": "p", "memorable_word": "m", "pasword": "typo"
    }))
    .unwrap_err();
    assert!(err.to_string().contains("unknown field `pasword`"), "{err}");

    let default: KashFlowConfig = serde_json::from_value(json!({
        "base_url": "http://127.0.0.1:1/v2", "username": "u", "password": "p", "memorable_word": "m"
    }))
    .unwrap();
    assert_eq!(default.session_renew_after, Duration::from_secs(45 * 60));
    assert!(KashFlowClient::new("kashflow:test", default).is_ok());
}

#[test]
fn account_lock_is_recognised() {
    assert!(is_account_locked(
        r#"{"Error":"AccountLocked","Message":"User account is locked, please contact administrator."}"#
    ));
    assert!(!is_account_locked(
        r#"{"Error":"InvalidSessionToken","Message":"Session token provided is invalid."}"#
    ));
    assert!(!is_account_locked("not json"));
}
