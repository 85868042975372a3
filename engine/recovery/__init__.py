"""Startup recovery, continuous reconciliation and the kill switch."""
