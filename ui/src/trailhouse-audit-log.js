// <trailhouse-audit-log>: an organisation's audit log as a table, with
// search and qualifiers, a time range, filter chips, paging both ways, a
// details drawer, export and live tail. The same element is the query
// API's own /ui/ page and what a platform embeds in its admin portal.
//
// Attributes: `org` (the org id; default: the token's `org_id`), `api-base`
// (the query API's origin, default: this page's), `page-size` (default 50),
// `tail-interval` (live tail's poll, ms; default 5000).
// Properties: `token` (a bearer token, kept in memory only) or
// `tokenProvider` (an async function returning one; called again after a
// 401, so a platform can hand out short-lived viewer tokens), and `event`
// (an event id whose details open once the log is shown: the deep link
// `#event=<id>` of the page). The drawer offers a link to its event: the
// page's URL with `#event=<id>`, never a token.
// Events: `trailhouse-loaded` {rows, state} after each load,
// `trailhouse-tail` {added} when live tail adds rows, `trailhouse-exported`
// {format, rows, bytes} or {format, error}.

import { LitElement, html, nothing } from "lit";
import { repeat } from "lit/directives/repeat.js";
import { ApiError, detailsUrl, exportUrl, fetchOk, getJson, listUrl, orgOfToken } from "./api.js";
import { MESSAGES, drawer, statusClass } from "./details.js";
import { QUALIFIERS, QueryError, parse, terms, timeWindow, without } from "./query.js";
import { styles } from "./styles.js";

const local = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** Live tail re-reads this far behind the newest row shown (late events). */
const TAIL_LOOKBACK_MS = 30_000;
/** At most this many rows per poll; a fuller window reloads the first page. */
const TAIL_MAX = 500;
/** Live tail pauses once the table holds this many rows. */
const TAIL_KEEP = 2000;

const RANGE_LABELS = {
  "": "Any time",
  "1h": "Last hour",
  "24h": "Last 24 hours",
  "7d": "Last 7 days",
  "30d": "Last 30 days",
  custom: "Custom…",
};

/** The page sizes offered (the API takes up to 500). */
const PAGE_SIZES = [25, 50, 100, 200, 500];

const kb = (bytes) => `${(bytes / 1024).toFixed(1)} KB`;
const progress = (format, lines, bytes) => (format === "ndjson" ? `${lines} events, ${kb(bytes)}` : kb(bytes));

const newest = (a, b) => Date.parse(b.created) - Date.parse(a.created);

export class TrailhouseAuditLog extends LitElement {
  static properties = {
    org: { type: String },
    apiBase: { type: String, attribute: "api-base" },
    pageSize: { type: Number, attribute: "page-size" },
    tailInterval: { type: Number, attribute: "tail-interval" },
    token: { attribute: false },
    tokenProvider: { attribute: false },
    event: { type: String },
    _rows: { state: true },
    _state: { state: true },
    _error: { state: true },
    _text: { state: true },
    _range: { state: true },
    _queryError: { state: true },
    _pages: { state: true },
    _next: { state: true },
    _details: { state: true },
    _detailsState: { state: true },
    _exporting: { state: true },
    _tail: { state: true },
    _tailNote: { state: true },
  };

  static styles = styles;

  constructor() {
    super();
    this.org = "";
    this.apiBase = "";
    this.pageSize = 50;
    this.tailInterval = 5000;
    this.token = "";
    this.tokenProvider = null;
    this.event = "";
    this._rows = [];
    this._state = "idle";
    this._error = null;
    this._text = "";
    this._range = { range: "", from: "", to: "" };
    this._filter = {};
    this._queryError = null;
    // Cursors of the pages before the current one ("" is the first page).
    this._pages = [];
    this._cursor = "";
    this._next = null;
    this._details = null;
    this._detailsState = "idle";
    this._copied = "";
    this._loadId = 0;
    this._tail = false;
    this._tailNote = "";
    this._fresh = new Set();
  }

  connectedCallback() {
    super.connectedCallback();
    this.load();
  }

  disconnectedCallback() {
    super.disconnectedCallback();
    clearInterval(this._tailTimer);
    this._tail = false;
    this._exportAbort?.abort();
  }

  updated(changed) {
    // A token the provider just gave is not a new sign-in.
    const provided = this._provided;
    this._provided = false;
    const signedIn = changed.has("token") && changed.get("token") !== undefined && !provided;
    // A provider set after the element connected (an embedding page's
    // script) starts the first load.
    const providerSet = changed.has("tokenProvider") && changed.get("tokenProvider") !== undefined;
    const orgChanged = changed.has("org") && changed.get("org") !== undefined;
    if (signedIn || providerSet || orgChanged) {
      if (this.isConnected && (this.token || this.tokenProvider)) this._restart();
    }
  }

  async _token(renew = false) {
    if (this.tokenProvider && (renew || !this.token)) {
      const token = await this.tokenProvider();
      this._provided = true;
      this.token = token;
    }
    return this.token;
  }

  /** Runs `request(token)`, once more with a new token after a 401. */
  async _authorized(request) {
    try {
      return await request(await this._token());
    } catch (e) {
      if (e instanceof ApiError && e.kind === "unauthenticated" && this.tokenProvider) {
        return request(await this._token(true));
      }
      throw e;
    }
  }

  _get(url) {
    return this._authorized((token) => getJson(url, token));
  }

  _orgId() {
    return this.org || orgOfToken(this.token || "") || "";
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }

  _restart() {
    this._pages = [];
    this._cursor = "";
    this._fresh = new Set();
    this.load();
  }

  /** Loads the page at the current cursor. */
  async load() {
    if (!this.token && !this.tokenProvider) return;
    const id = ++this._loadId;
    this._state = "loading";
    try {
      await this._token();
      const org = this._orgId();
      if (!org) throw new ApiError("unauthenticated", "the token names no organisation", 401);
      const url = listUrl(this.apiBase, org, { ...this._filter, limit: this.pageSize, cursor: this._cursor || undefined });
      const page = await this._get(url);
      if (id !== this._loadId) return;
      this._rows = page.data ?? [];
      this._next = page.cursor ?? null;
      this._loadedAt = Date.now();
      this._state = this._rows.length ? "ready" : "empty";
      this._error = null;
      if (this.event) {
        const linked = this.event;
        this.event = "";
        this._open({ id: linked });
      }
    } catch (e) {
      if (id !== this._loadId) return;
      this._rows = [];
      this._error = e;
      this._state = e instanceof ApiError ? e.kind : "failed";
    }
    this._emit("trailhouse-loaded", { rows: this._rows.length, state: this._state });
  }

  /** Applies the search box and the time range: a new first page. */
  _apply() {
    const text = this.renderRoot.querySelector("#search")?.value.trim() ?? this._text;
    try {
      const parsed = parse(text);
      this._filter = { ...parsed.params, ...timeWindow(parsed, this._range) };
      // Only a search that parses is applied (and shown as chips).
      this._text = text;
      this._queryError = null;
    } catch (e) {
      if (!(e instanceof QueryError)) throw e;
      this._queryError = e.message;
      return;
    }
    this._restart();
  }

  _onSearch(ev) {
    ev.preventDefault();
    this._apply();
  }

  _onRange(ev) {
    const range = ev.target.value;
    this._range = { ...this._range, range };
    // A custom range waits for its times.
    if (range !== "custom") this._apply();
  }

  _onCustom(which, ev) {
    this._range = { ...this._range, [which]: ev.target.value };
    this._apply();
  }

  _removeTerm(index) {
    this._text = without(this._text, index);
    const input = this.renderRoot.querySelector("#search");
    if (input) input.value = this._text;
    this._apply();
  }

  _removeRange() {
    this._range = { range: "", from: "", to: "" };
    this._apply();
  }

  _onPageSize(ev) {
    const size = Number(ev.target.value);
    if (!PAGE_SIZES.includes(size)) return;
    this.pageSize = size;
    this._restart();
  }

  _older() {
    if (!this._next) return;
    this._pages = [...this._pages, this._cursor];
    this._cursor = this._next;
    this._fresh = new Set();
    this.load();
  }

  _newer() {
    if (!this._pages.length) return;
    this._cursor = this._pages[this._pages.length - 1];
    this._pages = this._pages.slice(0, -1);
    this.load();
  }

  /** Live tail on or off; on, it shows the newest page first. */
  _toggleTail() {
    this._tail = !this._tail;
    this._tailNote = "";
    clearInterval(this._tailTimer);
    if (!this._tail) return;
    if (this._pages.length) this._restart();
    this._tailTimer = setInterval(() => this._poll(), Math.max(250, this.tailInterval));
  }

  /** One poll of live tail: rows newer than the newest shown go on top. */
  async _poll() {
    const idle = this._state === "ready" || this._state === "empty";
    if (this._polling || this._pages.length || !idle || document.visibilityState === "hidden") return;
    this._polling = true;
    const loadId = this._loadId;
    try {
      // From a little before the newest row shown (or the load, when the
      // table was empty), within the filter's own range.
      const top = this._rows.length ? Date.parse(this._rows[0].created) : (this._loadedAt ?? Date.now());
      let from = new Date(top - TAIL_LOOKBACK_MS);
      const floor = this._filter.from?.[0];
      if (floor && new Date(floor) > from) from = new Date(floor);
      const until = this._filter.to?.[0];
      if (until && new Date(until) <= from) return;
      const url = listUrl(this.apiBase, this._orgId(), { ...this._filter, from: from.toISOString(), limit: TAIL_MAX });
      const page = await this._get(url);
      if (loadId !== this._loadId || !this._tail) return;
      const data = page.data ?? [];
      if (page.cursor || data.length >= TAIL_MAX) {
        // The window holds more than one poll reads: the first page again,
        // so nothing is left out.
        this._restart();
        return;
      }
      const seen = new Set(this._rows.map((r) => r.id));
      // Rows older than the oldest shown belong to the next page, not here.
      const oldest = this._next && this._rows.length ? Date.parse(this._rows[this._rows.length - 1].created) : -Infinity;
      const fresh = data.filter((r) => !seen.has(r.id) && Date.parse(r.created) >= oldest);
      this._tailNote = "";
      if (!fresh.length) return;
      this._fresh = new Set(fresh.map((r) => r.id));
      this._rows = [...fresh, ...this._rows].sort(newest);
      this._state = "ready";
      this._emit("trailhouse-tail", { added: fresh.length });
      if (this._rows.length >= TAIL_KEEP) {
        this._toggleTail();
        this._tailNote = `Live tail paused: ${this._rows.length} events are shown. Turn it on again to start from the newest.`;
      }
    } catch (e) {
      this._tailNote = `Live tail: ${MESSAGES[e.kind] ?? MESSAGES.failed}`;
    } finally {
      this._polling = false;
    }
  }

  async _open(row) {
    this._opener = row.id;
    this._details = { entry: row };
    this._detailsState = "loading";
    this._copied = "";
    this.updateComplete.then(() => this.renderRoot.querySelector("dialog")?.showModal());
    try {
      const full = await this._get(detailsUrl(this.apiBase, this._orgId(), row.id));
      this._details = { entry: { ...full, ...row, method: full.method, path: full.path }, full };
      this._detailsState = "ready";
    } catch (e) {
      this._details = { entry: row, error: e };
      this._detailsState = "error";
    }
  }

  _closed() {
    this._details = null;
    // Focus goes back to the row's View Details button.
    const id = this._opener;
    this.updateComplete.then(() => {
      const rows = [...this.renderRoot.querySelectorAll("tr[data-id]")];
      rows.find((r) => r.dataset.id === id)?.querySelector("button.details")?.focus();
    });
  }

  /**
   * Saves everything the current filter matches as CSV or NDJSON, from the
   * native API's export (the token decides the org and scope). The
   * response is read as it streams, with a running count, and can be
   * cancelled; a file is offered only once the export is complete.
   */
  async _export(format) {
    if (this._exportAbort) return;
    const abort = new AbortController();
    this._exportAbort = abort;
    const name = format.toUpperCase();
    this._exporting = `Exporting ${name}…`;
    try {
      const url = exportUrl(this.apiBase, this._filter, format);
      const accept = format === "csv" ? "text/csv" : "application/x-ndjson";
      const resp = await this._authorized((token) => fetchOk(url, token, { signal: abort.signal, accept }));
      const reader = resp.body.getReader();
      const chunks = [];
      let bytes = 0;
      let lines = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks.push(value);
        bytes += value.byteLength;
        for (let i = value.indexOf(10); i !== -1; i = value.indexOf(10, i + 1)) lines += 1;
        this._exporting = `Exporting ${name}… ${progress(format, lines, bytes)}`;
      }
      // NDJSON has one event a line; a CSV value can hold line breaks, so
      // its size is what is told.
      const rows = format === "ndjson" ? lines : undefined;
      const a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob(chunks, { type: accept }));
      a.download = `audit-log-${this._orgId()}-${new Date().toISOString().slice(0, 10)}.${format}`;
      this.renderRoot.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
      this._exporting = `Exported ${progress(format, lines, bytes)} (${name}).`;
      this._emit("trailhouse-exported", { format, rows, bytes });
    } catch (e) {
      const cancelled = e?.name === "AbortError";
      this._exporting = cancelled ? "Export cancelled." : `Export failed: ${MESSAGES[e.kind] ?? MESSAGES.failed}`;
      this._emit("trailhouse-exported", { format, error: cancelled ? "cancelled" : (e.kind ?? "failed") });
    } finally {
      this._exportAbort = null;
    }
  }

  /** The page's URL with `#event=<id>`: a link to one event (no token). */
  _linkTo(id) {
    const url = new URL(window.location.href);
    url.hash = `event=${encodeURIComponent(id)}`;
    return url.toString();
  }

  async _copyLink(id) {
    try {
      await navigator.clipboard.writeText(this._linkTo(id));
      this._copied = "Link copied";
    } catch {
      this._copied = "Copy the link from the field";
    }
    this.requestUpdate();
  }

  _close() {
    this.renderRoot.querySelector("dialog")?.close();
  }

  render() {
    const busy = this._state === "loading";
    return html`
      <form role="search" @submit=${this._onSearch}>
        <label for="search">Search</label>
        <input id="search" type="search" name="search" .value=${this._text} aria-describedby="search-help"
          aria-invalid=${this._queryError ? "true" : "false"}
          placeholder="API path, account id, workspace id, or action:… status:5xx" autocomplete="off" />
        <button type="submit">Search</button>
        <span class="range">
          <label for="range">Time</label>
          <select id="range" @change=${this._onRange} .value=${this._range.range}>
            ${Object.entries(RANGE_LABELS).map(([v, label]) => html`<option value=${v} ?selected=${v === this._range.range}>${label}</option>`)}
          </select>
          ${this._range.range === "custom" ? html`
            <label for="range-from">From</label>
            <input id="range-from" type="datetime-local" .value=${this._range.from} @change=${(e) => this._onCustom("from", e)} />
            <label for="range-to">To</label>
            <input id="range-to" type="datetime-local" .value=${this._range.to} @change=${(e) => this._onCustom("to", e)} />` : nothing}
        </span>
        <button type="button" class="tail" aria-pressed=${this._tail ? "true" : "false"} @click=${this._toggleTail}>Live tail</button>
        <button type="button" class="export" data-format="csv" ?disabled=${!!this._exportAbort} @click=${() => this._export("csv")}>Export CSV</button>
        <button type="button" class="export" data-format="ndjson" ?disabled=${!!this._exportAbort} @click=${() => this._export("ndjson")}>Export NDJSON</button>
        ${this._exportAbort ? html`<button type="button" class="cancel-export" @click=${() => this._exportAbort?.abort()}>Cancel export</button>` : nothing}
      </form>
      <p class="hint" id="search-help">Qualifiers: ${QUALIFIERS.map((q) => `${q}:`).join(" ")} (for example <code>status:5xx method:post from:2026-11-01</code>). Times are in your zone.</p>
      ${this._queryError ? html`<p class="query-error" role="alert">${this._queryError}</p>` : nothing}
      ${this._chips()}
      ${this._exporting ? html`<p class="exporting" role="status">${this._exporting}</p>` : nothing}
      ${this._tailNote ? html`<p class="tail-note" role="status">${this._tailNote}</p>` : nothing}
      <div class="status" role="status" aria-live="polite">${this._status()}</div>
      ${this._state === "ready" ? this._table() : nothing}
      <nav class="pager" aria-label="Pages">
        <label for="page-size">Rows per page</label>
        <select id="page-size" @change=${this._onPageSize}>
          ${[...new Set([...PAGE_SIZES, this.pageSize])].sort((a, b) => a - b).map((n) => html`<option value=${n} ?selected=${n === this.pageSize}>${n}</option>`)}
        </select>
        <button type="button" ?disabled=${!this._pages.length || busy} @click=${this._newer}>← Newer</button>
        <button type="button" ?disabled=${!this._next || busy} @click=${this._older}>Older →</button>
      </nav>
      <dialog aria-labelledby="details-title" @close=${this._closed}>${this._drawer()}</dialog>
    `;
  }

  _chips() {
    const list = terms(this._text);
    const range = this._range.range;
    if (!list.length && !range) return nothing;
    const rangeLabel = range === "custom"
      ? `${this._range.from || "…"} – ${this._range.to || "…"}`
      : RANGE_LABELS[range];
    return html`<ul class="chips" aria-label="Active filters">
      ${list.map((t, i) => html`<li>${t.key ? `${t.key}: ${t.value}` : `“${t.value}”`}
        <button type="button" aria-label=${`Remove ${t.raw}`} @click=${() => this._removeTerm(i)}>×</button></li>`)}
      ${range ? html`<li>${rangeLabel}<button type="button" aria-label="Remove the time range" @click=${this._removeRange}>×</button></li>` : nothing}
    </ul>`;
  }

  _status() {
    switch (this._state) {
      case "idle":
        return "Sign in to see the audit log.";
      case "loading":
        return html`<span class="loading">Loading…</span>`;
      case "empty":
        return this._text || this._range.range ? "No events match these filters." : "No events yet.";
      case "ready":
        return `${this._rows.length} events${this._pages.length ? `, page ${this._pages.length + 1}` : ""}${this._tail ? " · live" : ""}`;
      default:
        return html`<span class="error" data-kind=${this._state}>${MESSAGES[this._state] ?? MESSAGES.failed}
          ${this._error?.message ? html`<small>(${this._error.message})</small>` : nothing}</span>`;
    }
  }

  _table() {
    return html`
      <table>
        <caption>Audit log, newest first</caption>
        <thead>
          <tr>
            <th scope="col">Account</th><th scope="col">Workspace</th><th scope="col">Auth Type</th>
            <th scope="col">Resource</th><th scope="col">Method</th><th scope="col">Path</th>
            <th scope="col">Status Code</th><th scope="col">Created</th><th scope="col">Actions</th>
          </tr>
        </thead>
        <tbody>
          ${repeat(this._rows, (r) => r.id, (r) => html`
            <tr data-id=${r.id} class=${this._fresh.has(r.id) ? "fresh" : ""}>
              <td>${r.account ?? ""}</td>
              <td>${r.workspace ? r.workspace.name ?? r.workspace.id : ""}</td>
              <td>${r.authType === "apiKey" ? "API key" : "JWT"}</td>
              <td>${r.resource ?? ""}</td>
              <td>${r.method ?? ""}</td>
              <td class="path">${r.path ?? ""}</td>
              <td class=${statusClass(r.statusCode)}>${r.statusCode ?? ""}</td>
              <td><time datetime=${r.created} title=${`${r.created} (UTC)`}>${local.format(new Date(r.created))}</time></td>
              <td>${r.hasDetails
                ? html`<button type="button" class="details" @click=${() => this._open(r)}>View Details</button>`
                : nothing}</td>
            </tr>`)}
        </tbody>
      </table>`;
  }

  _drawer() {
    const d = this._details;
    if (!d) return nothing;
    const id = d.full?.id ?? d.entry.id;
    return drawer(d, this._detailsState, {
      link: this._linkTo(id),
      copied: this._copied,
      onClose: () => this._close(),
      onCopy: () => this._copyLink(id),
    });
  }
}

if (!customElements.get("trailhouse-audit-log")) {
  customElements.define("trailhouse-audit-log", TrailhouseAuditLog);
}
