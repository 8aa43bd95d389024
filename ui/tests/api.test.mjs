// Unit tests of the viewer's API client (node --test).
import { test } from "node:test";
import assert from "node:assert/strict";
import { ApiError, detailsUrl, exportUrl, fetchOk, getJson, kindOf, listUrl, orgOfToken } from "../src/api.js";

test("list URLs carry only the parameters given, encoded", () => {
  const cases = [
    [{}, "/api/v1/organizations/org%2F1/audit-logs"],
    [{ search: "a b&c", limit: 100 }, "/api/v1/organizations/org%2F1/audit-logs?search=a+b%26c&limit=100"],
    [{ cursor: "xyz" }, "/api/v1/organizations/org%2F1/audit-logs?cursor=xyz"],
  ];
  for (const [q, want] of cases) assert.equal(listUrl("", "org/1", q), want);
  assert.equal(detailsUrl("https://h", "o", "i d"), "https://h/api/v1/organizations/o/audit-logs/i%20d");
  assert.equal(listUrl("", "o", { action: ["a", "b"], status: [], from: undefined }), "/api/v1/organizations/o/audit-logs?action=a&action=b");
  assert.equal(exportUrl("", {}, "csv"), "/v1/events/export?format=csv&order=desc");
  assert.equal(exportUrl("/a", { search: ["x y"], method: ["POST"] }, "ndjson"), "/a/v1/events/export?format=ndjson&order=desc&search=x+y&method=POST");
});

test("statuses map to what the viewer shows", () => {
  const cases = [[401, "unauthenticated"], [403, "forbidden"], [404, "not_found"], [429, "rate_limited"], [503, "unavailable"], [500, "failed"]];
  for (const [status, kind] of cases) assert.equal(kindOf(status), kind);
});

test("errors carry the server's message; the token goes in the header only", async () => {
  let seen;
  const fake = async (url, init) => {
    seen = { url, init };
    return new Response(JSON.stringify({ error: { code: "forbidden", message: "needs viewAuditLog" } }), { status: 403 });
  };
  await assert.rejects(getJson("/x", "tok", fake), (e) => e instanceof ApiError && e.kind === "forbidden" && e.message === "needs viewAuditLog");
  assert.equal(seen.url, "/x");
  assert.equal(seen.init.headers.Authorization, "Bearer tok");
  const down = async () => { throw new TypeError("offline"); };
  await assert.rejects(getJson("/x", "t", down), (e) => e.kind === "unavailable");
  const ok = async () => new Response("a,b\r\n", { status: 200 });
  const resp = await fetchOk("/x", "t", { fetchFn: ok, accept: "text/csv" });
  assert.equal(await resp.text(), "a,b\r\n");
  const aborted = async () => { throw new DOMException("stopped", "AbortError"); };
  await assert.rejects(fetchOk("/x", "t", { fetchFn: aborted }), (e) => e.name === "AbortError");
});

test("the org is read from a JWT's payload", () => {
  const jwt = (claims) => `h.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.s`;
  assert.equal(orgOfToken(jwt({ org_id: "org_a" })), "org_a");
  assert.equal(orgOfToken(jwt({ sub: "x" })), null);
  assert.equal(orgOfToken("not-a-jwt"), null);
  assert.equal(orgOfToken("a.%%%.b"), null);
});
