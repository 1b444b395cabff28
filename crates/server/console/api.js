// The console's only door to the server. The session lives in HttpOnly cookies the page
// cannot read; requests that change something carry the session's CSRF token, which the
// sign-in answer and GET /api/v1/auth/me give. A 401 triggers one cookie refresh and a retry.

export const session = { user: null, role: null, permissions: [], csrf: null, expiresIn: 900 };
let refreshing = null;
let refreshTimer = null;

export function can(permission) {
  return session.permissions.includes(permission);
}

async function raw(path, method, body) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && session.csrf) headers['x-csrf-token'] = session.csrf;
  const response = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  return { status: response.status, ok: response.ok, data };
}

/** Renews the session cookies (single-use refresh cookie). True when renewed. */
export function refresh() {
  if (!refreshing) {
    refreshing = raw('/api/v1/auth/console/refresh', 'POST', undefined)
      .then((r) => {
        if (r.ok) adopt(r.data);
        return r.ok;
      })
      .catch(() => false)
      .finally(() => { refreshing = null; });
  }
  return refreshing;
}

/** Takes the answer of sign-in or refresh: who we are, the CSRF token, when to refresh. */
export function adopt(data) {
  session.user = data.user.name;
  session.role = data.user.role;
  session.csrf = data.csrf_token;
  session.expiresIn = data.expires_in || 900;
  clearTimeout(refreshTimer);
  // Renew a minute before the access cookie expires (never more often than every 30 s).
  refreshTimer = setTimeout(refresh, Math.max(30, session.expiresIn - 60) * 1000);
}

export async function api(path, { method = 'GET', body } = {}) {
  let r = await raw(path, method, body);
  if (r.status === 401 && !path.startsWith('/api/v1/auth/console/')) {
    if (await refresh()) r = await raw(path, method, body);
  }
  if (r.status === 401) {
    window.dispatchEvent(new CustomEvent('espwatch:signed-out'));
  }
  return r;
}

/** The message of an error envelope, or a generic line. */
export function errorText(r) {
  return (r.data && r.data.error && r.data.error.message) || `request failed (${r.status})`;
}

export async function signIn(username, password) {
  const r = await raw('/api/v1/auth/console/login', 'POST', { username, password });
  if (r.ok) {
    adopt(r.data);
    await loadMe();
  }
  return r;
}

/** Who we are (and the CSRF token) from the cookie; false when not signed in. */
export async function loadMe() {
  const r = await api('/api/v1/auth/me');
  if (!r.ok) return false;
  session.user = r.data.name;
  session.role = r.data.role;
  session.permissions = r.data.permissions || [];
  if (r.data.csrf_token) session.csrf = r.data.csrf_token;
  return true;
}

export async function signOut() {
  await raw('/api/v1/auth/logout', 'POST', undefined);
  clearTimeout(refreshTimer);
  session.user = null;
  session.role = null;
  session.permissions = [];
  session.csrf = null;
}
