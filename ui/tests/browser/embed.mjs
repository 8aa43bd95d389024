// The element embedded in another origin's page, as a platform does: a
// small server plays the platform (its portal page and its backend, which
// mints viewer tokens with the viewer secret, as docs/viewer.md shows), and
// the query API allows that origin by CORS.

import { createServer } from "node:http";
import { createHmac } from "node:crypto";

import { PAGE, api, check, env, ids, shownIds } from "./lib.mjs";

/** A viewer token: HS256, kid and audience `trailhouse-viewer`. */
export function mintViewerToken(secret, claims) {
  const part = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = part({ alg: "HS256", typ: "JWT", kid: "trailhouse-viewer" });
  const body = part({ aud: "trailhouse-viewer", permissions: ["viewAuditLog"], ...claims });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

function portal(base, secret, org) {
  const minted = [];
  const page = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Acme admin portal</title><link rel="icon" href="data:,">
<script type="module" src="${base}/ui/trailhouse-audit-log.js"></script>
<script type="module" src="/portal.js"></script></head>
<body><main><h1>Audit log</h1><trailhouse-audit-log api-base="${base}" page-size="${PAGE}"></trailhouse-audit-log></main></body></html>`;
  // The portal's script asks its own backend for a token (its session
  // cookie would authenticate the user there); the token stays in memory.
  const script = `const log = document.querySelector("trailhouse-audit-log");
log.tokenProvider = async () => (await fetch("/viewer-token", { method: "POST" })).text();`;
  const server = createServer((req, res) => {
    if (req.method === "POST" && req.url === "/viewer-token") {
      const now = Math.floor(Date.now() / 1000);
      // The first token has expired already (a tab left open): the element
      // must ask for a new one and carry on.
      const exp = minted.length === 0 ? now - 120 : now + 300;
      const token = mintViewerToken(secret, { sub: "portal-user-1", org_id: org, iat: now - 1, exp });
      minted.push(token);
      res.writeHead(200, { "content-type": "text/plain" }).end(token);
    } else if (req.url === "/portal.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else if (req.url === "/portal.html") {
      res.writeHead(200, { "content-type": "text/html" }).end(page);
    } else {
      res.writeHead(404).end();
    }
  });
  return { server, minted };
}

/** The embedding checks; `browser` is a launched chromium. */
export async function embedChecks(browser, base, token) {
  const url = new URL(env("PORTAL_URL"));
  const { server, minted } = portal(base, env("VIEWER_SECRET"), "org_a");
  await new Promise((resolve) => server.listen(Number(url.port), url.hostname, resolve));
  try {
    const context = await browser.newContext();
    // Loads are recorded from the first script on, so none is missed.
    await context.addInitScript(() => {
      window.__loads = [];
      document.addEventListener("trailhouse-loaded", (e) => window.__loads.push(e.detail));
    });
    const page = await context.newPage();
    const problems = [];
    page.on("pageerror", (e) => problems.push(e.message));
    // (The browser also logs the expected 401 of the expired token.)
    page.on("requestfailed", (r) => problems.push(`${r.url()}: ${r.failure()?.errorText}`));
    await page.goto(`${url.origin}/portal.html`);
    const shown = await page
      .waitForFunction(() => window.__loads.length > 0, null, { timeout: 20_000 })
      .then(() => true, () => false);
    check(shown, "the embedded element loads", problems.join(" | "));
    if (!shown) return;
    const detail = await page.evaluate(() => window.__loads[0]);
    const want = await api(base, token);
    const rows = await shownIds(page);
    check(detail.state === "ready" && JSON.stringify(rows) === JSON.stringify(ids(want)), "embedded in another origin, the element shows the org's log", `${detail.state}, ${rows.length} rows`);
    check(minted.length === 2, "an expired viewer token is replaced by the provider's next one", `${minted.length} minted`);
    check(problems.length === 0, "the embedding page has no errors", problems.join(" | "));

    // A page of an origin the API does not allow cannot read its answers:
    // the API sends that origin no CORS header, so the browser refuses.
    const foreignOrigin = `http://localhost:${url.port}`;
    const answer = await fetch(`${base}/v1/events?limit=1`, {
      headers: { Origin: foreignOrigin, Authorization: `Bearer ${minted[minted.length - 1]}` },
    });
    const allowed = answer.headers.get("access-control-allow-origin");
    const ours = await fetch(`${base}/v1/events?limit=1`, { headers: { Origin: url.origin, Authorization: `Bearer ${minted[minted.length - 1]}` } });
    check(allowed === null && ours.headers.get("access-control-allow-origin") === url.origin, "CORS allows the portal's origin only", `${allowed} / ${ours.headers.get("access-control-allow-origin")}`);
    const foreign = await (await browser.newContext()).newPage();
    const opened = await foreign.goto(`${foreignOrigin}/portal.html`);
    const read = await foreign.evaluate(
      async ([api, tok]) => {
        try {
          const r = await fetch(`${api}/v1/events?limit=1`, { headers: { Authorization: `Bearer ${tok}` } });
          return `read ${r.status}`;
        } catch (e) {
          return `refused (${e.name})`;
        }
      },
      [base, minted[minted.length - 1]],
    );
    check(opened?.ok() && read.startsWith("refused"), "a page of an origin not in the CORS list cannot read the API", read);
  } finally {
    server.close();
  }
}
