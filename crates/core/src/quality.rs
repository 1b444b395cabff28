//! Data quality of a well's telemetry, per time window: can the operator trust these gauges?
//!
//! Judged on the stored data itself (no clock, no I/O), in three parts that multiply into one
//! score out of 100 (the old platform's target: above 95):
//!
//! - **Completeness**: readings received against the readings the well should have sent in
//!   the window, at its expected interval: the registry's `sample_interval_s` when declared,
//!   otherwise the median spacing of its readings over the whole range asked for.
//! - **Validity**: values beyond what the installed equipment can produce, from the registry
//!   ([`InstrumentLimits`]): a motor current above twice the nameplate, a winding 30 °C above its
//!   limit, a drive frequency 1.5× the pump's base frequency, a pressure below vacuum. (Values
//!   outside the physically possible range never get this far: ingestion refuses them.)
//! - **Consistency**: values of a *stuck* gauge (the same non-zero value for at least
//!   [`STUCK_MIN_READINGS`] readings while other channels of the well keep moving) and *spikes*
//!   (one reading far from both neighbours, which agree with each other).
//!
//! `score = 100 × completeness × (1 − out_of_range / values) × (1 − (stuck + spikes) / values)`,
//! where `values` counts the present values of every channel in the window. A window without
//! readings scores 0. Each channel is reported with its counts and whether it can be
//! trusted ([`ChannelQuality::trusted`]): present, not stuck, no value out of range and at most
//! [`MAX_TRUSTED_SPIKE_SHARE`] of its values spikes.
//!
//! Runs and spikes are found over the whole range and counted in the window that holds the
//! value, so a gauge stuck across a window boundary is stuck in both windows.

use serde::Serialize;

use crate::series::{Point, TimeRange};
use crate::telemetry::{FIELD_COUNT, Field, Timestamp};
use crate::well::WellMeta;

/// The old platform's data-quality target: a window at or above it is good enough to act on.
pub const QUALITY_TARGET: f64 = 95.0;
/// Shortest run of one repeated value that counts as a stuck gauge.
pub const STUCK_MIN_READINGS: usize = 20;
/// A channel with more than this share of its values spikes is not trusted.
pub const MAX_TRUSTED_SPIKE_SHARE: f64 = 0.01;
/// A spike departs from both neighbours by more than this many robust step deviations.
const SPIKE_STEPS: f64 = 8.0;
/// ... and by more than this share of the channel's typical magnitude (quantised gauges have a
/// step deviation of zero).
const SPIKE_MIN_RELATIVE: f64 = 0.05;

/// Channels that may legitimately hold one value for long (a drive's set point, lab values
/// entered by hand) are never called stuck.
fn may_hold_still(field: Field) -> bool {
    matches!(
        field,
        Field::FrequencyHz | Field::GorScfBbl | Field::WaterCutPct
    )
}

/// Upper and lower limits per channel of what this installation can produce; `None` where the
/// registry says nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstrumentLimits {
    limits: [(Option<f64>, Option<f64>); FIELD_COUNT],
}

impl InstrumentLimits {
    /// Absolute vacuum in gauge pressure: no pressure gauge reads below it.
    pub const VACUUM_PSIG: f64 = -14.7;

    /// Limits from the registry entry (nameplates and pump); pressures are bounded by vacuum
    /// for every well.
    pub fn from_meta(meta: Option<&WellMeta>) -> InstrumentLimits {
        let mut l = InstrumentLimits::default();
        for f in [
            Field::IntakePressurePsi,
            Field::DischargePressurePsi,
            Field::TubingPressurePsi,
        ] {
            l.limits[f.index()].0 = Some(Self::VACUUM_PSIG);
        }
        let Some(meta) = meta else {
            return l;
        };
        if let Some(m) = &meta.motor {
            l.limits[Field::MotorCurrentA.index()].1 = m.rated_current_a.map(|a| 2.0 * a);
            l.limits[Field::MotorVoltageV.index()].1 = m.rated_voltage_v.map(|v| 1.5 * v);
            l.limits[Field::MotorTempC.index()].1 = m.max_winding_temp_c.map(|t| t + 30.0);
        }
        if let Some(p) = &meta.pump {
            l.limits[Field::FrequencyHz.index()].1 = p.base_frequency_hz.map(|f| 1.5 * f);
        }
        l
    }

    /// The `(min, max)` limits of one channel.
    pub fn get(&self, field: Field) -> (Option<f64>, Option<f64>) {
        self.limits[field.index()]
    }

    fn outside(&self, field: Field, v: f64) -> bool {
        let (lo, hi) = self.limits[field.index()];
        lo.is_some_and(|lo| v < lo) || hi.is_some_and(|hi| v > hi)
    }
}

/// What to judge against.
#[derive(Clone, Debug, PartialEq)]
pub struct QualityOptions {
    /// The range judged, split into windows of `window_micros` from `range.from`.
    pub range: TimeRange,
    pub window_micros: i64,
    /// The registry's expected reporting interval, when declared.
    pub declared_interval_micros: Option<i64>,
    pub limits: InstrumentLimits,
}

/// Where the expected interval came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum IntervalSource {
    /// The registry's `sample_interval_s`.
    Registry,
    /// The median spacing of the readings in the range.
    Inferred,
    /// Fewer than two readings and nothing declared: completeness is judged as 1 for any window
    /// with a reading.
    Unknown,
}

/// One channel in one window (or over the whole range).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChannelQuality {
    /// Canonical channel name, e.g. `intake_pressure_psi`.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub field: Field,
    /// Readings of the window carrying this channel.
    pub present: u64,
    pub out_of_range: u64,
    /// Values inside a stuck run.
    pub stuck: u64,
    pub spikes: u64,
    /// Present, not stuck, nothing out of range, spikes within [`MAX_TRUSTED_SPIKE_SHARE`].
    pub trusted: bool,
    /// Why not trusted: `stuck`, `spikes`, `out_of_range`.
    pub issues: Vec<&'static str>,
}

/// The quality of one window (or of the whole range).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowQuality {
    /// RFC 3339, inclusive.
    #[serde(serialize_with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub from: Timestamp,
    /// RFC 3339, exclusive.
    #[serde(serialize_with = "rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub to: Timestamp,
    pub readings: u64,
    /// Readings the expected interval asks for (`None` when the interval is unknown).
    pub expected: Option<u64>,
    /// `readings / expected`, at most 1.
    pub completeness: f64,
    /// Share of present values within the installation's limits.
    pub validity: f64,
    /// Share of present values neither stuck nor spikes.
    pub consistency: f64,
    /// 0–100; see the module documentation.
    pub score: f64,
    pub meets_target: bool,
    /// Channels the well reports (present somewhere in the range), in storage order.
    pub channels: Vec<ChannelQuality>,
}

/// The report for a range: the interval judged against, the whole range, and each window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QualityReport {
    /// The expected interval between readings, seconds.
    #[serde(rename = "interval_s", serialize_with = "micros_as_secs")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
    pub interval_micros: Option<i64>,
    pub interval_source: IntervalSource,
    pub overall: WindowQuality,
    pub windows: Vec<WindowQuality>,
}

#[derive(Copy, Clone, Default)]
struct Counts {
    readings: u64,
    present: [u64; FIELD_COUNT],
    out_of_range: [u64; FIELD_COUNT],
    stuck: [u64; FIELD_COUNT],
    spikes: [u64; FIELD_COUNT],
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.readings += other.readings;
        for i in 0..FIELD_COUNT {
            self.present[i] += other.present[i];
            self.out_of_range[i] += other.out_of_range[i];
            self.stuck[i] += other.stuck[i];
            self.spikes[i] += other.spikes[i];
        }
    }
}

/// Judges `points` (one well, ascending by time, as the store returns them) over
/// `opts.range`. Points outside the range are ignored. The caller bounds the number of
/// windows; a zero or negative window is treated as the whole range.
pub fn assess(points: &[Point], opts: &QualityOptions) -> QualityReport {
    let range = opts.range;
    let points: Vec<&Point> = points
        .iter()
        .filter(|(ts, _)| *ts >= range.from && *ts < range.to)
        .collect();
    let (interval, source) = match opts.declared_interval_micros.filter(|i| *i > 0) {
        Some(i) => (Some(i), IntervalSource::Registry),
        None => match median_spacing(&points) {
            Some(i) => (Some(i), IntervalSource::Inferred),
            None => (None, IntervalSource::Unknown),
        },
    };
    let flags = channel_flags(&points, &opts.limits);
    let span = range.to.0 - range.from.0;
    let window = if opts.window_micros > 0 {
        opts.window_micros.min(span.max(1))
    } else {
        span.max(1)
    };
    let n_windows = ((span + window - 1) / window).max(1) as usize;
    let mut counts = vec![Counts::default(); n_windows];
    for (i, (ts, m)) in points.iter().enumerate() {
        let w = (((ts.0 - range.from.0) / window) as usize).min(n_windows - 1);
        let c = &mut counts[w];
        c.readings += 1;
        for (field, _) in m.iter() {
            let k = field.index();
            c.present[k] += 1;
            let f = flags[i][k];
            c.out_of_range[k] += u64::from(f & OUT_OF_RANGE != 0);
            c.stuck[k] += u64::from(f & STUCK != 0);
            c.spikes[k] += u64::from(f & SPIKE != 0);
        }
    }
    let mut total = Counts::default();
    for c in &counts {
        total.add(c);
    }
    let reported: Vec<Field> = Field::ALL
        .into_iter()
        .filter(|f| total.present[f.index()] > 0)
        .collect();
    let windows = counts
        .iter()
        .enumerate()
        .map(|(w, c)| {
            let from = Timestamp(range.from.0 + w as i64 * window);
            let to = Timestamp((from.0 + window).min(range.to.0));
            judge(from, to, c, interval, &reported)
        })
        .collect();
    QualityReport {
        interval_micros: interval,
        interval_source: source,
        overall: judge(range.from, range.to, &total, interval, &reported),
        windows,
    }
}

fn judge(
    from: Timestamp,
    to: Timestamp,
    c: &Counts,
    interval: Option<i64>,
    reported: &[Field],
) -> WindowQuality {
    let expected = interval.map(|i| (((to.0 - from.0) + i - 1) / i).max(1) as u64);
    let completeness = match expected {
        _ if c.readings == 0 => 0.0,
        Some(e) => (c.readings as f64 / e as f64).min(1.0),
        None => 1.0,
    };
    let values: u64 = c.present.iter().sum();
    let bad_range: u64 = c.out_of_range.iter().sum();
    let inconsistent: u64 = (0..FIELD_COUNT).map(|k| c.stuck[k] + c.spikes[k]).sum();
    let share_ok = |bad: u64| {
        if values == 0 {
            1.0
        } else {
            1.0 - (bad.min(values) as f64 / values as f64)
        }
    };
    let validity = share_ok(bad_range);
    let consistency = share_ok(inconsistent);
    let score = round2(100.0 * completeness * validity * consistency);
    let channels = reported
        .iter()
        .map(|&field| {
            let k = field.index();
            let mut issues = Vec::new();
            if c.stuck[k] > 0 {
                issues.push("stuck");
            }
            if c.present[k] > 0
                && c.spikes[k] as f64 > MAX_TRUSTED_SPIKE_SHARE * c.present[k] as f64
            {
                issues.push("spikes");
            }
            if c.out_of_range[k] > 0 {
                issues.push("out_of_range");
            }
            if c.present[k] == 0 {
                issues.push("missing");
            }
            ChannelQuality {
                field,
                present: c.present[k],
                out_of_range: c.out_of_range[k],
                stuck: c.stuck[k],
                spikes: c.spikes[k],
                trusted: issues.is_empty(),
                issues,
            }
        })
        .collect();
    WindowQuality {
        from,
        to,
        readings: c.readings,
        expected,
        completeness: round4(completeness),
        validity: round4(validity),
        consistency: round4(consistency),
        score,
        meets_target: score >= QUALITY_TARGET,
        channels,
    }
}

fn rfc3339<S: serde::Serializer>(ts: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&ts.to_rfc3339())
}

fn micros_as_secs<S: serde::Serializer>(m: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_some(&(*m as f64 / 1e6)),
        None => s.serialize_none(),
    }
}

const OUT_OF_RANGE: u8 = 1;
const STUCK: u8 = 2;
const SPIKE: u8 = 4;

/// Per point and channel: out of range / stuck / spike bits.
fn channel_flags(points: &[&Point], limits: &InstrumentLimits) -> Vec<[u8; FIELD_COUNT]> {
    let n = points.len();
    let mut flags = vec![[0u8; FIELD_COUNT]; n];
    // How many channels changed value at each reading (present before and now, different).
    let mut changed = vec![[false; FIELD_COUNT]; n];
    let mut changed_count = vec![0u32; n];
    for i in 1..n {
        for field in Field::ALL {
            let k = field.index();
            if let (Some(a), Some(b)) = (points[i - 1].1.get(field), points[i].1.get(field))
                && a != b
            {
                changed[i][k] = true;
                changed_count[i] += 1;
            }
        }
    }
    for field in Field::ALL {
        let k = field.index();
        let series: Vec<(usize, f64)> = points
            .iter()
            .enumerate()
            .filter_map(|(i, (_, m))| m.get(field).map(|v| (i, v)))
            .collect();
        for &(i, v) in &series {
            if limits.outside(field, v) {
                flags[i][k] |= OUT_OF_RANGE;
            }
        }
        if !may_hold_still(field) {
            mark_stuck(&series, k, &changed, &changed_count, &mut flags);
        }
        mark_spikes(&series, k, &mut flags);
    }
    flags
}

/// Runs of one repeated non-zero value, at least [`STUCK_MIN_READINGS`] long, during which
/// some other channel changed at half of the steps or more.
fn mark_stuck(
    series: &[(usize, f64)],
    k: usize,
    changed: &[[bool; FIELD_COUNT]],
    changed_count: &[u32],
    flags: &mut [[u8; FIELD_COUNT]],
) {
    let mut start = 0;
    while start < series.len() {
        let value = series[start].1;
        let mut end = start + 1;
        while end < series.len() && series[end].1 == value {
            end += 1;
        }
        let run = &series[start..end];
        if value != 0.0 && run.len() >= STUCK_MIN_READINGS {
            // Steps between consecutive readings inside the run, by reading index.
            let (first, last) = (run[0].0, run[run.len() - 1].0);
            let steps = last - first;
            let alive = (first + 1..=last)
                .filter(|&i| changed_count[i] > u32::from(changed[i][k]))
                .count();
            if steps > 0 && alive * 2 >= steps {
                for &(i, _) in run {
                    flags[i][k] |= STUCK;
                }
            }
        }
        start = end;
    }
}

/// A value far from both of its neighbours in the same direction while the neighbours agree.
fn mark_spikes(series: &[(usize, f64)], k: usize, flags: &mut [[u8; FIELD_COUNT]]) {
    if series.len() < 3 {
        return;
    }
    let mut steps: Vec<f64> = series.windows(2).map(|w| (w[1].1 - w[0].1).abs()).collect();
    let mut magnitudes: Vec<f64> = series.iter().map(|(_, v)| v.abs()).collect();
    let step_dev = 1.4826 * median(&mut steps);
    let typical = median(&mut magnitudes);
    let threshold = (SPIKE_STEPS * step_dev).max(SPIKE_MIN_RELATIVE * typical);
    if threshold <= 0.0 {
        return;
    }
    for w in series.windows(3) {
        let (prev, (i, v), next) = (w[0].1, w[1], w[2].1);
        let (d1, d2) = (v - prev, v - next);
        if d1.signum() == d2.signum()
            && d1.abs().min(d2.abs()) > threshold
            && (next - prev).abs() < d1.abs().min(d2.abs()) / 3.0
        {
            flags[i][k] |= SPIKE;
        }
    }
}

fn median_spacing(points: &[&Point]) -> Option<i64> {
    let mut gaps: Vec<i64> = points
        .windows(2)
        .map(|w| w[1].0.0 - w[0].0.0)
        .filter(|g| *g > 0)
        .collect();
    if gaps.is_empty() {
        return None;
    }
    let mid = gaps.len() / 2;
    let (_, m, _) = gaps.select_nth_unstable(mid);
    Some(*m)
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, f64::total_cmp);
    *m
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Measurements;
    use crate::well::MotorSpec;

    const S: i64 = 1_000_000;

    /// A running well every 10 s: current and pressure move a little, as real gauges do.
    fn healthy(n: usize) -> Vec<Point> {
        (0..n)
            .map(|i| {
                let mut m = Measurements::empty();
                let wiggle = ((i * 7919) % 13) as f64 / 10.0;
                m.set(Field::FrequencyHz, Some(55.0));
                m.set(Field::MotorCurrentA, Some(40.0 + wiggle));
                m.set(Field::IntakePressurePsi, Some(850.0 + 3.0 * wiggle));
                (Timestamp(i as i64 * 10 * S), m)
            })
            .collect()
    }

    fn opts(n_secs: i64, window_secs: i64) -> QualityOptions {
        QualityOptions {
            range: TimeRange {
                from: Timestamp(0),
                to: Timestamp(n_secs * S),
            },
            window_micros: window_secs * S,
            declared_interval_micros: None,
            limits: InstrumentLimits::from_meta(None),
        }
    }

    #[test]
    fn clean_complete_data_scores_100_with_every_gauge_trusted() {
        let r = assess(&healthy(360), &opts(3600, 600));
        assert_eq!(r.interval_micros, Some(10 * S));
        assert_eq!(r.interval_source, IntervalSource::Inferred);
        assert_eq!(r.windows.len(), 6);
        assert_eq!(r.overall.score, 100.0);
        assert!(r.overall.channels.iter().all(|c| c.trusted));
        assert_eq!(r.overall.channels.len(), 3);
    }

    #[test]
    fn a_gap_lowers_completeness_of_its_window_only() {
        let mut points = healthy(360);
        points.retain(|(ts, _)| !(ts.0 >= 600 * S && ts.0 < 900 * S));
        let r = assess(&points, &opts(3600, 600));
        assert_eq!(r.windows[0].score, 100.0);
        assert_eq!(r.windows[1].readings, 30);
        assert_eq!(r.windows[1].expected, Some(60));
        assert_eq!(r.windows[1].completeness, 0.5);
        assert!(!r.windows[1].meets_target);
        assert_eq!(r.windows[2].score, 100.0);
    }

    #[test]
    fn a_declared_interval_wins_over_the_inferred_one() {
        let mut o = opts(3600, 3600);
        o.declared_interval_micros = Some(5 * S);
        let r = assess(&healthy(360), &o);
        assert_eq!(r.interval_source, IntervalSource::Registry);
        assert_eq!(r.overall.completeness, 0.5);
        assert_eq!(r.overall.score, 50.0);
    }

    #[test]
    fn a_stuck_gauge_is_named_and_not_trusted_while_the_others_are() {
        let mut points = healthy(360);
        for p in points.iter_mut().skip(100).take(60) {
            p.1.set(Field::IntakePressurePsi, Some(851.5));
        }
        let r = assess(&points, &opts(3600, 3600));
        let pip = &r.overall.channels[2];
        assert_eq!(pip.field, Field::IntakePressurePsi);
        assert!(!pip.trusted, "{pip:?}");
        assert_eq!(pip.issues, vec!["stuck"]);
        assert!(pip.stuck >= 60);
        assert!(r.overall.channels[1].trusted);
        assert!(r.overall.score < QUALITY_TARGET);
    }

    #[test]
    fn a_stopped_well_is_not_stuck_and_a_constant_set_point_is_not_stuck() {
        let mut points = healthy(360);
        for p in points.iter_mut() {
            // Frequency is the drive's set point: legitimately constant.
            p.1.set(Field::FrequencyHz, Some(55.0));
        }
        for p in points.iter_mut().skip(100).take(100) {
            p.1.set(Field::MotorCurrentA, Some(0.0));
            p.1.set(Field::FrequencyHz, Some(0.0));
        }
        let r = assess(&points, &opts(3600, 3600));
        assert!(r.overall.channels.iter().all(|c| c.trusted), "{r:?}");
    }

    #[test]
    fn a_value_repeated_while_nothing_else_moves_is_not_called_stuck() {
        let mut points = healthy(100);
        for p in points.iter_mut() {
            p.1.set(Field::MotorCurrentA, Some(40.0));
            p.1.set(Field::IntakePressurePsi, Some(850.0));
        }
        let r = assess(&points, &opts(1000, 1000));
        assert!(r.overall.channels.iter().all(|c| c.trusted), "{r:?}");
    }

    #[test]
    fn spikes_are_counted_and_a_real_step_is_not_a_spike() {
        let mut points = healthy(360);
        for i in [50, 150, 250, 300] {
            points[i].1.set(Field::MotorCurrentA, Some(400.0));
        }
        // A real change of operating point: current rises and stays.
        for p in points.iter_mut().skip(200) {
            let v = p.1.get(Field::IntakePressurePsi).unwrap();
            p.1.set(Field::IntakePressurePsi, Some(v - 200.0));
        }
        let r = assess(&points, &opts(3600, 3600));
        let current = &r.overall.channels[1];
        assert_eq!(current.spikes, 4);
        assert_eq!(current.issues, vec!["spikes"]);
        let pip = &r.overall.channels[2];
        assert_eq!(pip.spikes, 0, "{pip:?}");
        assert!(pip.trusted);
    }

    #[test]
    fn values_beyond_the_nameplate_are_out_of_range() {
        let meta = WellMeta {
            motor: Some(MotorSpec {
                rated_hp: None,
                rated_voltage_v: None,
                rated_current_a: Some(30.0),
                max_winding_temp_c: None,
            }),
            ..WellMeta::minimal(&crate::telemetry::WellId::parse("W-1").unwrap())
        };
        let mut o = opts(3600, 3600);
        o.limits = InstrumentLimits::from_meta(Some(&meta));
        let mut points = healthy(360);
        for p in points.iter_mut().take(36) {
            p.1.set(
                Field::MotorCurrentA,
                Some(75.0 + (p.0.0 / S) as f64 / 100.0),
            );
        }
        points[40].1.set(Field::IntakePressurePsi, Some(-15.0));
        let r = assess(&points, &o);
        assert_eq!(r.overall.channels[1].out_of_range, 36);
        assert_eq!(r.overall.channels[2].out_of_range, 1);
        // 37 of 3 × 360 values out of range.
        assert_eq!(r.overall.validity, round4(1.0 - 37.0 / 1080.0));
    }

    #[test]
    fn no_readings_scores_zero_and_edges_are_clipped() {
        let r = assess(&[], &opts(3600, 1000));
        assert_eq!(r.interval_source, IntervalSource::Unknown);
        assert_eq!(r.windows.len(), 4);
        assert_eq!(r.windows[3].to, Timestamp(3600 * S));
        assert!(r.windows.iter().all(|w| w.score == 0.0));
        assert!(r.overall.channels.is_empty());
    }
}
