// Administration (admins only; the server checks again): users (create, change role,
// disable/enable), API keys (create, shown once; revoke) and the audit trail. Every change goes
// through the same API as `espwatch users|apikeys` and is audited by the server.

import { api, can, errorText } from './api.js';
import { h, time } from './dom.js';

const ROLES = ['viewer', 'operator', 'analyst', 'api_client', 'admin'];

function roleSelect(id, selected) {
  const select = h('select', { id }, ...ROLES.map((r) => h('option', { value: r }, r)));
  select.value = selected;
  return select;
}

/** "ESP-1, ESP-2" → ["ESP-1","ESP-2"]; empty → undefined (all wells). */
function wellList(text) {
  const list = text.split(',').map((s) => s.trim()).filter(Boolean);
  return list.length ? list : undefined;
}

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
    this.users = h('div', { id: 'users' });
    this.keys = h('div', { id: 'keys' });
    this.audit = h('tbody', { id: 'audit-rows' });
    this.kind = '';
    kindFilter.addEventListener('change', () => { this.kind = kindFilter.value.trim(); this.loadAudit(); });
    this.root.replaceChildren(
      h('h1', null, 'Administration'),
      h('div', { class: 'card' }, h('h2', null, 'Users'), this.userForm(), this.users),
      h('div', { class: 'card' }, h('h2', null, 'API keys'), this.keyForm(), this.keys),
      h('div', { class: 'card' }, h('h2', null, 'Audit trail (newest first)'),
        h('div', { class: 'toolbar' }, kindFilter),
        h('table', { class: 'grid', id: 'audit-table' },
          h('thead', null, h('tr', null, ...['Time', 'Kind', 'Actor', 'Role', 'Route', 'Status', 'Source', 'Detail'].map((t) => h('th', null, t)))),
          this.audit)),
    );
    await Promise.all([this.loadUsers(), this.loadKeys()]);
    this.loadAudit();
  }

  async loadUsers() {
    const r = await api('/api/v1/users');
    this.users.replaceChildren(r.ok ? this.usersTable(r.data.users) : h('p', { class: 'error' }, errorText(r)));
  }

  async loadKeys() {
    const r = await api('/api/v1/apikeys');
    this.keys.replaceChildren(r.ok ? this.keysTable(r.data.keys) : h('p', { class: 'error' }, errorText(r)));
  }

  /** Runs a change; on success reloads the lists and the audit trail, else shows the error. */
  async change(path, options, errorEl, after) {
    const r = await api(path, options);
    if (!r.ok) {
      errorEl.textContent = errorText(r);
      errorEl.hidden = false;
      return null;
    }
    errorEl.hidden = true;
    if (after) after(r);
    await Promise.all([this.loadUsers(), this.loadKeys()]);
    this.loadAudit();
    return r;
  }

  userForm() {
    const name = h('input', { id: 'new-user-name', placeholder: 'user name', required: true, autocomplete: 'off' });
    const role = roleSelect('new-user-role', 'viewer');
    const password = h('input', { id: 'new-user-password', type: 'password', placeholder: 'password (12+ characters)', required: true, autocomplete: 'new-password' });
    const wells = h('input', { id: 'new-user-wells', placeholder: 'wells (comma-separated; empty: all)' });
    const error = h('p', { class: 'error', id: 'new-user-error', role: 'alert', hidden: true });
    const form = h('form', { class: 'toolbar admin-form', id: 'new-user-form' },
      name, role, password, wells, h('button', { type: 'submit' }, 'Create user'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { name: name.value.trim(), role: role.value, password: password.value, wells: wellList(wells.value) };
      await this.change('/api/v1/users', { method: 'POST', body }, error, () => {
        form.reset();
      });
    });
    return h('div', null, form, error);
  }

  usersTable(users) {
    const error = h('p', { class: 'error', id: 'users-error', role: 'alert', hidden: true });
    return h('div', null, error, h('table', { class: 'grid', id: 'users-table' },
      h('thead', null, h('tr', null, ...['User', 'Role', 'Wells', 'State', 'Created', ''].map((t) => h('th', null, t)))),
      h('tbody', null, ...users.map((u) => {
        const role = roleSelect(`role-${u.name}`, u.role);
        role.classList.add('user-role');
        role.addEventListener('change', () => this.change(`/api/v1/users/${encodeURIComponent(u.name)}`,
          { method: 'PATCH', body: { role: role.value } }, error));
        const toggle = h('button', { type: 'button', class: 'secondary user-toggle' }, u.disabled ? 'Enable' : 'Disable');
        toggle.addEventListener('click', () => this.change(`/api/v1/users/${encodeURIComponent(u.name)}`,
          { method: 'PATCH', body: { disabled: !u.disabled } }, error));
        return h('tr', { dataset: { user: u.name, state: u.disabled ? 'disabled' : 'active' } },
          h('td', null, u.name), h('td', null, role), h('td', null, u.wells ? u.wells.join(', ') : 'all'),
          h('td', { class: 'user-state' }, u.disabled ? 'disabled' : u.locked_until ? `locked until ${time(u.locked_until)}` : 'active'),
          h('td', null, time(u.created_at)), h('td', null, toggle));
      }))));
  }

  keyForm() {
    const name = h('input', { id: 'new-key-name', placeholder: 'key name', required: true, autocomplete: 'off' });
    const role = roleSelect('new-key-role', 'api_client');
    const wells = h('input', { id: 'new-key-wells', placeholder: 'wells (comma-separated; empty: all)' });
    const expires = h('input', { id: 'new-key-expires', placeholder: 'expires, e.g. 90d (admin keys must)' });
    const error = h('p', { class: 'error', id: 'new-key-error', role: 'alert', hidden: true });
    const shown = h('div', { id: 'new-key-shown', class: 'secret-once', hidden: true });
    const form = h('form', { class: 'toolbar admin-form', id: 'new-key-form' },
      name, role, wells, expires, h('button', { type: 'submit' }, 'Create key'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = { name: name.value.trim(), role: role.value, wells: wellList(wells.value) };
      if (expires.value.trim()) body.expires = expires.value.trim();
      await this.change('/api/v1/apikeys', { method: 'POST', body }, error, (r) => {
        form.reset();
        shown.replaceChildren(
          h('p', null, `Key ${r.data.id} (${r.data.name}). Copy it now: it is shown only once.`),
          h('code', { id: 'new-key-value' }, r.data.key));
        shown.hidden = false;
      });
    });
    return h('div', null, form, error, shown);
  }

  keysTable(keys) {
    const error = h('p', { class: 'error', id: 'keys-error', role: 'alert', hidden: true });
    return h('div', null, error, h('table', { class: 'grid', id: 'keys-table' },
      h('thead', null, h('tr', null, ...['Key', 'Name', 'Role', 'Wells', 'Status', 'Expires', 'Created by', ''].map((t) => h('th', null, t)))),
      h('tbody', null, ...keys.map((k) => {
        let revoke = null;
        if (k.status === 'active') {
          revoke = h('button', { type: 'button', class: 'secondary key-revoke' }, 'Revoke');
          revoke.addEventListener('click', () => {
            if (revoke.dataset.confirm !== '1') {
              revoke.dataset.confirm = '1';
              revoke.textContent = 'Confirm revoke';
              return;
            }
            this.change(`/api/v1/apikeys/${encodeURIComponent(k.id)}`, { method: 'DELETE' }, error);
          });
        }
        return h('tr', { dataset: { key: k.id, status: k.status } },
          h('td', null, k.id), h('td', null, k.name), h('td', null, k.role), h('td', null, k.wells ? k.wells.join(', ') : 'all'),
          h('td', { class: 'key-status' }, k.status), h('td', null, time(k.expires_at)), h('td', null, k.created_by), h('td', null, revoke));
      }))));
  }

  async loadAudit() {
    const q = new URLSearchParams({ limit: '200' });
    if (this.kind) q.set('kind', this.kind);
    const r = await api(`/api/v1/audit?${q}`);
    if (!r.ok) {
      this.audit.replaceChildren(h('tr', null, h('td', { colspan: 8, class: 'error' }, errorText(r))));
      return;
    }
    this.audit.replaceChildren(...r.data.records.map((a) => h('tr', { dataset: { kind: a.kind } },
      h('td', null, time(a.ts)), h('td', null, a.kind), h('td', null, a.actor || '–'), h('td', null, a.role || '–'),
      h('td', null, a.route ? `${a.method} ${a.route}` : '–'), h('td', { class: 'num' }, a.status ?? '–'), h('td', null, a.source || '–'),
      h('td', { class: 'detail' }, a.kind === 'request' ? '' : JSON.stringify(a.detail || {})))));
  }
}
