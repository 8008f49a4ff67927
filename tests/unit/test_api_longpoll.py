"""The long-poll hub on its own: who gets woken, bounds, pass-on and shutdown."""

from __future__ import annotations

import pytest

from raftmq.broker.api.errors import ApiError
from raftmq.broker.api.longpoll import LongPollHub


class FakeState:
    """Ready counts and pending notifications, as the state lock would hand them out."""

    def __init__(self) -> None:
        self.ready: dict[str, int] = {}
        self.notified: list[str] = []
        self.drains = 0

    def drain(self) -> dict[str, int]:
        self.drains += 1
        names, self.notified = self.notified, []
        return {name: self.ready.get(name, 0) for name in names}

    def publish(self, queue: str, count: int) -> None:
        self.ready[queue] = self.ready.get(queue, 0) + count
        self.notified.append(queue)


def make_hub(state: FakeState, max_waiters: int = 10) -> LongPollHub:
    return LongPollHub(max_waiters, drain_ready=state.drain,
                       ready_count=lambda queue: state.ready.get(queue, 0))


async def test_wakes_only_as_many_waiters_as_ready_messages_need() -> None:
    state = FakeState()
    hub = make_hub(state)
    with hub.waiter("q", 1) as first, hub.waiter("q", 1) as second, hub.waiter("q", 1) as third:
        state.publish("q", 2)
        hub.on_applied(1)
        assert [w.event.is_set() for w in (first, second, third)] == [True, True, False]


async def test_a_waiter_claiming_many_covers_many_messages() -> None:
    state = FakeState()
    hub = make_hub(state)
    with hub.waiter("q", 10) as greedy, hub.waiter("q", 1) as modest:
        state.publish("q", 5)
        hub.on_applied(1)
        assert greedy.event.is_set() and not modest.event.is_set()


async def test_only_the_notified_queue_is_woken() -> None:
    state = FakeState()
    hub = make_hub(state)
    with hub.waiter("a", 1) as on_a, hub.waiter("b", 1) as on_b:
        state.publish("b", 1)
        hub.on_applied(1)
        assert on_b.event.is_set() and not on_a.event.is_set()


@pytest.mark.parametrize("claimed", [False, True])
async def test_woken_waiter_leaving_passes_the_wake_up_on_if_messages_remain(
    claimed: bool,
) -> None:
    state = FakeState()
    hub = make_hub(state)
    first_registration = hub.waiter("q", 1)
    first = first_registration.__enter__()
    with hub.waiter("q", 1) as second:
        state.publish("q", 1)
        hub.on_applied(1)
        assert first.event.is_set() and not second.event.is_set()
        if claimed:
            state.ready["q"] = 0
        # `first` leaves (claimed, timed out or its client went away) while `second` waits.
        first_registration.__exit__(None, None, None)
        assert second.event.is_set() is (not claimed)
    assert hub.waiter_count == 0


async def test_notifications_are_drained_even_without_waiters() -> None:
    state = FakeState()
    hub = make_hub(state)
    state.publish("q", 1)
    hub.on_applied(1)
    assert state.notified == [] and state.drains == 1


async def test_waiter_limit_is_enforced_and_freed() -> None:
    hub = make_hub(FakeState(), max_waiters=2)
    with hub.waiter("q", 1), hub.waiter("r", 1):
        with pytest.raises(ApiError) as refused, hub.waiter("q", 1):
            pass
        assert (refused.value.code, refused.value.status) == ("too_many_waiters", 429)
    with hub.waiter("q", 1):
        assert hub.waiter_count == 1


async def test_close_wakes_everyone_and_stops_draining() -> None:
    state = FakeState()
    hub = make_hub(state)
    with hub.waiter("q", 1) as first, hub.waiter("r", 3) as second:
        hub.close()
        assert first.event.is_set() and second.event.is_set() and hub.closed
    state.publish("q", 1)
    hub.on_applied(1)
    assert state.drains == 0  # a closed hub leaves notifications to a live one


async def test_wait_reports_timeout() -> None:
    hub = make_hub(FakeState())
    with hub.waiter("q", 1) as waiter:
        assert await waiter.wait(0.01) is False
        waiter.event.set()
        assert await waiter.wait(1.0) is True
