//! The order-to-invoice mapping taken from a flow file instead of Rust: the
//! flow does its I/O as before (order, lines, products, customer) and hands
//! the fetched data to the file's `order_facts`, `lines` and `invoice_body` map steps,
//! compiled once when the file was loaded. Opt in with
//! [`OrderToInvoice::with_flow_file`](super::order_to_invoice::OrderToInvoice::with_flow_file).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ledgerbridge_connectors::kashflow::{Invoice, Product};
use ledgerbridge_connectors::ordercloud::{LineItem, Order};
use ledgerbridge_core::Failure;
use ledgerbridge_mapping::run::run_maps;
use ledgerbridge_mapping::LoadedFlow;
use serde_json::{json, Value};

/// The map steps of the flow file that build the invoice, in order.
pub const STEPS: &[&str] = &["order_facts", "lines", "invoice_body"];

/// A loaded flow file whose map steps build the invoice.
#[derive(Debug, Clone)]
pub struct FlowFileMapping {
    flow: Arc<LoadedFlow>,
}

impl FlowFileMapping {
    /// Uses `flow`'s [`STEPS`]; an error names the
    /// one that is missing or not a map.
    pub fn new(flow: Arc<LoadedFlow>) -> Result<Self, String> {
        for id in STEPS {
            let step = flow.steps.iter().find(|s| s.id == *id).ok_or_else(|| {
                format!(
                    "{}: no step {id:?}; the invoice mapping needs map steps {}",
                    flow.file.display(),
                    STEPS.join(" and ")
                )
            })?;
            if !matches!(
                step.kind,
                ledgerbridge_mapping::load::CompiledKind::Map { .. }
            ) {
                return Err(format!(
                    "{}: step {id:?} is not a map step",
                    flow.file.display()
                ));
            }
        }
        Ok(FlowFileMapping { flow })
    }

    /// The flow file's version (`N+hash`).
    pub fn version(&self) -> String {
        self.flow.version.to_string()
    }

    /// The invoice for an order, as the flow file maps it. A mapping error
    /// (an `abort` in the file, a missing rate) is a validation failure.
    pub fn invoice(
        &self,
        order: &Order,
        lines: &[LineItem],
        products: &HashMap<String, Product>,
        customer_code: &str,
    ) -> Result<Invoice, Failure> {
        let encode = |value: Result<Value, serde_json::Error>| {
            value.map_err(|e| Failure::validation(format!("cannot encode for the flow file: {e}")))
        };
        let products: Vec<&Product> = products.values().collect();
        let mut fetched = BTreeMap::new();
        fetched.insert("get_order".to_owned(), encode(serde_json::to_value(order))?);
        fetched.insert(
            "get_lines".to_owned(),
            json!({ "Items": encode(serde_json::to_value(lines))? }),
        );
        fetched.insert(
            "products".to_owned(),
            json!({ "Data": encode(serde_json::to_value(products))? }),
        );
        fetched.insert("customer_body".to_owned(), json!({ "Code": customer_code }));
        let input = json!({ "RouteParams": { "orderID": order.id } });
        let body = run_maps(&self.flow, STEPS, &input, &fetched).map_err(|e| {
            Failure::validation(format!(
                "flow file {} ({}): {e}",
                self.flow.file.display(),
                self.flow.version
            ))
        })?;
        serde_json::from_value(body).map_err(|e| {
            Failure::validation(format!(
                "flow file {}: invoice_body is not a KashFlow invoice: {e}",
                self.flow.file.display()
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::order_to_invoice::tests::known_products;
    use crate::flows::order_to_invoice::{map_invoice, OrderToInvoiceSettings};
    use std::path::Path;

    fn shipped() -> FlowFileMapping {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows/order-to-invoice.yaml");
        let flow = ledgerbridge_mapping::load_file(&path).unwrap_or_else(|e| panic!("{e:?}"));
        FlowFileMapping::new(Arc::new(flow)).unwrap()
    }

    #[test]
    fn the_flow_file_gives_the_built_in_invoice() {
        let order: Order = serde_json::from_value(json!({
            "ID": "SO-1", "FromUserID": "u1", "Currency": "EUR", "ShippingCost": 5.0, "PromotionDiscount": 4,
            "DateSubmitted": "2025-01-15T10:00:00+00:00",
            "BillingAddress": {"Street1": "1 Rue", "City": "Paris", "Zip": "75001", "Country": "FR"}
        }))
        .unwrap();
        let lines: Vec<LineItem> = serde_json::from_value(json!([
            {"ID": "L1", "ProductID": "WID1", "Quantity": 2, "UnitPrice": 12.5, "PromotionDiscount": 1.5,
             "Product": {"ID": "WID1", "Name": "Widget"}},
            {"ID": "L2", "ProductID": "MYSTERY", "Quantity": 1, "UnitPrice": 3.33,
             "Product": {"ID": "MYSTERY", "xp": {"TaxClass": "reduced"}}, "Variant": {"Name": "Blue"}}
        ]))
        .unwrap();
        let rust = map_invoice(
            &OrderToInvoiceSettings::default(),
            &order,
            &lines,
            &known_products(),
            "OC-U1",
        )
        .unwrap();
        let file = shipped()
            .invoice(&order, &lines, &known_products(), "OC-U1")
            .unwrap();
        assert_eq!(file, rust.invoice);
    }

    #[test]
    fn mapping_errors_are_validation_failures_naming_the_file() {
        let order: Order =
            serde_json::from_value(json!({"ID": "SO-2", "Currency": "JPY"})).unwrap();
        let lines: Vec<LineItem> =
            serde_json::from_value(json!([{"ProductID": "WID1", "Quantity": 1, "UnitPrice": 10}]))
                .unwrap();
        let failure = shipped()
            .invoice(&order, &lines, &known_products(), "C")
            .unwrap_err();
        assert_eq!(failure.class, ledgerbridge_core::ErrorClass::Validation);
        assert!(
            failure.message.contains("order-to-invoice.yaml") && failure.message.contains("JPY"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn the_flow_version_names_the_flow_file_version() {
        use crate::flow::Flow;
        use crate::flows::order_to_invoice::OrderToInvoice;
        use ledgerbridge_connectors::kashflow::{KashFlowClient, KashFlowConfig};
        use ledgerbridge_connectors::ordercloud::{OrderCloudClient, OrderCloudConfig};
        use ledgerbridge_core::Secret;

        let kashflow_config: KashFlowConfig = serde_json::from_value(json!({
            "base_url": "http://127.0.0.1:1/v2", "username": "u", "password": "p", "memorable_word": "m"
        }))
        .unwrap();
        let build = || {
            OrderToInvoice::new(
                OrderToInvoiceSettings::default(),
                KashFlowClient::new("kashflow", kashflow_config.clone()).unwrap(),
                "kashflow",
                "http://127.0.0.1:1/v2",
                OrderCloudClient::new(
                    "ordercloud",
                    OrderCloudConfig::new("http://127.0.0.1:9/oc", "client", Secret::new("s"), ""),
                )
                .unwrap(),
                "http://127.0.0.1:9/oc",
            )
        };
        let built_in = build();
        let mapping = shipped();
        let file_version = mapping.version();
        let mapped = build().with_flow_file(mapping);
        assert_eq!(
            mapped.version(),
            format!("{}/flow:{file_version}", built_in.version())
        );
    }
}
