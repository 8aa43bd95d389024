// The built viewer (dev/build_ui.sh) stays within its budget: at most
// 150 KB gzipped for everything the page loads, and no inline script.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const dist = new URL("../dist/", import.meta.url).pathname;

function files(dir) {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}

test("the bundle is at most 150 KB gzipped", () => {
  const all = files(dist);
  assert.ok(all.some((f) => f.endsWith("trailhouse-audit-log.js")), "the element is built under its stable name");
  const gz = all.reduce((n, f) => n + gzipSync(readFileSync(f)).length, 0);
  console.log(`viewer bundle: ${all.length} files, ${(gz / 1024).toFixed(1)} KB gzipped (budget 150 KB)`);
  assert.ok(gz <= 150 * 1024, `${gz} bytes`);
});

test("the page has no inline script or style", () => {
  const html = readFileSync(join(dist, "index.html"), "utf8");
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/, "every script has a src");
  assert.doesNotMatch(html, /<style|style="/, "no inline style");
});
