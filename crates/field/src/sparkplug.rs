//! Sparkplug B over MQTT: `spBv1.0/{group}/{NBIRTH|NDATA|NDEATH|DBIRTH|DDATA|DDEATH}/{edge}[/{device}]`
//! with protobuf payloads.
//!
//! - The payload structs are hand-written `prost` messages holding the fields of the published
//!   `sparkplug_b.proto` that telemetry needs (tags as in the schema; datasets, templates,
//!   metadata and properties are skipped as unknown fields), so the build needs no `protoc`.
//! - A device is a well (its id must be a valid well id). Metric names map to channels by the
//!   configured table, then by a default table of common drive and gauge tags; births carry
//!   each metric's alias, and data messages may then send aliases only. Values are taken in
//!   the canonical units.
//! - Each edge node numbers its messages 0–255 from its NBIRTH; a gap is logged and counted.
//!   A DDATA from a device without a DBIRTH since its node's NBIRTH, or naming an alias no
//!   birth defined, triggers a rebirth request (NCMD `Node Control/Rebirth`), as the
//!   specification asks.
//! - A message's mapped metrics become readings (one per timestamp) decoded by the same core
//!   decoder as HTTP, so every range check and rejection is the same.
//! - Births and deaths are the wells' connectivity ([`Interpreted::presence`]): a DBIRTH puts
//!   its device online; its DDEATH, or its node's NDEATH (usually the MQTT will the broker
//!   publishes when the edge node's connection is lost), puts it offline, and so does a new
//!   NBIRTH for the devices of the node's previous session (they are online again with their
//!   DBIRTHs, which follow). An NDEATH whose `bdSeq` is not that of the node's last NBIRTH is
//!   the will of an earlier connection and changes nothing, as the specification says.

use std::collections::{BTreeMap, HashMap, HashSet};

use espwatch_core::Field;
use prost::Message;
use serde_json::{Map, Value};

/// `Payload` of `sparkplug_b.proto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// Milliseconds since the Unix epoch.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// 0–255, per edge node.
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// `Payload.Metric` of `sparkplug_b.proto` (metadata, properties, datasets, templates and
/// extensions are not read).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// Milliseconds since the Unix epoch.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// The scalar members of `Metric.value`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    #[prost(float, tag = "12")]
    FloatValue(f32),
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    #[prost(string, tag = "15")]
    StringValue(String),
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// Sparkplug data types (`DataType` of the schema) that carry numbers.
mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const BOOLEAN: u32 = 11;
}

impl Metric {
    /// The metric's number, by its data type (signed integers are stored as their two's
    /// complement in the unsigned fields); `None` for null, text and anything not a number.
    pub fn number(&self) -> Option<f64> {
        if self.is_null == Some(true) {
            return None;
        }
        let datatype = self.datatype.unwrap_or(0);
        match self.value.as_ref()? {
            MetricValue::IntValue(v) => Some(match datatype {
                datatype::INT8 => *v as u8 as i8 as f64,
                datatype::INT16 => *v as u16 as i16 as f64,
                datatype::INT32 => *v as i32 as f64,
                _ => *v as f64,
            }),
            MetricValue::LongValue(v) => Some(if datatype == datatype::INT64 {
                *v as i64 as f64
            } else {
                *v as f64
            }),
            MetricValue::FloatValue(v) => Some(*v as f64),
            MetricValue::DoubleValue(v) => Some(*v),
            _ => None,
        }
    }
}

/// The message types of the topic namespace.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    NBirth,
    NData,
    NDeath,
    DBirth,
    DData,
    DDeath,
    /// NCMD, DCMD, STATE: not telemetry.
    Other,
}

/// A parsed Sparkplug B topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topic<'t> {
    pub group: &'t str,
    pub kind: Kind,
    pub edge: &'t str,
    pub device: Option<&'t str>,
}

impl<'t> Topic<'t> {
    /// `spBv1.0/group/TYPE/edge[/device]`; `None` for anything else.
    pub fn parse(topic: &'t str) -> Option<Topic<'t>> {
        let mut levels = topic.split('/');
        if levels.next()? != "spBv1.0" {
            return None;
        }
        let group = levels.next()?;
        let kind = match levels.next()? {
            "NBIRTH" => Kind::NBirth,
            "NDATA" => Kind::NData,
            "NDEATH" => Kind::NDeath,
            "DBIRTH" => Kind::DBirth,
            "DDATA" => Kind::DData,
            "DDEATH" => Kind::DDeath,
            _ => Kind::Other,
        };
        let edge = levels.next()?;
        let device = levels.next();
        if levels.next().is_some() {
            return None;
        }
        let device_kind = matches!(kind, Kind::DBirth | Kind::DData | Kind::DDeath);
        if device_kind != device.is_some() && kind != Kind::Other {
            return None;
        }
        Some(Topic {
            group,
            kind,
            edge,
            device,
        })
    }
}

/// Metric names → channels: the configured table first (exact names), then the defaults,
/// matched on the name and on its last `/` segment with case and punctuation ignored.
#[derive(Clone, Debug)]
pub struct MetricMap {
    configured: HashMap<String, Field>,
    defaults: HashMap<String, Field>,
}

/// Common drive and gauge tag names (normalised: lower case, letters and digits only).
const DEFAULT_TAGS: &[(&str, Field)] = &[
    ("frequency", Field::FrequencyHz),
    ("outputfrequency", Field::FrequencyHz),
    ("drivefrequency", Field::FrequencyHz),
    ("vsdfrequency", Field::FrequencyHz),
    ("motorfrequency", Field::FrequencyHz),
    ("speedhz", Field::FrequencyHz),
    ("hz", Field::FrequencyHz),
    ("motorcurrent", Field::MotorCurrentA),
    ("outputcurrent", Field::MotorCurrentA),
    ("current", Field::MotorCurrentA),
    ("amps", Field::MotorCurrentA),
    ("motoramps", Field::MotorCurrentA),
    ("motorvoltage", Field::MotorVoltageV),
    ("outputvoltage", Field::MotorVoltageV),
    ("voltage", Field::MotorVoltageV),
    ("intakepressure", Field::IntakePressurePsi),
    ("pumpintakepressure", Field::IntakePressurePsi),
    ("pip", Field::IntakePressurePsi),
    ("dischargepressure", Field::DischargePressurePsi),
    ("pumpdischargepressure", Field::DischargePressurePsi),
    ("pdp", Field::DischargePressurePsi),
    ("tubingpressure", Field::TubingPressurePsi),
    ("wellheadpressure", Field::TubingPressurePsi),
    ("whp", Field::TubingPressurePsi),
    ("thp", Field::TubingPressurePsi),
    ("intaketemperature", Field::IntakeTempC),
    ("intaketemp", Field::IntakeTempC),
    ("motortemperature", Field::MotorTempC),
    ("motortemp", Field::MotorTempC),
    ("windingtemperature", Field::MotorTempC),
    ("vibration", Field::VibrationXG),
    ("vibrationx", Field::VibrationXG),
    ("vibx", Field::VibrationXG),
    ("vibrationy", Field::VibrationYG),
    ("viby", Field::VibrationYG),
    ("flowrate", Field::FlowRateBpd),
    ("flow", Field::FlowRateBpd),
    ("gor", Field::GorScfBbl),
    ("gasoilratio", Field::GorScfBbl),
    ("watercut", Field::WaterCutPct),
    ("bsw", Field::WaterCutPct),
];

fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl MetricMap {
    /// `configured`: metric name → canonical channel name; an unknown channel is an error.
    pub fn new(configured: &BTreeMap<String, String>) -> Result<MetricMap, String> {
        let mut table = HashMap::new();
        for (metric, channel) in configured {
            let field = Field::from_name(channel).ok_or_else(|| {
                format!("metric {metric:?}: {channel:?} is not a canonical channel name")
            })?;
            table.insert(metric.clone(), field);
        }
        let mut defaults: HashMap<String, Field> = DEFAULT_TAGS
            .iter()
            .map(|(n, f)| ((*n).to_owned(), *f))
            .collect();
        for field in Field::ALL {
            defaults.insert(normalise(field.name()), field);
        }
        Ok(MetricMap {
            configured: table,
            defaults,
        })
    }

    pub fn channel(&self, name: &str) -> Option<Field> {
        if let Some(field) = self.configured.get(name) {
            return Some(*field);
        }
        let last = name.rsplit('/').next().unwrap_or(name);
        self.defaults
            .get(&normalise(name))
            .or_else(|| self.defaults.get(&normalise(last)))
            .copied()
    }
}

/// What the consumer keeps per edge node.
#[derive(Default, Debug)]
struct Node {
    /// Set by NBIRTH, cleared by NDEATH.
    born: bool,
    last_seq: Option<u8>,
    /// Alias → metric name, from the node's and its devices' births.
    aliases: HashMap<u64, String>,
    /// Devices with a DBIRTH since the node's NBIRTH (and no DDEATH since).
    devices: HashSet<String>,
    /// Every device seen from this node since the server started (births, data, deaths): an
    /// NDEATH puts them all offline, even those whose birth came before the server started.
    known: HashSet<String>,
    /// When a rebirth was last requested (ms), so a stream of data from an unknown device
    /// asks once per [`REBIRTH_INTERVAL_MS`], not once per message.
    last_rebirth_ms: Option<u64>,
    /// The `bdSeq` metric of the last NBIRTH: the NDEATH of the same connection carries it.
    bd_seq: Option<u64>,
}

/// The birth/death sequence number metric of NBIRTH and NDEATH.
const BD_SEQ: &str = "bdSeq";

fn bd_seq(payload: &Payload) -> Option<u64> {
    payload
        .metrics
        .iter()
        .find(|m| m.name.as_deref() == Some(BD_SEQ))
        .and_then(Metric::number)
        .map(|n| n as u64)
}

/// Least time between two rebirth requests to one edge node.
const REBIRTH_INTERVAL_MS: u64 = 5_000;

/// Counters the MQTT status reports.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub seq_gaps: u64,
    pub rebirth_requests: u64,
    pub unmapped_metrics: u64,
}

/// The outcome of one Sparkplug message.
#[derive(Debug, Default)]
pub struct Interpreted {
    /// The device (= well) whose readings these are, for device messages.
    pub device: Option<String>,
    /// Readings as canonical JSON objects (`ts` as epoch seconds, channels by name), for the
    /// core decoder; empty when the message carries none.
    pub readings: Vec<Value>,
    /// Rebirth requests to publish: (topic, payload).
    pub rebirth: Option<(String, Vec<u8>)>,
    /// Metric names that map to no channel (logged once each).
    pub unmapped: Vec<String>,
    /// A sequence gap: (expected, got).
    pub gap: Option<(u8, u8)>,
    /// Connectivity changes, in order: (device, online). A DBIRTH: its device online; a
    /// DDEATH: offline; an NDEATH: offline for every device the node has spoken for; an NBIRTH
    /// starting a new session: offline for the devices born in the previous one.
    pub presence: Vec<(String, bool)>,
}

/// Per edge node state across messages.
#[derive(Default, Debug)]
pub struct State {
    nodes: HashMap<(String, String), Node>,
    pub tally: Tally,
}

impl State {
    /// Reads one message: updates births, aliases and sequence numbers, and returns the
    /// readings it carries. `Err` when the payload is not a Sparkplug B payload.
    pub fn interpret(
        &mut self,
        topic: &Topic<'_>,
        payload: &[u8],
        map: &MetricMap,
        now_ms: u64,
    ) -> Result<Interpreted, String> {
        let mut out = Interpreted {
            device: topic.device.map(str::to_owned),
            ..Interpreted::default()
        };
        if topic.kind == Kind::Other {
            return Ok(out);
        }
        let payload = Payload::decode(payload)
            .map_err(|e| format!("not a Sparkplug B protobuf payload: {e}"))?;
        let key = (topic.group.to_owned(), topic.edge.to_owned());
        let node = self.nodes.entry(key).or_default();
        let seq = payload.seq.map(|s| (s % 256) as u8);
        match topic.kind {
            Kind::NBirth => {
                let mut gone: Vec<String> = node.devices.drain().collect();
                gone.sort();
                out.presence = gone.into_iter().map(|d| (d, false)).collect();
                *node = Node {
                    born: true,
                    last_seq: seq,
                    bd_seq: bd_seq(&payload),
                    known: std::mem::take(&mut node.known),
                    ..Node::default()
                };
                learn_aliases(node, &payload);
                return Ok(out);
            }
            Kind::NDeath => {
                if let (Some(born), Some(died)) = (node.bd_seq, bd_seq(&payload))
                    && born != died
                {
                    // The will of an earlier connection, published after the new NBIRTH.
                    return Ok(out);
                }
                node.born = false;
                node.devices.clear();
                // Every device the node has spoken for since this server started: also those
                // born before it started (their data came, their birth was not seen here).
                let mut gone: Vec<String> = node.known.iter().cloned().collect();
                gone.sort();
                out.presence = gone.into_iter().map(|d| (d, false)).collect();
                return Ok(out);
            }
            _ => {}
        }
        if let (Some(seq), Some(last)) = (seq, node.last_seq) {
            let expected = last.wrapping_add(1);
            if seq != expected {
                out.gap = Some((expected, seq));
                self.tally.seq_gaps += 1;
            }
        }
        if seq.is_some() {
            node.last_seq = seq;
        }
        let device = topic.device.unwrap_or_default();
        let mut needs_rebirth = !node.born;
        match topic.kind {
            Kind::DBirth => {
                learn_aliases(node, &payload);
                node.devices.insert(device.to_owned());
                node.known.insert(device.to_owned());
                out.presence.push((device.to_owned(), true));
            }
            Kind::DDeath => {
                node.devices.remove(device);
                node.known.insert(device.to_owned());
                out.presence.push((device.to_owned(), false));
                return Ok(out);
            }
            Kind::DData => {
                needs_rebirth |= !node.devices.contains(device);
                node.known.insert(device.to_owned());
            }
            _ => {}
        }
        if topic.kind == Kind::NData {
            // Node metrics describe the gateway, not a well.
            if needs_rebirth {
                out.rebirth = rebirth_request(node, &mut self.tally, topic, now_ms);
            }
            return Ok(out);
        }
        // Device metrics → one reading per timestamp.
        let mut by_ts: BTreeMap<u64, Map<String, Value>> = BTreeMap::new();
        for metric in &payload.metrics {
            let name = match (&metric.name, metric.alias) {
                (Some(name), _) => Some(name.clone()),
                (None, Some(alias)) => node.aliases.get(&alias).cloned(),
                (None, None) => None,
            };
            let Some(name) = name else {
                // An alias no birth defined: the node must send its births again.
                needs_rebirth = true;
                continue;
            };
            let Some(field) = map.channel(&name) else {
                if metric.datatype != Some(datatype::BOOLEAN) {
                    out.unmapped.push(name);
                }
                continue;
            };
            let Some(value) = metric.number() else {
                continue;
            };
            let ts = metric.timestamp.or(payload.timestamp).unwrap_or(now_ms);
            let reading = by_ts.entry(ts).or_default();
            reading.insert(field.name().to_owned(), Value::from(value));
        }
        self.tally.unmapped_metrics += out.unmapped.len() as u64;
        for (ts, mut reading) in by_ts {
            // Epoch seconds: serialised as the shortest decimal that round-trips, i.e. the
            // milliseconds exactly, which the core decoder reads exactly.
            reading.insert("ts".into(), Value::from(ts as f64 / 1000.0));
            out.readings.push(Value::Object(reading));
        }
        if needs_rebirth {
            out.rebirth = rebirth_request(node, &mut self.tally, topic, now_ms);
        }
        Ok(out)
    }
}

/// The NCMD asking an edge node to send its births again (`Node Control/Rebirth` = true),
/// unless one was sent within [`REBIRTH_INTERVAL_MS`].
fn rebirth_request(
    node: &mut Node,
    tally: &mut Tally,
    topic: &Topic<'_>,
    now_ms: u64,
) -> Option<(String, Vec<u8>)> {
    if node
        .last_rebirth_ms
        .is_some_and(|last| now_ms.saturating_sub(last) < REBIRTH_INTERVAL_MS)
    {
        return None;
    }
    node.last_rebirth_ms = Some(now_ms);
    tally.rebirth_requests += 1;
    let payload = Payload {
        timestamp: Some(now_ms),
        metrics: vec![Metric {
            name: Some("Node Control/Rebirth".into()),
            timestamp: Some(now_ms),
            datatype: Some(datatype::BOOLEAN),
            value: Some(MetricValue::BooleanValue(true)),
            ..Metric::default()
        }],
        ..Payload::default()
    };
    Some((
        format!("spBv1.0/{}/NCMD/{}", topic.group, topic.edge),
        payload.encode_to_vec(),
    ))
}

fn learn_aliases(node: &mut Node, payload: &Payload) {
    for metric in &payload.metrics {
        if let (Some(name), Some(alias)) = (&metric.name, metric.alias) {
            node.aliases.insert(alias, name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_parsed_by_the_namespace() {
        let t = Topic::parse("spBv1.0/Field/DDATA/Gateway-1/ESP-7").unwrap();
        assert_eq!(
            (t.group, t.kind, t.edge, t.device),
            ("Field", Kind::DData, "Gateway-1", Some("ESP-7"))
        );
        let t = Topic::parse("spBv1.0/Field/NBIRTH/Gateway-1").unwrap();
        assert_eq!((t.kind, t.device), (Kind::NBirth, None));
        assert!(Topic::parse("spBv1.0/Field/DDATA/Gateway-1").is_none());
        assert!(Topic::parse("spBv1.0/Field/NDATA/Gateway-1/x").is_none());
        assert!(Topic::parse("espwatch/ESP-7/telemetry").is_none());
    }

    #[test]
    fn metric_names_map_to_channels() {
        let configured =
            BTreeMap::from([("Pump/PIP".to_owned(), "discharge_pressure_psi".to_owned())]);
        let map = MetricMap::new(&configured).unwrap();
        assert_eq!(map.channel("Pump/PIP"), Some(Field::DischargePressurePsi));
        assert_eq!(
            map.channel("Drive/Output Frequency"),
            Some(Field::FrequencyHz)
        );
        assert_eq!(map.channel("Motor Current"), Some(Field::MotorCurrentA));
        assert_eq!(map.channel("motor_temp_c"), Some(Field::MotorTempC));
        assert_eq!(map.channel("Gauge/PIP"), Some(Field::IntakePressurePsi));
        assert_eq!(map.channel("Drive/Fault Code"), None);
        let bad = BTreeMap::from([("x".to_owned(), "pressure".to_owned())]);
        assert!(MetricMap::new(&bad).is_err());
    }

    #[test]
    fn births_and_deaths_are_the_devices_connectivity() {
        let map = MetricMap::new(&BTreeMap::new()).unwrap();
        let mut state = State::default();
        let birth = |bd: u64| {
            Payload {
                seq: Some(0),
                metrics: vec![Metric {
                    name: Some(BD_SEQ.into()),
                    datatype: Some(datatype::INT64),
                    value: Some(MetricValue::LongValue(bd)),
                    ..Metric::default()
                }],
                ..Payload::default()
            }
            .encode_to_vec()
        };
        let plain = |seq: u64| {
            Payload {
                seq: Some(seq),
                ..Payload::default()
            }
            .encode_to_vec()
        };
        let mut feed = |topic: &str, payload: Vec<u8>| {
            let topic = Topic::parse(topic).unwrap();
            state.interpret(&topic, &payload, &map, 0).unwrap().presence
        };
        let on = |d: &str| (d.to_owned(), true);
        let off = |d: &str| (d.to_owned(), false);
        assert_eq!(feed("spBv1.0/G/NBIRTH/E", birth(1)), vec![]);
        assert_eq!(feed("spBv1.0/G/DBIRTH/E/W-1", plain(1)), vec![on("W-1")]);
        assert_eq!(feed("spBv1.0/G/DBIRTH/E/W-2", plain(2)), vec![on("W-2")]);
        assert_eq!(feed("spBv1.0/G/DDATA/E/W-2", plain(3)), vec![]);
        assert_eq!(feed("spBv1.0/G/DDEATH/E/W-2", plain(4)), vec![off("W-2")]);
        // A new session: the devices of the old one are offline until their births.
        assert_eq!(feed("spBv1.0/G/NBIRTH/E", birth(2)), vec![off("W-1")]);
        assert_eq!(feed("spBv1.0/G/DBIRTH/E/W-1", plain(1)), vec![on("W-1")]);
        // The will of the first connection, late: not this session's death.
        assert_eq!(feed("spBv1.0/G/NDEATH/E", birth(1)), vec![]);
        // This session's death: every device of the node.
        assert_eq!(
            feed("spBv1.0/G/NDEATH/E", birth(2)),
            vec![off("W-1"), off("W-2")]
        );
        // Other nodes and groups are apart.
        assert_eq!(feed("spBv1.0/G/NDEATH/F", birth(2)), vec![]);
    }

    #[test]
    fn signed_integers_are_read_from_their_twos_complement() {
        let m = |datatype, value| Metric {
            datatype: Some(datatype),
            value: Some(value),
            ..Metric::default()
        };
        assert_eq!(
            m(datatype::INT8, MetricValue::IntValue(0xFF)).number(),
            Some(-1.0)
        );
        assert_eq!(
            m(datatype::INT16, MetricValue::IntValue(0xFFFE)).number(),
            Some(-2.0)
        );
        assert_eq!(
            m(datatype::INT32, MetricValue::IntValue(u32::MAX)).number(),
            Some(-1.0)
        );
        assert_eq!(
            m(datatype::INT64, MetricValue::LongValue(u64::MAX)).number(),
            Some(-1.0)
        );
        assert_eq!(
            m(7, MetricValue::IntValue(u32::MAX)).number(),
            Some(u32::MAX as f64)
        );
        assert_eq!(m(9, MetricValue::FloatValue(1.5)).number(), Some(1.5));
        assert_eq!(m(12, MetricValue::StringValue("x".into())).number(), None);
    }
}
