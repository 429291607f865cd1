"""The run's own record: dataset splits, the resolved configuration and the software it ran on."""
from __future__ import annotations

import pandas as pd

from replearn.analyses.base import Analysis, RunArtifacts, Section, register_analysis
from replearn.analyses.render import table
from replearn.rundir import layout

GUIDE_DATASET = ("Sizes of the splits. Validation is carved out of the training split; every hyperparameter (probe "
                 "penalty, kNN k) is chosen on it, never on test.")
GUIDE_CONFIG = "The resolved configuration of this run (every default filled in) and the software it ran on."


@register_analysis("run_info")
class RunInfo(Analysis):
    order = 100

    def sections(self, run: RunArtifacts) -> list[Section]:
        sections = []
        d = run.dataset
        if d:
            splits = pd.DataFrame([{"split": s, "images": d.get(s)} for s in ("train", "val", "test")])
            names = ", ".join(map(str, d.get("class_names", [])))
            sections.append(Section("dataset", "Dataset", GUIDE_DATASET, table=table(splits, "dataset", run), bullets=[
                f"{d.get('name')}: images {'×'.join(map(str, d.get('image_shape', [])))}, {d.get('num_classes')} "
                f"classes ({names})", f"source: {d.get('source')}"]))
        config_path = run.run_dir / layout.CONFIG
        try:
            config_text = config_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            config_text = "(config.yaml could not be read)"
        env = pd.DataFrame([{"item": k, "value": str(v)} for k, v in run.environment.items()])
        sections.append(Section("config", "Configuration and environment", GUIDE_CONFIG, code=config_text,
                                table=table(env) if len(env) else None))
        return sections
