// Well page: channel charts over a chosen range (aggregated step queries; raw points once
// zoomed in to two hours or less), drag to zoom, earlier/later to pan, alarm bands behind the
// charts (every alarm of the well active in the range shown), the current diagnosis with its evidence and recommended action, the pump curve at
// the running frequency with the operating point and its recent trail, the registry data and
// the well's alarms. Live readings extend the charts while the range ends now.

import uPlot from './vendor/uplot/uPlot.esm.js';
import { api, can, errorText } from './api.js';
import * as units from './units.js';
import { h, words, time, utcTimeAxis } from './dom.js';
import { AlarmsView, alarmsPath } from './alarms.js';

const RANGES = [['1h', 3600], ['6h', 6 * 3600], ['24h', 86400], ['7d', 7 * 86400], ['30d', 30 * 86400]];
const STEPS = [['10s', 10], ['1m', 60], ['5m', 300], ['15m', 900], ['1h', 3600], ['6h', 21600]];
const RAW_BELOW_SECS = 2 * 3600;
const GROUPS = [
  { title: 'Motor', series: ['motor_current_a', 'frequency_hz'] },
  { title: 'Pressures', series: ['intake_pressure_psi', 'discharge_pressure_psi', 'tubing_pressure_psi'] },
  { title: 'Temperatures', series: ['motor_temp_c', 'intake_temp_c'] },
  { title: 'Vibration', series: ['vibration_x_g', 'vibration_y_g'] },
  { title: 'Flow', series: ['flow_rate_bpd', 'water_cut_pct'] },
];
const COLORS = ['#0f6fa8', '#d9480f', '#2f9e5a', '#7048e8', '#c2255c'];
/** Alarms per read of the bands of a range (more are read through next_cursor). */
const BAND_PAGE = 1000;
const BAND = { critical: 'rgba(214,47,47,0.16)', major: 'rgba(239,138,23,0.16)', minor: 'rgba(230,198,25,0.20)' };
/** One piece of evidence in words: "Flow ratio 0.12 (< 0.15)". */
function evidenceWords(e) {
  const v = e.value === null || e.value === undefined ? 'n/a' : units.format('x', e.value);
  return `${words(e.feature)} ${v} (${e.relation} ${units.format('x', e.threshold)})`;
}
/** Round ticks from 0 to at least `max`: steps of 1, 2, 2.5 or 5 × 10^k, about four. */
function niceTicks(max) {
  if (!(max > 0)) return [0, 1];
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw * (1 - 1e-9));
  const n = Math.ceil(max / step - 1e-9);
  return Array.from({ length: n + 1 }, (_, i) => i * step);
}
/** psi of a 1 ft column of water. */
const PSI_PER_FT_WATER = 0.433;

export class WellView {
  constructor(root, id) {
    this.root = root;
    this.id = id;
    this.span = 86400;
    this.to = null; // null: the range ends now and follows live readings
    this.charts = [];
    this.data = null;
    this.alarms = [];
    // The bands' alarms: `this.alarms` when that first page holds every alarm of the well,
    // else those active in the range shown, read for it; and alarm changes seen live.
    this.allAlarms = false;
    this.bandAlarms = [];
    this.bandRead = 0;
    this.liveAlarms = new Map();
    this.meta = null;
    this.latest = null;
    this.unsubscribe = units.onChange(() => { this.drawCharts(); this.drawPump(); this.renderLatest(); });
  }

  destroy() {
    this.unsubscribe();
    this.charts.forEach((c) => c.destroy());
    if (this.alarmView && this.alarmView.destroy) this.alarmView.destroy();
  }

  async load() {
    const id = encodeURIComponent(this.id);
    this.rangeBar = h('div', { class: 'toolbar', id: 'range-bar' },
      ...RANGES.map(([label, secs]) => h('button', {
        type: 'button', class: 'secondary', dataset: { range: label },
        onclick: () => { this.span = secs; this.to = null; this.loadSeries(); },
      }, label)),
      h('button', { type: 'button', class: 'secondary', onclick: () => this.pan(-1) }, '◀ earlier'),
      h('button', { type: 'button', class: 'secondary', onclick: () => this.pan(1) }, 'later ▶'),
      h('button', { type: 'button', class: 'secondary', onclick: () => { this.to = null; this.loadSeries(); } }, 'now'),
      this.rangeLabel = h('span', { class: 'muted' }));
    this.chartBox = h('div', { class: 'charts', id: 'well-charts' });
    this.latestBox = h('dl', { class: 'kv', id: 'well-latest' });
    this.diagBox = h('div', { id: 'well-diagnosis' }, h('p', { class: 'muted' }, 'Loading…'));
    this.pumpCanvas = h('canvas', { class: 'pump', id: 'pump-curve', width: 680, height: 520 });
    this.pumpNote = h('p', { class: 'band-note' });
    this.metaBox = h('dl', { class: 'kv', id: 'well-meta' });
    this.alarmBox = h('div', { id: 'well-alarms' });
    this.title = h('h1', null, this.id);
    this.subtitle = h('span', { class: 'muted' });
    this.root.replaceChildren(
      h('div', { class: 'well-head' }, h('a', { href: '#/fleet' }, '← Fleet'), this.title, this.subtitle),
      h('div', { class: 'layout' },
        h('div', { class: 'charts-col' }, this.rangeBar, this.chartBox),
        h('div', { class: 'side' },
          h('div', { class: 'card' }, h('h2', null, 'Diagnosis'), this.diagBox),
          h('div', { class: 'card' }, h('h2', null, 'Pump curve at running frequency'), this.pumpCanvas, this.pumpNote),
          h('div', { class: 'card' }, h('h2', null, 'Now'), this.latestBox),
          h('div', { class: 'card' }, h('h2', null, 'Well'), this.metaBox))),
      h('div', { class: 'card well-alarms' }, h('h2', null, 'Alarms of this well'), this.alarmBox));

    const [meta, latest, alarms] = await Promise.all([
      can('wells:read') ? api(`/api/v1/wells/${id}`) : Promise.resolve(null),
      api('/api/v1/wells/latest'),
      can('alarms:read') ? api(alarmsPath(this.id, null)) : Promise.resolve(null),
    ]);
    if (meta && meta.ok) {
      this.meta = meta.data;
      this.subtitle.textContent = [meta.data.name, meta.data.field].filter(Boolean).join(' · ');
    }
    if (latest.ok) this.latest = latest.data.wells.find((w) => w.well_id === this.id) || null;
    if (alarms && alarms.ok) {
      this.alarms = alarms.data.alarms;
      this.allAlarms = !alarms.data.next_cursor;
    }
    this.renderLatest();
    this.renderMeta();
    // One read of the well's alarms: the bands and the diagnosis use it, and so does the
    // well's alarm list (its "Older alarms" reads on from there).
    if (alarms && alarms.ok) {
      this.alarmView = new AlarmsView(this.alarmBox, null, this.id);
      this.alarmView.show(alarms.data);
    } else if (alarms) {
      this.alarmBox.replaceChildren(h('p', { class: 'error' }, errorText(alarms)));
    }
    this.loadDiagnosis();
    this.loadSeries();
  }

  pan(direction) {
    const end = this.to === null ? Date.now() / 1000 : this.to;
    const next = end + direction * this.span / 2;
    this.to = next >= Date.now() / 1000 ? null : next;
    this.loadSeries();
  }

  renderLatest() {
    const l = this.latest;
    if (!l || !l.values) {
      this.latestBox.replaceChildren(h('dd', { class: 'muted' }, 'No reading yet.'));
      return;
    }
    const rows = [h('dt', null, 'Reading'), h('dd', null, `${time(l.ts)}`)];
    for (const c of units.CHANNELS) {
      if (l.values[c.key] === undefined) continue;
      rows.push(h('dt', null, c.label), h('dd', { class: 'num', dataset: { channel: c.key } },
        units.format(c.key, l.values[c.key]), h('span', { class: 'unit' }, units.unitOf(c.key))));
    }
    this.latestBox.replaceChildren(...rows);
  }

  renderMeta() {
    const m = this.meta;
    if (!m) {
      this.metaBox.replaceChildren(h('dd', { class: 'muted' }, 'Not in the registry (or not visible to you).'));
      return;
    }
    const kv = [];
    const add = (k, v) => { if (v !== undefined && v !== null && v !== '') kv.push(h('dt', null, k), h('dd', null, String(v))); };
    add('Name', m.name);
    add('Field', m.field);
    if (m.location) add('Location', `${m.location.lat.toFixed(4)}, ${m.location.lon.toFixed(4)}`);
    if (m.pump) {
      add('Pump', m.pump.model);
      add('Stages', m.pump.stages);
      add('Curve frequency', m.pump.base_frequency_hz && `${m.pump.base_frequency_hz} Hz`);
    }
    if (m.motor) {
      add('Motor', [m.motor.rated_hp && `${m.motor.rated_hp} hp`, m.motor.rated_voltage_v && `${m.motor.rated_voltage_v} V`, m.motor.rated_current_a && `${m.motor.rated_current_a} A`].filter(Boolean).join(' · '));
      add('Winding limit', m.motor.max_winding_temp_c && `${m.motor.max_winding_temp_c} °C`);
    }
    if (m.setting_depth_ft) add('Setting depth', `${units.format('x', units.kindValue('length', m.setting_depth_ft))} ${units.kindUnit('length', 'ft')}`);
    if (m.fluid) {
      add('Specific gravity', m.fluid.specific_gravity);
      add('Bubble point', m.fluid.bubble_point_psi !== undefined ? `${units.format('intake_pressure_psi', m.fluid.bubble_point_psi)} ${units.unitOf('intake_pressure_psi')}` : undefined);
    }
    add('Registered', time(m.created_at));
    if (m.auto_registered) add('Note', 'registered automatically from telemetry');
    this.metaBox.replaceChildren(...kv);
  }

  async loadDiagnosis() {
    if (!can('diagnostics:read')) {
      this.diagBox.replaceChildren(h('p', { class: 'muted' }, 'Your role cannot read diagnoses.'));
      return;
    }
    const r = await api(`/api/v1/wells/${encodeURIComponent(this.id)}/diagnosis`);
    if (!r.ok) {
      this.diagBox.replaceChildren(h('p', { class: 'error' }, errorText(r)));
      return;
    }
    const d = r.data;
    const starts = d.starts_last_24h === undefined ? '' : ` · ${d.starts_last_24h} start${d.starts_last_24h === 1 ? '' : 's'} in 24 h`;
    const parts = [h('p', { class: 'muted' },
      `${d.running ? 'Running' : 'Not running'} · ${d.trained ? 'baseline learned' : 'learning its baseline'}${starts} · as of ${time(d.as_of)}`)];
    const findings = d.findings || [];
    // A condition still in progress while the latest readings show nothing (a gas-locked
    // pump that tripped is simply stopped): its episode is open, so it is what the well has.
    const found = new Set(findings.map((f) => f.condition));
    const ongoing = (d.open_episodes || []).filter((e) => !found.has(e.condition));
    if (findings.length === 0 && ongoing.length === 0) {
      parts.push(h('p', { id: 'diagnosis-normal' }, 'No abnormal condition found.'));
    }
    for (const f of findings) {
      parts.push(h('div', { class: `finding${f.confidence >= 0.8 ? ' sev-critical-b' : ''}`, dataset: { condition: f.condition } },
        h('h3', null, `${words(f.condition)} — ${Math.round(f.confidence * 100)} % confidence`),
        h('ul', null, ...(f.evidence || []).map((e) => h('li', null, evidenceWords(e)))),
        f.action ? h('p', { class: 'action' }, h('b', null, 'What to do: '), f.action) : null));
    }
    for (const e of ongoing) {
      // The open alarm of the episode says what was seen and what to do.
      const alarm = this.alarms.find((a) => a.condition === e.condition && a.state !== 'cleared');
      const detail = (alarm && alarm.detail) || {};
      parts.push(h('div', { class: `finding ongoing${e.severity === 'critical' ? ' sev-critical-b' : ''}`, dataset: { condition: e.condition } },
        h('h3', null, `${words(e.condition)} — ongoing since ${time(e.since)} (${e.severity}, ${Math.round(e.confidence * 100)} % confidence)`),
        h('ul', null, ...(detail.evidence || []).map((x) => h('li', null, evidenceWords(x)))),
        detail.action ? h('p', { class: 'action' }, h('b', null, 'What to do: '), detail.action) : null));
    }
    this.diagBox.replaceChildren(...parts);
  }

  stepFor(span) {
    if (span <= RAW_BELOW_SECS) return null;
    for (const [label, secs] of STEPS) if (span / secs <= 1000) return label;
    return STEPS[STEPS.length - 1][0];
  }

  async loadSeries() {
    for (const b of this.rangeBar.querySelectorAll('[data-range]')) {
      b.classList.toggle('secondary', !(this.to === null && RANGES.find(([l]) => l === b.dataset.range)[1] === this.span));
    }
    if (!can('telemetry:read')) {
      this.chartBox.replaceChildren(h('p', { class: 'muted' }, 'Your role sees current values only (no telemetry history).'));
      return;
    }
    const to = this.to === null ? Date.now() / 1000 + 1 : this.to;
    const from = to - this.span;
    const step = this.stepFor(this.span);
    const params = new URLSearchParams({
      from: new Date(from * 1000).toISOString(),
      to: new Date(to * 1000).toISOString(),
    });
    if (step) params.set('step', step); else params.set('max_points', '2000');
    const r = await api(`/api/v1/wells/${encodeURIComponent(this.id)}/telemetry?${params}`);
    if (!r.ok) {
      this.chartBox.replaceChildren(h('p', { class: r.status === 404 ? 'muted' : 'error' },
        r.status === 404 ? 'No telemetry stored for this well.' : errorText(r)));
      return;
    }
    this.range = [from, to];
    this.loadBands(from, to);
    this.rangeLabel.textContent = `${time(new Date(from * 1000).toISOString())} → ${this.to === null ? 'now' : time(new Date(to * 1000).toISOString())} · ${step ? `${step} steps` : 'raw points'}${r.data.downsampled ? ' (downsampled)' : ''}`;
    this.data = {
      ts: r.data.ts.map((t) => Date.parse(t) / 1000),
      fields: r.data.fields,
    };
    this.drawCharts();
    this.drawPump();
  }

  drawCharts() {
    if (!this.data) return;
    this.charts.forEach((c) => c.destroy());
    this.charts = [];
    this.chartBox.replaceChildren();
    const width = Math.max(320, this.chartBox.clientWidth - 14);
    const sync = uPlot.sync(`well-${this.id}`);
    for (const g of GROUPS) {
      const present = g.series.filter((k) => this.data.fields[k] && this.data.fields[k].some((v) => v !== null));
      if (present.length === 0) continue;
      const scaleUnits = [...new Set(present.map((k) => units.unitOf(k)))];
      const box = h('div', { class: 'chart', dataset: { group: g.title } }, h('h2', null, g.title));
      const utc = utcTimeAxis(box);
      const series = [utc.series].concat(present.map((k, i) => ({
        label: `${units.labelOf(k)} (${units.unitOf(k)})`,
        stroke: COLORS[i % COLORS.length],
        width: 1.5,
        scale: units.unitOf(k),
        spanGaps: false,
        value: (u, v) => (v === null || v === undefined ? '–' : units.format('x', v)),
      })));
      // Every chart gets an axis on both sides (a chart of one unit shows it twice), so the
      // plots are equally wide and one instant is at the same x on every chart.
      const sides = scaleUnits.length === 1 ? [scaleUnits[0], scaleUnits[0]] : scaleUnits.slice(0, 2);
      const axes = [utc.axis].concat(sides.map((unit, i) => ({
        scale: unit, label: unit, side: i === 0 ? 3 : 1, grid: { show: i === 0 }, size: 56,
      })));
      const data = [this.data.ts, ...present.map((k) => this.data.fields[k].map((v) => (v === null ? null : units.convert(k, v))))];
      this.chartBox.append(box);
      const opts = {
        width, height: 180,
        series, axes, tzDate: utc.tzDate,
        scales: { x: { time: true } },
        cursor: { sync: { key: sync.key }, drag: { x: true, y: false } },
        hooks: {
          drawClear: [(u) => this.drawBands(u)],
          setSelect: [(u) => {
            if (u.select.width < 5) return;
            const min = u.posToVal(u.select.left, 'x');
            const max = u.posToVal(u.select.left + u.select.width, 'x');
            u.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
            this.span = Math.max(60, max - min);
            this.to = max >= Date.now() / 1000 - 5 ? null : max;
            this.loadSeries();
          }],
        },
      };
      const chart = new uPlot(opts, data, box);
      chart.channels = present;
      this.charts.push(chart);
    }
    if (this.charts.length === 0) {
      this.chartBox.append(h('p', { class: 'muted' }, 'No readings in this range.'));
    }
  }

  /** New points into the existing charts (no rebuild), keeping each chart's channels. */
  updateCharts() {
    if (this.charts.length === 0) {
      this.drawCharts();
      return;
    }
    for (const chart of this.charts) {
      chart.setData([
        this.data.ts,
        ...chart.channels.map((k) => this.data.fields[k].map((v) => (v === null ? null : units.convert(k, v)))),
      ]);
    }
  }

  /** The alarms active in [from, to] (seconds) for the bands: none to read when the well's
   * first page of alarms already holds all of them; else every page of `from`/`to`. */
  async loadBands(from, to) {
    if (!can('alarms:read') || this.allAlarms) return;
    const read = ++this.bandRead;
    const found = [];
    let cursor = null;
    do {
      const params = new URLSearchParams({
        well_id: this.id,
        from: new Date(from * 1000).toISOString(),
        to: new Date(to * 1000).toISOString(),
        limit: String(BAND_PAGE),
      });
      if (cursor) params.set('cursor', cursor);
      const r = await api(`/api/v1/alarms?${params}`);
      // A newer range asked meanwhile wins; a failed read leaves the bands as they were.
      if (read !== this.bandRead || !r.ok) return;
      found.push(...r.data.alarms);
      cursor = r.data.next_cursor;
    } while (cursor);
    this.bandAlarms = found;
    this.charts.forEach((c) => c.redraw(false));
  }

  /** The alarms the bands show, live changes over what was read. */
  bands() {
    const byId = new Map();
    for (const a of this.allAlarms ? this.alarms : this.bandAlarms) byId.set(a.id, a);
    for (const a of this.liveAlarms.values()) byId.set(a.id, a);
    return byId.values();
  }

  drawBands(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, width, height);
    ctx.clip();
    const drawn = [];
    for (const a of this.bands()) {
      const start = Date.parse(a.started_at) / 1000;
      const end = a.ended_at ? Date.parse(a.ended_at) / 1000 : Date.now() / 1000;
      const x0 = u.valToPos(start, 'x', true);
      const x1 = u.valToPos(end, 'x', true);
      if (x1 < left || x0 > left + width) continue;
      ctx.fillStyle = BAND[a.severity] || BAND.minor;
      ctx.fillRect(x0, top, Math.max(2, x1 - x0), height);
      drawn.push(a.id);
    }
    ctx.restore();
    // Which alarms have a band on this chart (read by the browser tests).
    if (u.root.parentElement) u.root.parentElement.dataset.bands = drawn.sort((a, b) => a - b).join(' ');
  }

  /** The pump's catalog curve scaled to the running frequency, with where the pump runs. */
  drawPump() {
    const canvas = this.pumpCanvas;
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const pump = this.meta && this.meta.pump;
    if (!pump || !pump.stage_curve || pump.stage_curve.length < 2 || !pump.stages) {
      canvas.hidden = true;
      this.pumpNote.textContent = 'No catalog curve in the registry for this well.';
      return;
    }
    canvas.hidden = false;
    const base = pump.base_frequency_hz || 60;
    const values = (this.latest && this.latest.values) || {};
    const running = values.frequency_hz > 1 ? values.frequency_hz : base;
    const ratio = running / base;
    const sg = (this.meta.fluid && this.meta.fluid.specific_gravity) || 1.0;
    const curve = pump.stage_curve.map((p) => ({
      q: p.flow_bpd * ratio,
      head: p.head_ft * pump.stages * ratio * ratio,
      eff: p.bhp > 0 ? (p.flow_bpd * p.head_ft) / (135770 * p.bhp) : 0,
    }));
    const headOf = (pi, pd) => ((pd - pi) / (PSI_PER_FT_WATER * sg));
    const trail = [];
    if (this.data) {
      const f = this.data.fields;
      const n = this.data.ts.length;
      for (let i = Math.max(0, n - 60); i < n; i++) {
        const q = f.flow_rate_bpd && f.flow_rate_bpd[i];
        const pi = f.intake_pressure_psi && f.intake_pressure_psi[i];
        const pd = f.discharge_pressure_psi && f.discharge_pressure_psi[i];
        if (q != null && pi != null && pd != null) trail.push({ q, head: headOf(pi, pd) });
      }
    }
    let point = null;
    if (values.flow_rate_bpd !== undefined && values.intake_pressure_psi !== undefined && values.discharge_pressure_psi !== undefined) {
      point = { q: values.flow_rate_bpd, head: headOf(values.intake_pressure_psi, values.discharge_pressure_psi) };
    }
    const W = canvas.width;
    const H = canvas.height;
    const pad = { l: 116, r: 76, t: 24, b: 64 };
    // Axes end at a round tick in the units shown (the conversions are all proportional).
    const flowPerStored = units.kindValue('flow', 1);
    const lengthPerStored = units.kindValue('length', 1);
    const qTicks = niceTicks(Math.max(...curve.map((c) => c.q), ...(point ? [point.q] : []), ...trail.map((t) => t.q)) * 1.05 * flowPerStored);
    const hTicks = niceTicks(Math.max(...curve.map((c) => c.head), ...(point ? [point.head] : []), ...trail.map((t) => t.head)) * 1.05 * lengthPerStored);
    const qMax = qTicks[qTicks.length - 1] / flowPerStored;
    const hMax = hTicks[hTicks.length - 1] / lengthPerStored;
    canvas.dataset.flowTicks = qTicks.join(',');
    canvas.dataset.headTicks = hTicks.join(',');
    const x = (q) => pad.l + (q / qMax) * (W - pad.l - pad.r);
    const y = (hd) => H - pad.b - (hd / hMax) * (H - pad.t - pad.b);
    const yEff = (e) => H - pad.b - e * (H - pad.t - pad.b);
    ctx.font = '26px system-ui, sans-serif';
    // Recommended operating range, scaled like the flow.
    if (pump.min_flow_bpd && pump.max_flow_bpd) {
      ctx.fillStyle = 'rgba(47,158,90,0.12)';
      ctx.fillRect(x(pump.min_flow_bpd * ratio), pad.t, x(pump.max_flow_bpd * ratio) - x(pump.min_flow_bpd * ratio), H - pad.t - pad.b);
    }
    // Axes and labels (converted units).
    ctx.strokeStyle = '#9aa5b1';
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(pad.l, pad.t); ctx.lineTo(pad.l, H - pad.b); ctx.lineTo(W - pad.r, H - pad.b); ctx.lineTo(W - pad.r, pad.t);
    ctx.stroke();
    ctx.fillStyle = '#66727e';
    ctx.textAlign = 'center';
    for (const t of qTicks) ctx.fillText(units.format('x', t), x(t / flowPerStored), H - pad.b + 30);
    ctx.textAlign = 'right';
    for (const t of hTicks) ctx.fillText(units.format('x', t), pad.l - 6, y(t / lengthPerStored) + 6);
    ctx.textAlign = 'left';
    for (let i = 0; i <= 4; i++) ctx.fillText(`${i * 25}%`, W - pad.r + 6, yEff(i / 4) + 8);
    ctx.textAlign = 'center';
    ctx.fillText(`flow, ${units.kindUnit('flow', 'bbl/d')}`, (pad.l + W - pad.r) / 2, H - 6);
    ctx.save();
    ctx.translate(20, (pad.t + H - pad.b) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.fillText(`head, ${units.kindUnit('length', 'ft')}`, 0, 0);
    ctx.restore();
    const line = (pts, fy, color, width) => {
      ctx.strokeStyle = color;
      ctx.lineWidth = width;
      ctx.beginPath();
      pts.forEach((p, i) => (i === 0 ? ctx.moveTo(x(p.q), fy(p)) : ctx.lineTo(x(p.q), fy(p))));
      ctx.stroke();
    };
    line(curve, (p) => y(p.head), '#0f6fa8', 3);
    line(curve, (p) => yEff(p.eff), '#2f9e5a', 2);
    ctx.fillStyle = 'rgba(102,114,126,0.45)';
    for (const t of trail) {
      ctx.beginPath();
      ctx.arc(x(t.q), y(t.head), 4, 0, 2 * Math.PI);
      ctx.fill();
    }
    if (point) {
      ctx.fillStyle = '#d62f2f';
      ctx.beginPath();
      ctx.arc(x(point.q), y(point.head), 9, 0, 2 * Math.PI);
      ctx.fill();
    }
    this.pumpNote.textContent = `${pump.model || 'Pump'}, ${pump.stages} stages, catalog at ${base} Hz scaled to ${running.toFixed(1)} Hz `
      + '(blue: head, green: efficiency, shaded: recommended range, grey: recent trail, red: now).'
      + (point ? '' : ' No operating point: flow or pressures not reported.');
  }

  live(m) {
    if (m.type === 'readings') {
      const mine = m.readings.filter((r) => r.well_id === this.id);
      if (mine.length === 0) return;
      const last = mine[mine.length - 1];
      const values = {};
      for (const [k, v] of Object.entries(last)) if (k !== 'well_id' && k !== 'ts') values[k] = v;
      this.latest = { well_id: this.id, ts: last.ts, values };
      this.renderLatest();
      if (this.to === null && this.data) {
        for (const r of mine) {
          this.data.ts.push(Date.parse(r.ts) / 1000);
          for (const k of Object.keys(this.data.fields)) this.data.fields[k].push(r[k] === undefined ? null : r[k]);
        }
        this.updateCharts();
        this.drawPump();
      }
    } else if (m.type === 'alarm' && m.alarm.well_id === this.id) {
      const i = this.alarms.findIndex((a) => a.id === m.alarm.id);
      if (i >= 0) this.alarms[i] = m.alarm; else this.alarms.push(m.alarm);
      this.liveAlarms.set(m.alarm.id, m.alarm);
      this.charts.forEach((c) => c.redraw(false));
      if (this.alarmView) this.alarmView.live(m);
      this.loadDiagnosis();
    } else if (m.type === 'lagged') {
      this.loadSeries();
    }
  }
}
