"""The public API's one OpenAPI document: the gateway's own, plus every service's, merged.

`merge_specs` is pure: it keeps each service's `/api/v1` paths that the gateway routes to that
service, merges components (a name two services define differently is prefixed with each
service's name, and their `$ref`s are rewritten), and describes what the gateway adds: bearer
authentication, the error envelope, and the 401/429/502/503/504 answers it can give itself.
`ApiCatalog` fetches the services' documents, at most once a minute, keeping the last good one
of a service that stops answering; outside dev a service serves its document to holders of the
ops token only, so the catalog sends it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import httpx

from gateway_service.domain import API_PREFIX, Clock

log = logging.getLogger(__name__)

Spec = dict[str, Any]

GATEWAY: Final = "gateway"
SECURITY_SCHEME: Final = "bearerAuth"
ENVELOPE: Final = "ErrorEnvelope"
REFRESH_SECONDS: Final = 60.0
FETCH_TIMEOUT_SECONDS: Final = 3.0
HTTP_METHODS: Final = frozenset(
    {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
)
_COMPONENTS_REF: Final = "#/components/"

ENVELOPE_SCHEMA: Final[Spec] = {
    "title": ENVELOPE,
    "description": "Every error, from the gateway or a service: a code to branch on, a message "
    "for people, and details that depend on the code (for validation errors, the fields).",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "details": {},
            },
        }
    },
}
_RETRY_AFTER: Final = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer", "minimum": 1},
    }
}
# The answers the gateway gives itself: (status, description, headers, only when protected).
_GATEWAY_ANSWERS: Final = (
    ("401", "No valid bearer token.", None, True),
    ("429", "Too many requests from this user or address.", _RETRY_AFTER, False),
    ("502", "The service behind the gateway broke the connection.", None, False),
    ("503", "The service behind the gateway is unavailable.", _RETRY_AFTER, False),
    ("504", "The service behind the gateway did not answer in time.", None, False),
)

ComponentKey = tuple[str, str]  # (section, name), e.g. ("schemas", "ProductOut")


def merge_specs(
    own: Mapping[str, Any],
    services: Mapping[str, Mapping[str, Any]],
    *,
    owns_path: Callable[[str, str], bool],
    is_public: Callable[[str, str], bool],
    unavailable: Mapping[str, str] | None = None,
) -> Spec:
    """One document from the gateway's own (`own`) and the services' (by service name).

    `owns_path(service, path)` says which paths of a service's document the gateway routes to
    it; `is_public(method, path)` which operations need no token; `unavailable` names services
    left out, with the reason (listed under `x-unavailable`).
    """
    documents: dict[str, Spec] = {GATEWAY: copy.deepcopy(dict(own))}
    documents[GATEWAY].setdefault("components", {}).setdefault("schemas", {})[ENVELOPE] = (
        copy.deepcopy(ENVELOPE_SCHEMA)
    )
    for name, service_spec in services.items():
        document = copy.deepcopy(dict(service_spec))
        document["paths"] = {
            path: item
            for path, item in (document.get("paths") or {}).items()
            if _under_api(path) and owns_path(name, path)
        }
        documents[name] = document

    renames = _renames(documents)
    merged_paths: dict[str, Any] = {}
    merged_components: dict[str, dict[str, Any]] = {}
    for name, document in documents.items():
        rename = renames.get(name, {})
        paths = {p: i for p, i in (document.get("paths") or {}).items() if _under_api(p)}
        merged_paths.update(_rewrite_refs(paths, rename))
        for section, entries in (document.get("components") or {}).items():
            if not isinstance(entries, dict):
                continue
            target = merged_components.setdefault(section, {})
            for key, definition in entries.items():
                target[rename.get((section, key)) or key] = _rewrite_refs(definition, rename)

    envelope_ref = (
        f"#/components/schemas/{renames.get(GATEWAY, {}).get(('schemas', ENVELOPE), ENVELOPE)}"
    )
    _describe_gateway_answers(merged_paths, envelope_ref, is_public)
    merged_components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /api/v1/auth/login.",
    }
    merged: Spec = {
        "openapi": own.get("openapi", "3.1.0"),
        "info": {
            "title": "Choreo API",
            "version": (own.get("info") or {}).get("version", "0.1.0"),
            "description": "The public API of Choreo, served by its gateway.",
        },
        "paths": dict(sorted(merged_paths.items())),
        "components": _prune(merged_components, merged_paths),
    }
    tags = _merged_tags(documents.values())
    if tags:
        merged["tags"] = tags
    if unavailable:
        merged["x-unavailable"] = dict(unavailable)
    return merged


def _under_api(path: str) -> bool:
    return path == API_PREFIX or path.startswith(API_PREFIX + "/")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _refs(value: Any) -> Iterator[str]:
    """Every component reference in `value`: `$ref`s and discriminator mappings."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str) and item.startswith(_COMPONENTS_REF):
                yield item
            elif key == "mapping" and isinstance(item, dict):
                yield from (v for v in item.values() if isinstance(v, str))
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _ref_key(ref: str) -> ComponentKey | None:
    if not ref.startswith(_COMPONENTS_REF):
        return None
    section, _, name = ref[len(_COMPONENTS_REF) :].partition("/")
    return (section, name) if name else None


def _renames(documents: Mapping[str, Spec]) -> dict[str, dict[ComponentKey, str]]:
    """For each document, its components that must be renamed `<document>_<name>`.

    A name collides when documents define it differently, or when its definitions refer to a
    colliding name (the same text then means different things in different documents).
    """
    definitions: dict[ComponentKey, dict[str, Any]] = {}
    for name, document in documents.items():
        for section, entries in (document.get("components") or {}).items():
            if isinstance(entries, dict):
                for key, definition in entries.items():
                    definitions.setdefault((section, key), {})[name] = definition
    colliding = {
        key
        for key, by_document in definitions.items()
        if len({_canonical(d) for d in by_document.values()}) > 1
    }
    changed = True
    while changed:
        changed = False
        for key, by_document in definitions.items():
            if key in colliding or len(by_document) < 2:
                continue
            refers = {_ref_key(ref) for d in by_document.values() for ref in _refs(d)} - {None}
            if refers & colliding:
                colliding.add(key)
                changed = True
    renames: dict[str, dict[ComponentKey, str]] = {}
    for key in colliding:
        for document_name in definitions[key]:
            renames.setdefault(document_name, {})[key] = f"{document_name}_{key[1]}"
    return renames


def _rewrite_refs(value: Any, rename: Mapping[ComponentKey, str]) -> Any:
    if not rename:
        return value

    def renamed(ref: str) -> str:
        key = _ref_key(ref)
        if key is None or key not in rename:
            return ref
        return f"{_COMPONENTS_REF}{key[0]}/{rename[key]}"

    if isinstance(value, dict):
        rewritten: dict[str, Any] = {}
        for key, item in value.items():
            if key == "$ref" and isinstance(item, str):
                rewritten[key] = renamed(item)
            elif key == "mapping" and isinstance(item, dict):
                rewritten[key] = {
                    k: renamed(v) if isinstance(v, str) else v for k, v in item.items()
                }
            else:
                rewritten[key] = _rewrite_refs(item, rename)
        return rewritten
    if isinstance(value, list):
        return [_rewrite_refs(item, rename) for item in value]
    return value


def _describe_gateway_answers(
    paths: Mapping[str, Any], envelope_ref: str, is_public: Callable[[str, str], bool]
) -> None:
    """Security and error answers, in place: what every operation gets from the gateway."""
    envelope = {"application/json": {"schema": {"$ref": envelope_ref}}}
    for path, item in paths.items():
        if not isinstance(item, dict):
            continue
        for method, operation in item.items():
            if method not in HTTP_METHODS or not isinstance(operation, dict):
                continue
            public = is_public(method.upper(), path)
            # Public operations take a token too (an admin sees more of the catalog).
            operation["security"] = (
                [{}, {SECURITY_SCHEME: []}] if public else [{SECURITY_SCHEME: []}]
            )
            responses = operation.setdefault("responses", {})
            if "422" in responses:
                # The services answer validation errors with the envelope, not FastAPI's shape.
                description = responses["422"].get("description", "Validation Error")
                responses["422"] = {"description": description, "content": envelope}
            for status, description, headers, protected_only in _GATEWAY_ANSWERS:
                if status in responses or (protected_only and public):
                    continue
                answer: dict[str, Any] = {"description": description, "content": envelope}
                if headers:
                    answer["headers"] = headers
                responses[status] = answer


def _prune(components: dict[str, dict[str, Any]], paths: Mapping[str, Any]) -> Spec:
    """Only the components the paths use, directly or through other components."""
    defined = set(_component_keys(components))
    reachable: set[ComponentKey] = set()
    pending = [key for ref in _refs(paths) if (key := _ref_key(ref)) is not None]
    while pending:
        key = pending.pop()
        if key in reachable or key not in defined:
            continue
        reachable.add(key)
        definition = components[key[0]][key[1]]
        pending += [k for ref in _refs(definition) if (k := _ref_key(ref)) is not None]
    pruned: Spec = {}
    for section, entries in components.items():
        if section == "securitySchemes":
            pruned[section] = entries
            continue
        kept = {name: d for name, d in entries.items() if (section, name) in reachable}
        if kept:
            pruned[section] = dict(sorted(kept.items()))
    return pruned


def _component_keys(components: Mapping[str, Mapping[str, Any]]) -> Iterator[ComponentKey]:
    for section, entries in components.items():
        for name in entries:
            yield (section, name)


def _merged_tags(documents: Iterable[Spec]) -> list[Any]:
    tags: dict[str, Any] = {}
    for document in documents:
        for tag in document.get("tags") or []:
            if isinstance(tag, dict) and isinstance(tag.get("name"), str):
                tags.setdefault(tag["name"], tag)
    return list(tags.values())


class ApiCatalog:
    """The merged document, rebuilt at most every `refresh_seconds`.

    Each service's document is fetched from its `/openapi.json`, with `ops_token` as the
    bearer token when given; a service that fails to answer keeps its last good document, or
    is left out (and named under `x-unavailable`) when it never gave one.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        upstream_urls: Mapping[str, str],
        *,
        owns_path: Callable[[str, str], bool],
        is_public: Callable[[str, str], bool],
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Clock = time.monotonic,
        ops_token: str | None = None,
    ) -> None:
        self._client = client
        self._headers = {"Authorization": f"Bearer {ops_token}"} if ops_token else {}
        self._urls = dict(upstream_urls)
        self._owns_path = owns_path
        self._is_public = is_public
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last_good: dict[str, Spec] = {}
        self._merged: Spec | None = None
        self._built_at = float("-inf")

    async def document(self, own: Mapping[str, Any]) -> Spec:
        """The merged document, `own` being the gateway's own (FastAPI's) document."""
        if self._merged is not None and not self._stale():
            return self._merged
        async with self._lock:
            if self._merged is None or self._stale():
                self._merged = await self._build(own)
                self._built_at = self._clock()
        return self._merged

    def _stale(self) -> bool:
        return self._clock() - self._built_at >= self._refresh_seconds

    async def _build(self, own: Mapping[str, Any]) -> Spec:
        names = list(self._urls)
        results = await asyncio.gather(*(self._fetch(name) for name in names))
        unavailable: dict[str, str] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, dict):
                self._last_good[name] = result
            elif name in self._last_good:
                log.warning(
                    "the %s service's OpenAPI document: %s; keeping the last one", name, result
                )
            else:
                log.warning("the %s service's OpenAPI document: %s; leaving it out", name, result)
                unavailable[name] = result
        return merge_specs(
            own,
            {name: self._last_good[name] for name in names if name in self._last_good},
            owns_path=self._owns_path,
            is_public=self._is_public,
            unavailable=unavailable,
        )

    async def _fetch(self, name: str) -> Spec | str:
        """The service's document, or why there is none."""
        url = f"{self._urls[name].rstrip('/')}/openapi.json"
        try:
            response = await self._client.get(
                url, headers=self._headers, timeout=FETCH_TIMEOUT_SECONDS
            )
        except httpx.HTTPError as error:
            return f"not reachable ({type(error).__name__})"
        if response.status_code != httpx.codes.OK:
            return f"{url} answered {response.status_code}"
        try:
            document = response.json()
        except ValueError:
            return f"{url} is not JSON"
        if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
            return f"{url} is not an OpenAPI document"
        return document
