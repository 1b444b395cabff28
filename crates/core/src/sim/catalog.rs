//! The built-in pump and motor catalog the simulator draws installations from.
//!
//! Curves are generated from a handful of published-style parameters per model (shut-in head,
//! runout flow, best-efficiency flow and efficiency) and exported as ordinary catalog points,
//! so the simulator and the diagnostics read the very same `PumpSpec` a user would register.

use crate::hydraulics::{HHP_DIVISOR, KW_PER_HP};
use crate::well::{CurvePoint, MotorSpec, PumpSpec};

/// One catalog pump model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PumpModel {
    pub name: &'static str,
    pub base_frequency_hz: f64,
    /// Nameplate flow the model is sold by, bbl/d (the curve's best efficiency is near it; see
    /// [`PumpModel::bep_flow`]).
    pub rated_flow_bpd: f64,
    /// Flow where head reaches zero, bbl/d.
    pub runout_flow_bpd: f64,
    /// Head per stage at zero flow, ft.
    pub shutin_head_ft: f64,
    /// Stage efficiency at BEP.
    pub bep_efficiency: f64,
    /// Housing outside diameter, inches (sets the annulus the motor is cooled in).
    pub housing_od_in: f64,
}

/// Models from small to large, 60 Hz and 50 Hz.
pub const PUMP_CATALOG: [PumpModel; 7] = [
    PumpModel {
        name: "RX-400-450",
        base_frequency_hz: 60.0,
        rated_flow_bpd: 450.0,
        runout_flow_bpd: 1020.0,
        shutin_head_ft: 26.0,
        bep_efficiency: 0.56,
        housing_od_in: 4.0,
    },
    PumpModel {
        name: "RX-400-1100",
        base_frequency_hz: 60.0,
        rated_flow_bpd: 1100.0,
        runout_flow_bpd: 2500.0,
        shutin_head_ft: 29.0,
        bep_efficiency: 0.64,
        housing_od_in: 4.0,
    },
    PumpModel {
        name: "RX-538-2600",
        base_frequency_hz: 60.0,
        rated_flow_bpd: 2600.0,
        runout_flow_bpd: 5910.0,
        shutin_head_ft: 44.0,
        bep_efficiency: 0.70,
        housing_od_in: 5.38,
    },
    PumpModel {
        name: "RX-675-7500",
        base_frequency_hz: 60.0,
        rated_flow_bpd: 7500.0,
        runout_flow_bpd: 17050.0,
        shutin_head_ft: 62.0,
        bep_efficiency: 0.70,
        housing_od_in: 6.75,
    },
    PumpModel {
        name: "EU-400-800",
        base_frequency_hz: 50.0,
        rated_flow_bpd: 800.0,
        runout_flow_bpd: 1820.0,
        shutin_head_ft: 21.0,
        bep_efficiency: 0.60,
        housing_od_in: 4.0,
    },
    PumpModel {
        name: "EU-538-3500",
        base_frequency_hz: 50.0,
        rated_flow_bpd: 3500.0,
        runout_flow_bpd: 7950.0,
        shutin_head_ft: 36.0,
        bep_efficiency: 0.71,
        housing_od_in: 5.38,
    },
    PumpModel {
        name: "EU-562-9500",
        base_frequency_hz: 50.0,
        rated_flow_bpd: 9500.0,
        runout_flow_bpd: 21590.0,
        shutin_head_ft: 48.0,
        bep_efficiency: 0.70,
        housing_od_in: 5.62,
    },
];

pub fn pump_model(name: &str) -> Option<&'static PumpModel> {
    PUMP_CATALOG.iter().find(|m| m.name == name)
}

impl PumpModel {
    /// Head per stage: a drooping parabola from shut-in head to zero at runout.
    pub fn head_ft(&self, q: f64) -> f64 {
        let x = q / self.runout_flow_bpd;
        (self.shutin_head_ft * (1.0 - 0.25 * x - 0.75 * x * x)).max(0.0)
    }

    /// Brake horsepower per stage: rises gently with flow, as on radial/mixed-flow stages; scaled
    /// so the efficiency at the rated flow is the published one.
    pub fn bhp(&self, q: f64) -> f64 {
        let bhp_rated = self.rated_flow_bpd * self.head_ft(self.rated_flow_bpd)
            / (HHP_DIVISOR * self.bep_efficiency);
        bhp_rated * (0.45 + 0.55 * q / self.rated_flow_bpd)
    }

    /// Flow of best efficiency on the curve, bbl/d.
    pub fn bep_flow(&self) -> f64 {
        let eff = |q: f64| q * self.head_ft(q) / (HHP_DIVISOR * self.bhp(q));
        (1..1000)
            .map(|i| self.runout_flow_bpd * i as f64 / 1000.0)
            .max_by(|a, b| eff(*a).total_cmp(&eff(*b)))
            .unwrap_or(self.rated_flow_bpd)
    }

    /// The curve as catalog points: 0 to runout in 20 steps.
    pub fn stage_curve(&self) -> Vec<CurvePoint> {
        (0..=20)
            .map(|i| {
                let q = self.runout_flow_bpd * i as f64 / 20.0;
                CurvePoint {
                    flow_bpd: q,
                    head_ft: round_to(self.head_ft(q), 3),
                    bhp: round_to(self.bhp(q), 4),
                }
            })
            .collect()
    }

    pub fn spec(&self, stages: u32) -> PumpSpec {
        PumpSpec {
            model: Some(self.name.to_owned()),
            stages: Some(stages),
            base_frequency_hz: Some(self.base_frequency_hz),
            stage_curve: self.stage_curve(),
            min_flow_bpd: Some(round_to(0.75 * self.bep_flow(), 0)),
            max_flow_bpd: Some(round_to(1.25 * self.bep_flow(), 0)),
        }
    }
}

/// Motor nameplate sized for a required shaft power: the next standard rating with ≥ 20 % margin.
pub fn motor_for(required_hp: f64, voltage_class: f64) -> MotorSpec {
    const RATINGS: [f64; 16] = [
        20.0, 30.0, 40.0, 50.0, 60.0, 75.0, 100.0, 125.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0,
        600.0, 750.0,
    ];
    let hp = RATINGS
        .iter()
        .copied()
        .find(|r| *r >= required_hp * 1.2)
        .unwrap_or((required_hp * 1.2 / 50.0).ceil() * 50.0);
    // Nameplate amps at rated load: efficiency 0.86, power factor 0.84.
    let amps = hp * KW_PER_HP * 1000.0 / (3f64.sqrt() * voltage_class * 0.86 * 0.84);
    MotorSpec {
        rated_hp: Some(hp),
        rated_voltage_v: Some(voltage_class),
        rated_current_a: Some(round_to(amps, 1)),
        max_winding_temp_c: Some(150.0),
    }
}

pub(crate) fn round_to(v: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (v * p).round() / p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hydraulics::StageCurve;

    #[test]
    fn catalog_spans_sizes_and_frequencies_with_sane_curves() {
        assert!(PUMP_CATALOG.len() >= 5);
        assert!(PUMP_CATALOG.iter().any(|m| m.base_frequency_hz == 50.0));
        assert!(PUMP_CATALOG.iter().any(|m| m.base_frequency_hz == 60.0));
        assert!(PUMP_CATALOG.iter().any(|m| m.rated_flow_bpd <= 500.0));
        assert!(PUMP_CATALOG.iter().any(|m| m.rated_flow_bpd >= 9000.0));
        for m in &PUMP_CATALOG {
            let spec = m.spec(100);
            let curve = StageCurve::from_spec(&spec).expect("valid curve");
            // Head falls monotonically; efficiency stays physical and peaks near the BEP.
            let pts = curve.points();
            assert!(
                pts.windows(2).all(|w| w[1].head_ft < w[0].head_ft),
                "{}",
                m.name
            );
            for p in pts {
                let eff = p.flow_bpd * p.head_ft / (HHP_DIVISOR * p.bhp);
                assert!(eff < 0.85, "{} eff {eff}", m.name);
            }
            // The published points locate the best efficiency where the model has it.
            let bep = curve.bep_flow();
            assert!(
                (bep / m.bep_flow() - 1.0).abs() < 0.1,
                "{} bep {bep}",
                m.name
            );
            let off = m.bep_flow() / m.rated_flow_bpd - 1.0;
            assert!(off.abs() < 0.3, "{} bep {}", m.name, m.bep_flow());
        }
    }
}
