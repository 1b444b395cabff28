//! Prints one well's features (every Nth reading) in a time range from a canonical CSV file,
//! as the engine sees them: for looking into data from outside our simulator.
//! Usage: csv_probe FILE.csv WELL.json FROM_RFC3339 TO_RFC3339 EVERY
use espwatch_core::Timestamp;
use espwatch_core::diagnostics::{Thresholds, TrainingWindow, WellEngine};
use espwatch_core::telemetry::{Field, Measurements};
use espwatch_core::well::WellMeta;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let text = std::fs::read_to_string(&a[1]).expect("csv");
    let meta: Option<WellMeta> = std::fs::read_to_string(&a[2])
        .ok()
        .and_then(|j| serde_json::from_str(&j).ok());
    let from = Timestamp::parse_rfc3339(&a[3]).unwrap();
    let to = Timestamp::parse_rfc3339(&a[4]).unwrap();
    let every: usize = a[5].parse().unwrap();
    let mut lines = text.lines();
    let header: Vec<Option<Field>> = lines
        .next()
        .unwrap()
        .split(',')
        .map(Field::from_name)
        .collect();
    let ts_col = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "ts")
        .unwrap();
    let mut e = WellEngine::new(
        meta.as_ref(),
        Thresholds::default(),
        TrainingWindow::Default,
    );
    let mut n = 0usize;
    for line in lines {
        let cols: Vec<&str> = line.split(',').collect();
        let ts = Timestamp::parse_rfc3339(cols[ts_col]).unwrap();
        let mut m = Measurements::empty();
        for (c, f) in cols.iter().zip(&header) {
            if let (Some(f), Ok(v)) = (f, c.parse::<f64>()) {
                m.set(*f, Some(v));
            }
        }
        let out = e.push(ts, &m);
        if ts.0 < from.0 {
            continue;
        }
        if ts.0 > to.0 {
            break;
        }
        n += 1;
        if !n.is_multiple_of(every) {
            continue;
        }
        let f = e.features();
        let r = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
        let fs: Vec<String> = out
            .findings
            .iter()
            .map(|f| {
                let why: Vec<&str> = f.evidence.iter().map(|e| e.feature.as_str()).collect();
                format!("{}:{:.2}{:?}", f.diagnosis, f.confidence, why)
            })
            .collect();
        println!(
            "{} hz {} A {} pip {} pd {} q {} gor {} | head {} pipr {} flow {} cur {} thp {} rise {} vib {} eff {} {:?}",
            &ts.to_rfc3339()[5..19],
            r(m.get(Field::FrequencyHz)),
            r(m.get(Field::MotorCurrentA)),
            r(m.get(Field::IntakePressurePsi)),
            r(m.get(Field::DischargePressurePsi)),
            r(m.get(Field::FlowRateBpd)),
            r(m.get(Field::GorScfBbl)),
            r(f.head_ratio),
            r(f.intake_pressure_ratio),
            r(f.flow_ratio),
            r(f.current_ratio),
            r(f.tubing_pressure_ratio),
            r(f.winding_rise_ratio),
            r(f.vibration_ratio),
            r(f.efficiency_ratio),
            fs
        );
    }
}
