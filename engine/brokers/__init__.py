"""Brokers: the interface, the deterministic simulated broker, and Alpaca over alpaca-py."""
