"""Payment service: card vault (tokenized through Stripe), charges and refunds."""
