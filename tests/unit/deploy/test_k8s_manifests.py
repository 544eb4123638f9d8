"""deploy/k8s: each overlay renders (tests.unit.deploy.kustomize, no binary, no cluster) to
objects the pinned Kubernetes API accepts, and to a deployment that would run: probes, limits
and a locked-down pod for every service, only the gateway reachable from outside, network
policies that allow exactly the calls the services make, autoscalers only on what scales,
settings the services read, and, for Strimzi, every topic and ACLs derived from the code."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from choreo.events import DLQ_TOPICS, EVENT_TOPICS, OWNER_OF_TOPIC, RETRY_TOPICS
from choreo.records import SessionsRevoked, UserDeleted
from choreo.settings import ServiceSettings
from tests.unit.deploy.kustomize import Manifest, image_name, render
from tests.unit.test_env_example import SETTINGS, TEMPLATE, listed, variables

REPOSITORY = Path(__file__).resolve().parents[3]
K8S = REPOSITORY / "deploy" / "k8s"
OVERLAYS = ("dev", "production")
KUBERNETES_VERSION = "1.37"
"""The Kubernetes API the core objects are validated against (kubernetes-validate's newest)."""
IMAGE = "choreo/service"
PORT = 8000
PARTITIONS = 6
STRIMZI = "kafka.strimzi.io/"

Labels = Mapping[str, str]


@cache
def rendered(overlay: str) -> tuple[Manifest, ...]:
    return tuple(render(K8S / "overlays" / overlay))


def of_kind(overlay: str, kind: str) -> list[Manifest]:
    return [m for m in rendered(overlay) if m["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> Manifest:
    (manifest,) = (m for m in of_kind(overlay, kind) if m["metadata"]["name"] == name)
    return manifest


def container(deployment: Manifest) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


def service_of(deployment: Manifest) -> str:
    """`order` for the Deployment whose container runs `order_service.main`."""
    module = container(deployment)["args"][0]
    return str(module.removesuffix("_service.main"))


def settings_of(service: str) -> type[ServiceSettings]:
    (settings,) = (s for s in SETTINGS if s.service == service)
    return settings


def pod_labels(deployment: Manifest) -> Labels:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def env_value(deployment: Manifest, name: str) -> dict[str, Any] | None:
    entries = [e for e in container(deployment).get("env", []) if e["name"] == name]
    return dict(entries[0]) if entries else None


def config_values(overlay: str, deployment: Manifest) -> dict[str, str]:
    """The variables a Deployment's container gets from the ConfigMaps it loads whole."""
    values: dict[str, str] = {}
    for source in container(deployment).get("envFrom", []):
        values |= named(overlay, "ConfigMap", source["configMapRef"]["name"])["data"]
    return values


def matches(selector: Mapping[str, Any], labels: Labels) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if not {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def quantity(text: str | int) -> float:
    """A Kubernetes quantity as a number: `250m` → 0.25, `256Mi` → 268435456."""
    units = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    number, unit = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(text)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


# --- the objects themselves ---------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_core_object_is_valid_for_the_pinned_kubernetes_api(overlay: str) -> None:
    core = [m for m in rendered(overlay) if not m["apiVersion"].startswith(STRIMZI)]
    assert len(core) > 30
    for manifest in core:
        validate(json.dumps(manifest, sort_keys=True))


@cache
def validate(manifest: str) -> None:
    """Raises kubernetes_validate.ValidationError unless the API accepts `manifest` (JSON);
    each distinct object once, as both overlays share most of theirs."""
    kubernetes_validate.validate(json.loads(manifest), KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lands_in_the_choreo_namespace(overlay: str) -> None:
    for manifest in rendered(overlay):
        if manifest["kind"] != "Namespace":
            assert manifest["metadata"]["namespace"] == "choreo", manifest["metadata"]["name"]
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "choreo"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_runs_once_from_the_one_image(overlay: str) -> None:
    deployments = of_kind(overlay, "Deployment")
    assert sorted(service_of(d) for d in deployments) == sorted(s.service for s in SETTINGS)
    for deployment in deployments:
        spec = container(deployment)
        assert image_name(spec["image"]) == IMAGE
        assert ":" in spec["image"].split("/")[-1], "the image has a tag"
        assert importlib.util.find_spec(spec["args"][0]) is not None, spec["args"]


# --- pods ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_listen_on_8000_and_probe_readiness_and_liveness_there(overlay: str) -> None:
    for deployment in of_kind(overlay, "Deployment"):
        spec = container(deployment)
        ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
        prefix = settings_of(service_of(deployment)).model_config.get("env_prefix", "")
        assert env_value(deployment, f"{prefix}HOST") == {
            "name": f"{prefix}HOST",
            "value": "0.0.0.0",
        }
        assert env_value(deployment, f"{prefix}PORT") == {
            "name": f"{prefix}PORT",
            "value": str(PORT),
        }
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = spec[probe]["httpGet"]
            assert get["path"] == path, (deployment["metadata"]["name"], probe)
            assert ports.get(get["port"], get["port"]) == PORT


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_locked_down(overlay: str) -> None:
    for deployment in of_kind(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        spec = container(deployment)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        security = spec["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        # A read-only root needs somewhere to write temporary files.
        volumes = {v["name"]: v for v in pod["volumes"]}
        (tmp,) = (m for m in spec["volumeMounts"] if m["mountPath"] == "/tmp")
        assert "emptyDir" in volumes[tmp["name"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_within_its_limits(overlay: str) -> None:
    for deployment in of_kind(overlay, "Deployment"):
        resources = container(deployment)["resources"]
        for resource in ("cpu", "memory"):
            requested = quantity(resources["requests"][resource])
            assert 0 < requested <= quantity(resources["limits"][resource])


def test_dev_is_smaller_than_production() -> None:
    for deployment in of_kind("dev", "Deployment"):
        name = deployment["metadata"]["name"]
        production = named("production", "Deployment", name)
        assert deployment["spec"]["replicas"] == 1
        assert quantity(container(deployment)["resources"]["limits"]["memory"]) <= quantity(
            container(production)["resources"]["limits"]["memory"]
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_deployment_has_one_disruption_budget(overlay: str) -> None:
    budgets = of_kind(overlay, "PodDisruptionBudget")
    for deployment in of_kind(overlay, "Deployment"):
        covering = [b for b in budgets if matches(b["spec"]["selector"], pod_labels(deployment))]
        assert len(covering) == 1, deployment["metadata"]["name"]
        # maxUnavailable lets a single replica (dev) be drained, where minAvailable 1 would not.
        assert covering[0]["spec"].get("maxUnavailable") == 1


# --- settings ------------------------------------------------------------------------------


def expanded_env_example() -> set[str]:
    """The names .env.example lists, `<SERVICE>_X` spelled out for each service's prefix."""
    names = set()
    for name in listed():
        if name.startswith(TEMPLATE):
            rest = name.removeprefix(TEMPLATE)
            names |= {f"{s.model_config.get('env_prefix', '')}{rest}" for s in SETTINGS}
        else:
            names.add(name)
    return names


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_given_is_one_the_service_reads(overlay: str) -> None:
    documented = expanded_env_example()
    for deployment in of_kind(overlay, "Deployment"):
        settings = settings_of(service_of(deployment))
        reads = {name.upper() for name, _, _ in variables(settings)}
        given = [e["name"] for e in container(deployment)["env"]]
        given += list(config_values(overlay, deployment))
        unread = sorted(set(given) - reads)
        assert not unread, f"{settings.service} does not read {unread}"
        assert set(given) <= documented
        assert len(given) == len(set(given)), f"{settings.service} gets a variable twice"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_run_in_production_mode(overlay: str) -> None:
    for deployment in of_kind(overlay, "Deployment"):
        assert config_values(overlay, deployment)["CHOREO_ENV"] == "prod"


def references(overlay: str) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key) of every ConfigMap and Secret the objects read."""
    for deployment in of_kind(overlay, "Deployment"):
        spec = container(deployment)
        for source in spec.get("envFrom", []):
            for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if ref in source:
                    yield kind, source[ref]["name"], None
        for entry in spec.get("env", []):
            for kind, ref in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if ref in entry.get("valueFrom", {}):
                    yield kind, entry["valueFrom"][ref]["name"], entry["valueFrom"][ref]["key"]
        for volume in deployment["spec"]["template"]["spec"]["volumes"]:
            if "secret" in volume:
                for item in volume["secret"]["items"]:
                    yield "Secret", volume["secret"]["secretName"], item["key"]
    for ingress in of_kind(overlay, "Ingress"):
        for tls in ingress["spec"]["tls"]:
            yield "Secret", tls["secretName"], None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_config_map_and_secret_read_is_made_here_or_in_the_readme(overlay: str) -> None:
    readme = (K8S / "README.md").read_text()
    made = {(m["kind"], m["metadata"]["name"]): m for m in rendered(overlay)}
    kafka_users = {u["metadata"]["name"] for u in of_kind(overlay, "KafkaUser")}
    for kind, name, key in references(overlay):
        if (kind, name) in made:
            assert key is None or key in made[(kind, name)]["data"], (name, key)
        elif kind == "Secret" and name in kafka_users:
            assert key == "password"  # the User Operator's Secret for a SCRAM user
        else:
            assert f"`{name}`" in readme, f"README.md does not say to create {kind} {name}"
            if key is not None:
                assert key in readme, f"README.md does not name {key} of {name}"


# --- exposure and network policies ------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_gateway_is_reachable_from_outside(overlay: str) -> None:
    for service in of_kind(overlay, "Service"):
        assert service["spec"]["type"] == "ClusterIP", service["metadata"]["name"]
        (deployment,) = (
            d
            for d in of_kind(overlay, "Deployment")
            if matches({"matchLabels": service["spec"]["selector"]}, pod_labels(d))
        )
        ports = {p["name"] for p in container(deployment)["ports"]}
        assert all(p["port"] == PORT and p["targetPort"] in ports for p in service["spec"]["ports"])
    backends = [
        path["backend"]["service"]["name"]
        for ingress in of_kind(overlay, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends == ["gateway"]


@dataclass(frozen=True)
class Peer:
    """A party to a connection: a pod (its namespace and labels) or an address outside."""

    namespace: str = ""
    labels: Labels = field(default_factory=dict)
    address: str | None = None


def pods(overlay: str) -> dict[str, Peer]:
    return {service_of(d): Peer("choreo", pod_labels(d)) for d in of_kind(overlay, "Deployment")}


INGRESS_CONTROLLER = Peer("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
PROMETHEUS = Peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
DNS = Peer("kube-system", {"k8s-app": "kube-dns"})
KAFKA_BROKER = Peer("choreo", {"strimzi.io/cluster": "choreo", "strimzi.io/kind": "Kafka"})
STRANGER = Peer("default", {"app": "something-else"})
INTERNET = Peer(address="54.187.174.169")
PRIVATE_DATABASE = Peer(address="10.20.0.5")


def _peer_matches(rule_peer: Mapping[str, Any], policy_namespace: str, peer: Peer) -> bool:
    if "ipBlock" in rule_peer:
        if peer.address is None:
            return False  # pods' addresses are private, which no ipBlock here takes in
        address = ipaddress.ip_address(peer.address)
        block = rule_peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(
            address in ipaddress.ip_network(e) for e in block.get("except", [])
        )
    if peer.address is not None:
        return False
    if "namespaceSelector" in rule_peer:
        namespace_labels = {"kubernetes.io/metadata.name": peer.namespace}
        if not matches(rule_peer["namespaceSelector"], namespace_labels):
            return False
    elif peer.namespace != policy_namespace:
        return False
    return matches(rule_peer.get("podSelector", {}), peer.labels)


def _rule_allows(
    rule: Mapping[str, Any], side: str, namespace: str, peer: Peer, port: int, protocol: str
) -> bool:
    if rule.get("ports") and not any(
        p.get("port") == port and p.get("protocol", "TCP") == protocol for p in rule["ports"]
    ):
        return False
    peers = rule.get(side)
    return not peers or any(_peer_matches(p, namespace, peer) for p in peers)


def _direction_allows(
    overlay: str, subject: Peer, other: Peer, direction: str, port: int, protocol: str
) -> bool:
    """Whether the policies selecting `subject` let it talk to (Egress) or hear from (Ingress)
    `other`. A pod no policy selects for that direction is open in it."""
    side = "to" if direction == "Egress" else "from"
    selecting = [
        p
        for p in of_kind(overlay, "NetworkPolicy")
        if subject.address is None
        and p["metadata"]["namespace"] == subject.namespace
        and direction in p["spec"]["policyTypes"]
        and matches(p["spec"]["podSelector"], subject.labels)
    ]
    return not selecting or any(
        _rule_allows(rule, side, p["metadata"]["namespace"], other, port, protocol)
        for p in selecting
        for rule in p["spec"].get(direction.lower(), [])
    )


def allowed(overlay: str, source: Peer, target: Peer, port: int, protocol: str = "TCP") -> bool:
    return _direction_allows(overlay, source, target, "Egress", port, protocol) and (
        _direction_allows(overlay, target, source, "Ingress", port, protocol)
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_network_policy_selects_pods_that_exist(overlay: str) -> None:
    ours = [pod.labels for pod in pods(overlay).values()]
    # A peer in this namespace is one of ours or a broker of the Strimzi cluster.
    neighbours = [*ours, KAFKA_BROKER.labels]
    for policy in of_kind(overlay, "NetworkPolicy"):
        name = policy["metadata"]["name"]
        assert any(matches(policy["spec"]["podSelector"], labels) for labels in ours), name
        for rule in policy["spec"].get("ingress", []) + policy["spec"].get("egress", []):
            for peer in rule.get("from", []) + rule.get("to", []):
                if "podSelector" in peer and "namespaceSelector" not in peer:
                    selector = peer["podSelector"]
                    assert any(matches(selector, labels) for labels in neighbours), (name, peer)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_may_call_exactly_the_services_they_call(overlay: str) -> None:
    services = pods(overlay)
    expected = {("gateway", s) for s in services if s != "gateway"}
    expected |= {(s, "user") for s in services}  # the JWKS every service verifies tokens with
    expected.add(("order", "inventory"))  # prices of a new order
    for source_name, source in services.items():
        for target_name, target in services.items():
            if source_name != target_name:
                calls = (source_name, target_name) in expected
                assert allowed(overlay, source, target, PORT) == calls, (source_name, target_name)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_the_ingress_controller_and_prometheus_come_in_from_outside(overlay: str) -> None:
    for name, pod in pods(overlay).items():
        assert allowed(overlay, PROMETHEUS, pod, PORT)
        assert allowed(overlay, INGRESS_CONTROLLER, pod, PORT) == (name == "gateway")
        assert not allowed(overlay, STRANGER, pod, PORT)
        assert not allowed(overlay, INTERNET, pod, PORT)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_reach_dns_the_broker_the_database_and_their_providers_only(overlay: str) -> None:
    providers = {"payment", "notification"}  # Stripe, SendGrid
    for name, pod in pods(overlay).items():
        assert allowed(overlay, pod, DNS, 53, "UDP")
        has_database = settings_of(name).database_name is not None
        assert allowed(overlay, pod, KAFKA_BROKER, 9093) == has_database, name
        assert allowed(overlay, pod, PRIVATE_DATABASE, 5432) == has_database, name
        assert allowed(overlay, pod, INTERNET, 443) == (name in providers), name
        assert not allowed(overlay, pod, STRANGER, PORT)


def test_production_gateway_reaches_redis_and_dev_has_no_need() -> None:
    redis = Peer(address="10.30.0.7")
    assert allowed("production", pods("production")["gateway"], redis, 6379)
    assert not allowed("dev", pods("dev")["gateway"], redis, 6379)


# --- scaling ---------------------------------------------------------------------------------


def most_replicas(overlay: str, deployment: Manifest) -> int:
    scalers = [
        h
        for h in of_kind(overlay, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    ]
    counts: list[int] = [h["spec"]["maxReplicas"] for h in scalers]
    replicas: int = deployment["spec"].get("replicas", 1)
    return max([*counts, replicas])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_autoscaler_targets_a_deployment_it_can_scale(overlay: str) -> None:
    for scaler in of_kind(overlay, "HorizontalPodAutoscaler"):
        target = scaler["spec"]["scaleTargetRef"]
        assert target["kind"] == "Deployment"
        deployment = named(overlay, "Deployment", target["name"])
        # A replica count in the manifest would undo the autoscaler's at every apply.
        assert "replicas" not in deployment["spec"]
        assert 2 <= scaler["spec"]["minReplicas"] <= scaler["spec"]["maxReplicas"]
        # CPU utilization is measured against the request.
        assert "cpu" in container(deployment)["resources"]["requests"]
        assert [m["resource"]["name"] for m in scaler["spec"]["metrics"]] == ["cpu"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_consumer_scales_past_its_partitions(overlay: str) -> None:
    for deployment in of_kind(overlay, "Deployment"):
        if consumed_topics(service_of(deployment)):
            assert most_replicas(overlay, deployment) <= PARTITIONS


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_user_service_runs_a_count_you_chose(overlay: str) -> None:
    # Its credential-attempt limits are per process: an autoscaler would multiply them.
    scaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(overlay, "HorizontalPodAutoscaler")
    }
    assert "user" not in scaled
    assert named(overlay, "Deployment", "user")["spec"]["replicas"] >= 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_several_gateways_share_their_rate_limits_in_redis(overlay: str) -> None:
    gateway = named(overlay, "Deployment", "gateway")
    assert (env_value(gateway, "REDIS_URL") is not None) == (most_replicas(overlay, gateway) > 1)


def test_production_runs_two_replicas_of_everything_at_least() -> None:
    for deployment in of_kind("production", "Deployment"):
        scalers = [
            h
            for h in of_kind("production", "HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        ]
        least = scalers[0]["spec"]["minReplicas"] if scalers else deployment["spec"]["replicas"]
        assert least >= 2, deployment["metadata"]["name"]


# --- Kafka (Strimzi) ---------------------------------------------------------------------------


def consumed_topics(service: str) -> set[str]:
    """The topics a service's consumer subscribes to: its main's subscriptions, plus
    user.event for every consuming service (choreo.service adds the revocation handlers)."""
    main = importlib.import_module(f"{service}_service.main")
    subscriptions: Sequence[Any] = main.subscriptions() if hasattr(main, "subscriptions") else ()
    topics = {s.record.TOPIC for s in subscriptions}
    return topics | {UserDeleted.TOPIC, SessionsRevoked.TOPIC} if topics else set()


def kafka_cluster(overlay: str) -> str:
    """`choreo` for the bootstrap address `choreo-kafka-bootstrap:9093` (Strimzi's naming)."""
    bootstrap = named(overlay, "ConfigMap", "choreo-kafka")["data"]["KAFKA_BOOTSTRAP_SERVERS"]
    return str(bootstrap.split(":")[0].removesuffix("-kafka-bootstrap"))


def acls(user: Manifest) -> dict[tuple[str, str], set[str]]:
    """(resource type, name) → operations, of a KafkaUser's simple authorization."""
    granted: dict[tuple[str, str], set[str]] = {}
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        assert resource.get("patternType", "literal") == "literal"
        assert resource["name"] != "*"
        assert acl.get("type", "allow") == "allow"
        assert acl.get("host", "*") == "*"
        granted.setdefault((resource["type"], resource["name"]), set()).update(acl["operations"])
    return granted


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_topic_exists_replicated_and_partitioned(overlay: str) -> None:
    topics = {t["metadata"]["name"]: t for t in of_kind(overlay, "KafkaTopic")}
    assert set(topics) == set(EVENT_TOPICS + DLQ_TOPICS + RETRY_TOPICS)
    replicas, in_sync = (3, 2) if overlay == "production" else (1, 1)
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == kafka_cluster(overlay)
        assert topic["spec"].get("topicName", name) == name
        assert topic["spec"]["partitions"] == PARTITIONS
        assert topic["spec"]["replicas"] == replicas
        assert topic["spec"]["config"]["min.insync.replicas"] == in_sync
        assert topic["spec"]["config"]["retention.ms"] >= 7 * 24 * 3600 * 1000
    for name in DLQ_TOPICS:
        # Dead letters wait for a person; they outlive the events they copy.
        assert (
            topics[name]["spec"]["config"]["retention.ms"]
            > topics[EVENT_TOPICS[0]]["spec"]["config"]["retention.ms"]
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_writes_only_what_it_owns_and_reads_what_it_consumes(overlay: str) -> None:
    users = {u["metadata"]["name"]: u for u in of_kind(overlay, "KafkaUser")}
    for deployment in of_kind(overlay, "Deployment"):
        service = service_of(deployment)
        if settings_of(service).database_name is None:
            assert env_value(deployment, "KAFKA_SASL_USERNAME") is None  # no broker access
            continue
        username = env_value(deployment, "KAFKA_SASL_USERNAME")
        assert username is not None
        user = users.pop(username["value"])
        password = env_value(deployment, "KAFKA_SASL_PASSWORD")
        assert password is not None
        assert password["valueFrom"]["secretKeyRef"] == {
            "name": user["metadata"]["name"],
            "key": "password",
        }
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == kafka_cluster(overlay)
        assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
        consumed = consumed_topics(service)
        expected: dict[tuple[str, str], set[str]] = {
            ("topic", t): {"Write"} for t, owner in OWNER_OF_TOPIC.items() if owner == service
        }
        if consumed:
            expected[("topic", f"{service}.dlq")] = {"Write"}
            expected |= {("topic", t): {"Read"} for t in consumed | {f"{service}.retry"}}
            expected[("group", f"{service}_service")] = {"Read"}
        assert acls(user) == expected, service
    # Left: the operators' principal, which writes the retry topics and nothing else.
    (operator,) = users.values()
    written = {name for (kind, name), ops in acls(operator).items() if ops & {"Write", "All"}}
    assert written == set(RETRY_TOPICS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_with_a_database_trust_the_kafka_cluster_ca(overlay: str) -> None:
    cluster = kafka_cluster(overlay)
    for deployment in of_kind(overlay, "Deployment"):
        values = config_values(overlay, deployment)
        if settings_of(service_of(deployment)).database_name is None:
            # The kit checks the broker settings at start-up even where it never uses them.
            assert not any(name.startswith("KAFKA_") for name in values)
            continue
        cafile = Path(values["KAFKA_SSL_CAFILE"])
        (mount,) = (
            m
            for m in container(deployment)["volumeMounts"]
            if Path(m["mountPath"]) == cafile.parent
        )
        (volume,) = (
            v
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if v["name"] == mount["name"]
        )
        assert volume["secret"]["secretName"] == f"{cluster}-cluster-ca-cert"
        assert {"key": "ca.crt", "path": cafile.name} in volume["secret"]["items"]
