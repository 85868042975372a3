"""Pure folds over the event log: orders, positions, risk state, market and account."""
