// Fleet overview: every well with its state colour, key values with units and age, a
// sparkline of motor current over the last hour, counts by condition, search, filter and sort.
// Built for 1 000 wells: rows are made once and reused; live readings only mark rows dirty,
// and dirty rows are redrawn once per animation frame. The sparklines' history is fetched for
// the rows that scroll into view, many wells per request (GET /api/v1/wells/telemetry).

import { api, can, errorText } from './api.js';
import * as units from './units.js';
import { h, words } from './dom.js';

/** A well's reading older than this is stale. */
const STALE_SECS = 15 * 60;
const SEVERITY_RANK = { critical: 0, major: 1, minor: 2 };
const STATE_RANK = { critical: 0, major: 1, minor: 2, stale: 3, stopped: 4, nodata: 5, ok: 6 };
const STATE_WORDS = {
  critical: 'Critical alarm', major: 'Major alarm', minor: 'Minor alarm',
  stale: 'Stale data', stopped: 'Stopped', nodata: 'No data', ok: 'Running, no alarm',
};
const COLUMNS = [
  { key: 'frequency_hz' },
  { key: 'motor_current_a' },
  { key: 'intake_pressure_psi' },
  { key: 'discharge_pressure_psi' },
  { key: 'motor_temp_c' },
  { key: 'flow_rate_bpd' },
];
/** The sparkline: the last hour of motor current in 2-minute buckets (live readings included). */
const SPARK_SPAN_MS = 3600 * 1000;
const SPARK_BUCKET_MS = 120 * 1000;
/** Wells per history request. */
const TREND_BATCH = 200;

/** Adds a value to a well's sparkline buckets (a running mean per bucket), oldest dropped. */
function sparkAdd(spark, tsMs, value, weight = 1) {
  const b = Math.floor(tsMs / SPARK_BUCKET_MS) * SPARK_BUCKET_MS;
  const last = spark[spark.length - 1];
  if (last && last.b === b) {
    last.sum += value * weight;
    last.n += weight;
  } else if (!last || b > last.b) {
    spark.push({ b, sum: value * weight, n: weight });
  } else {
    return;
  }
  const oldest = Date.now() - SPARK_SPAN_MS - SPARK_BUCKET_MS;
  while (spark.length && spark[0].b < oldest) spark.shift();
}

export class FleetView {
  /** `openAlarms`: a function giving the shell's open alarms (read once per sign-in). */
  constructor(root, openAlarms) {
    this.root = root;
    this.openAlarms = openAlarms;
    this.wells = new Map();
    this.filter = { text: '', state: 'all', condition: null };
    this.sort = { key: 'state', dir: 1 };
    this.dirty = new Set();
    this.frame = 0;
    this.unsubscribe = units.onChange(() => this.renderAll());
    this.ticker = setInterval(() => this.tickAges(), 5000);
    this.trendQueue = new Set();
    this.trendTimer = 0;
    // Rows entering the view (or near it) get their hour of history, once.
    this.observer = can('telemetry:read') && 'IntersectionObserver' in window
      ? new IntersectionObserver((entries) => this.onVisible(entries), { rootMargin: '300px' })
      : null;
  }

  onVisible(entries) {
    for (const e of entries) {
      if (!e.isIntersecting) continue;
      this.observer.unobserve(e.target);
      const w = this.wells.get(e.target.dataset.well);
      if (w && w.ts !== null) this.trendQueue.add(w.id);
    }
    if (this.trendQueue.size && !this.trendTimer) {
      this.trendTimer = setTimeout(() => { this.trendTimer = 0; this.loadTrends(); }, 50);
    }
  }

  /** The last hour of motor current of the queued wells, TREND_BATCH per request. */
  async loadTrends() {
    const ids = [...this.trendQueue].slice(0, TREND_BATCH);
    ids.forEach((id) => this.trendQueue.delete(id));
    if (ids.length === 0) return;
    const to = Date.now();
    const from = Math.floor((to - SPARK_SPAN_MS) / SPARK_BUCKET_MS) * SPARK_BUCKET_MS;
    const params = new URLSearchParams({
      wells: ids.join(','),
      fields: 'motor_current_a',
      from: new Date(from).toISOString(),
      to: new Date(to + 1000).toISOString(),
      step: `${SPARK_BUCKET_MS / 1000}s`,
      agg: 'avg',
    });
    const r = await api(`/api/v1/wells/telemetry?${params}`);
    if (this.destroyed) return;
    if (r.ok) {
      for (const s of r.data.wells) {
        const w = this.wells.get(s.well_id);
        if (!w) continue;
        const values = s.fields.motor_current_a || [];
        // History first, then what arrived live since (the bucket of now is merged).
        const live = w.spark;
        const spark = [];
        s.ts.forEach((t, i) => { if (values[i] !== null) sparkAdd(spark, Date.parse(t), values[i]); });
        for (const p of live) {
          const last = spark[spark.length - 1];
          if (!last || p.b > last.b) spark.push(p);
        }
        w.spark = spark;
        w.trendLoaded = true;
        this.schedule(w, false);
      }
    }
    if (this.trendQueue.size) this.loadTrends();
  }

  destroy() {
    this.destroyed = true;
    if (this.observer) this.observer.disconnect();
    clearTimeout(this.trendTimer);
    this.unsubscribe();
    clearInterval(this.ticker);
    cancelAnimationFrame(this.frame);
  }

  async load() {
    this.root.append(h('p', { class: 'muted', id: 'fleet-loading' }, 'Loading the fleet…'));
    const [latest, registry, alarms] = await Promise.all([
      api('/api/v1/wells/latest'),
      can('wells:read') ? api('/api/v1/wells') : Promise.resolve(null),
      can('alarms:read') ? this.openAlarms() : Promise.resolve(null),
    ]);
    if (!latest.ok) {
      this.root.replaceChildren(h('p', { class: 'error' }, errorText(latest)));
      return;
    }
    performance.mark('fleet:data');
    const receivedAt = Date.now();
    for (const w of latest.data.wells) {
      this.wells.set(w.well_id, {
        id: w.well_id,
        name: null,
        field: null,
        ts: w.ts ? Date.parse(w.ts) : null,
        ageBase: w.age_s,
        ageAt: receivedAt,
        values: w.values || {},
        alarms: new Map(),
        spark: [],
        row: null,
      });
      const wl = this.wells.get(w.well_id);
      if (wl.ts !== null && w.values && w.values.motor_current_a !== undefined) {
        sparkAdd(wl.spark, wl.ts, w.values.motor_current_a);
      }
    }
    if (registry && registry.ok) {
      for (const m of registry.data.wells) {
        const w = this.wells.get(m.well_id);
        if (w) {
          w.name = m.name || null;
          w.field = m.field || null;
        }
      }
    }
    if (alarms) {
      for (const a of alarms.values()) this.applyAlarm(a);
    }
    this.build();
  }

  build() {
    const search = h('input', {
      type: 'search', id: 'fleet-search', placeholder: 'Search wells, fields, conditions…',
      oninput: (e) => { this.filter.text = e.target.value.trim().toLowerCase(); this.applyFilter(); },
    });
    const stateSelect = h('select', {
      id: 'fleet-state',
      onchange: (e) => { this.filter.state = e.target.value; this.applyFilter(); },
    },
    h('option', { value: 'all' }, 'All states'),
    h('option', { value: 'alarm' }, 'Any open alarm'),
    ...Object.entries(STATE_WORDS).map(([k, v]) => h('option', { value: k }, v)));
    this.count = h('span', { class: 'muted', id: 'fleet-count' });
    this.chips = h('div', { class: 'chips', id: 'fleet-conditions' });
    const legend = h('div', { class: 'legend' },
      ...Object.entries(STATE_WORDS).map(([k, v]) => h('span', null, h('i', { class: `dot state-${k}` }), v)));
    const head = h('tr', null,
      this.th('state', ''),
      this.th('id', 'Well'),
      this.th('field', 'Field'),
      this.th('condition', 'Condition'),
      ...COLUMNS.map((c) => this.th(c.key, units.labelOf(c.key), c.key)),
      this.th('age', 'Age'),
      h('th', null, 'Current, last hour'));
    this.thead = h('thead', null, head);
    this.tbody = h('tbody', { id: 'fleet-rows' });
    this.table = h('table', { class: 'grid', id: 'fleet-table' }, this.thead, this.tbody);
    this.root.replaceChildren(
      h('div', { class: 'toolbar' }, search, stateSelect, this.count),
      this.chips,
      legend,
      this.table,
    );
    for (const w of this.wells.values()) this.makeRow(w);
    performance.mark('fleet:rows');
    this.renderChips();
    this.applyFilter();
    performance.mark('fleet:built');
  }

  th(key, label, channel) {
    const unit = channel ? h('span', { class: 'unit', dataset: { unitOf: channel } }, units.unitOf(channel)) : null;
    return h('th', {
      class: `sortable${channel ? ' num' : ''}`,
      dataset: { sort: key },
      onclick: () => {
        this.sort = { key, dir: this.sort.key === key ? -this.sort.dir : 1 };
        this.applyFilter();
      },
    }, label, unit);
  }

  state(w) {
    let worst = null;
    for (const a of w.alarms.values()) {
      if (worst === null || SEVERITY_RANK[a.severity] < SEVERITY_RANK[worst]) worst = a.severity;
    }
    if (worst) return worst;
    if (w.ts === null) return 'nodata';
    if (this.age(w) > STALE_SECS) return 'stale';
    const f = w.values.frequency_hz;
    const i = w.values.motor_current_a;
    if ((f !== undefined && f < 1) || (f === undefined && i !== undefined && i < 1)) return 'stopped';
    return 'ok';
  }

  age(w) {
    if (w.ts === null) return null;
    return w.ageBase + (Date.now() - w.ageAt) / 1000;
  }

  conditions(w) {
    return [...w.alarms.values()]
      .sort((a, b) => SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity])
      .map((a) => a.condition);
  }

  makeRow(w) {
    const cells = {
      dot: h('i', { class: 'dot' }),
      condition: h('td', { class: 'cond' }),
      age: h('td', { class: 'num age' }),
      values: COLUMNS.map((c) => h('td', { class: 'num', dataset: { channel: c.key } })),
      spark: h('td', { class: 'spark-cell' }),
    };
    const link = h('a', { href: `#/well/${encodeURIComponent(w.id)}` }, w.id);
    // One line per well: the name beside the id, without repeating the id it often starts with.
    const name = w.name && w.name.startsWith(w.id) ? w.name.slice(w.id.length).trim() : w.name;
    const row = h('tr', { dataset: { well: w.id } },
      h('td', null, cells.dot),
      h('td', null, link, name ? h('span', { class: 'muted well-name' }, ` ${name}`) : null),
      h('td', null, w.field || ''),
      cells.condition,
      ...cells.values,
      cells.age,
      cells.spark);
    w.row = row;
    w.cells = cells;
    this.renderRow(w);
    if (this.observer) this.observer.observe(row);
  }

  renderRow(w) {
    const state = this.state(w);
    w.state = state;
    w.row.className = `state-${state}`;
    w.row.dataset.state = state;
    w.cells.dot.title = STATE_WORDS[state];
    w.cells.condition.textContent = this.conditions(w).map(words).join(', ');
    COLUMNS.forEach((c, i) => {
      w.cells.values[i].textContent = units.format(c.key, w.values[c.key]);
    });
    w.cells.age.textContent = units.age(this.age(w));
    this.drawSpark(w);
  }

  drawSpark(w) {
    const pts = w.spark;
    // Canvases are made only for wells with a trend: 1 000 empty ones would cost the first render.
    if (pts.length < 2) return;
    let canvas = w.cells.spark.firstChild;
    if (!canvas) {
      canvas = h('canvas', { class: 'spark', width: 90, height: 22 });
      w.cells.spark.append(canvas);
    }
    canvas.dataset.points = String(pts.length);
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const ys = pts.map((p) => p.sum / p.n);
    let lo = Math.min(...ys);
    let hi = Math.max(...ys);
    if (hi - lo < 1e-9) { lo -= 1; hi += 1; }
    // Time on x: the last hour, so a gap in the data shows as a gap in the line's spacing.
    const end = Date.now();
    const start = end - SPARK_SPAN_MS;
    ctx.strokeStyle = '#0f6fa8';
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    pts.forEach((p, i) => {
      const t = Math.min(end, Math.max(start, p.b + SPARK_BUCKET_MS / 2));
      const x = ((t - start) / SPARK_SPAN_MS) * (canvas.width - 2) + 1;
      const y = canvas.height - 2 - ((ys[i] - lo) / (hi - lo)) * (canvas.height - 4);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    canvas.title = `Motor current, last hour: ${units.format('motor_current_a', lo)}–${units.format('motor_current_a', hi)} A`;
  }

  renderAll() {
    for (const el of this.root.querySelectorAll('[data-unit-of]')) {
      el.textContent = units.unitOf(el.dataset.unitOf);
    }
    for (const w of this.wells.values()) this.renderRow(w);
  }

  renderChips() {
    const counts = new Map();
    for (const w of this.wells.values()) {
      for (const c of new Set(this.conditions(w))) counts.set(c, (counts.get(c) || 0) + 1);
    }
    const chips = [...counts.entries()].sort((a, b) => b[1] - a[1]).map(([c, n]) => h('button', {
      type: 'button',
      class: `chip${this.filter.condition === c ? ' on' : ''}`,
      dataset: { condition: c },
      onclick: () => {
        this.filter.condition = this.filter.condition === c ? null : c;
        this.renderChips();
        this.applyFilter();
      },
    }, words(c), h('b', null, String(n))));
    this.chips.replaceChildren(...(chips.length ? chips : [h('span', { class: 'muted' }, 'No open alarms in the fleet.')]));
  }

  matches(w) {
    const f = this.filter;
    if (f.state === 'alarm' && w.alarms.size === 0) return false;
    if (f.state !== 'all' && f.state !== 'alarm' && w.state !== f.state) return false;
    if (f.condition && !this.conditions(w).includes(f.condition)) return false;
    if (f.text) {
      const hay = `${w.id} ${w.name || ''} ${w.field || ''} ${this.conditions(w).join(' ')}`.toLowerCase();
      if (!hay.includes(f.text)) return false;
    }
    return true;
  }

  sortValue(w) {
    const k = this.sort.key;
    if (k === 'state') return STATE_RANK[w.state];
    if (k === 'id') return w.id;
    if (k === 'field') return w.field || '';
    if (k === 'condition') return this.conditions(w).join(',') || '~';
    if (k === 'age') return this.age(w) ?? Infinity;
    const v = w.values[k];
    return v === undefined ? -Infinity : v;
  }

  applyFilter() {
    const shown = [...this.wells.values()].filter((w) => this.matches(w));
    const dir = this.sort.dir;
    shown.sort((a, b) => {
      const x = this.sortValue(a);
      const y = this.sortValue(b);
      if (x < y) return -dir;
      if (x > y) return dir;
      return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
    });
    this.tbody.replaceChildren(...shown.map((w) => w.row));
    this.count.textContent = `${shown.length} of ${this.wells.size} wells`;
  }

  applyAlarm(a) {
    let w = this.wells.get(a.well_id);
    if (!w) return null;
    if (a.state === 'cleared') w.alarms.delete(a.id);
    else w.alarms.set(a.id, a);
    return w;
  }

  schedule(w, flash = true) {
    if (flash) w.flash = true;
    this.dirty.add(w);
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        const dirty = [...this.dirty];
        this.dirty.clear();
        for (const d of dirty) {
          if (!d.row) continue;
          this.renderRow(d);
          if (!d.flash) continue;
          d.flash = false;
          d.row.classList.remove('flash');
          void d.row.offsetWidth;
          d.row.classList.add('flash');
        }
      });
    }
  }

  tickAges() {
    for (const w of this.wells.values()) {
      if (!w.row || !w.row.isConnected) continue;
      w.cells.age.textContent = units.age(this.age(w));
      const state = this.state(w);
      if (state !== w.state) this.schedule(w);
    }
  }

  live(m) {
    if (!this.tbody) return;
    if (m.type === 'readings') {
      for (const r of m.readings) {
        let w = this.wells.get(r.well_id);
        if (!w) {
          w = { id: r.well_id, name: null, field: null, ts: null, ageBase: 0, ageAt: Date.now(), values: {}, alarms: new Map(), spark: [], row: null };
          this.wells.set(r.well_id, w);
          this.makeRow(w);
          this.tbody.append(w.row);
        }
        const ts = Date.parse(r.ts);
        if (w.ts !== null && ts < w.ts) continue;
        w.ts = ts;
        w.ageBase = Math.max(0, (Date.now() - ts) / 1000);
        w.ageAt = Date.now();
        const values = {};
        for (const [k, v] of Object.entries(r)) if (k !== 'well_id' && k !== 'ts') values[k] = v;
        w.values = values;
        if (values.motor_current_a !== undefined) sparkAdd(w.spark, ts, values.motor_current_a);
        this.schedule(w);
      }
    } else if (m.type === 'alarm') {
      const w = this.applyAlarm(m.alarm);
      if (w) {
        this.schedule(w);
        this.renderChips();
      }
    } else if (m.type === 'lagged') {
      this.wells.clear();
      this.root.replaceChildren();
      this.load();
    }
  }
}
