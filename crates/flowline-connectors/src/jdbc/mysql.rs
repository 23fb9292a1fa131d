//! MySQL and MariaDB through mysql_async: values bound as strings (bytes for binary columns),
//! which the server converts to each column's type.

use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Params, TxOpts};

use super::{Row, Statements, Target, Value};

pub(crate) struct My {
    conn: mysql_async::Conn,
}

fn params(rows: &[&Row]) -> Params {
    Params::Positional(
        rows.iter()
            .flat_map(|r| r.iter())
            .map(|v| match v {
                None => mysql_async::Value::NULL,
                Some(Value::Text(s)) => mysql_async::Value::Bytes(s.clone().into_bytes()),
                Some(Value::Bytes(b)) => mysql_async::Value::Bytes(b.clone()),
            })
            .collect(),
    )
}

impl My {
    pub async fn connect(t: &Target) -> Result<Self, String> {
        let opts = OptsBuilder::default()
            .ip_or_hostname(t.host.clone())
            .tcp_port(t.port)
            .db_name(Some(t.database.clone()))
            .user(t.user.clone())
            .pass(t.password.clone());
        let conn = mysql_async::Conn::new(Opts::from(opts))
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self { conn })
    }

    /// Deletes, then upserts (or appends), in one transaction.
    pub async fn apply(
        &mut self,
        s: &Statements,
        upserts: &[&Row],
        deletes: &[&Row],
    ) -> Result<(), String> {
        let err = |e: mysql_async::Error| e.to_string();
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(err)?;
        if !deletes.is_empty() {
            let delete = s.delete();
            for key in deletes {
                tx.exec_drop(delete.as_str(), params(&[key]))
                    .await
                    .map_err(err)?;
            }
        }
        for chunk in upserts.chunks(s.rows_per_insert()) {
            tx.exec_drop(s.insert(chunk.len()), params(chunk))
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }
}
