"""Exchanges, bindings and topic matching (raftmq.broker.routing)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftmq.broker.routing import Exchange, Router, split_topic, topic_matches


def matches(pattern: str, key: str) -> bool:
    return topic_matches(split_topic(pattern), split_topic(key))


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("a.b.c", "a.b.c", True),
        ("a.b.c", "a.b", False),
        ("a.*.c", "a.b.c", True),
        ("a.*.c", "a.c", False),  # * is exactly one word
        ("a.*.c", "a.b.x.c", False),
        ("*", "a", True),
        ("*", "", False),  # the empty key has no words
        ("*", "a.b", False),
        ("#", "", True),  # zero words
        ("#", "a", True),
        ("#", "a.b.c", True),
        ("a.#", "a", True),  # # may match nothing
        ("a.#", "a.b.c", True),
        ("a.#", "b.a", False),
        ("#.c", "c", True),
        ("#.c", "a.b.c", True),
        ("#.c", "a.b.c.d", False),
        ("a.#.c", "a.c", True),
        ("a.#.c", "a.x.y.c", True),
        ("a.#.c", "a.x.y.d", False),
        ("#.#", "", True),
        ("#.*", "", False),
        ("#.*", "a", True),
        ("*.#", "a.b", True),
        ("*.*", "a", False),
        ("a.*.#.z", "a.b.z", True),
        ("a.*.#.z", "a.z", False),
        ("", "", True),
        ("", "a", False),
        ("a..b", "a..b", True),  # empty words are words
        ("a.*.b", "a..b", True),
        ("a*", "ab", False),  # wildcards only as whole words
        ("a*", "a*", True),
        ("a.b", "A.B", False),  # case-sensitive
    ],
)
def test_topic_matching(pattern: str, key: str, expected: bool) -> None:
    assert matches(pattern, key) is expected


words = st.lists(st.sampled_from(["a", "b", "c", ""]), max_size=5)


def reference_match(pattern: list[str], key: list[str]) -> bool:
    """Recursive definition, independent of the dynamic programme under test."""
    if not pattern:
        return not key
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(reference_match(rest, key[i:]) for i in range(len(key) + 1))
    if not key:
        return False
    return (head == "*" or head == key[0]) and reference_match(rest, key[1:])


@given(pattern=st.lists(st.sampled_from(["a", "b", "*", "#"]), max_size=5), key=words)
def test_topic_matching_agrees_with_recursive_definition(pattern: list[str], key: list[str]) -> None:
    key_text = ".".join(key)
    key_words = split_topic(key_text)  # [""] joined is "", which has no words
    assert topic_matches(tuple(pattern), key_words) == reference_match(pattern, list(key_words))


def test_direct_routes_by_exact_key_in_binding_order() -> None:
    exchange = Exchange("x", "direct", None)
    exchange.bind("q2", "k")
    exchange.bind("q1", "k")
    exchange.bind("q3", "other")
    assert exchange.route("k") == ("q2", "q1")
    assert exchange.route("other") == ("q3",)
    assert exchange.route("none") == ()
    assert exchange.unbind("q2", "k")
    assert exchange.route("k") == ("q1",)
    assert not exchange.unbind("q2", "k")


def test_fanout_ignores_keys_and_stores_each_queue_once() -> None:
    exchange = Exchange("x", "fanout", None)
    assert exchange.bind("q1", "a")
    assert exchange.bind("q2", "")
    assert exchange.bind("q1", "b")  # second binding of q1
    assert not exchange.bind("q1", "b")  # duplicate binding
    assert exchange.route("anything") == ("q1", "q2")
    exchange.unbind("q1", "a")
    # q1 is still bound (by "b"), now after q2 in binding order.
    assert exchange.route("") == ("q2", "q1")


def test_topic_dedupes_queue_matched_by_two_patterns() -> None:
    exchange = Exchange("x", "topic", None)
    exchange.bind("q1", "orders.#")
    exchange.bind("q2", "*.eu")
    exchange.bind("q1", "*.eu")
    assert exchange.route("orders.eu") == ("q1", "q2")
    assert exchange.route("users.eu") == ("q2", "q1")
    assert exchange.route("orders") == ("q1",)
    exchange.unbind("q2", "*.eu")
    assert exchange.route("users.eu") == ("q1",)  # cache invalidated by the unbind


def test_router_default_exchange_routes_by_queue_name() -> None:
    router = Router()
    queues = {"jobs": None}
    assert router.route("", "jobs", queues) == ("jobs",)
    assert router.route("", "missing", queues) == ()
    assert router.route("nope", "jobs", queues) is None


def test_router_alternate_exchange_is_one_hop() -> None:
    router = Router()
    router.exchanges["main"] = Exchange("main", "direct", "alt")
    router.exchanges["alt"] = Exchange("alt", "fanout", "main")  # loop back: must not follow
    router.bind("main", "q-main", "k")
    queues = {"q-main": None, "q-alt": None}
    assert router.route("main", "k", queues) == ("q-main",)
    assert router.route("main", "other", queues) == ()  # alt has no bindings, no second hop
    router.bind("alt", "q-alt", "")
    assert router.route("main", "other", queues) == ("q-alt",)
    router.exchanges["main2"] = Exchange("main2", "direct", "")  # AE = default exchange
    assert router.route("main2", "q-alt", queues) == ("q-alt",)
    router.exchanges["main3"] = Exchange("main3", "direct", "deleted")
    assert router.route("main3", "k", queues) == ()


def test_router_remove_queue_and_exchange_drop_bindings() -> None:
    router = Router()
    router.exchanges["a"] = Exchange("a", "fanout", None)
    router.exchanges["b"] = Exchange("b", "direct", None)
    router.bind("a", "q", "")
    router.bind("b", "q", "k")
    router.bind("b", "r", "k")
    router.remove_queue("q")
    assert router.route("a", "", {}) == ()
    assert router.route("b", "k", {}) == ("r",)
    router.remove_exchange("b")
    assert "b" not in router.exchanges
    router.remove_queue("r")  # no bindings left: nothing to do, no error
