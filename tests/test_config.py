"""Structure as data: the variant table, the scaling rules and the block-string codec."""

import dataclasses

import pytest

import efficientnet_tf
from efficientnet_tf import config as cfg


def test_list_models_has_all_23_official_names():
    names = cfg.list_models()
    assert len(names) == 23
    assert names[:10] == [f"efficientnet-b{i}" for i in range(9)] + ["efficientnet-l2"]
    assert {f"efficientnet-lite{i}" for i in range(5)} <= set(names)
    assert {f"efficientnetv2-{s}" for s in ("b0", "b1", "b2", "b3", "s", "m", "l", "xl")} <= set(names)


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown model name 'efficientnet-b9'.*efficientnet-b0.*efficientnetv2-xl"):
        cfg.get_variant("efficientnet-b9")


@pytest.mark.parametrize("name", cfg.list_models())
def test_block_string_round_trip(name):
    for block in cfg.get_variant(name).blocks:
        text = cfg.encode_block(block)
        assert cfg.decode_block(text) == block
        assert cfg.encode_block(cfg.decode_block(text)) == text


def test_decode_official_strings():
    block = cfg.decode_block("r2_k3_s2_e4_i24_o48_c1")
    assert block == cfg.BlockSpec("fused", 2, 3, 2, 4, 24, 48, 0.0)
    assert cfg.decode_block("r1_k3_s1_e1_i32_o16_se0.25").se_ratio == 0.25
    for bad in ("r2_k3_s2_e4_i24", "r2_k3_s2_e4_i24_o48_x3", "r2_k3_s2_e4_i24_o48_c2", "hello"):
        with pytest.raises(ValueError, match="Bad block string"):
            cfg.decode_block(bad)
    with pytest.raises(ValueError, match="kind"):
        cfg.BlockSpec("conv", 1, 3, 1, 1, 8, 8)


def _v(**kw):
    base = dict(name="t", family="v1", blocks=(), width=1.0, depth=1.0, resolution=224, dropout_rate=0.2)
    base.update(kw)
    return cfg.Variant(**base)


def test_round_filters_ten_percent_rule():
    # 16 * 1.1 = 17.6 -> 16 (lost 9%, kept); 40 * 1.1 = 44 -> 48 (nearest multiple, ties up).
    assert cfg.round_filters(16, _v(width=1.1)) == 16
    assert cfg.round_filters(40, _v(width=1.1)) == 48
    # 16 * 1.2 = 19.2 rounds to 16, which loses > 10%: V1 adds a divisor, V2 does not.
    assert cfg.round_filters(16, _v(width=1.2)) == 24
    assert cfg.round_filters(16, _v(width=1.2, ten_percent_rule=False)) == 16
    assert cfg.round_filters(1280, _v(width=4.3)) == 5504
    assert cfg.round_filters(3, _v(width=1.0)) == 8  # never below the divisor
    assert cfg.round_filters(32, _v(width=2.0), skip=True) == 32


def test_round_repeats_is_ceil():
    assert cfg.round_repeats(1, 1.0) == 1
    assert cfg.round_repeats(2, 1.1) == 3
    assert cfg.round_repeats(4, 5.3) == 22
    assert cfg.round_repeats(3, 3.1) == 10


def test_lite_keeps_first_and_last_stage_depth_and_stem_head_width():
    lite4 = cfg.get_variant("efficientnet-lite4")
    assert lite4.stage_repeats() == [1, 4, 4, 6, 6, 8, 1]
    assert lite4.stem_filters == 32 and lite4.num_features == 1280
    b4 = cfg.get_variant("efficientnet-b4")
    assert b4.stage_repeats() == [2, 4, 4, 6, 6, 8, 2]
    assert b4.stem_filters == 48 and b4.num_features == 1792


def test_drop_connect_ramp():
    rates = cfg.drop_connect_rates(16, 0.2)
    assert rates[0] == 0.0 and rates[8] == pytest.approx(0.1) and rates[-1] == pytest.approx(0.2 * 15 / 16)
    assert all(b > a for a, b in zip(rates, rates[1:]))


def test_block_letters_past_z():
    assert [cfg.block_letters(i) for i in (0, 1, 25, 26, 27, 51, 52)] == ["a", "b", "z", "aa", "ab", "az", "ba"]


def test_model_info_facts():
    b2 = efficientnet_tf.model_info("efficientnet-b2")
    assert b2["resolution"] == 260 and b2["resize_method"] == "bicubic" and b2["num_features"] == 1408
    assert b2["eval_crop_fraction"] == pytest.approx(260 / 292)
    lite = efficientnet_tf.model_info("efficientnet-lite0")
    assert lite["mean_rgb"] == (127.0,) * 3 and lite["stddev_rgb"] == (128.0,) * 3
    assert lite["activation"] == "relu6" and lite["resize_method"] == "bilinear"
    v2s = efficientnet_tf.model_info("efficientnetv2-s")
    assert v2s["resolution"] == 384 and v2s["eval_crop_fraction"] == 1.0 and v2s["bn_momentum"] == 0.9
    assert v2s["mean_rgb"] == (128.0,) * 3
    # V2-B models were trained with automl's legacy V1 preprocessing (ImageNet mean/std).
    v2b0 = efficientnet_tf.model_info("efficientnetv2-b0")
    assert v2b0["mean_rgb"][0] == pytest.approx(0.485 * 255) and v2b0["eval_crop_fraction"] < 1


def test_variant_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.get_variant("efficientnet-b0").width = 2.0
