// Administration (admins only; the server checks again): users, API keys and the audit trail,
// read-only here. Changes go through `espwatch users|apikeys` or the API (see /docs).

import { api, can, errorText } from './api.js';
import { h, time } from './dom.js';

export class AdminView {
  constructor(root) {
    this.root = root;
  }

  async load() {
    if (!can('users:manage')) {
      this.root.replaceChildren(h('p', { class: 'muted' }, 'Administration is for admins.'));
      return;
    }
    const kindFilter = h('input', { type: 'search', id: 'audit-kind', placeholder: 'kind, e.g. login_failure' });
    const [users, keys] = await Promise.all([api('/api/v1/users'), api('/api/v1/apikeys')]);
    this.audit = h('tbody', { id: 'audit-rows' });
    kindFilter.addEventListener('change', () => this.loadAudit(kindFilter.value.trim()));
    this.root.replaceChildren(
      h('h1', null, 'Administration'),
      h('div', { class: 'card' }, h('h2', null, 'Users'), users.ok ? this.usersTable(users.data.users) : h('p', { class: 'error' }, errorText(users))),
      h('div', { class: 'card' }, h('h2', null, 'API keys'), keys.ok ? this.keysTable(keys.data.keys) : h('p', { class: 'error' }, errorText(keys))),
      h('div', { class: 'card' }, h('h2', null, 'Audit trail (newest first)'),
        h('div', { class: 'toolbar' }, kindFilter),
        h('table', { class: 'grid', id: 'audit-table' },
          h('thead', null, h('tr', null, ...['Time', 'Kind', 'Actor', 'Role', 'Route', 'Status', 'Source'].map((t) => h('th', null, t)))),
          this.audit)),
    );
    this.loadAudit('');
  }

  usersTable(users) {
    return h('table', { class: 'grid', id: 'users-table' },
      h('thead', null, h('tr', null, ...['User', 'Role', 'Wells', 'State', 'Created'].map((t) => h('th', null, t)))),
      h('tbody', null, ...users.map((u) => h('tr', { dataset: { user: u.name } },
        h('td', null, u.name), h('td', null, u.role), h('td', null, u.wells ? u.wells.join(', ') : 'all'),
        h('td', null, u.disabled ? 'disabled' : u.locked_until ? `locked until ${time(u.locked_until)}` : 'active'),
        h('td', null, time(u.created_at))))));
  }

  keysTable(keys) {
    return h('table', { class: 'grid', id: 'keys-table' },
      h('thead', null, h('tr', null, ...['Key', 'Name', 'Role', 'Wells', 'Status', 'Expires', 'Created by'].map((t) => h('th', null, t)))),
      h('tbody', null, ...keys.map((k) => h('tr', { dataset: { key: k.id } },
        h('td', null, k.id), h('td', null, k.name), h('td', null, k.role), h('td', null, k.wells ? k.wells.join(', ') : 'all'),
        h('td', null, k.status), h('td', null, time(k.expires_at)), h('td', null, k.created_by)))));
  }

  async loadAudit(kind) {
    const q = new URLSearchParams({ limit: '200' });
    if (kind) q.set('kind', kind);
    const r = await api(`/api/v1/audit?${q}`);
    if (!r.ok) {
      this.audit.replaceChildren(h('tr', null, h('td', { colspan: 7, class: 'error' }, errorText(r))));
      return;
    }
    this.audit.replaceChildren(...r.data.records.map((a) => h('tr', { dataset: { kind: a.kind } },
      h('td', null, time(a.ts)), h('td', null, a.kind), h('td', null, a.actor || '–'), h('td', null, a.role || '–'),
      h('td', null, a.route ? `${a.method} ${a.route}` : '–'), h('td', { class: 'num' }, a.status ?? '–'), h('td', null, a.source || '–'))));
  }
}
