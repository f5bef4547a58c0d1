#!/usr/bin/env bash
# `make manifests` (part of `make test`): every deployment description is rendered or parsed
# and validated, so a typo fails CI.
#   - Kubernetes: each kustomization (base/ and overlays/*) is rendered with `kubectl
#     kustomize` (kustomize v4 or newer) and checked by validate.py beside this file (strict
#     schemas of kubernetes-validate, this folder's schemas/ for the custom kinds, references).
#   - compose.yaml: the compose specification's schema (check-jsonschema's bundled copy), no
#     interpolation with a default, every variable written by deploy/make-env.sh, ingest
#     replicated without a host port, the worker scalable, mounted files present.
#   - Grafana: the dashboard is JSON and reads the provisioned datasource.
#   - deploy/lb/haproxy.cfg: `haproxy -c`, when haproxy is installed.
#   - deploy/systemd: `systemd-analyze verify` and an exposure of at most 2.0 from
#     `systemd-analyze security`, when systemd-analyze is there.
# .ci/run installs what is missing (kubernetes-validate and check-jsonschema from PyPI,
# haproxy from Debian). Prints every problem and exits 1 if there was any.
set -euo pipefail
cd "$(dirname "$0")/../.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
skip() { echo "SKIP: $*" >&2; }

check_kubernetes() {
  if ! command -v kubectl >/dev/null; then
    fail "kubectl (with kustomize v4 or newer) is not installed: it renders deploy/k8s"; return
  fi
  local version
  version=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
  if [ -z "$version" ] || [ "$version" -lt 4 ]; then
    fail "kubectl's kustomize is older than v4 (components, labels): $(kubectl version --client 2>&1 | head -1)"
    return
  fi
  for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
    dir=${dir%/}
    local rendered="$work/$(echo "$dir" | tr / _).yaml"
    if ! kubectl kustomize "$dir" >"$rendered"; then
      fail "kubectl kustomize $dir"; continue
    fi
    python3 deploy/k8s/validate.py "$rendered" "$dir" || fail "$dir does not validate"
  done
}

check_compose() {
  python3 -m check_jsonschema --builtin-schema vendor.compose-spec compose.yaml || fail "compose.yaml is not a compose file"
  bash deploy/make-env.sh "$work/generated.env" >/dev/null
  python3 - "$work/generated.env" <<'EOF' || fail "compose.yaml"
import re, sys, os, yaml
text = open("compose.yaml").read()
compose = yaml.safe_load(text)
problems = []
generated = {line.split("=", 1)[0] for line in open(sys.argv[1]) if "=" in line and not line.startswith("#")}
for name, modifier in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)([^}]*)\}", text):
    if not modifier.startswith(":?"):
        problems.append("${%s%s} is not ${%s:?...}: no silent defaults" % (name, modifier, name))
    if name not in generated:
        problems.append("%s is not written by deploy/make-env.sh" % name)
services = compose["services"]
ingest, worker = services["ingest"], services["worker"]
if ingest.get("deploy", {}).get("replicas", 1) < 2 or "ports" in ingest:
    problems.append("ingest: 2 replicas or more, without a host port (the lb publishes 8080)")
if "ports" in worker or "container_name" in worker:
    problems.append("worker: no host port or container name, so --scale worker=N works")
if not any(str(p).endswith("8080:8080") for p in services["lb"].get("ports", [])):
    problems.append("lb: publishes 8080")
for name, service in services.items():
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith(".") and not os.path.exists(source):
            problems.append("%s mounts %s, which is missing" % (name, source))
for ignore_file, entry in ((".gitignore", "/.env"), (".dockerignore", ".env")):
    if entry not in open(ignore_file).read().split():
        problems.append("%s does not list %s" % (ignore_file, entry))
for problem in problems:
    print("ERROR compose.yaml: " + problem)
sys.exit(1 if problems else 0)
EOF
}

check_grafana() {
  python3 - <<'EOF' || fail "deploy/grafana"
import json, sys, yaml
dashboard = json.load(open("deploy/grafana/dashboards/webhooks.json"))
provisioned = {d["uid"] for d in yaml.safe_load(open("deploy/grafana/provisioning/datasources/prometheus.yml"))["datasources"]}
used = set()
def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            used.add(node["datasource"].get("uid"))
        for value in node.values():
            walk(value)
    elif isinstance(node, list):
        for value in node:
            walk(value)
walk(dashboard)
if not used <= provisioned:
    sys.exit("ERROR the dashboard reads datasources %s, provisioned are %s" % (used - provisioned, provisioned))
EOF
}

check_lb() {
  if ! command -v haproxy >/dev/null; then
    skip "haproxy is not installed: deploy/lb/haproxy.cfg not checked"; return
  fi
  haproxy -c -f deploy/lb/haproxy.cfg || fail "deploy/lb/haproxy.cfg"
}

check_systemd() {
  if ! command -v systemd-analyze >/dev/null; then
    skip "systemd-analyze is not installed: deploy/systemd not checked"; return
  fi
  # A root of its own: the units, their drop-in, stand-ins for the binaries and the system's
  # own units (verify loads the dependencies).
  local root="$work/root" out
  mkdir -p "$root/etc/systemd/system" "$root/usr/local/bin" "$root/usr/lib/systemd"
  cp -r deploy/systemd/*.service deploy/systemd/webhooks-.service.d "$root/etc/systemd/system/"
  cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
  for binary in webhooks-ingest webhooks-worker; do
    printf '#!/bin/sh\n' >"$root/usr/local/bin/$binary"
    chmod +x "$root/usr/local/bin/$binary"
  done
  for unit in webhooks-ingest.service webhooks-worker.service; do
    # verify only warns about unknown keys: any output is a failure.
    out=$(systemd-analyze verify --man=no --root="$root" "$unit" 2>&1) || fail "$unit: $out"
    [ -z "$out" ] || fail "$unit: $out"
    systemd-analyze security --offline=yes --threshold=20 --root="$root" "$unit" >"$work/security" 2>&1 \
      || fail "$unit is exposed: $(tail -1 "$work/security")"
  done
}

check_kubernetes
check_compose
check_grafana
check_lb
check_systemd
if [ "$failures" -gt 0 ]; then
  echo "manifests: $failures failed" >&2
  exit 1
fi
echo "manifests: Kubernetes, compose, Grafana, load balancer and systemd checked"
