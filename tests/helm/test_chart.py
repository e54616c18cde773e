"""The Helm chart: lint, render, validate every manifest offline, and check what it promises.

Renders deploy/helm/postmesh with its default values and with ci/production-values.yaml (every
toggle on), validates the built-in kinds against the Kubernetes OpenAPI schemas with
kubernetes-validate (strict: unknown fields fail), checks the custom resources' required fields
by hand (no schemas offline), and checks the chart's semantics: probes on the ops port,
non-root read-only containers, edge ports, settings the services really read, NetworkPolicies.
helm comes from scripts/helm/ensure-helm.sh (built once into $POSTMESH_CACHE with Go).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import functools
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, cast

import kubernetes_validate  # type: ignore[import-untyped,import-not-found,unused-ignore]
import pydantic
import pytest
import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from postmesh.common.config import ServiceSettings
from postmesh.common.grpc import GrpcServer, channel, is_serving
from postmesh.common.grpc_security import GrpcSecurity

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/postmesh"
PRODUCTION = CHART / "ci/production-values.yaml"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest with schemas.
K8S_VERSIONS = ("1.30", str(kubernetes_validate.latest_version()))

Doc = dict[str, Any]

COMPONENTS = {
    # component: (settings class, documented ops port)
    "smtp-edge": ("postmesh.smtp_edge.settings:SmtpEdgeSettings", 9101),
    "imap-gw": ("postmesh.imap_gw.settings:ImapSettings", 9102),
    "pop3-gw": ("postmesh.pop3_gw.settings:Pop3Settings", 9103),
    "delivery": ("postmesh.delivery.settings:DeliverySettings", 9104),
    "store": ("postmesh.store.settings:StoreSettings", 9105),
    "auth": ("postmesh.auth.settings:AuthSettings", 9106),
}
EDGE_PORTS = {
    # component: {service port: (port name, container port, setting)}
    "smtp-edge": {
        25: ("smtp", 2525, "smtp_mx_port"),
        587: ("submission", 2587, "smtp_submission_port"),
        465: ("submissions", 2465, "smtp_submissions_port"),
    },
    "imap-gw": {143: ("imap", 1143, "imap_port"), 993: ("imaps", 1993, "imaps_port")},
    "pop3-gw": {110: ("pop3", 1110, "pop3_port"), 995: ("pop3s", 1995, "pop3s_port")},
}
EDGE_HOST_SETTING = {"smtp-edge": "smtp_host", "imap-gw": "imap_host", "pop3-gw": "pop3_host"}
# Variables the chart sets ahead of the services reading them (ignored until then, since the
# settings have extra="ignore"): the DKIM key directory.
PENDING_SETTINGS = {"POSTMESH_DKIM_KEY_DIR"}
# Kinds without an offline schema: their required fields are checked below.
CUSTOM_KINDS = {
    "ServiceMonitor",
    "PrometheusRule",
    "Kafka",
    "KafkaNodePool",
    "KafkaTopic",
    "KafkaUser",
    "MongoDBCommunity",
    "ScaledObject",
    "TriggerAuthentication",
}
TOPICS = {"postmesh.inbound", "postmesh.mailbox-events", "postmesh.delivery-events"}


# ---- helpers


@functools.cache
def helm() -> str:
    """Path of helm (built on first use; fails with the script's message when Go is missing)."""
    out = subprocess.run(
        ["bash", str(ROOT / "scripts/helm/ensure-helm.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


@functools.cache
def render(*args: str) -> tuple[Doc, ...]:
    """`helm template` output as documents (cached: tests only read them)."""
    out = run_helm("template", "pm", str(CHART), "--namespace", "mail", *args)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


VALUE_SETS = {"default": (), "production": ("-f", str(PRODUCTION))}


@pytest.fixture(params=sorted(VALUE_SETS))
def docs(request: pytest.FixtureRequest) -> tuple[Doc, ...]:
    return render(*VALUE_SETS[request.param])


def of_kind(docs: tuple[Doc, ...], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: tuple[Doc, ...], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def component_of(d: Doc) -> str:
    return str(d["metadata"]["labels"]["app.kubernetes.io/component"])


def deployments(docs: tuple[Doc, ...]) -> dict[str, Doc]:
    return {component_of(d): d for d in of_kind(docs, "Deployment")}


def container(dep: Doc) -> Doc:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def env_of(docs: tuple[Doc, ...], dep: Doc) -> dict[str, str]:
    """The environment a Deployment's container gets from its ConfigMaps (later ones win)."""
    env: dict[str, str] = {}
    for src in container(dep)["envFrom"]:
        env.update(named(docs, "ConfigMap", src["configMapRef"]["name"])["data"])
    for var in container(dep).get("env", []):
        env[var["name"]] = f"<secret {var['valueFrom']['secretKeyRef']['name']}>"
    return env


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def settings_class(component: str) -> type[ServiceSettings]:
    module, _, cls = COMPONENTS[component][0].partition(":")
    found = getattr(importlib.import_module(module), cls)
    assert issubclass(found, ServiceSettings)
    return cast(type[ServiceSettings], found)


MANAGED = CHART / "ci/managed-backends-values.yaml"
BUS_COMPONENTS = {"smtp-edge", "imap-gw", "delivery", "store"}


def mounted_files(dep: Doc) -> dict[str, tuple[str, str]]:
    """File path in the container -> (Secret name, key) for every secret volume with items."""
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = {}
    for mount in container(dep)["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if not secret:
            continue
        assert mount.get("readOnly") is True, mount
        for item in secret.get("items", []):
            files[f"{mount['mountPath']}/{item['path']}"] = (secret["secretName"], item["key"])
    return files


# ---- lint, render, schema validation


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint_strict(values: str) -> None:
    out = run_helm("lint", "--strict", str(CHART), *VALUE_SETS[values])
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_every_manifest_validates(docs: tuple[Doc, ...], k8s: str) -> None:
    kinds = set()
    for d in docs:
        kinds.add(d["kind"])
        if d["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(d, k8s, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{d['kind']}/{d['metadata']['name']} invalid for {k8s}: {e.message}")
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds


def test_default_render_has_no_operator_resources() -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & CUSTOM_KINDS
    assert "NetworkPolicy" not in kinds


def test_production_render_has_every_toggle() -> None:
    kinds = {d["kind"] for d in render("-f", str(PRODUCTION))}
    assert CUSTOM_KINDS | {"NetworkPolicy", "HorizontalPodAutoscaler"} <= kinds
    dashboards = [
        d
        for d in of_kind(render("-f", str(PRODUCTION)), "ConfigMap")
        if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]
    assert len(dashboards) == 5  # overview, SMTP, IMAP, POP3, delivery
    assert {d["metadata"]["namespace"] for d in dashboards} == {"monitoring"}
    auth = named(render("-f", str(PRODUCTION)), "ConfigMap", "pm-postmesh-auth")["data"]
    assert auth["POSTMESH_AUTH_POSTMASTER"] == "admin@example.org"
    assert (
        "POSTMESH_AUTH_POSTMASTER" not in named(render(), "ConfigMap", "pm-postmesh-auth")["data"]
    )


BAD_VALUES = {
    "negative replicas": ["--set", "smtpEdge.replicas=-1"],
    "unknown store backend": ["--set", "store.backend=cassandra"],
    "unknown auth backend": ["--set", "auth.backend=ldap"],
    "unknown bus": ["--set", "config.bus=rabbitmq"],
    "bad log level": ["--set", "config.logLevel=TRACE"],
    "short admin token": ["--set", "auth.adminToken.value=short"],
    "port out of range": ["--set", "imapGw.service.ports.imaps=70000"],
    "cpu target over 100%": ["--set", "delivery.autoscaling.targetCPUUtilizationPercentage=150"],
    "unknown top-level key": ["--set", "replicaCount=3"],
    "unknown component key": ["--set", "pop3Gw.replica=3"],
    "bad bootstrap servers": ["--set", "kafka.bootstrapServers=kafka"],
    "not a mongodb url": ["--set", "mongodb.url=postgres://db"],
    "bad hostname": ["--set", "config.hostname=mail example"],
    "internal service exposed": ["--set", "store.service.type=LoadBalancer"],
    "bad env name": ["--set", "smtpEdge.env.FOO=1"],
    "pdb with both bounds": ["--set", "store.pdb.minAvailable=1"],
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(case: str) -> None:
    out = run_helm("template", "pm", str(CHART), *BAD_VALUES[case])
    assert out.returncode != 0, f"{case}: rendered anyway"
    assert "values don't meet the specifications of the schema" in out.stderr, out.stderr


def test_proxy_protocol_without_trusted_networks_fails_with_a_message() -> None:
    # Trusting every peer's PROXY header would let a direct client claim to be loopback.
    out = run_helm("template", "pm", str(CHART), "--set", "imapGw.proxyProtocol=true")
    assert out.returncode != 0
    assert "imapGw.proxyProtocol needs imapGw.proxyTrustedNetworks" in out.stderr


def test_missing_mongodb_url_fails_with_a_message() -> None:
    out = run_helm("template", "pm", str(CHART), "--set", "mongodb.url=")
    assert out.returncode != 0
    assert "mongodb.url is required" in out.stderr


# ---- workloads


def test_one_deployment_per_service_with_probes_on_the_ops_port(docs: tuple[Doc, ...]) -> None:
    deps = deployments(docs)
    assert set(deps) == set(COMPONENTS)
    for name, dep in deps.items():
        c = container(dep)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports["ops"] == COMPONENTS[name][1], name
        env = env_of(docs, dep)
        assert env["POSTMESH_OPS_PORT"] == str(ports["ops"])
        assert env["POSTMESH_OPS_HOST"] == "0.0.0.0"
        assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
        assert c["resources"]["requests"]["memory"]
        assert c["resources"]["limits"]["memory"]


def test_containers_run_as_non_root_on_a_read_only_root(docs: tuple[Doc, ...]) -> None:
    for name, dep in deployments(docs).items():
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        sc = container(dep)["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        # The only writable places are emptyDirs, and the data dir is one of them.
        mounts = {m["mountPath"]: m["name"] for m in container(dep)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        for path in ("/tmp", env_of(docs, dep)["POSTMESH_DATA_DIR"]):
            assert "emptyDir" in volumes[mounts[path]], (name, path)


def load_settings(
    name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    """The service's own settings class, read from the rendered environment."""
    cls = settings_class(name)
    for var in ["POSTMESH_" + f.upper() for f in cls.model_fields]:
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        # Secrets are not rendered here: a well-formed stand-in of the same kind.
        if value.startswith("<secret"):
            value = "mongodb://db:27017" if "MONGODB" in var else "x" * 32
        # A mounted secret file must exist at start (the settings check it): a stand-in file.
        if var.endswith(("_PASSWORD_FILE", "_URL_FILE", "_TOKEN_FILE")):
            fd, path = tempfile.mkstemp(prefix="postmesh-helm-secret-")
            os.write(fd, b"stand-in secret\n")
            os.close(fd)
            value = path
        monkeypatch.setenv(var, value)
    try:
        return cls()
    except pydantic.ValidationError as e:
        pytest.fail(f"{name}: {e}")


def test_rendered_settings_are_accepted_by_the_services(
    docs: tuple[Doc, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every POSTMESH_* variable names a real setting of that service and passes its validation."""
    for name, dep in deployments(docs).items():
        env = env_of(docs, dep)
        known = {"POSTMESH_" + f.upper() for f in settings_class(name).model_fields}
        unknown = set(env) - known - PENDING_SETTINGS
        assert not unknown, f"{name} does not read {sorted(unknown)}"
        settings = load_settings(name, env, monkeypatch)
        assert settings.ops_port == COMPONENTS[name][1]
        assert settings.ops_host == "0.0.0.0"
        assert settings.bus == "kafka"
        if name in ("store", "auth"):
            assert getattr(settings, f"{name}_backend") == "mongodb"
            assert getattr(settings, f"{name}_listen").startswith("0.0.0.0:")


def test_secret_references_resolve(docs: tuple[Doc, ...]) -> None:
    secrets = {d["metadata"]["name"] for d in of_kind(docs, "Secret")}
    mdb = of_kind(docs, "MongoDBCommunity")
    # The MongoDB operator writes the connection-string Secret it is told to.
    secrets |= {u["connectionStringSecretName"] for m in mdb for u in m["spec"]["users"]}
    prod = yaml.safe_load(PRODUCTION.read_text())
    existing = {
        prod["tls"]["existingSecret"],
        prod["delivery"]["dkim"]["existingSecret"],
        prod["auth"]["adminToken"]["existingSecret"],
        "regcred",
    }
    # Strimzi writes the cluster CA's Secret and each KafkaUser's password Secret.
    secrets |= {f"{k['metadata']['name']}-cluster-ca-cert" for k in of_kind(docs, "Kafka")}
    secrets |= {u["metadata"]["name"] for u in of_kind(docs, "KafkaUser")}
    for dep in deployments(docs).values():
        pod = dep["spec"]["template"]["spec"]
        refs = [v["valueFrom"]["secretKeyRef"]["name"] for v in container(dep).get("env", [])]
        refs += [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
        for ref in refs:
            assert ref in secrets | existing, ref


def test_edge_services_expose_the_standard_mail_ports(
    docs: tuple[Doc, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = deployments(docs)
    for name, ports in EDGE_PORTS.items():
        svc = named(docs, "Service", f"pm-postmesh-{name}")
        assert svc["spec"]["type"] == "LoadBalancer"
        assert {p["port"] for p in svc["spec"]["ports"]} == set(ports)
        assert matches(
            svc["spec"]["selector"], deps[name]["spec"]["template"]["metadata"]["labels"]
        )
        container_ports = {p["name"]: p["containerPort"] for p in container(deps[name])["ports"]}
        settings = load_settings(name, env_of(docs, deps[name]), monkeypatch)
        # The service listens on all interfaces, on the port the Service forwards to.
        assert getattr(settings, EDGE_HOST_SETTING[name]) == "0.0.0.0"
        for p in svc["spec"]["ports"]:
            port_name, unprivileged, setting = ports[p["port"]]
            assert p["targetPort"] == port_name
            assert container_ports[port_name] == unprivileged
            assert getattr(settings, setting) == unprivileged


def test_internal_services_are_cluster_ip_and_ops_never_public(docs: tuple[Doc, ...]) -> None:
    store = named(docs, "Service", "pm-postmesh-store")
    auth = named(docs, "Service", "pm-postmesh-auth")
    assert store["spec"]["type"] == auth["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in store["spec"]["ports"]} == {"grpc": 50061}
    assert {p["name"]: p["port"] for p in auth["spec"]["ports"]} == {"grpc": 50062, "admin": 8080}
    common = named(docs, "ConfigMap", "pm-postmesh-config")["data"]
    # Clients dial the headless Services: one DNS record per ready pod, balanced by round_robin
    # in the client (ADR 37); the ClusterIP Services stay for the admin API and for people.
    assert common["POSTMESH_STORE_ADDRESS"] == "dns:///pm-postmesh-store-headless:50061"
    assert common["POSTMESH_AUTH_ADDRESS"] == "dns:///pm-postmesh-auth-headless:50062"
    for name, port in (("store", 50061), ("auth", 50062)):
        headless = named(docs, "Service", f"pm-postmesh-{name}-headless")
        assert (headless["spec"]["type"], headless["spec"]["clusterIP"]) == ("ClusterIP", "None")
        assert (
            headless["spec"]["selector"]
            == named(docs, "Service", f"pm-postmesh-{name}")["spec"]["selector"]
        )
        assert headless["spec"]["ports"] == [
            {
                "name": "grpc",
                "port": port,
                "targetPort": "grpc",
                "protocol": "TCP",
                "appProtocol": "grpc",
            }
        ]
    for svc in of_kind(docs, "Service"):
        names = {p["name"] for p in svc["spec"]["ports"]}
        if svc["spec"]["type"] != "ClusterIP":
            assert "ops" not in names and "admin" not in names and "grpc" not in names


def test_autoscalers_and_disruption_budgets_target_real_workloads(docs: tuple[Doc, ...]) -> None:
    deps = {d["metadata"]["name"]: d for d in of_kind(docs, "Deployment")}
    # An HPA of the chart's, or KEDA's (delivery on its consumer lag, in production).
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in [*of_kind(docs, "HorizontalPodAutoscaler"), *of_kind(docs, "ScaledObject")]
    }
    assert scaled == {f"pm-postmesh-{c}" for c in ("smtp-edge", "imap-gw", "pop3-gw", "delivery")}
    for name, dep in deps.items():
        # An HPA owns the replica count; a fixed one would fight it on every upgrade.
        assert ("replicas" in dep["spec"]) == (name not in scaled)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert len(pdbs) == len(COMPONENTS)
    for pdb in pdbs:
        hits = [
            d
            for d in deps.values()
            if matches(
                pdb["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]
            )
        ]
        assert len(hits) == 1, pdb["metadata"]["name"]


def test_production_edges_get_tls_and_proxy_protocol() -> None:
    docs = render("-f", str(PRODUCTION))
    deps = deployments(docs)
    for name in EDGE_PORTS:
        env = env_of(docs, deps[name])
        volumes = {v["name"]: v for v in deps[name]["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in container(deps[name])["volumeMounts"]}
        assert volumes["tls"]["secret"]["secretName"] == "mail-example-com-tls"
        assert env["POSTMESH_TLS_CERT_FILE"] == mounts["tls"] + "/tls.crt"
        assert env["POSTMESH_TLS_KEY_FILE"] == mounts["tls"] + "/tls.key"
        assert env["POSTMESH_PROXY_PROTOCOL"] == ("true" if name == "smtp-edge" else "false")
        trusted = "10.0.0.0/8" if name == "smtp-edge" else ""
        assert env["POSTMESH_PROXY_TRUSTED_NETWORKS"] == trusted
    smtp = named(docs, "Service", "pm-postmesh-smtp-edge")
    assert (
        smtp["metadata"]["annotations"][
            "service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"
        ]
        == "*"
    )
    # Kafka and MongoDB come from the operators' resources (Kafka's TLS+SCRAM listener).
    common = named(docs, "ConfigMap", "pm-postmesh-config")["data"]
    assert common["POSTMESH_KAFKA_BOOTSTRAP_SERVERS"] == "pm-postmesh-kafka-kafka-bootstrap:9093"


def test_inline_tls_and_dkim_keys_become_secrets(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    none = serialization.NoEncryption()
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(pem, pkcs8, none))
    dkim = ed25519.Ed25519PrivateKey.generate().private_bytes(pem, pkcs8, none)
    (tmp_path / "dkim.pem").write_bytes(dkim)
    docs = render(
        "--set-file", f"tls.cert={tmp_path / 'cert.pem'}",
        "--set-file", f"tls.key={tmp_path / 'key.pem'}",
        "--set-file", f"delivery.dkim.keys.s1\\._domainkey\\.example\\.com\\.pem={tmp_path / 'dkim.pem'}",
    )  # fmt: skip
    tls = named(docs, "Secret", "pm-postmesh-tls")
    assert tls["type"] == "kubernetes.io/tls"
    assert set(tls["data"]) == {"tls.crt", "tls.key"}
    secret = named(docs, "Secret", "pm-postmesh-dkim")
    assert list(secret["data"]) == ["s1._domainkey.example.com.pem"]
    delivery = deployments(docs)["delivery"]
    volumes = {v["name"]: v for v in delivery["spec"]["template"]["spec"]["volumes"]}
    assert volumes["dkim"]["secret"]["secretName"] == "pm-postmesh-dkim"
    assert env_of(docs, delivery)["POSTMESH_DKIM_KEY_DIR"] == "/etc/postmesh/dkim"
    # Only the edges hold the TLS key.
    for name, dep in deployments(docs).items():
        has_tls = any(v["name"] == "tls" for v in dep["spec"]["template"]["spec"]["volumes"])
        assert has_tls == (name in EDGE_PORTS), name


# ---- network policies


def test_network_policies_limit_grpc_to_callers_and_ops_to_monitoring() -> None:
    docs = render("-f", str(PRODUCTION))
    deps = deployments(docs)
    policies = {component_of(p): p["spec"] for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == set(COMPONENTS)
    callers = {"smtp-edge", "imap-gw", "pop3-gw", "delivery"}
    for name, spec in policies.items():
        assert matches(
            spec["podSelector"]["matchLabels"], deps[name]["spec"]["template"]["metadata"]["labels"]
        )
        assert spec["policyTypes"] == ["Ingress"]
        by_port: dict[str, list[Doc]] = {}
        for rule in spec["ingress"]:
            for port in rule["ports"]:
                by_port.setdefault(port["port"], []).append(rule)
        assert [r["from"] for r in by_port["ops"]] == [
            [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        ]
        if name in EDGE_PORTS:
            for port_name, _, _ in EDGE_PORTS[name].values():
                assert [r.get("from") for r in by_port[port_name]] == [None], (name, port_name)
        if name in ("store", "auth"):
            (rule,) = by_port["grpc"]
            (peer,) = rule["from"]
            (expr,) = peer["podSelector"]["matchExpressions"]
            assert expr["key"] == "app.kubernetes.io/component"
            # auth sets quotas through store.SetQuota (grpc_security.POLICY).
            assert set(expr["values"]) == callers | ({"auth"} if name == "store" else set())
        if name == "auth":
            (rule,) = by_port["admin"]
            assert rule["from"] == [
                {"podSelector": {"matchLabels": {"postmesh.io/admin-client": "true"}}}
            ]
        expected = {"ops"} | {n for n, _, _ in EDGE_PORTS.get(name, {}).values()}
        expected |= {"grpc"} if name in ("store", "auth") else set()
        expected |= {"admin"} if name == "auth" else set()
        assert set(by_port) == expected, name


# ---- custom resources (no offline schema): required fields by hand


def test_service_monitor_selects_every_ops_service() -> None:
    docs = render("-f", str(PRODUCTION))
    (sm,) = of_kind(docs, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [
        s
        for s in of_kind(docs, "Service")
        if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert {component_of(s) for s in selected} == set(COMPONENTS)
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    for svc in selected:
        assert [p["name"] for p in svc["spec"]["ports"]] == [endpoint["port"]]
        assert svc["spec"]["type"] == "ClusterIP"
    assert sm["spec"]["jobLabel"] in selected[0]["metadata"]["labels"]


def defined_metrics() -> set[str]:
    """Metric names the services register (as Prometheus exposes them)."""
    names: set[str] = set()
    pattern = re.compile(r'(Counter|Gauge|Histogram)\(\s*"(postmesh_[a-z0-9_]+)"', re.S)
    for path in ROOT.glob("services/*/src/postmesh/**/*.py"):
        for kind, name in pattern.findall(path.read_text()):
            if kind == "Counter":
                names.add(name if name.endswith("_total") else name + "_total")
            elif kind == "Histogram":
                names |= {name + s for s in ("_bucket", "_count", "_sum")}
            else:
                names.add(name)
    return names


def used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bpostmesh_[a-z0-9_]+", text)) - {"postmesh_delivery"}


def test_prometheus_rules_are_well_formed_and_use_real_metrics() -> None:
    docs = render("-f", str(PRODUCTION))
    (rule,) = of_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    alerts: dict[str, list[Doc]] = {}
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations"}
            assert r["labels"]["severity"] in {"warning", "critical"}
            assert r["annotations"]["summary"] and r["annotations"]["description"]
            assert re.fullmatch(r"[0-9]+[smh]", r["for"])
            expr = r["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}")
            assert 'namespace="mail"' in expr
            alerts.setdefault(r["alert"], []).append(r)
    assert {
        "PostmeshServiceDown",
        "PostmeshReadinessFailing",
        "PostmeshDeliveryConsumerLag",
        "PostmeshHighBounceRate",
        "PostmeshGrpcErrors",
    } <= set(alerts)
    assert {r["labels"]["component"] for r in alerts["PostmeshServiceDown"]} == set(COMPONENTS)
    lag = alerts["PostmeshDeliveryConsumerLag"][0]["expr"]
    assert "postmesh_bus_consumer_lag_records" in lag and 'group="postmesh-delivery"' in lag
    text = json.dumps(rule["spec"])
    unknown = used_metrics(text) - defined_metrics()
    assert not unknown, f"alerts use metrics no service defines: {sorted(unknown)}"


DASHBOARDS = {
    # uid: metrics its panels must show
    "postmesh-overview": {
        "postmesh_grpc_server_handling_seconds_bucket",
        "postmesh_grpc_server_handling_seconds_count",
        "postmesh_delivery_recipients_total",
        "postmesh_smtp_edge_messages_accepted_total",
        "postmesh_imap_gw_sessions_active",
        "postmesh_pop3_gw_sessions_active",
        "postmesh_bus_handler_failures_total",
        "postmesh_auth_attempts_total",
        "postmesh_tls_certificate_expiry_timestamp_seconds",
    },
    "postmesh-smtp": {
        "postmesh_smtp_edge_sessions_total",
        "postmesh_smtp_edge_messages_rejected_total",
        "postmesh_smtp_edge_accept_latency_seconds_bucket",
    },
    "postmesh-imap": {"postmesh_imap_gw_commands_total", "postmesh_imap_gw_auth_total"},
    "postmesh-pop3": {"postmesh_pop3_gw_commands_total", "postmesh_pop3_gw_logins_total"},
    "postmesh-delivery": {
        "postmesh_delivery_latency_seconds_bucket",
        "postmesh_store_deferred_queue_depth",
        "postmesh_bus_consumer_lag_records",
        "postmesh_delivery_bounces_total",
    },
}


def test_dashboards_are_grafana_json_on_the_real_metrics() -> None:
    """An overview and one dashboard per protocol, each a ConfigMap for Grafana's sidecar."""
    docs = render("-f", str(PRODUCTION))
    maps = [
        d
        for d in of_kind(docs, "ConfigMap")
        if "grafana_dashboard" in d["metadata"].get("labels", {})
    ]
    boards: dict[str, Doc] = {}
    for cm in maps:
        assert cm["metadata"]["namespace"] == "monitoring"
        ((filename, body),) = cm["data"].items()
        assert filename.endswith(".json")
        board = json.loads(body)
        assert board["title"] and board["panels"]
        boards[board["uid"]] = board
    assert set(boards) == set(DASHBOARDS)
    for uid, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), uid
        exprs = " ".join(t["expr"] for p in board["panels"] for t in p.get("targets", []))
        missing = {m for m in DASHBOARDS[uid] if m not in exprs}
        assert not missing, f"{uid} lacks {sorted(missing)}"
        unknown = used_metrics(exprs) - defined_metrics()
        assert not unknown, f"{uid} panels use metrics no service defines: {sorted(unknown)}"


def test_strimzi_kafka_and_topics_are_complete() -> None:
    docs = render("-f", str(PRODUCTION))
    (kafka,) = of_kind(docs, "Kafka")
    (pool,) = of_kind(docs, "KafkaNodePool")
    cluster = kafka["metadata"]["name"]
    assert kafka["apiVersion"] == pool["apiVersion"] == "kafka.strimzi.io/v1"
    spec = kafka["spec"]["kafka"]
    assert spec["version"] and spec["listeners"]
    # Production: TLS and SCRAM-SHA-512 only, a KafkaUser for the services.
    (listener,) = spec["listeners"]
    assert (listener["name"], listener["port"], listener["type"]) == ("tls", 9093, "internal")
    assert listener["tls"] is True
    assert listener["authentication"] == {"type": "scram-sha-512"}
    assert {"topicOperator", "userOperator"} <= set(kafka["spec"]["entityOperator"])
    (user,) = of_kind(docs, "KafkaUser")
    assert user["apiVersion"] == kafka["apiVersion"]
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert user["spec"]["authentication"] == {"type": "scram-sha-512"}
    for name, dep in deployments(docs).items():
        env, files = env_of(docs, dep), mounted_files(dep)
        if name not in BUS_COMPONENTS:
            assert "POSTMESH_KAFKA_SECURITY_PROTOCOL" not in env, name
            continue
        assert env["POSTMESH_KAFKA_BOOTSTRAP_SERVERS"] == f"{cluster}-kafka-bootstrap:9093"
        assert env["POSTMESH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["POSTMESH_KAFKA_USERNAME"] == user["metadata"]["name"]
        assert files[env["POSTMESH_KAFKA_PASSWORD_FILE"]] == (user["metadata"]["name"], "password")
        assert files[env["POSTMESH_KAFKA_TLS_CA_FILE"]] == (f"{cluster}-cluster-ca-cert", "ca.crt")
    plain = render("--set", "kafka.strimzi.enabled=true")
    (plain_kafka,) = of_kind(plain, "Kafka")
    (listener,) = plain_kafka["spec"]["kafka"]["listeners"]
    assert (listener["name"], listener["port"], listener["tls"]) == ("plain", 9092, False)
    assert not of_kind(plain, "KafkaUser")
    assert spec["config"]["min.insync.replicas"] == 2
    assert kafka["spec"]["kafkaExporter"]["groupRegex"] == "postmesh-delivery"
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == cluster
    assert pool["spec"]["replicas"] == 3 and set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["storage"]["volumes"][0]["size"] == "200Gi"
    topics = of_kind(docs, "KafkaTopic")
    assert {t["spec"]["topicName"] for t in topics} == TOPICS
    for t in topics:
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == cluster
        assert t["spec"]["partitions"] == 24 and t["spec"]["replicas"] == 3
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", t["metadata"]["name"])


def test_mongodb_community_replica_set_is_complete() -> None:
    docs = render("-f", str(PRODUCTION))
    (mdb,) = of_kind(docs, "MongoDBCommunity")
    assert mdb["apiVersion"] == "mongodbcommunity.mongodb.com/v1"
    spec = mdb["spec"]
    assert spec["type"] == "ReplicaSet" and spec["members"] == 3
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", spec["version"])
    assert spec["security"]["authentication"]["modes"] == ["SCRAM"]
    (user,) = spec["users"]
    assert user["db"] == "admin"
    assert {"name": "readWrite", "db": "postmesh"} in user["roles"]
    password = named(docs, "Secret", user["passwordSecretRef"]["name"])
    assert password["data"]["password"]
    assert user["scramCredentialsSecretName"]
    # store and auth read the connection string the operator writes.
    for name in ("store", "auth"):
        (url,) = [
            v
            for v in container(deployments(docs)[name])["env"]
            if v["name"] == "POSTMESH_MONGODB_URL"
        ]
        ref = url["valueFrom"]["secretKeyRef"]
        assert ref == {
            "name": user["connectionStringSecretName"],
            "key": "connectionString.standard",
        }


# ---- images and generated files


def test_containerfiles_are_alike() -> None:
    """Six copies, identical except the service they build (docs/adr/0006)."""
    normalised = {}
    for name in COMPONENTS:
        text = (ROOT / "services" / name / "Containerfile").read_text()
        module = "postmesh." + name.replace("-", "_")
        assert f'CMD ["python", "-m", "{module}"]' in text
        assert f"ARG SERVICE={name}\n" in text
        assert "USER 10001:10001" in text
        for where in (
            f"postmesh {name} image",
            f"services/{name}/",
            f"postmesh/{name}:",
            f"={name}\n",
        ):
            text = text.replace(where, where.replace(name, "<service>"))
        normalised[name] = text.replace(module, "<module>")
    assert len(set(normalised.values())) == 1


def load_script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts/helm" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_schema_and_dashboard_are_fresh() -> None:
    schema = load_script("gen-values-schema")
    assert json.loads((CHART / "values.schema.json").read_text()) == schema.schema, (
        "run: uv run python scripts/helm/gen-values-schema.py"
    )
    dashboard = load_script("gen-dashboard")
    on_disk = {p.name: json.loads(p.read_text()) for p in dashboard.OUT_DIR.glob("*.json")}
    assert on_disk == dashboard.dashboards(), "run: uv run python scripts/helm/gen-dashboard.py"


# ---- internal gRPC mutual TLS (ADR 10)


def _secret_bytes(docs: tuple[Doc, ...], name: str, key: str) -> bytes:
    return base64.b64decode(named(docs, "Secret", name)["data"][key])


def test_generated_grpc_certificates_name_each_service_and_work(tmp_path: Path) -> None:
    docs = render()
    ca = x509.load_pem_x509_certificate(_secret_bytes(docs, "pm-postmesh-grpc-ca", "tls.crt"))
    deps = deployments(docs)
    for name in COMPONENTS:
        secret = f"pm-postmesh-grpc-{name}"
        cert = x509.load_pem_x509_certificate(_secret_bytes(docs, secret, "tls.crt"))
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert sans.get_values_for_type(x509.DNSName) == [f"{name}.postmesh.internal"]
        cert.verify_directly_issued_by(ca)
        assert _secret_bytes(docs, secret, "ca.crt") == _secret_bytes(
            docs, "pm-postmesh-grpc-ca", "tls.crt"
        )
        volumes = {v["name"]: v for v in deps[name]["spec"]["template"]["spec"]["volumes"]}
        assert volumes["grpc-tls"]["secret"]["secretName"] == secret
        mounts = {m["name"]: m["mountPath"] for m in container(deps[name])["volumeMounts"]}
        env = env_of(docs, deps[name])
        assert env["POSTMESH_GRPC_TLS_CERT_FILE"] == mounts["grpc-tls"] + "/tls.crt"
        assert env["POSTMESH_GRPC_TLS_CA_FILE"] == mounts["grpc-tls"] + "/ca.crt"
        assert "POSTMESH_GRPC_PLAINTEXT" not in env

    def security(name: str) -> GrpcSecurity:
        s = f"pm-postmesh-grpc-{name}"
        return GrpcSecurity(
            _secret_bytes(docs, s, "tls.crt"),
            _secret_bytes(docs, s, "tls.key"),
            _secret_bytes(docs, s, "ca.crt"),
        )

    async def call() -> bool:
        # The chart's own certificates in a real handshake: auth serving, imap-gw calling its
        # health service (open to every verified caller).
        server = GrpcServer("127.0.0.1:0", security("auth"))
        await server.start([])
        try:
            ch = channel(f"127.0.0.1:{server.port}", security("imap-gw"), "auth")
            serving = await is_serving(ch, timeout=10)
            await ch.close()
            return serving
        finally:
            await server.stop(0)

    assert asyncio.run(call())


def test_grpc_plaintext_and_cert_manager_modes() -> None:
    docs = render("--set", "grpcTls.mode=plaintext")
    assert not [d for d in of_kind(docs, "Secret") if "-grpc-" in d["metadata"]["name"]]
    for dep in deployments(docs).values():
        assert env_of(docs, dep)["POSTMESH_GRPC_PLAINTEXT"] == "true"
        assert all(v["name"] != "grpc-tls" for v in dep["spec"]["template"]["spec"]["volumes"])
    out = run_helm("template", "pm", str(CHART), "--set", "grpcTls.mode=certManager")
    assert out.returncode != 0 and "grpcTls.certManager.issuerRef.name is required" in out.stderr
    docs = render(
        "--set", "grpcTls.mode=certManager", "--set", "grpcTls.certManager.issuerRef.name=ca",
    )  # fmt: skip
    certs = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "Certificate")}
    assert set(certs) == {f"pm-postmesh-grpc-{n}" for n in COMPONENTS}
    for name in COMPONENTS:
        spec = certs[f"pm-postmesh-grpc-{name}"]
        assert spec["dnsNames"] == [f"{name}.postmesh.internal"]
        assert set(spec["usages"]) == {"server auth", "client auth"}
        assert spec["secretName"] == f"pm-postmesh-grpc-{name}"


# ---- Kafka and MongoDB credentials and TLS (managed services)


@pytest.mark.parametrize("k8s", K8S_VERSIONS)
def test_managed_backends_render_validates(k8s: str) -> None:
    assert run_helm("lint", "--strict", str(CHART), "-f", str(MANAGED)).returncode == 0
    for d in render("-f", str(MANAGED)):
        if d["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(d, k8s, strict=True)


def test_kafka_sasl_ssl_and_mongodb_tls_come_from_existing_secrets_as_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postmesh.common.bus.kafka_security import KafkaSecurity
    from postmesh.common.mongo import MongoSettings

    docs = render("-f", str(MANAGED))
    # The chart holds no credential of its own for these: no Secret of theirs is rendered.
    assert not [d for d in of_kind(docs, "Secret") if "mongodb" in d["metadata"]["name"]]
    expected_files = {
        "POSTMESH_KAFKA_PASSWORD_FILE": ("postmesh-kafka-credentials", "password"),
        "POSTMESH_KAFKA_TLS_CA_FILE": ("postmesh-kafka-ca", "ca.crt"),
        "POSTMESH_MONGODB_TLS_CA_FILE": ("postmesh-mongodb-ca", "ca.pem"),
    }
    for name, dep in deployments(docs).items():
        env = env_of(docs, dep)
        files = mounted_files(dep)
        if name in BUS_COMPONENTS:
            assert env["POSTMESH_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
            assert env["POSTMESH_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
            assert env["POSTMESH_KAFKA_USERNAME"] == "postmesh"
        else:  # pop3-gw and auth never talk to Kafka: no credential of it in their pods
            assert not {k for k in env if k.startswith("POSTMESH_KAFKA_")} - {
                "POSTMESH_KAFKA_BOOTSTRAP_SERVERS",  # the shared ConfigMap's: no credentials
                "POSTMESH_KAFKA_TOPIC_PREFIX",
            }, name
            assert not [f for f, (s, _) in files.items() if "kafka" in s], name
        if name in ("store", "auth"):
            assert env["POSTMESH_MONGODB_URL"] == "<secret postmesh-mongodb-url>"
        else:
            assert "POSTMESH_MONGODB_TLS_CA_FILE" not in env, name
        # Every *_FILE setting names a file that a volume of the right Secret key provides.
        for var, (secret, key) in expected_files.items():
            if var in env:
                assert files.get(env[var]) == (secret, key), (name, var, files)
        # No password in any env value (only in mounted files).
        for var in container(dep).get("env", []):
            assert "value" not in var, (name, var)

        # The service accepts the rendered settings, the mounted files put in a temp dir.
        local = {}
        for var, value in env.items():
            if value in files:
                path = tmp_path / name / value.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("ca or password\n")
                value = str(path)
            local[var] = value
        settings = load_settings(name, local, monkeypatch)
        if name in BUS_COMPONENTS:
            sec = KafkaSecurity.from_settings(settings)
            assert (sec.protocol, sec.username, sec.sasl, sec.tls) == (
                "SASL_SSL", "postmesh", True, True
            )  # fmt: skip
            assert sec.password_file is not None and sec.ca_file is not None
        if name in ("store", "auth"):
            assert isinstance(settings, MongoSettings)
            assert settings.mongodb_tls_ca_file is not None


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("kafka.securityProtocol=SASL_SSL",), "kafka.sasl.username is required"),
        (
            ("kafka.securityProtocol=SASL_SSL", "kafka.sasl.username=pm"),
            "kafka.sasl.passwordSecret.name is required",
        ),
        (("kafka.securityProtocol=SASL",), "securityProtocol"),
        (
            ("kafka.strimzi.enabled=true", "kafka.securityProtocol=SSL"),
            "applies to an external Kafka",
        ),
        (("kafka.sasl.mechanism=GSSAPI",), "mechanism"),
    ],
)
def test_incomplete_kafka_security_fails_with_a_message(
    sets: tuple[str, ...], message: str
) -> None:
    args = [a for s in sets for a in ("--set", s)]
    out = run_helm("template", "pm", str(CHART), *args)
    assert out.returncode != 0
    assert message in out.stderr


# ---- scaling and shutdown (issue 12 item 2)


def test_prestop_sleep_precedes_sigterm_within_the_grace_period(docs: tuple[Doc, ...]) -> None:
    for d in of_kind(docs, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep" and int(command[1]) > 0
        assert int(command[1]) < pod["terminationGracePeriodSeconds"]
    off = render("--set", "podDefaults.preStopSleepSeconds=0")
    assert all("lifecycle" not in d["spec"]["template"]["spec"]["containers"][0]
               for d in of_kind(off, "Deployment"))  # fmt: skip


def test_keda_scales_delivery_on_its_consumer_lag_instead_of_the_cpu_hpa() -> None:
    docs = render("-f", str(PRODUCTION))
    scaled = named(docs, "ScaledObject", "pm-postmesh-delivery")
    assert (
        scaled["spec"]["scaleTargetRef"]["name"]
        == named(docs, "Deployment", "pm-postmesh-delivery")["metadata"]["name"]
    )
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert (meta["topic"], meta["consumerGroup"]) == ("postmesh.inbound", "postmesh-delivery")
    config = named(docs, "ConfigMap", "pm-postmesh-config")["data"]
    assert meta["bootstrapServers"] == config["POSTMESH_KAFKA_BOOTSTRAP_SERVERS"]
    assert scaled["spec"]["maxReplicaCount"] == 24
    hpas = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(docs, "HorizontalPodAutoscaler")}
    assert "pm-postmesh-delivery" not in hpas and "pm-postmesh-smtp-edge" in hpas
    delivery = named(docs, "Deployment", "pm-postmesh-delivery")
    assert "replicas" not in delivery["spec"]  # KEDA's autoscaler owns the count
    alone = render(
        "--set", "delivery.keda.enabled=true", "--set", "delivery.autoscaling.enabled=false"
    )
    assert "replicas" not in named(alone, "Deployment", "pm-postmesh-delivery")["spec"]
    # Without KEDA, delivery keeps its CPU autoscaler.
    plain = {
        d["spec"]["scaleTargetRef"]["name"] for d in of_kind(render(), "HorizontalPodAutoscaler")
    }
    assert "pm-postmesh-delivery" in plain
    assert not of_kind(render(), "ScaledObject")


def test_keda_reaches_a_sasl_ssl_kafka_with_the_services_secrets() -> None:
    docs = render(
        "-f", str(MANAGED), "--set", "delivery.keda.enabled=true",
    )  # fmt: skip
    auth = named(docs, "TriggerAuthentication", "pm-postmesh-delivery-kafka")
    refs = {r["parameter"]: (r["name"], r["key"]) for r in auth["spec"]["secretTargetRef"]}
    deployment = named(docs, "Deployment", "pm-postmesh-delivery")
    mounted = {
        v["secret"]["secretName"]: [i["key"] for i in v["secret"].get("items", [])]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "secret" in v
    }
    assert refs["password"][0] in mounted and refs["password"][1] in mounted[refs["password"][0]]
    settings = named(docs, "Secret", "pm-postmesh-delivery-keda-kafka")["stringData"]
    assert settings["tls"] == "enable"
    assert settings["sasl"] in ("scram_sha512", "scram_sha256", "plaintext")
    assert settings["username"]
    scaled = named(docs, "ScaledObject", "pm-postmesh-delivery")
    assert scaled["spec"]["triggers"][0]["authenticationRef"]["name"] == auth["metadata"]["name"]


def test_edges_may_scale_on_open_sessions() -> None:
    docs = render("-f", str(PRODUCTION))
    hpa = named(docs, "HorizontalPodAutoscaler", "pm-postmesh-imap-gw")
    pods = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods[0]["pods"]["metric"]["name"] == "postmesh_imap_gw_sessions_active"
    assert pods[0]["pods"]["target"] == {"type": "AverageValue", "averageValue": "2000"}
    for name in ("smtp-edge", "pop3-gw"):  # not asked for there
        other = named(docs, "HorizontalPodAutoscaler", f"pm-postmesh-{name}")
        assert [m["type"] for m in other["spec"]["metrics"]] == ["Resource"]
    out = run_helm(
        "template", "pm", str(CHART), "--set", "delivery.autoscaling.activeSessions.enabled=true",
        "--set", "delivery.autoscaling.activeSessions.averageValue=5",
    )  # fmt: skip
    assert out.returncode != 0 and "edges only" in out.stderr


def test_notes_tell_the_first_domain_user_and_dns_records(tmp_path: Path) -> None:
    """`helm template` does not render NOTES.txt, so a copy of the chart renders it through
    tpl inside a ConfigMap."""
    chart = tmp_path / "postmesh"
    shutil.copytree(CHART, chart)
    (chart / "notes.txt").write_text((CHART / "templates/NOTES.txt").read_text())
    (chart / "templates/notes-check.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: notes}\ndata:\n  notes: |\n"
        '    {{- tpl (.Files.Get "notes.txt") . | nindent 4 }}\n'
    )
    out = run_helm(
        "template", "pm", str(chart), "-f", str(PRODUCTION), "--show-only",
        "templates/notes-check.yaml",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    notes = yaml.safe_load(out.stdout)["data"]["notes"]
    for wanted in (
        "postmesh domains create", "postmesh users create", "postmesh dkim dns-records",
        "/api/v1/domains/example.org/dns-records", "MX at mail.example.com",
        "ScaledObject pm-postmesh-delivery",
    ):  # fmt: skip
        assert wanted in notes, wanted


def test_edge_certificate_from_cert_manager() -> None:
    docs = render(
        "--set", "tls.certManager.enabled=true", "--set", "tls.certManager.issuerRef.name=acme",
        "--set", "tls.certManager.dnsNames={imap.example.com,smtp.example.com}",
    )  # fmt: skip
    cert = named(docs, "Certificate", "pm-postmesh-tls")
    hostname = named(docs, "ConfigMap", "pm-postmesh-config")["data"]["POSTMESH_HOSTNAME"]
    assert cert["spec"]["dnsNames"] == [hostname, "imap.example.com", "smtp.example.com"]
    assert cert["spec"]["issuerRef"] == {
        "name": "acme", "kind": "ClusterIssuer", "group": "cert-manager.io",
    }  # fmt: skip
    for edge in ("smtp-edge", "imap-gw", "pop3-gw"):
        volumes = named(docs, "Deployment", f"pm-postmesh-{edge}")["spec"]["template"]["spec"][
            "volumes"
        ]
        (tls,) = [v for v in volumes if v["name"] == "tls"]
        assert tls["secret"]["secretName"] == cert["spec"]["secretName"]
    assert not [d for d in of_kind(docs, "Secret") if d["metadata"]["name"] == "pm-postmesh-tls"]
    missing = run_helm("template", "pm", str(CHART), "--set", "tls.certManager.enabled=true")
    assert missing.returncode != 0 and "issuerRef.name is required" in missing.stderr


def test_kafka_topic_prefix_reaches_services_topics_scaler_and_alerts() -> None:
    docs = render("-f", str(PRODUCTION), "--set", "kafka.topicPrefix=tenant-a.")
    config = named(docs, "ConfigMap", "pm-postmesh-config")["data"]
    assert config["POSTMESH_KAFKA_TOPIC_PREFIX"] == "tenant-a."
    assert {t["spec"]["topicName"] for t in of_kind(docs, "KafkaTopic")} == {
        "tenant-a." + t for t in TOPICS
    }
    (trigger,) = named(docs, "ScaledObject", "pm-postmesh-delivery")["spec"]["triggers"]
    assert trigger["metadata"]["topic"] == "tenant-a.postmesh.inbound"
    (kafka,) = of_kind(docs, "Kafka")
    regex = kafka["spec"]["kafkaExporter"]["topicRegex"]
    assert re.fullmatch(regex, "tenant-a.postmesh.inbound")
    assert not re.fullmatch(regex, "postmesh.inbound")
    (rule,) = of_kind(docs, "PrometheusRule")
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    assert any('topic="tenant-a.postmesh.inbound"' in e for e in exprs)
    # Unset: the names the services use by default.
    plain = named(render(), "ConfigMap", "pm-postmesh-config")["data"]
    assert plain["POSTMESH_KAFKA_TOPIC_PREFIX"] == ""


def test_auth_and_delivery_share_the_admin_token_the_cli_reads() -> None:
    """The queue admin API (delivery) and the admin API (auth) take one token (ADR 26); without
    it delivery would make a random one of its own in its emptyDir, and `kubectl exec ...
    postmesh queue list` could not authenticate."""
    docs = render()
    deps = deployments(docs)
    ref = "<secret pm-postmesh-admin-token>"
    assert env_of(docs, deps["auth"])["POSTMESH_ADMIN_TOKEN"] == ref
    assert env_of(docs, deps["delivery"])["POSTMESH_ADMIN_TOKEN"] == ref
    assert "POSTMESH_MONGODB_URL" not in env_of(docs, deps["delivery"])
    assert "POSTMESH_ADMIN_TOKEN" not in env_of(docs, deps["store"])
    assert "POSTMESH_MONGODB_URL" in env_of(docs, deps["store"])
