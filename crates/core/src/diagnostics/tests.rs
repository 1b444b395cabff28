//! Behaviour pinned on small deterministic simulator scenarios: one well, one condition, the
//! engine fed sample by sample as the server or `espwatch diagnose` would.

use crate::condition::Condition;
use crate::sim::fleet::{PinnedCondition, PinnedWell};
use crate::sim::{FleetConfig, WellSimulator, plan_fleet};
use crate::telemetry::{Field, Measurements, Timestamp};

use super::*;

const HOUR: i64 = 3_600_000_000;

struct Run {
    episodes: Vec<Episode>,
    label: Option<(Timestamp, Timestamp)>,
}

impl Run {
    fn process(&self) -> Vec<Diagnosis> {
        self.episodes
            .iter()
            .map(|e| e.diagnosis)
            .filter(|d| d.is_process() && *d != Diagnosis::Anomaly)
            .collect()
    }
    /// The condition was diagnosed within `max_delay_min` of the label start, overlapping it.
    fn detected(&self, c: Condition, max_delay_min: i64) -> bool {
        let (start, end) = self.label.expect("labelled");
        self.episodes.iter().any(|e| {
            e.diagnosis == Diagnosis::Condition(c)
                && e.start.0 <= start.0 + max_delay_min * 60_000_000
                && e.end.unwrap_or(e.start).0 >= start.0
                && e.start.0 <= end.0
        })
    }
}

fn scenario(
    pump: &str,
    condition: Option<(Condition, &str, Option<&str>, f64)>,
    hours: i64,
    interval: &str,
    with_meta: bool,
) -> Run {
    let mut config = FleetConfig::new(7, 0, Timestamp::from_secs(1_767_225_600), hours * HOUR);
    config.normal_life = false;
    config.pinned = vec![PinnedWell {
        pump: Some(pump.to_owned()),
        interval: Some(interval.to_owned()),
        conditions: condition
            .map(|(c, start, end, severity)| PinnedCondition {
                condition: c,
                start: start.to_owned(),
                end: end.map(str::to_owned),
                severity: Some(severity),
            })
            .into_iter()
            .collect(),
        ..PinnedWell::default()
    }];
    let plan = plan_fleet(&config).expect("plan");
    let well = &plan.wells[0];
    let label = plan.labels().first().map(|l| (l.start, l.end));
    let mut sim = WellSimulator::new(well, config.start, config.duration_micros);
    let mut readings = Vec::new();
    while let Some(sample) = sim.next_sample() {
        if let Some(m) = sample.measured {
            readings.push((sample.ts, m));
        }
    }
    run_engine(readings, with_meta.then_some(&well.meta), label)
}

fn run_engine(
    readings: Vec<(Timestamp, Measurements)>,
    meta: Option<&crate::well::WellMeta>,
    label: Option<(Timestamp, Timestamp)>,
) -> Run {
    let mut engine = WellEngine::new(meta, Thresholds::default(), TrainingWindow::Default);
    let mut episodes = Vec::new();
    for (ts, m) in readings {
        let out = engine.push(ts, &m);
        episodes.extend(out.transitions.closed);
    }
    episodes.extend(engine.finish());
    Run { episodes, label }
}

fn only(run: &Run, c: Condition) {
    let others: Vec<_> = run
        .process()
        .into_iter()
        .filter(|d| *d != Diagnosis::Condition(c))
        .collect();
    assert!(
        others.is_empty(),
        "{c}: also diagnosed {others:?}: {:?}",
        run.episodes
    );
}

#[test]
fn healthy_well_raises_nothing() {
    let run = scenario("RX-538-2600", None, 30, "20s", true);
    assert!(run.episodes.is_empty(), "{:?}", run.episodes);
}

#[test]
fn gas_lock_is_not_a_broken_shaft() {
    let run = scenario(
        "RX-538-2600",
        Some((Condition::GasLock, "14h", Some("20h"), 0.5)),
        24,
        "20s",
        true,
    );
    assert!(run.detected(Condition::GasLock, 10), "{:?}", run.episodes);
    only(&run, Condition::GasLock);
}

#[test]
fn broken_shaft_is_not_gas_lock() {
    let run = scenario(
        "EU-538-3500",
        Some((Condition::BrokenShaft, "14h", None, 0.5)),
        20,
        "30s",
        true,
    );
    assert!(
        run.detected(Condition::BrokenShaft, 10),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::BrokenShaft);
}

#[test]
fn broken_shaft_without_metadata_uses_the_wells_own_baseline() {
    let run = scenario(
        "RX-400-1100",
        Some((Condition::BrokenShaft, "14h", None, 0.5)),
        20,
        "30s",
        false,
    );
    assert!(
        run.detected(Condition::BrokenShaft, 10),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::BrokenShaft);
}

#[test]
fn pump_off_is_not_gas_lock() {
    let run = scenario(
        "RX-538-2600",
        Some((Condition::PumpOff, "14h", Some("22h"), 0.5)),
        24,
        "20s",
        true,
    );
    assert!(run.detected(Condition::PumpOff, 60), "{:?}", run.episodes);
    only(&run, Condition::PumpOff);
}

#[test]
fn closed_valve_is_caught_before_the_trip() {
    let run = scenario(
        "EU-400-800",
        Some((Condition::ClosedValve, "14h", Some("16h"), 0.5)),
        20,
        "60s",
        true,
    );
    assert!(
        run.detected(Condition::ClosedValve, 5),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::ClosedValve);
}

#[test]
fn tubing_leak_is_not_wear() {
    let run = scenario(
        "RX-675-7500",
        Some((Condition::TubingLeak, "14h", None, 0.5)),
        20,
        "20s",
        true,
    );
    assert!(
        run.detected(Condition::TubingLeak, 10),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::TubingLeak);
}

#[test]
fn pump_wear_is_gradual_not_a_leak() {
    let run = scenario(
        "RX-538-2600",
        Some((Condition::PumpWear, "12h", None, 1.0)),
        72,
        "60s",
        true,
    );
    assert!(
        run.detected(Condition::PumpWear, 48 * 60),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::PumpWear);
}

#[test]
fn scale_plugging_is_wear_with_cooling_lost() {
    let run = scenario(
        "EU-538-3500",
        Some((Condition::ScalePlugging, "12h", None, 1.0)),
        84,
        "60s",
        true,
    );
    assert!(
        run.detected(Condition::ScalePlugging, 60 * 60),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::ScalePlugging);
}

#[test]
fn overload_against_nameplate() {
    let run = scenario(
        "RX-538-2600",
        Some((Condition::Overload, "14h", Some("18h"), 0.7)),
        20,
        "10s",
        true,
    );
    assert!(run.detected(Condition::Overload, 15), "{:?}", run.episodes);
    only(&run, Condition::Overload);
}

#[test]
fn motor_overheat_while_producing() {
    let run = scenario(
        "RX-400-1100",
        Some((Condition::MotorOverheat, "14h", Some("19h"), 0.6)),
        20,
        "20s",
        true,
    );
    assert!(
        run.detected(Condition::MotorOverheat, 30),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::MotorOverheat);
}

#[test]
fn gas_interference_with_the_pump_still_turning() {
    let run = scenario(
        "RX-538-2600",
        Some((Condition::GasInterference, "14h", Some("22h"), 0.6)),
        24,
        "20s",
        true,
    );
    assert!(
        run.detected(Condition::GasInterference, 60),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::GasInterference);
}

#[test]
fn power_fluctuation_from_volts_per_hertz() {
    let run = scenario(
        "EU-562-9500",
        Some((Condition::PowerFluctuation, "14h", Some("17h"), 0.6)),
        20,
        "5s",
        true,
    );
    assert!(
        run.detected(Condition::PowerFluctuation, 20),
        "{:?}",
        run.episodes
    );
    assert!(run.process().is_empty(), "{:?}", run.episodes);
}

#[test]
fn sensor_faults_are_not_process_conditions() {
    // Several variants cover stuck, spiking and dropped-out channels on different gauges.
    for seed_well in ["RX-400-450", "RX-538-2600", "EU-400-800", "RX-675-7500"] {
        let run = scenario(
            seed_well,
            Some((Condition::SensorFault, "14h", Some("20h"), 0.7)),
            22,
            "15s",
            true,
        );
        assert!(
            run.detected(Condition::SensorFault, 30),
            "{seed_well}: {:?}",
            run.episodes
        );
        assert!(run.process().is_empty(), "{seed_well}: {:?}", run.episodes);
    }
}

/// A real change (the pump stops and restarts, the intake recovers) is no sensor fault, and a
/// lone spike is not a real change.
#[test]
fn real_changes_are_not_sensor_faults() {
    let run = scenario(
        "RX-538-2600",
        Some((Condition::GasLock, "14h", Some("20h"), 0.5)),
        24,
        "20s",
        true,
    );
    assert!(
        !run.episodes
            .iter()
            .any(|e| e.diagnosis == Diagnosis::Condition(Condition::SensorFault)),
        "{:?}",
        run.episodes
    );
}

/// An operator frequency step changes every absolute value; judged at the running frequency
/// nothing is wrong.
#[test]
fn frequency_step_does_not_alarm() {
    let run = healthy_plant_run("RX-538-2600", 30, |t, plant, st| {
        if (t - 12.0 * 3600.0).abs() < 1.0 {
            st.setpoint_hz = plant.nominal_hz + 3.5;
        }
        if (t - 20.0 * 3600.0).abs() < 1.0 {
            st.setpoint_hz = plant.nominal_hz - 3.0;
        }
    });
    assert!(run.episodes.is_empty(), "{:?}", run.episodes);
}

#[test]
fn per_well_thresholds_override_the_global_ones() {
    let set: ThresholdSet = serde_json::from_value(serde_json::json!({
        "global": {"clear_secs": 600.0},
        "wells": {"ESP-9": {"pump_off_pip_ratio": 0.6}}
    }))
    .unwrap();
    assert_eq!(set.for_well("ESP-9").unwrap().pump_off_pip_ratio, 0.6);
    assert_eq!(set.for_well("ESP-9").unwrap().clear_secs, 600.0);
    assert_eq!(set.for_well("other").unwrap().pump_off_pip_ratio, 0.75);
    let bad: ThresholdSet =
        serde_json::from_value(serde_json::json!({"wells": {"X": {"nope": 1}}})).unwrap();
    assert!(bad.validate().is_err());
}

#[test]
fn findings_carry_evidence_and_an_action() {
    let f = Finding::new(
        Condition::ClosedValve,
        0.9,
        vec![Evidence::new("flow_ratio", 0.01, 0.15, "<")],
    );
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(json["condition"], "closed_valve");
    assert_eq!(json["evidence"][0]["feature"], "flow_ratio");
    assert!(json["action"].as_str().unwrap().contains("valve"));
}

#[test]
fn current_explained_by_flow_is_not_overload() {
    // Right of the baseline point (after a start with the annulus full, say) the pump takes
    // more shaft power: that share of the current is explained, the rest is overload.
    let mut config = FleetConfig::new(7, 0, Timestamp::from_secs(1_767_225_600), 10 * HOUR);
    config.normal_life = false;
    config.pinned = vec![PinnedWell {
        pump: Some("RX-538-2600".to_owned()),
        interval: Some("20s".to_owned()),
        ..PinnedWell::default()
    }];
    let plan = plan_fleet(&config).expect("plan");
    let well = &plan.wells[0];
    let mut sim = WellSimulator::new(well, config.start, config.duration_micros);
    let mut engine = WellEngine::new(
        Some(&well.meta),
        Thresholds::default(),
        TrainingWindow::Default,
    );
    while let Some(sample) = sim.next_sample() {
        if let Some(m) = sample.measured {
            engine.push(sample.ts, &m);
        }
    }
    assert!(engine.is_trained());
    let hz = engine.baseline().unwrap().reference_hz;
    // At baseline flow nothing is explained.
    let same = engine
        .unexplained_current_ratio(Some(1.2), Some(1.0), Some(hz))
        .unwrap();
    assert!((same - 1.2).abs() < 1e-9);
    // Less flow never makes a current look higher.
    let less = engine
        .unexplained_current_ratio(Some(1.2), Some(0.7), Some(hz))
        .unwrap();
    assert!((less - 1.2).abs() < 1e-9);
    // Much more flow explains a good part of it.
    let more = engine
        .unexplained_current_ratio(Some(1.2), Some(1.6), Some(hz))
        .unwrap();
    assert!(more < 1.12, "{more}");
}

#[test]
fn gas_interference_is_caught_early() {
    // Gas breaking through: the surface GOR climbing while the intake sinks is enough.
    let run = scenario(
        "RX-538-2600",
        Some((Condition::GasInterference, "14h", Some("22h"), 0.6)),
        24,
        "20s",
        true,
    );
    assert!(
        run.detected(Condition::GasInterference, 15),
        "{:?}",
        run.episodes
    );
    only(&run, Condition::GasInterference);
}

#[test]
fn gas_lock_onset_is_one_gas_lock_episode() {
    // The onset of a gas lock looks like gas interference for a minute or two; it becomes one
    // gas lock episode, not an interference alarm followed by a lock.
    for pump in ["RX-675-7500", "EU-400-800"] {
        let run = scenario(
            pump,
            Some((Condition::GasLock, "14h", Some("20h"), 0.1)),
            21,
            "60s",
            true,
        );
        assert!(run.detected(Condition::GasLock, 15), "{:?}", run.episodes);
        only(&run, Condition::GasLock);
        assert_eq!(run.process().len(), 1, "{:?}", run.episodes);
    }
}

/// A healthy plant stepped every 10 s, with `events(t, plant, state)` applied before each
/// reading: operator frequency changes and stops.
fn healthy_plant_run(
    pump: &str,
    hours: i64,
    events: impl Fn(f64, &crate::sim::Plant, &mut crate::sim::PlantState),
) -> Run {
    let mut config = FleetConfig::new(11, 0, Timestamp::from_secs(1_767_225_600), hours * HOUR);
    config.normal_life = false;
    config.pinned = vec![PinnedWell {
        pump: Some(pump.into()),
        interval: Some("10s".into()),
        ..PinnedWell::default()
    }];
    let plan = plan_fleet(&config).unwrap();
    let plant = &plan.wells[0].plant;
    let mut st = plant.initial_state();
    let mut rng = crate::rng::SimRng::new(5);
    let mut readings = Vec::new();
    for i in 0..(hours * 360) {
        let t = i as f64 * 10.0;
        events(t, plant, &mut st);
        let healthy = crate::sim::Effects::default();
        plant.step(&mut st, &healthy, 5.0, 1.0, rng.normal());
        let truth = plant.step(&mut st, &healthy, 5.0, 1.0, rng.normal());
        let mut m = Measurements::empty();
        let mut put = |f: Field, v: f64, sd: f64| m.set(f, Some(v + rng.normal() * sd));
        put(Field::FrequencyHz, truth.frequency_hz, 0.01);
        put(
            Field::MotorCurrentA,
            truth.current_a,
            0.1 + 0.004 * truth.current_a,
        );
        put(Field::MotorVoltageV, truth.voltage_v, 1.0);
        put(Field::IntakePressurePsi, truth.intake_psi, 0.5);
        put(Field::DischargePressurePsi, truth.discharge_psi, 0.6);
        put(Field::TubingPressurePsi, truth.tubing_psi, 0.5);
        put(Field::IntakeTempC, truth.intake_temp_c, 0.05);
        put(Field::MotorTempC, truth.motor_temp_c, 0.1);
        put(Field::VibrationXG, truth.vibration_x_g, 0.004);
        put(Field::VibrationYG, truth.vibration_y_g, 0.004);
        put(
            Field::FlowRateBpd,
            truth.surface_flow_bpd,
            2.0 + 0.01 * truth.surface_flow_bpd,
        );
        put(
            Field::GorScfBbl,
            truth.gor_scf_bbl,
            0.02 * truth.gor_scf_bbl,
        );
        readings.push((Timestamp(config.start.0 + (t * 1e6) as i64), m));
    }
    run_engine(readings, Some(&plan.wells[0].meta), None)
}

#[test]
fn restart_after_a_long_stop_does_not_alarm() {
    // After a planned stop the annulus is full: the restarted pump runs right of its baseline
    // point (more flow, more current, above nameplate for a while) and then draws the intake
    // down for hours, below its old level when it restarts at a higher frequency. Neither is
    // overload nor pump-off.
    for (pump, hz) in [
        ("RX-400-1100", 3.0),
        ("EU-400-800", 3.0),
        ("EU-538-3500", 6.0),
    ] {
        let run = healthy_plant_run(pump, 30, |t, plant, st| {
            for (at, minutes) in [(12.0, 150.0), (20.0, 300.0)] {
                if (t - at * 3600.0).abs() < 1.0 {
                    st.setpoint_hz = plant.nominal_hz + hz;
                    plant.stop(st, t + minutes * 60.0);
                }
            }
        });
        assert!(run.process().is_empty(), "{pump}: {:?}", run.episodes);
    }
}

#[test]
fn pump_off_is_caught_while_the_intake_falls() {
    // Inflow failing: the intake sinks under its baseline with the delivered flow, well before
    // it reaches the drawn-down limit.
    for pump in ["RX-538-2600", "RX-675-7500", "EU-538-3500"] {
        let run = scenario(
            pump,
            Some((Condition::PumpOff, "14h", Some("20h"), 0.5)),
            21,
            "10s",
            true,
        );
        assert!(run.detected(Condition::PumpOff, 11), "{:?}", run.episodes);
        only(&run, Condition::PumpOff);
    }
}
