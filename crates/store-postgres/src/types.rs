//! Wire-level helpers: timestamps as PostgreSQL `timestamptz`, the binary COPY encoding, and
//! the mapping of driver errors to [`StoreError`].

use std::error::Error as StdError;

use bytes::{BufMut, BytesMut};
use espwatch_core::{FIELD_COUNT, Measurements, Timestamp};
use espwatch_store::StoreError;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, accepts, to_sql_checked};

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// Earliest and latest instants the store accepts: years 0000 through 9999, the span RFC 3339
/// can express and well inside what `timestamptz` can hold.
pub const MIN_SUPPORTED: Timestamp = Timestamp(-62_167_219_200_000_000);
pub const MAX_SUPPORTED: Timestamp = Timestamp(253_402_300_800_000_000);

/// A `timestamptz` exchanged as Unix microseconds, exactly (no float, no chrono detour).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTs(pub i64);

impl PgTs {
    /// Clamped into the supported span, so open-ended query ranges never overflow the server.
    pub fn clamped(ts: Timestamp) -> PgTs {
        PgTs(ts.0.clamp(MIN_SUPPORTED.0, MAX_SUPPORTED.0))
    }
}

impl ToSql for PgTs {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        out.put_i64(self.0.saturating_sub(PG_EPOCH_OFFSET_MICROS));
        Ok(IsNull::No)
    }

    accepts!(TIMESTAMPTZ, TIMESTAMP);
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgTs {
    fn from_sql(_ty: &Type, raw: &'a [u8]) -> Result<PgTs, Box<dyn StdError + Sync + Send>> {
        let bytes: [u8; 8] = raw.try_into().map_err(|_| "timestamptz is not 8 bytes")?;
        Ok(PgTs(
            i64::from_be_bytes(bytes).saturating_add(PG_EPOCH_OFFSET_MICROS),
        ))
    }

    accepts!(TIMESTAMPTZ, TIMESTAMP);
}

/// Builds a binary `COPY ... FROM STDIN (FORMAT binary)` payload row by row. Encoding by hand
/// (rather than through `BinaryCopyInWriter`'s per-value trait objects) keeps the hot loop to a
/// few `put_*` calls per value; the bench's raw-COPY baseline uses the same encoder.
pub struct CopyEncoder {
    buf: BytesMut,
}

impl CopyEncoder {
    pub fn new(rows_hint: usize) -> CopyEncoder {
        let mut buf = BytesMut::with_capacity(19 + rows_hint * 200);
        buf.put_slice(b"PGCOPY\n\xff\r\n\0");
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        CopyEncoder { buf }
    }

    pub fn row(&mut self, columns: i16) {
        self.buf.put_i16(columns);
    }

    /// Used by the benchmarks' raw-COPY baseline only.
    #[cfg(feature = "testing")]
    pub fn int4(&mut self, v: i32) {
        self.buf.put_i32(4);
        self.buf.put_i32(v);
    }

    pub fn int8(&mut self, v: i64) {
        self.buf.put_i32(8);
        self.buf.put_i64(v);
    }

    pub fn float8(&mut self, v: f64) {
        self.buf.put_i32(8);
        self.buf.put_f64(v);
    }

    pub fn null(&mut self) {
        self.buf.put_i32(-1);
    }

    /// Bytes encoded so far.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    #[cfg(feature = "testing")]
    pub fn bool(&mut self, v: bool) {
        self.buf.put_i32(1);
        self.buf.put_u8(v as u8);
    }

    pub fn text(&mut self, v: &str) {
        self.buf.put_i32(v.len() as i32);
        self.buf.put_slice(v.as_bytes());
    }

    pub fn timestamptz(&mut self, ts: Timestamp) {
        self.buf.put_i32(8);
        self.buf.put_i64(ts.0 - PG_EPOCH_OFFSET_MICROS);
    }

    /// One telemetry row (well, time, the 13 channels), assembled on the stack and appended
    /// at once: field by field, the buffer's bounds checks and copies cost more than the
    /// encoding itself.
    pub fn reading(&mut self, well_id: &str, ts: Timestamp, m: &Measurements) {
        // After the well id: the time and the channels, 12 bytes each at most.
        let mut tail = [0u8; 12 + FIELD_COUNT * 12];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            tail[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&8i32.to_be_bytes());
        put(&(ts.0 - PG_EPOCH_OFFSET_MICROS).to_be_bytes());
        for &v in m.raw() {
            if v.is_nan() {
                put(&(-1i32).to_be_bytes());
            } else {
                put(&8i32.to_be_bytes());
                put(&v.to_be_bytes());
            }
        }
        let tail_len = at;
        self.buf.reserve(6 + well_id.len() + tail_len);
        self.buf.put_i16(2 + FIELD_COUNT as i16);
        self.buf.put_i32(well_id.len() as i32);
        self.buf.put_slice(well_id.as_bytes());
        self.buf.put_slice(&tail[..tail_len]);
    }

    pub fn finish(mut self) -> bytes::Bytes {
        self.buf.put_i16(-1);
        self.buf.freeze()
    }

    /// Finishes the payload and runs `statement` (a `COPY ... FROM STDIN (FORMAT binary)`)
    /// with it in `tx`; returns the rows copied.
    pub async fn copy_into<T: ?Sized + tokio_postgres::ToStatement>(
        self,
        tx: &tokio_postgres::Transaction<'_>,
        statement: &T,
    ) -> Result<u64, tokio_postgres::Error> {
        use futures_util::SinkExt as _;
        let sink = tx.copy_in(statement).await?;
        let mut sink = std::pin::pin!(sink);
        sink.send(self.finish()).await?;
        sink.finish().await
    }
}

/// Channels read from a row whose columns `first..first + 13` are the channels in order.
pub fn measurements_from_row(
    row: &tokio_postgres::Row,
    first: usize,
) -> Result<Measurements, StoreError> {
    let mut raw = [f64::NAN; FIELD_COUNT];
    for (i, slot) in raw.iter_mut().enumerate() {
        let v: Option<f64> = row
            .try_get(first + i)
            .map_err(|e| StoreError::Internal(format!("decoding a reading: {e}")))?;
        if let Some(v) = v {
            *slot = v;
        }
    }
    Ok(Measurements::from_raw(raw))
}

pub fn get<'a, T: FromSql<'a>>(row: &'a tokio_postgres::Row, i: usize) -> Result<T, StoreError> {
    row.try_get(i)
        .map_err(|e| StoreError::Internal(format!("decoding column {i}: {e}")))
}

/// True when the error means "the database cannot be reached right now" (connection lost,
/// server shutting down or starting, too many connections), as opposed to a bad statement.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") // connection exceptions
            || code.starts_with("57P") // admin shutdown, crash shutdown, cannot connect now
            || code == "53300" // too many connections
            || code == "3D000" // database does not exist (yet, or dropped and being restored)
            // object not in prerequisite state: "database is not currently accepting connections"
            || code == "55000"
                && e
                    .as_db_error()
                    .is_some_and(|d| d.message().contains("accepting connections"));
    }
    // No SQLSTATE: a socket or TLS failure while connecting or talking.
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    e.to_string().contains("error connecting") || e.to_string().contains("connection closed")
}

/// Maps a driver error: transient ones become `Unavailable` (callers may retry), statement
/// timeouts too, everything else `Internal` (logged with its cause by the HTTP layer).
pub fn db_err(context: &str, e: tokio_postgres::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable(format!("{context}: database unreachable ({e})"))
    } else if e.code().is_some_and(|c| c.code() == "57014") {
        StoreError::Unavailable(format!("{context}: statement timeout"))
    } else {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_else(|| e.to_string());
        StoreError::Internal(format!("{context}: {detail}"))
    }
}

pub fn pool_err(context: &str, e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_err(context, e),
        other => StoreError::Unavailable(format!("{context}: no database connection ({other})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_exactly() {
        for micros in [
            0,
            1,
            -1,
            1_767_225_600_123_456,
            MIN_SUPPORTED.0,
            MAX_SUPPORTED.0,
        ] {
            let mut buf = BytesMut::new();
            PgTs(micros).to_sql(&Type::TIMESTAMPTZ, &mut buf).unwrap();
            assert_eq!(
                PgTs::from_sql(&Type::TIMESTAMPTZ, &buf).unwrap(),
                PgTs(micros)
            );
        }
        assert_eq!(PgTs::clamped(Timestamp(i64::MAX)), PgTs(MAX_SUPPORTED.0));
    }
}
