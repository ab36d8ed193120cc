"""The optimizers of the trainer: a table of them (``OPTIMIZERS``), the factory
(:func:`make_optimizer`), LARS and LAMB as Keras 3 optimizers, global-norm gradient clipping
and layer-wise learning-rate decay (:class:`TrainerHooks`).

Every row of the table holds the default of each optional hyperparameter its optimizer reads,
with the source cited; help texts and validation read the table, and a test checks the docs'
table against it.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from efficientnet_tf import spec as spec_lib
from efficientnet_tf.weights.core import variable_key

# Optional hyperparameter keys (train.<key>, None = the optimizer's default below).
HYPERPARAMETERS = ("optimizer_weight_decay", "beta_1", "beta_2", "optimizer_epsilon",
                   "trust_coefficient")
LAYER_DECAY_GROUPS = ("stage", "block")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: its name, its factory, the defaults of the optional hyperparameters it
    reads (the sources are cited at the rows), and whether ``train.weight_decay``'s explicit L2
    loss term applies."""
    name: str
    build: Callable[..., keras.optimizers.Optimizer]  # (train_cfg, learning_rate, hyper, excluded)
    defaults: Mapping[str, float]
    l2_loss: bool

    def hyper(self, train_cfg) -> Dict[str, float]:
        """The optional hyperparameters, the config's where set, else the defaults."""
        return {key: (getattr(train_cfg, key) if getattr(train_cfg, key) is not None
                      else self.defaults[key]) for key in self.defaults}


class LARS(keras.optimizers.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017, arXiv:1708.03888), as tensorflow/tpu
    models/official/efficientnet/lars_optimizer.py computes it: for a variable w with gradient g,
    trust = eeta * |w| / (|g| + weight_decay_rate * |w| + epsilon) (1 when |w| or |g| is 0),
    g' = g + weight_decay_rate * w, then momentum on the scaled update:
    m = momentum * m + lr * trust * g', w -= m (Nesterov: w -= momentum * m + lr * trust * g').
    Variables in ``excluded`` get neither the trust ratio nor the weight decay (plain momentum).

    Args:
        learning_rate: float or schedule.
        momentum, weight_decay_rate, eeta, epsilon, nesterov: as above.
        excluded: variables skipped from adaptation and decay (the reference's skip_list).
    """

    def __init__(self, learning_rate, momentum=0.9, weight_decay_rate=1e-5, eeta=1e-3,
                 epsilon=0.0, nesterov=False, excluded: Sequence = (), name="lars", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.momentum, self.weight_decay_rate = momentum, weight_decay_rate
        self.eeta, self.epsilon, self.nesterov = eeta, epsilon, nesterov
        self._excluded = {self._var_key(v) for v in excluded}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentums = self.add_optimizer_variables(var_list, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        grad = tf.cast(gradient, dtype)
        if self._var_key(variable) not in self._excluded:
            decay = tf.cast(self.weight_decay_rate, dtype)
            w_norm, g_norm = tf.norm(variable), tf.norm(grad)
            trust = tf.where(w_norm > 0, tf.where(
                g_norm > 0, self.eeta * w_norm / (g_norm + decay * w_norm + self.epsilon), 1.0), 1.0)
            lr = lr * tf.cast(trust, dtype)
            grad = grad + decay * variable
        m = self.momentums[self._get_variable_index(variable)]
        step = lr * grad
        self.assign(m, m * tf.cast(self.momentum, dtype) + step)
        if self.nesterov:
            self.assign_sub(variable, m * tf.cast(self.momentum, dtype) + step)
        else:
            self.assign_sub(variable, m)

    def get_config(self):
        config = super().get_config()
        config.update(momentum=self.momentum, weight_decay_rate=self.weight_decay_rate,
                      eeta=self.eeta, epsilon=self.epsilon, nesterov=self.nesterov)
        return config


class LAMB(keras.optimizers.Optimizer):
    """LAMB (You et al. 2019, arXiv:1904.00962, Algorithm 2), the form NVIDIA's nvLAMB and
    tensorflow-addons' LAMB compute: Adam moments with bias correction,
    r = m_hat / (sqrt(v_hat) + epsilon) + weight_decay_rate * w, trust = |w| / |r| (1 when either
    is 0), w -= lr * trust * r. Variables in ``excluded`` get no weight decay and no trust ratio.
    (Keras' own ``Lamb`` decays the weights outside the trust ratio and excludes nothing.)

    Args:
        learning_rate: float or schedule.
        beta_1, beta_2, epsilon, weight_decay_rate: as above.
        excluded: variables without decay and adaptation (BN parameters, biases).
    """

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 weight_decay_rate=0.0, excluded: Sequence = (), name="lamb", **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.weight_decay_rate = weight_decay_rate
        self._excluded = {self._var_key(v) for v in excluded}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.momentums, self.velocities = self.add_optimizer_variables(
            var_list, ["momentum", "velocity"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = tf.cast(learning_rate, dtype)
        grad = tf.cast(gradient, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        index = self._get_variable_index(variable)
        m, v = self.momentums[index], self.velocities[index]
        self.assign(m, beta_1 * m + (1 - beta_1) * grad)
        self.assign(v, beta_2 * v + (1 - beta_2) * tf.square(grad))
        m_hat = m / (1 - tf.pow(beta_1, step))
        v_hat = v / (1 - tf.pow(beta_2, step))
        update = m_hat / (tf.sqrt(v_hat) + tf.cast(self.epsilon, dtype))
        if self._var_key(variable) not in self._excluded:
            update = update + tf.cast(self.weight_decay_rate, dtype) * variable
            w_norm, u_norm = tf.norm(variable), tf.norm(update)
            lr = lr * tf.where(w_norm > 0, tf.where(u_norm > 0, w_norm / u_norm, 1.0), 1.0)
        self.assign_sub(variable, lr * update)

    def get_config(self):
        config = super().get_config()
        config.update(beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon,
                      weight_decay_rate=self.weight_decay_rate)
        return config


class TrainerHooks:
    """Mixed in before a Keras optimizer class (see :func:`with_hooks`): clips the gradients
    by their global norm after the cross-replica sum (``clip_norm``), and scales the learning
    rate of each variable by ``lr_scales`` ([(variable, scale)]; missing = 1). Keras' decoupled
    weight decay (AdamW) moves into ``update_step`` so it is scaled too, as timm's per-group
    learning rate scales torch AdamW's decay."""

    def configure_hooks(self, clip_norm: Optional[float], lr_scales: Sequence[Tuple[object, float]]):
        self.clip_norm = clip_norm or None
        self._lr_scales = {self._var_key(v): float(s) for v, s in lr_scales}

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.clip_norm is None:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        # Keras' own global_clipnorm clips each replica's share before the all-reduce (as
        # automl's gclip does); the norm here is the global batch's (NVIDIA clips after the
        # Horovod all-reduce). Same steps as keras' TF backend _backend_update_step (its
        # internals as of keras 3.15; the two-replica test in test_train_optimizers.py
        # notices when they change).
        variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]
        pairs = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        clipped, _ = tf.clip_by_global_norm([g for g, _ in pairs], self.clip_norm)
        pairs = list(zip(clipped, [v for _, v in pairs]))
        tf.__internal__.distribute.interim.maybe_merge_call(
            self._distributed_tf_update_step, self._distribution_strategy, pairs, learning_rate)

    def _apply_weight_decay(self, variables):
        if not self._lr_scales:
            super()._apply_weight_decay(variables)
        # else: in update_step, with the variable's learning rate

    def update_step(self, gradient, variable, learning_rate):
        if not self._lr_scales:
            return super().update_step(gradient, variable, learning_rate)
        scale = self._lr_scales.get(self._var_key(variable), 1.0)
        learning_rate = tf.cast(learning_rate, variable.dtype) * scale
        if self.weight_decay is not None and self._use_weight_decay(variable):
            self.assign_sub(variable, variable * tf.cast(self.weight_decay, variable.dtype)
                            * learning_rate)
        return super().update_step(gradient, variable, learning_rate)


def with_hooks(optimizer: keras.optimizers.Optimizer, clip_norm: Optional[float] = None,
               lr_scales: Sequence[Tuple[object, float]] = ()) -> keras.optimizers.Optimizer:
    """``optimizer`` with :class:`TrainerHooks` (same state, a subclass of its class): global
    norm clipping at ``clip_norm`` and per-variable learning-rate ``lr_scales``."""
    cls = type(optimizer)
    # The instance keeps its state and tracking; only its methods gain the hooks.
    optimizer.__class__ = type(cls.__name__, (TrainerHooks, cls), {})
    optimizer.configure_hooks(clip_norm, lr_scales)
    return optimizer


# ------------------------------------------------------------------------ the table


def _rmsprop(t, lr, hyper, excluded):
    return keras.optimizers.RMSprop(lr, rho=t.rmsprop_rho, momentum=t.momentum, epsilon=t.epsilon)


def _adam(t, lr, hyper, excluded):
    return keras.optimizers.Adam(lr)


def _momentum(t, lr, hyper, excluded):
    return keras.optimizers.SGD(lr, momentum=t.momentum)


def _sgd(t, lr, hyper, excluded):
    return keras.optimizers.SGD(lr)


def _adamw(t, lr, hyper, excluded):
    optimizer = keras.optimizers.AdamW(
        lr, weight_decay=hyper["optimizer_weight_decay"], beta_1=hyper["beta_1"],
        beta_2=hyper["beta_2"], epsilon=hyper["optimizer_epsilon"])
    optimizer.exclude_from_weight_decay(var_list=list(excluded))
    return optimizer


def _lamb(t, lr, hyper, excluded):
    return LAMB(lr, beta_1=hyper["beta_1"], beta_2=hyper["beta_2"],
                epsilon=hyper["optimizer_epsilon"],
                weight_decay_rate=hyper["optimizer_weight_decay"], excluded=excluded)


def _lars(t, lr, hyper, excluded):
    return LARS(lr, momentum=t.momentum, weight_decay_rate=hyper["optimizer_weight_decay"],
                eeta=hyper["trust_coefficient"], epsilon=hyper["optimizer_epsilon"],
                excluded=excluded)


OPTIMIZERS: Dict[str, OptimizerSpec] = {spec.name: spec for spec in (
    # tensorflow/tpu efficientnet utils.build_optimizer: RMSProp(decay 0.9, momentum 0.9,
    # epsilon 1e-3 inside the square root; Keras' RMSprop agrees; TF1 started the mean square
    # at 1.0, Keras at 0), reading train.rmsprop_rho, momentum and epsilon. The official
    # recipes' optimizer.
    OptimizerSpec("rmsprop", _rmsprop, {}, True),
    OptimizerSpec("adam", _adam, {}, True),  # Keras' Adam defaults (the digits recipe)
    # tensorflow/tpu utils.build_optimizer: plain SGD, and momentum (train.momentum).
    OptimizerSpec("sgd", _sgd, {}, True),
    OptimizerSpec("momentum", _momentum, {}, True),
    # torch.optim.AdamW defaults, which timm's create_optimizer_v2('adamw') uses: betas
    # (0.9, 0.999), eps 1e-8, weight decay 0.01 (NVIDIA TF2 ConvNets optimizer_factory's adamw
    # default 0.01 too). Decoupled: w -= lr * wd * w, off BN parameters and biases.
    OptimizerSpec("adamw", _adamw, {"optimizer_weight_decay": 0.01, "beta_1": 0.9,
                                    "beta_2": 0.999, "optimizer_epsilon": 1e-8}, False),
    # NVIDIA DeepLearningExamples TensorFlow2/Classification/ConvNets/efficientnet_v2 README
    # (V2-S at batch 36,800 with nvLAMB): beta_1 0.9, beta_2 0.999, epsilon 1e-6, weight decay
    # 1e-5, grad_global_clip_norm 1 (set --grad_clip_norm=1), lr_init 5e-5 per 128 images
    # (--base_learning_rate=1e-4 here), 10 warm-up epochs.
    OptimizerSpec("lamb", _lamb, {"optimizer_weight_decay": 1e-5, "beta_1": 0.9,
                                  "beta_2": 0.999, "optimizer_epsilon": 1e-6}, False),
    # tensorflow/tpu efficientnet main.py flags lars_weight_decay 1e-5, lars_epsilon 0.0;
    # lars_optimizer.py eeta 0.001; utils.build_optimizer momentum 0.9 (train.momentum) and
    # skip_list batch_normalization/bias/beta/gamma. Its model_fn adds the L2 loss term
    # (--weight_decay 1e-5) whatever the optimizer, so the L2 term stays on for LARS too.
    OptimizerSpec("lars", _lars, {"optimizer_weight_decay": 1e-5, "optimizer_epsilon": 0.0,
                                  "trust_coefficient": 1e-3}, True),
)}


def describe() -> str:
    """The optimizers with optional settings and their defaults, in one line (help texts)."""
    return "; ".join(f"{name}: " + ", ".join(f"{k} {v:g}" for k, v in spec.defaults.items())
                     for name, spec in OPTIMIZERS.items() if spec.defaults)


def check(train_cfg) -> None:
    """Checks the optimizer keys of ``train_cfg`` (a TrainConfig); raises ValueError naming the
    key and the valid values."""
    name = train_cfg.optimizer
    if name not in OPTIMIZERS:
        raise ValueError(f"train.optimizer={name!r} is not valid (--optimizer); valid values: "
                         f"{list(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    for key in HYPERPARAMETERS:
        value = getattr(train_cfg, key)
        if value is None:
            continue
        users = [n for n, s in OPTIMIZERS.items() if key in s.defaults]
        if key not in spec.defaults:
            flag = " (--optimizer_weight_decay)" if key == "optimizer_weight_decay" else ""
            raise ValueError(f"train.{key}={value}{flag} is not used by train.optimizer={name!r}; "
                             f"it is a setting of {', '.join(users)}")
        if value < 0 or (key.startswith("beta") and value >= 1):
            raise ValueError(f"train.{key}={value} must be " +
                             ("in [0, 1)" if key.startswith("beta") else ">= 0"))
    clip = train_cfg.grad_clip_norm
    if clip is not None and clip < 0:
        raise ValueError(f"train.grad_clip_norm={clip} (--grad_clip_norm) must be >= 0 "
                         "(0 or None: no clipping)")
    decay = train_cfg.layer_decay
    if decay is not None and not 0 < decay <= 1:
        raise ValueError(f"train.layer_decay={decay} (--layer_decay) must be in (0, 1] "
                         "(None: off)")
    if train_cfg.layer_decay_groups not in LAYER_DECAY_GROUPS:
        raise ValueError(f"train.layer_decay_groups={train_cfg.layer_decay_groups!r} is not "
                         f"valid; valid values: {list(LAYER_DECAY_GROUPS)}")


# ------------------------------------------------------------------ layer-wise decay


def layer_groups(model: keras.Model, by: str = "stage") -> List[Tuple[str, List]]:
    """The model's trainable variables in timm's layer-decay groups, input side first:
    ``stem``, one group per stage (``by='stage'``, timm's ``group_matcher(coarse=True)``) or per
    block (``by='block'``, what timm's ``param_groups_layer_decay`` uses), then ``classifier``.
    As in timm, the head (top conv and BN) belongs to the last stage / block, and any other
    variable (the classifier) to the last group. Blocks come from the model's spec."""
    spec = spec_lib.model_spec(model)
    by_prefix = {b.prefix: (f"stage{b.stage}" if by == "stage" else f"block{b.index}")
                 for b in spec.blocks}
    last = by_prefix[spec.blocks[-1].prefix]
    stem, head = {spec_lib.STEM_CONV, spec_lib.STEM_BN}, {spec_lib.TOP_CONV, spec_lib.TOP_BN}
    groups: Dict[str, List] = {"stem": []}
    for name in by_prefix.values():
        groups.setdefault(name, [])
    groups["classifier"] = []
    prefixes = sorted(by_prefix, key=len, reverse=True)
    for layer in model.layers:
        if not layer.trainable_weights:
            continue
        if layer.name in stem:
            group = "stem"
        elif layer.name in head:
            group = last
        else:
            prefix = next((p for p in prefixes if layer.name.startswith(p)), None)
            group = by_prefix[prefix] if prefix else "classifier"
        groups[group].extend(layer.trainable_weights)
    return list(groups.items())


def layer_scales(model: keras.Model, decay: float, by: str = "stage"):
    """([(variable, scale)], [(group, scale, number of variables)]): group i
    of n gets ``decay ** (n - 1 - i)`` (timm param_groups_layer_decay), the classifier 1."""
    groups = layer_groups(model, by)
    top = len(groups) - 1
    scales, table = [], []
    for i, (name, variables) in enumerate(groups):
        scale = decay ** (top - i)
        table.append((name, scale, len(variables)))
        scales += [(var, scale) for var in variables]
    return scales, table


# ------------------------------------------------------------------------ the factory


def excluded_variables(model: keras.Model, pattern: str) -> List:
    """Trainable variables whose ``<layer>/<variable>`` key matches ``pattern``
    (``train.weight_decay_exclude``): no weight decay, no trust ratio."""
    exclude = re.compile(pattern)
    return [var for layer in model.layers for var in layer.trainable_weights
            if exclude.match(variable_key(layer.name, var))]


def make_optimizer(train_cfg, learning_rate, model: Optional[keras.Model] = None):
    """The optimizer ``train_cfg.optimizer`` with the config's hyperparameters (defaults from
    ``OPTIMIZERS``), global-norm clipping (``grad_clip_norm``) and layer-wise learning-rate
    decay (``layer_decay``, needs ``model``). Returns (optimizer, info dict for run_info).

    Raises:
        ValueError: an unknown optimizer or a bad setting (see :func:`check`).
    """
    check(train_cfg)
    spec = OPTIMIZERS[train_cfg.optimizer]
    hyper = spec.hyper(train_cfg)
    excluded = (excluded_variables(model, train_cfg.weight_decay_exclude)
                if model is not None else [])
    optimizer = spec.build(train_cfg, learning_rate, hyper, excluded)
    info: Dict[str, object] = {"name": spec.name, **hyper, "l2_loss_term": spec.l2_loss,
                               "grad_clip_norm": train_cfg.grad_clip_norm or None}
    scales = []
    if train_cfg.layer_decay is not None:
        if model is None:
            raise ValueError("train.layer_decay needs the model")
        scales, table = layer_scales(model, train_cfg.layer_decay, train_cfg.layer_decay_groups)
        info["layer_decay"] = {name: scale for name, scale, _ in table}
    if train_cfg.grad_clip_norm or scales:
        optimizer = with_hooks(optimizer, train_cfg.grad_clip_norm, scales)
    return optimizer, info
