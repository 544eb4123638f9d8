"""User service: accounts, password auth, JWT issuing, profiles and roles."""
