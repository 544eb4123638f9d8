"""Renders a Kustomize directory the way `kubectl kustomize` does, for the features that
deploy/k8s uses and no others, so that the manifests can be tested with no binary and no cluster.

Supported, as Kustomize defines them: `resources` (files and directories), `patches` (a
strategic-merge patch naming its target, or a JSON 6902 patch with a `target` of a kind and
optionally a name), `namespace`, `labels` (with `includeTemplates`), `replicas` and `images`.
Any other field of a kustomization, or a patch this cannot apply exactly, raises
`KustomizeError` instead of being skipped: a manifest that uses more of Kustomize needs this
module to learn it first, never a test that silently checks something else than what
`kubectl apply -k` would apply.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

Manifest = dict[str, Any]

SUPPORTED_FIELDS = frozenset(
    {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "replicas", "images"}
)
# Kinds Kustomize leaves without a namespace (the cluster-scoped kinds among those used here).
CLUSTER_SCOPED = frozenset({"Namespace", "ClusterRole", "ClusterRoleBinding", "IngressClass"})
# Kinds whose pod template gets the labels of a `labels` entry with `includeTemplates`.
WORKLOADS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"})


class KustomizeError(Exception):
    """A kustomization this renderer cannot render as Kustomize would."""


def render(directory: Path) -> list[Manifest]:
    """The objects `kubectl kustomize directory` prints, in the order of its resources."""
    kustomization = _load_one(directory / "kustomization.yaml")
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise KustomizeError(f"{directory}: unsupported fields {sorted(unsupported)}")
    objects: list[Manifest] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else _load_all(path)
    # Kustomize's order of built-in transformers: patches, namespace, labels, replicas, images.
    for patch in kustomization.get("patches", []):
        _apply_patch(objects, patch, directory)
    if "namespace" in kustomization:
        for manifest in objects:
            if manifest["kind"] not in CLUSTER_SCOPED:
                manifest["metadata"]["namespace"] = kustomization["namespace"]
    for entry in kustomization.get("labels", []):
        _apply_labels(objects, entry)
    for entry in kustomization.get("replicas", []):
        _set_replicas(objects, entry)
    for entry in kustomization.get("images", []):
        _set_image(objects, entry)
    _check_unique(objects, directory)
    return objects


def _load_one(path: Path) -> Manifest:
    loaded = yaml.safe_load(path.read_text())
    if not isinstance(loaded, dict):
        raise KustomizeError(f"{path}: not one YAML mapping")
    return loaded


def _load_all(path: Path) -> list[Manifest]:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for document in documents:
        if not isinstance(document, dict) or not {"apiVersion", "kind", "metadata"} <= set(
            document
        ):
            raise KustomizeError(f"{path}: a document is not a Kubernetes object")
    return documents


def _check_unique(objects: list[Manifest], directory: Path) -> None:
    seen: set[tuple[str, str, str | None]] = set()
    for manifest in objects:
        key = (
            manifest["kind"],
            manifest["metadata"]["name"],
            manifest["metadata"].get("namespace"),
        )
        if key in seen:
            raise KustomizeError(f"{directory}: {key[0]} {key[1]} appears twice")
        seen.add(key)


def _apply_patch(objects: list[Manifest], entry: Mapping[str, Any], directory: Path) -> None:
    unsupported = set(entry) - {"path", "patch", "target"}
    if unsupported or ("path" in entry) == ("patch" in entry):
        raise KustomizeError(f"{directory}: a patch needs one of path or patch, and no more")
    text = (directory / entry["path"]).read_text() if "path" in entry else entry["patch"]
    patch = yaml.safe_load(text)
    target = dict(entry.get("target", {}))
    if set(target) - {"kind", "name"}:
        raise KustomizeError(f"{directory}: a patch target may name a kind and a name only")
    if isinstance(patch, dict) and not target:
        target = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    if not target:
        raise KustomizeError(f"{directory}: a JSON 6902 patch needs a target")
    matched = [
        manifest
        for manifest in objects
        if manifest["kind"] == target["kind"]
        and target.get("name", manifest["metadata"]["name"]) == manifest["metadata"]["name"]
    ]
    if not matched:
        raise KustomizeError(f"{directory}: no object matches the patch target {target}")
    for manifest in matched:
        if isinstance(patch, dict):
            body = {k: v for k, v in patch.items() if k not in ("apiVersion", "kind", "metadata")}
            _merge(manifest, body)
        elif isinstance(patch, list):
            for operation in patch:
                _json6902(manifest, operation)
        else:
            raise KustomizeError(f"{directory}: a patch is neither a mapping nor a list")


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """A strategic merge as Kubernetes does it for the fields patched here: mappings merge,
    null deletes, lists of named items (containers, env, volumes) merge by `name`, any other
    list is replaced."""
    for key, value in patch.items():
        if key.startswith("$"):
            raise KustomizeError(f"patch directive {key} is not supported")
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list) and _named(value):
            if not _named(target[key]):
                raise KustomizeError(f"cannot merge named items into the list {key}")
            by_name = {item["name"]: item for item in target[key]}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    target[key].append(copy.deepcopy(item))
        else:
            target[key] = copy.deepcopy(value)


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, dict) and "name" in item for item in items)


def _json6902(manifest: Manifest, operation: Mapping[str, Any]) -> None:
    op, path = operation["op"], operation["path"]
    if op not in ("add", "replace", "remove"):
        raise KustomizeError(f"JSON patch operation {op} is not supported")
    steps = [s.replace("~1", "/").replace("~0", "~") for s in path.lstrip("/").split("/")]
    parent: Any = manifest
    for step in steps[:-1]:
        parent = parent[int(step)] if isinstance(parent, list) else parent[step]
    last = steps[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
            return
        if index >= len(parent):
            raise KustomizeError(f"JSON patch: {path} does not exist")
    elif op != "add" and last not in parent:
        raise KustomizeError(f"JSON patch: {path} does not exist")
    if op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        parent[int(last) if isinstance(parent, list) else last] = copy.deepcopy(operation["value"])


def _apply_labels(objects: list[Manifest], entry: Mapping[str, Any]) -> None:
    if set(entry) - {"pairs", "includeTemplates", "includeSelectors"}:
        raise KustomizeError(f"labels entry fields {sorted(entry)} are not all supported")
    if entry.get("includeSelectors"):
        raise KustomizeError("labels with includeSelectors are not supported")
    pairs = entry["pairs"]
    for manifest in objects:
        manifest["metadata"].setdefault("labels", {}).update(pairs)
        if entry.get("includeTemplates") and manifest["kind"] in WORKLOADS:
            template = manifest["spec"]["template"].setdefault("metadata", {})
            template.setdefault("labels", {}).update(pairs)


def _set_replicas(objects: list[Manifest], entry: Mapping[str, Any]) -> None:
    matched = [
        m for m in objects if m["kind"] in WORKLOADS and m["metadata"]["name"] == entry["name"]
    ]
    if not matched:
        raise KustomizeError(f"replicas: no workload is named {entry['name']}")
    for manifest in matched:
        manifest["spec"]["replicas"] = entry["count"]


def _set_image(objects: list[Manifest], entry: Mapping[str, Any]) -> None:
    if set(entry) - {"name", "newName", "newTag", "digest"}:
        raise KustomizeError(f"images entry fields {sorted(entry)} are not all supported")
    for manifest in objects:
        if manifest["kind"] not in WORKLOADS:
            continue
        pod = manifest["spec"]["template"]["spec"]
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name = image_name(container["image"])
            if name != entry["name"]:
                continue
            image = entry.get("newName", name)
            if "digest" in entry:
                image += "@" + entry["digest"]
            elif "newTag" in entry:
                image += ":" + str(entry["newTag"])
            container["image"] = image


def image_name(image: str) -> str:
    """`registry:5000/choreo/service:0.1.0` → `registry:5000/choreo/service`."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name
