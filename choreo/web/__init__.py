"""The FastAPI app every service serves: health, readiness, metrics, the error envelope, ids.

`create_app` adds `/healthz`, `/readyz` and `/metrics`, turns every error into
`{"error": {"code", "message", "details"}}`, and gives each request an id (`X-Request-ID`) and a
W3C trace context (`traceparent`) that logs and published events carry. By role: `app` builds
the app, `errors` holds the envelope and its exception handlers, `context` the request id,
trace context and metrics middleware, `probes` the health and readiness probes, `ops` the
endpoints for the system's own callers (`/metrics`, the internal `/openapi.json`) and the ops
token they need. Importers use the names re-exported here.
"""

from choreo.web.app import ApiDocs, Lifespan, create_app
from choreo.web.context import REQUEST_ID_HEADER, current_request_id, current_traceparent
from choreo.web.errors import RETRY_AFTER_SECONDS, ApiError
from choreo.web.ops import METRICS_PATH, OPENAPI_PATH, metrics_response, require_ops_token
from choreo.web.probes import READINESS_TIMEOUT_SECONDS, ReadinessCheck

__all__ = [
    "METRICS_PATH",
    "OPENAPI_PATH",
    "READINESS_TIMEOUT_SECONDS",
    "REQUEST_ID_HEADER",
    "RETRY_AFTER_SECONDS",
    "ApiDocs",
    "ApiError",
    "Lifespan",
    "ReadinessCheck",
    "create_app",
    "current_request_id",
    "current_traceparent",
    "metrics_response",
    "require_ops_token",
]
