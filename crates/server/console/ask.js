// Ask the fleet (issue 24): the question box's page. The question goes to POST /api/v1/ask;
// what the server understood comes back as an interpretation and is shown as chips (intent,
// wells, channels, aggregate, time, condition, threshold, ...). A chip can be edited: the
// console writes the edited interpretation back into a plain question (`compose`) and asks
// that, so every answer is the server's reading of a question the user can see, never a
// structure the console made up. A question not understood shows what was recognised and the
// rephrasings the server offers.

import { api, errorText } from './api.js';
import { h, words, time, utcTimeAxis } from './dom.js';
import { CHANNELS } from './units.js';

const STORED_UNITS = Object.fromEntries(CHANNELS.map((c) => [c.key, c.unit]));

/** The parser's own words for each channel (`channel_words` in the core). */
export const CHANNEL_WORDS = {
  frequency_hz: 'frequency',
  motor_current_a: 'motor current',
  motor_voltage_v: 'motor voltage',
  intake_pressure_psi: 'intake pressure',
  discharge_pressure_psi: 'discharge pressure',
  tubing_pressure_psi: 'tubing pressure',
  intake_temp_c: 'intake temperature',
  motor_temp_c: 'motor temperature',
  vibration_x_g: 'vibration x',
  vibration_y_g: 'vibration y',
  flow_rate_bpd: 'flow rate',
  gor_scf_bbl: 'GOR',
  water_cut_pct: 'water cut',
};
export const CONDITIONS = [
  'gas_interference', 'gas_lock', 'pump_off', 'closed_valve', 'tubing_leak', 'broken_shaft',
  'pump_wear', 'scale_plugging', 'overload', 'motor_overheat', 'power_fluctuation', 'sensor_fault',
];
const INTENTS = {
  value: 'Current value', aggregate: 'Aggregate', trend: 'Trend', compare: 'Comparison',
  filter: 'Wells past a threshold', top: 'Ranking', condition: 'Wells with a condition',
  alarms: 'Alarms', diagnosis: 'Diagnosis', status: 'Status', run_state: 'Running or stopped',
  no_data: 'Wells without data',
};
const AGG_WORDS = { avg: 'average', min: 'minimum', max: 'maximum' };
const OP_WORDS = { gt: 'above', ge: 'at least', lt: 'below', le: 'at most' };
/** Unit names of an interpretation → how a question writes them. */
const UNIT_WORDS = {
  psi: 'psi', kpa: 'kPa', mpa: 'MPa', bar: 'bar', degc: '°C', degf: '°F', bpd: 'bbl/d', m3d: 'm3/d',
  a: 'A', hz: 'Hz', v: 'V', g: 'g', pct: '%', scf_bbl: 'scf/bbl',
};
const DISPLAY_UNITS = { kpa: 'kPa', mpa: 'MPa', bar: 'bar', psi: 'psi', degf: 'fahrenheit', degc: 'celsius', m3d: 'm3/d', bpd: 'bbl/d' };
const TIMES = [
  'now', 'today', 'yesterday', 'last night', 'the last hour', 'the last 6 hours',
  'the last 24 hours', 'this week', 'last week', 'the last 7 days', 'the last 30 days',
];
const ALARM_STATES = { open: 'open', raised: 'unacknowledged', acknowledged: 'acknowledged', cleared: 'cleared' };
const STALE = ['15m', '30m', '1h', '2h', '6h', '1d'];

/** Channels in the parser's words; both vibration axes are "vibration". */
function channelPhrase(channels) {
  let list2 = channels.slice();
  if (list2.includes('vibration_x_g') && list2.includes('vibration_y_g')) {
    const i = Math.min(list2.indexOf('vibration_x_g'), list2.indexOf('vibration_y_g'));
    list2 = list2.filter((c) => c !== 'vibration_x_g' && c !== 'vibration_y_g');
    list2.splice(i, 0, 'vibration');
  }
  return list(list2.map((c) => (c === 'vibration' ? 'vibration' : CHANNEL_WORDS[c] || c)));
}

/** "a, b and c". */
function list(items) {
  if (items.length <= 1) return items.join('');
  return `${items.slice(0, -1).join(', ')} and ${items[items.length - 1]}`;
}

/** "1h" → "1 hour", "90m" → "90 minutes", as the time words read them. */
function durationWords(text) {
  const us = /^(\d+)us$/.exec(String(text).trim());
  if (us) {
    // "since yesterday" is a duration to the microsecond: said to the minute.
    const minutes = Math.max(1, Math.round(Number(us[1]) / 60e6));
    return `${minutes} minute${minutes === 1 ? '' : 's'}`;
  }
  const m = /^(\d+(?:\.\d+)?)([smhdw])$/.exec(String(text).trim());
  if (!m) return text;
  const unit = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' }[m[2]];
  return `${m[1]} ${unit}${m[1] === '1' ? '' : 's'}`;
}

/** A threshold as the asker wrote it ("176 °F"), not as stored (80 °C). */
function writtenFilter(f) {
  const m = /^(-?\d+(?:\.\d+)?)\s*(.*)$/.exec(f.written || '');
  return {
    op: f.op,
    value: m ? Number(m[1]) : f.value,
    unit: m ? m[2] : UNIT_WORDS[f.unit] || '',
    channels: f.channels.slice(),
  };
}

/** Symbols of the display units, to leave out the one a threshold already says. */
const UNIT_SYMBOLS = { kpa: 'kPa', mpa: 'MPa', bar: 'bar', psi: 'psi', degf: '°F', degc: '°C', m3d: 'm³/d', bpd: 'bbl/d' };

/** The editable parts of an interpretation (the answer's keys, in canonical names). */
export function partsOf(it) {
  return {
    intent: it.intent,
    wells: (it.groups && it.groups.length ? it.groups : it.wells || []).slice(),
    channels: (it.channels || []).slice(),
    condition: it.condition || null,
    agg: it.agg || null,
    time: it.time || null,
    filter: it.filter ? writtenFilter(it.filter) : null,
    limit: it.limit ?? null,
    order: it.order || null,
    alarm_state: it.alarm_state || null,
    run_state: it.run_state || null,
    stale_for: it.stale_for || null,
    units: (it.units || []).slice(),
    // A trend's bucket (asked for, "hourly", or chosen by the server): written back as asked.
    step: it.intent === 'trend' ? it.step || null : null,
    without: !!it.without,
  };
}

/** A question that says exactly these parts, in words the server's parser reads back. */
export function compose(p) {
  const wells = list(p.wells);
  const ch = channelPhrase(p.channels);
  const agg = p.agg && AGG_WORDS[p.agg] ? `${AGG_WORDS[p.agg]} ` : '';
  // "the last week" alone is the calendar week: the rolling one says its count.
  const when = p.time && p.time !== 'now' ? ` ${p.time.replace(/^the last week$/, 'the last 1 week')}` : '';
  const on = wells ? ` on ${wells}` : '';
  const of = wells ? ` of ${wells}` : '';
  const said = p.intent === 'filter' && p.filter ? p.filter.unit : null;
  const extra = p.units.filter((u) => UNIT_SYMBOLS[u] !== said);
  const shown = extra.length ? ` in ${extra.map((u) => DISPLAY_UNITS[u] || u).join(' and ')}` : '';
  switch (p.intent) {
    case 'value':
      return `${ch} of ${wells || 'all wells'} now${shown}`;
    case 'aggregate':
      return `${agg || 'average '}${ch}${of}${when || ' over the last 24 hours'}${shown}`;
    case 'trend': {
      const every = p.step ? ` every ${durationWords(p.step)}` : '';
      return `trend of ${agg}${ch}${of}${when}${every}${shown}`;
    }
    case 'compare':
      return `compare ${agg}${ch} of ${wells}${when}${shown}`;
    case 'filter': {
      const f = p.filter || { op: 'gt', value: 0, unit: '', channels: p.channels };
      const fch = channelPhrase(f.channels);
      const unit = f.unit ? ` ${f.unit}` : '';
      return `wells with ${agg}${fch} ${OP_WORDS[f.op] || 'above'} ${f.value}${unit}${on}${when}${shown}`;
    }
    case 'top': {
      if (p.limit) {
        return `${p.order === 'asc' ? 'bottom' : 'top'} ${p.limit} wells by ${agg}${ch}${on}${when}${shown}`;
      }
      return `which wells have the ${p.order === 'asc' ? 'lowest' : 'highest'} ${agg}${ch}${on}${when}${shown}`;
    }
    case 'condition': {
      const c = words(p.condition || 'gas_lock').toLowerCase();
      return `which wells had ${p.without ? 'no ' : ''}${c}${on}${when}`;
    }
    case 'alarms': {
      const state = p.alarm_state ? `${ALARM_STATES[p.alarm_state]} ` : '';
      if (p.without) return `which wells have no ${state}alarms${on}${when}`;
      return `${state}alarms${on}${when}`;
    }
    case 'diagnosis':
      if (p.condition) return `why is ${wells} ${words(p.condition).toLowerCase()}${when}`;
      return when ? `why did ${wells} trip${when}` : `what is wrong with ${wells}`;
    case 'status':
      return `status of ${wells}`;
    case 'run_state':
      return `which wells are ${p.run_state || 'stopped'}${on}`;
    case 'no_data':
      return `wells with no data for ${durationWords(p.stale_for || '1h')}${on}`;
    default:
      return `${ch}${of}`;
  }
}

/** Which chips an intent shows (its parts); the others stay hidden. */
const CHIPS = {
  value: ['intent', 'wells', 'channels', 'units'],
  aggregate: ['intent', 'wells', 'agg', 'channels', 'time', 'units'],
  trend: ['intent', 'wells', 'channels', 'time', 'units'],
  compare: ['intent', 'wells', 'agg', 'channels', 'time', 'units'],
  filter: ['intent', 'wells', 'agg', 'filter', 'time', 'units'],
  top: ['intent', 'wells', 'agg', 'channels', 'order', 'limit', 'time', 'units'],
  condition: ['intent', 'wells', 'condition', 'time'],
  alarms: ['intent', 'wells', 'alarm_state', 'time'],
  diagnosis: ['intent', 'wells', 'condition', 'time'],
  status: ['intent', 'wells'],
  run_state: ['intent', 'wells', 'run_state'],
  no_data: ['intent', 'wells', 'stale_for'],
};

function options(select, entries, selected) {
  for (const [value, label] of entries) select.append(h('option', { value }, label));
  select.value = selected;
  return select;
}

export class AskView {
  constructor(root, question) {
    this.root = root;
    this.question = question || '';
    this.seq = 0;
  }

  destroy() {
    this.seq += 1;
  }

  async load() {
    this.chips = h('div', { class: 'qchips', id: 'ask-chips' });
    this.answer = h('div', { id: 'ask-answer' });
    this.asked = h('p', { class: 'muted', id: 'ask-question' });
    this.root.replaceChildren(
      h('h1', null, 'Ask the fleet'),
      this.asked,
      this.chips,
      h('div', { class: 'card' }, this.answer),
    );
    if (!this.question) {
      this.asked.textContent = 'Type a question in the box above, for example:';
      this.answer.replaceChildren(this.suggestionList([
        'which wells have an open alarm',
        'average motor current of all wells yesterday',
        'wells with intake pressure below 500 psi',
        'which pumps are stopped',
      ]));
      return;
    }
    await this.ask(this.question);
  }

  async ask(question) {
    const seq = ++this.seq;
    this.question = question;
    setBox(question);
    this.asked.textContent = `Asked: “${question}”`;
    this.answer.replaceChildren(h('p', { class: 'muted' }, 'Answering…'));
    const r = await api('/api/v1/ask', {
      method: 'POST',
      body: { question, timezone: zoneOffset() },
    });
    if (seq !== this.seq) return;
    if (r.ok) {
      this.interpretation = r.data.interpretation;
      this.renderChips(partsOf(r.data.interpretation), true);
      this.renderAnswer(r.data);
    } else if (r.status === 422 && r.data && r.data.error && r.data.error.type === 'not_understood') {
      const d = r.data.error.details || {};
      const recognised = d.recognised || {};
      this.renderChips(partsOf({ intent: recognised.intent || null, ...recognised }), false);
      this.answer.replaceChildren(
        h('p', { class: 'error', id: 'ask-not-understood' }, r.data.error.message),
        d.unknown && d.unknown.length
          ? h('p', { class: 'muted' }, 'Words not understood here: ', ...d.unknown.map((w) => h('code', { class: 'unknown-word' }, w)))
          : null,
        h('p', null, 'Questions it would understand:'),
        this.suggestionList(d.suggestions || []),
      );
    } else {
      this.chips.replaceChildren();
      this.answer.replaceChildren(h('p', { class: 'error' }, errorText(r)));
    }
  }

  suggestionList(items) {
    return h('div', { class: 'suggestions' }, ...items.map((q) => h('button', {
      type: 'button', class: 'secondary suggestion', onclick: () => askQuestion(q),
    }, q)));
  }

  /** One chip per part; `editable` only for an understood question. */
  renderChips(p, editable) {
    const shown = CHIPS[p.intent] || Object.keys(p).filter((k) => p[k] !== null && (!Array.isArray(p[k]) || p[k].length));
    const chips = [];
    for (const part of shown) {
      const label = this.chipText(p, part);
      if (label === null) continue;
      const chip = h('span', { class: `qchip${label === '' ? ' empty' : ''}`, dataset: { part } },
        h('span', { class: 'qchip-key' }, CHIP_NAMES[part] || part), ' ',
        h('span', { class: 'qchip-value' }, label || 'any'));
      if (editable) {
        chip.classList.add('editable');
        chip.tabIndex = 0;
        chip.title = 'Change this part of the question';
        const open = () => this.edit(chip, p, part);
        chip.addEventListener('click', open);
        chip.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
      }
      chips.push(chip);
    }
    this.chips.replaceChildren(...chips);
  }

  chipText(p, part) {
    switch (part) {
      case 'intent': return p.intent ? INTENTS[p.intent] || p.intent : null;
      case 'wells': return p.wells.length ? p.wells.join(', ') : 'all wells';
      case 'channels': return p.channels.map((c) => CHANNEL_WORDS[c] || c).join(', ');
      case 'agg': return p.agg ? AGG_WORDS[p.agg] || p.agg : '';
      case 'time': return p.time || 'now';
      case 'condition': return p.condition ? words(p.condition) : '';
      case 'filter': return p.filter
        ? `${list(p.filter.channels.map((c) => CHANNEL_WORDS[c] || c))} ${OP_WORDS[p.filter.op]} ${p.filter.value} ${p.filter.unit}`.trim()
        : '';
      case 'limit': return p.limit ? String(p.limit) : '';
      case 'order': return p.order === 'asc' ? 'lowest first' : 'highest first';
      case 'alarm_state': return p.alarm_state ? ALARM_STATES[p.alarm_state] : 'any';
      case 'run_state': return p.run_state || '';
      case 'stale_for': return p.stale_for ? `for ${durationWords(p.stale_for)}` : '';
      case 'units': return p.units.length ? p.units.map((u) => DISPLAY_UNITS[u] || u).join(', ') : 'as stored';
      default: return null;
    }
  }

  /** Replaces a chip by its editor; OK asks the question with that part changed. */
  edit(chip, p, part) {
    if (chip.classList.contains('editing')) return;
    const next = structuredClone(p);
    let input;
    let read;
    switch (part) {
      case 'intent':
        input = options(h('select'), Object.entries(INTENTS), p.intent);
        read = () => { next.intent = input.value; };
        break;
      case 'wells':
        input = h('input', { type: 'text', value: p.wells.join(', '), placeholder: 'ESP-001, North Pad… (empty: all wells)', size: 28 });
        read = () => { next.wells = input.value.split(',').map((s) => s.trim()).filter(Boolean); };
        break;
      case 'channels':
        input = h('select', { multiple: true, size: 6 });
        options(input, Object.entries(CHANNEL_WORDS), '');
        for (const o of input.options) o.selected = p.channels.includes(o.value);
        read = () => { next.channels = [...input.selectedOptions].map((o) => o.value); };
        break;
      case 'agg':
        input = options(h('select'), Object.entries(AGG_WORDS), p.agg || 'avg');
        read = () => { next.agg = input.value; };
        break;
      case 'time': {
        const entries = TIMES.map((t) => [t, t]);
        if (p.time && !TIMES.includes(p.time)) entries.unshift([p.time, p.time]);
        input = options(h('select'), entries, p.time || 'now');
        read = () => { next.time = input.value === 'now' ? null : input.value; };
        break;
      }
      case 'condition':
        input = options(h('select'), CONDITIONS.map((c) => [c, words(c)]), p.condition || 'gas_lock');
        read = () => { next.condition = input.value; };
        break;
      case 'filter': {
        const f = p.filter || { op: 'gt', value: 0, unit: '', channels: p.channels.length ? p.channels : ['motor_current_a'] };
        const fch = options(h('select', { class: 'filter-channel' }), Object.entries(CHANNEL_WORDS), f.channels[0]);
        const op = options(h('select', { class: 'filter-op' }), Object.entries(OP_WORDS), f.op);
        const value = h('input', { type: 'number', class: 'filter-value', value: String(f.value), step: 'any', size: 6 });
        // Another channel's threshold is in its stored unit (the parser assumes it unsaid).
        const unitLabel = h('span', { class: 'filter-unit' }, f.unit);
        fch.addEventListener('change', () => {
          unitLabel.textContent = fch.value === f.channels[0] ? f.unit : (STORED_UNITS[fch.value] || '');
        });
        input = h('span', null, fch, ' ', op, ' ', value, ' ', unitLabel);
        read = () => {
          const sameChannel = fch.value === f.channels[0];
          next.filter = {
            op: op.value,
            value: Number(value.value),
            unit: sameChannel ? f.unit : '',
            channels: sameChannel ? f.channels : [fch.value],
          };
          next.channels = next.filter.channels;
        };
        break;
      }
      case 'limit':
        input = h('input', { type: 'number', min: 1, max: 100, value: String(p.limit || 5), size: 4 });
        read = () => { next.limit = Math.max(1, Math.round(Number(input.value) || 5)); };
        break;
      case 'order':
        input = options(h('select'), [['desc', 'highest first'], ['asc', 'lowest first']], p.order || 'desc');
        read = () => { next.order = input.value; };
        break;
      case 'alarm_state':
        input = options(h('select'), [['', 'any'], ...Object.entries(ALARM_STATES)], p.alarm_state || '');
        read = () => { next.alarm_state = input.value || null; };
        break;
      case 'run_state':
        input = options(h('select'), [['stopped', 'stopped'], ['running', 'running']], p.run_state || 'stopped');
        read = () => { next.run_state = input.value; };
        break;
      case 'stale_for': {
        const entries = STALE.map((s) => [s, durationWords(s)]);
        if (p.stale_for && !STALE.includes(p.stale_for)) entries.unshift([p.stale_for, durationWords(p.stale_for)]);
        input = options(h('select'), entries, p.stale_for || '1h');
        read = () => { next.stale_for = input.value; };
        break;
      }
      case 'units':
        input = options(h('select'), [['', 'as stored'], ...Object.entries(DISPLAY_UNITS)], p.units[0] || '');
        read = () => { next.units = input.value ? [input.value] : []; };
        break;
      default:
        return;
    }
    const ok = h('button', { type: 'submit', class: 'qchip-ok' }, 'Ask');
    const cancel = h('button', {
      type: 'button', class: 'secondary',
      onclick: (e) => { e.stopPropagation(); this.renderChips(p, true); },
    }, 'Cancel');
    const form = h('form', { class: 'qchip-form' }, input, ok, cancel);
    form.addEventListener('click', (e) => e.stopPropagation());
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      read();
      askQuestion(compose(next));
    });
    chip.classList.add('editing');
    chip.replaceChildren(h('span', { class: 'qchip-key' }, CHIP_NAMES[part] || part), ' ', form);
    input.focus && input.focus();
  }

  renderAnswer(data) {
    const a = data.answer;
    const parts = [h('p', { class: 'answer-text', id: 'ask-text' }, a.text)];
    if (a.wells && a.wells.length) {
      parts.push(h('p', { class: 'answer-wells' }, 'Wells: ',
        ...a.wells.flatMap((w, i) => [i ? ', ' : '', h('a', { href: `#/well/${encodeURIComponent(w)}` }, w)])));
    }
    const table = valuesTable(a.values || []);
    if (table) parts.push(table);
    if (a.series && a.series.length) {
      const box = h('div', { class: 'ask-series', id: 'ask-series' });
      parts.push(box);
      drawSeries(box, a.series);
    }
    if (data.suggestions && data.suggestions.length) {
      parts.push(h('p', { class: 'muted' }, 'Next questions:'), this.suggestionList(data.suggestions));
    }
    this.answer.replaceChildren(...parts);
  }
}

const CHIP_NAMES = {
  intent: 'Asking for', wells: 'Wells', channels: 'Channels', agg: 'Aggregate', time: 'Time',
  condition: 'Condition', filter: 'Threshold', limit: 'How many', order: 'Order',
  alarm_state: 'Alarm state', run_state: 'Run state', stale_for: 'No data', units: 'Units',
};

/** A number as the answer's text writes it: at most 2 decimals (3 below 1), no trailing zeros. */
function fmtNumber(v) {
  if (!Number.isFinite(v)) return 'n/a';
  const digits = Math.abs(v) >= 100 ? 1 : Math.abs(v) >= 1 ? 2 : 3;
  return String(Number(v.toFixed(digits)));
}

/** A table of the answer's values: scalar keys as columns (well first), nested ones left out. */
function valuesTable(values) {
  if (!values.length) return null;
  const keys = [];
  for (const v of values) {
    for (const [k, x] of Object.entries(v)) {
      if (x !== null && typeof x === 'object') continue;
      if (!keys.includes(k)) keys.push(k);
    }
  }
  const first = ['well_id', 'channel', 'value', 'unit'];
  const rank = (k) => (first.includes(k) ? first.indexOf(k) : first.length);
  keys.sort((a, b) => rank(a) - rank(b));
  const cell = (k, x) => {
    if (x === null || x === undefined) return h('td', null, '–');
    if (k === 'well_id') return h('td', null, h('a', { href: `#/well/${encodeURIComponent(x)}` }, x));
    if (k === 'channel') return h('td', null, CHANNEL_WORDS[x] || x);
    if (typeof x === 'number') return h('td', { class: 'num' }, fmtNumber(x));
    if (/^\d{4}-\d\d-\d\dT/.test(String(x))) return h('td', null, time(x));
    return h('td', null, String(x));
  };
  return h('table', { class: 'grid ask-values', id: 'ask-values' },
    h('thead', null, h('tr', null, ...keys.map((k) => h('th', null, words(k))))),
    h('tbody', null, ...values.map((v) => h('tr', { dataset: { well: v.well_id || '' } }, ...keys.map((k) => cell(k, v[k]))))));
}

/** The answer's series, one chart per channel with one line per well (uPlot, loaded on use). */
async function drawSeries(box, series) {
  const { default: uPlot } = await import('./vendor/uplot/uPlot.esm.js');
  const colors = ['#0f6fa8', '#d9480f', '#2f9e5a', '#7048e8', '#c2255c', '#1098ad'];
  const byChannel = new Map();
  for (const s of series) {
    if (!byChannel.has(s.channel)) byChannel.set(s.channel, []);
    byChannel.get(s.channel).push(s);
  }
  for (const [channel, list] of byChannel) {
    // One time axis for all wells of the chart: the union of their bucket times.
    const ts = [...new Set(list.flatMap((s) => s.ts.map((t) => Date.parse(t) / 1000)))].sort((a, b) => a - b);
    const at = new Map(ts.map((t, i) => [t, i]));
    const data = [ts, ...list.map((s) => {
      const col = new Array(ts.length).fill(null);
      s.ts.forEach((t, i) => { col[at.get(Date.parse(t) / 1000)] = s.values[i]; });
      return col;
    })];
    const chart = h('div', { class: 'chart', dataset: { channel } },
      h('h2', null, `${words(CHANNEL_WORDS[channel] || channel)} (${list[0].unit}), ${list[0].agg} per ${list[0].step}`));
    box.append(chart);
    const width = Math.max(320, Math.min(1100, box.clientWidth - 14));
    const utc = utcTimeAxis(chart);
    // eslint-disable-next-line no-new
    new uPlot({
      width, height: 220,
      scales: { x: { time: true } },
      tzDate: utc.tzDate,
      axes: [utc.axis, {}],
      series: [utc.series, ...list.map((s, i) => ({ label: s.well_id, stroke: colors[i % colors.length], width: 1.5 }))],
    }, data, chart);
  }
}

/** The display zone of this browser as `+HH:MM` ("today" and "yesterday" are read in it). */
function zoneOffset() {
  const m = -new Date().getTimezoneOffset();
  const sign = m < 0 ? '-' : '+';
  const a = Math.abs(m);
  return `${sign}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
}

function setBox(question) {
  const box = document.getElementById('ask-input');
  if (box && box.value !== question) box.value = question;
}

/** Shows the answer page for `question` (a new history entry, so Back returns to the last one). */
export function askQuestion(question) {
  const hash = `#/ask/${encodeURIComponent(question)}`;
  if (location.hash === hash) {
    window.dispatchEvent(new HashChangeEvent('hashchange'));
  } else {
    location.hash = hash;
  }
}
