//! Rows in PostgreSQL's binary `COPY` format, sent in large pieces.
//!
//! tokio-postgres' own writer hands the connection a piece every 4 KiB, each through a
//! one-slot channel to the connection task: at a few kilobytes per sealed row, that is a task
//! switch every other row and doubles the time of a large `COPY`. Here rows are encoded into
//! one buffer and sent a megabyte at a time. The format is PostgreSQL's, as its documentation
//! of `COPY` describes it: a signature, flags and header extension, then per row the number of
//! fields and each field as a length (-1 for NULL) followed by the value in binary, and a
//! trailer of -1.

use std::pin::pin;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio_postgres::Transaction;
use tokio_postgres::types::{IsNull, ToSql, Type};

use crate::Error;

/// The signature, the flags (no OIDs) and the header extension length.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The size of the pieces sent to the server.
const PIECE: usize = 1 << 20;

/// A binary `COPY` under way: rows are added with [`Copy::row`], then [`Copy::finish`] sends
/// the last piece and returns the number of rows the server stored.
pub(super) struct Copy<'a> {
    transaction: &'a Transaction<'a>,
    sql: String,
    types: Vec<Type>,
    buf: BytesMut,
    pieces: Vec<Bytes>,
}

impl<'a> Copy<'a> {
    /// A `COPY` of `sql`, a `COPY ... FROM STDIN (FORMAT binary)` statement whose columns
    /// have `types`.
    pub(super) fn new(transaction: &'a Transaction<'a>, sql: String, types: Vec<Type>) -> Self {
        let mut buf = BytesMut::with_capacity(PIECE + PIECE / 4);
        buf.put_slice(HEADER);
        Self { transaction, sql, types, buf, pieces: Vec::new() }
    }

    /// Adds a row of `values`, one per column.
    ///
    /// # Errors
    ///
    /// When a value has the wrong number of columns or cannot be encoded as its column's type.
    pub(super) fn row(&mut self, values: &[&(dyn ToSql + Sync)]) -> Result<(), Error> {
        if values.len() != self.types.len() {
            return Err(Error::Data {
                reason: format!(
                    "a COPY row of {} values for {} columns",
                    values.len(),
                    self.types.len()
                ),
            });
        }
        let fields = i16::try_from(values.len()).map_err(|_| Error::Data {
            reason: "a COPY row of more than 32767 columns".to_owned(),
        })?;
        self.buf.put_i16(fields);
        for (value, ty) in values.iter().zip(&self.types) {
            let at = self.buf.len();
            self.buf.put_i32(0);
            let encoded = value.to_sql_checked(ty, &mut self.buf).map_err(|error| Error::Data {
                reason: format!("a value of type {ty} cannot be encoded: {error}"),
            })?;
            let length = match encoded {
                IsNull::Yes => -1,
                IsNull::No => i32::try_from(self.buf.len() - at - 4)
                    .map_err(|_| Error::Data { reason: "a COPY value over 2 GiB".to_owned() })?,
            };
            self.buf[at..at + 4].copy_from_slice(&length.to_be_bytes());
        }
        if self.buf.len() >= PIECE {
            self.pieces.push(self.buf.split().freeze());
        }
        Ok(())
    }

    /// Sends every row; returns the number the server stored.
    ///
    /// # Errors
    ///
    /// When the server refuses the statement or a row; nothing of the `COPY` is stored then.
    pub(super) async fn finish(mut self) -> Result<u64, Error> {
        self.buf.put_i16(-1);
        self.pieces.push(self.buf.split().freeze());

        let mut sink = pin!(self.transaction.copy_in::<_, Bytes>(&self.sql).await?);
        for piece in self.pieces {
            sink.feed(piece).await?;
        }
        Ok(sink.as_mut().finish().await?)
    }
}
