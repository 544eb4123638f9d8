"""A relay in a process of its own, for tests that kill it: relay_process.py DSN BOOTSTRAP."""

from __future__ import annotations

import asyncio
import os
import sys

from choreo import kafka
from choreo.outbox import Relay


async def main(conninfo: str, bootstrap: str) -> None:
    producer = kafka.producer(bootstrap)
    await producer.start()
    batch_size = int(os.environ.get("RELAY_BATCH_SIZE", "500"))
    await Relay(conninfo, producer, batch_size=batch_size, poll_interval=0.2).run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
