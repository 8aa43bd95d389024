#!/usr/bin/env python3
"""Posts a deterministic, realistic demo data set through the ingest API.

Three orgs of different sizes, a week of activity, users and API keys,
workspaces, the four audit-log styles' typical fields, payloads of a few
hundred bytes to a few kilobytes.
"""

import argparse
import json
import random
import sys
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

ORGS = {"org_acme": 3000, "org_globex": 1500, "org_initech": 500}
ACTIONS = [
    ("user.login", "Signed in", "sessions", "POST", "/v1/sessions"),
    ("user.update", "Updated user profile", "users", "PATCH", "/v1/users/{id}"),
    ("ticket.create", "Created ticket", "tickets", "POST", "/api/v2/tickets"),
    ("ticket.delete", "Deleted ticket", "tickets", "DELETE", "/api/v2/tickets/{id}"),
    ("workflow.publish", "Published workflow", "workflows", "POST", "/api/v1/workspaces/{ws}/workflows/{id}/publish"),
    ("api_key.rotate", "Rotated API key", "api_keys", "POST", "/v1/api-keys/{id}/rotate"),
]
AUTH = ["client", "clientCredentials", "signedPayload", "workbench", "api_key", "jwt"]


def events(seed, orgs=None):
    rnd = random.Random(seed)
    # The last seven days: events older than their org's retention class
    # would be dropped by the table's TTL.
    start = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=7)
    for org, count in ORGS.items():
        if orgs and org not in orgs:
            continue
        users = [(f"usr_{i}", f"user{i}@{org[4:]}.example", f"User {i}") for i in range(20)]
        for n in range(count):
            action, desc, rtype, method, path = rnd.choice(ACTIONS)
            rid = f"{rtype[:3]}_{rnd.randrange(10_000)}"
            ws = f"ws_{rnd.randrange(3)}"
            api_key = rnd.random() < 0.25
            uid, email, name = rnd.choice(users)
            when = start + timedelta(seconds=rnd.randrange(7 * 86400), microseconds=rnd.randrange(10**6))
            concrete = path.format(id=rid, ws=ws)
            body = json.dumps({"note": "x" * rnd.randrange(100, 3000)}) if method != "DELETE" else None
            yield {
                "id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                "org_id": org,
                "environment_id": rnd.choice(["prod", "staging"]),
                "workspace_id": ws,
                "workspace_name": f"Workspace {ws[-1]}",
                "created_at": when.isoformat().replace("+00:00", "Z"),
                "actor": {"type": "api_key", "id": f"key_{uid}", "name": f"{name}'s key"} if api_key
                else {"type": "user", "id": uid, "email": email, "name": name},
                "auth": {"type": "api_key" if api_key else rnd.choice(AUTH[:4] + ["jwt"]), "sub": uid,
                         "client_id": f"cli_{uid}"},
                "source": rnd.choice(["workbench-api", "client-api", "customer-api"]),
                "action": {"type": action, "description": desc},
                "resource": {"type": rtype, "id": rid, "name": f"{rtype[:-1].title()} {rid}"},
                "request": {
                    "method": method, "path": concrete, "url": f"https://api.{org[4:]}.example{concrete}",
                    "status": rnd.choice([200, 200, 200, 201, 204, 400, 403, 404]),
                    "duration_ms": round(rnd.uniform(1, 400), 3),
                    "ip": f"203.0.113.{rnd.randrange(1, 255)}", "user_agent": "demo-client/1.0",
                    "query": {"expand": "all"} if rnd.random() < 0.3 else {},
                    "headers": {"content-type": "application/json"},
                    **({"body": body} if body else {}),
                },
                "metadata": {"region": rnd.choice(["eu-west-1", "us-east-1"])},
            }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--key", required=True, help="an ingest service key")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--orgs", default=",".join(ORGS), help="comma-separated orgs to post (default: all)")
    args = ap.parse_args()
    orgs = [o for o in args.orgs.split(",") if o]
    unknown = [o for o in orgs if o not in ORGS]
    if unknown:
        sys.exit(f"--orgs: unknown org {unknown[0]!r} (known: {', '.join(ORGS)})")
    batch, sent = [], 0

    def flush():
        nonlocal batch, sent
        if not batch:
            return
        req = urllib.request.Request(
            f"{args.url}/v1/events", data=json.dumps(batch).encode(), method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {args.key}"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                sent += json.load(r)["accepted"]
        except urllib.error.HTTPError as e:
            sys.exit(f"ingest refused the demo data: {e.code} {e.read().decode()}")
        batch = []

    for ev in events(args.seed, orgs):
        batch.append(ev)
        if len(batch) == 500:
            flush()
    flush()
    print(f"posted {sent} demo events for {', '.join(orgs)}")


if __name__ == "__main__":
    main()
