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
