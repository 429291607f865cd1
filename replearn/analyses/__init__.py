"""Analyses: the base protocol, the registry and the built-in analyses (importing registers them, in the
order they compute; the report orders their sections by ``order``)."""
from .base import (ANALYSES, Analysis, ModelInfo, RunArtifacts, RunContext, Section, SeedContext, final_layer,
                   register_analysis)
from . import (probes, dimensions, similarity, label_efficiency, projection, structure, inspection,  # noqa: E402,F401
               training, summary, run_info, protocol)

__all__ = ["ANALYSES", "Analysis", "ModelInfo", "RunArtifacts", "RunContext", "Section", "SeedContext", "final_layer",
           "register_analysis"]
