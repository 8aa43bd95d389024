// Unit tests of the viewer's search language (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { QueryError, parse, terms, timeWindow, without } from "../src/query.js";

test("qualifiers become the API's filter parameters", () => {
  const cases = [
    ["", {}],
    ["/v1/tickets", { search: ["/v1/tickets"] }],
    ["action:user.login", { action: ["user.login"] }],
    ["action:a action:b", { action: ["a", "b"] }],
    ["actor:alice@acme.io", { actor_email: ["alice@acme.io"] }],
    ["actor:usr_1", { actor_id: ["usr_1"] }],
    ['actor:"Jane Doe"', { actor_id: ["Jane Doe"] }],
    ["status:404 status:409", { status: ["404", "409"] }],
    ["status:5xx", { status_min: ["500"], status_max: ["599"] }],
    ["STATUS:4XX method:post", { status_min: ["400"], status_max: ["499"], method: ["POST"] }],
    ["resource:tickets workspace:ws_1 ip:10.0.0.1", { resource_type: ["tickets"], workspace_id: ["ws_1"], ip: ["10.0.0.1"] }],
    ["method:get /v1/items:batch", { method: ["GET"], search: ["/v1/items:batch"] }],
    ['"two words"', { search: ["two words"] }],
    ["nosuch:thing", { search: ["nosuch:thing"] }],
    ["constructor:x toString:y", { search: ["constructor:x toString:y"] }],
  ];
  for (const [text, want] of cases) assert.deepEqual(parse(text).params, want, text);
});

test("dates are the viewer's zone; a `to` date includes its whole day", () => {
  const p = parse("from:2026-11-01 to:2026-11-30");
  assert.equal(p.from.getTime(), new Date(2026, 10, 1).getTime());
  assert.equal(p.to.getTime(), new Date(2026, 11, 1).getTime(), "the API's `to` is exclusive");
  assert.equal(parse("from:2026-11-01T10:00Z").from.toISOString(), "2026-11-01T10:00:00.000Z");
  assert.equal(parse("to:2026-11-01T10:00:30+02:00").to.toISOString(), "2026-11-01T08:00:30.000Z");
});

test("bad qualifiers name the term", () => {
  const cases = [
    ["status:abc", "status:abc"],
    ["status:6xx", "status:6xx"],
    ["status:4xx status:5xx", "status:5xx"],
    ["method:G3T", "method:G3T"],
    ["from:2026-13-01", "from:2026-13-01"],
    ["from:2026-02-30", "from:2026-02-30"],
    ["to:yesterday", "to:yesterday"],
    ["action:", "action:"],
    ["from:2026-11-02 to:2026-11-01", "from:"],
  ];
  for (const [text, term] of cases) {
    assert.throws(() => parse(text), (e) => e instanceof QueryError && e.term === term, text);
  }
});

test("a chip's remove button drops its term only", () => {
  const text = 'action:a actor:"J D" /path';
  assert.deepEqual(terms(text).map((t) => t.raw), ["action:a", 'actor:"J D"', "/path"]);
  assert.equal(without(text, 1), "action:a /path");
  assert.equal(without(text, 0), 'actor:"J D" /path');
});

test("the picker's range and the search's dates both hold", () => {
  const now = Date.parse("2026-12-02T12:00:00Z");
  assert.deepEqual(timeWindow({ from: null, to: null }, { range: "" }, now), {});
  assert.deepEqual(timeWindow({ from: null, to: null }, { range: "1h" }, now), { from: ["2026-12-02T11:00:00.000Z"] });
  const later = new Date("2026-12-02T11:30:00Z");
  assert.deepEqual(timeWindow({ from: later, to: null }, { range: "24h" }, now), { from: [later.toISOString()] });
  const custom = timeWindow({ from: null, to: null }, { range: "custom", from: "2026-11-01T00:00Z", to: "2026-11-02T00:00Z" }, now);
  assert.deepEqual(custom, { from: ["2026-11-01T00:00:00.000Z"], to: ["2026-11-02T00:00:00.000Z"] });
  const local = timeWindow({ from: null, to: null }, { range: "custom", from: "2026-11-01T08:30" }, now);
  assert.deepEqual(local, { from: [new Date(2026, 10, 1, 8, 30).toISOString()] }, "datetime-local values are the viewer's zone");
  assert.throws(() => timeWindow({ from: null, to: null }, { range: "custom", from: "2026-11-03T00:00Z", to: "2026-11-02T00:00Z" }, now), QueryError);
});
