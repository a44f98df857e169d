"""ReportPortal delivery: journal -> launch per instance, outbox, sync, queries."""
