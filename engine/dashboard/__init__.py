"""The operator's dashboard: a read-only web page over any event log, with the service's
kill switch behind a token. See `app.py` for the routes and README "Dashboard" for the
security model."""
