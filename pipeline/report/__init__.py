"""The run's report: every artifact with accuracy, size (raw, gzip) and measured latency.

`build` makes the report.json dict (a contract other tools read: fields are added, never renamed);
`render` writes report.json, report.md, report.html and the accuracy-vs-latency/size plot.
"""

from pipeline.report.build import build
from pipeline.report.render import render

__all__ = ["build", "render"]
