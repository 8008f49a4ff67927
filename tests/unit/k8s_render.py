"""Renders deploy/k8s's kustomization without kubectl: the part of kustomize it uses.

The schema check and the boot-from-manifest test must not depend on kubectl, so this loader
applies `resources`, `namespace`, `secretGenerator`/`configMapGenerator` (files and literals, with
the name hash disabled) and `images` the way kustomize does, and refuses any other field rather
than silently rendering something kustomize would not. Where kubectl is installed,
test_k8s_manifests.py checks that both renderings agree.
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "K8S_DIR",
    "REPO_ROOT",
    "Manifest",
    "UnsupportedKustomizationError",
    "find_manifest",
    "load_yaml_documents",
    "render_kustomization",
    "stage_kustomization",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = REPO_ROOT / "deploy" / "k8s"
SECRET_FILE_NAME = "cluster.secret"

Manifest = dict[str, Any]

_SUPPORTED_FIELDS = frozenset({
    "apiVersion", "kind", "namespace", "resources", "secretGenerator", "configMapGenerator",
    "generatorOptions", "images",
})
_GENERATOR_FIELDS = frozenset({"name", "files", "literals", "options", "type"})
_CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
    "PriorityClass", "CustomResourceDefinition",
})
_POD_TEMPLATE_KINDS = frozenset({"StatefulSet", "Deployment", "DaemonSet", "ReplicaSet", "Job"})


class UnsupportedKustomizationError(ValueError):
    """The kustomization uses a feature this loader does not reproduce."""


def load_yaml_documents(path: Path) -> list[Manifest]:
    with path.open(encoding="utf-8") as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if doc is not None]
    for doc in documents:
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a YAML document is not a mapping")
    return documents


def stage_kustomization(target: Path, secret: str, source: Path = K8S_DIR) -> Path:
    """Copy the kustomization's files into `target` with a throwaway cluster secret."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and item.name != SECRET_FILE_NAME:
            shutil.copy2(item, target / item.name)
    (target / SECRET_FILE_NAME).write_text(secret + "\n", encoding="utf-8")
    return target


def find_manifest(manifests: Iterable[Manifest], kind: str, name: str) -> Manifest:
    for manifest in manifests:
        if manifest.get("kind") == kind and manifest.get("metadata", {}).get("name") == name:
            return manifest
    raise LookupError(f"no {kind} named {name!r} in the rendered manifests")


def render_kustomization(directory: Path) -> list[Manifest]:
    """The objects `kubectl kustomize directory` prints, in no particular order."""
    [kustomization] = load_yaml_documents(directory / "kustomization.yaml")
    unknown = set(kustomization) - _SUPPORTED_FIELDS
    if unknown:
        raise UnsupportedKustomizationError(f"unsupported kustomization fields: {sorted(unknown)}")
    manifests: list[Manifest] = []
    for resource in kustomization.get("resources", []):
        manifests.extend(load_yaml_documents(_inside(directory, resource)))
    global_options = kustomization.get("generatorOptions", {})
    for generator in kustomization.get("configMapGenerator", []):
        manifests.append(_generate(directory, generator, global_options, "ConfigMap"))
    for generator in kustomization.get("secretGenerator", []):
        manifests.append(_generate(directory, generator, global_options, "Secret"))
    namespace = kustomization.get("namespace")
    for manifest in manifests:
        if namespace and manifest["kind"] == "Namespace":
            manifest["metadata"]["name"] = namespace  # as kustomize does: the object follows
        elif namespace and manifest["kind"] not in _CLUSTER_SCOPED_KINDS:
            manifest.setdefault("metadata", {})["namespace"] = namespace
        _retag_images(manifest, kustomization.get("images", []))
    return manifests


def _inside(directory: Path, relative: str) -> Path:
    path = (directory / relative).resolve()
    if not path.is_file() or directory.resolve() not in path.parents:
        # Remote bases, directories and files outside the kustomization are kustomize features
        # this loader does not follow.
        raise UnsupportedKustomizationError(f"resource {relative!r} is not a file in {directory}")
    return path


def _generate(directory: Path, generator: Mapping[str, Any], global_options: Mapping[str, Any],
              kind: str) -> Manifest:
    unknown = set(generator) - _GENERATOR_FIELDS
    options = {**global_options, **generator.get("options", {})}
    if unknown or set(options) - {"disableNameSuffixHash"}:
        raise UnsupportedKustomizationError(
            f"{kind} generator {generator.get('name')!r}: unsupported fields "
            f"{sorted(unknown | (set(options) - {'disableNameSuffixHash'}))}")
    if options.get("disableNameSuffixHash") is not True:
        # kustomize would append a content hash to the name; this loader does not compute it.
        raise UnsupportedKustomizationError(
            f"{kind} generator {generator['name']!r} must set disableNameSuffixHash: true")
    entries = _generator_entries(directory, generator)
    manifest: Manifest = {"apiVersion": "v1", "kind": kind, "metadata": {"name": generator["name"]}}
    if kind == "Secret":
        manifest["type"] = generator.get("type", "Opaque")
        manifest["data"] = {key: base64.b64encode(value).decode("ascii")
                            for key, value in entries.items()}
    else:
        manifest["data"] = {key: value.decode("utf-8") for key, value in entries.items()}
    return manifest


def _generator_entries(directory: Path, generator: Mapping[str, Any]) -> dict[str, bytes]:
    entries: dict[str, bytes] = {}
    for item in generator.get("files", []):
        key, separator, relative = item.partition("=")
        if not separator:
            key, relative = "", item
        path = _inside(directory, relative)
        entries[key or path.name] = path.read_bytes()
    for item in generator.get("literals", []):
        key, separator, value = item.partition("=")
        if not separator:
            raise UnsupportedKustomizationError(f"literal {item!r} is not KEY=VALUE")
        entries[key] = value.encode("utf-8")
    return entries


def _retag_images(manifest: Manifest, images: list[Mapping[str, str]]) -> None:
    if manifest["kind"] not in _POD_TEMPLATE_KINDS:
        return
    pod_spec = manifest["spec"]["template"]["spec"]
    for container in [*pod_spec.get("initContainers", []), *pod_spec["containers"]]:
        for image in images:
            name, tag = _split_image(container["image"])
            if name != image["name"]:
                continue
            new_name = image.get("newName", name)
            if "digest" in image:
                container["image"] = f"{new_name}@{image['digest']}"
            else:
                new_tag = image.get("newTag", tag)
                container["image"] = f"{new_name}:{new_tag}" if new_tag else new_name


def _split_image(reference: str) -> tuple[str, str | None]:
    """(name, tag) of an image reference; a registry's port is not a tag."""
    name = reference.split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        return name[:colon], name[colon + 1:]
    return name, None
