//! Fleet planning: which wells exist, what is installed in them, and which conditions strike
//! when. Everything is drawn from the seed, so a plan (and the data it produces) is reproducible;
//! a scenario file can pin any part of it.

use serde::Deserialize;

use crate::condition::{Condition, Onset};
use crate::duration::parse_duration_micros;
use crate::hydraulics::{Affinity, StageCurve, pump_bhp};
use crate::rng::SimRng;
use crate::telemetry::{Timestamp, WellId};
use crate::well::{FluidSpec, Location, WellMeta};

use super::catalog::{PUMP_CATALOG, PumpModel, motor_for, pump_model, round_to};
use super::family::{Family, Physics, WellModel};
use super::plant::Plant;

const HOUR: f64 = 3600.0;
const DAY: f64 = 86_400.0;

/// Which conditions to inject across the fleet.
#[derive(Clone, Debug, PartialEq)]
pub enum ConditionChoice {
    /// Every condition at least once.
    All,
    None,
    /// Each listed condition at least once.
    List(Vec<Condition>),
}

impl std::str::FromStr for ConditionChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(ConditionChoice::All),
            "none" => Ok(ConditionChoice::None),
            list => list
                .split(',')
                .map(|c| c.trim().parse::<Condition>())
                .collect::<Result<Vec<_>, _>>()
                .map(ConditionChoice::List),
        }
    }
}

/// Sampling interval: one for all wells, or each well drawn from the standard gauge rates
/// within a range.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IntervalChoice {
    Fixed(i64),
    Range { min: i64, max: i64 },
}

impl std::str::FromStr for IntervalChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |t: &str| -> Result<i64, String> {
            let v = parse_duration_micros(t)?;
            if v < 1_000_000 || v % 1_000_000 != 0 {
                return Err(format!(
                    "interval {t:?} must be a whole number of seconds ≥ 1s"
                ));
            }
            Ok(v)
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let (min, max) = (parse(a)?, parse(b)?);
                if min > max {
                    return Err(format!("interval range {s:?} is empty"));
                }
                Ok(IntervalChoice::Range { min, max })
            }
            None => Ok(IntervalChoice::Fixed(parse(s)?)),
        }
    }
}

/// Everything that shapes a simulated fleet.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub seed: u64,
    /// Number of randomly drawn wells (in addition to pinned ones).
    pub wells: usize,
    pub start: Timestamp,
    pub duration_micros: i64,
    pub interval: IntervalChoice,
    pub conditions: ConditionChoice,
    /// Normal running required before an abrupt condition may start.
    pub min_healthy_micros: i64,
    /// Delay before the relay restarts a tripped pump.
    pub restart_delay_s: f64,
    /// Operator frequency changes, planned stops, drifts.
    pub normal_life: bool,
    /// Probability that any one value of a reading is missing.
    pub missing_value_rate: f64,
    pub id_prefix: String,
    pub pinned: Vec<PinnedWell>,
    /// Model family the wells are drawn from (see [`super::family`]).
    pub family: Family,
    /// Draw each well's sampling interval from the family's gauge rates instead of `interval`
    /// (ignored for `classic`, which has none).
    pub interval_from_family: bool,
    /// How many times each requested condition is placed across the fleet (≥ 1). Beyond the
    /// first, a placement that fits on no well is skipped, not an error.
    pub condition_rounds: usize,
}

impl FleetConfig {
    pub fn new(seed: u64, wells: usize, start: Timestamp, duration_micros: i64) -> FleetConfig {
        FleetConfig {
            seed,
            wells,
            start,
            duration_micros,
            interval: IntervalChoice::Fixed(10_000_000),
            conditions: ConditionChoice::All,
            min_healthy_micros: 86_400_000_000,
            restart_delay_s: 1800.0,
            normal_life: true,
            missing_value_rate: 0.002,
            id_prefix: "ESP-".to_owned(),
            pinned: Vec::new(),
            family: Family::Classic,
            interval_from_family: false,
            condition_rounds: 1,
        }
    }
}

/// A well fixed by a scenario file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedWell {
    pub id: Option<String>,
    /// Catalog model name (see `espwatch simulate --help`).
    pub pump: Option<String>,
    pub nominal_frequency_hz: Option<f64>,
    pub interval: Option<String>,
    pub normal_life: Option<bool>,
    pub missing_value_rate: Option<f64>,
    #[serde(default)]
    pub conditions: Vec<PinnedCondition>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedCondition {
    pub condition: Condition,
    /// Offset from the simulation start, e.g. "30h".
    pub start: String,
    /// Offset from the simulation start; default: a typical duration for the condition.
    pub end: Option<String>,
    /// 0 (mild) to 1 (severe); default 0.5.
    pub severity: Option<f64>,
}

/// A scenario file: optional fleet settings plus pinned wells.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub seed: Option<u64>,
    /// Random wells in addition to the pinned ones (default 0 when wells are pinned).
    pub random_wells: Option<usize>,
    pub start: Option<String>,
    pub duration: Option<String>,
    pub interval: Option<String>,
    pub conditions: Option<String>,
    pub restart_delay: Option<String>,
    pub normal_life: Option<bool>,
    /// Model family (`classic`, `field`, `pipctl`, `holdout`, `mixed`).
    pub family: Option<String>,
    #[serde(default)]
    pub wells: Vec<PinnedWell>,
}

impl Scenario {
    /// Applies the scenario over `base` (command-line values).
    pub fn apply(self, base: &mut FleetConfig) -> Result<(), String> {
        if let Some(s) = self.seed {
            base.seed = s;
        }
        if let Some(start) = &self.start {
            base.start = Timestamp::parse_rfc3339(start).map_err(|e| format!("start: {e}"))?;
        }
        if let Some(d) = &self.duration {
            base.duration_micros =
                parse_duration_micros(d).map_err(|e| format!("duration: {e}"))?;
        }
        if let Some(i) = &self.interval {
            base.interval = i.parse().map_err(|e| format!("interval: {e}"))?;
            base.interval_from_family = false;
        }
        if let Some(c) = &self.conditions {
            base.conditions = c.parse().map_err(|e| format!("conditions: {e}"))?;
        }
        if let Some(r) = &self.restart_delay {
            base.restart_delay_s =
                parse_duration_micros(r).map_err(|e| format!("restart_delay: {e}"))? as f64 / 1e6;
        }
        if let Some(n) = self.normal_life {
            base.normal_life = n;
        }
        if let Some(f) = &self.family {
            base.family = f.parse().map_err(|e| format!("family: {e}"))?;
        }
        if !self.wells.is_empty() {
            base.wells = self.random_wells.unwrap_or(0);
        } else if let Some(n) = self.random_wells {
            base.wells = n;
        }
        for (i, w) in self.wells.iter().enumerate() {
            if let Some(p) = &w.pump
                && pump_model(p).is_none()
            {
                return Err(format!("wells[{i}].pump: unknown model {p:?}"));
            }
            if let Some(iv) = &w.interval {
                iv.parse::<IntervalChoice>()
                    .map_err(|e| format!("wells[{i}].interval: {e}"))?;
            }
            for (j, c) in w.conditions.iter().enumerate() {
                parse_duration_micros(&c.start)
                    .map_err(|e| format!("wells[{i}].conditions[{j}].start: {e}"))?;
                if let Some(e) = &c.end {
                    parse_duration_micros(e)
                        .map_err(|e| format!("wells[{i}].conditions[{j}].end: {e}"))?;
                }
            }
        }
        base.pinned = self.wells;
        Ok(())
    }
}

/// One injected condition on one well, in seconds from the simulation start.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub condition: Condition,
    pub start_s: f64,
    pub end_s: f64,
    pub severity: f64,
    /// Condition-specific choice (sensor channel and failure mode, ramp length...).
    pub variant: u64,
}

/// Everything needed to simulate one well.
#[derive(Clone, Debug)]
pub struct WellPlan {
    pub id: WellId,
    pub plant: Plant,
    pub meta: WellMeta,
    pub interval_micros: i64,
    pub normal_life: bool,
    pub missing_value_rate: f64,
    pub episodes: Vec<Episode>,
    pub seed: u64,
    /// Modelling choices drawn from the run's family (`plant.physics` holds the physics part).
    pub model: WellModel,
}

/// Ground truth: one row of `labels.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub well_id: WellId,
    pub file: String,
    pub start: Timestamp,
    pub end: Timestamp,
    pub condition: Condition,
}

/// The planned fleet.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    pub config: FleetConfig,
    pub wells: Vec<WellPlan>,
}

impl FleetPlan {
    pub fn labels(&self) -> Vec<Label> {
        let mut out = Vec::new();
        for w in &self.wells {
            for e in &w.episodes {
                out.push(Label {
                    well_id: w.id.clone(),
                    file: format!("{}.csv", w.id),
                    start: Timestamp(self.config.start.0 + (e.start_s * 1e6) as i64),
                    end: Timestamp(self.config.start.0 + (e.end_s * 1e6) as i64),
                    condition: e.condition,
                });
            }
        }
        out.sort_by(|a, b| (a.start, a.well_id.as_str()).cmp(&(b.start, b.well_id.as_str())));
        out
    }
}

/// Typical length of an abrupt condition, seconds: (min, max). `None`: lasts to the end (the
/// pump must be pulled).
fn typical_duration(c: Condition) -> Option<(f64, f64)> {
    match c {
        Condition::GasInterference => Some((4.0 * HOUR, 12.0 * HOUR)),
        Condition::GasLock => Some((4.0 * HOUR, 10.0 * HOUR)),
        Condition::PumpOff => Some((5.0 * HOUR, 12.0 * HOUR)),
        Condition::ClosedValve => Some((1.0 * HOUR, 3.0 * HOUR)),
        Condition::Overload => Some((2.0 * HOUR, 6.0 * HOUR)),
        Condition::MotorOverheat => Some((3.0 * HOUR, 8.0 * HOUR)),
        Condition::PowerFluctuation => Some((1.0 * HOUR, 4.0 * HOUR)),
        Condition::SensorFault => Some((3.0 * HOUR, 24.0 * HOUR)),
        Condition::TubingLeak
        | Condition::BrokenShaft
        | Condition::PumpWear
        | Condition::ScalePlugging => None,
    }
}

/// Plans a fleet. Errors name what cannot be satisfied (too short a run for the conditions).
pub fn plan_fleet(config: &FleetConfig) -> Result<FleetPlan, String> {
    let root = SimRng::new(config.seed);
    let total = config.pinned.len() + config.wells;
    if total == 0 {
        return Err("the fleet has no wells".into());
    }
    if config.duration_micros < 60_000_000 {
        return Err("duration must be at least 1m".into());
    }
    let duration_s = config.duration_micros as f64 / 1e6;
    let width = total.to_string().len().max(3);
    let mut wells = Vec::with_capacity(total);
    for i in 0..total {
        let pinned = config.pinned.get(i);
        let mut rng = root.fork(i as u64 + 1);
        let id_text = match pinned.and_then(|p| p.id.clone()) {
            Some(id) => id,
            None => format!("{}{:0width$}", config.id_prefix, i + 1),
        };
        let id = WellId::parse(&id_text).map_err(|e| format!("well id {id_text:?}: {e}"))?;
        let model = match pinned.and_then(|p| p.pump.as_deref()) {
            Some(name) => pump_model(name).ok_or_else(|| format!("unknown pump model {name:?}"))?,
            None => rng.pick(&PUMP_CATALOG),
        };
        let nominal = pinned.and_then(|p| p.nominal_frequency_hz);
        let field = format!("Field-{}", (b'A' + (i / 8 % 26) as u8) as char);
        let (mut plant, mut meta) = build_installation(
            &mut rng,
            &id,
            model,
            nominal,
            config.restart_delay_s,
            &field,
        )?;
        // Family choices come from their own stream, so `classic` plans stay as they were.
        let mut family_rng = root.fork(0xFA_0000 + i as u64);
        let well_model = match config.family {
            Family::Classic => WellModel::classic(),
            f => {
                let m = WellModel::draw(f, &mut family_rng, plant.nominal_hz, plant.water_cut_pct);
                apply_physics(&mut plant, m.physics);
                if let Some(ratio) = m.intake_below_bubble {
                    run_below_bubble(&mut plant, &mut meta, ratio);
                }
                WellModel {
                    physics: plant.physics,
                    ..m
                }
            }
        };
        let family_interval = config
            .interval_from_family
            .then(|| well_model.family.intervals_s())
            .flatten()
            .map(|rates| *family_rng.pick(rates) * 1_000_000);
        let interval_choice = match (pinned.and_then(|p| p.interval.as_deref()), family_interval) {
            (Some(t), _) => t.parse()?,
            (None, Some(v)) => IntervalChoice::Fixed(v),
            (None, None) => config.interval,
        };
        let interval_micros = match interval_choice {
            IntervalChoice::Fixed(v) => v,
            IntervalChoice::Range { min, max } => {
                let rates: Vec<i64> = [1, 2, 5, 10, 15, 20, 30, 60]
                    .iter()
                    .map(|s| s * 1_000_000)
                    .filter(|v| *v >= min && *v <= max)
                    .collect();
                if rates.is_empty() {
                    min
                } else {
                    *rng.pick(&rates)
                }
            }
        };
        let mut episodes = Vec::new();
        if let Some(p) = pinned {
            for c in &p.conditions {
                let start_s = parse_duration_micros(&c.start)? as f64 / 1e6;
                let end_s = match &c.end {
                    Some(e) => parse_duration_micros(e)? as f64 / 1e6,
                    None => match typical_duration(c.condition) {
                        Some((lo, hi)) => start_s + 0.5 * (lo + hi),
                        None => duration_s,
                    },
                };
                if end_s <= start_s {
                    return Err(format!("well {id}: {} ends before it starts", c.condition));
                }
                episodes.push(Episode {
                    condition: c.condition,
                    start_s,
                    end_s: end_s.min(duration_s),
                    severity: c.severity.unwrap_or(0.5).clamp(0.0, 1.0),
                    variant: rng.next_u64(),
                });
            }
        }
        wells.push(WellPlan {
            id,
            plant,
            meta,
            interval_micros,
            normal_life: pinned
                .and_then(|p| p.normal_life)
                .unwrap_or(config.normal_life),
            missing_value_rate: pinned
                .and_then(|p| p.missing_value_rate)
                .unwrap_or(config.missing_value_rate),
            episodes,
            seed: rng.next_u64(),
            model: well_model,
        });
    }
    assign_random_conditions(config, &root, &mut wells, duration_s)?;
    Ok(FleetPlan {
        config: config.clone(),
        wells,
    })
}

/// Spreads the requested conditions over the random (unpinned) wells: each at least once, then
/// some more at random, leaving a good share of wells healthy.
fn assign_random_conditions(
    config: &FleetConfig,
    root: &SimRng,
    wells: &mut [WellPlan],
    duration_s: f64,
) -> Result<(), String> {
    let wanted: Vec<Condition> = match &config.conditions {
        ConditionChoice::None => return Ok(()),
        ConditionChoice::All => Condition::ALL.to_vec(),
        ConditionChoice::List(l) => l.clone(),
    };
    if wanted.is_empty() {
        return Ok(());
    }
    let first_random = config.pinned.len();
    let random: Vec<usize> = (first_random..wells.len()).collect();
    if random.is_empty() {
        return Ok(());
    }
    let mut rng = root.fork(0xC0_FFEE);
    let mut order = random.clone();
    for i in (1..order.len()).rev() {
        let j = rng.int(0, i as i64) as usize;
        order.swap(i, j);
    }
    let min_healthy = config.min_healthy_micros as f64 / 1e6;
    // Each requested condition once, round-robin over the shuffled wells.
    let mut queue: Vec<(usize, Condition)> = wanted
        .iter()
        .enumerate()
        .map(|(k, c)| (order[k % order.len()], *c))
        .collect();
    // Then about a third of the remaining wells get one more at random.
    for &w in order.iter().skip(wanted.len()) {
        if rng.chance(0.35) {
            queue.push((w, *rng.pick(&wanted)));
        }
    }
    let mut extra: Vec<(usize, Condition)> = Vec::new();
    for round in 1..config.condition_rounds.max(1) {
        for (k, c) in wanted.iter().enumerate() {
            extra.push(((k + round * (wanted.len() + 1)) % order.len(), *c));
        }
    }
    let required = queue.len();
    for (n, (w, condition)) in queue
        .into_iter()
        .chain(extra.into_iter().map(|(k, c)| (order[k], c)))
        .enumerate()
    {
        let (w, slot) = if n < required {
            (
                w,
                free_slot(
                    &wells[w].episodes,
                    condition,
                    duration_s,
                    min_healthy,
                    &mut rng,
                ),
            )
        } else {
            // Later rounds: the first well, from this one on, with room for it.
            let start = order.iter().position(|&o| o == w).unwrap_or(0);
            let mut found = (w, None);
            for step in 0..order.len() {
                let candidate = order[(start + step) % order.len()];
                if let Some(slot) = free_slot(
                    &wells[candidate].episodes,
                    condition,
                    duration_s,
                    min_healthy,
                    &mut rng,
                ) {
                    found = (candidate, Some(slot));
                    break;
                }
            }
            if found.1.is_none() {
                continue;
            }
            found
        };
        let slot = slot.ok_or_else(|| {
            format!(
                "a {}-long run cannot fit {condition} on well {} after {} of normal running; \
                     use a longer --duration, more --wells, or fewer --conditions",
                crate::duration::format_duration_micros(config.duration_micros),
                wells[w].id,
                crate::duration::format_duration_micros(config.min_healthy_micros),
            )
        })?;
        let severity = rng.unit();
        let variant = rng.next_u64();
        wells[w].episodes.push(Episode {
            condition,
            start_s: slot.0,
            end_s: slot.1,
            severity,
            variant,
        });
        // Power trouble hits a field: up to three healthy neighbours see the same window.
        if condition == Condition::PowerFluctuation {
            let field = wells[w].meta.field.clone();
            let mut added = 0;
            for (n, neighbour) in wells.iter_mut().enumerate() {
                if n != w
                    && n >= first_random
                    && added < 3
                    && neighbour.meta.field == field
                    && neighbour.episodes.is_empty()
                    && rng.chance(0.5)
                {
                    neighbour.episodes.push(Episode {
                        condition,
                        start_s: slot.0,
                        end_s: slot.1,
                        severity: rng.unit(),
                        variant: rng.next_u64(),
                    });
                    added += 1;
                }
            }
        }
    }
    for w in wells.iter_mut() {
        w.episodes.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    }
    Ok(())
}

/// A window for `condition` that starts after the healthy period and overlaps nothing already
/// planned on the well (with a six-hour recovery gap).
fn free_slot(
    existing: &[Episode],
    condition: Condition,
    duration_s: f64,
    min_healthy: f64,
    rng: &mut SimRng,
) -> Option<(f64, f64)> {
    let gap = 6.0 * HOUR;
    let (min_len, max_len) = match typical_duration(condition) {
        Some(r) => r,
        // Persistent conditions need room to show: gradual ones develop over days.
        None if condition.onset() == Onset::Gradual => (2.0 * DAY, f64::INFINITY),
        None => (6.0 * HOUR, f64::INFINITY),
    };
    let earliest = min_healthy;
    for _ in 0..50 {
        let latest_start = duration_s - min_len;
        if latest_start < earliest {
            return None;
        }
        let start = rng
            .range(earliest, latest_start.max(earliest) + 1.0)
            .min(latest_start);
        let end = if max_len.is_finite() {
            (start + rng.range(min_len, max_len)).min(duration_s)
        } else {
            duration_s
        };
        let clashes = existing
            .iter()
            .any(|e| start < e.end_s + gap && e.start_s < end + gap);
        if !clashes {
            return Some((start.round(), end.round()));
        }
    }
    None
}

/// Gives an installation its family's physics, keeping it commissionable: the relay is
/// re-commissioned on the new physics, and a choice that leaves the pump unable to lift its
/// well or the motor overloaded at the top of its range falls back to the classic part.
fn apply_physics(plant: &mut Plant, physics: Physics) {
    let candidates = [
        physics,
        Physics {
            viscous_head: 1.0,
            viscous_bhp: 1.0,
            ..physics
        },
        Physics {
            viscous_head: 1.0,
            viscous_bhp: 1.0,
            motor: Physics::CLASSIC.motor,
            ..physics
        },
        Physics::CLASSIC,
    ];
    let nominal = plant.nominal_hz;
    let healthy_q = {
        let mut p = plant.clone();
        p.physics = Physics::CLASSIC;
        p.equilibrium(nominal, p.reservoir_psi).0
    };
    for candidate in candidates {
        plant.physics = candidate;
        let (q, level) = plant.equilibrium(nominal, plant.reservoir_psi);
        let pip = plant.intake_pressure(level);
        if q < 0.7 * healthy_q || pip < plant.bubble_point_psi * 1.05 || level < 50.0 {
            continue;
        }
        if plant.healthy_current(nominal + 3.0) > 0.98 * plant.rated_current_a {
            continue;
        }
        plant.underload_a = 0.75 * plant.healthy_current(nominal - 3.0);
        return;
    }
    plant.physics = Physics::CLASSIC;
}

/// Raises the fluid's bubble point so the healthy intake runs at `ratio` of it (free gas at
/// the intake is this well's normal), when the pump still lifts the well; the registry says so.
fn run_below_bubble(plant: &mut Plant, meta: &mut WellMeta, ratio: f64) {
    let nominal = plant.nominal_hz;
    let before = plant.clone();
    let (q0, level) = plant.equilibrium(nominal, plant.reservoir_psi);
    let pip = plant.intake_pressure(level);
    plant.bubble_point_psi = (pip / ratio).min(0.9 * plant.reservoir_psi);
    let (q, _) = plant.equilibrium(nominal, plant.reservoir_psi);
    if q < 0.8 * q0 || plant.healthy_current(nominal + 3.0) > 0.98 * plant.rated_current_a {
        *plant = before;
        return;
    }
    plant.underload_a = 0.75 * plant.healthy_current(nominal - 3.0);
    if let Some(fluid) = meta.fluid.as_mut() {
        fluid.bubble_point_psi = Some(round_to(plant.bubble_point_psi, 0));
    }
}

/// Draws a physically consistent installation: a pump sized for the well's inflow at a healthy
/// intake pressure, a motor sized for the pump, and a relay commissioned on the result.
fn build_installation(
    rng: &mut SimRng,
    id: &WellId,
    model: &'static PumpModel,
    nominal_hz: Option<f64>,
    restart_delay_s: f64,
    field: &str,
) -> Result<(Plant, WellMeta), String> {
    for _attempt in 0..50 {
        let base = model.base_frequency_hz;
        let nominal =
            nominal_hz.unwrap_or_else(|| (base * rng.range(0.92, 1.08) * 2.0).round() / 2.0);
        let ratio = nominal / base;
        let target_q = model.bep_flow() * rng.range(0.9, 1.15) * ratio;
        let depth = rng.range(4000.0, 9000.0).round();
        let water_cut = rng.range(5.0, 95.0);
        let sg = 0.86 * (1.0 - water_cut / 100.0) + 1.04 * water_cut / 100.0;
        let grad = 0.433 * sg;
        let gor = rng.range(150.0, 900.0);
        let mut bubble = (300.0 + 1.6 * gor).min(2200.0);
        let pip_target = (bubble * rng.range(1.2, 1.6)).min(0.5 * depth * grad);
        bubble = bubble.min(pip_target / 1.2);
        let casing = rng.range(30.0, 120.0);
        let separator = rng.range(80.0, 200.0);
        let flowline_k = rng.range(20.0, 70.0) / (target_q * target_q);
        let friction_k = rng.range(30.0, 140.0) / (target_q * target_q);
        let required_psi = separator
            + flowline_k * target_q * target_q
            + depth * grad
            + friction_k * target_q * target_q
            - pip_target;
        let spec_probe = model.spec(1);
        let curve = StageCurve::from_spec(&spec_probe).expect("catalog curve");
        let aff = Affinity::new(base, nominal);
        let head_per_stage = aff.head_from_base(curve.head_ft(aff.flow_to_base(target_q)));
        let stages = (required_psi / grad / head_per_stage).ceil();
        if !(20.0..=600.0).contains(&stages) {
            continue;
        }
        let spec = model.spec(stages as u32);
        // Size the motor for the top of the operator's frequency range.
        let top = Affinity::new(base, nominal + 4.0);
        let shaft_top = pump_bhp(
            &curve,
            stages,
            top,
            top.flow_from_base(aff.flow_to_base(target_q)),
        ) * sg;
        let shaft_base = shaft_top / top.ratio;
        let voltage = if shaft_base < 80.0 {
            1000.0
        } else if shaft_base < 250.0 {
            2000.0
        } else {
            3300.0
        };
        let motor = motor_for(shaft_base, voltage);
        let drawdown = rng.range(300.0, 1400.0);
        let perfs_below = rng.range(100.0, 600.0).round();
        let pwf_target = pip_target + perfs_below * grad;
        let (casing_id_in, tubing_od_in) = match model.housing_od_in {
            od if od < 4.5 => (4.95, 2.375),
            od if od < 6.0 => (6.276, 2.875),
            _ => (8.68, 3.5),
        };
        let motor_od_in = model.housing_od_in + 0.5;
        let area = |outer: f64, inner: f64| {
            std::f64::consts::PI / 4.0 * (outer * outer - inner * inner) / 144.0
        };
        let mut plant = Plant {
            model,
            curve: StageCurve::from_spec(&spec).expect("catalog curve"),
            bep_flow_bpd: model.bep_flow(),
            stages,
            base_hz: base,
            nominal_hz: nominal,
            rated_hp: motor.rated_hp.unwrap_or(100.0),
            rated_voltage_v: voltage,
            rated_current_a: motor.rated_current_a.unwrap_or(50.0),
            max_winding_temp_c: motor.max_winding_temp_c.unwrap_or(150.0),
            depth_ft: depth,
            perfs_below_ft: perfs_below,
            casing_psi: casing,
            separator_psi: separator,
            flowline_k,
            tubing_friction_k: friction_k,
            sg,
            water_cut_pct: water_cut,
            gor_scf_bbl: gor,
            bubble_point_psi: bubble,
            reservoir_psi: pwf_target + drawdown,
            pi: target_q / drawdown,
            reservoir_temp_c: rng.range(70.0, 115.0),
            annulus_area_ft2: area(casing_id_in, tubing_od_in),
            motor_flow_area_ft2: area(casing_id_in, motor_od_in.min(casing_id_in - 0.3)),
            winding_rise_c: rng.range(22.0, 35.0),
            base_vibration_g: rng.range(0.08, 0.3),
            vibration_axis_ratio: rng.range(0.7, 1.3),
            underload_a: 0.0,
            overload_a: 1.2 * motor.rated_current_a.unwrap_or(50.0),
            restart_delay_s,
            physics: Physics::CLASSIC,
        };
        let (q, level) = plant.equilibrium(nominal, plant.reservoir_psi);
        let pip = plant.intake_pressure(level);
        if q <= 0.6 * target_q || pip < bubble * 1.05 || level < 100.0 {
            continue;
        }
        plant.underload_a = 0.75 * plant.healthy_current(nominal - 3.0);
        if plant.healthy_current(nominal + 3.0) > 0.98 * plant.rated_current_a {
            continue;
        }
        let meta = WellMeta {
            well_id: id.clone(),
            name: Some(format!("{} ({})", id, model.name)),
            field: Some(field.to_owned()),
            location: Some(Location {
                lat: round_to(29.5 + rng.range(-0.5, 0.5), 5),
                lon: round_to(-98.5 + rng.range(-0.5, 0.5), 5),
            }),
            pump: Some(spec),
            motor: Some(motor),
            setting_depth_ft: Some(depth),
            fluid: Some(FluidSpec {
                specific_gravity: Some(round_to(sg, 3)),
                bubble_point_psi: Some(round_to(bubble, 0)),
                gor_scf_bbl: Some(round_to(gor, 0)),
                water_cut_pct: Some(round_to(water_cut, 1)),
            }),
            sample_interval_s: None,
            timezone: None,
        };
        return Ok((plant, meta));
    }
    Err(format!(
        "could not size a consistent installation for well {id} with pump {}",
        model.name
    ))
}
