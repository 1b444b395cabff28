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

fn bound(day: i64) -> String {
    Timestamp(day * DAY_MICROS).to_rfc3339()
}

/// Creates the partitions of `days` that do not exist yet. Serialised by an advisory lock so
/// that concurrent writers and the maintenance task never race on the catalog.
pub async fn ensure(client: &Client, days: &[i64]) -> Result<(), tokio_postgres::Error> {
    for &day in days {
        let name = name(day);
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
            .await?
            .get(0);
        if exists {
            continue;
        }
        let sql = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({LOCK_PARTITIONS});
             CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF telemetry
                 FOR VALUES FROM ('{from}') TO ('{to}');
             COMMIT;",
            from = bound(day),
            to = bound(day + 1),
        );
        if let Err(e) = client.batch_execute(&sql).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        tracing::debug!(partition = %name, "created partition");
    }
    Ok(())
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
}
