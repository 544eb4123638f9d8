"""Gateway service: the public HTTP API (auth check, rate limits, routing, CORS, OpenAPI)."""
