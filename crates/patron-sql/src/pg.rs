//! The PostgreSQL wire protocol front end (psql, psycopg, JDBC, BI tools).
//!
//! Built on `datafusion-postgres` for the protocol plumbing and its
//! `pg_catalog` emulation (what `\d` and BI tools query at connect time), but
//! never on its default execution path, which is not safe (DESIGN.md §8):
//! - a guard hook runs first on every simple-protocol statement: queries are
//!   planned and run by [`SqlEngine`] (read-only, bounded), the harmless
//!   session statements drivers send (`SET application_name`, `BEGIN`, `SHOW`)
//!   go to the library's hooks, everything else is refused with SQLSTATE 25006;
//! - the read-only bulk paths stream: `COPY … TO STDOUT` sends each batch as
//!   a `CopyData` message as it is computed (module `copy_out`), and
//!   `DECLARE … CURSOR FOR query` keeps the running query in a portal from
//!   which `FETCH` (answered by the library's cursor hook) pulls rows;
//!   neither holds the whole answer ([`SqlEngine::execute_stream`]);
//! - the extended protocol (prepared statements) is parsed by the library,
//!   vetted by the same hook at parse time, and executed here by
//!   [`SqlEngine::execute`] with the portal's result formats;
//! - with tokens configured, the password is a token with the `query` role
//!   (any user name), checked by SCRAM-SHA-256 so it never crosses the wire,
//!   and its roles decide what the connection may read ([`Access`]); without
//!   tokens every connection is accepted;
//! - statement text is vetted by [`check_complexity`] before the library's
//!   parser sees it (simple and extended protocol alike);
//! - a query over Patron's own tables (and no catalog table) is parsed and
//!   planned from the client's text exactly as `POST /v1/sql` does, so both
//!   answer alike: the library's rewrites are for the catalog queries of
//!   psql and drivers, and one of them replaces a correlated subquery in the
//!   select list with NULL, a silently wrong answer over user tables.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, Parser};
use futures_util::Sink;
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;

use crate::admission::{Access, check_complexity};
use crate::scram::{ScramVerifier, ServerFirst};
use crate::session::{QueryResult, SqlEngine, SqlError, Verdict, classify};

/// Decides what a password (a bearer token) may read: `None` when it is not a
/// token with the `query` role.
pub type PasswordCheck = Arc<dyn Fn(&str) -> Option<Access> + Send + Sync>;

/// Connection metadata key holding what the connection may read.
const ACCESS_KEY: &str = "patron.access";

/// The [`ACCESS_KEY`] value of a connection that only has the query role.
const QUERY_ONLY: &str = "query";

/// What a connection may read: admin when no tokens are configured (nothing
/// was checked, as for HTTP), otherwise what its password allowed.
fn access_of(client: &(impl ClientInfo + ?Sized)) -> Access {
    match client.metadata().get(ACCESS_KEY).map(String::as_str) {
        Some(QUERY_ONLY) => Access::Query,
        _ => Access::Admin,
    }
}

fn user_error(error: &SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), error.sqlstate().into(), error.to_string())))
}

fn respond(result: QueryResult, format: &Format, options: Arc<FormatOptions>) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(&result.schema, format, Some(options))?);
    let row_fields = fields.clone();
    let rows = result.batches.into_iter().flat_map(move |batch| encode_recordbatch(row_fields.clone(), batch));
    Ok(Response::Query(QueryResponse::new(fields, futures_util::stream::iter(rows))))
}

/// Runs queries through [`SqlEngine`] and refuses what is not read-only.
struct GuardHook {
    sql: Arc<SqlEngine>,
}

#[async_trait]
impl QueryHook for GuardHook {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if is_show_server_version(statement) {
            return Some(server_version_row(&Format::UnifiedText));
        }
        match classify(statement) {
            Verdict::Cosmetic => None,
            Verdict::NoOp(tag) => Some(Ok(Response::Execution(Tag::new(tag)))),
            Verdict::Refused(what) => Some(Err(user_error(&SqlError::Refused(what)))),
            Verdict::CopyOut => Some(self.copy_out(statement, access_of(&*client)).await),
            Verdict::DeclareCursor => Some(self.declare_cursor(statement, client).await),
            Verdict::Query => {
                let result = match self.sql.plan(statement, access_of(&*client)).await {
                    Ok(plan) => self.sql.execute(plan).await,
                    Err(e) => Err(e),
                };
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                Some(match result {
                    Ok(result) => respond(result, &Format::UnifiedText, options),
                    Err(e) => Err(user_error(&e)),
                })
            }
        }
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        match classify(statement) {
            Verdict::Cosmetic => None,
            // Answered at execution (below); the plan is never run.
            Verdict::NoOp(_) => Some(Ok(empty_plan())),
            Verdict::Refused(what) => Some(Err(user_error(&SqlError::Refused(what)))),
            // Checked and planned now, so errors come at parse time; run at execution.
            Verdict::CopyOut | Verdict::DeclareCursor => Some(
                match self.bulk_query(statement) {
                    Ok(query) => self.sql.plan(&query, access_of(client)).await.map(|_| empty_plan()),
                    Err(e) => Err(e),
                }
                .map_err(|e| user_error(&e)),
            ),
            Verdict::Query => Some(self.sql.plan(statement, access_of(client)).await.map_err(|e| user_error(&e))),
        }
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if is_show_server_version(statement) {
            return Some(server_version_row(&Format::UnifiedText));
        }
        match classify(statement) {
            Verdict::NoOp(tag) => Some(Ok(Response::Execution(Tag::new(tag)))),
            Verdict::CopyOut => Some(self.copy_out(statement, access_of(&*client)).await),
            Verdict::DeclareCursor => Some(self.declare_cursor(statement, client).await),
            _ => None,
        }
    }
}

/// The plan of a statement answered by the wire layer itself.
fn empty_plan() -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

impl GuardHook {
    /// The query whose rows a `COPY … TO STDOUT` or a single-cursor `DECLARE` reads.
    fn bulk_query(&self, statement: &Statement) -> Result<Statement, SqlError> {
        match statement {
            Statement::Copy { .. } => Ok(crate::copy_out::copy_out(statement)?.query),
            Statement::Declare { stmts } => match stmts.as_slice() {
                [declare] if declare.binary != Some(true) => declare
                    .for_query
                    .as_ref()
                    .map(|query| Statement::Query(query.clone()))
                    .ok_or_else(|| SqlError::Refused("DECLARE without a query".into())),
                [_] => Err(SqlError::Refused("a BINARY cursor (text cursors are read)".into())),
                _ => Err(SqlError::Refused("DECLARE of several cursors in one statement".into())),
            },
            _ => Err(SqlError::Refused("this statement".into())),
        }
    }

    /// `COPY … TO STDOUT`: the rows in COPY format, one message per batch as
    /// the plan computes it.
    async fn copy_out(&self, statement: &Statement, access: Access) -> PgWireResult<Response> {
        use futures_util::StreamExt;
        let copy = crate::copy_out::copy_out(statement).map_err(|e| user_error(&e))?;
        let plan = self.sql.plan(&copy.query, access).await.map_err(|e| user_error(&e))?;
        let stream = self.sql.execute_stream(plan).await.map_err(|e| user_error(&e))?;
        let columns = stream.schema.fields().len();
        let header = copy.format.header().then(|| crate::copy_out::header(&stream.schema, &copy.format));
        let format = copy.format;
        let rows = stream.into_batches().map(move |batch| {
            let batch = batch.map_err(|e| user_error(&e))?;
            let bytes = crate::copy_out::encode(&batch, &format).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
            Ok(CopyData::new(bytes::Bytes::from(bytes)))
        });
        let header = futures_util::stream::iter(header.map(|h| Ok(CopyData::new(bytes::Bytes::from(h)))));
        Ok(Response::CopyOut(CopyResponse::new(0, columns, header.chain(rows))))
    }

    /// `DECLARE name CURSOR FOR query`: the query starts and its rows wait in
    /// a portal of the connection, which `FETCH` reads and `CLOSE` (or the
    /// end of the connection) drops, cancelling the query.
    async fn declare_cursor(&self, statement: &Statement, client: &mut dyn HookClient) -> PgWireResult<Response> {
        use futures_util::StreamExt;
        let query = self.bulk_query(statement).map_err(|e| user_error(&e))?;
        let Statement::Declare { stmts } = statement else {
            return Err(user_error(&SqlError::Refused("this statement".into())));
        };
        let name = stmts.first().and_then(|d| d.names.first()).map(|n| n.value.clone()).unwrap_or_default();
        let plan = self.sql.plan(&query, access_of(&*client)).await.map_err(|e| user_error(&e))?;
        let stream = self.sql.execute_stream(plan.clone()).await.map_err(|e| user_error(&e))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(&stream.schema, &Format::UnifiedText, Some(options))?);
        let row_fields = fields.clone();
        let rows = stream.into_batches().flat_map(move |batch| {
            let rows: Vec<PgWireResult<_>> = match batch {
                Ok(batch) => encode_recordbatch(row_fields.clone(), batch).collect(),
                Err(e) => vec![Err(user_error(&e))],
            };
            futures_util::stream::iter(rows)
        });
        let response = QueryResponse::new(fields, rows);
        // With the query's plan, so that a Describe of the portal (psycopg
        // sends one after DECLARE) tells the columns the FETCHes will send.
        let stored = Arc::new(StoredStatement::new(name.clone(), (query.to_string(), Some((query, plan))), vec![]));
        let portal = Portal::new_cursor(name, stored);
        portal.start(response).await;
        client.portal_store().put_portal(Arc::new(portal));
        Ok(Response::Execution(Tag::new("DECLARE CURSOR")))
    }
}

fn is_show_server_version(statement: &Statement) -> bool {
    matches!(statement, Statement::ShowVariable { variable }
        if variable.len() == 1 && variable[0].value.eq_ignore_ascii_case("server_version"))
}

/// `SHOW server_version`, answered as the startup parameter says
/// ([`crate::pg_functions::server_version`]) instead of the library's
/// "datafusion …" text.
fn server_version_row(format: &Format) -> PgWireResult<Response> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    let schema = Arc::new(Schema::new(vec![Field::new("server_version", DataType::Utf8, false)]));
    let column = Arc::new(StringArray::from(vec![crate::pg_functions::server_version()]));
    let batch = RecordBatch::try_new(schema.clone(), vec![column]).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    respond(QueryResult { schema, batches: vec![batch] }, format, Arc::new(FormatOptions::default()))
}

/// Whether `statement` is a query that reads Patron tables and no catalog
/// table (`pg_catalog`, `information_schema`, or an unqualified `pg_…`):
/// such a query is planned by [`SqlEngine`] from the client's own text.
fn reads_own_tables_only(statement: &Statement) -> bool {
    use std::ops::ControlFlow;
    if !matches!(classify(statement), Verdict::Query) {
        return false;
    }
    let mut own = false;
    let catalog = datafusion::sql::sqlparser::ast::visit_relations(statement, |name| {
        let parts: Vec<String> = name.0.iter().map(|part| part.to_string().to_ascii_lowercase()).collect();
        let is_catalog = match parts.as_slice() {
            [.., schema, _] => schema == "pg_catalog" || schema == "information_schema",
            [table] => table.starts_with("pg_"),
            [] => false,
        };
        own |= !is_catalog;
        if is_catalog { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    own && catalog.is_continue()
}

/// The statements of `sql` when every one reads Patron tables only (see
/// [`reads_own_tables_only`]); `None` sends the text down the library's path.
fn own_statements(sql: &str) -> Option<Vec<Statement>> {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    let statements = datafusion::sql::sqlparser::parser::Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    (!statements.is_empty() && statements.iter().all(reads_own_tables_only)).then_some(statements)
}

/// The library's simple-protocol handler behind a complexity check of the raw
/// text (its parser would otherwise build an arbitrarily deep tree first);
/// queries over Patron's tables go to [`SqlEngine`] directly.
struct CheckedSimple {
    library: Arc<DfSessionService>,
    sql: Arc<SqlEngine>,
}

#[async_trait]
impl SimpleQueryHandler for CheckedSimple {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        check_complexity(query).map_err(|e| user_error(&e))?;
        let Some(statements) = own_statements(query) else {
            return SimpleQueryHandler::do_query(self.library.as_ref(), client, query).await;
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let mut responses = Vec::with_capacity(statements.len());
        for statement in &statements {
            let result = match self.sql.plan(statement, access_of(&*client)).await {
                Ok(plan) => self.sql.execute(plan).await,
                Err(e) => Err(e),
            };
            responses.push(respond(result.map_err(|e| user_error(&e))?, &Format::UnifiedText, options.clone())?);
        }
        Ok(responses)
    }
}

/// The library's statement parser behind the same complexity check; a query
/// over Patron's tables is planned by [`SqlEngine`] from the client's text.
struct CheckedParser {
    library: Arc<Parser>,
    sql: Arc<SqlEngine>,
}

#[async_trait]
impl QueryParser for CheckedParser {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        check_complexity(sql).map_err(|e| user_error(&e))?;
        if let Some(mut statements) = own_statements(sql).filter(|s| s.len() == 1) {
            let statement = statements.remove(0);
            let plan = self.sql.plan(&statement, access_of(client)).await.map_err(|e| user_error(&e))?;
            return Ok(Some((sql.to_owned(), Some((statement, plan)))));
        }
        self.library.parse_sql(client, sql, types).await
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.library.get_parameter_types(statement)
    }

    fn get_result_schema(&self, statement: &Self::Statement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        self.library.get_result_schema(statement, format)
    }
}

/// Prepared statements: parsed by the library, executed by [`SqlEngine`].
struct ExtendedHandler {
    inner: Arc<DfSessionService>,
    parser: Arc<CheckedParser>,
    sql: Arc<SqlEngine>,
}

/// Parameter ids (`$1`, `$2`…) in numeric order with their inferred types.
fn ordered_parameters(plan: &LogicalPlan) -> PgWireResult<Vec<Option<datafusion::arrow::datatypes::DataType>>> {
    let types = plan.get_parameter_types().map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let mut entries: Vec<(usize, Option<datafusion::arrow::datatypes::DataType>)> = types
        .into_iter()
        .map(|(id, ty)| (id.trim_start_matches('$').parse::<usize>().unwrap_or(usize::MAX), ty))
        .collect();
    entries.sort_by_key(|(n, _)| *n);
    Ok(entries.into_iter().map(|(_, ty)| ty).collect())
}

#[async_trait]
impl ExtendedQueryHandler for ExtendedHandler {
    type Statement = (String, Option<(Statement, LogicalPlan)>);
    type QueryParser = CheckedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some((statement, plan)) = &portal.statement.statement.1 else {
            return Ok(Response::EmptyQuery);
        };
        if !matches!(classify(statement), Verdict::Query) {
            // Session statements (SET, SHOW, BEGIN): the library's hooks answer them.
            return ExtendedQueryHandler::do_query(self.inner.as_ref(), client, portal, max_rows).await;
        }
        let inferred = ordered_parameters(plan)?;
        let wire: Vec<Type> =
            inferred.iter().map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type)).collect::<PgWireResult<_>>()?;
        let inferred_refs: Vec<_> = inferred.iter().map(Option::as_ref).collect();
        let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        let params = deserialize_parameters_with_server_types(portal, &inferred_refs, &wire_refs)?;
        let plan = plan.clone().replace_params_with_values(&params).map_err(|e| PgWireError::ApiError(Box::new(e)))?;
        let result = self.sql.execute(plan).await.map_err(|e| user_error(&e))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        respond(result, &portal.result_column_format, options)
    }
}

/// SCRAM-SHA-256 over the tokens, or an open startup without tokens.
struct Startup {
    scram: Option<ScramVerifier>,
}

/// Connection metadata keys of a SCRAM exchange in progress.
const SCRAM_TRANSCRIPT_KEY: &str = "patron.scram.transcript";
const SCRAM_NONCE_KEY: &str = "patron.scram.nonce";

fn sasl_text(data: Option<&[u8]>) -> PgWireResult<String> {
    data.and_then(|d| std::str::from_utf8(d).ok()).map(str::to_owned).ok_or_else(|| PgWireError::InvalidSASLState)
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use futures_util::SinkExt;
        let user = client_user(client);
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.scram.is_some() {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    let mechanisms = vec!["SCRAM-SHA-256".to_owned()];
                    client.send(PgWireBackendMessage::Authentication(Authentication::SASL(mechanisms))).await?;
                } else {
                    finish_authentication(client, &server_parameters()).await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let Some(scram) = &self.scram else { return Ok(()) };
                let pending = client.metadata().get(SCRAM_NONCE_KEY).cloned();
                match pending {
                    None => {
                        let initial = message.into_sasl_initial_response()?;
                        if initial.auth_method != "SCRAM-SHA-256" {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(initial.auth_method));
                        }
                        let first = scram
                            .server_first(&sasl_text(initial.data.as_deref())?)
                            .map_err(|_| PgWireError::InvalidPassword(user.clone()))?;
                        client.metadata_mut().insert(SCRAM_TRANSCRIPT_KEY.to_owned(), first.transcript);
                        client.metadata_mut().insert(SCRAM_NONCE_KEY.to_owned(), first.nonce);
                        let data = first.message.into_bytes().into();
                        client.send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(data))).await?;
                    }
                    Some(nonce) => {
                        let response = message.into_sasl_response()?;
                        let transcript = client.metadata_mut().remove(SCRAM_TRANSCRIPT_KEY).unwrap_or_default();
                        client.metadata_mut().remove(SCRAM_NONCE_KEY);
                        let first = ServerFirst { message: String::new(), transcript, nonce };
                        let (server_final, access) = scram
                            .verify(&first, &sasl_text(Some(&response.data))?)
                            .map_err(|_| PgWireError::InvalidPassword(user.clone()))?;
                        let role = if access == Access::Admin { "admin" } else { QUERY_ONLY };
                        client.metadata_mut().insert(ACCESS_KEY.to_owned(), role.to_owned());
                        let data = server_final.into_bytes().into();
                        client.send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(data))).await?;
                        finish_authentication(client, &server_parameters()).await?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn client_user(client: &(impl ClientInfo + ?Sized)) -> String {
    client.metadata().get("user").cloned().unwrap_or_default()
}

/// The handlers of one pgwire server.
pub struct PgHandlers {
    simple: Arc<CheckedSimple>,
    extended: Arc<ExtendedHandler>,
    startup: Arc<Startup>,
}

impl std::fmt::Debug for PgHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgHandlers").field("password", &self.startup.scram.is_some()).finish()
    }
}

impl PgHandlers {
    /// Handlers over `sql`; `tokens` are the passwords SCRAM accepts, with what
    /// each may read (`None`: no authentication). Registers the `pg_catalog`
    /// emulation in the SQL context.
    pub fn new(sql: Arc<SqlEngine>, tokens: Option<&[(String, Access)]>) -> Result<Self, SqlError> {
        let scram = tokens
            .map(ScramVerifier::new)
            .transpose()
            .map_err(|e| SqlError::Execution(format!("cannot set up SCRAM: {e}")))?;
        let ctx = sql.context().clone();
        setup_pg_catalog(&ctx, "datafusion", EmptyContextProvider)
            .map_err(|e| SqlError::Execution(format!("cannot set up pg_catalog: {e}")))?;
        crate::describe::register_catalog(&ctx, "datafusion")
            .map_err(|e| SqlError::Execution(format!("cannot set up the table descriptions: {e}")))?;
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(GuardHook { sql: sql.clone() }),
            Arc::new(SetShowHook),
            Arc::new(TransactionStatementHook),
            // FETCH and CLOSE of the cursors GuardHook declares.
            Arc::new(CursorStatementHook),
        ];
        let service = Arc::new(DfSessionService::new_with_hooks(ctx, hooks));
        let parser = Arc::new(CheckedParser { library: service.query_parser(), sql: sql.clone() });
        Ok(Self {
            extended: Arc::new(ExtendedHandler { inner: service.clone(), parser, sql: sql.clone() }),
            simple: Arc::new(CheckedSimple { library: service, sql }),
            startup: Arc::new(Startup { scram }),
        })
    }
}

impl PgWireServerHandlers for PgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.simple.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.extended.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

/// Accepts pgwire connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handlers: Arc<PgHandlers>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let (handlers, tls) = (handlers.clone(), tls.clone());
                    tokio::spawn(async move {
                        // With an acceptor, a client's SSLRequest gets TLS
                        // (sslmode=require or verify-full).
                        if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                            tracing::debug!(%peer, "pgwire connection ended: {e}");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("pgwire accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The startup parameters: pgwire's defaults, with a `server_version`
/// that names Patron after the PostgreSQL release clients parse.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = crate::pg_functions::server_version();
    parameters
}
