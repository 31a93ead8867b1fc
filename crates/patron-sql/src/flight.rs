//! Arrow Flight SQL front end (ADBC, pyarrow): statements and prepared
//! statements over the same read-only, bounded [`SqlEngine`] as pgwire and HTTP.
//!
//! A statement's ticket carries its SQL text, so any endpoint can serve the
//! `DoGet` without per-session state; a prepared statement's handle is the
//! SQL text too (parameters are not supported: the statements here are
//! queries an analyst writes, and the contract asks for nothing more).
//! With tokens configured every call needs `authorization: Bearer <token>`
//! with the `query` role; a Basic handshake whose password is such a token
//! is answered with that bearer token.

use std::pin::Pin;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetSqlInfo, CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use futures_util::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::Access;
use crate::pg::PasswordCheck;
use crate::session::{QueryResult, SqlEngine, SqlError};

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send + 'static>>;

/// What `GetSqlInfo` reports.
static SQL_INFO: LazyLock<Option<SqlInfoData>> = LazyLock::new(|| {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Patron");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    builder.append(SqlInfo::FlightSqlServerReadOnly, true);
    builder.build().ok()
});

fn status(error: &SqlError) -> Status {
    match error {
        SqlError::Refused(_) | SqlError::Forbidden(_) => Status::permission_denied(error.to_string()),
        SqlError::Timeout(_) => Status::deadline_exceeded(error.to_string()),
        SqlError::TooManyRows(_) | SqlError::TooLarge(_) | SqlError::Memory(_) | SqlError::Busy(_) => {
            Status::resource_exhausted(error.to_string())
        }
        SqlError::Execution(_) | SqlError::Threads(_) => Status::internal(error.to_string()),
        _ => Status::invalid_argument(error.to_string()),
    }
}

fn schema_bytes(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
    Ok(message.0)
}

fn stream_of(result: QueryResult) -> DoGetStream {
    let batches = futures_util::stream::iter(result.batches.into_iter().map(Ok));
    let encoded = FlightDataEncoderBuilder::new().with_schema(result.schema).build(batches).map_err(Status::from);
    Box::pin(encoded)
}

/// The Flight SQL service.
pub struct PatronFlightSql {
    sql: Arc<SqlEngine>,
    check: Option<PasswordCheck>,
}

impl std::fmt::Debug for PatronFlightSql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatronFlightSql").field("auth", &self.check.is_some()).finish()
    }
}

impl PatronFlightSql {
    /// A service over `sql`; `check` decides bearer tokens (`None`: open).
    pub fn new(sql: Arc<SqlEngine>, check: Option<PasswordCheck>) -> Self {
        Self { sql, check }
    }

    /// What the call's bearer token may read (everything when no tokens are configured).
    fn authorize<T>(&self, request: &Request<T>) -> Result<Access, Status> {
        let Some(check) = &self.check else { return Ok(Access::Admin) };
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        header
            .and_then(|h| h.strip_prefix("Bearer "))
            .and_then(|token| check(token.trim()))
            .ok_or_else(|| Status::unauthenticated("send authorization: Bearer <token with the query role>"))
    }

    async fn schema_of(&self, sql: &str, access: Access) -> Result<Schema, Status> {
        let statement = SqlEngine::parse(sql).map_err(|e| status(&e))?;
        let plan = self.sql.plan_parsed(statement, access).await.map_err(|e| status(&e))?;
        Ok(plan.schema().as_arrow().clone())
    }

    async fn info_for(
        &self,
        sql: &str,
        access: Access,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let schema = self.schema_of(sql, access).await?;
        let endpoint = FlightEndpoint::new().with_ticket(Ticket { ticket: ticket.into() });
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))
            .map(|info| info.with_endpoint(endpoint).with_descriptor(descriptor).with_ordered(true))
    }

    async fn run(&self, sql: &str, access: Access) -> Result<DoGetStream, Status> {
        let result = self.sql.run(sql, access).await.map_err(|e| status(&e))?;
        Ok(stream_of(result))
    }
}

fn utf8(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec()).map_err(|_| Status::invalid_argument("the statement handle is not UTF-8 SQL"))
}

#[tonic::async_trait]
impl FlightSqlService for PatronFlightSql {
    type FlightService = PatronFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let token = match (&self.check, header) {
            (None, _) => String::new(),
            (Some(check), Some(h)) => {
                let token = if let Some(basic) = h.strip_prefix("Basic ") {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(basic.trim())
                        .map_err(|_| Status::unauthenticated("malformed Basic credentials"))?;
                    let text =
                        String::from_utf8(decoded).map_err(|_| Status::unauthenticated("malformed credentials"))?;
                    text.split_once(':').map(|(_, password)| password.to_owned()).unwrap_or_default()
                } else {
                    h.strip_prefix("Bearer ").unwrap_or_default().trim().to_owned()
                };
                if check(&token).is_none() {
                    return Err(Status::unauthenticated("the password must be a token with the query role"));
                }
                token
            }
            (Some(_), None) => return Err(Status::unauthenticated("send Basic credentials or a Bearer token")),
        };
        let reply = HandshakeResponse { protocol_version: 0, payload: token.clone().into_bytes().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>> =
            Response::new(Box::pin(futures_util::stream::iter([Ok(reply)])));
        if !token.is_empty()
            && let Ok(value) = format!("Bearer {token}").parse()
        {
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let access = self.authorize(&request)?;
        let ticket = TicketStatementQuery { statement_handle: query.query.clone().into_bytes().into() };
        let info = self.info_for(&query.query, access, ticket.as_any().encode_to_vec(), request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let access = self.authorize(&request)?;
        let sql = utf8(&query.prepared_statement_handle)?;
        let info = self.info_for(&sql, access, query.as_any().encode_to_vec(), request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let info = SQL_INFO.as_ref().ok_or_else(|| Status::internal("SqlInfo unavailable"))?;
        let schema = query.clone().into_builder(info).schema();
        let ticket = Ticket { ticket: query.as_any().encode_to_vec().into() };
        let flight = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(request.into_inner());
        Ok(Response::new(flight))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let access = self.authorize(&request)?;
        let sql = utf8(&ticket.statement_handle)?;
        Ok(Response::new(self.run(&sql, access).await?))
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let access = self.authorize(&request)?;
        let sql = utf8(&query.prepared_statement_handle)?;
        Ok(Response::new(self.run(&sql, access).await?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let info = SQL_INFO.as_ref().ok_or_else(|| Status::internal("SqlInfo unavailable"))?;
        let batch = query.into_builder(info).build().map_err(|e| Status::internal(e.to_string()))?;
        let schema = batch.schema();
        Ok(Response::new(stream_of(QueryResult { schema, batches: vec![batch] })))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let access = self.authorize(&request)?;
        let schema = self.schema_of(&query.query, access).await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: schema_bytes(&Schema::empty())?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        self.authorize(&request)?;
        Ok(())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: PatronFlightSql,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let server = tonic::transport::Server::builder().add_service(FlightServiceServer::new(service));
    match tls {
        None => {
            server.serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown).await
        }
        Some(acceptor) => server.serve_with_incoming_shutdown(crate::tls::incoming(listener, acceptor), shutdown).await,
    }
}
