//! Physics properties and condition signatures of the simulator.
//!
//! Signatures follow the primer's table: each condition is injected into a pinned well and the
//! direction of change of each signal is checked against the same well's healthy baseline.

use proptest::prelude::*;

use super::fleet::{PinnedCondition, PinnedWell};
use super::*;
use crate::condition::Condition;
use crate::hydraulics::{Affinity, StageCurve, pump_head_ft, tdh_ft};
use crate::telemetry::{Field, Timestamp};

const HOUR_US: i64 = 3_600_000_000;

fn start() -> Timestamp {
    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
}

fn plan_one(
    seed: u64,
    pump: Option<&str>,
    conditions: Vec<PinnedCondition>,
    hours: i64,
    interval: &str,
) -> FleetPlan {
    let mut cfg = FleetConfig::new(seed, 0, start(), hours * HOUR_US);
    cfg.normal_life = false;
    cfg.pinned = vec![PinnedWell {
        id: Some("W-1".into()),
        pump: pump.map(str::to_owned),
        interval: Some(interval.into()),
        conditions,
        ..Default::default()
    }];
    plan_fleet(&cfg).unwrap()
}

fn run(plan: &FleetPlan) -> Vec<Sample> {
    let w = &plan.wells[0];
    let mut sim = WellSimulator::new(w, plan.config.start, plan.config.duration_micros);
    std::iter::from_fn(|| sim.next_sample()).collect()
}

/// Values of a channel in [from_h, to_h) hours, optionally only while the motor runs settled.
fn values(
    samples: &[Sample],
    field: Field,
    from_h: f64,
    to_h: f64,
    running_only: bool,
) -> Vec<f64> {
    let t0 = start().0;
    samples
        .iter()
        .filter(|s| {
            let h = (s.ts.0 - t0) as f64 / HOUR_US as f64;
            h >= from_h
                && h < to_h
                && (!running_only || s.truth.running && s.truth.frequency_hz > 30.0)
        })
        .filter_map(|s| s.measured.and_then(|m| m.get(field)))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    assert!(!v.is_empty(), "no samples");
    v.iter().sum::<f64>() / v.len() as f64
}

fn sd(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MIN, f64::max)
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn episode(
    condition: Condition,
    start_h: u32,
    end_h: Option<u32>,
    severity: f64,
) -> Vec<PinnedCondition> {
    vec![PinnedCondition {
        condition,
        start: format!("{start_h}h"),
        end: end_h.map(|e| format!("{e}h")),
        severity: Some(severity),
    }]
}

/// Baseline (healthy, the six hours before onset at 30 h) and condition window statistics.
struct Compare {
    samples: Vec<Sample>,
    plan: FleetPlan,
}

impl Compare {
    fn new(condition: Condition, pump: &str, end_h: u32, total_h: i64) -> Compare {
        let plan = plan_one(
            11,
            Some(pump),
            episode(condition, 30, Some(end_h), 0.6),
            total_h,
            "10s",
        );
        Compare {
            samples: run(&plan),
            plan,
        }
    }
    fn base(&self, f: Field) -> Vec<f64> {
        values(&self.samples, f, 24.0, 30.0, true)
    }
    fn during(&self, f: Field, from_h: f64, to_h: f64, running_only: bool) -> Vec<f64> {
        values(&self.samples, f, from_h, to_h, running_only)
    }
}

#[test]
fn healthy_head_matches_the_catalog_curve_within_noise() {
    for model in PUMP_CATALOG.iter().map(|m| m.name) {
        let mut cfg = FleetConfig::new(3, 0, start(), 48 * HOUR_US);
        cfg.conditions = ConditionChoice::None;
        cfg.pinned = vec![PinnedWell {
            pump: Some(model.into()),
            interval: Some("30s".into()),
            ..Default::default()
        }];
        let plan = plan_fleet(&cfg).unwrap();
        let w = &plan.wells[0];
        let curve = StageCurve::from_spec(w.meta.pump.as_ref().unwrap()).unwrap();
        let sg = w.meta.fluid.as_ref().unwrap().specific_gravity.unwrap();
        let base = w.plant.base_hz;
        let mut errors = Vec::new();
        let mut sim = WellSimulator::new(w, cfg.start, cfg.duration_micros);
        while let Some(s) = sim.next_sample() {
            let Some(m) = s.measured else { continue };
            let (Some(f), Some(q), Some(pi), Some(pd)) = (
                m.get(Field::FrequencyHz),
                m.get(Field::FlowRateBpd),
                m.get(Field::IntakePressurePsi),
                m.get(Field::DischargePressurePsi),
            ) else {
                continue;
            };
            if f < 30.0 || q <= 0.0 {
                continue;
            }
            let catalog = pump_head_ft(&curve, w.plant.stages, Affinity::new(base, f), q);
            errors.push((tdh_ft(pd, pi, sg) / catalog - 1.0).abs());
        }
        assert!(
            errors.len() > 1000,
            "{model}: {} running samples",
            errors.len()
        );
        let typical = median(&errors);
        assert!(typical < 0.02, "{model}: median head error {typical:.4}");
    }
}

#[test]
fn same_seed_same_output_and_other_seeds_differ() {
    let render = |seed: u64| {
        let mut cfg = FleetConfig::new(seed, 3, start(), 40 * HOUR_US);
        cfg.min_healthy_micros = 6 * HOUR_US;
        cfg.conditions =
            ConditionChoice::List(vec![Condition::GasLock, Condition::PowerFluctuation]);
        cfg.interval = "1s..60s".parse().unwrap();
        let plan = plan_fleet(&cfg).unwrap();
        let mut out = Vec::new();
        for w in &plan.wells {
            let mut sim = WellSimulator::new(w, cfg.start, cfg.duration_micros);
            while let Some(s) = sim.next_sample() {
                if let Some(v) = s.measured {
                    csv::write_row(&mut out, w.id.as_str(), s.ts, &v);
                }
            }
        }
        (out, plan.labels())
    };
    let (a, la) = render(42);
    let (b, lb) = render(42);
    assert!(a == b, "same seed must give identical bytes");
    assert_eq!(la, lb);
    let (c, _) = render(43);
    assert!(a != c);
}

#[test]
fn conditions_all_covers_every_condition_after_a_healthy_day() {
    let cfg = FleetConfig::new(99, 14, start(), 7 * 24 * HOUR_US);
    let plan = plan_fleet(&cfg).unwrap();
    let labels = plan.labels();
    for c in Condition::ALL {
        assert!(labels.iter().any(|l| l.condition == c), "{c} missing");
    }
    for l in &labels {
        assert!(
            l.start.0 - start().0 >= 24 * HOUR_US,
            "{l:?} starts inside the first day"
        );
        assert!(l.end > l.start);
    }
    // Too short a run for the requested conditions is a clear error, not a silent omission.
    let short = FleetConfig::new(1, 12, start(), 20 * HOUR_US);
    assert!(plan_fleet(&short).unwrap_err().contains("cannot fit"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn affinity_laws_scale_the_catalog_curve(model in 0usize..7, f in 30.0f64..75.0, q0 in 0.0f64..1.0) {
        let m = &PUMP_CATALOG[model];
        let curve = StageCurve::from_spec(&m.spec(100)).unwrap();
        let aff = Affinity::new(m.base_frequency_hz, f);
        let q_base = q0 * curve.max_flow();
        let r = f / m.base_frequency_hz;
        let head = pump_head_ft(&curve, 100.0, aff, q_base * r);
        prop_assert!((head - 100.0 * curve.head_ft(q_base) * r * r).abs() < 1e-6 * head.max(1.0));
    }

    /// Whatever the seed, pump and condition: flow is never negative, a running pump's intake is
    /// at or below its discharge, and electrical input covers hydraulic output.
    #[test]
    fn physics_invariants_hold(seed in 0u64..10_000, model in 0usize..7, condition in 0usize..12) {
        let c = Condition::ALL[condition];
        let plan = plan_one(seed, Some(PUMP_CATALOG[model].name), episode(c, 8, Some(14), 0.9), 16, "20s");
        for s in run(&plan) {
            let t = s.truth;
            prop_assert!(t.pump_flow_bpd >= 0.0 && t.surface_flow_bpd >= 0.0 && t.inflow_bpd >= 0.0);
            if let Some(m) = s.measured {
                prop_assert!(m.get(Field::FlowRateBpd).is_none_or(|q| q >= 0.0));
                for f in Field::ALL {
                    if let Some(v) = m.get(f) {
                        let r = f.sane_range();
                        prop_assert!(v >= r.min && v <= r.max, "{f} = {v}");
                    }
                }
            }
            if t.running && t.pump_flow_bpd > 0.0 {
                // A gas-locked pump ramping at a few hertz lifts next to nothing: never less.
                prop_assert!(t.intake_psi <= t.discharge_psi + 1e-6, "{t:?}");
                prop_assert!(t.electrical_input_kw >= t.hydraulic_kw, "{t:?}");
            }
        }
    }
}

#[test]
fn gas_interference_signature() {
    let c = Compare::new(Condition::GasInterference, "RX-400-1100", 40, 44);
    let (i0, i1) = (
        c.base(Field::MotorCurrentA),
        c.during(Field::MotorCurrentA, 31.0, 40.0, true),
    );
    assert!(mean(&i1) < mean(&i0), "current falls");
    assert!(
        sd(&i1) > 3.0 * sd(&i0),
        "current erratic: {} vs {}",
        sd(&i1),
        sd(&i0)
    );
    let (p0, p1) = (
        c.base(Field::IntakePressurePsi),
        c.during(Field::IntakePressurePsi, 31.0, 40.0, true),
    );
    assert!(mean(&p1) < mean(&p0), "PIP falls");
    let (q0, q1) = (
        c.base(Field::FlowRateBpd),
        c.during(Field::FlowRateBpd, 31.0, 40.0, true),
    );
    assert!(
        mean(&q1) < mean(&q0) && sd(&q1) > 3.0 * sd(&q0),
        "flow falls and is erratic"
    );
    let (d0, d1) = (
        c.base(Field::DischargePressurePsi),
        c.during(Field::DischargePressurePsi, 31.0, 40.0, true),
    );
    assert!(sd(&d1) > 3.0 * sd(&d0), "discharge erratic");
    let (v0, v1) = (
        c.base(Field::VibrationXG),
        c.during(Field::VibrationXG, 31.0, 40.0, true),
    );
    assert!(mean(&v1) > mean(&v0), "vibration rises");
    let (t0, t1) = (
        c.base(Field::MotorTempC),
        c.during(Field::MotorTempC, 31.0, 40.0, true),
    );
    assert!(max(&t1) > max(&t0), "motor temperature rises");
    let running = c.samples.iter().filter(|s| s.truth.running).count();
    assert!(
        running as f64 > 0.9 * c.samples.len() as f64,
        "the pump keeps turning"
    );
}

#[test]
fn gas_lock_signature() {
    let c = Compare::new(Condition::GasLock, "RX-538-2600", 38, 40);
    let i0 = mean(&c.base(Field::MotorCurrentA));
    let i1 = c.during(Field::MotorCurrentA, 30.2, 38.0, true);
    let no_load = 0.3 * c.plan.wells[0].plant.rated_current_a;
    assert!(
        median(&i1) < 0.5 * (i0 + no_load),
        "current near no-load: {} vs {i0}",
        median(&i1)
    );
    let p0 = mean(&c.base(Field::IntakePressurePsi));
    assert!(
        max(&c.during(Field::IntakePressurePsi, 30.5, 38.0, false)) > 1.2 * p0,
        "PIP rises after"
    );
    let d0 = mean(&c.base(Field::DischargePressurePsi));
    assert!(
        median(&c.during(Field::DischargePressurePsi, 30.5, 38.0, false)) < d0,
        "discharge falls"
    );
    let q = c.during(Field::FlowRateBpd, 30.5, 38.0, false);
    assert!(
        median(&q) < 0.05 * mean(&c.base(Field::FlowRateBpd)),
        "flow ≈ 0"
    );
    assert!(
        max(&c.during(Field::MotorTempC, 30.0, 38.0, false))
            > max(&c.base(Field::MotorTempC)) + 5.0,
        "motor temp ↑↑"
    );
    let stopped = c
        .during(Field::FrequencyHz, 30.0, 38.0, false)
        .iter()
        .filter(|f| **f == 0.0)
        .count();
    let restarts = c.plan.wells[0].episodes.len();
    assert!(stopped > 0 && restarts == 1, "underload trips and restarts");
}

#[test]
fn pump_off_signature() {
    let c = Compare::new(Condition::PumpOff, "RX-400-1100", 40, 42);
    let p0 = mean(&c.base(Field::IntakePressurePsi));
    let p1 = c.during(Field::IntakePressurePsi, 30.0, 40.0, false);
    assert!(
        min(&p1) < 0.75 * p0,
        "PIP falls to its minimum: {} vs {p0}",
        min(&p1)
    );
    let i0 = mean(&c.base(Field::MotorCurrentA));
    assert!(
        min(&c.during(Field::MotorCurrentA, 30.0, 40.0, true)) < 0.85 * i0,
        "current falls to the underload trip"
    );
    let q0 = mean(&c.base(Field::FlowRateBpd));
    assert!(
        mean(&c.during(Field::FlowRateBpd, 31.0, 40.0, false)) < 0.7 * q0,
        "flow falls"
    );
    let d0 = mean(&c.base(Field::DischargePressurePsi));
    assert!(
        mean(&c.during(Field::DischargePressurePsi, 31.0, 40.0, false)) < d0,
        "discharge falls"
    );
    let freq = c.during(Field::FrequencyHz, 30.0, 40.0, false);
    let cycles = freq
        .windows(2)
        .filter(|w| w[0] == 0.0 && w[1] > 0.0)
        .count();
    assert!(
        cycles >= 2,
        "cycling: trip, recover, restart ({cycles} restarts)"
    );
    assert!(
        max(&c.during(Field::MotorTempC, 30.0, 40.0, false)) > max(&c.base(Field::MotorTempC)),
        "motor temp rises"
    );
}

#[test]
fn closed_valve_signature() {
    let c = Compare::new(Condition::ClosedValve, "RX-538-2600", 33, 36);
    let running = |f| c.during(f, 30.002, 30.015, true);
    assert!(
        mean(&running(Field::MotorCurrentA)) < mean(&c.base(Field::MotorCurrentA)),
        "current falls"
    );
    assert!(
        max(&c.during(Field::IntakePressurePsi, 30.0, 33.0, false))
            > mean(&c.base(Field::IntakePressurePsi)),
        "PIP rises"
    );
    let d = max(&c.during(Field::DischargePressurePsi, 30.0, 33.0, false));
    assert!(
        d > 1.1 * mean(&c.base(Field::DischargePressurePsi)),
        "discharge rises to shut-in head"
    );
    assert!(
        max(&c.during(Field::TubingPressurePsi, 30.0, 33.0, false))
            > 2.0 * mean(&c.base(Field::TubingPressurePsi)),
        "tubing pressure rises"
    );
    assert!(
        max(&c.during(Field::FlowRateBpd, 30.01, 33.0, false)) < 1.0,
        "no flow"
    );
    assert!(
        max(&c.during(Field::MotorTempC, 30.0, 33.0, false))
            > max(&c.base(Field::MotorTempC)) + 3.0,
        "motor temp rises"
    );
}

#[test]
fn tubing_leak_signature() {
    let c = Compare::new(Condition::TubingLeak, "RX-538-2600", 40, 40);
    let w = &c.plan.wells[0];
    let (i0, i1) = (
        mean(&c.base(Field::MotorCurrentA)),
        mean(&c.during(Field::MotorCurrentA, 33.0, 40.0, true)),
    );
    assert!(i1 >= 0.99 * i0, "current ≈ or ↑");
    assert!(
        mean(&c.during(Field::IntakePressurePsi, 33.0, 40.0, true))
            > mean(&c.base(Field::IntakePressurePsi)),
        "PIP rises"
    );
    assert!(
        mean(&c.during(Field::FlowRateBpd, 33.0, 40.0, true))
            < 0.9 * mean(&c.base(Field::FlowRateBpd)),
        "surface flow falls"
    );
    assert!(
        mean(&c.during(Field::TubingPressurePsi, 33.0, 40.0, true))
            < mean(&c.base(Field::TubingPressurePsi)),
        "tubing pressure falls"
    );
    let (t0, t1) = (
        mean(&c.base(Field::MotorTempC)),
        mean(&c.during(Field::MotorTempC, 33.0, 40.0, true)),
    );
    assert!((t1 - t0).abs() < 5.0, "motor temp ≈");
    // TDH against the catalog at the surface flow: below the curve.
    let curve = StageCurve::from_spec(w.meta.pump.as_ref().unwrap()).unwrap();
    let sg = w.meta.fluid.as_ref().unwrap().specific_gravity.unwrap();
    let ratio = |from: f64, to: f64| {
        let q = mean(&c.during(Field::FlowRateBpd, from, to, true));
        let f = mean(&c.during(Field::FrequencyHz, from, to, true));
        let tdh = tdh_ft(
            mean(&c.during(Field::DischargePressurePsi, from, to, true)),
            mean(&c.during(Field::IntakePressurePsi, from, to, true)),
            sg,
        );
        tdh / pump_head_ft(&curve, w.plant.stages, Affinity::new(w.plant.base_hz, f), q)
    };
    assert!(
        ratio(33.0, 40.0) < ratio(24.0, 30.0) - 0.05,
        "TDH below curve"
    );
}

#[test]
fn broken_shaft_signature() {
    let c = Compare::new(Condition::BrokenShaft, "RX-538-2600", 40, 40);
    let i = c.during(Field::MotorCurrentA, 30.1, 40.0, true);
    let no_load = 0.3 * c.plan.wells[0].plant.rated_current_a;
    assert!(
        (median(&i) / no_load - 1.0).abs() < 0.2,
        "current at no-load: {} vs {no_load}",
        median(&i)
    );
    assert!(sd(&i) / mean(&i) < 0.03, "very steady");
    let p = c.during(Field::IntakePressurePsi, 34.0, 40.0, false);
    assert!(
        mean(&p) > 1.2 * mean(&c.base(Field::IntakePressurePsi)),
        "PIP rises toward static"
    );
    assert!(
        mean(&c.during(Field::DischargePressurePsi, 30.1, 40.0, true))
            < mean(&c.base(Field::DischargePressurePsi)),
        "discharge falls"
    );
    assert!(
        max(&c.during(Field::FlowRateBpd, 30.05, 40.0, false)) < 1.0,
        "no flow"
    );
    assert!(
        mean(&c.during(Field::VibrationXG, 30.1, 40.0, true))
            < 0.6 * mean(&c.base(Field::VibrationXG)),
        "vibration falls"
    );
}

#[test]
fn pump_wear_and_scale_develop_over_days() {
    for (condition, pump) in [
        (Condition::PumpWear, "EU-538-3500"),
        (Condition::ScalePlugging, "EU-538-3500"),
    ] {
        let plan = plan_one(
            5,
            Some(pump),
            episode(condition, 30, None, 0.7),
            30 + 6 * 24,
            "60s",
        );
        let s = run(&plan);
        let w = &plan.wells[0];
        let last = (30.0 + 5.0 * 24.0, 30.0 + 6.0 * 24.0);
        let base = |f| values(&s, f, 24.0, 30.0, true);
        let late = |f| values(&s, f, last.0, last.1, true);
        let curve = StageCurve::from_spec(w.meta.pump.as_ref().unwrap()).unwrap();
        let sg = w.meta.fluid.as_ref().unwrap().specific_gravity.unwrap();
        let head_ratio = |get: &dyn Fn(Field) -> Vec<f64>| {
            let q = mean(&get(Field::FlowRateBpd));
            let f = mean(&get(Field::FrequencyHz));
            tdh_ft(
                mean(&get(Field::DischargePressurePsi)),
                mean(&get(Field::IntakePressurePsi)),
                sg,
            ) / pump_head_ft(&curve, w.plant.stages, Affinity::new(w.plant.base_hz, f), q)
        };
        // A gradual condition: the first day after onset is still close to healthy.
        let early = |f| values(&s, f, 30.0, 36.0, true);
        assert!(head_ratio(&early) > 0.95, "{condition}: gradual");
        assert!(
            head_ratio(&late) < 0.9,
            "{condition}: head ratio falls over days ({})",
            head_ratio(&late)
        );
        assert!(
            mean(&late(Field::FlowRateBpd)) < 0.95 * mean(&base(Field::FlowRateBpd)),
            "{condition}: flow falls"
        );
        assert!(
            mean(&late(Field::VibrationXG)) > 1.2 * mean(&base(Field::VibrationXG)),
            "{condition}: vibration rises"
        );
        let (p0, p1) = (
            mean(&base(Field::IntakePressurePsi)),
            mean(&late(Field::IntakePressurePsi)),
        );
        let (t0, t1) = (
            mean(&base(Field::MotorTempC)),
            mean(&late(Field::MotorTempC)),
        );
        let (i0, i1) = (
            mean(&base(Field::MotorCurrentA)),
            mean(&late(Field::MotorCurrentA)),
        );
        match condition {
            Condition::PumpWear => {
                assert!((i1 / i0 - 1.0).abs() < 0.1, "wear: current ≈");
                assert!((t1 - t0).abs() < 5.0, "wear: motor temp ≈");
            }
            _ => {
                assert!(p1 > p0, "scale: PIP rises");
                assert!(t1 > t0 + 2.0, "scale: motor temp rises");
            }
        }
    }
}

#[test]
fn overload_signature() {
    let c = Compare::new(Condition::Overload, "RX-400-1100", 34, 36);
    let rated = c.plan.wells[0].plant.rated_current_a;
    let i = c.during(Field::MotorCurrentA, 30.3, 34.0, true);
    assert!(
        mean(&i) > rated,
        "current above nameplate: {} vs {rated}",
        mean(&i)
    );
    assert!(sd(&i) > 3.0 * sd(&c.base(Field::MotorCurrentA)), "erratic");
    assert!(
        mean(&c.during(Field::MotorTempC, 31.0, 34.0, true))
            > mean(&c.base(Field::MotorTempC)) + 3.0,
        "motor temp rises"
    );
    assert!(
        mean(&c.during(Field::VibrationXG, 30.3, 34.0, true)) > mean(&c.base(Field::VibrationXG)),
        "vibration rises"
    );
}

#[test]
fn motor_overheat_signature() {
    let c = Compare::new(Condition::MotorOverheat, "EU-400-800", 36, 38);
    let limit = c.plan.wells[0]
        .meta
        .motor
        .as_ref()
        .unwrap()
        .max_winding_temp_c
        .unwrap();
    assert!(
        max(&c.during(Field::MotorTempC, 30.0, 36.0, true)) > limit,
        "winding past its limit"
    );
    assert!(max(&c.base(Field::MotorTempC)) < limit - 10.0);
    assert!(
        mean(&c.during(Field::FlowRateBpd, 31.0, 36.0, true)) < mean(&c.base(Field::FlowRateBpd)),
        "flow low"
    );
}

#[test]
fn power_fluctuation_signature() {
    let c = Compare::new(Condition::PowerFluctuation, "RX-538-2600", 34, 36);
    let v = c.during(Field::MotorVoltageV, 30.0, 34.0, true);
    let i = c.during(Field::MotorCurrentA, 30.0, 34.0, true);
    assert!(
        sd(&v) > 5.0 * sd(&c.base(Field::MotorVoltageV)),
        "voltage fluctuates"
    );
    assert!(
        sd(&i) > 3.0 * sd(&c.base(Field::MotorCurrentA)),
        "current spikes"
    );
    // In step: sample-to-sample voltage changes and current changes go together.
    let steps: Vec<(f64, f64)> = c
        .samples
        .windows(2)
        .filter(|w| {
            (30.0..34.0).contains(&((w[0].ts.0 - start().0) as f64 / HOUR_US as f64))
                && w[0].truth.running
                && w[1].truth.running
        })
        .filter_map(|w| {
            let (a, b) = (w[0].measured?, w[1].measured?);
            Some((
                (b.get(Field::MotorVoltageV)? - a.get(Field::MotorVoltageV)?).abs(),
                (b.get(Field::MotorCurrentA)? - a.get(Field::MotorCurrentA)?).abs(),
            ))
        })
        .collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = steps.into_iter().unzip();
    let (mx, my) = (mean(&xs), mean(&ys));
    let cov: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (x - mx) * (y - my))
        .sum::<f64>();
    let corr = cov / (sd(&xs) * sd(&ys) * xs.len() as f64);
    assert!(corr > 0.5, "current moves with voltage (corr {corr:.2})");
}

#[test]
fn sensor_fault_hits_one_channel_and_leaves_the_others_consistent() {
    let mut modes_seen = 0;
    for severity_seed in 0..6u64 {
        let plan = plan_one(
            100 + severity_seed,
            Some("RX-538-2600"),
            episode(Condition::SensorFault, 30, Some(36), 0.5),
            38,
            "10s",
        );
        let s = run(&plan);
        let mut odd = Vec::new();
        for f in Field::ALL {
            let b = values(&s, f, 24.0, 30.0, false);
            let d: Vec<f64> = values(&s, f, 30.0, 36.0, false);
            let missing = 2160usize.saturating_sub(d.len());
            let stuck = d.len() > 10 && sd(&d) < 1e-6 && sd(&b) > 0.0;
            let spiky = d.len() > 10 && (max(&d) > mean(&b) * 2.5 || min(&d) < mean(&b) * 0.2);
            if missing > 500 || stuck || spiky {
                odd.push(f);
            }
            if matches!(
                f,
                Field::FrequencyHz | Field::MotorVoltageV | Field::IntakeTempC | Field::WaterCutPct
            ) {
                assert!((mean(&d) / mean(&b) - 1.0).abs() < 0.02, "{f} consistent");
            }
        }
        assert_eq!(
            odd.len(),
            1,
            "seed {}: exactly one faulty channel, got {odd:?}",
            100 + severity_seed
        );
        modes_seen += 1;
    }
    assert_eq!(modes_seen, 6);
}
