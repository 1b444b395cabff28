// A small element builder: h('td', {class: 'num'}, 'text', child...). Text is always set as
// text (never parsed as HTML), so data from the server cannot inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'hidden') el.hidden = Boolean(v);
      else if (k === 'value') el.value = v;
      else el.setAttribute(k, v === true ? '' : v);
    }
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** "gas_lock" → "Gas lock". */
export function words(name) {
  if (!name) return '';
  const s = String(name).replaceAll('_', ' ');
  return s.charAt(0).toUpperCase() + s.slice(1);
}

export function time(rfc3339) {
  if (!rfc3339) return '–';
  const d = new Date(rfc3339);
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z').replace(/:\d\dZ$/, 'Z');
}

const pad2 = (n) => String(n).padStart(2, '0');

/** Tick labels of a time axis in UTC, like every time the console shows: `HH:MM` (with
 * seconds below a minute's spacing, `MM-DD` from a day's), the date (or the year) under the
 * first tick and where it changes. `secs`: the ticks (Unix seconds); `incr`: their spacing. */
export function utcTicks(secs, incr) {
  let prev = null;
  return secs.map((s) => {
    if (s === null || s === undefined) return null;
    const d = new Date(s * 1000);
    const day = `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
    let label;
    let context;
    if (incr >= 86400) {
      label = day.slice(5);
      context = day.slice(0, 4);
    } else {
      label = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}${incr < 60 ? `:${pad2(d.getUTCSeconds())}` : ''}`;
      context = day;
    }
    const shown = prev === context ? label : `${label}\n${context}`;
    prev = context;
    return shown;
  });
}

/** The uPlot options that put a chart's time axis in UTC: `tzDate` (ticks on round UTC
 * times, not the browser's zone), the x axis labelled "UTC" whose tick labels are also kept
 * in `box.dataset.xTicks` (JSON `[[seconds, label], ...]`), and the cursor's time in the
 * legend as the tables show it. */
export function utcTimeAxis(box) {
  return {
    tzDate: (ts) => {
      const d = new Date(ts * 1000);
      return new Date(d.getTime() + d.getTimezoneOffset() * 60000);
    },
    axis: {
      label: 'UTC',
      values: (u, splits, axisIdx, space, incr) => {
        const labels = utcTicks(splits, incr);
        box.dataset.xTicks = JSON.stringify(splits.map((s, i) => [s, labels[i]]));
        return labels;
      },
    },
    series: {
      label: 'Time (UTC)',
      value: (u, v) => (v === null || v === undefined ? '–' : time(new Date(v * 1000).toISOString())),
    },
  };
}
