//! The per-well streaming engine: training, features, rules, anomaly score, episodes.

use std::collections::VecDeque;

use serde::Serialize;

use crate::condition::Condition;
use crate::hydraulics::{FT_PER_PSI_WATER, StageCurve};
use crate::telemetry::{FIELD_COUNT, Field, Measurements, Timestamp};
use crate::well::WellMeta;

use super::anomaly::{AnomalyModel, FeatureVec, NF};
use super::channels::{ChannelFault, ChannelMonitor, WATCHED};
use super::episodes::{EpisodeTracker, Transitions};
use super::stats::{Ewma, Welford};
use super::thresholds::Thresholds;
use super::{Diagnosis, Evidence, Finding, action_for};

const MICROS: f64 = 1e6;
/// Time constants of the smoothed features, seconds.
const FAST_TAU: f64 = 60.0;
const SLOW_TAU: f64 = 600.0;
/// After a start the drive ramps; rules wait this long.
const RAMP_SECS: f64 = 150.0;

/// Where a well's healthy baseline ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TrainingWindow {
    /// The first N readings.
    Readings(u64),
    /// Readings before this time.
    Until(Timestamp),
    /// The first seconds of data from the first reading (the thresholds' `train_secs`).
    Default,
}

/// What the registry tells the engine about a well. All optional.
#[derive(Clone, Debug, Default)]
pub struct WellContext {
    pub curve: Option<StageCurve>,
    pub stages: Option<f64>,
    pub base_hz: Option<f64>,
    pub sg: Option<f64>,
    pub bubble_point_psi: Option<f64>,
    pub rated_current_a: Option<f64>,
    pub max_winding_temp_c: Option<f64>,
}

impl WellContext {
    pub fn from_meta(meta: Option<&WellMeta>) -> WellContext {
        let Some(m) = meta else {
            return WellContext::default();
        };
        let pump = m.pump.as_ref();
        WellContext {
            curve: pump.and_then(StageCurve::from_spec),
            stages: pump.and_then(|p| p.stages).map(f64::from),
            base_hz: pump.and_then(|p| p.base_frequency_hz),
            sg: m.fluid.as_ref().and_then(|f| f.specific_gravity),
            bubble_point_psi: m.fluid.as_ref().and_then(|f| f.bubble_point_psi),
            rated_current_a: m.motor.as_ref().and_then(|m| m.rated_current_a),
            max_winding_temp_c: m.motor.as_ref().and_then(|m| m.max_winding_temp_c),
        }
    }
}

/// Healthy baseline of a well, every value at the reference frequency.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub reference_hz: f64,
    pub no_load_current_a: f64,
    /// Load (active) current at the reference frequency.
    pub active_current_a: f64,
    pub current_variability: f64,
    pub flow_bpd: Option<f64>,
    pub intake_pressure_psi: Option<f64>,
    pub discharge_pressure_psi: Option<f64>,
    pub tubing_pressure_psi: Option<f64>,
    pub tdh_ft: Option<f64>,
    /// Measured over catalog head; 1 for a pump on its curve.
    pub catalog_head_ratio: Option<f64>,
    pub vibration_g: Option<f64>,
    pub volts_per_hz: Option<f64>,
    pub winding_rise_c: Option<f64>,
    pub efficiency_index: Option<f64>,
    pub gor_scf_bbl: Option<f64>,
    pub readings: u64,
}

/// Features of one reading, relative to the baseline (1 = as in the baseline).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Features {
    pub running: bool,
    pub frequency_hz: Option<f64>,
    pub current_ratio: Option<f64>,
    pub intake_pressure_ratio: Option<f64>,
    pub discharge_pressure_ratio: Option<f64>,
    pub tubing_pressure_ratio: Option<f64>,
    pub flow_ratio: Option<f64>,
    pub head_ratio: Option<f64>,
    pub vibration_ratio: Option<f64>,
    pub winding_rise_ratio: Option<f64>,
    pub volts_per_hz_ratio: Option<f64>,
    pub efficiency_ratio: Option<f64>,
    pub gor_ratio: Option<f64>,
    pub tdh_ft: Option<f64>,
    pub system_efficiency: Option<f64>,
}

/// Output of one reading.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub training: bool,
    pub anomaly_score: f64,
    pub anomaly: bool,
    pub findings: Vec<Finding>,
    pub transitions: Transitions,
}

#[derive(Clone, Debug, Default)]
struct Smoothed {
    fast_cur: Ewma,
    fast_flow: Ewma,
    fast_pd: Ewma,
    fast_thp: Ewma,
    fast_vib: Ewma,
    fast_head: Ewma,
    cur: Ewma,
    cur_abs: Ewma,
    fast_cur_abs: Ewma,
    fast_gor: Ewma,
    flow: Ewma,
    pip: Ewma,
    head: Ewma,
    vib: Ewma,
    rise: Ewma,
    gor: Ewma,
    volt: Ewma,
    temp: Ewma,
    slow_temp: Ewma,
    fast_pip: Ewma,
}

/// Raw per-reading quantities normalised to the reference frequency.
#[derive(Clone, Copy, Debug, Default)]
struct Normalised {
    r: f64,
    current: Option<f64>,
    active_current: Option<f64>,
    flow: Option<f64>,
    tdh: Option<f64>,
    catalog_head_ratio: Option<f64>,
    vibration: Option<f64>,
    volts_per_hz: Option<f64>,
    rise: Option<f64>,
    efficiency: Option<f64>,
}

/// The engine of one well.
pub struct WellEngine {
    th: Thresholds,
    ctx: WellContext,
    window: TrainingWindow,
    first_ts: Option<i64>,
    readings: u64,
    last_ts: Option<i64>,
    trained: bool,
    // Training accumulators.
    reference_hz: Option<f64>,
    no_load_a: Option<f64>,
    acc: TrainAcc,
    train_samples: Vec<(i64, Measurements, bool)>,
    train_stride: usize,
    train_skip: usize,
    baseline: Option<Baseline>,
    model: Option<AnomalyModel>,
    channels: Vec<ChannelMonitor>,
    // Run state.
    running: bool,
    running_since: i64,
    starts: VecDeque<i64>,
    sm: Smoothed,
    volt_excursions: VecDeque<i64>,
    in_excursion: bool,
    head_departed: Option<i64>,
    head_kind: Option<Condition>,
    anomaly_smooth: Ewma,
    anomaly_above_since: Option<i64>,
    anomaly_flag: bool,
    tracker: EpisodeTracker,
    last_findings: Vec<Finding>,
    last_features: Features,
    prev_process: Vec<(Diagnosis, f64)>,
}

#[derive(Clone, Debug, Default)]
struct TrainAcc {
    active: Welford,
    cur_dev: Welford,
    cur_short: Ewma,
    flow: Welford,
    pip: Welford,
    pd: Welford,
    thp: Welford,
    tdh: Welford,
    chr: Welford,
    vib: Welford,
    vhz: Welford,
    rise: Welford,
    eff: Welford,
    gor: Welford,
    n: u64,
}

fn ratio(x: Option<f64>, base: Option<f64>) -> Option<f64> {
    match (x, base) {
        (Some(x), Some(b)) if b.abs() > 1e-9 => Some(x / b),
        _ => None,
    }
}

impl WellEngine {
    pub fn new(meta: Option<&WellMeta>, th: Thresholds, window: TrainingWindow) -> WellEngine {
        WellEngine {
            ctx: WellContext::from_meta(meta),
            th,
            window,
            first_ts: None,
            readings: 0,
            last_ts: None,
            trained: false,
            reference_hz: None,
            no_load_a: None,
            acc: TrainAcc::default(),
            train_samples: Vec::new(),
            train_stride: 1,
            train_skip: 0,
            baseline: None,
            model: None,
            channels: vec![ChannelMonitor::default(); FIELD_COUNT],
            running: true,
            running_since: i64::MIN / 2,
            starts: VecDeque::new(),
            sm: Smoothed::default(),
            volt_excursions: VecDeque::new(),
            in_excursion: false,
            head_departed: None,
            head_kind: None,
            anomaly_smooth: Ewma::default(),
            anomaly_above_since: None,
            anomaly_flag: false,
            tracker: EpisodeTracker::default(),
            last_findings: Vec::new(),
            last_features: Features::default(),
            prev_process: Vec::new(),
        }
    }

    pub fn thresholds(&self) -> &Thresholds {
        &self.th
    }
    pub fn baseline(&self) -> Option<&Baseline> {
        self.baseline.as_ref()
    }
    pub fn is_trained(&self) -> bool {
        self.trained
    }
    pub fn findings(&self) -> &[Finding] {
        &self.last_findings
    }
    pub fn features(&self) -> &Features {
        &self.last_features
    }
    pub fn open_episodes(&self) -> Vec<super::episodes::Episode> {
        self.tracker.open()
    }
    pub fn starts_last_day(&self) -> usize {
        self.starts.len()
    }
    pub fn last_ts(&self) -> Option<Timestamp> {
        self.last_ts.map(Timestamp)
    }

    /// Closes open episodes at the end of the data.
    pub fn finish(&mut self) -> Vec<super::episodes::Episode> {
        self.tracker.finish()
    }

    /// Ends training now (retrain on demand: call on a fresh engine, or force the current one).
    pub fn end_training(&mut self) {
        if !self.trained {
            self.finish_training();
        }
    }

    fn in_training(&self, ts: i64) -> bool {
        match self.window {
            TrainingWindow::Readings(n) => self.readings <= n,
            TrainingWindow::Until(t) => ts < t.0,
            TrainingWindow::Default => {
                ts - self.first_ts.unwrap_or(ts) < (self.th.train_secs * MICROS) as i64
            }
        }
    }

    fn is_running(&self, m: &Measurements) -> bool {
        match m.get(Field::FrequencyHz) {
            Some(f) => f > 1.0,
            None => match m.get(Field::MotorCurrentA) {
                Some(i) => i > self.no_load_a.unwrap_or(1.0) * 0.5,
                None => self.running,
            },
        }
    }

    fn normalise(&self, m: &Measurements) -> Normalised {
        let f = m.get(Field::FrequencyHz);
        let reference = self.reference_hz.or(self.ctx.base_hz).or(f).unwrap_or(60.0);
        let r = f.map(|f| f / reference).unwrap_or(1.0).max(0.05);
        let current = m.get(Field::MotorCurrentA);
        let no_load = self.no_load_a.unwrap_or(0.0);
        let active_current = current.map(|i| (i * i - no_load * no_load).max(0.0).sqrt() / (r * r));
        let flow_raw = m.get(Field::FlowRateBpd);
        let flow = flow_raw.map(|q| q / r);
        let sg = self.ctx.sg.unwrap_or(1.0);
        let tdh_raw = match (
            m.get(Field::DischargePressurePsi),
            m.get(Field::IntakePressurePsi),
        ) {
            (Some(pd), Some(pi)) => Some((pd - pi) * FT_PER_PSI_WATER / sg),
            _ => None,
        };
        let tdh = tdh_raw.map(|h| h / (r * r));
        let catalog_head_ratio = match (&self.ctx.curve, self.ctx.stages, tdh, flow) {
            (Some(curve), Some(stages), Some(h), Some(q)) => {
                let expected = stages * curve.head_ft(q);
                (expected > 1.0).then(|| h / expected)
            }
            _ => None,
        };
        let vibration = match (m.get(Field::VibrationXG), m.get(Field::VibrationYG)) {
            (Some(x), Some(y)) => Some(0.5 * (x + y)),
            (Some(x), None) => Some(x),
            (None, Some(y)) => Some(y),
            _ => None,
        }
        .map(|v| v / (r * r));
        let volts_per_hz = match (m.get(Field::MotorVoltageV), f) {
            (Some(v), Some(f)) if f > 1.0 => Some(v / f),
            _ => None,
        };
        let rise = match (m.get(Field::MotorTempC), m.get(Field::IntakeTempC)) {
            (Some(tm), Some(ti)) => Some(tm - ti),
            _ => None,
        };
        // Hydraulic output over electrical input (Q·TDH / V·I, up to constants): the pump's
        // efficiency moves little along the affinity laws, so this is frequency-robust.
        let efficiency = match (flow_raw, tdh_raw, m.get(Field::MotorVoltageV), current) {
            (Some(q), Some(h), Some(v), Some(i)) if v * i > 1.0 => Some(q * h / (v * i)),
            _ => None,
        };
        Normalised {
            r,
            current,
            active_current,
            flow,
            tdh,
            catalog_head_ratio,
            vibration,
            volts_per_hz,
            rise,
            efficiency,
        }
    }

    fn train(&mut self, ts: i64, m: &Measurements) {
        for f in Field::ALL {
            self.channels[f.index()].train(ts, m.get(f));
        }
        let running = self.is_running(m);
        if running && self.reference_hz.is_none() {
            self.reference_hz = self.ctx.base_hz.or(m.get(Field::FrequencyHz));
        }
        if running && self.no_load_a.is_none() {
            self.no_load_a = Some(match self.ctx.rated_current_a {
                Some(rated) => self.th.no_load_share * rated,
                None => self.th.no_load_share * m.get(Field::MotorCurrentA).unwrap_or(0.0),
            });
        }
        self.update_run_state(ts, running);
        let settled = running && self.secs_since_start(ts) >= self.th.settle_secs;
        if settled {
            let n = self.normalise(m);
            let a = &mut self.acc;
            a.n += 1;
            if let Some(ia) = n.active_current {
                a.active.push(ia);
                a.cur_short.update(ts, ia, SLOW_TAU);
                if a.cur_short.mean > 0.0 {
                    a.cur_dev.push(ia / a.cur_short.mean - 1.0);
                }
            }
            if let Some(q) = n.flow {
                a.flow.push(q);
            }
            for (acc, f) in [
                (&mut a.pip, Field::IntakePressurePsi),
                (&mut a.pd, Field::DischargePressurePsi),
                (&mut a.thp, Field::TubingPressurePsi),
                (&mut a.gor, Field::GorScfBbl),
            ] {
                if let Some(v) = m.get(f) {
                    acc.push(v);
                }
            }
            for (acc, v) in [
                (&mut a.tdh, n.tdh),
                (&mut a.chr, n.catalog_head_ratio),
                (&mut a.vib, n.vibration),
                (&mut a.vhz, n.volts_per_hz),
                (&mut a.rise, n.rise),
                (&mut a.eff, n.efficiency),
            ] {
                if let Some(v) = v {
                    acc.push(v);
                }
            }
        }
        // Keep a bounded, evenly thinned sample of training readings for the anomaly model.
        if self.train_skip == 0 {
            self.train_samples.push((ts, *m, settled));
            if self.train_samples.len() >= 4000 {
                let mut keep = false;
                self.train_samples.retain(|_| {
                    keep = !keep;
                    keep
                });
                self.train_stride *= 2;
            }
        }
        self.train_skip = (self.train_skip + 1) % self.train_stride;
    }

    fn finish_training(&mut self) {
        self.trained = true;
        for c in &mut self.channels {
            c.finish_training();
        }
        let a = &self.acc;
        let reference = self.reference_hz.or(self.ctx.base_hz).unwrap_or(60.0);
        if a.n >= 10 {
            self.baseline = Some(Baseline {
                reference_hz: reference,
                no_load_current_a: self.no_load_a.unwrap_or(0.0),
                active_current_a: a.active.mean().unwrap_or(0.0),
                current_variability: a.cur_dev.std(),
                flow_bpd: a.flow.mean(),
                intake_pressure_psi: a.pip.mean(),
                discharge_pressure_psi: a.pd.mean(),
                tubing_pressure_psi: a.thp.mean(),
                tdh_ft: a.tdh.mean(),
                catalog_head_ratio: a.chr.mean(),
                vibration_g: a.vib.mean(),
                volts_per_hz: a.vhz.mean(),
                winding_rise_c: a.rise.mean(),
                efficiency_index: a.eff.mean(),
                gor_scf_bbl: a.gor.mean(),
                readings: a.n,
            });
        }
        if self.baseline.is_some() {
            let samples = std::mem::take(&mut self.train_samples);
            let vectors: Vec<FeatureVec> = samples
                .iter()
                .filter(|(_, _, settled)| *settled)
                .map(|(_, m, _)| {
                    let n = self.normalise(m);
                    self.feature_vector(&self.features_of(m, &n))
                })
                .collect();
            self.model = AnomalyModel::fit(
                &vectors,
                self.th.anomaly_variance_kept,
                self.th.anomaly_std_floor,
                self.th.anomaly_quantile,
                self.th.anomaly_limit_margin,
            );
        }
        self.train_samples = Vec::new();
    }

    /// The current ratio (measured / expected at this frequency) with the part the operating
    /// point explains taken out. A centrifugal pump right of its baseline point (e.g. just after
    /// a start, with the annulus still full) takes more shaft power: the catalog's BHP at the
    /// normalised flow over the BHP at the baseline flow says how much (without a curve, the
    /// flow ratio itself, a generous bound). Only a rise is explained, never a fall.
    pub(crate) fn unexplained_current_ratio(
        &self,
        current_ratio: Option<f64>,
        flow_ratio: Option<f64>,
        frequency_hz: Option<f64>,
    ) -> Option<f64> {
        let c = current_ratio?;
        let (Some(b), Some(q)) = (self.baseline.as_ref(), flow_ratio) else {
            return Some(c);
        };
        let load = match (&self.ctx.curve, b.flow_bpd) {
            (Some(curve), Some(qb)) if curve.bhp(qb) > 1e-9 => curve.bhp(qb * q) / curve.bhp(qb),
            _ => q,
        };
        // NaN (an empty curve segment) explains nothing either.
        if load.is_nan() || load <= 1.0 {
            return Some(c);
        }
        let r = frequency_hz.map_or(1.0, |f| (f / b.reference_hz).max(0.05));
        let nl = b.no_load_current_a;
        let active = b.active_current_a * r * r;
        let expected = (nl * nl + active * active).sqrt();
        let explained = (nl * nl + (active * load).powi(2)).sqrt();
        if explained <= 1e-9 {
            return Some(c);
        }
        Some(c * expected / explained)
    }

    fn secs_since_start(&self, ts: i64) -> f64 {
        (ts - self.running_since) as f64 / MICROS
    }

    fn update_run_state(&mut self, ts: i64, running: bool) {
        if running && !self.running {
            self.running_since = ts;
            self.starts.push_back(ts);
            for ch in &mut self.channels {
                ch.reset_level();
            }
            let keep_rise = self.sm.rise;
            self.sm = Smoothed {
                rise: keep_rise,
                ..Smoothed::default()
            };
        }
        while let Some(&t) = self.starts.front() {
            if ts - t > 86_400_000_000 {
                self.starts.pop_front();
            } else {
                break;
            }
        }
        self.running = running;
    }

    fn features_of(&self, m: &Measurements, n: &Normalised) -> Features {
        let Some(b) = &self.baseline else {
            return Features::default();
        };
        let expected_current =
            (b.no_load_current_a.powi(2) + (b.active_current_a * n.r * n.r).powi(2)).sqrt();
        let current_ratio = n
            .current
            .filter(|_| expected_current > 0.1)
            .map(|i| i / expected_current);
        let head_ratio = match (n.catalog_head_ratio, b.catalog_head_ratio) {
            (Some(h), Some(hb)) => Some(h / hb),
            _ => ratio(n.tdh, b.tdh_ft),
        };
        let rise_ratio = match (n.rise, b.winding_rise_c, current_ratio) {
            (Some(r), Some(rb), Some(c)) if rb > 0.5 => Some(r / (rb * (c * c).max(0.3))),
            _ => None,
        };
        let sg = self.ctx.sg.unwrap_or(1.0);
        let system_efficiency = match (
            m.get(Field::FlowRateBpd),
            n.tdh.map(|h| h * n.r * n.r),
            m.get(Field::MotorVoltageV),
            n.current,
        ) {
            (Some(q), Some(h), Some(v), Some(i)) if v * i > 1.0 => {
                let hydraulic_kw =
                    crate::hydraulics::hydraulic_hp(q, h, sg) * crate::hydraulics::KW_PER_HP;
                // Power factor assumed 0.85 (not measured).
                Some(hydraulic_kw / crate::hydraulics::motor_input_kw(v, i, 0.85))
            }
            _ => None,
        };
        Features {
            running: self.running,
            frequency_hz: m.get(Field::FrequencyHz),
            current_ratio,
            intake_pressure_ratio: ratio(m.get(Field::IntakePressurePsi), b.intake_pressure_psi),
            discharge_pressure_ratio: ratio(
                m.get(Field::DischargePressurePsi),
                b.discharge_pressure_psi,
            ),
            tubing_pressure_ratio: ratio(m.get(Field::TubingPressurePsi), b.tubing_pressure_psi),
            flow_ratio: ratio(n.flow, b.flow_bpd),
            head_ratio,
            vibration_ratio: ratio(n.vibration, b.vibration_g),
            winding_rise_ratio: rise_ratio,
            volts_per_hz_ratio: ratio(n.volts_per_hz, b.volts_per_hz),
            efficiency_ratio: ratio(n.efficiency, b.efficiency_index),
            gor_ratio: ratio(m.get(Field::GorScfBbl), b.gor_scf_bbl),
            tdh_ft: n.tdh.map(|h| h * n.r * n.r),
            system_efficiency,
        }
    }

    fn feature_vector(&self, f: &Features) -> FeatureVec {
        let v: [Option<f64>; NF] = [
            f.current_ratio,
            f.intake_pressure_ratio,
            f.head_ratio,
            f.flow_ratio,
            f.vibration_ratio,
            f.winding_rise_ratio,
            f.volts_per_hz_ratio,
            f.efficiency_ratio,
            f.gor_ratio,
        ];
        v
    }

    /// Advances the well by one reading (readings must come in time order; older ones are
    /// ignored).
    pub fn push(&mut self, ts: Timestamp, values: &Measurements) -> StepOutput {
        let ts = ts.0;
        if let Some(last) = self.last_ts
            && ts <= last
        {
            return StepOutput {
                training: !self.trained,
                ..StepOutput::default()
            };
        }
        self.last_ts = Some(ts);
        self.first_ts.get_or_insert(ts);
        self.readings += 1;
        if !self.trained {
            if self.in_training(ts) {
                self.train(ts, values);
                return StepOutput {
                    training: true,
                    ..StepOutput::default()
                };
            }
            self.finish_training();
        }
        self.diagnose(ts, values)
    }

    fn diagnose(&mut self, ts: i64, raw: &Measurements) -> StepOutput {
        let th = self.th.clone();
        // 1. Channel health.
        let mut clean = *raw;
        let mut faults: Vec<(Field, ChannelFault, u32)> = Vec::new();
        // A spike is one channel jumping alone; when several move together the pump changed.
        let moved = [
            Field::MotorCurrentA,
            Field::FlowRateBpd,
            Field::DischargePressurePsi,
            Field::IntakePressurePsi,
            Field::TubingPressurePsi,
            Field::MotorVoltageV,
        ]
        .iter()
        .filter(|f| self.channels[f.index()].departure(raw.get(**f)) > 0.1)
        .count();
        let system_changed = moved >= 2;
        for f in WATCHED {
            let (usable, fault) =
                self.channels[f.index()].observe(ts, raw.get(f), system_changed, &th);
            clean.set(f, usable);
            if let Some(fault) = fault {
                faults.push((f, fault, self.channels[f.index()].stuck_run));
            }
        }
        // A channel reported faulty is left out of every rule until it recovers: the other
        // channels tell the story.
        for (f, _, _) in &faults {
            clean.set(*f, None);
        }
        // 2. Run state.
        let running = self.is_running(&clean);
        let tripped = self.running && !running;
        self.update_run_state(ts, running);
        let since_start = self.secs_since_start(ts);
        let settled = running && since_start >= th.settle_secs;
        let n = self.normalise(&clean);
        let feats = self.features_of(&clean, &n);
        self.last_features = feats;
        let mut findings: Vec<Finding> = Vec::new();

        // Sensor faults.
        if !faults.is_empty() {
            let evidence = faults
                .iter()
                .map(|(f, kind, run)| {
                    let (value, threshold) = match kind {
                        ChannelFault::Stuck => (*run as f64, th.stuck_min_readings as f64),
                        ChannelFault::Spikes => (th.spike_count as f64, th.spike_count as f64),
                        ChannelFault::Dropout => {
                            (self.channels[f.index()].missing_share(), th.dropout_share)
                        }
                    };
                    Evidence::new(
                        &format!("{}.{}", f.name(), kind.name()),
                        value,
                        threshold,
                        ">=",
                    )
                })
                .collect();
            findings.push(Finding::new(Condition::SensorFault, 0.9, evidence));
        }

        let ramped = running
            && since_start >= RAMP_SECS
            && feats.frequency_hz.is_none_or(|f| {
                f >= th.min_running_frequency_ratio
                    * self.baseline.as_ref().map_or(0.0, |b| b.reference_hz)
            });
        if ramped && self.baseline.is_some() {
            self.update_smoothed(ts, &feats, &clean);
            self.process_rules(ts, settled, &clean, &feats, &th, &mut findings);
        } else if running
            && let (Some(b), Some(f), Some(c), Some(rated), Some(i)) = (
                self.baseline.as_ref(),
                feats.frequency_hz,
                feats.current_ratio,
                self.ctx.rated_current_a,
                clean.get(Field::MotorCurrentA),
            )
            && f >= th.min_running_frequency_ratio * b.reference_hz
            && self
                .unexplained_current_ratio(Some(c), feats.flow_ratio, Some(f))
                .is_some_and(|u| u >= th.overload_current_ratio)
            && i >= th.overload_nameplate_share * rated
            && feats
                .volts_per_hz_ratio
                .is_none_or(|v| (v - 1.0).abs() < th.voltage_deviation)
        {
            // Right after a start the relay may trip an overloaded motor before the settling
            // time is over: judge the nameplate at once (a trip will confirm it).
            findings.push(Finding::new(
                Condition::Overload,
                0.75,
                vec![
                    Evidence::new("current_ratio", c, th.overload_current_ratio, ">="),
                    Evidence::new(
                        "motor_current_a",
                        i,
                        th.overload_nameplate_share * rated,
                        ">= nameplate share",
                    ),
                ],
            ));
        }
        // Power: V/Hz excursions, also around undervoltage trips.
        if running && let Some(v) = feats.volts_per_hz_ratio {
            let out = (v - 1.0).abs() > th.voltage_deviation;
            if out && !self.in_excursion {
                self.volt_excursions.push_back(ts);
            }
            self.in_excursion = out;
        }
        while let Some(&t) = self.volt_excursions.front() {
            if ts - t > (th.voltage_window_secs * MICROS) as i64 {
                self.volt_excursions.pop_front();
            } else {
                break;
            }
        }
        if self.volt_excursions.len() as u32 >= th.voltage_min_excursions {
            let n = self.volt_excursions.len() as f64;
            let conf = (0.6 + 0.1 * (n - th.voltage_min_excursions as f64)).min(0.95);
            findings.push(Finding::new(
                Condition::PowerFluctuation,
                conf,
                vec![Evidence::new(
                    "volts_per_hz_excursions",
                    n,
                    th.voltage_min_excursions as f64,
                    ">=",
                )],
            ));
        }

        // 3. Anomaly score.
        let mut score = 0.0;
        if running
            && since_start >= th.anomaly_settle_secs
            && let Some(model) = &self.model
        {
            let x = self.feature_vector(&feats);
            score = model.score(&x).score;
            self.anomaly_smooth.update(ts, score, 300.0);
            let s = self.anomaly_smooth.mean;
            if s > 1.0 {
                let since = *self.anomaly_above_since.get_or_insert(ts);
                if ts - since >= (th.anomaly_persist_secs * MICROS) as i64 {
                    self.anomaly_flag = true;
                }
            } else {
                self.anomaly_above_since = None;
                if s < th.anomaly_clear {
                    self.anomaly_flag = false;
                }
            }
            let explained = findings.iter().any(|f| f.diagnosis.is_process())
                || self
                    .tracker
                    .open()
                    .iter()
                    .any(|e| e.diagnosis.is_process() && e.diagnosis != Diagnosis::Anomaly);
            if self.anomaly_flag && !explained {
                let top = model.top_contributors(&x, 3);
                let evidence = std::iter::once(Evidence::new(
                    "anomaly_score",
                    self.anomaly_smooth.mean,
                    1.0,
                    ">",
                ))
                .chain(
                    top.into_iter()
                        .map(|(name, z)| Evidence::new(&format!("{name}.z"), z, 3.0, "|z| >")),
                )
                .collect();
                findings.push(Finding {
                    diagnosis: Diagnosis::Anomaly,
                    confidence: (0.5 + 0.1 * self.anomaly_smooth.mean).min(0.9),
                    evidence,
                    action: action_for(Diagnosis::Anomaly),
                });
            }
        } else {
            self.anomaly_flag = false;
            self.anomaly_above_since = None;
            self.anomaly_smooth.reset();
        }

        // 4. Episodes. A stop right after loss-of-lift or overload evidence is the protection
        // relay confirming it: the evidence may have had only a reading or two to show.
        let mut list: Vec<(Diagnosis, f64)> = findings
            .iter()
            .map(|f| (f.diagnosis, f.confidence))
            .collect();
        let mut confirmed = Vec::new();
        if tripped {
            for (d, c) in std::mem::take(&mut self.prev_process) {
                if matches!(
                    d,
                    Diagnosis::Condition(
                        Condition::ClosedValve
                            | Condition::GasLock
                            | Condition::BrokenShaft
                            | Condition::Overload
                            | Condition::PumpOff
                    )
                ) {
                    list.push((d, c));
                    confirmed.push(d);
                }
            }
        }
        // Gas lock is gas interference gone all the way: an interference episode that opened
        // moments ago (within `switch_secs`) is this lock's onset, not a separate problem.
        let gas_lock = Diagnosis::Condition(Condition::GasLock);
        let gas_interference = Diagnosis::Condition(Condition::GasInterference);
        if list.iter().any(|(d, _)| *d == gas_lock)
            && self.tracker.open().iter().any(|e| {
                e.diagnosis == gas_interference
                    && ts - e.start.0 <= (th.switch_secs * MICROS) as i64
            })
        {
            self.tracker.retag(gas_interference, gas_lock);
        }
        self.prev_process = findings
            .iter()
            .filter(|f| f.diagnosis.is_process())
            .map(|f| (f.diagnosis, f.confidence))
            .collect();
        let transitions = self.tracker.step(ts, &list, &confirmed, settled, &th);
        self.last_findings = findings.clone();
        StepOutput {
            training: false,
            anomaly_score: score,
            anomaly: self.anomaly_flag,
            findings,
            transitions,
        }
    }

    fn update_smoothed(&mut self, ts: i64, f: &Features, m: &Measurements) {
        let s = &mut self.sm;
        let up = |e: &mut Ewma, v: Option<f64>, tau: f64| {
            if let Some(v) = v {
                e.update(ts, v, tau);
            }
        };
        up(&mut s.fast_cur, f.current_ratio, FAST_TAU);
        up(&mut s.fast_flow, f.flow_ratio, FAST_TAU);
        up(&mut s.fast_pd, f.discharge_pressure_ratio, FAST_TAU);
        up(&mut s.fast_thp, f.tubing_pressure_ratio, FAST_TAU);
        up(&mut s.fast_vib, f.vibration_ratio, FAST_TAU);
        up(&mut s.fast_head, f.head_ratio, FAST_TAU);
        up(&mut s.cur, f.current_ratio, SLOW_TAU);
        up(&mut s.cur_abs, m.get(Field::MotorCurrentA), SLOW_TAU);
        up(&mut s.fast_cur_abs, m.get(Field::MotorCurrentA), FAST_TAU);
        up(&mut s.fast_gor, f.gor_ratio, FAST_TAU);
        up(&mut s.flow, f.flow_ratio, SLOW_TAU);
        up(&mut s.pip, f.intake_pressure_ratio, SLOW_TAU);
        up(&mut s.head, f.head_ratio, SLOW_TAU);
        up(&mut s.vib, f.vibration_ratio, SLOW_TAU);
        up(&mut s.rise, f.winding_rise_ratio, SLOW_TAU);
        up(&mut s.gor, f.gor_ratio, SLOW_TAU);
        up(&mut s.volt, f.volts_per_hz_ratio, SLOW_TAU);
        up(&mut s.temp, m.get(Field::MotorTempC), FAST_TAU);
        up(&mut s.slow_temp, m.get(Field::MotorTempC), SLOW_TAU);
        up(&mut s.fast_pip, f.intake_pressure_ratio, FAST_TAU);
    }

    #[allow(clippy::too_many_arguments)]
    fn process_rules(
        &mut self,
        ts: i64,
        settled: bool,
        m: &Measurements,
        f: &Features,
        th: &Thresholds,
        out: &mut Vec<Finding>,
    ) {
        let s = &self.sm;
        let b = self.baseline.as_ref().expect("trained");
        let val = |e: &Ewma| e.value();
        let gor = val(&s.gor);
        let pip_abs = m.get(Field::IntakePressurePsi);
        let below_bubble = match (pip_abs, self.ctx.bubble_point_psi) {
            (Some(p), Some(bp)) => p < bp,
            _ => false,
        };
        let gor_fast = val(&s.fast_gor);
        let gas_rich = gor.is_some_and(|g| g >= th.gas_gor_ratio)
            || gor_fast.is_some_and(|g| g >= th.gas_gor_ratio + 0.05);
        // PIP under the bubble point says free gas only when the GOR gauge does not deny it.
        let gas = gas_rich || (below_bubble && gor.is_none());

        // Loss of lift: deadhead, broken shaft or gas lock. Abrupt, and the relay trips within
        // a minute, so these judge the latest reading (lightly smoothed), not long windows.
        let flow_now = f.flow_ratio;
        let head_now = val(&s.fast_head);
        let cur_now = f.current_ratio;
        let vib_now = val(&s.fast_vib);
        let pd_now = f.discharge_pressure_ratio;
        let thp_now = f.tubing_pressure_ratio;
        let gas_fast = val(&s.fast_gor).is_some_and(|g| g >= th.gas_gor_ratio);
        let no_flow = match flow_now {
            Some(q) => q < th.no_flow_ratio,
            None => head_now.is_some_and(|h| h < 0.3),
        };
        if no_flow
            && (pd_now.is_some_and(|p| p >= th.deadhead_discharge_ratio)
                || thp_now.is_some_and(|t| t >= 1.5))
        {
            let ev = vec![
                Evidence::opt("flow_ratio", flow_now, th.no_flow_ratio, "<"),
                Evidence::opt(
                    "discharge_pressure_ratio",
                    pd_now,
                    th.deadhead_discharge_ratio,
                    ">=",
                ),
                Evidence::opt("tubing_pressure_ratio", thp_now, 1.5, ">="),
            ];
            let conf = 0.7
                + 0.15 * pd_now.is_some_and(|p| p > 1.1) as u8 as f64
                + 0.1 * thp_now.is_some_and(|t| t > 1.5) as u8 as f64;
            out.push(Finding::new(Condition::ClosedValve, conf, ev));
            return;
        }
        let lift_lost = no_flow || head_now.is_some_and(|h| h < 0.5);
        let unloaded = cur_now.is_some_and(|c| c < th.unloaded_current_ratio);
        // Gas lock develops over minutes: head and current fall together while the pump keeps
        // turning (vibration up, not down).
        let losing_prime = head_now.is_some_and(|h| h < 0.75)
            && cur_now.is_some_and(|c| c < 0.85)
            && vib_now.is_some_and(|v| v >= 1.1);
        if (lift_lost && unloaded) || losing_prime {
            let quiet = vib_now.is_some_and(|v| v < th.broken_shaft_vibration_ratio);
            let mut ev = vec![
                Evidence::opt("flow_ratio", flow_now, th.no_flow_ratio, "<"),
                Evidence::opt("head_ratio", head_now, 0.5, "<"),
                Evidence::opt("current_ratio", cur_now, th.unloaded_current_ratio, "<"),
            ];
            let pip_now = val(&s.fast_pip);
            if pip_now.is_some_and(|p| p < th.pump_off_pip_ratio) && !gas_fast {
                // Starved rather than gas locked: the intake is drawn down to its minimum
                // (gas lock raises it) and no gas breakthrough shows at the surface.
                ev.push(Evidence::opt(
                    "intake_pressure_ratio",
                    pip_now,
                    th.pump_off_pip_ratio,
                    "<",
                ));
                out.push(Finding::new(Condition::PumpOff, 0.8, ev));
            } else if quiet && !gas_fast && !losing_prime {
                ev.push(Evidence::opt(
                    "vibration_ratio",
                    vib_now,
                    th.broken_shaft_vibration_ratio,
                    "<",
                ));
                let steady = s.fast_cur.std() < 0.03;
                out.push(Finding::new(
                    Condition::BrokenShaft,
                    0.8 + 0.15 * steady as u8 as f64,
                    ev,
                ));
            } else {
                ev.push(Evidence::opt(
                    "vibration_ratio",
                    vib_now,
                    th.broken_shaft_vibration_ratio,
                    ">=",
                ));
                if gas_fast {
                    ev.push(Evidence::opt(
                        "gor_ratio",
                        val(&s.fast_gor),
                        th.gas_gor_ratio,
                        ">=",
                    ));
                }
                let conf = 0.75 + 0.15 * gas_fast as u8 as f64 + 0.05 * (!quiet) as u8 as f64;
                out.push(Finding::new(Condition::GasLock, conf, ev));
            }
            return;
        }
        if no_flow {
            return;
        }

        let cur = val(&s.cur);
        let erratic_limit = th
            .erratic_std
            .max(th.erratic_factor * b.current_variability);
        let erratic = s.cur.std() >= erratic_limit;
        let pip = val(&s.pip);
        let flow = val(&s.flow);

        // Pump-off: intake pressure drawn down with no gas breakthrough.
        // Early sign: the intake keeps falling at constant frequency, with no gas coming up.
        // A drawdown with the pump delivering at least its baseline (normalised) rate is the
        // annulus settling after a start or a rate increase, not inflow failing. Inflow failing
        // shows as flow sliding below baseline with the intake: then the fall counts as soon as
        // the intake is under its baseline.
        let flow_low = flow.is_some_and(|q| q < th.pump_off_flow_ratio);
        let falling = match (val(&s.fast_pip), pip) {
            (Some(fast), Some(slow)) => {
                fast < slow - 0.01
                    && flow.is_none_or(|q| q < 1.0)
                    && (slow < 0.9 || (slow < 1.0 && flow_low))
            }
            _ => false,
        };
        let gas_rising = gor_fast.is_some_and(|g| g >= 1.1);
        // Early gas breakthrough: the gas-oil ratio at the surface climbs while the intake
        // pressure sinks (free gas forms as PIP approaches the bubble point).
        let pip_sinking = match (val(&s.fast_pip), pip) {
            (Some(fast), Some(slow)) => fast < slow,
            _ => false,
        };
        let gas_breaking = gas_rising && pip_sinking && gor.is_some_and(|g| g > 1.0);
        if settled
            && (pip.is_some_and(|p| p < th.pump_off_pip_ratio) || (falling && !gas_rising))
            && !gas_rich
        {
            let ev = vec![
                Evidence::opt("intake_pressure_ratio", pip, th.pump_off_pip_ratio, "<"),
                Evidence::opt("flow_ratio", flow, 1.0, "<"),
            ];
            let conf = 0.7 + 0.2 * flow.is_some_and(|q| q < 0.95) as u8 as f64;
            out.push(Finding::new(Condition::PumpOff, conf, ev));
            return;
        }

        // Free gas at the intake with the pump still turning.
        if (gas && (erratic || flow.is_some_and(|q| q < 0.9) || pip.is_some_and(|p| p < 0.9)))
            || gas_breaking
        {
            let mut ev = vec![];
            if gas_breaking && !gas_rich {
                ev.push(Evidence::opt("gor_ratio_fast", gor_fast, 1.1, ">="));
                ev.push(Evidence::opt(
                    "intake_pressure_ratio_fast",
                    val(&s.fast_pip),
                    pip.unwrap_or(0.0),
                    "< slow (sinking)",
                ));
            }
            if gas_rich {
                ev.push(Evidence::opt("gor_ratio", gor, th.gas_gor_ratio, ">="));
            }
            if below_bubble {
                ev.push(Evidence::opt(
                    "intake_pressure_psi",
                    pip_abs,
                    self.ctx.bubble_point_psi.unwrap_or(0.0),
                    "< bubble point",
                ));
            }
            ev.push(Evidence::new(
                "current_variability",
                s.cur.std(),
                erratic_limit,
                ">=",
            ));
            let conf = 0.6
                + 0.15 * erratic as u8 as f64
                + 0.1 * gas_rich as u8 as f64
                + 0.1 * below_bubble as u8 as f64;
            out.push(Finding::new(Condition::GasInterference, conf, ev));
            return;
        }

        // Overload: current above baseline at this frequency (and above nameplate).
        let cur_abs = val(&s.fast_cur_abs);
        let cur_fast = val(&s.fast_cur);
        let over_nameplate = match (self.ctx.rated_current_a, cur_abs) {
            (Some(rated), Some(i)) => i >= th.overload_nameplate_share * rated,
            (None, _) => true,
            _ => false,
        };
        let volts_ok = val(&s.volt).is_none_or(|v| (v - 1.0).abs() < th.voltage_deviation);
        // Current the operating point explains (more flow, more shaft power) is not overload.
        let cur_unexplained =
            self.unexplained_current_ratio(cur_fast, val(&s.fast_flow), f.frequency_hz);
        let overloaded = cur_unexplained.is_some_and(|c| c >= th.overload_current_ratio)
            && over_nameplate
            && volts_ok;
        if overloaded {
            let mut ev = vec![Evidence::opt(
                "current_ratio_unexplained_by_flow",
                cur_unexplained,
                th.overload_current_ratio,
                ">=",
            )];
            if let Some(rated) = self.ctx.rated_current_a {
                ev.push(Evidence::opt(
                    "motor_current_a",
                    cur_abs,
                    th.overload_nameplate_share * rated,
                    ">= nameplate share",
                ));
            }
            let conf = 0.75 + 0.15 * self.ctx.rated_current_a.is_some() as u8 as f64;
            out.push(Finding::new(Condition::Overload, conf, ev));
            return;
        }

        // Head lost against the curve: leak (abrupt), scale or wear (gradual).
        let head = val(&s.head);
        let rise = val(&s.rise);
        if let Some(h) = head {
            let early = 1.0 - (1.0 - th.head_ratio_low) / 3.0;
            if h >= early {
                self.head_departed = None;
                self.head_kind = None;
            } else if self.head_departed.is_none() {
                self.head_departed = Some(ts);
            }
            if h < th.head_ratio_low && settled {
                let kind = *self.head_kind.get_or_insert_with(|| {
                    let took = (ts - self.head_departed.unwrap_or(ts)) as f64 / MICROS;
                    if took <= th.abrupt_secs && cur.is_none_or(|c| c >= 0.95) {
                        Condition::TubingLeak
                    } else if rise.is_some_and(|r| r >= th.scale_rise_ratio) {
                        Condition::ScalePlugging
                    } else {
                        Condition::PumpWear
                    }
                });
                // Scale keeps developing: upgrade wear to scale once cooling is clearly lost.
                let kind = if kind == Condition::PumpWear
                    && rise.is_some_and(|r| r >= th.scale_rise_ratio + 0.1)
                {
                    self.head_kind = Some(Condition::ScalePlugging);
                    self.tracker.retag(
                        Diagnosis::Condition(Condition::PumpWear),
                        Diagnosis::Condition(Condition::ScalePlugging),
                    );
                    Condition::ScalePlugging
                } else {
                    kind
                };
                let mut ev = vec![Evidence::new("head_ratio", h, th.head_ratio_low, "<")];
                let took =
                    (ts - self.head_departed.unwrap_or(ts)) as f64 / 3600.0 / MICROS;
                ev.push(Evidence::new(
                    "head_loss_developed_over_h",
                    took,
                    th.abrupt_secs / 3600.0,
                    if kind == Condition::TubingLeak {
                        "<="
                    } else {
                        ">"
                    },
                ));
                if kind == Condition::ScalePlugging {
                    ev.push(Evidence::opt(
                        "winding_rise_ratio",
                        rise,
                        th.scale_rise_ratio,
                        ">=",
                    ));
                }
                let depth = ((th.head_ratio_low - h) / 0.1).clamp(0.0, 1.0);
                out.push(Finding::new(kind, 0.65 + 0.3 * depth, ev));
                return;
            }
        }

        // Motor overheating with the pump otherwise producing.
        let temp = val(&s.temp);
        let near_limit = match (self.ctx.max_winding_temp_c, temp) {
            (Some(limit), Some(t)) => t >= limit - th.overheat_margin_c,
            _ => false,
        };
        let hot = rise.is_some_and(|r| r >= th.overheat_rise_ratio);
        // Low flow or a drawn-down intake explains a hot motor (pump-off, gas); overheating
        // proper is cooling lost while the pump produces.
        let producing = flow.is_none_or(|q| q >= 0.8) && pip.is_none_or(|p| p >= 0.85);
        // A motor cooling down after a stop or a deadhead is not overheating.
        let cooling_down = match (temp, val(&s.slow_temp)) {
            (Some(fast), Some(slow)) => fast < slow - 0.5,
            _ => false,
        };
        let producing = producing && !cooling_down;
        if (hot || near_limit) && producing {
            let mut ev = vec![Evidence::opt(
                "winding_rise_ratio",
                rise,
                th.overheat_rise_ratio,
                ">=",
            )];
            if let Some(limit) = self.ctx.max_winding_temp_c {
                ev.push(Evidence::opt(
                    "motor_temp_c",
                    temp,
                    limit - th.overheat_margin_c,
                    ">=",
                ));
            }
            let conf = 0.7 + 0.1 * hot as u8 as f64 + 0.15 * near_limit as u8 as f64;
            out.push(Finding::new(Condition::MotorOverheat, conf, ev));
        }
    }
}
