//! PostgreSQL through tokio-postgres. Parameters go in PostgreSQL's text format: the server
//! infers each parameter's type from its column and parses the text as it would a literal.

use std::error::Error;

use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, Format, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::{Row, Statements, Target, Value};

pub(crate) struct Pg {
    client: tokio_postgres::Client,
}

/// A value bound in text format, whatever the parameter's type.
#[derive(Debug)]
struct Text<'a>(Option<&'a Value>);

impl ToSql for Text<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self.0 {
            None => Ok(IsNull::Yes),
            Some(Value::Text(s)) => {
                out.extend_from_slice(s.as_bytes());
                Ok(IsNull::No)
            }
            Some(Value::Bytes(b)) => {
                out.extend_from_slice(b);
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _ty: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

impl Pg {
    pub async fn connect(t: &Target) -> Result<Self, String> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&t.host)
            .port(t.port)
            .dbname(&t.database)
            .application_name("flowline")
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(u) = &t.user {
            config.user(u);
        }
        if let Some(p) = &t.password {
            config.password(p);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
        // The connection task ends when the client is dropped.
        tokio::spawn(connection);
        Ok(Self { client })
    }

    /// Deletes, then upserts (or appends), in one transaction.
    pub async fn apply(
        &mut self,
        s: &Statements,
        upserts: &[&Row],
        deletes: &[&Row],
    ) -> Result<(), String> {
        let err = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        let tx = self.client.transaction().await.map_err(err)?;
        if !deletes.is_empty() {
            let delete = tx.prepare(&s.delete()).await.map_err(err)?;
            for key in deletes {
                tx.execute_raw(&delete, key.iter().map(|v| Text(v.as_ref())))
                    .await
                    .map_err(err)?;
            }
        }
        for chunk in upserts.chunks(s.rows_per_insert()) {
            let sql = s.insert(chunk.len());
            let params: Vec<Text> = chunk
                .iter()
                .flat_map(|r| r.iter().map(|v| Text(v.as_ref())))
                .collect();
            tx.execute_raw(sql.as_str(), params).await.map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }
}
