"""imap-gw's server on the real store in-process (store_env): ``env`` one running server,
``make_env`` servers with settings overridden. No fake store (ADR 24)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from store_env import StoreEnv, store_env


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[StoreEnv]:
    async with store_env(tmp_path) as e:
        yield e


@pytest.fixture
async def make_env(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[StoreEnv]]]:
    """Start a server with settings overridden (``await make_env(imap_max_bad_commands=3)``),
    each on its own store."""
    async with AsyncExitStack() as stack:
        count = itertools.count()

        async def make(**overrides: object) -> StoreEnv:
            where = tmp_path / f"env{next(count)}"
            return await stack.enter_async_context(store_env(where, **overrides))

        yield make
