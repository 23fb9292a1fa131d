//! Arrow Flight SQL on `--flight ADDR`: the same [`QueryService`] as `POST /v1/query` (its
//! engine, limits and slots) for ADBC, JDBC and `pyarrow.flight` clients.
//!
//! - Statements: `GetFlightInfo` plans the SQL for its schema and hands back a ticket holding
//!   it; `DoGet` runs it and streams the batches.
//! - Prepared statements with parameters (`?` or `$1`): created by `CreatePreparedStatement`
//!   (handle, result schema, parameter schema), bound by `DoPut` (one row of values), run by
//!   `GetFlightInfo` + `DoGet`, dropped by `ClosePreparedStatement`. At most
//!   [`MAX_PREPARED`] are open at once.
//! - Metadata: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with schemas),
//!   `GetTableTypes`, `GetXdbcTypeInfo`, `GetPrimaryKeys`.
//! - Authentication: with tokens configured, the handshake takes basic auth (any user, a token
//!   as the password) and answers with `authorization: Bearer <token>`; every other call must
//!   carry a token, else `Unauthenticated`, counted in
//!   `flowline_auth_failures_total{listener="flight"}`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, Nullable, ProstMessageExt, Searchable, SqlInfo,
    TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use axum::http::StatusCode;
use flowline_common::metrics::Counter;
use flowline_common::MetricsRegistry;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::query::{run, QueryService};
use crate::security::{Auth, Security};
use crate::ServerError;

/// Prepared statements a server keeps open at once (a client that never closes its statements
/// cannot grow the server without bound).
pub const MAX_PREPARED: usize = 1024;
/// The catalog and schema the tables are listed under (DataFusion's defaults, so the names a
/// client reads back resolve in queries).
const CATALOG: &str = "datafusion";
const SCHEMA: &str = "public";

struct Prepared {
    sql: String,
    params: Option<RecordBatch>,
}

/// The Flight SQL service.
pub struct FlightSql {
    service: QueryService,
    auth: Option<Arc<Auth>>,
    refused: Counter,
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An HTTP-style failure of the query service as a gRPC status.
fn status((code, message): (StatusCode, String)) -> Status {
    match code {
        StatusCode::BAD_REQUEST | StatusCode::NOT_ACCEPTABLE => Status::invalid_argument(message),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::UNPROCESSABLE_ENTITY => {
            Status::resource_exhausted(message)
        }
        StatusCode::GATEWAY_TIMEOUT => Status::deadline_exceeded(message),
        StatusCode::UNAUTHORIZED => Status::unauthenticated(message),
        StatusCode::NOT_FOUND => Status::not_found(message),
        _ => Status::internal(message),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

/// A schema as the IPC message Flight SQL results carry.
fn schema_bytes(schema: &Schema) -> Result<Vec<u8>, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &Default::default())
        .try_into()
        .map_err(internal)?;
    Ok(bytes.to_vec())
}

/// A `FlightInfo` whose one endpoint's ticket is `ticket`.
fn info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    Ok(Response::new(
        FlightInfo::new()
            .try_with_schema(schema)
            .map_err(internal)?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor),
    ))
}

/// One batch as a `DoGet` answer.
fn one_batch(batch: RecordBatch) -> Response<Stream_<arrow_flight::FlightData>> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::once(async { Ok(batch) }))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

fn sql_info() -> &'static SqlInfoData {
    static DATA: OnceLock<SqlInfoData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "Flowline");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, true);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.build().expect("static SQL info")
    })
}

fn xdbc_types() -> &'static XdbcTypeInfoData {
    static DATA: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let types = [
            ("BOOLEAN", XdbcDataType::XdbcBit, None, None),
            ("INT", XdbcDataType::XdbcInteger, Some(32), Some(2)),
            ("BIGINT", XdbcDataType::XdbcBigint, Some(64), Some(2)),
            ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), Some(2)),
            ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), Some(10)),
            ("STRING", XdbcDataType::XdbcVarchar, None, None),
            ("DATE", XdbcDataType::XdbcDate, None, None),
            ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, None),
        ];
        for (name, t, size, radix) in types {
            b.append(XdbcTypeInfo {
                type_name: name.into(),
                data_type: t,
                column_size: size,
                literal_prefix: matches!(t, XdbcDataType::XdbcVarchar).then(|| "'".into()),
                literal_suffix: matches!(t, XdbcDataType::XdbcVarchar).then(|| "'".into()),
                create_params: None,
                nullable: Nullable::NullabilityNullable,
                case_sensitive: matches!(t, XdbcDataType::XdbcVarchar),
                searchable: Searchable::Full,
                unsigned_attribute: size.map(|_| false),
                fixed_prec_scale: false,
                auto_increment: size.map(|_| false),
                local_type_name: Some(name.into()),
                minimum_scale: None,
                maximum_scale: None,
                sql_data_type: t,
                datetime_subcode: None,
                num_prec_radix: radix,
                interval_precision: None,
            });
        }
        b.build().expect("static type info")
    })
}

impl FlightSql {
    fn new(service: QueryService, auth: Option<Arc<Auth>>, metrics: &MetricsRegistry) -> Self {
        Self {
            service,
            auth,
            refused: metrics.counter(
                "flowline_auth_failures_total",
                "requests refused for missing or wrong credentials",
                &[("listener", "flight")],
            ),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a call carries a token (when tokens are configured).
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match given.and_then(|v| auth.accepted_token(v)) {
            Some(_) => Ok(()),
            None => {
                self.refused.inc();
                Err(Status::unauthenticated(
                    "missing or wrong credentials: handshake with basic auth (a token as the \
                     password) or send 'authorization: Bearer <token>'",
                ))
            }
        }
    }

    /// The `FlightInfo` of a command whose `DoGet` ticket is the command itself (the catalog
    /// and metadata commands): checked, with the answer's schema.
    fn command_info(
        &self,
        command: &impl ProstMessageExt,
        schema: &Schema,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    /// Runs `sql` and streams its answer.
    async fn answer(
        &self,
        sql: String,
        params: Option<RecordBatch>,
    ) -> Result<Response<Stream_<arrow_flight::FlightData>>, Status> {
        let running = run(&self.service, sql, params).await.map_err(status)?;
        let batches = running
            .batches
            .map_err(|e| FlightError::Tonic(Box::new(status(e))));
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(running.schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn shape(&self, sql: String) -> Result<crate::query::QueryShape, Status> {
        self.service
            .engine
            .describe(sql)
            .await
            .map_err(|e| match e {
                crate::query::QueryError::Invalid(m) => Status::invalid_argument(m),
                crate::query::QueryError::OverLimit(m) => Status::resource_exhausted(m),
                crate::query::QueryError::Failed(m) => Status::internal(m),
            })
    }

    fn prepared_sql(&self, handle: &[u8]) -> Result<(String, Option<RecordBatch>), Status> {
        let prepared = self.prepared.lock().expect("prepared statements lock");
        let p = prepared.get(handle).ok_or_else(|| {
            Status::not_found("no such prepared statement (closed, or never created here)")
        })?;
        Ok((p.sql.clone(), p.params.clone()))
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Stream_<HandshakeResponse>>, Status> {
        let reply =
            |token: Option<String>| -> Result<Response<Stream_<HandshakeResponse>>, Status> {
                let payload = token.clone().unwrap_or_default();
                let out = futures::stream::iter([Ok(HandshakeResponse {
                    protocol_version: 0,
                    payload: payload.into_bytes().into(),
                })]);
                let mut resp: Response<Stream_<HandshakeResponse>> = Response::new(Box::pin(out));
                if let Some(t) = token {
                    let v = MetadataValue::try_from(format!("Bearer {t}")).map_err(internal)?;
                    resp.metadata_mut().insert("authorization", v);
                }
                Ok(resp)
            };
        let Some(auth) = &self.auth else {
            // Open: any credentials pass. A client that sent some (ADBC with a user name and
            // password) expects a bearer token back, and gets one that nothing checks.
            let sent = request.metadata().contains_key("authorization");
            return reply(sent.then(|| "open".to_string()));
        };
        let given = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        match given.and_then(|v| auth.accepted_token(v)) {
            Some(token) => reply(Some(token)),
            None => {
                self.refused.inc();
                Err(Status::unauthenticated(
                    "missing or wrong credentials: basic auth with a token as the password",
                ))
            }
        }
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let shape = self.shape(query.query.clone()).await?;
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        info(
            &shape.schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec()).map_err(|_| {
            Status::invalid_argument("the ticket is not a statement of this server")
        })?;
        self.answer(sql, None).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.check(&request)?;
        let shape = self.shape(query.query.clone()).await?;
        let handle = uuid::Uuid::new_v4().as_bytes().to_vec();
        {
            let mut prepared = self.prepared.lock().expect("prepared statements lock");
            if prepared.len() >= MAX_PREPARED {
                return Err(Status::resource_exhausted(format!(
                    "{MAX_PREPARED} prepared statements are open, the most this server keeps; \
                     close some"
                )));
            }
            prepared.insert(
                handle.clone(),
                Prepared {
                    sql: query.query,
                    params: None,
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: schema_bytes(&shape.schema)?.into(),
            parameter_schema: schema_bytes(&shape.parameters)?.into(),
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.check(&request)?;
        let handle = query.prepared_statement_handle.to_vec();
        self.prepared_sql(&handle)?;
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
                request.into_inner().map_err(FlightError::from),
            )
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("the parameters: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows != 1 {
            return Err(Status::invalid_argument(format!(
                "parameters are bound as one row; got {rows} rows (run one row at a time)"
            )));
        }
        let params = batches.into_iter().find(|b| b.num_rows() == 1);
        if let Some(p) = self
            .prepared
            .lock()
            .expect("prepared statements lock")
            .get_mut(&handle)
        {
            p.params = params;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into()),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.check(&request)?;
        let (sql, _) = self.prepared_sql(&cmd.prepared_statement_handle)?;
        let shape = self.shape(sql).await?;
        info(
            &shape.schema,
            cmd.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let (sql, params) = self.prepared_sql(&query.prepared_statement_handle)?;
        self.answer(sql, params).await
    }

    /// A statement runs when its ticket is fetched (DoGet), and a client cancels a running
    /// one by dropping that stream, which stops the query; cancelling a FlightInfo whose
    /// ticket was not fetched leaves nothing running.
    #[allow(deprecated)]
    async fn do_action_cancel_query(
        &self,
        _query: arrow_flight::sql::ActionCancelQueryRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<arrow_flight::sql::ActionCancelQueryResult, Status> {
        self.check(&request)?;
        // `CancelResult::Cancelled` (the nested enum is not re-exported).
        const CANCELLED: i32 = 1;
        Ok(arrow_flight::sql::ActionCancelQueryResult { result: CANCELLED })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.check(&request)?;
        self.prepared
            .lock()
            .expect("prepared statements lock")
            .remove(query.prepared_statement_handle.as_ref());
        Ok(())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(
            &query,
            &query.clone().into_builder(sql_info()).schema(),
            request,
        )
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let batch = query.into_builder(sql_info()).build().map_err(internal)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &query.into_builder(xdbc_types()).schema(), request)
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let batch = query.into_builder(xdbc_types()).build().map_err(internal)?;
        Ok(one_batch(batch))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &query.into_builder().schema(), request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        b.append(CATALOG);
        Ok(one_batch(b.build().map_err(internal)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &query.clone().into_builder().schema(), request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        b.append(CATALOG, SCHEMA);
        Ok(one_batch(b.build().map_err(internal)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &query.clone().into_builder().schema(), request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let mut b = query.into_builder();
        for t in self.service.engine.tables() {
            b.append(CATALOG, SCHEMA, &t.name, t.kind, &t.schema)
                .map_err(internal)?;
        }
        Ok(one_batch(b.build().map_err(internal)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &table_types().schema(), request)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        Ok(one_batch(table_types()))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(&query, &primary_keys_schema(), request)
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.check(&request)?;
        let wanted =
            |given: &Option<String>, ours: &str| given.as_deref().is_none_or(|g| g == ours);
        let mut rows: Vec<(String, String, i32)> = Vec::new();
        if wanted(&query.catalog, CATALOG) && wanted(&query.db_schema, SCHEMA) {
            for t in self.service.engine.tables() {
                if t.name == query.table {
                    for (i, c) in t.primary_key.iter().enumerate() {
                        rows.push((t.name.clone(), c.clone(), i as i32 + 1));
                    }
                }
            }
        }
        let n = rows.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![CATALOG; n])),
            Arc::new(StringArray::from(vec![SCHEMA; n])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
        ];
        let batch = RecordBatch::try_new(primary_keys_schema(), columns).map_err(internal)?;
        Ok(one_batch(batch))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

type Action = arrow_flight::Action;

fn table_types() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "table_type",
        DataType::Utf8,
        false,
    )]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(StringArray::from(vec!["TABLE", "VIEW"]))],
    )
    .expect("a static batch")
}

fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Binds `addr` and serves Flight SQL in the background, as `security` says; returns the bound
/// address.
pub async fn serve_flight(
    addr: &str,
    service: QueryService,
    security: &Security,
    metrics: &MetricsRegistry,
) -> Result<SocketAddr, ServerError> {
    let bind = |source| ServerError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(bind)?;
    let local = listener.local_addr().map_err(bind)?;
    security.check_bound("the Flight SQL listener", addr, local)?;
    let mut server = tonic::transport::Server::builder();
    if let Some((cert, key)) = &security.tls_pem {
        let identity = tonic::transport::Identity::from_pem(cert, key);
        server = server
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| ServerError::Config(format!("TLS for Flight SQL: {e}")))?;
    }
    let svc = FlightServiceServer::new(FlightSql::new(service, security.auth.clone(), metrics));
    let router = server.add_service(svc);
    // No Nagle: each reply is small messages that must not wait for the client's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            eprintln!("error: Flight SQL server stopped: {e}");
        }
    });
    Ok(local)
}
