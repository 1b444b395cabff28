//! Data quality of a well over a range: its registry entry and stored readings through
//! `espwatch_core::quality` (the computation, pure, on the blocking pool).

use espwatch_core::quality::{self, InstrumentLimits, QualityOptions, QualityReport};
use espwatch_core::{TimeRange, WellId};
use espwatch_store::{Store, StoreError};

/// Most windows one assessment may produce.
pub const MAX_WINDOWS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum QualityError {
    #[error("well {0} is not registered")]
    UnknownWell(WellId),
    #[error("the range holds more than {MAX_WINDOWS} windows; widen the window")]
    TooManyWindows,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("quality assessment failed unexpectedly: {0}")]
    Join(String),
}

/// Assesses `well` over `range` in windows of `window_micros`.
pub async fn assess_well(
    store: &dyn Store,
    well: &WellId,
    range: TimeRange,
    window_micros: i64,
) -> Result<QualityReport, QualityError> {
    if window_micros <= 0 || (range.to.0 - range.from.0) / window_micros >= MAX_WINDOWS {
        return Err(QualityError::TooManyWindows);
    }
    let record = store
        .get_well(well)
        .await?
        .ok_or_else(|| QualityError::UnknownWell(well.clone()))?;
    let points = store.read_range(well, range).await?;
    let opts = QualityOptions {
        range,
        window_micros,
        declared_interval_micros: record
            .meta
            .sample_interval_s
            .map(|s| (s * 1e6).round() as i64),
        limits: InstrumentLimits::from_meta(Some(&record.meta)),
    };
    tokio::task::spawn_blocking(move || quality::assess(&points, &opts))
        .await
        .map_err(|e| QualityError::Join(e.to_string()))
}
