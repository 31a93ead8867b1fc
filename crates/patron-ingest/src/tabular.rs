//! Tabular transactions (CSV, Parquet) → events.
//!
//! Each row is one line item. Rows sharing an order id form one order (basket);
//! without an order column each row is its own order. A row with a negative
//! quantity or amount is a refund of that amount. Rows are checked one by one
//! (errors carry the line number), then each order is turned into the same JSON
//! event a producer would send and validated by the same [`Validator`], so a
//! file and a stream of the same purchases build the same state.

use std::collections::HashMap;

use patron_model::{Decimal, Event, EventError, Timestamp, Validator};
use serde_json::{Value, json};

use crate::timeparse::TimeFormat;
use crate::{IngestError, RejectionLog};

/// Which column plays which role; `None` means "find it by its usual names".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnMapping {
    /// `--customer-col`.
    pub customer: Option<String>,
    /// `--time-col`.
    pub time: Option<String>,
    /// `--order-col`.
    pub order: Option<String>,
    /// `--product-col`.
    pub product: Option<String>,
    /// `--category-col`.
    pub category: Option<String>,
    /// `--quantity-col`.
    pub quantity: Option<String>,
    /// `--amount-col` (the row's total).
    pub amount: Option<String>,
    /// `--price-col` (unit price; total = price × quantity).
    pub price: Option<String>,
    /// `--time-format` (strftime).
    pub time_format: Option<String>,
    /// Currency of the file's amounts (default: the base currency).
    pub currency: Option<String>,
    /// `--delimiter` of a CSV file (default: detected from the header line).
    pub delimiter: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ValueColumn {
    Amount(usize),
    Price(usize),
}

/// Column indices after resolving a [`ColumnMapping`] against a header.
#[derive(Clone, Debug)]
pub(crate) struct Columns {
    customer: usize,
    time: usize,
    order: Option<usize>,
    product: Option<usize>,
    category: Option<usize>,
    quantity: Option<usize>,
    value: ValueColumn,
    names: Vec<String>,
}

fn normalise(name: &str) -> String {
    name.chars().filter(|c| c.is_ascii_alphanumeric()).flat_map(char::to_lowercase).collect()
}

const CUSTOMER: &[&str] = &["customerid", "customer", "userid", "user", "clientid", "buyerid"];
const TIME: &[&str] =
    &["timestamp", "invoicedate", "orderdate", "date", "datetime", "time", "createdat", "purchasedat"];
const ORDER: &[&str] = &["orderid", "invoiceno", "invoice", "invoiceid", "order", "transactionid", "orderno"];
const PRODUCT: &[&str] = &["productid", "stockcode", "sku", "itemid", "product", "item"];
const CATEGORY: &[&str] = &["category", "productcategory", "categoryid"];
const QUANTITY: &[&str] = &["quantity", "qty", "units", "cds"];
const AMOUNT: &[&str] = &["amount", "revenue", "total", "sales", "value", "linetotal"];
const PRICE: &[&str] = &["unitprice", "price", "priceeach"];

impl Columns {
    pub(crate) fn resolve(names: Vec<String>, mapping: &ColumnMapping) -> Result<Self, IngestError> {
        let normalised: Vec<String> = names.iter().map(|n| normalise(n)).collect();
        let find = |explicit: &Option<String>,
                    flag: &'static str,
                    synonyms: &[&str]|
         -> Result<Option<usize>, IngestError> {
            match explicit {
                Some(name) => names
                    .iter()
                    .position(|n| n == name)
                    .or_else(|| normalised.iter().position(|n| *n == normalise(name)))
                    .map(Some)
                    .ok_or_else(|| IngestError::UnknownColumn { flag, name: name.clone(), available: names.clone() }),
                None => Ok(synonyms.iter().find_map(|s| normalised.iter().position(|n| n == s))),
            }
        };
        let required = |found: Option<usize>, role: &'static str, flag: &'static str| {
            found.ok_or_else(|| IngestError::MissingColumn { role, flag, available: names.clone() })
        };
        let customer = required(find(&mapping.customer, "--customer-col", CUSTOMER)?, "customer id", "--customer-col")?;
        let time = required(find(&mapping.time, "--time-col", TIME)?, "time", "--time-col")?;
        let amount = find(&mapping.amount, "--amount-col", AMOUNT)?;
        let price = find(&mapping.price, "--price-col", PRICE)?;
        let value = match (mapping.amount.is_some(), mapping.price.is_some(), amount, price) {
            (true, true, ..) => {
                return Err(IngestError::Mapping("give either --amount-col or --price-col, not both".into()));
            }
            (false, true, _, Some(p)) => ValueColumn::Price(p),
            (_, _, Some(a), _) => ValueColumn::Amount(a),
            (_, _, None, Some(p)) => ValueColumn::Price(p),
            (_, _, None, None) => {
                return Err(IngestError::MissingColumn {
                    role: "amount or unit price",
                    flag: "--amount-col or --price-col",
                    available: names.clone(),
                });
            }
        };
        Ok(Self {
            customer,
            time,
            order: find(&mapping.order, "--order-col", ORDER)?,
            product: find(&mapping.product, "--product-col", PRODUCT)?,
            category: find(&mapping.category, "--category-col", CATEGORY)?,
            quantity: find(&mapping.quantity, "--quantity-col", QUANTITY)?,
            value,
            names,
        })
    }

    /// "customer=CustomerID time=InvoiceDate …" for the run summary.
    pub(crate) fn describe(&self) -> String {
        let name = |i: usize| self.names[i].as_str();
        let mut parts = vec![format!("customer={}", name(self.customer)), format!("time={}", name(self.time))];
        for (role, col) in
            [("order", self.order), ("product", self.product), ("category", self.category), ("quantity", self.quantity)]
        {
            if let Some(i) = col {
                parts.push(format!("{role}={}", name(i)));
            }
        }
        parts.push(match self.value {
            ValueColumn::Amount(i) => format!("amount={}", name(i)),
            ValueColumn::Price(i) => format!("price={}", name(i)),
        });
        parts.join(" ")
    }

    fn width(&self) -> usize {
        self.names.len()
    }
}

/// One row of an order (of a refund: its quantity and amount made positive).
pub(crate) struct Line {
    pub(crate) line: u64,
    pub(crate) product: Option<String>,
    pub(crate) category: Option<String>,
    pub(crate) quantity: Decimal,
    pub(crate) unit_price: Option<Decimal>,
    /// The row's total.
    pub(crate) amount: Decimal,
}

/// Rows sharing an order id (a purchase, or a refund).
pub(crate) struct Order {
    pub(crate) id: String,
    pub(crate) first_line: u64,
    pub(crate) last_line: u64,
    pub(crate) customer: String,
    pub(crate) time: Timestamp,
    pub(crate) lines: Vec<Line>,
    pub(crate) total: Decimal,
}

/// An order of the file as an event: its first line, its text (for a
/// rejection) and the validated event or why not.
pub(crate) type Assembled = (u64, String, Result<Event, EventError>);

/// Turns rows into orders, then orders into validated events.
pub(crate) struct Assembler {
    columns: Columns,
    time_format: Option<TimeFormat>,
    explicit_time_format: bool,
    currency: Option<String>,
    purchases: Vec<Order>,
    purchase_index: HashMap<String, usize>,
    refunds: Vec<Order>,
    refund_index: HashMap<String, usize>,
    pub(crate) rows: u64,
}

impl Assembler {
    pub(crate) fn new(columns: Columns, mapping: &ColumnMapping) -> Self {
        Self {
            columns,
            time_format: mapping.time_format.as_deref().map(TimeFormat::named),
            explicit_time_format: mapping.time_format.is_some(),
            currency: mapping.currency.clone(),
            purchases: Vec::new(),
            purchase_index: HashMap::new(),
            refunds: Vec::new(),
            refund_index: HashMap::new(),
            rows: 0,
        }
    }

    pub(crate) fn columns(&self) -> &Columns {
        &self.columns
    }

    /// The column of the event times.
    pub(crate) fn time_column(&self) -> (usize, &str) {
        (self.columns.time, &self.columns.names[self.columns.time])
    }

    /// Reads every time with `format`, chosen by the caller from many rows
    /// (reported as detected).
    pub(crate) fn settle_time_format(&mut self, format: TimeFormat) {
        self.time_format = Some(format);
    }

    pub(crate) fn time_format(&self) -> Option<String> {
        self.time_format
            .as_ref()
            .map(|f| if self.explicit_time_format { f.describe() } else { format!("{} (detected)", f.describe()) })
    }

    /// Checks one row; problems go to `log` with the row's line number.
    pub(crate) fn push(&mut self, line: u64, fields: &[&str], log: &mut RejectionLog) {
        self.rows += 1;
        if let Err(error) = self.try_push(line, fields) {
            log.reject(line, error, fields.join(","));
        }
    }

    fn try_push(&mut self, line: u64, fields: &[&str]) -> Result<(), EventError> {
        let c = &self.columns;
        if fields.len() < c.width() {
            return Err(field_error("(row)", format!("has {} fields, the header has {}", fields.len(), c.width())));
        }
        let text = |i: usize| fields[i].trim();
        let optional = |i: Option<usize>| i.map(text).filter(|v| !v.is_empty()).map(str::to_owned);
        let col = |i: usize| c.names[i].clone();
        let customer = text(c.customer);
        if customer.is_empty() {
            return Err(field_error(col(c.customer), "empty customer id"));
        }
        let raw_time = text(c.time);
        if self.time_format.is_none() {
            self.time_format = TimeFormat::detect(raw_time);
        }
        let time = self.time_format.as_ref().and_then(|f| f.parse(raw_time)).ok_or_else(|| {
            let how = self.time_format.as_ref().map_or("any known format".into(), TimeFormat::describe);
            field_error(col(c.time), format!("{raw_time:?} does not match {how} (set --time-format)"))
        })?;
        let number = |i: usize| Decimal::parse(text(i)).map_err(|e| field_error(col(i), e.to_string()));
        let quantity = match c.quantity {
            Some(i) if !text(i).is_empty() => number(i)?,
            _ => Decimal { mantissa: 1, scale: 0 },
        };
        if quantity.is_zero() {
            return Err(field_error(col(c.quantity.unwrap_or(0)), "quantity is 0"));
        }
        let (total, unit_price) = match c.value {
            ValueColumn::Amount(i) => (number(i)?, None),
            ValueColumn::Price(i) => {
                let price = number(i)?;
                let total =
                    price.checked_mul(&quantity).ok_or_else(|| field_error(col(i), "price × quantity overflows"))?;
                (total, Some(price.abs()))
            }
        };
        let is_refund = quantity.is_negative() || total.is_negative();
        let order_id = optional(c.order);
        let key = order_id.clone().unwrap_or_else(|| format!("line-{line}"));
        let (orders, index) = if is_refund {
            (&mut self.refunds, &mut self.refund_index)
        } else {
            (&mut self.purchases, &mut self.purchase_index)
        };
        let slot = *index.entry(key.clone()).or_insert_with(|| {
            orders.push(Order {
                id: key,
                first_line: line,
                last_line: line,
                customer: customer.to_owned(),
                time,
                lines: Vec::new(),
                total: Decimal { mantissa: 0, scale: 0 },
            });
            orders.len() - 1
        });
        let order = &mut orders[slot];
        if order.customer != customer {
            return Err(field_error(
                col(c.customer),
                format!(
                    "order {:?} belongs to customer {:?} (line {}), this row names {customer:?}",
                    order_id.unwrap_or_default(),
                    order.customer,
                    order.first_line
                ),
            ));
        }
        order.total = order.total.checked_add(&total.abs()).ok_or_else(|| field_error("(order)", "total overflows"))?;
        order.time = order.time.min(time);
        order.last_line = line;
        order.lines.push(Line {
            line,
            product: optional(self.columns.product),
            category: optional(self.columns.category),
            quantity: quantity.abs(),
            unit_price,
            amount: total.abs(),
        });
        Ok(())
    }

    /// Validates every order as an event; returns (first line, outcome)
    /// pairs, and how many refunded rows no order explains
    /// ([`crate::refunds`]).
    pub(crate) fn finish(self, validator: &Validator) -> (Vec<Assembled>, u64) {
        let currency = self.currency.clone().unwrap_or_else(|| validator.currencies.base.code().to_owned());
        let mut out = Vec::with_capacity(self.purchases.len() + self.refunds.len());
        for order in &self.purchases {
            let all_priced = order.lines.iter().all(|l| l.unit_price.is_some() && l.product.is_some());
            let items: Vec<Value> = order
                .lines
                .iter()
                .filter_map(|l| {
                    let product = l.product.as_ref()?;
                    let mut item = json!({"product_id": product, "quantity": l.quantity.to_text()});
                    let m = item.as_object_mut()?;
                    if let Some(cat) = &l.category {
                        m.insert("category".into(), cat.as_str().into());
                    }
                    if let Some(price) = &l.unit_price {
                        m.insert("price".into(), price.to_text().into());
                    }
                    Some(item)
                })
                .collect();
            let mut event = json!({
                "type": "purchase", "event_id": order.id, "customer_id": order.customer,
                "timestamp": order.time.millis(), "currency": currency, "items": items,
            });
            if !all_priced || items.is_empty() {
                event["revenue"] = order.total.to_text().into();
            }
            out.push(decoded(validator, order.first_line, order.last_line, &event));
        }
        let names = &self.columns.names;
        let by_product = self.columns.product.map(|product| crate::refunds::RefundColumns { product: &names[product] });
        let matched = crate::refunds::match_refunds(&self.purchases, &self.purchase_index, &self.refunds, by_product);
        for (slot, refund) in matched.refunds {
            let order = &self.refunds[slot];
            let mut event = json!({
                "type": "refund", "event_id": refund.event_id, "customer_id": order.customer,
                "timestamp": order.time.millis(), "currency": currency, "amount": refund.amount.to_text(),
            });
            if let Some(order_id) = refund.order_id {
                event["order_id"] = order_id.into();
            }
            out.push(decoded(validator, refund.first_line, refund.last_line, &event));
        }
        for (line, error) in matched.rejected {
            out.push((line, format!("line {line}: a refunded row"), Err(error)));
        }
        (out, matched.rows_without_order)
    }
}

fn decoded(validator: &Validator, first: u64, last: u64, event: &Value) -> Assembled {
    let raw = format!("lines {first}-{last}: {event}");
    (first, raw, validator.decode(event.to_string().as_bytes()))
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> EventError {
    EventError::Field { field: field.into(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        list.split(',').map(str::to_owned).collect()
    }

    #[test]
    fn usual_names_are_found_and_flags_override_them() {
        let header = names("InvoiceNo,StockCode,Quantity,InvoiceDate,UnitPrice,CustomerID,Category,Total");
        let auto = Columns::resolve(header.clone(), &ColumnMapping::default()).unwrap();
        assert_eq!(
            auto.describe(),
            "customer=CustomerID time=InvoiceDate order=InvoiceNo product=StockCode category=Category quantity=Quantity amount=Total"
        );
        let mapping = ColumnMapping {
            price: Some("UnitPrice".into()),
            category: Some("stockcode".into()),
            ..ColumnMapping::default()
        };
        let flagged = Columns::resolve(header, &mapping).unwrap();
        assert!(
            flagged.describe().ends_with("category=StockCode quantity=Quantity price=UnitPrice"),
            "{}",
            flagged.describe()
        );
    }

    #[test]
    fn contradictory_or_unknown_flags_are_errors() {
        let header = names("customer,date,amount,price");
        let both =
            ColumnMapping { amount: Some("amount".into()), price: Some("price".into()), ..ColumnMapping::default() };
        assert!(matches!(Columns::resolve(header.clone(), &both), Err(IngestError::Mapping(_))));
        let unknown = ColumnMapping { category: Some("colour".into()), ..ColumnMapping::default() };
        assert!(matches!(
            Columns::resolve(header, &unknown),
            Err(IngestError::UnknownColumn { flag: "--category-col", .. })
        ));
    }
}
