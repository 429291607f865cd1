"""TensorBoard's embedding projector (``--tensorboard`` or ``analysis.tensorboard: true``): every model's
latent features of the analysed test images, with their class names as metadata and the images themselves as
the sprite, under ``<run dir>/tensorboard/<model>_seed<S>/`` beside the regime's training curves. The
training curves and weight histograms come from ``replearn.training.tensorboard.TensorBoard``."""
from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from replearn.config.sections import Config
from replearn.runtime.log import log
from replearn.training.tensorboard import run_log_dir, summary_writer_class
from replearn.analyses.base import Analysis, SeedContext, register_analysis


@register_analysis("tensorboard_export")
class TensorBoardExport(Analysis):
    order = 200

    def check(self, cfg: Config, data: Any, layers: list[str]) -> None:
        if cfg.analysis.tensorboard:
            summary_writer_class()  # refuses now, before anything is written, when tensorboard is missing

    def compute(self, ctx: SeedContext) -> dict[str, pd.DataFrame]:
        if not ctx.cfg.analysis.tensorboard:
            return {}
        points = torch.as_tensor(ctx.points, dtype=torch.long)
        labels = ctx.data.test_y[points].tolist()
        names = list(getattr(ctx.data, "class_names", None) or [])
        metadata = [names[y] if y < len(names) else str(y) for y in labels]
        images = ctx.data.to_unit_range(torch.as_tensor(ctx.data.test_x[points]).float())
        writer_class = summary_writer_class()
        for model in ctx.fresh:
            layers = ctx.features[model]
            if "latent" not in layers:
                continue
            with writer_class(log_dir=str(run_log_dir(ctx.run.run_dir, model, ctx.seed))) as writer:
                writer.add_embedding(layers["latent"]["test"][points].float(), metadata=metadata, label_img=images,
                                     tag=f"{model}_latent", global_step=0)
        log(f"seed {ctx.seed}: latents of {len(points)} test images written for TensorBoard's projector")
        return {}
