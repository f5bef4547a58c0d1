#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (one multi-document YAML file, or `-` for stdin;
LABEL names it in the messages).

Each object is checked against its schema with unknown fields refused: Kubernetes's own kinds
with the schemas `kubernetes-validate` bundles (strict, every version in K8S_VERSIONS), the
custom kinds (KEDA's ScaledObject and TriggerAuthentication, the Prometheus Operator's
ServiceMonitor) with the hand-written schemas in `schemas/` beside this file. A kind with no
schema fails. Then the references between objects are checked: what a workload, autoscaler,
Service or ServiceMonitor names or selects must be in the rendering, and each pod must carry
the project's probes, requests and hardening. Exit status 1 on any problem, each one printed.

Used by check.sh (`make manifests`).
"""

import os
import sys

import jsonschema
import kubernetes_validate
import referencing
import referencing.jsonschema
import yaml
from kubernetes_validate import utils as kv

HERE = os.path.dirname(os.path.abspath(__file__))
K8S_VERSIONS = os.environ.get("K8S_VERSIONS", "1.29 1.37").split()
# The Secret a deployment creates out of git (overlays/example deletes the placeholder one).
EXTERNAL_SECRETS = {"webhooks-secrets"}
WORKLOADS = ("Deployment", "Job")


def crd_schema(obj):
    """The hand-written schema of a custom kind, or None for Kubernetes's own kinds (the core
    group, groups without a dot such as `apps`, and `*.k8s.io`)."""
    group_version = obj.get("apiVersion", "")
    group, _, version = group_version.rpartition("/")
    if "." not in group or group.endswith(".k8s.io"):
        return None
    name = "%s-%s-%s.yaml" % (obj["kind"].lower(), group.split(".")[0], version)
    path = os.path.join(HERE, "schemas", name)
    if not os.path.exists(path):
        raise kv.SchemaNotFoundError(kind=obj["kind"], version="-", api_version=group_version)
    with open(path) as schema_file:
        schema = yaml.safe_load(schema_file)
    schema["$id"] = "https://kubernetes.io/api/" + name
    return schema


def validate_crd(obj, schema, version):
    """Validates a custom resource, resolving the Kubernetes types it refers to."""
    definitions = kv.schema_contents(
        "kubernetes-json-schema/v%s-local-strict/_definitions.json" % resolved_version(version),
        version,
    )
    registry = referencing.Registry().with_resources(
        [
            (definitions["$id"], referencing.jsonschema.DRAFT202012.create_resource(definitions)),
            (schema["$id"], referencing.jsonschema.DRAFT202012.create_resource(schema)),
        ]
    )
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        "%s: %s" % (".".join(str(p) for p in error.absolute_path) or "(top)", error.message)
        for error in validator.iter_errors(obj)
    ]


def resolved_version(version):
    """The bundled schema version kubernetes-validate uses for `version`."""
    return [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)][-1]


def schema_problems(obj):
    """Problems against the custom schema, or against each Kubernetes version's own."""
    schema = crd_schema(obj)
    if schema is not None:
        against = "schemas/" + schema["$id"].rsplit("/", 1)[1]
        return ["against %s: %s" % (against, e) for e in validate_crd(obj, schema, K8S_VERSIONS[-1])]
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path) or "(top)"
            problems.append("against %s: %s: %s" % (version, path, error.message))
    return problems


class Rendering:
    """The rendered objects by kind and name, and the problems found in their references."""

    def __init__(self, objects):
        self.by_kind = {}
        for obj in objects:
            self.by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj
        self.problems = []

    def of(self, *kinds):
        return [(kind, name, obj) for kind in kinds for name, obj in self.by_kind.get(kind, {}).items()]

    def names(self, kind):
        return set(self.by_kind.get(kind, {}))

    def check(self, condition, where, message):
        if not condition:
            self.problems.append("%s: %s" % (where, message))

    def has_secret_key(self, ref):
        """A key of a rendered Secret, or of the one created out of git."""
        secrets = self.by_kind.get("Secret", {})
        if ref["name"] in EXTERNAL_SECRETS and ref["name"] not in secrets:
            return True
        secret = secrets.get(ref["name"], {})
        return ref["key"] in {**secret.get("data", {}), **secret.get("stringData", {})}


def reference_problems(objects):
    """What the objects name must exist, and every pod must be hardened and probed."""
    rendering = Rendering(objects)
    for kind, name, obj in rendering.of(*WORKLOADS):
        check_pod(rendering, "%s/%s" % (kind, name), obj["spec"]["template"]["spec"], kind)
    check_autoscalers(rendering)
    check_selectors(rendering)
    check_service_monitors(rendering)
    return rendering.problems


def check_pod(rendering, where, spec, kind):
    check = rendering.check
    check(spec.get("securityContext", {}).get("runAsNonRoot") is True, where, "not runAsNonRoot")
    check(spec.get("automountServiceAccountToken") is False, where, "token mounted")
    for container in spec["containers"]:
        cwhere = "%s container %s" % (where, container["name"])
        security = container.get("securityContext", {})
        check(security.get("allowPrivilegeEscalation") is False, cwhere, "may escalate")
        check(security.get("readOnlyRootFilesystem") is True, cwhere, "root writable")
        check(security.get("capabilities", {}).get("drop") == ["ALL"], cwhere, "keeps capabilities")
        check("requests" in container.get("resources", {}), cwhere, "no resource requests")
        ports = {port.get("name") for port in container.get("ports", [])}
        if kind == "Deployment":
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                http = container.get(probe, {}).get("httpGet", {})
                check(http.get("path") == path, cwhere, "%s not on %s" % (probe, path))
                check(isinstance(http.get("port"), int) or http.get("port") in ports, cwhere,
                      "%s port %s not declared" % (probe, http.get("port")))
        for source in container.get("envFrom", []):
            kind_of = "ConfigMap" if "configMapRef" in source else "Secret"
            ref = source.get("configMapRef") or source.get("secretRef")
            check(ref["name"] in rendering.names(kind_of) | EXTERNAL_SECRETS, cwhere,
                  "envFrom names a missing %s %s" % (kind_of, ref["name"]))
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            check(ref is None or rendering.has_secret_key(ref), cwhere,
                  "secret key %s missing" % (ref and "%s/%s" % (ref["name"], ref["key"])))


def check_autoscalers(rendering):
    """Each autoscaler scales a rendered Deployment, no Deployment has two, and KEDA's
    authentication exists and reads existing secret keys."""
    scaled = []
    for kind, name, obj in rendering.of("HorizontalPodAutoscaler", "ScaledObject"):
        target = obj["spec"]["scaleTargetRef"]["name"]
        scaled.append(target)
        rendering.check(target in rendering.names("Deployment"), "%s/%s" % (kind, name),
                        "scales a missing Deployment %s" % target)
        for trigger in obj["spec"].get("triggers", []):
            auth = trigger.get("authenticationRef", {}).get("name")
            rendering.check(auth is None or auth in rendering.names("TriggerAuthentication"),
                            "%s/%s" % (kind, name), "names a missing TriggerAuthentication %s" % auth)
    for target in set(scaled):
        rendering.check(scaled.count(target) == 1, "Deployment/" + target, "has two autoscalers")
    for _, name, obj in rendering.of("TriggerAuthentication"):
        for ref in obj["spec"].get("secretTargetRef", []):
            rendering.check(rendering.has_secret_key(ref), "TriggerAuthentication/" + name,
                            "secret key %s/%s missing" % (ref["name"], ref["key"]))


def check_selectors(rendering):
    """Each Service and PodDisruptionBudget selects the pods of exactly one workload."""
    pod_labels = [obj["spec"]["template"]["metadata"].get("labels", {})
                  for _, _, obj in rendering.of(*WORKLOADS)]
    for kind, name, obj in rendering.of("Service", "PodDisruptionBudget"):
        selector = obj["spec"]["selector"]
        if kind == "PodDisruptionBudget":
            selector = selector.get("matchLabels", {})
        matched = sum(selects(selector, labels) for labels in pod_labels)
        rendering.check(matched == 1, "%s/%s" % (kind, name),
                        "selects the pods of %d workloads, not of one" % matched)


def check_service_monitors(rendering):
    """Each ServiceMonitor selects Services with its ports, and names their job as the alert
    rules expect (ingest, worker)."""
    for _, name, obj in rendering.of("ServiceMonitor"):
        where = "ServiceMonitor/" + name
        selector = obj["spec"]["selector"].get("matchLabels", {})
        services = [service for _, _, service in rendering.of("Service")
                    if selects(selector, service["metadata"].get("labels", {}))]
        rendering.check(services, where, "selects no Service")
        for service in services:
            service_name = service["metadata"]["name"]
            port_names = {port.get("name") for port in service["spec"]["ports"]}
            for endpoint in obj["spec"]["endpoints"]:
                rendering.check(endpoint.get("port") in port_names, where,
                                "port %s not on Service %s" % (endpoint.get("port"), service_name))
            job = service["metadata"].get("labels", {}).get(obj["spec"].get("jobLabel"))
            rendering.check(job in ("ingest", "worker"), where,
                            "job of Service %s would be %s, not ingest or worker" % (service_name, job))


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def main(path, label):
    text = sys.stdin.read() if path == "-" else open(path).read()
    objects = [obj for obj in yaml.safe_load_all(text) if obj]
    problems = []
    for obj in objects:
        where = "%s/%s" % (obj.get("kind"), obj.get("metadata", {}).get("name"))
        try:
            problems += ["%s %s" % (where, p) for p in schema_problems(obj)]
        except kv.SchemaNotFoundError as error:
            problems.append("%s: %s" % (where, error.message))
    problems += reference_problems(objects)
    for problem in problems:
        print("ERROR %s: %s" % (label, problem))
    kinds = sorted({obj["kind"] for obj in objects})
    print("%s: %d objects (%s), %d problems" % (label, len(objects), ", ".join(kinds), len(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: validate.py RENDERED.yaml|- [LABEL]")
    sys.exit(main(sys.argv[1], sys.argv[-1]))
