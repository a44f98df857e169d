"""The quality gate: thresholds, regression, patch coverage, test health, outputs.

Plain functions over history and coverage data; the ``gate`` task only parses flags and
prints. Nothing here imports Invoke.
"""
