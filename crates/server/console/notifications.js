// Notifications (admins only; the server checks again): channels (signed webhooks, e-mail),
// routing rules (events, conditions, minimum severity, wells / PREFIX* / fields), test
// messages and the delivery log with retries and dead letters. A generated webhook secret is
// shown once, right after the channel is created; it is never listed.

import { api, can, errorText } from './api.js';
import { h, time, words } from './dom.js';

const EVENTS = ['alarm.raised', 'alarm.acknowledged', 'alarm.cleared'];

function list(text) {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  return items.length ? items : undefined;
}

export class NotificationsView {
  constructor(root) {
    this.root = root;
    this.channels = [];
  }

  async load() {
    if (!can('notifications:manage')) {
      this.root.replaceChildren(h('p', { class: 'muted' }, 'Notifications are managed by admins.'));
      return;
    }
    this.channelBox = h('div', { id: 'channels' });
    this.ruleBox = h('div', { id: 'rules' });
    this.deliveryBox = h('tbody', { id: 'delivery-rows' });
    this.secretBox = h('div', { id: 'channel-secret', class: 'secret-once', hidden: true });
    this.ruleChannel = h('select', { id: 'rule-channel' });
    const state = h('select', { id: 'delivery-state' },
      h('option', { value: '' }, 'All deliveries'),
      h('option', { value: 'pending' }, 'Pending'),
      h('option', { value: 'delivered' }, 'Delivered'),
      h('option', { value: 'dead' }, 'Dead (given up)'));
    state.addEventListener('change', () => { this.state = state.value; this.loadDeliveries(); });
    const refresh = h('button', { type: 'button', class: 'secondary', id: 'delivery-refresh' }, 'Refresh');
    refresh.addEventListener('click', () => this.loadDeliveries());
    this.root.replaceChildren(
      h('h1', null, 'Notifications'),
      h('div', { class: 'card' }, h('h2', null, 'Channels'), this.channelForm(), this.secretBox, this.channelBox),
      h('div', { class: 'card' }, h('h2', null, 'Rules'), this.ruleForm(), this.ruleBox),
      h('div', { class: 'card' }, h('h2', null, 'Delivery log (newest first)'),
        h('div', { class: 'toolbar' }, state, refresh),
        h('table', { class: 'grid', id: 'delivery-table' },
          h('thead', null, h('tr', null, ...['Created', 'Event', 'Channel', 'State', 'Attempts', 'Next attempt', 'Last error', 'Key'].map((t) => h('th', null, t)))),
          this.deliveryBox)),
    );
    await this.reload();
  }

  async reload() {
    await this.loadChannels();
    await Promise.all([this.loadRules(), this.loadDeliveries()]);
  }

  channelName(id) {
    const c = this.channels.find((x) => x.id === id);
    return c ? c.name : id === 0 ? '–' : `#${id}`;
  }

  channelForm() {
    const name = h('input', { id: 'channel-name', placeholder: 'name', required: true, autocomplete: 'off' });
    const kind = h('select', { id: 'channel-kind' }, h('option', { value: 'webhook' }, 'Webhook'), h('option', { value: 'email' }, 'E-mail'));
    const target = h('input', { id: 'channel-target', placeholder: 'webhook URL, or e-mail addresses (comma-separated)', required: true, size: 40 });
    const error = h('p', { class: 'error', id: 'channel-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'toolbar admin-form', id: 'channel-form' }, name, kind, target, h('button', { type: 'submit' }, 'Add channel'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { name: name.value.trim(), kind: kind.value };
      if (kind.value === 'webhook') body.url = target.value.trim();
      else body.to = list(target.value) || [];
      const r = await api('/api/v1/notifications/channels', { method: 'POST', body });
      if (!r.ok) {
        error.textContent = errorText(r);
        error.hidden = false;
        return;
      }
      error.hidden = true;
      form.reset();
      if (r.data.secret) {
        this.secretBox.replaceChildren(
          h('p', null, `Signing secret of “${r.data.name}”. Copy it to the receiver now: it is shown only once.`),
          h('code', { id: 'channel-secret-value' }, r.data.secret));
        this.secretBox.hidden = false;
      }
      await this.reload();
    });
    return h('div', null, form, error);
  }

  async loadChannels() {
    const r = await api('/api/v1/notifications/channels');
    if (!r.ok) {
      this.channelBox.replaceChildren(h('p', { class: 'error' }, errorText(r)));
      return;
    }
    this.channels = r.data.channels;
    this.ruleChannel.replaceChildren(...this.channels.map((c) => h('option', { value: String(c.id) }, c.name)));
    const error = h('p', { class: 'error', role: 'alert', hidden: true });
    this.channelBox.replaceChildren(error, h('table', { class: 'grid', id: 'channel-table' },
      h('thead', null, h('tr', null, ...['Name', 'Kind', 'Target', 'Signed', 'State', 'Created', ''].map((t) => h('th', null, t)))),
      h('tbody', null, ...this.channels.map((c) => {
        const test = h('button', { type: 'button', class: 'secondary channel-test' }, 'Send test');
        test.addEventListener('click', async () => {
          const t = await api(`/api/v1/notifications/channels/${c.id}/test`, { method: 'POST' });
          error.textContent = t.ok ? `Test queued (${t.data.key}).` : errorText(t);
          error.className = t.ok ? 'muted' : 'error';
          error.hidden = false;
          setTimeout(() => this.loadDeliveries(), 1000);
        });
        const remove = h('button', { type: 'button', class: 'secondary channel-delete' }, 'Delete');
        remove.addEventListener('click', async () => {
          if (remove.dataset.confirm !== '1') {
            remove.dataset.confirm = '1';
            remove.textContent = 'Confirm delete (and its rules)';
            return;
          }
          const d = await api(`/api/v1/notifications/channels/${c.id}`, { method: 'DELETE' });
          if (!d.ok) {
            error.textContent = errorText(d);
            error.hidden = false;
          }
          await this.reload();
        });
        return h('tr', { dataset: { channel: c.id } },
          h('td', null, c.name), h('td', null, c.kind), h('td', null, c.url || (c.to || []).join(', ')),
          h('td', null, c.has_secret ? 'HMAC-SHA256' : '–'),
          // Disabled by the server after a dead delivery; a test that gets through enables it.
          h('td', { class: c.disabled ? 'dl-dead channel-state' : 'dl-delivered channel-state', title: c.disabled ? `Since ${time(c.disabled_since)}: ${c.disabled_reason || ''}. Send a test to enable it.` : '' },
            c.disabled ? 'disabled (send a test to enable)' : 'active'),
          h('td', null, `${time(c.created_at)} by ${c.created_by}`),
          h('td', null, test, ' ', remove));
      }))));
  }

  ruleForm() {
    const name = h('input', { id: 'rule-name', placeholder: 'name', required: true, autocomplete: 'off' });
    const events = EVENTS.map((ev) => h('label', { class: 'check' },
      h('input', { type: 'checkbox', value: ev, class: 'rule-event', checked: ev === 'alarm.raised' }), ev.replace('alarm.', '')));
    const conditions = h('input', { id: 'rule-conditions', placeholder: 'conditions (empty: all)' });
    const severity = h('select', { id: 'rule-severity' },
      h('option', { value: '' }, 'any severity'), h('option', { value: 'minor' }, 'minor and above'),
      h('option', { value: 'major' }, 'major and above'), h('option', { value: 'critical' }, 'critical only'));
    const wells = h('input', { id: 'rule-wells', placeholder: 'wells or PREFIX* (empty: all)' });
    const fields = h('input', { id: 'rule-fields', placeholder: 'fields (well groups)' });
    const error = h('p', { class: 'error', id: 'rule-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'toolbar admin-form', id: 'rule-form' },
      name, this.ruleChannel, ...events, conditions, severity, wells, fields, h('button', { type: 'submit' }, 'Add rule'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = {
        name: name.value.trim(),
        channel_id: Number(this.ruleChannel.value),
        events: [...form.querySelectorAll('.rule-event')].filter((x) => x.checked).map((x) => x.value),
        conditions: list(conditions.value),
        min_severity: severity.value || undefined,
        wells: list(wells.value),
        fields: list(fields.value),
      };
      const r = await api('/api/v1/notifications/rules', { method: 'POST', body });
      if (!r.ok) {
        error.textContent = errorText(r);
        error.hidden = false;
        return;
      }
      error.hidden = true;
      form.reset();
      await this.loadRules();
    });
    return h('div', null, form, error);
  }

  async loadRules() {
    const r = await api('/api/v1/notifications/rules');
    if (!r.ok) {
      this.ruleBox.replaceChildren(h('p', { class: 'error' }, errorText(r)));
      return;
    }
    const all = (x) => (x && x.length ? x.join(', ') : 'all');
    this.ruleBox.replaceChildren(h('table', { class: 'grid', id: 'rule-table' },
      h('thead', null, h('tr', null, ...['Name', 'Channel', 'Events', 'Conditions', 'Severity', 'Wells', 'Fields', ''].map((t) => h('th', null, t)))),
      h('tbody', null, ...r.data.rules.map((rule) => {
        const remove = h('button', { type: 'button', class: 'secondary rule-delete' }, 'Delete');
        remove.addEventListener('click', async () => {
          await api(`/api/v1/notifications/rules/${rule.id}`, { method: 'DELETE' });
          await this.loadRules();
        });
        return h('tr', { dataset: { rule: rule.id } },
          h('td', null, rule.name), h('td', null, this.channelName(rule.channel_id)),
          h('td', null, rule.events.map((e) => e.replace('alarm.', '')).join(', ')),
          h('td', null, rule.conditions ? rule.conditions.map(words).join(', ') : 'all'),
          h('td', null, rule.min_severity ? `${rule.min_severity}+` : 'any'),
          h('td', null, rule.wells || rule.fields ? all(rule.wells) : 'all'), h('td', null, rule.fields ? all(rule.fields) : '–'),
          h('td', null, remove));
      }))));
  }

  async loadDeliveries() {
    const q = new URLSearchParams({ limit: '200' });
    if (this.state) q.set('state', this.state);
    const r = await api(`/api/v1/notifications/deliveries?${q}`);
    if (!r.ok) {
      this.deliveryBox.replaceChildren(h('tr', null, h('td', { colspan: 8, class: 'error' }, errorText(r))));
      return;
    }
    const rows = r.data.deliveries.map((d) => h('tr', { dataset: { delivery: d.id, state: d.state } },
      h('td', null, time(d.created_at)), h('td', null, d.event), h('td', null, this.channelName(d.channel_id)),
      h('td', { class: `dl-${d.state}` }, d.state), h('td', { class: 'num' }, d.attempts),
      h('td', null, d.state === 'pending' ? time(d.next_attempt_at) : '–'), h('td', null, d.last_error || '–'),
      h('td', { class: 'muted' }, d.key)));
    this.deliveryBox.replaceChildren(...(rows.length ? rows : [h('tr', null, h('td', { colspan: 8, class: 'muted' }, 'Nothing sent yet.'))]));
  }
}
