"""One comparison experiment: config → data → models → training → features (once) → analyses → report.

``Experiment`` is the whole of it as a Python object. Each seed trains every regime from the same initial
encoder, extracts every model's features once and hands them to the analyses; everything lands in the
run directory as CSV/JSON/NPZ, written atomically, and the report is rendered from those files alone.
The stages can be called one by one (``prepare``, ``train``, ``extract``, ``analyse``, ``finish``,
``render``) or chained by ``run``; ``Experiment.resume`` continues an interrupted run: finished regimes
are loaded, an interrupted one restarts from its last completed step, analyses are redone.

    from replearn import Experiment
    report = Experiment("digits", ["train.epochs=2"], out="reports/quick").run()
"""
from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from collections.abc import Mapping
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch

from replearn.experiment import costs
from replearn.runtime import distributed
from replearn.version import __version__
from replearn.analyses import Analysis, RunContext, SeedContext
from replearn.analyses.base import Features, write_models
from replearn.analyses.summary import closing_summary, summarize
from replearn.rundir.io import check_run_dir, load_checkpoint, load_state_dict_checked, read_json, save_checkpoint, \
    write_json
from replearn.config.sections import Config, apply_overrides, config_from_dict, dump_yaml, load_config
from replearn.data import Dataset, analysis_view, stratified_subset
from replearn.data.label_budget import analysis_train_view, labelled_subset, training_view
from replearn.encoders import Encoder, build_encoder, encoder_spec
from replearn.errors import ReplearnError
from replearn.encoders.extract import extract_splits, pca_baseline, pixel_features
from replearn.runtime.log import Heartbeat, RunClock, log
from replearn.experiment.plugins import Plugins, resolve
from replearn.experiment import second_process
from replearn.experiment.second_process import SecondProcess, TrainingQueue, wants_second_process
from replearn.experiment.preflight import check_data_fits, log_plan, plan_run, preflight
from replearn.regimes import Regime
from replearn.report.html import render_report
from replearn.report.predraw import DrawnSections, SectionDrawer
from replearn.runtime.threads import available_cores
from replearn.rundir.directory import RunDir, unlock_directory
from replearn.training import (Checkpoint, EpochLog, EpochProbe, MetricsCSV, ProgressBar, SignalStop, Snapshots, Stopper,
                       Trainer, TrainSettings, resolve_device)
from replearn.rundir import layout
from replearn.experiment.guards import StageGuards
from replearn.experiment.records import environment_record, model_infos, study_callbacks, build_head, step_flops, checkpoint_payload, test_metrics_row

# an analysis predicted to take longer than this is announced with its prediction; one that runs longer than
# HEARTBEAT_SECONDS says so every HEARTBEAT_SECONDS
LONG_STEP_SECONDS, HEARTBEAT_SECONDS = 5.0, 10.0
DRAW_AHEAD_MIN_SECONDS = 5.0  # analysis.draw_ahead=auto: below this a second process costs more than it overlaps


class Experiment(StageGuards):
    """A comparison run, built from a config (a ``Config``, a YAML path or a bundled experiment's name) and
    ``key=value`` overrides; every plug-in it names is resolved and validated here, before anything runs."""

    def __init__(self, config: Config | str | Path | None = None, overrides: Iterable[str] = (), *,
                 out: str | Path | None = None, force: bool = False, progress: bool = True) -> None:
        if isinstance(config, Config):
            cfg = config_from_dict(apply_overrides(config.to_dict(), list(overrides))) if overrides else config
        else:
            cfg = load_config(config, list(overrides))
        self.plugins: Plugins = resolve(cfg)
        self.config: Config = self.plugins.config
        self.force, self.progress, self.resuming = force, progress, False
        self.world, self.device = distributed.init(self.config.train, resolve_device(self.config.train.device))
        chosen = RunDir(out) if out is not None else RunDir.default(cfg.name)
        self.run_dir = RunDir(distributed.broadcast_object(chosen.path))  # rank 0's timestamp names it for all
        self.data: Dataset | None = None
        self.analysed: Dataset | None = None  # the stratified view of the data the analyses use (prepare)
        self.labelled: np.ndarray | None = None  # train.labels_per_class: the first seed's labelled images (load_data)
        self._labelled: dict[int, np.ndarray] = {}  # each seed's own draw of them (labelled_for)
        self._analysed: dict[int, Dataset] = {}  # under a label budget, each seed's view for the analyses
        self.context: RunContext | None = None  # what every seed's analyses share (prepare)
        self.encoders: dict[int, dict[str, Encoder]] = {}
        self.heads: dict[int, dict[str, torch.nn.Module]] = {}  # each trained regime's head, by seed
        self.model_rows: list[dict[str, Any]] = []
        self.results: dict[str, list[pd.DataFrame]] = {}
        self.stopper = Stopper()
        self.clock = RunClock(len(self.seeds))
        self.phases: list[Any] = []  # the cost model's plan (preflight.plan_run), once the data are loaded
        self._analysis_seconds: dict[str, float] = {}  # each analysis's compute time, over every seed
        self._baselines: dict[str, Any] = {}
        self._features: dict[int, dict[str, Features]] = {}
        self._extraction_seconds = 0.0
        self._seed_analysis_started: dict[int, float] = {}  # when each seed's extraction began (for the ETA)
        self._running = False  # set once this process has marked the run directory as running (prepare)
        self._lock: int | None = None  # this process's lock on the run directory (prepare; released by run)
        self._prepared = False  # prepare() has run: the data are loaded and the run directory exists
        self._analysed_seeds: set[int] = set()  # the seeds analyse() has run for
        self._completed = False  # run() finished: the run directory is complete and is not to be touched again
        self._drawer: SectionDrawer | None = None  # draws the report's sections during the last seed's analyses
        self._drawer_wanted = False  # run(): draw the report's sections ahead (analysis.draw_ahead)
        self._drawer_lock = threading.Lock()  # _start_drawer may be called from the second process's reader
        self._trained_elsewhere: set[tuple[str, int]] = set()  # (regime, seed) trained by a second process
        self._step_flops: dict[str, float] = {}  # one training step's FLOPs, by regime (step_flops)

    @classmethod
    def resume(cls, run_dir: str | Path, progress: bool = True) -> "Experiment":
        """The experiment of an interrupted run, with its saved config (refused if edited or complete)."""
        check_run_dir(run_dir, need="resume")
        experiment = cls(load_config(Path(run_dir) / layout.CONFIG), out=run_dir, progress=progress)
        experiment.run_dir.check_resumable(experiment.config.to_dict())
        experiment.resuming = True
        return experiment

    @classmethod
    def attach(cls, run_dir: str | Path) -> Experiment:
        """The experiment of a run that another process is running, ready to train some of its regimes for it
        (``second_process``): its saved config and data, no lock taken and nothing written but training's."""
        experiment = cls(load_config(Path(run_dir) / layout.CONFIG), out=run_dir, progress=False)
        experiment.resuming = True
        experiment.data = experiment.plugins.dataset.load(experiment.config.data)  # the run has checked them
        experiment._draw_labelled(experiment.data)
        experiment._prepared = True
        return experiment

    @property
    def seeds(self) -> list[int]:
        return list(self.config.train.seeds)

    @property
    def regimes(self) -> list[Regime]:
        return self.plugins.regimes

    def load_data(self) -> Dataset:
        """Load the dataset and check that the model, the regimes and the analyses fit it; writes nothing."""
        if self.data is None:
            data = self.plugins.dataset.load(self.config.data)
            try:
                self.check_data(data)
            except BaseException:  # refused: a cache the source made for these data goes too
                self.plugins.dataset.discard()
                raise
            self.data = data
        return self.data

    def check_data(self, data: Dataset, checked: set[str] | None = None) -> None:
        """Check that the model, the regimes, the analyses and the label budget fit ``data`` (loaded by this
        experiment's dataset, or by another with the same data config); writes nothing. ``checked`` (a sweep's
        planning) holds the configs whose fit and first training step were already checked: those depend only on
        the data, model, regimes, batch size, precision and analysis settings, not on e.g. the learning rate or
        the epochs, so a grid over such keys runs them once."""
        raw = self.config.to_dict()
        key = json.dumps([raw.get(k) for k in ("data", "model", "regimes", "analysis")] +
                         [raw["train"].get(k) for k in ("regimes", "batch_size", "precision")] + [str(self.device)],
                         sort_keys=True, default=str)
        if checked is None or key not in checked:
            check_data_fits(self.config, data, self.device)
            if checked is None:  # a run's own check (not a sweep's planning): its phases' predicted cost
                self.phases = plan_run(self.config, data, [a.name for a in self.plugins.analyses], self.device)
            preflight(self.config, self.regimes, data, self.device)
            if checked is not None:
                checked.add(key)
        layers = ["input"] + build_encoder(self.config.model, data.image_shape, 0).layer_names
        for analysis in self.plugins.analyses:
            analysis.check(self.config, data, layers)
        if self.resuming:
            self.run_dir.check_same_data(data.summary())
        self._draw_labelled(data)
        if checked is None and self.phases:  # every check passed: the run will start
            log_plan(self.phases)

    def _draw_labelled(self, data: Dataset) -> None:
        """The label budget's images of the first seed (``train.labels_per_class``), drawn once."""
        if self.config.train.labels_per_class:
            self.labelled = labelled_subset(data.train_y.numpy(), self.config.train.labels_per_class,
                                            self.seeds[0], data.class_names, data.num_classes)
            self._labelled[self.seeds[0]] = self.labelled

    def prepare(self) -> None:
        """Load the data, then create (or reopen, when resuming) the run directory and write what a run
        starts with; analyses are prepared on the stratified view of the data they use. With several processes
        rank 0 alone writes, once every rank has checked its inputs."""
        self._refuse_if_complete("prepare()")
        if self._prepared:
            raise ReplearnError(f"prepare() was already called for {self.run_dir}",
                                "call each stage once; build a new Experiment for another run")
        distributed.wait_for_main()
        if not self.world.main:
            self._prepared = True
            self.analysed = analysis_view(self.load_data(), self.config.analysis.max_images_per_split,
                                          self.config.data.split_seed)
            return
        if not self.resuming:
            self.run_dir.check_free(self.force)
        data = self.load_data()
        if not self.resuming:
            self.run_dir.create(self.force)
        self._lock = self.run_dir.lock()  # a second process writing here (another sweep, a resume) is refused
        log(f"run directory: {self.run_dir}")
        log(f"dataset {data.name}: {len(data.train_y)} train / {len(data.val_y)} val / {len(data.test_y)} test, "
            f"images {'×'.join(map(str, data.image_shape))}, device {self.device}; regimes "
            f"{', '.join(r.name for r in self.regimes)}")
        try:
            if self.resuming:
                self.run_dir.clear_temporaries()
            else:
                self.run_dir.start(dump_yaml(self.config), self.config.to_dict(), environment_record(self))
            write_json(self.run_dir / layout.DATASET, data.summary())
            self.context = RunContext(self.config, self.run_dir.path, model_infos(self.regimes), self.progress)
            write_models(self.run_dir.path, self.context.models)
            self.run_dir.set_status("running")
            self._running = True
        except OSError as exc:
            raise self.run_dir.write_failure(exc, self.resuming) from None
        self.analysed = analysis_view(self.probe_data(), self.config.analysis.max_images_per_split,
                                      self.config.data.split_seed)
        self._prepared = True
        if self.analysed is not data:
            log(f"analyses use a stratified subset: {len(self.analysed.train_y)} train / {len(self.analysed.val_y)} "
                f"val / {len(self.analysed.test_y)} test images ("
                f"{'train.labels_per_class, ' if self.labelled is not None else ''}analysis.max_images_per_split)")
        self._plan_clock()

    def planned_steps(self, regime: Regime) -> int:
        """Training steps of one seed of ``regime``."""
        return Trainer.steps_in_epoch(len(Trainer.training_images(regime, self.data)), self.config.train.batch_size) \
            * self.plugins.epochs_for(regime)

    def step_flops(self, regime: Regime) -> float:
        """FLOPs of one training step of ``regime`` (``records.step_flops``), counted once per run: the ETA and
        the choice of a second training process both weigh them."""
        if regime.name not in self._step_flops:
            self._step_flops[regime.name] = step_flops(self, regime)
        return self._step_flops[regime.name]

    def _plan_clock(self) -> None:
        for regime in self.regimes:
            steps = self.planned_steps(regime)
            self.clock.plan(regime.name, steps * len(self.seeds), self.step_flops(regime))
            for seed in self.seeds:
                if self.run_dir.checkpoint(regime.name, seed).exists():
                    self.clock.skip(regime.name, steps)
        if self.phases:
            seeds = max(1, len(self.seeds))
            self.clock.plan_analyses({p.name: p.seconds / seeds for p in self.phases
                                      if p.name not in (costs.TRAINING, costs.REPORT)},
                                     next((p.seconds for p in self.phases if p.name == costs.REPORT), 0.0))

    def labelled_for(self, seed: int | None = None) -> np.ndarray | None:
        """The label budget's images for ``seed`` (default: the first seed): a new class-balanced draw per seed,
        nested across budgets (``labelled_subset``); None without a budget."""
        if self.labelled is None:
            return None
        seed = self.seeds[0] if seed is None else seed
        if seed not in self._labelled:
            self._labelled[seed] = labelled_subset(self.data.train_y.numpy(), self.config.train.labels_per_class,
                                                   seed, self.data.class_names, self.data.num_classes)
        return self._labelled[seed]

    def probe_data(self, seed: int | None = None) -> Dataset:
        """The data every probe may fit on: the training split cut to the label budget's images (the seed's
        draw) when it is set."""
        labelled = self.labelled_for(seed)
        return self.data if labelled is None else analysis_train_view(self.data, labelled)

    def analysed_for(self, seed: int) -> Dataset:
        """The stratified view the analyses of ``seed`` use: the same for every seed, except that under a label
        budget its training split is the seed's own labelled draw."""
        if self.labelled is None:
            return self.analysed
        if seed not in self._analysed:
            self._analysed = {seed: analysis_view(self.probe_data(seed), self.config.analysis.max_images_per_split,
                                                  self.config.data.split_seed)}
        return self._analysed[seed]

    def training_data(self, regime: Regime, seed: int | None = None) -> Dataset:
        """What ``regime`` trains on: the label budget's images of the seed (cycled) for a regime that needs
        labels, when a budget is set; otherwise the whole dataset."""
        labelled = self.labelled_for(seed)
        if labelled is None or not regime.needs_labels:
            return self.data
        return training_view(self.data, labelled)

    def initial_encoder(self, seed: int) -> Encoder:
        """The seed's initial encoder, saved once so that every regime (and a resumed run) starts from it."""
        self._need_stage(f"initial_encoder({seed!r})", "prepare()", self._prepared)
        data, cfg = self.data, self.config
        encoder = build_encoder(cfg.model, data.image_shape, seed)
        path = self.run_dir.initial_weights(seed)
        if path.exists():
            load_state_dict_checked(encoder, load_checkpoint(path)["encoder"], f"initial weights {path}")
        elif self.world.main:  # the other ranks built the same weights from the same seed
            save_checkpoint(path, {"format": "replearn-checkpoint", "kind": "init", "seed": seed,
                                   "encoder": encoder.state_dict(), "encoder_spec": encoder_spec(cfg.model, data.image_shape),
                                   "config": cfg.to_dict(), "in_shape": list(encoder.in_shape),
                                   "num_classes": data.num_classes, "dataset": data.summary(), "regime": "random",
                                   "replearn": __version__})
        self.encoders.setdefault(seed, {})["random"] = encoder
        return encoder

    def train(self, regime: Regime | str, seed: int) -> Encoder:
        """Train ``regime`` from the seed's initial encoder (or load it, when its checkpoint exists)."""
        self._need_stage(f"train({regime if isinstance(regime, str) else regime.name!r}, {seed!r})", "prepare()",
                         self._prepared)
        regime = self.plugins.regime(regime) if isinstance(regime, str) else regime
        init = self.encoders.get(seed, {}).get("random") or self.initial_encoder(seed)
        self.clock.begin(regime.name)
        encoder = copy.deepcopy(init)
        head = build_head(regime, encoder, self.data, seed)
        final = self.run_dir.checkpoint(regime.name, seed)
        if final.exists():
            quiet = (regime.name, seed) in self._trained_elsewhere  # the second process said it was trained
            row = self._load_trained(regime, seed, encoder, head, quiet=quiet)
        else:
            row = self._fit(regime, seed, encoder, head)
        self.model_rows.append(row)
        self.encoders[seed][regime.name] = encoder
        self.heads.setdefault(seed, {})[regime.name] = head
        return encoder

    def _train_seed(self, seed: int) -> None:
        """Train every regime of ``seed``. With a second process (``train.second_process``), the longest
        predicted first, each taken by whichever process is free (``TrainingQueue``); loaded in the regimes'
        order either way."""
        shared = wants_second_process(self, seed)
        queue = TrainingQueue.for_seed(self, seed, shared)
        second = SecondProcess(self.run_dir.path, seed, queue, on_take=self._trained_elsewhere_soon,
                               on_done=self._start_drawer) if shared else None
        here: set[str] = set()
        try:
            if second is not None and not second.start():
                queue.share_with_none()
                second = None
            second_process.release_spare()
            if second is None:
                self._start_drawer()  # it imports while training leaves a core idle
            while (regime := queue.take_here()) is not None:
                self.train(regime, seed)
                here.add(regime.name)
                self._stop_if_asked()
            if second is not None:
                self._start_drawer()  # (or as the second one ended) it imports while this one waits
                self._trained_elsewhere |= {(name, seed) for name in second.wait()}
        finally:
            if second is not None:
                second.stop()
        for regime in self.regimes:  # those trained elsewhere, finished before, or left by the second process
            if regime.name in here:
                continue
            if regime.name in queue.given and (regime.name, seed) not in self._trained_elsewhere:  # here after all
                self.clock.plan(regime.name, self.planned_steps(regime), self.clock.step_cost.get(regime.name, 0.0))
            self.train(regime, seed)
            self._stop_if_asked()
        self._in_regime_order(seed)

    def _trained_elsewhere_soon(self, name: str) -> None:
        """The second process took ``name``: the ETA counts only the training left here."""
        self.clock.skip(name, self.planned_steps(self.plugins.regime(name)))

    def _in_regime_order(self, seed: int) -> None:
        """The seed's models and rows in the regimes' order, however their training was shared out."""
        order = {name: i for i, name in enumerate(["random", *(r.name for r in self.regimes)])}
        models = self.encoders.get(seed, {})
        self.encoders[seed] = dict(sorted(models.items(), key=lambda item: order.get(item[0], len(order))))
        mine = [row for row in self.model_rows if row.get("seed") == seed]
        others = [row for row in self.model_rows if row.get("seed") != seed]
        self.model_rows = others + sorted(mine, key=lambda row: order.get(str(row.get("model")), len(order)))

    def _start_drawer(self) -> None:
        """Start the process that draws the report's sections ahead (once, when ``_draws_ahead``; the second
        training process's reader thread may call this as that process ends)."""
        with self._drawer_lock:
            if self._drawer_wanted and self._drawer is None:
                self._drawer = SectionDrawer(self.run_dir.path)
                self._drawer.start()

    def _load_trained(self, regime: Regime, seed: int, encoder: Encoder, head: torch.nn.Module,
                      quiet: bool = False) -> dict[str, Any]:
        final = self.run_dir.checkpoint(regime.name, seed)
        ckpt = load_checkpoint(final)
        load_state_dict_checked(encoder, ckpt["encoder"], f"checkpoint {final}")
        load_state_dict_checked(head, ckpt["head"], f"checkpoint {final}")
        encoder.to(self.device), head.to(self.device)
        if not quiet:
            log(f"{regime.name} seed {seed}: loaded finished checkpoint {final}")
        return read_json(final.with_suffix(".json"))

    def _fit(self, regime: Regime, seed: int, encoder: Encoder, head: torch.nn.Module) -> dict[str, Any]:
        """Train, then evaluate on test and save the final checkpoint, its row and its reconstructions."""
        cfg, data, rd = self.config, self.data, self.run_dir
        state_path = rd.train_state(regime.name, seed)
        if state_path.exists():
            log(f"{regime.name} seed {seed}: resuming from {state_path}")
        snapshot_images = data.test_x[:cfg.analysis.reconstructions] if cfg.analysis.reconstructions else None
        probe_data = None if self.labelled is None else self.probe_data(seed)
        callbacks = [ProgressBar(self.progress), *([EpochProbe(cfg.train.probe_train_images, probe_data)]
                                                   if cfg.train.probe_every_epoch else []),
                     *([Snapshots(snapshot_images)] if snapshot_images is not None else []),
                     MetricsCSV(rd.train_metrics(regime.name, seed)), Checkpoint(state_path), EpochLog(self.clock),
                     *study_callbacks(self, regime, seed), SignalStop(self.stopper, str(state_path))]
        if not self.world.main:  # the other ranks train their shares, resume with rank 0 and write nothing
            callbacks = [Checkpoint(state_path), SignalStop(self.stopper, str(state_path))]
        settings = TrainSettings.from_config(cfg.train, self.plugins.epochs_for(regime))
        outcome = Trainer(regime, encoder, head, self.training_data(regime, seed), settings, seed=seed,
                          device=self.device, callbacks=callbacks).fit()
        if not self.world.main:
            return {}
        row = test_metrics_row(self, regime, seed, encoder, head, outcome)
        # the row first: the final checkpoint's existence is what marks the regime as trained on resume
        write_json(rd.checkpoint(regime.name, seed).with_suffix(".json"), row)
        save_checkpoint(rd.checkpoint(regime.name, seed),
                        checkpoint_payload(self, regime, seed, encoder, head, len(outcome.history)))
        state_path.unlink(missing_ok=True)
        return row

    def extract(self, seed: int) -> dict[str, Features]:
        """Features of every model of the seed for every analysed split, each extracted once: the
        seed-independent baselines (raw pixels, PCA of pixels) once per run, the encoders once per seed."""
        self._need_stage(f"extract({seed!r})", "prepare()", self._prepared)
        self._need_stage(f"extract({seed!r})", f"train(regime, {seed!r})", seed in self.encoders)
        started = time.perf_counter()
        data, cfg = self.analysed_for(seed), self.config
        splits = {"train": data.train_x, "val": data.val_x, "test": data.test_x}
        if self.labelled is not None and self._baselines.get("seed") != seed:  # each seed's draw: its own baselines
            self._baselines = {"seed": seed}
        if not self.world.main:  # the other ranks extract their shares of every split for rank 0
            for encoder in self.encoders[seed].values():
                extract_splits(encoder, splits, cfg.analysis.max_stage_features, self.device, gathered=True)
            return {}
        if "pixels" not in self._baselines:
            log("extracting baseline features: raw pixels, PCA of pixels")
            self._baselines["pixels"] = pixel_features(splits)
            self._baselines["pca"] = pca_baseline(self._baselines["pixels"]["input"], cfg.model.latent_dim)
        encoders = self.encoders[seed]
        log(f"extracting features of {', '.join(encoders)}")
        features = {"pixels": self._baselines["pixels"], "pca": self._baselines["pca"]}
        for name, encoder in encoders.items():
            features[name] = extract_splits(encoder, splits, cfg.analysis.max_stage_features, self.device,
                                            gathered=True)
        self._features[seed] = features
        self._extraction_seconds += time.perf_counter() - started
        self.clock.analysis_done("extraction", time.perf_counter() - started)
        self._seed_analysis_started[seed] = started
        return features

    def analyse(self, seed: int) -> dict[str, pd.DataFrame]:
        """Run every analysis on the seed's features (in the order their requirements give) and keep the tables."""
        self._need_stage(f"analyse({seed!r})", "prepare()", self._prepared)
        self._need_stage(f"analyse({seed!r})", f"extract({seed!r})", seed in self._features)
        features = self._features.pop(seed)
        fresh = [m for m in features if m not in self._baselines.get("analysed", ())]
        self._baselines["analysed"] = ["pixels", "pca"]
        analysed = self.analysed_for(seed)
        points = stratified_subset(analysed.test_y.numpy(), self.config.analysis.analysis_points,
                                   self.config.data.split_seed)
        ctx = SeedContext(self.context, seed, analysed, features, self.encoders[seed], fresh, points,
                          heads=self.heads.get(seed, {}))
        started = time.perf_counter()
        drawer = self._drawer_for(seed)
        for analysis in self.plugins.analyses:
            one_started = time.perf_counter()
            predicted = self.clock.analysis_plan.get(analysis.name, 0.0) * self.clock.correction()
            if predicted > LONG_STEP_SECONDS:
                log(f"seed {seed}: {analysis.name} (≈ {predicted:.0f}s predicted)")
            with Heartbeat(f"seed {seed}: {analysis.name} running", HEARTBEAT_SECONDS):
                frames = analysis.compute(ctx)
            for key, frame in frames.items():
                ctx.tables[key] = frame
                self.results.setdefault(key, []).append(frame)
            if drawer is not None and type(analysis).finish is Analysis.finish:  # its tables are final now
                self.run_dir.write_tables({key: self.results[key] for key in frames}, [])
                drawer.submit(analysis.name)
            seconds = time.perf_counter() - one_started
            self.clock.analysis_done(analysis.name, seconds)
            self._analysis_seconds[analysis.name] = self._analysis_seconds.get(analysis.name, 0.0) + seconds
            if seconds > 0.5:
                log(f"seed {seed}: {analysis.name} done ({seconds:.1f}s){self.clock.suffix()}")
        self._analysed_seeds.add(seed)
        self.clock.analysed(time.perf_counter() - self._seed_analysis_started.pop(seed, started))
        log(f"seed {seed}: analyses done in {time.perf_counter() - started:.1f}s{self.clock.suffix()}")
        return ctx.tables

    def _drawer_for(self, seed: int) -> SectionDrawer | None:
        """On the last seed: the process that draws each analysis's report sections as soon as its files are
        final (``report.predraw``), so that the report overlaps the remaining analyses; None where
        ``analysis.draw_ahead`` (or, for auto, the cores and the predicted time) says not to. The models'
        table is written first: most sections read it."""
        if seed != self.seeds[-1] or (self._drawer is None and not self._draws_ahead()):
            return None  # a drawer run() started is used even if the prediction has changed since
        self.run_dir.write_tables({}, self.model_rows)
        self._drawer = self._drawer or SectionDrawer(self.run_dir.path)
        return self._drawer

    def _draws_ahead(self) -> bool:
        choice = self.config.analysis.draw_ahead
        predicted = sum(self.clock.analysis_plan.values()) * self.clock.correction()
        worth_it = available_cores() >= 2 and predicted >= DRAW_AHEAD_MIN_SECONDS
        return self.world.main and (choice == "always" or (choice == "auto" and worth_it))

    def finish(self, wall_seconds: float) -> dict[str, Any]:
        """Across-seed analyses, then every table and the run's summary on disk."""
        self._need_stage(f"finish({wall_seconds!r})", "prepare()", self._prepared)
        self._need_stage(f"finish({wall_seconds!r})", "analyse(seed) of at least one seed", bool(self._analysed_seeds))
        for analysis in self.plugins.analyses:
            for key, frame in analysis.finish(self.context).items():
                self.results.setdefault(key, []).append(frame)
        self.run_dir.write_tables(self.results, self.model_rows)
        self.run_dir.record_thread_choices()
        summary = summarize(self.run_dir.path, self.config, wall_seconds)
        summary.update(feature_extraction_seconds=round(self._extraction_seconds, 1),
                       analysis_seconds={k: round(v, 2) for k, v in self._analysis_seconds.items()}, state="complete",
                       steps_per_epoch=self.steps_per_epoch())
        write_json(self.run_dir / layout.SUMMARY, summary)
        return summary

    def steps_per_epoch(self) -> dict[str, int]:
        """Optimisation steps per epoch of each regime, recorded so that the report (the Protocol section) states
        the budgets from the run's files without importing the trainer."""
        batch = self.config.train.batch_size
        return {r.name: Trainer.steps_in_epoch(len(Trainer.training_images(r, self.training_data(r))), batch)
                for r in self.regimes}

    def render(self, status: dict[str, Any] | None = None) -> Path:
        """The HTML report, from the run directory's files alone; every LONG_STEP_SECONDS or so a line says
        how far the drawing got, with the time it predicts is left. Sections drawn during the analyses
        (``_drawer_for``) are waited for first and used where their files are unchanged."""
        drawer, self._drawer = self._drawer, None
        drawn: Mapping[str, DrawnSections] = {}
        if drawer is not None:
            try:
                drawer.draw_the_rest([analysis.name for analysis in self.plugins.analyses])
                with Heartbeat("report: the second process is drawing the last sections", HEARTBEAT_SECONDS):
                    drawn = drawer.collect()
            finally:  # stopped while waiting (a signal, an error): nothing may go on writing into the run
                drawer.close()
        ahead = len(drawn) / max(1, len(self.plugins.analyses))
        planned = self.clock.render_plan * self.clock.correction() * (1 - ahead)
        started = last = time.perf_counter()

        def progress(name: str, done: int, total: int) -> None:
            nonlocal last
            now = time.perf_counter()
            if now - last >= LONG_STEP_SECONDS:
                last = now
                left = max(planned - (now - started), (now - started) * (total - done) / max(done, 1))
                log(f"report: {done}/{total} analyses drawn ({name}, {now - started:.0f}s); "
                    f"≈ {left:.0f}s left")

        if planned > LONG_STEP_SECONDS:
            log(f"rendering the report (≈ {planned:.0f}s predicted)")
        report = render_report(self.run_dir.path, status=status, progress=progress, drawn=drawn,
                               not_written=drawer.not_written if drawer is not None and drawn else ())
        if drawn:
            log(f"report: the sections of {sum(d.used for d in drawn.values())} of {len(self.plugins.analyses)} "
                f"analyses were drawn by the second process, most while later analyses computed")
        self.clock.finished_rendering()
        return report

    def run(self) -> Path:
        """Every stage in order; returns the report's path. On SIGINT/SIGTERM the work done is kept and the
        run is resumable; any failure after the directory exists leaves status ``failed`` with the reason."""
        self._refuse_if_complete("run()")
        self._running = False  # only a run directory marked running by this call is recorded on failure
        started = time.perf_counter()
        try:
            if self.world.size == 1 and not self._prepared:  # checked and loaded first, as prepare() would
                if not self.resuming:
                    self.run_dir.check_free(self.force)
                self.load_data()
                second_process.prestart(self)
            self.prepare()
            self._drawer_wanted = self._draws_ahead()
            with self.stopper:
                for seed in self.seeds:
                    self.initial_encoder(seed)
                    self._train_seed(seed)
                    self.extract(seed)
                    if self.world.main:
                        self.analyse(seed)
                    distributed.wait_for_main()  # the other ranks wait for rank 0's analyses
                    self._stop_if_asked()
                if not self.world.main:
                    return self.run_dir / layout.REPORT
                wall = round(time.perf_counter() - started, 1)
                self.finish(wall)
                # complete means every artifact, the report included, exists: it is rendered as complete first
                report = self.render({"state": "complete", "message": "", "wall_seconds": wall})
                self.run_dir.set_status("complete", wall_seconds=wall)
                self._completed = True
        except BaseException as exc:
            raise self._failed(exc) from None
        finally:
            second_process.release_spare()
            if self._drawer is not None:
                self._drawer.close()
            unlock_directory(self._lock)
            self._lock = None
        for line in closing_summary(self.run_dir.path, time.perf_counter() - started, report):
            log(line)
        return report






