"""The cluster operations endpoints on a real single-node broker: input checks, the refusals a
lone leader gives, and the replica digest. (Changes that need peers: test_cluster_membership
and the integration tests.)"""

from __future__ import annotations

import re

import pytest

from tests.unit.test_api_fixtures import MODULE_LOOP, Broker, broker, unique

__all__ = ["broker"]

pytestmark = MODULE_LOOP


def error_code(body: object) -> str:
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    return str(body["error"]["code"])


@pytest.mark.parametrize("document", [
    pytest.param({"node_id": "bad id", "raft_address": "127.0.0.1:7000"}, id="bad-node-id"),
    pytest.param({"node_id": "", "raft_address": "127.0.0.1:7000"}, id="empty-node-id"),
    pytest.param({"node_id": "n" * 65, "raft_address": "127.0.0.1:7000"}, id="long-node-id"),
    pytest.param({"node_id": 7, "raft_address": "127.0.0.1:7000"}, id="node-id-not-a-string"),
    pytest.param({"node_id": "n2", "raft_address": "127.0.0.1"}, id="no-port"),
    pytest.param({"node_id": "n2", "raft_address": "127.0.0.1:0"}, id="port-zero"),
    pytest.param({"node_id": "n2", "raft_address": "127.0.0.1:65536"}, id="port-too-big"),
    pytest.param({"node_id": "n2", "raft_address": "::1:7000"}, id="v6-without-brackets"),
    pytest.param({"node_id": "n2", "raft_address": "0.0.0.0:7000"}, id="wildcard"),
    pytest.param({"node_id": "n2"}, id="no-address"),
    pytest.param({"raft_address": "127.0.0.1:7000"}, id="no-node-id"),
    pytest.param({"node_id": "n2", "raft_address": "127.0.0.1:7000", "x": 1}, id="unknown-field"),
])
async def test_add_member_refuses_bad_input(broker: Broker, document: object) -> None:
    response, body = await broker.call("POST", "/v1/cluster/members", document)
    assert (response.status, error_code(body)) == (400, "invalid_argument")


async def test_add_member_refuses_a_body_that_is_not_a_map(broker: Broker) -> None:
    response, body = await broker.call("POST", "/v1/cluster/members", ["n2"])
    assert (response.status, error_code(body)) == (400, "malformed_request")


async def test_add_member_refuses_this_nodes_own_id(broker: Broker) -> None:
    address = broker.node.config.advertise_address
    response, body = await broker.call("POST", "/v1/cluster/members",
                                       {"node_id": "n1", "raft_address": "127.0.0.1:9"})
    assert (response.status, error_code(body)) == (409, "already_member")
    # The leader itself, at its own address: already a member, nothing to do.
    response, body = await broker.call("POST", "/v1/cluster/members",
                                       {"node_id": "n1", "raft_address": address})
    assert response.status == 200
    assert body["members"] == [{"node_id": "n1", "raft_address": address}]


async def test_remove_member_refusals(broker: Broker) -> None:
    response, body = await broker.call("DELETE", "/v1/cluster/members/n1")
    assert (response.status, error_code(body)) == (409, "cannot_remove_leader")
    assert body["error"]["definite"] is True
    response, body = await broker.call("DELETE", "/v1/cluster/members/nobody")
    assert (response.status, error_code(body)) == (404, "member_not_found")
    response, body = await broker.call("DELETE", "/v1/cluster/members/bad%20id")
    assert (response.status, error_code(body)) == (400, "invalid_argument")


async def test_transfer_leadership(broker: Broker) -> None:
    response, body = await broker.call("POST", "/v1/cluster/leadership/transfer")
    assert (response.status, error_code(body)) == (409, "transfer_refused")
    response, body = await broker.call("POST", "/v1/cluster/leadership/transfer", {"to": "n1"})
    assert response.status == 200
    assert body == {"leader_id": "n1", "leader_url": broker.url}
    response, body = await broker.call("POST", "/v1/cluster/leadership/transfer", {"to": "n7"})
    assert (response.status, error_code(body)) == (404, "member_not_found")
    for bad in ({"to": 5}, {"to": "bad id"}, {"target": "n1"}):
        response, body = await broker.call("POST", "/v1/cluster/leadership/transfer", bad)
        assert (response.status, error_code(body)) == (400, "invalid_argument"), bad


async def test_digest_follows_the_state(broker: Broker) -> None:
    response, first = await broker.call("GET", "/v1/cluster/digest")
    assert response.status == 200
    assert first["node_id"] == "n1"
    assert re.fullmatch(r"[0-9a-f]{64}", first["digest"])
    _, again = await broker.call("GET", "/v1/cluster/digest")
    assert again == first  # nothing applied in between: the same state, the same digest
    queue = unique("digest")
    response, _ = await broker.call("PUT", f"/v1/queues/{queue}", {})
    assert response.status == 201
    _, after = await broker.call("GET", "/v1/cluster/digest")
    assert after["applied_index"] > first["applied_index"]
    assert after["digest"] != first["digest"]
    # In msgpack too, like every endpoint.
    response, packed = await broker.call("GET", "/v1/cluster/digest",
                                         headers={"Accept": "application/msgpack"})
    assert response.status == 200 and packed["digest"] == after["digest"]
