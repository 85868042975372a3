"""The pre-trade risk gate: limits, reason codes, the pure decision and the one task that
serializes every decision."""
