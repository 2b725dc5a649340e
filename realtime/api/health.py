"""Liveness (``/health``) and readiness (``/ready``) probes; both need no credentials.

``/ready`` probes the database and the broker on every call, never from a cache, so a load
balancer stops sending traffic as soon as either stops responding.
"""

from __future__ import annotations

import asyncio
import logging

from litestar import Response, get
from litestar.datastructures import State
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from realtime.api.params import PUBLIC
from realtime.api.schemas import HealthStatus

logger = logging.getLogger(__name__)

# A probe that takes longer than this counts as failed; load balancers time out soon after.
PROBE_TIMEOUT_SECONDS = 2.0


@get("/health", tags=["health"], summary="200 while the process runs", exclude_from_auth=True, security=PUBLIC)
async def health() -> HealthStatus:
    return HealthStatus(status="ok")


async def _probe(name: str, ping) -> str | None:
    """Run one probe; return None when it succeeded, else a short reason without connection details."""
    try:
        await asyncio.wait_for(ping(), timeout=PROBE_TIMEOUT_SECONDS)
    except TimeoutError:
        logger.warning("readiness probe of the %s timed out after %.1f s", name, PROBE_TIMEOUT_SECONDS)
        return f"{name} did not answer within {PROBE_TIMEOUT_SECONDS:g} s"
    except Exception as error:
        logger.warning("readiness probe of the %s failed: %s", name, type(error).__name__)
        return f"{name} unavailable ({type(error).__name__})"
    return None


@get("/ready", tags=["health"], summary="200 when the database (and Redis, where configured) answer now, else 503", security=PUBLIC)
async def ready(state: State) -> Response[dict]:
    probes = {"database": state.db.ping}
    broker = getattr(state, "broker", None)
    if broker is not None:
        probes["broker"] = broker.ping

    failures = []
    checks = {}
    for name, ping in probes.items():
        reason = await _probe(name, ping)
        checks[name] = "ok" if reason is None else "failed"
        if reason is not None:
            failures.append(reason)

    if failures:
        body = {"status_code": HTTP_503_SERVICE_UNAVAILABLE, "detail": "not ready: " + "; ".join(failures), "checks": checks}
        return Response(body, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"status": "ready", "checks": checks}, status_code=HTTP_200_OK)
