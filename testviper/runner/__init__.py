"""Run pytest once with coverage and the journal plugin, then ingest the run."""
