// The console's shell: sign-in, the top bar, hash routing (#/fleet, #/well/ID, #/alarms,
// #/admin, #/notifications, #/ask/QUESTION), the question box and
// the one live connection (GET /api/v1/stream over WebSocket, authenticated by the session
// cookie) whose messages go to the page on screen.

import { api, can, loadMe, session, signIn, signOut, errorText, refresh } from './api.js';
import * as units from './units.js';
import { FleetView } from './fleet.js';
import { AlarmsView } from './alarms.js';

const $ = (id) => document.getElementById(id);
let view = null;
let socket = null;
let reconnectDelay = 500;
let openAlarms = new Map();
// The read of the open alarms in progress (or done): one per sign-in and per lagged stream.
let openAlarmsLoad = Promise.resolve();

/** The open alarms (raised or acknowledged), shared by the top bar, the fleet and the alarm
 * list, kept current by the live stream: read once, not once per page. */
function currentOpenAlarms() {
  return openAlarmsLoad.then(() => openAlarms);
}

function show(signedIn) {
  $('signin').hidden = signedIn;
  $('topbar').hidden = !signedIn;
  $('view').hidden = !signedIn;
}

async function start() {
  $('signin-form').addEventListener('submit', onSignIn);
  $('logout').addEventListener('click', onSignOut);
  $('units').addEventListener('change', (e) => units.setSystem(e.target.value));
  $('ask-form').addEventListener('submit', onAsk);
  window.addEventListener('hashchange', route);
  window.addEventListener('espwatch:signed-out', () => {
    closeSocket();
    show(false);
  });
  if (await loadMe()) {
    enter();
  } else {
    show(false);
    $('username').focus();
  }
}

async function onSignIn(event) {
  event.preventDefault();
  const error = $('signin-error');
  error.hidden = true;
  $('signin-submit').disabled = true;
  try {
    const r = await signIn($('username').value.trim(), $('password').value);
    if (r.ok) {
      $('password').value = '';
      enter();
    } else {
      error.textContent = r.status === 401
        ? 'Wrong user name or password, or the account is locked or disabled.'
        : errorText(r);
      error.hidden = false;
    }
  } finally {
    $('signin-submit').disabled = false;
  }
}

/** The question box: the answer page for what was typed (a new history entry). */
function onAsk(event) {
  event.preventDefault();
  const question = $('ask-input').value.trim();
  if (!question) return;
  const hash = `#/ask/${encodeURIComponent(question)}`;
  if (location.hash === hash) route(); else location.hash = hash;
}

async function onSignOut() {
  closeSocket();
  await signOut();
  if (view && view.destroy) view.destroy();
  view = null;
  $('view').replaceChildren();
  show(false);
  location.hash = '';
}

function enter() {
  units.useUser(session.user);
  $('units').value = units.current();
  $('whoami').textContent = `${session.user} (${session.role})`;
  $('nav-admin').hidden = !can('users:manage');
  $('nav-notifications').hidden = !can('notifications:manage');
  $('ask-form').hidden = !can('diagnostics:read');
  show(true);
  loadAlarmCount();
  if (!location.hash || location.hash === '#/' || location.hash === '#') {
    location.hash = '#/fleet';
  } else {
    route();
  }
  connect();
}

async function route() {
  if (!session.user) return;
  const hash = location.hash.replace(/^#/, '');
  const [, page, arg] = hash.split('/');
  if (view && view.destroy) view.destroy();
  const root = $('view');
  root.replaceChildren();
  for (const a of document.querySelectorAll('#topbar nav a')) {
    a.classList.toggle('active', a.getAttribute('href') === `#/${page === 'well' ? 'fleet' : page}`);
  }
  if (page !== 'ask') $('ask-input').value = '';
  if (page === 'well' && arg) {
    // Loaded when first needed: the fleet page does not pay for the chart library.
    const { WellView } = await import('./well.js');
    view = new WellView(root, decodeURIComponent(arg));
  } else if (page === 'admin') {
    const { AdminView } = await import('./admin.js');
    view = new AdminView(root);
  } else if (page === 'notifications') {
    const { NotificationsView } = await import('./notifications.js');
    view = new NotificationsView(root);
  } else if (page === 'ask') {
    const { AskView } = await import('./ask.js');
    view = new AskView(root, arg ? decodeURIComponent(arg) : '');
  } else if (page === 'alarms') {
    view = new AlarmsView(root, currentOpenAlarms);
  } else {
    view = new FleetView(root, currentOpenAlarms);
  }
  view.load();
}

/** Reads the open alarms (every page of `state=open`). */
function loadAlarmCount() {
  if (!can('alarms:read')) {
    openAlarms = new Map();
    openAlarmsLoad = Promise.resolve();
    return;
  }
  openAlarmsLoad = (async () => {
    const open = new Map();
    let cursor = null;
    do {
      const r = await api(`/api/v1/alarms?state=open${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      if (!r.ok) return;
      for (const a of r.data.alarms) open.set(a.id, a);
      cursor = r.data.next_cursor;
    } while (cursor);
    openAlarms = open;
    renderAlarmCount();
  })();
}

function renderAlarmCount() {
  const unacked = [...openAlarms.values()].filter((a) => a.state === 'raised').length;
  const badge = $('alarm-count');
  badge.textContent = String(unacked);
  badge.hidden = unacked === 0;
}

function setLive(on, why) {
  const el = $('live-status');
  el.classList.toggle('on', on);
  el.classList.toggle('off', !on);
  el.title = `Live updates: ${why}`;
  el.dataset.state = on ? 'on' : 'off';
}

function connect() {
  closeSocket();
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  // The session cookie authenticates the upgrade; nothing secret in the URL.
  const ws = new WebSocket(`${scheme}://${location.host}/api/v1/stream`, ['espwatch.v1']);
  socket = ws;
  ws.addEventListener('open', () => {
    reconnectDelay = 500;
    setLive(true, 'connected');
  });
  ws.addEventListener('message', (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch { return; }
    dispatch(m);
  });
  ws.addEventListener('close', async () => {
    if (socket !== ws) return;
    socket = null;
    setLive(false, 'reconnecting');
    if (!session.user) return;
    // The access cookie may have expired: renew before trying again.
    await refresh();
    setTimeout(() => { if (session.user && !socket) connect(); }, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 15000);
  });
}

function closeSocket() {
  if (socket) {
    const s = socket;
    socket = null;
    s.close();
  }
  setLive(false, 'off');
}

function dispatch(m) {
  if (m.type === 'alarm') {
    if (m.alarm.state === 'cleared') openAlarms.delete(m.alarm.id);
    else openAlarms.set(m.alarm.id, m.alarm);
    renderAlarmCount();
  }
  if (m.type === 'lagged') {
    loadAlarmCount();
  }
  if (view && view.live) view.live(m);
}

start();
