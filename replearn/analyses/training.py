"""Training dynamics, read from the per-epoch training CSVs: loss and the latent probe on validation
after every epoch, gradient norms by layer, and each trained model's test metrics."""
from __future__ import annotations

import pandas as pd

from replearn.analyses import plots
from replearn.analyses.base import Analysis, RunArtifacts, Section, register_analysis
from replearn.analyses.render import figure, table

GUIDE_CURVES = ("Training loss (relative to the first epoch, so that every regime's loss fits one axis) and the "
                "validation accuracy of a linear probe on the latent after each epoch (same probe settings every "
                "epoch). A probe curve that keeps rising while the loss flattens means the representation is still "
                "reorganising. The table gives each trained model's test metrics.")
GUIDE_GRADIENTS = ("The mean gradient norm of each layer's parameters per training step, by epoch. Norms that shrink "
                   "by orders of magnitude towards the input signal vanishing gradients; a sudden jump signals an "
                   "exploding one (replearn stops and names the layer if a norm becomes non-finite).")

# models.csv's reconstruction errors, each with one meaning: the clean, deterministic reconstruction (every
# reconstructing regime) and each regime's own training objective where that is another error
RECONSTRUCTION_HEADERS = {
    "test_recon_mse": "test reconstruction MSE (clean input)",
    "test_denoising_mse": "test denoising MSE (corrupted input)",
    "test_sampled_recon_mse": "test VAE reconstruction MSE (sampled latent)",
}
RECONSTRUCTION_CAPTION = ("Reconstruction MSE (clean input): every decoding model's error per standardised pixel on "
                          "the clean test images, decoded deterministically (the VAE from its posterior mean); the "
                          "denoising MSE is the denoising regime's own objective, from corrupted inputs, and the "
                          "sampled-latent MSE the VAE's, from one sample of its posterior.")


def histories(run: RunArtifacts) -> dict[str, pd.DataFrame]:
    out = {}
    for regime in run.regimes():
        frames = [frame for _, frame in run.csvs(f"train_{regime}_seed*.csv") if "epoch" in frame]
        if frames:
            out[regime] = pd.concat(frames, ignore_index=True)
    return out


@register_analysis("training")
class Training(Analysis):
    order = 10

    def sections(self, run: RunArtifacts) -> list[Section]:
        found = histories(run)
        if not found:
            return []
        models = run.csv("models")
        shown = None
        if models is not None:
            shown = models.copy()
            shown["model"] = shown.model.map(lambda m: run.style(m)[0])
            shown = shown.rename(columns=RECONSTRUCTION_HEADERS)
        caption = "Test metrics of every trained model, one row per seed." + (
            " " + RECONSTRUCTION_CAPTION if shown is not None and set(RECONSTRUCTION_HEADERS.values()) & set(shown)
            else "")
        return [Section("training", "Training curves", GUIDE_CURVES,
                        figures=[figure(plots.training_curves(found, run.styles()), "training_curves", run)],
                        table=table(shown, "models", run, decimals=4) if shown is not None else None,
                        caption=caption),
                Section("gradients", "Gradient norms by layer", GUIDE_GRADIENTS,
                        figures=[figure(plots.gradient_norms(found, run.styles()), "gradient_norms", run)])]
