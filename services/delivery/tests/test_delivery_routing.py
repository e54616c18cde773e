from __future__ import annotations

import pytest

from postmesh.delivery.routing import NextHop, Router, parse_nexthop, parse_transport_map
from postmesh.delivery.settings import DeliverySettings


def test_nexthop_syntax_as_postfix() -> None:
    assert parse_nexthop("relay.example", 25) == NextHop("relay.example", 25, mx_lookup=True)
    assert parse_nexthop("relay.example:2525", 25) == NextHop("relay.example", 2525, True)
    assert parse_nexthop("[relay.example]", 25) == NextHop("relay.example", 25, False)
    assert parse_nexthop("[relay.example]:587", 25) == NextHop("relay.example", 587, False)
    assert parse_nexthop("[::1]:2525", 25) == NextHop("::1", 2525, False)
    assert parse_nexthop("192.0.2.1:26", 25) == NextHop("192.0.2.1", 26, False)


@pytest.mark.parametrize("bad", ["", "[", "[x", "[x]y", "x:0", "x:99999", "x:y", "a b", "[]:25"])
def test_bad_nexthop_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_nexthop(bad, 25)


def test_transport_map_exact_then_parent_then_relayhost_then_mx() -> None:
    router = Router(
        "[smarthost.example]:587",
        "example.com=[mx.internal]:2525, .example.net=relay.example.org",
        25,
    )
    assert router.nexthop("EXAMPLE.com") == NextHop("mx.internal", 2525, False)
    assert router.nexthop("a.b.example.net") == NextHop("relay.example.org", 25, True)
    # ".example.net" matches subdomains only (transport(5)), so the bare domain goes on.
    assert router.nexthop("example.net") == NextHop("smarthost.example", 587, False)
    assert router.nexthop("other.test") == NextHop("smarthost.example", 587, False)
    plain = Router("", "", 25)
    assert plain.nexthop("other.test") == NextHop("other.test", 25, True, direct_to_domain=True)
    assert plain.nexthop("[127.0.0.1]") == NextHop("127.0.0.1", 25, False, True)
    assert plain.nexthop("[IPv6:::1]") == NextHop("::1", 25, False, True)


def test_bad_transport_map_and_relayhost_stop_the_service() -> None:
    with pytest.raises(ValueError):
        parse_transport_map("example.com", 25)
    with pytest.raises(ValueError):
        DeliverySettings(transport_map="example.com=[x")
    with pytest.raises(ValueError):
        DeliverySettings(relayhost="[x]y")
