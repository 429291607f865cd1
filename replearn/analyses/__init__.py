"""Analyses: the base protocol, the registry and the built-in analyses (importing registers them, in the
order they compute unless ``requires`` says otherwise; the report orders their sections by ``order``).
``ordered_analyses`` turns a run's list of analyses (names or import paths) into built, ordered instances."""
from replearn.analyses.base import (ANALYSES, Analysis, ModelInfo, NoOptions, RunArtifacts, RunContext, Section, SeedContext,
                   check_analysis, final_layer, register_analysis)
from replearn.analyses import (probes, dimensions, similarity, label_efficiency, projection, structure, inspection,  # noqa: E402,F401
               training, summary, run_info, protocol, attributions, sanity, faithfulness,
               invariance, robustness, units, tensorboard_export, rulers, collapse)
from replearn.analyses.order import default_analyses, ordered_analyses, report_analyses  # noqa: E402

__all__ = ["ANALYSES", "Analysis", "ModelInfo", "NoOptions", "RunArtifacts", "RunContext", "Section", "SeedContext",
           "check_analysis", "default_analyses", "final_layer", "ordered_analyses", "register_analysis",
           "report_analyses"]
