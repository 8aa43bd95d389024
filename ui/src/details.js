// The details drawer's content and the table's cell helpers: pure
// templates over an entry, so the element keeps only state and requests.
import { html, nothing } from "lit";

export const MESSAGES = {
  unauthenticated: "Your session has expired or the token is not valid. Sign in again.",
  forbidden: "You do not have permission to view this organisation's audit log (viewAuditLog).",
  not_found: "Not found.",
  rate_limited: "Too many requests. Wait a moment and try again.",
  unavailable: "The audit log is unavailable right now. Try again shortly.",
  failed: "Something went wrong while loading the audit log.",
};

/** The class of a status code's cell (`s2` … `s5`). */
export function statusClass(code) {
  return typeof code === "number" ? `s${Math.floor(code / 100)}` : "";
}

/** A body as indented JSON when it is JSON, else as it came. */
export function pretty(body) {
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

/**
 * The drawer of `d` ({entry, full?, error?}) in `state`.
 * @param {{link: string, copied: string, onClose: () => void, onCopy: () => void}} ctl
 */
export function drawer(d, state, ctl) {
  const f = d.full;
  return html`
    <header>
      <h2 id="details-title">${d.entry.method ?? ""} ${d.entry.path ?? ""}</h2>
      <button type="button" class="close" aria-label="Close details" @click=${ctl.onClose}>×</button>
    </header>
    ${state === "loading" ? html`<p>Loading…</p>` : nothing}
    ${state === "error" ? html`<p class="error">${MESSAGES[d.error?.kind] ?? MESSAGES.failed}</p>` : nothing}
    ${f ? html`
      <p class="link">
        <label for="event-link">Link to this event</label>
        <input id="event-link" readonly .value=${ctl.link} @focus=${(e) => e.target.select()} />
        <button type="button" class="copy" @click=${ctl.onCopy}>Copy link</button>
        <span role="status">${ctl.copied}</span>
      </p>
      <section><h3>Body</h3><pre class="body">${pretty(f.body)}</pre></section>
      <section><h3>Query parameters</h3>${pairs(f.query)}</section>
      <section><h3>Path parameters</h3>${pairs(f.pathParams)}</section>
      <section><h3>Headers</h3>${pairs(f.headers)}</section>` : nothing}
  `;
}
