//! The condition rules, one function per family of conditions. Each judges the well against
//! its own healthy baseline at the running point (every ratio is affinity-normalised to the
//! running frequency), names every number it uses in [`Thresholds`], and reports as evidence
//! the values that actually triggered it.
//!
//! Order matters and follows the physics: loss of lift (no flow, unloaded motor) explains every
//! other symptom, so it is judged first; then the intake (pump-off, free gas); then the motor
//! load; then the head against the curve; then cooling.

use crate::condition::Condition;
use crate::telemetry::{Field, Measurements};

use super::features::{Baseline, Features, WellContext};
use super::stats::Ewma;
use super::thresholds::Thresholds;
use super::{Evidence, Finding};

/// Smoothed features of a well since its last start (time constants from the thresholds, so
/// behaviour does not depend on the sampling interval).
#[derive(Clone, Debug, Default)]
pub(crate) struct Smoothed {
    pub fast_cur: Ewma,
    pub fast_flow: Ewma,
    pub fast_vib: Ewma,
    pub fast_head: Ewma,
    pub fast_cur_abs: Ewma,
    pub fast_gor: Ewma,
    pub fast_pip: Ewma,
    pub fast_temp: Ewma,
    /// Hydraulic output per electrical input against the baseline, on the fast time constant
    /// (as `fast_cur`, which the overload rule judges).
    pub fast_eff: Ewma,
    pub cur: Ewma,
    pub flow: Ewma,
    pub pip: Ewma,
    pub pd: Ewma,
    pub head: Ewma,
    pub rise: Ewma,
    /// The level `rise`, and `rise` × `cooling` (the rise the flow does not explain), held over
    /// the last `scale_rise_held_secs`: the heat the motor has kept (see [`MotorLevels`]).
    pub rise_held: HeldLevel,
    pub unexplained_rise_held: HeldLevel,
    pub cooling: Ewma,
    pub gor: Ewma,
    pub volt: Ewma,
    pub dp: Ewma,
    pub slow_temp: Ewma,
    /// The winding rise ratio over hours: the motor's own recent thermal level.
    pub rise_level: Ewma,
    /// `rise_level` when the pump last started: a winding warming back up to where it ran
    /// before the stop has not warmed lately (see [`warmed_lately`]).
    pub rise_level_at_start: Option<f64>,
    /// The winding rise and the operating point over the same hours, learned only from a
    /// motor warmed up since its start (see [`ThermalLevel::update`]).
    pub thermal_level: ThermalLevel,
    /// Drive frequency over the settling time: the fluid level follows a frequency change
    /// for that long.
    pub settle_freq: Ewma,
    pub settle_flow: Ewma,
    pub settle_pip: Ewma,
    pub settle_thp: Ewma,
    pub settle_head: Ewma,
    /// Supply voltage (absolute) now and over the settling time: without a frequency channel
    /// V/Hz is unknown, but a sag or swell against the recent level still shows.
    pub fast_volts: Ewma,
    pub settle_volts: Ewma,
    /// Current ratio, wellhead and discharge pressure ratios over the fast time and over the
    /// settling time (a motor unloading at a steady speed is judged against them).
    pub settle_cur: Ewma,
    pub fast_thp: Ewma,
    pub fast_pd: Ewma,
    pub settle_pd: Ewma,
    /// Since when the 10-minute head has stayed within half the subtle-leak step of its
    /// settling level, and how long it had stayed there when it last left: a step is a
    /// departure from a level, and a head swinging with a hunting drive never held one. (The
    /// 10-minute level, not the fast one: a head computed through a noisy flow meter jitters
    /// by more than the band from reading to reading.)
    pub head_level_since: Option<i64>,
    pub head_level_held_secs: f64,
}

impl Smoothed {
    /// The supply against its recent level (1 = steady), for wells without V/Hz.
    pub fn voltage_swing(&self) -> Option<f64> {
        match (self.fast_volts.value(), self.settle_volts.value()) {
            (Some(now), Some(level)) if level > 1.0 => Some(now / level),
            _ => None,
        }
    }

    pub fn update(&mut self, ts: i64, f: &Features, m: &Measurements, th: &Thresholds) {
        let (fast, slow) = (th.fast_tau_secs, th.slow_tau_secs);
        let up = |e: &mut Ewma, v: Option<f64>, tau: f64| {
            if let Some(v) = v {
                e.update(ts, v, tau);
            }
        };
        up(&mut self.fast_cur, f.current_ratio, fast);
        up(&mut self.fast_flow, f.flow_ratio, fast);
        up(&mut self.fast_vib, f.vibration_ratio, fast);
        up(&mut self.fast_head, f.head_ratio, fast);
        up(&mut self.fast_cur_abs, m.get(Field::MotorCurrentA), fast);
        up(&mut self.fast_gor, f.gor_ratio, fast);
        up(&mut self.fast_pip, f.intake_pressure_ratio, fast);
        up(&mut self.fast_temp, m.get(Field::MotorTempC), fast);
        up(&mut self.fast_eff, f.efficiency_ratio, fast);
        // The variability of these two is what gas interference is judged on.
        let clip = |e: &mut Ewma, v: Option<f64>| {
            if let Some(v) = v {
                e.update_clipped(ts, v, slow, th.variability_clip_sigmas, th.erratic_std);
            }
        };
        clip(&mut self.cur, f.current_ratio);
        up(&mut self.flow, f.flow_ratio, slow);
        up(&mut self.pip, f.intake_pressure_ratio, slow);
        clip(&mut self.pd, f.discharge_pressure_ratio);
        up(&mut self.head, f.head_ratio, slow);
        up(&mut self.rise, f.winding_rise_ratio, slow);
        up(&mut self.cooling, f.cooling_ratio, slow);
        if let Some(rise) = self.rise.value().filter(|_| f.winding_rise_ratio.is_some()) {
            let held = th.scale_rise_held_secs;
            self.rise_held.update(ts, rise, held);
            let unexplained = rise * self.cooling.value().unwrap_or(1.0);
            self.unexplained_rise_held.update(ts, unexplained, held);
        }
        up(&mut self.gor, f.gor_ratio, slow);
        up(&mut self.volt, f.volts_per_hz_ratio, slow);
        up(&mut self.dp, f.pressure_rise_ratio, slow);
        up(&mut self.slow_temp, m.get(Field::MotorTempC), slow);
        up(
            &mut self.rise_level,
            f.winding_rise_ratio,
            th.overheat_level_tau_secs,
        );
        up(&mut self.settle_freq, f.frequency_hz, th.settle_secs);
        up(&mut self.settle_flow, f.flow_ratio, th.settle_secs);
        up(
            &mut self.settle_pip,
            f.intake_pressure_ratio,
            th.settle_secs,
        );
        up(
            &mut self.settle_thp,
            f.tubing_pressure_ratio,
            th.settle_secs,
        );
        up(&mut self.settle_head, f.head_ratio, th.settle_secs);
        if let (Some(now), Some(level)) = (self.head.value(), self.settle_head.value()) {
            if (now - level).abs() <= level * th.leak_subtle_head_drop / 2.0 {
                self.head_level_since.get_or_insert(ts);
            } else if let Some(since) = self.head_level_since.take() {
                self.head_level_held_secs = (ts - since) as f64 / 1e6;
            }
        }
        up(&mut self.fast_volts, m.get(Field::MotorVoltageV), fast);
        up(&mut self.settle_cur, f.current_ratio, th.settle_secs);
        up(&mut self.fast_thp, f.tubing_pressure_ratio, fast);
        up(&mut self.fast_pd, f.discharge_pressure_ratio, fast);
        up(
            &mut self.settle_pd,
            f.discharge_pressure_ratio,
            th.settle_secs,
        );
        up(
            &mut self.settle_volts,
            m.get(Field::MotorVoltageV),
            th.settle_secs,
        );
    }
}

/// The level a value has held over a trailing window: the median of its per-minute means (at
/// most an hour's worth of entries, whatever the polling rate). Anything that lasts less than
/// half the window (a spike up, a dip after a restart) does not move it.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeldLevel {
    /// (minute, sum, count) per minute seen.
    minutes: std::collections::VecDeque<(i64, f64, u32)>,
}

impl HeldLevel {
    pub fn update(&mut self, ts: i64, value: f64, window_secs: f64) {
        let minute = ts.div_euclid(60_000_000);
        match self.minutes.back_mut() {
            Some((m, sum, n)) if *m == minute => {
                *sum += value;
                *n += 1;
            }
            _ => self.minutes.push_back((minute, value, 1)),
        }
        let oldest = minute - (window_secs / 60.0).ceil() as i64;
        while self.minutes.front().is_some_and(|&(m, _, _)| m < oldest) {
            self.minutes.pop_front();
        }
    }

    /// The median of the per-minute means within the window (of the minutes seen: a shorter
    /// history after the first start gives the median of what there is).
    pub fn value(&self) -> Option<f64> {
        let mut means: Vec<f64> = self
            .minutes
            .iter()
            .map(|&(_, sum, n)| sum / f64::from(n))
            .collect();
        if means.is_empty() {
            return None;
        }
        let mid = means.len() / 2;
        let (_, m, _) = means.select_nth_unstable_by(mid, f64::total_cmp);
        Some(*m)
    }
}

/// The winding rise ratio and the operating point it ran at (speed, motor load, intake
/// pressure, flow) over `overheat_level_tau_secs`: the motor's own recent thermal level. Learned
/// afresh in each run: a stop may have been a workover (another motor, another pump).
#[derive(Clone, Debug, Default)]
pub(crate) struct ThermalLevel {
    /// The first reading of this stretch of readings without a long gap.
    stretch_from: Option<i64>,
    /// The last reading seen.
    last: Option<i64>,
    /// When it first learned in this stretch.
    since: Option<i64>,
    pub rise: Ewma,
    pub freq: Ewma,
    pub cur: Ewma,
    pub pip: Ewma,
    pub flow: Ewma,
}

impl ThermalLevel {
    /// Learns only from a motor running `overheat_warmup_secs` since its start and since the
    /// end of the last gap in its data longer than `overheat_level_gap_secs` (the motor may
    /// have stopped, or been replaced, unseen): a winding still warming up would pull the
    /// level down, and the same winding back at its usual temperature would then stand above.
    pub fn update(&mut self, ts: i64, f: &Features, running_secs: f64, th: &Thresholds) {
        if self
            .last
            .is_some_and(|t| (ts - t) as f64 / 1e6 > th.overheat_level_gap_secs)
        {
            *self = ThermalLevel::default();
        }
        self.last = Some(ts);
        let from = *self.stretch_from.get_or_insert(ts);
        if running_secs < th.overheat_warmup_secs
            || ((ts - from) as f64 / 1e6) < th.overheat_warmup_secs
        {
            return;
        }
        self.since.get_or_insert(ts);
        let tau = th.overheat_level_tau_secs;
        for (e, v) in [
            (&mut self.rise, f.winding_rise_ratio),
            (&mut self.freq, f.frequency_hz),
            (&mut self.cur, f.current_ratio),
            (&mut self.pip, f.intake_pressure_ratio),
            (&mut self.flow, f.flow_ratio),
        ] {
            if let Some(v) = v {
                e.update(ts, v, tau);
            }
        }
    }

    /// Has learned for at least a time constant (in this run).
    fn learned(&self, ts: i64, th: &Thresholds) -> bool {
        self.since
            .is_some_and(|t| (ts - t) as f64 / 1e6 >= th.overheat_level_tau_secs)
    }
}

/// How a head loss developed, remembered while it lasts (it decides leak vs wear vs scale).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HeadLoss {
    pub departed: Option<i64>,
    /// When the head first fell below the bar after departing.
    pub reached_low: Option<i64>,
    pub kind: Option<Condition>,
    /// How long the loss took to develop when it was classified.
    pub developed_secs: f64,
    /// The current ratio when it was classified (a leak keeps the motor loaded).
    pub current_at_onset: Option<f64>,
    /// When it was classified as a leak, and the head ratio's mean over `leak_level_secs` from
    /// `leak_settle_secs` later, once the step has settled: a leak then holds near that level,
    /// a gradual loss keeps deepening (see [`leak_turned_gradual`]).
    pub onset: Option<i64>,
    pub settled: Mean,
    /// Since when the head has stayed `leak_deepening_ratio` below that level.
    pub deepened_since: Option<i64>,
    /// The head ratio judged against, when a corroborated sudden step lowered the bar.
    pub low: Option<f64>,
    /// Without a discharge gauge: the delivery and frequency before a sudden loss.
    pub delivery_ref: Option<(f64, f64)>,
    /// A sudden step of the head, intake and delivery being confirmed (see [`subtle_leak`]).
    pub step: Option<StepLevels>,
    /// A subtle leak latched from a confirmed step: the head level before it, judged against.
    pub step_level: Option<f64>,
    /// The motor's state when the head began to depart: wear and scale are told apart by what
    /// the motor did since, on the well's own recent levels rather than the training baseline.
    pub at_departure: Option<MotorLevels>,
    /// The drive frequency when the head began to depart.
    pub hz_at_departure: Option<f64>,
    /// Free gas was seen at the intake (gas-rich fluid, the intake near the bubble point, or a
    /// hunting current) since the head departed: a loss over hours is then the gas's doing.
    pub gas_seen: bool,
}

/// The winding-rise ratio, as measured and without the part the lost flow explains (smoothed).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MotorLevels {
    pub rise: Option<f64>,
    pub unexplained_rise: Option<f64>,
    /// The intake pressure ratio, settled level.
    pub pip: Option<f64>,
}

impl MotorLevels {
    fn now(i: &Input) -> MotorLevels {
        let s = i.s;
        // Less flow past the motor cools it less (film coefficient ∝ velocity^0.8): the rise
        // that flow explains is taken out, what remains is heat the flow does not explain.
        // Scale is heat that builds over days and stays: judged on the rise the motor has
        // held for the last `scale_rise_held_secs`, which a glitched reading or a speed step
        // (minutes) does not lift.
        MotorLevels {
            rise: s.rise_held.value(),
            unexplained_rise: s.unexplained_rise_held.value(),
            pip: val(&s.settle_pip),
        }
    }

    /// The changes from `self` to `now` that make it scale (see [`Self::scale_since`]), as
    /// evidence.
    fn scale_evidence(&self, now: &MotorLevels, th: &Thresholds) -> Vec<Evidence> {
        let mut ev = Vec::new();
        if let (Some(now), Some(then)) = (now.unexplained_rise, self.unexplained_rise)
            && now - then >= th.scale_unexplained_rise
        {
            ev.push(Evidence::new(
                "unexplained_winding_rise_change",
                now - then,
                th.scale_unexplained_rise,
                ">=",
            ));
        }
        if let (Some(now), Some(then)) = (now.rise, self.rise)
            && now - then >= th.scale_rise_change
        {
            ev.push(Evidence::new(
                "winding_rise_ratio_change",
                now - then,
                th.scale_rise_change,
                ">=",
            ));
        }
        ev
    }

    /// Scale or wear, from how the motor changed since the head began to depart. Deposits
    /// insulate the motor housing: the winding runs hotter than the lost flow explains, or
    /// hotter than any flow a worn pump loses could make it. A worn pump warms only by the
    /// cooling the lost flow takes. (The current tells them apart only in some pumps: scale's
    /// drag may load the motor or the lost flow unload it.) One test, so the decision and its
    /// evidence cannot drift apart.
    fn scale_since(&self, now: &MotorLevels, th: &Thresholds) -> bool {
        !self.scale_evidence(now, th).is_empty()
    }
}

/// A running mean.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v {
            self.sum += v;
            self.n += 1;
        }
    }

    fn value(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// Levels just before a sudden step (settling-time averages), and when it began.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StepLevels {
    pub since: i64,
    pub head: f64,
    pub pip: f64,
    pub flow: Option<f64>,
    pub thp: Option<f64>,
    pub cur: Option<f64>,
    pub freq: Option<f64>,
    /// The readings since the step, so that it is confirmed on averages, not on every noisy
    /// reading.
    pub head_since: Mean,
    pub flow_since: Mean,
    pub thp_since: Mean,
}

/// Everything a rule may look at for one reading.
pub(crate) struct Input<'a> {
    pub ts: i64,
    pub th: &'a Thresholds,
    pub ctx: &'a WellContext,
    pub b: &'a Baseline,
    pub s: &'a Smoothed,
    pub f: &'a Features,
    pub m: &'a Measurements,
    /// Running long enough after a start (or a frequency step) for steady-state rules.
    pub settled: bool,
    /// Settled, and the intake pressure has come to rest since the start (or the longest
    /// settling time has passed): the levels a departure is judged from are levels.
    pub at_rest: bool,
    /// Current explained by the operating point taken out (see `WellEngine`).
    pub cur_unexplained: Option<f64>,
    /// One step of the ammeter's resolution, as a current ratio (0 when unknown): a reading on
    /// a coarse gauge is its true value rounded to the step.
    pub cur_step_ratio: f64,
    /// The current ratio a pump running right on its own curve to the present (smoothed) head
    /// would draw: the most a leak explains. `None` while the head is at or above
    /// `head_departure_ratio` (no reader needs it there).
    pub cur_for_head: Option<f64>,
    /// The head was at its baseline within the last `drag_head_window_secs` of this run: a
    /// current beyond what the lost head explains is drag (after a workover or restart a stale
    /// baseline explains a low head as well; over days, wear does).
    pub drag_window: bool,
    /// The supply voltage left its band repeatedly within the power window (or did so within
    /// the last slow time constant, which the smoothed variability still remembers).
    pub supply_disturbed: bool,
    /// Swings of the current / discharge pressure across the erratic band around their level.
    pub cur_swings: usize,
    pub pd_swings: usize,
    /// How long the motor took to unload, from its last loaded reading of this run to the
    /// first below `unloaded_current_ratio` (`None`: not unloaded, never loaded this run, or
    /// no reading caught it on the way down).
    pub unload_secs: Option<f64>,
    /// The current came back above `unloaded_current_ratio` after it had fallen below.
    pub load_returned: bool,
}

/// Counts swings of a signal from above its level + band to below its level − band (and back)
/// within a window: the cyclic signature of gas, which a single step does not have.
#[derive(Clone, Debug, Default)]
pub(crate) struct Swings {
    side: i8,
    at: std::collections::VecDeque<i64>,
}

impl Swings {
    pub fn update(
        &mut self,
        ts: i64,
        x: Option<f64>,
        level: Option<f64>,
        band: f64,
        window_s: f64,
    ) {
        if let (Some(x), Some(level)) = (x, level) {
            let side = if x > level + band {
                1
            } else if x < level - band {
                -1
            } else {
                0
            };
            if side != 0 && side != self.side {
                if self.side != 0 {
                    self.at.push_back(ts);
                }
                self.side = side;
            }
        }
        let horizon = ts - (window_s * 1e6) as i64;
        while self.at.front().is_some_and(|&t| t < horizon) {
            self.at.pop_front();
        }
    }

    pub fn count(&self) -> usize {
        self.at.len()
    }
}

fn val(e: &Ewma) -> Option<f64> {
    e.value()
}

fn bonus(cond: bool, amount: f64) -> f64 {
    if cond { amount } else { 0.0 }
}

// Confidence: a base for the rule's core evidence, plus a bonus for each independent channel
// that agrees. Calibrated so that events at ≥ 0.8 are right ≥ 80 % of the time on a model
// family never tuned on (see `espwatch eval --families`).
const BASE: f64 = 0.6;
const STRONG: f64 = 0.15;
const AGREES: f64 = 0.1;

/// Gas in the intake: the surface GOR is up against the baseline, or the intake is at or below
/// the bubble point (when no GOR gauge says otherwise).
pub(crate) struct GasEvidence {
    pub gor: Option<f64>,
    pub gor_fast: Option<f64>,
    pub rich: bool,
    pub near_bubble: bool,
    /// Near the bubble point now, but not in the healthy baseline.
    pub new_gas: bool,
    pub pip_psi: Option<f64>,
    /// The bubble point, corrected for a GOR above the baseline's.
    pub bubble_point_psi: Option<f64>,
    /// The smoothed intake pressure, psi.
    pub pip_smoothed_psi: Option<f64>,
    /// The intake is far above the (GOR-corrected) bubble point.
    pub all_dissolved: bool,
}

impl GasEvidence {
    /// The GOR reading that made the fluid gas-rich: the slow ratio, or the fast one alone.
    fn rich_evidence(&self, th: &Thresholds) -> Evidence {
        if self.gor.is_some_and(|g| g >= th.gas_gor_ratio) {
            Evidence::opt("gor_ratio", self.gor, th.gas_gor_ratio, ">=")
        } else {
            Evidence::opt(
                "gor_ratio_fast",
                self.gor_fast,
                th.gas_gor_ratio + th.gas_gor_fast_margin,
                ">=",
            )
        }
    }
}

pub(crate) fn gas_evidence(i: &Input) -> GasEvidence {
    let th = i.th;
    let gor = val(&i.s.gor);
    let gor_fast = val(&i.s.fast_gor);
    let rich = gor.is_some_and(|g| g >= th.gas_gor_ratio)
        || gor_fast.is_some_and(|g| g >= th.gas_gor_ratio + th.gas_gor_fast_margin);
    let pip_psi = i.m.get(Field::IntakePressurePsi);
    // More gas in solution raises the bubble point (Standing: Pb ∝ Rs^0.83), so a GOR above
    // the baseline's moves it up with it.
    let bubble = i.ctx.bubble_point_psi.map(|bp| {
        let more_gas = gor.unwrap_or(1.0).max(gor_fast.unwrap_or(1.0)).max(1.0);
        bp * more_gas.powf(th.bubble_point_gor_exponent)
    });
    let near_bubble = match (pip_psi, bubble) {
        (Some(p), Some(bp)) => p < bp * th.gas_near_bubble_ratio,
        _ => false,
    } && gor.is_none_or(|g| g >= 1.0);
    // Far above the bubble point every bit of gas is in solution: nothing free reaches the
    // pump, whatever the surface GOR does.
    let pip_smoothed_psi = val(&i.s.pip)
        .zip(i.b.intake_pressure_psi)
        .map(|(r, base)| r * base);
    let all_dissolved = match (pip_smoothed_psi, bubble) {
        (Some(p), Some(bp)) if p > 0.0 => p > bp * th.gas_free_pip_ratio,
        _ => false,
    };
    // A well whose healthy baseline already ran below the bubble point lives with free gas
    // (separator, gas handler): being there now is no news.
    let baseline_gassy = match (i.b.intake_pressure_psi, i.ctx.bubble_point_psi) {
        (Some(p), Some(bp)) => p < bp * th.gas_near_bubble_ratio,
        _ => false,
    };
    GasEvidence {
        gor,
        gor_fast,
        rich,
        near_bubble,
        new_gas: near_bubble && !baseline_gassy,
        pip_psi,
        bubble_point_psi: bubble,
        pip_smoothed_psi,
        all_dissolved,
    }
}

/// Loss of lift: deadhead (closed valve), broken shaft, gas lock, or a pump-off trip. Abrupt,
/// and the relay trips within a minute, so these judge the latest (lightly smoothed) reading.
/// `Some` ends the rules for this reading: nothing else means anything without lift.
pub(crate) fn loss_of_lift(i: &Input, gas: &GasEvidence) -> Option<Option<Finding>> {
    let (th, s, f) = (i.th, i.s, i.f);
    let flow = f.flow_ratio;
    let head = val(&s.fast_head);
    let cur = f.current_ratio;
    let vib = val(&s.fast_vib);
    let pd = f.discharge_pressure_ratio;
    let thp = f.tubing_pressure_ratio;
    let gas_fast = gas.gor_fast.is_some_and(|g| g >= th.gas_gor_ratio);
    let no_flow = match flow {
        Some(q) => q < th.no_flow_ratio,
        None => head.is_some_and(|h| h < th.no_flow_head_ratio),
    };
    let pd_high = pd.is_some_and(|p| p >= th.deadhead_discharge_ratio);
    let thp_high = thp.is_some_and(|t| t >= th.deadhead_tubing_ratio);
    // A valve closed downstream of the wellhead gauge, or nearly so (some flow still passes):
    // the wellhead pressure jumps, the pump is pushed left on its curve (discharge up, delivery
    // and shaft power down) and the annulus starts filling. A choke change moves the wellhead
    // pressure too, but leaves most of the delivery.
    let throttled = match val(&s.fast_flow) {
        Some(q) => q < th.throttled_flow_ratio,
        None => val(&s.fast_cur).is_some_and(|c| c < th.throttled_current_ratio),
    } && thp_high
        && pd.is_none_or(|p| p >= th.deadhead_discharge_ratio)
        && val(&s.fast_pip).is_none_or(|p| p >= 1.0 - th.pip_fall_margin);
    // A pump pushing against a shut outlet sits at its shut-off head, above its running head:
    // a head that collapsed while the discharge stands high (the intake risen to meet it, as
    // after a restart on a full annulus) is a pump without lift, not a closed valve. Only a
    // meter says "no flow" at a shut outlet; without one the wellhead (`throttled`) must.
    let deadheaded = no_flow && flow.is_some() && (pd_high || thp_high);
    if deadheaded || throttled {
        let mut ev = vec![if !deadheaded {
            match val(&s.fast_flow) {
                Some(q) => Evidence::new("flow_ratio", q, th.throttled_flow_ratio, "<"),
                None => Evidence::opt(
                    "current_ratio",
                    val(&s.fast_cur),
                    th.throttled_current_ratio,
                    "<",
                ),
            }
        } else {
            Evidence::opt("flow_ratio", flow, th.no_flow_ratio, "<")
        }];
        if pd_high {
            ev.push(Evidence::opt(
                "discharge_pressure_ratio",
                pd,
                th.deadhead_discharge_ratio,
                ">=",
            ));
        }
        if thp_high {
            ev.push(Evidence::opt(
                "tubing_pressure_ratio",
                thp,
                th.deadhead_tubing_ratio,
                ">=",
            ));
        }
        let conf =
            BASE + STRONG + bonus(pd_high && thp_high, AGREES) + bonus(flow.is_some(), AGREES);
        return Some(Some(Finding::new(Condition::ClosedValve, conf, ev)));
    }
    // Without a discharge or a wellhead gauge a shut outlet shows in the meter and the motor:
    // nothing reaches the surface while the motor stays loaded (a pump at shut-off still takes
    // a good part of its power, well above no-load) and the pump shakes harder (recirculating
    // at shut-off), with the intake not drawn down. A parted shaft or a gas lock unload the
    // motor; a pump-off draws the intake down.
    let shut_in_unmetered = pd.is_none()
        && thp.is_none()
        && flow.is_some_and(|q| q < th.throttled_flow_ratio)
        && cur.is_some_and(|c| c >= th.unloaded_current_ratio)
        && vib.is_some_and(|v| v >= th.gas_lock_vibration_ratio)
        && !gas_fast
        && val(&s.fast_pip).is_none_or(|p| p >= 1.0 - th.pip_fall_margin);
    if shut_in_unmetered {
        let ev = vec![
            Evidence::opt("flow_ratio", flow, th.throttled_flow_ratio, "<"),
            Evidence::opt("current_ratio", cur, th.unloaded_current_ratio, ">="),
            Evidence::opt("vibration_ratio", vib, th.gas_lock_vibration_ratio, ">="),
        ];
        return Some(Some(Finding::new(Condition::ClosedValve, BASE, ev)));
    }
    let unloaded = cur.is_some_and(|c| c < th.unloaded_current_ratio);
    // A check valve above the pump keeps the tubing full when the pump stops delivering: the
    // discharge gauge (or the column estimate without one) still reads the standing column,
    // so the pressure rise says little. The wellhead says it: with nothing coming up, it falls
    // to the flowline's pressure, while the intake, no longer drawn, starts to rise. An
    // opened choke also lowers the wellhead pressure, but loads the motor more, not less.
    let no_delivery = match thp {
        Some(t) => t < th.no_delivery_tubing_ratio,
        None => pd.is_some_and(|p| p < th.no_delivery_discharge_ratio),
    };
    let column_held =
        !no_flow && no_delivery && val(&s.fast_pip).is_none_or(|p| p >= 1.0 - th.pip_fall_margin);
    let lift_lost =
        no_flow || head.is_some_and(|h| h < th.lift_lost_head_ratio) || (column_held && unloaded);
    // A shaft that no longer turns the pump leaves the motor at a steady no-load current; a
    // current that swings back and forth means the impellers still load it and gas (a slug, free
    // gas from the annulus or the reservoir, whatever the intake pressure says) takes the lift.
    let hunting = i.cur_swings >= th.gas_min_swings as usize;
    // Gas lock develops over minutes: head and current fall together while the pump keeps
    // turning (vibration up, not down). A load that keeps swinging back while it is still well
    // above no-load is gas passing through a pump that keeps its prime (interference): a lock
    // takes the load away and keeps it away.
    let losing_prime = head.is_some_and(|h| h < th.gas_lock_head_ratio)
        && cur.is_some_and(|c| c < th.gas_lock_current_ratio)
        && vib.is_some_and(|v| v >= th.gas_lock_vibration_ratio)
        && !(hunting && cur.is_some_and(|c| c >= th.unloaded_current_ratio));
    if !((lift_lost && unloaded) || losing_prime) {
        return None;
    }
    let mut ev = Vec::new();
    if losing_prime {
        ev.push(Evidence::opt(
            "head_ratio",
            head,
            th.gas_lock_head_ratio,
            "<",
        ));
        ev.push(Evidence::opt(
            "current_ratio",
            cur,
            th.gas_lock_current_ratio,
            "<",
        ));
    } else {
        ev.push(match flow {
            Some(q) if no_flow => Evidence::new("flow_ratio", q, th.no_flow_ratio, "<"),
            _ if column_held && !head.is_some_and(|h| h < th.lift_lost_head_ratio) => match thp {
                Some(t) => {
                    Evidence::new("tubing_pressure_ratio", t, th.no_delivery_tubing_ratio, "<")
                }
                None => Evidence::opt(
                    "discharge_pressure_ratio",
                    pd,
                    th.no_delivery_discharge_ratio,
                    "<",
                ),
            },
            _ => Evidence::opt("head_ratio", head, th.lift_lost_head_ratio, "<"),
        });
        ev.push(Evidence::opt(
            "current_ratio",
            cur,
            th.unloaded_current_ratio,
            "<",
        ));
    }
    let pip = val(&s.fast_pip);
    let quiet = vib.is_some_and(|v| v < th.broken_shaft_vibration_ratio);
    if pip.is_some_and(|p| p < th.pump_off_pip_ratio) && !gas_fast {
        // Starved rather than gas locked: the intake is drawn down to its minimum (gas lock
        // raises it) and no gas breakthrough shows at the surface.
        ev.push(Evidence::opt(
            "intake_pressure_ratio",
            pip,
            th.pump_off_pip_ratio,
            "<",
        ));
        return Some(Some(Finding::new(
            Condition::PumpOff,
            BASE + STRONG + AGREES,
            ev,
        )));
    }
    // A pump that lost its lift with every bit of gas still in solution at the intake cannot be
    // gas locked: the shaft no longer turns it. Only a pump that shakes harder (surging on gas
    // the catalogued bubble point does not know of: breakthrough, coning) says otherwise.
    let no_free_gas = gas.all_dissolved && vib.is_none_or(|v| v < th.gas_lock_vibration_ratio);
    if (quiet || no_free_gas) && !gas_fast && !losing_prime && !hunting {
        // A shaft parts at once: the motor drops to no-load between one reading and the next.
        // Load that bled away over minutes, with the pump still shaking as before, is gas
        // taking the lift (free gas the catalogued bubble point does not know of: from the
        // annulus, coning), at the lower confidence that only a trip confirms.
        if !quiet
            && i.unload_secs
                .is_some_and(|secs| secs > th.shaft_unload_max_secs)
        {
            ev.push(Evidence::opt(
                "unload_secs",
                i.unload_secs,
                th.shaft_unload_max_secs,
                ">",
            ));
            return Some(Some(Finding::new(Condition::GasLock, BASE, ev)));
        }
        if quiet {
            ev.push(Evidence::opt(
                "vibration_ratio",
                vib,
                th.broken_shaft_vibration_ratio,
                "<",
            ));
        } else {
            ev.push(Evidence::opt(
                "intake_pressure_psi_smoothed",
                gas.pip_smoothed_psi,
                gas.bubble_point_psi.unwrap_or(0.0) * th.gas_free_pip_ratio,
                ">",
            ));
        }
        // A broken shaft leaves the motor at a steady no-load current; gas makes it hunt. The
        // smoothing restarts with the pump: a spread needs a few readings to show.
        let watched = s.fast_cur.count() >= th.broken_shaft_steady_readings;
        let steady = watched && s.fast_cur.std() < th.broken_shaft_steady_std;
        // Without the vibration to say the pump went quiet, the current alone must show it:
        // settled at its new level, it is the shaft's at full confidence. A current still
        // settling after the drop (or a restart that trips again before it could) is the same
        // loss of lift not yet told apart, at the lower confidence that only a trip confirms.
        // A load that came back (the impellers still bite now and then) is not yet told apart
        // from gas slugs at all.
        if !quiet && watched && !steady && i.load_returned {
            return Some(None);
        }
        let conf = if quiet || steady {
            BASE + STRONG + bonus(steady, STRONG)
        } else {
            BASE
        };
        return Some(Some(Finding::new(Condition::BrokenShaft, conf, ev)));
    }
    // What tells a lock from a parted shaft at the moment the lift goes: the pump still turns,
    // so it shakes harder on the gas (a parted shaft goes quiet or stays as it was), the load
    // hunts as slugs come and go, it bled away over minutes rather than between two readings,
    // or gas surges at the surface. A pump gone quiet is one the shaft no longer turns,
    // whatever else swings. Gas at the intake alone says gas could lock the pump, not that a
    // steady unloaded motor is not a parted shaft: without one of those signs the lock is
    // reported below the confidence that calls for action at once.
    let vib_up = vib.is_some_and(|v| v >= th.gas_lock_vibration_ratio);
    let bled_away = i
        .unload_secs
        .is_some_and(|secs| secs > th.shaft_unload_max_secs);
    let told_from_shaft = !quiet && (vib_up || hunting || bled_away || gas_fast);
    if vib_up {
        ev.push(Evidence::opt(
            "vibration_ratio",
            vib,
            th.gas_lock_vibration_ratio,
            ">=",
        ));
    }
    if gas_fast {
        ev.push(Evidence::opt(
            "gor_ratio",
            gas.gor_fast,
            th.gas_gor_ratio,
            ">=",
        ));
    }
    let conf =
        BASE + bonus(told_from_shaft, STRONG + 0.05) + bonus(gas_fast || gas.near_bubble, STRONG);
    Some(Some(Finding::new(Condition::GasLock, conf, ev)))
}

/// A gas-locked pump delivers nothing: the impellers spin in gas until the underload relay
/// trips it, within minutes. A pump whose head and current sank the way a lock begins but that
/// has kept delivering `gas_lock_delivering_flow_ratio` of its flow (the slow level) for
/// `gas_lock_delivering_secs` is gas interference, however deep: the slugs of gas cost it head
/// and load without taking its lift. Without a flow meter nothing tells the two apart here.
/// `since` is kept by the caller for the run (reset at each start).
pub(crate) fn gas_lock_still_delivering(
    i: &Input,
    since: &mut Option<i64>,
) -> Option<Vec<Evidence>> {
    let th = i.th;
    let flow = val(&i.s.flow)?;
    if flow < th.gas_lock_delivering_flow_ratio {
        *since = None;
        return None;
    }
    let from = *since.get_or_insert(i.ts);
    let minutes = (i.ts - from) as f64 / 60e6;
    (minutes >= th.gas_lock_delivering_secs / 60.0).then(|| {
        vec![
            Evidence::new("flow_ratio", flow, th.gas_lock_delivering_flow_ratio, ">="),
            Evidence::new(
                "delivering_min",
                minutes,
                th.gas_lock_delivering_secs / 60.0,
                ">=",
            ),
        ]
    })
}

/// Pump-off: the well cannot feed the pump. The intake is drawn down against the baseline *and*
/// the pump delivers less than its baseline at this speed (or, without a flow meter, the motor
/// unloads): a drawdown with full delivery is the annulus settling after a start or a rate
/// increase, not inflow failing. Early sign: the intake keeps falling with delivery sliding.
pub(crate) fn pump_off(i: &Input, gas: &GasEvidence) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    if !i.settled || gas.rich {
        return None;
    }
    let pip = val(&s.pip)?;
    let fast_pip = val(&s.fast_pip)?;
    let flow = val(&s.flow);
    let cur = val(&s.cur);
    let delivery_low = match flow {
        Some(q) => q < th.pump_off_flow_ratio,
        None => cur.is_some_and(|c| c < th.pump_off_current_ratio),
    };
    if !delivery_low {
        return None;
    }
    let drawn = pip < th.pump_off_pip_ratio;
    let gas_rising = gas.gor_fast.is_some_and(|g| g >= th.gas_gor_rising_ratio);
    // With a flow meter showing delivery sliding, a fall below baseline counts at once;
    // without one (the current is a weaker witness) the intake must already be drawn down.
    let below = if flow.is_some() {
        1.0
    } else {
        th.pip_drawn_ratio
    };
    let falling = fast_pip < pip - th.pip_fall_margin && pip < below && !gas_rising;
    if !(drawn || falling) {
        return None;
    }
    let mut ev = vec![if drawn {
        Evidence::new("intake_pressure_ratio", pip, th.pump_off_pip_ratio, "<")
    } else {
        Evidence::new(
            "intake_pressure_ratio_fast",
            fast_pip,
            pip - th.pip_fall_margin,
            "< slow (falling)",
        )
    }];
    ev.push(match flow {
        Some(q) => Evidence::new("flow_ratio", q, th.pump_off_flow_ratio, "<"),
        None => Evidence::opt("current_ratio", cur, th.pump_off_current_ratio, "<"),
    });
    let conf = BASE + bonus(drawn, STRONG) + bonus(flow.is_some(), AGREES);
    Some(Finding::new(Condition::PumpOff, conf, ev))
}

/// Free gas at the intake with the pump still turning. Its signature is a cyclic fluctuation of
/// current (and discharge pressure) well above the well's own baseline variability, with gas
/// evidence (GOR up, or intake near or below the bubble point); or gas breaking out (surface
/// GOR climbing while the intake sinks). A slow head loss without fluctuation is not gas.
pub(crate) fn gas_interference(
    i: &Input,
    gas: &GasEvidence,
    erratic_limit: f64,
) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    if gas.all_dissolved {
        return None;
    }
    let cur_var = s.cur.std();
    let pd_var = if s.pd.is_init() { s.pd.std() } else { 0.0 };
    let erratic = cur_var >= erratic_limit;
    let pd_erratic = pd_var >= erratic_limit;
    let pip_sinking = match (val(&s.fast_pip), val(&s.pip)) {
        (Some(fast), Some(slow)) => fast < slow,
        _ => false,
    };
    let breaking = gas.gor_fast.is_some_and(|g| g >= th.gas_gor_rising_ratio)
        && gas.gor.is_some_and(|g| g > 1.0)
        && pip_sinking;
    let flow_low = val(&s.flow).is_some_and(|q| q < th.gas_flow_ratio);
    // A disturbed supply makes the current (and, through the motor's slip, the discharge)
    // swing with the voltage: that fluctuation is the supply's, not the gas's.
    // And it cycles: a step of the level (a speed change, a restart) inflates the variability
    // for a while without swinging back and forth.
    let min_swings = th.gas_min_swings as usize;
    let cur_cycles = i.cur_swings >= min_swings;
    let pd_cycles = i.pd_swings >= min_swings;
    let erratic = erratic && cur_cycles;
    let pd_erratic = pd_erratic && pd_cycles;
    let fluctuating = (erratic || pd_erratic) && !i.supply_disturbed;
    // On a well that always ran with free gas, only a fluctuation far beyond its own baseline
    // says the gas now interferes.
    let violent = ((cur_var >= th.gas_violent_factor * erratic_limit && cur_cycles)
        || (pd_var >= th.gas_violent_factor * erratic_limit && pd_cycles))
        && !i.supply_disturbed;
    let fires = (fluctuating && (gas.rich || gas.new_gas))
        || (violent && gas.near_bubble)
        || (gas.rich && flow_low)
        || breaking;
    if !fires {
        return None;
    }
    let mut ev = Vec::new();
    if fluctuating {
        ev.push(Evidence::new(
            if erratic {
                "current_variability"
            } else {
                "discharge_pressure_variability"
            },
            if erratic { cur_var } else { pd_var },
            erratic_limit,
            ">=",
        ));
    }
    if gas.rich {
        ev.push(gas.rich_evidence(th));
    } else if breaking {
        ev.push(Evidence::opt(
            "gor_ratio_fast",
            gas.gor_fast,
            th.gas_gor_rising_ratio,
            ">=",
        ));
    }
    if gas.near_bubble {
        ev.push(Evidence::opt(
            "intake_pressure_psi",
            gas.pip_psi,
            gas.bubble_point_psi.unwrap_or(0.0) * th.gas_near_bubble_ratio,
            "< near bubble point",
        ));
    }
    if !fluctuating && flow_low {
        ev.push(Evidence::opt(
            "flow_ratio",
            val(&s.flow),
            th.gas_flow_ratio,
            "<",
        ));
    }
    let conf = BASE
        + bonus(fluctuating, STRONG)
        + bonus(gas.rich, AGREES)
        + bonus(gas.new_gas, AGREES)
        + bonus(erratic && pd_erratic, 0.05);
    Some(Finding::new(Condition::GasInterference, conf, ev))
}

/// The current ratio `c` is far above what running out on the curve to the present head takes:
/// more than a leak can draw.
fn beyond_leak(i: &Input, c: f64) -> bool {
    i.cur_for_head
        .is_some_and(|e| c >= e * i.th.overload_current_ratio)
}

/// A watch on the motor unloading at a steady speed (see [`gas_unloading`]).
#[derive(Clone, Debug, Default)]
pub(crate) struct Unloading {
    /// The levels just before the current began to fall, held while the watch is open.
    reference: Option<UnloadRef>,
    /// The current ratio over the last `unload_confirm_secs` (and at least the last three
    /// readings, for sparse polling): confirmed on their median, not on every noisy (or
    /// coarsely quantised) reading.
    recent: std::collections::VecDeque<(i64, f64)>,
    /// Confirmed; it lasts while the current stays below the reference.
    latched: bool,
}

#[derive(Clone, Copy, Debug)]
struct UnloadRef {
    since: i64,
    cur: f64,
    pip: Option<f64>,
    thp: Option<f64>,
    pd: Option<f64>,
    freq: Option<f64>,
    volts: Option<f64>,
}

impl Unloading {
    /// The median of the recent readings (at least three): a single glitch of the ammeter
    /// does not move it.
    fn recent_level(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.recent.iter().map(|&(_, c)| c).collect();
        if v.len() < 3 {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        Some(if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        })
    }
}

/// Free gas reaching the pump lightens the mixture it lifts: at a steady speed and supply the
/// shaft power, and with it the motor current, falls within minutes to hours, while the intake
/// is not drawn down (pump-off), the wellhead and discharge do not press back (a choke or a
/// valve closing) and the motor keeps a load (a broken shaft or gas lock falls to no-load, and
/// the loss-of-lift rules judge those first). A leak keeps the motor loaded; wear and scale
/// take days. Gas evidence (GOR up, intake near the bubble point, a cycling current) raises the
/// confidence; a producing GOR that climbs (gas breakthrough) moves the bubble point with it, so
/// an intake above the catalogued bubble point does not rule the gas out.
pub(crate) fn gas_unloading(i: &Input, gas: &GasEvidence, st: &mut Unloading) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    // The levels before the fall must be levels: not while the operating point is still
    // settling after a start.
    if !i.at_rest || i.supply_disturbed {
        *st = Unloading::default();
        return None;
    }
    if let Some(c) = i.f.current_ratio {
        st.recent.push_back((i.ts, c));
    }
    let horizon = i.ts - (th.unload_confirm_secs * 1e6) as i64;
    while st.recent.len() > 3 && st.recent.front().is_some_and(|&(t, _)| t < horizon) {
        st.recent.pop_front();
    }
    let voltage_steady = s
        .voltage_swing()
        .is_none_or(|v| (v - 1.0).abs() <= th.voltage_deviation);
    // Without a frequency channel the drive's output voltage follows the speed (V/Hz): a
    // slow ramp of the speed shows as a drift of the voltage against its level.
    let steady_at = |level: Option<f64>, volts: Option<f64>| match (i.f.frequency_hz, level) {
        (Some(f), Some(l)) => (f - l).abs() <= th.proxy_frequency_band * l,
        (None, _) => match (val(&s.fast_volts), volts) {
            (Some(v), Some(l)) if l > 1.0 => (v - l).abs() <= th.proxy_frequency_band * l,
            _ => true,
        },
        _ => true,
    };
    let Some(r) = st.reference else {
        let (Some(level), Some(fast)) = (val(&s.settle_cur), val(&s.fast_cur)) else {
            return None;
        };
        if voltage_steady
            && steady_at(val(&s.settle_freq), val(&s.settle_volts))
            && fast <= level * (1.0 - th.unload_open_drop)
        {
            st.reference = Some(UnloadRef {
                since: i.ts,
                cur: level,
                pip: val(&s.settle_pip),
                thp: val(&s.settle_thp),
                pd: val(&s.settle_pd),
                freq: val(&s.settle_freq),
                volts: val(&s.settle_volts),
            });
        }
        return None;
    };
    let level = st.recent_level()?;
    if !voltage_steady || !steady_at(r.freq, r.volts) {
        *st = Unloading::default();
        return None;
    }
    let waited = (i.ts - r.since) as f64 / 1e6;
    // Once confirmed, the unload holds on the looser release bar: the evidence is that bar.
    let held = st.latched;
    if !st.latched {
        let came_back =
            waited >= th.unload_confirm_secs && level > r.cur * (1.0 - th.unload_open_drop / 2.0);
        if came_back || waited > th.unload_watch_secs {
            *st = Unloading::default();
            return None;
        }
        let bar = r.cur * (1.0 - th.unload_confirm_drop);
        let not_below = |now: Option<f64>, then: Option<f64>, margin: f64| match (now, then) {
            (Some(now), Some(then)) => now >= then * (1.0 - margin),
            _ => true,
        };
        let not_above = |now: Option<f64>, then: Option<f64>| match (now, then) {
            (Some(now), Some(then)) => now <= then * (1.0 + th.unload_max_pressure_rise),
            _ => true,
        };
        // Against the level just before and against the well's healthy baseline: the
        // current settling back after a transient that had raised it (a sand slug clearing,
        // a heavier fluid flushed out) is not the motor unloading.
        // Beyond the bar by the rounding of the reading the new level rests on (half a step
        // of the gauge): on a coarse ammeter a flip to the next step down may be a change of
        // a hair.
        let q = i.cur_step_ratio / 2.0;
        let confirmed = waited >= th.unload_confirm_secs
            && level <= bar - q
            && level <= 1.0 - th.unload_confirm_drop - q
            && level > th.unloaded_current_ratio
            && not_below(val(&s.fast_pip), r.pip, th.pip_fall_margin)
            && not_above(val(&s.fast_thp), r.thp)
            && not_above(val(&s.fast_pd), r.pd);
        if !confirmed {
            return None;
        }
        st.latched = true;
    } else if level > r.cur * (1.0 - th.unload_release_drop) || level > 1.0 - th.unload_release_drop
    {
        *st = Unloading::default();
        return None;
    }
    let gas_seen = gas.rich || gas.near_bubble || gas.new_gas;
    let cycling =
        i.cur_swings >= th.gas_min_swings as usize || i.pd_swings >= th.gas_min_swings as usize;
    let mut ev = vec![
        Evidence::new(
            "current_ratio_since_step",
            level,
            if held {
                (r.cur * (1.0 - th.unload_release_drop)).min(1.0 - th.unload_release_drop)
            } else {
                r.cur * (1.0 - th.unload_confirm_drop)
            },
            "<= level before the step",
        ),
        Evidence::opt(
            "intake_pressure_ratio_fast",
            val(&s.fast_pip),
            r.pip.unwrap_or(0.0) * (1.0 - th.pip_fall_margin),
            ">= level before the step",
        ),
    ];
    if gas.rich {
        ev.push(gas.rich_evidence(th));
    } else if gas.near_bubble {
        ev.push(Evidence::opt(
            "intake_pressure_psi",
            gas.pip_psi,
            gas.bubble_point_psi.unwrap_or(0.0) * th.gas_near_bubble_ratio,
            "< near bubble point",
        ));
    }
    let conf = BASE + bonus(gas_seen, STRONG) + bonus(cycling, AGREES);
    Some(Finding::new(Condition::GasInterference, conf, ev))
}

/// Overload: the motor draws more than its baseline at this speed, more than the operating
/// point (flow) and a heavier fluid (the pressure rise across the pump goes up with density)
/// explain, on a healthy supply.
pub(crate) fn overload(i: &Input) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    let c = i.cur_unexplained?;
    // A disturbed supply (sags, swells) moves the current for the same power: a power problem,
    // judged by its own rule.
    if c < th.overload_current_ratio || i.supply_disturbed {
        return None;
    }
    // More current with less head is a leak (the pump runs out on its curve), not drag: the
    // head rules judge it. As far as the curve explains it: a current far above what running
    // out to that head takes is drag (a viscous or sandy fluid also costs head).
    let early = th.head_departure_ratio();
    let beyond_leak = i.drag_window && beyond_leak(i, c);
    if val(&s.head).is_some_and(|h| h < early) && !beyond_leak {
        return None;
    }
    // The supply against its level: V/Hz over the slow time constant, or the voltage against
    // its recent level where no frequency is measured.
    let supply = val(&s.volt).or_else(|| {
        i.f.volts_per_hz_ratio
            .is_none()
            .then(|| s.voltage_swing())
            .flatten()
    });
    if supply.is_some_and(|v| v >= 1.0 + th.voltage_deviation) {
        // A swelling supply moves the current by itself: a power problem.
        return None;
    }
    // A supply that sagged and stays low (a disturbed one was left to the power rule above)
    // makes the motor draw more current for the same power: an overload (low voltage is one
    // of its causes); a motor loaded by its pump lifting more from a full annulus is not.
    let sagged = supply.is_some_and(|v| v <= 1.0 - th.voltage_deviation);
    if !sagged && lifting_more_from_full_intake(th, i.f) {
        return None;
    }
    if !sagged && output_explains_current(th, val(&s.fast_cur), val(&s.fast_eff)) {
        return None;
    }
    // Denser fluid (water-cut step, emulsion): pressure rise and current go up together.
    let per_pressure = val(&s.dp).filter(|d| *d > 0.5).map(|d| c / d.max(1.0));
    if per_pressure.is_some_and(|p| p < th.overload_current_ratio) {
        return None;
    }
    let amps = val(&s.fast_cur_abs);
    let over_nameplate = match (i.ctx.rated_current_a, amps) {
        (Some(rated), Some(a)) => Some(a >= th.overload_nameplate_share * rated),
        _ => None,
    };
    // Above baseline but well under nameplate: only a clearly larger rise counts, and only
    // once the operating point has come to rest after a start (a drive drawing a full
    // annulus down, or hunting, loads the motor by itself).
    if over_nameplate == Some(false)
        && (c < th.overload_current_ratio_under_nameplate || !i.at_rest)
    {
        return None;
    }
    let mut ev = vec![Evidence::new(
        "current_ratio_unexplained_by_flow",
        c,
        if over_nameplate == Some(false) {
            th.overload_current_ratio_under_nameplate
        } else {
            th.overload_current_ratio
        },
        ">=",
    )];
    if over_nameplate == Some(true) {
        ev.push(Evidence::opt(
            "motor_current_a",
            amps,
            th.overload_nameplate_share * i.ctx.rated_current_a.unwrap_or(0.0),
            ">= nameplate share",
        ));
    }
    if sagged {
        ev.push(Evidence::opt(
            "supply_ratio",
            supply,
            1.0 - th.voltage_deviation,
            "<=",
        ));
    }
    let conf = BASE
        + bonus(over_nameplate == Some(true), STRONG + AGREES)
        + bonus(per_pressure.is_some(), 0.05);
    Some(Finding::new(Condition::Overload, conf, ev))
}

/// Whether the motor's load is its pump lifting more from a fuller intake (see
/// `Thresholds::overload_lift_pip_ratio`).
pub(crate) fn lifting_more_from_full_intake(th: &Thresholds, f: &Features) -> bool {
    let delivery = f.flow_ratio.or(f.tubing_pressure_ratio);
    // A sagging supply raises the current for the same lift: the lift does not explain it.
    let supply_low = f
        .volts_per_hz_ratio
        .is_some_and(|v| v <= 1.0 - th.voltage_deviation);
    let Some(delivery) = delivery.filter(|d| *d >= th.overload_lift_delivery_ratio) else {
        return false;
    };
    !supply_low
        && f.current_ratio
            .is_some_and(|c| c <= th.overload_lift_current_per_delivery * delivery)
        && f.intake_pressure_ratio
            .is_some_and(|p| p >= th.overload_lift_pip_ratio)
}

/// The pump turned the current's rise into flow and lift (see
/// `overload_work_explained_share`): the output ratio (efficiency × current, at a held supply)
/// rose by at least that share of the current's rise.
fn output_explains_current(th: &Thresholds, current: Option<f64>, efficiency: Option<f64>) -> bool {
    match (current, efficiency) {
        (Some(c), Some(e)) if c > 1.0 => {
            e * c - 1.0 >= th.overload_work_explained_share * (c - 1.0)
        }
        _ => false,
    }
}

/// Head lost against the curve. Abrupt with the motor still loaded: a tubing leak. Gradual: wear
/// (clearances open, the pump recirculates: power stays while head falls) or scale (the passages
/// narrow: flow and power fall, the motor runs hotter).
pub(crate) fn head_loss(i: &Input, gas: &GasEvidence, state: &mut HeadLoss) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    let (h, proxied) = match val(&s.head) {
        Some(h) => (h, false),
        None => (delivery_proxy(i, state)?, true),
    };
    if !proxied && let Some(finding) = subtle_leak(i, state) {
        return Some(finding);
    }
    let early = th.head_departure_ratio();
    if h >= early {
        // A step being confirmed is judged against its own levels, not the baseline.
        *state = HeadLoss {
            step: state.step,
            ..HeadLoss::default()
        };
        return None;
    }
    if state.departed.is_none() {
        state.departed = Some(i.ts);
        state.at_departure = Some(MotorLevels::now(i));
        state.hz_at_departure = i.f.frequency_hz;
    }
    let departed = state.departed.unwrap_or(i.ts);
    state.gas_seen |= gas.rich || gas.near_bubble || gas.new_gas || i.cur_swings > 0;
    // Judged only once the surface delivery falls short; the departure clock keeps running, so
    // a gradual loss that shows in the flow late is not taken for a sudden one.
    if state.kind.is_none() && operating_point_moved_right(i) {
        return None;
    }
    // How fast the loss came is how long the head took to get from its departure down to the
    // bar, not how long it has been judged since: a step that then holds flat for an hour is
    // still a step, and wear or scale take days to get there.
    if state.reached_low.is_none() && h < state.low.unwrap_or(th.head_ratio_low) {
        state.reached_low = Some(i.ts);
    }
    let took_secs = (state.reached_low.unwrap_or(i.ts) - departed) as f64 / 1e6;
    // After a step the slow level lags the motor by minutes: whether it is still loaded is
    // judged on the lower of the slow and the fast level.
    let cur = match (val(&s.cur), val(&s.fast_cur)) {
        (Some(slow), Some(fast)) => Some(slow.min(fast)),
        (slow, fast) => slow.or(fast),
    };
    // A small loss that came suddenly, with the motor still loaded, the annulus filling and
    // the surface flow falling and the wellhead not pressing back, is a leak already: several
    // channels agree on it.
    let leak_step = state.kind.is_none()
        && !proxied
        && took_secs <= th.abrupt_secs
        && h < th.leak_step_head_ratio
        && cur.is_none_or(|c| c >= th.leak_current_ratio)
        && match (val(&s.fast_pip), val(&s.settle_pip)) {
            (Some(now), Some(level)) => now >= level * th.leak_step_pip_rise,
            _ => false,
        }
        && match (i.f.tubing_pressure_ratio, val(&s.settle_thp)) {
            (Some(now), Some(level)) => now <= level,
            _ => true,
        }
        && match (val(&s.fast_flow), val(&s.settle_flow)) {
            (Some(now), Some(level)) => now <= level * th.leak_step_flow_fall,
            _ => true,
        };
    if leak_step && i.at_rest {
        state.low = Some(th.leak_step_head_ratio);
    }
    let low = state.low.unwrap_or(th.head_ratio_low);
    // Wear and scale do not heal when the pump stops: a gradual loss already told, still below
    // the bar once the pump is back up to speed after a short stop (a trip on a winding the
    // scale runs hot), is the same loss. It is not judged afresh, so it need not wait for the
    // intake to come to rest, which a pump tripping every few hours never lets it do.
    let gradual_known = matches!(
        state.kind,
        Some(Condition::PumpWear | Condition::ScalePlugging)
    );
    if h >= low || !(i.at_rest || (gradual_known && i.settled)) {
        return None;
    }
    // A leak returns part of the delivery to the annulus: less reaches the surface, and the
    // wellhead pressure (set by the flow through the choke and flowline) cannot rise. A sudden
    // loss of head with the wellhead well above its baseline is something else (a new pump or
    // operating point after a workover, a choke change): not a leak. (Over days, a drive that
    // speeds up to hold the intake pressure may well raise the wellhead of a wearing pump.)
    let wellhead_up = [i.f.tubing_pressure_ratio, val(&s.settle_thp)]
        .into_iter()
        .flatten()
        .any(|t| t > 1.0 + th.leak_wellhead_tolerance);
    let abrupt_loaded =
        took_secs <= th.abrupt_secs && cur.is_none_or(|c| c >= th.leak_current_ratio);
    if state.kind.is_none() && abrupt_loaded && wellhead_up {
        return None;
    }
    // Nor is a loss with the motor drawing far more than running out to that head takes
    // (drag: the overload rule's while it is fresh).
    if state.kind.is_none() && abrupt_loaded && i.cur_unexplained.is_some_and(|c| beyond_leak(i, c))
    {
        return None;
    }
    // Nor is a sudden loss with the motor loaded while the annulus is being drawn down below
    // where it stood: a leak fills the annulus. The pump runs further right on its curve (a
    // drive speeding up to draw down a full annulus), where the head is lower.
    // Minutes after the step the two look alike; the intake declares itself within
    // `leak_intake_watch_secs` (at once when it already rises).
    let intake = val(&s.fast_pip).zip(state.at_departure.and_then(|m| m.pip));
    let drawn_down = intake.is_some_and(|(now, then)| now < then * (1.0 - th.pip_fall_margin));
    let filling = intake.is_none_or(|(now, then)| now >= then * (1.0 + th.pip_fall_margin));
    let watched = (i.ts - departed) as f64 / 1e6 >= th.leak_intake_watch_secs;
    if state.kind.is_none() && abrupt_loaded && (drawn_down || !(filling || watched)) {
        return None;
    }
    // Wear and scale take days: a sudden loss with the motor unloading is neither (a broken
    // shaft, gas or a closed valve; their own rules judge it).
    if state.kind.is_none() && took_secs <= th.abrupt_secs && !abrupt_loaded {
        return None;
    }
    // Wear and scale take days; free gas degrades the head within hours (and its own rules
    // judge it). A loss over hours with gas seen at the intake since it began is neither.
    if state.kind.is_none()
        && took_secs > th.abrupt_secs
        && took_secs < th.gradual_min_secs
        && state.gas_seen
    {
        return None;
    }
    // Nor is a loss over hours that came with the drive turned faster: the system (wellhead,
    // fluid column) sets the lift, so at a higher speed the same lift is a smaller share of the
    // affinity-scaled head (an operator's ramp, without a flow meter to show the pump running
    // further right). The head the pump makes at its new speed becomes the level a loss is
    // judged from: the bar moves down with it and the departure starts afresh.
    let faster_since_departure =
        i.f.frequency_hz
            .zip(state.hz_at_departure)
            .is_some_and(|(now, then)| now >= then * (1.0 + th.moved_right_speed_rise));
    if state.kind.is_none()
        && took_secs > th.abrupt_secs
        && took_secs < th.gradual_min_secs
        && faster_since_departure
    {
        *state = HeadLoss {
            low: Some(h * th.head_ratio_low),
            step: state.step,
            ..HeadLoss::default()
        };
        return None;
    }
    if state.kind.is_none() {
        state.developed_secs = took_secs;
        state.current_at_onset = cur;
        state.onset = Some(i.ts);
    }
    let scale = scale_since_departure(i, state);
    let kind = *state.kind.get_or_insert_with(|| {
        if took_secs <= th.abrupt_secs && cur.is_none_or(|c| c >= th.leak_current_ratio) {
            Condition::TubingLeak
        } else if scale {
            Condition::ScalePlugging
        } else {
            Condition::PumpWear
        }
    });
    let mut ev = vec![
        Evidence::new(
            if proxied {
                "delivery_ratio_intake_rising"
            } else {
                "head_ratio"
            },
            h,
            low,
            "<",
        ),
        Evidence::new(
            "head_loss_developed_over_h",
            state.developed_secs / 3600.0,
            th.abrupt_secs / 3600.0,
            if kind == Condition::TubingLeak {
                "<="
            } else {
                ">"
            },
        ),
    ];
    match kind {
        Condition::ScalePlugging => ev.extend(scale_evidence(i, state)),
        Condition::TubingLeak => {
            ev.push(Evidence::opt(
                "current_ratio_at_onset",
                state.current_at_onset,
                th.leak_current_ratio,
                ">=",
            ));
        }
        _ => {
            let now = MotorLevels::now(i);
            let then = state.at_departure.unwrap_or_default();
            if let (Some(now), Some(then)) = (now.unexplained_rise, then.unexplained_rise) {
                ev.push(Evidence::new(
                    "unexplained_winding_rise_change",
                    now - then,
                    th.scale_unexplained_rise,
                    "<",
                ));
            }
        }
    }
    let depth = ((low - h) / th.head_loss_full_depth).clamp(0.0, 1.0);
    let conf = BASE + (STRONG + AGREES + 0.05) * depth;
    Some(Finding::new(kind, conf, ev))
}

/// A hole in the tubing acts at once: part of what the pump lifts returns to the annulus, so
/// within minutes, at a steady speed, the head steps down, the intake steps up and the surface
/// delivery steps down, while the wellhead does not press back and the motor stays loaded.
/// Judged against the levels just before the step (not the baseline, which may have drifted
/// by more than a small leak takes), and confirmed over `leak_step_confirm_secs`: a step of a
/// few percent on every channel together is a leak even when the head is still close to its
/// baseline. A choke change, a flowline surge, a frequency change or a water-cut step moves
/// these channels in other directions; a sand slug clears before it is confirmed.
fn subtle_leak(i: &Input, state: &mut HeadLoss) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    let fast_head = val(&s.fast_head)?;
    let drop = th.leak_subtle_head_drop;
    if let (Some(Condition::TubingLeak), Some(level)) = (state.kind, state.step_level) {
        let bar = level * (1.0 - drop / 2.0);
        if fast_head < bar {
            return Some(Finding::new(
                Condition::TubingLeak,
                BASE + AGREES,
                vec![
                    Evidence::new("head_ratio_fast", fast_head, bar, "< level before the step"),
                    Evidence::new(
                        "head_loss_developed_over_h",
                        state.developed_secs / 3600.0,
                        th.abrupt_secs / 3600.0,
                        "<=",
                    ),
                ],
            ));
        }
        // The head came back past half the step. A leak does not heal: what loss is left stays
        // the leak's (judged on the usual bar) until the head is back at its baseline, rather
        // than being taken for a new loss, and a gradual one (wear), an hour later.
        *state = HeadLoss {
            departed: state.departed,
            reached_low: state.reached_low,
            kind: state.kind,
            developed_secs: state.developed_secs,
            current_at_onset: state.current_at_onset,
            at_departure: state.at_departure,
            ..HeadLoss::default()
        };
        return None;
    }
    if state.kind.is_some() || !i.at_rest {
        state.step = None;
        return None;
    }
    let fast_pip = val(&s.fast_pip)?;
    let fast_flow = val(&s.fast_flow);
    // The motor stays loaded: at its usual share of the baseline, or of its level before the
    // step (a pump put back at another operating point after a workover runs below its old
    // baseline current without being unloaded).
    let loaded = |before: Option<f64>| {
        val(&s.cur).is_none_or(|c| {
            c >= th.leak_current_ratio || before.is_some_and(|b| c >= b * th.leak_current_ratio)
        })
    };
    // Head and delivery step at once; the intake follows as the annulus fills. A drive that
    // turned faster since (holding its intake) would deliver more from a sound pump and tubing:
    // delivering no more than before is the loss there.
    let stepped = |l: &StepLevels, head: f64, flow: Option<f64>| {
        let flow_bar = if sped_up(i, l) {
            1.0
        } else {
            th.leak_step_flow_fall
        };
        head <= l.head * (1.0 - drop)
            && match (flow, l.flow) {
                (Some(now), Some(before)) => now <= before * flow_bar,
                _ => true,
            }
    };
    match state.step.as_mut() {
        // Given up at once if the head comes back.
        Some(levels) if fast_head <= levels.head * (1.0 - drop / 2.0) => {
            levels.head_since.add(Some(i.f.head_ratio?));
            if let Some(q) = i.f.flow_ratio {
                levels.flow_since.add(Some(q));
            }
            if let Some(t) = i.f.tubing_pressure_ratio {
                levels.thp_since.add(Some(t));
            }
            let waited = (i.ts - levels.since) as f64 / 1e6;
            let intake_up = fast_pip >= levels.pip * th.leak_subtle_pip_rise
                || drive_answered_the_filling_annulus(i, levels, fast_pip);
            if waited >= th.abrupt_secs {
                state.step = None;
                return None;
            }
            if waited >= th.leak_step_confirm_secs && intake_up {
                let levels = *levels;
                let mean_flow = levels.flow_since.value();
                let mean_head = levels.head_since.value()?;
                let mean_thp = levels.thp_since.value();
                // Without a flow meter on a drive that turned faster, the wellhead pressure is
                // the delivery: a sound pump turned faster would raise it (a flowline pressing
                // back makes the drive turn faster too, with the wellhead up).
                let thp_tolerance = if levels.flow.is_none() && sped_up(i, &levels) {
                    0.0
                } else {
                    th.leak_subtle_thp_tolerance
                };
                let wellhead_steady = match (mean_thp, levels.thp) {
                    (Some(now), Some(before)) => now <= before * (1.0 + thp_tolerance),
                    _ => true,
                };
                // A leak moves more fluid past the motor, not less: a winding getting hotter
                // says the pump lost flow for another reason (cooling, load).
                let motor_cool = val(&s.rise).is_none_or(|r| r < th.overheat_rise_ratio);
                if !(stepped(&levels, mean_head, mean_flow)
                    && loaded(levels.cur)
                    && wellhead_steady
                    && motor_cool)
                {
                    state.step = None;
                    return None;
                }
                state.kind = Some(Condition::TubingLeak);
                state.departed = Some(levels.since);
                state.developed_secs = 0.0;
                state.step_level = Some(levels.head);
                state.step = None;
                let mut ev = vec![
                    Evidence::new(
                        "head_ratio_since_step",
                        mean_head,
                        levels.head * (1.0 - drop),
                        "<= level before the step",
                    ),
                    Evidence::new(
                        "intake_pressure_ratio_fast",
                        fast_pip,
                        levels.pip * th.leak_subtle_pip_rise,
                        ">= level before the step",
                    ),
                ];
                if let (Some(now), Some(before)) = (mean_flow, levels.flow) {
                    ev.push(Evidence::new(
                        "flow_ratio_since_step",
                        now,
                        before * th.leak_step_flow_fall,
                        "<= level before the step",
                    ));
                }
                let conf = BASE + bonus(levels.flow.is_some(), AGREES);
                return Some(Finding::new(Condition::TubingLeak, conf, ev));
            }
        }
        Some(_) => state.step = None,
        None => {
            let levels = StepLevels {
                since: i.ts,
                head: val(&s.settle_head)?,
                pip: val(&s.settle_pip)?,
                flow: val(&s.settle_flow),
                thp: val(&s.settle_thp),
                cur: val(&s.settle_cur),
                freq: val(&s.settle_freq),
                head_since: Mean::default(),
                flow_since: Mean::default(),
                thp_since: Mean::default(),
            };
            // The head left a level it had held (not a swing through its mean).
            let held = match s.head_level_since {
                Some(since) => (i.ts - since) as f64 / 1e6,
                None => s.head_level_held_secs,
            };
            let from_level = held >= th.rest_hold_secs;
            if stepped(&levels, fast_head, fast_flow) && loaded(levels.cur) && from_level {
                state.step = Some(levels);
            }
        }
    }
    None
}

/// A drive that holds its intake pressure (set-point control) answers the fluid a leak returns
/// to the annulus by turning faster, not by letting the intake rise: the speed up by
/// `leak_subtle_speed_rise` over its level before the step, the intake held at its level (an
/// operator lowering the set point speeds the drive up too, but draws the intake down). The
/// faster pump still lifts liquid, so the motor draws no less than before; free gas reaching a
/// faster pump unloads it instead.
fn drive_answered_the_filling_annulus(i: &Input, levels: &StepLevels, fast_pip: f64) -> bool {
    let still_loaded = match (val(&i.s.fast_cur), levels.cur) {
        (Some(now), Some(before)) => now >= before,
        _ => true,
    };
    sped_up(i, levels) && fast_pip >= levels.pip * i.th.leak_subtle_pip_held && still_loaded
}

/// The drive turns at least `leak_subtle_speed_rise` times as fast as at the step.
fn sped_up(i: &Input, levels: &StepLevels) -> bool {
    match (i.f.frequency_hz, levels.freq) {
        (Some(now), Some(before)) => now >= before * i.th.leak_subtle_speed_rise,
        _ => false,
    }
}

/// A lower head with the surface delivery at or above its baseline is the pump running further
/// right on its own curve (the annulus still full after a start, a lower system head), not a
/// pump losing head: wear, scale and a leak all deliver less to the surface. Without a flow
/// meter, an intake still above its baseline and drawing down says the same.
fn operating_point_moved_right(i: &Input) -> bool {
    let (th, s) = (i.th, i.s);
    match val(&s.flow) {
        Some(q) => q >= th.head_loss_min_flow_shortfall_ratio,
        None => match (val(&s.fast_pip), val(&s.pip)) {
            (Some(fast), Some(slow)) => slow >= th.drawdown_pip_ratio && fast < slow,
            _ => false,
        },
    }
}

/// Without a discharge gauge the head cannot be measured, but a sudden loss of it shows: at a
/// steady speed the delivered flow drops within minutes while the intake rises (the fluid the
/// pump no longer lifts returns to the annulus) and the wellhead pressure falls with the
/// flowline's flow (a choke closing or a flowline surge raises it). Flow normalised by speed is
/// not invariant along the system curve, so the loss is measured against the delivery just
/// before it, not against the baseline, and forgotten when the speed changes.
fn delivery_proxy(i: &Input, state: &mut HeadLoss) -> Option<f64> {
    let (th, s) = (i.th, i.s);
    let flow = val(&s.fast_flow)?;
    let freq = i.f.frequency_hz;
    if let Some((before, f_before)) = state.delivery_ref {
        if freq.is_some_and(|f| (f - f_before).abs() > th.proxy_frequency_band * f_before) {
            state.delivery_ref = None;
            return None;
        }
        return Some(flow / before);
    }
    let steady_speed = match (freq, val(&s.settle_freq)) {
        (Some(f), Some(level)) => (f - level).abs() <= th.proxy_frequency_band * level,
        (None, _) => true,
        _ => false,
    };
    let before = val(&s.settle_flow)?;
    let dropped = flow < th.head_ratio_low * before;
    let intake_up = match (val(&s.fast_pip), val(&s.settle_pip)) {
        (Some(now), Some(level)) => now >= level * th.proxy_pip_rise_ratio,
        _ => false,
    };
    let wellhead_down = match (i.f.tubing_pressure_ratio, val(&s.settle_thp)) {
        (Some(now), Some(level)) => now < level * th.proxy_max_tubing_ratio,
        _ => false,
    };
    if steady_speed && dropped && intake_up && wellhead_down {
        state.delivery_ref = Some((before, freq.unwrap_or(0.0)));
        return Some(flow / before);
    }
    None
}

fn scale_since_departure(i: &Input, state: &HeadLoss) -> bool {
    state
        .at_departure
        .is_some_and(|then| then.scale_since(&MotorLevels::now(i), i.th))
}

/// The changes since the head began to depart that make it scale (see [`MotorLevels`]).
pub(crate) fn scale_evidence(i: &Input, state: &HeadLoss) -> Vec<Evidence> {
    state
        .at_departure
        .unwrap_or_default()
        .scale_evidence(&MotorLevels::now(i), i.th)
}

/// Whether an open leak episode has turned out to be a gradual loss, and which: a hole in the
/// tubing costs its head at once and the head then holds near the level it stepped to, while
/// wear and scale keep taking more, day after day. A loss that came fast enough to pass for a
/// step (a noisy head ratio crosses the bar early) but has kept deepening for hours since is
/// gradual; the motor tells wear from scale as for any gradual loss.
pub(crate) fn leak_turned_gradual(
    i: &Input,
    state: &mut HeadLoss,
) -> Option<(Condition, Vec<Evidence>)> {
    let th = i.th;
    if state.kind != Some(Condition::TubingLeak) {
        return None;
    }
    let now = val(&i.s.head)?;
    // A subtle leak is latched by its own rule, which does not set the onset.
    let onset = *state.onset.get_or_insert(i.ts);
    let since_onset = (i.ts - onset) as f64 / 1e6;
    if since_onset < th.leak_settle_secs {
        return None;
    }
    if since_onset < th.leak_settle_secs + th.leak_level_secs {
        state.settled.add(Some(now));
        return None;
    }
    let fall = state.settled.value()? - now;
    if fall < th.leak_deepening_ratio {
        state.deepened_since = None;
        return None;
    }
    let deepened_since = *state.deepened_since.get_or_insert(i.ts);
    if ((i.ts - deepened_since) as f64 / 1e6) < th.leak_deepening_hold_secs {
        return None;
    }
    // From here on the loss is judged as the gradual one it is: developing since it departed.
    state.developed_secs = (i.ts - state.departed.unwrap_or(onset)) as f64 / 1e6;
    let kind = if scale_since_departure(i, state) {
        Condition::ScalePlugging
    } else {
        Condition::PumpWear
    };
    let mut ev = vec![
        Evidence::new(
            "head_ratio_fall_since_step_settled",
            fall,
            th.leak_deepening_ratio,
            ">=",
        ),
        Evidence::new(
            "head_loss_developed_over_h",
            state.developed_secs / 3600.0,
            th.abrupt_secs / 3600.0,
            ">",
        ),
    ];
    if kind == Condition::ScalePlugging {
        ev.extend(scale_evidence(i, state));
    }
    Some((kind, ev))
}

/// Whether an open wear episode has turned out to be scale: the motor has since run hotter
/// than the lost flow explains.
pub(crate) fn wear_became_scale(i: &Input, state: &HeadLoss) -> bool {
    scale_since_departure(i, state)
}

/// Motor overheating while the pump otherwise produces: the winding runs hotter than its load
/// explains, or close to its limit. Low flow or a drawn-down intake explains a hot motor
/// (pump-off, gas); a motor cooling down after a stop is not overheating.
pub(crate) fn motor_overheat(i: &Input, gas: &GasEvidence) -> Option<Finding> {
    let (th, s) = (i.th, i.s);
    let temp = val(&s.fast_temp);
    // Less flow past the motor explains part of a hotter winding.
    let rise = val(&s.rise).map(|r| r * val(&s.cooling).unwrap_or(1.0).min(1.0));
    let near_limit = match (i.ctx.max_winding_temp_c, temp) {
        (Some(limit), Some(t)) => t >= limit - th.overheat_margin_c,
        _ => false,
    };
    let thermal = thermal_excess(i, temp, rise);
    let rise_at_least = |ratio: f64| rise.is_some_and(|r| r >= ratio);
    // Only a rise past the ratio is weighed against the headroom.
    let excess = thermal.filter(|_| rise_at_least(th.overheat_rise_ratio));
    let hot = excess.is_some_and(|e| e.significant(th));
    // At the operating point the baseline was learned at (same speed, load, intake and flow,
    // no free gas) nothing explains a warmer winding: the motor lost cooling or makes more
    // heat. There a smaller unexplained rise is already a fault, far below the limit.
    let cooling_lost = thermal.filter(|e| {
        !hot && rise_at_least(th.overheat_steady_rise_ratio)
            && e.excess_c >= th.overheat_steady_min_excess_c
            && warmed_lately(i)
            && at_baseline_operating_point(i, gas)
    });
    // Away from the baseline's operating point the same holds against the motor's own recent
    // hours: where speed, load, intake and flow kept their level of those hours, so should the
    // winding.
    let warmed_in_place = if hot || cooling_lost.is_some() {
        None
    } else {
        warmed_in_place(i, gas)
    };
    if !(hot || near_limit || cooling_lost.is_some() || warmed_in_place.is_some()) {
        return None;
    }
    let producing = val(&s.flow).is_none_or(|q| q >= th.overheat_producing_flow_ratio)
        && val(&s.pip).is_none_or(|p| p >= th.overheat_producing_pip_ratio);
    let cooling_down = match (temp, val(&s.slow_temp)) {
        (Some(fast), Some(slow)) => fast < slow - th.cooling_down_c,
        _ => false,
    };
    if !producing || cooling_down {
        return None;
    }
    let mut ev = Vec::new();
    if hot {
        ev.push(Evidence::opt(
            "winding_rise_ratio",
            rise,
            th.overheat_rise_ratio,
            ">=",
        ));
        if let Some(e) = excess {
            ev.push(e.evidence(th));
        }
    }
    if near_limit && let Some(limit) = i.ctx.max_winding_temp_c {
        ev.push(Evidence::opt(
            "motor_temp_c",
            temp,
            limit - th.overheat_margin_c,
            ">=",
        ));
    }
    if let Some(e) = cooling_lost {
        ev.push(Evidence::opt(
            "winding_rise_ratio",
            rise,
            th.overheat_steady_rise_ratio,
            ">=",
        ));
        ev.push(Evidence::new(
            "unexplained_winding_rise_c_at_baseline_point",
            e.excess_c,
            th.overheat_steady_min_excess_c,
            ">=",
        ));
    }
    if let Some(excess_c) = warmed_in_place {
        ev.push(Evidence::opt(
            "winding_rise_over_own_level",
            val(&s.rise)
                .zip(val(&s.thermal_level.rise))
                .map(|(r, l)| r / l),
            th.overheat_own_level_ratio,
            ">=",
        ));
        ev.push(Evidence::new(
            "winding_warming_c_at_steady_point",
            excess_c,
            th.overheat_steady_min_excess_c,
            ">=",
        ));
    }
    let conf = BASE + bonus(hot, AGREES) + bonus(near_limit, STRONG + AGREES);
    // Near its limit, no hotter than its load explains, and that load well above what the
    // flow takes: the motor is not losing its cooling but carrying too much. The cause to
    // act on is the overload (its own rule may flicker around its bar meanwhile).
    let load_explains =
        !hot && cooling_lost.is_none() && rise.is_none_or(|r| r < th.overheat_steady_rise_ratio);
    let drag = i
        .cur_unexplained
        .filter(|c| *c >= th.overload_current_ratio_near_limit && !i.supply_disturbed);
    if near_limit
        && load_explains
        && let Some(c) = drag
    {
        ev.push(Evidence::new(
            "current_ratio_unexplained_by_flow",
            c,
            th.overload_current_ratio_near_limit,
            ">=",
        ));
        return Some(Finding::new(Condition::Overload, conf, ev));
    }
    Some(Finding::new(Condition::MotorOverheat, conf, ev))
}

/// The winding runs clearly warmer than its own level of the last hours: the excess over the
/// baseline is new, not a baseline learned while the motor was still warming up after a start.
fn warmed_lately(i: &Input) -> bool {
    let (Some(tm), Some(ti)) = (i.m.get(Field::MotorTempC), i.m.get(Field::IntakeTempC)) else {
        return false;
    };
    // Against where it ran before the last stop too: the cold readings of a restart pull the
    // level down, and warming back up past it is no news.
    let level = match (val(&i.s.rise_level), i.s.rise_level_at_start) {
        (Some(l), Some(before)) => Some(l.max(before)),
        (l, before) => l.or(before),
    };
    match (val(&i.s.rise), level) {
        (Some(now), Some(level)) if now > 0.0 => {
            (tm - ti) * (1.0 - level / now) >= i.th.overheat_warming_c
        }
        _ => false,
    }
}

/// The winding runs warmer than its own level of the last hours (by `overheat_own_level_ratio`
/// and `overheat_steady_min_excess_c` degrees) while speed, motor load, intake pressure and flow
/// stayed at their level of those same hours and no new gas reached the intake: nothing the
/// pump does explains it. Returns the warming in degrees.
fn warmed_in_place(i: &Input, gas: &GasEvidence) -> Option<f64> {
    let (th, s) = (i.th, i.s);
    let l = &s.thermal_level;
    if !l.learned(i.ts, th) {
        return None;
    }
    let tm = i.m.get(Field::MotorTempC)?;
    let ti = i.m.get(Field::IntakeTempC)?;
    let (now, level) = (val(&s.rise)?, val(&l.rise)?);
    if level <= 0.0 || now < level * th.overheat_own_level_ratio {
        return None;
    }
    let warming_c = (tm - ti) * (1.0 - level / now);
    let tol = th.overheat_steady_tolerance;
    let held = |x: Option<f64>, level: &Ewma| match (x, val(level)) {
        (None, _) => true,
        (Some(x), Some(l)) if l > 0.0 => (x / l - 1.0).abs() <= tol,
        _ => false,
    };
    let steady = held(i.f.frequency_hz, &l.freq)
        && held(val(&s.cur), &l.cur)
        && held(val(&s.pip), &l.pip)
        && held(val(&s.flow), &l.flow);
    (warming_c >= th.overheat_steady_min_excess_c && steady && !gas.new_gas).then_some(warming_c)
}

/// The pump runs where its baseline was learned: the same speed, motor load, intake pressure
/// and (when metered) flow, within `overheat_steady_tolerance`, with no free gas at the intake
/// (gas past the motor cools it less).
fn at_baseline_operating_point(i: &Input, gas: &GasEvidence) -> bool {
    let tol = i.th.overheat_steady_tolerance;
    let near = |x: Option<f64>| x.is_some_and(|r| (r - 1.0).abs() <= tol);
    let speed = match (i.f.frequency_hz, i.b.operating_hz) {
        (Some(hz), Some(base)) if base > 1.0 => (hz / base - 1.0).abs() <= tol,
        (None, _) => true,
        _ => false,
    };
    speed
        && near(val(&i.s.cur))
        && near(val(&i.s.pip))
        && (i.f.flow_ratio.is_none() || near(val(&i.s.flow)))
        && !(gas.rich || gas.near_bubble || gas.new_gas)
}

/// How far the winding runs above what its load and cooling explain, in degrees, against the
/// headroom the explained temperature leaves below the motor's limit.
#[derive(Clone, Copy, Debug)]
struct ThermalExcess {
    excess_c: f64,
    headroom_c: Option<f64>,
}

impl ThermalExcess {
    /// Insulation ages with absolute temperature: an unexplained rise matters when it has eaten
    /// a good share of the margin to the limit (or, limit unknown, is large in degrees).
    fn significant(&self, th: &Thresholds) -> bool {
        match self.headroom_c {
            Some(room) => self.excess_c >= th.overheat_headroom_share * room.max(1.0),
            None => self.excess_c >= th.overheat_min_excess_c,
        }
    }

    fn evidence(&self, th: &Thresholds) -> Evidence {
        match self.headroom_c {
            Some(room) => Evidence::new(
                "winding_excess_share_of_headroom",
                self.excess_c / room.max(1.0),
                th.overheat_headroom_share,
                ">=",
            ),
            None => Evidence::new(
                "winding_excess_c",
                self.excess_c,
                th.overheat_min_excess_c,
                ">=",
            ),
        }
    }
}

/// The winding temperature now against the one its load and cooling explain (`rise` is the
/// measured rise over the explained one).
fn thermal_excess(i: &Input, temp: Option<f64>, rise: Option<f64>) -> Option<ThermalExcess> {
    let temp = temp?;
    let intake = i.m.get(Field::IntakeTempC)?;
    let ratio = rise.filter(|r| *r > 0.0)?;
    let rise_c = temp - intake;
    let explained_c = rise_c / ratio;
    Some(ThermalExcess {
        excess_c: rise_c - explained_c,
        headroom_c: i
            .ctx
            .max_winding_temp_c
            .map(|limit| limit - (intake + explained_c)),
    })
}

/// Rules that need no learned baseline, only the nameplate: they work from a well's first
/// readings (and right after a start, before the steady-state rules may judge).
/// A pump starting against a shut outlet: while it is still coming up to speed (where the
/// discharge should be below its at-speed level) the discharge is already above its baseline
/// and the wellhead pressed far up. Restarts against a closed valve trip again within a poll or
/// two on high pressure and never reach the settled rules; the trip confirms this finding.
pub(crate) fn deadhead_at_start(th: &Thresholds, f: &Features) -> Option<Finding> {
    let pd = f.discharge_pressure_ratio?;
    let thp = f.tubing_pressure_ratio?;
    (pd >= th.deadhead_discharge_ratio && thp >= th.deadhead_start_tubing_ratio).then(|| {
        Finding::new(
            Condition::ClosedValve,
            BASE,
            vec![
                Evidence::new(
                    "discharge_pressure_ratio",
                    pd,
                    th.deadhead_discharge_ratio,
                    ">=",
                ),
                Evidence::new(
                    "tubing_pressure_ratio",
                    thp,
                    th.deadhead_start_tubing_ratio,
                    ">=",
                ),
            ],
        )
    })
}

pub(crate) fn nameplate(
    th: &Thresholds,
    ctx: &WellContext,
    m: &Measurements,
    running_at_speed: bool,
    lifting_more: bool,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if !running_at_speed {
        return out;
    }
    if let (Some(rated), Some(amps)) = (ctx.rated_current_a, m.get(Field::MotorCurrentA))
        && amps >= th.nameplate_overload_share * rated
        && !lifting_more
    {
        out.push(Finding::new(
            Condition::Overload,
            BASE + STRONG,
            vec![Evidence::new(
                "motor_current_a",
                amps,
                th.nameplate_overload_share * rated,
                ">= nameplate share",
            )],
        ));
    }
    if let (Some(limit), Some(t)) = (ctx.max_winding_temp_c, m.get(Field::MotorTempC))
        && t >= limit - th.overheat_margin_c
    {
        out.push(Finding::new(
            Condition::MotorOverheat,
            BASE + STRONG,
            vec![Evidence::new(
                "motor_temp_c",
                t,
                limit - th.overheat_margin_c,
                ">=",
            )],
        ));
    }
    out
}

/// One bucket of the head trend: means of the readings at rest within `trend_bucket_secs`.
#[derive(Clone, Copy, Debug, Default)]
struct TrendBucket {
    start: i64,
    freq: Mean,
    head: Mean,
    thp: Mean,
    flow: Mean,
    gor: Mean,
    levels_at_start: MotorLevels,
}

/// Wear and scale as the well's own trend. Against the baseline a slow loss shows only once it
/// passes `head_ratio_low`; but the baseline was learned at one operating point, and a pump
/// turned to another speed holds a level of its own there (the affinity laws are approximate),
/// from which a worn or scaling pump keeps losing head, day after day, while it delivers less
/// (the wellhead pressure or the flow falls with it). That steady, one-way decline at one
/// operating point is what no normal operation makes: a choke, a flowline surge or a well test
/// moves the head and comes back; more inflow moves the pump right on its curve (less head) but
/// delivers more, not less.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeadTrend {
    open: Option<TrendBucket>,
    done: std::collections::VecDeque<TrendBucket>,
    last_ts: Option<i64>,
    /// This loss was already found to be scale (here or against the baseline bar): scale
    /// stays scale while the trend lasts, whatever bucket the trend is now measured from.
    pub scale_seen: bool,
    /// The decline as of the last closed bucket.
    found: Option<Decline>,
}

/// A steady decline found by [`HeadTrend`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decline {
    pub drop: f64,
    pub secs: f64,
    pub delivery_fall: f64,
    pub delivery_feature: &'static str,
    pub scale: bool,
    pub levels_then: MotorLevels,
}

impl HeadTrend {
    /// Takes in a reading judged at rest. A gap longer than a bucket (a stop, an outage) or a
    /// bucket at another operating point begins a new trend.
    pub fn update(&mut self, i: &Input) {
        let th = i.th;
        let Some(head) = val(&i.s.head) else {
            return;
        };
        let bucket_micros = (th.trend_bucket_secs * 1e6) as i64;
        if self.last_ts.is_some_and(|t| i.ts - t > bucket_micros) {
            self.clear();
        }
        self.last_ts = Some(i.ts);
        if self.open.is_some_and(|b| i.ts - b.start >= bucket_micros) {
            let closed = self.open.take().expect("checked");
            self.close(closed, th);
        }
        let b = self.open.get_or_insert_with(|| TrendBucket {
            start: i.ts,
            levels_at_start: MotorLevels::now(i),
            ..TrendBucket::default()
        });
        b.freq.add(i.f.frequency_hz);
        b.head.add(Some(head));
        b.thp.add(i.f.tubing_pressure_ratio);
        b.flow.add(i.f.flow_ratio);
        b.gor.add(i.f.gor_ratio);
    }

    pub fn clear(&mut self) {
        self.open = None;
        self.done.clear();
        self.scale_seen = false;
        self.found = None;
    }

    fn close(&mut self, b: TrendBucket, th: &Thresholds) {
        // A bucket the well spent mostly stopped says little.
        if b.head.n < 3 {
            self.done.clear();
            return;
        }
        // Against where the trend began: a drive creeping its speed up bucket by bucket
        // (holding an intake pressure) moves the operating point as a step does.
        let same_point = match (
            self.done.front().and_then(|p| p.freq.value()),
            b.freq.value(),
        ) {
            (Some(before), Some(now)) => (now - before).abs() <= th.trend_frequency_band * before,
            _ => true,
        };
        if !same_point {
            self.done.clear();
        }
        self.done.push_back(b);
        while self.done.len() > th.trend_buckets_kept {
            self.done.pop_front();
        }
        self.found = self.find_decline(th);
    }

    /// The steady decline ending with the last completed bucket, if it is one of wear or scale.
    /// The decline found when the last bucket closed, judged scale or wear by the motor now.
    /// (Fitting is done once per bucket, not per reading.)
    pub fn decline(&self, i: &Input) -> Option<Decline> {
        let found = self.found.as_ref()?;
        Some(Decline {
            scale: self.scale_seen || found.levels_then.scale_since(&MotorLevels::now(i), i.th),
            ..*found
        })
    }

    fn find_decline(&self, th: &Thresholds) -> Option<Decline> {
        let last = self.done.back()?;
        let n = self.done.len();
        // The run, ending now, whose fitted decline is the deepest while the fit says it is a
        // decline (its slope stands `trend_min_t` standard errors below zero): a bucket or two
        // of process noise does not break a trend, and a flat stretch before the loss began
        // does not dilute it.
        let mut best: Option<(usize, f64, Fit)> = None;
        for first in 0..n {
            let secs = (last.start - self.done[first].start) as f64 / 1e6;
            if secs < th.trend_min_secs {
                break;
            }
            let Some(fit) = self.fit(first, |b| b.head.value()) else {
                continue;
            };
            let Some(drop) = fit.relative_fall() else {
                continue;
            };
            if fit.t() <= -th.trend_min_t && best.as_ref().is_none_or(|(_, d, _)| drop > *d) {
                best = Some((first, drop, fit));
            }
        }
        let (first, drop, fit) = best?;
        if drop < th.trend_min_drop {
            return None;
        }
        // Gradual means spread over the run: a loss that came mostly between two buckets is a
        // step (gas, a leak, the intake drawn down), which the abrupt rules judge.
        let largest_step = (first + 1..n)
            .filter_map(|k| Some(self.done[k - 1].head.value()? - self.done[k].head.value()?))
            .fold(0.0_f64, f64::max);
        if largest_step > th.trend_max_step_share * drop * fit.at_start {
            return None;
        }
        let start = &self.done[first];
        // Gas reaching the pump lightens what it lifts: a head falling with the gas rising is
        // the gas's doing, not the pump's.
        if let Some(gas) = self.fit(first, |b| b.gor.value())
            && gas.relative_fall().is_some_and(|f| f < -th.trend_min_drop)
        {
            return None;
        }
        let (delivery_fall, delivery_feature) = match (
            self.fit(first, |b| b.flow.value()),
            self.fit(first, |b| b.thp.value()),
        ) {
            (Some(q), _) => (q.relative_fall()?, "flow_ratio_fall"),
            (None, Some(t)) => (t.relative_fall()?, "tubing_pressure_ratio_fall"),
            (None, None) => return None,
        };
        if delivery_fall < th.trend_min_delivery_fall {
            return None;
        }
        let levels_then = start.levels_at_start;
        Some(Decline {
            drop,
            secs: (last.start - start.start) as f64 / 1e6,
            delivery_fall,
            delivery_feature,
            scale: false,
            levels_then,
        })
    }

    /// Least-squares line through one bucket mean per bucket from `first` on (time in days).
    fn fit(&self, first: usize, value: impl Fn(&TrendBucket) -> Option<f64>) -> Option<Fit> {
        let t0 = self.done[first].start;
        let points: Vec<(f64, f64)> = self
            .done
            .iter()
            .skip(first)
            .filter_map(|b| Some(((b.start - t0) as f64 / 86_400e6, value(b)?)))
            .collect();
        Fit::of(&points)
    }
}

/// A straight line fitted to (time, value) points.
struct Fit {
    slope: f64,
    slope_se: f64,
    at_start: f64,
    at_end: f64,
}

impl Fit {
    fn of(points: &[(f64, f64)]) -> Option<Fit> {
        let n = points.len();
        if n < 3 {
            return None;
        }
        let nf = n as f64;
        let mx = points.iter().map(|p| p.0).sum::<f64>() / nf;
        let my = points.iter().map(|p| p.1).sum::<f64>() / nf;
        let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if sxx <= 0.0 {
            return None;
        }
        let slope = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx;
        let sse: f64 = points
            .iter()
            .map(|p| (p.1 - (my + slope * (p.0 - mx))).powi(2))
            .sum();
        let slope_se = (sse / (nf - 2.0) / sxx).sqrt();
        let (x0, x1) = (points[0].0, points[n - 1].0);
        Some(Fit {
            slope,
            slope_se,
            at_start: my + slope * (x0 - mx),
            at_end: my + slope * (x1 - mx),
        })
    }

    /// How far the fitted line fell from its start to its end, as a share of the start.
    fn relative_fall(&self) -> Option<f64> {
        (self.at_start > 0.0).then(|| (self.at_start - self.at_end) / self.at_start)
    }

    /// The slope in standard errors (a perfect line: as steep as it gets).
    fn t(&self) -> f64 {
        if self.slope_se > 0.0 {
            self.slope / self.slope_se
        } else if self.slope < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }
    }
}

/// Wear or scale from the well's own head trend (see [`HeadTrend`]), when the baseline bar
/// has not (yet) caught the loss.
pub(crate) fn head_trend(i: &Input, trend: &HeadTrend) -> Option<Finding> {
    let th = i.th;
    let d = trend.decline(i)?;
    let kind = if d.scale {
        Condition::ScalePlugging
    } else {
        Condition::PumpWear
    };
    let mut ev = vec![
        Evidence::new("head_trend_drop", d.drop, th.trend_min_drop, ">="),
        Evidence::new(
            "head_trend_over_h",
            d.secs / 3600.0,
            th.trend_min_secs / 3600.0,
            ">=",
        ),
        Evidence::new(
            d.delivery_feature,
            d.delivery_fall,
            th.trend_min_delivery_fall,
            ">=",
        ),
    ];
    if d.scale {
        // What made it scale (a scale seen earlier in the decline keeps it scale: then the
        // motor's levels now may say nothing more).
        ev.extend(d.levels_then.scale_evidence(&MotorLevels::now(i), th));
    }
    // Twice the bar is as sure as a slow loss gets.
    let depth = ((d.drop - th.trend_min_drop) / th.trend_min_drop).clamp(0.0, 1.0);
    let conf = BASE + AGREES * depth;
    Some(Finding::new(kind, conf, ev))
}
