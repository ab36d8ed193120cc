"""TF-Hub modules by handle, and a Keras 3 layer for them.

:func:`resolve` turns a handle into a local directory, :func:`load` loads the SavedModel there,
:class:`KerasLayer` is for Keras 3 what ``tensorflow_hub.KerasLayer`` is for tf_keras. Handles:

- a Kaggle Models handle ``OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]`` (kagglehub and its cache,
  ``KAGGLEHUB_CACHE``; a versioned handle already in the cache resolves without network);
- a Kaggle model URL (``https://www.kaggle.com/models/OWNER/MODEL/[frameworks/]FRAMEWORK/
  [variations/]VARIATION[/[versions/]VERSION]``): the same handle, through kagglehub;
- any other http(s) URL, e.g. ``https://tfhub.dev/...``: fetched as tensorflow_hub fetches it
  (``?tf-hub-format=compressed``, a ``.tar.gz`` extracted into ``TFHUB_CACHE_DIR``);
- a local directory.
"""

from __future__ import annotations

import inspect
import os
import re
import urllib.parse
from typing import Dict, List, Optional

import keras
import tensorflow as tf

# kagglehub's handle forms (kagglehub/handle.py NUM_VERSIONED_MODEL_PARTS = 5,
# NUM_UNVERSIONED_MODEL_PARTS = 4): owner/model/framework/variation[/version].
_SLUG = r"[A-Za-z0-9][\w.-]*"
KAGGLE_HANDLE = re.compile(rf"(?P<owner>{_SLUG})/(?P<model>{_SLUG})/(?P<framework>{_SLUG})/"
                           rf"(?P<variation>{_SLUG})(/(?P<version>\d+))?")
# Kaggle model pages: kaggle.com/models/OWNER/MODEL/frameworks/FRAMEWORK/variations/VARIATION/versions/N
# (the page URLs), or kaggle.com/models/OWNER/MODEL/FRAMEWORK/VARIATION/N (kagglehub's
# ModelHandle.to_url()).
KAGGLE_URL = re.compile(rf"/models/(?P<owner>{_SLUG})/(?P<model>{_SLUG})/(frameworks/)?(?P<framework>{_SLUG})/"
                        rf"(variations/)?(?P<variation>{_SLUG})(/(versions/)?(?P<version>\d+))?/?")
KAGGLE_HOSTS = ("kaggle.com", "www.kaggle.com")
# Kaggle's framework slugs as kagglehub spells them (Kaggle/kaggle-api documentation/models_metadata.md:
# tensorFlow1, tensorFlow2, tfLite, tfJs, pyTorch, jax, coral); page URLs capitalize them.
FRAMEWORKS = ("tensorFlow1", "tensorFlow2", "tfLite", "tfJs", "pyTorch", "jax", "coral", "keras", "other")
TF1_MODULE_FILE = "tfhub_module.pb"  # marks the TF1 Hub format (tensorflow_hub/module_v2.py)


def _kaggle_handle(match: re.Match) -> str:
    framework = {f.lower(): f for f in FRAMEWORKS}.get(match["framework"].lower(), match["framework"])
    parts = [match["owner"], match["model"], framework, match["variation"]]
    return "/".join(parts + ([match["version"]] if match["version"] else []))


def kaggle_handle(handle: str) -> Optional[str]:
    """The kagglehub model handle a Kaggle handle or Kaggle model URL names, else None."""
    if handle.startswith(("http://", "https://")):
        url = urllib.parse.urlparse(handle)
        match = KAGGLE_URL.fullmatch(url.path) if url.hostname in KAGGLE_HOSTS else None
    else:
        match = KAGGLE_HANDLE.fullmatch(handle)
    return _kaggle_handle(match) if match else None


def resolve(handle) -> str:
    """The local directory of a module (see the module docstring for the handle forms).

    Raises:
      ImportError: a Kaggle handle without kagglehub, or a URL without tensorflow_hub.
      FileNotFoundError: a local path that does not exist and is no handle.
    """
    handle = os.fspath(handle)
    if os.path.isdir(handle):
        return handle
    kaggle = kaggle_handle(handle)
    if kaggle:
        try:
            import kagglehub
        except ImportError as err:
            raise ImportError(f"{handle!r} is a Kaggle Models handle: install kagglehub "
                              "(pip install efficientnet_tf[kaggle])") from err
        try:
            return kagglehub.model_download(kaggle)
        except Exception as err:  # requests' ConnectionError and kagglehub's errors: say what to do
            if "ConnectionError" not in type(err).__name__:
                raise
            hint = "" if kaggle.count("/") == 4 else ("; the latest version is looked up on kaggle.com, a handle "
                                                      "with /VERSION resolves from kagglehub's cache offline")
            raise ConnectionError(f"Cannot resolve Kaggle handle {kaggle!r}: {err}{hint}") from err
    if handle.startswith(("http://", "https://")):
        try:
            import tensorflow_hub
        except ImportError as err:
            raise ImportError(f"{handle!r} is a URL: fetching it needs tensorflow_hub") from err
        return tensorflow_hub.resolve(handle)
    raise FileNotFoundError(f"{handle!r} is no directory, Kaggle handle (OWNER/MODEL/FRAMEWORK/VARIATION[/VERSION]) "
                            "or http(s) URL")


def is_tf1_module(path: str) -> bool:
    """Whether the directory holds a module in the TF1 Hub format."""
    return os.path.isfile(os.path.join(path, TF1_MODULE_FILE))


def load(handle, tags=None, options: Optional[tf.saved_model.LoadOptions] = None):
    """Resolves ``handle`` and loads its SavedModel (``tf.saved_model.load``).

    tags: the MetaGraph to load; None picks the inference one ({} for TF1 Hub modules, which
    hold {} and {"train"}, like ``tensorflow_hub.load``). Returns the restored object.
    """
    path = resolve(handle)
    if tags is None and is_tf1_module(path):
        tags = []
    return tf.saved_model.load(path, tags=tags, options=options)


def _names(items) -> List[str]:
    return sorted(str(item) for item in items)


def _has_training_argument(function) -> bool:
    try:
        return "training" in inspect.signature(function).parameters
    except (TypeError, ValueError):  # no signature to inspect
        return False


def _variables(module, function) -> list:
    """The module's ``variables`` (reusable API), else those the called functions capture."""
    if getattr(module, "variables", None) is not None:
        return list(module.variables)
    found = {}
    for concrete in getattr(function, "concrete_functions", None) or [function]:
        for variable in concrete.variables:
            found.setdefault(id(variable), variable)
    return list(found.values())


@keras.saving.register_keras_serializable(package="efficientnet_tf")
class KerasLayer(keras.layers.Layer):
    """A TF-Hub module as a Keras 3 layer.

    Without ``signature`` the layer calls the module's reusable SavedModel API:
    ``module(inputs, training=..., **arguments)``, where training is True only when the layer is
    trainable and called for training (batch normalization then uses batch statistics and
    updates its moving averages); the module's ``variables`` become the layer's weights (its
    ``trainable_variables`` trainable when ``trainable=True``) and its ``regularization_losses``
    are added to the layer's losses when trainable. With ``signature`` it calls that signature
    (inference; TF1 Hub modules only offer this), passing the inputs as the signature's single
    input or, as a dict, by name. ``output_key`` picks one output of a dict (default "default"
    for signatures).

    Args:
      handle: anything :func:`resolve` accepts; stored in the layer's config, so a ``.keras``
        file reloads the module from it.
      trainable: whether fine-tuning changes the module's weights.
      signature: the name of a signature to call instead of ``__call__``.
      output_key: the key of a dict output to return.
      arguments: extra keyword arguments for ``__call__``.

    Raises:
      ValueError: the module lacks what was asked (``__call__``, the signature, the output key,
        training for a TF1 module); the message lists what it has.
    """

    def __init__(self, handle, trainable: bool = False, signature: Optional[str] = None,
                 output_key: Optional[str] = None, arguments: Optional[Dict] = None, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = os.fspath(handle)
        self.signature = signature
        self.arguments = dict(arguments or {})
        path = resolve(self.handle)
        tf1 = is_tf1_module(path)
        self._module = tf.saved_model.load(path, tags=[] if tf1 else None)
        module, what = self._module, f"module {self.handle!r}"
        if signature is None:
            if tf1 or not callable(module):
                raise ValueError(f"{what} has no reusable SavedModel API (no __call__"
                                 + (", it is a TF1 Hub module" if tf1 else "") + "); call one of its signatures "
                                 f"with signature=NAME: {_names(module.signatures)}")
            self._function = module.__call__
            self._training_argument = _has_training_argument(self._function)
            self._inputs = None
        else:
            if signature not in module.signatures:
                raise ValueError(f"{what} has no signature {signature!r}; its signatures: {_names(module.signatures)}")
            if self.arguments:
                raise ValueError(f"arguments={self.arguments!r} go to __call__; a signature takes only its inputs")
            if trainable:
                raise ValueError(f"{what}: signature {signature!r} serves inference; fine-tuning (trainable=True) "
                                 "needs the reusable SavedModel API (__call__ with training), "
                                 + ("which TF1 Hub modules do not have" if tf1 else "called without signature="))
            self._function = module.signatures[signature]
            self._training_argument = False
            self._inputs = sorted(self._function.structured_input_signature[1])
            outputs = sorted(self._function.structured_outputs)
            output_key = output_key or ("default" if "default" in outputs else None)
            if output_key is None and len(outputs) == 1:
                output_key = outputs[0]
            if output_key not in outputs:
                raise ValueError(f"{what}: signature {signature!r} has no output {output_key!r}; its outputs: "
                                 f"{outputs}")
        self.output_key = output_key
        variables = _variables(module, self._function)
        trainable_ids = {id(v) for v in (getattr(module, "trainable_variables", None) or [])}
        self._regularization_losses = list(getattr(module, "regularization_losses", None) or [])
        for loss in self._regularization_losses:
            if not callable(loss):
                raise ValueError(f"{what}: regularization_losses must be callables, got {loss!r}")
        for variable in variables:
            # keras.Variable adopts a tf.Variable passed as its initializer (keras/src/backend/
            # tensorflow/core.py Variable._initialize): the layer's weights ARE the module's.
            self._track_variable(keras.Variable(initializer=variable, trainable=id(variable) in trainable_ids,
                                                dtype=variable.dtype, shape=variable.shape,
                                                name=variable.name.split(":")[0].replace("/", "_")))
        # A restored SavedModel function may hold ops XLA does not compile; Keras' jit_compile="auto"
        # then stays off for models with this layer.
        self.supports_jit = False
        self.built = True

    def call(self, inputs, training=None):
        if self._inputs is not None:  # a signature
            if isinstance(inputs, dict):
                feed = inputs
            elif len(self._inputs) == 1:
                feed = {self._inputs[0]: inputs}
            else:
                raise ValueError(f"signature {self.signature!r} takes inputs {self._inputs}: pass a dict")
            outputs = self._function(**{k: tf.convert_to_tensor(v) for k, v in feed.items()})
        else:
            training = bool(training) and self.trainable  # as hub.KerasLayer: frozen means inference
            kwargs = dict(self.arguments)
            if self._training_argument:
                kwargs["training"] = training
            outputs = self._function(inputs, **kwargs)
            if self.trainable:
                for loss in self._regularization_losses:
                    self.add_loss(loss())
        if self.output_key is not None:
            if not isinstance(outputs, dict):
                raise ValueError(f"output_key={self.output_key!r}, but module {self.handle!r} returns a "
                                 f"{type(outputs).__name__}, not a dict")
            if self.output_key not in outputs:
                raise ValueError(f"module {self.handle!r} has no output {self.output_key!r}; its outputs: "
                                 f"{_names(outputs)}")
            return outputs[self.output_key]
        return outputs

    @classmethod
    def from_config(cls, config):
        # Like keras.layers.TFSMLayer: a .keras file naming a SavedModel runs that model's graph
        # (which may read and write files), so Keras' safe mode (the load_model default) refuses it.
        from keras.src.saving import serialization_lib  # keras has no public getter for safe mode

        if serialization_lib.in_safe_mode():
            raise ValueError(f"This .keras file loads the TF-Hub module {config.get('handle')!r}, whose graph runs "
                             "when called; if you trust it, load with keras.saving.load_model(path, safe_mode=False)")
        return cls(**config)

    def get_config(self):
        config = super().get_config()
        config.update(handle=self.handle, signature=self.signature, output_key=self.output_key,
                      arguments=dict(self.arguments) or None)
        return config
