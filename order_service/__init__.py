"""Order service: orders and the saga's state machine, order timeouts."""
