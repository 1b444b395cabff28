//! The per-well streaming engine: training, features, rules, anomaly score, episodes.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::condition::Condition;
use crate::hydraulics::FT_PER_PSI_WATER;
use crate::telemetry::{FIELD_COUNT, Field, Measurements, Timestamp};
use crate::well::WellMeta;

use super::anomaly::{self, AnomalyModel, FeatureVec, NF};
use super::channels::{ChannelFault, ChannelMonitor, NOISE_JUDGED, PROCESS, Process, WATCHED};
use super::episodes::{EpisodeTracker, Transitions};
use super::features::{Baseline, Features, WellContext};
use super::rules::{self, HeadLoss, HeadTrend, Smoothed, Unloading};
use super::stats::{Ewma, RecentIntervals, Welford};
use super::thresholds::Thresholds;
use super::{Diagnosis, Evidence, Finding, action_for};

const MICROS: f64 = 1e6;

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

/// Output of one reading.
#[derive(Clone, Debug, Default)]
pub struct StepOutput {
    pub training: bool,
    /// The learned model's score over its pointwise limit (a high quantile of the well's own
    /// training scores): above 1, this reading is outside the healthy envelope.
    pub anomaly_score: f64,
    /// This reading is anomalous (`anomaly_score > 1`). Raising an alarm is a separate policy:
    /// the score must stay high (see `Thresholds::anomaly_alarm_score`).
    pub anomaly: bool,
    pub findings: Vec<Finding>,
    pub transitions: Transitions,
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

/// The quantities a baseline holds a level of.
#[derive(Clone, Copy)]
enum Level {
    Active,
    Flow,
    Pip,
    Pd,
    Thp,
    Tdh,
    CatalogHead,
    Vibration,
    VoltsPerHz,
    Volts,
    Rise,
    Efficiency,
    Gor,
}

/// The baseline's levels as the thinned training sample shows them. A gauge spike in the
/// training hours (one reading of 13 000 psi among 80 of 4 350) moves a plain mean by percents
/// and every ratio judged against it for good; the median does not move. The mean of all
/// training readings stays the level unless it strays from the mean of the sample's readings
/// within `baseline_spike_mads` MADs of their median by more than `baseline_spike_shift`, the
/// readings outside being no more than `baseline_spike_share` of them.
struct RobustLevels {
    values: [Vec<f64>; 13],
    mads: f64,
    shift: f64,
    share: f64,
}

impl RobustLevels {
    fn level(&mut self, level: Level, mean: Option<f64>) -> Option<f64> {
        let mean = mean?;
        let values = &mut self.values[level as usize];
        if values.len() < 10 {
            return Some(mean);
        }
        let median = median_of(values);
        let mut deviations: Vec<f64> = values.iter().map(|v| (v - median).abs()).collect();
        // Quantised gauges often have a MAD of zero: one step of 1 % is no outlier.
        let band = (self.mads * 1.4826 * median_of(&mut deviations)).max(0.01 * median.abs());
        let (sum, n) = values
            .iter()
            .filter(|v| (*v - median).abs() <= band)
            .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
        let trimmed = sum / n.max(1) as f64;
        // Spikes are rare: many readings far out are the well's own spread (a bimodal rate, a
        // coarse gauge), which the mean describes.
        let rare = ((values.len() - n) as f64) <= self.share * values.len() as f64;
        let strayed = rare && (mean - trimmed).abs() > self.shift * trimmed.abs().max(1e-9);
        Some(if strayed { trimmed } else { mean })
    }
}

fn median_of(values: &mut [f64]) -> f64 {
    let mid = values.len() / 2;
    let (_, m, _) = values.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    *m
}

/// The engine of one well.
pub struct WellEngine {
    /// Shared, so that judging a reading borrows them instead of copying ~100 numbers.
    th: Arc<Thresholds>,
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
    train_samples: Vec<TrainingReading>,
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
    /// The previous reading's drive frequency (supply excursions are judged at a steady speed).
    supply_last_hz: Option<f64>,
    /// Typical interval between readings (s), to turn the baseline excursion rate into an
    /// expected count per window whatever the sampling.
    sample_interval: RecentIntervals,
    head_loss: HeadLoss,
    head_trend: HeadTrend,
    /// The motor unloading at a steady speed (free gas lightening the pump), being watched.
    unloading: Unloading,
    /// Since when a gas lock has kept delivering (see [`rules::gas_lock_still_delivering`]).
    delivering_since: Option<i64>,
    /// The pump gas-locked in this run, or stopped last time with a gas lock raised (or still
    /// fighting the gas since one): gas that lightens it since is not reported with certainty
    /// (see `diagnose`).
    gas_locked_lately: bool,
    /// The last reading with the pump running.
    last_running_at: Option<i64>,
    /// The last reading with both the drive frequency and its output voltage: (time, Hz, V).
    last_drive: Option<(i64, f64, f64)>,
    /// When the head was last at its baseline at a settled reading since the last start or
    /// speed step: a change of it since is the well's doing, not a new pump or operating point.
    head_normal_at: Option<i64>,
    /// The last reading of this run with the motor loaded (current ratio at or above
    /// `gas_lock_current_ratio`), and how the motor unloaded since.
    loaded_at: Option<i64>,
    /// The last judged reading at which the shaft still turned the impellers, across stops
    /// and starts: the motor drawing more than the no-load band. A parted shaft leaves it at
    /// no-load from the moment it parts.
    last_turning_at: Option<i64>,
    /// How long the motor took to unload when the open lock set in (`None`: not caught on its
    /// way down, as quick as the polling tells).
    lock_unload_secs: Option<f64>,
    unload: Unload,
    /// End of the grace period of a known transient (a frequency step, a marked well test).
    transient_until: i64,
    /// Since a start: when the intake pressure last came within `rest_pip_band` of its
    /// level, and whether it has stayed there `rest_hold_secs` (the operating point is at rest).
    intake_near_level_since: Option<i64>,
    intake_rested: bool,
    frequency_level: Ewma,
    /// The voltage (standing in for the speed) left its level on the last reading.
    speed_step_pending: bool,
    /// The speed the drive has stayed within `held_speed_band` of, and since when.
    speed_held_at: Option<(f64, i64)>,
    /// Until when the smoothed variability may still carry a supply disturbance.
    supply_calm_from: i64,
    cur_swings: rules::Swings,
    pd_swings: rules::Swings,
    anomaly_smooth: Ewma,
    /// Measured discharge pressure minus wellhead pressure and fluid column (tubing friction
    /// and the fluid's true density), learned while both gauges read: should the discharge
    /// gauge fail, the column estimate stands in for it on the same footing as the baseline.
    column_offset: Ewma,
    anomaly_above_since: Option<i64>,
    anomaly_alarm: bool,
    anomaly_adapted_at: Option<i64>,
    tracker: EpisodeTracker,
    last_findings: Vec<Finding>,
    last_features: Features,
    prev_process: Vec<(Diagnosis, f64)>,
    /// Readings since `prev_process` was found, and whether it was found by the process rules
    /// at speed (rather than by the nameplate while starting).
    prev_process_age: u32,
    prev_process_judged: bool,
    /// The last reading with process findings: when, and what.
    last_process: Option<(i64, Vec<(Diagnosis, f64)>)>,
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
    volts: Welford,
    rise: Welford,
    eff: Welford,
    gor: Welford,
    hz: Welford,
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
        let slew = (
            th.temperature_slew_c_per_min / 60.0,
            th.temperature_min_jump_c,
        );
        let pip_slew = (
            th.intake_pressure_slew_psi_per_min / 60.0,
            th.intake_pressure_min_jump_psi,
        );
        WellEngine {
            ctx: WellContext::from_meta(meta),
            th: Arc::new(th),
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
            channels: {
                let mut channels = vec![ChannelMonitor::default(); FIELD_COUNT];
                for f in [Field::MotorTempC, Field::IntakeTempC] {
                    channels[f.index()] = ChannelMonitor::with_slew_limit(slew.0, slew.1);
                }
                channels[Field::IntakePressurePsi.index()] =
                    ChannelMonitor::with_slew_limit(pip_slew.0, pip_slew.1);
                for f in Field::ALL.into_iter().filter(|f| !WATCHED.contains(f)) {
                    channels[f.index()].scatter_unread = true;
                }
                channels
            },
            running: true,
            running_since: i64::MIN / 2,
            starts: VecDeque::new(),
            sm: Smoothed::default(),
            volt_excursions: VecDeque::new(),
            in_excursion: false,
            supply_last_hz: None,
            sample_interval: RecentIntervals::default(),
            head_loss: HeadLoss::default(),
            head_trend: HeadTrend::default(),
            unloading: Unloading::default(),
            delivering_since: None,
            gas_locked_lately: false,
            last_running_at: None,
            last_drive: None,
            head_normal_at: None,
            loaded_at: None,
            last_turning_at: None,
            lock_unload_secs: None,
            unload: Unload::default(),
            transient_until: i64::MIN,
            intake_near_level_since: None,
            intake_rested: false,
            frequency_level: Ewma::default(),
            speed_step_pending: false,
            speed_held_at: None,
            supply_calm_from: i64::MIN,
            cur_swings: rules::Swings::default(),
            pd_swings: rules::Swings::default(),
            anomaly_smooth: Ewma::default(),
            column_offset: Ewma::default(),
            anomaly_above_since: None,
            anomaly_alarm: false,
            anomaly_adapted_at: None,
            tracker: EpisodeTracker::default(),
            last_findings: Vec::new(),
            last_features: Features::default(),
            prev_process: Vec::new(),
            prev_process_age: 0,
            prev_process_judged: false,
            last_process: None,
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

    /// The discharge pressure from the wellhead pressure and the fluid column above the pump.
    fn column_discharge(&self, m: &Measurements) -> Option<f64> {
        let thp = m.get(Field::TubingPressurePsi)?;
        let depth = self.ctx.setting_depth_ft?;
        Some(thp + depth * self.ctx.sg.unwrap_or(1.0) / FT_PER_PSI_WATER)
    }

    /// Learns how far the measured discharge sits above the column estimate while the pump
    /// runs (see `column_offset`).
    fn learn_column_offset(&mut self, ts: i64, m: &Measurements, running: bool) {
        if let (true, Some(pd), Some(column)) = (
            running,
            m.get(Field::DischargePressurePsi),
            self.column_discharge(m),
        ) {
            let tau = self.th.slow_tau_secs;
            self.column_offset.update(ts, pd - column, tau);
        }
    }

    fn normalise(&self, m: &Measurements) -> Normalised {
        let f = m.get(Field::FrequencyHz);
        let reference = self.reference_hz.or(self.ctx.base_hz).or(f).unwrap_or(60.0);
        // Speed over the reference. Without a frequency channel, a V/Hz drive's output voltage
        // against the baseline's tells it (a PIP controller moves the speed by itself).
        let r = match f {
            Some(f) => (f / reference).max(0.05),
            None => match (
                m.get(Field::MotorVoltageV),
                self.baseline.as_ref().and_then(|b| b.volts_v),
            ) {
                (Some(v), Some(vb)) if vb > 1.0 => (v / vb).clamp(
                    self.th.speed_from_voltage_range.0,
                    self.th.speed_from_voltage_range.1,
                ),
                _ => 1.0,
            },
        };
        let current = m.get(Field::MotorCurrentA);
        let no_load = self.no_load_a.unwrap_or(0.0);
        let active_current = current.map(|i| (i * i - no_load * no_load).max(0.0).sqrt() / (r * r));
        let flow_raw = m.get(Field::FlowRateBpd);
        let flow = flow_raw.map(|q| q / r);
        let sg = self.ctx.sg.unwrap_or(1.0);
        // Without a discharge gauge the pump's discharge is the wellhead pressure plus the
        // fluid column above the pump (TDH = dynamic fluid level + wellhead head, the textbook
        // sizing formula; tubing friction is small and moves little at a steady rate).
        let discharge = m.get(Field::DischargePressurePsi).or_else(|| {
            Some(self.column_discharge(m)? + self.column_offset.value().unwrap_or(0.0))
        });
        let tdh_raw = match (discharge, m.get(Field::IntakePressurePsi)) {
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

    /// A reading of the training window: it teaches the baseline, and the run state and the
    /// rules that need only the nameplate judge it already.
    fn train_step(&mut self, ts: i64, values: &Measurements) -> StepOutput {
        let was_running = self.running;
        let running = self.is_running(values);
        let since_start = if running && !was_running {
            0.0
        } else {
            self.secs_since_start(ts)
        };
        let findings = rules::nameplate(
            &self.th,
            &self.ctx,
            values,
            running && since_start >= self.th.ramp_secs,
            false,
        );
        // A reading the nameplate already condemns must not become "healthy" baseline.
        self.train(ts, values, findings.is_empty());
        self.last_features = Features {
            running,
            frequency_hz: values.get(Field::FrequencyHz),
            ..Features::default()
        };
        let list: Vec<(Diagnosis, f64)> = findings
            .iter()
            .map(|f| (f.diagnosis, f.confidence))
            .collect();
        let healthy = running && self.secs_since_start(ts) >= self.th.settle_secs;
        let transitions = self.tracker.step(ts, &list, &[], healthy, &self.th);
        self.last_findings = findings.clone();
        StepOutput {
            training: true,
            findings,
            transitions,
            ..StepOutput::default()
        }
    }

    fn train(&mut self, ts: i64, m: &Measurements, healthy: bool) {
        for f in Field::ALL {
            self.channels[f.index()].train(ts, m.get(f), &self.th);
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
        self.learn_column_offset(ts, m, running);
        let settled = healthy && running && self.secs_since_start(ts) >= self.th.settle_secs;
        if settled {
            let n = self.normalise(m);
            let a = &mut self.acc;
            a.n += 1;
            if let Some(hz) = m.get(Field::FrequencyHz) {
                a.hz.push(hz);
            }
            if let Some(ia) = n.active_current {
                a.active.push(ia);
                a.cur_short.update(ts, ia, self.th.slow_tau_secs);
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
                (&mut a.volts, Field::MotorVoltageV),
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
            // Grown by doubling up to exactly the bound, never past it (a `Vec` would reach
            // 4 096 places).
            let samples = &mut self.train_samples;
            if samples.len() == samples.capacity() {
                let room = (2 * samples.capacity()).clamp(64, TRAINING_SAMPLES);
                samples.reserve_exact(room.saturating_sub(samples.len()).max(1));
            }
            samples.push(TrainingReading::new(m, settled));
            if self.train_samples.len() >= TRAINING_SAMPLES {
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
            c.finish_training(&self.th);
        }
        let a = &self.acc;
        let reference = self.reference_hz.or(self.ctx.base_hz).unwrap_or(60.0);
        if a.n >= 10 {
            let mut l = self.robust_levels();
            self.baseline = Some(Baseline {
                reference_hz: reference,
                operating_hz: a.hz.mean(),
                no_load_current_a: self.no_load_a.unwrap_or(0.0),
                active_current_a: l.level(Level::Active, a.active.mean()).unwrap_or(0.0),
                current_variability: a.cur_dev.std(),
                flow_bpd: l.level(Level::Flow, a.flow.mean()),
                intake_pressure_psi: l.level(Level::Pip, a.pip.mean()),
                discharge_pressure_psi: l.level(Level::Pd, a.pd.mean()),
                tubing_pressure_psi: l.level(Level::Thp, a.thp.mean()),
                tdh_ft: l.level(Level::Tdh, a.tdh.mean()),
                catalog_head_ratio: l.level(Level::CatalogHead, a.chr.mean()),
                vibration_g: l.level(Level::Vibration, a.vib.mean()),
                volts_per_hz: l.level(Level::VoltsPerHz, a.vhz.mean()),
                volts_per_hz_excursion_rate: 0.0,
                volts_v: l.level(Level::Volts, a.volts.mean()),
                winding_rise_c: l.level(Level::Rise, a.rise.mean()),
                efficiency_index: l.level(Level::Efficiency, a.eff.mean()),
                gor_scf_bbl: l.level(Level::Gor, a.gor.mean()),
                readings: a.n,
            });
        }
        if self.baseline.is_some() {
            let samples = std::mem::take(&mut self.train_samples);
            let rate = self.volts_per_hz_excursion_rate(&samples);
            if let Some(b) = self.baseline.as_mut() {
                b.volts_per_hz_excursion_rate = rate;
            }
            let vectors: Vec<FeatureVec> = samples
                .iter()
                .filter(|r| r.settled)
                .map(|r| {
                    let m = r.measurements();
                    let n = self.normalise(&m);
                    self.feature_vector(&self.features_of(&m, &n))
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

    /// The settled training readings kept in the thinned sample, as the baseline's quantities
    /// (see [`RobustLevels`]).
    fn robust_levels(&self) -> RobustLevels {
        let mut l = RobustLevels {
            values: std::array::from_fn(|_| Vec::new()),
            mads: self.th.baseline_spike_mads,
            shift: self.th.baseline_spike_shift,
            share: self.th.baseline_spike_share,
        };
        for r in self.train_samples.iter().filter(|r| r.settled) {
            let m = r.measurements();
            let n = self.normalise(&m);
            for (level, v) in [
                (Level::Active, n.active_current),
                (Level::Flow, n.flow),
                (Level::Pip, m.get(Field::IntakePressurePsi)),
                (Level::Pd, m.get(Field::DischargePressurePsi)),
                (Level::Thp, m.get(Field::TubingPressurePsi)),
                (Level::Tdh, n.tdh),
                (Level::CatalogHead, n.catalog_head_ratio),
                (Level::Vibration, n.vibration),
                (Level::VoltsPerHz, n.volts_per_hz),
                (Level::Volts, m.get(Field::MotorVoltageV)),
                (Level::Rise, n.rise),
                (Level::Efficiency, n.efficiency),
                (Level::Gor, m.get(Field::GorScfBbl)),
            ] {
                if let Some(v) = v.filter(|v| v.is_finite()) {
                    l.values[level as usize].push(v);
                }
            }
        }
        l
    }

    /// Share of the settled training readings whose V/Hz lies outside the excursion band.
    /// Without a frequency channel, the voltage against its training mean stands in.
    fn volts_per_hz_excursion_rate(&self, samples: &[TrainingReading]) -> f64 {
        let Some(b) = self.baseline.as_ref() else {
            return 0.0;
        };
        let (base, by_volts) = match (b.volts_per_hz, b.volts_v) {
            (Some(vhz), _) => (vhz, false),
            (None, Some(v)) => (v, true),
            _ => return 0.0,
        };
        let (mut n, mut out) = (0u32, 0u32);
        for r in samples {
            let (m, settled) = (r.measurements(), &r.settled);
            let ratio = if by_volts {
                m.get(Field::MotorVoltageV).map(|v| v / base)
            } else {
                match (m.get(Field::MotorVoltageV), m.get(Field::FrequencyHz)) {
                    (Some(v), Some(f)) => drive_supply_ratio(v, f, b),
                    _ => None,
                }
            };
            if let (true, Some(r)) = (*settled, ratio) {
                n += 1;
                if (r - 1.0).abs() > self.th.voltage_deviation {
                    out += 1;
                }
            }
        }
        if n == 0 { 0.0 } else { out as f64 / n as f64 }
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

    /// The current ratio of a pump that ran right on its own curve to the head ratio `h`:
    /// what a leak (more flow through the pump, less head) can explain. The baseline flow is
    /// the meter's, or without one where the catalog curve gives the baseline head. `None`
    /// without a curve with power, or when the curve does not reach that head.
    pub(crate) fn current_ratio_for_head(&self, h: f64) -> Option<f64> {
        let b = self.baseline.as_ref()?;
        let curve = self.ctx.curve.as_ref()?;
        let qb = match b.flow_bpd {
            Some(q) => q,
            None => {
                let per_stage = b.tdh_ft? / self.ctx.stages?;
                curve.flow_at_head_right_of(curve.bep_flow() * 0.5, per_stage)?
            }
        };
        let q = curve.flow_at_head_right_of(qb, h * curve.head_ft(qb))?;
        let (p0, p1) = (curve.bhp(qb), curve.bhp(q));
        if p0 <= 1e-9 || p1.is_nan() {
            return None;
        }
        let (nl, active) = (b.no_load_current_a, b.active_current_a);
        let base = nl.hypot(active);
        (base > 1e-9).then(|| nl.hypot(active * p1 / p0) / base)
    }

    /// A well that reports its drive frequency sometimes drops the tag for a poll. Read from
    /// the voltage instead, its speed (and every ratio normalised by it) would jump for one
    /// reading. The speed cannot move between two polls without the drive's output voltage
    /// moving with it, so while the voltage holds within `frequency_hold_voltage_band` of the
    /// last reading that had both, within `frequency_hold_secs`, the frequency is that one.
    fn hold_dropped_frequency(&mut self, ts: i64, m: &mut Measurements) {
        let volts = m.get(Field::MotorVoltageV);
        match (m.get(Field::FrequencyHz), volts) {
            (Some(f), Some(v)) => self.last_drive = Some((ts, f, v)),
            (None, Some(v)) => {
                if let Some((t, f, v0)) = self.last_drive
                    && (ts - t) as f64 / MICROS <= self.th.frequency_hold_secs
                    && v0 > 1.0
                    && (v / v0 - 1.0).abs() <= self.th.frequency_hold_voltage_band
                {
                    m.set(Field::FrequencyHz, Some(f));
                }
            }
            _ => {}
        }
    }

    fn secs_since_start(&self, ts: i64) -> f64 {
        (ts - self.running_since) as f64 / MICROS
    }

    fn update_run_state(&mut self, ts: i64, running: bool) {
        // A stop this long (or a gap in the data hiding one) may have been a workover (the
        // tubing repaired, the pump replaced): a head loss latched before it is judged afresh,
        // against the baseline, once the pump has settled.
        let idle_secs = self.last_running_at.map(|t| (ts - t) as f64 / MICROS);
        if running && idle_secs.is_some_and(|secs| secs >= self.th.workover_stop_secs) {
            self.head_loss = HeadLoss::default();
            self.gas_locked_lately = false;
        }
        if running && !self.running {
            self.running_since = ts;
            self.starts.push_back(ts);
            for ch in &mut self.channels {
                ch.reset_level();
            }
            self.head_normal_at = None;
            self.loaded_at = None;
            self.unload = Unload::default();
            self.delivering_since = None;
            self.intake_near_level_since = None;
            self.intake_rested = false;
            // The motor's thermal levels outlast a stop: a winding warming back up after a
            // restart is judged against where it ran before, not against its cold start.
            let (rise, rise_level) = (self.sm.rise, self.sm.rise_level);
            let rise_held = std::mem::take(&mut self.sm.rise_held);
            let unexplained_rise_held = std::mem::take(&mut self.sm.unexplained_rise_held);
            let rise_level_at_start = rise_level.value();
            self.sm = Smoothed {
                rise,
                rise_held,
                unexplained_rise_held,
                rise_level,
                rise_level_at_start,
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
        if running {
            self.last_running_at = Some(ts);
        }
    }

    fn features_of(&self, m: &Measurements, n: &Normalised) -> Features {
        let Some(b) = &self.baseline else {
            return Features::default();
        };
        let expected_current = b.expected_current_a(n.r);
        let current_ratio = n
            .current
            .filter(|_| expected_current > 0.1)
            .map(|i| i / expected_current);
        let head_ratio = match (n.catalog_head_ratio, b.catalog_head_ratio) {
            (Some(h), Some(hb)) => Some(h / hb),
            _ => ratio(n.tdh, b.tdh_ft),
        };
        // The winding rise the load explains: losses are part fixed (iron, friction) and part
        // copper (∝ I²). The fluid passing the motor carries the heat away (film coefficient
        // ∝ velocity^0.8): `cooling_ratio` says how much less flow explains a hotter motor.
        let flow_ratio = ratio(n.flow, b.flow_bpd);
        let tubing_pressure_ratio = ratio(m.get(Field::TubingPressurePsi), b.tubing_pressure_psi);
        // Without a flow meter the wellhead tells the delivery: the flow through the choke and
        // flowline goes with the square root of the pressure they drop, of which the wellhead
        // pressure is the upper bound (the back-pressure beyond is unknown). So √ of its ratio
        // understates a loss of flow, and the heat that loss explains is a lower bound: a worn
        // pump delivering less warms its motor by the cooling it no longer gets, not by scale.
        let delivery_ratio = flow_ratio
            .map(|q| q * n.r)
            .or_else(|| tubing_pressure_ratio.map(f64::sqrt));
        let cooling_ratio =
            delivery_ratio.map(|q| q.clamp(0.3, 2.0).powf(self.th.cooling_flow_exponent));
        // Both in absolute terms: a faster pump draws more amps and moves more fluid.
        let baseline_amps = b.no_load_current_a.hypot(b.active_current_a);
        let amps_ratio = n
            .current
            .filter(|_| baseline_amps > 0.1)
            .map(|i| i / baseline_amps);
        let rise_ratio = match (n.rise, b.winding_rise_c, amps_ratio) {
            (Some(r), Some(rb), Some(c)) if rb > 0.5 => {
                let fixed = self.th.motor_fixed_loss_share;
                let losses = fixed + (1.0 - fixed) * c * c;
                Some(r / (rb * losses.max(0.3)))
            }
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
            tubing_pressure_ratio,
            flow_ratio,
            head_ratio,
            pressure_rise_ratio: ratio(n.tdh, b.tdh_ft),
            vibration_ratio: ratio(n.vibration, b.vibration_g),
            winding_rise_ratio: rise_ratio,
            cooling_ratio,
            volts_per_hz_ratio: match (m.get(Field::MotorVoltageV), m.get(Field::FrequencyHz)) {
                (Some(v), Some(f)) if f > 1.0 => drive_supply_ratio(v, f, b),
                _ => None,
            },
            efficiency_ratio: ratio(n.efficiency, b.efficiency_index),
            gor_ratio: ratio(m.get(Field::GorScfBbl), b.gor_scf_bbl),
            tdh_ft: n.tdh.map(|h| h * n.r * n.r),
            system_efficiency,
        }
    }

    /// The well was learned without a frequency channel: its ratios are not at a known speed.
    fn speed_unknown(&self) -> bool {
        self.baseline
            .as_ref()
            .is_some_and(|b| b.operating_hz.is_none())
    }

    fn feature_vector(&self, f: &Features) -> FeatureVec {
        // With the catalog curve the head ratio is the pump against its own curve at the
        // measured flow: it stays at 1 wherever a healthy pump runs. The flow against the
        // baseline's says where it runs (a PIP controller slowing it left of its range, an
        // operator speeding it up), which the rules judge with the well's context; in the
        // model it made every new operating point an anomaly. The efficiency stays: a load
        // that no longer matches the output is the model's to see.
        let on_curve = self.ctx.curve.is_some()
            && self
                .baseline
                .as_ref()
                .is_some_and(|b| b.catalog_head_ratio.is_some());
        let flow_ratio = f.flow_ratio.filter(|_| !on_curve);
        // Without a frequency channel the speed is unknown, and a drive that changes it (a PIP
        // controller, an operator) moves current, head and flow together along the affinity
        // laws: head ∝ n², flow ∝ n, a drive's current ∝ torque ∝ n². What a speed change
        // leaves alone is the load per unit of head and the flow at the head's speed (q/√h);
        // a pump that lost head for its load (wear, a leak, drag) still moves them.
        let (current, head, flow) = if self.speed_unknown() {
            let h = f.head_ratio.filter(|h| *h > 0.05);
            (
                f.current_ratio.zip(h).map(|(c, h)| c / h),
                None,
                flow_ratio.zip(h).map(|(q, h)| q / h.sqrt()),
            )
        } else {
            (f.current_ratio, f.head_ratio, flow_ratio)
        };
        let v: [Option<f64>; NF] = [
            current,
            head,
            flow,
            f.vibration_ratio,
            f.winding_rise_ratio,
            f.volts_per_hz_ratio,
            f.efficiency_ratio,
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
        if let Some(last) = self.last_ts {
            // A gap (dropout, stop) is not the sampling rate.
            let dt = ((ts - last) as f64 / MICROS).min(self.th.max_sample_interval_secs);
            self.sample_interval.push(dt);
        }
        self.last_ts = Some(ts);
        self.first_ts.get_or_insert(ts);
        self.readings += 1;
        if !self.trained {
            if self.in_training(ts) {
                return self.train_step(ts, values);
            }
            self.finish_training();
        }
        self.diagnose(ts, values)
    }

    /// Channel health: hides stuck, spiking and dropped-out channels from the rules and reports
    /// them as `sensor_fault`.
    fn channel_health(&mut self, ts: i64, raw: &Measurements) -> (Measurements, Option<Finding>) {
        let th = &self.th;
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
        .filter(|f| self.channels[f.index()].departure(raw.get(**f)) > th.system_change_departure)
        .count();
        let system_changed = moved >= 2;
        let at_rest = !self.is_running(raw);
        let process: Process = PROCESS.map(|f| match f {
            Field::FrequencyHz => raw.get(f),
            _ => self.channels[f.index()].level(),
        });
        for f in WATCHED {
            let mut others = process;
            if let Some(own) = PROCESS.iter().position(|p| *p == f) {
                others[own] = None;
            }
            let (usable, fault) = self.channels[f.index()].observe(
                ts,
                raw.get(f),
                system_changed,
                at_rest,
                &others,
                th,
            );
            clean.set(f, usable);
            if let Some(fault) = fault {
                faults.push((f, fault, self.channels[f.index()].stuck_run));
            }
        }
        for f in NOISE_JUDGED {
            if judge_noise(&mut self.channels, f, th) && !faults.iter().any(|(g, _, _)| *g == f) {
                faults.push((f, ChannelFault::Noisy, 0));
            }
        }
        if faults.is_empty() {
            return (clean, None);
        }
        // A channel reported faulty is left out of every rule until it recovers: the other
        // channels tell the story.
        for (f, _, _) in &faults {
            clean.set(*f, None);
        }
        let evidence = faults
            .iter()
            .map(|(f, kind, run)| {
                let (value, threshold) = match kind {
                    ChannelFault::Stuck => (*run as f64, th.stuck_min_readings as f64),
                    ChannelFault::Spikes | ChannelFault::Erratic => {
                        (th.spike_count as f64, th.spike_count as f64)
                    }
                    ChannelFault::Dropout => {
                        (self.channels[f.index()].missing_share(), th.dropout_share)
                    }
                    ChannelFault::Noisy => {
                        // Judged on the higher bar, held on the lower one.
                        let r = self.channels[f.index()].noise_ratio().unwrap_or(0.0);
                        let bar = if r >= th.noise_ratio {
                            th.noise_ratio
                        } else {
                            th.noise_ratio_off
                        };
                        (r, bar)
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
        (
            clean,
            Some(Finding::new(Condition::SensorFault, 0.85, evidence)),
        )
    }

    /// A step of the drive frequency (operator change, PIP controller hunting, ramp) starts a
    /// short grace period: the fluid level and the smoothed features need time to settle.
    ///
    /// Without a frequency channel, the drive's output voltage stands in for the speed (a V/Hz
    /// drive moves both together); a gauge spike is one reading, so the voltage must stay off
    /// its level for two readings in a row.
    fn track_transients(&mut self, ts: i64, m: &Measurements, running: bool) {
        let (speed, from_voltage) = match m.get(Field::FrequencyHz) {
            Some(f) => (Some(f), false),
            None if running => (m.get(Field::MotorVoltageV), true),
            None => (None, true),
        };
        let Some(f) = speed.filter(|f| *f > 1.0) else {
            self.speed_held_at = None;
            return;
        };
        if self
            .speed_held_at
            .is_none_or(|(held, _)| (f - held).abs() > self.th.held_speed_band * held)
        {
            self.speed_held_at = Some((f, ts));
        }
        let stepped = self
            .frequency_level
            .value()
            .is_some_and(|level| (f - level).abs() > self.th.transient_frequency_step * level);
        let confirmed = stepped && (!from_voltage || self.speed_step_pending);
        self.speed_step_pending = stepped && from_voltage && !confirmed;
        if confirmed {
            self.transient_until = self
                .transient_until
                .max(ts + (self.th.transient_grace_secs * MICROS) as i64);
        }
        if !self.speed_step_pending {
            self.frequency_level.update(ts, f, self.th.fast_tau_secs);
        }
    }

    /// One step of the ammeter's resolution in current-ratio units, at the present load.
    fn current_step_ratio(&self) -> f64 {
        let step = self.channels[Field::MotorCurrentA.index()].resolution();
        match (step, self.sm.fast_cur.value(), self.sm.fast_cur_abs.value()) {
            (Some(step), Some(ratio), Some(amps)) if amps > 0.0 => step * ratio / amps,
            _ => 0.0,
        }
    }

    /// Whether the intake pressure has come to rest since the start (see `rest_pip_band`).
    /// Judged from the settling time on: before it, the smoothed levels are still young. A
    /// well without an intake gauge is at rest once settled.
    fn track_intake_rest(&mut self, ts: i64, settled: bool, th: &Thresholds) {
        if self.intake_rested || !settled {
            return;
        }
        let near = match (self.sm.pip.value(), self.sm.settle_pip.value()) {
            (Some(now), Some(level)) if level > 0.0 => {
                ((now - level) / level).abs() <= th.rest_pip_band
            }
            _ => true,
        };
        if !near {
            self.intake_near_level_since = None;
            return;
        }
        let since = *self.intake_near_level_since.get_or_insert(ts);
        self.intake_rested = (ts - since) as f64 / MICROS >= th.rest_hold_secs;
    }

    /// Marks a known transient (e.g. a well test reported by the operator) until `until`:
    /// only the rules that protect the equipment judge until then.
    pub fn mark_transient(&mut self, until: Timestamp) {
        self.transient_until = self.transient_until.max(until.0);
    }

    fn diagnose(&mut self, ts: i64, raw: &Measurements) -> StepOutput {
        let (mut clean, sensor) = self.channel_health(ts, raw);
        self.hold_dropped_frequency(ts, &mut clean);
        // The voltage level before this reading (for wells without V/Hz).
        let volts_level = self.sm.fast_volts.value();
        // Run state.
        let running = self.is_running(&clean);
        let tripped = self.running && !running;
        if tripped {
            // Stopped while locked, or still fighting the gas since a lock: the restart faces
            // the same gas. Any other stop ends the story.
            let lock = Diagnosis::Condition(Condition::GasLock);
            let interference = Diagnosis::Condition(Condition::GasInterference);
            self.gas_locked_lately = self.tracker.any_open(|d, _| d == lock)
                || self.last_findings.iter().any(|f| f.diagnosis == lock)
                || (self.gas_locked_lately && self.tracker.any_open(|d, _| d == interference));
        }
        self.update_run_state(ts, running);
        self.learn_column_offset(ts, &clean, running);
        self.track_transients(ts, &clean, running);
        let th = Arc::clone(&self.th);
        let since_start = self.secs_since_start(ts);
        let in_grace = ts < self.transient_until;
        let settled = running && since_start >= th.settle_secs && !in_grace;
        let mut n = self.normalise(&clean);
        if self.flow_meter_bypassed(&clean, &n, running) {
            clean.set(Field::FlowRateBpd, None);
            n = self.normalise(&clean);
        }
        let mut feats = self.features_of(&clean, &n);
        if !running {
            feats = feats.stopped();
        }
        self.last_features = feats;
        let mut findings: Vec<Finding> = Vec::new();
        findings.extend(sensor);

        // Judged against the speed the well was learned at when that is below the nameplate's
        // base: a pump turned down to 40 Hz of a 60 Hz motor for its whole life runs at speed.
        // A drive turned down further and held there (a lower set point, a well short of
        // inflow) is running, not ramping, once its speed has stayed put for the settling time.
        let learned_hz = self.baseline.as_ref().map_or(0.0, |b| {
            b.operating_hz
                .map_or(b.reference_hz, |o| o.min(b.reference_hz))
        });
        let speed_held = self
            .speed_held_at
            .is_some_and(|(_, since)| (ts - since) as f64 / MICROS >= th.settle_secs);
        let at_speed = feats.frequency_hz.is_none_or(|f| {
            f >= th.min_running_frequency_ratio * learned_hz
                || (speed_held && f >= th.min_held_frequency_ratio * learned_hz)
        });
        let ramped = running && since_start >= th.ramp_secs && at_speed;
        let judged = ramped && self.baseline.is_some();
        if judged {
            self.sm.update(ts, &feats, &clean, &th);
            self.sm.thermal_level.update(ts, &feats, since_start, &th);
            self.process_rules(ts, settled, &clean, &feats, &th, &mut findings);
            // A pump that gas-locked (and tripped, or came back by itself) fights the same gas:
            // the gas that lightens it again may be the lock coming back (lock, trip, restart,
            // lock) or interference it now lives with. Nothing in the readings tells the two
            // apart until it locks again, so it is not reported at the confidence that calls
            // for action at once.
            let lock = Diagnosis::Condition(Condition::GasLock);
            let interference = Diagnosis::Condition(Condition::GasInterference);
            if self.gas_locked_lately {
                for f in findings.iter_mut().filter(|f| f.diagnosis == interference) {
                    f.confidence = f.confidence.min(th.gas_after_lock_confidence);
                }
            }
            self.gas_locked_lately |= findings.iter().any(|f| f.diagnosis == lock);
        } else {
            // Right after a start (or without a baseline) the nameplate still judges: the relay
            // may trip an overloaded motor before the settling time is over.
            // A pump drawing a full annulus down at speed loads its motor by its own lift.
            findings.extend(rules::nameplate(
                &th,
                &self.ctx,
                &clean,
                running && at_speed,
                self.baseline.is_some() && rules::lifting_more_from_full_intake(&th, &feats),
            ));
            if running && self.baseline.is_some() {
                findings.extend(rules::deadhead_at_start(&th, &feats));
            }
        }
        let volts = match (clean.get(Field::MotorVoltageV), volts_level) {
            (Some(v), Some(level)) if level > 1.0 => Some(v / level),
            _ => None,
        };
        self.power_rule(ts, ramped, &feats, volts, &th, &mut findings);
        let (score, pointwise) = self.anomaly_step(ts, running, since_start, &feats, &mut findings);
        let transitions = self.episodes_step(ts, tripped, settled, judged, &findings);
        self.last_findings = findings.clone();
        StepOutput {
            training: false,
            anomaly_score: score,
            anomaly: pointwise,
            findings,
            transitions,
        }
    }

    /// The flow meter reads (almost) nothing while the motor draws its baseline current and
    /// the pump builds its baseline pressure rise at this speed. A centrifugal pump at its
    /// baseline speed, head and power moves its baseline flow (its curve ties the three
    /// together), so the meter is not measuring this pump: the production is routed past it
    /// (a well test through the test separator) or the meter failed. Every condition that
    /// really stops the flow moves the load or the head as well: a closed valve raises the
    /// head to shut-off and drops the current, a broken shaft or gas lock drops the current,
    /// pump-off drops the current and the intake. Without a discharge gauge, an intake
    /// pressure (and a wellhead pressure, where measured) at baseline stand in for the head:
    /// the pump still lifts the same column from the same level.
    fn flow_meter_bypassed(&self, m: &Measurements, n: &Normalised, running: bool) -> bool {
        let th = &self.th;
        let (Some(b), Some(q)) = (self.baseline.as_ref(), m.get(Field::FlowRateBpd)) else {
            return false;
        };
        let Some(qb) = b.flow_bpd.filter(|q| *q > 1.0) else {
            return false;
        };
        if !running {
            return false;
        }
        let expected_current = b.expected_current_a(n.r);
        let Some(i) = n.current.filter(|_| expected_current > 0.1) else {
            return false;
        };
        let near = |x: f64| (x - 1.0).abs() <= th.meter_bypass_tolerance;
        let head_at_baseline = match (n.tdh, b.tdh_ft) {
            (Some(h), Some(hb)) if hb > 1.0 => near(h / hb),
            _ => {
                let intake = ratio(m.get(Field::IntakePressurePsi), b.intake_pressure_psi);
                let wellhead = ratio(m.get(Field::TubingPressurePsi), b.tubing_pressure_psi);
                intake.is_some_and(near) && wellhead.is_none_or(near)
            }
        };
        q / n.r < th.meter_bypass_flow_ratio * qb && near(i / expected_current) && head_at_baseline
    }

    /// How many supply excursions within the window make a disturbed supply. Every gauge has
    /// spikes: the excursions this well's healthy readings already showed at this sampling rate
    /// are expected in any window; only a count well beyond them (Poisson, ~3 sigma) counts.
    fn excursions_needed(&self) -> f64 {
        let th = &self.th;
        let expected = match (self.baseline.as_ref(), self.sample_interval.typical()) {
            (Some(b), Some(dt)) if dt > 0.0 => {
                b.volts_per_hz_excursion_rate * self.supply_window_secs() / dt
            }
            _ => 0.0,
        };
        (th.voltage_min_excursions as f64)
            .max((expected + th.voltage_excess_sigmas * expected.sqrt() + 1.0).ceil())
    }

    /// The window in which supply excursions are counted: `voltage_window_secs`, or longer for
    /// a sparsely read gauge, so that it holds `voltage_window_min_readings` readings.
    fn supply_window_secs(&self) -> f64 {
        let th = &self.th;
        let dt = self.sample_interval.typical().unwrap_or(0.0);
        th.voltage_window_secs
            .max(th.voltage_window_min_readings * dt)
    }

    /// The supply was disturbed within the power window: current and pressures then swing
    /// with the voltage, and that says nothing about the fluid.
    fn supply_disturbed(&mut self, ts: i64) -> bool {
        if self.volt_excursions.len() as f64 >= self.excursions_needed() {
            self.supply_calm_from = ts + (3.0 * self.th.slow_tau_secs * MICROS) as i64;
        }
        ts < self.supply_calm_from
    }

    /// Power: V/Hz excursions, also around undervoltage trips. Judged only at speed and past
    /// the start ramp (`at_speed_past_ramp`): while a drive accelerates or coasts down its
    /// output is not on its steady V/Hz line (voltage boost at low speed, slip), so a pump that
    /// keeps failing to restart is not a disturbed supply.
    fn power_rule(
        &mut self,
        ts: i64,
        at_speed_past_ramp: bool,
        feats: &Features,
        volts_ratio: Option<f64>,
        th: &Thresholds,
        findings: &mut Vec<Finding>,
    ) {
        // Without a frequency channel V/Hz is unknown: each voltage reading against the level
        // of the last minute (a drive moving its speed changes it far more slowly than a sag).
        let supply = feats.volts_per_hz_ratio.or(volts_ratio);
        let hz = feats.frequency_hz;
        let steady_speed = match (hz, self.supply_last_hz) {
            (Some(f), Some(last)) => (f - last).abs() <= th.voltage_steady_speed_step * last,
            (Some(_), None) => false,
            (None, _) => true,
        };
        self.supply_last_hz = hz;
        if at_speed_past_ramp
            && steady_speed
            && let Some(v) = supply
        {
            let out = (v - 1.0).abs() > th.voltage_deviation;
            if out && !self.in_excursion {
                self.volt_excursions.push_back(ts);
            }
            self.in_excursion = out;
        }
        let window = self.supply_window_secs();
        while let Some(&t) = self.volt_excursions.front() {
            if ts - t > (window * MICROS) as i64 {
                self.volt_excursions.pop_front();
            } else {
                break;
            }
        }
        let needed = self.excursions_needed();
        let n = self.volt_excursions.len() as f64;
        if n >= needed {
            let conf = (0.6 + 0.1 * (n - needed)).min(0.95);
            findings.push(Finding::new(
                Condition::PowerFluctuation,
                conf,
                vec![Evidence::new("volts_per_hz_excursions", n, needed, ">=")],
            ));
        }
    }

    /// The learned model's score: pointwise flag at every reading; an `anomaly` finding only
    /// when the smoothed score stays strong (`anomaly_alarm_score`) for `anomaly_persist_secs`
    /// and no process rule explains it, naming the channels that drive it.
    fn anomaly_step(
        &mut self,
        ts: i64,
        running: bool,
        since_start: f64,
        feats: &Features,
        findings: &mut Vec<Finding>,
    ) -> (f64, bool) {
        let th = &self.th;
        let Some(model) = self.model.as_ref().filter(|_| running) else {
            self.anomaly_alarm = false;
            self.anomaly_above_since = None;
            self.anomaly_smooth.reset();
            return (0.0, false);
        };
        let x = self.feature_vector(feats);
        let scored = model.score(&x);
        let (score, pointwise) = (scored.score, scored.score > 1.0);
        // Normal life drifts (reservoir, water cut, wear within tolerance): a reading that is
        // close to the envelope, while nothing is found or open, moves the model's centre by a
        // time-weighted step (time constant `anomaly_adapt_secs`). A fault scores far above.
        let calm = score < th.anomaly_adapt_below
            && findings.is_empty()
            && since_start >= th.anomaly_settle_secs
            && ts >= self.transient_until
            && !self.tracker.any_open(|_, _| true);
        let dt = self
            .anomaly_adapted_at
            .map_or(0.0, |t| (ts - t) as f64 / MICROS);
        self.anomaly_adapted_at = Some(ts);
        if calm && dt > 0.0 {
            let weight = (dt / th.anomaly_adapt_secs).min(1.0);
            if let Some(model) = self.model.as_mut() {
                model.adapt(&x, weight);
            }
        }
        let Some(model) = self.model.as_ref() else {
            return (score, pointwise);
        };
        // The alarm waits until the fluid level has settled after a start (hours).
        if since_start < th.anomaly_settle_secs || ts < self.transient_until {
            self.anomaly_alarm = false;
            self.anomaly_above_since = None;
            self.anomaly_smooth.reset();
            return (score, pointwise);
        }
        self.anomaly_smooth
            .update(ts, scored.alarm_score, th.anomaly_smooth_secs);
        let s = self.anomaly_smooth.mean;
        if s > th.anomaly_alarm_score {
            let since = *self.anomaly_above_since.get_or_insert(ts);
            if ts - since >= (th.anomaly_persist_secs * MICROS) as i64 {
                self.anomaly_alarm = true;
            }
        } else {
            self.anomaly_above_since = None;
            if s < th.anomaly_clear * th.anomaly_alarm_score {
                self.anomaly_alarm = false;
            }
        }
        // A head drifting off its baseline is a wear/scale/leak finding in the making: the
        // rule will name it; an anomaly now would only be the same thing under a vaguer name.
        let explained = self.head_loss.departed.is_some()
            || findings.iter().any(|f| f.diagnosis.is_process())
            || self
                .tracker
                .any_open(|d, _| d.is_process() && d != Diagnosis::Anomaly);
        if self.anomaly_alarm && !explained {
            let names = if self.speed_unknown() {
                &anomaly::SPEED_FREE_FEATURES
            } else {
                &anomaly::FEATURES
            };
            let top = model.top_contributors(&x, 3, names);
            // Raised above the alarm level; held (hysteresis) while above the clear level.
            let level = if s > th.anomaly_alarm_score {
                th.anomaly_alarm_score
            } else {
                th.anomaly_clear * th.anomaly_alarm_score
            };
            let evidence = std::iter::once(Evidence::new("anomaly_score", s, level, ">"))
                .chain(
                    top.into_iter()
                        .map(|(name, z)| Evidence::new(&format!("{name}.z"), z, 3.0, "|z| >")),
                )
                .collect();
            findings.push(Finding {
                diagnosis: Diagnosis::Anomaly,
                confidence: (0.4 + 0.05 * s).min(0.75),
                evidence,
                action: action_for(Diagnosis::Anomaly),
            });
        }
        (score, pointwise)
    }

    /// Episodes. A stop right after loss-of-lift, overload or overheat evidence (or gas
    /// unloading the motor down to the underload setting) is the protection relay (or the
    /// winding's thermal trip) confirming it: the evidence may have
    /// had only a reading or two to show. A reading
    /// caught while the drive decelerates (running, no longer at speed, so not `judged` by
    /// the process rules) stands between the evidence found at speed and the stop without
    /// replacing it. (While starting, only the latest reading counts: an overshoot's inrush
    /// that the drive rides out is no overload the stop confirms.)
    fn episodes_step(
        &mut self,
        ts: i64,
        tripped: bool,
        settled: bool,
        judged: bool,
        findings: &[Finding],
    ) -> Transitions {
        let th = &self.th;
        let mut list: Vec<(Diagnosis, f64)> = findings
            .iter()
            .map(|f| (f.diagnosis, f.confidence))
            .collect();
        let mut confirmed = Vec::new();
        let recent = self.prev_process_age <= th.trip_confirm_readings;
        if tripped {
            for (d, c) in std::mem::take(&mut self.prev_process) {
                if recent
                    && matches!(
                        d,
                        Diagnosis::Condition(
                            Condition::ClosedValve
                                | Condition::GasInterference
                                | Condition::GasLock
                                | Condition::BrokenShaft
                                | Condition::Overload
                                | Condition::MotorOverheat
                                | Condition::PumpOff
                        )
                    )
                    // The relay acts on heat built up over time: one reading over the bar
                    // before a stop is as likely a start-up surge caught by a slow poll.
                    && (!d.is_thermal()
                        || self
                            .tracker
                            .pending(d)
                            .is_some_and(|(_, n)| n >= th.raise_readings))
                    // Gas tripping the pump on underload after unloading it for a while is
                    // the interference the relay confirms; a trip moments after the first
                    // sign of gas is a lock (its onset caught between two readings).
                    && (d != Diagnosis::Condition(Condition::GasInterference)
                        || self.tracker.pending(d).is_some_and(|(first, _)| {
                            ts - first >= (th.unload_confirm_secs * MICROS) as i64
                        }))
                {
                    list.push((d, c));
                    confirmed.push(d);
                }
            }
        }
        // Overload and overheat wait `thermal_persist_secs` for the relay to ride a short
        // excess out. A trip after evidence that had persisted the critical raise time is the
        // relay (or the winding's thermal protection) not riding it out: it confirms it.
        if tripped
            && let Some((at, last)) = &self.last_process
            && ts - at <= (th.trip_confirm_secs * MICROS) as i64
        {
            for &(d, c) in last {
                let persisted = self.tracker.pending(d).is_some_and(|(first, n)| {
                    n >= th.raise_readings && at - first >= (th.raise_secs * MICROS) as i64
                });
                if d.is_thermal() && persisted && !confirmed.contains(&d) {
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
            && self.tracker.any_open(|d, start| {
                d == gas_interference && ts - start <= (th.switch_secs * MICROS) as i64
            })
        {
            self.tracker.retag(gas_interference, gas_lock);
        }
        let process: Vec<(Diagnosis, f64)> = findings
            .iter()
            .filter(|f| f.diagnosis.is_process())
            .map(|f| (f.diagnosis, f.confidence))
            .collect();
        if !process.is_empty() {
            self.last_process = Some((ts, process.clone()));
        }
        if judged || !process.is_empty() || !self.prev_process_judged {
            self.prev_process = process;
            self.prev_process_age = 0;
            self.prev_process_judged = judged;
        } else {
            self.prev_process_age = self.prev_process_age.saturating_add(1);
        }
        self.tracker.step(ts, &list, &confirmed, settled, th)
    }

    fn process_rules(
        &mut self,
        ts: i64,
        settled: bool,
        m: &Measurements,
        f: &Features,
        th: &Thresholds,
        out: &mut Vec<Finding>,
    ) {
        // At rest as of the readings before this one; this reading then counts towards it.
        let at_rest =
            settled && (self.intake_rested || self.secs_since_start(ts) >= th.settle_max_secs);
        self.track_intake_rest(ts, settled, th);
        let supply_disturbed = self.supply_disturbed(ts);
        let erratic_limit = {
            let b = self.baseline.as_ref().expect("trained");
            th.erratic_std
                .max(th.erratic_factor * b.current_variability)
        };
        let window = th.gas_swing_window_secs;
        self.cur_swings.update(
            ts,
            self.sm.fast_cur.value(),
            self.sm.cur.value(),
            erratic_limit,
            window,
        );
        self.pd_swings.update(
            ts,
            f.discharge_pressure_ratio,
            self.sm.pd.value(),
            erratic_limit,
            window,
        );
        match f.current_ratio {
            Some(c) if c >= th.gas_lock_current_ratio => {
                self.loaded_at = Some(ts);
                self.unload = Unload::default();
            }
            Some(c) if c < th.unloaded_current_ratio && !self.unload.unloaded => {
                self.unload.unloaded = true;
                // A fall seen by no reading on its way was as quick as the polling tells.
                self.unload.secs = self
                    .loaded_at
                    .map(|t| (ts - t) as f64 / MICROS)
                    .filter(|_| self.unload.readings_on_the_way > 0);
            }
            Some(c) if c < th.unloaded_current_ratio => {}
            Some(_) if self.unload.unloaded => self.unload.load_returned = true,
            Some(_) => self.unload.readings_on_the_way += 1,
            None => {}
        }
        if f.current_ratio
            .is_some_and(|c| c >= th.unloaded_current_ratio)
        {
            self.last_turning_at = Some(ts);
        }
        let b = self.baseline.as_ref().expect("trained");
        // A speed step (or a marked transient) moves the operating point as a start does.
        if !settled {
            self.head_normal_at = None;
        } else if self
            .sm
            .head
            .value()
            .is_some_and(|h| h >= th.head_departure_ratio())
        {
            self.head_normal_at = Some(ts);
        }
        // Drag comes within the hour (an emulsion, a sand slug); wear costs head and adds
        // friction over days and is the head rules' to judge.
        let head_lost_lately = self
            .head_normal_at
            .is_some_and(|t| (ts - t) as f64 / MICROS <= th.drag_head_window_secs);
        let cur_unexplained = self.unexplained_current_ratio(
            self.sm.fast_cur.value(),
            self.sm.fast_flow.value(),
            f.frequency_hz,
        );
        let input = rules::Input {
            ts,
            th,
            ctx: &self.ctx,
            b,
            s: &self.sm,
            f,
            m,
            settled,
            at_rest,
            cur_unexplained,
            cur_step_ratio: self.current_step_ratio(),
            // Only below the departure ratio does either reader use it: keeps the curve
            // bisection off the healthy hot path.
            cur_for_head: self
                .sm
                .head
                .value()
                .filter(|h| *h < th.head_departure_ratio())
                .and_then(|h| self.current_ratio_for_head(h)),
            drag_window: head_lost_lately,
            supply_disturbed,
            cur_swings: self.cur_swings.count(),
            pd_swings: self.pd_swings.count(),
            unload_secs: self.unload.secs,
            load_returned: self.unload.load_returned,
        };
        // A start begins a new trend: the level after it may differ.
        if self.secs_since_start(ts) < th.settle_secs {
            self.head_trend.clear();
        } else if at_rest {
            self.head_trend.update(&input);
        }
        let gas = rules::gas_evidence(&input);
        if let Some(mut lift) = rules::loss_of_lift(&input, &gas) {
            // A pump that keeps delivering most of its flow for long is not gas locked: the gas
            // interferes. The open lock episode was interference all along.
            if let Some(finding) = lift
                .as_mut()
                .filter(|f| f.diagnosis == Diagnosis::Condition(Condition::GasLock))
                && let Some(evidence) =
                    rules::gas_lock_still_delivering(&input, &mut self.delivering_since)
            {
                let interference = Diagnosis::Condition(Condition::GasInterference);
                self.tracker
                    .retag(Diagnosis::Condition(Condition::GasLock), interference);
                finding.diagnosis = interference;
                finding.action = action_for(interference);
                finding.evidence.extend(evidence);
            }
            // A parted shaft told at last (the intake rose past the bubble point, the pump
            // went quiet) on a pump whose shaft has not turned its impellers once since a lock
            // opened, through its trips and restarts (the motor never above the no-load band):
            // the lock was the shaft all along. A gas-locked pump still takes some load now and
            // then as slugs of liquid come and go.
            // A lock whose load bled away over minutes was gas, whatever followed: a shaft
            // parts at once.
            let lock = Diagnosis::Condition(Condition::GasLock);
            let shaft = Diagnosis::Condition(Condition::BrokenShaft);
            if !self.tracker.any_open(|d, _| d == lock) {
                self.lock_unload_secs = input.unload_secs;
            }
            if lift.as_ref().is_some_and(|f| f.diagnosis == shaft)
                && self
                    .lock_unload_secs
                    .is_none_or(|secs| secs <= th.shaft_unload_max_secs)
            {
                let last_turning = self.last_turning_at;
                if self
                    .tracker
                    .any_open(|d, start| d == lock && last_turning.is_none_or(|t| t < start))
                {
                    self.tracker.retag(lock, shaft);
                }
            }
            out.extend(lift);
            return;
        }
        if f.flow_ratio.is_some_and(|q| q < th.no_flow_ratio) {
            return;
        }
        let unloading = rules::gas_unloading(&input, &gas, &mut self.unloading);
        let intake = rules::pump_off(&input, &gas)
            .or_else(|| rules::gas_interference(&input, &gas, erratic_limit).filter(|_| settled))
            .or(unloading);
        if let Some(finding) = intake {
            out.push(finding);
            return;
        }
        if let Some(finding) = rules::overload(&input) {
            out.push(finding);
            return;
        }
        let wear = Diagnosis::Condition(Condition::PumpWear);
        let was_wear = self.head_loss.kind == Some(Condition::PumpWear);
        if let Some(mut finding) = rules::head_loss(&input, &gas, &mut self.head_loss) {
            // Scale keeps developing: an open wear episode becomes scale once the motor runs
            // clearly hotter than the lost flow explains, or loads up.
            if was_wear && rules::wear_became_scale(&input, &self.head_loss) {
                self.head_loss.kind = Some(Condition::ScalePlugging);
                self.tracker
                    .retag(wear, Diagnosis::Condition(Condition::ScalePlugging));
                finding.diagnosis = Diagnosis::Condition(Condition::ScalePlugging);
                finding.action = action_for(finding.diagnosis);
                // Wear's evidence (the motor not heating beyond the lost flow) no longer holds:
                // the evidence is what made it scale.
                finding
                    .evidence
                    .retain(|e| e.feature != "unexplained_winding_rise_change");
                finding
                    .evidence
                    .extend(rules::scale_evidence(&input, &self.head_loss));
            }
            // A leak that kept deepening long after its step had settled is gradual: the
            // episode is wear or scale all along.
            if let Some((gradual, evidence)) =
                rules::leak_turned_gradual(&input, &mut self.head_loss)
            {
                self.head_loss.kind = Some(gradual);
                self.tracker.retag(
                    Diagnosis::Condition(Condition::TubingLeak),
                    Diagnosis::Condition(gradual),
                );
                finding.diagnosis = Diagnosis::Condition(gradual);
                finding.action = action_for(finding.diagnosis);
                finding.evidence.retain(|e| {
                    e.feature != "current_ratio_at_onset"
                        && e.feature != "head_loss_developed_over_h"
                });
                finding.evidence.extend(evidence);
            }
            if finding.diagnosis == Diagnosis::Condition(Condition::ScalePlugging) {
                self.head_trend.scale_seen = true;
            }
            out.push(finding);
            return;
        }
        if at_rest && let Some(finding) = rules::head_trend(&input, &self.head_trend) {
            // As with the baseline bar: wear that turns out to be scale is scale all along.
            if finding.diagnosis == Diagnosis::Condition(Condition::ScalePlugging) {
                self.head_trend.scale_seen = true;
                self.tracker
                    .retag(wear, Diagnosis::Condition(Condition::ScalePlugging));
            }
            out.push(finding);
            return;
        }
        if let Some(finding) = rules::motor_overheat(&input, &gas) {
            out.push(finding);
        }
    }
}

/// The motor voltage against what the drive itself would put out at this frequency.
///
/// A V/Hz drive raises its output in proportion to the speed up to a knee, and holds it there
/// above (the usual field-weakening setting: the knee at the motor's nameplate voltage and
/// frequency); with a step-up transformer sized for the top speed, there is no knee in the
/// operating range. The baseline was learned at one point (`volts_v` at `volts_v /
/// volts_per_hz` Hz) without telling which the drive does, so at another frequency its output
/// lies anywhere between the baseline voltage (held) and the baseline V/Hz times the new
/// frequency (proportional). Only a voltage outside that envelope is the supply's doing, so an
/// operator moving the speed across the knee is not a power fluctuation.
pub(crate) fn drive_supply_ratio(volts: f64, hz: f64, b: &Baseline) -> Option<f64> {
    let per_hz = b.volts_per_hz.filter(|k| *k > 0.0)?;
    let proportional = per_hz * hz;
    let held = b.volts_v.filter(|v| *v > 1.0).unwrap_or(proportional);
    let expected = volts.clamp(proportional.min(held), proportional.max(held));
    (expected > 1.0).then(|| volts / expected)
}

/// Training readings kept per well for the anomaly model and the V/Hz excursion rate, evenly
/// thinned (every other one dropped when full, the stride doubled).
const TRAINING_SAMPLES: usize = 4000;

/// A training reading kept for the anomaly model: each channel as an `f32` rounded to 15
/// mantissa bits and stored in 3 bytes (relative error at most 2^-16 ≈ 1.5e-5, finer than any
/// gauge's resolution: 0.02 psi at 1 234.5 psi), missing as a NaN pattern. 40 bytes, so
/// up to 4 000 of them per well in training, 1 000 wells training at once, hold 160 MB
/// (56-byte `f32` readings in a 4 096-place `Vec`: 229 MB; `f64`: ~440 MB).
#[derive(Clone, Copy, Debug)]
struct TrainingReading {
    values: [[u8; 3]; FIELD_COUNT],
    settled: bool,
}

/// The 3-byte pattern of a missing value: `0xFFFFFF00` as an `f32` is a NaN.
const MISSING24: [u8; 3] = [0xFF; 3];

fn pack24(v: f64) -> [u8; 3] {
    let v = v as f32;
    if !v.is_finite() {
        return MISSING24;
    }
    // Round to nearest on the dropped byte; a carry into the exponent is the right rounding
    // too, and finite gauge values are far from overflowing into infinity.
    let bits = v.to_bits().saturating_add(0x80) >> 8;
    let [_, a, b, c] = bits.to_be_bytes();
    [a, b, c]
}

fn unpack24([a, b, c]: [u8; 3]) -> Option<f64> {
    let v = f32::from_bits(u32::from_be_bytes([a, b, c, 0]));
    v.is_finite().then_some(f64::from(v))
}

impl TrainingReading {
    fn new(m: &Measurements, settled: bool) -> TrainingReading {
        let mut values = [MISSING24; FIELD_COUNT];
        for (f, v) in m.iter() {
            values[f.index()] = pack24(v);
        }
        TrainingReading { values, settled }
    }

    fn measurements(&self) -> Measurements {
        let mut m = Measurements::empty();
        for f in Field::ALL {
            m.set(f, unpack24(self.values[f.index()]));
        }
        m
    }
}

#[cfg(test)]
mod training_sample_tests {
    use super::*;

    #[test]
    fn a_training_reading_is_40_bytes_and_keeps_gauge_precision() {
        assert_eq!(std::mem::size_of::<TrainingReading>(), 40);
        let mut m = Measurements::empty();
        let values = [
            (Field::FrequencyHz, 58.37),
            (Field::MotorCurrentA, 41.2),
            (Field::IntakePressurePsi, 1234.5),
            (Field::DischargePressurePsi, 4987.6),
            (Field::FlowRateBpd, 25_432.1),
            (Field::VibrationXG, 0.0123),
            (Field::IntakeTempC, -3.25),
            (Field::MotorTempC, 0.0),
        ];
        for (f, v) in values {
            m.set(f, Some(v));
        }
        let back = TrainingReading::new(&m, true).measurements();
        for f in Field::ALL {
            match values.iter().find(|(g, _)| *g == f) {
                Some((_, v)) => {
                    let got = back.get(f).expect("present");
                    assert!(
                        (got - v).abs() <= v.abs() * 2f64.powi(-16),
                        "{f:?}: {got} vs {v}"
                    );
                }
                None => assert_eq!(back.get(f), None, "{f:?} stays missing"),
            }
        }
    }

    /// Training keeps the steps between readings (the scatter measures) only for the channels
    /// whose scatter is ever read (`WATCHED`): the drive frequency and the lab channels are
    /// never observed after training, so their step windows would be kept for nothing.
    #[test]
    fn training_keeps_step_windows_only_for_watched_channels() {
        let th = Thresholds::default();
        let mut e = WellEngine::new(None, th, TrainingWindow::Readings(100));
        let mut m = Measurements::empty();
        for i in 0..50i64 {
            let wiggle = (i % 3) as f64 * 0.1;
            m.set(Field::FrequencyHz, Some(60.0 + wiggle));
            m.set(Field::MotorCurrentA, Some(40.0 + wiggle));
            m.set(Field::WaterCutPct, Some(30.0 + wiggle));
            e.push(Timestamp(10_000_000 * i), &m);
        }
        assert!(
            e.channels[Field::MotorCurrentA.index()]
                .resolution()
                .is_some()
        );
        assert_eq!(e.channels[Field::FrequencyHz.index()].resolution(), None);
        assert_eq!(e.channels[Field::WaterCutPct.index()].resolution(), None);
    }

    #[test]
    fn the_training_sample_never_grows_past_its_bound() {
        let th = Thresholds::default();
        let mut e = WellEngine::new(None, th, TrainingWindow::Readings(20_000));
        let mut m = Measurements::empty();
        m.set(Field::FrequencyHz, Some(60.0));
        m.set(Field::MotorCurrentA, Some(40.0));
        for i in 0..10_000i64 {
            e.push(Timestamp(1_000_000 * i), &m);
            assert!(e.train_samples.capacity() <= TRAINING_SAMPLES);
        }
        assert!(e.train_samples.len() >= TRAINING_SAMPLES / 2);
    }
}

/// One gauge scattering far more than usual while every other channel with a measure of
/// its own scatter (at least two) stays near its usual: the process moves several
/// quantities together (gas: current, pressures and flow; slugging: both pressures), so
/// this is the gauge. Confirmed over `noise_confirm_readings` readings in a row.
fn judge_noise(channels: &mut [ChannelMonitor], f: Field, th: &Thresholds) -> bool {
    if !channels[f.index()].scatters(th) {
        let monitor = &mut channels[f.index()];
        monitor.noisy_run = 0;
        monitor.noisy = false;
        return false;
    }
    let mut others = WATCHED
        .iter()
        .filter(|g| **g != f)
        .filter_map(|g| channels[g.index()].noise_ratio());
    let mut alone = others.clone().count() >= 2 && others.all(|r| r < th.noise_alone_ratio);
    // The motor's load follows what the pump lifts and delivers: a current jumping by a large
    // share between readings while a gauge of that work stays calm, around the level it held,
    // is the ammeter. Without such a gauge it may be gas; with its level up, a load that
    // snatches (sand, debris); by less, the cycling of gas that the other gauges damp.
    if f == Field::MotorCurrentA {
        alone &= [Field::DischargePressurePsi, Field::FlowRateBpd]
            .iter()
            .any(|g| channels[g.index()].noise_ratio().is_some())
            && channels[f.index()].median_holds(th.noise_level_share)
            && channels[f.index()].scatter_share() >= Some(th.noise_current_min_share);
    }
    let monitor = &mut channels[f.index()];
    if alone || monitor.noisy {
        // Once judged, the gauge stays noisy while it scatters: a process upset meanwhile
        // does not mend it.
        monitor.noisy_run += 1;
        monitor.noisy = monitor.noisy_run >= th.noise_confirm_readings;
    } else {
        monitor.noisy_run = 0;
    }
    monitor.noisy
}

/// How the motor unloaded since its last loaded reading: a parted shaft drops it to no-load at
/// once and for good; gas bleeds the load away over minutes, and slugs bring it back.
#[derive(Clone, Copy, Debug, Default)]
struct Unload {
    /// Readings between the loaded and the unloaded band on the way down.
    readings_on_the_way: u32,
    /// Below `unloaded_current_ratio` since.
    unloaded: bool,
    /// Seconds from the last loaded reading to the first unloaded one (`None` when no reading
    /// caught the fall on its way).
    secs: Option<f64>,
    /// Back above `unloaded_current_ratio` after having fallen below it.
    load_returned: bool,
}
