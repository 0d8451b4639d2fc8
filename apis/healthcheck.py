"""`python -m apis.healthcheck [URL]`: exit 0 when the service answers GET /health, else 1.

The container's HEALTHCHECK: the slim image has no curl, and this needs only the standard library.
It checks liveness, not whether an account can serve: a restart would not make Bing serve again.
Proxy variables are ignored (HTTP_PROXY may be set for the upstream legs, never for loopback).
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

DEFAULT_URL = "http://127.0.0.1:22222/health"
TIMEOUT_SECONDS = 4.0


def check(url: str) -> bool:
    """True when `url` answers 200 in time."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Check the URL given (or the default) and say what failed."""
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else DEFAULT_URL
    if check(url):
        return 0
    print(f"unhealthy: no 200 from {url}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
