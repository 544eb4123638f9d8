"""What the notification service does on each event (users.py: the contact and preferences
replicas and the password reset; orders.py: the notices of an order's saga and low stock) and
command (notifying.py: marking a notification read), and how one recipient is notified
(notifying.py)."""

from notification_service.handlers.notifying import Notifier, mark_read
from notification_service.handlers.orders import (
    on_low_stock_detected,
    on_order_cancelled,
    on_order_confirmed,
    on_order_created,
    on_payment_action_required,
    on_payment_failed,
    on_payment_refunded,
)
from notification_service.handlers.users import (
    on_notification_preferences_changed,
    on_password_reset_requested,
    on_user_deleted,
    on_user_registered,
    on_user_updated,
)

__all__ = [
    "Notifier",
    "mark_read",
    "on_low_stock_detected",
    "on_notification_preferences_changed",
    "on_order_cancelled",
    "on_order_confirmed",
    "on_order_created",
    "on_password_reset_requested",
    "on_payment_action_required",
    "on_payment_failed",
    "on_payment_refunded",
    "on_user_deleted",
    "on_user_registered",
    "on_user_updated",
]
