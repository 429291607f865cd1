"""The report's first section: what each model was given (budget, labels), how every hyperparameter was
chosen, and the caveats a reader needs before comparing numbers."""
from __future__ import annotations

from typing import Any

import pandas as pd

from replearn.metrics.stats import seeds_note
from replearn.analyses.base import Analysis, RunArtifacts, Section, register_analysis
from replearn.analyses.render import PLUS_MINUS, table
from replearn.rundir import layout
from replearn.regimes import REGIMES
from replearn.analyses.training import histories

STEP_COST = ("Equal steps are not equal compute: 'encoder passes per image' counts the forward and backward passes "
             "of the encoder each training image costs in one step (two views cost two; BYOL's target network adds "
             "two forward passes without a backward), and 'seconds per step' is the measured training time per "
             "optimisation step (the median over epochs and seeds, on this run's machine, validation excluded).")
GUIDE = ("Every regime started from the same initial encoder of its seed. The table gives each one's training "
         "budget; the notes say how each hyperparameter was chosen and what to keep in mind when comparing.")


@register_analysis("protocol")
class Protocol(Analysis):
    order = -10

    def sections(self, run: RunArtifacts) -> list[Section]:
        cfg = run.config
        train, analysis = cfg.get("train") or {}, cfg.get("analysis") or {}
        options = cfg.get("regimes") or {}
        chosen_by = cfg.get("selection") or {}
        regimes = [m for m in run.models if m.kind == "regime"]
        if not train or not regimes:
            return []
        images = run.dataset.get("train")
        unlabelled = run.dataset.get("unlabelled") or 0  # label-free regimes also train on these
        batch = train.get("batch_size")
        known = isinstance(images, int) and isinstance(unlabelled, int) and isinstance(batch, int) and batch > 0
        labelled = _labelled_images(train, run.dataset, images) if known else None
        recorded = run.summary.get("steps_per_epoch") or {}  # older runs did not record it: shown as missing
        frame = pd.DataFrame([_budget_row(m, train, options, chosen_by, images + (0 if m.trained_with_labels else unlabelled)
                                          if known else None, labelled if m.trained_with_labels else None,
                                          recorded.get(m.name))
                              for m in regimes])
        frame = _with_step_cost(frame, regimes, run, batch if known else None)
        equal = frame["optimisation steps"].nunique(dropna=False) == 1
        steps_per_epoch = recorded.get(regimes[0].name)
        budget = (f"Equal budgets: every regime trained {frame['epochs'].iloc[0]} epochs of {steps_per_epoch} batches of "
                  f"{batch} images ({train.get('optimizer')}, learning rate {train.get('lr')}, "
                  f"{train.get('schedule')} schedule)." if equal else
                  "Budgets differ between regimes (train.budget = per-regime, or label-free regimes also train on "
                  "the dataset's unlabelled images): compare them with that in mind.")
        seeds = train.get("seeds") or [0]
        bullets = [budget, STEP_COST,
                   _probe_bullet(analysis),
                   _subset_bullet(analysis),
                   "Regime hyperparameters are those in the table; the last column says how each was chosen "
                   "(config key selection). Label-free criteria (RankMe, Garrido et al. 2023) are the default in "
                   "experiments/select_hparams.py; a criterion that used validation labels is named as such.",
                   "Baselines: raw pixels; PCA of the pixels fitted on the training split, as many components as the "
                   "latent has, probed like every other layer except for the scaling: its components keep their "
                   "relative variances (one common scale for all), since giving each unit variance would whiten "
                   "them and amplify the weakest; the untrained encoder of each seed.",
                   PLUS_MINUS + f" This run has {len(seeds)} seed{'s' if len(seeds) != 1 else ''}. "
                   + (seeds_note(len(seeds)) or "")]
        bullets += _model_notes(cfg, train, regimes, run)
        with_labels = [m.label for m in regimes if m.trained_with_labels]
        if labelled:
            bullets.insert(1, _label_budget_bullet(train, with_labels, labelled, images))
        elif with_labels:
            bullets.append(f"{', '.join(with_labels)} saw every training label; their label-efficiency points measure "
                           "transfer of features learned with all labels, not learning from few labels.")
        return [Section("protocol", "Protocol", GUIDE, bullets=bullets, table=table(frame, "protocol", run),
                        caption="Training budget of every regime.")]


def _probe_bullet(analysis: dict) -> str:
    """How the linear and kNN probes are fitted and how their settings are chosen."""
    return ("Linear probes: standardised features, multinomial logistic regression fitted to convergence "
            f"(largest gradient entry ≤ {analysis.get('probe_tol')}); the L2 penalty is chosen per layer on the "
            "validation split (under a label budget: by cross-validation inside it) from "
            f"{analysis.get('probe_l2_grid')}"
            + (" (the strongest within one standard error of the best)"
               if analysis.get("probe_selection") == "one-se" else "") + ". kNN probes: cosine, temperature "
            f"{analysis.get('knn_temperature')}, k " + (f"chosen on validation from {analysis.get('knn_k_grid')}"
                                                        if len(analysis.get("knn_k_grid") or []) > 1 else
                                                        f"= {(analysis.get('knn_k_grid') or ['?'])[0]} (fixed)")
            + _knn_cap(analysis) + ". Nothing is chosen on the test split.")


def _model_notes(cfg: dict, train: dict, regimes: list[Any], run: RunArtifacts) -> list[str]:
    """What to keep in mind about the encoder's initial weights and, under several processes, batch norm."""
    bullets: list[str] = []
    model = cfg.get("model") or {}
    if model.get("name", "conv") == "conv":
        init = model.get("init") or "default"
        bullets.append(f"Initial weights (model.init): {init}" + (
            " — PyTorch's own initialisation (Kaiming-uniform with a = √5, weight variance 1/(3·fan-in)), whose "
            "signal and gradients shrink layer by layer in a deep plain CNN; vanishing gradients there are "
            "largely this initialisation (compare model.init=kaiming)." if init == "default" else "."))
    environment = run.json_file(layout.ENVIRONMENT) or {}
    processes = environment.get("world_size") if isinstance(environment, dict) else None
    contrastive = [m.label for m in regimes if m.name == "contrastive"]
    if (isinstance(processes, int) and processes > 1 and contrastive and not train.get("sync_batchnorm")
            and model.get("batch_norm", True) is not False):
        bullets.append(f"{', '.join(contrastive)} trained under {processes} processes with batch norm over each "
                       "process's share of the batch: per-process statistics let a contrastive loss tell "
                       "views apart by batch statistics, the shortcut SimCLR's global batch norm was introduced "
                       "to avoid (Chen et al. 2020); train.sync_batchnorm: true (NCCL) normalises over the "
                       "global batch.")
    return bullets


def _knn_cap(analysis: dict) -> str:
    """How many validation and test images the kNN probe classifies (analysis.knn_eval_points)."""
    cap = analysis.get("knn_eval_points")
    return f", classifying at most {cap:,} validation and test images each (stratified)" if cap else ""


def _subset_bullet(analysis: dict) -> str:
    """The stratified test subsets that bound the analyses whose cost grows faster than the images."""
    points, twonn = analysis.get("analysis_points"), analysis.get("twonn_points")
    text = (f"CKA, dimensions and clustering use at most {points:,} test images (analysis.analysis_points, "
            "class-balanced)" if points else "CKA, dimensions and clustering use the test images")
    return text + (f"; the TwoNN intrinsic dimension at most {twonn:,} of them (analysis.twonn_points)."
                   if twonn else ".")
def _with_step_cost(frame: pd.DataFrame, regimes: list[Any], run: RunArtifacts, batch: int | None) -> pd.DataFrame:
    """The protocol table with each regime's encoder passes per image (a registered regime's ``passes``) and its
    measured seconds per optimisation step (from its training CSVs: each epoch's seconds ÷ its steps)."""
    found = histories(run)
    passes, seconds = [], []
    for model, steps in zip(regimes, frame["optimisation steps"]):
        cls = REGIMES.get(model.name) if model.name in REGIMES.names() else None
        count = getattr(cls, "passes", None)
        known = isinstance(count, tuple) and len(count) == 2 and all(isinstance(c, int) for c in count)
        passes.append(f"{count[0]} forward, {count[1]} backward" if known else "")
        history, epochs = found.get(model.name), frame.loc[len(seconds), "epochs"]
        per_epoch = steps / epochs if steps is not None and epochs else None
        ok = history is not None and "train_seconds" in history and per_epoch
        seconds.append(float(history["train_seconds"].median() / per_epoch) if ok else float("nan"))
    return frame.assign(**{"encoder passes per image": passes, "seconds per step": seconds})


def _labelled_images(train: dict, dataset: dict, images: int) -> int | None:
    """How many labelled training images the label budget (train.labels_per_class) leaves; None without one."""
    budget, classes = train.get("labels_per_class") or 0, dataset.get("num_classes")
    if not budget or not isinstance(classes, int):
        return None
    return min(images, budget * classes)


def _label_budget_bullet(train: dict, with_labels: list[str], labelled: int, images: int) -> str:
    """The protocol's statement of the label budget: who saw which images, and what the probes fitted on."""
    trained = (f"{', '.join(with_labels)} trained on only these labelled images, cycled so that their epochs "
               "have as many steps as everyone else's; " if with_labels else "")
    return (f"Label budget: {train.get('labels_per_class')} labelled training images per class ({labelled} in all, "
            "a class-balanced subset drawn anew for each seed, so the intervals over seeds include the draw, and "
            "the same for every regime of a seed; for a given seed a smaller budget's images are among a larger "
            f"one's). {trained}label-free regimes trained on all {images} training images without labels (and on "
            f"the dataset's unlabelled images, if it has any). Every probe was fitted on the seed's {labelled} "
            "labelled images and chose its penalty (linear) and k (kNN) by 5-fold stratified cross-validation "
            "inside them (with fewer than 2 per class nothing can be chosen: the strongest penalty and the first k "
            "of the grids), then was refitted on all of them: no probe used a label beyond the budget's. The "
            "validation split's labels are used only by the per-epoch training curve (a fixed-penalty probe that "
            "chooses nothing); the test split is unchanged.")


def _budget_row(model: Any, train: dict, options: dict, chosen_by: dict, images: int | None,
                labelled: int | None = None, steps_per_epoch: int | None = None) -> dict[str, Any]:
    """One regime's row of the protocol table: its epochs, images (distinct labelled ones under a label budget)
    and steps (from the steps per epoch the run recorded), and how its settings were chosen."""
    own = options.get(model.name) or {}
    epochs = own.get("epochs") if own.get("epochs") is not None else train.get("epochs")
    steps = steps_per_epoch * epochs if isinstance(steps_per_epoch, int) and epochs is not None else None
    settings = ", ".join(f"{k} {v}" for k, v in own.items() if k != "epochs")
    return {"model": model.label, "epochs": epochs, "training images": labelled or images, "optimisation steps": steps,
            "labels in training": "yes" if model.trained_with_labels else "no", "settings": settings or "defaults",
            "how the settings were chosen": chosen_by.get(model.name) or (
                "replearn's defaults (not tuned here)" if not settings else "as configured (not recorded)")}
