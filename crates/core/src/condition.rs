//! The condition vocabulary shared by the simulator's ground truth, the diagnostics engine and
//! the alarms API. Names are the primer's, spelled exactly as they appear in files and JSON.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One abnormal pump condition. The absence of all of them is normal operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    GasInterference,
    GasLock,
    PumpOff,
    ClosedValve,
    TubingLeak,
    BrokenShaft,
    PumpWear,
    ScalePlugging,
    Overload,
    MotorOverheat,
    PowerFluctuation,
    SensorFault,
}

/// How a condition develops in time; the simulator schedules them differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Onset {
    /// Starts at one moment (a broken shaft, a closed valve).
    Abrupt,
    /// Develops over days (wear, scale).
    Gradual,
}

impl Condition {
    pub const ALL: [Condition; 12] = [
        Condition::GasInterference,
        Condition::GasLock,
        Condition::PumpOff,
        Condition::ClosedValve,
        Condition::TubingLeak,
        Condition::BrokenShaft,
        Condition::PumpWear,
        Condition::ScalePlugging,
        Condition::Overload,
        Condition::MotorOverheat,
        Condition::PowerFluctuation,
        Condition::SensorFault,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::GasInterference => "gas_interference",
            Condition::GasLock => "gas_lock",
            Condition::PumpOff => "pump_off",
            Condition::ClosedValve => "closed_valve",
            Condition::TubingLeak => "tubing_leak",
            Condition::BrokenShaft => "broken_shaft",
            Condition::PumpWear => "pump_wear",
            Condition::ScalePlugging => "scale_plugging",
            Condition::Overload => "overload",
            Condition::MotorOverheat => "motor_overheat",
            Condition::PowerFluctuation => "power_fluctuation",
            Condition::SensorFault => "sensor_fault",
        }
    }

    pub fn from_name(name: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.name() == name)
    }

    pub fn onset(self) -> Onset {
        match self {
            Condition::PumpWear | Condition::ScalePlugging => Onset::Gradual,
            _ => Onset::Abrupt,
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Condition::from_name(s).ok_or_else(|| {
            let known: Vec<&str> = Condition::ALL.iter().map(|c| c.name()).collect();
            format!("unknown condition `{s}`; known: {}", known.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for c in Condition::ALL {
            assert_eq!(Condition::from_name(c.name()), Some(c));
            assert_eq!(
                serde_json::to_string(&c).unwrap(),
                format!("\"{}\"", c.name())
            );
        }
        assert!("gas-lock".parse::<Condition>().is_err());
    }
}
