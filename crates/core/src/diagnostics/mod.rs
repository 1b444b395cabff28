//! The diagnostics engine: the same pure code runs online (the server advances each well's
//! state with every accepted reading) and offline (`espwatch diagnose`).
//!
//! - [`engine`]: per-well streaming state — training window and healthy baseline, features
//!   normalised to the running frequency with the affinity laws, head ratio against the
//!   registry's catalog curve, run/trip state and starts per day, the condition rules.
//! - [`channels`]: stuck, spiking and dropped-out channels (`sensor_fault`).
//! - [`anomaly`]: the learned per-well model (PCA, Hotelling T² and SPE limits).
//! - `rules`: the condition rules, one function per family of conditions.
//! - [`episodes`]: persistence/clear hysteresis that turns findings into episodes.
//! - [`thresholds`]: every threshold with its default, global and per-well.
//! - [`eval`]: matching diagnosed episodes against ground-truth labels.
//! - [`legacy`]: the old platform's symptom decision tree.

pub mod anomaly;
pub mod channels;
pub mod engine;
pub mod episodes;
pub mod eval;
pub mod features;
pub mod legacy;
mod rules;
pub mod stats;
pub mod thresholds;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_issue;

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use crate::condition::Condition;

pub use engine::{StepOutput, TrainingWindow, WellEngine};
pub use episodes::{Episode, EpisodeTracker};
pub use features::{Baseline, Features, WellContext};
pub use thresholds::{ThresholdSet, Thresholds};

/// What an episode or finding says: one of the twelve conditions, or an anomaly of the learned
/// model that no rule explains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Diagnosis {
    Condition(Condition),
    Anomaly,
}

impl Diagnosis {
    pub fn name(self) -> &'static str {
        match self {
            Diagnosis::Condition(c) => c.name(),
            Diagnosis::Anomaly => "anomaly",
        }
    }

    pub fn from_name(name: &str) -> Option<Diagnosis> {
        if name == "anomaly" {
            return Some(Diagnosis::Anomaly);
        }
        Condition::from_name(name).map(Diagnosis::Condition)
    }

    /// Conditions that develop over days (wear, scale): they do not come and go in minutes.
    pub fn is_gradual(self) -> bool {
        matches!(self, Diagnosis::Condition(c) if c.onset() == crate::condition::Onset::Gradual)
    }

    /// Conditions of the pump and its hydraulics, of which one is diagnosed at a time; power
    /// and sensor problems are independent of them.
    pub fn is_process(self) -> bool {
        !matches!(
            self,
            Diagnosis::Condition(Condition::PowerFluctuation | Condition::SensorFault)
        )
    }

    /// Overload and motor overheat: the motor's protection is inverse-time and its winding
    /// has thermal mass, so short evidence of them is ridden out (`thermal_persist_secs`).
    pub fn is_thermal(self) -> bool {
        matches!(
            self,
            Diagnosis::Condition(Condition::Overload | Condition::MotorOverheat)
        )
    }

    /// Alarm severity: `critical` stops production or destroys equipment, `major` costs
    /// production or run life, `minor` needs a look.
    pub fn severity(self) -> Severity {
        match self {
            Diagnosis::Condition(c) => match c {
                Condition::BrokenShaft
                | Condition::ClosedValve
                | Condition::GasLock
                | Condition::MotorOverheat
                | Condition::Overload => Severity::Critical,
                Condition::PumpOff
                | Condition::TubingLeak
                | Condition::GasInterference
                | Condition::ScalePlugging
                | Condition::PowerFluctuation => Severity::Major,
                Condition::PumpWear | Condition::SensorFault => Severity::Minor,
            },
            Diagnosis::Anomaly => Severity::Minor,
        }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Diagnosis {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Diagnosis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Diagnosis {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Diagnosis::from_name(s).ok_or_else(|| {
            let known: Vec<&str> = Condition::ALL.iter().map(|c| c.name()).collect();
            format!(
                "unknown condition `{s}`; known: {}, anomaly",
                known.join(", ")
            )
        })
    }
}

/// How bad an alarm is, least severe first (so `>=` means "at least as severe"): `critical`
/// stops production or destroys equipment, `major` costs production or run life, `minor` needs
/// a look. Spelled in lower case in JSON, storage and metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Minor,
    Major,
    Critical,
}

impl Severity {
    /// Least severe first.
    pub const ALL: [Severity; 3] = [Severity::Minor, Severity::Major, Severity::Critical];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Minor => "minor",
            Severity::Major => "major",
            Severity::Critical => "critical",
        }
    }

    pub fn from_name(name: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::from_name(s)
            .ok_or_else(|| format!("unknown severity `{s}`; known: minor, major, critical"))
    }
}

/// One piece of evidence: a feature, its value, the threshold it crossed and how.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Evidence {
    pub feature: String,
    /// `null` when the feature could not be computed (missing channel).
    pub value: Option<f64>,
    pub threshold: f64,
    pub relation: String,
}

impl Evidence {
    pub fn new(feature: &str, value: f64, threshold: f64, relation: &str) -> Evidence {
        Evidence {
            feature: feature.to_owned(),
            value: value.is_finite().then_some(round4(value)),
            threshold: round4(threshold),
            relation: relation.to_owned(),
        }
    }
    pub fn opt(feature: &str, value: Option<f64>, threshold: f64, relation: &str) -> Evidence {
        Evidence {
            value: value.filter(|v| v.is_finite()).map(round4),
            ..Evidence::new(feature, f64::NAN, threshold, relation)
        }
    }
}

fn round4(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

/// A diagnosis at one reading, with its evidence and what to do about it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    #[serde(rename = "condition")]
    pub diagnosis: Diagnosis,
    pub confidence: f64,
    pub evidence: Vec<Evidence>,
    pub action: &'static str,
}

impl Finding {
    pub fn new(condition: Condition, confidence: f64, evidence: Vec<Evidence>) -> Finding {
        let d = Diagnosis::Condition(condition);
        Finding {
            diagnosis: d,
            confidence: round4(confidence.clamp(0.0, 1.0)),
            evidence,
            action: action_for(d),
        }
    }
}

/// The recommended action, in an operator's words.
pub fn action_for(d: Diagnosis) -> &'static str {
    match d {
        Diagnosis::Condition(c) => match c {
            Condition::GasInterference => {
                "Free gas is reaching the pump. Raise intake pressure: lower the drive frequency or \
                 choke back, check casing-gas venting and the gas separator."
            }
            Condition::GasLock => {
                "The pump is gas locked and will keep tripping on underload. Stop it, let the gas \
                 vent and the fluid level recover, restart at lower frequency; consider a gas \
                 handler or longer restart delay."
            }
            Condition::PumpOff => {
                "The pump takes more than the well gives. Lower the drive frequency (or set \
                 intake-pressure control) so intake pressure stays above its minimum; review the \
                 inflow estimate."
            }
            Condition::ClosedValve => {
                "The pump is running against a closed valve (no flow, discharge at shut-in). Stop \
                 it now and open the wellhead/flowline valve before restarting."
            }
            Condition::TubingLeak => {
                "Head was lost suddenly while the pump still loads the motor: a hole in the tubing \
                 is likely. Confirm with a tubing pressure test; plan a workover."
            }
            Condition::BrokenShaft => {
                "The motor runs unloaded and steady with no flow: the shaft is likely broken. Stop \
                 the pump (restarts will not help) and plan a pull."
            }
            Condition::PumpWear => {
                "The pump is producing less head than its curve over days: wear. Re-check the \
                 operating point, plan a replacement and adjust frequency to hold production."
            }
            Condition::ScalePlugging => {
                "Head is falling while the motor runs hotter: scale or plugging. Schedule a scale \
                 treatment (acid/inhibitor) before cooling is lost."
            }
            Condition::Overload => {
                "The motor draws more than its nameplate allows at this frequency. Check for \
                 sand, emulsion or heavy fluid and the supply voltage; reduce frequency."
            }
            Condition::MotorOverheat => {
                "The motor winding runs hotter than its load explains: cooling flow is lost. \
                 Reduce load and check flow past the motor; stop before the winding limit."
            }
            Condition::PowerFluctuation => {
                "The supply voltage swings and the current follows it. Check the utility feed \
                 and the drive's input; look at neighbouring wells on the same line."
            }
            Condition::SensorFault => {
                "A gauge channel is stuck, spiking or dropping out while the others are \
                 consistent. Trust the other channels; schedule the gauge or its link for repair."
            }
        },
        Diagnosis::Anomaly => {
            "The pump behaves unlike its own healthy baseline but matches no known pattern. \
             Review the highlighted channels with a production engineer."
        }
    }
}

#[cfg(test)]
mod vocabulary_tests {
    use super::*;

    #[test]
    fn diagnosis_and_severity_names_round_trip_through_serde() {
        let all = Condition::ALL
            .into_iter()
            .map(Diagnosis::Condition)
            .chain([Diagnosis::Anomaly]);
        for d in all {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.name()));
            assert_eq!(serde_json::from_str::<Diagnosis>(&json).unwrap(), d);
            assert_eq!(d.name().parse::<Diagnosis>(), Ok(d));
        }
        assert!("Gas_Lock".parse::<Diagnosis>().is_err());
        assert!(serde_json::from_str::<Diagnosis>("\"gas-lock\"").is_err());
        for s in Severity::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.name()));
            assert_eq!(serde_json::from_str::<Severity>(&json).unwrap(), s);
        }
        assert!(Severity::Minor < Severity::Major && Severity::Major < Severity::Critical);
        assert!("severe".parse::<Severity>().is_err());
    }
}
