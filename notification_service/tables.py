"""The notification service's own tables (the kit's outbox and inbox come from choreo).

`contacts`, `orders` and `order_cancellations` are replicas built from events (`user.event`,
`order.create`, `order.event`): the service never asks the user or order service.
`preferences` is a replica too (`user.event`): the channels each user chose.
`deliveries` makes each e-mail and SMS go out at most once; `notifications` are what users
read in the app.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

# One row per user seen on `user.event`. A deleted user keeps only its id and deleted_at (a
# tombstone, so a late or replayed UserRegistered does not bring the details back).
contacts = Table(
    "contacts",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("email", Text),
    Column("full_name", Text),
    Column("role", Text),  # from UserRegistered; null while only a UserUpdated was seen
    Column("phone", Text),  # from UserUpdated (E.164); where an SMS goes
    # When the details held were current (the event's own time): older events do not
    # overwrite newer details, whatever order they arrive in.
    Column("details_at", DateTime(timezone=True)),
    Column("deleted_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("contacts_admins", "user_id", postgresql_where=text("role = 'admin'")),
)

# What OrderCreated said, so that payment events (which name no user) find their customer.
orders = Table(
    "orders",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("item_count", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Orders seen cancelled (OrderCancelled): a notification the cancellation makes untrue, handled
# after it (domain.CONTRADICTED_BY_CANCELLATION), is not sent.
order_cancellations = Table(
    "order_cancellations",
    metadata,
    Column("order_id", Uuid, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A user's notification preferences, as NotificationPreferencesChanged last said (kind ->
# channel -> on); no row: the defaults (domain.chosen_channels). Newer changed_at wins.
preferences = Table(
    "preferences",
    metadata,
    Column("user_id", Text, primary_key=True),
    Column("channels", JSONB, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# One row per message (an e-mail or an SMS), claimed (committed) before the provider is called.
# See deliveries.py.
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
    Column("event_id", Text, nullable=False),
    Column("recipient", Text, nullable=False),  # the contact's user id
    Column("kind", Text, nullable=False),
    Column("channel", Text, nullable=False, server_default=text("'email'")),  # email or sms
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("1")),
    Column("last_error", Text),
    Column("provider_message_id", Text),
    Column("claimed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("event_id", "recipient", "kind", "channel", name="deliveries_once"),
    CheckConstraint("status IN ('claimed', 'sent', 'failed', 'skipped')", name="deliveries_status"),
)

# `seq` orders a user's notifications for the live stream (its SSE event ids): a trigger
# (migration notification_0004) reassigns it when the inserting transaction commits, under a
# lock, so seq order is commit order, and NOTIFYs `notification_stream` with `user_id:seq`.
notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=func.gen_random_uuid()),
    Column("user_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("read_at", DateTime(timezone=True)),
    Column("seq", BigInteger, Identity(always=False), nullable=False),
    UniqueConstraint("event_id", "user_id", "kind", name="notifications_once"),
    Index("notifications_by_user", "user_id", "created_at", "id"),
    Index("notifications_stream", "user_id", "seq", unique=True),
)
