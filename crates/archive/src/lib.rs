//! espwatch-archive: the data lifecycle beyond the store.
//!
//! - [`columns`]: a well's readings as one Parquet file (column API, no arrow) and the
//!   values' checksum.
//! - [`target`]: the archive location (local directory or S3 via `object_store`), the
//!   write → read back → verify → manifest sequence, listing and reading archived files.
//! - [`job`]: the retention round (archive every expired day, delete it from the store only
//!   once verified, drop expired rollups) and the restore of archived readings.
//! - [`backup`]: the embedded store's backups and backup chains in an S3 bucket (made by
//!   `espwatch_store::embedded::{backup, incremental}` in a staging directory, uploaded and
//!   verified, manifest last; restored through a staging directory).
//! - [`ship`]: continuous archiving of the embedded store's durable log next to a backup
//!   chain (`serve` with `backup_ship_to`), and its replay after a chain's restore
//!   (`store restore --until` to the second).
//!
//! Layering: `core` → `store` → `archive` → `server`/`cli`. The lifecycle reaches data only
//! through the `Store` and `Retention` traits, so both backends share it; [`backup`] is the
//! embedded store's (PostgreSQL has its own tools).

pub mod backup;
pub mod columns;
pub mod job;
pub mod ship;
pub mod target;

pub use job::{
    FailedStage, Policy, RestoreReport, RetentionReport, RoundError, restore, run_retention,
    run_round,
};
pub use target::{Archive, ManifestEntry};
