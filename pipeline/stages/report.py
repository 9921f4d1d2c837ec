"""`report`: report.json / .md / .html of every artifact (the engine copies them to the run
folder's top once the stage has committed)."""

from __future__ import annotations

from pipeline import report
from pipeline.registry import ANY_ARTIFACT
from pipeline.stages.base import Stage, StageConfig, StageResult

class ReportConfig(StageConfig):
    pass

class Report(Stage):
    name = "report"
    Config = ReportConfig
    needs = {ANY_ARTIFACT: "model or file to report on"}
    help = "write report.json, report.md, report.html (with plot) for every artifact of the run"
    publishes = True

    def run(self, ctx, cfg: ReportConfig) -> StageResult:
        data = report.build(ctx.recipe.to_json(), ctx.previous)
        files = report.render(data, ctx.out_dir, run_dir=ctx.run_dir)
        ctx.log("[report] %s", ctx.run_dir / "report.html")
        return StageResult([], {"files": sorted(f.name for f in files.values())})
