// The AMP provider console: a single page over the admin API (/admin/v1) of this listener.
//
// No build step and no dependency. Every value from the API reaches the page through
// textContent or setAttribute, never as markup. The operator token lives in sessionStorage
// (this tab only) and travels in the Authorization header, never in a URL.
'use strict';

(function () {
  const API = '/admin/v1';
  const TOKEN_KEY = 'amp-console-token';
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const PAGE = 25;

  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const flash = document.getElementById('flash');

  // ---------------------------------------------------------------------------------------
  // helpers
  // ---------------------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** An error answered by the API: its status and the spec body. */
  class ApiError extends Error {
    constructor(status, body) {
      const code = body && body.error ? body.error : 'http_' + status;
      const msg = body && body.message ? body.message : 'request failed (' + status + ')';
      super(msg + ' (' + code + ')');
      this.status = status;
      this.code = code;
      this.field = body ? body.field : undefined;
    }
  }

  /** An answer that came after the operator moved to another page: dropped, not shown. */
  class Stale extends Error {}

  // Bumped by every navigation: an answer for an earlier page must not fill the current one
  // (the pages reuse element ids: tenant A's agents must never land in tenant B's table).
  let generation = 0;

  /** Calls the admin API; resolves to the JSON body, rejects with an ApiError. */
  async function api(method, path, body, signingIn) {
    const asked = generation;
    const headers = { Authorization: 'Bearer ' + (token() || '') };
    const init = { method, headers, cache: 'no-store', credentials: 'omit', referrerPolicy: 'no-referrer' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(API + path, init);
    let data = null;
    const text = await resp.text();
    if (asked !== generation) throw new Stale('stale answer');
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!resp.ok) {
      const err = new ApiError(resp.status, data);
      if (resp.status === 401 && !signingIn) {
        signOut('Your session ended: ' + err.message);
      }
      throw err;
    }
    return data;
  }

  /** An element with text (never markup) and attributes. */
  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (attrs) for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
  }

  function show(node, on) {
    node.hidden = !on;
  }

  function template(id) {
    return document.getElementById(id).content.cloneNode(true);
  }

  function when(v) {
    if (!v) return '—';
    const d = new Date(v);
    if (isNaN(d.getTime())) return String(v);
    return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
  }

  function say(message, bad) {
    flash.textContent = message;
    flash.classList.toggle('bad', !!bad);
    show(flash, true);
    clearTimeout(say.timer);
    say.timer = setTimeout(() => show(flash, false), bad ? 10000 : 5000);
  }

  /** An error in the flash line; a stale answer is no error. */
  function report(err) {
    if (!(err instanceof Stale)) say(err && err.message ? err.message : String(err), true);
  }

  function fail(node, err) {
    if (err instanceof Stale) return;
    node.textContent = err && err.message ? err.message : String(err);
    show(node, true);
  }

  function badge(status) {
    const b = el('span', status || 'unknown', { class: 'badge' });
    if (status) b.classList.add(status);
    return b;
  }

  function link(text, hash) {
    return el('a', text, { href: hash });
  }

  function row(cells) {
    const tr = el('tr');
    for (const c of cells) {
      const td = el('td');
      if (c instanceof Node) td.appendChild(c);
      else td.textContent = c === undefined || c === null || c === '' ? '—' : String(c);
      tr.appendChild(td);
    }
    return tr;
  }

  // The limits of a plan as the admin API names them (`plan`: the tenant's own, unset = the
  // default plan's; `limits`: those in force, unset = no limit). Other members are shown too.
  const LIMITS = ['agents', 'messages_per_minute', 'messages_per_day', 'stored_bytes', 'message_bytes', 'connections', 'federation'];

  function isObject(v) {
    return v !== null && typeof v === 'object' && !Array.isArray(v);
  }

  function limitText(v) {
    if (v === undefined || v === null) return 'no limit';
    if (typeof v === 'boolean') return v ? 'allowed' : 'refused';
    if (typeof v === 'number') return v.toLocaleString('en');
    return isObject(v) || Array.isArray(v) ? JSON.stringify(v) : String(v);
  }

  /** A plan in one cell: its name, "default" (no limit of its own), or its own limits. */
  function planLabel(t) {
    const p = t.plan;
    if (p === undefined || p === null) return '—';
    if (!isObject(p)) return String(p);
    if (p.name || p.id) return String(p.name || p.id);
    const own = Object.keys(p);
    if (own.length === 0) return 'default';
    const shown = own.slice(0, 3).map((k) => k.replace(/_/g, ' ') + ' ' + limitText(p[k]));
    return 'custom: ' + shown.join(', ') + (own.length > 3 ? ', …' : '');
  }

  /** The plan card: each limit in force and where it comes from; `quotas` if any. */
  function renderPlan(dl, t) {
    clear(dl);
    const own = isObject(t.plan) ? t.plan : {};
    const inForce = isObject(t.limits) ? t.limits : null;
    if (t.plan !== undefined && t.plan !== null && !isObject(t.plan)) {
      dl.appendChild(el('dt', 'plan'));
      dl.appendChild(el('dd', String(t.plan)));
    }
    const keys = inForce ? [...new Set([...LIMITS, ...Object.keys(inForce), ...Object.keys(own)])] : Object.keys(own);
    for (const k of keys) {
      const mine = Object.prototype.hasOwnProperty.call(own, k);
      const v = inForce && Object.prototype.hasOwnProperty.call(inForce, k) ? inForce[k] : own[k];
      dl.appendChild(el('dt', k));
      dl.appendChild(el('dd', limitText(v) + (inForce ? (mine ? " (tenant's own)" : ' (default plan)') : '')));
    }
    if (t.quotas !== undefined && t.quotas !== null) addFacts(dl, { quotas: t.quotas });
    return dl.childElementCount > 0;
  }

  function addFacts(dl, obj, prefix) {
    for (const [k, v] of Object.entries(obj)) {
      const key = prefix ? prefix + '.' + k : k;
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
        addFacts(dl, v, key);
      } else {
        dl.appendChild(el('dt', key));
        dl.appendChild(el('dd', limitText(v)));
      }
    }
  }

  /**
   * A paged table: `load(after)` resolves to {rows: [...], next}; `render(item)` to a <tr>.
   * Keeps the cursors seen so "Next" and "First" work without holding every page.
   */
  function pagedTable(section, load, render) {
    const tbody = section.querySelector('tbody');
    const empty = section.querySelector('.empty');
    const first = section.querySelector('.pager .first');
    const next = section.querySelector('.pager .next');
    let cursor = null;
    let nextCursor = null;
    async function go(after) {
      const page = await load(after);
      cursor = after;
      nextCursor = page.next || null;
      clear(tbody);
      for (const item of page.rows) tbody.appendChild(render(item));
      show(empty, page.rows.length === 0);
      next.disabled = !nextCursor;
      first.disabled = !cursor;
      return page;
    }
    next.addEventListener('click', () => go(nextCursor).catch((e) => report(e)));
    first.addEventListener('click', () => go(null).catch((e) => report(e)));
    return go;
  }

  // ---------------------------------------------------------------------------------------
  // sign in and out
  // ---------------------------------------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    if (message) say(message, true);
    if (location.hash === '#/login') route();
    else location.hash = '#/login';
  }

  function viewLogin() {
    show(nav, false);
    main.appendChild(template('tpl-login'));
    const form = document.getElementById('login-form');
    const input = document.getElementById('token');
    const error = document.getElementById('login-error');
    input.focus();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      input.value = '';
      sessionStorage.setItem(TOKEN_KEY, value);
      try {
        await api('GET', '/tenants?limit=1', undefined, true);
        location.hash = '#/tenants';
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        fail(error, e);
      }
    });
  }

  // ---------------------------------------------------------------------------------------
  // tenants
  // ---------------------------------------------------------------------------------------

  async function viewTenants() {
    main.appendChild(template('tpl-tenants'));
    const section = main.querySelector('section');
    const filter = document.getElementById('status-filter');
    const go = pagedTable(
      section,
      async (after) => {
        const q = new URLSearchParams({ limit: String(PAGE) });
        if (after) q.set('after', after);
        if (filter.value) q.set('status', filter.value);
        const v = await api('GET', '/tenants?' + q);
        return { rows: v.tenants || [], next: v.next_cursor };
      },
      (t) =>
        row([
          link(t.name, '#/tenants/' + encodeURIComponent(t.name)),
          badge(t.status),
          planLabel(t),
          t.registration,
          when(t.created_at),
        ]),
    );
    filter.addEventListener('change', () => go(null).catch((e) => report(e)));
    await go(null);
  }

  function viewNew() {
    main.appendChild(template('tpl-new'));
    const form = document.getElementById('new-form');
    const error = document.getElementById('new-error');
    document.getElementById('new-name').focus();
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      show(error, false);
      const name = document.getElementById('new-name').value.trim();
      const registration = document.getElementById('new-registration').value;
      try {
        const t = await api('POST', '/tenants', { name, registration });
        say('Tenant ' + t.name + ' created.');
        location.hash = '#/tenants/' + encodeURIComponent(t.name);
      } catch (e) {
        fail(error, e);
      }
    });
  }

  async function viewTenant(name) {
    main.appendChild(template('tpl-tenant'));
    const path = '/tenants/' + encodeURIComponent(name);
    const error = document.getElementById('t-error');
    const suspendBtn = document.getElementById('t-suspend');
    const resumeBtn = document.getElementById('t-resume');
    const suspendForm = document.getElementById('suspend-form');

    function renderTenant(t) {
      document.getElementById('t-name').textContent = t.name;
      const st = document.getElementById('t-status');
      st.textContent = t.status;
      st.className = 'badge ' + t.status;
      const facts = document.getElementById('t-facts');
      clear(facts);
      const shown = {
        registration: t.registration,
        created: when(t.created_at),
        updated: when(t.updated_at),
      };
      if (t.suspended_reason) shown['suspended because'] = t.suspended_reason;
      addFacts(facts, shown);
      show(suspendBtn, t.status === 'active');
      show(resumeBtn, t.status === 'suspended');
      show(suspendForm, false);
      show(document.getElementById('plan-card'), renderPlan(document.getElementById('t-plan'), t));
    }

    async function change(action, body, done) {
      show(error, false);
      try {
        const t = await api('POST', path + '/' + action, body);
        renderTenant(t);
        say(done);
      } catch (e) {
        fail(error, e);
      }
    }

    suspendBtn.addEventListener('click', () => {
      show(suspendForm, true);
      document.getElementById('suspend-reason').focus();
    });
    document.getElementById('suspend-cancel').addEventListener('click', () => show(suspendForm, false));
    suspendForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const reason = document.getElementById('suspend-reason').value.trim();
      change('suspend', reason ? { reason } : {}, 'Tenant ' + name + ' suspended.');
    });
    resumeBtn.addEventListener('click', () => change('resume', undefined, 'Tenant ' + name + ' resumed.'));

    // Agents.
    const agentsSection = document.getElementById('agents-table').closest('section');
    const goAgents = pagedTable(
      agentsSection,
      async (after) => {
        const q = new URLSearchParams({ limit: String(PAGE) });
        if (after) q.set('after', after);
        const v = await api('GET', path + '/agents?' + q);
        document.getElementById('agents-total').textContent = '(' + v.total + ')';
        return { rows: v.agents || [], next: v.next_cursor };
      },
      (a) => row([el('span', a.address, { class: 'mono' }), a.alias, a.owner_id, badge(a.status), when(a.created_at), when(a.last_seen_at)]),
    );

    // Owner keys.
    const keysBody = document.querySelector('#keys-table tbody');
    async function loadKeys() {
      const v = await api('GET', path + '/owner-keys');
      const keys = v.owner_keys || [];
      clear(keysBody);
      for (const k of keys) {
        keysBody.appendChild(
          row([el('span', k.id, { class: 'mono' }), el('span', k.prefix, { class: 'mono' }), k.owner_id, when(k.created_at), k.expires_at ? when(k.expires_at) : 'never', k.valid ? 'yes' : 'no']),
        );
      }
      show(document.querySelector('#keys-table').parentNode.querySelector('.empty'), keys.length === 0);
    }
    document.getElementById('issue-key').addEventListener('click', async () => {
      try {
        const k = await api('POST', path + '/owner-keys', {});
        document.getElementById('new-key-value').textContent = k.key;
        show(document.getElementById('new-key'), true);
        await loadKeys();
      } catch (e) {
        report(e);
      }
    });
    document.getElementById('new-key-hide').addEventListener('click', () => {
      document.getElementById('new-key-value').textContent = '';
      show(document.getElementById('new-key'), false);
    });

    // Usage.
    const period = document.getElementById('usage-period');
    const metric = document.getElementById('usage-metric');
    const reloadUsage = () => loadUsage(path, period.value, metric.value);
    period.addEventListener('change', reloadUsage);
    metric.addEventListener('change', reloadUsage);

    try {
      renderTenant(await api('GET', path));
    } catch (e) {
      fail(error, e);
      return;
    }
    await Promise.all([
      goAgents(null).catch((e) => report(e)),
      loadKeys().catch((e) => report(e)),
      reloadUsage(),
    ]);
  }

  // ---------------------------------------------------------------------------------------
  // usage chart (inline SVG)
  // ---------------------------------------------------------------------------------------

  const usageCache = new Map();

  async function loadUsage(path, period, metric) {
    const chart = document.getElementById('usage-chart');
    const note = document.getElementById('usage-note');
    const key = path + '|' + period;
    let v = usageCache.get(key);
    if (!v) {
      const now = new Date();
      const span = period === 'hour' ? 48 * 3600e3 : 30 * 86400e3;
      const unit = period === 'hour' ? 3600e3 : 86400e3;
      // Whole periods: from the start of the first to the end of the current one.
      const to = new Date(Math.ceil(now.getTime() / unit) * unit);
      const from = new Date(to.getTime() - span);
      const q = new URLSearchParams({ period, from: iso(from), to: iso(to) });
      try {
        v = await api('GET', path + '/usage?' + q);
      } catch (e) {
        if (e instanceof Stale) return;
        clear(chart);
        note.textContent = e.status === 404 ? 'usage not available on this server' : 'usage not available: ' + e.message;
        return;
      }
      usageCache.set(key, v);
    }
    const rows = Array.isArray(v.rows) ? v.rows : [];
    drawBars(chart, rows, metric);
    const total = rows.reduce((s, r) => s + (Number(r[metric]) || 0), 0);
    const label = metric.replace('_', ' ');
    note.textContent = rows.length
      ? rows.length + ' ' + (period === 'hour' ? 'hours' : 'days') + '; ' + label + ': ' +
        (metric === 'bytes_held' || metric === 'agents' || metric === 'connections'
          ? 'latest ' + fmt(Number(rows[rows.length - 1][metric]) || 0)
          : 'total ' + fmt(total))
      : 'no usage recorded in this period';
  }

  function iso(d) {
    return d.toISOString().replace(/\.\d+Z$/, 'Z');
  }

  function fmt(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G';
    if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
    if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
    return String(Math.round(n * 100) / 100);
  }

  /** A bar per row of `rows[metric]`, with a zero line, the maximum and the first and last times. */
  function drawBars(chart, rows, metric) {
    clear(chart);
    const W = 1000;
    const H = 220;
    const left = 56;
    const bottom = 24;
    const top = 10;
    const plotW = W - left - 8;
    const plotH = H - top - bottom;
    const root = svg('svg', { viewBox: '0 0 ' + W + ' ' + H, role: 'img', 'aria-label': metric + ' over time' });
    const values = rows.map((r) => Math.max(0, Number(r[metric]) || 0));
    const max = Math.max(1, ...values);
    root.appendChild(svg('line', { class: 'axis', x1: left, y1: top + plotH, x2: W - 8, y2: top + plotH }));
    root.appendChild(svg('line', { class: 'axis', x1: left, y1: top, x2: W - 8, y2: top }));
    root.appendChild(svg('text', { x: left - 6, y: top + 10, 'text-anchor': 'end' }, fmt(max)));
    root.appendChild(svg('text', { x: left - 6, y: top + plotH, 'text-anchor': 'end' }, '0'));
    const n = Math.max(rows.length, 1);
    const step = plotW / n;
    const barW = Math.max(1, step * 0.8);
    rows.forEach((r, i) => {
      const h = (values[i] / max) * plotH;
      const bar = svg('rect', {
        class: 'bar',
        x: (left + i * step + (step - barW) / 2).toFixed(1),
        y: (top + plotH - h).toFixed(1),
        width: barW.toFixed(1),
        height: Math.max(h, values[i] > 0 ? 1 : 0).toFixed(1),
      });
      bar.appendChild(svg('title', {}, when(r.start) + ': ' + values[i]));
      root.appendChild(bar);
    });
    if (rows.length) {
      root.appendChild(svg('text', { x: left, y: H - 6 }, when(rows[0].start)));
      root.appendChild(svg('text', { x: W - 8, y: H - 6, 'text-anchor': 'end' }, when(rows[rows.length - 1].start)));
    }
    chart.appendChild(root);
  }

  // ---------------------------------------------------------------------------------------
  // audit log
  // ---------------------------------------------------------------------------------------

  async function viewAudit() {
    main.appendChild(template('tpl-audit'));
    const section = main.querySelector('section');
    const go = pagedTable(
      section,
      async (after) => {
        const q = new URLSearchParams({ limit: String(PAGE) });
        if (after) q.set('after', after);
        const v = await api('GET', '/audit?' + q);
        return { rows: v.entries || [], next: v.next_cursor };
      },
      (e) => {
        // Every action but an operator token's is about a tenant.
        const target = e.action && !e.action.startsWith('token.') ? link(e.target, '#/tenants/' + encodeURIComponent(e.target)) : e.target;
        const tr = row([when(e.at), el('span', e.actor, { class: 'mono' }), e.action, target, e.details ? JSON.stringify(e.details) : '', el('span', e.request_id || '', { class: 'mono' })]);
        tr.children[4].className = 'details';
        return tr;
      },
    );
    await go(null);
  }

  // ---------------------------------------------------------------------------------------
  // routing (#/tenants, #/tenants/<name>, #/new, #/audit, #/login)
  // ---------------------------------------------------------------------------------------

  async function route() {
    generation += 1;
    // Usage is cached while a tenant's page is open (switching metric), read anew on each visit.
    usageCache.clear();
    clear(main);
    const hash = location.hash || '#/tenants';
    if (!token()) {
      if (hash !== '#/login') history.replaceState(null, '', '#/login');
      viewLogin();
      return;
    }
    show(nav, true);
    const parts = hash.slice(2).split('/');
    for (const a of nav.querySelectorAll('a')) a.classList.toggle('current', a.dataset.nav === parts[0]);
    try {
      if (parts[0] === 'tenants' && parts[1]) await viewTenant(decodeURIComponent(parts[1]));
      else if (parts[0] === 'new') viewNew();
      else if (parts[0] === 'audit') await viewAudit();
      else {
        if (parts[0] !== 'tenants') history.replaceState(null, '', '#/tenants');
        await viewTenants();
      }
    } catch (e) {
      report(e);
    }
    main.dataset.ready = hash;
  }

  document.getElementById('logout').addEventListener('click', () => signOut());
  window.addEventListener('hashchange', route);
  route();
})();
