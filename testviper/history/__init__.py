"""The history store: runs, tests, coverage by file and component, deliveries, profiles."""
