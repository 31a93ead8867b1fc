//! Which order of a file each refund undoes.
//!
//! The engine nets a refund against the order it names (`order_id`), so a
//! file's refunds must name their orders. Files mark refunds in two ways:
//! - with the order's own id and a negative quantity or amount: the refund
//!   names that order;
//! - with an id of their own, as UCI Online Retail's `C`-prefixed
//!   cancellation invoices do (`C581484` cancels lines of `581483`, but says
//!   so nowhere). Each refunded line is then matched by product: it undoes
//!   the customer's most recent earlier orders holding that product, newest
//!   first, up to the quantity each still holds. A refund spread over two
//!   orders becomes one refund event per order.
//!
//! A refunded row no earlier order of the file explains (a discount or a
//! postage adjustment, a purchase from before the file starts, more units
//! than were bought) becomes a refund without an order: it lowers revenue
//! only, and the engine refuses it beyond the customer's net revenue. Netting
//! it against the wrong order would corrupt that order's value. Without a
//! product column, a refund that does not carry an order's id is such a
//! refund too.

use std::collections::HashMap;

use patron_model::{Decimal, EventError, Timestamp};

use crate::tabular::{Line, Order};

/// A refund event to emit.
pub(crate) struct RefundOf {
    pub(crate) event_id: String,
    /// The refunded order (`None`: no order of the file matched by id, and
    /// the file has no products to match by).
    pub(crate) order_id: Option<String>,
    pub(crate) amount: Decimal,
    pub(crate) first_line: u64,
    pub(crate) last_line: u64,
}

/// What became of a file's refunds.
#[derive(Default)]
pub(crate) struct Matched {
    pub(crate) refunds: Vec<(usize, RefundOf)>,
    /// Refunded rows no order explains, refunded without an order.
    pub(crate) rows_without_order: u64,
    /// Rows that could not be refunded at all: (line, why).
    pub(crate) rejected: Vec<(u64, EventError)>,
}

/// What remains of a purchase line to refund.
struct Open {
    order: usize,
    product: String,
    quantity: Decimal,
    unit_price: Option<Decimal>,
}

fn minus(a: &Decimal, b: &Decimal) -> Option<Decimal> {
    a.checked_add(&Decimal { mantissa: b.mantissa.checked_neg()?, scale: b.scale })
}

fn min(a: Decimal, b: Decimal) -> Decimal {
    match minus(&a, &b) {
        Some(d) if d.is_negative() => a,
        _ => b,
    }
}

/// The column a refund's rejection names.
pub(crate) struct RefundColumns<'a> {
    pub(crate) product: &'a str,
}

/// Matches `refunds` (in file order) to `purchases`; `purchase_ids` maps an
/// order id to its slot in `purchases`.
pub(crate) fn match_refunds(
    purchases: &[Order],
    purchase_ids: &HashMap<String, usize>,
    refunds: &[Order],
    by_product: Option<RefundColumns<'_>>,
) -> Matched {
    // Each customer's purchase lines with a product, newest order first.
    let mut open: HashMap<&str, Vec<Open>> = HashMap::new();
    if by_product.is_some() {
        let mut slots: Vec<usize> = (0..purchases.len()).collect();
        slots.sort_by_key(|&s| std::cmp::Reverse(purchases[s].time));
        for slot in slots {
            let order = &purchases[slot];
            let lines = open.entry(order.customer.as_str()).or_default();
            for line in &order.lines {
                if let Some(product) = &line.product {
                    let (quantity, unit_price) = (line.quantity, line.unit_price);
                    lines.push(Open { order: slot, product: product.clone(), quantity, unit_price });
                }
            }
        }
    }
    let mut matched = Matched::default();
    for (slot, refund) in refunds.iter().enumerate() {
        let named = purchase_ids.get(&refund.id).filter(|&&p| purchases[p].customer == refund.customer);
        if let Some(&order) = named {
            let event_id = format!("{}#refund", refund.id);
            let of = RefundOf {
                event_id,
                order_id: Some(purchases[order].id.clone()),
                amount: refund.total,
                first_line: refund.first_line,
                last_line: refund.last_line,
            };
            matched.refunds.push((slot, of));
            continue;
        }
        let Some(columns) = &by_product else {
            let of = RefundOf {
                event_id: refund.id.clone(),
                order_id: None,
                amount: refund.total,
                first_line: refund.first_line,
                last_line: refund.last_line,
            };
            matched.refunds.push((slot, of));
            continue;
        };
        // Amount refunded per earlier order, in the order first matched.
        let mut per_order: Vec<(usize, Decimal)> = Vec::new();
        let mut without_order = Decimal { mantissa: 0, scale: 0 };
        let lines = open.get_mut(refund.customer.as_str());
        let mut lines = lines.map(|l| l.iter_mut().collect::<Vec<_>>()).unwrap_or_default();
        for line in &refund.lines {
            let unexplained =
                match_line(line, refund.time, purchases, &mut lines, &mut per_order).and_then(|rest| match rest {
                    Some(amount) => without_order.checked_add(&amount).ok_or("amount overflows").map(Some),
                    None => Ok(None),
                });
            match unexplained {
                Ok(Some(sum)) => {
                    without_order = sum;
                    matched.rows_without_order += 1;
                }
                Ok(None) => {}
                Err(reason) => {
                    let error = EventError::Field { field: columns.product.to_owned(), reason: reason.to_owned() };
                    matched.rejected.push((line.line, error));
                }
            }
        }
        if !without_order.is_zero() {
            let event_id =
                if per_order.is_empty() { refund.id.clone() } else { format!("{}#without-order", refund.id) };
            let of = RefundOf {
                event_id,
                order_id: None,
                amount: without_order,
                first_line: refund.first_line,
                last_line: refund.last_line,
            };
            matched.refunds.push((slot, of));
        }
        let several = per_order.len() > 1;
        for (order, amount) in per_order {
            let order_id = purchases[order].id.clone();
            let event_id = if several { format!("{}#{order_id}", refund.id) } else { refund.id.clone() };
            let of = RefundOf {
                event_id,
                order_id: Some(order_id),
                amount,
                first_line: refund.first_line,
                last_line: refund.last_line,
            };
            matched.refunds.push((slot, of));
        }
    }
    matched
}

/// Spreads one refunded line over the newest earlier orders holding its
/// product, adding to `per_order`; returns the amount no order explains.
fn match_line(
    line: &Line,
    at: Timestamp,
    purchases: &[Order],
    open: &mut [&mut Open],
    per_order: &mut Vec<(usize, Decimal)>,
) -> Result<Option<Decimal>, &'static str> {
    let Some(product) = &line.product else { return Ok(Some(line.amount)) };
    let mut candidates: Vec<&mut Open> = open
        .iter_mut()
        .filter(|o| &o.product == product && purchases[o.order].time <= at && !o.quantity.is_zero())
        .map(|o| &mut **o)
        .collect();
    if candidates.is_empty() {
        return Ok(Some(line.amount));
    }
    // (candidate, quantity taken from it)
    let mut allocations: Vec<(usize, Decimal)> = Vec::new();
    let mut need = line.quantity;
    for (i, candidate) in candidates.iter().enumerate() {
        if need.is_zero() {
            break;
        }
        let take = min(candidate.quantity, need);
        allocations.push((i, take));
        need = minus(&need, &take).ok_or("quantity overflows")?;
    }
    let rest = match (need.is_zero(), line.unit_price) {
        (true, _) => None,
        (false, Some(price)) => Some(price.checked_mul(&need).ok_or("amount overflows")?),
        (false, None) => return Ok(Some(line.amount)),
    };
    let whole = allocations.len() == 1 && rest.is_none();
    let mut amounts = Vec::with_capacity(allocations.len());
    for &(i, take) in &allocations {
        let amount = match (whole, line.unit_price.or(candidates[i].unit_price)) {
            (true, _) => line.amount,
            (false, Some(price)) => price.checked_mul(&take).ok_or("amount overflows")?,
            (false, None) => {
                return Err("the refund spans several orders and no unit price says how to split its amount");
            }
        };
        amounts.push(amount);
    }
    // Only now that the whole line is explained does it use up quantity.
    for (&(i, take), amount) in allocations.iter().zip(amounts) {
        let candidate = &mut candidates[i];
        candidate.quantity = minus(&candidate.quantity, &take).ok_or("quantity overflows")?;
        let order = candidate.order;
        match per_order.iter_mut().find(|(o, _)| *o == order) {
            Some((_, sum)) => *sum = sum.checked_add(&amount).ok_or("amount overflows")?,
            None => per_order.push((order, amount)),
        }
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (event id, order, amount) of each refund to emit.
    fn emitted(matched: &Matched) -> Vec<(&str, Option<&str>, String)> {
        matched.refunds.iter().map(|(_, r)| (r.event_id.as_str(), r.order_id.as_deref(), r.amount.to_text())).collect()
    }

    const COLUMNS: RefundColumns<'static> = RefundColumns { product: "StockCode" };

    fn decimal(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    fn line(n: u64, product: &str, quantity: &str, price: &str) -> Line {
        let (quantity, unit_price) = (decimal(quantity), decimal(price));
        let amount = quantity.checked_mul(&unit_price).unwrap();
        Line { line: n, product: Some(product.into()), category: None, quantity, unit_price: Some(unit_price), amount }
    }

    fn order(id: &str, day: &str, lines: Vec<Line>) -> Order {
        let total = lines.iter().fold(decimal("0"), |sum, l| sum.checked_add(&l.amount).unwrap());
        Order {
            id: id.into(),
            first_line: lines[0].line,
            last_line: lines[lines.len() - 1].line,
            customer: "16446".into(),
            time: Timestamp::parse_date_or_rfc3339(day).unwrap(),
            lines,
            total,
        }
    }

    #[test]
    fn a_cancellation_invoice_nets_against_the_newest_earlier_orders_holding_its_products() {
        let purchases = vec![
            order("553573", "2011-05-18", vec![line(2, "22980", "1", "1.65"), line(3, "22982", "1", "1.25")]),
            order("581483", "2011-12-09", vec![line(4, "23843", "80995", "2.08")]),
            order("581490", "2011-12-09", vec![line(5, "22980", "2", "1.65")]),
        ];
        let ids = purchases.iter().enumerate().map(|(i, o)| (o.id.clone(), i)).collect();
        let refunds = vec![
            order("C581484", "2011-12-09", vec![line(6, "23843", "80995", "2.08")]),
            // Three units of 22980: two from the newest order, one from the May one.
            order("C581499", "2011-12-10", vec![line(7, "22980", "3", "1.65")]),
            // A discount, or a product bought before the file: revenue only.
            order("C500000", "2011-12-10", vec![line(8, "D", "1", "5")]),
        ];
        let matched = match_refunds(&purchases, &ids, &refunds, Some(COLUMNS));
        let got = emitted(&matched);
        assert_eq!(
            got,
            vec![
                ("C581484", Some("581483"), "168469.60".to_owned()),
                ("C581499#581490", Some("581490"), "3.30".to_owned()),
                ("C581499#553573", Some("553573"), "1.65".to_owned()),
                ("C500000", None, "5".to_owned()),
            ]
        );
        assert_eq!((matched.rows_without_order, matched.rejected.len()), (1, 0));
    }

    #[test]
    fn more_than_was_bought_nets_what_was_bought_and_refunds_the_rest_without_an_order() {
        let purchases = vec![order("1", "2011-01-01", vec![line(2, "A", "2", "1")])];
        let ids = HashMap::from([("1".to_owned(), 0)]);
        let refunds = vec![
            order("C2", "2011-01-02", vec![line(3, "A", "3", "1")]),
            order("C3", "2011-01-03", vec![line(4, "A", "2", "1")]),
        ];
        let matched = match_refunds(&purchases, &ids, &refunds, Some(COLUMNS));
        let got = emitted(&matched);
        assert_eq!(
            got,
            vec![
                ("C2#without-order", None, "1".to_owned()),
                ("C2", Some("1"), "2".to_owned()),
                ("C3", None, "2".to_owned()),
            ],
            "two units net against order 1, the third was bought elsewhere; the later refund finds nothing left"
        );
    }

    #[test]
    fn a_refund_carrying_its_orders_id_names_that_order() {
        let purchases = vec![order("o-1", "2011-01-01", vec![line(2, "A", "2", "1")])];
        let ids = HashMap::from([("o-1".to_owned(), 0)]);
        let refunds = vec![order("o-1", "2011-01-02", vec![line(3, "A", "1", "1")])];
        let matched = match_refunds(&purchases, &ids, &refunds, None);
        let r = &matched.refunds[0].1;
        assert_eq!((r.event_id.as_str(), r.order_id.as_deref()), ("o-1#refund", Some("o-1")));
    }
}
