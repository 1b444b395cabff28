//! ESP hydraulics shared by the simulator and the diagnostics: catalog curves, affinity laws and
//! the primer's engineering formulas. Pure functions of their arguments.

use crate::well::{CurvePoint, PumpSpec};

/// Pressure gradient of fresh water, psi per foot.
pub const PSI_PER_FT_WATER: f64 = 0.433;
/// Feet of water head per psi (the primer's 2.31).
pub const FT_PER_PSI_WATER: f64 = 2.31;
/// Hydraulic horsepower divisor for Q [bpd] × H [ft] × SG.
pub const HHP_DIVISOR: f64 = 135_770.0;
/// Kilowatts per horsepower.
pub const KW_PER_HP: f64 = 0.745_7;

/// Total dynamic head in feet from the gauges: (Pd − Pi) × 2.31 / SG.
pub fn tdh_ft(discharge_psi: f64, intake_psi: f64, sg: f64) -> f64 {
    (discharge_psi - intake_psi) * FT_PER_PSI_WATER / sg
}

/// Hydraulic horsepower delivered: Q × TDH × SG / 135 770.
pub fn hydraulic_hp(flow_bpd: f64, tdh_ft: f64, sg: f64) -> f64 {
    flow_bpd * tdh_ft * sg / HHP_DIVISOR
}

/// Electrical input power, kW: √3 · V · I · PF / 1000.
pub fn motor_input_kw(volts: f64, amps: f64, power_factor: f64) -> f64 {
    3f64.sqrt() * volts * amps * power_factor / 1000.0
}

/// A per-stage catalog curve at base frequency, interpolated piecewise-linearly between the
/// published points and extrapolated along the last segment (head clamped at zero).
#[derive(Clone, Debug, PartialEq)]
pub struct StageCurve {
    points: Vec<CurvePoint>,
}

impl StageCurve {
    /// `None` unless there are at least two points with strictly increasing flow.
    pub fn new(points: &[CurvePoint]) -> Option<StageCurve> {
        if points.len() < 2 || points.windows(2).any(|w| w[1].flow_bpd <= w[0].flow_bpd) {
            return None;
        }
        Some(StageCurve {
            points: points.to_vec(),
        })
    }

    pub fn from_spec(pump: &PumpSpec) -> Option<StageCurve> {
        StageCurve::new(&pump.stage_curve)
    }

    pub fn points(&self) -> &[CurvePoint] {
        &self.points
    }

    /// Flow at which head reaches zero (the runout), by extrapolation if needed.
    pub fn max_flow(&self) -> f64 {
        let n = self.points.len();
        let (a, b) = (&self.points[n - 2], &self.points[n - 1]);
        if b.head_ft <= 0.0 {
            return b.flow_bpd;
        }
        let slope = (b.head_ft - a.head_ft) / (b.flow_bpd - a.flow_bpd);
        if slope >= 0.0 {
            return b.flow_bpd;
        }
        b.flow_bpd - b.head_ft / slope
    }

    fn interpolate(&self, q: f64, value: impl Fn(&CurvePoint) -> f64) -> f64 {
        let pts = &self.points;
        let q = q.max(0.0);
        if q <= pts[0].flow_bpd {
            return value(&pts[0]);
        }
        let i = match pts.iter().position(|p| p.flow_bpd >= q) {
            Some(i) => i,
            None => pts.len() - 1,
        };
        let (a, b) = (&pts[i - 1], &pts[i]);
        let t = (q - a.flow_bpd) / (b.flow_bpd - a.flow_bpd);
        value(a) + t * (value(b) - value(a))
    }

    /// Head per stage at base frequency, feet.
    pub fn head_ft(&self, flow_bpd: f64) -> f64 {
        self.interpolate(flow_bpd, |p| p.head_ft).max(0.0)
    }

    /// Brake horsepower per stage at base frequency (water, SG 1).
    pub fn bhp(&self, flow_bpd: f64) -> f64 {
        self.interpolate(flow_bpd, |p| p.bhp).max(0.0)
    }

    /// The flow at or right of `from` where the head per stage falls to `head_ft` (bisection:
    /// right of the shut-off hump the head falls with flow). `None` when it never gets there.
    pub fn flow_at_head_right_of(&self, from: f64, head_ft: f64) -> Option<f64> {
        let (mut lo, mut hi) = (from.max(0.0), self.max_flow());
        if hi.is_nan() || hi <= lo || self.head_ft(lo) < head_ft || self.head_ft(hi) > head_ft {
            return None;
        }
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if self.head_ft(mid) > head_ft {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(0.5 * (lo + hi))
    }

    /// Flow of best efficiency on the published points.
    pub fn bep_flow(&self) -> f64 {
        let mut best = (0.0, self.points[0].flow_bpd);
        for p in &self.points {
            if p.bhp > 0.0 {
                let eff = p.flow_bpd * p.head_ft / (HHP_DIVISOR * p.bhp);
                if eff > best.0 {
                    best = (eff, p.flow_bpd);
                }
            }
        }
        best.1
    }
}

/// Affinity-law conversions between base frequency `f0` and running frequency `f`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Affinity {
    /// f / f0.
    pub ratio: f64,
}

impl Affinity {
    pub fn new(base_hz: f64, running_hz: f64) -> Affinity {
        Affinity {
            ratio: running_hz / base_hz,
        }
    }
    /// Flow measured at `f`, expressed at base frequency.
    pub fn flow_to_base(self, q: f64) -> f64 {
        q / self.ratio
    }
    pub fn flow_from_base(self, q0: f64) -> f64 {
        q0 * self.ratio
    }
    pub fn head_to_base(self, h: f64) -> f64 {
        h / (self.ratio * self.ratio)
    }
    pub fn head_from_base(self, h0: f64) -> f64 {
        h0 * self.ratio * self.ratio
    }
    pub fn power_from_base(self, p0: f64) -> f64 {
        p0 * self.ratio.powi(3)
    }
}

/// Whole-pump head at running frequency: stages × per-stage head, through the affinity laws.
pub fn pump_head_ft(curve: &StageCurve, stages: f64, aff: Affinity, flow_bpd: f64) -> f64 {
    stages * aff.head_from_base(curve.head_ft(aff.flow_to_base(flow_bpd)))
}

/// Whole-pump brake horsepower at running frequency on water.
pub fn pump_bhp(curve: &StageCurve, stages: f64, aff: Affinity, flow_bpd: f64) -> f64 {
    stages * aff.power_from_base(curve.bhp(aff.flow_to_base(flow_bpd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve() -> StageCurve {
        StageCurve::new(&[
            CurvePoint {
                flow_bpd: 0.0,
                head_ft: 30.0,
                bhp: 0.2,
            },
            CurvePoint {
                flow_bpd: 1000.0,
                head_ft: 24.0,
                bhp: 0.35,
            },
            CurvePoint {
                flow_bpd: 2000.0,
                head_ft: 10.0,
                bhp: 0.42,
            },
        ])
        .unwrap()
    }

    #[test]
    fn interpolates_and_extrapolates() {
        let c = curve();
        assert_eq!(c.head_ft(500.0), 27.0);
        assert_eq!(c.head_ft(-5.0), 30.0);
        assert!((c.max_flow() - 2000.0 - 10.0 / 14.0 * 1000.0).abs() < 1e-9);
        assert_eq!(c.head_ft(5000.0), 0.0);
        assert!(StageCurve::new(&c.points()[..1]).is_none());
    }

    #[test]
    fn affinity_laws_scale_head_and_power() {
        let c = curve();
        let a = Affinity::new(60.0, 30.0);
        // Half speed: the base point (1000 bpd, 24 ft) maps to 500 bpd and 6 ft.
        assert!((pump_head_ft(&c, 1.0, a, 500.0) - 6.0).abs() < 1e-9);
        assert!((pump_bhp(&c, 1.0, a, 500.0) - 0.35 / 8.0).abs() < 1e-12);
    }

    #[test]
    fn primer_formulas() {
        assert!((tdh_ft(2000.0, 500.0, 1.0) - 3465.0).abs() < 1e-9);
        assert!((hydraulic_hp(1000.0, 3465.0, 1.0) - 25.52).abs() < 0.01);
        assert!((motor_input_kw(1000.0, 50.0, 0.85) - 73.6).abs() < 0.1);
    }
}
