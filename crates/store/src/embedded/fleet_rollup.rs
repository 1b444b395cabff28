//! The fleet tier: per segment window, per hour, per channel the count, sum, min and max of
//! every well's readings (`fleet_rollups`, one row per window), so a fleet-wide aggregate
//! ("the average intake pressure of every well per hour over a week") reads one small row per
//! window instead of one rollup per well and window.
//!
//! A row is built from the wells' hourly rollups of its window (`rollup`) by the checkpoint
//! thread, for the windows the checkpoint seals into (their new rollups are at hand) and for
//! windows whose row is missing or out of date (at most [`FLEET_PER_CHECKPOINT`] in all);
//! between checkpoints, the writer hands the windows still out of date to the same thread,
//! [`FLEET_PER_REBUILD`] at a time, until none is left that can be built (a window with
//! unsealed readings waits for the checkpoint sealing them): a bulk load writes into more
//! windows than its checkpoints rebuild, and those windows used to stay without a row, read
//! well by well, until later checkpoints got to them. `espwatch store compact` builds every
//! window's row at once. It records what it was made from: the total
//! reading count and a fingerprint of the `(well, reading count)` pairs. A query uses it only
//! when both equal what its snapshot of the index says about the window's sealed data, and
//! adds the wells' unsealed readings there as raw points; any other window is answered well
//! by well (rollups, raw points), as before. Writing a segment of the window, deleting a
//! well, quarantining a segment and rollup retention delete the row in the same transaction,
//! so a row never outlives the data it summarises; a restore drops them all. The row is
//! rebuilt as above. `EmbeddedStore::fleet_tier` counts the windows answered from rows and
//! well by well, and the windows out of date.
//!
//! `last` is not kept (which well's reading is the fleet's last needs timestamps the hourly
//! rollups do not have): a fleet `last` is computed from raw points.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use espwatch_core::{FIELD_COUNT, WellId};
use rusqlite::{Connection, OptionalExtension, params};

use super::codec::{CodecError, Reader, put_ivarint, put_varint};
use super::index::Index;
use super::rollup::{self, HOUR, Partial, Piece};
use super::schema::{sql_err, sql_fail};
use crate::StoreResult;

const VERSION: u8 = 1;

/// Fleet rows a checkpoint builds at most (a day of 4-hour windows; a few ms each at 1 000
/// wells, on the checkpoint thread).
pub const FLEET_PER_CHECKPOINT: usize = 6;

/// Fleet rows one background rebuild builds at most (between checkpoints, nothing frozen:
/// `Writer::rebuild_fleet_if_due`); four days of 4-hour windows, some 100 ms at 1 000 wells.
pub const FLEET_PER_REBUILD: usize = 24;

/// One built row.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetRow {
    pub ws: i64,
    pub readings: i64,
    pub fingerprint: i64,
    pub data: Vec<u8>,
}

/// What the index says about one window's sealed data across wells: the total reading count
/// and the fingerprint a valid row must carry.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct WindowSum {
    pub readings: i64,
    pub fingerprint: i64,
}

/// A well's share of a window's fingerprint: a stable 64-bit mix of its id and reading count
/// (stored in the database, so it must never change). Shares are added (wrapping), so the
/// order of wells does not matter.
pub fn share(well: &WellId, count: i64) -> i64 {
    // FNV-1a over the id, then splitmix64 with the count.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in well.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ (count as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as i64
}

/// The windows starting in `[from, to)` as the index has them sealed, across every well
/// (segments, and windows retention expired whose rollup stays).
pub fn window_sums(index: &Index, from: i64, to: i64) -> BTreeMap<i64, WindowSum> {
    let mut sums: BTreeMap<i64, WindowSum> = BTreeMap::new();
    if from >= to {
        return sums;
    }
    for (id, st) in &index.wells {
        for (ws, count) in super::rollup_windows(st, from, to) {
            let s = sums.entry(ws).or_default();
            s.readings += count;
            s.fingerprint = s.fingerprint.wrapping_add(share(id, count));
        }
    }
    sums
}

/// Builds the row of window `ws` from the hourly rollups of `wells` (the wells that have data
/// there): `fresh` gives the ones a running checkpoint is writing, the database the others.
/// `None` when one of them has no readable rollup (an older release's segment: the window
/// is answered well by well until it gets one).
pub fn build<'a>(
    conn: &Connection,
    ws: i64,
    wells: &[WellId],
    fresh: impl Fn(&WellId) -> Option<&'a [u8]>,
) -> StoreResult<Option<FleetRow>> {
    let err = |e| sql_err("building a fleet rollup", e);
    let mut stmt = conn
        .prepare_cached("SELECT data FROM rollups WHERE well_id = ?1 AND window_start = ?2")
        .map_err(err)?;
    let mut hours: BTreeMap<i64, Piece> = BTreeMap::new();
    let (mut readings, mut fingerprint) = (0i64, 0i64);
    for well in wells {
        let decoded = match fresh(well) {
            Some(data) => Some(rollup::decode(data)),
            None => stmt
                .query_row(params![well.as_str(), ws], |r| {
                    r.get_ref(0)
                        .and_then(|v| v.as_blob().map_err(Into::into))
                        .map(rollup::decode)
                })
                .optional()
                .map_err(err)?,
        };
        let Some(Ok((count, pieces))) = decoded else {
            return Ok(None);
        };
        let count = count as i64;
        readings += count;
        fingerprint = fingerprint.wrapping_add(share(well, count));
        for p in pieces {
            match hours.get_mut(&p.at) {
                Some(h) => h.merge(&p),
                None => {
                    hours.insert(p.at, p);
                }
            }
        }
    }
    let pieces: Vec<Piece> = hours.into_values().collect();
    Ok(Some(FleetRow {
        ws,
        readings,
        fingerprint,
        data: encode(&pieces),
    }))
}

/// Writes (or replaces) a built row.
pub fn write(conn: &Connection, row: &FleetRow) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO fleet_rollups(window_start, readings, fingerprint, data)
         VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(params![row.ws, row.readings, row.fingerprint, row.data]))
    .map_err(|e| sql_err("writing a fleet rollup", e))?;
    Ok(())
}

/// Deletes the row of window `ws` (its data is changing).
pub fn invalidate(conn: &Connection, ws: i64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM fleet_rollups WHERE window_start = ?1")
        .and_then(|mut s| s.execute([ws]))
        .map_err(|e| sql_err("deleting a fleet rollup", e))?;
    Ok(())
}

/// At open: the windows the index has that have no fleet row or one made from other data.
pub fn stale_windows(conn: &Connection, index: &Index, window: i64) -> StoreResult<BTreeSet<i64>> {
    if window % HOUR != 0 {
        return Ok(BTreeSet::new());
    }
    let err = |e| sql_err("listing fleet rollups", e);
    let mut built: HashMap<i64, (i64, i64)> = HashMap::new();
    let mut stmt = conn
        .prepare("SELECT window_start, readings, fingerprint FROM fleet_rollups")
        .map_err(err)?;
    let mut rows = stmt.query([]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        built.insert(
            row.get(0).map_err(err)?,
            (row.get(1).map_err(err)?, row.get(2).map_err(err)?),
        );
    }
    let sums = window_sums(index, i64::MIN, i64::MAX);
    Ok(sums
        .into_iter()
        .filter(|(ws, s)| built.get(ws) != Some(&(s.readings, s.fingerprint)))
        .map(|(ws, _)| ws)
        .collect())
}

/// The valid rows of the windows in `sums` (start → pieces), read in one statement.
pub fn read_valid(
    conn: &Connection,
    sums: &BTreeMap<i64, WindowSum>,
) -> StoreResult<HashMap<i64, Vec<Piece>>> {
    let mut out = HashMap::new();
    let (Some((&first, _)), Some((&last, _))) = (sums.first_key_value(), sums.last_key_value())
    else {
        return Ok(out);
    };
    let err = |e| sql_fail("reading fleet rollups", e);
    let mut stmt = conn
        .prepare_cached(
            "SELECT window_start, readings, fingerprint, data FROM fleet_rollups
             WHERE window_start >= ?1 AND window_start <= ?2",
        )
        .map_err(err)?;
    let mut rows = stmt.query(params![first, last]).map_err(err)?;
    while let Some(row) = rows.next().map_err(err)? {
        let ws: i64 = row.get(0).map_err(err)?;
        let readings: i64 = row.get(1).map_err(err)?;
        let fingerprint: i64 = row.get(2).map_err(err)?;
        let valid = sums
            .get(&ws)
            .is_some_and(|s| s.readings == readings && s.fingerprint == fingerprint);
        if !valid {
            continue;
        }
        let data = row
            .get_ref(3)
            .and_then(|v| v.as_blob().map_err(Into::into))
            .map_err(err)?;
        // A damaged row is only a slower answer: the window is read well by well.
        if let Ok(pieces) = decode(data) {
            out.insert(ws, pieces);
        }
    }
    Ok(out)
}

/// Encodes hour pieces (ascending): count, sum, min, max of each channel as `f64`s.
pub fn encode(pieces: &[Piece]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + pieces.len() * (4 + FIELD_COUNT * 25));
    out.push(VERSION);
    put_varint(&mut out, pieces.len() as u64);
    let mut prev = 0i64;
    for p in pieces {
        let h = p.at.div_euclid(HOUR);
        put_ivarint(&mut out, h.wrapping_sub(prev));
        prev = h;
        put_varint(&mut out, p.readings);
        for c in &p.channels {
            put_varint(&mut out, c.n);
            if c.n > 0 {
                for v in [c.sum, c.min, c.max] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    out
}

pub fn decode(data: &[u8]) -> Result<Vec<Piece>, CodecError> {
    let mut r = Reader::new(data);
    if r.u8()? != VERSION {
        return Err(CodecError("fleet rollup: unknown version".into()));
    }
    let n = r.count(2 + FIELD_COUNT)?;
    let mut pieces = Vec::with_capacity(n);
    let mut hour = 0i64;
    for _ in 0..n {
        hour = hour.wrapping_add(r.ivarint()?);
        let readings = r.varint()?;
        let mut channels = [Partial::EMPTY; FIELD_COUNT];
        for c in channels.iter_mut() {
            let n = r.varint()?;
            if n == 0 {
                continue;
            }
            let mut f = [0f64; 3];
            for v in f.iter_mut() {
                let mut b = [0u8; 8];
                b.copy_from_slice(r.bytes(8)?);
                *v = f64::from_le_bytes(b);
            }
            *c = Partial {
                n,
                sum: f[0],
                min: f[1],
                max: f[2],
                last: f64::NAN,
            };
        }
        pieces.push(Piece {
            at: hour.wrapping_mul(HOUR),
            readings,
            channels,
        });
    }
    r.finish()?;
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_garbage_is_refused() {
        let mut a = Partial::EMPTY;
        a.n = 3;
        a.sum = 1.5;
        a.min = -2.0;
        a.max = 7.25;
        let mut channels = [Partial::EMPTY; FIELD_COUNT];
        channels[4] = a;
        let pieces = vec![
            Piece {
                at: 5 * HOUR,
                readings: 9,
                channels,
            },
            Piece {
                at: 7 * HOUR,
                readings: 1,
                channels: [Partial::EMPTY; FIELD_COUNT],
            },
        ];
        let back = decode(&encode(&pieces)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].at, 5 * HOUR);
        assert_eq!(back[0].readings, 9);
        assert_eq!(
            (
                back[0].channels[4].n,
                back[0].channels[4].sum,
                back[0].channels[4].max
            ),
            (3, 1.5, 7.25)
        );
        assert_eq!(back[1].readings, 1);
        for cut in 0..encode(&pieces).len() {
            assert!(decode(&encode(&pieces)[..cut]).is_err());
        }
    }

    #[test]
    fn a_share_depends_on_the_well_and_the_count() {
        let a = WellId::parse("A").unwrap();
        let b = WellId::parse("B").unwrap();
        assert_ne!(share(&a, 10), share(&a, 11));
        assert_ne!(share(&a, 10), share(&b, 10));
        assert_eq!(share(&a, 10), share(&a, 10));
    }
}
