//! `patron.toml`: server configuration. Unknown keys are errors, so a typo
//! never silently disables a setting.
//!
//! ```toml
//! [[auth.tokens]]
//! token = "a-long-random-secret-for-producers"
//! roles = ["ingest"]
//!
//! [[auth.tokens]]
//! token = "another-long-random-secret"
//! roles = ["query", "admin"]
//!
//! [tls]                      # optional: HTTPS, pgwire TLS, Flight SQL over TLS
//! cert = "server.crt"
//! key = "server.key"
//!
//! [clv]                      # optional; these are the defaults
//! margin = 1.0               # share of revenue that is margin
//! horizon_days = 365
//! annual_discount_rate = 0.10
//! retention_cost_per_year = 0 # what keeping a customer costs a year; net_clv subtracts it
//!
//! [currency]                 # optional; without it only --currency (default EUR)
//! base = "EUR"
//! [currency.rates]           # value of one unit of each other currency in the base
//! USD = 0.92
//! ```
//!
//! `serve`, `score` and offline `query` read the same `[clv]` and
//! `[currency]`, so a batch run and the server give the same CLV.

use std::path::Path;

use anyhow::{Context, Result, bail};
use patron_model::{Currency, CurrencyTable};
use patron_score::ClvConfig;
use serde::Deserialize;

/// What a token may do. `admin` may do everything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Post events.
    Ingest,
    /// Read customers and metrics.
    Query,
    /// Create, list, read and close campaigns (their audience queries are read-only SQL).
    Campaign,
    /// Refit, inspect rejections, and everything else.
    Admin,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenConfig {
    pub(crate) token: String,
    pub(crate) roles: Vec<Role>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthConfig {
    #[serde(default)]
    pub(crate) tokens: Vec<TokenConfig>,
}

/// `[tls]`: a PEM certificate chain and private key (see [`crate::tls`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsConfig {
    pub(crate) cert: std::path::PathBuf,
    pub(crate) key: std::path::PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    pub(crate) auth: AuthConfig,
    #[serde(default)]
    pub(crate) tls: Option<TlsConfig>,
    /// `[clv]`: margin, horizon and discount rate of CLV.
    #[serde(default)]
    pub(crate) clv: ClvConfig,
    /// `[currency]`: the base currency and the rates of the others.
    #[serde(default)]
    pub(crate) currency: Option<CurrencyTable>,
}

/// Shortest token accepted: shorter secrets are guessable.
const MIN_TOKEN_LEN: usize = 16;

impl Config {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration {}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text)?;
        for (i, t) in config.auth.tokens.iter().enumerate() {
            if t.token.len() < MIN_TOKEN_LEN {
                bail!("auth.tokens[{i}]: tokens must be at least {MIN_TOKEN_LEN} characters");
            }
            if t.roles.is_empty() {
                bail!("auth.tokens[{i}]: give at least one role (ingest, query, admin)");
            }
        }
        config.clv.check().context("[clv]")?;
        if let Some(table) = &config.currency {
            table.check().context("[currency.rates]")?;
        }
        Ok(config)
    }

    /// The currency table: `[currency]`, or only the `--currency` flag's
    /// code, or only EUR. A flag that names another base than the file is an
    /// error, not a silent choice between them.
    pub(crate) fn currencies(&self, flag: Option<&str>) -> Result<CurrencyTable> {
        let flag = flag
            .map(|code| {
                Currency::from_code(code)
                    .with_context(|| format!("--currency {code:?} is not an ISO 4217 code Patron knows"))
            })
            .transpose()?;
        Ok(match (flag, &self.currency) {
            (Some(flag), Some(table)) if flag != table.base => {
                bail!(
                    "--currency {flag} disagrees with [currency] base = \"{}\" in the configuration; give one of them",
                    table.base
                )
            }
            (_, Some(table)) => table.clone(),
            (Some(flag), None) => CurrencyTable::only(flag),
            (None, None) => CurrencyTable::default(),
        })
    }
}

/// Bearer-token check.
#[derive(Clone, Debug, Default)]
pub(crate) struct Auth {
    tokens: Vec<TokenConfig>,
}

/// The outcome of checking a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allowed,
    /// No token, or not a known one: 401.
    Unauthenticated,
    /// A known token without the role: 403.
    Forbidden,
}

impl Auth {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        Self { tokens: config.tokens.clone() }
    }

    /// Whether tokens are configured at all (without them, loopback only and everyone allowed).
    pub(crate) fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Whether `token` is a configured token with the `needed` role (for
    /// protocols without headers: the pgwire password).
    /// What a caller may read over SQL: everything without tokens, `rejected_events`
    /// only with the admin role, nothing without the query role.
    pub(crate) fn sql_access(&self, authorization: Option<&str>) -> Option<patron_sql::Access> {
        match (self.check(authorization, Role::Admin), self.check(authorization, Role::Query)) {
            (Verdict::Allowed, _) => Some(patron_sql::Access::Admin),
            (_, Verdict::Allowed) => Some(patron_sql::Access::Query),
            _ => None,
        }
    }

    /// The tokens that may use SQL, with what each may read (`None` without tokens):
    /// the passwords pgwire's SCRAM exchange accepts.
    pub(crate) fn sql_tokens(&self) -> Option<Vec<(String, patron_sql::Access)>> {
        self.enabled().then(|| {
            self.tokens
                .iter()
                .filter_map(|t| self.sql_access_of_token(&t.token).map(|access| (t.token.clone(), access)))
                .collect()
        })
    }

    /// [`Self::sql_access`] of a bare token (a pgwire password, a Flight SQL bearer).
    pub(crate) fn sql_access_of_token(&self, token: &str) -> Option<patron_sql::Access> {
        self.sql_access(Some(&format!("Bearer {token}")))
    }

    pub(crate) fn check(&self, authorization: Option<&str>, needed: Role) -> Verdict {
        if !self.enabled() {
            return Verdict::Allowed;
        }
        let Some(presented) = authorization.and_then(presented_token) else {
            return Verdict::Unauthenticated;
        };
        let presented = presented.as_str();
        // Compare against every token in constant time per token, so timing
        // does not reveal how much of a token matched.
        let found = self.tokens.iter().fold(None, |found, t| {
            let equal = t.token.len() == presented.len()
                && t.token.bytes().zip(presented.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if equal { Some(t) } else { found }
        });
        match found {
            None => Verdict::Unauthenticated,
            Some(t) if t.roles.contains(&Role::Admin) || t.roles.contains(&needed) => Verdict::Allowed,
            Some(_) => Verdict::Forbidden,
        }
    }
}

/// The token an `Authorization` header carries: `Bearer <token>`, or HTTP Basic
/// with the token as the password and any user name. Basic is what a browser
/// sends after its own sign-in prompt, so the status page works with tokens
/// without a login form of its own.
fn presented_token(authorization: &str) -> Option<String> {
    use base64::Engine as _;
    if let Some(token) = authorization.strip_prefix("Bearer ") {
        return Some(token.trim().to_owned());
    }
    let encoded = authorization.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let credentials = String::from_utf8(decoded).ok()?;
    credentials.split_once(':').map(|(_user, password)| password.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_accepted_as_bearer_or_as_the_basic_password() {
        let config = Config::parse(
            "[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nroles = [\"query\"]\n\
             [[auth.tokens]]\ntoken = \"ingest-only-token-1\"\nroles = [\"ingest\"]\n",
        )
        .unwrap();
        let auth = Auth::new(&config.auth);
        // "anyone:0123456789abcdef" and "x:ingest-only-token-1" and "x:wrong-token-000000", base64.
        let basic_query = "Basic YW55b25lOjAxMjM0NTY3ODlhYmNkZWY=";
        let basic_ingest = "Basic eDppbmdlc3Qtb25seS10b2tlbi0x";
        let basic_wrong = "Basic eDp3cm9uZy10b2tlbi0wMDAwMDA=";
        assert_eq!(auth.check(Some("Bearer 0123456789abcdef"), Role::Query), Verdict::Allowed);
        assert_eq!(auth.check(Some(basic_query), Role::Query), Verdict::Allowed);
        assert_eq!(auth.check(Some(basic_ingest), Role::Query), Verdict::Forbidden);
        assert_eq!(auth.check(Some(basic_wrong), Role::Query), Verdict::Unauthenticated);
        assert_eq!(auth.check(Some("Basic not-base64!"), Role::Query), Verdict::Unauthenticated);
        assert_eq!(auth.check(None, Role::Query), Verdict::Unauthenticated);
    }

    #[test]
    fn configuration_is_strict() {
        let ok = Config::parse("[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nroles = [\"ingest\"]\n").unwrap();
        assert_eq!(ok.auth.tokens[0].roles, vec![Role::Ingest]);
        assert!(Config::parse("[auth]\ntokenz = []\n").is_err(), "unknown keys are errors");
        assert!(Config::parse("[[auth.tokens]]\ntoken = \"short\"\nroles = [\"ingest\"]\n").is_err());
        assert!(Config::parse("[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nroles = []\n").is_err());
        assert!(Config::parse("[[auth.tokens]]\ntoken = \"0123456789abcdef\"\nroles = [\"root\"]\n").is_err());
    }

    #[test]
    fn clv_and_currency_sections_are_read_and_checked() {
        let config = Config::parse(
            "[clv]\nmargin = 0.3\nhorizon_days = 180\nretention_cost_per_year = 12.5\n[currency]\nbase = \"EUR\"\n[currency.rates]\nUSD = 0.92\n",
        )
        .unwrap();
        let clv = ClvConfig { margin: 0.3, horizon_days: 180.0, retention_cost_per_year: 12.5, ..ClvConfig::default() };
        assert_eq!(config.clv, clv);
        let table = config.currencies(None).unwrap();
        assert_eq!((table.base.code(), table.rates.len()), ("EUR", 1));
        assert_eq!(config.currencies(Some("EUR")).unwrap(), table);
        let refused = format!("{:#}", config.currencies(Some("USD")).unwrap_err());
        assert!(refused.contains("--currency USD") && refused.contains("EUR"), "{refused}");
        assert_eq!(Config::default().currencies(Some("USD")).unwrap().base.code(), "USD");
        assert_eq!(Config::default().currencies(None).unwrap(), CurrencyTable::default());
        for (text, named) in [
            ("[clv]\nmargin = 2\n", "margin"),
            ("[clv]\nmargn = 0.3\n", "margn"),
            ("[clv]\nretention_cost_per_year = -1\n", "retention_cost_per_year"),
            ("[currency]\nbase = \"EUR\"\n[currency.rates]\nUSD = 0\n", "USD"),
            ("[currency]\nbase = \"EUR\"\n[currency.rates]\nEUR = 1\n", "EUR"),
            ("[currency]\nbase = \"XYZ\"\n", "XYZ"),
            ("[currency]\nrates = { USD = 0.92 }\n", "base"),
        ] {
            let error = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(error.contains(named), "{text}: {error}");
        }
    }
}
