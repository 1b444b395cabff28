//! The commit step every protocol shares: append, retrying while the store cannot commit,
//! then hand what was accepted to the live stream and the diagnostics. Messages are
//! acknowledged by the caller only after [`Sink::commit`] returned `Ok`.

use std::time::Duration;

use espwatch_core::ingest::Item;
use espwatch_core::localtime::UtcOffset;
use espwatch_core::{Reading, WellId};
use espwatch_server::AppState;
use espwatch_store::{AppendOptions, ReadingOutcome};
use tokio::sync::watch;

/// The server is stopping while the store could not commit: acknowledge nothing.
#[derive(Debug)]
pub struct Stopped;

/// Longest wait between two commit attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct Sink {
    state: AppState,
}

impl Sink {
    pub fn new(state: AppState) -> Sink {
        Sink { state }
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The registry zones of `wells` (those that have one), for naive local times sent
    /// without a zone. A store that cannot answer is logged and taken as "no zones": those
    /// readings are then refused as without a zone, as they would be without a registry zone.
    pub async fn registry_zones(&self, wells: &[WellId]) -> Vec<(WellId, UtcOffset)> {
        match espwatch_app::ingest::registry_zones(self.state.store.as_ref(), wells).await {
            Ok(zones) => zones,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "field ingest: the wells' registry zones could not be read; naive local times of this batch are refused"
                );
                Vec::new()
            }
        }
    }

    /// Appends `readings` and returns one outcome per reading once they are committed. A
    /// store error is retried with backoff (the broker keeps the messages meanwhile, since
    /// nothing is acknowledged) until it commits or `stopping` turns true.
    pub async fn commit(
        &self,
        readings: Vec<Reading>,
        stopping: &mut watch::Receiver<bool>,
    ) -> Result<Vec<ReadingOutcome>, Stopped> {
        if readings.is_empty() {
            return Ok(Vec::new());
        }
        let append = AppendOptions {
            auto_register_wells: self.state.config.auto_register_wells,
        };
        let mut delay = Duration::from_millis(100);
        loop {
            match self.state.store.append(readings.clone(), append).await {
                Ok(outcome) => {
                    let accepted: Vec<Reading> = readings
                        .into_iter()
                        .zip(&outcome.outcomes)
                        .filter(|(_, o)| **o == ReadingOutcome::Accepted)
                        .map(|(r, _)| r)
                        .collect();
                    // Committed: publish live and feed the diagnostics (neither waits).
                    self.state.live.publish_readings(&accepted);
                    self.state.diagnostics.submit(accepted);
                    return Ok(outcome.outcomes);
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_in_ms = delay.as_millis() as u64,
                        "field ingest: the store did not commit; retrying (nothing is acknowledged meanwhile)"
                    );
                    if *stopping.borrow() {
                        return Err(Stopped);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopping.changed() => return Err(Stopped),
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
            }
        }
    }
}

/// The wells of `items`' readings refused for a naive time without a declared zone (see
/// `espwatch_core::ingest::Decoded::wells_lacking_zone`).
pub fn wells_lacking_zone(items: &[Item]) -> Vec<WellId> {
    items
        .iter()
        .filter_map(Item::rejection)
        .filter(|r| r.lacks_zone())
        .filter_map(|r| WellId::parse(r.well_id.as_deref()?).ok())
        .collect()
}

/// One message of a batch after decoding, as each protocol keeps it.
pub trait PreparedMessage {
    /// Its decoded items (`None`: refused or empty, nothing to commit).
    fn items(&self) -> Option<&[Item]>;
    /// Where its valid readings sit in the batch's readings (`first`, `count`), when decoded.
    fn slot(&mut self) -> Option<(&[Item], &mut usize, &mut usize)>;
}

/// The batch's valid readings gathered in message order, each message's slot set to its own.
pub fn gather_readings<P: PreparedMessage>(prepared: &mut [P]) -> Vec<Reading> {
    let mut readings = Vec::new();
    for p in prepared {
        if let Some((items, first, count)) = p.slot() {
            *first = readings.len();
            readings.extend(items.iter().filter_map(|i| i.valid().cloned()));
            *count = readings.len() - *first;
        }
    }
    readings
}

fn lacks_zone(items: &[Item]) -> bool {
    items
        .iter()
        .any(|i| i.rejection().is_some_and(|r| r.lacks_zone()))
}

/// A decoded batch: the messages, each one's [`PreparedMessage`], the valid readings.
pub type DecodedBatch<M, P> = (Vec<M>, Vec<P>, Vec<Reading>);

impl Sink {
    /// The wells' registry zones applied to a decoded batch whose sender declared no zone: the
    /// messages with readings refused for a naive time without one are decoded again by
    /// `redecode` (message, its prepared form to replace, the zones, a scratch buffer), on
    /// the blocking pool when `large`, and the batch's readings gathered again. Unchanged
    /// when no reading lacks a zone or none of their wells has one (only then is the registry
    /// read, or anything decoded twice).
    pub async fn apply_registry_zones<M, P, R>(
        &self,
        (batch, mut prepared, readings): DecodedBatch<M, P>,
        large: bool,
        redecode: R,
    ) -> Result<DecodedBatch<M, P>, Stopped>
    where
        M: Send + 'static,
        P: PreparedMessage + Send + 'static,
        R: Fn(&M, &mut P, &[(WellId, UtcOffset)], &mut Vec<Reading>) + Send + 'static,
    {
        let mut lacking: Vec<WellId> = prepared
            .iter()
            .filter_map(PreparedMessage::items)
            .flat_map(wells_lacking_zone)
            .collect();
        if lacking.is_empty() {
            return Ok((batch, prepared, readings));
        }
        lacking.sort();
        lacking.dedup();
        let zones = self.registry_zones(&lacking).await;
        if zones.is_empty() {
            return Ok((batch, prepared, readings));
        }
        let work = move || {
            let mut scratch = Vec::new();
            for (message, p) in batch.iter().zip(prepared.iter_mut()) {
                if p.items().is_some_and(lacks_zone) {
                    redecode(message, p, &zones, &mut scratch);
                }
            }
            let readings = gather_readings(&mut prepared);
            (batch, prepared, readings)
        };
        if large {
            tokio::task::spawn_blocking(work).await.map_err(|_| Stopped)
        } else {
            Ok(work())
        }
    }
}
