"""``make run``: the whole system on the embedded backends until Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from postmesh.common.devstack import Stack, StackError

DEMO_USER, DEMO_PASSWORD = "demo@example.test", "demo"


def main() -> int:
    data_dir = Path(os.environ.get("POSTMESH_DATA_DIR", ".postmesh"))
    stack = Stack(data_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"starting Postmesh (state in {stack.data_dir}) ...", flush=True)
    try:
        stack.start()
        stack.ensure_user(DEMO_USER, DEMO_PASSWORD)
    except StackError as e:
        print(f"start failed: {e}", file=sys.stderr)
        return 1
    p = stack.ports
    print(
        f"""
Postmesh is running. Endpoints (127.0.0.1):
  SMTP MX            {p.smtp_mx}
  SMTP submission    {p.smtp_submission}  (STARTTLS, AUTH SCRAM-SHA-256/PLAIN/LOGIN)
  SMTP submissions   {p.smtp_submissions}  (implicit TLS)
  IMAP               {p.imap}  (STARTTLS)   IMAPS {p.imaps}
  POP3               {p.pop3}  (STLS)       POP3S {p.pop3s}
  Admin API          http://127.0.0.1:{p.admin}/api/v1  (token in {stack.data_dir / "admin-token"})
  Queue admin API    http://127.0.0.1:{p.queue_admin}/api/v1/queue, /api/v1/trace/<queue id>
  CLI                uv run postmesh --help  (e.g. uv run postmesh users list)
  Ops (/metrics /healthz /readyz): """
        + ", ".join(f"{s} :{port}" for s, port in p.ops.items())
        + f"""
Demo account: {DEMO_USER} / {DEMO_PASSWORD}
Logs: {stack.log_dir}/<service>.log    Stop with Ctrl-C.
""",
        flush=True,
    )
    try:
        while not stop.wait(1.0):
            for svc, proc in stack.procs.items():
                if proc.poll() is not None:
                    print(f"{svc} exited with status {proc.returncode}:\n{stack.log_tail(svc)}")
                    return 1
    finally:
        print("stopping ...", flush=True)
        stack.stop()
        print("stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
