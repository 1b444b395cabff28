//! Runs one planned well through time: turns its episodes into [`Effects`], lives its normal life
//! (operator frequency changes, planned stops, drifts), advances the plant and reads it through
//! imperfect sensors.

use crate::condition::Condition;
use crate::rng::SimRng;
use crate::telemetry::{Field, Measurements, Reading, Timestamp};

use super::family::{ConditionStyle, Control, Operation, OperationKind};
use super::fleet::{Episode, WellPlan};
use super::plant::{Effects, Plant, PlantState, TrueState};

const HOUR: f64 = 3600.0;
const DAY: f64 = 86_400.0;
/// Longest physics step; sampling intervals above it are sub-stepped.
const MAX_STEP_S: f64 = 5.0;

/// One sample of a simulated well.
#[derive(Clone, Debug)]
pub struct Sample {
    pub ts: Timestamp,
    pub truth: TrueState,
    /// What the gauges reported; `None` when the whole reading was lost in transmission.
    pub measured: Option<Measurements>,
}

impl Sample {
    pub fn reading(&self, plan: &WellPlan) -> Option<Reading> {
        self.measured.map(|values| Reading {
            well_id: plan.id.clone(),
            ts: self.ts,
            values,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NormalEvent {
    Setpoint(f64),
    Stop { minutes: f64 },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SensorMode {
    Stuck,
    Spikes,
    Dropout,
}

/// Simulates one well sample by sample.
pub struct WellSimulator<'p> {
    plan: &'p WellPlan,
    /// This run's copy of the installation: operations (well tests, choke changes, water-cut
    /// steps) change it.
    plant: Plant,
    /// Normal operations of the family (in time order) and the index of the next to start.
    operations: Vec<Operation>,
    next_operation: usize,
    /// Operations in progress: (index, value to restore at the end).
    ongoing: Vec<(usize, f64)>,
    /// Healthy intake pressure a PIP-controlled drive holds, psi.
    pip_target: f64,
    /// Magnitude scale of each episode (1 = as classic).
    episode_scale: Vec<f64>,
    /// Intake-gauge offset from drift and recalibrations, psi.
    gauge_offset_psi: f64,
    /// Lagged true values of pressures and temperatures, in `LAGGED` order.
    lagged: Option<[f64; 5]>,
    /// Intake gauge off line until this time (recalibration), s.
    intake_offline_until: f64,
    jitter_rng: SimRng,
    /// Physics of the previous step (an orifice leak follows the pressure across the tubing).
    last_truth: Option<TrueState>,
    /// Orifice coefficient of the leak in progress, bbl/d per √psi.
    leak_orifice: Option<f64>,
    start: Timestamp,
    end_s: f64,
    state: PlantState,
    physics_rng: SimRng,
    sensor_rng: SimRng,
    /// Normal-life schedule: (time, event), in time order.
    events: Vec<(f64, NormalEvent)>,
    next_event: usize,
    /// Erratic load/voltage process (AR(1), unit variance, ~20 s memory).
    wobble: f64,
    /// Current voltage disturbance: (until_s, factor).
    voltage_event: (f64, f64),
    /// Sample index; time = index × interval.
    index: i64,
    /// Frozen value of a stuck sensor.
    stuck_value: Option<f64>,
    depletion_psi_per_day: f64,
    water_cut_drift_per_day: f64,
    gauge_drift_psi: f64,
    episode_params: Vec<f64>,
}

impl<'p> WellSimulator<'p> {
    pub fn new(plan: &'p WellPlan, start: Timestamp, duration_micros: i64) -> WellSimulator<'p> {
        let root = SimRng::new(plan.seed);
        let mut life_rng = root.fork(1);
        let end_s = duration_micros as f64 / 1e6;
        let mut events = Vec::new();
        if plan.normal_life {
            let nominal = plan.plant.nominal_hz;
            let mut t = life_rng.range(4.0 * HOUR, 30.0 * HOUR);
            while t < end_s {
                let step = (life_rng.range(-3.0, 3.0) * 2.0).round() / 2.0;
                events.push((t, NormalEvent::Setpoint(nominal + step)));
                t += life_rng.range(8.0 * HOUR, 40.0 * HOUR);
            }
            let mut t = life_rng.range(1.5 * DAY, 5.0 * DAY);
            while t < end_s {
                events.push((
                    t,
                    NormalEvent::Stop {
                        minutes: life_rng.range(30.0, 180.0),
                    },
                ));
                t += life_rng.range(2.0 * DAY, 6.0 * DAY);
            }
            // Keep normal life out of the labelled windows (and their recovery), so ground
            // truth is unambiguous.
            events.retain(|(t, _)| {
                !plan
                    .episodes
                    .iter()
                    .any(|e| *t > e.start_s - 2.0 * HOUR && *t < e.end_s + 3.0 * HOUR)
            });
            events.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let plant = plan.plant.clone();
        let mut operations = Vec::new();
        if plan.normal_life && plan.model.operations {
            operations = plan_operations(plan, &mut root.fork(4), end_s);
        }
        let pip_target =
            plant.intake_pressure(plant.equilibrium(plant.nominal_hz, plant.reservoir_psi).1);
        let (lo, hi) = plan.model.magnitude;
        let mut scale_rng = root.fork(6);
        let episode_scale = plan
            .episodes
            .iter()
            .map(|_| if hi > lo { scale_rng.range(lo, hi) } else { hi })
            .collect();
        WellSimulator {
            plan,
            plant,
            operations,
            next_operation: 0,
            ongoing: Vec::new(),
            pip_target,
            episode_scale,
            gauge_offset_psi: 0.0,
            lagged: None,
            intake_offline_until: f64::NEG_INFINITY,
            jitter_rng: root.fork(5),
            last_truth: None,
            leak_orifice: None,
            start,
            end_s,
            state: plan.plant.initial_state(),
            physics_rng: root.fork(2),
            sensor_rng: root.fork(3),
            events,
            next_event: 0,
            wobble: 0.0,
            voltage_event: (0.0, 1.0),
            index: 0,
            stuck_value: None,
            depletion_psi_per_day: if plan.normal_life {
                life_rng.range(0.1, 1.0)
            } else {
                0.0
            },
            water_cut_drift_per_day: if plan.normal_life {
                life_rng.range(0.0, 0.05)
            } else {
                0.0
            },
            gauge_drift_psi: 0.0,
            episode_params: plan
                .episodes
                .iter()
                .map(|e| episode_param(plan, e))
                .collect(),
        }
    }

    pub fn state(&self) -> &PlantState {
        &self.state
    }

    /// Every normal operation of this run (operator set-point changes and planned stops of the
    /// classic normal life included), in start order, for `operations.csv`.
    pub fn operations(&self) -> Vec<Operation> {
        let mut out: Vec<Operation> = self
            .events
            .iter()
            .map(|&(t, ev)| match ev {
                NormalEvent::Setpoint(hz) => Operation {
                    kind: OperationKind::FrequencyChange,
                    start_s: t,
                    end_s: t + 60.0,
                    value: hz,
                },
                NormalEvent::Stop { minutes } => Operation {
                    kind: OperationKind::PlannedStop,
                    start_s: t,
                    end_s: t + minutes * 60.0,
                    value: minutes,
                },
            })
            .chain(self.operations.iter().copied())
            .filter(|o| o.start_s < self.end_s)
            .collect();
        out.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
        out
    }

    fn active(&self, t: f64) -> Option<&'p Episode> {
        self.plan
            .episodes
            .iter()
            .find(|e| t >= e.start_s && t < e.end_s)
    }

    fn active_index(&self, t: f64) -> Option<usize> {
        self.plan
            .episodes
            .iter()
            .position(|e| t >= e.start_s && t < e.end_s)
    }

    /// The physical effect of the episode active at `t`.
    fn effects(&mut self, t: f64, dt: f64) -> Effects {
        let mut fx = Effects::default();
        let Some(k) = self.active_index(t) else {
            self.leak_orifice = None;
            return fx;
        };
        let ep = &self.plan.episodes[k];
        let param = self.episode_params[k];
        let scale = self.episode_scale[k];
        let plant = &self.plan.plant;
        let since = t - ep.start_s;
        let sev = ep.severity;
        let ramp = |len: f64| (since / len).clamp(0.0, 1.0);
        match ep.condition {
            Condition::GasInterference => {
                // Gas breakthrough with a drawn-down intake: inflow weakens so PIP falls, and
                // the bubble point seen at the intake rises above it; free gas makes the pump
                // erratic and slugs come and go.
                let r = ramp(1800.0);
                fx.inflow_factor = 1.0 - (0.25 + 0.15 * sev) * r;
                let target = param * (1.0 + 0.1 * sev);
                fx.bubble_point_rise_psi = (target - plant.bubble_point_psi).max(0.0) * r;
                fx.gor_factor = 1.0 + (target / plant.bubble_point_psi - 1.0).max(0.4) * r;
                let period = 600.0 + (ep.variant % 900) as f64;
                let slug = 0.5 + 0.5 * (std::f64::consts::TAU * since / period).sin();
                fx.forced_gas = (0.04 + 0.05 * sev) * slug * r;
            }
            Condition::GasLock => {
                fx.forced_gas = (0.40 + 0.15 * sev) * ramp(300.0 + (ep.variant % 300) as f64);
                fx.gor_factor = 1.0 + 0.8 * ramp(600.0);
            }
            Condition::PumpOff => {
                // Inflow collapses to about half of what the pump takes even with an empty
                // annulus.
                fx.inflow_factor = param;
            }
            Condition::ClosedValve => fx.valve_closed = true,
            Condition::TubingLeak => fx.leak_fraction = 0.18 + 0.22 * sev,
            Condition::BrokenShaft => fx.shaft_broken = true,
            Condition::PumpWear => {
                let len = 2.0 * DAY + (ep.variant % 3) as f64 * DAY;
                let p = ramp(len);
                fx.head_factor = 1.0 - (0.18 + 0.15 * sev) * p;
                // Worn seals recirculate inside the pump: less delivered, about the same load.
                fx.bhp_factor = 1.0 + 0.1 * p;
                fx.extra_vibration_g = plant.base_vibration_g * (0.5 + 0.5 * sev) * p;
            }
            Condition::ScalePlugging => {
                let len = 2.0 * DAY + (ep.variant % 3) as f64 * DAY;
                let p = ramp(len);
                fx.head_factor = 1.0 - (0.2 + 0.15 * sev) * p;
                fx.bhp_factor = 1.0 + 0.08 * p;
                fx.cooling_factor = 1.0 - 0.5 * p;
                fx.extra_vibration_g = plant.base_vibration_g * (0.8 + 0.6 * sev) * p;
            }
            Condition::Overload => {
                let factor = param;
                fx.load_factor = 1.0 + (factor - 1.0) * ramp(600.0) * (1.0 + 0.12 * self.wobble);
                fx.extra_vibration_g = plant.base_vibration_g * 0.8 * ramp(600.0);
            }
            Condition::MotorOverheat => {
                fx.cooling_factor = param;
                fx.head_factor = 0.94;
            }
            Condition::PowerFluctuation => {
                if t >= self.voltage_event.0 {
                    self.voltage_event = (t, 1.0);
                    // A new disturbance starts on average every three minutes.
                    if self.physics_rng.chance(dt / 180.0) {
                        let length = self.physics_rng.range(5.0, 90.0);
                        let factor = if self.physics_rng.chance(0.7) {
                            1.0 - self.physics_rng.range(0.06, 0.12 + 0.15 * sev)
                        } else {
                            1.0 + self.physics_rng.range(0.04, 0.09)
                        };
                        self.voltage_event = (t + length, factor);
                    }
                }
                fx.supply_factor = self.voltage_event.1 * (1.0 + 0.015 * self.wobble);
            }
            Condition::SensorFault => {}
        }
        let style = self.plan.model.conditions;
        if style != ConditionStyle::Classic {
            let len = 2.0 * DAY + (ep.variant % 3) as f64 * DAY;
            let p = ramp(len);
            match (ep.condition, style) {
                (Condition::PumpWear, ConditionStyle::Field) => {
                    let loss = (0.18 + 0.15 * sev) * p;
                    fx.head_factor = 1.0 - 0.4 * loss;
                    fx.head_flow_slope = 0.6 * loss;
                    fx.bhp_factor = 1.0 + 0.05 * p;
                }
                (Condition::PumpWear, _) => {
                    let loss = (0.18 + 0.15 * sev) * p;
                    fx.head_factor = 1.0 - 0.15 * loss;
                    fx.head_flow_slope = 0.9 * loss;
                    fx.bhp_factor = 1.0 + 0.12 * p;
                    fx.extra_vibration_g *= 1.5;
                }
                (Condition::ScalePlugging, ConditionStyle::Holdout) => {
                    let loss = (0.2 + 0.15 * sev) * p;
                    fx.head_factor = 1.0 - 0.3 * loss;
                    fx.head_flow_slope = 0.7 * loss;
                    fx.bhp_factor = 1.0 + 0.15 * p;
                    fx.cooling_factor = 1.0 - 0.6 * p;
                }
                (Condition::TubingLeak, _) => {
                    // An orifice sized at onset to take the classic share of the healthy flow;
                    // afterwards its flow follows √ΔP.
                    let target = fx.leak_fraction;
                    if let Some(last) = self.last_truth.filter(|l| l.running) {
                        let dp = (last.discharge_psi - last.intake_psi).max(1.0);
                        let c = *self.leak_orifice.get_or_insert_with(|| {
                            target * last.pump_flow_bpd.max(1.0) / dp.sqrt()
                        });
                        fx.leak_fraction =
                            (c * dp.sqrt() / last.pump_flow_bpd.max(1.0)).clamp(0.0, 0.8);
                    }
                }
                _ => {}
            }
        }
        if scale < 1.0 {
            // Subtler versions of the conditions whose magnitude is a matter of degree.
            let toward = |x: f64| 1.0 + scale * (x - 1.0);
            match ep.condition {
                Condition::PumpWear | Condition::ScalePlugging => {
                    fx.head_flow_slope *= scale;
                    fx.head_factor = toward(fx.head_factor);
                    fx.bhp_factor = toward(fx.bhp_factor);
                    fx.cooling_factor = toward(fx.cooling_factor);
                    fx.extra_vibration_g *= scale;
                }
                Condition::TubingLeak => fx.leak_fraction *= scale,
                Condition::Overload => {
                    fx.load_factor = toward(fx.load_factor);
                    fx.extra_vibration_g *= scale;
                }
                Condition::GasInterference => {
                    fx.inflow_factor = toward(fx.inflow_factor);
                    fx.bubble_point_rise_psi *= scale;
                    fx.forced_gas *= scale;
                }
                _ => {}
            }
        }
        fx
    }

    /// Effects of the operations in progress (sand slugs), on top of the episode's.
    fn operation_effects(&self, fx: &mut Effects) {
        for &(i, _) in &self.ongoing {
            let op = &self.operations[i];
            if op.kind == OperationKind::SandSlug {
                fx.load_factor *= 1.0 + op.value;
                fx.extra_vibration_g += self.plant.base_vibration_g * 4.0 * op.value;
            }
        }
    }

    /// Starts and ends the family's operations; they act on this run's plant copy.
    fn apply_operations(&mut self, t: f64) {
        // End what is over, restoring what it changed.
        let mut k = 0;
        while k < self.ongoing.len() {
            let (i, saved) = self.ongoing[k];
            let op = self.operations[i];
            if t < op.end_s {
                k += 1;
                continue;
            }
            match op.kind {
                OperationKind::WellTest | OperationKind::FlowlineSurge => {
                    self.plant.separator_psi = saved;
                }
                OperationKind::Ramp => {
                    if matches!(self.plan.model.control, Control::FixedFrequency) {
                        self.state.setpoint_hz = op.value;
                    }
                }
                _ => {}
            }
            self.ongoing.swap_remove(k);
        }
        while let Some(op) = self.operations.get(self.next_operation).copied() {
            if op.start_s > t {
                break;
            }
            let i = self.next_operation;
            self.next_operation += 1;
            let mut saved = 0.0;
            match op.kind {
                OperationKind::WellTest | OperationKind::FlowlineSurge => {
                    saved = self.plant.separator_psi;
                    self.plant.separator_psi *= op.value;
                }
                OperationKind::ChokeChange => self.plant.flowline_k *= op.value,
                OperationKind::Ramp => saved = self.state.setpoint_hz,
                OperationKind::GaugeRecalibration => {
                    self.gauge_offset_psi = op.value;
                    self.intake_offline_until = op.end_s;
                }
                OperationKind::WaterCutStep => {
                    let wc = (self.state.water_cut_pct + op.value).min(98.0);
                    self.state.water_cut_pct = wc;
                    self.plant.water_cut_pct = wc;
                    let oil_sg = (self.plan.plant.sg
                        - 1.04 * self.plan.plant.water_cut_pct / 100.0)
                        / (1.0 - self.plan.plant.water_cut_pct / 100.0).max(0.01);
                    self.plant.sg = oil_sg * (1.0 - wc / 100.0) + 1.04 * wc / 100.0;
                }
                OperationKind::PlannedStop => {
                    self.plant.stop(&mut self.state, op.end_s);
                }
                OperationKind::FrequencyChange | OperationKind::SandSlug => {}
            }
            self.ongoing.push((i, saved));
        }
        // Ramps move the set point linearly over their window.
        for &(i, from) in &self.ongoing {
            let op = self.operations[i];
            if op.kind == OperationKind::Ramp
                && matches!(self.plan.model.control, Control::FixedFrequency)
            {
                let x = ((t - op.start_s) / (op.end_s - op.start_s).max(1.0)).clamp(0.0, 1.0);
                self.state.setpoint_hz = from + (op.value - from) * x;
            }
        }
    }

    /// A PIP-controlled drive moves its frequency set point toward holding the intake pressure.
    fn control(&mut self, dt: f64) {
        let Control::PipSetpoint {
            gain,
            max_rate,
            min_hz,
            max_hz,
        } = self.plan.model.control
        else {
            return;
        };
        let super::plant::RunState::Running { since_s } = self.state.run else {
            return;
        };
        if self.state.time_s - since_s < 600.0 {
            return;
        }
        let pip = self.plant.intake_pressure(self.state.level_ft);
        let rate = (gain * (pip - self.pip_target)).clamp(-max_rate, max_rate);
        self.state.setpoint_hz = (self.state.setpoint_hz + rate * dt).clamp(min_hz, max_hz);
    }

    fn apply_normal_life(&mut self, t: f64, dt: f64) {
        while let Some(&(at, ev)) = self.events.get(self.next_event) {
            if at > t {
                break;
            }
            self.next_event += 1;
            match ev {
                NormalEvent::Setpoint(hz) => match self.plan.model.control {
                    Control::FixedFrequency => self.state.setpoint_hz = hz,
                    // The operator moves the PIP set point instead (lower PIP: more drawdown).
                    Control::PipSetpoint { .. } => {
                        self.pip_target = self.plant.intake_pressure(
                            self.plant
                                .equilibrium(self.plant.nominal_hz, self.plant.reservoir_psi)
                                .1,
                        ) + (self.plant.nominal_hz - hz) * 10.0;
                    }
                },
                NormalEvent::Stop { minutes } => {
                    self.plant.stop(&mut self.state, t + minutes * 60.0);
                }
            }
        }
        self.state.reservoir_psi -= self.depletion_psi_per_day * dt / DAY;
        self.state.water_cut_pct =
            (self.state.water_cut_pct + self.water_cut_drift_per_day * dt / DAY).min(99.0);
    }

    /// The next sample, or `None` past the end of the run.
    pub fn next_sample(&mut self) -> Option<Sample> {
        let interval = self.plan.interval_micros as f64 / 1e6;
        let t_target = self.index as f64 * interval;
        if t_target >= self.end_s {
            return None;
        }
        let mut ts = Timestamp(self.start.0 + self.index * self.plan.interval_micros);
        let jitter = self.plan.model.gauges.jitter_s.min(0.45 * interval);
        if jitter > 0.0 && self.index > 0 {
            ts.0 += (self.jitter_rng.range(-jitter, jitter) * 1e6) as i64;
        }
        let mut truth = None;
        if self.index == 0 {
            let fx = self.effects(0.0, interval);
            truth = Some(self.plant.evaluate(&self.state, &fx, diurnal(ts)));
        }
        while self.state.time_s < t_target - 1e-9 {
            let dt = (t_target - self.state.time_s).min(MAX_STEP_S);
            let t = self.state.time_s + dt;
            self.apply_normal_life(t, dt);
            if !self.operations.is_empty() {
                self.apply_operations(t);
            }
            self.control(dt);
            let a = (-dt / 20.0).exp();
            self.wobble = a * self.wobble + (1.0 - a * a).sqrt() * self.physics_rng.normal();
            let mut fx = self.effects(t, dt);
            if !self.ongoing.is_empty() {
                self.operation_effects(&mut fx);
            }
            let kick = self.physics_rng.normal();
            let step_ts = Timestamp(self.start.0 + (t * 1e6) as i64);
            truth = Some(
                self.plant
                    .step(&mut self.state, &fx, dt, diurnal(step_ts), kick),
            );
            if self.plan.model.conditions != ConditionStyle::Classic {
                self.last_truth = truth;
            }
        }
        self.index += 1;
        let truth = truth.expect("at least one evaluation per sample");
        let measured = self.measure(&truth, t_target, interval);
        Some(Sample {
            ts,
            truth,
            measured,
        })
    }

    /// Reads the true state through the gauges: noise, quantisation, drift, gaps, and any
    /// injected sensor fault.
    fn measure(&mut self, t: &TrueState, time_s: f64, interval: f64) -> Option<Measurements> {
        let r = &mut self.sensor_rng;
        // Roughly one reading in two thousand is lost on the way.
        if r.chance(0.0005) {
            return None;
        }
        self.gauge_drift_psi += r.normal() * 0.02 * (interval / 60.0).sqrt();
        self.gauge_drift_psi = self.gauge_drift_psi.clamp(-3.0, 3.0);
        let gauges = &self.plan.model.gauges;
        let classic_gauges = gauges.is_classic();
        let mut t = *t;
        if !classic_gauges {
            self.gauge_offset_psi += gauges.drift_psi_per_day * interval / DAY;
            // First-order lag of the slow gauges.
            let now = [
                t.intake_psi,
                t.discharge_psi,
                t.tubing_psi,
                t.intake_temp_c,
                t.motor_temp_c,
            ];
            let prev = self.lagged.unwrap_or(now);
            let alpha = |tau: f64| {
                if tau > 0.0 {
                    1.0 - (-interval / tau).exp()
                } else {
                    1.0
                }
            };
            let (ap, at) = (
                alpha(gauges.pressure_lag_s),
                alpha(gauges.temperature_lag_s),
            );
            let lag = [ap, ap, ap, at, at];
            let mut out = now;
            for k in 0..5 {
                out[k] = prev[k] + lag[k] * (now[k] - prev[k]);
            }
            self.lagged = Some(out);
            t.intake_psi = out[0] + self.gauge_offset_psi;
            t.discharge_psi = out[1];
            t.tubing_psi = out[2];
            t.intake_temp_c = out[3];
            t.motor_temp_c = out[4];
        }
        let t = &t;
        let (noise, quantum_scale, outliers) = (gauges.noise, gauges.quantum, gauges.outlier_rate);
        let mut m = Measurements::empty();
        let running = t.running;
        let mut put =
            |m: &mut Measurements, f: Field, v: f64, abs_sd: f64, rel_sd: f64, quantum: f64| {
                let sd = (abs_sd + rel_sd * v.abs()) * noise;
                let mut noisy = v + r.normal() * sd;
                if outliers > 0.0 && r.chance(outliers) {
                    noisy += 5.0 * sd.max(quantum) * if r.chance(0.5) { 1.0 } else { -1.0 };
                }
                let quantum = quantum * quantum_scale;
                let q = (noisy / quantum).round() * quantum;
                m.set(f, Some(q.max(0.0)));
            };
        put(
            &mut m,
            Field::FrequencyHz,
            t.frequency_hz,
            if running { 0.01 } else { 0.0 },
            0.0,
            0.01,
        );
        put(
            &mut m,
            Field::MotorCurrentA,
            t.current_a,
            if running { 0.1 } else { 0.0 },
            0.004,
            0.1,
        );
        put(
            &mut m,
            Field::MotorVoltageV,
            t.voltage_v,
            if running { 1.0 } else { 0.0 },
            0.002,
            1.0,
        );
        put(
            &mut m,
            Field::IntakePressurePsi,
            t.intake_psi + self.gauge_drift_psi,
            0.4,
            0.0005,
            0.1,
        );
        put(
            &mut m,
            Field::DischargePressurePsi,
            t.discharge_psi,
            0.6,
            0.0005,
            0.1,
        );
        put(
            &mut m,
            Field::TubingPressurePsi,
            t.tubing_psi,
            0.5,
            0.002,
            0.1,
        );
        put(&mut m, Field::IntakeTempC, t.intake_temp_c, 0.05, 0.0, 0.1);
        put(&mut m, Field::MotorTempC, t.motor_temp_c, 0.1, 0.0, 0.1);
        let floor = 0.004;
        put(
            &mut m,
            Field::VibrationXG,
            t.vibration_x_g.max(floor),
            0.002,
            0.04,
            0.001,
        );
        put(
            &mut m,
            Field::VibrationYG,
            t.vibration_y_g.max(floor),
            0.002,
            0.04,
            0.001,
        );
        put(
            &mut m,
            Field::FlowRateBpd,
            t.surface_flow_bpd,
            if t.surface_flow_bpd > 0.0 { 2.0 } else { 0.0 },
            0.01,
            1.0,
        );
        put(&mut m, Field::GorScfBbl, t.gor_scf_bbl, 0.0, 0.02, 1.0);
        put(&mut m, Field::WaterCutPct, t.water_cut_pct, 0.2, 0.0, 0.1);
        for f in Field::ALL {
            if r.chance(self.plan.missing_value_rate) {
                m.set(f, None);
            }
        }
        if !classic_gauges {
            for f in &self.plan.model.gauges.missing {
                m.set(*f, None);
            }
            if time_s < self.intake_offline_until {
                m.set(Field::IntakePressurePsi, None);
            }
        }
        self.inject_sensor_fault(&mut m, time_s);
        Some(m)
    }

    fn inject_sensor_fault(&mut self, m: &mut Measurements, time_s: f64) {
        let Some(ep) = self
            .active(time_s)
            .filter(|e| e.condition == Condition::SensorFault)
        else {
            self.stuck_value = None;
            return;
        };
        const CHANNELS: [Field; 6] = [
            Field::IntakePressurePsi,
            Field::DischargePressurePsi,
            Field::MotorTempC,
            Field::VibrationXG,
            Field::MotorCurrentA,
            Field::FlowRateBpd,
        ];
        let field = CHANNELS[(ep.variant % CHANNELS.len() as u64) as usize];
        let mode = match (ep.variant / 7) % 3 {
            0 => SensorMode::Stuck,
            1 => SensorMode::Spikes,
            _ => SensorMode::Dropout,
        };
        let r = &mut self.sensor_rng;
        match mode {
            SensorMode::Stuck => {
                if self.stuck_value.is_none() {
                    self.stuck_value = m.get(field).or(Some(0.0));
                }
                m.set(field, self.stuck_value);
            }
            SensorMode::Spikes => {
                if r.chance(0.08 + 0.1 * ep.severity) {
                    let v = m.get(field).unwrap_or(0.0);
                    let spike = if r.chance(0.5) {
                        0.0
                    } else {
                        (v * r.range(3.0, 6.0)).max(50.0)
                    };
                    m.set(field, Some(spike.min(field.sane_range().max * 0.9)));
                }
            }
            SensorMode::Dropout => {
                if r.chance(0.6 + 0.3 * ep.severity) {
                    m.set(field, None);
                }
            }
        }
    }
}

/// The plant-dependent magnitude of an episode, computed once: the healthy PIP a gas
/// breakthrough is measured against, the inflow share that pumps a well off, the load factor
/// that overloads its motor.
fn episode_param(plan: &WellPlan, ep: &Episode) -> f64 {
    let plant = &plan.plant;
    let sev = ep.severity;
    match ep.condition {
        Condition::GasInterference => {
            plant.intake_pressure(plant.equilibrium(plant.nominal_hz, plant.reservoir_psi).1)
        }
        Condition::PumpOff => {
            // Inflow collapses to well under what the pump takes even with an empty annulus.
            // Even with the annulus drawn down to the intake the well now gives only a part of
            // what the pump took, so the level falls until the pump starves.
            let (q, _) = plant.equilibrium(plant.nominal_hz, plant.reservoir_psi);
            let pwf_min = plant.casing_psi + plant.perfs_below_ft * plant.gradient();
            let max_inflow = plant.pi * (plant.reservoir_psi - pwf_min);
            let share = 0.3 + 0.25 * (1.0 - sev);
            (share * q / max_inflow).clamp(0.02, 0.8)
        }
        Condition::Overload => {
            let healthy = plant.healthy_current(plant.nominal_hz) / plant.rated_current_a;
            let target = 1.08 + 0.1 * sev;
            let active = |r: f64| (r * r - 0.09).max(0.01).sqrt();
            active(target) / active(healthy)
        }
        Condition::MotorOverheat => {
            // Cooling falls until the winding runs past its limit (by up to 20 °C when severe).
            let start = plant.initial_state();
            let intake = plant.reservoir_temp_c;
            let rise_now = (start.motor_temp_c - intake).max(1.0);
            let rise_wanted = plant.max_winding_temp_c - 5.0 + 25.0 * sev - intake;
            (rise_now / rise_wanted).clamp(0.02, 0.9)
        }
        _ => 0.0,
    }
}

/// Draws the family's normal operations for one well, kept out of its labelled windows (and
/// their recovery) so ground truth stays unambiguous.
fn plan_operations(plan: &WellPlan, rng: &mut SimRng, end_s: f64) -> Vec<Operation> {
    let nominal = plan.plant.nominal_hz;
    let mut ops = Vec::new();
    // (kind, mean days between, duration range s)
    let kinds: [(OperationKind, f64, (f64, f64)); 7] = [
        (OperationKind::WellTest, 4.0, (4.0 * HOUR, 12.0 * HOUR)),
        (OperationKind::ChokeChange, 5.0, (HOUR, HOUR)),
        (OperationKind::FlowlineSurge, 1.5, (120.0, 900.0)),
        (OperationKind::Ramp, 4.0, (1800.0, 2.0 * HOUR)),
        (OperationKind::GaugeRecalibration, 6.0, (600.0, 1800.0)),
        (OperationKind::WaterCutStep, 8.0, (HOUR, HOUR)),
        (OperationKind::SandSlug, 3.0, (300.0, 1800.0)),
    ];
    for (kind, every_days, (lo, hi)) in kinds {
        if kind == OperationKind::Ramp && !matches!(plan.model.control, Control::FixedFrequency) {
            continue;
        }
        let mut t = rng.range(0.3, 2.0) * every_days * DAY;
        while t < end_s {
            let len = rng.range(lo, hi);
            let value = match kind {
                OperationKind::WellTest => rng.range(0.6, 1.5),
                OperationKind::ChokeChange => rng.range(0.5, 2.5),
                OperationKind::FlowlineSurge => rng.range(1.3, 1.9),
                OperationKind::Ramp => nominal + (rng.range(-4.0, 3.0) * 2.0).round() / 2.0,
                OperationKind::GaugeRecalibration => rng.range(-6.0, 6.0),
                OperationKind::WaterCutStep => rng.range(2.0, 10.0),
                OperationKind::SandSlug => rng.range(0.05, 0.25),
                OperationKind::FrequencyChange | OperationKind::PlannedStop => 0.0,
            };
            let op = Operation {
                kind,
                start_s: t,
                end_s: t + len,
                value,
            };
            let clear = !plan
                .episodes
                .iter()
                .any(|e| op.end_s > e.start_s - 2.0 * HOUR && op.start_s < e.end_s + 3.0 * HOUR);
            if clear && op.start_s > HOUR {
                ops.push(op);
            }
            t += rng.range(0.5, 1.5) * every_days * DAY;
        }
    }
    ops.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    ops
}

/// Surface temperature swings the flowline back-pressure a little over the day.
fn diurnal(ts: Timestamp) -> f64 {
    let day_fraction = (ts.0.rem_euclid(86_400_000_000)) as f64 / 86_400e6;
    1.0 + 0.02 * (std::f64::consts::TAU * (day_fraction - 0.375)).sin()
}
