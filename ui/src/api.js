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

/**
 * The URL of a list page.
 * @param {string} base  the API's origin and prefix ("" for the same origin)
 * @param {string} org
 * @param {{search?: string, limit?: number, cursor?: string}} q
 */
export function listUrl(base, org, q = {}) {
  const params = new URLSearchParams();
  if (q.search) params.set("search", q.search);
  if (q.limit) params.set("limit", String(q.limit));
  if (q.cursor) params.set("cursor", q.cursor);
  const query = params.toString();
  return `${base}/api/v1/organizations/${encodeURIComponent(org)}/audit-logs${query ? `?${query}` : ""}`;
}

/**
 * The URL of an export of everything the search matches (the native API's
 * export, scoped by the token), newest first.
 * @param {string} base
 * @param {{search?: string, format: "csv"|"ndjson"}} q
 */
export function exportUrl(base, q) {
  const params = new URLSearchParams({ format: q.format, order: "desc" });
  if (q.search) params.set("search", q.search);
  return `${base}/v1/events/export?${params}`;
}

/** The URL of one entry's details. */
export function detailsUrl(base, org, id) {
  return `${base}/api/v1/organizations/${encodeURIComponent(org)}/audit-logs/${encodeURIComponent(id)}`;
}

/**
 * GETs `url` with the token; JSON on success, else throws an ApiError
 * carrying the server's message.
 * @param {string} url
 * @param {string} token
 * @param {typeof fetch} [fetchFn]
 */
export async function getJson(url, token, fetchFn = fetch) {
  let resp;
  try {
    resp = await fetchFn(url, {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
      credentials: "omit",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError("unavailable", `the audit log could not be reached: ${e.message}`, 0);
  }
  const body = await resp.json().catch(() => null);
  if (!resp.ok) {
    const message = body?.error?.message ?? body?.message ?? resp.statusText;
    throw new ApiError(kindOf(resp.status), String(message), resp.status);
  }
  return body;
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
