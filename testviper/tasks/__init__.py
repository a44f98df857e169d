"""The task tree shared by ``inv`` (via tasks.py) and the ``testviper`` console script.

Task modules import only invoke at the top; the library is imported inside task
bodies so that ``inv --list`` stays fast.
"""

from invoke import Collection

from testviper.tasks import alert, delivery, gate, history, ops, report, rp, runs
from testviper.tasks.config import config
from testviper.tasks.health import diagnose, health
from testviper.tasks.keys import rotate_keys
from testviper.tasks.profile import profile
from testviper.tasks.routines import ci_status, daily, monthly, weekly
from testviper.tasks.schedule import schedule

ns = Collection(runs.run_, runs.runs, config, gate.gate)
ns.add_collection(ops.backup_ns)
ns.add_task(ops.restore)
ns.add_task(ops.cleanup)
ns.add_task(rotate_keys)
ns.add_task(delivery.sync)
ns.add_task(delivery.deliveries)
ns.add_task(report.report)
ns.add_task(health)
ns.add_task(diagnose)
ns.add_task(profile)
ns.add_task(daily)
ns.add_task(weekly)
ns.add_task(monthly)
ns.add_task(ci_status)
ns.add_collection(rp.rp)
ns.add_collection(history.history)
ns.add_collection(schedule)
ns.add_collection(alert.alert)
# Cron and CI have no terminal; and stdin mirroring breaks under pytest capture.
ns.configure({"run": {"in_stream": False}})
