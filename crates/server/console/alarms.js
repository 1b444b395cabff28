// Alarms: the list with filters (state, well, text), acknowledge with a comment (only for
// roles with alarms:ack; the server checks again), evidence and recommended action, and live
// changes as they happen.

import { api, can, errorText } from './api.js';
import { h, words, time } from './dom.js';

const SEVERITY_RANK = { critical: 0, major: 1, minor: 2 };

/** Alarms one page reads; "Older alarms" reads the next through the answer's next_cursor. */
export const PAGE = 200;

/** A page of `GET /api/v1/alarms`, newest first: of one well (or all), after `cursor`. */
export function alarmsPath(wellId, cursor) {
  const query = [`limit=${PAGE}`];
  if (wellId) query.push(`well_id=${encodeURIComponent(wellId)}`);
  if (cursor) query.push(`cursor=${encodeURIComponent(cursor)}`);
  return `/api/v1/alarms?${query.join('&')}`;
}

export class AlarmsView {
  /** `openAlarms`: a function giving the shell's open alarms (read once per sign-in and kept
   * current), shown whatever page they are on; `wellId`: only this well's alarms. */
  constructor(root, openAlarms, wellId) {
    this.root = root;
    this.openAlarms = openAlarms || null;
    this.wellId = wellId || null;
    this.alarms = new Map();
    this.cursor = null;
    // A well's page shows its alarm history (cleared ones too); the fleet's list, what is open.
    this.filter = { state: this.wellId ? 'all' : 'open', text: '' };
  }

  async load() {
    const [r, open] = await Promise.all([
      api(alarmsPath(this.wellId, null)),
      this.openAlarms ? this.openAlarms() : Promise.resolve(null),
    ]);
    if (!r.ok) {
      this.root.replaceChildren(h('p', { class: 'error' }, errorText(r)));
      return;
    }
    this.alarms = new Map();
    if (open) for (const a of open.values()) this.alarms.set(a.id, a);
    this.show(r.data);
  }

  /** Adds a page of `GET /api/v1/alarms` (the first one read elsewhere, e.g. by the well page). */
  show(page) {
    for (const a of page.alarms) this.alarms.set(a.id, a);
    this.cursor = page.next_cursor || null;
    if (this.tbody) this.render(); else this.build();
  }

  async older() {
    if (!this.cursor) return;
    this.more.disabled = true;
    const r = await api(alarmsPath(this.wellId, this.cursor));
    this.more.disabled = false;
    if (r.ok) {
      this.moreError.textContent = '';
      this.show(r.data);
    } else {
      this.moreError.textContent = errorText(r);
    }
  }

  build() {
    const state = h('select', {
      id: 'alarm-state',
      onchange: (e) => { this.filter.state = e.target.value; this.render(); },
    },
    h('option', { value: 'open' }, 'Open (raised or acknowledged)'),
    h('option', { value: 'raised' }, 'Raised, not acknowledged'),
    h('option', { value: 'acknowledged' }, 'Acknowledged'),
    h('option', { value: 'cleared' }, 'Cleared'),
    h('option', { value: 'all' }, 'All'));
    state.value = this.filter.state;
    const search = h('input', {
      type: 'search', id: 'alarm-search', placeholder: 'Well or condition…',
      oninput: (e) => { this.filter.text = e.target.value.trim().toLowerCase(); this.render(); },
    });
    this.count = h('span', { class: 'muted' });
    this.tbody = h('tbody', { id: 'alarm-rows' });
    const table = h('table', { class: 'grid', id: 'alarm-table' },
      h('thead', null, h('tr', null,
        h('th', null, 'Severity'), h('th', null, 'Well'), h('th', null, 'Condition'),
        h('th', null, 'State'), h('th', null, 'Since'), h('th', null, 'Ended'),
        h('th', null, 'Confidence'), h('th', null, 'Acknowledged'), h('th', null, 'Evidence and action'),
        h('th', null, 'History'), h('th', null, ''))),
      this.tbody);
    const title = this.wellId ? null : h('h1', null, 'Alarms');
    this.more = h('button', { type: 'button', class: 'secondary', id: 'alarms-older', onclick: () => this.older() }, 'Older alarms');
    this.moreError = h('span', { class: 'error' });
    this.root.replaceChildren(...[title, h('div', { class: 'toolbar' }, state, search, this.count), table,
      h('div', { class: 'toolbar' }, this.more, this.moreError)].filter(Boolean));
    this.render();
  }

  shown() {
    const f = this.filter;
    return [...this.alarms.values()].filter((a) => {
      if (f.state === 'open' && a.state === 'cleared') return false;
      if (!['open', 'all'].includes(f.state) && a.state !== f.state) return false;
      if (f.text && !`${a.well_id} ${a.condition}`.toLowerCase().includes(f.text)) return false;
      return true;
    }).sort((a, b) => {
      const open = (x) => (x.state === 'cleared' ? 1 : 0);
      return open(a) - open(b)
        || SEVERITY_RANK[a.severity] - SEVERITY_RANK[b.severity]
        || (a.started_at < b.started_at ? 1 : -1);
    });
  }

  render() {
    if (!this.tbody) return;
    const rows = this.shown().map((a) => this.row(a));
    this.tbody.replaceChildren(...rows);
    if (rows.length === 0) {
      this.tbody.append(h('tr', null, h('td', { colspan: 11, class: 'muted' }, 'No alarms match.')));
    }
    this.count.textContent = `${rows.length} alarm${rows.length === 1 ? '' : 's'}`;
    this.more.hidden = !this.cursor;
  }

  row(a) {
    const evidence = (a.detail && a.detail.evidence) || [];
    const action = a.detail && a.detail.action;
    const details = h('details', null,
      h('summary', null, evidence.length ? `${evidence.length} finding${evidence.length === 1 ? '' : 's'}` : 'action'),
      h('ul', null, ...evidence.map((e) => h('li', null,
        `${words(e.feature)} ${e.value === null ? 'n/a' : e.value} ${e.relation} ${e.threshold}`))),
      action ? h('p', { class: 'action' }, action) : null);
    const acked = a.acknowledged_by
      ? h('span', null, `${a.acknowledged_by} ${time(a.acknowledged_at)}`, a.comment ? h('div', { class: 'muted' }, `“${a.comment}”`) : null)
      : '–';
    return h('tr', { dataset: { alarm: a.id, state: a.state } },
      h('td', null, h('span', { class: `sev sev-${a.severity}` }, a.severity)),
      h('td', null, h('a', { href: `#/well/${encodeURIComponent(a.well_id)}` }, a.well_id)),
      h('td', null, words(a.condition)),
      h('td', { class: `st-${a.state}` }, a.state),
      h('td', null, time(a.started_at)),
      h('td', null, time(a.ended_at)),
      h('td', { class: 'num' }, `${Math.round(a.confidence * 100)} %`),
      h('td', null, acked),
      h('td', null, details),
      h('td', null, this.history(a)),
      h('td', null, this.ackControl(a)));
  }

  /** The alarm's life, who and when: raised and cleared by the diagnostics (data time),
   * acknowledged by a person; for admins, the notifications sent about it. */
  history(a) {
    const list = h('ol', { class: 'history', dataset: { history: a.id } });
    const steps = 1 + (a.acknowledged_by ? 1 : 0) + (a.ended_at ? 1 : 0);
    const box = h('details', { class: 'alarm-history' }, h('summary', null, `${steps} step${steps === 1 ? '' : 's'}`), list);
    box.addEventListener('toggle', async () => {
      if (!box.open) return;
      const steps = [h('li', { class: 'h-raised' }, `Raised ${time(a.started_at)} by the diagnostics (confidence ${Math.round(a.confidence * 100)} %)`)];
      if (a.acknowledged_by) {
        steps.push(h('li', { class: 'h-acknowledged' }, `Acknowledged ${time(a.acknowledged_at)} by ${a.acknowledged_by}`,
          a.comment ? `: “${a.comment}”` : ''));
      }
      if (a.ended_at) steps.push(h('li', { class: 'h-cleared' }, `Cleared ${time(a.ended_at)} (the condition ended)`));
      list.replaceChildren(...steps);
      if (!can('notifications:manage')) return;
      const r = await api(`/api/v1/notifications/deliveries?alarm_id=${a.id}`);
      if (!r.ok) return;
      for (const d of r.data.deliveries.slice().reverse()) {
        list.append(h('li', { class: `h-notify dl-${d.state}` },
          `Notified (${d.event.replace('alarm.', '')}) channel #${d.channel_id}: ${d.state} after ${d.attempts} attempt${d.attempts === 1 ? '' : 's'}`,
          d.last_error ? ` (${d.last_error})` : ''));
      }
    });
    return box;
  }

  ackControl(a) {
    // Viewers and analysts see no button at all; the server refuses them anyway.
    if (a.state !== 'raised' || !can('alarms:ack')) return null;
    const button = h('button', { type: 'button', class: 'ack', dataset: { ack: a.id } }, 'Acknowledge');
    const cell = h('div', null, button);
    button.addEventListener('click', () => {
      const comment = h('input', { type: 'text', class: 'ack-comment', maxlength: 2000, placeholder: 'Comment (optional)' });
      const error = h('span', { class: 'error' });
      const confirm = h('button', { type: 'submit', class: 'ack-confirm' }, 'Confirm');
      const form = h('form', { class: 'ack-form' }, comment, confirm,
        h('button', { type: 'button', class: 'secondary', onclick: () => cell.replaceChildren(button) }, 'Cancel'), error);
      form.addEventListener('submit', async (e) => {
        e.preventDefault();
        confirm.disabled = true;
        const body = comment.value.trim() ? { comment: comment.value.trim() } : {};
        const r = await api(`/api/v1/alarms/${a.id}/ack`, { method: 'POST', body });
        if (r.ok) {
          this.alarms.set(r.data.id, r.data);
          this.render();
        } else {
          error.textContent = errorText(r);
          confirm.disabled = false;
        }
      });
      cell.replaceChildren(form);
      comment.focus();
    });
    return cell;
  }

  live(m) {
    if (m.type === 'alarm' && (!this.wellId || m.alarm.well_id === this.wellId)) {
      this.alarms.set(m.alarm.id, m.alarm);
      this.render();
    } else if (m.type === 'lagged') {
      this.load();
    }
  }
}
