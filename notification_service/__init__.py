"""Notification service: e-mail and in-app notifications, dead-letter topic."""
