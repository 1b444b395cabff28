//! CSV decoding: a header row of field names, then one reading per row.
//!
//! Header problems fail the whole body (every row would fail the same way); row problems
//! reject that row only. Cells are untyped text: empty means missing, numbers are parsed with
//! Rust's float grammar (so `NaN` and `inf` parse, and are then refused as not finite), and
//! `ts` is RFC 3339 when it contains a `:`, Unix epoch seconds otherwise.
//!
//! Line numbers are computed here from byte offsets: the `csv` crate's own `Position::line`
//! miscounts after blank lines and with CRLF endings (rust-csv issues #208 and #395).

use ::csv::{ByteRecord, ReaderBuilder, Trim};

use super::draft::{self, Ctx, Draft, Val};
use super::keys::{self, Key, Target};
use super::{DecodeError, DecodeOptions, Decoded, FieldError, Item, Rejection, Warning};

/// Reader configuration: rows of the wrong length are returned (and rejected by the decoder)
/// rather than failing the reader, cells are trimmed, a UTF-8 BOM is skipped.
fn reader_builder(separator: u8) -> ReaderBuilder {
    let mut builder = ReaderBuilder::new();
    builder
        .has_headers(false)
        .flexible(true)
        .trim(Trim::All)
        .delimiter(separator);
    builder
}

/// Incremental CSV decoder: built from the header line, then fed the following lines in
/// chunks; it numbers rows and lines across calls and aggregates warnings.
///
/// Chunks must split the input at line boundaries. A quoted cell spanning lines across a
/// chunk boundary would be split, but no valid espwatch CSV has one: no field may contain a
/// line break.
#[derive(Debug)]
pub struct CsvDecoder {
    columns: Vec<Key>,
    /// `None` when the options name the well (no such column needed then).
    well_id_column: Option<usize>,
    ctx: Ctx,
    next_index: usize,
    next_line: u64,
}

impl CsvDecoder {
    /// Validates the header, taken to be line 1 of the input (a BOM is skipped). Accepts
    /// canonical and legacy names; fails on unknown or repeated names and when no row could be
    /// valid (no `well_id`, no measurement column). A `ts` column is optional: without one
    /// every reading gets the receive time, with a warning.
    pub fn new(header_line: &[u8], opts: DecodeOptions) -> Result<CsvDecoder, DecodeError> {
        Self::with_header_at(header_line, 1, opts)
    }

    /// As [`CsvDecoder::new`], for a header found on line `header_line_no`.
    fn with_header_at(
        header_line: &[u8],
        header_line_no: u64,
        opts: DecodeOptions,
    ) -> Result<CsvDecoder, DecodeError> {
        let header_line = super::strip_bom(header_line);
        let mut reader = reader_builder(opts.csv.separator).from_reader(header_line);
        let mut header = ByteRecord::new();
        match reader.read_byte_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return Err(DecodeError::Empty),
            Err(e) => {
                return Err(DecodeError::Csv {
                    line: header_line_no,
                    message: e.to_string(),
                });
            }
        }
        let mut columns: Vec<Key> = Vec::with_capacity(header.len());
        for (i, raw) in header.iter().enumerate() {
            let name = String::from_utf8_lossy(raw);
            let name = name.trim();
            let key = keys::lookup(name).ok_or_else(|| DecodeError::CsvUnknownColumn {
                name: draft::echo(name).into_owned(),
                position: i + 1,
            })?;
            if columns.iter().any(|c| c.name == key.name) {
                return Err(DecodeError::CsvDuplicateColumn {
                    name: key.name.to_owned(),
                });
            }
            columns.push(key);
        }
        let well_id_column = columns.iter().position(|c| c.target == Target::WellId);
        if well_id_column.is_none() && opts.well.is_none() {
            return Err(DecodeError::CsvMissingColumn { name: "well_id" });
        }
        if !columns
            .iter()
            .any(|c| matches!(c.target, Target::Measurement(_)))
        {
            return Err(DecodeError::CsvNoMeasurementColumn);
        }
        Ok(CsvDecoder {
            columns,
            well_id_column,
            ctx: Ctx::new(opts),
            next_index: 0,
            next_line: header_line_no + 1,
        })
    }

    /// Decodes a chunk of whole lines following the header (the last one may lack its `\n`),
    /// appending one item per data row. Rows whose cells are all empty (blank lines) are
    /// skipped, like blank NDJSON lines.
    pub fn decode_chunk(&mut self, chunk: &[u8], out: &mut Vec<Item>) {
        self.decode_chunk_up_to(chunk, out, usize::MAX);
    }

    /// As `decode_chunk`, but stops and returns false once `out` would exceed `limit` items.
    fn decode_chunk_up_to(&mut self, chunk: &[u8], out: &mut Vec<Item>, limit: usize) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let first_line = self.next_line;
        let mut reader = reader_builder(self.ctx.opts.csv.separator).from_reader(chunk);
        let mut record = ByteRecord::new();
        // Newlines counted in chunk[..scanned]; record offsets only grow.
        let (mut scanned, mut newlines) = (0usize, 0u64);
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                // Reading bytes from memory with `flexible` set, the reader has no error left
                // to report; should one appear anyway, reject rather than lose it silently.
                Err(e) => {
                    let index = self.next_index;
                    self.next_index += 1;
                    let reason = format!("malformed CSV: {e}");
                    out.push(draft::reject(index, None, draft::WHOLE_READING, reason));
                    break;
                }
            }
            // The reported offset may point at the previous record's terminator or at blank
            // lines skipped before this record; the record starts after them.
            let mut start = record
                .position()
                .map_or(scanned, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX))
                .clamp(scanned, chunk.len());
            while start < chunk.len() && matches!(chunk[start], b'\r' | b'\n') {
                start += 1;
            }
            newlines += count_newlines(&chunk[scanned..start]);
            scanned = start;
            if let Some(item) = self.decode_record(&record, first_line + newlines) {
                if out.len() >= limit {
                    return false;
                }
                out.push(item);
            }
        }
        let lines = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        self.next_line += count_newlines(lines) + 1;
        true
    }

    fn decode_record(&mut self, record: &ByteRecord, line: u64) -> Option<Item> {
        if record.iter().all(|cell| cell.trim_ascii().is_empty()) {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let line = Some(line);
        if record.len() != self.columns.len() {
            let well_id = self
                .well_id_column
                .and_then(|column| record.get(column))
                .and_then(|cell| std::str::from_utf8(cell).ok())
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| draft::echo(s).into_owned());
            return Some(Item::Rejected(Rejection {
                index,
                line,
                well_id,
                errors: vec![FieldError {
                    field: draft::WHOLE_READING.to_owned(),
                    reason: format!(
                        "expected {} cells as in the header, found {}",
                        self.columns.len(),
                        record.len()
                    ),
                }],
            }));
        }
        let mut draft = Draft::new(&mut self.ctx);
        for (&key, cell) in self.columns.iter().zip(record.iter()) {
            match std::str::from_utf8(cell) {
                Ok(text) => draft.set(key, Val::Cell(text.trim())),
                Err(_) => draft.error(key.canonical(), "not valid UTF-8".to_owned()),
            }
        }
        let (item, notes) = draft.finish(index, line);
        self.ctx.record(index, notes);
        Some(item)
    }

    /// Data rows seen so far (blank ones excluded): the index the next row will get.
    pub fn readings_seen(&self) -> usize {
        self.next_index
    }

    /// Lines seen so far, the header and blank lines included.
    pub fn lines_seen(&self) -> u64 {
        self.next_line - 1
    }

    /// Warnings aggregated so far.
    pub fn warnings(&self) -> Vec<Warning> {
        self.ctx.tally.to_warnings()
    }

    pub fn finish(self) -> Vec<Warning> {
        self.warnings()
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// Decodes a CSV body held in memory: the first non-blank line is the header.
pub(crate) fn decode_csv(body: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let mut rest = body;
    let mut line_no = 1;
    let header = loop {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if !line.trim_ascii().is_empty() {
            rest = after;
            break line;
        }
        if after.is_empty() {
            return Err(DecodeError::Empty);
        }
        rest = after;
        line_no += 1;
    };
    let mut decoder = CsvDecoder::with_header_at(header, line_no, opts.clone())?;
    let mut items = Vec::new();
    if !decoder.decode_chunk_up_to(rest, &mut items, opts.max_readings) {
        return Err(DecodeError::TooManyReadings {
            limit: opts.max_readings,
        });
    }
    Ok(Decoded {
        items,
        warnings: decoder.finish(),
    })
}
