//! Per-channel health: stuck values, impossible spikes, temperatures moving faster than any
//! thermal mass can, dropouts, and a gauge scattering far beyond its usual while the other
//! channels stay calm (judged by the engine, which sees them all). A faulty channel is hidden
//! from the condition rules (they see it as missing), and reported as `sensor_fault` with the
//! channel named, while the other channels keep telling the story.

use std::collections::VecDeque;

use crate::telemetry::Field;

use super::stats::{Ewma, RecentWindow, SlidingMedian, Welford};
use super::thresholds::Thresholds;

/// What is wrong with one channel right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelFault {
    Stuck,
    Spikes,
    /// Jumps no physical quantity of this kind can make (a temperature swinging tens of
    /// degrees between readings): a loose connection or a failing transmitter.
    Erratic,
    Dropout,
    /// Scattering between readings many times more than the gauge usually does while every
    /// other channel stays as calm as usual: the process cannot move one quantity alone, so the
    /// gauge (or its wiring) is failing.
    Noisy,
}

impl ChannelFault {
    pub fn name(self) -> &'static str {
        match self {
            ChannelFault::Stuck => "stuck",
            ChannelFault::Spikes => "spikes",
            ChannelFault::Erratic => "erratic",
            ChannelFault::Dropout => "dropout",
            ChannelFault::Noisy => "noisy",
        }
    }
}

/// Streaming state of one channel.
#[derive(Clone, Debug, Default)]
pub struct ChannelMonitor {
    /// Training statistics: successive equal non-zero values / pairs, presence.
    train_pairs: u64,
    train_equal: u64,
    train_seen: u64,
    train_present: u64,
    /// Longest healthy run of one repeated value seen in training, in readings and in time:
    /// a coarse gauge, or a historian holding a slow gauge's last value between updates,
    /// repeats legitimately for that long.
    train_run_start: i64,
    train_longest_run: u32,
    train_longest_secs: f64,
    /// Resolution (smallest step seen) and spread of successive differences in training.
    train_quantum: f64,
    train_steps: Welford,
    /// Mean size of the training steps kept in `train_steps`: a step many times it is a spike
    /// or a change of the process, not the gauge's noise.
    train_step_size: f64,
    /// The gauge's noise is below its resolution: a steady process reads as one repeated value,
    /// so a repeat says nothing about the sensor.
    coarse: bool,
    /// Training readings repeated the previous value at least as often as they changed: a
    /// repeat is what a steady process looks like on this gauge, so only a repeat through a
    /// process change says the gauge is stuck (`Thresholds::stuck_excitation_share`).
    quantised: bool,
    /// The process (see [`PROCESS`]) when the current run of one repeated value began, and
    /// whether it has moved since.
    run_process: Process,
    run_excited: bool,
    /// Probability that a healthy reading repeats the previous value exactly.
    p_repeat: f64,
    /// Share of readings carrying this channel during training.
    presence: f64,
    typical: f64,
    last: Option<f64>,
    run: u32,
    run_start: i64,
    level: Ewma,
    missing: Ewma,
    /// A suspicious value waiting for the next reading to tell a spike from a real change.
    suspect: Option<f64>,
    /// Consecutive suspicious readings.
    suspects: u32,
    spikes: VecDeque<i64>,
    pub stuck_run: u32,
    /// The fastest this quantity can physically move, per second (temperatures: the motor and
    /// the fluid have thermal mass), with the smallest jump judged; `None`: no such limit.
    slew_limit: Option<(f64, f64)>,
    last_seen: Option<(i64, f64)>,
    /// Times of readings that moved faster than `slew_limit` against the previous such move:
    /// erratic is back and forth. (A fast one-way move, the annulus drawn down at a start, is
    /// counted once.)
    slews: VecDeque<i64>,
    /// Direction of the last fast move.
    last_slew_sign: i8,
    /// The last absolute steps between successive readings (`NOISE_WINDOW` of them).
    recent_steps: SlidingMedian<NOISE_WINDOW>,
    last_raw: Option<f64>,
    /// The usual median step, averaged slowly while the channel is not judged noisy.
    usual_step: Ewma,
    /// Median recent step.
    median_step: Option<f64>,
    /// The values of those steps, and the level averaged slowly while the channel is not
    /// judged noisy: a scattering gauge reads around the true value, so the median of its
    /// recent values holds where the quantity stood. Only the ammeter's is read, and only
    /// while it scatters: selected when asked, not kept sorted.
    recent_values: RecentWindow<NOISE_WINDOW>,
    usual_level: Ewma,
    level_updates: u8,
    /// The smallest non-zero step ever seen: the gauge's resolution as far as known.
    resolution: f64,
    /// Readings in a row that scattered beyond `noise_ratio` (see [`ChannelMonitor::noise`]).
    pub noisy_run: u32,
    /// Judged noisy (by the engine, which alone sees whether the other channels are calm).
    pub noisy: bool,
    /// Nothing reads this channel's scatter (it is not [`WATCHED`]: the engine never observes
    /// it after training), so training keeps no step windows for it.
    pub scatter_unread: bool,
}

/// Steps whose median measures a channel's scatter: a median of 15 ignores up to seven large
/// steps (a spike is two, a start a few), so only a gauge that scatters most of the time counts.
const NOISE_WINDOW: usize = 15;

/// Training pairs of readings below which a gauge's repeat statistics mean nothing yet.
const MIN_TRAINING_PAIRS: u64 = 20;

/// What says the process moved, for a quantised gauge's repeats: the drive frequency and the
/// levels of the current, the pressures and the flow.
pub const PROCESS: [Field; 5] = [
    Field::FrequencyHz,
    Field::MotorCurrentA,
    Field::IntakePressurePsi,
    Field::DischargePressurePsi,
    Field::FlowRateBpd,
];

/// Values of the [`PROCESS`] channels for one reading (`None`: unknown, or the channel judged).
pub type Process = [Option<f64>; PROCESS.len()];

/// Channels watched for faults (frequency and the slow lab channels are left out: they can be
/// legitimately constant).
pub const WATCHED: [Field; 10] = [
    Field::MotorCurrentA,
    Field::MotorVoltageV,
    Field::IntakePressurePsi,
    Field::DischargePressurePsi,
    Field::TubingPressurePsi,
    Field::IntakeTempC,
    Field::MotorTempC,
    Field::VibrationXG,
    Field::VibrationYG,
    Field::FlowRateBpd,
];

/// Channels judged for scatter: measured process quantities whose scatter between readings is
/// the gauge's own. The current too, but only beside a calm gauge of the pump's work (see
/// `judge_noise`): gas swings the load by swinging the lift and the delivery, which the
/// classic ammeter chart shows alone only because nothing else was measured. Left out: the
/// voltage (it swings with the supply) and vibration (its scatter is what it measures).
pub const NOISE_JUDGED: [Field; 7] = [
    Field::MotorCurrentA,
    Field::IntakePressurePsi,
    Field::DischargePressurePsi,
    Field::TubingPressurePsi,
    Field::IntakeTempC,
    Field::MotorTempC,
    Field::FlowRateBpd,
];

impl ChannelMonitor {
    /// A channel whose quantity cannot move faster than `per_sec` (by more than `min_jump`
    /// between two readings: gauge noise and resolution stay below it).
    pub fn with_slew_limit(per_sec: f64, min_jump: f64) -> ChannelMonitor {
        ChannelMonitor {
            slew_limit: Some((per_sec, min_jump)),
            ..ChannelMonitor::default()
        }
    }

    /// Whether this reading moved faster than the quantity can, remembered in `slews`.
    fn slewed(&mut self, ts: i64, value: Option<f64>, window_secs: f64) -> bool {
        while let Some(&t) = self.slews.front() {
            if ts - t > (window_secs * 1e6) as i64 {
                self.slews.pop_front();
            } else {
                break;
            }
        }
        let (Some((per_sec, min_jump)), Some(v)) = (self.slew_limit, value) else {
            return false;
        };
        let previous = self.last_seen.replace((ts, v));
        let Some((t0, v0)) = previous else {
            return false;
        };
        let dt = ((ts - t0) as f64 / 1e6).max(1.0);
        let jump = (v - v0).abs();
        let too_fast = jump >= min_jump && jump / dt > per_sec;
        if too_fast {
            let sign = if v > v0 { 1 } else { -1 };
            if sign != self.last_slew_sign {
                self.slews.push_back(ts);
            }
            self.last_slew_sign = sign;
        }
        too_fast
    }

    pub fn train(&mut self, ts: i64, value: Option<f64>, th: &Thresholds) {
        if !self.scatter_unread {
            self.track_steps(ts, value, false, th);
        }
        self.train_seen += 1;
        if let Some(v) = value {
            self.train_present += 1;
            if v != 0.0 {
                if let Some(prev) = self.last.filter(|p| *p != 0.0) {
                    self.train_pairs += 1;
                    let step = (v - prev).abs();
                    // The spread of the steps measures the gauge's noise; one spike (or a
                    // speed change) would swamp it.
                    let outlier = self.train_steps.n >= MIN_TRAINING_PAIRS
                        && step
                            > th.noise_step_outlier_factor
                                * self.train_step_size.max(self.train_quantum);
                    if !outlier {
                        self.train_steps.push(v - prev);
                        self.train_step_size +=
                            (step - self.train_step_size) / self.train_steps.n as f64;
                    }
                    if step > 0.0 && (self.train_quantum == 0.0 || step < self.train_quantum) {
                        self.train_quantum = step;
                    }
                    if prev == v {
                        self.train_equal += 1;
                        self.run += 1;
                        self.train_longest_run = self.train_longest_run.max(self.run);
                        self.train_longest_secs = self
                            .train_longest_secs
                            .max((ts - self.train_run_start) as f64 / 1e6);
                    } else {
                        self.run = 0;
                        self.train_run_start = ts;
                    }
                } else {
                    self.run = 0;
                    self.train_run_start = ts;
                }
                self.typical += (v.abs() - self.typical) / self.train_present as f64;
            }
        }
        self.last = value;
    }

    pub fn finish_training(&mut self, th: &Thresholds) {
        self.p_repeat = if self.train_pairs >= MIN_TRAINING_PAIRS {
            // Inflated: repeats cluster when a slow signal sits near a quantisation step.
            (1.5 * (self.train_equal as f64 + 0.5) / (self.train_pairs as f64 + 1.0))
                .clamp(0.05, 1.0)
        } else {
            1.0
        };
        self.coarse = self.train_quantum > 0.0
            && self.train_steps.std() < th.coarse_gauge_steps * self.train_quantum;
        self.quantised =
            self.train_pairs >= MIN_TRAINING_PAIRS && 2 * self.train_equal >= self.train_pairs;
        self.presence = if self.train_seen > 0 {
            self.train_present as f64 / self.train_seen as f64
        } else {
            0.0
        };
        self.run = 0;
    }

    /// Readings in a row that a healthy channel repeats with less than `probability`, and
    /// never fewer than `stuck_training_run_factor` × the longest run seen in training.
    fn stuck_limit(&self, th: &Thresholds) -> Option<u32> {
        if self.p_repeat >= 0.9 || self.coarse {
            return None;
        }
        let n = (th.stuck_probability.ln() / self.p_repeat.ln()).ceil();
        let seen = (th.stuck_training_run_factor * self.train_longest_run as f64).ceil();
        Some((n.max(seen) as u32).max(th.stuck_min_readings))
    }

    /// Feeds one (post-training) value; returns the value the rules may use (None when it is
    /// missing, stuck or a suspected spike) and the current fault, if any. `process` is the
    /// state of the [`PROCESS`] channels other than this one (this one's own entry `None`).
    pub fn observe(
        &mut self,
        ts: i64,
        value: Option<f64>,
        system_changed: bool,
        at_rest: bool,
        process: &Process,
        th: &Thresholds,
    ) -> (Option<f64>, Option<ChannelFault>) {
        self.track_steps(ts, value, at_rest || system_changed, th);
        let tau = th.dropout_window_secs;
        if !self.missing.is_init() {
            self.missing.update(ts, 0.0, tau);
        }
        self.missing
            .update(ts, if value.is_some() { 0.0 } else { 1.0 }, tau);
        // Spike confirmation: the previous suspicious value is a spike if this one is back near
        // the level it left.
        let mut confirmed_change = false;
        if let (Some(prev), Some(v)) = (self.suspect.take(), value) {
            let level = self.level.value().unwrap_or(0.0);
            if (v - level).abs() <= 0.3 * level.abs().max(1e-9) {
                self.spikes.push_back(ts);
            } else if self.suspects >= 5 && (v - prev).abs() <= 0.3 * prev.abs().max(1e-9) {
                // The new value held for several readings: a real change, not spikes.
                self.level.reset();
                confirmed_change = true;
            }
        }
        while let Some(&t) = self.spikes.front() {
            if ts - t > (th.spike_window_secs * 1e6) as i64 {
                self.spikes.pop_front();
            } else {
                break;
            }
        }
        let slewed = self.slewed(ts, value, th.spike_window_secs);
        let mut usable = value;
        if let Some(v) = value {
            // A stopped pump is a system at rest: the drive outputs hold their idle values and
            // pressures and temperatures settle, so a repeated value is physics, not a stuck
            // gauge (the training statistics describe a running pump).
            if Some(v) == self.last && v != 0.0 && !at_rest {
                self.run += 1;
            } else {
                self.run = 0;
            }
            self.last = Some(v);
            let level = self.level.value();
            let l = level.unwrap_or(0.0).abs();
            // A zero is impossible only while the channel works in its normal range; a jump
            // is judged against at least a fifth of its typical magnitude, so near-zero noise
            // (a stopped pump's vibration) is not mistaken for spikes.
            let impossible_zero = v == 0.0 && self.typical > 0.0 && l > 0.5 * self.typical;
            let jump = self.typical > 0.0
                && level.is_some()
                && v.abs() > th.spike_factor * l.max(0.2 * self.typical);
            if (impossible_zero || jump) && !confirmed_change && !system_changed {
                self.suspect = Some(v);
                self.suspects += 1;
                usable = None;
            } else {
                self.suspects = 0;
            }
            if usable.is_some() {
                self.level.update(ts, v, 300.0);
            }
        }
        if self.run == 0 {
            self.run_start = ts;
            self.run_process = *process;
            self.run_excited = false;
        } else if !self.run_excited {
            for (then, now) in self.run_process.iter_mut().zip(process) {
                match (*then, now) {
                    // A level first known during the run is its reference.
                    (None, Some(b)) => *then = Some(*b),
                    (Some(a), Some(b)) if a.abs() > 1e-9 => {
                        self.run_excited |= ((b - a) / a).abs() >= th.stuck_excitation_share;
                    }
                    _ => {}
                }
            }
        }
        self.stuck_run = self.run;
        // The limit is never below `stuck_min_readings`: checking that first spares two
        // logarithms per channel and reading. A run must also outlast the longest healthy
        // repeat of training in time (sampling may be faster now than the gauge updates).
        let stuck = self.run >= th.stuck_min_readings
            && (ts - self.run_start) as f64 / 1e6
                >= th.stuck_training_run_factor * self.train_longest_secs
            && self.stuck_limit(th).is_some_and(|n| self.run >= n)
            && (!self.quantised || self.run_excited);
        // A spike jumps out and back: two fast moves. As for spikes, `spike_count` of them.
        let erratic = self.slews.len() as u32 >= 2 * th.spike_count;
        if stuck || slewed || erratic {
            usable = None;
        }
        let fault = if stuck {
            Some(ChannelFault::Stuck)
        } else if self.spikes.len() as u32 >= th.spike_count {
            Some(ChannelFault::Spikes)
        } else if erratic {
            Some(ChannelFault::Erratic)
        } else if self.presence > 0.9 && self.missing.mean > th.dropout_share {
            Some(ChannelFault::Dropout)
        } else {
            None
        };
        (usable, fault)
    }

    /// Keeps the recent steps between successive readings and, while the channel is not judged
    /// noisy, learns its usual median step. A pump at rest or the whole system moving (a start,
    /// a speed change) says nothing about the gauge: those steps are left out.
    fn track_steps(&mut self, ts: i64, value: Option<f64>, unsteady: bool, th: &Thresholds) {
        let previous = std::mem::replace(&mut self.last_raw, value);
        let (Some(v), Some(p)) = (value, previous) else {
            return;
        };
        if unsteady {
            self.recent_steps.clear();
            self.median_step = None;
            self.recent_values.clear();
            return;
        }
        let step = (v - p).abs();
        if step > 0.0 && (self.resolution == 0.0 || step < self.resolution) {
            self.resolution = step;
        }
        self.recent_steps.push(step);
        self.recent_values.push(v);
        // Once per window is plenty for a level averaged over hours.
        self.level_updates = (self.level_updates + 1) % NOISE_WINDOW as u8;
        if !self.noisy && self.level_updates == 0 {
            self.usual_level.update(ts, v, th.noise_usual_tau_secs);
        }
        let Some(median) = self.recent_steps.median() else {
            self.median_step = None;
            return;
        };
        self.median_step = Some(median);
        if !self.noisy {
            self.usual_step.update(ts, median, th.noise_usual_tau_secs);
        }
    }

    /// How many times its usual scatter the channel scatters now (`None` until it has a full
    /// window of steady readings). The usual step is never taken below three resolution steps
    /// (a coarse gauge dithers one step back and forth at any noise) or 0.01 % of its typical
    /// value.
    pub fn noise_ratio(&self) -> Option<f64> {
        let median = self.median_step?;
        let usual = self.usual_step.value()?;
        let floor = (3.0 * self.resolution).max(1e-4 * self.typical);
        (floor > 0.0).then(|| median / usual.max(floor))
    }

    /// Whether the scatter alone is beyond what a working gauge shows: `noise_ratio` times its
    /// usual (`on`; once judged noisy, the lower `off` keeps it so) and at least
    /// `noise_min_share` of the typical value between successive readings (far beyond any
    /// transmitter's accuracy).
    pub fn scatters(&self, th: &Thresholds) -> bool {
        let limit = if self.noisy {
            th.noise_ratio_off
        } else {
            th.noise_ratio
        };
        self.noise_ratio().is_some_and(|r| r >= limit)
            && self
                .median_step
                .is_some_and(|m| m >= th.noise_min_share * self.typical)
    }

    /// The median recent step as a share of the channel's typical value.
    pub fn scatter_share(&self) -> Option<f64> {
        let m = self.median_step?;
        (self.typical > 0.0).then(|| m / self.typical)
    }

    /// Whether the median of the recent readings is within `share` of the channel's usual
    /// level (`false` until both are known).
    pub fn median_holds(&self, share: f64) -> bool {
        match (self.recent_values.median(), self.usual_level.value()) {
            (Some(now), Some(usual)) if usual.abs() > 1e-9 => {
                ((now - usual) / usual).abs() <= share
            }
            _ => false,
        }
    }

    /// The gauge's resolution as far as seen (the smallest non-zero step between readings).
    pub fn resolution(&self) -> Option<f64> {
        (self.resolution > 0.0).then_some(self.resolution)
    }

    pub fn missing_share(&self) -> f64 {
        self.missing.mean
    }

    /// The channel's recent level (a 5-minute average of its usable values).
    pub fn level(&self) -> Option<f64> {
        self.level.value()
    }

    /// Relative departure of a value from this channel's recent level.
    pub fn departure(&self, value: Option<f64>) -> f64 {
        match (value, self.level.value()) {
            (Some(v), Some(l)) if l.abs() > 1e-9 => ((v - l) / l).abs(),
            _ => 0.0,
        }
    }

    /// Level the channel was at before it went quiet (for continuity after a stop).
    pub fn reset_level(&mut self) {
        self.level.reset();
        self.suspect = None;
    }
}
