//! Fuzzing SQL admission with a fixed budget: token soups of any length never
//! panic the complexity check, and every statement it admits parses, plans and
//! runs on a thread with the stack the server gives SQL threads, without
//! overflowing it (an overflow aborts this test process, which fails the run).

use datafusion::prelude::SessionContext;
use patron_sql::{SQL_THREAD_STACK_BYTES, SqlEngine, check_complexity};
use proptest::prelude::*;

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "1",
        "2.5",
        "'a'",
        "x",
        "+",
        "-",
        "*",
        "/",
        "||",
        "=",
        "<",
        "AND",
        "OR",
        "NOT",
        "(",
        ")",
        ",",
        "::BIGINT",
        "CASE WHEN 1 = 1 THEN 2 ELSE 3 END",
        "abs(",
        "coalesce(1,",
        "IS NULL",
        "[",
        "]",
    ])
}

/// Runs `sql` as a query on a thread with the server's SQL stack; any error is fine.
fn run_with_server_stack(sql: String) -> std::thread::Result<()> {
    std::thread::Builder::new()
        .stack_size(SQL_THREAD_STACK_BYTES)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            runtime.block_on(async {
                if SqlEngine::parse(&sql).is_ok()
                    && let Ok(frame) = SessionContext::new().sql(&sql).await
                {
                    let _ = frame.collect().await;
                }
            });
        })
        .expect("thread starts")
        .join()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn admitted_statements_parse_plan_and_run_within_the_sql_stack(
        tokens in prop::collection::vec(token(), 0..2_500),
        chained in 0usize..1_100,
    ) {
        let soup = format!("SELECT {}", tokens.join(" "));
        // The check never panics on anything.
        let _ = check_complexity(&soup);
        // Long well-formed chains near the limit: the shape that overflowed before.
        let chain = format!("SELECT {}", vec!["1"; chained + 1].join(" + "));
        for sql in [soup, chain] {
            if check_complexity(&sql).is_ok() {
                prop_assert!(run_with_server_stack(sql).is_ok());
            }
        }
    }
}
