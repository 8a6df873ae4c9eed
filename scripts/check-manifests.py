#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests for what a JSON schema cannot see.

Usage: check-manifests.py OVERLAY RENDERED.yaml    (OVERLAY: single-node, dev or prod)

kubernetes-validate checks each object against the API schema; this checks the objects against
each other and against our deployment rules (docs/deploy.md): hardened pods, probes on the
contract's endpoints, $(VAR) references that resolve, selectors that select something, and, per
overlay, what must (not) be there. Prints one line per problem and exits 1 if there is any.
Needs PyYAML (installed with kubernetes-validate).
"""

import re
import sys

import yaml

WORKLOAD_KINDS = {"StatefulSet", "Deployment", "DaemonSet", "Job"}
SELECTOR_LABELS = {"app.kubernetes.io/name", "app.kubernetes.io/component"}
EXTERNAL_SECRETS = {"boxoffice-secrets", "boxoffice-nats", "boxoffice-mongo", "boxoffice-redis"}
CLUSTER_ENV = {"BOXOFFICE_NATS", "BOXOFFICE_MONGO", "BOXOFFICE_REDIS"}

problems = []


def problem(message):
    problems.append(message)


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj):
    return obj["spec"]["template"]["spec"]


def pod_labels(obj):
    return obj["spec"]["template"]["metadata"].get("labels", {})


def selects(selector, labels):
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def check_pod(obj, config_maps):
    where = name_of(obj)
    spec = pod_spec(obj)
    security = spec.get("securityContext", {})
    if security.get("runAsNonRoot") is not True:
        problem(f"{where}: pod securityContext.runAsNonRoot is not true")
    if security.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(f"{where}: pod seccompProfile is not RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        problem(f"{where}: automountServiceAccountToken is not false")
    for container in spec.get("initContainers", []) + spec["containers"]:
        label = f"{where} container {container['name']}"
        context = container.get("securityContext", {})
        if context.get("allowPrivilegeEscalation") is not False:
            problem(f"{label}: allowPrivilegeEscalation is not false")
        if context.get("readOnlyRootFilesystem") is not True:
            problem(f"{label}: readOnlyRootFilesystem is not true")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problem(f"{label}: capabilities are not dropped (drop: [ALL])")
        resources = container.get("resources", {})
        if "memory" not in resources.get("limits", {}) or not resources.get("requests"):
            problem(f"{label}: needs resource requests and a memory limit")
        image = container["image"]
        if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
            problem(f"{label}: image {image} has no explicit tag")
        if "bitnami" in image:
            problem(f"{label}: image {image} is a Bitnami image")
        check_env_references(label, container, config_maps)


def check_env_references(label, container, config_maps):
    """A $(VAR) in env, command or args expands only from variables defined before it."""
    defined = set()
    for source in container.get("envFrom", []):
        reference = source.get("configMapRef", {}).get("name")
        if reference is not None:
            if reference not in config_maps:
                problem(f"{label}: envFrom ConfigMap {reference} is not in the render")
            defined |= set(config_maps.get(reference, {}))
    for variable in container.get("env", []):
        for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", variable.get("value", "")):
            if used not in defined:
                problem(f"{label}: env {variable['name']} uses $({used}) before it is defined")
        defined.add(variable["name"])
    for text in container.get("command", []) + container.get("args", []):
        for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", text):
            if used not in defined:
                problem(f"{label}: command/args use $({used}), which is not defined")


def env_names(container):
    return {variable["name"] for variable in container.get("env", [])}


def secret_references(obj):
    spec = pod_spec(obj)
    names = set()
    for container in spec.get("initContainers", []) + spec["containers"]:
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference and not reference.get("optional", False):
                names.add(reference["name"])
    for volume in spec.get("volumes", []):
        if "secret" in volume and not volume["secret"].get("optional", False):
            names.add(volume["secret"]["secretName"])
    return names


def check_boxoffice(overlay, node):
    where = name_of(node)
    spec = pod_spec(node)
    container = next(c for c in spec["containers"] if c["name"] == "boxoffice")
    probes = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in probes.items():
        actual = container.get(probe, {}).get("httpGet", {}).get("path")
        if actual != path:
            problem(f"{where}: {probe} must GET {path}, not {actual}")
    if "preStop" not in container.get("lifecycle", {}):
        problem(f"{where}: no preStop drain")
    if spec.get("terminationGracePeriodSeconds", 30) < 45:
        problem(f"{where}: terminationGracePeriodSeconds below 45 leaves no time to hand over")
    if spec.get("securityContext", {}).get("runAsUser") != 65532:
        problem(f"{where}: must run as uid 65532 (the image's USER)")
    cluster_env = CLUSTER_ENV & env_names(container)
    if overlay == "single-node":
        if cluster_env:
            problem(f"{where}: single-node must not set {sorted(cluster_env)}")
        claims = [claim["metadata"]["name"] for claim in node["spec"].get("volumeClaimTemplates", [])]
        if "data" not in claims:
            problem(f"{where}: single-node keeps its data dir on a volumeClaimTemplate 'data'")
        if any(volume["name"] == "data" for volume in spec.get("volumes", [])):
            problem(f"{where}: a pod volume 'data' shadows the claim")
        if node["spec"]["replicas"] != 1:
            problem(f"{where}: the embedded store allows one replica only")
    elif cluster_env != CLUSTER_ENV:
        problem(f"{where}: cluster mode needs {sorted(CLUSTER_ENV - cluster_env)}")
    if overlay == "prod":
        if node["spec"]["replicas"] < 3:
            problem(f"{where}: prod runs at least three nodes")
        if not spec.get("topologySpreadConstraints"):
            problem(f"{where}: prod spreads nodes with topologySpreadConstraints")


def main():
    overlay, path = sys.argv[1], sys.argv[2]
    with open(path, encoding="utf-8") as handle:
        objects = [obj for obj in yaml.safe_load_all(handle) if obj]
    config_maps = {obj["metadata"]["name"]: obj.get("data", {}) for obj in objects if obj["kind"] == "ConfigMap"}
    workloads = [obj for obj in objects if obj["kind"] in WORKLOAD_KINDS]
    services = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "Service"}

    for workload in workloads:
        check_pod(workload, config_maps)
        selector = workload["spec"].get("selector", {}).get("matchLabels")
        if workload["kind"] != "Job":
            if set(selector or {}) - SELECTOR_LABELS:
                problem(f"{name_of(workload)}: selector {selector} uses labels beyond {sorted(SELECTOR_LABELS)}")
            if not selects(selector, pod_labels(workload)):
                problem(f"{name_of(workload)}: selector does not match its pod template")
        if workload["kind"] == "StatefulSet" and workload["spec"]["serviceName"] not in services:
            problem(f"{name_of(workload)}: serviceName {workload['spec']['serviceName']} is not a Service here")

    for obj in objects:
        if obj["kind"] in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
            spec = obj["spec"]
            selector = spec.get("selector") if obj["kind"] == "Service" else None
            if obj["kind"] == "PodDisruptionBudget":
                selector = spec["selector"]["matchLabels"]
            if obj["kind"] == "NetworkPolicy":
                selector = spec["podSelector"].get("matchLabels")
                if not selector:
                    continue
            if not any(selects(selector, pod_labels(workload)) for workload in workloads):
                problem(f"{name_of(obj)}: selects no pod of this render ({selector})")
        if obj["kind"] == "Ingress":
            for rule in obj["spec"]["rules"]:
                for route in rule["http"]["paths"]:
                    backend = route["backend"]["service"]["name"]
                    if backend not in services:
                        problem(f"{name_of(obj)}: backend {backend} is not a Service here")

    nodes = [w for w in workloads if w["kind"] == "StatefulSet" and w["metadata"]["name"] == "boxoffice"]
    if len(nodes) != 1:
        problem("expected exactly one StatefulSet boxoffice")
    for node in nodes:
        check_boxoffice(overlay, node)

    kinds = {obj["kind"] for obj in objects}
    if overlay == "prod":
        if "Secret" in kinds:
            problem("prod must not render a Secret: they are created outside the manifests")
        referenced = set().union(*(secret_references(w) for w in workloads))
        if referenced != EXTERNAL_SECRETS:
            problem(f"prod references the Secrets {sorted(referenced)}; docs/deploy.md lists {sorted(EXTERNAL_SECRETS)}")
        for kind in ("PodDisruptionBudget", "Ingress", "NetworkPolicy"):
            if kind not in kinds:
                problem(f"prod has no {kind}")
        paths = {route["path"] for obj in objects if obj["kind"] == "Ingress"
                 for rule in obj["spec"]["rules"] for route in rule["http"]["paths"]}
        if not {"/api", "/admin"} <= paths:
            problem(f"prod Ingress must route /api and /admin (has {sorted(paths)})")
    if overlay in ("dev", "prod"):
        for dependency in ("nats", "mongo", "redis"):
            if not any(w["metadata"]["name"] == dependency and w["kind"] == "StatefulSet" for w in workloads):
                problem(f"{overlay} has no StatefulSet {dependency}")

    for line in problems:
        print(f"check-manifests {overlay}: {line}", file=sys.stderr)
    if problems:
        return 1
    print(f"check-manifests {overlay}: {len(objects)} objects, {len(workloads)} workloads, no problems")
    return 0


if __name__ == "__main__":
    sys.exit(main())
