//! CSV decoding: a header row of field names, then one reading per row.
//!
//! Header problems fail the whole body (every row would fail the same way); row problems
//! reject that row only. Cells are untyped text: empty means missing, numbers are parsed with
//! Rust's float grammar (so `NaN` and `inf` parse, and are then refused as not finite), and
//! `ts` is RFC 3339 when it contains a `:`, Unix epoch seconds otherwise.
//!
//! Line numbers are computed here from byte offsets: the `csv` crate's own `Position::line`
//! miscounts after blank lines and with CRLF endings (rust-csv issues #208 and #395).

use std::io::Read as _;

use ::csv::{ByteRecord, ReaderBuilder, Trim};

use super::draft::{self, Ctx, Draft, Val};
use super::keys::{self, Key, Target};
use super::{DecodeError, DecodeOptions, Decoded, FieldError, Item, Rejection, Warning};

/// The UTF-8 byte order mark.
const BOM: &[u8] = b"\xef\xbb\xbf";

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
    ///
    /// Rows are split here, without the `csv` crate, when they can be: a line without a
    /// quote and without a carriage return other than its CRLF ending reads as the `csv`
    /// reader would read it (cells between separators, trimmed of ASCII whitespace), and that
    /// is every row gauges and exports write. Any other line (quoted cells, which may span
    /// lines, or a lone `\r`, which the reader takes for a line end) is read by the `csv`
    /// reader, one record, and splitting resumes where that record ended. Cells are slices
    /// of the input: nothing is copied or allocated per row.
    fn decode_chunk_up_to(&mut self, chunk: &[u8], out: &mut Vec<Item>, limit: usize) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let separator = self.ctx.opts.csv.separator;
        let first_line = self.next_line;
        // Line of chunk[pos]: first_line + the newlines before pos.
        let mut line = first_line;
        // The `csv` reader skips a UTF-8 byte order mark at the start of what it reads, so at
        // the start of a chunk; nowhere else.
        let mut pos = if chunk.starts_with(BOM) { BOM.len() } else { 0 };
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(self.columns.len() + 1);
        while pos < chunk.len() {
            let rest = &chunk[pos..];
            let (row, next) = match memchr::memchr(b'\n', rest) {
                Some(i) => (&rest[..i], pos + i + 1),
                None => (rest, chunk.len()),
            };
            let row = row.strip_suffix(b"\r").unwrap_or(row);
            if split_plain(row, separator, &mut cells) {
                if let Some(item) = self.decode_record(&cells, line)
                    && !push_within(out, item, limit)
                {
                    return false;
                }
                pos = next;
                line += 1;
                continue;
            }
            // One record through the `csv` reader, from here. A mark here is not at the start
            // of the chunk: a blank line in front keeps the reader from skipping it.
            let lead: &[u8] = if pos > 0 && rest.starts_with(BOM) {
                b"\n"
            } else {
                b""
            };
            let mut reader = reader_builder(separator).from_reader(lead.chain(rest));
            let mut record = ByteRecord::new();
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
            // The record may start after blank lines the reader skipped.
            let mut start = 0;
            while start < rest.len() && matches!(rest[start], b'\r' | b'\n') {
                start += 1;
            }
            let record_line = line + count_newlines(&rest[..start]);
            let consumed = usize::try_from(reader.position().byte())
                .unwrap_or(usize::MAX)
                .saturating_sub(lead.len())
                .clamp(1, rest.len());
            let record_cells: Vec<Cell<'_>> = record.iter().map(Cell::from_bytes).collect();
            if let Some(item) = self.decode_record(&record_cells, record_line)
                && !push_within(out, item, limit)
            {
                return false;
            }
            line += count_newlines(&rest[..consumed]);
            pos += consumed;
        }
        let lines = chunk.strip_suffix(b"\n").unwrap_or(chunk);
        self.next_line += count_newlines(lines) + 1;
        true
    }

    fn decode_record(&mut self, cells: &[Cell<'_>], line: u64) -> Option<Item> {
        if cells.iter().all(Cell::is_blank) {
            return None;
        }
        let index = self.next_index;
        self.next_index += 1;
        let line = Some(line);
        if cells.len() != self.columns.len() {
            let well_id = self
                .well_id_column
                .and_then(|column| cells.get(column))
                .and_then(|cell| cell.text())
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
                        cells.len()
                    ),
                }],
            }));
        }
        let mut draft = Draft::new(&mut self.ctx);
        for (&key, cell) in self.columns.iter().zip(cells) {
            match cell.text() {
                Some(text) => draft.set(key, Val::Cell(trim(text))),
                None => draft.error(key.canonical(), "not valid UTF-8".to_owned()),
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
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Pushes `item` unless `out` already holds `limit` items.
fn push_within(out: &mut Vec<Item>, item: Item, limit: usize) -> bool {
    if out.len() >= limit {
        return false;
    }
    out.push(item);
    true
}

/// One cell of a row, trimmed of ASCII whitespace: its text, or its bytes when they are not
/// UTF-8 (a field error of that cell).
#[derive(Copy, Clone)]
enum Cell<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl<'a> Cell<'a> {
    fn from_bytes(bytes: &'a [u8]) -> Cell<'a> {
        match std::str::from_utf8(bytes) {
            Ok(text) => Cell::Text(text),
            Err(_) => Cell::Bytes(bytes),
        }
    }

    fn text(&self) -> Option<&'a str> {
        match *self {
            Cell::Text(text) => Some(text),
            Cell::Bytes(_) => None,
        }
    }

    fn is_blank(&self) -> bool {
        match *self {
            Cell::Text(text) => text.as_bytes().trim_ascii().is_empty(),
            Cell::Bytes(bytes) => bytes.trim_ascii().is_empty(),
        }
    }
}

/// `text.trim()`, without looking at the characters when both ends are printable ASCII
/// (nothing to trim then), as numbers, ids and timestamps are.
fn trim(text: &str) -> &str {
    match text.as_bytes() {
        [first, .., last] if first.is_ascii_graphic() && last.is_ascii_graphic() => text,
        [only] if only.is_ascii_graphic() => text,
        _ => text.trim(),
    }
}

/// Splits a line (without its line ending) into cells trimmed of ASCII whitespace, as the
/// `csv` reader would, when it has neither a quote nor a carriage return; false (and `cells`
/// unusable) otherwise. The line is checked for UTF-8 once, not cell by cell.
fn split_plain<'a>(row: &'a [u8], separator: u8, cells: &mut Vec<Cell<'a>>) -> bool {
    cells.clear();
    if memchr::memchr2(b'"', b'\r', row).is_some() {
        return false;
    }
    match std::str::from_utf8(row) {
        Ok(text) => {
            // An ASCII separator splits UTF-8 text at character boundaries.
            // Cells are short: a plain scan beats a vectorised search started per cell.
            let mut start = 0;
            for (i, &b) in row.iter().enumerate() {
                if b == separator {
                    cells.push(Cell::Text(text[start..i].trim_ascii()));
                    start = i + 1;
                }
            }
            cells.push(Cell::Text(text[start..].trim_ascii()));
        }
        Err(_) => {
            for cell in row.split(|&b| b == separator) {
                cells.push(Cell::from_bytes(cell.trim_ascii()));
            }
        }
    }
    true
}

/// The first non-blank line of a body (the header), its line number and what follows it.
fn split_header(body: &[u8]) -> Result<(&[u8], u64, &[u8]), DecodeError> {
    let mut rest = body;
    let mut line_no = 1;
    loop {
        let (line, after) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        if !line.trim_ascii().is_empty() {
            return Ok((line, line_no, after));
        }
        if after.is_empty() {
            return Err(DecodeError::Empty);
        }
        rest = after;
        line_no += 1;
    }
}

/// Decodes a CSV body held in memory: the first non-blank line is the header.
pub(crate) fn decode_csv(body: &[u8], opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let (header, line_no, rest) = split_header(body)?;
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

/// The row splitting as it was before rows were split here: every row through the `csv`
/// reader. Tests hold the decoder to it, row by row and line by line. (It misnumbered the
/// lines of a chunk starting with a byte order mark and blank lines; corrected below.)
#[cfg(test)]
pub(crate) fn decode_csv_reference(
    body: &[u8],
    opts: &DecodeOptions,
) -> Result<Decoded, DecodeError> {
    let (header, line_no, rest) = split_header(body)?;
    let mut decoder = CsvDecoder::with_header_at(header, line_no, opts.clone())?;
    let mut items = Vec::new();
    let chunk = rest;
    if !chunk.is_empty() {
        let first_line = decoder.next_line;
        let mut reader = reader_builder(opts.csv.separator).from_reader(chunk);
        let mut record = ByteRecord::new();
        let (mut scanned, mut newlines) = (0usize, 0u64);
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let index = decoder.next_index;
                    decoder.next_index += 1;
                    let reason = format!("malformed CSV: {e}");
                    items.push(draft::reject(index, None, draft::WHOLE_READING, reason));
                    break;
                }
            }
            let mut start = record
                .position()
                .map_or(scanned, |p| usize::try_from(p.byte()).unwrap_or(usize::MAX))
                .clamp(scanned, chunk.len());
            // The one correction: a mark the reader skipped at the start of the chunk was
            // taken for the record's start, so blank lines after it went uncounted.
            if start == 0 && chunk.starts_with(BOM) {
                start = BOM.len();
            }
            while start < chunk.len() && matches!(chunk[start], b'\r' | b'\n') {
                start += 1;
            }
            newlines += count_newlines(&chunk[scanned..start]);
            scanned = start;
            let cells: Vec<Cell<'_>> = record.iter().map(Cell::from_bytes).collect();
            if let Some(item) = decoder.decode_record(&cells, first_line + newlines) {
                items.push(item);
            }
        }
    }
    Ok(Decoded {
        items,
        warnings: decoder.finish(),
    })
}
