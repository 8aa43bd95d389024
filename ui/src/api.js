// The viewer's client of the organisation audit log API
// (GET /api/v1/organizations/{org}/audit-logs[/{id}]): URLs, the bearer
// token, and errors as values the element can show. No DOM here, so the
// node tests run it as is.

/** An answer that is not a page: `kind` is what the element shows. */
export class ApiError extends Error {
  /**
   * @param {"unauthenticated"|"forbidden"|"not_found"|"rate_limited"|"unavailable"|"failed"} kind
   * @param {string} message
   * @param {number} status
   */
  constructor(kind, message, status) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

/** The kind of an error status. */
export function kindOf(status) {
  if (status === 401) return "unauthenticated";
  if (status === 403) return "forbidden";
  if (status === 404) return "not_found";
  if (status === 429) return "rate_limited";
  if (status === 503) return "unavailable";
  return "failed";
}

/** `params` (name → values) as a query string, in a stable order. */
function query(params) {
  const q = new URLSearchParams();
  for (const [name, values] of Object.entries(params)) {
    for (const v of [].concat(values)) if (v !== undefined && v !== null && v !== "") q.append(name, String(v));
  }
  return q.toString();
}

/**
 * The URL of a list page.
 * @param {string} base  the API's origin and prefix ("" for the same origin)
 * @param {string} org
 * @param {Record<string, string|string[]|number|undefined>} params  the
 *   filter (see query.js), `limit` and `cursor`
 */
export function listUrl(base, org, params = {}) {
  const q = query(params);
  return `${base}/api/v1/organizations/${encodeURIComponent(org)}/audit-logs${q ? `?${q}` : ""}`;
}

/**
 * The URL of an export of everything the filter matches (the native API's
 * export, scoped by the token), newest first.
 * @param {string} base
 * @param {Record<string, string|string[]>} filter
 * @param {"csv"|"ndjson"} format
 */
export function exportUrl(base, filter, format) {
  return `${base}/v1/events/export?${query({ format, order: "desc", ...filter })}`;
}

/** The URL of one entry's details. */
export function detailsUrl(base, org, id) {
  return `${base}/api/v1/organizations/${encodeURIComponent(org)}/audit-logs/${encodeURIComponent(id)}`;
}

/**
 * GETs `url` with the token: the response when it is a success, else
 * throws an ApiError carrying the server's message.
 * @param {string} url
 * @param {string} token
 * @param {{fetchFn?: typeof fetch, signal?: AbortSignal, accept?: string}} [opts]
 */
export async function fetchOk(url, token, { fetchFn = fetch, signal, accept = "application/json" } = {}) {
  let resp;
  try {
    resp = await fetchFn(url, {
      headers: { Authorization: `Bearer ${token}`, Accept: accept },
      credentials: "omit",
      cache: "no-store",
      signal,
    });
  } catch (e) {
    if (e?.name === "AbortError") throw e;
    throw new ApiError("unavailable", `the audit log could not be reached: ${e.message}`, 0);
  }
  if (!resp.ok) {
    const body = await resp.json().catch(() => null);
    const message = body?.error?.message ?? body?.message ?? resp.statusText;
    throw new ApiError(kindOf(resp.status), String(message), resp.status);
  }
  return resp;
}

/** GETs `url` with the token: its JSON, or an ApiError. */
export async function getJson(url, token, fetchFn = fetch) {
  const resp = await fetchOk(url, token, { fetchFn });
  return resp.json().catch(() => null);
}

/**
 * The org a JWT names (`org_id`), read without verifying it: the server
 * verifies every request. `null` when the token is not a JWT with one.
 */
export function orgOfToken(token) {
  const part = token.split(".")[1];
  if (!part) return null;
  try {
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json);
    return typeof claims.org_id === "string" && claims.org_id ? claims.org_id : null;
  } catch {
    return null;
  }
}
