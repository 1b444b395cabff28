//! Turns per-reading findings into episodes with hysteresis: an episode opens once its evidence
//! has persisted (`raise_secs` over at least `raise_readings` readings; it starts at the first
//! piece of evidence) and closes after `clear_secs` of healthy running without evidence (it
//! ends at the last piece). While the pump is stopped an open episode is held: gas lock, pump-off
//! and broken shafts cycle through trips and restarts. One process condition is open at a time;
//! power fluctuations and sensor faults are independent of it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::telemetry::Timestamp;

use super::Diagnosis;
use super::thresholds::Thresholds;

/// A diagnosed episode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Episode {
    pub diagnosis: Diagnosis,
    pub start: Timestamp,
    /// Last reading with evidence; `None` while the episode is open.
    pub end: Option<Timestamp>,
    /// Highest confidence seen during the episode.
    pub confidence: f64,
}

#[derive(Clone, Debug, Default)]
struct Track {
    /// First and last evidence, and readings with evidence, before the episode opens.
    pending: Option<(i64, i64, u32)>,
    open: Option<(i64, f64)>,
    last_evidence: i64,
}

/// What changed with one reading.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Transitions {
    pub opened: Vec<Episode>,
    pub closed: Vec<Episode>,
}

#[derive(Clone, Debug, Default)]
pub struct EpisodeTracker {
    tracks: BTreeMap<Diagnosis, Track>,
    /// The previous reading's time: evidence on consecutive readings is persistent evidence
    /// however far apart the readings are (a SCADA poll every 15 minutes).
    last_step: Option<i64>,
}

impl EpisodeTracker {
    /// Open episodes.
    pub fn open(&self) -> Vec<Episode> {
        self.tracks
            .iter()
            .filter_map(|(d, t)| {
                t.open.map(|(start, conf)| Episode {
                    diagnosis: *d,
                    start: Timestamp(start),
                    end: None,
                    confidence: conf,
                })
            })
            .collect()
    }

    /// Whether an open episode (its diagnosis and start) satisfies `pred`; the per-reading
    /// question, answered without building the list.
    pub fn any_open(&self, mut pred: impl FnMut(Diagnosis, i64) -> bool) -> bool {
        self.tracks
            .iter()
            .any(|(d, t)| t.open.is_some_and(|(start, _)| pred(*d, start)))
    }

    /// The evidence gathered towards opening `d` while it is not open yet: the time of the
    /// first piece and the readings with evidence.
    pub fn pending(&self, d: Diagnosis) -> Option<(i64, u32)> {
        self.tracks
            .get(&d)
            .and_then(|t| t.pending.map(|(first, _, n)| (first, n)))
    }

    /// Feeds the findings of one reading. `confirmed` findings open at once (a protection trip
    /// backs them). `healthy_running` says whether absence of evidence
    /// at this reading means anything (the pump runs and has settled).
    pub fn step(
        &mut self,
        ts: i64,
        findings: &[(Diagnosis, f64)],
        confirmed: &[Diagnosis],
        healthy_running: bool,
        th: &Thresholds,
    ) -> Transitions {
        let mut out = Transitions::default();
        let secs = |s: f64| (s * 1e6) as i64;
        // Process conditions are exclusive: which one is open now?
        let open_process = self
            .tracks
            .iter()
            .find(|(d, t)| d.is_process() && t.open.is_some())
            .map(|(d, _)| *d);
        for &(d, conf) in findings {
            let track = self.tracks.entry(d).or_default();
            if let Some((_, c)) = &mut track.open {
                track.last_evidence = ts;
                *c = c.max(conf);
                continue;
            }
            // The alarm policy: below its severity's minimum confidence, evidence neither
            // opens an episode nor counts towards one (it keeps an open one alive, above).
            let policy = th.alarm_policy_for(d);
            if conf < policy.min_confidence && !confirmed.contains(&d) {
                continue;
            }
            track.last_evidence = ts;
            // Evidence interrupted for longer than its severity's persistence starts afresh.
            let gap = secs(th.alarm_policy(d.severity()).persist_secs.max(300.0));
            let (first, _, n) = match track.pending {
                Some((first, last, n)) if ts - last <= gap || Some(last) == self.last_step => {
                    (first, ts, n + 1)
                }
                _ => (ts, ts, 1),
            };
            track.pending = Some((first, ts, n));
            let persisted = n >= th.raise_readings && ts - first >= secs(policy.persist_secs);
            if !persisted && !confirmed.contains(&d) {
                continue;
            }
            if d.is_process()
                && let Some(other) = open_process
                && other != d
            {
                // Another process condition holds the well. Take over only once this
                // evidence has been uncontested for `switch_secs`.
                // A loss of lift the protection relay confirmed (a broken shaft on a worn pump)
                // is news at once: the slow loss held before does not contest it.
                let other_last = self.tracks[&other].last_evidence;
                let abrupt_over_gradual = confirmed.contains(&d) && other.is_gradual();
                // A loss of lift a trip confirmed needs no time to establish itself: once the other
                // condition has been silent for `switch_secs`, a loss of lift that trips the
                // pump run after run (each run shorter than `switch_secs`) is the news, if it is
                // told at least as surely as the condition it replaces (a lock and a parted
                // shaft not yet told apart do not take turns).
                let other_conf = self.tracks[&other].open.map_or(0.0, |(_, c)| c);
                let established = (confirmed.contains(&d) && !d.is_thermal() && conf >= other_conf)
                    || ts - first >= secs(th.switch_secs);
                if !abrupt_over_gradual && (ts - other_last < secs(th.switch_secs) || !established)
                {
                    continue;
                }
                let t = self.tracks.get_mut(&other).expect("open track");
                if let Some((start, c)) = t.open.take() {
                    out.closed.push(Episode {
                        diagnosis: other,
                        start: Timestamp(start),
                        end: Some(Timestamp(t.last_evidence)),
                        confidence: c,
                    });
                }
            }
            let track = self.tracks.get_mut(&d).expect("track");
            track.pending = None;
            track.open = Some((first, conf));
            out.opened.push(Episode {
                diagnosis: d,
                start: Timestamp(first),
                end: None,
                confidence: conf,
            });
        }
        for (d, t) in self.tracks.iter_mut() {
            if findings.iter().any(|(f, _)| f == d) {
                continue;
            }
            if let Some((_, last, _)) = t.pending
                && ts - last > secs(th.alarm_policy(d.severity()).persist_secs.max(300.0))
            {
                t.pending = None;
            }
            if let Some((start, c)) = t.open {
                let quiet = ts - t.last_evidence;
                let clear_secs = if d.is_gradual() {
                    th.clear_secs_gradual
                } else {
                    th.clear_secs
                };
                if (healthy_running && quiet >= secs(clear_secs)) || quiet >= secs(th.hold_off_secs)
                {
                    t.open = None;
                    out.closed.push(Episode {
                        diagnosis: *d,
                        start: Timestamp(start),
                        end: Some(Timestamp(t.last_evidence)),
                        confidence: c,
                    });
                }
            }
        }
        self.last_step = Some(ts);
        out
    }

    /// Refines the diagnosis of an open episode (e.g. wear turning out to be scale as the
    /// evidence develops): the episode keeps its start and becomes `to`.
    pub fn retag(&mut self, from: Diagnosis, to: Diagnosis) {
        let Some(open) = self.tracks.get_mut(&from).and_then(|t| t.open.take()) else {
            return;
        };
        let last = self.tracks[&from].last_evidence;
        let t = self.tracks.entry(to).or_default();
        // Already open as `to` (refined before, and the old diagnosis came back since): one
        // episode, from the earlier start.
        let open = match t.open {
            Some((start, c)) => (start.min(open.0), c.max(open.1)),
            None => open,
        };
        t.open = Some(open);
        t.pending = None;
        t.last_evidence = t.last_evidence.max(last);
    }

    /// Closes every open episode at its last evidence (end of data).
    pub fn finish(&mut self) -> Vec<Episode> {
        let mut out = Vec::new();
        for (d, t) in self.tracks.iter_mut() {
            if let Some((start, c)) = t.open.take() {
                out.push(Episode {
                    diagnosis: *d,
                    start: Timestamp(start),
                    end: Some(Timestamp(t.last_evidence)),
                    confidence: c,
                });
            }
        }
        out
    }
}
