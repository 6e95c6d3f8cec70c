"""The run report: optimization history, best recipe, Pareto front, importance, samples, timings.

::

    path = write_report("runs/demo")     # runs/demo/report/report.html + PNGs

Reads the study without writing to it, so it works on a run that is still going or was
interrupted. Written at the end of every search and by ``evomerge report RUN_DIR``.
"""

from evomerge.report._data import ReportData, TrialRow, load_report_data
from evomerge.report._html import render_html, write_report

__all__ = ["ReportData", "TrialRow", "load_report_data", "render_html", "write_report"]
