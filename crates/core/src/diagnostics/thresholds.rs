//! Every number the engine judges with, with defaults from the primer and field practice.
//! Configurable globally and per well (a JSON object of overrides merged over the global set).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Thresholds of the diagnostics engine. Ratios are relative to the well's own healthy
/// baseline after affinity-law normalisation to the running frequency, unless noted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Default training window (data time from a well's first reading), seconds.
    pub train_secs: f64,
    /// Running time after a start before steady-state rules apply, seconds.
    pub settle_secs: f64,
    /// Evidence must persist this long (and over at least `raise_readings`) to open an episode.
    pub raise_secs: f64,
    pub raise_readings: u32,
    /// Healthy running without evidence needed to close an episode, seconds.
    pub clear_secs: f64,
    /// An open episode is closed after this long without evidence even with the pump stopped.
    pub hold_off_secs: f64,
    /// A different process condition replaces the open one after this much uncontested evidence.
    pub switch_secs: f64,
    /// Running below this share of the base frequency is treated as ramping.
    pub min_running_frequency_ratio: f64,
    /// Magnetising (no-load) current as a share of nameplate amps (primer: ¼ to ⅓).
    pub no_load_share: f64,
    /// Surface flow below this share of the expected flow counts as no flow.
    pub no_flow_ratio: f64,
    /// Current ratio below which the pump is considered unloaded (near no-load).
    pub unloaded_current_ratio: f64,
    /// Discharge pressure above baseline by this ratio with no flow: deadhead.
    pub deadhead_discharge_ratio: f64,
    /// Vibration ratio below which a no-flow pump is considered not turning a load.
    pub broken_shaft_vibration_ratio: f64,
    /// GOR rise that indicates free gas reaching the pump.
    pub gas_gor_ratio: f64,
    /// Short-term variability of the current (std of the current ratio over 10 min) that
    /// counts as erratic: the larger of this and `erratic_factor` × the baseline variability.
    pub erratic_std: f64,
    pub erratic_factor: f64,
    /// PIP below this share of its baseline: drawn down.
    pub pump_off_pip_ratio: f64,
    /// Flow (normalised, relative to baseline) below this share while the intake falls under
    /// its baseline: inflow failing, an early pump-off sign.
    pub pump_off_flow_ratio: f64,
    /// Head ratio (measured TDH / catalog head, relative to baseline) below this: degraded.
    pub head_ratio_low: f64,
    /// A head loss that develops faster than this is abrupt (a leak), seconds.
    pub abrupt_secs: f64,
    /// Current ratio above baseline that counts as overload...
    pub overload_current_ratio: f64,
    /// ...when the current is also above this share of nameplate (if the nameplate is known).
    pub overload_nameplate_share: f64,
    /// Winding rise over intake (load-normalised) above this ratio of baseline: cooling lost.
    pub overheat_rise_ratio: f64,
    /// Winding temperature within this margin of the motor's limit counts as overheating, °C.
    pub overheat_margin_c: f64,
    /// Rise ratio that marks scale (cooling lost together with head).
    pub scale_rise_ratio: f64,
    /// Deviation of V/Hz from baseline that counts as a supply excursion.
    pub voltage_deviation: f64,
    /// Window and count of supply excursions that make a power fluctuation.
    pub voltage_window_secs: f64,
    pub voltage_min_excursions: u32,
    /// A channel repeating the same value with less than this probability is stuck.
    pub stuck_probability: f64,
    pub stuck_min_readings: u32,
    /// A run must also last this many times the longest repeat seen in training (readings and
    /// time): a coarse or slowly updated gauge repeats legitimately.
    pub stuck_training_run_factor: f64,
    /// A value this many times its recent level (or exactly zero) that returns at once is a spike.
    pub spike_factor: f64,
    pub spike_count: u32,
    pub spike_window_secs: f64,
    /// Share of recent readings missing a channel that otherwise reports: dropout.
    pub dropout_share: f64,
    /// Anomaly model: share of variance kept by the principal components.
    pub anomaly_variance_kept: f64,
    /// Control limits = this quantile of the training scores × `anomaly_limit_margin`.
    pub anomaly_quantile: f64,
    pub anomaly_limit_margin: f64,
    /// Minimum standard deviation of a normalised feature (keeps a very quiet baseline from
    /// turning noise into anomalies).
    pub anomaly_std_floor: f64,
    /// Running time after a start before the anomaly model judges (the fluid level needs hours
    /// to draw down after a stop), seconds.
    pub anomaly_settle_secs: f64,
    /// Smoothed score must stay above 1 this long to flag, seconds; clears below `anomaly_clear`.
    pub anomaly_persist_secs: f64,
    pub anomaly_clear: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            train_secs: 8.0 * 3600.0,
            settle_secs: 1800.0,
            raise_secs: 60.0,
            raise_readings: 2,
            clear_secs: 1200.0,
            hold_off_secs: 4.0 * 3600.0,
            switch_secs: 900.0,
            min_running_frequency_ratio: 0.8,
            no_load_share: 0.3,
            no_flow_ratio: 0.15,
            unloaded_current_ratio: 0.7,
            deadhead_discharge_ratio: 1.04,
            broken_shaft_vibration_ratio: 0.7,
            gas_gor_ratio: 1.25,
            erratic_std: 0.015,
            erratic_factor: 3.0,
            pump_off_pip_ratio: 0.75,
            pump_off_flow_ratio: 0.95,
            head_ratio_low: 0.92,
            abrupt_secs: 3600.0,
            overload_current_ratio: 1.12,
            overload_nameplate_share: 1.0,
            overheat_rise_ratio: 1.5,
            overheat_margin_c: 10.0,
            scale_rise_ratio: 1.15,
            voltage_deviation: 0.04,
            voltage_window_secs: 1800.0,
            voltage_min_excursions: 2,
            stuck_probability: 1e-9,
            stuck_min_readings: 10,
            stuck_training_run_factor: 3.0,
            spike_factor: 2.5,
            spike_count: 3,
            spike_window_secs: 3600.0,
            dropout_share: 0.35,
            anomaly_variance_kept: 0.9,
            anomaly_quantile: 0.995,
            anomaly_limit_margin: 2.0,
            anomaly_std_floor: 0.05,
            anomaly_settle_secs: 7200.0,
            anomaly_persist_secs: 1800.0,
            anomaly_clear: 0.7,
        }
    }
}

/// Global thresholds plus per-well overrides.
///
/// JSON: `{"global": {...}, "wells": {"WELL-001": {"pump_off_pip_ratio": 0.6}}}`; every key
/// optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdSet {
    pub global: Thresholds,
    pub wells: BTreeMap<String, serde_json::Value>,
}

impl ThresholdSet {
    /// Checks that every per-well override merges into valid thresholds.
    pub fn validate(&self) -> Result<(), String> {
        for id in self.wells.keys() {
            self.for_well(id)?;
        }
        Ok(())
    }

    /// The thresholds for one well: the global set with its overrides applied.
    pub fn for_well(&self, well_id: &str) -> Result<Thresholds, String> {
        let Some(patch) = self.wells.get(well_id) else {
            return Ok(self.global.clone());
        };
        let mut base = serde_json::to_value(&self.global).map_err(|e| e.to_string())?;
        let (Some(obj), Some(patch)) = (base.as_object_mut(), patch.as_object()) else {
            return Err(format!("wells.{well_id}: must be an object of thresholds"));
        };
        for (k, v) in patch {
            obj.insert(k.clone(), v.clone());
        }
        serde_json::from_value(base).map_err(|e| format!("wells.{well_id}: {e}"))
    }
}
