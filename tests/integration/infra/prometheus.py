"""A real Prometheus (Debian's) on a free loopback port, scraping given targets every second.

Its config, rule files and TSDB live in a temp dir of its own; the Debian package's system
service is never used (scripts/ensure-tools.sh leaves it disabled). Targets are static: each
has the labels the Prometheus Operator would attach from the chart's ServiceMonitor (job from
the app.kubernetes.io/component label, namespace, pod), so the chart's alert and dashboard
selectors apply unchanged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped,import-not-found,unused-ignore]

from tests.integration.infra import _process
from tests.integration.infra._process import InfraError, LocalServer
from tests.integration.infra.ports import free_port


@dataclass(frozen=True)
class Target:
    address: str  # host:port serving /metrics
    labels: Mapping[str, str] = field(default_factory=dict)


class Prometheus(LocalServer):
    def __init__(
        self,
        targets: Mapping[str, Sequence[Target]],
        rules: Mapping[str, Any] | None = None,
        *,
        interval: str = "1s",
        startup_timeout_s: float = 60.0,
    ) -> None:
        """``targets``: job name -> its targets; ``rules``: a rules file's content (groups)."""
        self.targets = targets
        self.rules = rules
        self.interval = interval
        self._startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._tmp is not None
        return self._tmp / "prometheus.log"

    def log_tail(self, lines: int = 40) -> str:
        return _process.log_tail(self.log_path, lines) if self._tmp else "(stopped)"

    def _write_config(self) -> Path:
        assert self._tmp is not None
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {"targets": [t.address], "labels": dict(t.labels)} for t in targets
                    ],
                }
                for job, targets in self.targets.items()
            ],
        }
        if self.rules is not None:
            (self._tmp / "rules.yaml").write_text(yaml.safe_dump(dict(self.rules)))
            config["rule_files"] = [str(self._tmp / "rules.yaml")]
        path = self._tmp / "prometheus.yml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def start(self) -> Prometheus:
        binary = shutil.which("prometheus") or "/usr/bin/prometheus"
        if not Path(binary).exists():
            raise InfraError("prometheus is not installed (scripts/ensure-tools.sh installs it)")
        self._tmp = Path(tempfile.mkdtemp(prefix="postmesh-prometheus-"))
        self.port = free_port()
        config = self._write_config()
        try:
            self._proc = _process.spawn(
                [
                    binary,
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self._tmp / 'data'}",
                    "--storage.tsdb.retention.time=1h",
                    # Debian's default points at /usr/share/prometheus/console*: unused here.
                    f"--web.console.templates={self._tmp}",
                    f"--web.console.libraries={self._tmp}",
                ],
                self.log_path,
            )
            _process.wait_http_ok(
                self._proc, f"{self.url}/-/ready", "prometheus", self._startup_timeout_s,
                self.log_path,
            )  # fmt: skip
        except BaseException:
            self.stop()
            raise
        return self

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; returns ``data`` or raises with Prometheus' error."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            body = json.loads(e.read() or b"{}")
        if body.get("status") != "success":
            raise InfraError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector (``[{"metric": {...}, "value": [t, "v"]}, ...]``)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def stop(self) -> None:
        if self._proc is not None:
            _process.stop_process(self._proc, grace_s=10)
            self._proc = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
