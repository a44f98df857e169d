"""Report files from the history: four JSON reports, a Markdown digest, an HTML page, a badge.

``inv report`` writes them into ``<state>/reports/`` (or ``--output DIR``), each through
``fsutil.atomic_write``. ``<tag>`` is the id of the newest run in the window; when files
for that run already exist, or the window holds no run, a full UTC timestamp with
microseconds is used (``<run id>_20260102T030405123456Z`` / ``20260102T030405123456Z``),
so two reports never overwrite each other. ``coverage-badge.svg`` keeps one name (a stable
address for a README) and is replaced atomically.

Every figure comes from the history (``testviper.analytics``). Figures that cannot be
computed are ``null`` with a ``note``/``data_note``, never 0. Text from tests (messages,
names of profiled targets) is masked (``reporter.masking``), project paths are made
relative and the home directory is shown as ``~``; captured logs are never included.

All JSON reports carry ``schema_version`` (currently 1) and ``metadata``::

    metadata: {generated_at, project, branch, window: {kind: since|days|runs, value,
               label, start, end}, data_state: ok|insufficient_data|no_data,
               data_note, latest_run_id}

Series summaries (``stats.Series.as_dict``)::

    {state: ok|insufficient_data|no_data, unit, points, first, latest, change,
     slope_per_day, median, mad, min, max, note?, series?: [{time, value, run_id}]}

``slope_per_day`` is the least-squares slope with x = days since the window start,
from the runs' start times (not per run); ``mad`` is the unscaled median absolute
deviation; ``change`` is latest minus the first value of the window.

``tv_coverage_analytics_report_<tag>.json``::

    {schema_version, metadata: {..., analysis_period, total_launches_analyzed,
                                report_version: "2"},
     summary: {total_launches, date_range,
               overall: COMPONENT, components: {<name>: COMPONENT}},
     trends: {overall: [{time, value, run_id}], <name>: [...]},   # ascending
     insights: [str], recommendations: [str]}
    COMPONENT = {display_name, launches, avg_coverage (= median), median_coverage, mad,
                 max_coverage, min_coverage, first_coverage, last_coverage, change,
                 slope_per_day, trend: improving|declining|stable|insufficient_data
                 (beyond ±0.1 pp/day), coverage_stability: very_stable|stable|variable|
                 highly_variable|insufficient_data (MAD < 0.5 / 1 / 3 pp)}

``tv_threshold_report_<tag>.json`` (the gate's threshold rules on the newest run)::

    {schema_version, metadata, run_id,
     overall_result: PASS|WARN|FAIL|NO_DATA, overall_coverage, overall_threshold,
     overall_meets_threshold, overall_message,
     components: {<name>: {component, coverage, threshold (fail_under), warn_threshold,
                           threshold_met, action: PASS|WARN|FAIL|NO_THRESHOLD, gap,
                           files, total_statements, missing_lines, message}},
     summary: {total_components, passing, warnings, failing, no_threshold},
     timestamp}

The old ``average_coverage`` (a mean of percentages) is gone: totals are weighted.

``tv_regression_report_<tag>.json``::

    {schema_version, metadata, detection_date, days_analyzed, runs_analyzed,
     components_analyzed,
     regressions: [{type: "immediate", component, severity: major|moderate|minor,
                    current_coverage, previous_coverage, coverage_drop (pp),
                    drop_percentage, run_id, previous_run_id}
                   | {type: "trend", component, severity: moderate|minor, trend_slope
                      (pp/day), median_coverage, latest_coverage, coverage_drop, mad,
                      points_analyzed, days_analyzed}],
     summary: {total, major, moderate, minor},
     component_trends: {<name>: {has_trend: false, reason: "insufficient_data", points}
                        | {has_trend: true, trend_direction, slope, median_coverage, mad,
                           min_coverage, max_coverage, latest_coverage, coverage_range,
                           points}},
     current_coverage: {<name>: float}, new_failures: [nodeid], new_failures_note}

An immediate regression is a drop of more than ``gate.regression.max_drop`` pp from the
previous run (major ≥ 5 pp, moderate ≥ 2); a trend regression a slope below
-0.1 pp/day over at least 3 runs (moderate at -0.5).

``tv_analytics_report_<tag>.json``::

    {schema_version, report_info: {metadata..., report_type: "analytics_summary", purpose},
     delivery_status: {in_window: {<status>: n}, backlog},
     key_insights: {total_tests_analyzed, critical_issues (failing tests), new_failures,
                    warnings, flaky_tests_detected, slower_tests_detected},
     latest_run_summary: RUN | null, runs: [RUN],
     coverage, pass_rate, tests_total, run_durations: SERIES (without points),
     slowest_tests: [{nodeid, latest_duration, outcome, median, mad, slope_per_day,
                      points, state}],
     flaky_tests: [{nodeid, detail}], slower_tests: [{nodeid, detail}],
     failures: [{nodeid, message}], profiles: [{target, samples, latest_wall,
                median_wall, max_peak_rss}],
     top_concerns: [{type, description, priority}], recommendations: [str]}
    RUN = {id, started_at, status, duration, git_branch, git_commit, python, label,
           counts: {tests_total, passed, failed, errors, skipped, xfailed, xpassed},
           pass_rate, cov_percent}

``connection_status`` and ``local_session_summary`` of the old report are replaced by
``delivery_status`` and ``latest_run_summary``: the history, not a live RP call, is the
source.

Also written: ``tv_digest_<tag>.md`` (Markdown for chat, PR comments and
``$GITHUB_STEP_SUMMARY``), ``tv_report_<tag>.html`` (self-contained page: inline SVG
charts, no script, no external URL) and ``coverage-badge.svg`` (colours from
``reports.badge_bands``).
"""
