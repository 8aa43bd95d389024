#!/usr/bin/env python3
"""A stand-in for a platform's admin portal that embeds the viewer.

It serves one page with <trailhouse-audit-log> loaded from the query API
(another origin, allowed by TRAILHOUSE_QUERY_CORS_ALLOWED_ORIGINS) and plays
the platform's backend: POST /viewer-token mints a short-lived viewer token
for the portal's signed-in user (here always the demo admin of --org), signed
with the viewer token secret, which never leaves this process. This is the
flow of docs/viewer.md, in the standard library only.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_viewer_token(secret: bytes, org: str, sub: str, ttl: int, workspace: str | None = None) -> str:
    """An HS256 JWT with kid and aud `trailhouse-viewer` and viewAuditLog only."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "trailhouse-viewer"}
    claims = {"sub": sub, "org_id": org, "aud": "trailhouse-viewer", "permissions": ["viewAuditLog"],
              "iat": now, "exp": now + ttl}
    if workspace:
        claims["workspace_id"] = workspace
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="color-scheme" content="light dark">
  <title>Acme admin portal · Audit log</title>
  <link rel="icon" href="data:,">
  <script type="module" src="{api}/ui/trailhouse-audit-log.js"></script>
  <script type="module" src="/portal.js"></script>
  <style>body {{ font: 15px system-ui, sans-serif; margin: 0; }} header {{ padding: .75rem 1.25rem; background: #1d3557; color: white; }}
  main {{ padding: 1rem 1.25rem; }}</style>
</head>
<body>
  <header><strong>Acme admin portal</strong> · Organization → Audit Logs</header>
  <main><trailhouse-audit-log api-base="{api}" page-size="50"></trailhouse-audit-log></main>
</body>
</html>
"""

SCRIPT = """// The portal asks its own backend for a viewer token (its session would
// authenticate the user there); the element calls this again after a 401.
document.querySelector("trailhouse-audit-log").tokenProvider = async () => {
  const resp = await fetch("/viewer-token", { method: "POST" });
  if (!resp.ok) throw new Error(`viewer token: ${resp.status}`);
  return resp.text();
};
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:8083")
    ap.add_argument("--api", required=True, help="the query API's origin, e.g. http://127.0.0.1:8081")
    ap.add_argument("--org", default="org_acme")
    ap.add_argument("--ttl", type=int, default=600, help="viewer token lifetime in seconds")
    args = ap.parse_args()
    secret = os.environ.get("TRAILHOUSE_QUERY_VIEWER_TOKEN_SECRET", "").encode()
    if len(secret) < 32:
        sys.exit("TRAILHOUSE_QUERY_VIEWER_TOKEN_SECRET must be set (at least 32 bytes)")
    host, _, port = args.listen.rpartition(":")
    page = PAGE.format(api=args.api.rstrip("/")).encode()

    class Handler(BaseHTTPRequestHandler):
        def answer(self, status, body: bytes, content_type="text/plain"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self.answer(200, page, "text/html; charset=utf-8")
            elif self.path == "/portal.js":
                self.answer(200, SCRIPT.encode(), "text/javascript")
            else:
                self.answer(404, b"not found")

        def do_POST(self):
            if self.path != "/viewer-token":
                return self.answer(404, b"not found")
            self.answer(200, mint_viewer_token(secret, args.org, "portal-admin", args.ttl).encode())

        def log_message(self, fmt, *a):
            sys.stderr.write("portal: " + (fmt % a) + "\n")

    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
