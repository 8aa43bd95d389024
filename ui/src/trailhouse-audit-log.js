// <trailhouse-audit-log>: an organisation's audit log as a table, with
// search, paging both ways and a details drawer. The same element is the
// query API's own /ui/ page and what a platform embeds in its admin portal.
//
// Attributes: `org` (the org id; default: the token's `org_id`), `api-base`
// (the query API's origin, default: this page's), `page-size` (default 50).
// Properties: `token` (a bearer token, kept in memory only) or
// `tokenProvider` (an async function returning one; called again after a
// 401, so a platform can hand out short-lived viewer tokens), and `event`
// (an event id whose details open once the log is shown: the deep link
// `#event=<id>` of the page). The drawer offers a link to its event: the
// page's URL with `#event=<id>`, never a token.

import { LitElement, html, css, nothing } from "lit";
import { ApiError, detailsUrl, exportUrl, getJson, kindOf, listUrl, orgOfToken } from "./api.js";

const MESSAGES = {
  unauthenticated: "Your session has expired or the token is not valid. Sign in again.",
  forbidden: "You do not have permission to view this organisation's audit log (viewAuditLog).",
  not_found: "Not found.",
  rate_limited: "Too many requests. Wait a moment and try again.",
  unavailable: "The audit log is unavailable right now. Try again shortly.",
  failed: "Something went wrong while loading the audit log.",
};

const local = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

export class TrailhouseAuditLog extends LitElement {
  static properties = {
    org: { type: String },
    apiBase: { type: String, attribute: "api-base" },
    pageSize: { type: Number, attribute: "page-size" },
    token: { attribute: false },
    tokenProvider: { attribute: false },
    event: { type: String },
    _rows: { state: true },
    _state: { state: true },
    _error: { state: true },
    _search: { state: true },
    _pages: { state: true },
    _next: { state: true },
    _details: { state: true },
    _detailsState: { state: true },
    _exporting: { state: true },
  };

  constructor() {
    super();
    this.org = "";
    this.apiBase = "";
    this.pageSize = 50;
    this.token = "";
    this.tokenProvider = null;
    this.event = "";
    this._rows = [];
    this._state = "idle";
    this._error = null;
    this._search = "";
    // Cursors of the pages before the current one ("" is the first page).
    this._pages = [];
    this._cursor = "";
    this._next = null;
    this._details = null;
    this._detailsState = "idle";
    this._loadId = 0;
  }

  connectedCallback() {
    super.connectedCallback();
    this.load();
  }

  updated(changed) {
    // A token the provider just gave is not a new sign-in.
    const provided = this._provided;
    this._provided = false;
    if ((changed.has("token") && changed.get("token") !== undefined && !provided) || changed.has("org")) {
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

  _orgId() {
    return this.org || orgOfToken(this.token || "") || "";
  }

  async _get(url) {
    try {
      return await getJson(url, await this._token());
    } catch (e) {
      if (e instanceof ApiError && e.kind === "unauthenticated" && this.tokenProvider) {
        return getJson(url, await this._token(true));
      }
      throw e;
    }
  }

  _restart() {
    this._pages = [];
    this._cursor = "";
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
      const url = listUrl(this.apiBase, org, {
        search: this._search,
        limit: this.pageSize,
        cursor: this._cursor || undefined,
      });
      const page = await this._get(url);
      if (id !== this._loadId) return;
      this._rows = page.data ?? [];
      this._next = page.cursor ?? null;
      this._state = this._rows.length ? "ready" : "empty";
      this._error = null;
      if (this.event) {
        const id = this.event;
        this.event = "";
        this._open({ id });
      }
    } catch (e) {
      if (id !== this._loadId) return;
      this._rows = [];
      this._error = e;
      this._state = e instanceof ApiError ? e.kind : "failed";
    }
    this.dispatchEvent(new CustomEvent("trailhouse-loaded", { detail: { rows: this._rows.length, state: this._state }, bubbles: true, composed: true }));
  }

  _onSearch(ev) {
    ev.preventDefault();
    const input = this.renderRoot.querySelector("#search");
    this._search = input.value.trim();
    this._restart();
  }

  _older() {
    if (!this._next) return;
    this._pages = [...this._pages, this._cursor];
    this._cursor = this._next;
    this.load();
  }

  _newer() {
    if (!this._pages.length) return;
    this._cursor = this._pages[this._pages.length - 1];
    this._pages = this._pages.slice(0, -1);
    this.load();
  }

  async _open(row) {
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

  /**
   * Downloads everything the current search matches as CSV or NDJSON, from
   * the native API's export (the token decides the org and scope).
   */
  async _export(format) {
    this._exporting = `Exporting ${format.toUpperCase()}…`;
    try {
      const url = exportUrl(this.apiBase, { search: this._search, format });
      const resp = await fetch(url, {
        headers: { Authorization: `Bearer ${await this._token()}` },
        credentials: "omit",
        cache: "no-store",
      });
      if (!resp.ok) {
        const body = await resp.json().catch(() => null);
        throw new ApiError(kindOf(resp.status), body?.error?.message ?? resp.statusText, resp.status);
      }
      const blob = await resp.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = `audit-log-${this._orgId()}.${format}`;
      this.renderRoot.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
      this._exporting = "";
    } catch (e) {
      this._exporting = `Export failed: ${MESSAGES[e.kind] ?? MESSAGES.failed}`;
    }
  }

  /** The page's URL with `#event=<id>`: a link to one event (no token). */
  _linkTo(id) {
    const url = new URL(window.location.href);
    url.hash = `event=${encodeURIComponent(id)}`;
    return url.toString();
  }

  async _copyLink(id) {
    const link = this._linkTo(id);
    try {
      await navigator.clipboard.writeText(link);
      this._copied = "Link copied";
    } catch {
      this._copied = "Copy the link from the field";
    }
    this.requestUpdate();
  }

  _close() {
    this.renderRoot.querySelector("dialog")?.close();
    this._details = null;
  }

  render() {
    return html`
      <form role="search" @submit=${this._onSearch}>
        <label for="search">Search</label>
        <input id="search" type="search" name="search" .value=${this._search}
          placeholder="API path, account id or workspace id" autocomplete="off" />
        <button type="submit">Search</button>
        <button type="button" class="export" data-format="csv" @click=${() => this._export("csv")}>Export CSV</button>
        <button type="button" class="export" data-format="ndjson" @click=${() => this._export("ndjson")}>Export NDJSON</button>
      </form>
      ${this._exporting ? html`<p class="exporting" role="status">${this._exporting}</p>` : nothing}
      <div class="status" role="status" aria-live="polite">${this._status()}</div>
      ${this._state === "ready" ? this._table() : nothing}
      <nav class="pager" aria-label="Pages">
        <button type="button" ?disabled=${!this._pages.length || this._state === "loading"} @click=${this._newer}>← Newer</button>
        <button type="button" ?disabled=${!this._next || this._state === "loading"} @click=${this._older}>Older →</button>
      </nav>
      <dialog aria-labelledby="details-title" @close=${() => (this._details = null)}>${this._drawer()}</dialog>
    `;
  }

  _status() {
    switch (this._state) {
      case "idle":
        return "Sign in to see the audit log.";
      case "loading":
        return html`<span class="loading">Loading…</span>`;
      case "empty":
        return this._search ? `No events match “${this._search}”.` : "No events yet.";
      case "ready":
        return `${this._rows.length} events${this._pages.length ? `, page ${this._pages.length + 1}` : ""}`;
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
          ${this._rows.map((r) => html`
            <tr data-id=${r.id}>
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
    const f = d.full;
    return html`
      <header>
        <h2 id="details-title">${d.entry.method ?? ""} ${d.entry.path ?? ""}</h2>
        <button type="button" class="close" aria-label="Close details" @click=${this._close}>×</button>
      </header>
      ${this._detailsState === "loading" ? html`<p>Loading…</p>` : nothing}
      ${this._detailsState === "error" ? html`<p class="error">${MESSAGES[d.error?.kind] ?? MESSAGES.failed}</p>` : nothing}
      ${f ? html`
        <p class="link">
          <label for="event-link">Link to this event</label>
          <input id="event-link" readonly .value=${this._linkTo(f.id)} @focus=${(e) => e.target.select()} />
          <button type="button" class="copy" @click=${() => this._copyLink(f.id)}>Copy link</button>
          <span role="status">${this._copied ?? ""}</span>
        </p>
        <section><h3>Body</h3><pre class="body">${pretty(f.body)}</pre></section>
        <section><h3>Query parameters</h3>${pairs(f.query)}</section>
        <section><h3>Path parameters</h3>${pairs(f.pathParams)}</section>
        <section><h3>Headers</h3>${pairs(f.headers)}</section>` : nothing}
    `;
  }

  static styles = css`
    :host { display: block; font: 14px/1.4 system-ui, sans-serif; color: var(--th-fg, CanvasText); }
    form { display: flex; gap: .5rem; align-items: center; margin-bottom: .75rem; }
    input[type="search"] { flex: 1; padding: .4rem .5rem; font: inherit; }
    button { font: inherit; padding: .3rem .7rem; cursor: pointer; }
    button:focus-visible, input:focus-visible { outline: 2px solid Highlight; outline-offset: 2px; }
    table { width: 100%; border-collapse: collapse; }
    caption { text-align: left; font-weight: 600; padding: .25rem 0; }
    th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid color-mix(in srgb, CanvasText 15%, transparent); vertical-align: top; }
    td.path { font-family: ui-monospace, monospace; word-break: break-all; }
    td.s2 { color: #137333; } td.s4 { color: #a05a00; } td.s5 { color: #b3261e; }
    .status { min-height: 1.5rem; margin: .25rem 0; }
    .error { color: #b3261e; }
    .pager { display: flex; gap: .5rem; justify-content: flex-end; margin-top: .75rem; }
    dialog { width: min(48rem, 95vw); max-height: 85vh; border: 1px solid color-mix(in srgb, CanvasText 25%, transparent); border-radius: 6px; background: Canvas; color: CanvasText; }
    dialog header { display: flex; justify-content: space-between; align-items: center; gap: 1rem; }
    dialog h2 { font-size: 1rem; margin: 0; font-family: ui-monospace, monospace; }
    dialog h3 { font-size: .9rem; margin: 1rem 0 .25rem; }
    .link { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
    .link input { flex: 1; min-width: 16rem; font: 12px ui-monospace, monospace; padding: .25rem; }
    pre { background: color-mix(in srgb, CanvasText 6%, transparent); padding: .5rem; overflow: auto; margin: 0; }
    dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .75rem; margin: 0; }
    dt { font-family: ui-monospace, monospace; } dd { margin: 0; word-break: break-all; }
    @media (prefers-color-scheme: dark) {
      td.s2 { color: #81c995; } td.s4 { color: #fdd663; } td.s5, .error { color: #f28b82; }
    }
  `;
}

function statusClass(code) {
  return typeof code === "number" ? `s${Math.floor(code / 100)}` : "";
}

/** A body as indented JSON when it is JSON, else as it came. */
function pretty(body) {
  if (body == null || body === "") return "(empty)";
  try {
    return JSON.stringify(JSON.parse(body), null, 2);
  } catch {
    return String(body);
  }
}

function pairs(obj) {
  const entries = Object.entries(obj ?? {});
  if (!entries.length) return html`<p>(none)</p>`;
  return html`<dl>${entries.map(([k, v]) => html`<dt>${k}</dt><dd>${typeof v === "string" ? v : JSON.stringify(v)}</dd>`)}</dl>`;
}

if (!customElements.get("trailhouse-audit-log")) {
  customElements.define("trailhouse-audit-log", TrailhouseAuditLog);
}
