"""One broker node process: the state machine, its Raft node, the HTTP API and the ticker.

Start order: Raft first (it replays the journal), then HTTP, then the ticker. Stop order is
the reverse, so nothing serves requests against a stopped Raft node. SIGTERM and SIGINT stop
the node gracefully (a leader first hands its leadership to a peer so the cluster does not
wait an election timeout); a second signal exits at once. Before a planned stop, draining
(`POST /v1/node/drain`, raftmq.broker.drain) also makes sure the others can go on without it.

A StatefulSet pod added after the bootstrap first waits until a member names it (k8s_join),
and a data dir recorded as another node's or cluster's is refused (data_dir_identity).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import socket
import sys

from aiohttp import web

from raftmq.broker.api import ApiLimits, create_app
from raftmq.broker.api.handlers_cluster import install_drain
from raftmq.broker.config import NodeSettings, split_host_port
from raftmq.broker.data_dir_identity import DataDirClaimError, claim_data_dir
from raftmq.broker.drain import Drainer
from raftmq.broker.k8s_join import await_membership, fetch_cluster_document
from raftmq.broker.state import BrokerState
from raftmq.broker.ticker import Ticker, wall_clock_ms
from raftmq.cluster import RaftConfig, RaftNode

__all__ = ["BrokerNode", "NodeStartError", "api_limits", "configure_logging", "run_server"]

# Long-polls may hold requests for up to max_wait_ms; a stopping node answers them quickly
# instead (clients retry elsewhere), so HTTP shutdown does not wait that long.
HTTP_SHUTDOWN_TIMEOUT_S = 2.0
LEADERSHIP_HANDOFF_TIMEOUT_S = 3.0
RAFT_STOP_TIMEOUT_S = 10.0
# Exit status after a second signal, like a shell's for SIGINT.
FORCED_EXIT_CODE = 130

log = logging.getLogger(__name__)


class NodeStartError(RuntimeError):
    """The node could not start for a reason the operator can fix (port in use, bad dir)."""


GC_FREEZE_PERIOD_S = 1.0


def api_limits(settings: NodeSettings) -> ApiLimits:
    return ApiLimits(
        max_message_bytes=settings.max_message_bytes,
        max_batch_messages=settings.max_batch_messages,
        max_request_bytes=settings.max_request_bytes,
        max_claim_messages=settings.max_claim_messages,
        max_wait_ms=settings.max_wait_ms,
        max_total_body_bytes=settings.max_total_body_bytes,
        propose_timeout_s=settings.propose_timeout_s,
    )


def raft_config(settings: NodeSettings) -> RaftConfig:
    return RaftConfig(
        node_id=settings.node_id,
        bind_address=settings.raft_bind,
        advertise_address=settings.raft_advertise,
        peers=dict(settings.peers),
        data_dir=settings.data_dir,
        secret=settings.secret,
        fsync=settings.fsync,
        metadata={"http_url": settings.http_advertise_url},
        election_timeout_min_s=settings.election_timeout_min_ms / 1000,
        election_timeout_max_s=settings.election_timeout_max_ms / 1000,
        heartbeat_period_s=settings.heartbeat_ms / 1000,
        compaction_min_bytes=settings.max_log_bytes,
        tick_mode=settings.raft_tick_mode,
        sync_marker=settings.sync_marker,
    )


def configure_logging(settings: NodeSettings) -> None:
    # One process is one node, so the id goes straight into the format: every line carries it.
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{settings.node_id}] %(name)s: %(message)s",
        force=True,
    )
    # Per-request access lines would dominate the log and cost CPU on the hot path.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _check_can_listen(label: str, address: str) -> None:
    """Fail fast on a busy port: Raft would otherwise retry its bind quietly in the background."""
    host, port = split_host_port(address)
    try:
        family, kind, proto, _name, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        raise NodeStartError(f"cannot listen for {label} on {address}: "
                             f"{exc.strerror or exc}") from None


def _prepare_data_dir(settings: NodeSettings) -> None:
    data_dir = settings.data_dir
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise NodeStartError(f"cannot create data dir {str(data_dir)!r}: {exc}") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise NodeStartError(f"data dir {str(data_dir)!r} is not writable")
    try:
        claim_data_dir(data_dir, settings.node_id, settings.cluster_name)
    except DataDirClaimError as exc:
        raise NodeStartError(str(exc)) from None


async def _freeze_long_lived_objects() -> None:
    """A full collection walks every queued message (0.3 s per 500k messages, holding the GIL),
    and all replicas reach that point together: under load all three nodes stalled 600 ms at
    once and lost the leader. Objects that have lived a second are the state; move them out of
    the collector's reach, so a collection only walks the last second's objects. They are still
    freed by reference counting; only a reference cycle among them would leak."""
    while True:
        await asyncio.sleep(GC_FREEZE_PERIOD_S)
        gc.freeze()


class BrokerNode:
    """Owns every long-lived object of one node; `start` then `stop` (each at most once)."""

    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        fault = settings.test_fault
        self.state = BrokerState(drop_publish_every=None if fault is None else fault.drop_publish_every)
        self.raft = RaftNode(raft_config(settings), self.state)
        self.ticker = Ticker(self.raft, self.state)
        self.drainer = Drainer(self.raft, fetch_cluster_document)
        self._runner: web.AppRunner | None = None
        self._raft_started = False
        self._gc_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        _prepare_data_dir(self.settings)
        _check_can_listen("Raft", self.settings.raft_bind)
        _check_can_listen("HTTP", self.settings.http_bind)
        log.info("starting: raft %s (advertised %s), peers %s, data dir %s, fsync %s",
                 self.settings.raft_bind, self.settings.raft_advertise,
                 self.settings.peers or "none", self.settings.data_dir, self.settings.fsync)
        _warn_about_test_settings(self.settings)
        # Set first: a start that fails half-way may have left Raft threads to stop.
        self._raft_started = True
        await self.raft.start()
        await self._start_http()
        self.ticker.start()
        self._gc_task = asyncio.create_task(_freeze_long_lived_objects())
        log.info("serving HTTP on %s (advertised %s)",
                 self.settings.http_bind, self.settings.http_advertise_url)

    async def _start_http(self) -> None:
        app = create_app(self.raft, self.state, api_limits(self.settings), clock_ms=wall_clock_ms)
        install_drain(app, self.drainer)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        self._runner = runner
        host, port = split_host_port(self.settings.http_bind)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise NodeStartError(
                f"cannot listen for HTTP on {self.settings.http_bind}: {exc.strerror or exc}"
            ) from None

    async def stop(self) -> None:
        """Stop accepting HTTP, stop the ticker, hand off leadership, stop Raft."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self.ticker.stop()
        if self._gc_task is not None:
            self._gc_task.cancel()
        if not self._raft_started:
            return
        self._raft_started = False
        await self._hand_off_leadership()
        try:
            await asyncio.wait_for(self.raft.stop(), timeout=RAFT_STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("raft node did not stop within %.0f s", RAFT_STOP_TIMEOUT_S)
        except Exception as exc:  # stopping must go on; the journal is crash-safe anyway
            log.error("raft node failed to stop cleanly: %r", exc)

    async def _hand_off_leadership(self) -> None:
        try:
            if not self.raft.members() or not self.raft.is_leader:
                return
            moved = await self.raft.transfer_leadership(timeout_s=LEADERSHIP_HANDOFF_TIMEOUT_S)
        except Exception as exc:  # best effort: the peers elect a leader without us anyway
            log.warning("leadership hand-off failed: %r", exc)
            return
        log.info("leadership hand-off %s", "done" if moved else "timed out")


def _warn_about_test_settings(settings: NodeSettings) -> None:
    if settings.sync_marker:
        log.info("sync marker on: the journal records its durable length (power-loss tests)")
    if settings.test_fault is None:
        return
    banner = "!" * 78
    # Loud on purpose: a node with this setting loses confirmed messages by design.
    for line in (banner, f"TEST FAULT ENABLED: {settings.test_fault.describe()}",
                 "this node silently LOSES confirmed messages (to test the chaos checker);",
                 "never run it with data you care about", banner):
        log.warning(line)


async def _joined(settings: NodeSettings, stop_requested: asyncio.Event) -> NodeSettings | None:
    """The settings with the peers a joining pod learned; None if told to stop meanwhile."""
    if not settings.join_via_urls:
        return settings
    log.info("pod added after the bootstrap: asking the members whether %s is one of them",
             settings.node_id)
    peers = await await_membership(settings.node_id, settings.raft_advertise,
                                   settings.join_via_urls, stop_requested)
    return None if peers is None else dataclasses.replace(settings, peers=peers)


async def _serve_until_signal(settings: NodeSettings) -> int:
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()

    def on_signal(signum: int) -> None:
        if stop_requested.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            os._exit(FORCED_EXIT_CODE)
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop_requested.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    joined = await _joined(settings, stop_requested)
    if joined is None:
        log.info("stopped before joining")
        return 0
    # Built inside the loop: the Raft node may bind loop-affine objects when constructed.
    node = BrokerNode(joined)
    try:
        await node.start()
    except (NodeStartError, OSError) as exc:
        log.error("cannot start: %s", exc)
        await node.stop()
        return 1
    except BaseException:
        await node.stop()
        raise
    await stop_requested.wait()
    await node.stop()
    log.info("stopped")
    return 0


def run_server(settings: NodeSettings) -> int:
    """Run one node until SIGTERM/SIGINT; returns the process exit code."""
    configure_logging(settings)
    # The Raft thread shares the GIL with the event loop; the default 5 ms switch interval
    # lets a busy loop delay heartbeats and commits by that much per handoff.
    sys.setswitchinterval(settings.switch_interval_ms / 1000.0)
    # The state holds one small object per queued message, and CPython's cyclic collector
    # rescans all of them on every full collection: with the default thresholds applying a
    # publish batch got 3x slower as a queue grew to 300k messages (bench/state_apply.py).
    # Our state has no reference cycles to reclaim, so full collections can be rare.
    gc.set_threshold(50_000, 20, 100)
    return asyncio.run(_serve_until_signal(settings))
