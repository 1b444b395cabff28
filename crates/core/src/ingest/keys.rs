//! The key vocabulary accepted on input: canonical names plus the legacy SCADA aliases.
//!
//! One table (a `match`, which rustc compiles to length + byte comparisons) serves JSON keys
//! and CSV header names alike, so both formats accept exactly the same names.

use crate::telemetry::Field;

/// What an input key feeds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    WellId,
    Ts,
    Measurement(Field),
    /// A legacy key that carries nothing espwatch stores; accepted and dropped with a warning.
    Ignored(IgnoredKey),
}

/// A recognised input key.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    /// The key exactly as accepted (`"pip"`, `"intake_pressure_psi"`), for messages.
    pub name: &'static str,
    pub target: Target,
}

impl Key {
    /// Canonical name of what this key feeds: the name errors are reported under, so clients
    /// see one stable name per channel whichever alias they sent.
    pub fn canonical(self) -> &'static str {
        match self.target {
            Target::WellId => "well_id",
            Target::Ts => "ts",
            Target::Measurement(f) => f.name(),
            Target::Ignored(k) => k.name(),
        }
    }

    /// True when the key is a legacy alias rather than the canonical name.
    pub fn is_alias(self) -> bool {
        self.name != self.canonical()
    }
}

/// Legacy keys that are accepted but not stored.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum IgnoredKey {
    FlowVariance,
    Torque,
    Rpm,
    Pressure,
}

impl IgnoredKey {
    pub const ALL: [IgnoredKey; 4] = [
        IgnoredKey::FlowVariance,
        IgnoredKey::Torque,
        IgnoredKey::Rpm,
        IgnoredKey::Pressure,
    ];

    pub fn name(self) -> &'static str {
        match self {
            IgnoredKey::FlowVariance => "flow_variance",
            IgnoredKey::Torque => "torque",
            IgnoredKey::Rpm => "rpm",
            IgnoredKey::Pressure => "pressure",
        }
    }

    /// Bit of this key in a per-reading "ignored keys seen" mask.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// Looks an input key up. Case-sensitive: keys are identifiers, not prose.
pub(crate) fn lookup(name: &str) -> Option<Key> {
    use Field::*;
    use Target::Measurement as M;
    let (name, target): (&'static str, Target) = match name {
        // Canonical model.
        "well_id" => ("well_id", Target::WellId),
        "ts" => ("ts", Target::Ts),
        "frequency_hz" => ("frequency_hz", M(FrequencyHz)),
        "motor_current_a" => ("motor_current_a", M(MotorCurrentA)),
        "motor_voltage_v" => ("motor_voltage_v", M(MotorVoltageV)),
        "intake_pressure_psi" => ("intake_pressure_psi", M(IntakePressurePsi)),
        "discharge_pressure_psi" => ("discharge_pressure_psi", M(DischargePressurePsi)),
        "tubing_pressure_psi" => ("tubing_pressure_psi", M(TubingPressurePsi)),
        "intake_temp_c" => ("intake_temp_c", M(IntakeTempC)),
        "motor_temp_c" => ("motor_temp_c", M(MotorTempC)),
        "vibration_x_g" => ("vibration_x_g", M(VibrationXG)),
        "vibration_y_g" => ("vibration_y_g", M(VibrationYG)),
        "flow_rate_bpd" => ("flow_rate_bpd", M(FlowRateBpd)),
        "gor_scf_bbl" => ("gor_scf_bbl", M(GorScfBbl)),
        "water_cut_pct" => ("water_cut_pct", M(WaterCutPct)),
        // Legacy payload of the old platform's SCADA clients. Units were already the canonical
        // ones there, so aliases map one-to-one without conversion.
        "device_id" => ("device_id", Target::WellId),
        "timestamp" => ("timestamp", Target::Ts),
        "pip" => ("pip", M(IntakePressurePsi)),
        "intake_pressure" => ("intake_pressure", M(IntakePressurePsi)),
        "discharge_pressure" => ("discharge_pressure", M(DischargePressurePsi)),
        "motor_current" => ("motor_current", M(MotorCurrentA)),
        "motor_temp" => ("motor_temp", M(MotorTempC)),
        "temperature" => ("temperature", M(MotorTempC)),
        "vibration" => ("vibration", M(VibrationXG)),
        "vsd_frequency" => ("vsd_frequency", M(FrequencyHz)),
        "flow_rate" => ("flow_rate", M(FlowRateBpd)),
        "gor" => ("gor", M(GorScfBbl)),
        "flow_variance" => ("flow_variance", Target::Ignored(IgnoredKey::FlowVariance)),
        "torque" => ("torque", Target::Ignored(IgnoredKey::Torque)),
        "rpm" => ("rpm", Target::Ignored(IgnoredKey::Rpm)),
        "pressure" => ("pressure", Target::Ignored(IgnoredKey::Pressure)),
        _ => return None,
    };
    Some(Key { name, target })
}

/// Canonical names only: what we suggest to a client that sent an unknown key. Legacy aliases
/// are deliberately not suggested; new clients should not start using them.
fn canonical_names() -> impl Iterator<Item = &'static str> {
    ["well_id", "ts"]
        .into_iter()
        .chain(Field::ALL.into_iter().map(Field::name))
}

/// The reason given for an unknown key: a "did you mean" when a canonical name is close
/// (typo, wrong case, unit suffix forgotten), otherwise a short pointer to the vocabulary.
/// Kept short because a batch with one bad key repeats it in every rejection.
pub(crate) fn unknown_key_reason(key: &str) -> String {
    match suggest(key) {
        Some(name) => format!("unknown field; did you mean '{name}'?"),
        None => "unknown field; expected well_id, ts or a canonical measurement name such as \
                 motor_current_a"
            .to_owned(),
    }
}

fn suggest(key: &str) -> Option<&'static str> {
    // Cheap guard: suggestions are for plausible identifiers, not for arbitrary junk.
    if key.is_empty() || key.len() > 40 {
        return None;
    }
    let lower = key.to_ascii_lowercase();
    canonical_names()
        .filter_map(|name| {
            let d = if name == lower {
                0
            } else if name.starts_with(lower.as_str()) && lower.len() >= 3 {
                // "motor_current" style: the unit suffix is missing.
                1
            } else {
                levenshtein(&lower, name)
            };
            (d <= 2).then_some((d, name))
        })
        .min_by_key(|&(d, _)| d)
        .map(|(_, name)| name)
}

/// Edit distance on bytes; inputs are at most a few dozen bytes (guarded by the caller).
fn levenshtein(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, &ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_canonical_name_is_accepted_as_itself() {
        for name in canonical_names() {
            let key = lookup(name).expect(name);
            assert_eq!(key.name, name);
            assert_eq!(key.canonical(), name);
            assert!(!key.is_alias());
        }
    }

    #[test]
    fn legacy_aliases_map_to_canonical_fields() {
        let cases = [
            ("device_id", "well_id"),
            ("timestamp", "ts"),
            ("pip", "intake_pressure_psi"),
            ("intake_pressure", "intake_pressure_psi"),
            ("discharge_pressure", "discharge_pressure_psi"),
            ("motor_current", "motor_current_a"),
            ("motor_temp", "motor_temp_c"),
            ("temperature", "motor_temp_c"),
            ("vibration", "vibration_x_g"),
            ("vsd_frequency", "frequency_hz"),
            ("flow_rate", "flow_rate_bpd"),
            ("gor", "gor_scf_bbl"),
        ];
        for (alias, canonical) in cases {
            let key = lookup(alias).expect(alias);
            assert_eq!(key.canonical(), canonical, "{alias}");
            assert!(key.is_alias());
        }
        for ignored in IgnoredKey::ALL {
            assert_eq!(
                lookup(ignored.name()).map(|k| k.target),
                Some(Target::Ignored(ignored))
            );
        }
        assert_eq!(lookup("Well_ID"), None);
    }

    #[test]
    fn suggestions_catch_typos_case_and_missing_units() {
        assert_eq!(suggest("Well_ID"), Some("well_id"));
        assert_eq!(suggest("motor_curent_a"), Some("motor_current_a"));
        assert_eq!(suggest("water_cut"), Some("water_cut_pct"));
        assert_eq!(suggest("colour"), None);
        assert_eq!(suggest(""), None);
    }
}
