"""Round trips through every external naming: official TF checkpoints (tensorflow/tpu, automl),
efficientnet_pytorch and timm state dicts, written from a randomized model of ours and loaded
into a fresh one; plus the official names spelled out by hand, EMA preference, and the strict
all-or-nothing behaviour. (Equality with timm itself: test_weights_timm.py.)"""


import numpy as np
import pytest
import tensorflow as tf

import efficientnet_tf
from efficientnet_tf import config as cfg
from efficientnet_tf import spec as spec_lib
from efficientnet_tf.weights import naming, tf_checkpoint, torch_source
from helpers import randomize_like_trained

SIZE = 64
IMAGES = np.random.default_rng(1).uniform(0, 1, (2, SIZE + 3, SIZE - 5, 3)).astype("float32")
_MODELS = {}


def trained_like(name):
    """One randomized model per variant for the whole module (building is the slow part)."""
    if name not in _MODELS:
        model = efficientnet_tf.build_model(name, classifier_activation=None)
        calibration = np.random.default_rng(0).uniform(0, 1, (4, SIZE, SIZE, 3)).astype("float32")
        _MODELS[name] = (model, randomize_like_trained(model, calibration))
    return _MODELS[name][0]


_TARGETS = {}


def fresh(name):
    """A second model per variant to load into. Shared: every successful strict load below
    overwrites all of its variables, and the failing ones check that nothing changed."""
    if name not in _TARGETS:
        _TARGETS[name] = efficientnet_tf.build_model(name, classifier_activation=None)
    return _TARGETS[name]


def assert_same_model(reference, loaded):
    for a, b in zip(reference.weights, loaded.weights):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    expected = reference(IMAGES, training=False).numpy()
    got = loaded(IMAGES, training=False).numpy()
    assert np.abs(expected).max() > 0.5
    np.testing.assert_array_equal(expected, got)


# ------------------------------------------------------------------ official TF checkpoints
# Names spelled out from the official code (tensorflow/tpu efficientnet_model.py: tf.layers
# default names in call order; automl effnetv2_model.py: explicit conv2d/_1 and
# tpu_batch_normalization/_1/_2 counters), independent of efficientnet_tf.weights.naming.
OFFICIAL_NAMES = {
    "efficientnet-b0": {
        "stem/conv2d/kernel": (3, 3, 3, 32),
        "stem/tpu_batch_normalization/moving_variance": (32,),
        "blocks_0/depthwise_conv2d/depthwise_kernel": (3, 3, 32, 1),
        "blocks_0/tpu_batch_normalization/gamma": (32,),
        "blocks_0/se/conv2d/kernel": (1, 1, 32, 8),
        "blocks_0/se/conv2d/bias": (8,),
        "blocks_0/se/conv2d_1/kernel": (1, 1, 8, 32),
        "blocks_0/conv2d/kernel": (1, 1, 32, 16),
        "blocks_0/tpu_batch_normalization_1/beta": (16,),
        "blocks_1/conv2d/kernel": (1, 1, 16, 96),
        "blocks_1/tpu_batch_normalization/moving_mean": (96,),
        "blocks_1/depthwise_conv2d/depthwise_kernel": (3, 3, 96, 1),
        "blocks_1/tpu_batch_normalization_1/gamma": (96,),
        "blocks_1/se/conv2d/kernel": (1, 1, 96, 4),
        "blocks_1/conv2d_1/kernel": (1, 1, 96, 24),
        "blocks_1/tpu_batch_normalization_2/gamma": (24,),
        "blocks_3/depthwise_conv2d/depthwise_kernel": (5, 5, 144, 1),
        "blocks_15/conv2d_1/kernel": (1, 1, 1152, 320),
        "head/conv2d/kernel": (1, 1, 320, 1280),
        "head/tpu_batch_normalization/gamma": (1280,),
        "head/dense/kernel": (1280, 1000),
        "head/dense/bias": (1000,),
    },
    "efficientnet-lite0": {
        "blocks_0/depthwise_conv2d/depthwise_kernel": (3, 3, 32, 1),
        "blocks_0/conv2d/kernel": (1, 1, 32, 16),
        "blocks_1/conv2d_1/kernel": (1, 1, 96, 24),
        "head/conv2d/kernel": (1, 1, 320, 1280),
    },
    "efficientnetv2-b0": {
        "stem/conv2d/kernel": (3, 3, 3, 32),
        "blocks_0/conv2d/kernel": (3, 3, 32, 16),  # fused, expand 1: one k x k conv
        "blocks_0/tpu_batch_normalization/gamma": (16,),
        "blocks_1/conv2d/kernel": (3, 3, 16, 64),  # fused expand (k x k, stride 2)
        "blocks_1/tpu_batch_normalization/gamma": (64,),
        "blocks_1/conv2d_1/kernel": (1, 1, 64, 32),  # fused project
        "blocks_1/tpu_batch_normalization_1/gamma": (32,),
        "blocks_5/conv2d/kernel": (1, 1, 48, 192),  # first MBConv block
        "blocks_5/depthwise_conv2d/depthwise_kernel": (3, 3, 192, 1),
        "blocks_5/tpu_batch_normalization_1/gamma": (192,),
        "blocks_5/se/conv2d/kernel": (1, 1, 192, 12),
        "blocks_5/se/conv2d_1/bias": (192,),
        "blocks_5/conv2d_1/kernel": (1, 1, 192, 96),
        "blocks_5/tpu_batch_normalization_2/moving_mean": (96,),
        "head/conv2d/kernel": (1, 1, 192, 1280),
    },
}
NUM_BLOCKS = {"efficientnet-b0": 16, "efficientnet-lite0": 16, "efficientnetv2-b0": 21}


@pytest.mark.parametrize("name", sorted(OFFICIAL_NAMES))
def test_official_tf_names(name):
    model = trained_like(name)
    names = tf_checkpoint.checkpoint_tensors_from_model(model)
    assert len(names) == len(model.weights)
    for short, shape in OFFICIAL_NAMES[name].items():
        assert names[f"{name}/{short}"].shape == shape, short
    blocks = {n.split("/")[1] for n in names if n.split("/")[1].startswith("blocks_")}
    assert blocks == {f"blocks_{i}" for i in range(NUM_BLOCKS[name])}
    if name == "efficientnet-lite0":
        assert not any("/se/" in n for n in names)


def _ema_extras(model, name, rng):
    """Training-checkpoint content: EMA shadows of the true values (the plain variables get
    noise), optimizer slots and global_step."""
    true = tf_checkpoint.checkpoint_tensors_from_model(model)
    extra = {"global_step": np.array(1234, np.int64)}
    for var, value in true.items():
        extra[var + tf_checkpoint.EMA_SUFFIX] = value
        extra[var] = rng.normal(0, 1, value.shape).astype(value.dtype)  # overrides the true value
        extra[var + "/RMSProp"] = np.abs(rng.normal(0, 1, value.shape)).astype(value.dtype)
        extra[var + "/RMSProp_1"] = rng.normal(0, 1, value.shape).astype(value.dtype)
        extra[var + "/Momentum"] = rng.normal(0, 1, value.shape).astype(value.dtype)
    return extra


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-lite0", "efficientnetv2-b0"])
def test_tf_checkpoint_round_trip_prefers_ema(name, tmp_path):
    model = trained_like(name)
    prefix = tf_checkpoint.write_checkpoint(model, str(tmp_path / "ckpt" / "model.ckpt"),
                                            extra=_ema_extras(model, name, np.random.default_rng(2)))
    stored = dict(tf.train.list_variables(prefix))
    assert f"{name}/blocks_0/conv2d/kernel/ExponentialMovingAverage" in stored and "global_step" in stored
    loaded = fresh(name)
    # a directory, a prefix and the .index file all name the same checkpoint
    for source in (tmp_path / "ckpt", prefix, prefix + ".index"):
        report = efficientnet_tf.load_weights(loaded, source)
        assert report.ok and report.loaded == len(loaded.weights)
    assert_same_model(model, loaded)
    # without EMA the raw (noisy) values come back
    _, raw = tf_checkpoint.tensors_from_checkpoint(loaded, prefix, use_ema=False)
    assert not np.array_equal(raw["stem_conv/kernel"], model.get_layer("stem_conv").kernel.numpy())


def test_tf_checkpoint_without_ema_and_with_plain_bn_names(tmp_path):
    name = "efficientnet-lite0"
    model = trained_like(name)
    tensors = tf_checkpoint.checkpoint_tensors_from_model(model)
    # non-TPU training names the BN layers batch_normalization[_N]
    tensors = {k.replace("tpu_batch_normalization", "batch_normalization"): v for k, v in tensors.items()}
    names = sorted(tensors)
    prefix = str(tmp_path / "plain")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tensors[n] for n in names])
    loaded = fresh(name)
    assert efficientnet_tf.load_weights(loaded, prefix).ok
    assert_same_model(model, loaded)


def test_tf_checkpoint_of_another_variant_is_listed_and_model_untouched(tmp_path):
    prefix = tf_checkpoint.write_checkpoint(trained_like("efficientnet-b0"), str(tmp_path / "b0"))
    target = fresh("efficientnet-lite0")
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(ValueError) as err:
        efficientnet_tf.load_weights(target, prefix)
    message = str(err.value)
    assert "unchanged" in message and "scope 'efficientnet-b0'" in message
    assert "efficientnet-b0/blocks_0/se/conv2d/kernel" in message and "unexpected in the source (64)" in message
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, target.weights))
    report = efficientnet_tf.load_weights(target, prefix, strict=False)
    assert report.loaded == len(target.weights) and len(report.unexpected) == 64  # 16 blocks x 2 SE convs x (kernel, bias)


def test_not_an_efficientnet_checkpoint(tmp_path):
    prefix = str(tmp_path / "other")
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["resnet/conv1/kernel"], shape_and_slices=[""],
                      tensors=[np.zeros((3, 3, 3, 8), np.float32)])
    with pytest.raises(ValueError, match="not an official EfficientNet checkpoint"):
        efficientnet_tf.load_weights(fresh("efficientnet-lite0"), prefix)


# ------------------------------------------------------------------ PyTorch state dicts
@pytest.mark.parametrize("name,scheme,suffix", [
    ("efficientnet-b0", "efficientnet_pytorch", ".pth"),
    ("efficientnet-lite0", "efficientnet_pytorch", ".safetensors"),
    ("efficientnet-b0", "timm", ".safetensors"),
    ("efficientnet-lite0", "timm", ".pt"),
    ("efficientnetv2-b0", "timm", ".bin"),
])
def test_state_dict_round_trip(name, scheme, suffix, tmp_path):
    model = trained_like(name)
    path = torch_source.save_state_dict(model, tmp_path / f"weights{suffix}", scheme)
    state = torch_source.read_state_dict(path)
    assert torch_source.detect_scheme(state) == scheme
    assert len(state) == len(model.weights)
    first = "_conv_stem.weight" if scheme == "efficientnet_pytorch" else "conv_stem.weight"
    assert state[first].shape == tuple(model.get_layer("stem_conv").kernel.shape[i] for i in (3, 2, 0, 1))
    loaded = fresh(name)
    report = efficientnet_tf.load_weights(loaded, path)
    assert report.ok and scheme in report.source
    assert_same_model(model, loaded)


def test_state_dict_names_spelled_out():
    """A few names per block class, as the two PyTorch libraries spell them."""
    b0 = torch_source.state_dict_from_model(trained_like("efficientnet-b0"), "efficientnet_pytorch")
    assert b0["_blocks.0._depthwise_conv.weight"].shape == (32, 1, 3, 3)
    assert b0["_blocks.0._bn1.running_var"].shape == (32,)  # depthwise BN of an expand-1 block
    assert b0["_blocks.0._se_reduce.weight"].shape == (8, 32, 1, 1)
    assert b0["_blocks.1._expand_conv.weight"].shape == (96, 16, 1, 1)
    assert b0["_blocks.1._bn0.weight"].shape == (96,)
    assert b0["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert b0["_bn1.weight"].shape == (1280,) and b0["_fc.weight"].shape == (1000, 1280)
    v2 = torch_source.state_dict_from_model(trained_like("efficientnetv2-b0"), "timm")
    assert v2["blocks.0.0.conv.weight"].shape == (16, 32, 3, 3)  # ConvBnAct
    assert v2["blocks.0.0.bn1.weight"].shape == (16,)
    assert v2["blocks.1.0.conv_exp.weight"].shape == (64, 16, 3, 3)  # EdgeResidual
    assert v2["blocks.1.0.conv_pwl.weight"].shape == (32, 64, 1, 1)
    assert v2["blocks.1.0.bn2.running_var"].shape == (32,)
    assert v2["blocks.3.0.conv_pw.weight"].shape == (192, 48, 1, 1)  # InvertedResidual
    assert v2["blocks.3.0.conv_dw.weight"].shape == (192, 1, 3, 3)
    assert v2["blocks.3.0.se.conv_reduce.weight"].shape == (12, 192, 1, 1)
    assert v2["blocks.5.7.bn3.running_mean"].shape == (192,)
    assert v2["classifier.weight"].shape == (1000, 1280)
    with pytest.raises(ValueError, match="no Fused-MBConv"):
        torch_source.state_dict_from_model(trained_like("efficientnetv2-b0"), "efficientnet_pytorch")


def test_state_dict_wrapped_and_prefixed(tmp_path):
    torch = pytest.importorskip("torch")
    model = trained_like("efficientnet-lite0")
    state = torch_source.state_dict_from_model(model, "timm")
    wrapped = {"epoch": 3, "state_dict": {"module." + k: torch.from_numpy(v) for k, v in state.items()}}
    wrapped["state_dict"]["module.bn1.num_batches_tracked"] = torch.tensor(7)
    torch.save(wrapped, tmp_path / "train.pth.tar")
    loaded = fresh("efficientnet-lite0")
    assert efficientnet_tf.load_weights(loaded, tmp_path / "train.pth.tar").ok
    assert_same_model(model, loaded)
    # an in-memory dict of tensors works too
    assert efficientnet_tf.load_weights(fresh("efficientnet-lite0"), state).ok


def test_state_dict_of_another_variant(tmp_path):
    path = torch_source.save_state_dict(trained_like("efficientnet-lite0"), tmp_path / "lite0.safetensors", "timm")
    target = fresh("efficientnetv2-b0")
    before = [w.numpy().copy() for w in target.weights]
    with pytest.raises(ValueError) as err:
        efficientnet_tf.load_weights(target, path)
    message = str(err.value)
    for part in ("unchanged", "missing from the source", "unexpected in the source", "shape mismatch"):
        assert part in message, part
    assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, target.weights))
    report = efficientnet_tf.load_weights(target, path, strict=False)
    assert "blocks.6.0.conv_pw.weight" in report.unexpected  # lite0's stage 7; V2-B0 has 6 stages
    assert "block4a_se_reduce/kernel" in report.missing  # lite has no SE
    assert ("stem_conv/kernel", (3, 3, 3, 32), (3, 3, 3, 32)) not in report.mismatched and report.loaded > 0


def test_block_structure_read_from_layers():
    model = trained_like("efficientnetv2-b0")
    blocks = naming.model_blocks(model)
    assert [b.prefix for b in blocks[:3]] == ["block1a_", "block2a_", "block2b_"]
    assert (blocks[0].fused, blocks[0].has_expand_conv, blocks[0].se) == (True, False, False)
    assert (blocks[1].fused, blocks[1].has_expand_conv) == (True, True)
    assert (blocks[5].fused, blocks[5].has_expand_conv, blocks[5].se) == (False, True, True)
    assert (blocks[-1].stage, blocks[-1].position, blocks[-1].index) == (6, 7, 20)
    assert cfg.block_letters_index("aa") == 26 and cfg.block_letters_index("z") == 25
    # What the builder recorded is what the layers say (the derivation for models without a spec).
    assert spec_lib.derive_spec(model) == spec_lib.model_spec(model)


def test_unreadable_sources(tmp_path):
    model = fresh("efficientnet-lite0")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        efficientnet_tf.load_weights(model, tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="directory without a TF checkpoint"):
        efficientnet_tf.load_weights(model, tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="Cannot tell what kind of weights"):
        efficientnet_tf.load_weights(model, tmp_path / "notes.txt")
    (tmp_path / "broken.pth").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        efficientnet_tf.load_weights(model, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="Unsupported weights source"):
        efficientnet_tf.load_weights(model, 42)
