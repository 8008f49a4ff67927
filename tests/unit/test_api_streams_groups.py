"""Consumer groups over HTTP against a real single-node broker: join, heartbeat, leave, commit,
inspection, the 409s of an out-of-date member, standalone commits, and bad input."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_api_fixtures import MODULE_LOOP, Broker, broker, unique

__all__ = ["broker"]

pytestmark = MODULE_LOOP


async def new_stream(broker: Broker, partitions: int) -> str:
    name = unique("gs")
    response, body = await broker.call("PUT", f"/v1/streams/{name}", {"partitions": partitions})
    assert response.status == 201, body
    # Two records per partition, so that commits up to offset 2 are within range.
    messages = [{"body": f"{p}-{i}", "partition": p} for p in range(partitions) for i in range(2)]
    response, body = await broker.call("POST", f"/v1/streams/{name}/publish",
                                       {"messages": messages})
    assert response.status == 200, body
    return name


async def act(broker: Broker, stream: str, group: str, action: str, document: object,
              fmt: str = "json") -> tuple[int, Any]:
    response, body = await broker.call(
        "POST", f"/v1/streams/{stream}/groups/{group}/{action}", document, fmt=fmt
    )
    return response.status, body


async def ok(broker: Broker, stream: str, group: str, action: str, document: object,
             fmt: str = "json") -> Any:
    status, body = await act(broker, stream, group, action, document, fmt)
    assert status == 200, body
    return body


async def refused(broker: Broker, stream: str, group: str, action: str, document: object
                  ) -> tuple[int, str]:
    status, body = await act(broker, stream, group, action, document)
    assert body["error"]["definite"] is True, body
    return status, body["error"]["code"]


async def group_info(broker: Broker, stream: str, group: str) -> Any:
    response, body = await broker.call("GET", f"/v1/streams/{stream}/groups/{group}")
    assert response.status == 200, body
    return body


async def test_join_heartbeat_commit_leave_and_inspect(broker: Broker) -> None:
    stream, group = await new_stream(broker, 4), "g"
    first = await ok(broker, stream, group, "join", {"member": "m1", "session_timeout_ms": 30_000})
    assert (first["generation"], first["partitions"], first["members"]) == (1, [0, 1, 2, 3], ["m1"])
    assert first["committed"] == {} and first["index"] > 0 and first["session_expires_ms"] > 0
    second = await ok(broker, stream, group, "join", {"member": "m2"})
    assert (second["generation"], second["partitions"], second["members"]) == (
        2, [1, 3], ["m1", "m2"])
    beat = await ok(broker, stream, group, "heartbeat", {"member": "m1"})
    assert (beat["generation"], beat["partitions"]) == (2, [0, 2])

    commit = await ok(broker, stream, group, "commit",
                      {"member": "m1", "generation": 2, "offsets": {"0": 2, "2": 1}})
    assert commit["index"] > beat["index"]
    assert (await ok(broker, stream, group, "heartbeat", {"member": "m1"}))["committed"] == {
        "0": 2, "2": 1}
    info = await group_info(broker, stream, group)
    assert (info["stream"], info["group"], info["generation"]) == (stream, group, 2)
    assert [(m["member"], m["partitions"]) for m in info["members"]] == [
        ("m1", [0, 2]), ("m2", [1, 3])]
    assert info["members"][0]["session_timeout_ms"] == 30_000
    assert info["members"][1]["session_timeout_ms"] == 10_000  # the default
    assert info["committed"] == {"0": 2, "2": 1}
    response, listed = await broker.call("GET", f"/v1/streams/{stream}/groups")
    assert response.status == 200 and [g["group"] for g in listed["groups"]] == [group]
    _, view = await broker.call("GET", f"/v1/streams/{stream}")
    assert view["groups"] == [group]

    assert await ok(broker, stream, group, "leave", {"member": "m2"}) == {}
    after = await ok(broker, stream, group, "heartbeat", {"member": "m1"})
    assert (after["generation"], after["partitions"]) == (3, [0, 1, 2, 3])


async def test_msgpack_join_and_commit(broker: Broker) -> None:
    stream = await new_stream(broker, 2)
    joined = await ok(broker, stream, "g", "join", {"member": "m"}, fmt="msgpack")
    assert joined["partitions"] == [0, 1]
    commit = {"member": "m", "generation": joined["generation"], "offsets": {"1": 2}}
    assert (await ok(broker, stream, "g", "commit", commit, fmt="msgpack"))["index"] > 0
    assert (await group_info(broker, stream, "g"))["committed"] == {"1": 2}


async def test_an_out_of_date_member_gets_409s(broker: Broker) -> None:
    stream = await new_stream(broker, 2)
    await ok(broker, stream, "g", "join", {"member": "m1"})
    await ok(broker, stream, "g", "join", {"member": "m2"})  # generation 2: m1 has 0, m2 has 1
    stale = {"member": "m1", "generation": 1, "offsets": {"0": 1}}
    assert await refused(broker, stream, "g", "commit", stale) == (409, "stale_generation")
    foreign = {"member": "m1", "generation": 2, "offsets": {"1": 1}}
    assert await refused(broker, stream, "g", "commit", foreign) == (409, "partition_not_assigned")
    ghost = {"member": "ghost"}
    assert await refused(broker, stream, "g", "heartbeat", ghost) == (409, "unknown_member")
    assert await refused(broker, stream, "g", "leave", ghost) == (409, "unknown_member")
    ghost_commit = {"member": "ghost", "generation": 2, "offsets": {"0": 1}}
    assert await refused(broker, stream, "g", "commit", ghost_commit) == (409, "unknown_member")
    assert await refused(broker, stream, "nobody", "heartbeat", {"member": "m1"}) == (
        409, "unknown_member")
    assert (await group_info(broker, stream, "g"))["committed"] == {}


async def test_standalone_commit_only_while_the_group_has_no_members(broker: Broker) -> None:
    stream = await new_stream(broker, 2)
    assert (await ok(broker, stream, "g", "commit", {"offsets": {"0": 2}}))["index"] > 0
    info = await group_info(broker, stream, "g")
    assert (info["generation"], info["members"], info["committed"]) == (0, [], {"0": 2})
    await ok(broker, stream, "g", "commit", {"generation": 0, "offsets": {"1": 1}})
    joined = await ok(broker, stream, "g", "join", {"member": "m"})
    assert joined["committed"] == {"0": 2, "1": 1}
    assert await refused(broker, stream, "g", "commit", {"offsets": {"0": 0}}) == (
        409, "stale_generation")
    await ok(broker, stream, "g", "leave", {"member": "m"})
    await ok(broker, stream, "g", "commit", {"offsets": {"0": 0}})
    assert (await group_info(broker, stream, "g"))["committed"] == {"0": 0, "1": 1}


async def test_missing_streams_and_groups_are_404(broker: Broker) -> None:
    stream = await new_stream(broker, 1)
    response, body = await broker.call("GET", f"/v1/streams/{stream}/groups/none")
    assert response.status == 404 and body["error"]["code"] == "group_not_found"
    for path in ("/v1/streams/no-such/groups", "/v1/streams/no-such/groups/g"):
        response, body = await broker.call("GET", path)
        assert response.status == 404 and body["error"]["code"] == "stream_not_found"
    assert await refused(broker, "no-such", "g", "join", {"member": "m"}) == (
        404, "stream_not_found")


STREAM = "bad-groups"
def each(*documents: object) -> tuple[object, ...]:
    return documents


# (action, document, status, code)
BAD_CASES: list[tuple[str, object, int, str]] = [
    *[("join", document, 400, "invalid_argument") for document in each(
        {}, {"member": 5}, {"member": None}, {"member": "m", "session_timeout_ms": 99},
        {"member": "m", "session_timeout_ms": 86_400_001},
        {"member": "m", "session_timeout_ms": "1000"}, {"member": "m", "color": 1},
    )],
    ("join", {"member": "bad m"}, 400, "invalid_name"),
    ("join", {"member": ""}, 400, "invalid_name"),
    ("heartbeat", {}, 400, "invalid_argument"),
    ("leave", {"member": "m", "session_timeout_ms": 1000}, 400, "invalid_argument"),
    *[("commit", document, 400, "invalid_argument") for document in each(
        {}, {"offsets": []}, {"offsets": {}}, {"offsets": {"x": 1}}, {"offsets": {"-1": 1}},
        {"offsets": {"1.0": 1}}, {"offsets": {"0": "1"}}, {"offsets": {"0": -1}},
        {"offsets": {"0": True}}, {"offsets": {"0": 1, "00": 1}},
        {"offsets": {str(p): 0 for p in range(1025)}},
        {"member": "m", "offsets": {"0": 1}}, {"generation": 3, "offsets": {"0": 1}},
        {"member": "m", "generation": -1, "offsets": {"0": 1}},
        # Checked by the state against the stream: it has 2 partitions of 2 records each.
        {"offsets": {"2": 0}}, {"offsets": {"0": 3}},
    )],
]


@pytest.mark.parametrize(("action", "document", "status", "code"), BAD_CASES)
async def test_bad_input_gets_a_stable_4xx(
    broker: Broker, action: str, document: object, status: int, code: str
) -> None:
    response, _ = await broker.call("PUT", f"/v1/streams/{STREAM}", {"partitions": 2})
    if response.status == 201:
        await broker.call("POST", f"/v1/streams/{STREAM}/publish",
                          {"messages": [{"body": "x", "partition": p} for p in (0, 0, 1, 1)]})
    assert await refused(broker, STREAM, "g", action, document) == (status, code)


@pytest.mark.parametrize("path", [
    f"/v1/streams/{STREAM}/groups/bad%20g/join", "/v1/streams/bad%20s/groups/g/join",
])
async def test_bad_names_in_the_path_are_400(broker: Broker, path: str) -> None:
    response, body = await broker.call("POST", path, {"member": "m"})
    assert response.status == 400 and body["error"]["code"] == "invalid_name"


async def test_unknown_group_action_is_404(broker: Broker) -> None:
    response, body = await broker.call("POST", f"/v1/streams/{STREAM}/groups/g/rejoin", {})
    assert response.status == 404 and body["error"]["code"] == "not_found"
