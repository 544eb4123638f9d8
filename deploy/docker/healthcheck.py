"""The image's HEALTHCHECK: exit 0 when HEALTHCHECK_URL (default the service's own /healthz on
port 8000) answers 200 within 2 s, else 1 with the reason on stderr."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

URL = os.environ.get("HEALTHCHECK_URL", "http://127.0.0.1:8000/healthz")

request = urllib.request.Request(URL, headers={"User-Agent": "choreo-probe"})
try:
    with urllib.request.urlopen(request, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except (urllib.error.URLError, OSError) as error:
    print(f"{URL}: {error}", file=sys.stderr)
    sys.exit(1)
