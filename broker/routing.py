"""Exchanges, bindings and routing.

Every routing decision is deterministic: targets come out in binding order, each queue once.
Routing results are cached per exchange (bounded) because the same few routing keys recur
on every publish; a binding change invalidates the cache.
"""

from __future__ import annotations

from collections.abc import Container

from raftmq.broker.names import DEFAULT_EXCHANGE

__all__ = [
    "DIRECT",
    "EXCHANGE_TYPES",
    "FANOUT",
    "TOPIC",
    "Exchange",
    "Router",
    "split_topic",
    "topic_matches",
]

DIRECT = "direct"
FANOUT = "fanout"
TOPIC = "topic"
EXCHANGE_TYPES = (DIRECT, FANOUT, TOPIC)

_MAX_CACHED_KEYS = 1024


def split_topic(key: str) -> tuple[str, ...]:
    # The empty key has no words (so `#` matches it and `*` does not).
    return () if key == "" else tuple(key.split("."))


def topic_matches(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """`*` matches exactly one word, `#` zero or more; other pattern words match literally."""
    # reach[j]: the pattern prefix seen so far matches the first j words.
    count = len(words)
    reach = [True] + [False] * count
    for part in pattern:
        if part == "#":
            seen = False
            for j in range(count + 1):
                seen = seen or reach[j]
                reach[j] = seen
        elif part == "*":
            reach = [False, *reach[:-1]]
        else:
            reach = [False] + [reach[j] and words[j] == part for j in range(count)]
        if not any(reach):
            return False
    return reach[count]


class Exchange:
    __slots__ = ("_cache", "_direct", "_fanout", "_topic", "alternate_exchange", "bindings", "name",
                 "type")

    def __init__(self, name: str, exchange_type: str, alternate_exchange: str | None) -> None:
        self.name = name
        self.type = exchange_type
        self.alternate_exchange = alternate_exchange
        # (queue, binding_key) in the order they were bound.
        self.bindings: dict[tuple[str, str], None] = {}
        self._direct: dict[str, dict[str, None]] = {}
        self._fanout: tuple[str, ...] | None = ()
        self._topic: list[tuple[tuple[str, ...], str]] | None = []
        self._cache: dict[str, tuple[str, ...]] = {}

    def route(self, routing_key: str) -> tuple[str, ...]:
        if self.type == FANOUT:
            if self._fanout is None:
                self._fanout = tuple({queue: None for queue, _ in self.bindings})
            return self._fanout
        cached = self._cache.get(routing_key)
        if cached is not None:
            return cached
        if self.type == DIRECT:
            targets = tuple(self._direct.get(routing_key, ()))
        else:
            targets = self._match_topic(routing_key)
        if len(self._cache) >= _MAX_CACHED_KEYS:
            self._cache.clear()
        self._cache[routing_key] = targets
        return targets

    def _match_topic(self, routing_key: str) -> tuple[str, ...]:
        if self._topic is None:
            self._topic = [(split_topic(key), queue) for queue, key in self.bindings]
        words = split_topic(routing_key)
        matched: dict[str, None] = {}
        for pattern, queue in self._topic:
            if queue not in matched and topic_matches(pattern, words):
                matched[queue] = None
        return tuple(matched)

    def bind(self, queue: str, binding_key: str) -> bool:
        if (queue, binding_key) in self.bindings:
            return False
        self.bindings[(queue, binding_key)] = None
        if self.type == DIRECT:
            # Per key, queues stay in binding order: the same order a rebuild would give.
            self._direct.setdefault(binding_key, {})[queue] = None
        self._invalidate(binding_key)
        return True

    def unbind(self, queue: str, binding_key: str) -> bool:
        if (queue, binding_key) not in self.bindings:
            return False
        del self.bindings[(queue, binding_key)]
        if self.type == DIRECT:
            queues = self._direct[binding_key]
            del queues[queue]
            if not queues:
                del self._direct[binding_key]
        self._invalidate(binding_key)
        return True

    def _invalidate(self, binding_key: str) -> None:
        # Derived from `bindings` lazily, so a restored exchange routes in the same order.
        if self.type == DIRECT:
            self._cache.pop(binding_key, None)
        else:
            self._fanout = None
            self._topic = None
            self._cache.clear()


class Router:
    """All exchanges (the default exchange "" is implicit) and their bindings."""

    __slots__ = ("_queue_bindings", "exchanges")

    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}
        # queue -> (exchange, binding_key): deleting a queue must not scan every exchange.
        self._queue_bindings: dict[str, dict[tuple[str, str], None]] = {}

    def route(
        self, exchange: str, routing_key: str, queues: Container[str]
    ) -> tuple[str, ...] | None:
        """Target queues for a message, following the alternate exchange (one hop) when the
        exchange itself routes nowhere. None when the exchange does not exist."""
        if exchange == DEFAULT_EXCHANGE:
            return (routing_key,) if routing_key in queues else ()
        found = self.exchanges.get(exchange)
        if found is None:
            return None
        targets = found.route(routing_key)
        alternate = found.alternate_exchange
        if not targets and alternate is not None:
            if alternate == DEFAULT_EXCHANGE:
                return (routing_key,) if routing_key in queues else ()
            fallback = self.exchanges.get(alternate)
            if fallback is not None:
                targets = fallback.route(routing_key)
        return targets

    def bind(self, exchange: str, queue: str, binding_key: str) -> bool:
        if not self.exchanges[exchange].bind(queue, binding_key):
            return False
        self._queue_bindings.setdefault(queue, {})[(exchange, binding_key)] = None
        return True

    def unbind(self, exchange: str, queue: str, binding_key: str) -> bool:
        if not self.exchanges[exchange].unbind(queue, binding_key):
            return False
        of_queue = self._queue_bindings[queue]
        del of_queue[(exchange, binding_key)]
        if not of_queue:
            del self._queue_bindings[queue]
        return True

    def remove_queue(self, queue: str) -> None:
        for exchange, binding_key in list(self._queue_bindings.get(queue, ())):
            self.unbind(exchange, queue, binding_key)

    def remove_exchange(self, name: str) -> None:
        found = self.exchanges[name]
        for queue, binding_key in list(found.bindings):
            self.unbind(name, queue, binding_key)
        del self.exchanges[name]
