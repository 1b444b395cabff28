//! The wells registry entry: what espwatch knows about a well besides its telemetry.
//!
//! Everything except `well_id` is optional, so a well auto-registered from its first reading is
//! valid; diagnostics that need a pump curve simply skip wells that lack one.

use serde::{Deserialize, Serialize};

use crate::telemetry::WellId;

/// Metadata of one registered well, validated: what the store files and the engine reads.
/// Field names carry their units. Made by [`WellDocument::validate`] from what a client sent,
/// by [`WellMeta::minimal`] for a well registered from its first reading, or read back from
/// the store (where only validated documents were filed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WellMeta {
    /// Unique id, 1–64 characters of `A-Za-z0-9._-`; the key telemetry is filed under.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub well_id: WellId,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Oil field or asset the well belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pump: Option<PumpSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motor: Option<MotorSpec>,
    /// Pump setting depth, feet (measured depth of the pump intake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting_depth_ft: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fluid: Option<FluidSpec>,
    /// How often the well is expected to report, seconds (0.1–86 400): the reference of the
    /// data-quality completeness. Without it the median spacing of its readings is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval_s: Option<f64>,
    /// The zone of the well's local clock, as a fixed UTC offset (`+03:00`, `-05:30`, `UTC`):
    /// the zone of its naive timestamps (`2026-11-22 08:01:00`, as historians export them)
    /// when the sender declares none. Named zones (`Europe/Berlin`) are refused: their
    /// daylight-saving changes skip and repeat local hours, which cannot be resolved without
    /// a time-zone database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// The wells-registry document as a client sends it (`POST`/`PUT /api/v1/wells`,
/// `espwatch wells import`): the same fields as [`WellMeta`], none of them checked yet, the id
/// still text. [`WellDocument::validate`] turns it into a [`WellMeta`] or lists every problem.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WellDocument {
    /// Unique id, 1–64 characters of `A-Za-z0-9._-`, starting with a letter or a digit.
    pub well_id: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Oil field or asset the well belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pump: Option<PumpSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub motor: Option<MotorSpec>,
    /// Pump setting depth, feet (measured depth of the pump intake).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting_depth_ft: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fluid: Option<FluidSpec>,
    /// How often the well is expected to report, seconds (0.1–86 400): the reference of the
    /// data-quality completeness. Without it the median spacing of its readings is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_interval_s: Option<f64>,
    /// The zone of the well's local clock, as a fixed UTC offset (`+03:00`, `-05:30`, `UTC`):
    /// the zone of its naive timestamps (`2026-11-22 08:01:00`, as historians export them)
    /// when the sender declares none. Named zones (`Europe/Berlin`) are refused: their
    /// daylight-saving changes skip and repeat local hours, which cannot be resolved without
    /// a time-zone database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// WGS 84 position of the wellhead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Location {
    /// Latitude, degrees, −90..=90.
    pub lat: f64,
    /// Longitude, degrees, −180..=180.
    pub lon: f64,
}

/// The installed pump.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PumpSpec {
    /// Catalog model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Number of stages, 1..=1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<u32>,
    /// Frequency the catalog curve is published at: 50 or 60 Hz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_frequency_hz: Option<f64>,
    /// Per-stage catalog curve at base frequency, strictly increasing flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stage_curve: Vec<CurvePoint>,
    /// Lower edge of the recommended operating range at base frequency, bbl/d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_flow_bpd: Option<f64>,
    /// Upper edge of the recommended operating range at base frequency, bbl/d.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flow_bpd: Option<f64>,
}

/// One point of a per-stage pump curve at base frequency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CurvePoint {
    /// Flow, bbl/d, ≥ 0.
    pub flow_bpd: f64,
    /// Head per stage, feet, ≥ 0.
    pub head_ft: f64,
    /// Brake horsepower per stage, hp, ≥ 0.
    pub bhp: f64,
}

/// Motor nameplate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MotorSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_hp: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_voltage_v: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rated_current_a: Option<f64>,
    /// Winding temperature limit, °C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_winding_temp_c: Option<f64>,
}

/// Produced fluid properties.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FluidSpec {
    /// Specific gravity of the produced liquid (water = 1), 0.5..=2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub specific_gravity: Option<f64>,
    /// Bubble point pressure, psi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bubble_point_psi: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gor_scf_bbl: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub water_cut_pct: Option<f64>,
}

/// One problem found in well metadata: the JSON path of the field and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetaProblem {
    pub field: String,
    pub reason: String,
}

impl WellMeta {
    /// Minimal metadata for a well registered automatically from its first reading.
    pub fn minimal(id: &WellId) -> WellMeta {
        WellMeta {
            well_id: id.clone(),
            name: None,
            field: None,
            location: None,
            pump: None,
            motor: None,
            setting_depth_ft: None,
            fluid: None,
            sample_interval_s: None,
            timezone: None,
        }
    }

    /// The registry zone of the well's naive timestamps, when it has a valid one.
    pub fn zone(&self) -> Option<crate::localtime::UtcOffset> {
        self.timezone
            .as_deref()
            .and_then(|z| crate::localtime::UtcOffset::parse(z).ok())
    }
}

impl WellDocument {
    /// Checks every field and gives the validated [`WellMeta`]; returns all problems at once so
    /// a user fixes a file in one go (a bad id is the problem of field `well_id`, its reason
    /// the [`crate::telemetry::WellIdError`]'s text).
    pub fn validate(self) -> Result<WellMeta, Vec<MetaProblem>> {
        let problems = self.problems();
        match WellId::parse_new(&self.well_id) {
            Ok(well_id) if problems.is_empty() => Ok(WellMeta {
                well_id,
                name: self.name,
                field: self.field,
                location: self.location,
                pump: self.pump,
                motor: self.motor,
                setting_depth_ft: self.setting_depth_ft,
                fluid: self.fluid,
                sample_interval_s: self.sample_interval_s,
                timezone: self.timezone,
            }),
            _ => Err(problems),
        }
    }

    /// Every problem of the document, in field order.
    fn problems(&self) -> Vec<MetaProblem> {
        // A RefCell so that `bad` is a plain `Fn` that `range` below can share.
        let problems = std::cell::RefCell::new(Vec::new());
        let bad = |field: &str, reason: String| {
            problems.borrow_mut().push(MetaProblem {
                field: field.to_owned(),
                reason,
            })
        };
        if let Err(e) = WellId::parse_new(&self.well_id) {
            bad("well_id", e.to_string());
        }
        for (name, text) in [("name", &self.name), ("field", &self.field)] {
            if let Some(t) = text
                && (t.trim().is_empty() || t.chars().count() > 200)
            {
                bad(name, "must be 1–200 characters".into());
            }
        }
        let range = |field: &str, v: Option<f64>, min: f64, max: f64| {
            if let Some(v) = v
                && (!v.is_finite() || v < min || v > max)
            {
                bad(field, format!("{v} is outside {min}..={max}"));
            }
        };
        if let Some(loc) = &self.location {
            range("location.lat", Some(loc.lat), -90.0, 90.0);
            range("location.lon", Some(loc.lon), -180.0, 180.0);
        }
        if let Some(zone) = &self.timezone {
            if zone.trim() != zone || zone.is_empty() {
                bad(
                    "timezone",
                    format!("{zone:?} is not a UTC offset (expected e.g. +03:00, -05:30 or UTC)"),
                );
            } else if let Err(e) = crate::localtime::UtcOffset::parse(zone) {
                bad(
                    "timezone",
                    format!(
                        "{e}; only fixed UTC offsets are accepted, because local times in a zone \
                         with daylight saving can be skipped or repeated and there is no \
                         time-zone database here to resolve them"
                    ),
                );
            }
        }
        range("setting_depth_ft", self.setting_depth_ft, 0.0, 40_000.0);
        range("sample_interval_s", self.sample_interval_s, 0.1, 86_400.0);
        if let Some(m) = &self.motor {
            range("motor.rated_hp", m.rated_hp, 1.0, 5_000.0);
            range("motor.rated_voltage_v", m.rated_voltage_v, 100.0, 10_000.0);
            range("motor.rated_current_a", m.rated_current_a, 1.0, 1_500.0);
            range(
                "motor.max_winding_temp_c",
                m.max_winding_temp_c,
                50.0,
                260.0,
            );
        }
        if let Some(f) = &self.fluid {
            range("fluid.specific_gravity", f.specific_gravity, 0.5, 2.0);
            range("fluid.bubble_point_psi", f.bubble_point_psi, 0.0, 20_000.0);
            range("fluid.gor_scf_bbl", f.gor_scf_bbl, 0.0, 100_000.0);
            range("fluid.water_cut_pct", f.water_cut_pct, 0.0, 100.0);
        }
        if let Some(p) = &self.pump {
            if let Some(s) = p.stages
                && !(1..=1000).contains(&s)
            {
                bad("pump.stages", format!("{s} is outside 1..=1000"));
            }
            if let Some(f) = p.base_frequency_hz
                && f != 50.0
                && f != 60.0
            {
                bad("pump.base_frequency_hz", format!("{f} must be 50 or 60"));
            }
            range("pump.min_flow_bpd", p.min_flow_bpd, 0.0, 200_000.0);
            range("pump.max_flow_bpd", p.max_flow_bpd, 0.0, 200_000.0);
            if let (Some(lo), Some(hi)) = (p.min_flow_bpd, p.max_flow_bpd)
                && lo >= hi
            {
                bad(
                    "pump.max_flow_bpd",
                    "must be greater than min_flow_bpd".into(),
                );
            }
            if !p.stage_curve.is_empty() && p.stage_curve.len() < 2 {
                bad("pump.stage_curve", "needs at least 2 points".into());
            }
            let mut prev_flow = f64::NEG_INFINITY;
            for (i, pt) in p.stage_curve.iter().enumerate() {
                range(
                    &format!("pump.stage_curve[{i}].flow_bpd"),
                    Some(pt.flow_bpd),
                    0.0,
                    200_000.0,
                );
                range(
                    &format!("pump.stage_curve[{i}].head_ft"),
                    Some(pt.head_ft),
                    0.0,
                    1_000.0,
                );
                range(
                    &format!("pump.stage_curve[{i}].bhp"),
                    Some(pt.bhp),
                    0.0,
                    100.0,
                );
                if pt.flow_bpd <= prev_flow {
                    bad(
                        &format!("pump.stage_curve[{i}].flow_bpd"),
                        "flow must be strictly increasing along the curve".into(),
                    );
                }
                prev_flow = pt.flow_bpd;
            }
        }
        problems.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_example_validates() {
        let json = r#"{"well_id":"W-1","name":"North 1","field":"Alpha",
            "location":{"lat":29.7,"lon":-95.3},
            "pump":{"model":"D1050N","stages":120,"base_frequency_hz":60,
              "stage_curve":[{"flow_bpd":0,"head_ft":30,"bhp":0.2},{"flow_bpd":1000,"head_ft":25,"bhp":0.3}],
              "min_flow_bpd":700,"max_flow_bpd":1300},
            "motor":{"rated_hp":150,"rated_voltage_v":2300,"rated_current_a":40,"max_winding_temp_c":200},
            "setting_depth_ft":6500,
            "fluid":{"specific_gravity":0.95,"bubble_point_psi":1200,"gor_scf_bbl":400,"water_cut_pct":60}}"#;
        let doc: WellDocument = serde_json::from_str(json).unwrap();
        let meta = doc.validate().unwrap();
        assert_eq!(meta.well_id.as_str(), "W-1");
        assert_eq!(meta.pump.unwrap().stages, Some(120));
    }

    #[test]
    fn problems_are_all_reported_with_paths() {
        let json = r#"{"well_id":"bad id","location":{"lat":91,"lon":0},
            "pump":{"base_frequency_hz":55,"stage_curve":[{"flow_bpd":10,"head_ft":30,"bhp":0.2},{"flow_bpd":5,"head_ft":25,"bhp":0.3}]}}"#;
        let doc: WellDocument = serde_json::from_str(json).unwrap();
        let problems = doc.validate().unwrap_err();
        let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            problems[0],
            MetaProblem {
                field: "well_id".into(),
                reason: "may only contain A-Z, a-z, 0-9, '.', '_' and '-' (found ' ')".into(),
            }
        );
        assert!(fields.contains(&"location.lat"));
        assert!(fields.contains(&"pump.base_frequency_hz"));
        assert!(fields.contains(&"pump.stage_curve[1].flow_bpd"));
    }

    #[test]
    fn timezone_is_a_fixed_offset() {
        let meta = |z: &str| WellDocument {
            well_id: "W-1".into(),
            timezone: Some(z.into()),
            ..WellDocument::default()
        };
        let valid = meta("+03:00").validate().unwrap();
        assert_eq!(valid.zone().map(|z| z.seconds()), Some(10_800));
        assert!(meta("-05:30").validate().is_ok());
        assert!(meta("UTC").validate().is_ok());
        for bad in ["Europe/Berlin", "+25:00", "", " +03:00"] {
            let problems = meta(bad).validate().unwrap_err();
            assert_eq!(problems[0].field, "timezone", "{bad:?}");
        }
        let problems = meta("Europe/Berlin").validate().unwrap_err();
        assert!(
            problems[0].reason.contains("fixed UTC offsets"),
            "{problems:?}"
        );
        assert!(
            problems[0].reason.contains("daylight saving"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(serde_json::from_str::<WellDocument>(r#"{"well_id":"A","colour":"red"}"#).is_err());
        assert!(serde_json::from_str::<WellMeta>(r#"{"well_id":"A","colour":"red"}"#).is_err());
    }

    /// Only a document whose id is a new well id becomes a `WellMeta`; a registry entry read back
    /// takes the stored id as the lenient `WellId::parse` does, so wells named before the
    /// first-character rule stay readable, and an entry with no well id at all is an error.
    #[test]
    fn a_bad_id_is_one_precise_problem_and_stored_ids_read_leniently() {
        for (id, reason) in [
            ("", "must not be empty"),
            (".hidden", "must start with a letter or a digit (found '.')"),
            (
                "W/1",
                "may only contain A-Z, a-z, 0-9, '.', '_' and '-' (found '/')",
            ),
        ] {
            let doc = WellDocument {
                well_id: id.into(),
                ..WellDocument::default()
            };
            let problems = doc.validate().unwrap_err();
            assert_eq!(
                problems,
                vec![MetaProblem {
                    field: "well_id".into(),
                    reason: reason.into()
                }],
                "{id:?}"
            );
        }
        let old: WellMeta = serde_json::from_str(r#"{"well_id":"_old","name":"before"}"#).unwrap();
        assert_eq!(old.well_id.as_str(), "_old");
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            r#"{"well_id":"_old","name":"before"}"#
        );
        assert!(serde_json::from_str::<WellMeta>(r#"{"well_id":"W/1"}"#).is_err());
    }
}
