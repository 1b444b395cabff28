//! Model families: alternative modelling choices for the same fleet, where the literature or
//! field practice differs, so the diagnostics can be judged on physics they were not written
//! against.
//!
//! A run picks one [`Family`] (`espwatch simulate --family`); each well then draws its concrete
//! [`WellModel`] from that family (one well may have a gas separator and PIP control, its
//! neighbour neither). `classic` is the original simulator, unchanged byte for byte.
//!
//! | family | gas handling | inflow | motor | drive | gauges | operations |
//! |---|---|---|---|---|---|---|
//! | classic | homogeneous head loss by free-gas fraction | straight-line PI | fixed efficiency, magnetising share | fixed frequency | fine, 10 s | stops and set-point changes |
//! | field | Dunbar-style critical void fraction, rising with PIP; separator on half the wells | Vogel below the bubble point | load-dependent efficiency and power factor; viscous derating | fixed | coarse quantisation, lag, drift, jitter, 5 s–5 min, some without discharge gauge | + well tests, choke changes, surges, ramps, recalibration, water-cut steps, sand slugs |
//! | pipctl | homogeneous | straight-line PI | classic | PIP set point: the drive moves frequency itself | as classic, some wells without a frequency channel | as field |
//! Conditions: `field` wears its pumps partly in proportion to flow and leaks through an orifice
//! (leak ∝ √ΔP); `holdout` wears mostly with flow and with an efficiency loss, plugs with scale
//! by a flow-dependent loss, leaks through an orifice; both inject subtler magnitudes.
//!
//! | holdout | Turpin ratio with a gas-lock limit; rotary gas handler on some wells | Vogel | its own efficiency/PF curves | half PIP-controlled | its own noise, 2 s–3 min, wells without frequency, discharge or flow | as field |
//!
//! | blind | per well: Dunbar or Turpin, separator or not | per well: straight line or Vogel | its own curves | a third PIP-controlled | 10/30/60 s (as historian exports), spikes, coarse or fine quantisation, any channel may be missing | as field |
//!
//! **`blind` is never used to tune the diagnostics** (see ARCHITECTURE.md): it is the family
//! the cross-family table reports as "never tuned on". `holdout` held that place until its
//! per-condition results were read while fixing bugs (2026-12-04); `blind` replaced it, a
//! recombined family only ever run for the report: it mixes the modelling choices per well in
//! combinations no family has, at historian sampling rates with gauge spikes.

use crate::rng::SimRng;
use crate::telemetry::Field;

/// A family of modelling choices, chosen per run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    Classic,
    Field,
    PipCtl,
    Holdout,
    /// Recombined per well, only ever run for the report (see the module doc).
    Blind,
    /// Each well draws one of the tuning families (classic, field, pipctl); never holdout.
    Mixed,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Classic,
        Family::Field,
        Family::PipCtl,
        Family::Holdout,
        Family::Blind,
        Family::Mixed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Classic => "classic",
            Family::Field => "field",
            Family::PipCtl => "pipctl",
            Family::Holdout => "holdout",
            Family::Blind => "blind",
            Family::Mixed => "mixed",
        }
    }

    /// True for the family the diagnostics must never be tuned on (`holdout` until it was spent
    /// on 2026-12-04, `blind` since).
    pub fn is_held_out(self) -> bool {
        self == Family::Blind
    }

    /// Standard sampling intervals of the family's gauges, seconds; `None`: the run's
    /// `--interval` (classic).
    pub fn intervals_s(self) -> Option<&'static [i64]> {
        match self {
            Family::Classic => None,
            Family::Field => Some(&[5, 10, 15, 30, 60, 120, 300]),
            Family::PipCtl => Some(&[10, 15, 20, 30, 60]),
            Family::Holdout => Some(&[2, 5, 20, 30, 60, 180]),
            Family::Blind => Some(&[10, 30, 60]),
            Family::Mixed => Some(&[1, 5, 10, 15, 20, 30, 60, 120, 300]),
        }
    }
}

impl std::str::FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Family::ALL
            .iter()
            .copied()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown model family {s:?}; known: {}",
                    Family::ALL.map(Family::name).join(", ")
                )
            })
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How free gas at the intake is computed and what it does to the pump.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GasModel {
    /// Free-gas fraction linear in the pressure deficit below the bubble point; head falls with
    /// its square, gas lock near 42 %.
    Homogeneous,
    /// In-situ void fraction from solution GOR (Standing-like Rs ∝ p^0.83) and gas formation
    /// volume factor; head holds up to a critical void fraction that rises with intake pressure
    /// (Dunbar-style), then falls.
    Dunbar,
    /// Turpin's parameter Φ = 2000·(q_g/q_l)/(3·p): stable below 1, degrading above; gas lock
    /// past a void-fraction limit whatever the pressure.
    Turpin,
}

/// Reservoir inflow performance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum InflowModel {
    /// q = J·(Pr − Pwf).
    StraightLine,
    /// Straight line above the bubble point, Vogel's curve below it (composite IPR).
    Vogel,
}

/// Motor electrics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MotorModel {
    /// Fixed efficiency 0.88, magnetising current 30 % of nameplate.
    Classic,
    /// Efficiency and power factor that depend on load (falling at light load).
    Curves {
        eff_rated: f64,
        pf_rated: f64,
        /// Efficiency lost at no load, share of the rated efficiency.
        light_load_drop: f64,
    },
}

/// Physics choices of one installation ([`super::Plant::physics`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Physics {
    pub gas: GasModel,
    /// Share of free gas that bypasses the pump (natural separation and any separator/handler).
    pub gas_separation: f64,
    pub inflow: InflowModel,
    pub motor: MotorModel,
    /// Viscous correction: head and flow multiplied, brake horsepower divided by efficiency.
    pub viscous_head: f64,
    pub viscous_bhp: f64,
}

impl Physics {
    pub const CLASSIC: Physics = Physics {
        gas: GasModel::Homogeneous,
        gas_separation: 0.0,
        inflow: InflowModel::StraightLine,
        motor: MotorModel::Classic,
        viscous_head: 1.0,
        viscous_bhp: 1.0,
    };
}

impl Default for Physics {
    fn default() -> Self {
        Physics::CLASSIC
    }
}

/// Drive control mode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Control {
    /// The operator sets the frequency.
    FixedFrequency,
    /// The drive holds a pump-intake-pressure set point by moving frequency itself (bounded, slow).
    PipSetpoint {
        /// Hz per second per psi of error.
        gain: f64,
        /// Fastest set-point change, Hz/s.
        max_rate: f64,
        min_hz: f64,
        max_hz: f64,
    },
}

/// How the gauges read the true values.
#[derive(Clone, Debug, PartialEq)]
pub struct Gauges {
    /// Multiplies every channel's noise.
    pub noise: f64,
    /// Multiplies every channel's quantum (coarser A/D and SCADA rounding).
    pub quantum: f64,
    /// First-order lag of pressure gauges, s (0: none).
    pub pressure_lag_s: f64,
    /// First-order lag of temperature gauges, s.
    pub temperature_lag_s: f64,
    /// Intake-gauge drift, psi/day (linear; a recalibration takes it back to zero).
    pub drift_psi_per_day: f64,
    /// Timestamp jitter, ± seconds (kept under half the interval).
    pub jitter_s: f64,
    /// Channels this well does not have at all.
    pub missing: Vec<Field>,
    /// Heavy-tailed noise: chance per value of a 5-sigma outlier.
    pub outlier_rate: f64,
}

impl Gauges {
    pub fn classic() -> Gauges {
        Gauges {
            noise: 1.0,
            quantum: 1.0,
            pressure_lag_s: 0.0,
            temperature_lag_s: 0.0,
            drift_psi_per_day: 0.0,
            jitter_s: 0.0,
            missing: Vec::new(),
            outlier_rate: 0.0,
        }
    }

    pub fn is_classic(&self) -> bool {
        *self == Gauges::classic()
    }
}

/// How the gradual and leak conditions act on the pump (their onset and labels are the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStyle {
    /// Wear and scale: a uniform head loss; a leak: a fixed share of pump flow.
    Classic,
    /// Wear: part uniform, part growing with flow (worn seal rings); a leak: an orifice, its
    /// flow ∝ √ΔP across the tubing wall, so its share grows as pump flow falls.
    Field,
    /// Wear: mostly flow-dependent with an efficiency loss (current up); scale: flow-dependent
    /// loss with friction and lost cooling; a leak: an orifice.
    Holdout,
}

/// Everything a well took from its family besides the physics (which lives in the plant).
#[derive(Clone, Debug, PartialEq)]
pub struct WellModel {
    pub family: Family,
    pub physics: Physics,
    pub control: Control,
    pub gauges: Gauges,
    /// Normal operations that look like faults (well tests, choke changes, surges, ramps,
    /// recalibrations, water-cut steps, sand slugs).
    pub operations: bool,
    /// Range of the magnitude scale of injected conditions (1: as classic; lower: subtler).
    pub magnitude: (f64, f64),
    pub conditions: ConditionStyle,
    /// A healthy well that runs with its intake below the bubble point (PIP / Pb), its free gas
    /// handled by separation: gas at the intake and some fluctuation are normal there.
    pub intake_below_bubble: Option<f64>,
}

impl WellModel {
    pub fn classic() -> WellModel {
        WellModel {
            family: Family::Classic,
            physics: Physics::CLASSIC,
            control: Control::FixedFrequency,
            gauges: Gauges::classic(),
            operations: false,
            magnitude: (1.0, 1.0),
            conditions: ConditionStyle::Classic,
            intake_below_bubble: None,
        }
    }

    /// Draws a well's model from `family`. `nominal_hz`, `base_hz` bound a PIP controller;
    /// `water_cut_pct` decides whether viscous correction applies (oil-continuous emulsions).
    pub fn draw(
        family: Family,
        rng: &mut SimRng,
        nominal_hz: f64,
        water_cut_pct: f64,
    ) -> WellModel {
        let family = match family {
            Family::Mixed => *rng.pick(&[Family::Classic, Family::Field, Family::PipCtl]),
            f => f,
        };
        let pip_control = |rng: &mut SimRng| Control::PipSetpoint {
            gain: rng.range(0.0005, 0.002),
            max_rate: rng.range(0.005, 0.02),
            min_hz: nominal_hz - 10.0,
            max_hz: nominal_hz + 3.5,
        };
        match family {
            Family::Classic | Family::Mixed => WellModel::classic(),
            Family::Field => {
                let separator = rng.chance(0.5);
                let natural = rng.range(0.2, 0.5);
                let sep = if separator { rng.range(0.6, 0.9) } else { 0.0 };
                let viscosity_cp = if water_cut_pct < 45.0 {
                    rng.range(1.0, 120.0)
                } else {
                    1.0
                };
                let mut missing = Vec::new();
                if rng.chance(0.2) {
                    missing.push(Field::DischargePressurePsi);
                }
                if rng.chance(0.3) {
                    missing.push(Field::GorScfBbl);
                }
                WellModel {
                    family,
                    physics: Physics {
                        gas: GasModel::Dunbar,
                        gas_separation: 1.0 - (1.0 - natural) * (1.0 - sep),
                        inflow: InflowModel::Vogel,
                        motor: MotorModel::Curves {
                            eff_rated: rng.range(0.84, 0.9),
                            pf_rated: rng.range(0.8, 0.88),
                            light_load_drop: rng.range(0.1, 0.25),
                        },
                        viscous_head: 1.0 - 0.025 * viscosity_cp.ln(),
                        viscous_bhp: 1.0 + 0.05 * viscosity_cp.ln(),
                    },
                    control: Control::FixedFrequency,
                    gauges: Gauges {
                        noise: rng.range(0.8, 2.5),
                        quantum: *rng.pick(&[1.0, 5.0, 10.0]),
                        pressure_lag_s: rng.range(0.0, 30.0),
                        temperature_lag_s: rng.range(30.0, 300.0),
                        drift_psi_per_day: rng.range(-1.5, 1.5),
                        jitter_s: rng.range(0.0, 2.0),
                        missing,
                        outlier_rate: 0.0,
                    },
                    operations: true,
                    magnitude: (0.6, 1.0),
                    conditions: ConditionStyle::Field,
                    intake_below_bubble: rng.chance(0.3).then(|| rng.range(0.85, 0.98)),
                }
            }
            Family::PipCtl => {
                let mut missing = Vec::new();
                if rng.chance(0.3) {
                    missing.push(Field::FrequencyHz);
                }
                WellModel {
                    family,
                    physics: Physics::CLASSIC,
                    control: pip_control(rng),
                    gauges: Gauges {
                        missing,
                        jitter_s: rng.range(0.0, 1.0),
                        ..Gauges::classic()
                    },
                    operations: true,
                    magnitude: (0.7, 1.0),
                    conditions: ConditionStyle::Classic,
                    intake_below_bubble: None,
                }
            }
            Family::Holdout => {
                let handler = rng.chance(0.35);
                let natural = rng.range(0.1, 0.4);
                let sep = if handler { rng.range(0.4, 0.7) } else { 0.0 };
                let viscosity_cp = if water_cut_pct < 30.0 {
                    rng.range(1.0, 300.0)
                } else {
                    1.0
                };
                let mut missing = Vec::new();
                for (f, p) in [
                    (Field::FrequencyHz, 0.2),
                    (Field::DischargePressurePsi, 0.2),
                    (Field::FlowRateBpd, 0.15),
                    (Field::VibrationYG, 0.3),
                ] {
                    if rng.chance(p) {
                        missing.push(f);
                    }
                }
                let control = if rng.chance(0.5) {
                    pip_control(rng)
                } else {
                    Control::FixedFrequency
                };
                WellModel {
                    family,
                    physics: Physics {
                        gas: GasModel::Turpin,
                        gas_separation: 1.0 - (1.0 - natural) * (1.0 - sep),
                        inflow: InflowModel::Vogel,
                        motor: MotorModel::Curves {
                            eff_rated: rng.range(0.8, 0.92),
                            pf_rated: rng.range(0.72, 0.9),
                            light_load_drop: rng.range(0.2, 0.4),
                        },
                        viscous_head: 1.0 - 0.02 * viscosity_cp.ln(),
                        viscous_bhp: 1.0 + 0.07 * viscosity_cp.ln(),
                    },
                    control,
                    gauges: Gauges {
                        noise: rng.range(0.5, 3.0),
                        quantum: *rng.pick(&[1.0, 2.0, 10.0]),
                        pressure_lag_s: rng.range(5.0, 60.0),
                        temperature_lag_s: rng.range(60.0, 600.0),
                        drift_psi_per_day: rng.range(-2.5, 2.5),
                        jitter_s: rng.range(0.0, 0.9),
                        missing,
                        outlier_rate: rng.range(0.0, 0.002),
                    },
                    operations: true,
                    magnitude: (0.5, 1.0),
                    conditions: ConditionStyle::Holdout,
                    intake_below_bubble: rng.chance(0.3).then(|| rng.range(0.8, 0.98)),
                }
            }
            Family::Blind => {
                let gas = *rng.pick(&[GasModel::Dunbar, GasModel::Turpin]);
                let inflow = *rng.pick(&[InflowModel::StraightLine, InflowModel::Vogel]);
                let natural = rng.range(0.15, 0.45);
                let sep = if rng.chance(0.4) {
                    rng.range(0.5, 0.85)
                } else {
                    0.0
                };
                let viscosity_cp = if water_cut_pct < 40.0 {
                    rng.range(1.0, 200.0)
                } else {
                    1.0
                };
                let mut missing = Vec::new();
                for (f, p) in [
                    (Field::FrequencyHz, 0.15),
                    (Field::DischargePressurePsi, 0.25),
                    (Field::FlowRateBpd, 0.2),
                    (Field::VibrationYG, 0.25),
                    (Field::GorScfBbl, 0.35),
                    (Field::TubingPressurePsi, 0.15),
                ] {
                    if rng.chance(p) {
                        missing.push(f);
                    }
                }
                let control = if rng.chance(0.33) {
                    pip_control(rng)
                } else {
                    Control::FixedFrequency
                };
                WellModel {
                    family,
                    physics: Physics {
                        gas,
                        gas_separation: 1.0 - (1.0 - natural) * (1.0 - sep),
                        inflow,
                        motor: MotorModel::Curves {
                            eff_rated: rng.range(0.78, 0.93),
                            pf_rated: rng.range(0.7, 0.9),
                            light_load_drop: rng.range(0.1, 0.45),
                        },
                        viscous_head: 1.0 - 0.022 * viscosity_cp.ln(),
                        viscous_bhp: 1.0 + 0.06 * viscosity_cp.ln(),
                    },
                    control,
                    gauges: Gauges {
                        noise: rng.range(0.5, 2.5),
                        quantum: *rng.pick(&[0.5, 1.0, 5.0, 10.0]),
                        pressure_lag_s: rng.range(0.0, 45.0),
                        temperature_lag_s: rng.range(30.0, 450.0),
                        drift_psi_per_day: rng.range(-2.0, 2.0),
                        jitter_s: rng.range(0.0, 1.5),
                        missing,
                        outlier_rate: rng.range(0.0, 0.003),
                    },
                    operations: true,
                    magnitude: (0.5, 1.0),
                    conditions: *rng.pick(&[ConditionStyle::Field, ConditionStyle::Holdout]),
                    intake_below_bubble: rng.chance(0.25).then(|| rng.range(0.8, 0.98)),
                }
            }
        }
    }
}

/// Normal operations that look like faults; written to `operations.csv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OperationKind {
    /// Operator frequency set-point change (classic normal life).
    FrequencyChange,
    /// Planned stop and restart.
    PlannedStop,
    /// Slow planned frequency ramp.
    Ramp,
    /// Production routed to the test separator for hours (back pressure changes).
    WellTest,
    /// Surface choke opened or closed (flowline back pressure changes for good).
    ChokeChange,
    /// Short flowline pressure surge (slug arriving at the separator).
    FlowlineSurge,
    /// Intake gauge recalibrated: its offset jumps, the channel drops out briefly.
    GaugeRecalibration,
    /// Water cut steps up (a new water zone, a workover elsewhere).
    WaterCutStep,
    /// Sand slug through the pump: load and vibration up for minutes, then clears.
    SandSlug,
}

impl OperationKind {
    pub const ALL: [OperationKind; 9] = [
        OperationKind::FrequencyChange,
        OperationKind::PlannedStop,
        OperationKind::Ramp,
        OperationKind::WellTest,
        OperationKind::ChokeChange,
        OperationKind::FlowlineSurge,
        OperationKind::GaugeRecalibration,
        OperationKind::WaterCutStep,
        OperationKind::SandSlug,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OperationKind::FrequencyChange => "frequency_change",
            OperationKind::PlannedStop => "planned_stop",
            OperationKind::Ramp => "ramp",
            OperationKind::WellTest => "well_test",
            OperationKind::ChokeChange => "choke_change",
            OperationKind::FlowlineSurge => "flowline_surge",
            OperationKind::GaugeRecalibration => "gauge_recalibration",
            OperationKind::WaterCutStep => "water_cut_step",
            OperationKind::SandSlug => "sand_slug",
        }
    }
}

/// One normal operation on one well, seconds from the simulation start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Operation {
    pub kind: OperationKind,
    pub start_s: f64,
    pub end_s: f64,
    /// Kind-specific magnitude (new set point, back-pressure factor, offset psi, ...).
    pub value: f64,
}
