"""Execution: approved decisions to broker orders, broker messages to events."""
