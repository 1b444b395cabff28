//! What the rules judge a reading by: the registry's facts about a well, its healthy baseline
//! (learned by the engine) and one reading's features relative to it. Shared by the engine,
//! which computes them, and the rules, which read them.

use serde::Serialize;

use crate::hydraulics::StageCurve;
use crate::well::WellMeta;

/// What the registry tells the engine about a well. All optional.
#[derive(Clone, Debug, Default)]
pub struct WellContext {
    pub curve: Option<StageCurve>,
    pub stages: Option<f64>,
    pub base_hz: Option<f64>,
    pub sg: Option<f64>,
    pub bubble_point_psi: Option<f64>,
    pub rated_current_a: Option<f64>,
    pub max_winding_temp_c: Option<f64>,
    /// Pump setting depth: with the wellhead pressure it gives the discharge pressure where no
    /// discharge gauge is fitted.
    pub setting_depth_ft: Option<f64>,
}

impl WellContext {
    pub fn from_meta(meta: Option<&WellMeta>) -> WellContext {
        let Some(m) = meta else {
            return WellContext::default();
        };
        let pump = m.pump.as_ref();
        WellContext {
            curve: pump.and_then(StageCurve::from_spec),
            stages: pump.and_then(|p| p.stages).map(f64::from),
            base_hz: pump.and_then(|p| p.base_frequency_hz),
            sg: m.fluid.as_ref().and_then(|f| f.specific_gravity),
            bubble_point_psi: m.fluid.as_ref().and_then(|f| f.bubble_point_psi),
            rated_current_a: m.motor.as_ref().and_then(|m| m.rated_current_a),
            max_winding_temp_c: m.motor.as_ref().and_then(|m| m.max_winding_temp_c),
            setting_depth_ft: m.setting_depth_ft,
        }
    }
}

/// Healthy baseline of a well, every value at the reference frequency.
#[derive(Clone, Debug, Serialize)]
pub struct Baseline {
    pub reference_hz: f64,
    /// The drive frequency the well ran at while the baseline was learned (the nameplate's
    /// base frequency, `reference_hz`, is often well above it).
    pub operating_hz: Option<f64>,
    pub no_load_current_a: f64,
    /// Load (active) current at the reference frequency.
    pub active_current_a: f64,
    pub current_variability: f64,
    pub flow_bpd: Option<f64>,
    pub intake_pressure_psi: Option<f64>,
    pub discharge_pressure_psi: Option<f64>,
    pub tubing_pressure_psi: Option<f64>,
    pub tdh_ft: Option<f64>,
    /// Measured over catalog head; 1 for a pump on its curve.
    pub catalog_head_ratio: Option<f64>,
    pub vibration_g: Option<f64>,
    pub volts_per_hz: Option<f64>,
    /// Share of healthy readings whose V/Hz was already outside the excursion band (gauge
    /// spikes, noise, quantisation): a power fluctuation is a rate of excursions well above it.
    pub volts_per_hz_excursion_rate: f64,
    /// Drive output voltage (for wells without a frequency channel: with V/Hz control the
    /// voltage follows the speed).
    pub volts_v: Option<f64>,
    pub winding_rise_c: Option<f64>,
    pub efficiency_index: Option<f64>,
    pub gor_scf_bbl: Option<f64>,
    pub readings: u64,
}

impl Baseline {
    /// The current the motor should draw at speed ratio `r` (to the reference frequency): the
    /// magnetising part stays, the load part scales with power (∝ r³) over voltage (∝ r).
    pub fn expected_current_a(&self, r: f64) -> f64 {
        (self.no_load_current_a.powi(2) + (self.active_current_a * r * r).powi(2)).sqrt()
    }
}

/// Features of one reading, relative to the baseline (1 = as in the baseline).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Features {
    pub running: bool,
    pub frequency_hz: Option<f64>,
    pub current_ratio: Option<f64>,
    pub intake_pressure_ratio: Option<f64>,
    pub discharge_pressure_ratio: Option<f64>,
    pub tubing_pressure_ratio: Option<f64>,
    pub flow_ratio: Option<f64>,
    pub head_ratio: Option<f64>,
    /// Pressure rise across the pump against the baseline (head × density): a denser fluid
    /// raises it together with the current.
    pub pressure_rise_ratio: Option<f64>,
    pub vibration_ratio: Option<f64>,
    pub winding_rise_ratio: Option<f64>,
    /// Cooling by the flow past the motor against the baseline (flow^0.8; without a flow meter,
    /// the flow the wellhead pressure tells).
    pub cooling_ratio: Option<f64>,
    pub volts_per_hz_ratio: Option<f64>,
    pub efficiency_ratio: Option<f64>,
    pub gor_ratio: Option<f64>,
    pub tdh_ft: Option<f64>,
    pub system_efficiency: Option<f64>,
}

impl Features {
    /// What still means something with the pump stopped: the intake and tubing pressures
    /// (the fluid level recovering) and the frequency.
    pub(crate) fn stopped(self) -> Features {
        Features {
            running: false,
            frequency_hz: self.frequency_hz,
            intake_pressure_ratio: self.intake_pressure_ratio,
            tubing_pressure_ratio: self.tubing_pressure_ratio,
            ..Features::default()
        }
    }
}
