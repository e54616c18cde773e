"""Container smoke test: the six images, built from Debian with podman, run as the Helm chart
renders them (`podman kube play`) beside a real Kafka and FerretDB, and one message goes in over
SMTP and out over IMAP and POP3 through the containers.

No registry is reachable: scripts/containers/build-images.sh makes the base image from a
debootstrap'd Debian root (cached) and builds the images (podman's layer cache keeps reruns
short). Never skipped: if podman cannot run, the test fails with the reason.

podman is not Kubernetes; only the test's rendered copy is adapted (see `adapt_for_podman`, and
docs/adr/0034-podman-kube-play-smoke-test.md):
- Services do not exist in podman: each Deployment is played on its own with a network alias per
  Service that selects it, so `<release>-postmesh-store:50061` resolves as in the cluster (the
  test checks that those Services' ports equal their target ports, which an alias needs).
- containerPorts are dropped: podman 4.3 publishes every containerPort on the host, once per
  replica (upstream bug #16765). The ports the test talks to are published on 127.0.0.1 only.
- Probes are dropped: kube play ignores readiness probes and turns liveness probes into
  healthchecks that run curl (not in the images) through systemd timers (none here). The test
  polls each pod's /readyz itself, the endpoint the readiness probe uses.
- Secret volumes become ConfigMap volumes with the same files: podman 4.3.1 crashes on a
  Deployment's Secret volume (nil pointer in VolumeFromSecret). Secrets still feed env variables.
- Secrets are created with `podman secret create` as JSON {key: base64 value}, not played:
  podman 4.3.1 stores a played Secret as YAML, but its secretKeyRef env reads that JSON form.
- Only ConfigMaps and Deployments are played; ServiceAccount, HPA and PDB have no podman
  equivalent.
Through values, not edits: one replica per component (six pods on a shared 2-core machine), and
POSTMESH_DNS_SERVERS at a closed port, so no lookup leaves the machine via podman's DNS forwarder.
Kafka and FerretDB listen on 127.0.0.1; the pods reach them through relays on the podman
network's gateway address (a host-internal bridge), with Kafka advertising that address on a
listener of its own.
"""

from __future__ import annotations

import base64
import copy
import imaplib
import json
import poplib
import secrets
import smtplib
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.infra import FerretDB
from tests.integration.infra.kafka import POSTMESH_TOPICS, KafkaBroker
from tests.integration.infra.ports import free_port
from tests.integration.infra.relay import TcpRelay
from tests.integration.stack import wait_for
from tests.integration.test_mail_end_to_end import insecure_tls, sample_message, trace_and_original

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy/helm/postmesh"
IMAGE_TAG = "test"
Doc = dict[str, Any]

# Where each published port of the test lives: component -> container port name.
PUBLISHED = {
    "smtp-edge": ("submission",),
    "imap-gw": ("imap",),
    "pop3-gw": ("pop3",),
    "auth": ("admin",),
}


_capture: list[Any] = []  # pytest's capture manager, set by the `progress_to_terminal` fixture


@pytest.fixture(scope="module", autouse=True)
def progress_to_terminal(pytestconfig: pytest.Config) -> None:
    _capture[:] = [pytestconfig.pluginmanager.getplugin("capturemanager")]


def progress(msg: str) -> None:
    """Progress on the terminal even under pytest's capture (a cold run builds images)."""
    line = f"[containers] {time.strftime('%H:%M:%S')} {msg}"
    if _capture and _capture[0] is not None:
        with _capture[0].global_and_fixture_disabled():
            print(line, file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def podman(*args: str, timeout: float = 120, check: bool = True) -> str:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc.stdout


def build_images() -> None:
    """Tools (podman, runc, debootstrap...), then the base and the six images. Fails the test
    with the scripts' own message when podman cannot run here."""
    for script in ("scripts/ensure-tools.sh", "scripts/containers/build-images.sh"):
        progress(f"{script} (a first run on a fresh machine takes minutes)")
        with subprocess.Popen(
            ["bash", str(ROOT / script)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        ) as proc:
            assert proc.stderr is not None
            tail: list[str] = []
            for line in proc.stderr:  # the scripts' progress, as it comes
                progress(f"  {line.rstrip()}")
                tail = [*tail[-40:], line]
            code = proc.wait(timeout=3600)
        assert code == 0, f"{script} failed ({code}):\n{''.join(tail)}"


# ---- rendering and adapting the chart -------------------------------------------------------


def render(release: str, values: dict[str, Any], tmp: Path) -> list[Doc]:
    helm = subprocess.run(
        ["bash", str(ROOT / "scripts/helm/ensure-helm.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    ).stdout.strip()
    values_file = tmp / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    out = subprocess.run(
        [helm, "template", release, str(CHART), "-f", str(values_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def component_of(d: Doc) -> str:
    labels = d["metadata"].get("labels", {})
    return str(labels.get("app.kubernetes.io/component", ""))


@dataclass
class Play:
    """One Deployment as podman plays it: its YAML (with the ConfigMaps it uses) and
    the network aliases standing in for the Services that select it."""

    component: str
    docs: list[Doc]
    aliases: list[str]
    published: dict[str, int] = field(default_factory=dict)  # port name -> 127.0.0.1 port


def _port_number(container: Doc, target: int | str) -> int:
    if isinstance(target, int):
        return target
    for p in container.get("ports", []):
        if p.get("name") == target:
            return int(p["containerPort"])
    raise AssertionError(f"no container port named {target!r} in {container['name']}")


def adapt_for_podman(docs: list[Doc]) -> list[Play]:
    """The rendered manifests as `podman kube play` can run them (module docstring: what is
    changed and why). The input is left as rendered."""
    deployments = [d for d in docs if d["kind"] == "Deployment"]
    services = [d for d in docs if d["kind"] == "Service"]
    configs = [d for d in docs if d["kind"] in ("ConfigMap", "Secret")]
    played = {"Deployment", "Service", "ConfigMap", "Secret"}
    # Nothing else may carry behaviour the smoke test would silently lose.
    assert {d["kind"] for d in docs} - played <= {
        "ServiceAccount",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }, {d["kind"] for d in docs}
    plays = []
    for dep in deployments:
        dep = copy.deepcopy(dep)
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        [container] = pod["spec"]["containers"]
        aliases = []
        for svc in services:
            selector = svc["spec"].get("selector", {})
            if not all(labels.get(k) == v for k, v in selector.items()):
                continue
            aliases.append(svc["metadata"]["name"])
            if svc["spec"].get("type", "ClusterIP") == "ClusterIP":
                # Other pods call ClusterIP Services by name and port: an alias keeps the name
                # only, so the port must be the container's.
                for p in svc["spec"]["ports"]:
                    assert _port_number(container, p.get("targetPort", p["port"])) == p["port"], (
                        svc["metadata"]["name"],
                        p,
                    )
        component = component_of(dep)
        play = Play(component, [], aliases)
        ports = []
        for name in PUBLISHED.get(component, ()):
            host_port = free_port()
            play.published[name] = host_port
            ports.append(
                {
                    "name": name,
                    "containerPort": _port_number(container, name),
                    "hostPort": host_port,
                    "hostIP": "127.0.0.1",
                }
            )
        container["ports"] = ports
        container.pop("livenessProbe", None)
        container.pop("readinessProbe", None)
        used = _referenced(pod["spec"])
        play.docs = [
            d
            for d in configs
            if d["kind"] == "ConfigMap" and ("ConfigMap", d["metadata"]["name"]) in used
        ]
        play.docs += [*_secret_volumes_as_config_maps(pod["spec"], configs), dep]
        plays.append(play)
    return plays


def _secret_volumes_as_config_maps(pod_spec: Doc, configs: list[Doc]) -> list[Doc]:
    """podman 4.3.1 crashes on a Deployment's Secret volume (nil pointer in VolumeFromSecret):
    each becomes a ConfigMap volume with the same files and mode. The Secrets themselves stay
    in the play for environment variables (secretKeyRef), which work."""
    secrets_by_name = {d["metadata"]["name"]: d for d in configs if d["kind"] == "Secret"}
    made = []
    for vol in pod_spec.get("volumes", []):
        source = vol.pop("secret", None)
        if source is None:
            continue
        secret = secrets_by_name[source["secretName"]]
        name = f"{source['secretName']}-files"
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        data.update(secret.get("stringData", {}))
        made.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}
        )
        vol["configMap"] = {"name": name, **{k: v for k, v in source.items() if k != "secretName"}}
    return made


def _secret_data(secret: Doc) -> dict[str, str]:
    """A Secret's keys and base64 values (stringData encoded), as podman reads secretKeyRefs."""
    data = dict(secret.get("data", {}))
    for key, value in secret.get("stringData", {}).items():
        data[key] = base64.b64encode(value.encode()).decode()
    return data


def _referenced(pod_spec: Doc) -> set[tuple[str, str]]:
    """(kind, name) of the ConfigMaps and Secrets a pod spec reads."""
    found: set[tuple[str, str]] = set()
    for vol in pod_spec.get("volumes", []):
        if "secret" in vol:
            found.add(("Secret", vol["secret"]["secretName"]))
        if "configMap" in vol:
            found.add(("ConfigMap", vol["configMap"]["name"]))
    for c in pod_spec["containers"]:
        for src in c.get("envFrom", []):
            if "configMapRef" in src:
                found.add(("ConfigMap", src["configMapRef"]["name"]))
            if "secretRef" in src:
                found.add(("Secret", src["secretRef"]["name"]))
        for env in c.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                found.add(("Secret", ref["secretKeyRef"]["name"]))
            if "configMapKeyRef" in ref:
                found.add(("ConfigMap", ref["configMapKeyRef"]["name"]))
    return found


# ---- the environment: network, Kafka and FerretDB reachable from the pods --------------------


class PodKafka(KafkaBroker):
    """A broker with a second listener (127.0.0.1:pods_port) that advertises the relay's address,
    so clients in the pods are sent back to the relay, not to their own 127.0.0.1."""

    def __init__(self, pods_port: int, advertised: str) -> None:
        super().__init__()
        self._pods_port = pods_port
        self._advertised = advertised

    def _properties(self) -> dict[str, str]:
        props = super()._properties()
        props["listeners"] += f",PODS://127.0.0.1:{self._pods_port}"
        props["advertised.listeners"] += f",PODS://{self._advertised}"
        props["listener.security.protocol.map"] += ",PODS:PLAINTEXT"
        return props


@dataclass
class Network:
    name: str
    gateway: str


@pytest.fixture(scope="module")
def images() -> None:
    build_images()


@pytest.fixture(scope="module")
def network(images: None) -> Iterator[Network]:
    name = f"postmesh-smoke-{uuid.uuid4().hex[:8]}"
    podman("network", "create", name)
    try:
        info = json.loads(podman("network", "inspect", name))[0]
        yield Network(name, info["subnets"][0]["gateway"])
    finally:
        podman("network", "rm", "-f", name, check=False)


@pytest.fixture(scope="module")
def pod_kafka(network: Network) -> Iterator[str]:
    """Kafka for the pods: its bootstrap address as seen from inside them."""
    pods_port = free_port()
    with TcpRelay((network.gateway, 0), ("127.0.0.1", pods_port)) as relay:
        advertised = f"{network.gateway}:{relay.port}"
        with PodKafka(pods_port, advertised) as broker:
            broker.create_topics(POSTMESH_TOPICS)
            yield advertised


@pytest.fixture(scope="module")
def pod_mongodb(network: Network, ferretdb: FerretDB) -> Iterator[str]:
    """FerretDB's URL as seen from inside the pods."""
    with TcpRelay((network.gateway, 0), ("127.0.0.1", ferretdb.port)) as relay:
        yield f"mongodb://{network.gateway}:{relay.port}/"


@dataclass
class Running:
    plays: dict[str, Play]
    admin_token: str


def values(release: str, kafka: str, mongodb: str, admin_token: str) -> dict[str, Any]:
    one = {"replicas": 1, "autoscaling": {"enabled": False}}
    return {
        "image": {"repository": "localhost/postmesh", "tag": IMAGE_TAG},
        "config": {
            "hostname": "mail.smoke.test",
            "env": {
                # No resolver answers inside the pods: a mail DNS lookup fails at once instead
                # of leaving the machine through podman's DNS forwarder (the test needs none).
                "POSTMESH_DNS_SERVERS": "127.0.0.1:53",
            },
        },
        "kafka": {"bootstrapServers": kafka},
        "mongodb": {"url": mongodb, "database": f"pm_{release}"},
        "auth": {**one, "adminToken": {"value": admin_token}},
        # One replica each: 6 pods on a shared 2-core machine (two would show nothing more
        # here: kube play ignores Services, so there is no load balancing to test).
        **{c: one for c in ("smtpEdge", "imapGw", "pop3Gw", "delivery", "store")},
    }


def ops_port(play: Play) -> int:
    dep = play.docs[-1]
    for cm in play.docs:
        if cm["kind"] == "ConfigMap" and "POSTMESH_OPS_PORT" in cm.get("data", {}):
            return int(cm["data"]["POSTMESH_OPS_PORT"])
    raise AssertionError(f"no POSTMESH_OPS_PORT for {dep['metadata']['name']}")


def pod_container(play: Play) -> str:
    """The name of the (only) service container of the play's pod."""
    name = play.docs[-1]["metadata"]["name"]
    out = podman("ps", "-a", "--filter", f"pod={name}-pod-0", "--format", "{{.Names}}")
    names = [n for n in out.split() if not n.endswith("-infra")]
    assert len(names) == 1, (name, out)
    return names[0]


def readyz(container: str, port: int) -> int | None:
    """/readyz from inside the container (the readiness probe's request); None until 200."""
    code = (
        "import urllib.request as u,sys\n"
        f"try: print(u.urlopen('http://127.0.0.1:{port}/readyz', timeout=3).status)\n"
        "except Exception as e: print(getattr(e, 'code', 0))"
    )
    restarts = podman("inspect", "--format", "{{.RestartCount}}", container).strip()
    # A crashing service restarts for ever (restartPolicy Always): fail now, with its logs.
    assert restarts == "0", f"{container} restarted {restarts} times"
    out = podman("exec", container, "python", "-c", code, check=False).strip()
    return 200 if out == "200" else None


@pytest.fixture(scope="module")
def running(
    tmp_path_factory: pytest.TempPathFactory,
    network: Network,
    pod_kafka: str,
    pod_mongodb: str,
) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("containers")
    release = f"smoke{uuid.uuid4().hex[:6]}"
    token = secrets.token_urlsafe(24)
    docs = render(release, values(release, pod_kafka, pod_mongodb, token), tmp)
    plays = {p.component: p for p in adapt_for_podman(docs)}
    files: list[Path] = []
    made_secrets: list[str] = []
    try:
        for d in docs:
            if d["kind"] == "Secret":
                name = d["metadata"]["name"]
                subprocess.run(
                    ["podman", "secret", "create", name, "-"],
                    input=json.dumps(_secret_data(d)),
                    text=True,
                    capture_output=True,
                    check=True,
                )
                made_secrets.append(name)
        # Store and auth first: the edges and delivery call them at start.
        order = sorted(plays, key=lambda c: c not in ("store", "auth"))
        for component in order:
            play = plays[component]
            path = tmp / f"{component}.yaml"
            path.write_text(yaml.safe_dump_all(play.docs))
            files.append(path)
            net = f"{network.name}:" + ",".join(f"alias={a}" for a in play.aliases)
            progress(f"kube play {component} (aliases {', '.join(play.aliases)})")
            podman("kube", "play", "--network", net, str(path), timeout=300)
        containers = {c: pod_container(p) for c, p in plays.items()}
        for component, play in plays.items():
            container, port = containers[component], ops_port(play)
            wait_for(
                lambda: readyz(container, port),  # noqa: B023 (called before the next loop)
                timeout=180,
                what=f"{component} /readyz",
            )
            progress(f"{component} ready")
        yield Running(plays, token)
    except BaseException:
        for c in _safe_containers(plays):
            logs = subprocess.run(
                ["podman", "logs", "--tail", "60", c],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # the services log on stderr too
                text=True,
                timeout=60,
            ).stdout
            print(f"----- {c} logs -----\n{logs}")
        raise
    finally:
        # All at once: each waits a few seconds for its service to stop on SIGTERM.
        progress(f"kube down {', '.join(p.stem for p in files)}")
        downs = [
            subprocess.Popen(["podman", "kube", "down", str(path)], stdout=subprocess.DEVNULL)
            for path in files
        ]
        for proc in downs:
            proc.wait(timeout=180)
        progress("pods removed")
        for name in made_secrets:
            podman("secret", "rm", name, check=False)


def _safe_containers(plays: dict[str, Play]) -> list[str]:
    out = []
    for play in plays.values():
        try:
            out.append(pod_container(play))
        except AssertionError:
            pass
    return out


# ---- the test -------------------------------------------------------------------------------


def admin_post(port: int, token: str, path: str, body: dict[str, str]) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201


def imap_messages(port: int, user: str, password: str) -> list[bytes] | None:
    with imaplib.IMAP4("127.0.0.1", port, timeout=30) as imap:
        imap.starttls(insecure_tls())
        imap.login(user, password)
        typ, data = imap.select("INBOX", readonly=True)
        assert typ == "OK"
        if int(data[0] or 0) == 0:
            return None
        typ, fetched = imap.fetch("1:*", "(BODY.PEEK[])")
        assert typ == "OK"
        return [item[1] for item in fetched if isinstance(item, tuple)]


def pop3_messages(port: int, user: str, password: str) -> list[bytes]:
    pop = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        pop.stls(insecure_tls())
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        # RETR's lines come back without CRLFs and with dot-stuffing undone (RFC 1939 s3).
        return [b"\r\n".join(pop.retr(i)[1]) + b"\r\n" for i in range(1, count + 1)]
    finally:
        pop.quit()


def test_one_message_through_the_containers(running: Running) -> None:
    plays = running.plays
    user, password = "alice@smoke.test", "correct horse battery"
    admin = plays["auth"].published["admin"]
    # The postmesh CLI in the auth image, with the token the pod already has (as an operator
    # runs `kubectl exec deploy/<release>-postmesh-auth -- postmesh domains create ...`).
    made = podman("exec", pod_container(plays["auth"]), "postmesh", "domains", "create",
                  "smoke.test", "--json")  # fmt: skip
    assert json.loads(made)["name"] == "smoke.test", made
    admin_post(admin, running.admin_token, "/api/v1/users", {"address": user, "password": password})

    marker = uuid.uuid4().hex
    message = sample_message(user, user, marker)
    with smtplib.SMTP("127.0.0.1", plays["smtp-edge"].published["submission"], timeout=60) as s:
        s.starttls(context=insecure_tls())
        s.login(user, password)
        assert s.sendmail(user, [user], message) == {}

    imap_port = plays["imap-gw"].published["imap"]
    [via_imap] = wait_for(
        lambda: imap_messages(imap_port, user, password), timeout=60, what="the message in IMAP"
    )
    trace_and_original(via_imap, message)
    [via_pop3] = pop3_messages(plays["pop3-gw"].published["pop3"], user, password)
    assert via_pop3 == via_imap
    # delivery's queue admin API takes the same admin token, and its image has the CLI too.
    queue = podman("exec", pod_container(plays["delivery"]), "postmesh", "queue", "list", "--json")
    assert json.loads(queue) == [], queue  # delivered locally: nothing deferred
    progress(f"message {marker} sent over SMTP, read back over IMAP and POP3")


def test_adaptation_keeps_what_the_pods_need() -> None:
    """The adapted copy differs from the render only in what the module docstring lists."""
    docs: list[Doc] = [
        {
            "kind": "Deployment",
            "metadata": {
                "name": "r-postmesh-store",
                "labels": {"app.kubernetes.io/component": "store"},
            },
            "spec": {
                "template": {
                    "metadata": {"labels": {"c": "store"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "store",
                                "ports": [
                                    {"name": "grpc", "containerPort": 50061},
                                    {"name": "ops", "containerPort": 9105},
                                ],
                                "envFrom": [{"configMapRef": {"name": "cm"}}],
                                "readinessProbe": {"httpGet": {"port": "ops"}},
                                "livenessProbe": {"httpGet": {"port": "ops"}},
                            }
                        ],
                        "volumes": [
                            {"name": "t", "secret": {"secretName": "s", "defaultMode": 0o440}}
                        ],
                    },
                }
            },
        },
        {
            "kind": "Service",
            "metadata": {"name": "r-postmesh-store"},
            "spec": {"selector": {"c": "store"}, "ports": [{"port": 50061, "targetPort": "grpc"}]},
        },
        {"kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"POSTMESH_OPS_PORT": "9105"}},
        {"kind": "ConfigMap", "metadata": {"name": "other"}},
        {"kind": "Secret", "metadata": {"name": "s"}, "data": {"ca.crt": "UEVN"}},
    ]
    before = copy.deepcopy(docs)
    [play] = adapt_for_podman(docs)
    assert docs == before
    assert play.aliases == ["r-postmesh-store"]
    assert [d["metadata"]["name"] for d in play.docs] == ["cm", "s-files", "r-postmesh-store"]
    assert play.docs[1]["data"] == {"ca.crt": "PEM"}
    volumes = play.docs[-1]["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "t", "configMap": {"name": "s-files", "defaultMode": 0o440}}]
    [container] = play.docs[-1]["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == []
    assert "readinessProbe" not in container and "livenessProbe" not in container
    assert container["envFrom"] == [{"configMapRef": {"name": "cm"}}]
    # A ClusterIP Service whose port differs from the container's cannot be an alias.
    docs[1]["spec"]["ports"] = [{"port": 80, "targetPort": "grpc"}]
    with pytest.raises(AssertionError):
        adapt_for_podman(docs)
