// What the browser checks share: environment, the check counter, the API's
// own answers to hold the viewer to, and waits on the element's events.
// Shadow DOM is pierced by playwright's CSS locators.

export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

export const PAGE = 100;

let failures = 0;
export const check = (ok, what, detail = "") => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}${ok || !detail ? "" : `: ${detail}`}`);
  if (!ok) failures += 1;
};
export const failed = () => failures;

export const orgOf = (tok) => JSON.parse(Buffer.from(tok.split(".")[1], "base64url").toString()).org_id;

/** The organisation audit log API's own first page (or a later one). */
export async function api(base, tok, query = "") {
  const resp = await fetch(`${base}/api/v1/organizations/${orgOf(tok)}/audit-logs?limit=${PAGE}${query}`, {
    headers: { Authorization: `Bearer ${tok}` },
  });
  return resp.json();
}

export const ids = (page) => page.data.map((r) => r.id);

export const shownIds = (page) =>
  page.locator("trailhouse-audit-log tr[data-id]").evaluateAll((rows) => rows.map((r) => r.dataset.id));

/** Resolves with the detail of the element's next `name` event. */
export const nextEvent = (page, name) =>
  page.evaluate(
    (n) => new Promise((resolve) => document.addEventListener(n, (e) => resolve(e.detail), { once: true })),
    name,
  );

/** Waits for the element's next load after `action`. */
export async function afterLoad(page, action) {
  const loaded = nextEvent(page, "trailhouse-loaded");
  await action();
  return loaded;
}

/** Types `text` into the search box and submits it; the next load's detail. */
export const search = (page, text) =>
  afterLoad(page, async () => {
    await page.fill("trailhouse-audit-log #search", text);
    await page.press("trailhouse-audit-log #search", "Enter");
  });

/** Signs in on /ui/ with `tok`: the first load's detail and how long it took. */
export async function signIn(page, base, tok) {
  await page.goto(`${base}/ui/`);
  await page.fill("#token", tok);
  const loaded = nextEvent(page, "trailhouse-loaded");
  const started = Date.now();
  await page.click("#sign-in button[type=submit]");
  const detail = await loaded;
  await page.locator("trailhouse-audit-log .status").waitFor();
  return { detail, ms: Date.now() - started };
}

/** The focused element, inside shadow roots. */
export const focused = (page) =>
  page.evaluate(() => {
    let a = document.activeElement;
    while (a?.shadowRoot?.activeElement) a = a.shadowRoot.activeElement;
    return { tag: a?.tagName?.toLowerCase(), id: a?.id, cls: a?.className, row: a?.closest?.("tr")?.dataset?.id ?? null, inDialog: !!a?.closest?.("dialog") };
  });
