"""The synchronous level each COMMIT on a SQLite store connection runs at: how the durability
tests tell an fsync'ed commit (FULL) from one that is not (NORMAL) (ADRs 41, 52)."""

from __future__ import annotations

from postmesh.common.sqlite import SqliteConnection


async def commit_levels(connection: SqliteConnection) -> list[str]:
    """Start recording, for each COMMIT on ``connection``, the synchronous level it ran at (the
    last PRAGMA synchronous set before it: FULL from the connection's open)."""
    seen: list[str] = []
    level = ["FULL"]

    def trace(statement: str) -> None:
        s = statement.strip().upper()
        if s.startswith("PRAGMA SYNCHRONOUS="):
            level[0] = s.split("=", 1)[1]
        elif s == "COMMIT":
            seen.append(level[0])

    await connection.run(lambda c: c.set_trace_callback(trace))
    return seen
