//! The tables our functions read, built once from a flow's `tables:` when
//! the flow loads: VAT rates by class, region and date; exchange rates by
//! currency and date (from the file, the ECB reference-rate XML or CSV);
//! nominal codes; value maps.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::str::FromStr;

use chrono::{Duration, NaiveDate};
use ledgerbridge_core::flow::Tables;
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value as Json;

/// Region name of countries in no region.
pub const EXPORT: &str = "export";

/// Everything the finance functions look up.
#[derive(Debug, Clone, Default)]
pub struct Finance {
    country_region: HashMap<String, String>,
    tax_rates: Vec<TaxEntry>,
    fx_base: String,
    /// Currency → dated rates (sorted by date) and an optional standing rate.
    fx: HashMap<String, FxSeries>,
    fx_max_age_days: i64,
    nominal_default: i64,
    nominal_named: BTreeMap<String, i64>,
    nominal_products: HashMap<String, i64>,
    value_maps: BTreeMap<String, BTreeMap<String, Json>>,
}

#[derive(Debug, Clone)]
struct TaxEntry {
    class: String,
    region: String,
    rate: Decimal,
    from: Option<NaiveDate>,
    until: Option<NaiveDate>,
}

#[derive(Debug, Clone, Default)]
struct FxSeries {
    dated: BTreeMap<NaiveDate, Decimal>,
    standing: Option<Decimal>,
}

/// A table that cannot be used, with the key path of the culprit.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TableError {
    /// Key path in the flow file, e.g. `tables.fx.file`.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Finance {
    /// Builds the tables; `dir` is the flow file's directory (for `fx.file`).
    pub fn new(tables: &Tables, dir: &Path) -> Result<Finance, TableError> {
        let mut country_region = HashMap::new();
        for (region, countries) in &tables.tax.regions {
            for country in countries {
                let country = country.to_ascii_uppercase();
                if let Some(other) = country_region.insert(country.clone(), region.clone()) {
                    return Err(TableError {
                        path: format!("tables.tax.regions.{region}"),
                        message: format!(
                            "{country} is also in region {other}; a country belongs to one region"
                        ),
                    });
                }
            }
        }
        let mut tax_rates = Vec::new();
        for (index, rate) in tables.tax.rates.iter().enumerate() {
            if rate.region != EXPORT && !tables.tax.regions.contains_key(&rate.region) {
                return Err(TableError {
                    path: format!("tables.tax.rates[{index}].region"),
                    message: format!(
                        "region {:?} is not in tables.tax.regions (known: {}, or {EXPORT})",
                        rate.region,
                        tables
                            .tax
                            .regions
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            tax_rates.push(TaxEntry {
                class: rate.class.to_ascii_lowercase(),
                region: rate.region.clone(),
                rate: rate.rate.0,
                from: rate.from,
                until: rate.until,
            });
        }
        let mut fx: HashMap<String, FxSeries> = HashMap::new();
        for rate in &tables.fx.rates {
            let series = fx.entry(rate.currency.to_ascii_uppercase()).or_default();
            match rate.date {
                Some(date) => {
                    series.dated.insert(date, rate.rate.0);
                }
                None => series.standing = Some(rate.rate.0),
            }
        }
        let mut fx_base = tables.fx.base.to_ascii_uppercase();
        if let Some(file) = &tables.fx.file {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| TableError {
                path: "tables.fx.file".to_owned(),
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            let loaded = if text.trim_start().starts_with('<') {
                fx_base = "EUR".to_owned();
                parse_ecb_xml(&text)
            } else {
                parse_fx_csv(&text)
            }
            .map_err(|message| TableError {
                path: "tables.fx.file".to_owned(),
                message: format!("{}: {message}", path.display()),
            })?;
            for (date, currency, rate) in loaded {
                fx.entry(currency).or_default().dated.insert(date, rate);
            }
        }
        Ok(Finance {
            country_region,
            tax_rates,
            fx_base,
            fx,
            fx_max_age_days: i64::from(tables.fx.max_age_days),
            nominal_default: tables.nominal.default,
            nominal_named: tables.nominal.named.clone(),
            nominal_products: tables
                .nominal
                .products
                .iter()
                .map(|(k, v)| (k.to_ascii_uppercase(), *v))
                .collect(),
            value_maps: tables.value_maps.clone(),
        })
    }

    /// The VAT region of a country, or `export`.
    pub fn tax_region(&self, country: &str) -> &str {
        self.country_region
            .get(&country.trim().to_ascii_uppercase())
            .map(String::as_str)
            .unwrap_or(EXPORT)
    }

    /// The VAT percentage of a tax class for a country on a day.
    pub fn tax_rate(&self, class: &str, country: &str, day: NaiveDate) -> Result<Decimal, String> {
        let region = self.tax_region(country);
        let class = class.trim().to_ascii_lowercase();
        let found = self.tax_rates.iter().find(|r| {
            r.class == class
                && r.region == region
                && r.from.is_none_or(|from| from <= day)
                && r.until.is_none_or(|until| day <= until)
        });
        if let Some(entry) = found {
            return Ok(entry.rate);
        }
        let mut known: Vec<&str> = self
            .tax_rates
            .iter()
            .filter(|r| r.region == region)
            .map(|r| r.class.as_str())
            .collect();
        known.sort_unstable();
        known.dedup();
        Err(format!(
            "no VAT rate for tax class {class:?} in region {region} ({}) on {day}; classes with rates there: {}; add one to tables.tax.rates",
            country.to_ascii_uppercase(),
            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
        ))
    }

    fn units_per_base(&self, currency: &str, day: NaiveDate) -> Result<Decimal, String> {
        if currency == self.fx_base {
            return Ok(Decimal::ONE);
        }
        let Some(series) = self.fx.get(currency) else {
            return Err(format!(
                "no exchange rate for {currency} at all (base {}); add it to tables.fx",
                self.fx_base
            ));
        };
        if let Some((date, rate)) = series.dated.range(..=day).next_back() {
            if (day - *date) <= Duration::days(self.fx_max_age_days) {
                return Ok(*rate);
            }
            if series.standing.is_none() {
                return Err(format!(
                    "no {currency} rate for {day}: the latest earlier one is from {date}, more than tables.fx.max_age_days = {} days before; add a rate for that day or raise max_age_days",
                    self.fx_max_age_days
                ));
            }
        }
        series.standing.ok_or_else(|| {
            format!("no {currency} rate for {day} or any day up to {} days before; add one to tables.fx", self.fx_max_age_days)
        })
    }

    /// Units of `to` per one unit of `from` on a day (6 dp).
    pub fn fx_rate(&self, from: &str, to: &str, day: NaiveDate) -> Result<Decimal, String> {
        let from = from.trim().to_ascii_uppercase();
        let to = to.trim().to_ascii_uppercase();
        if from == to {
            return Ok(Decimal::ONE);
        }
        let from_units = self.units_per_base(&from, day)?;
        let to_units = self.units_per_base(&to, day)?;
        if from_units.is_zero() {
            return Err(format!("the {from} rate is zero"));
        }
        let rate = to_units.checked_div(from_units).ok_or_else(|| {
            format!("the {from}→{to} rate is beyond the largest number a decimal holds")
        })?;
        Ok(rate
            .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
            .normalize())
    }

    /// `amount` in `from` converted to `to` on a day, rounded to 2 dp.
    /// Computed with the full cross rate, not the 6 dp one.
    pub fn fx_convert(
        &self,
        amount: Decimal,
        from: &str,
        to: &str,
        day: NaiveDate,
    ) -> Result<Decimal, String> {
        let from = from.trim().to_ascii_uppercase();
        let to = to.trim().to_ascii_uppercase();
        if from == to {
            return Ok(crate::money::round_money(amount));
        }
        let from_units = self.units_per_base(&from, day)?;
        let to_units = self.units_per_base(&to, day)?;
        if from_units.is_zero() {
            return Err(format!("the {from} rate is zero"));
        }
        amount
            .checked_mul(to_units)
            .and_then(|product| product.checked_div(from_units))
            .map(crate::money::round_money)
            .ok_or_else(|| {
                format!("{amount} {from} in {to} is beyond the largest amount a decimal holds")
            })
    }

    /// A nominal code: `known` when given, else the product's code from
    /// the table, else the named default, else the default.
    pub fn nominal_code(
        &self,
        known: Option<i64>,
        product: Option<&str>,
        name: Option<&str>,
    ) -> Result<i64, String> {
        if let Some(code) = known {
            return Ok(code);
        }
        if let Some(code) =
            product.and_then(|p| self.nominal_products.get(&p.trim().to_ascii_uppercase()))
        {
            return Ok(*code);
        }
        match name {
            Some(name) => self.nominal_named.get(name).copied().ok_or_else(|| {
                format!(
                    "no nominal code named {name:?} in tables.nominal.named (known: {})",
                    self.nominal_named
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
            None => Ok(self.nominal_default),
        }
    }

    /// Looks `key` up in the value map `name`.
    pub fn value_map(&self, name: &str, key: &str, default: Option<&Json>) -> Result<Json, String> {
        let Some(map) = self.value_maps.get(name) else {
            return Err(format!(
                "no value map {name:?} in tables.value_maps (known: {})",
                self.value_maps
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if let Some(value) = map.get(key) {
            return Ok(value.clone());
        }
        default.cloned().ok_or_else(|| {
            format!(
                "value map {name:?} has no entry for {key:?} (entries: {}); add one or pass a default",
                map.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }

    /// Names of the value maps (checked against literal uses at load time).
    pub fn value_map_names(&self) -> impl Iterator<Item = &str> {
        self.value_maps.keys().map(String::as_str)
    }
}

/// Reads the ECB's reference-rate XML (`eurofxref-daily.xml` or
/// `eurofxref-hist.xml`): `<Cube time="…">` days holding
/// `<Cube currency="USD" rate="1.0321"/>` entries, units per one EUR.
pub fn parse_ecb_xml(text: &str) -> Result<Vec<(NaiveDate, String, Decimal)>, String> {
    let mut out = Vec::new();
    let mut day: Option<NaiveDate> = None;
    for tag in text.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        if !tag.starts_with("Cube") {
            continue;
        }
        if let Some(time) = attribute(tag, "time") {
            day = Some(
                NaiveDate::parse_from_str(time, "%Y-%m-%d")
                    .map_err(|_| format!("Cube time={time:?} is not a YYYY-MM-DD date"))?,
            );
        }
        if let (Some(currency), Some(rate)) = (attribute(tag, "currency"), attribute(tag, "rate")) {
            let day = day.ok_or_else(|| format!("rate for {currency} outside a dated Cube"))?;
            let rate = Decimal::from_str(rate)
                .map_err(|_| format!("rate {rate:?} of {currency} on {day} is not a number"))?;
            out.push((day, currency.to_ascii_uppercase(), rate));
        }
    }
    if out.is_empty() {
        return Err(
            "no <Cube currency=… rate=…> entries found; is this the ECB reference-rate XML?"
                .to_owned(),
        );
    }
    Ok(out)
}

fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    for quote in ['\'', '"'] {
        let needle = format!(" {name}={quote}");
        if let Some(start) = tag.find(&needle) {
            let rest = &tag[start + needle.len()..];
            return rest.split(quote).next();
        }
    }
    None
}

/// Reads CSV rates: `date,currency,rate` lines (a header line is skipped).
pub fn parse_fx_csv(text: &str) -> Result<Vec<(NaiveDate, String, Decimal)>, String> {
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if index == 0
            && fields
                .first()
                .is_some_and(|f| f.eq_ignore_ascii_case("date"))
        {
            continue;
        }
        let [date, currency, rate] = fields[..] else {
            return Err(format!(
                "line {}: expected date,currency,rate, found {line:?}",
                index + 1
            ));
        };
        let date = NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|_| format!("line {}: {date:?} is not a YYYY-MM-DD date", index + 1))?;
        let rate = Decimal::from_str(rate)
            .map_err(|_| format!("line {}: rate {rate:?} is not a number", index + 1))?;
        out.push((date, currency.to_ascii_uppercase(), rate));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledgerbridge_core::flow::{Amount, FxRate, TaxRate};
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn finance() -> Finance {
        let mut tables = Tables::default();
        tables.tax.regions.insert("UK".into(), vec!["GB".into()]);
        tables
            .tax
            .regions
            .insert("EU".into(), vec!["FR".into(), "DE".into()]);
        for (class, region, rate, from, until) in [
            ("standard", "UK", "17.5", None, Some("2011-01-03")),
            ("standard", "UK", "20", Some("2011-01-04"), None),
            ("reduced", "UK", "5", None, None),
            ("zero", "UK", "0", None, None),
            ("standard", "EU", "20", None, None),
            ("standard", EXPORT, "0", None, None),
        ] {
            tables.tax.rates.push(TaxRate {
                class: class.into(),
                region: region.into(),
                rate: Amount(d(rate)),
                from: from.map(day),
                until: until.map(day),
            });
        }
        tables.fx.rates.push(FxRate {
            currency: "EUR".into(),
            rate: Amount(d("1.17")),
            date: None,
        });
        tables.fx.rates.push(FxRate {
            currency: "USD".into(),
            rate: Amount(d("1.25")),
            date: Some(day("2025-01-10")),
        });
        Finance::new(&tables, Path::new(".")).unwrap()
    }

    #[test]
    fn tax_by_class_country_and_date() {
        let f = finance();
        assert_eq!(
            f.tax_rate("Standard", "gb", day("2025-01-01")).unwrap(),
            d("20")
        );
        assert_eq!(
            f.tax_rate("standard", "GB", day("2010-06-01")).unwrap(),
            d("17.5")
        );
        assert_eq!(
            f.tax_rate("reduced", "GB", day("2025-01-01")).unwrap(),
            d("5")
        );
        assert_eq!(
            f.tax_rate("standard", "US", day("2025-01-01")).unwrap(),
            d("0")
        );
        assert_eq!(f.tax_region("US"), EXPORT);
        let err = f.tax_rate("luxury", "GB", day("2025-01-01")).unwrap_err();
        assert!(
            err.contains("luxury") && err.contains("reduced, standard, zero"),
            "{err}"
        );
    }

    #[test]
    fn fx_dated_standing_and_missing() {
        let f = finance();
        assert_eq!(
            f.fx_rate("GBP", "EUR", day("2025-03-01")).unwrap(),
            d("1.17")
        );
        assert_eq!(
            f.fx_convert(d("117"), "EUR", "GBP", day("2025-03-01"))
                .unwrap(),
            d("100.00")
        );
        // A dated rate serves up to max_age_days (4) later, not beyond.
        assert_eq!(
            f.fx_rate("GBP", "USD", day("2025-01-13")).unwrap(),
            d("1.25")
        );
        let err = f.fx_rate("GBP", "USD", day("2025-01-20")).unwrap_err();
        assert!(
            err.contains("2025-01-20") && err.contains("2025-01-10"),
            "{err}"
        );
        let err = f.fx_rate("GBP", "USD", day("2025-01-01")).unwrap_err();
        assert!(err.contains("no USD rate for 2025-01-01"), "{err}");
        let err = f.fx_rate("JPY", "GBP", day("2025-01-01")).unwrap_err();
        assert!(err.contains("JPY"), "{err}");
    }

    #[test]
    fn ecb_xml_and_csv() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<gesmes:Envelope xmlns:gesmes="http://www.gesmes.org/xml/2002-08-01" xmlns="http://www.ecb.int/vocabulary/2002-08-01/eurofxref">
  <gesmes:subject>Reference rates</gesmes:subject>
  <Cube><Cube time='2025-01-15'><Cube currency='USD' rate='1.0316'/><Cube currency='GBP' rate='0.84255'/></Cube>
  <Cube time="2025-01-14"><Cube currency="USD" rate="1.0245"/><Cube currency="GBP" rate="0.8400"/></Cube></Cube>
</gesmes:Envelope>"#;
        let rates = parse_ecb_xml(xml).unwrap();
        assert_eq!(rates.len(), 4);
        assert_eq!(
            rates[1],
            (day("2025-01-15"), "GBP".to_owned(), d("0.84255"))
        );
        assert!(parse_ecb_xml("<html/>").is_err());
        let csv = "date,currency,rate\n2025-01-15,usd,1.0316\n\n2025-01-15,GBP,0.84255\n";
        assert_eq!(parse_fx_csv(csv).unwrap()[0].1, "USD");
        assert!(parse_fx_csv("2025-01-15,USD")
            .unwrap_err()
            .contains("line 1"));
    }

    proptest! {
        #[test]
        fn conversion_round_trips_within_a_penny(cents in 1i64..1_000_000_000, rate_millis in 100i64..5_000) {
            let mut f = finance();
            f.fx.insert("XTS".into(), FxSeries { dated: BTreeMap::new(), standing: Some(Decimal::new(rate_millis, 3)) });
            let amount = Decimal::new(cents, 2);
            let there = f.fx_convert(amount, "GBP", "XTS", day("2025-01-01")).unwrap();
            let back = f.fx_convert(there, "XTS", "GBP", day("2025-01-01")).unwrap();
            prop_assert!(there.scale() <= 2);
            // One rounding each way: off by at most half a penny each, scaled back.
            let tolerance = Decimal::new(1, 2) * (Decimal::ONE + Decimal::ONE / Decimal::new(rate_millis, 3));
            prop_assert!((back - amount).abs() <= tolerance, "{} -> {} -> {}", amount, there, back);
        }

        #[test]
        fn tax_rates_follow_their_date_ranges(days in 0i64..10_000) {
            let f = finance();
            let date = day("2000-01-01") + Duration::days(days);
            let rate = f.tax_rate("standard", "GB", date).unwrap();
            prop_assert_eq!(rate, if date >= day("2011-01-04") { d("20") } else { d("17.5") });
        }
    }
}
