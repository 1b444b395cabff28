//! Prints, per condition, each channel's healthy baseline and its value during the condition
//! on a pinned scenario: a quick look at the simulator's signatures.
use espwatch_core::sim::fleet::{PinnedCondition, PinnedWell};
use espwatch_core::sim::*;
use espwatch_core::{Condition, Field, Timestamp};

fn main() {
    let arg = std::env::args().nth(1);
    for c in Condition::ALL {
        if arg.as_ref().is_some_and(|a| a != c.name()) {
            continue;
        }
        let mut cfg = FleetConfig::new(
            7,
            0,
            Timestamp::from_secs(1_767_225_600),
            3 * 86_400_000_000,
        );
        cfg.normal_life = false;
        cfg.pinned = vec![PinnedWell {
            id: Some("W".into()),
            conditions: vec![PinnedCondition {
                condition: c,
                start: "30h".into(),
                end: Some("42h".into()),
                severity: Some(0.5),
            }],
            ..Default::default()
        }];
        let plan = plan_fleet(&cfg).unwrap();
        let w = &plan.wells[0];
        let mut sim = WellSimulator::new(w, cfg.start, cfg.duration_micros);
        let mut base = vec![Vec::new(); 13];
        let mut during = vec![Vec::new(); 13];
        let mut trips = 0;
        while let Some(s) = sim.next_sample() {
            let h = (s.ts.0 - cfg.start.0) as f64 / 3.6e9;
            if let Some(m) = s.measured {
                for f in Field::ALL {
                    if let Some(v) = m.get(f) {
                        if (24.0..30.0).contains(&h) {
                            base[f.index()].push(v)
                        }
                        if (30.5..36.0).contains(&h) {
                            during[f.index()].push(v)
                        }
                    }
                }
            }
            trips = sim.state().trips;
        }
        println!(
            "UL {:.1} OL {:.1} rated {:.1}",
            w.plant.underload_a, w.plant.overload_a, w.plant.rated_current_a
        );
        println!(
            "== {c} ({}, {} stages, {} Hz) trips={trips}",
            w.meta.pump.as_ref().unwrap().model.as_ref().unwrap(),
            w.plant.stages,
            w.plant.nominal_hz
        );
        for f in Field::ALL {
            let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let sd = |v: &Vec<f64>| {
                let m = mean(v);
                (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / v.len().max(1) as f64).sqrt()
            };
            println!(
                "  {:24} base {:9.2} ±{:7.2}  during {:9.2} ±{:7.2}",
                f.name(),
                mean(&base[f.index()]),
                sd(&base[f.index()]),
                mean(&during[f.index()]),
                sd(&during[f.index()])
            );
        }
    }
}
