"""The embedded stack behind `choreo up`: PostgreSQL, a Kafka-protocol broker, the Stripe and
SendGrid emulators and the six services, as supervised child processes on loopback ports.

Import what you need from its modules (`choreo.stack.postgres`, `.broker`, `.supervisor`,
`.stack`, ...): this package imports nothing, so `python -m choreo.stack.stripe` and the
test fixtures load only what they use.
"""
