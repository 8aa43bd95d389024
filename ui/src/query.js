// The viewer's search language: free text (the organisation audit log's
// search: an API path, partly, an account id or a workspace id) and
// qualifiers, turned into the query API's filter parameters. Pure, so the
// node tests run it as is.
//
//   action:user.login      the action (many: any of them)
//   actor:alice@acme.io    the actor's email (with an @) or id
//   status:404  status:5xx one status code, or a class
//   method:post            the HTTP method
//   resource:tickets       the resource type
//   workspace:ws_1         the workspace id
//   ip:10.0.0.1            the caller's IP address
//   from:2026-11-01  to:2026-11-30T18:00   dates or times in the viewer's
//                          zone (a `to` date includes that whole day; a
//                          `to` time is exclusive, as the API's `to`)
//
// A value with spaces goes in quotes: actor:"Jane Doe". A word with a colon
// that is not a qualifier (a path such as /v1/items:batch) is free text.

/** A search that does not parse: `term` is the bad part. */
export class QueryError extends Error {
  constructor(term, message) {
    super(`${term}: ${message}`);
    this.term = term;
  }
}

/** Qualifier → the parameter it sets (`actor` and `status` pick theirs). */
const FIELDS = {
  action: "action",
  actor: null,
  status: null,
  method: "method",
  resource: "resource_type",
  workspace: "workspace_id",
  ip: "ip",
  from: null,
  to: null,
};

/** The qualifiers, for help text and suggestions. */
export const QUALIFIERS = Object.keys(FIELDS);

const TERM = /(\w+):"([^"]*)"|(\w+):(\S+)|"([^"]*)"|(\S+)/g;

/**
 * Splits a search into terms: `{raw, key?, value}` where `key` is a known
 * qualifier, else the term is free text.
 * @param {string} text
 */
export function terms(text) {
  const out = [];
  for (const m of text.matchAll(TERM)) {
    // A qualifier with nothing after its colon is still a qualifier (and
    // an error), not free text.
    const key = (m[1] ?? m[3] ?? /^(\w+):$/.exec(m[0])?.[1])?.toLowerCase();
    if (key && Object.hasOwn(FIELDS, key)) {
      out.push({ raw: m[0], key, value: m[2] ?? m[4] ?? "" });
    } else {
      out.push({ raw: m[0], value: m[5] ?? m[6] ?? m[0] });
    }
  }
  return out;
}

const DATE = /^\d{4}-\d{2}-\d{2}$/;
const DATETIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?$/;

/**
 * A date or time of the viewer's zone (or with an explicit offset) as an
 * instant. A bare date is its day's first moment, or with `endOfDay` the
 * next day's (the API's `to` is exclusive, so the whole day is in).
 * @param {string} term
 * @param {string} value
 * @param {boolean} endOfDay
 */
export function instant(term, value, endOfDay = false) {
  let t = NaN;
  if (DATE.test(value)) {
    const [y, m, d] = value.split("-").map(Number);
    const day = new Date(y, m - 1, d);
    if (day.getFullYear() === y && day.getMonth() === m - 1 && day.getDate() === d) {
      t = endOfDay ? new Date(y, m - 1, d + 1).getTime() : day.getTime();
    }
  } else if (DATETIME.test(value)) {
    t = Date.parse(value);
  }
  if (Number.isNaN(t)) throw new QueryError(term, "must be a date (2026-11-30) or a time (2026-11-30T18:00)");
  return new Date(t);
}

/**
 * Parses a search into the filter parameters of the query API.
 * @param {string} text
 * @returns {{params: Record<string, string[]>, from: Date|null, to: Date|null, terms: ReturnType<typeof terms>}}
 * @throws {QueryError}
 */
export function parse(text) {
  const all = terms(text.trim());
  const params = {};
  const add = (name, value) => (params[name] ??= []).push(value);
  const words = [];
  let from = null;
  let to = null;
  let statusClass = null;
  for (const t of all) {
    const v = t.value;
    if (!t.key) {
      words.push(v);
      continue;
    }
    if (!v) throw new QueryError(t.raw, "needs a value");
    switch (t.key) {
      case "actor":
        add(v.includes("@") ? "actor_email" : "actor_id", v);
        break;
      case "status":
        if (/^[1-5]\d\d$/.test(v)) {
          add("status", v);
        } else if (/^[1-5]xx$/i.test(v)) {
          if (statusClass && statusClass !== v[0]) throw new QueryError(t.raw, "one status class at a time");
          statusClass = v[0];
        } else {
          throw new QueryError(t.raw, "must be a status code (404) or a class (5xx)");
        }
        break;
      case "method":
        if (!/^[A-Za-z]+$/.test(v)) throw new QueryError(t.raw, "must be an HTTP method (GET, POST, …)");
        add("method", v.toUpperCase());
        break;
      case "from":
        from = instant(t.raw, v);
        break;
      case "to":
        to = instant(t.raw, v, true);
        break;
      default:
        add(FIELDS[t.key], v);
    }
  }
  if (statusClass) {
    params.status_min = [`${statusClass}00`];
    params.status_max = [`${statusClass}99`];
  }
  if (from && to && from >= to) throw new QueryError("from:", "must be before to:");
  if (words.length) params.search = [words.join(" ")];
  return { params, from, to, terms: all };
}

/** The search without its `index`th term (a chip's remove button). */
export function without(text, index) {
  return terms(text)
    .filter((_, i) => i !== index)
    .map((t) => t.raw)
    .join(" ");
}

/** The relative time ranges of the picker, in milliseconds. */
export const RANGES = {
  "1h": 3600e3,
  "24h": 24 * 3600e3,
  "7d": 7 * 24 * 3600e3,
  "30d": 30 * 24 * 3600e3,
};

/**
 * The `from`/`to` parameters of a search's dates and the picker's range
 * together (both hold: the later start, the earlier end).
 * @param {{from: Date|null, to: Date|null}} parsed
 * @param {{range: string, from?: string, to?: string}} picker  `range` is
 *   "" (any time), a key of RANGES, or "custom" with datetime-local values
 * @param {number} now
 */
export function timeWindow(parsed, picker, now = Date.now()) {
  let from = parsed.from;
  let to = parsed.to;
  const later = (a, b) => (!a ? b : !b ? a : a > b ? a : b);
  const earlier = (a, b) => (!a ? b : !b ? a : a < b ? a : b);
  if (picker.range in RANGES) {
    from = later(from, new Date(now - RANGES[picker.range]));
  } else if (picker.range === "custom") {
    if (picker.from) from = later(from, instant("From", picker.from));
    if (picker.to) to = earlier(to, instant("To", picker.to));
  }
  if (from && to && from > to) throw new QueryError("time range", "the start is after the end");
  const out = {};
  if (from) out.from = [from.toISOString()];
  if (to) out.to = [to.toISOString()];
  return out;
}
