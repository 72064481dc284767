"""Box parsing from generated text: both families, every malformed kind, mapping to pixels."""

from __future__ import annotations

import dataclasses

import pytest

from vlmtui.core.eval.boxparse import PredBox, parse_boxes, parse_qwen2, parse_qwen25


def q2(label: str, x1, y1, x2, y2) -> str:
    return (
        f"<|object_ref_start|>{label}<|object_ref_end|>"
        f"<|box_start|>({x1},{y1}),({x2},{y2})<|box_end|>"
    )


# --- Qwen2-VL ---------------------------------------------------------------------------


def test_qwen2_well_formed_maps_0_1000_to_pixels():
    text = q2("circle", 100, 200, 500, 1000) + q2("square", 0, 0, 250, 250) + "<|im_end|>"
    r = parse_qwen2(text, width=640, height=480)
    assert r.boxes == (
        PredBox("circle", 64.0, 96.0, 320.0, 480.0, 1.0),
        PredBox("square", 0.0, 0.0, 160.0, 120.0, 1.0),
    )
    assert (r.candidates, r.invalid, r.duplicates, r.unparseable) == (2, 0, 0, False)


def test_qwen2_spaces_decimals_and_several_boxes_per_label():
    text = (
        "Found: <|object_ref_start|> red circle <|object_ref_end|>"
        "<|box_start|>( 10.5 , 20 ),( 30 , 40 )<|box_end|>"
        "<|box_start|>(500,500),(600,600)<|box_end|>"
    )
    r = parse_qwen2(text, 1000, 2000)
    assert [b.label for b in r.boxes] == ["red circle", "red circle"]
    assert r.boxes[0].xyxy == (10.5, 40.0, 30.0, 80.0)
    assert r.boxes[1].xyxy == (500.0, 1000.0, 600.0, 1200.0)


def test_qwen2_clamps_to_image():
    r = parse_qwen2(q2("a", -20, 900, 1200, 1100), 100, 100)
    assert r.boxes[0].xyxy == (0.0, 90.0, 100.0, 100.0)
    assert r.invalid == 0


def test_qwen2_empty_text_is_an_empty_answer():
    r = parse_qwen2("", 100, 100)
    assert (r.boxes, r.candidates, r.invalid, r.unparseable) == ((), 0, 0, False)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("there is a circle somewhere", "no boxes in output"),
        ("<|object_ref_start|>a<|object_ref_end|><|box_start|>(1,2),(3", "truncated box"),
        ("<|object_ref_start|>a<|object_ref_end|>", "label without a box"),
        ("<|object_ref_start|>circ", "truncated label"),
        ("<|object_ref_start|>a<|object_ref_end|><|box_start|>(1,2)<|box_end|>", "malformed box"),
        ("<|object_ref_start|>a<|object_ref_end|><|box_start|>x<|box_end|>", "malformed box"),
        ("<|box_start|>(1,2),(3,4)<|box_end|>", "missing label"),
        (q2("a", "nan", 1, 2, 3), "non-finite coordinate"),
        (q2("a", 500, 500, 100, 600), "inverted or empty box"),
        (q2("a", 100, 100, 100, 600), "inverted or empty box"),
        (q2("a", 1100, 100, 1200, 600), "box outside the image"),
    ],
)
def test_qwen2_malformed_is_counted_not_raised(text, reason):
    r = parse_qwen2(text, 100, 100)
    assert r.boxes == ()
    assert r.unparseable
    assert reason in r.reasons


def test_qwen2_partial_output_keeps_good_boxes_and_counts_bad():
    text = (
        q2("a", 0, 0, 500, 500)
        + q2("b", 9, 9, 1, 1)
        + "<|object_ref_start|>c<|object_ref_end|><|box_start|>(1"
    )
    r = parse_qwen2(text, 100, 100)
    assert [b.label for b in r.boxes] == ["a"]
    assert (r.candidates, r.invalid, r.unparseable) == (3, 2, False)


def test_qwen2_repeated_boxes_are_deduplicated_and_counted():
    text = q2("a", 0, 0, 500, 500) * 50
    r = parse_qwen2(text, 100, 100)
    assert len(r.boxes) == 1
    assert (r.candidates, r.duplicates, r.invalid) == (50, 49, 0)


# --- Qwen2.5-VL -------------------------------------------------------------------------


def test_qwen25_json_scales_resized_to_original():
    text = (
        '[{"bbox_2d": [28, 56, 280, 224], "label": "circle"}, '
        '{"bbox_2d": [0, 0, 14, 14], "label": "square"}]'
    )
    # model saw 560x448, original 1000x800: x * 1000/560, y * 800/448
    r = parse_qwen25(text, 1000, 800, 560, 448)
    assert r.boxes[0].label == "circle"
    assert r.boxes[0].xyxy == pytest.approx((50.0, 100.0, 500.0, 400.0))
    assert r.boxes[1].xyxy == pytest.approx((0.0, 0.0, 25.0, 25.0))
    assert (r.candidates, r.invalid, r.unparseable) == (2, 0, False)


@pytest.mark.parametrize(
    "text",
    [
        '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "a"}]\n```',
        '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "a"}]\n```\nThat is all.',
        'Here:\n```\n[{"bbox_2d": [10, 20, 30, 40], "label": "a"}]```',
        '{"bbox_2d": [10, 20, 30, 40], "label": "a"}',
        '{"a": [10, 20, 30, 40]}',
        '{"objects": [{"bbox_2d": [10, 20, 30, 40], "label": "a"}]}',
        '[{"bbox_2d": ["10", "20", "30", "40"], "label": "a"}]',
    ],
)
def test_qwen25_accepted_shapes(text):
    r = parse_qwen25(text, 100, 100, 100, 100)
    assert r.boxes == (PredBox("a", 10.0, 20.0, 30.0, 40.0),)
    assert r.invalid == 0 and not r.unparseable


def test_qwen25_empty_list_is_an_empty_answer_but_silence_is_not():
    for text in ("[]", "```json\n[]\n```", " [ ] "):
        r = parse_qwen25(text, 100, 100, 100, 100)
        assert (r.boxes, r.invalid, r.unparseable) == ((), 0, False)
    for text in ("", "```json\n```", "  \n"):
        r = parse_qwen25(text, 100, 100, 100, 100)
        assert r.unparseable and r.reasons == ("empty answer",)
        assert r.invalid == 0


def test_qwen25_truncated_keeps_complete_objects():
    text = '```json\n[{"bbox_2d": [10, 20, 30, 40], "label": "a"}, {"bbox_2d": [50, 60, 7'
    r = parse_qwen25(text, 100, 100, 100, 100)
    assert [b.label for b in r.boxes] == ["a"]
    assert (r.candidates, r.invalid, r.unparseable) == (2, 1, False)
    assert "truncated or malformed object" in r.reasons


def test_qwen25_repeated_loop_is_deduplicated():
    obj = '{"bbox_2d": [10, 20, 30, 40], "label": "a"}, '
    r = parse_qwen25("[" + obj * 30 + '{"bbox_2d": [10, 2', 100, 100, 100, 100)
    assert len(r.boxes) == 1
    assert (r.candidates, r.duplicates, r.invalid) == (31, 29, 1)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("I see a circle.", "not JSON"),
        ('[{"bbox_2d": [10, 20, 30], "label": "a"}]', "bbox is not four numbers"),
        ('[{"bbox_2d": [10, 20, 30, "x"], "label": "a"}]', "bbox is not four numbers"),
        ('[{"bbox_2d": [10, 20, 30, true], "label": "a"}]', "bbox is not four numbers"),
        ('[{"bbox_2d": [NaN, 20, 30, 40], "label": "a"}]', "non-finite coordinate"),
        ('[{"bbox_2d": [10, 20, 30, Infinity], "label": "a"}]', "non-finite coordinate"),
        ('[{"bbox_2d": [30, 20, 10, 40], "label": "a"}]', "inverted or empty box"),
        ('[{"bbox_2d": [10, 20, 30, 40]}]', "missing label"),
        ('[{"bbox_2d": [10, 20, 30, 40], "label": 5}]', "missing label"),
        ('[{"bbox_2d": [200, 200, 300, 300], "label": "a"}]', "box outside the image"),
        ('[{"bbox_2d": [10, 20, 3', "truncated or malformed object"),
        ("[1, 2, 3]", "item is not an object"),
        ('"just a string"', "not JSON"),
    ],
)
def test_qwen25_malformed_is_counted_not_raised(text, reason):
    r = parse_qwen25(text, 100, 100, 100, 100)
    assert r.boxes == ()
    assert r.unparseable
    assert reason in r.reasons


def test_qwen25_clamps_after_scaling():
    r = parse_qwen25('[{"bbox_2d": [-5, 10, 120, 50], "label": "a"}]', 200, 100, 100, 50)
    assert r.boxes[0].xyxy == (0.0, 20.0, 200.0, 100.0)


# --- dispatch and values ------------------------------------------------------------------


def test_parse_boxes_dispatches_by_family_format():
    from vlmtui.core.families import QWEN2_5_VL, QWEN2_VL

    a = parse_boxes(q2("a", 0, 0, 500, 500), QWEN2_VL.box_format, 200, 100)
    assert a.boxes[0].xyxy == (0.0, 0.0, 100.0, 50.0)
    b = parse_boxes(
        '[{"bbox_2d": [0, 0, 50, 50], "label": "a"}]', QWEN2_5_VL.box_format, 200, 100, 100, 50
    )
    assert b.boxes[0].xyxy == (0.0, 0.0, 100.0, 100.0)
    with pytest.raises(ValueError):
        parse_boxes("", "yolo", 1, 1)


def test_results_are_frozen_and_serialisable():
    r = parse_qwen2(q2("a", 0, 0, 500, 500), 100, 100)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.boxes[0].x1 = 3  # type: ignore[misc]
    d = r.to_dict()
    assert d["boxes"] == [{"label": "a", "bbox": [0.0, 0.0, 50.0, 50.0], "score": 1.0}]


@pytest.mark.parametrize(
    "text",
    [
        None,
        "<|box_end|><|object_ref_end|>",
        "<|box_start|><|box_start|><|box_end|>",
        "<|object_ref_start|><|object_ref_start|>",
        "{" * 500,
        "[" * 500,
        '```json\n{"bbox_2d": {"x": 1}}',
        "\x00\ufffd",
        "[" * 50000 + "]" * 50000,
        '{"a":' * 50000,
    ],
)
def test_garbage_never_raises(text):
    for fmt in ("qwen2", "qwen2.5"):
        r = parse_boxes(text, fmt, 100, 100, 50, 50)
        assert r.boxes == ()


def test_qwen25_salvage_does_not_reuse_an_object():
    text = '{"bbox_2d": [10, 20, 30, 40], "label": "a"}, "bbox_2d": [1, 2, 3, 4]} trailing'
    r = parse_qwen25(text, 100, 100, 100, 100)
    assert len(r.boxes) == 1
    assert (r.candidates, r.invalid, r.duplicates) == (2, 1, 0)
