// The coordinator's admin page. Two views chosen by the URL's hash:
//   #/                      the list of global transactions (filters, keyset paging, newest first)
//   #/transactions/<gid>    one transaction: summary, actions, sequence diagram, branches, events
// Data comes from the JSON admin API (/api/admin, coordinator/src/admin.rs); the diagram's
// Mermaid text from /api/admin/transactions/<gid>/diagram, rendered to SVG here by the vendored
// Mermaid (assets/vendor/). Text from the server (gids, reasons, branch data) is only ever set
// with textContent; the one innerHTML is Mermaid's own SVG (securityLevel "strict").
(() => {
  'use strict';

  const API = '/api/admin/transactions';
  const TOKEN_KEY = 'tcc-coordinator-admin-token';
  const REFRESH_MS = 2000;
  const FINAL = ['succeed', 'failed'];
  // Columns of the event log, in reading order (GET .../events, coordinator/src/events.rs).
  const EVENT_COLUMNS = ['id', 'create_time', 'actor', 'kind', 'status', 'branch_id', 'op', 'target',
    'outcome', 'http_status', 'latency_ms', 'attempt', 'retry_in_ms', 'detail', 'url'];
  const WIDE_EVENT_COLUMNS = ['detail', 'url'];

  const $ = (id) => document.getElementById(id);
  const enc = encodeURIComponent;

  // ---- small helpers ----

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('data-')) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function statusBadge(status) {
    return el('span', { class: `status ${status}`, text: status, 'data-status': status });
  }

  // Times are shown in UTC with milliseconds, as in the services' logs.
  function time(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toISOString().replace('T', ' ').replace('Z', ' UTC');
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  // Ages are computed against the server's "now", so a skewed browser clock does not matter.
  function secondsBetween(fromIso, toIso) {
    return (new Date(toIso).getTime() - new Date(fromIso).getTime()) / 1000;
  }

  function when(iso, nowIso) {
    if (!iso) return '—';
    const ahead = secondsBetween(nowIso, iso);
    return `${time(iso)} (${ahead <= 0 ? 'due now' : `in ${duration(ahead)}`})`;
  }

  function showMessage(node, text, isError) {
    node.hidden = !text;
    node.textContent = text || '';
    node.classList.toggle('error', Boolean(isError));
  }

  async function getJson(url) {
    const res = await fetch(url, { headers: { Accept: 'application/json' } });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    return { res, body };
  }

  function errorText(res, body) {
    return (body && body.message) || `HTTP ${res.status}`;
  }

  // ---- the list ----

  const list = { position: '', next: '', page: 1 };

  function listQuery() {
    const form = $('filters');
    const unit = Number(form.elements.unit.value) || 1;
    const query = new URLSearchParams();
    if (form.elements.status.value) query.set('status', form.elements.status.value);
    const prefix = form.elements.gid_prefix.value.trim();
    if (prefix) query.set('gid_prefix', prefix);
    for (const [field, param] of [['older_than', 'older_than_seconds'], ['newer_than', 'newer_than_seconds']]) {
      const raw = form.elements[field].value.trim();
      if (raw !== '') query.set(param, String(Math.round(Number(raw) * unit)));
    }
    query.set('limit', form.elements.limit.value);
    if (list.position) query.set('position', list.position);
    return query;
  }

  async function loadList() {
    const tbody = $('transactions').tBodies[0];
    const message = $('list-message');
    let answer;
    try {
      answer = await getJson(`${API}?${listQuery()}`);
    } catch (e) {
      showMessage(message, `The coordinator did not answer: ${e.message}`, true);
      return;
    }
    const { res, body } = answer;
    if (!res.ok || !body) {
      showMessage(message, `Cannot list transactions: ${errorText(res, body)}`, true);
      return;
    }
    showMessage(message, '');
    tbody.replaceChildren();
    for (const t of body.transactions) {
      const nextLook = t.status === 'prepared' ? `timeout ${when(t.next_cron_time, body.now)}`
        : FINAL.includes(t.status) ? '—' : when(t.next_cron_time, body.now);
      tbody.append(el('tr', { 'data-gid': t.gid, 'data-status': t.status },
        el('td', {}, el('a', {
          href: `#/transactions/${enc(t.gid)}`, class: 'gid-link mono', text: t.gid, 'data-gid': t.gid,
        })),
        el('td', {}, statusBadge(t.status)),
        el('td', { text: time(t.create_time) }),
        el('td', { text: duration(secondsBetween(t.create_time, body.now)) }),
        el('td', { text: time(t.finish_time) }),
        el('td', { text: nextLook }),
        el('td', { class: 'wrap', text: t.rollback_reason || '' })));
    }
    if (body.transactions.length === 0) {
      tbody.append(el('tr', { class: 'empty' }, el('td', { colSpan: 7, text: 'No transaction matches.' })));
    }
    list.next = body.next_position;
    $('next-page').disabled = !list.next;
    $('first-page').disabled = list.page === 1;
    $('page-label').textContent = `page ${list.page}`;
  }

  function firstPage() {
    Object.assign(list, { position: '', next: '', page: 1 });
    return loadList();
  }

  // ---- one transaction ----

  const detail = { gid: null, timer: null, diagramText: null, seq: 0 };

  function stopRefresh() {
    if (detail.timer) clearTimeout(detail.timer);
    detail.timer = null;
  }

  function summaryRow(dl, term, value) {
    dl.append(el('dt', { text: term }), el('dd', {}, value));
  }

  function renderSummary(body) {
    const t = body.transaction;
    const dl = $('summary');
    dl.replaceChildren();
    summaryRow(dl, 'status', statusBadge(t.status));
    summaryRow(dl, 'created', `${time(t.create_time)} (${duration(secondsBetween(t.create_time, body.now))} ago)`);
    summaryRow(dl, 'finished', time(t.finish_time));
    summaryRow(dl, 'rollback reason', t.rollback_reason || '—');
    summaryRow(dl, 'next retry', when(t.next_retry_time, body.now));
    summaryRow(dl, 'timeout (while prepared)', when(t.timeout_time, body.now));
    summaryRow(dl, 'backoff step', `${t.next_cron_interval} s (retry_interval ${t.retry_interval} s)`);
    summaryRow(dl, 'request_timeout / timeout_to_fail', `${t.request_timeout} s / ${t.timeout_to_fail} s`);
    summaryRow(dl, 'lease', t.owner ? `${t.owner} until ${time(t.lease_expire)}` : 'none');
    summaryRow(dl, 'branch headers', JSON.stringify(t.branch_headers || {}));
    summaryRow(dl, 'last change', time(t.update_time));
  }

  // A branch op is stored "prepared" until a call of it succeeded: say whether it was called.
  function opBadge(op) {
    if (op.status !== 'prepared') return statusBadge(op.status);
    const label = op.attempts === 0 ? 'not called' : 'pending';
    return el('span', { class: `status ${label.replace(' ', '-')}`, text: label, 'data-status': op.status });
  }

  function renderBranches(body) {
    const tbody = $('branches').tBodies[0];
    tbody.replaceChildren();
    for (const branch of body.branches) {
      for (const op of branch.ops) {
        tbody.append(el('tr', { 'data-branch-id': branch.branch_id, 'data-op': op.op },
          el('td', { class: 'mono', text: branch.branch_id }),
          el('td', { text: op.op }),
          el('td', {}, opBadge(op)),
          el('td', { text: String(op.attempts) }),
          el('td', { class: 'wrap', text: op.last_result || '—' }),
          el('td', { text: op.next_attempt_time ? when(op.next_attempt_time, body.now) : '—' }),
          el('td', { class: 'wrap mono', text: op.url }),
          el('td', { class: 'wrap mono', text: branch.data })));
      }
    }
    if (body.branches.length === 0) {
      tbody.append(el('tr', { class: 'empty' }, el('td', { colSpan: 8, text: 'No branch registered.' })));
    }
  }

  function renderActions(body) {
    const { actions } = body;
    const lock = actions.token_required ? ' (admin token)' : '';
    $('retry-now').disabled = !actions.retry_now;
    $('retry-now').textContent = `Retry now${lock}`;
    $('force-stop').disabled = !actions.force_stop;
    $('force-stop').textContent = `Force stop${lock}`;
  }

  function diagramState(state, text) {
    const box = $('diagram');
    box.dataset.state = state;
    box.textContent = text;
    detail.diagramText = null;
  }

  async function loadDiagram(gid) {
    let res;
    try {
      res = await fetch(`${API}/${enc(gid)}/diagram`, { headers: { Accept: 'text/plain' } });
    } catch (e) {
      diagramState('error', `Diagram unavailable: the coordinator did not answer (${e.message}).`);
      return;
    }
    if (gid !== detail.gid) return;
    if (res.status === 404) {
      diagramState('unavailable',
        'Diagram unavailable: this coordinator does not serve sequence diagrams '
        + `(GET ${API}/${gid}/diagram answered 404).`);
      return;
    }
    const text = await res.text();
    if (!res.ok) {
      diagramState('error', `Diagram unavailable: HTTP ${res.status} ${text.slice(0, 300)}`);
      return;
    }
    const box = $('diagram');
    if (text === detail.diagramText && box.dataset.state === 'rendered') return;
    $('diagram-source').textContent = text;
    $('diagram-source-box').hidden = false;
    if (!window.mermaid) {
      diagramState('error', 'Diagram unavailable: the Mermaid renderer did not load.');
      return;
    }
    try {
      detail.seq += 1;
      const { svg } = await window.mermaid.render(`tcc-diagram-${detail.seq}`, text);
      if (gid !== detail.gid) return;
      box.innerHTML = svg; // Mermaid's output, sanitized by it (securityLevel "strict")
      box.dataset.state = 'rendered';
      detail.diagramText = text;
    } catch (e) {
      diagramState('error', `The diagram could not be rendered: ${e.message || e}`);
    }
  }

  function cell(value) {
    if (value === null || value === undefined) return '';
    return typeof value === 'object' ? JSON.stringify(value) : String(value);
  }

  async function loadEvents(gid) {
    const box = $('events');
    let answer;
    try {
      answer = await getJson(`${API}/${enc(gid)}/events`);
    } catch (e) {
      box.dataset.state = 'error';
      box.textContent = `Events unavailable: the coordinator did not answer (${e.message}).`;
      return;
    }
    if (gid !== detail.gid) return;
    const { res, body } = answer;
    if (res.status === 404) {
      box.dataset.state = 'unavailable';
      box.textContent = 'Events unavailable: this coordinator does not serve the event log '
        + `(GET ${API}/${gid}/events answered 404).`;
      return;
    }
    if (!res.ok || body === null) {
      box.dataset.state = 'error';
      box.textContent = `Events unavailable: ${errorText(res, body)}`;
      return;
    }
    const events = Array.isArray(body) ? body : (body && Array.isArray(body.events) ? body.events : null);
    box.dataset.state = 'loaded';
    if (!events) {
      box.replaceChildren(el('pre', { text: JSON.stringify(body, null, 2) }));
      return;
    }
    if (events.length === 0) {
      box.replaceChildren(el('p', { text: 'No event recorded.' }));
      return;
    }
    // Every field any event has, except the gid (it is this page's) and the fields no event
    // fills in: the known ones in reading order, then any other; times as elsewhere on the page.
    const filled = new Set();
    for (const event of events) {
      for (const [key, value] of Object.entries(event || {})) {
        if (key !== 'gid' && value !== null && value !== undefined && value !== '') filled.add(key);
      }
    }
    const columns = EVENT_COLUMNS.filter((c) => filled.has(c))
      .concat([...filled].filter((c) => !EVENT_COLUMNS.includes(c)));
    const show = (key, value) => (key.endsWith('_time') && value ? time(value) : cell(value));
    const table = el('table', { class: 'grid events', id: 'events-table' },
      el('thead', {}, el('tr', {}, ...columns.map((c) => el('th', { text: c })))),
      el('tbody', {}, ...events.map((event) => el('tr', { 'data-kind': (event || {}).kind },
        ...columns.map((c) => el('td', {
          class: WIDE_EVENT_COLUMNS.includes(c) ? 'wrap' : 'nowrap',
          text: show(c, (event || {})[c]),
        }))))));
    box.replaceChildren(table);
  }

  async function refreshDetail() {
    stopRefresh();
    const gid = detail.gid;
    let answer;
    try {
      answer = await getJson(`${API}/${enc(gid)}`);
    } catch (e) {
      showMessage($('detail-message'), `The coordinator did not answer: ${e.message}`, true);
      return;
    }
    if (gid !== detail.gid) return;
    const { res, body } = answer;
    if (!res.ok || !body) {
      showMessage($('detail-message'), `Cannot show ${gid}: ${errorText(res, body)}`, true);
      $('detail-view').dataset.state = 'error';
      return;
    }
    showMessage($('detail-message'), '');
    const status = body.transaction.status;
    $('detail-status').replaceChildren(statusBadge(status));
    renderSummary(body);
    renderBranches(body);
    renderActions(body);
    await Promise.all([loadDiagram(gid), loadEvents(gid)]);
    if (gid !== detail.gid) return;
    $('detail-view').dataset.state = 'loaded';
    // An unfinished transaction is still moving: follow it until it is final.
    if (!FINAL.includes(status)) detail.timer = setTimeout(refreshDetail, REFRESH_MS);
  }

  function showDetail(gid) {
    stopRefresh();
    Object.assign(detail, { gid, diagramText: null });
    $('list-view').hidden = true;
    $('detail-view').hidden = false;
    $('detail-view').dataset.gid = gid;
    $('detail-view').dataset.state = 'loading';
    $('detail-gid').textContent = gid;
    $('detail-status').replaceChildren();
    $('summary').replaceChildren();
    $('branches').tBodies[0].replaceChildren();
    $('diagram-source-box').hidden = true;
    diagramState('loading', 'Loading the diagram…');
    $('events').dataset.state = 'loading';
    $('events').textContent = 'Loading the events…';
    setActionMessage('');
    document.title = `${gid} · TCC coordinator admin`;
    return refreshDetail();
  }

  function showList() {
    stopRefresh();
    detail.gid = null;
    $('detail-view').hidden = true;
    $('list-view').hidden = false;
    document.title = 'TCC coordinator · admin';
    return loadList();
  }

  // ---- actions ----

  function setActionMessage(text, kind) {
    const node = $('action-message');
    node.textContent = text;
    node.className = kind || '';
  }

  async function act(action) {
    const gid = detail.gid;
    if (!gid) return;
    if (action === 'force-stop' && !window.confirm(
      `Force stop ${gid}?\n\nIt becomes failed WITHOUT calling any Confirm or Cancel: frozen funds, `
      + 'holds and stock reservations made by its Trys stay held in the RMs until released by hand.',
    )) return;
    setActionMessage(`${action}…`);
    for (let attempt = 0; attempt < 3; attempt += 1) {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const headers = { Accept: 'application/json' };
      if (token) headers.Authorization = `Bearer ${token}`;
      let res;
      let body = {};
      try {
        res = await fetch(`${API}/${enc(gid)}/${action}`, { method: 'POST', headers });
        body = await res.json().catch(() => ({}));
      } catch (e) {
        setActionMessage(`${action} failed: ${e.message}`, 'error');
        return;
      }
      if (res.status === 401) {
        if (token) sessionStorage.removeItem(TOKEN_KEY);
        const entered = window.prompt(token
          ? 'The admin token was refused. Admin token (ADMIN_TOKEN):'
          : 'This coordinator requires its admin token (ADMIN_TOKEN) for this action:');
        if (!entered) {
          setActionMessage(`${action} cancelled: no admin token given.`, 'error');
          return;
        }
        sessionStorage.setItem(TOKEN_KEY, entered.trim());
        continue;
      }
      if (!res.ok) {
        setActionMessage(`${action} refused: ${errorText(res, body)}`, 'error');
        return;
      }
      setActionMessage(action === 'retry-now'
        ? `Retrying now (was ${body.from}).`
        : `Force-stopped (was ${body.from}). ${body.warning || ''}`, 'ok');
      await refreshDetail();
      return;
    }
    setActionMessage(`${action} refused: the admin token was not accepted.`, 'error');
  }

  // ---- wiring ----

  function route() {
    const match = window.location.hash.match(/^#\/transactions\/(.+)$/);
    if (match) showDetail(decodeURIComponent(match[1]));
    else showList();
  }

  function init() {
    if (window.mermaid) {
      window.mermaid.initialize({
        startOnLoad: false,
        securityLevel: 'strict',
        suppressErrorRendering: true,
        theme: 'default',
        sequence: { useMaxWidth: true, wrap: true },
      });
    }
    $('filters').addEventListener('submit', (event) => {
      event.preventDefault();
      firstPage();
    });
    $('refresh').addEventListener('click', () => loadList());
    $('first-page').addEventListener('click', () => firstPage());
    $('next-page').addEventListener('click', () => {
      if (!list.next) return;
      list.position = list.next;
      list.page += 1;
      loadList();
    });
    $('retry-now').addEventListener('click', () => act('retry-now'));
    $('force-stop').addEventListener('click', () => act('force-stop'));
    window.addEventListener('hashchange', route);
    route();
  }

  init();
})();
