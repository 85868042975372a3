"""Alerts that reach a person: rules that turn log events into alerts, and webhook delivery
that never blocks trading. Every delivery attempt's outcome is recorded (`AlertSent`)."""
