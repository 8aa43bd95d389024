// The viewer in a real browser (Debian's chromium through playwright-core),
// against a running query API. Run by the Rust integration test
// tests/it/query/viewer.rs, which starts the API over the test dataset and
// passes:
//   VIEWER_URL    the query API's base URL
//   TOKEN         a token of org_a with viewAuditLog
//   TOKEN_OTHER   a token of org_b with viewAuditLog
//   TOKEN_NOPERM  a token of org_a without it
//   SEARCH        a search term that matches some of org_a's events
//   SCREENSHOTS   (optional) a folder for screenshots of the table and drawer
// Every check that fails is printed; the exit code is the number of failures.

import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("VIEWER_URL");
const token = env("TOKEN");
const PAGE = 100;
let failures = 0;
const check = (ok, what, detail = "") => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${ok || !detail ? "" : `: ${detail}`}`);
  if (!ok) failures += 1;
};

/** The API's own answer, to hold the table to. */
async function api(tok, query = "") {
  const org = JSON.parse(Buffer.from(tok.split(".")[1], "base64url").toString()).org_id;
  const resp = await fetch(`${base}/api/v1/organizations/${org}/audit-logs?limit=${PAGE}${query}`, {
    headers: { Authorization: `Bearer ${tok}` },
  });
  return resp.json();
}

const shownIds = (page) => page.locator("trailhouse-audit-log tr[data-id]").evaluateAll((rows) => rows.map((r) => r.dataset.id));

async function signIn(page, tok) {
  await page.goto(`${base}/ui/`);
  await page.fill("#token", tok);
  const loaded = page.evaluate(
    () => new Promise((resolve) => document.addEventListener("trailhouse-loaded", (e) => resolve(e.detail), { once: true })),
  );
  const started = Date.now();
  await page.click("#sign-in button[type=submit]");
  const detail = await loaded;
  await page.locator("trailhouse-audit-log .status").waitFor();
  return { detail, ms: Date.now() - started };
}

/** Waits for the next load of the element after `action`. */
async function afterLoad(page, action) {
  const loaded = page.evaluate(
    () => new Promise((resolve) => document.addEventListener("trailhouse-loaded", (e) => resolve(e.detail), { once: true })),
  );
  await action();
  return loaded;
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
try {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (m) => m.type() === "error" && problems.push(m.text()));
  page.on("pageerror", (e) => problems.push(e.message));

  // The page, its policy, and the first page of 100 rows.
  const resp = await page.goto(`${base}/ui/`);
  const csp = resp.headers()["content-security-policy"] ?? "";
  check(resp.status() === 200, "GET /ui/ answers 200", String(resp.status()));
  check(csp.includes("script-src 'self'") && !csp.includes("unsafe"), "a strict Content-Security-Policy", csp);
  const first = await signIn(page, token);
  const want = await api(token);
  const ids = await shownIds(page);
  check(first.detail.rows === PAGE && ids.length === PAGE, `the first page shows ${PAGE} rows`, `${ids.length}`);
  check(JSON.stringify(ids) === JSON.stringify(want.data.map((r) => r.id)), "the rows are the API's, newest first");
  console.log(`first render of ${ids.length} rows: ${first.ms} ms (goal ≤ 1000 ms)`);
  check(first.ms <= 1000, "first render within 1 s", `${first.ms} ms`);
  check(!(await page.isVisible("#sign-in")) && (await page.isVisible("#sign-out")), "after sign-in the form is gone and Sign out is there");
  const headers = await page.locator("trailhouse-audit-log th").allTextContents();
  const columns = ["Account", "Workspace", "Auth Type", "Resource", "Method", "Path", "Status Code", "Created", "Actions"];
  check(JSON.stringify(headers) === JSON.stringify(columns), "the table's columns", headers.join(", "));
  const stored = await page.evaluate(() => [localStorage.length, sessionStorage.length, document.cookie, location.href]);
  check(stored[0] === 0 && stored[1] === 0 && stored[2] === "" && !stored[3].includes(token.slice(0, 20)), "the token is in no storage, cookie or URL", JSON.stringify(stored));

  // Paging forward and back.
  const older = await afterLoad(page, () => page.click("trailhouse-audit-log .pager button:has-text('Older')"));
  const want2 = await api(token, `&cursor=${encodeURIComponent(want.cursor)}`);
  const ids2 = await shownIds(page);
  check(older.rows > 0 && JSON.stringify(ids2) === JSON.stringify(want2.data.map((r) => r.id)), "Older shows the API's next page");
  await afterLoad(page, () => page.click("trailhouse-audit-log .pager button:has-text('Newer')"));
  check(JSON.stringify(await shownIds(page)) === JSON.stringify(ids), "Newer goes back to the first page");

  // Details of the first row with details.
  const row = want.data.find((r) => r.hasDetails);
  if (row) {
    await page.click(`trailhouse-audit-log tr[data-id="${row.id}"] button.details`);
    const dialog = page.locator("trailhouse-audit-log dialog[open]");
    await dialog.locator("pre.body, p.error").first().waitFor();
    const title = await dialog.locator("h2").textContent();
    check(title.trim() === `${row.method ?? ""} ${row.path ?? ""}`.trim(), "the drawer names the request", title);
    const sections = await dialog.locator("h3").allTextContents();
    check(["Body", "Query parameters", "Path parameters", "Headers"].every((s) => sections.includes(s)), "the drawer shows body, query, path parameters and headers", sections.join(", "));
    if (process.env.SCREENSHOTS) await page.screenshot({ path: join(process.env.SCREENSHOTS, "viewer-details.png") });
    await page.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" }).catch(() => {});
    check((await page.locator("trailhouse-audit-log dialog[open]").count()) === 0, "Escape closes the drawer");
  } else {
    check(false, "the dataset has a row with details");
  }
  if (process.env.SCREENSHOTS) await page.screenshot({ path: join(process.env.SCREENSHOTS, "viewer-table.png") });

  // Search: the table shows what the API answers for the same term.
  const term = env("SEARCH");
  await afterLoad(page, async () => {
    await page.fill("trailhouse-audit-log #search", term);
    await page.press("trailhouse-audit-log #search", "Enter");
  });
  const wantSearch = await api(token, `&search=${encodeURIComponent(term)}`);
  const found = await shownIds(page);
  check(found.length > 0 && found.length < PAGE + 1, `search “${term}” finds some rows`, `${found.length}`);
  check(JSON.stringify(found) === JSON.stringify(wantSearch.data.map((r) => r.id)), "search shows the API's matches");
  // Export: the downloaded file is exactly the API's export of the same search.
  for (const format of ["csv", "ndjson"]) {
    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.click(`trailhouse-audit-log button.export[data-format=${format}]`),
    ]);
    const got = readFileSync(await download.path(), "utf8");
    const wantExport = await (await fetch(`${base}/v1/events/export?format=${format}&order=desc&search=${encodeURIComponent(term)}`, {
      headers: { Authorization: `Bearer ${token}` },
    })).text();
    const lines = got.trim().split("\n").length - (format === "csv" ? 1 : 0);
    check(got === wantExport && lines > 0, `export ${format.toUpperCase()} downloads exactly the searched rows`, `${lines} rows, ${download.suggestedFilename()}`);
    if (format === "ndjson") {
      const orgs = new Set(got.trim().split("\n").map((l) => JSON.parse(l).org_id));
      check(orgs.size === 1 && orgs.has("org_a"), "the export holds this org's events only", [...orgs].join(","));
    }
  }
  const none = await afterLoad(page, async () => {
    await page.fill("trailhouse-audit-log #search", "no-such-thing-anywhere");
    await page.press("trailhouse-audit-log #search", "Enter");
  });
  check(none.state === "empty", "a search without matches shows the empty state", none.state);

  // Accessibility: axe-core on the page with the table, no serious or critical violations.
  await afterLoad(page, async () => {
    await page.fill("trailhouse-audit-log #search", "");
    await page.press("trailhouse-audit-log #search", "Enter");
  });
  const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
  await page.evaluate(readFileSync(axePath, "utf8"));
  const results = await page.evaluate(async () => await globalThis.axe.run(document, { resultTypes: ["violations"] }));
  const serious = results.violations.filter((v) => ["serious", "critical"].includes(v.impact));
  check(serious.length === 0, "axe: no serious or critical violations", serious.map((v) => `${v.id}: ${v.help}`).join("; "));
  check(problems.length === 0, "no console errors or policy violations", problems.join(" | "));

  // A deep link opens that event's details; the link it offers has no token.
  if (row) {
    const linked = await (await browser.newContext()).newPage();
    await linked.goto(`${base}/ui/#event=${row.id}`);
    await linked.fill("#token", token);
    await linked.click("#sign-in button[type=submit]");
    const drawer = linked.locator("trailhouse-audit-log dialog[open]");
    await drawer.locator("pre.body").waitFor();
    const title = await drawer.locator("h2").textContent();
    check(title.trim() === `${row.method ?? ""} ${row.path ?? ""}`.trim(), "a deep link opens its event's details", title);
    const link = await drawer.locator("#event-link").inputValue();
    check(link.endsWith(`/ui/#event=${row.id}`) && !link.includes(token.slice(0, 20)), "the drawer's link names the event and no token", link);
  }

  // Another org's token sees only its own org's events.
  const other = await (await browser.newContext()).newPage();
  await signIn(other, env("TOKEN_OTHER"));
  const theirs = await shownIds(other);
  const ours = new Set(want.data.map((r) => r.id));
  check(theirs.length > 0 && theirs.every((id) => !ours.has(id)), "another org's token sees none of this org's events");

  // A token without viewAuditLog gets the no-permission state.
  const denied = await (await browser.newContext()).newPage();
  const d = await signIn(denied, env("TOKEN_NOPERM"));
  const kind = await denied.locator("trailhouse-audit-log .status .error").getAttribute("data-kind");
  check(d.detail.state === "forbidden" && kind === "forbidden", "no viewAuditLog: the no-permission state", `${d.detail.state} ${kind}`);
} finally {
  await browser.close();
}
console.log(failures ? `${failures} check(s) failed` : "all viewer checks passed");
process.exit(failures);
