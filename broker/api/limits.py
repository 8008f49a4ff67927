"""The HTTP layer's configurable limits (one place, so the node wiring passes them in)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ApiLimits"]


@dataclass(frozen=True)
class ApiLimits:
    max_message_bytes: int = 1_048_576
    max_batch_messages: int = 1_000
    # Also the aiohttp `client_max_size`: a larger body is refused while it is read.
    max_request_bytes: int = 8_388_608
    max_claim_messages: int = 1_000
    # Long-poll cap: a longer `wait_ms` is shortened to this.
    max_wait_ms: int = 30_000
    # Passed into Publish.max_total_bytes: the state refuses batches beyond it (507).
    max_total_body_bytes: int = 1_073_741_824
    propose_timeout_s: float = 10.0
