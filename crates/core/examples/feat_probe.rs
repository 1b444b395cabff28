//! Prints one well's features (every Nth reading) in a time range from a simulated fleet plan.
//! Usage: feat_probe FAMILY SEED WELLS DAYS ROUNDS WELL_INDEX FROM_H TO_H EVERY
use espwatch_core::Timestamp;
use espwatch_core::diagnostics::{Thresholds, TrainingWindow, WellEngine};
use espwatch_core::sim::*;
use espwatch_core::telemetry::Field;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let family: Family = a[1].parse().unwrap();
    let seed: u64 = a[2].parse().unwrap();
    let wells: usize = a[3].parse().unwrap();
    let days: i64 = a[4].parse().unwrap();
    let rounds: usize = a[5].parse().unwrap();
    let k: usize = a[6].parse().unwrap();
    let (from, to): (f64, f64) = (a[7].parse().unwrap(), a[8].parse().unwrap());
    let every: usize = a[9].parse().unwrap();
    let start = Timestamp::from_secs(1_767_225_600);
    let mut cfg = FleetConfig::new(seed, wells, start, days * 86_400_000_000);
    cfg.family = family;
    cfg.interval_from_family = true;
    cfg.condition_rounds = rounds;
    let plan = plan_fleet(&cfg).unwrap();
    let w = &plan.wells[k];
    println!("{} {:?}", w.meta.well_id, w.model);
    let mut sim = WellSimulator::new(w, cfg.start, cfg.duration_micros);
    let mut e = WellEngine::new(
        Some(&w.meta),
        Thresholds::default(),
        TrainingWindow::Default,
    );
    let mut n = 0usize;
    while let Some(s) = sim.next_sample() {
        let Some(m) = s.measured else { continue };
        let out = e.push(s.ts, &m);
        let h = (s.ts.0 - start.0) as f64 / 3.6e9;
        if h >= from && h <= to {
            n += 1;
            if n.is_multiple_of(every) {
                let f = e.features();
                let r = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
                let fs: Vec<String> = out
                    .findings
                    .iter()
                    .map(|f| format!("{}:{:.2}", f.diagnosis, f.confidence))
                    .collect();
                println!(
                    "{h:7.2} hz {} amps {} tm {} ti {} head {} pip {} flow {} cur {} thp {} rise {} vhz {} {:?}",
                    r(m.get(Field::FrequencyHz)),
                    r(m.get(Field::MotorCurrentA)),
                    r(m.get(Field::MotorTempC)),
                    r(m.get(Field::IntakeTempC)),
                    r(f.head_ratio),
                    r(f.intake_pressure_ratio),
                    r(f.flow_ratio),
                    r(f.current_ratio),
                    r(f.tubing_pressure_ratio),
                    r(f.winding_rise_ratio),
                    r(f.volts_per_hz_ratio),
                    fs
                );
            }
        }
        if h > to {
            break;
        }
    }
}
