//! Units a question may use and an answer may be given in. Stored values are always in the
//! channel's canonical unit (psi, °C, bbl/d, A, Hz, V, g, %, scf/bbl); a threshold is converted
//! to it before comparing, a value from it before showing.

use crate::telemetry::Field;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unit {
    Psi,
    KPa,
    MPa,
    Bar,
    DegC,
    DegF,
    Bpd,
    M3d,
    Amp,
    Hz,
    Volt,
    G,
    Pct,
    ScfBbl,
}

/// What a unit measures; channels of one quantity share their units.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Quantity {
    Pressure,
    Temperature,
    Flow,
    Current,
    Frequency,
    Voltage,
    Vibration,
    Fraction,
    GasRatio,
}

const BPD_PER_M3D: f64 = 6.289_810_770_432_105;
const PSI_PER_KPA: f64 = 0.145_037_737_730_209_2;
const PSI_PER_BAR: f64 = 14.503_773_773_020_92;
const PSI_PER_MPA: f64 = 145.037_737_730_209_2;

impl Unit {
    /// The unit's words as the tokenizer leaves them (after the number, or alone).
    pub fn from_word(word: &str) -> Option<Unit> {
        Some(match word {
            "psi" | "psig" | "psia" => Unit::Psi,
            "kpa" | "kilopascal" | "kilopascals" => Unit::KPa,
            "mpa" | "megapascal" | "megapascals" => Unit::MPa,
            "bar" | "bars" | "barg" => Unit::Bar,
            "degc" | "c" | "celsius" | "centigrade" | "deg" | "degrees" | "degree" => Unit::DegC,
            "degf" | "f" | "fahrenheit" => Unit::DegF,
            "bpd" | "bbl" | "bbls" | "barrels" | "bfpd" | "blpd" | "bopd" => Unit::Bpd,
            "m3d" | "m3" | "sm3" => Unit::M3d,
            "a" | "amp" | "amps" | "ampere" | "amperes" => Unit::Amp,
            "hz" | "hertz" => Unit::Hz,
            "v" | "volt" | "volts" => Unit::Volt,
            "g" | "grms" => Unit::G,
            "%" | "percent" | "pct" => Unit::Pct,
            "scfbbl" | "scf" => Unit::ScfBbl,
            _ => return None,
        })
    }

    pub fn quantity(self) -> Quantity {
        match self {
            Unit::Psi | Unit::KPa | Unit::MPa | Unit::Bar => Quantity::Pressure,
            Unit::DegC | Unit::DegF => Quantity::Temperature,
            Unit::Bpd | Unit::M3d => Quantity::Flow,
            Unit::Amp => Quantity::Current,
            Unit::Hz => Quantity::Frequency,
            Unit::Volt => Quantity::Voltage,
            Unit::G => Quantity::Vibration,
            Unit::Pct => Quantity::Fraction,
            Unit::ScfBbl => Quantity::GasRatio,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Psi => "psi",
            Unit::KPa => "kPa",
            Unit::MPa => "MPa",
            Unit::Bar => "bar",
            Unit::DegC => "°C",
            Unit::DegF => "°F",
            Unit::Bpd => "bbl/d",
            Unit::M3d => "m³/d",
            Unit::Amp => "A",
            Unit::Hz => "Hz",
            Unit::Volt => "V",
            Unit::G => "g",
            Unit::Pct => "%",
            Unit::ScfBbl => "scf/bbl",
        }
    }

    /// Canonical name in an interpretation (`psi`, `kpa`, `degf`, `m3d`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Psi => "psi",
            Unit::KPa => "kpa",
            Unit::MPa => "mpa",
            Unit::Bar => "bar",
            Unit::DegC => "degc",
            Unit::DegF => "degf",
            Unit::Bpd => "bpd",
            Unit::M3d => "m3d",
            Unit::Amp => "a",
            Unit::Hz => "hz",
            Unit::Volt => "v",
            Unit::G => "g",
            Unit::Pct => "pct",
            Unit::ScfBbl => "scf_bbl",
        }
    }

    pub fn from_name(name: &str) -> Option<Unit> {
        ALL.into_iter().find(|u| u.name() == name)
    }

    /// A value in this unit, in the canonical unit of its quantity.
    pub fn to_canonical(self, v: f64) -> f64 {
        match self {
            Unit::KPa => v * PSI_PER_KPA,
            Unit::MPa => v * PSI_PER_MPA,
            Unit::Bar => v * PSI_PER_BAR,
            Unit::DegF => (v - 32.0) * 5.0 / 9.0,
            Unit::M3d => v * BPD_PER_M3D,
            _ => v,
        }
    }

    /// A canonical value, in this unit.
    pub fn from_canonical(self, v: f64) -> f64 {
        match self {
            Unit::KPa => v / PSI_PER_KPA,
            Unit::MPa => v / PSI_PER_MPA,
            Unit::Bar => v / PSI_PER_BAR,
            Unit::DegF => v * 9.0 / 5.0 + 32.0,
            Unit::M3d => v / BPD_PER_M3D,
            _ => v,
        }
    }

    /// The unit a channel is stored in.
    pub fn canonical_of(field: Field) -> Unit {
        match field {
            Field::FrequencyHz => Unit::Hz,
            Field::MotorCurrentA => Unit::Amp,
            Field::MotorVoltageV => Unit::Volt,
            Field::IntakePressurePsi | Field::DischargePressurePsi | Field::TubingPressurePsi => {
                Unit::Psi
            }
            Field::IntakeTempC | Field::MotorTempC => Unit::DegC,
            Field::VibrationXG | Field::VibrationYG => Unit::G,
            Field::FlowRateBpd => Unit::Bpd,
            Field::GorScfBbl => Unit::ScfBbl,
            Field::WaterCutPct => Unit::Pct,
        }
    }
}

pub const ALL: [Unit; 14] = [
    Unit::Psi,
    Unit::KPa,
    Unit::MPa,
    Unit::Bar,
    Unit::DegC,
    Unit::DegF,
    Unit::Bpd,
    Unit::M3d,
    Unit::Amp,
    Unit::Hz,
    Unit::Volt,
    Unit::G,
    Unit::Pct,
    Unit::ScfBbl,
];

/// The quantity a channel measures.
pub fn quantity_of(field: Field) -> Quantity {
    Unit::canonical_of(field).quantity()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        for u in ALL {
            for v in [-40.0, 0.0, 12.5, 2000.0] {
                let back = u.from_canonical(u.to_canonical(v));
                assert!((back - v).abs() < 1e-9, "{u:?} {v} {back}");
            }
        }
        assert!((Unit::KPa.to_canonical(2000.0) - 290.075_5).abs() < 1e-3);
        assert!((Unit::Bar.to_canonical(30.0) - 435.113_2).abs() < 1e-3);
        assert!((Unit::MPa.to_canonical(5.0) - 725.188_7).abs() < 1e-3);
        assert!((Unit::DegF.to_canonical(212.0) - 100.0).abs() < 1e-9);
        assert!((Unit::M3d.to_canonical(100.0) - 628.981).abs() < 1e-3);
    }
}
