"""The engine: configuration, clock, risk gate, execution, brokers, data, strategies, service."""
