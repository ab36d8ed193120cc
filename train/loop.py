"""The job: train and/or evaluate one config. One linear ``run``, in sections (big_vision's
train.py style): devices, data facts, model and optimizer, checkpoints, input, train steps,
the loop, final evaluation and export.

Official semantics kept (tensorflow/tpu efficientnet/main.py, automl efficientnetv2/main.py):
- loss = softmax cross-entropy with label smoothing + weight_decay * sum(l2_loss(w)) over the
  trainable weights not matching ``train.weight_decay_exclude``. An explicit L2 term, as the
  official code does, rather than Keras' decoupled ``weight_decay`` (which for RMSProp with
  momentum is a different regularizer; the 1e-5 coefficient was tuned for the L2 term).
- EMA of the weights with tf.train.ExponentialMovingAverage(decay, num_updates=step), i.e.
  decay min(d, (1 + step) / (10 + step)), over the trainable weights and the BN moving
  statistics (tensorflow/tpu utils.get_ema_vars). Keras' optimizer ``use_ema`` has neither the
  num_updates ramp nor the BN statistics, and overwrites the weights at the end of ``fit``.
  Evaluation, the best checkpoint and the export use the averaged weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import time
from typing import Dict, List, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import efficientnet_tf
from efficientnet_tf import fast
from efficientnet_tf.weights.core import variable_key
from train import config as config_lib
from train import distribute
from train import fine_tune
from train import input_pipeline
from train import preprocessing
from train import recipes
from train import schedules

def run(cfg: config_lib.Config, *, mode: str, model_dir: str, tpu: Optional[str] = None,
        export_dir: Optional[str] = None, export_format: str = "saved_model",
        num_cpu_devices: int = 0) -> Dict[str, object]:
    """Runs ``mode`` ('train', 'eval', 'train_and_eval'); returns the final eval results (or
    the train summary in 'train' mode)."""
    # ------------------------------------------------------------------------ devices
    strategy = distribute.get_strategy(tpu, num_cpu_devices)
    kind = distribute.device_kind(strategy)
    replicas = strategy.num_replicas_in_sync
    for name, batch in (("train.batch_size", cfg.train.batch_size),
                        ("eval.batch_size", cfg.eval.batch_size)):
        if batch % replicas:
            raise ValueError(f"{name}={batch} is not divisible by the {replicas} replicas of "
                             f"{distribute.strategy_name(strategy)}")
    if cfg.runtime.seed is not None:
        keras.utils.set_random_seed(cfg.runtime.seed)
    precision = distribute.resolve_precision(cfg.runtime.precision, kind)
    keras.config.set_dtype_policy(precision)
    jit = distribute.resolve_jit(cfg.runtime.jit_compile, kind)
    chief = distribute.is_chief(strategy)
    if chief:
        tf.io.gfile.makedirs(model_dir)
        config_lib.save(cfg, model_dir)
        print("Resolved config:\n" + config_lib.to_yaml(cfg), flush=True)

    # ------------------------------------------------------------------------ data facts
    data, train_cfg = cfg.data, cfg.train
    info = efficientnet_tf.model_info(cfg.model.name)
    if chief:  # prepares TFDS datasets (the embedded digits builder) once, before the others read
        _prepare(data)
    _barrier(strategy)
    eval_split = data.eval_split or _default_eval_split(data)
    eval_facts = input_pipeline.dataset_facts(data.dataset, eval_split, data.data_dir)
    train_facts = (input_pipeline.dataset_facts(data.dataset, data.train_split, data.data_dir)
                   if mode != "eval" else None)
    data_classes = (train_facts or eval_facts).num_classes
    num_classes = cfg.model.num_classes or data_classes
    if num_classes < data_classes:
        raise ValueError(f"model.num_classes={num_classes} is smaller than the {data_classes} "
                         f"classes of {data.dataset!r}")
    train_size = data.image_size or info["resolution"]
    eval_size = data.eval_image_size or info["resolution"]
    resize_method = data.resize_method or info["resize_method"]
    crop_rule = _crop_rule(cfg)
    batch = train_cfg.batch_size
    total_steps = steps_per_epoch = 0
    stages: List[recipes.Stage] = []
    if train_facts is not None:
        if train_facts.num_examples < batch:
            raise ValueError(f"train.batch_size={batch} exceeds the {train_facts.num_examples} "
                             f"examples of split {data.train_split!r}")
        epoch_steps = train_facts.num_examples / batch  # float, like the official schedule
        steps_per_epoch = input_pipeline.steps_per_epoch(train_facts.num_examples, batch)
        total_steps = train_cfg.steps or max(1, int(train_cfg.epochs * epoch_steps))
        stages = recipes.stages(cfg, total_steps, train_size)
        eval_every = (max(1, int(round(cfg.eval.every_epochs * epoch_steps)))
                      if cfg.eval.every_epochs else total_steps)
    run_info = {
        "strategy": distribute.strategy_name(strategy), "replicas": replicas, "device": kind,
        "precision": precision, "jit_compile": jit, "sync_bn": None, "num_classes": num_classes,
        "class_names": list(eval_facts.class_names), "train_image_size": train_size,
        "eval_image_size": eval_size, "eval_split": eval_split, "resize_method": resize_method,
        "crop_rule": dataclasses.asdict(crop_rule), "total_steps": total_steps,
        "steps_per_epoch": steps_per_epoch,
        "train_examples": train_facts.num_examples if train_facts else None,
        "eval_examples": eval_facts.num_examples,
        "stages": [dataclasses.asdict(s) for s in stages],
    }

    # ---------------------------------------------------------- model, optimizer, EMA
    latest = tf.train.latest_checkpoint(model_dir)
    init_source = None
    if cfg.model.init_weights and latest is None:  # a resumed run has its own weights
        init_source = fine_tune.resolve_source(cfg.model.init_weights, cfg.model.name)
    with strategy.scope():
        model = efficientnet_tf.build_model(
            cfg.model.name, classes=num_classes, classifier_activation=None,
            dropout_rate=cfg.model.dropout_rate, drop_connect_rate=cfg.model.drop_connect_rate,
            bn_momentum=cfg.model.bn_momentum)
        if not cfg.model.fused_bn:  # built models use TF's fused BN kernel; this trains Keras' own
            model = fast.with_keras_batchnorm(model)
        if cfg.model.freeze_bn:
            # Fine-tuning on small data: batch statistics of a few similar images are far from
            # the pretrained moving statistics (the features move by ~95% on 8 photo tiles), so
            # BN runs in inference mode and its scale and offset stay as loaded.
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
        sync_bn = replicas > 1 if cfg.model.sync_bn is None else cfg.model.sync_bn
        run_info["sync_bn"] = sync_bn
        if sync_bn:
            distribute.set_synchronized_bn(model)
        elif replicas > 1:
            # Keras updates BN moving statistics per replica (aggregation NONE), so without
            # synchronization the replicas' copies drift apart; the checkpoint keeps replica 0's.
            logging.warning("model.sync_bn=false with %d replicas: each replica keeps its own BN "
                            "moving statistics", replicas)
        if init_source is not None:
            fine_tune.load_init_weights(model, init_source)
        schedule = schedules.WarmupDecaySchedule(
            schedules.scaled_learning_rate(train_cfg.base_learning_rate, batch),
            steps_per_epoch=train_facts.num_examples / batch if train_facts else 1.0,
            decay_type=train_cfg.lr_schedule, warmup_epochs=train_cfg.lr_warmup_epochs,
            decay_epochs=train_cfg.lr_decay_epochs, decay_factor=train_cfg.lr_decay_factor,
            total_steps=max(total_steps, 1),
            min_learning_rate=schedules.scaled_learning_rate(train_cfg.lr_min, batch))
        optimizer = make_optimizer(train_cfg, schedule)
        if precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        optimizer.build(model.trainable_variables)  # slots now, not inside the traced step
        step_var = optimizer.iterations.value
        ema = ema_vars = ema_shadows = None
        if train_cfg.moving_average_decay > 0:
            ema_vars = fine_tune.ema_variables(model)
            ema = tf.train.ExponentialMovingAverage(train_cfg.moving_average_decay,
                                                    num_updates=step_var)
            ema.apply(ema_vars)  # creates the shadows (= the weights at step 0)
            ema_shadows = [ema.average(v) for v in ema_vars]
        best_top1 = tf.Variable(-1.0, trainable=False, name="best_top1")
    if chief:
        _write_json(os.path.join(model_dir, "run_info.json"), run_info)
    logging.info("Run: %s", run_info)
    exclude = re.compile(train_cfg.weight_decay_exclude)
    decayed = [var.value for layer in model.layers for var in layer.trainable_weights
               if not exclude.match(variable_key(layer.name, var))]

    # -------------------------------------------------------------------- checkpoints
    tracked = dict(model=model, optimizer=optimizer, best_top1=best_top1)
    if ema_shadows is not None:
        tracked["ema"] = ema_shadows
    # The dropout / drop-connect random states are variables too (not among model.weights):
    # restoring them makes a resumed run draw the masks the uninterrupted run would have.
    rng_states = [v.value for v in model.non_trainable_variables
                  if v.path.endswith("seed_generator_state")]
    if rng_states:
        tracked["rng"] = rng_states
    checkpoint = tf.train.Checkpoint(**tracked)
    write_dir = distribute.write_dir(model_dir, strategy)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, cfg.runtime.keep_checkpoint_max,
                                         checkpoint_name="ckpt")
    best_manager = tf.train.CheckpointManager(checkpoint, os.path.join(write_dir, "best"), 1,
                                              checkpoint_name="ckpt")
    if latest is not None:
        status = checkpoint.restore(latest)
        if mode == "eval":
            status.expect_partial()
        else:
            status.assert_existing_objects_matched()
        logging.info("Restored %s at step %d", latest, int(step_var.numpy()))
        print(f"Resuming from {latest} (step {int(step_var.numpy())})", flush=True)

    def save(step: int) -> None:
        manager.save(checkpoint_number=step)
        if not chief:
            tf.io.gfile.rmtree(write_dir)

    # ------------------------------------------------------------------- eval steps
    def eval_replica(images, labels):
        logits = tf.cast(model(images, training=False), tf.float32)
        labels = tf.cast(labels, tf.int32)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        top1 = tf.math.in_top_k(labels, logits, 1)
        top5 = tf.math.in_top_k(labels, logits, min(5, num_classes))
        return tf.stack([tf.reduce_sum(loss), tf.reduce_sum(tf.cast(top1, tf.float32)),
                         tf.reduce_sum(tf.cast(top5, tf.float32)),
                         tf.cast(tf.shape(labels)[0], tf.float32)])

    @tf.function(jit_compile=jit)
    def eval_step(images, labels):
        return strategy.reduce("SUM", strategy.run(eval_replica, (images, labels)), axis=None)

    @tf.function
    def swap_ema():  # swaps weights and their averages in place (twice = back)
        for var, shadow in zip(ema_vars, ema_shadows):
            value = tf.identity(var.read_value())
            var.assign(shadow.read_value())
            shadow.assign(value)

    eval_dataset = strategy.distribute_datasets_from_function(
        lambda ctx: input_pipeline.build_dataset(
            data.dataset, eval_split, data.data_dir, is_training=False, image_size=eval_size,
            batch_size=cfg.eval.batch_size, resize_method=resize_method, crop_rule=crop_rule,
            cache=data.cache, deterministic=data.deterministic, skip_corrupt=data.skip_corrupt,
            input_context=ctx, download=False))

    def evaluate() -> Dict[str, float]:
        if ema is not None:
            swap_ema()
        try:
            totals = np.zeros(4)
            for images, labels in eval_dataset:
                totals += eval_step(images, labels).numpy()
        finally:
            if ema is not None:
                swap_ema()
        count = max(totals[3], 1.0)
        return {"top_1_accuracy": totals[1] / count, "top_5_accuracy": totals[2] / count,
                "loss": totals[0] / count, "num_examples": int(totals[3]),
                "step": int(step_var.numpy()), "weights": "ema" if ema is not None else "raw"}

    summaries = _writers(model_dir, chief)

    def report_eval(results: Dict[str, float]) -> None:
        newline = "\n" if cfg.runtime.progress_bar else ""  # after the progress bar's line
        print(f"{newline}Eval at step {results['step']}: top-1 {results['top_1_accuracy']:.4f}, top-5 "
              f"{results['top_5_accuracy']:.4f}, loss {results['loss']:.4f} "
              f"({results['num_examples']} examples, {results['weights']} weights)", flush=True)
        with summaries["eval"].as_default(step=results["step"]):
            for key in ("top_1_accuracy", "top_5_accuracy", "loss"):
                write_scalar(key, results[key])
        if chief:
            _write_json(os.path.join(model_dir, "eval_results.json"), results)

    if mode == "eval":
        results = evaluate()
        report_eval(results)
        _export(export_dir, export_format, chief, cfg, model, num_classes, eval_size, eval_facts,
                swap_ema if ema is not None else None, f"{model_dir} step {results['step']}")
        return results

    # ------------------------------------------------------------------ train steps
    label_smoothing = train_cfg.label_smoothing
    weight_decay = train_cfg.weight_decay
    trainable = model.trainable_variables

    def train_replica(images, labels):
        with tf.GradientTape() as tape:
            logits = tf.cast(model(images, training=True), tf.float32)
            per_example = keras.losses.categorical_crossentropy(
                labels, logits, from_logits=True, label_smoothing=label_smoothing)
            loss = tf.nn.compute_average_loss(per_example)  # / global batch
            if weight_decay and decayed:
                l2 = weight_decay * tf.add_n([tf.nn.l2_loss(v) for v in decayed])
                loss += tf.nn.scale_regularization_loss(l2)  # / replicas (grads are summed)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, trainable)
        optimizer.apply_gradients(zip(grads, trainable))
        if ema is not None:
            ema.apply(ema_vars)
        correct = tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1))
        return tf.stack([tf.reduce_sum(per_example), tf.reduce_sum(tf.cast(correct, tf.float32)),
                         tf.cast(tf.shape(logits)[0], tf.float32)])

    @tf.function(jit_compile=jit)
    def train_step(images, labels):
        return strategy.reduce("SUM", strategy.run(train_replica, (images, labels)), axis=None)

    @tf.function
    def train_loop(iterator, num_steps):
        totals = tf.zeros([3])
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            totals += train_step(images, labels)
        return totals

    # ------------------------------------------------------------------------- input
    corrupt = input_pipeline.CorruptCounter() if data.skip_corrupt else None
    single = replicas == 1 and not distribute.is_multi_worker()
    checkpoint_input = cfg.runtime.checkpoint_input and single
    if cfg.runtime.checkpoint_input and not single:
        logging.warning("The input position is not checkpointed under %s (tf.distribute's "
                        "distributed iterators are not trackable); a resumed run reshuffles.",
                        distribute.strategy_name(strategy))
    input_dir = os.path.join(model_dir, "input")
    crop_options = _crop_options(data)

    def make_iterator(stage: recipes.Stage, step: int):
        seed = data.seed
        if seed is not None and step and not checkpoint_input:
            seed += step  # resumed without the input state: a new order, not a replay
        dataset = strategy.distribute_datasets_from_function(
            lambda ctx: input_pipeline.build_dataset(
                data.dataset, data.train_split, data.data_dir, is_training=True,
                image_size=stage.image_size, batch_size=batch, resize_method=resize_method,
                crop_rule=crop_rule, augment_name=data.augment_name,
                randaug_num_layers=data.randaug_num_layers,
                randaug_magnitude=stage.randaug_magnitude, mixup_alpha=stage.mixup_alpha,
                cutmix_alpha=stage.cutmix_alpha, num_classes=num_classes, cache=data.cache,
                deterministic=data.deterministic, seed=seed, skip_corrupt=data.skip_corrupt,
                corrupt_counter=corrupt, input_context=ctx,
                shuffle_buffer_size=data.shuffle_buffer_size, download=False,
                **crop_options))
        iterator = iter(dataset)
        # A saved input state belongs to the stage that was running (a new stage starts fresh).
        if checkpoint_input and recipes.stage_at(stages, step - 1) == stage:
            path = os.path.join(input_dir, f"ckpt-{step}")
            if step and tf.io.gfile.exists(path + ".index"):
                tf.train.Checkpoint(iterator=iterator).read(path).assert_consumed()
                logging.info("Restored the input position from %s", path)
            elif step:
                logging.warning("No input state for step %d; the input pipeline restarts.", step)
        return iterator

    def save_all(step: int, iterator) -> None:
        if checkpoint_input and chief:
            tf.train.Checkpoint(iterator=iterator).write(os.path.join(input_dir, f"ckpt-{step}"))
        save(step)
        if checkpoint_input and chief:  # keep the input states of the kept checkpoints only
            kept = {int(p.rsplit("-", 1)[1]) for p in manager.checkpoints}
            for index in tf.io.gfile.glob(os.path.join(input_dir, "ckpt-*.index")):
                number = int(index[:-len(".index")].rsplit("-", 1)[1])
                if number not in kept:
                    for f in tf.io.gfile.glob(index[:-len(".index")] + ".*"):
                        tf.io.gfile.remove(f)

    # -------------------------------------------------------------------------- loop
    step = int(step_var.numpy())
    every_steps = cfg.runtime.checkpoint_every_steps or (
        eval_every if mode == "train_and_eval" else 1000)
    # Workers must save together; wall-clock time differs between them, steps do not.
    every_secs = None if distribute.is_multi_worker() else cfg.runtime.checkpoint_every_secs
    if step == 0 and latest is None:
        save(0)  # the starting point (fresh or --init_weights) as ckpt-0
    last_save_step, last_save_time = step, time.time()
    results: Dict[str, object] = {}
    iterator, stage = None, None
    bar, bar_epoch = None, -1
    print(f"Training {cfg.model.name} for {total_steps} steps ({total_steps / steps_per_epoch:.2f} "
          f"epochs of {steps_per_epoch} steps, global batch {batch}) on {replicas} replica(s) "
          f"({kind}, {precision}, XLA {'on' if jit else 'off' if jit is False else 'TPU'}).",
          flush=True)
    while step < total_steps:
        current = recipes.stage_at(stages, step)
        if current != stage:
            stage, iterator = current, make_iterator(current, step)
            if len(stages) > 1:
                print(f"Stage {stage.index + 1}/{len(stages)}: steps {stage.start_step}-"
                      f"{stage.end_step}, image size {stage.image_size}, RandAugment magnitude "
                      f"{stage.randaug_magnitude:g}, mixup {stage.mixup_alpha:g}, cutmix "
                      f"{stage.cutmix_alpha:g}", flush=True)
        epoch = step // steps_per_epoch
        next_eval = (step // eval_every + 1) * eval_every
        num = min(cfg.runtime.steps_per_loop, stage.end_step - step, next_eval - step,
                  (epoch + 1) * steps_per_epoch - step)
        start, previous = time.time(), step
        totals = train_loop(iterator, tf.constant(num)).numpy()
        elapsed = time.time() - start
        # Fewer than `num` when float16 loss scaling skipped non-finite steps (not counted).
        step = int(step_var.numpy())
        metrics = {"loss": totals[0] / totals[2], "accuracy": totals[1] / totals[2],
                   "learning_rate": float(schedule(max(step - 1, 0))),
                   "images_per_sec": num * batch / elapsed}
        if chief and cfg.runtime.progress_bar:
            if epoch != bar_epoch:
                print(f"Epoch {epoch + 1}/{math.ceil(total_steps / steps_per_epoch)}", flush=True)
                bar = keras.utils.Progbar(steps_per_epoch, stateful_metrics=list(metrics))
                bar_epoch = epoch
            bar.update(step - epoch * steps_per_epoch, list(metrics.items()))
        with summaries["train"].as_default(step=step):
            for key, value in metrics.items():
                write_scalar(key, value)
            if corrupt is not None:
                write_scalar("corrupt_images_skipped", corrupt.count)
        if (step // cfg.runtime.log_every_steps > previous // cfg.runtime.log_every_steps
                or step == total_steps):
            logging.info("step %d/%d: %s", step, total_steps,
                         ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
        evaluated = False
        if mode == "train_and_eval" and step > previous and (
                step // eval_every > previous // eval_every or step == total_steps):
            results = evaluate()
            report_eval(results)
            evaluated = True
            if results["top_1_accuracy"] > float(best_top1.numpy()):
                best_top1.assign(results["top_1_accuracy"])
                best_manager.save(checkpoint_number=step)
                if chief:
                    _write_json(os.path.join(model_dir, "best", "eval_results.json"), results)
                elif tf.io.gfile.exists(os.path.join(write_dir, "best")):
                    tf.io.gfile.rmtree(os.path.join(write_dir, "best"))
        if (evaluated or step == total_steps or step == stage.end_step
                or step - last_save_step >= every_steps
                or (every_secs and time.time() - last_save_time >= every_secs)):
            save_all(step, iterator)
            last_save_step, last_save_time = step, time.time()

    # ------------------------------------------------------------ results and export
    if mode == "train_and_eval" and not results:  # resumed after the end: evaluate again
        results = evaluate()
        report_eval(results)
    if mode == "train":
        results = {"step": step, "weights": "ema" if ema is not None else "raw"}
    task_type, task_id = distribute.task(strategy)
    # Every worker prints the same number when the replicas stayed in sync.
    print(f"Final weights digest ({task_type or 'single'} {task_id}): {weights_digest(model):.10e}",
          flush=True)
    if corrupt is not None:
        results["corrupt_images_skipped"] = corrupt.count
        print(f"Skipped {corrupt.count} corrupt image(s)", flush=True)
    for writer in summaries.values():
        writer.flush()
    _export(export_dir, export_format, chief, cfg, model, num_classes, eval_size, eval_facts,
            swap_ema if ema is not None else None, f"{model_dir} step {step}")
    _barrier(strategy)  # workers leave together (the chief hosts the coordination service)
    return results


# ---------------------------------------------------------------------------- helpers


def make_optimizer(train_cfg: config_lib.TrainConfig, learning_rate):
    """The recipe's optimizer. RMSProp as in the official code: rho ('decay') 0.9, momentum
    0.9, epsilon 1e-3 inside the square root (Keras' RMSprop and TF1's agree on that; TF1
    started the mean square at 1.0, Keras at 0)."""
    name = train_cfg.optimizer
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, rho=train_cfg.rmsprop_rho,
                                        momentum=train_cfg.momentum, epsilon=train_cfg.epsilon)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate, momentum=train_cfg.momentum)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate)
    raise ValueError(f"train.optimizer={name!r}; valid: {config_lib.OPTIMIZERS}")


def _default_eval_split(data: config_lib.DataConfig) -> str:
    """'validation' when the dataset (or image folder) has it, else 'val' (folders) or 'test'."""
    if input_pipeline.is_image_folder(data.dataset):
        for name in ("validation", "val", "test"):
            if tf.io.gfile.isdir(os.path.join(data.dataset, name)):
                return name
        raise ValueError(f"Image folder {data.dataset!r} has no validation/, val/ or test/ "
                         "sub-folder; set data.eval_split")
    builder = input_pipeline.prepared_builder(data.dataset, data.data_dir, download=False)
    splits = list(builder.info.splits)
    for name in ("validation", "test"):
        if name in splits:
            return name
    raise ValueError(f"Dataset {data.dataset!r} has no 'validation' or 'test' split (splits: "
                     f"{splits}); set data.eval_split")


def weights_digest(model: keras.Model) -> float:
    """Sum of |w| over all weights (float64): a cheap fingerprint to compare replicas/workers."""
    return float(sum(np.abs(np.asarray(v.numpy(), np.float64)).sum() for v in model.weights))


def _prepare(data: config_lib.DataConfig) -> None:
    if not input_pipeline.is_image_folder(data.dataset):
        input_pipeline.prepared_builder(data.dataset, data.data_dir, download=True)


def _barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits for every worker (an all-reduce); a no-op on one worker."""
    if distribute.is_multi_worker():
        strategy.reduce("SUM", strategy.run(lambda: tf.constant(1.0)), axis=None)


def _crop_options(data: config_lib.DataConfig) -> Dict[str, object]:
    """build_dataset's train crop and flip arguments from the config."""
    return {"area_range": (data.crop_min_area, preprocessing.TRAIN_AREA_RANGE[1]),
            "random_flip": data.random_flip}


def _crop_rule(cfg: config_lib.Config) -> preprocessing.CropRule:
    """The family's crop rule (model_info), with the config's overrides."""
    if cfg.data.crop_rule:
        rule = preprocessing.get_crop_rule(cfg.data.crop_rule)
    else:
        rule = preprocessing.crop_rule_for_model(cfg.model.name)
    if cfg.data.crop_padding is not None:
        rule = dataclasses.replace(rule, crop_padding=cfg.data.crop_padding)
    return rule


def write_scalar(name: str, value) -> None:
    """A TensorBoard scalar without the tensorboard package (not a dependency here):
    tf.summary.write with the 'scalars' plugin metadata tensorboard's own scalar() writes."""
    from tensorflow.core.framework import summary_pb2  # pylint: disable=g-import-not-at-top

    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR)
    tf.summary.write(name, tf.constant(value, tf.float32), metadata=metadata)


def _writers(model_dir: str, chief: bool):
    if not chief:
        return {"train": tf.summary.create_noop_writer(), "eval": tf.summary.create_noop_writer()}
    return {name: tf.summary.create_file_writer(os.path.join(model_dir, name))
            for name in ("train", "eval")}


def _write_json(path: str, value) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump(value, f, indent=2, default=float)


def _export(export_dir, export_format, chief, cfg, model, num_classes, image_size, facts,
            swap_ema, origin) -> None:
    """Exports the (EMA) weights as a float32 model through export/ (chief only)."""
    if not export_dir or not chief:
        return
    from export import export_model  # pylint: disable=g-import-not-at-top

    with fine_tune.float32_policy():  # exports are float32 whatever trained
        exported = efficientnet_tf.build_model(cfg.model.name, classes=num_classes)
    if swap_ema is not None:
        swap_ema()
    try:
        efficientnet_tf.load_weights(exported, model)
    finally:
        if swap_ema is not None:
            swap_ema()
    weights = f"train.main {origin} ({'EMA' if swap_ema is not None else 'raw'} weights)"
    result = export_model(exported, export_dir, export_format, model_name=cfg.model.name,
                          image_size=max(image_size, 32), class_names=list(facts.class_names),
                          weights=weights)
    print(result.summary(), flush=True)
