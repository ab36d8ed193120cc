"""EfficientNet V1, Lite and V2 for TensorFlow / Keras 3, from one architecture table."""

from efficientnet_tf import console as _console

_console.hold_import_banner()  # first: a command-line job imports TensorFlow without its C++ banner

from efficientnet_tf.applications import CONSTRUCTORS
from efficientnet_tf.builder import build_model, endpoints_model
from efficientnet_tf.config import get_variant, list_models
from efficientnet_tf import hub  # registers hub.KerasLayer for .keras files
from efficientnet_tf.info import model_info
from efficientnet_tf.layers import Preprocessing
from efficientnet_tf.predict import inference_model, init_model
from efficientnet_tf.weights import LoadReport, load_weights

globals().update(CONSTRUCTORS)

__version__ = "0.1.0"
__all__ = ["build_model", "endpoints_model", "get_variant", "hub", "inference_model", "init_model", "list_models",
           "load_weights", "LoadReport", "model_info", "Preprocessing", *sorted(CONSTRUCTORS)]
