"""The idempotent consumer: inbox table, retry policy, dead letters, offset commits.

Each record is applied in its own unit of work together with its inbox row, so a record
delivered twice is applied once. Kafka offsets are committed only after that transaction.
Partitions are worked concurrently, each by its own worker; records of one partition (so of
one key) strictly in order, and a record waiting out its retries holds back only its own
partition.

- `group`: the consumer group member: poll, pause and resume, commit, rebalance, rewind.
- `partitions`: one worker per partition, applying its records in order.
- `records`: one record: decode, route, retry, inbox, dead letter.
- `inbox`: the claim of an event in the inbox (the table of events each consumer applied).
"""

from choreo.consumer.group import Consumer
from choreo.consumer.records import Handler, RetryPolicy

__all__ = ["Consumer", "Handler", "RetryPolicy"]
