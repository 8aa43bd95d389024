"""Offline checks of the Helm chart, run by CI through deploy/check.sh.

1. Lint the chart with Helm's own linter (strict).
2. Render it with Helm's template engine for the default values and each
   realistic value set in deploy/helm/ci/, check values against
   values.schema.json, and validate every manifest against the Kubernetes
   schemas of a current Kubernetes version.
3. Check invariants the schemas cannot express (drain deadlines, probes,
   security contexts, consumer replicas within topic partitions).
4. Every file in deploy/helm/ci/invalid/ must be rejected by
   values.schema.json; every file in deploy/helm/ci/render-fails/ must fail to
   render with a message.
5. Scan the rendered manifests with checkov: no failed check other than the
   accepted ones listed (with their justification) in ACCEPTED below.
6. Monitoring: the alert rules pass `promtool check rules` and their unit
   tests (`promtool test rules`), every alert has a runbook section, the
   dashboard is well formed and every query in it is valid PromQL, and the
   chart ships both unchanged.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parent
CHART = ROOT / "helm" / "trailhouse"
CI = ROOT / "helm" / "ci"
ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
ALERT_TESTS = ROOT / "monitoring" / "alerts_test.yaml"
RUNBOOK = ROOT.parent / "docs" / "runbook.md"
KUBE_VERSION = "1.37.0"

# Checkov checks accepted for this chart, each with why.
ACCEPTED = {
    # Secrets reach the services as environment variables from secretKeyRef:
    # the binaries read their configuration from TRAILHOUSE_* variables, the
    # values never appear in the manifests, and the pods run without a shell.
    "CKV_K8S_35": "secrets as environment variables (from existing Secrets)",
    # Digests are supported (image.digests.*) and used in production value
    # sets; the default values cannot know the digest of a future release.
    "CKV_K8S_43": "image digest optional; tag defaults to the chart's appVersion",
    # The chart is installed into the namespace the user chooses with
    # `helm install -n`; rendering offline leaves it unset.
    "CKV_K8S_21": "namespace comes from `helm install --namespace`",
}

failures: list[str] = []


def fail(msg: str) -> None:
    failures.append(msg)
    print(f"  FAIL {msg}")


def load_values(path: pathlib.Path | None) -> dict:
    if path is None:
        return {}
    return yaml.safe_load(path.read_text()) or {}


def documents(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for name, text in sorted(rendered.items()):
        if name.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                docs.append(doc)
    return docs


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_invariants(set_name: str, docs: list[dict], values: dict) -> None:
    merged = chart.merge_values(values)
    parts = merged["kafka"]["topicPartitions"]
    for d in docs:
        kind, name = d["kind"], d["metadata"]["name"]
        if kind in ("Deployment", "StatefulSet", "Job"):
            pod = d["spec"]["template"]["spec"]
            if pod.get("automountServiceAccountToken") is not False:
                fail(f"{set_name}: {kind} {name} mounts a service account token")
            for c in pod["containers"]:
                sc = c.get("securityContext", {})
                if not (sc.get("readOnlyRootFilesystem") and sc.get("runAsNonRoot")
                        and sc.get("allowPrivilegeEscalation") is False):
                    fail(f"{set_name}: {name}/{c['name']} security context too loose")
                if "limits" not in c.get("resources", {}):
                    fail(f"{set_name}: {name}/{c['name']} has no resource limits")
                if kind != "Job":
                    for probe in ("livenessProbe", "readinessProbe"):
                        if probe not in c:
                            fail(f"{set_name}: {name}/{c['name']} has no {probe}")
                    deadlines = [int(v) for k, v in env_of(c).items()
                                 if k.endswith("_SHUTDOWN_TIMEOUT_SECS") and v]
                    grace = pod.get("terminationGracePeriodSeconds", 30)
                    if not deadlines or grace <= max(deadlines):
                        fail(f"{set_name}: {name} grace {grace}s is not longer than its drain deadline {deadlines}")
        if kind in ("Deployment", "StatefulSet") and name.endswith("-consumer"):
            replicas = d["spec"].get("replicas")
            if replicas is not None and replicas > parts:
                fail(f"{set_name}: consumer replicas {replicas} > partitions {parts}")
        if kind == "HorizontalPodAutoscaler" and name.endswith("-consumer"):
            if d["spec"]["maxReplicas"] > parts:
                fail(f"{set_name}: consumer HPA max {d['spec']['maxReplicas']} > partitions {parts}")


def validate_manifests(set_name: str, docs: list[dict]) -> None:
    for d in docs:
        kind = d["kind"]
        if kind == "ServiceMonitor":
            # A CRD the Kubernetes schemas do not cover: check its shape here.
            if not (d["spec"].get("selector", {}).get("matchLabels") and d["spec"].get("endpoints")):
                fail(f"{set_name}: ServiceMonitor {d['metadata']['name']} lacks selector or endpoints")
            continue
        if kind == "PrometheusRule":
            if d["spec"] != yaml.safe_load(ALERTS.read_text()):
                fail(f"{set_name}: the PrometheusRule is not files/alerts.yaml")
            continue
        if kind == "ConfigMap" and "trailhouse.json" in d.get("data", {}):
            if json.loads(d["data"]["trailhouse.json"]) != json.loads(DASHBOARD.read_text()):
                fail(f"{set_name}: the dashboard ConfigMap is not files/dashboard.json")
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:  # type: ignore[attr-defined]
            fail(f"{set_name}: {kind} {d['metadata']['name']}: {e.message}")
        except Exception as e:  # noqa: BLE001 - any other validator error is a failure too
            fail(f"{set_name}: {kind} {d['metadata']['name']}: {e}")


def promtool(*args: str) -> None:
    proc = subprocess.run(["promtool", *args], capture_output=True, text=True, check=False)
    out = (proc.stdout + proc.stderr).strip()
    print("  " + "\n  ".join(out.splitlines()[-3:]))
    if proc.returncode != 0:
        fail(f"promtool {' '.join(args)}:\n{out}")


def anchor(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading."""
    keep = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return keep.strip().replace(" ", "-")


def check_monitoring() -> None:
    print("promtool check rules / test rules")
    promtool("check", "rules", str(ALERTS))
    promtool("test", "rules", str(ALERT_TESTS))
    alerts = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    tested = {t["alertname"] for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
              for t in case.get("alert_rule_test", [])}
    headings = {anchor(line.lstrip("#").strip()) for line in RUNBOOK.read_text().splitlines()
                if line.startswith("### ")}
    for r in alerts:
        name = r["alert"]
        if name not in tested:
            fail(f"alert {name} has no promtool unit test")
        runbook = r.get("annotations", {}).get("runbook", "")
        if runbook != f"docs/runbook.md#{name.lower()}" or name.lower() not in headings:
            fail(f"alert {name}: no runbook section docs/runbook.md#{name.lower()}")
        if r.get("labels", {}).get("severity") not in ("warning", "critical"):
            fail(f"alert {name}: severity must be warning or critical")

    print("dashboard")
    dash = json.loads(DASHBOARD.read_text())
    for key in ("uid", "title", "panels"):
        if not dash.get(key):
            fail(f"dashboard: no {key}")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        fail("dashboard: panel ids repeat")
    exprs = []
    for p in dash["panels"]:
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            fail(f"dashboard: panel {p.get('title')} is wider than the grid")
        if p["type"] == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${datasource}" or not p.get("targets"):
            fail(f"dashboard: panel {p.get('title')} has no query on the chosen data source")
        exprs += [(p["title"], t["expr"]) for t in p.get("targets", [])]
    # Every query must be valid PromQL: promtool checks them as recording
    # rules, with Grafana's variables given values.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query:{i}",
         "expr": e.replace("$__rate_interval", "5m").replace("$job", ".*")}
        for i, (_, e) in enumerate(exprs)]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(rules, f)
    print(f"  {len(exprs)} queries in {len(ids)} panels")
    promtool("check", "rules", f.name)
    os.unlink(f.name)


def render(values: dict) -> dict[str, str]:
    return chart.render(values, name="trailhouse", namespace="audit", is_install=True)


def main() -> int:
    # Rendered manifests go to a fresh directory outside any hidden folder
    # (checkov skips paths under directories whose names start with a dot).
    rendered_dir = pathlib.Path(tempfile.mkdtemp(prefix="trailhouse-chart-"))

    print(f"helm SDK {helm.helm_sdk_version()}, Kubernetes schemas {KUBE_VERSION}")
    report = helm.lint(str(CHART), strict=True, kube_version=f"v{KUBE_VERSION}")
    for m in report.get("messages", []):
        print(f"  lint: {m}")
        if m.get("severity", 0) >= 2:
            fail(f"lint: {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []) or []:
        fail(f"lint: {e}")

    check_monitoring()

    sets = [("default", None)] + [(p.stem, p) for p in sorted(CI.glob("values-*.yaml"))]
    for set_name, path in sets:
        values = load_values(path)
        print(f"render {set_name}")
        try:
            chart.validate_schema(values)
            rendered = render(values)
        except helm.HelmError as e:
            fail(f"{set_name}: {e}")
            continue
        docs = documents(rendered)
        kinds = sorted({d["kind"] for d in docs})
        print(f"  {len(docs)} manifests: {', '.join(kinds)}")
        validate_manifests(set_name, docs)
        check_invariants(set_name, docs, values)
        target = rendered_dir / f"{set_name}.yaml"
        target.write_text(yaml.safe_dump_all(docs, sort_keys=False))

    for path in sorted((CI / "invalid").glob("*.yaml")):
        try:
            chart.validate_schema(load_values(path))
        except helm.HelmValuesError as e:
            print(f"rejected {path.name}: {' '.join(str(e).split())[:200]}")
            continue
        fail(f"values.schema.json accepted invalid values {path.name}")
    for path in sorted((CI / "render-fails").glob("*.yaml")):
        try:
            render(load_values(path))
        except helm.HelmError as e:
            print(f"refused {path.name}: {str(e).splitlines()[0][:160]}")
            continue
        fail(f"the chart rendered {path.name}, which it must refuse")

    checkov = shutil.which("checkov", path=os.path.dirname(sys.executable)) or "checkov"
    cmd = [checkov, "-d", str(rendered_dir), "--framework", "kubernetes", "--quiet",
           "--compact", "-o", "json", "--skip-check", ",".join(ACCEPTED)]
    print("checkov " + " ".join(cmd[1:]))
    # A checkov run that scanned nothing must not pass: retry once, then fail.
    results: list = []
    for _attempt in range(2):
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        try:
            parsed = json.loads(proc.stdout or "{}")
        except json.JSONDecodeError:
            parsed = {}
        results = parsed if isinstance(parsed, list) else [parsed]
        if all(r.get("summary", {}).get("resource_count", 0) > 0 for r in results):
            break
    else:
        fail(f"checkov scanned no resources: {proc.stdout[-500:]} {proc.stderr[-1000:]}")
    for r in results:
        summary = r.get("summary", {})
        print(f"  checkov: {summary.get('resource_count')} resources, passed {summary.get('passed')}, "
              f"failed {summary.get('failed')}")
        for c in r.get("results", {}).get("failed_checks", []):
            fail(f"checkov {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']})")

    shutil.rmtree(rendered_dir, ignore_errors=True)
    if failures:
        print(f"\n{len(failures)} chart check(s) failed")
        return 1
    print("\nchart checks passed")
    return 0


chart = helm.Chart.load(str(CHART))

if __name__ == "__main__":
    sys.exit(main())
