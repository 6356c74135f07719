"""Everything Dagster loads: `workspace.yaml` and `[tool.dagster]` both point here.

Loading it reads (and on first start seeds) the job store under DAGSTER_HOME.
"""

from retraining_pipelines.code_location import build_definitions

defs = build_definitions()
