"""The end-to-end scenarios of tests/e2e that use only what every stack offers (`System`), run
here against docker-compose: one scenario suite, two stacks."""

from __future__ import annotations

from tests.e2e.test_dead_letters import (
    test_a_refused_email_is_dead_lettered_then_replayed_exactly_once,
)
from tests.e2e.test_journey import test_register_login_add_a_card_order_and_get_confirmed
from tests.e2e.test_security import (
    test_a_customer_cannot_see_or_cancel_another_customers_order,
    test_an_expired_token_of_the_real_key_is_refused,
    test_customers_are_forbidden_admin_routes,
)

__all__ = [
    "test_a_customer_cannot_see_or_cancel_another_customers_order",
    "test_a_refused_email_is_dead_lettered_then_replayed_exactly_once",
    "test_an_expired_token_of_the_real_key_is_refused",
    "test_customers_are_forbidden_admin_routes",
    "test_register_login_add_a_card_order_and_get_confirmed",
]
