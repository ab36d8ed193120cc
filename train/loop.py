"""The job: train and/or evaluate one config. ``run`` reads top to bottom (big_vision's train.py
style), each section calling a named part: devices (train/distribute.py), the plan
(train/plan.py), the train state (train/state.py), the model directory
(train/checkpoints.py, train/lock.py), the steps and the evaluator (train/steps.py), the
training loop below, the export.

SIGTERM or SIGINT during training (train/preemption.py) ends the current step, writes a
checkpoint at that step and returns normally; the same command resumes there. A diverged loop
of steps (train/recovery.py) restores the last good checkpoint or stops the run; the backbone
may be frozen for the first steps (train/fine_tune.py BackboneFreeze).
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Dict, Optional

import keras
import tensorflow as tf
from absl import logging
from tensorflow.core.framework import summary_pb2

import efficientnet_tf
from export import export_model
from train import checkpoints, distribute, fine_tune, input_pipeline, lock, preemption, recipes
from train import recovery
from train import config as config_lib
from train import plan as plan_lib
from train import state as state_lib
from train import steps as steps_lib


def run(cfg: config_lib.Config, *, mode: str, model_dir: str, tpu: Optional[str] = None,
        export_dir: Optional[str] = None, export_format: str = "saved_model",
        num_cpu_devices: int = 0) -> Dict[str, object]:
    """Runs ``mode`` ('train', 'eval', 'train_and_eval'); returns the final eval results (or
    the train summary in 'train' mode; with ``preempted: True`` when a signal stopped it)."""
    # ------------------------------------------------------------------------ devices
    strategy = distribute.get_strategy(tpu, num_cpu_devices)
    devices = _devices(cfg, strategy)
    chief = distribute.is_chief(strategy)
    store = checkpoints.CheckpointStore(model_dir, chief=chief,
                                        write_dir=distribute.write_dir(model_dir, strategy))
    # One training run per model_dir; evaluation only reads and may share it.
    holder = lock.ModelDirLock(model_dir) if chief and mode != "eval" else contextlib.nullcontext()
    with holder:
        if chief:
            tf.io.gfile.makedirs(model_dir)
            config_lib.save(cfg, model_dir)
            print("Resolved config:\n" + config_lib.to_yaml(cfg), flush=True)
            plan_lib.prepare(cfg.data)  # TFDS datasets once, before the other workers read
        _barrier(strategy)

        # ------------------------------------------------------- plan, state, restore
        plan = plan_lib.make_plan(cfg, mode)
        init_source = None
        if cfg.model.init_weights and not store.has_checkpoint():  # a resumed run has its own
            init_source = fine_tune.resolve_source(cfg.model.init_weights, cfg.model.name)
        state = state_lib.build(cfg, strategy, num_classes=plan.num_classes,
                                precision=devices["precision"], total_steps=plan.total_steps,
                                steps_per_epoch=plan.epoch_steps, init_source=init_source)
        run_info = {**devices, "sync_bn": state.sync_bn, **plan.info(),
                    "optimizer": state.optimizer_info}  # (#22)
        store.write_json(run_info, checkpoints.RUN_INFO)
        logging.info("Run: %s", run_info)
        store.attach(tf.train.Checkpoint(**state.tracked()), cfg.runtime.keep_checkpoint_max)
        restored = store.restore(partial=mode == "eval")
        if restored is not None:
            logging.info("Restored %s at step %d", restored, state.step)
            print(f"Resuming from {restored} (step {state.step})", flush=True)

        # ---------------------------------------------------- evaluate and/or train
        evaluator = steps_lib.Evaluator(
            strategy, state, num_classes=plan.num_classes, jit=devices["jit_compile"],
            dataset_fn=lambda: strategy.distribute_datasets_from_function(
                lambda ctx: input_pipeline.build_dataset(plan_lib.eval_spec(cfg, plan),
                                                         input_context=ctx)),
            loss=plan_lib.loss(cfg, plan))  # softmax or binary cross-entropy (#22)
        reporter = Reporter(store, cfg.runtime.progress_bar)
        if mode == "eval":
            results = evaluator.evaluate()
            reporter.eval(results)
        else:
            results = train(cfg, mode, strategy, state, store, plan, evaluator, reporter,
                            restored=restored is not None, jit=devices["jit_compile"])
            task_type, task_id = distribute.task(strategy)
            # Every worker prints the same number when the replicas stayed in sync.
            print(f"Final weights digest ({task_type or 'single'} {task_id}): "
                  f"{state_lib.weights_digest(state.model):.10e}", flush=True)
            if results.get("preempted"):
                reporter.close()
                _barrier(strategy)
                return results
        reporter.close()

        # --------------------------------------------------------------------- export
        if export_dir and chief:
            _export(export_dir, export_format, cfg, state, plan,
                    f"{model_dir} step {results['step']}")
        if mode != "eval":
            _barrier(strategy)  # workers leave together (the chief hosts the coordination service)
        return results


def train(cfg: config_lib.Config, mode: str, strategy: tf.distribute.Strategy,
          state: state_lib.TrainState, store: checkpoints.CheckpointStore,
          plan: plan_lib.RunPlan, evaluator: steps_lib.Evaluator, reporter: "Reporter", *,
          restored: bool, jit: Optional[bool]) -> Dict[str, object]:
    """The training loop: host calls of up to steps_per_loop steps, evaluations, the best
    checkpoint, periodic checkpoints; on SIGTERM/SIGINT a checkpoint at the current step.
    Raises recovery.TrainingDivergedError when training diverged more often than
    runtime.recovery_max_trials allows (nothing of the diverged state is saved)."""
    total_steps, steps_per_epoch, eval_every = plan.total_steps, plan.steps_per_epoch, plan.eval_every
    runtime, batch = cfg.runtime, cfg.train.batch_size
    inputs = TrainInput(cfg, strategy, store, plan)
    step = state.step
    every_steps = runtime.checkpoint_every_steps or (
        eval_every if mode == "train_and_eval" else 1000)
    # Workers must save together; wall-clock time differs between them, steps do not.
    every_secs = None if distribute.is_multi_worker() else runtime.checkpoint_every_secs
    if step == 0 and not restored:
        store.save(0)  # the starting point (fresh or --init_weights) as ckpt-0
    last_save_step, last_save_time = step, time.time()
    results: Dict[str, object] = {}
    iterator, stage = None, None
    replicas, kind = strategy.num_replicas_in_sync, distribute.device_kind(strategy)
    print(f"Training {cfg.model.name} for {total_steps} steps ({total_steps / steps_per_epoch:.2f} "
          f"epochs of {steps_per_epoch} steps, global batch {batch}) on {replicas} replica(s) "
          f"({kind}, {keras.config.dtype_policy().name}, XLA "
          f"{'on' if jit else 'off' if jit is False else 'TPU'}).", flush=True)
    # --- #22: self-healing and backbone freezing (train/recovery.py, train/fine_tune.py)
    guard = recovery.LossGuard(
        state, store, loss_upper_bound=runtime.loss_upper_bound,
        max_trials=runtime.recovery_max_trials, begin_steps=runtime.recovery_begin_steps,
        loss_scaled=isinstance(state.optimizer, keras.optimizers.LossScaleOptimizer))
    freeze = fine_tune.BackboneFreeze(state.model, cfg.train.freeze_backbone_steps)
    compiled = {}  # frozen or not -> its train steps (each traced over its trainable variables)
    reached = step  # the furthest step trained: a recovery retrains the steps before it
    with preemption.StopRequest(strategy, distribute.is_multi_worker()) as stop:
        while step < total_steps:
            if freeze.apply(step):
                _print_freeze(freeze, step)
            if freeze.frozen not in compiled:
                compiled[freeze.frozen] = _train_steps(cfg, plan, strategy, state, jit, stop)
            train_steps = compiled[freeze.frozen]
            current = recipes.stage_at(plan.stages, step)
            if current != stage:  # after a recovery in the same stage the iterator is kept
                # Steps before `reached` were trained once (then restored): a new order, not
                # the saved position or seed that would replay the batches that diverged.
                stage, iterator = current, inputs.iterator(
                    current, step, recovery=guard.trials if step < reached else 0)
            epoch = step // steps_per_epoch
            next_eval = (step // eval_every + 1) * eval_every
            num = min(runtime.steps_per_loop, stage.end_step - step, next_eval - step,
                      (epoch + 1) * steps_per_epoch - step)
            unfreeze = freeze.boundary(step)
            if unfreeze is not None:  # the loop ends where the backbone unfreezes
                num = min(num, unfreeze - step)
            start, previous = time.time(), step
            totals = train_steps.loop(iterator, tf.constant(num)).numpy()
            elapsed = time.time() - start
            # Fewer than `num` when float16 loss scaling skipped non-finite steps (not
            # counted), or when a signal stopped the loop.
            step = state.step
            reached = max(reached, step)
            loss = float(totals[0] / totals[2]) if totals[2] else None
            if totals[2]:
                reporter.train(step, previous, epoch, total_steps, steps_per_epoch, {
                    "loss": loss, "accuracy": totals[1] / totals[2],
                    "learning_rate": float(state.schedule(max(step - 1, 0))),
                    "images_per_sec": totals[2] / elapsed},
                    inputs.corrupt, runtime.log_every_steps)
            # Checked per loop (the mean loss of its steps), before anything is evaluated or
            # saved: a diverged state is replaced by the last good checkpoint, or the run stops.
            # The iterator is not rewound: training goes on with the batches after the bad loop
            # (TrainInput.iterator: none is replayed when the restore goes back a stage).
            evaluate = mode == "train_and_eval" and step > previous and (
                step // eval_every > previous // eval_every or step == total_steps)
            save = (evaluate or step == total_steps or step == stage.end_step
                    or step - last_save_step >= every_steps
                    or (every_secs and time.time() - last_save_time >= every_secs))
            problem = guard.problem(loss, step)
            if problem is None and (save or stop.requested()):  # the weights, before they are kept
                problem = guard.state_problem(loss)
            if problem is not None:
                step = last_save_step = guard.recover(problem, previous, step)
            if stop.requested():  # an evaluation due now is skipped: the grace period is short
                path = store.save(step, inputs.saved(iterator)) if step != last_save_step else (
                    store.path(f"{checkpoints.PREFIX}-{step}"))
                print(f"\nStopped by {stop.signal_name} at step {step}/{total_steps}: saved "
                      f"{path}. Run the same command again to resume from there.", flush=True)
                return {"step": step, "preempted": True, "checkpoint": path}
            if problem is not None:
                continue
            better = False
            if evaluate:
                results = evaluator.evaluate()
                reporter.eval(results)
                if results["top_1_accuracy"] > float(state.best_top1.numpy()):
                    state.best_top1.assign(results["top_1_accuracy"])
                    better = True
            if save:
                store.save(step, inputs.saved(iterator))
                last_save_step, last_save_time = step, time.time()
            if better:  # after the run's own checkpoint, which a rerun needs first
                store.save_best(step, results)

    if mode == "train_and_eval" and not results:  # resumed after the end: evaluate again
        results = evaluator.evaluate()
        reporter.eval(results)
    if mode == "train":
        results = {"step": step, "weights": state.weights_kind}
    if inputs.corrupt is not None:
        results["corrupt_images_skipped"] = inputs.corrupt.count
        print(f"Skipped {inputs.corrupt.count} corrupt image(s)", flush=True)
    return results


def _train_steps(cfg: config_lib.Config, plan: plan_lib.RunPlan,
                 strategy: tf.distribute.Strategy, state: state_lib.TrainState,
                 jit: Optional[bool], stop: preemption.StopRequest) -> steps_lib.TrainSteps:
    """The compiled train steps over the model's trainable variables as they are now."""
    return steps_lib.TrainSteps(strategy, state, label_smoothing=cfg.train.label_smoothing,
                                weight_decay=cfg.train.weight_decay, jit=jit, stop=stop.in_loop,
                                loss=plan_lib.loss(cfg, plan),
                                grad_accum_steps=cfg.train.grad_accum_steps,
                                grad_checkpointing=cfg.model.grad_checkpointing,
                                batch_size=cfg.train.batch_size)


def _print_freeze(freeze: fine_tune.BackboneFreeze, step: int) -> None:
    if freeze.frozen:
        until = "the end of the run" if freeze.steps < 0 else f"step {freeze.steps}"
        print(f"Backbone frozen until {until} (--freeze_backbone_steps): training the "
              "classifier only, batch norm in inference mode", flush=True)
    else:
        print(f"Backbone unfrozen at step {step}: training all layers", flush=True)


class TrainInput:
    """The train iterators of each stage, and their position in the checkpoints (single
    replica only: tf.distribute's distributed iterators are not trackable)."""

    def __init__(self, cfg: config_lib.Config, strategy: tf.distribute.Strategy,
                 store: checkpoints.CheckpointStore, plan: plan_lib.RunPlan):
        self.cfg, self.strategy, self.store, self.plan = cfg, strategy, store, plan
        self.corrupt = input_pipeline.CorruptCounter() if cfg.data.skip_corrupt else None
        single = strategy.num_replicas_in_sync == 1 and not distribute.is_multi_worker()
        self.checkpointed = cfg.runtime.checkpoint_input and single
        if cfg.runtime.checkpoint_input and not single:
            logging.warning("The input position is not checkpointed under %s (tf.distribute's "
                            "distributed iterators are not trackable); a resumed run reshuffles.",
                            distribute.strategy_name(strategy))

    def saved(self, iterator):
        """What store.save records of ``iterator`` (None when positions are not kept)."""
        return iterator if self.checkpointed else None

    def iterator(self, stage: recipes.Stage, step: int, recovery: int = 0):
        """A fresh iterator of ``stage`` at ``step``, at the saved position when there is one.
        ``recovery`` > 0 (the number of recoveries so far), when the steps from ``step`` on
        were trained before a recovery restored an earlier checkpoint: no saved position, and a
        seed no earlier iterator of the run used (a new order, not a replay of those batches)."""
        stages = self.plan.stages
        if len(stages) > 1:
            print(f"Stage {stage.index + 1}/{len(stages)}: steps {stage.start_step}-"
                  f"{stage.end_step}, image size {stage.image_size}, RandAugment magnitude "
                  f"{stage.randaug_magnitude:g}, mixup {stage.mixup_alpha:g}, cutmix "
                  f"{stage.cutmix_alpha:g}", flush=True)
        seed = self.cfg.data.seed
        if recovery and seed is None and self.cfg.data.deterministic:
            seed = 0  # what input_pipeline uses for a deterministic pipeline without a seed
        if seed is not None and recovery:  # this process's iterators used seed + [0, total)
            seed += step + recovery * self.plan.total_steps
        elif seed is not None and step and not self.checkpointed:
            seed += step  # resumed without the input state: a new order, not a replay
        spec = plan_lib.train_spec(self.cfg, self.plan, stage, seed)
        iterator = iter(self.strategy.distribute_datasets_from_function(
            lambda ctx: input_pipeline.build_dataset(spec, corrupt_counter=self.corrupt,
                                                     input_context=ctx)))
        # A saved input state belongs to the stage that was running (a new stage starts fresh).
        if (self.checkpointed and step and not recovery
                and recipes.stage_at(stages, step - 1) == stage):
            path = self.store.input_path(step)
            if tf.io.gfile.exists(path + ".index"):
                tf.train.Checkpoint(iterator=iterator).read(path).assert_consumed()
                logging.info("Restored the input position from %s", path)
            else:
                logging.warning("No input state for step %d; the input pipeline restarts.", step)
        return iterator


class Reporter:
    """Progress bar, log lines, TensorBoard scalars and eval_results.json."""

    def __init__(self, store: checkpoints.CheckpointStore, progress_bar: bool):
        self.store, self.progress_bar = store, progress_bar
        self.bar, self.bar_epoch = None, -1
        if store.chief:
            self.writers = {name: tf.summary.create_file_writer(store.path(name))
                            for name in ("train", "eval")}
        else:
            self.writers = {name: tf.summary.create_noop_writer() for name in ("train", "eval")}

    def train(self, step, previous, epoch, total_steps, steps_per_epoch, metrics, corrupt,
              log_every) -> None:
        if self.store.chief and self.progress_bar:
            if epoch != self.bar_epoch:
                print(f"Epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}", flush=True)
                self.bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=list(metrics))
                self.bar_epoch = epoch
            self.bar.update(step - epoch * steps_per_epoch, list(metrics.items()))
        with self.writers["train"].as_default(step=step):
            for key, value in metrics.items():
                write_scalar(key, value)
            if corrupt is not None:
                write_scalar("corrupt_images_skipped", corrupt.count)
        if step // log_every > previous // log_every or step == total_steps:
            logging.info("step %d/%d: %s", step, total_steps,
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    def eval(self, results: Dict[str, object]) -> None:
        newline = "\n" if self.progress_bar else ""  # after the progress bar's line
        print(f"{newline}Eval at step {results['step']}: top-1 {results['top_1_accuracy']:.4f}, "
              f"top-5 {results['top_5_accuracy']:.4f}, loss {results['loss']:.4f} "
              f"({results['num_examples']} examples, {results['weights']} weights)", flush=True)
        with self.writers["eval"].as_default(step=results["step"]):
            for key in ("top_1_accuracy", "top_5_accuracy", "loss"):
                write_scalar(key, results[key])
        self.store.write_json(results, checkpoints.EVAL_RESULTS)

    def close(self) -> None:
        for writer in self.writers.values():
            writer.flush()


# ---------------------------------------------------------------------------- helpers


def _devices(cfg: config_lib.Config, strategy: tf.distribute.Strategy) -> Dict[str, object]:
    """Checks the batch sizes against the replicas (distribute.ReplicaSplitError), seeds, sets
    the dtype policy; returns the device facts of run_info.json."""
    kind = distribute.device_kind(strategy)
    replicas = strategy.num_replicas_in_sync
    for name, batch in (("train.batch_size", cfg.train.batch_size),
                        ("eval.batch_size", cfg.eval.batch_size)):
        if batch % replicas:
            raise distribute.ReplicaSplitError(
                f"{name}={batch} is not divisible by the {replicas} replicas of "
                f"{distribute.strategy_name(strategy)}")
    # Micro-batches per replica (--grad_accum_steps): known here first on GPUs.
    steps_lib.check_accumulation(cfg.train.batch_size, replicas, cfg.train.grad_accum_steps)
    if cfg.runtime.seed is not None:
        keras.utils.set_random_seed(cfg.runtime.seed)
    precision = distribute.resolve_precision(cfg.runtime.precision, kind)
    keras.config.set_dtype_policy(precision)
    return {"strategy": distribute.strategy_name(strategy), "replicas": replicas,
            "device": kind, "precision": precision,
            "jit_compile": distribute.resolve_jit(cfg.runtime.jit_compile, kind)}


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits for every worker (an all-reduce); a no-op on one worker."""
    if distribute.is_multi_worker():
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def write_scalar(name: str, value) -> None:
    """A TensorBoard scalar without the tensorboard package (not a dependency here):
    tf.summary.write with the 'scalars' plugin metadata tensorboard's own scalar() writes."""

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)


def _export(export_dir, export_format, cfg, state, plan, origin) -> None:
    """Exports the (EMA) weights as a float32 model through export/."""

    with fine_tune.float32_policy():  # exports are float32 whatever trained
        exported = efficientnet_tf.build_model(cfg.model.name, classes=plan.num_classes)
    with state.averaged_weights():
        efficientnet_tf.load_weights(exported, state.model)
    averaged = "EMA" if state.ema is not None else "raw"
    result = export_model(exported, export_dir, export_format, model_name=cfg.model.name,
                          image_size=max(plan.eval_size, 32),
                          class_names=list(plan.eval_facts.class_names),
                          weights=f"train.main {origin} ({averaged} weights)")
    print(result.summary(), flush=True)
