//! One archive file: a well's readings as Parquet, written and read with the `parquet`
//! crate's column API (no arrow).
//!
//! Schema (opens as-is in pandas, polars, DuckDB): `well_id` (string), `ts`
//! (`TIMESTAMP(MICROS, UTC)`), then one nullable `DOUBLE` per channel named as in the API
//! (`intake_pressure_psi`, ...); a missing value is a null. zstd pages, statistics on.
//! The file's key-value metadata repeats the well, the row count and the values' checksum.

use std::sync::Arc;

use espwatch_core::{FIELD_COUNT, Field, Measurements, Point, Timestamp, WellId};
use parquet::basic::{Compression, ZstdLevel};
use parquet::column::reader::get_typed_column_reader;
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use sha2::{Digest, Sha256};

/// Rows per row group: a day of 1 s data fits in one.
const ROW_GROUP_ROWS: usize = 131_072;

#[derive(Debug, thiserror::Error)]
pub enum ColumnsError {
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("archive file is not an espwatch archive: {0}")]
    Foreign(String),
}

fn schema_text() -> String {
    let mut s = String::from(
        "message espwatch_readings {\n  REQUIRED BYTE_ARRAY well_id (STRING);\n  \
         REQUIRED INT64 ts (TIMESTAMP(MICROS,true));\n",
    );
    for f in Field::ALL {
        s.push_str(&format!("  OPTIONAL DOUBLE {};\n", f.name()));
    }
    s.push_str("}\n");
    s
}

/// Checksum of readings as the archive keeps them: SHA-256 over each reading's timestamp
/// and channels (little-endian; every missing value as one canonical NaN), in order.
pub fn checksum(points: &[Point]) -> String {
    let mut h = Sha256::new();
    for (ts, m) in points {
        h.update(ts.0.to_le_bytes());
        for v in m.raw() {
            let bits = if v.is_nan() {
                f64::NAN.to_bits()
            } else {
                v.to_bits()
            };
            h.update(bits.to_le_bytes());
        }
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Parquet file of `points` (ascending) of `well`.
pub fn encode(well: &WellId, points: &[Point]) -> Result<Vec<u8>, ColumnsError> {
    let schema = Arc::new(parse_message_type(&schema_text())?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_created_by(format!("espwatch {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![
                KeyValue::new("espwatch.well_id".into(), well.as_str().to_owned()),
                KeyValue::new("espwatch.rows".into(), points.len().to_string()),
                KeyValue::new("espwatch.checksum".into(), checksum(points)),
            ]))
            .build(),
    );
    let mut out = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut out, schema, props)?;
    let id = ByteArray::from(well.as_str().as_bytes().to_vec());
    for chunk in points.chunks(ROW_GROUP_ROWS) {
        let mut group = writer.next_row_group()?;
        let mut column = 0usize;
        while let Some(mut col) = group.next_column()? {
            match column {
                0 => {
                    let ids = vec![id.clone(); chunk.len()];
                    col.typed::<ByteArrayType>().write_batch(&ids, None, None)?;
                }
                1 => {
                    let ts: Vec<i64> = chunk.iter().map(|p| p.0.0).collect();
                    col.typed::<Int64Type>().write_batch(&ts, None, None)?;
                }
                c => {
                    let ch = c - 2;
                    let mut values = Vec::with_capacity(chunk.len());
                    let mut defs = Vec::with_capacity(chunk.len());
                    for (_, m) in chunk {
                        let v = m.raw()[ch];
                        if v.is_nan() {
                            defs.push(0i16);
                        } else {
                            defs.push(1);
                            values.push(v);
                        }
                    }
                    col.typed::<DoubleType>()
                        .write_batch(&values, Some(&defs), None)?;
                }
            }
            col.close()?;
            column += 1;
        }
        group.close()?;
    }
    writer.close()?;
    Ok(out)
}

/// A decoded archive file.
#[derive(Debug)]
pub struct Decoded {
    pub well_id: WellId,
    pub points: Vec<Point>,
    /// The checksum the writer recorded in the file's metadata.
    pub recorded_checksum: Option<String>,
}

/// Reads a file written by [`encode`] back into readings.
pub fn decode(data: bytes::Bytes) -> Result<Decoded, ColumnsError> {
    let reader = SerializedFileReader::new(data)?;
    let meta = reader.metadata().file_metadata();
    let kv = |key: &str| {
        meta.key_value_metadata()
            .and_then(|kvs| kvs.iter().find(|k| k.key == key))
            .and_then(|k| k.value.clone())
    };
    let schema = meta.schema_descr();
    if schema.num_columns() != 2 + FIELD_COUNT
        || schema.column(1).name() != "ts"
        || Field::ALL
            .iter()
            .enumerate()
            .any(|(i, f)| schema.column(i + 2).name() != f.name())
    {
        return Err(ColumnsError::Foreign("unexpected columns".into()));
    }
    let well = kv("espwatch.well_id")
        .ok_or_else(|| ColumnsError::Foreign("no espwatch.well_id".into()))?;
    let well_id = WellId::parse(&well).map_err(|e| ColumnsError::Foreign(e.to_string()))?;
    let mut points: Vec<Point> = Vec::new();
    for g in 0..reader.num_row_groups() {
        let group = reader.get_row_group(g)?;
        let rows = usize::try_from(group.metadata().num_rows())
            .map_err(|_| ColumnsError::Foreign("negative row count".into()))?;
        let mut ts: Vec<i64> = Vec::with_capacity(rows);
        let mut r = get_typed_column_reader::<Int64Type>(group.get_column_reader(1)?);
        while ts.len() < rows {
            let (n, _, _) = r.read_records(rows - ts.len(), None, None, &mut ts)?;
            if n == 0 {
                break;
            }
        }
        if ts.len() != rows {
            return Err(ColumnsError::Foreign("short timestamp column".into()));
        }
        let base = points.len();
        points.extend(ts.iter().map(|t| {
            (
                Timestamp(*t),
                Measurements::from_raw([f64::NAN; FIELD_COUNT]),
            )
        }));
        for ch in 0..FIELD_COUNT {
            let mut r = get_typed_column_reader::<DoubleType>(group.get_column_reader(ch + 2)?);
            let mut values: Vec<f64> = Vec::new();
            let mut defs: Vec<i16> = Vec::new();
            let mut records = 0;
            while records < rows {
                let (n, _, _) =
                    r.read_records(rows - records, Some(&mut defs), None, &mut values)?;
                if n == 0 {
                    break;
                }
                records += n;
            }
            if defs.len() != rows {
                return Err(ColumnsError::Foreign(format!("short column {ch}")));
            }
            let mut vi = values.into_iter();
            for (row, d) in defs.iter().enumerate() {
                if *d > 0 {
                    let v = vi
                        .next()
                        .ok_or_else(|| ColumnsError::Foreign(format!("short values {ch}")))?;
                    let p = &mut points[base + row];
                    let mut raw = *p.1.raw();
                    raw[ch] = v;
                    p.1 = Measurements::from_raw(raw);
                }
            }
        }
    }
    Ok(Decoded {
        well_id,
        points,
        recorded_checksum: kv("espwatch.checksum"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_round_trip_with_missing_values() {
        let well = WellId::parse("W-1").unwrap();
        let points: Vec<Point> = (0..1000i64)
            .map(|i| {
                let mut raw = [f64::NAN; FIELD_COUNT];
                for (c, v) in raw.iter_mut().enumerate() {
                    if (i + c as i64) % 7 != 0 {
                        *v = i as f64 * 0.25 + c as f64;
                    }
                }
                (
                    Timestamp(1_700_000_000_000_000 + i * 10_000_000),
                    Measurements::from_raw(raw),
                )
            })
            .collect();
        let bytes = encode(&well, &points).unwrap();
        assert_eq!(&bytes[..4], b"PAR1");
        let back = decode(bytes::Bytes::from(bytes)).unwrap();
        assert_eq!(back.well_id, well);
        assert_eq!(back.points.len(), points.len());
        assert_eq!(checksum(&back.points), checksum(&points));
        assert_eq!(back.recorded_checksum, Some(checksum(&points)));
        // A changed value changes the checksum.
        let mut other = points.clone();
        let mut raw = *other[5].1.raw();
        raw[3] += 1e-9;
        other[5].1 = Measurements::from_raw(raw);
        assert_ne!(checksum(&other), checksum(&points));
    }
}
