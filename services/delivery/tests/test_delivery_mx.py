from __future__ import annotations

from typing import Any

import pytest
from delivery_fakes import FakeResolver, timeout

from postmesh.delivery.mx import DnsError, MxHost, NullMx, order_mx, resolve_addresses, resolve_mx


def r(x: FakeResolver) -> Any:
    return x


def test_order_is_by_preference_and_equal_preferences_are_all_kept() -> None:
    hosts = order_mx([(20, "c"), (10, "b"), (10, "a"), (5, "z"), (10, "a")])
    assert [h.preference for h in hosts] == [5, 10, 10, 20]
    assert hosts[0].name == "z" and {h.name for h in hosts[1:3]} == {"a", "b"}
    assert hosts[-1].name == "c"


def test_equal_preferences_are_shuffled() -> None:
    # RFC 5321 §5.1: equal preferences in random order, to spread the load.
    firsts = {order_mx([(10, "a"), (10, "b"), (10, "c")])[0].name for _ in range(200)}
    assert firsts == {"a", "b", "c"}


async def test_mx_records_in_preference_order() -> None:
    dns_ = FakeResolver()
    dns_.add("example.test", "MX", "20 backup.example.test.", "10 primary.example.test.")
    hosts = await resolve_mx(r(dns_), "example.test")
    assert hosts == [MxHost("primary.example.test", 10), MxHost("backup.example.test", 20)]


async def test_no_mx_means_implicit_mx_on_the_domain() -> None:
    dns_ = FakeResolver()
    dns_.add("example.test", "A", "127.0.0.1")
    assert await resolve_mx(r(dns_), "Example.Test.") == [MxHost("example.test", 0, implicit=True)]


async def test_null_mx_raises() -> None:
    dns_ = FakeResolver()
    dns_.add("nomail.test", "MX", "0 .")
    with pytest.raises(NullMx):
        await resolve_mx(r(dns_), "nomail.test")


async def test_nxdomain_is_permanent_and_timeout_temporary() -> None:
    dns_ = FakeResolver()
    with pytest.raises(DnsError) as e:
        await resolve_mx(r(dns_), "missing.test")
    assert e.value.permanent
    dns_.zone[("slow.test", "MX")] = timeout()
    with pytest.raises(DnsError) as e:
        await resolve_mx(r(dns_), "slow.test")
    assert not e.value.permanent


async def test_addresses_ipv4_then_ipv6_and_temporary_failure() -> None:
    dns_ = FakeResolver()
    dns_.add("mx.test", "A", "127.0.0.1")
    dns_.add("mx.test", "AAAA", "::1")
    assert await resolve_addresses(r(dns_), "mx.test") == ["127.0.0.1", "::1"]
    assert await resolve_addresses(r(dns_), "none.test") == []
    dns_.zone[("broken.test", "A")] = timeout()
    dns_.zone[("broken.test", "AAAA")] = timeout()
    with pytest.raises(DnsError):
        await resolve_addresses(r(dns_), "broken.test")
