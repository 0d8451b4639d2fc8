"""The process-wide Prometheus instruments; any layer records into them, `GET /metrics` exposes them.

They live in `utils/` so that the lower layers (the ChatHub socket, the account pool) can count what
they see without importing the web front. Values are per process: several workers each have their own.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)
TOTAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)

REQUESTS = Counter(
    "bingapi_requests",
    "Chat completion requests by model and HTTP status (a stream that failed in-band is still 200; "
    "see bingapi_request_errors_total).",
    ["model", "status"],
    registry=REGISTRY,
)
REQUEST_ERRORS = Counter(
    "bingapi_request_errors",
    "Chat completion requests that ended in an error envelope, by its code and where it was sent "
    "(status: a real HTTP status; in_band: an error event inside a started stream).",
    ["code", "where"],
    registry=REGISTRY,
)
IN_PROGRESS = Gauge(
    "bingapi_requests_in_progress", "Chat completion requests being answered now.", registry=REGISTRY
)
TIME_TO_FIRST_TOKEN = Histogram(
    "bingapi_time_to_first_token_seconds",
    "From the request's arrival to the first answer text (sent to a stream, or received for a "
    "non-streamed answer).",
    ["model"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
TOTAL_TIME = Histogram(
    "bingapi_request_duration_seconds",
    "From the request's arrival to the end of its response, by model.",
    ["model"],
    buckets=TOTAL_BUCKETS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "bingapi_upstream_errors",
    "Failed upstream attempts by kind (the error code), including those retried on another account "
    "before the client saw anything, and warm-pool creates.",
    ["kind"],
    registry=REGISTRY,
)
OPEN_SOCKETS = Gauge(
    "bingapi_upstream_open_sockets", "ChatHub websockets open to the upstream now.", registry=REGISTRY
)


def count_upstream_error(kind: str | None) -> None:
    """One failed upstream attempt of this kind."""
    UPSTREAM_ERRORS.labels(kind=kind or "upstream_error").inc()
