// Units: as stored (psi, °C, bbl/d) or SI (kPa, °C, m³/d). Conversion is done here only, for
// display; the API always speaks field units. The choice is remembered per user in this
// browser (a display preference, not a secret).

const PSI_TO_KPA = 6.894757;
const BPD_TO_M3D = 0.1589873;
const FT_TO_M = 0.3048;

/** Channels in display order, with their stored unit and how SI shows them. */
export const CHANNELS = [
  { key: 'frequency_hz', label: 'Frequency', unit: 'Hz' },
  { key: 'motor_current_a', label: 'Motor current', unit: 'A' },
  { key: 'motor_voltage_v', label: 'Motor voltage', unit: 'V' },
  { key: 'intake_pressure_psi', label: 'Intake pressure', unit: 'psi', kind: 'pressure' },
  { key: 'discharge_pressure_psi', label: 'Discharge pressure', unit: 'psi', kind: 'pressure' },
  { key: 'tubing_pressure_psi', label: 'Tubing pressure', unit: 'psi', kind: 'pressure' },
  { key: 'intake_temp_c', label: 'Intake temperature', unit: '°C' },
  { key: 'motor_temp_c', label: 'Motor temperature', unit: '°C' },
  { key: 'vibration_x_g', label: 'Vibration X', unit: 'g' },
  { key: 'vibration_y_g', label: 'Vibration Y', unit: 'g' },
  { key: 'flow_rate_bpd', label: 'Flow rate', unit: 'bbl/d', kind: 'flow' },
  { key: 'gor_scf_bbl', label: 'GOR', unit: 'scf/bbl' },
  { key: 'water_cut_pct', label: 'Water cut', unit: '%' },
];
const BY_KEY = Object.fromEntries(CHANNELS.map((c) => [c.key, c]));

let system = 'field';
let storageKey = 'espwatch.units';
const listeners = new Set();

export function useUser(user) {
  storageKey = `espwatch.units.${user}`;
  system = localStorage.getItem(storageKey) === 'si' ? 'si' : 'field';
}

export function current() {
  return system;
}

export function setSystem(next) {
  system = next === 'si' ? 'si' : 'field';
  localStorage.setItem(storageKey, system);
  listeners.forEach((f) => f(system));
}

export function onChange(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

export function kindUnit(kind, stored) {
  if (system !== 'si') return stored;
  if (kind === 'pressure') return 'kPa';
  if (kind === 'flow') return 'm³/d';
  if (kind === 'length') return 'm';
  return stored;
}

export function kindValue(kind, v) {
  if (v === null || v === undefined || system !== 'si') return v;
  if (kind === 'pressure') return v * PSI_TO_KPA;
  if (kind === 'flow') return v * BPD_TO_M3D;
  if (kind === 'length') return v * FT_TO_M;
  return v;
}

export function unitOf(key) {
  const c = BY_KEY[key];
  return c ? kindUnit(c.kind, c.unit) : '';
}

export function labelOf(key) {
  return BY_KEY[key] ? BY_KEY[key].label : key;
}

export function convert(key, v) {
  const c = BY_KEY[key];
  return c ? kindValue(c.kind, v) : v;
}

// One formatter per precision: toLocaleString with options builds a new one per call, which
// costs most of the first render of a 1 000-well fleet.
const FORMATS = [0, 1, 2, 3].map((digits) => new Intl.NumberFormat('en-US', { maximumFractionDigits: digits, minimumFractionDigits: 0 }));

/** A value for display, converted, with sensible digits; '–' when missing. */
export function format(key, v) {
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  const x = convert(key, v);
  const a = Math.abs(x);
  const digits = a >= 1000 ? 0 : a >= 100 ? 1 : a >= 1 ? 2 : 3;
  return FORMATS[digits].format(x);
}

export function age(seconds) {
  if (seconds === null || seconds === undefined) return '–';
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}
