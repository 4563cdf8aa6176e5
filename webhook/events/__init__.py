"""CloudEvents notifications: subscribers, a durable SQLite outbox and delivery workers."""
