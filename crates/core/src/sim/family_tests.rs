//! Physics and gauge properties of the model families.

use super::family::{Control, GasModel, InflowModel, MotorModel, OperationKind, Physics};
use super::fleet::{PinnedCondition, PinnedWell};
use super::plant::Effects;
use super::*;
use crate::condition::Condition;
use crate::telemetry::{Field, Timestamp};

const HOUR_US: i64 = 3_600_000_000;

fn start() -> Timestamp {
    Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap()
}

fn fleet(family: Family, seed: u64, wells: usize, hours: i64) -> FleetPlan {
    let mut cfg = FleetConfig::new(seed, wells, start(), hours * HOUR_US);
    cfg.family = family;
    cfg.interval_from_family = true;
    cfg.conditions = ConditionChoice::None;
    plan_fleet(&cfg).unwrap()
}

fn pinned(family: Family, seed: u64, conditions: Vec<PinnedCondition>, hours: i64) -> FleetPlan {
    let mut cfg = FleetConfig::new(seed, 0, start(), hours * HOUR_US);
    cfg.family = family;
    cfg.normal_life = false;
    cfg.pinned = vec![PinnedWell {
        id: Some("W-1".into()),
        pump: Some("RX-538-2600".into()),
        interval: Some("10s".into()),
        conditions,
        ..Default::default()
    }];
    plan_fleet(&cfg).unwrap()
}

fn run(plan: &FleetPlan, well: usize) -> Vec<Sample> {
    let w = &plan.wells[well];
    let mut sim = WellSimulator::new(w, plan.config.start, plan.config.duration_micros);
    std::iter::from_fn(|| sim.next_sample()).collect()
}

#[test]
fn family_names_round_trip_and_classic_is_the_default() {
    for f in Family::ALL {
        assert_eq!(f.name().parse::<Family>().unwrap(), f);
    }
    assert!("bogus".parse::<Family>().is_err());
    // Holdout was spent on 2026-12-04; blind is the family never tuned on.
    assert!(Family::Blind.is_held_out());
    assert!(!Family::Holdout.is_held_out());
    let mut cfg = FleetConfig::new(1, 3, start(), 48 * HOUR_US);
    cfg.conditions = ConditionChoice::None;
    assert_eq!(cfg.family, Family::Classic);
    let plan = plan_fleet(&cfg).unwrap();
    for w in &plan.wells {
        assert_eq!(w.model, WellModel::classic());
        assert_eq!(w.plant.physics, Physics::CLASSIC);
    }
}

#[test]
fn mixed_draws_only_tuning_families() {
    let plan = fleet(Family::Mixed, 4, 30, 30);
    let families: std::collections::BTreeSet<Family> =
        plan.wells.iter().map(|w| w.model.family).collect();
    assert!(!families.contains(&Family::Holdout));
    assert!(families.len() >= 2, "{families:?}");
}

#[test]
fn vogel_matches_the_straight_line_above_the_bubble_point_and_falls_below_it() {
    let plan = fleet(Family::Field, 2, 1, 2);
    let mut linear = plan.wells[0].plant.clone();
    linear.physics.inflow = InflowModel::StraightLine;
    let mut vogel = linear.clone();
    vogel.physics.inflow = InflowModel::Vogel;
    let pr = linear.reservoir_psi;
    let pb = linear.bubble_point_psi;
    let grad = linear.gradient() * linear.perfs_below_ft;
    // Above the bubble point the two agree.
    let pip_above = pb + 50.0 - grad;
    assert_eq!(
        linear.inflow(pr, pip_above, 1.0),
        vogel.inflow(pr, pip_above, 1.0)
    );
    // Below it Vogel gives less than the straight line, and at zero flowing pressure exactly
    // qb + J·pb/1.8.
    let pip_below = 0.5 * pb - grad;
    assert!(vogel.inflow(pr, pip_below, 1.0) < linear.inflow(pr, pip_below, 1.0));
    let aof = vogel.inflow(pr, -grad, 1.0);
    let want = linear.pi * (pr - pb) + linear.pi * pb / 1.8;
    assert!((aof - want).abs() < 1e-6 * want, "{aof} vs {want}");
    // Concave: each further 10 % of drawdown below pb gains less.
    let q = |x: f64| vogel.inflow(pr, x * pb - grad, 1.0);
    assert!(q(0.8) - q(0.9) > q(0.1) - q(0.2));
}

#[test]
fn free_gas_appears_only_below_the_bubble_point_and_grows_with_drawdown() {
    let plan = fleet(Family::Holdout, 3, 1, 2);
    let p = &plan.wells[0].plant;
    let (pb, gor, wc) = (p.bubble_point_psi, p.gor_scf_bbl, p.water_cut_pct);
    assert_eq!(p.free_gas_ratio(pb + 1.0, pb, gor, wc), 0.0);
    let a = p.free_gas_ratio(0.8 * pb, pb, gor, wc);
    let b = p.free_gas_ratio(0.4 * pb, pb, gor, wc);
    assert!(a > 0.0 && b > 2.0 * a, "{a} {b}");
}

#[test]
fn families_draw_their_own_modelling_choices() {
    let field = fleet(Family::Field, 5, 8, 2);
    let holdout = fleet(Family::Holdout, 5, 8, 2);
    for w in &field.wells {
        assert_eq!(w.model.family, Family::Field);
        assert_eq!(w.plant.physics.gas, GasModel::Dunbar);
    }
    for w in &holdout.wells {
        assert_eq!(w.plant.physics.gas, GasModel::Turpin);
        assert!(matches!(w.plant.physics.motor, MotorModel::Curves { .. }));
    }
    // Field wells sample at the family's rates, not the run's 10 s default.
    assert!(field.wells.iter().any(|w| w.interval_micros != 10_000_000));
}

#[test]
fn pip_control_moves_frequency_by_itself_when_the_intake_pressure_falls() {
    let cond = || {
        vec![PinnedCondition {
            condition: Condition::PumpOff,
            start: "6h".into(),
            end: Some("14h".into()),
            severity: Some(0.5),
        }]
    };
    let plan = pinned(Family::PipCtl, 11, cond(), 16);
    let w = &plan.wells[0];
    assert!(matches!(w.model.control, Control::PipSetpoint { .. }));
    let nominal = w.plant.nominal_hz;
    // (hour, drive set point) of every sample.
    let setpoints = |plan: &FleetPlan| -> Vec<(f64, f64)> {
        let w = &plan.wells[0];
        let mut sim = WellSimulator::new(w, plan.config.start, plan.config.duration_micros);
        let mut out = Vec::new();
        while let Some(s) = sim.next_sample() {
            let h = (s.ts.0 - start().0) as f64 / HOUR_US as f64;
            out.push((h, sim.state().setpoint_hz));
        }
        out
    };
    let controlled = setpoints(&plan);
    let in_window = |v: &[(f64, f64)], a: f64, b: f64| -> Vec<f64> {
        v.iter()
            .filter(|(h, _)| *h >= a && *h < b)
            .map(|(_, f)| *f)
            .collect()
    };
    // Healthy: the drive holds about nominal.
    let healthy = in_window(&controlled, 1.0, 6.0);
    assert!(
        healthy.iter().all(|f| (f - nominal).abs() < 1.0),
        "nominal {nominal}"
    );
    // Inflow collapses: the controller slows the pump down, with no operator action.
    let low = in_window(&controlled, 6.0, 14.0)
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    assert!(low < nominal - 3.0, "lowest {low} vs nominal {nominal}");
    // The same well at fixed frequency keeps its set point.
    let classic = pinned(Family::Classic, 11, cond(), 16);
    assert!(
        setpoints(&classic)
            .iter()
            .all(|(_, f)| *f == classic.wells[0].plant.nominal_hz)
    );
}

#[test]
fn gauges_quantise_drop_missing_channels_and_keep_time_order() {
    let plan = fleet(Family::Field, 6, 6, 12);
    for (i, w) in plan.wells.iter().enumerate() {
        let g = &w.model.gauges;
        let quantum = 0.1 * g.quantum;
        let samples = run(&plan, i);
        let mut last = None;
        for s in &samples {
            if let Some(prev) = last {
                assert!(s.ts > prev, "timestamps must stay in order with jitter");
            }
            last = Some(s.ts);
            let Some(m) = &s.measured else { continue };
            for f in &g.missing {
                assert_eq!(m.get(*f), None, "{f:?} is missing on {}", w.id);
            }
            if let Some(v) = m.get(Field::IntakePressurePsi) {
                let k = v / quantum;
                assert!(
                    (k - k.round()).abs() < 1e-6,
                    "{v} not a multiple of {quantum}"
                );
            }
        }
    }
}

#[test]
fn operations_stay_out_of_labelled_windows_and_cover_every_kind() {
    let mut cfg = FleetConfig::new(8, 12, start(), 8 * 24 * HOUR_US);
    cfg.family = Family::Field;
    cfg.interval_from_family = true;
    let plan = plan_fleet(&cfg).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for w in &plan.wells {
        let sim = WellSimulator::new(w, plan.config.start, plan.config.duration_micros);
        for op in sim.operations() {
            kinds.insert(op.kind);
            if !matches!(
                op.kind,
                OperationKind::FrequencyChange | OperationKind::PlannedStop
            ) {
                assert!(
                    !w.episodes
                        .iter()
                        .any(|e| op.end_s > e.start_s && op.start_s < e.end_s),
                    "{:?} overlaps a label on {}",
                    op.kind,
                    w.id
                );
            }
        }
    }
    for k in [
        OperationKind::WellTest,
        OperationKind::ChokeChange,
        OperationKind::FlowlineSurge,
        OperationKind::SandSlug,
        OperationKind::GaugeRecalibration,
        OperationKind::WaterCutStep,
        OperationKind::Ramp,
    ] {
        assert!(kinds.contains(&k), "no {k:?} in the fleet");
    }
}

#[test]
fn a_well_test_changes_back_pressure_only_while_it_lasts() {
    let plan = fleet(Family::Field, 9, 6, 8 * 24);
    let (i, w, op) = plan
        .wells
        .iter()
        .enumerate()
        .find_map(|(i, w)| {
            let sim = WellSimulator::new(w, plan.config.start, plan.config.duration_micros);
            sim.operations()
                .into_iter()
                .find(|o| o.kind == OperationKind::WellTest && (o.value - 1.0).abs() > 0.2)
                .map(|o| (i, w, o))
        })
        .expect("a well test");
    let samples = run(&plan, i);
    let thp = |from: f64, to: f64| {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| {
                let t = (s.ts.0 - start().0) as f64 / 1e6;
                t >= from && t < to && s.truth.running
            })
            .map(|s| s.truth.tubing_psi)
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let during = thp(op.start_s + 600.0, op.end_s);
    let before = thp(op.start_s - 3600.0, op.start_s);
    assert!(
        (during / before - 1.0).abs() > 0.1,
        "{}: THP {before} → {during} (factor {})",
        w.id,
        op.value
    );
}

#[test]
fn condition_rounds_place_each_condition_several_times() {
    let mut cfg = FleetConfig::new(3, 24, start(), 8 * 24 * HOUR_US);
    let once = plan_fleet(&cfg).unwrap();
    cfg.condition_rounds = 3;
    let thrice = plan_fleet(&cfg).unwrap();
    let count =
        |p: &FleetPlan, c: Condition| p.labels().iter().filter(|l| l.condition == c).count();
    for c in Condition::ALL {
        assert!(count(&thrice, c) >= count(&once, c), "{c}");
    }
    assert!(thrice.labels().len() >= 2 * once.labels().len());
    // One round is the original plan, untouched.
    cfg.condition_rounds = 1;
    assert_eq!(plan_fleet(&cfg).unwrap().labels(), once.labels());
    for w in &thrice.wells {
        for pair in w.episodes.windows(2) {
            assert!(
                pair[0].end_s <= pair[1].start_s,
                "episodes overlap on {}",
                w.id
            );
        }
    }
}

#[test]
fn flow_dependent_head_loss_follows_its_law() {
    let plan = fleet(Family::Field, 12, 1, 2);
    let plant = &plan.wells[0].plant;
    let st = plant.initial_state();
    let fx = Effects {
        head_flow_slope: 0.3,
        ..Effects::default()
    };
    let t = plant.evaluate(&st, &fx, 1.0);
    let aff = crate::hydraulics::Affinity::new(plant.base_hz, t.frequency_hz);
    let catalog = crate::hydraulics::pump_head_ft(&plant.curve, plant.stages, aff, t.pump_flow_bpd)
        * plant.physics.viscous_head;
    let x = aff.flow_to_base(t.pump_flow_bpd) / plant.bep_flow_bpd;
    let want = 1.0 - 0.3 * x * x;
    assert!(
        (t.pump_head_ft / catalog - want).abs() < 1e-9,
        "{} vs {want}",
        t.pump_head_ft / catalog
    );
    // With no slope the healthy head is the catalog's.
    let healthy = plant.evaluate(&st, &Effects::default(), 1.0);
    let catalog =
        crate::hydraulics::pump_head_ft(&plant.curve, plant.stages, aff, healthy.pump_flow_bpd)
            * plant.physics.viscous_head;
    assert!((healthy.pump_head_ft / catalog - 1.0).abs() < 1e-9);
}

#[test]
fn an_orifice_leak_follows_the_pressure_across_the_tubing() {
    let leak = || {
        vec![PinnedCondition {
            condition: Condition::TubingLeak,
            start: "6h".into(),
            end: None,
            severity: Some(0.5),
        }]
    };
    // Orifice (field): leak flow / √ΔP stays put; classic: the leak's share of flow stays put.
    let field = pinned(Family::Field, 21, leak(), 12);
    assert_eq!(
        field.wells[0].model.conditions,
        super::family::ConditionStyle::Field
    );
    let samples = run(&field, 0);
    let coefficients: Vec<f64> = samples
        .iter()
        .filter(|s| s.ts.0 - start().0 > 7 * HOUR_US && s.truth.running)
        .map(|s| {
            let leak = s.truth.pump_flow_bpd - s.truth.surface_flow_bpd;
            leak / (s.truth.discharge_psi - s.truth.intake_psi).max(1.0).sqrt()
        })
        .collect();
    let mean = coefficients.iter().sum::<f64>() / coefficients.len() as f64;
    assert!(mean > 0.0);
    assert!(
        coefficients.iter().all(|c| (c / mean - 1.0).abs() < 0.03),
        "orifice coefficient should hold"
    );
    let classic = pinned(Family::Classic, 21, leak(), 12);
    let shares: Vec<f64> = run(&classic, 0)
        .iter()
        .filter(|s| s.ts.0 - start().0 > 7 * HOUR_US && s.truth.pump_flow_bpd > 0.0)
        .map(|s| 1.0 - s.truth.surface_flow_bpd / s.truth.pump_flow_bpd)
        .collect();
    assert!(shares.iter().all(|v| (v - shares[0]).abs() < 1e-9));
}

#[test]
fn some_healthy_wells_run_below_the_bubble_point_with_gas_at_the_intake() {
    let plan = fleet(Family::Field, 13, 16, 6);
    let gassy: Vec<usize> = plan
        .wells
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            let p = &w.plant;
            p.bubble_point_psi > p.intake_pressure(p.equilibrium(p.nominal_hz, p.reservoir_psi).1)
        })
        .map(|(i, _)| i)
        .collect();
    assert!(!gassy.is_empty(), "no well runs below its bubble point");
    for i in gassy {
        let w = &plan.wells[i];
        assert_eq!(
            w.meta.fluid.as_ref().unwrap().bubble_point_psi,
            Some(w.plant.bubble_point_psi.round())
        );
        let samples = run(&plan, i);
        let settled: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.truth.running && s.ts.0 - start().0 > HOUR_US)
            .collect();
        let gas = settled.iter().map(|s| s.truth.gas_fraction).sum::<f64>() / settled.len() as f64;
        assert!(gas > 0.0 && gas < 0.3, "{}: mean free gas {gas}", w.id);
        // Healthy: the relay never trips it.
        assert!(
            samples
                .iter()
                .all(|s| s.truth.running || s.ts.0 - start().0 < HOUR_US)
        );
    }
}

#[test]
fn a_scenario_picks_the_family() {
    let scenario: Scenario =
        serde_json::from_str(r#"{"family": "pipctl", "random_wells": 2, "conditions": "none"}"#)
            .unwrap();
    let mut cfg = FleetConfig::new(1, 5, start(), 24 * HOUR_US);
    scenario.apply(&mut cfg).unwrap();
    assert_eq!(cfg.family, Family::PipCtl);
    let bad: Scenario = serde_json::from_str(r#"{"family": "nope"}"#).unwrap();
    assert!(
        bad.apply(&mut cfg)
            .unwrap_err()
            .contains("unknown model family")
    );
}
