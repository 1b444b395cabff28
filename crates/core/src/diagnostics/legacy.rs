//! The old platform's symptom decision tree (`POST /api/v1/diagnostics/decision_tree`), kept so
//! its clients keep working. It judges operator-reported symptoms, not telemetry; the streaming
//! engine is the real diagnosis.

use serde::{Deserialize, Serialize};

use crate::condition::Condition;

use super::{Diagnosis, action_for};

/// The legacy request body. Unknown keys (and `telemetry`) are accepted and ignored.
#[derive(Clone, Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SymptomRequest {
    pub well_id: Option<String>,
    /// Is the produced flow steady?
    pub flow_stable: Option<bool>,
    pub production_below_target: Option<bool>,
    /// Is the pump intake pressure low (near or below the bubble point / minimum)?
    pub pip_low: Option<bool>,
    /// "none", "low", "medium" or "high".
    pub flow_level: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub telemetry: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LegacyDiagnosis {
    /// The old platform's label, e.g. "Free Gas Lock".
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub confidence: f64,
    /// The condition in espwatch's vocabulary, when there is one.
    pub condition: Option<&'static str>,
    pub recommended_action: &'static str,
    /// The branches taken, in order.
    pub rationale: Vec<String>,
}

/// Walks the tree. Unknown symptoms take the conservative branch and lower the confidence.
pub fn decide(req: &SymptomRequest) -> LegacyDiagnosis {
    let mut why = Vec::new();
    let unknown = [
        req.flow_stable.is_none(),
        req.production_below_target.is_none(),
        req.pip_low.is_none(),
    ]
    .iter()
    .filter(|u| **u)
    .count() as f64;
    let stable = req.flow_stable.unwrap_or(true);
    let below = req.production_below_target.unwrap_or(false);
    let pip_low = req.pip_low.unwrap_or(false);
    let level = req
        .flow_level
        .as_deref()
        .unwrap_or("medium")
        .to_ascii_lowercase();
    let (kind, condition, confidence) = if matches!(level.as_str(), "none" | "zero") {
        why.push("no flow at the surface".to_owned());
        if pip_low {
            why.push("intake pressure low: the well is pumped off".to_owned());
            ("Pump Off", Some(Condition::PumpOff), 0.8)
        } else {
            why.push("intake pressure not low: the pump turns without lifting".to_owned());
            ("Broken Shaft", Some(Condition::BrokenShaft), 0.6)
        }
    } else if !stable {
        why.push("flow unstable".to_owned());
        if pip_low {
            why.push("intake pressure low: free gas at the intake".to_owned());
            ("Gas Interference", Some(Condition::GasInterference), 0.8)
        } else if below {
            why.push(
                "production below target with intake pressure not low: gas is locking the pump"
                    .to_owned(),
            );
            ("Free Gas Lock", Some(Condition::GasLock), 0.85)
        } else {
            why.push("production on target: slugging without harm".to_owned());
            ("Gas Slugging", Some(Condition::GasInterference), 0.6)
        }
    } else if below {
        why.push("flow stable but below target".to_owned());
        if pip_low {
            why.push("intake pressure low: inflow cannot keep up".to_owned());
            ("Pump Off", Some(Condition::PumpOff), 0.75)
        } else if level == "low" {
            why.push("intake pressure not low and flow low: the pump lost head".to_owned());
            ("Pump Wear", Some(Condition::PumpWear), 0.7)
        } else {
            why.push("intake pressure not low: check tubing integrity".to_owned());
            ("Tubing Leak", Some(Condition::TubingLeak), 0.6)
        }
    } else {
        why.push("flow stable and on target".to_owned());
        ("Normal Operation", None, 0.9)
    };
    LegacyDiagnosis {
        kind,
        confidence: (confidence - 0.1 * unknown).max(0.3),
        condition: condition.map(Condition::name),
        recommended_action: match condition {
            Some(c) => action_for(Diagnosis::Condition(c)),
            None => "No action needed; keep watching.",
        },
        rationale: why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_platforms_gas_lock_example() {
        let req: SymptomRequest = serde_json::from_value(serde_json::json!({
            "well_id": "TEST-001", "flow_stable": false, "production_below_target": true,
            "pip_low": false, "flow_level": "medium", "telemetry": {}
        }))
        .unwrap();
        let d = decide(&req);
        assert_eq!(d.kind, "Free Gas Lock");
        assert!(d.confidence > 0.8);
        assert_eq!(d.condition, Some("gas_lock"));
    }

    #[test]
    fn missing_symptoms_lower_confidence() {
        let d = decide(&SymptomRequest::default());
        assert_eq!(d.kind, "Normal Operation");
        assert!(d.confidence < 0.9);
    }
}
