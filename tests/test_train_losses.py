"""train/losses.py: the binary cross-entropy against a numpy reference and automl's TF1 loss,
the softmax loss and single-label evaluation unchanged, multi-label top-k, and BCE training a
real multi-label toy problem (two digits side by side) with the trainer's own steps."""

import digit_pairs as digit_pairs_lib
import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnet_tf.digits import digits_images_and_labels
from train import config  # noqa: F401  (first: train.state and train.config import each other)
from train import losses
from train import steps as steps_lib
from train.state import TrainState

RNG = np.random.default_rng(0)
LOGITS = RNG.normal(0, 3, (6, 5)).astype(np.float32)
MULTI_HOT = (RNG.random((6, 5)) < 0.4).astype(np.float32)


def numpy_bce(labels, logits, smoothing=0.0):
    """Mean over classes of -[y log sigmoid(x) + (1 - y) log(1 - sigmoid(x))], float64."""
    y = labels.astype(np.float64) * (1 - smoothing) + 0.5 * smoothing
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=-1)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_binary_cross_entropy_equals_numpy_and_automl(smoothing):
    loss = losses.Loss(binary=True, label_smoothing=smoothing, multi_label=True)
    ours = loss.train(tf.constant(MULTI_HOT), tf.constant(LOGITS)).numpy()
    np.testing.assert_allclose(ours, numpy_bce(MULTI_HOT, LOGITS, smoothing), rtol=1e-5)
    # automl efficientnetv2 main.py loss_type='sigmoid': tf.compat.v1.losses.sigmoid_cross_entropy
    # (mean over batch x classes) -- the batch mean of ours.
    automl = tf.compat.v1.losses.sigmoid_cross_entropy(
        MULTI_HOT, LOGITS, label_smoothing=smoothing).numpy()
    np.testing.assert_allclose(ours.mean(), automl, rtol=1e-5)


def test_softmax_loss_and_single_label_evaluation_are_unchanged():
    one_hot = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0]]
    expected = keras.losses.categorical_crossentropy(one_hot, LOGITS, from_logits=True,
                                                     label_smoothing=0.1).numpy()
    loss = losses.Loss(label_smoothing=0.1)
    np.testing.assert_array_equal(loss.train(tf.constant(one_hot), tf.constant(LOGITS)).numpy(),
                                  expected)
    ids = tf.constant([0, 1, 2, 3, 4, 0])
    value, top1, top5 = losses.Loss().evaluate(ids, tf.constant(LOGITS), 3)
    np.testing.assert_array_equal(
        value.numpy(), tf.nn.sparse_softmax_cross_entropy_with_logits(ids, LOGITS).numpy())
    np.testing.assert_array_equal(top1.numpy(), tf.math.in_top_k(ids, LOGITS, 1).numpy())
    np.testing.assert_array_equal(top5.numpy(), tf.math.in_top_k(ids, LOGITS, 3).numpy())
    # BCE evaluation of class ids is the BCE of their one-hot labels, unsmoothed.
    value, _, _ = losses.Loss(binary=True, label_smoothing=0.3).evaluate(ids, LOGITS, 3)
    np.testing.assert_allclose(value.numpy(), numpy_bce(np.eye(5)[ids.numpy()], LOGITS), rtol=1e-5)


def test_multi_label_hits():
    logits = tf.constant([[0.0, 3.0, 2.0, 1.0], [5.0, 0.0, 1.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    labels = tf.constant([[0, 0, 1, 1], [1, 0, 0, 1], [1, 0, 0, 0]], tf.float32)
    loss, top1, top2 = losses.Loss(binary=True).evaluate(labels, logits, 2)
    assert top1.numpy().tolist() == [False, True, False]  # best: 1 (not a label), 0, 3
    assert top2.numpy().tolist() == [True, True, False]
    np.testing.assert_allclose(loss.numpy(), numpy_bce(labels.numpy(), logits.numpy()), rtol=1e-5)
    # Softmax on multi-hot labels spreads the target over them (automl data.multiclass).
    soft = losses.Loss(multi_label=True).train(labels, logits).numpy()
    expected = tf.nn.softmax_cross_entropy_with_logits(labels / tf.reduce_sum(labels, -1, True),
                                                       logits).numpy()
    np.testing.assert_allclose(soft, expected, rtol=1e-6)
    assert losses.Loss(multi_label=True).train_correct(labels, logits).numpy().tolist() == [
        False, True, False]


def digit_pairs(count, offset, seed):
    """Pairs of 8x8 digits [offset, offset + 800) side by side [count, 8, 16, 1] in [0, 1] and
    their multi-hot labels (tests/digit_pairs.py's construction, without the TFDS dataset)."""
    images, labels = digits_images_and_labels(image_size=8)  # uint8, grey in RGB
    images = images[offset:offset + 800, :, :, :1].astype(np.float32) / 255.0
    return digit_pairs_lib.pair_up(images, labels[offset:offset + 800], count, seed)


def test_bce_trains_a_multi_label_toy_dataset():
    """The trainer's TrainSteps and Evaluator with BCE on a tiny model: the loss falls and the
    multi-label top-1 (best prediction is one of the two digits) rises well above chance."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 16, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    state = TrainState(model, optimizer, schedule=None, best_top1=tf.Variable(-1.0))
    loss = losses.Loss(binary=True, multi_label=True)
    strategy = tf.distribute.get_strategy()
    x, y = digit_pairs(64 * 40, 0, seed=1)
    train = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(64))
    eval_x, eval_y = digit_pairs(512, 900, seed=2)  # digits never seen in training
    evaluator = steps_lib.Evaluator(
        strategy, state, num_classes=10, jit=False, loss=loss,
        dataset_fn=lambda: tf.data.Dataset.from_tensor_slices((eval_x, eval_y)).batch(128))
    train_steps = steps_lib.TrainSteps(strategy, state, label_smoothing=0.0, weight_decay=0.0,
                                       jit=False, loss=loss)
    before = evaluator.evaluate()
    first = train_steps.loop(train, tf.constant(5)).numpy()
    train_steps.loop(train, tf.constant(30))
    last = train_steps.loop(train, tf.constant(5)).numpy()
    after = evaluator.evaluate()
    assert state.step == 40
    assert last[0] / last[2] < 0.6 * first[0] / first[2]  # mean BCE per example
    assert last[1] / last[2] > first[1] / first[2] + 0.3  # train multi-label top-1
    assert before["top_1_accuracy"] < 0.4 and after["top_1_accuracy"] > 0.7, (before, after)
    assert after["loss"] < before["loss"] and after["num_examples"] == 512
