//! `GET /`: a status page for people, served by the binary itself.
//!
//! Plain HTML and JavaScript in one file (`status_page.html`, compiled in):
//! no build step, no CDN, so it works offline and on an air-gapped host. The
//! page holds no data; its script reads `POST /v1/sql` and `GET /ready` like
//! any other client and refreshes itself. The route needs the query role like
//! every read endpoint; with tokens configured the browser is challenged with
//! HTTP Basic (any user name, the token as password), and the credentials it
//! then keeps are sent with the page's own requests.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// The page, with `__PATRON_PG__` standing for the pgwire address.
const PAGE: &str = include_str!("status_page.html");

/// The `WWW-Authenticate` challenge of the page: browsers prompt for Basic.
pub(crate) const CHALLENGE: &str = "Basic realm=\"Patron\", charset=\"UTF-8\"";

pub(crate) async fn page(State(state): State<Arc<AppState>>) -> Response {
    // A socket address is digits, dots, colons and brackets: nothing to escape.
    let pg = state.pg_addr().map_or_else(String::new, |a| a.to_string());
    let body = PAGE.replace("__PATRON_PG__", &pg);
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'",
            ),
        ],
        body,
    )
        .into_response()
}
