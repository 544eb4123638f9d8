"""The embedded stack behind `choreo up`: PostgreSQL, a Kafka-protocol broker, the Stripe and
SendGrid emulators and the six services, as supervised child processes on loopback ports."""

from __future__ import annotations

from choreo.stack.broker import TansuBroker
from choreo.stack.config import SERVICES, Service, StackConfig, StackPorts
from choreo.stack.errors import PartExitedError, ReadinessTimeoutError, StackError
from choreo.stack.postgres import EmbeddedPostgres
from choreo.stack.process import ChildProcess, OutputSink, ProcessSpec
from choreo.stack.s3 import MotoS3
from choreo.stack.sendgrid_sink import SendGridSink
from choreo.stack.stack import Link, Stack
from choreo.stack.stripe import LocalStripe
from choreo.stack.supervisor import Supervisor

__all__ = [
    "SERVICES",
    "ChildProcess",
    "EmbeddedPostgres",
    "Link",
    "LocalStripe",
    "MotoS3",
    "OutputSink",
    "PartExitedError",
    "ProcessSpec",
    "ReadinessTimeoutError",
    "SendGridSink",
    "Service",
    "Stack",
    "StackConfig",
    "StackError",
    "StackPorts",
    "Supervisor",
    "TansuBroker",
]
