"""Faster execution of a built model with the same weights and, up to float rounding, the same
numbers (measured effect: docs/performance.md).

- :class:`FoldedModel` (inference): batch norm folded into the preceding convolution's kernel
  and bias, input normalization into the stem convolution; a ``tf.Module`` whose ``serve``
  function ``tf.saved_model.save`` and the TF-Lite converter take (the ``saved_model`` export
  is built from it).
- :func:`with_fused_batchnorm` (training): a clone whose batch norm runs TF's fused kernel,
  with the same layer names, variable paths and weights, so checkpoints and ``load_weights``
  interchange with the plain model. train.main trains it.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from efficientnet_tf.layers import FusedBatchNormalization, Preprocessing

_CONVS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
SUPPORTED_LAYERS = ("InputLayer", "Preprocessing", "Conv2D", "DepthwiseConv2D",
                    "BatchNormalization", "FusedBatchNormalization", "Activation", "GlobalAveragePooling2D",
                    "GlobalMaxPooling2D", "Reshape", "Multiply", "Add", "Dropout", "Dense")


# ------------------------------------------------------------------ BN-folded inference


def _swish(x):
    # Written out (not tf.nn.silu, whose custom gradient wraps it in an IdentityN) so that
    # grappler's remapper sees its swish pattern and rewrites it to oneDNN's _MklSwish. The
    # pattern is Mul(Sigmoid(x), x) in this order (tensorflow/core/grappler/optimizers/
    # remapper.cc, FindSigmoidAndMul; Mul(x, Sigmoid(x)) is not matched): profiled at batch 32
    # (bench.profile), the unfused Sigmoid alone was 31% of the serving graph's op time.
    return tf.math.sigmoid(x) * x


def _identity(x):
    return x


_ACTIVATIONS = {"swish": _swish, "silu": _swish, "relu": tf.nn.relu, "relu6": tf.nn.relu6,
                "sigmoid": tf.math.sigmoid, "softmax": tf.nn.softmax, "linear": _identity}

def _activation_fn(activation):
    name = getattr(activation, "__name__", str(activation))
    if name not in _ACTIVATIONS:
        raise ValueError(f"Activation {name!r} cannot be folded; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _inputs_of(layer):
    inputs = layer.input
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _consumers(model):
    consumers = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        for tensor in _inputs_of(layer):
            producer = tensor._keras_history.operation  # pylint: disable=protected-access
            consumers.setdefault(producer.name, []).append(layer)
    return consumers


class FoldedModel(tf.Module):
    """Inference-only twin of an efficientnet_tf model (any family, any head, any endpoints).

    Args:
        model: a single-input efficientnet_tf model (or its ``endpoints_model``).
        name: the module's name (default: the model's, with ``_folded``).
        constants: the folded weights become constants of the traced graph instead of
            variables of this module (``folded_variables`` is then empty); such a graph is a
            protobuf, so its weights must stay under 2 GB.

    ``serve`` is the ``tf.function`` to save or convert (float32 images of the model's input
    shape with a free batch dimension; the model's outputs); calling the module calls it.

    Raises:
        ValueError: a model with several inputs, or a layer or activation it cannot fold.
    """

    # Why constants: oneDNN's fused convolution re-lays-out a filter it cannot prove constant
    # on every call (docs/performance.md).
    def __init__(self, model: keras.Model, name: str | None = None, constants: bool = False):
        super().__init__(name=name or f"{model.name.replace('-', '_')}_folded")
        if len(model.inputs) != 1:
            raise ValueError(f"FoldedModel needs a single-input model, {model.name} has "
                             f"{len(model.inputs)}")
        self._plan = _Plan(model, constants)
        # Folded weights as variables of this module (saved with it; the Keras model is not).
        # With constants=True there are none: the traced graph holds the values.
        self.folded_variables = dict(self._plan.variables)
        spec = tf.TensorSpec([None, *model.inputs[0].shape[1:]], tf.float32, name="images")
        self.serve = tf.function(self.forward, input_signature=[spec])

    def __call__(self, images):
        return self.serve(images)

    def forward(self, images):
        """The folded graph on a batch of images, untraced (``serve`` traces it)."""
        return self._plan.run(tf.cast(images, tf.float32))


class _Plan:
    """The model's layers in topological order as (input ids, output id, fn) steps, with each
    conv + BatchNormalization (+ Activation) collapsed into one step."""

    def __init__(self, model, constants=False):
        self.variables = {}
        self._constants = constants
        self._alias = {}  # keras tensor id -> id of the tensor that now carries its value
        self._input_id = id(model.inputs[0])
        self._outputs = keras.tree.map_structure(id, model.output)
        self._output_ids = set(keras.tree.flatten(self._outputs))
        self._consumers = _consumers(model)
        self._input_scale = {}  # conv name -> per-input-channel scale folded from Preprocessing
        self._skip = set()
        self.steps = []
        for layer in model.layers:
            kind = type(layer).__name__
            if isinstance(layer, keras.layers.InputLayer) or layer.name in self._skip:
                continue
            if kind not in SUPPORTED_LAYERS:
                raise ValueError(f"Layer {layer.name!r} of type {kind} is not supported by "
                                 f"FoldedModel; supported types: {list(SUPPORTED_LAYERS)}")
            in_ids = [self._alias.get(id(t), id(t)) for t in _inputs_of(layer)]
            self.steps.append((layer.name, in_ids, id(layer.output), self._layer_fn(layer)))

    def run(self, images):
        values = {self._input_id: images}
        for name, in_ids, out_id, fn in self.steps:
            with tf.name_scope(name):  # op names follow the Keras layers (profiles, TF-Lite)
                values[out_id] = fn(*[values[i] for i in in_ids])
        return keras.tree.map_structure(lambda i: values[self._alias.get(i, i)], self._outputs)

    def pack(self, flat):
        return keras.tree.pack_sequence_as(self._outputs, flat)

    def _single_consumer(self, layer):
        found = self._consumers.get(layer.name, [])
        if len(found) == 1 and id(layer.output) not in self._output_ids:
            return found[0]
        return None

    def _weight(self, layer_name, what, value):
        """A folded weight: a variable of the module, or with constants=True the array itself."""
        if self._constants:  # an array: each trace converts it into a Const node of its graph
            return np.asarray(value, np.float32)
        var = tf.Variable(np.asarray(value, np.float32), trainable=False,
                          name=f"{layer_name}/{what}")
        self.variables[f"{layer_name}/{what}"] = var
        return var

    def _layer_fn(self, layer):
        if isinstance(layer, Preprocessing):
            return self._preprocessing_fn(layer)
        if isinstance(layer, _CONVS):
            return self._conv_fn(layer)
        if isinstance(layer, keras.layers.BatchNormalization):  # not after a bias-free conv
            scale, shift = _bn_affine(layer)
            scale = self._weight(layer.name, "scale", scale)
            shift = self._weight(layer.name, "shift", shift)
            return lambda x: x * scale + shift
        if isinstance(layer, keras.layers.Activation):
            return _activation_fn(layer.activation)
        if isinstance(layer, keras.layers.GlobalAveragePooling2D):
            return lambda x, keep=layer.keepdims: tf.reduce_mean(x, [1, 2], keepdims=keep)
        if isinstance(layer, keras.layers.GlobalMaxPooling2D):
            return lambda x, keep=layer.keepdims: tf.reduce_max(x, [1, 2], keepdims=keep)
        if isinstance(layer, keras.layers.Reshape):
            return lambda x, shape=tuple(layer.target_shape): tf.reshape(x, (-1, *shape))
        if isinstance(layer, keras.layers.Multiply):
            return lambda *xs: _reduce(tf.math.multiply, xs)
        if isinstance(layer, keras.layers.Add):
            return lambda *xs: _reduce(tf.math.add, xs)
        if isinstance(layer, keras.layers.Dropout):
            return lambda x: x
        if isinstance(layer, keras.layers.Dense):
            kernel = self._weight(layer.name, "kernel", layer.kernel.numpy())
            bias = (self._weight(layer.name, "bias", layer.bias.numpy()) if layer.use_bias
                    else np.zeros([kernel.shape[-1]], np.float32))
            act = _activation_fn(layer.activation)
            return lambda x: act(tf.nn.bias_add(tf.matmul(x, kernel), bias))
        raise AssertionError(f"unhandled layer {layer.name}")

    def _preprocessing_fn(self, layer):
        scale = np.array([255.0 / s for s in layer.std], np.float32)
        offset = np.array([-m / s for m, s in zip(layer.mean, layer.std)], np.float32)
        consumer = self._single_consumer(layer)
        if type(consumer) is keras.layers.Conv2D and consumer.groups == 1:
            # (x * scale + offset) conv W == (x + offset / scale) conv (W * scale per input
            # channel); "same" zero padding stays zero padding since scale > 0. One add over
            # the input instead of a multiply and an add.
            self._input_scale[consumer.name] = scale
            shift = offset / scale  # arrays: Const nodes of the traced graph, not captures
            return lambda x: x + shift
        return lambda x: x * scale + offset

    def _conv_fn(self, layer):
        depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
        kernel = layer.kernel.numpy()
        out_channels = kernel.shape[2] * kernel.shape[3] if depthwise else kernel.shape[3]
        bias = layer.bias.numpy() if layer.use_bias else np.zeros(out_channels, np.float32)
        if layer.name in self._input_scale:
            kernel = kernel * self._input_scale[layer.name][None, None, :, None]
        activation = _activation_fn(layer.activation)
        bn = self._single_consumer(layer)
        if (not layer.use_bias and activation is _identity
                and isinstance(bn, keras.layers.BatchNormalization)):
            scale, shift = _bn_affine(bn)
            # BN's per-output-channel scale goes into the kernel, its shift becomes the bias.
            kernel = kernel * scale.reshape(kernel.shape[2:] if depthwise else (-1,))
            bias = shift
            self._skip.add(bn.name)
            self._alias[id(bn.output)] = id(layer.output)
            act_layer = self._single_consumer(bn)
            if isinstance(act_layer, keras.layers.Activation):
                activation = _activation_fn(act_layer.activation)
                self._skip.add(act_layer.name)
                self._alias[id(act_layer.output)] = id(layer.output)
        kernel = self._weight(layer.name, "kernel", kernel)
        bias = self._weight(layer.name, "bias", bias)
        strides, padding = [1, *layer.strides, 1], layer.padding.upper()
        dilations = list(layer.dilation_rate)
        if depthwise:
            return lambda x: activation(tf.nn.bias_add(tf.nn.depthwise_conv2d(
                x, kernel, strides, padding, dilations=dilations), bias))
        return lambda x: activation(tf.nn.bias_add(tf.nn.conv2d(
            x, kernel, strides, padding, dilations=dilations), bias))


def _reduce(op, xs):
    out = xs[0]
    for x in xs[1:]:
        out = op(out, x)
    return out


def _bn_affine(bn):
    """BatchNormalization in inference as y = x * scale + shift (numpy, float32)."""
    gamma = bn.gamma.numpy() if bn.scale else 1.0
    beta = bn.beta.numpy() if bn.center else 0.0
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    scale = gamma / np.sqrt(var + bn.epsilon)
    return (np.asarray(scale, np.float32) * np.ones_like(mean),
            np.asarray(beta - mean * scale, np.float32) * np.ones_like(mean))


# ---------------------------------------------------------------- fused / Keras BN clones


def _swap_batchnorm(model: keras.Model, source: type, target: type) -> keras.Model:
    def clone(layer):
        if type(layer) is source:
            return target.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone)
    copy.set_weights(model.get_weights())
    return copy


def with_fused_batchnorm(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (same layer names, variable paths and weights) whose Keras
    BatchNormalization layers are :class:`FusedBatchNormalization` (what train.main trains;
    ``build_model`` keeps Keras' own). Build it inside the distribution strategy's scope,
    like the model."""
    return _swap_batchnorm(model, keras.layers.BatchNormalization, FusedBatchNormalization)


def with_keras_batchnorm(model: keras.Model) -> keras.Model:
    """The inverse: a copy whose batch norm is Keras' own ``BatchNormalization`` (the
    reference the fused clone is tested against; loads anywhere without this package)."""
    return _swap_batchnorm(model, FusedBatchNormalization, keras.layers.BatchNormalization)


__all__ = ["FoldedModel", "FusedBatchNormalization", "with_fused_batchnorm", "with_keras_batchnorm"]
