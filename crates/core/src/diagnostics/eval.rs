//! Scoring diagnosed episodes against ground truth (simulator labels), as `espwatch eval` prints.
//!
//! Matching: an event matches a label when both are on the same well, name the same condition,
//! and the event's interval `[start, end]` overlaps `[label.start, label.end + max_delay]`.
//! - recall(c) = labels of c matched by at least one event / labels of c;
//! - precision(c) = events of c matching at least one label of c / events of c;
//! - misclassified(c) = labels of c matched by no event of c but overlapped (same window) by an
//!   event of another diagnosis;
//! - delay = for each matched label, max(0, earliest matching event start − label start);
//! - false alarm = an event (any diagnosis, `anomaly` included) that overlaps no label window of
//!   its well; reported per well-day of observed time outside label windows.
//!
//! [`detail`] adds what an operator needs to trust the list: precision by confidence band (is
//! an event at 0.8 right 80 % of the time?), the confusion table (true condition × reported
//! diagnosis) and false alarms by the normal operation they happened during (an event
//! overlapping `[op.start, op.end + max_delay]` of an operation on its well).

use std::collections::{BTreeMap, BTreeSet};

use crate::condition::{Condition, Onset};
use serde::Serialize;

#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub well_id: String,
    pub start: i64,
    pub end: i64,
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConditionStats {
    pub condition: String,
    pub labels: usize,
    pub detected: usize,
    pub events: usize,
    pub correct_events: usize,
    pub misclassified: usize,
    /// (other diagnosis, count) for misclassified labels.
    pub confused_with: BTreeMap<String, usize>,
    pub mean_delay_s: Option<f64>,
}

impl ConditionStats {
    pub fn recall(&self) -> Option<f64> {
        (self.labels > 0).then(|| self.detected as f64 / self.labels as f64)
    }
    pub fn precision(&self) -> Option<f64> {
        (self.events > 0).then(|| self.correct_events as f64 / self.events as f64)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalReport {
    pub per_condition: Vec<ConditionStats>,
    pub false_alarms: usize,
    /// Observed well-days outside label windows.
    pub unlabelled_well_days: f64,
    pub anomaly_events: usize,
}

impl EvalReport {
    pub fn false_alarms_per_well_day(&self) -> f64 {
        self.false_alarms as f64 / self.unlabelled_well_days.max(1e-9)
    }
    /// Mean recall over conditions that have labels.
    pub fn macro_recall(&self) -> f64 {
        mean(self.per_condition.iter().filter_map(|c| c.recall()))
    }
    /// Mean precision over conditions that have labels (a condition with labels but no events
    /// counts as precision 0 only if it raised events elsewhere; with none at all it is left
    /// out, its recall already says it).
    pub fn macro_precision(&self) -> f64 {
        mean(
            self.per_condition
                .iter()
                .filter(|c| c.labels > 0 || c.events > 0)
                .filter_map(|c| c.precision()),
        )
    }
    /// Mean detection delay over abrupt conditions' detected labels, seconds.
    pub fn abrupt_mean_delay_s(&self) -> Option<f64> {
        let v: Vec<f64> = self
            .per_condition
            .iter()
            .filter(|c| {
                Condition::from_name(&c.condition).is_some_and(|c| c.onset() == Onset::Abrupt)
            })
            .filter_map(|c| c.mean_delay_s.map(|d| (d, c.detected)))
            .flat_map(|(d, n)| std::iter::repeat_n(d, n))
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    }
}

fn mean(it: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = it.collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn overlaps(a0: i64, a1: i64, b0: i64, b1: i64) -> bool {
    a0 <= b1 && a1 >= b0
}

/// Scores `events` against `labels`. `coverage` gives each well's observed span (first and last
/// reading); wells missing from it are assumed observed over the span of their labels and
/// events.
pub fn evaluate(
    labels: &[Interval],
    events: &[Interval],
    max_delay_micros: i64,
    coverage: &BTreeMap<String, (i64, i64)>,
) -> EvalReport {
    let window = |l: &Interval| (l.start, l.end + max_delay_micros);
    let mut names: BTreeSet<String> = Condition::ALL.iter().map(|c| c.name().to_owned()).collect();
    names.extend(labels.iter().map(|l| l.name.clone()));
    let mut report = EvalReport::default();
    for name in &names {
        let ls: Vec<&Interval> = labels.iter().filter(|l| &l.name == name).collect();
        let es: Vec<&Interval> = events.iter().filter(|e| &e.name == name).collect();
        let mut st = ConditionStats {
            condition: name.clone(),
            labels: ls.len(),
            events: es.len(),
            ..ConditionStats::default()
        };
        let mut delays = Vec::new();
        for l in &ls {
            let (w0, w1) = window(l);
            let first = es
                .iter()
                .filter(|e| e.well_id == l.well_id && overlaps(e.start, e.end, w0, w1))
                .map(|e| e.start)
                .min();
            match first {
                Some(start) => {
                    st.detected += 1;
                    delays.push(((start - l.start).max(0)) as f64 / 1e6);
                }
                None => {
                    let other = events.iter().find(|e| {
                        e.well_id == l.well_id
                            && e.name != *name
                            && overlaps(e.start, e.end, w0, w1)
                    });
                    if let Some(o) = other {
                        st.misclassified += 1;
                        *st.confused_with.entry(o.name.clone()).or_default() += 1;
                    }
                }
            }
        }
        st.correct_events = es
            .iter()
            .filter(|e| {
                ls.iter().any(|l| {
                    let (w0, w1) = window(l);
                    l.well_id == e.well_id && overlaps(e.start, e.end, w0, w1)
                })
            })
            .count();
        st.mean_delay_s =
            (!delays.is_empty()).then(|| delays.iter().sum::<f64>() / delays.len() as f64);
        if st.labels > 0 || st.events > 0 {
            report.per_condition.push(st);
        }
    }
    report.anomaly_events = events.iter().filter(|e| e.name == "anomaly").count();
    report.false_alarms = events
        .iter()
        .filter(|e| {
            !labels.iter().any(|l| {
                let (w0, w1) = window(l);
                l.well_id == e.well_id && overlaps(e.start, e.end, w0, w1)
            })
        })
        .count();
    // Observed time outside label windows, per well.
    let mut spans: BTreeMap<String, (i64, i64)> = coverage.clone();
    for i in labels.iter().chain(events) {
        let s = spans.entry(i.well_id.clone()).or_insert((i.start, i.end));
        if !coverage.contains_key(&i.well_id) {
            s.0 = s.0.min(i.start);
            s.1 = s.1.max(i.end);
        }
    }
    let mut micros = 0i64;
    for (well, (a, b)) in &spans {
        let mut windows: Vec<(i64, i64)> = labels
            .iter()
            .filter(|l| &l.well_id == well)
            .map(|l| {
                let (w0, w1) = window(l);
                (w0.max(*a), w1.min(*b))
            })
            .filter(|(x, y)| y > x)
            .collect();
        windows.sort();
        let mut covered = 0i64;
        let mut cursor = *a;
        for (x, y) in windows {
            let x = x.max(cursor);
            if y > x {
                covered += y - x;
                cursor = y;
            }
        }
        micros += (b - a - covered).max(0);
    }
    report.unlabelled_well_days = micros as f64 / 86_400e6;
    report
}

/// Confidence bands of [`EvalDetail::bands`]: `[lo, hi)`, the last one closed.
pub const CONFIDENCE_BANDS: [(f64, f64); 6] = [
    (0.0, 0.5),
    (0.5, 0.6),
    (0.6, 0.7),
    (0.7, 0.8),
    (0.8, 0.9),
    (0.9, 1.0),
];

/// Row of the confusion table for events that overlap no label.
pub const NO_CONDITION: &str = "(none)";
/// Column of the confusion table for labels no event overlapped.
pub const MISSED: &str = "(missed)";
/// False alarms that overlap no normal operation.
pub const STEADY_RUNNING: &str = "steady_running";

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct BandStats {
    pub lo: f64,
    pub hi: f64,
    pub events: usize,
    pub correct: usize,
}

impl BandStats {
    pub fn precision(&self) -> Option<f64> {
        (self.events > 0).then(|| self.correct as f64 / self.events as f64)
    }
}

#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct EvalDetail {
    pub bands: Vec<BandStats>,
    /// Events at confidence ≥ 0.8 and how many were right.
    pub high_confidence: BandStats,
    /// true condition (or [`NO_CONDITION`]) → reported diagnosis (or [`MISSED`]) → count. A label
    /// counts once per distinct diagnosis overlapping it; an unlabelled event once.
    pub confusion: BTreeMap<String, BTreeMap<String, usize>>,
    /// Operation kind (or [`STEADY_RUNNING`]) → false alarms during it.
    pub false_alarms_by_operation: BTreeMap<String, usize>,
    /// Operation kind → operations in the data.
    pub operations: BTreeMap<String, usize>,
    /// Median detection delay over detected abrupt-condition labels, seconds.
    pub abrupt_median_delay_s: Option<f64>,
}

/// Confidence bands, confusion table and false alarms by operation (see the module doc).
/// `confidences[i]` is the confidence of `events[i]`; `operations` name their kind in `name`.
pub fn detail(
    labels: &[Interval],
    events: &[Interval],
    confidences: &[f64],
    operations: &[Interval],
    max_delay_micros: i64,
) -> EvalDetail {
    let window = |l: &Interval| (l.start, l.end + max_delay_micros);
    let mut out = EvalDetail {
        bands: CONFIDENCE_BANDS
            .iter()
            .map(|&(lo, hi)| BandStats {
                lo,
                hi,
                ..BandStats::default()
            })
            .collect(),
        high_confidence: BandStats {
            lo: 0.8,
            hi: 1.0,
            ..BandStats::default()
        },
        ..EvalDetail::default()
    };
    let mut by_well: BTreeMap<&str, Vec<&Interval>> = BTreeMap::new();
    for l in labels {
        by_well.entry(l.well_id.as_str()).or_default().push(l);
    }
    let mut ops_by_well: BTreeMap<&str, Vec<&Interval>> = BTreeMap::new();
    for o in operations {
        ops_by_well.entry(o.well_id.as_str()).or_default().push(o);
        *out.operations.entry(o.name.clone()).or_default() += 1;
    }
    for (i, e) in events.iter().enumerate() {
        let ls = by_well.get(e.well_id.as_str()).map_or(&[][..], |v| v);
        let overlapping: Vec<&&Interval> = ls
            .iter()
            .filter(|l| {
                let (w0, w1) = window(l);
                overlaps(e.start, e.end, w0, w1)
            })
            .collect();
        let correct = overlapping.iter().any(|l| l.name == e.name);
        let conf = confidences.get(i).copied().unwrap_or(0.0);
        let k = CONFIDENCE_BANDS
            .iter()
            .position(|&(lo, hi)| conf >= lo && conf < hi)
            .unwrap_or(CONFIDENCE_BANDS.len() - 1);
        out.bands[k].events += 1;
        out.bands[k].correct += correct as usize;
        if conf >= 0.8 {
            out.high_confidence.events += 1;
            out.high_confidence.correct += correct as usize;
        }
        if overlapping.is_empty() {
            *out.confusion
                .entry(NO_CONDITION.to_owned())
                .or_default()
                .entry(e.name.clone())
                .or_default() += 1;
            let op = ops_by_well.get(e.well_id.as_str()).and_then(|ops| {
                ops.iter()
                    .find(|o| overlaps(e.start, e.end, o.start, o.end + max_delay_micros))
            });
            *out.false_alarms_by_operation
                .entry(op.map_or(STEADY_RUNNING.to_owned(), |o| o.name.clone()))
                .or_default() += 1;
        }
    }
    let mut abrupt_delays = Vec::new();
    for l in labels {
        let (w0, w1) = window(l);
        let reported: BTreeSet<&str> = events
            .iter()
            .filter(|e| e.well_id == l.well_id && overlaps(e.start, e.end, w0, w1))
            .map(|e| e.name.as_str())
            .collect();
        let row = out.confusion.entry(l.name.clone()).or_default();
        if reported.is_empty() {
            *row.entry(MISSED.to_owned()).or_default() += 1;
        }
        for r in reported {
            *row.entry(r.to_owned()).or_default() += 1;
        }
        let abrupt = Condition::from_name(&l.name).is_some_and(|c| c.onset() == Onset::Abrupt);
        if abrupt
            && let Some(first) = events
                .iter()
                .filter(|e| {
                    e.well_id == l.well_id && e.name == l.name && overlaps(e.start, e.end, w0, w1)
                })
                .map(|e| e.start)
                .min()
        {
            abrupt_delays.push((first - l.start).max(0) as f64 / 1e6);
        }
    }
    abrupt_delays.sort_by(f64::total_cmp);
    out.abrupt_median_delay_s = (!abrupt_delays.is_empty()).then(|| {
        let n = abrupt_delays.len();
        if n % 2 == 1 {
            abrupt_delays[n / 2]
        } else {
            0.5 * (abrupt_delays[n / 2 - 1] + abrupt_delays[n / 2])
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(well: &str, s: i64, e: i64, name: &str) -> Interval {
        Interval {
            well_id: well.into(),
            start: s * 1_000_000,
            end: e * 1_000_000,
            name: name.into(),
        }
    }

    #[test]
    fn matching_recall_precision_delay_and_false_alarms() {
        let labels = vec![
            iv("A", 1000, 2000, "gas_lock"),
            iv("B", 1000, 2000, "broken_shaft"),
            iv("C", 1000, 2000, "pump_off"),
        ];
        let events = vec![
            iv("A", 1300, 2500, "gas_lock"),    // matches, delay 300 s
            iv("A", 2100, 2200, "gas_lock"),    // matches (within max delay)
            iv("B", 1100, 1900, "gas_lock"),    // misclassified broken shaft
            iv("C", 50_000, 50_100, "anomaly"), // false alarm
        ];
        let mut cov = BTreeMap::new();
        for w in ["A", "B", "C"] {
            cov.insert(w.to_owned(), (0, 86_400_000_000));
        }
        let r = evaluate(&labels, &events, 600_000_000, &cov);
        let gl = r
            .per_condition
            .iter()
            .find(|c| c.condition == "gas_lock")
            .unwrap();
        assert_eq!(
            (gl.labels, gl.detected, gl.events, gl.correct_events),
            (1, 1, 3, 2)
        );
        assert_eq!(gl.mean_delay_s, Some(300.0));
        let bs = r
            .per_condition
            .iter()
            .find(|c| c.condition == "broken_shaft")
            .unwrap();
        assert_eq!((bs.detected, bs.misclassified), (0, 1));
        assert_eq!(bs.confused_with.get("gas_lock"), Some(&1));
        assert_eq!(r.false_alarms, 1);
        assert_eq!(r.anomaly_events, 1);
        let expected_days = 3.0 - 3.0 * 1600.0 / 86_400.0;
        assert!((r.unlabelled_well_days - expected_days).abs() < 1e-9);
    }

    #[test]
    fn detail_bands_confusion_and_false_alarms_by_operation() {
        let labels = vec![
            iv("A", 1000, 2000, "gas_lock"),
            iv("B", 1000, 2000, "pump_wear"),
            iv("C", 1000, 2000, "closed_valve"),
        ];
        let events = vec![
            iv("A", 1300, 2500, "gas_lock"),             // right, 0.9
            iv("B", 1100, 1900, "scale_plugging"),       // wrong diagnosis, 0.85
            iv("B", 1500, 1900, "pump_wear"),            // right, 0.55
            iv("C", 50_000, 50_100, "gas_interference"), // during a well test, 0.7
            iv("C", 90_000, 90_100, "anomaly"),          // steady running, 0.3
        ];
        let conf = [0.9, 0.85, 0.55, 0.7, 0.3];
        let ops = vec![
            iv("C", 49_000, 49_900, "well_test"),
            iv("A", 70_000, 70_100, "sand_slug"),
        ];
        let d = detail(&labels, &events, &conf, &ops, 600_000_000);
        let band = |lo: f64| d.bands.iter().find(|b| b.lo == lo).unwrap().clone();
        assert_eq!((band(0.8).events, band(0.8).correct), (1, 0));
        assert_eq!((band(0.9).events, band(0.9).correct), (1, 1));
        assert_eq!((band(0.5).events, band(0.5).correct), (1, 1));
        assert_eq!((band(0.0).events, band(0.0).correct), (1, 0));
        assert_eq!(
            (d.high_confidence.events, d.high_confidence.correct),
            (2, 1)
        );
        assert_eq!(d.confusion["gas_lock"]["gas_lock"], 1);
        assert_eq!(d.confusion["pump_wear"]["pump_wear"], 1);
        assert_eq!(d.confusion["pump_wear"]["scale_plugging"], 1);
        assert_eq!(d.confusion["closed_valve"][MISSED], 1);
        assert_eq!(d.confusion[NO_CONDITION]["gas_interference"], 1);
        assert_eq!(d.confusion[NO_CONDITION]["anomaly"], 1);
        // The well-test alarm starts within max_delay (600 s) of the test's end.
        assert_eq!(d.false_alarms_by_operation["well_test"], 1);
        assert_eq!(d.false_alarms_by_operation[STEADY_RUNNING], 1);
        assert_eq!(d.operations["sand_slug"], 1);
        assert_eq!(d.abrupt_median_delay_s, Some(300.0));
    }
}

/// Pointwise scores of the per-reading anomaly flag: each scored reading is faulty when it
/// falls inside a label window of its well, normal otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct PointwiseReport {
    pub normal: u64,
    pub normal_flagged: u64,
    pub faulty: u64,
    pub faulty_flagged: u64,
}

impl PointwiseReport {
    /// Share of normal readings flagged.
    pub fn false_alarm_rate(&self) -> f64 {
        self.normal_flagged as f64 / (self.normal as f64).max(1.0)
    }
    pub fn recall(&self) -> f64 {
        self.faulty_flagged as f64 / (self.faulty as f64).max(1.0)
    }
    pub fn precision(&self) -> f64 {
        let flagged = self.faulty_flagged + self.normal_flagged;
        self.faulty_flagged as f64 / (flagged as f64).max(1.0)
    }
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        }
    }
}

/// Label windows of each well, for pointwise lookups.
pub struct LabelIndex {
    by_well: BTreeMap<String, Vec<(i64, i64)>>,
}

impl LabelIndex {
    pub fn new(labels: &[Interval]) -> LabelIndex {
        let mut by_well: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
        for l in labels {
            by_well
                .entry(l.well_id.clone())
                .or_default()
                .push((l.start, l.end));
        }
        for v in by_well.values_mut() {
            v.sort_unstable();
        }
        LabelIndex { by_well }
    }

    pub fn inside(&self, well: &str, ts: i64) -> bool {
        self.by_well
            .get(well)
            .is_some_and(|v| v.iter().any(|&(s, e)| s <= ts && ts <= e))
    }

    /// Adds one scored reading to the report.
    pub fn score(&self, report: &mut PointwiseReport, well: &str, ts: i64, flagged: bool) {
        if self.inside(well, ts) {
            report.faulty += 1;
            report.faulty_flagged += flagged as u64;
        } else {
            report.normal += 1;
            report.normal_flagged += flagged as u64;
        }
    }
}

#[cfg(test)]
mod pointwise_tests {
    use super::*;

    #[test]
    fn pointwise_scores_count_flags_inside_and_outside_labels() {
        let labels = vec![Interval {
            well_id: "W".into(),
            start: 100,
            end: 200,
            name: "tubing_leak".into(),
        }];
        let index = LabelIndex::new(&labels);
        let mut r = PointwiseReport::default();
        for (ts, flag) in [
            (50, false),
            (60, true),
            (150, true),
            (160, false),
            (300, false),
        ] {
            index.score(&mut r, "W", ts, flag);
        }
        index.score(&mut r, "other", 150, true);
        assert_eq!(
            (r.normal, r.normal_flagged, r.faulty, r.faulty_flagged),
            (4, 2, 2, 1)
        );
        assert!((r.recall() - 0.5).abs() < 1e-12);
        assert!((r.precision() - 1.0 / 3.0).abs() < 1e-12);
        assert!((r.false_alarm_rate() - 0.5).abs() < 1e-12);
        assert!((r.f1() - 0.4).abs() < 1e-12);
    }
}
