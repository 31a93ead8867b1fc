//! Property tests: any valid event survives encode → decode unchanged, and no
//! input, however broken, panics the decoder.

use patron_model::{
    Acquisition, ChannelConsent, Consent, ConsentChange, CurrencyTable, CustomerId, Decimal, Event, EventId, EventKind,
    LineItem, ProductId, Purchase, Refund, Timestamp, Validator,
};
use proptest::prelude::*;

fn validator() -> Validator {
    Validator {
        now: Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").unwrap(),
        ..Validator::new(CurrencyTable::default())
    }
}

fn id_text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_:./-]{1,40}|[^\\p{Cc}]{1,20}".prop_filter("not blank", |s| !s.trim().is_empty() && s.len() <= 256)
}

fn item() -> impl Strategy<Value = LineItem> {
    (id_text(), proptest::option::of("[a-z]{1,12}"), 1i128..10_000, 0u32..3, proptest::option::of(0i64..10_000_000))
        .prop_map(|(product, category, q, scale, price)| LineItem {
            product_id: ProductId::new(&product).unwrap(),
            category: category.map(Into::into),
            quantity: normalise(Decimal { mantissa: q, scale }),
            unit_price_minor: price,
        })
}

fn normalise(mut d: Decimal) -> Decimal {
    while d.scale > 0 && d.mantissa % 10 == 0 {
        d.mantissa /= 10;
        d.scale -= 1;
    }
    d
}

fn acquisition() -> impl Strategy<Value = Acquisition> {
    (proptest::option::of(0i64..100_000_000), proptest::option::of("[a-z_]{1,20}"))
        .prop_filter("states something", |(cost, channel)| cost.is_some() || channel.is_some())
        .prop_map(|(cost_minor, channel)| Acquisition { cost_minor, channel: channel.map(Into::into) })
}

fn event() -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        (
            proptest::collection::vec(item(), 0..4),
            0i64..1_000_000_000,
            proptest::option::of("[a-z0-9-]{1,10}"),
            proptest::option::of(acquisition())
        )
            .prop_map(|(items, revenue_minor, order, acquisition)| EventKind::Purchase(Purchase {
                order_id: order.map(|o| format!("order-{o}").into()),
                items,
                revenue_minor,
                acquisition
            })),
        acquisition().prop_map(EventKind::Customer),
        (1i64..1_000_000_000, proptest::option::of("[a-z0-9-]{1,10}")).prop_map(|(amount_minor, order)| {
            EventKind::Refund(Refund { order_id: order.map(Into::into), amount_minor: Some(amount_minor) })
        }),
        "[a-z0-9-]{1,10}"
            .prop_map(|order| EventKind::Refund(Refund { order_id: Some(order.into()), amount_minor: None })),
        (
            any::<Option<bool>>(),
            any::<Option<bool>>(),
            any::<bool>(),
            proptest::collection::btree_map("[a-z][a-z0-9_]{0,11}", any::<bool>(), 0..3)
        )
            .prop_map(|(email, sms, push, other)| EventKind::Consent(ConsentChange {
                channels: Consent { email, sms, push: Some(push) },
                // Named apart from the three (a `c-` prefix), in name order as decoding gives.
                other: other
                    .into_iter()
                    .map(|(name, given)| ChannelConsent { channel: format!("c-{name}").into(), given })
                    .collect(),
            })),
    ];
    (id_text(), id_text(), 631_152_000_000i64..1_795_000_000_000, kind).prop_map(|(e, c, ms, kind)| Event {
        event_id: EventId::new(&e).unwrap(),
        customer_id: CustomerId::new(&c).unwrap(),
        timestamp: Timestamp::from_millis(ms),
        kind,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn valid_events_round_trip(e in event()) {
        let v = validator();
        let json = e.to_json(v.currencies.base).to_string();
        let back = v.decode(json.as_bytes()).map_err(|err| TestCaseError::fail(format!("{err}: {json}")))?;
        prop_assert_eq!(back, e);
    }

    #[test]
    fn the_log_codec_round_trips_and_rejects_every_truncation(e in event()) {
        let mut bytes = Vec::new();
        patron_model::encode_event(&e, &mut bytes);
        let mut pos = 0;
        prop_assert_eq!(patron_model::decode_event(&bytes, &mut pos), Some(e));
        prop_assert_eq!(pos, bytes.len());
        for cut in 0..bytes.len() {
            prop_assert!(patron_model::decode_event(&bytes[..cut], &mut 0).is_none());
        }
    }

    #[test]
    fn the_log_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = patron_model::decode_event(&bytes, &mut 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = validator().decode(&bytes);
    }

    #[test]
    fn mutated_events_never_panic(e in event(), cut in 0usize..400, junk in "[\\[\\]{}\":,0-9a-z\\-.e]{0,6}") {
        let json = e.to_json(validator().currencies.base).to_string();
        let cut = cut.min(json.len());
        let mut mutated = json.as_bytes()[..cut].to_vec();
        mutated.extend_from_slice(junk.as_bytes());
        mutated.extend_from_slice(&json.as_bytes()[cut..]);
        let _ = validator().decode(&mutated);
    }

    /// Hostile amounts (huge, tiny, exponents, many digits) never panic the
    /// validator, and whatever it accepts stays within the documented bounds.
    #[test]
    fn accepted_amounts_stay_within_bounds(
        revenue in "-?[0-9]{1,22}(\\.[0-9]{0,20})?(e-?[0-9]{1,3})?",
        price in "[0-9]{1,20}(\\.[0-9]{0,4})?(e[0-9]{1,2})?",
        quantity in "[0-9]{1,20}(\\.[0-9]{0,4})?",
        items in 0usize..4,
    ) {
        let lines: Vec<String> = (0..items)
            .map(|i| format!(r#"{{"product_id":"p{i}","quantity":"{quantity}","price":"{price}"}}"#))
            .collect();
        let json = format!(
            r#"{{"type":"purchase","event_id":"o","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","revenue":"{revenue}","items":[{}]}}"#,
            lines.join(",")
        );
        if let Ok(event) = validator().decode(json.as_bytes()) {
            let EventKind::Purchase(p) = &event.kind else { return Err(TestCaseError::fail("not a purchase")) };
            prop_assert!((0..=patron_model::MAX_AMOUNT_MINOR).contains(&p.revenue_minor));
            for item in &p.items {
                prop_assert!(item.unit_price_minor.is_none_or(|m| (0..=patron_model::MAX_AMOUNT_MINOR).contains(&m)));
                prop_assert!(item.quantity.to_f64() <= patron_model::MAX_QUANTITY as f64);
            }
        }
        let refund = format!(
            r#"{{"type":"refund","event_id":"r","customer_id":"c","timestamp":"2026-11-22T08:00:00Z","amount":"{revenue}"}}"#
        );
        if let Ok(Event { kind: EventKind::Refund(r), .. }) = validator().decode(refund.as_bytes()) {
            prop_assert!(r.amount_minor.is_some_and(|a| (1..=patron_model::MAX_AMOUNT_MINOR).contains(&a)));
        }
    }
}
