"""The chart's monitoring against live metrics: a real Prometheus (Debian's) scrapes every
service of a running stack, and then

- every query of every Grafana dashboard in the chart returns at least one series, with a
  number in at least one of them (not only NaN);
- the chart's PrometheusRule, rendered for this namespace, loads into that Prometheus, every
  rule evaluates without error, and each alert's measure (its expression without the final
  threshold) is computed from live series, so no alert watches a metric or label that the
  services do not export.

What the Prometheus Operator would add from the chart's ServiceMonitor is configured here by
hand: one scrape job per service named after its app.kubernetes.io/component (the
ServiceMonitor's jobLabel), and the namespace and pod labels as static target labels.

Traffic is sent twice, a few scrapes apart, so that counters created by the first round have
a rate in the second (a labelled counter appears at its first increment): a message submitted
to a local mailbox, an over-quota one and a remote domain that does not exist (two bounces and
a remote attempt), a message to the MX and one refused there, reads over IMAP and POP3, and a
failed login on SMTP, IMAP and POP3.
"""

from __future__ import annotations

import asyncio
import functools
import imaplib
import json
import math
import poplib
import re
import smtplib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]

from postmesh.common.devstack import SERVICES, Stack
from tests.helm.test_chart import CHART, helm
from tests.integration.infra.prometheus import Prometheus, Target
from tests.integration.stack import wait_for
from tests.integration.test_bounces import set_quota
from tests.integration.test_mail_end_to_end import (
    create_user,
    imap_fetch_all,
    insecure_tls,
    pop3_retr_all,
    sample_message,
)

NAMESPACE = "postmesh-test"
# Grafana's $__rate_interval is at least four scrape intervals; one minute covers the test.
RATE_INTERVAL = "1m"
# Alerts whose measure cannot have series on a healthy test stack, and why.
NO_LIVE_MEASURE = {
    # absent(): empty exactly while every service is up (checked: the alert is inactive).
    "PostmeshServiceDown": "absent() is empty while the service is up",
    # kube-state-metrics runs only in Kubernetes.
    "PostmeshReadinessFailing": "kube_deployment_status_replicas_unavailable is Kubernetes'",
    # The counters appear at a first failure; a healthy stack has none.
    "PostmeshBusHandlerFailures": "no bus handler has failed",
    "PostmeshGrpcErrors": "no call has ended with a server-side error code",
}


def render_chart(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm(), "template", "pm", str(CHART), "--namespace", NAMESPACE, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def chart_rules() -> dict[str, Any]:
    (rule,) = [
        d
        for d in render_chart("--set", "prometheusRule.enabled=true")
        if d["kind"] == "PrometheusRule"
    ]
    return {"groups": rule["spec"]["groups"]}


def chart_dashboards() -> dict[str, dict[str, Any]]:
    boards = {}
    for d in render_chart("--set", "dashboards.enabled=true"):
        if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"].get("labels", {}):
            for name, body in d["data"].items():
                boards[name] = json.loads(body)
    return boards


def concrete(expr: str, board: dict[str, Any]) -> str:
    """A panel's query with Grafana's variables replaced by what they would be here."""
    values = {"__rate_interval": RATE_INTERVAL, "namespace": NAMESPACE}
    for var in board["templating"]["list"]:
        if var["type"] == "custom":  # "All" selected
            values[var["name"]] = var["allValue"]
    out = re.sub(
        r"\$\{?(\w+)\}?",
        lambda m: values[m.group(1)],
        expr,
    )
    assert "$" not in out, out
    return out


def finite(series: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(s["value"][1])) for s in series)


def total(prom: Prometheus, metric: str, matchers: str = "") -> float:
    sel = f'namespace="{NAMESPACE}"' + (", " + matchers if matchers else "")
    got = prom.query(f"sum({metric}{{{sel}}})")
    return float(got[0]["value"][1]) if got else 0.0


def bounced_at_least(prom: Prometheus, count: float) -> bool | None:
    return total(prom, "postmesh_delivery_recipients_total", 'outcome="bounced"') >= count or None


# ---- traffic


@dataclass
class Users:
    sender: str
    full: str  # over quota: its recipients bounce (5.2.2)
    guessed: str  # only ever given wrong passwords
    password: str = "live-metrics-pw-1"


def make_users(stack: Stack) -> Users:
    marker = uuid.uuid4().hex[:8]
    users = Users(
        f"prom-{marker}@example.test",
        f"prom-full-{marker}@example.test",
        f"prom-guess-{marker}@example.test",
    )
    for u in (users.sender, users.full, users.guessed):
        create_user(stack, u, users.password)
    asyncio.run(set_quota(stack, users.full, 64))  # smaller than any message
    return users


def traffic_round(stack: Stack, users: Users, n: int) -> None:
    marker = f"{uuid.uuid4().hex[:8]}-{n}"
    remote = f"nobody@nowhere-{marker}.invalid"  # NXDOMAIN from the stack's DNS: bounces
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(users.guessed, "not-the-password")
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_submission, timeout=30) as smtp:
        smtp.starttls(context=insecure_tls())
        smtp.login(users.sender, users.password)
        message = sample_message(users.sender, users.sender, marker)
        assert smtp.sendmail(users.sender, [users.sender, users.full, remote], message) == {}
    with smtplib.SMTP("127.0.0.1", stack.ports.smtp_mx, timeout=30) as smtp:
        smtp.ehlo("peer.example.net")
        assert smtp.mail("someone@example.net")[0] == 250
        assert smtp.rcpt(f"no-such-user-{marker}@example.test")[0] == 550
        assert smtp.rcpt(users.sender)[0] == 250
        assert (
            smtp.data(sample_message("someone@example.net", users.sender, marker + "-mx"))[0] == 250
        )
    with imaplib.IMAP4("127.0.0.1", stack.ports.imap) as imap:
        imap.starttls(insecure_tls())
        with pytest.raises(imaplib.IMAP4.error):
            imap.login(users.guessed, "not-the-password")
    pop = poplib.POP3("127.0.0.1", stack.ports.pop3, timeout=30)
    pop.stls(insecure_tls())
    pop.user(users.guessed)
    with pytest.raises(poplib.error_proto):
        pop.pass_("not-the-password")
    pop.quit()


def read_mail(stack: Stack, users: Users, at_least: int) -> None:
    wait_for(
        lambda: len(imap_fetch_all(stack, users.sender, users.password)) >= at_least or None,
        timeout=60,
        what=f"{at_least} messages in the sender's INBOX",
    )
    assert len(pop3_retr_all(stack, users.sender, users.password)) >= at_least


# ---- the stack under a real Prometheus


@dataclass
class Live:
    stack: Stack
    prom: Prometheus


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def live(request: pytest.FixtureRequest) -> Iterator[Live]:
    stack: Stack = request.getfixturevalue(f"{request.param}_stack")
    targets = {
        svc: [
            Target(
                f"127.0.0.1:{stack.ports.ops[svc]}",
                {"namespace": NAMESPACE, "pod": f"{svc}-0"},
            )
        ]
        for svc in SERVICES
    }
    with Prometheus(targets, chart_rules()) as prom:
        wait_for(
            lambda: total(prom, "up") == len(SERVICES) or None,
            what=f"every service scraped up\n{prom.log_tail()}",
        )
        users = make_users(stack)
        bounced = total(prom, "postmesh_delivery_recipients_total", 'outcome="bounced"')
        for n in (1, 2):
            traffic_round(stack, users, n)
            # Per round: the sender's own copy, the MX message and the DSN(s) of two bounces.
            read_mail(stack, users, at_least=3 * n)
            wait_for(
                functools.partial(bounced_at_least, prom, bounced + 2 * n),
                what="the bounces in Prometheus",
            )
            time.sleep(3)  # a few scrapes after the round
        yield Live(stack, prom)


def test_every_dashboard_query_returns_series(live: Live) -> None:
    boards = chart_dashboards()
    assert {b["uid"] for b in boards.values()} == {
        "postmesh-overview",
        "postmesh-smtp",
        "postmesh-imap",
        "postmesh-pop3",
        "postmesh-delivery",
    }
    empty, nan_only, checked = [], [], 0
    for board in boards.values():
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                expr = concrete(t["expr"], board)
                got = live.prom.query(expr)
                checked += 1
                where = f"{board['uid']} / {panel['title']}: {expr}"
                if not got:
                    empty.append(where)
                elif not finite(got):
                    nan_only.append(where)
    assert checked > 50
    assert not empty, "queries without series:\n" + "\n".join(empty)
    assert not nan_only, "queries with only NaN:\n" + "\n".join(nan_only)


def rules_of(prom: Prometheus) -> list[dict[str, Any]]:
    return [r for g in prom.api("rules")["groups"] for r in g["rules"]]


def test_alert_rules_load_and_evaluate_on_live_metrics(live: Live) -> None:
    prom = live.prom
    expected = chart_rules()
    count = sum(len(g["rules"]) for g in expected["groups"])
    # Loaded and evaluated at least once (evaluation_interval 1s).
    loaded = wait_for(
        lambda: (
            rs
            if len(rs := rules_of(prom)) == count
            and all(r["lastEvaluation"] > "0001-01-01T00:00:00Z" for r in rs)
            else None
        ),
        what="every rule evaluated",
    )
    for r in loaded:
        assert r["health"] == "ok", (r["name"], r.get("lastError"))
        assert r["type"] == "alerting"
    # Every service is up, so no PostmeshServiceDown is pending or firing.
    down = [r for r in loaded if r["name"] == "PostmeshServiceDown"]
    assert len(down) == len(SERVICES)
    assert all(r["state"] == "inactive" for r in down), [r["alerts"] for r in down]

    missing = []
    for group in expected["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"].strip()
            prom.query(expr)  # evaluates (an error raises)
            if rule["alert"] in NO_LIVE_MEASURE:
                continue
            # The measure: the expression without its threshold (and without the offset of
            # the queue-growth alert, older than this Prometheus).
            measure = re.sub(r"\s*(==|!=|[<>]=?)\s*[0-9.e+]+$", "", expr).replace(" offset 1h", "")
            assert measure != expr, expr
            got = prom.query(measure)
            if not got or not finite(got):
                missing.append(f"{rule['alert']}: {measure} -> {got}")
    assert not missing, "alert measures without live series:\n" + "\n".join(missing)
