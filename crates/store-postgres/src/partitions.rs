//! Daily range partitions of `telemetry` on plain PostgreSQL: created ahead of time by the
//! maintenance task, and on demand by the writer for backfilled days.

use espwatch_core::Timestamp;
use tokio_postgres::Client;

use crate::schema::{DAY_MICROS, LOCK_PARTITIONS};

/// Days since the Unix epoch (UTC) of an instant.
pub fn day_of(ts: Timestamp) -> i64 {
    ts.0.div_euclid(DAY_MICROS)
}

/// `telemetry_pYYYYMMDD`.
pub fn name(day: i64) -> String {
    let date = Timestamp(day * DAY_MICROS).to_rfc3339();
    format!(
        "telemetry_p{}",
        date.get(..10).unwrap_or("x").replace('-', "")
    )
}

/// The day of a partition named by [`name`]; `None` for any other name.
pub fn day_of_name(name: &str) -> Option<i64> {
    let digits = name.strip_prefix("telemetry_p")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = digits[..4].parse().ok()?;
    let m: i64 = digits[4..6].parse().ok()?;
    let d: i64 = digits[6..].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after H. Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

fn bound(day: i64) -> String {
    Timestamp(day * DAY_MICROS).to_rfc3339()
}

/// Creates the partitions of `days` that do not exist yet. Serialised by an advisory lock so
/// that concurrent writers and the maintenance task never race on the catalog.
///
/// A partition is created as a table of its own and then attached: `ATTACH PARTITION` takes
/// only a SHARE UPDATE EXCLUSIVE lock on `telemetry`, which neither waits for nor blocks
/// readers and writers, whereas `CREATE TABLE ... PARTITION OF` takes ACCESS EXCLUSIVE: it
/// waited for every open transaction that had read `telemetry` (a rollup refresh, a long
/// query) while queueing every write and read behind it.
pub async fn ensure(client: &Client, days: &[i64]) -> Result<(), tokio_postgres::Error> {
    for &day in days {
        let name = name(day);
        if exists(client, &name).await? {
            continue;
        }
        let result = async {
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock({LOCK_PARTITIONS});"
                ))
                .await?;
            // Someone may have created it while we waited for the lock.
            if !exists(client, &name).await? {
                client
                    .batch_execute(&format!(
                        "CREATE TABLE \"{name}\" (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
                         ALTER TABLE telemetry ATTACH PARTITION \"{name}\"
                             FOR VALUES FROM ('{from}') TO ('{to}');",
                        from = bound(day),
                        to = bound(day + 1),
                    ))
                    .await?;
                tracing::debug!(partition = %name, "created partition");
            }
            client.batch_execute("COMMIT").await
        }
        .await;
        if let Err(e) = result {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    Ok(())
}

/// Whether the partition exists, read from `pg_class` with the statement's own snapshot: a
/// name lookup (`to_regclass`) may use a catalog snapshot older than the lock just acquired.
/// Created and attached in one transaction, an existing partition is an attached one.
async fn exists(client: &Client, name: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_class
                 WHERE relname = $1 AND relnamespace = current_schema()::regnamespace)",
            &[&name],
        )
        .await?
        .get(0))
}

/// Partitions from yesterday through `ahead` days from now.
pub async fn ensure_ahead(client: &Client, ahead: u32) -> Result<(), tokio_postgres::Error> {
    let today = day_of(crate::now());
    let days: Vec<i64> = (today - 1..=today + ahead as i64).collect();
    ensure(client, &days).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_days() {
        let t = Timestamp(1_767_225_600_000_000 + 5); // 2026-01-01T00:00:00.000005Z
        assert_eq!(name(day_of(t)), "telemetry_p20260101");
        assert_eq!(day_of(Timestamp(-1)), -1);
        assert_eq!(name(-1), "telemetry_p19691231");
    }

    #[test]
    fn a_partition_name_gives_its_day_back() {
        for day in [-1, 0, 1, 59, 365, 11_016, 20_000, 20_454, 2_932_896] {
            assert_eq!(day_of_name(&name(day)), Some(day), "{}", name(day));
        }
        assert_eq!(day_of_name("telemetry_p2024013"), None);
        assert_eq!(day_of_name("rollup_1m"), None);
    }
}
