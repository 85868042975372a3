"""Deterministic replay and backtest drivers, and reports."""
