"""The two drivers that replay a log's world: `replay.backtest` (bars through the real engine:
driver, step loop, sweep, report, plots) and `replay.forensics` (read-only questions about a
recorded log: timeline, state, explain, verify, diff against a broker)."""
