"""Box parsing from generated text: both families, every malformed kind, mapping to pixels."""

from __future__ import annotations

import dataclasses
import json
import random
import time

import pytest

from vlmtui.core.eval.boxparse import (
    BOX_FORMATS,
    Form,
    PredBox,
    parse_boxes,
    parse_qwen2,
    parse_qwen25,
)


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
    for fmt in BOX_FORMATS:
        r = parse_boxes(text, fmt, 100, 100, 50, 50)
        assert r.boxes == ()


@pytest.mark.parametrize(
    "text",
    [
        "{" * 20000 + "}" * 20000,
        ("{" * 1000 + "}" * 1000) * 20,
        "{" * 20000 + '"bbox_2d": [1, 2, 3, 4], "label": "a"' + "}" * 20000,
        "1,2,3,4 a" + " " * 50000 + "b",
        "'" * 50000,
    ],
)
def test_pathological_answers_parse_in_linear_time(text):
    # Each took tens of seconds with a quadratic salvage or label regex; linear takes well
    # under a second even on a loaded machine, so the bound only catches the quadratic one.
    start = time.monotonic()
    for fmt in BOX_FORMATS:
        parse_boxes(text, fmt, 100, 100, 100, 100)
    assert time.monotonic() - start < 10


def test_qwen25_salvage_does_not_reuse_an_object():
    text = '{"bbox_2d": [10, 20, 30, 40], "label": "a"}, "bbox_2d": [1, 2, 3, 4]} trailing'
    r = parse_qwen25(text, 100, 100, 100, 100)
    assert len(r.boxes) == 1
    assert (r.candidates, r.invalid, r.duplicates) == (2, 1, 0)


# --- Qwen3-VL / Qwen3.5: JSON in 0-1000 -------------------------------------------------


def q3(text: str, width: float = 1000, height: float = 500):
    return parse_boxes(text, "qwen3", width, height)


def test_qwen3_json_is_relative_to_1000_whatever_the_resize():
    text = '[{"bbox_2d": [100, 200, 500, 1000], "label": "cup"}]'
    r = parse_boxes(text, "qwen3", 640, 480)
    assert r.boxes == (PredBox("cup", 64.0, 96.0, 320.0, 480.0),)
    assert parse_boxes(text, "qwen3", 640, 480, 28, 56).boxes == r.boxes
    assert (r.forms, r.invalid, r.unparseable) == ((), 0, False)


def test_format_boxes_round_trips_through_parse_boxes_in_every_format():
    from vlmtui.core.data.chat import format_boxes
    from vlmtui.core.data.datasets import DetectionObject
    from vlmtui.core.families import QWEN2_5_VL

    objs = [DetectionObject("red square", (20, 10, 100, 50)), DetectionObject("b", (0, 0, 37, 91))]
    for fmt in BOX_FORMATS:
        family = dataclasses.replace(QWEN2_5_VL, box_format=fmt)
        text = format_boxes(objs, family, 200, 100, 140, 56)
        r = parse_boxes(text, fmt, 200, 100, 140, 56)
        assert [b.label for b in r.boxes] == ["red square", "b"]
        for b, o in zip(r.boxes, objs, strict=True):
            assert b.xyxy == pytest.approx(o.bbox, abs=1.0)  # 0-1000 / resized-pixel rounding
        assert (r.forms, r.invalid, r.not_boxes) == ((), 0, 0)


# --- real answers ---------------------------------------------------------------------------
# The shapes come from Qwen's cookbooks and issue threads (cited per test); the examples are
# our own, in those shapes.


def test_python_literal_with_single_quotes():
    # Qwen's cookbooks read answers with ast.literal_eval (the OCR cookbook imports ast, as
    # quoted in QwenLM/Qwen3-VL#1030): single-quoted lists are answers their authors accept.
    text = (
        "```json\n[\n  {'bbox_2d': [112, 40, 388, 610], 'label': 'coffee mug'},\n"
        "  {'bbox_2d': [402, 85, 930, 700], 'label': \"chef's knife\"}\n]\n```"
    )
    r = q3(text)
    assert [b.label for b in r.boxes] == ["coffee mug", "chef's knife"]
    assert r.boxes[0].xyxy == pytest.approx((112.0, 20.0, 388.0, 305.0))
    assert r.forms == (Form.MARKDOWN_FENCE, Form.PYTHON_LITERAL)
    assert (r.invalid, r.unparseable) == (0, False)


@pytest.mark.parametrize(
    ("text", "forms"),
    [
        # a Qwen maintainer's SFT answer shape in QwenLM/Qwen3-VL#1094 ends its list "},\n]"
        (
            '[\n    {"bbox_2d": [52, 118, 300, 455], "label": "plate"},\n'
            '    {"bbox_2d": [610, 90, 880, 400], "label": "wine glass"},\n]',
            (Form.TRAILING_COMMA,),
        ),
        (
            '[{"bbox_2d": [52, 118, 300, 455], "label": "plate",}, '
            + '{"bbox_2d": [610, 90, 880, 400], "label": "wine glass"}]',
            (Form.TRAILING_COMMA,),
        ),
        (
            "[{'bbox_2d': [52, 118, 300, 455], 'label': 'plate',},"
            " {'bbox_2d': (610, 90, 880, 400), 'label': 'wine glass'},]",
            (Form.PYTHON_LITERAL, Form.TRAILING_COMMA),
        ),
    ],
)
def test_trailing_commas(text, forms):
    r = q3(text)
    assert [b.label for b in r.boxes] == ["plate", "wine glass"]
    assert r.forms == forms and r.invalid == 0


def test_a_comma_inside_a_label_is_not_a_trailing_comma():
    r = q3('[{"bbox_2d": [1, 2, 30, 40], "label": "salt, pepper]"},]')
    assert [b.label for b in r.boxes] == ["salt, pepper]"]
    assert r.forms == (Form.TRAILING_COMMA,)


@pytest.mark.parametrize(
    ("obj", "label"),
    [
        # text spotting in Qwen3-VL's OCR cookbook keys the text as text_content
        # (QwenLM/Qwen3-VL#1704 points to it for OCR training data)
        ('{"bbox_2d": [80, 40, 420, 95], "text_content": "EMERGENCY EXIT"}', "EMERGENCY EXIT"),
        ('{"bbox_2d": [80, 40, 420, 95], "name": "bicycle"}', "bicycle"),
        # per-language names: ms-swift's grounding example (modelscope/ms-swift#6178) finds 羊
        ('{"bbox_2d": [80, 40, 420, 95], "标签": "羊"}', "羊"),
        ('{"bbox_2d": [80, 40, 420, 95], "名称": "自行车"}', "自行车"),
        ('{"bbox_2d": [80, 40, 420, 95], "ラベル": "猫"}', "猫"),
        ('{"bbox_2d": [80, 40, 420, 95], "étiquette": "chat", "score": 0.9}', "chat"),
    ],
)
def test_labels_under_other_keys(obj, label):
    r = q3(f"[{obj}]")
    assert [b.label for b in r.boxes] == [label]
    assert r.forms == (Form.OTHER_LABEL_KEY,)


def test_label_key_wins_and_an_unknown_ascii_key_is_not_a_label():
    r = q3('[{"bbox_2d": [1, 2, 30, 40], "label": "cat", "name": "Tom"}]')
    assert [b.label for b in r.boxes] == ["cat"] and r.forms == ()
    r = q3('[{"bbox_2d": [1, 2, 30, 40], "color": "red"}]')
    assert r.boxes == () and r.reasons == ("missing label",)


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_plain_text_lines(fmt):
    # Qwen answers grounding prompts in "JSON/XML/Plain-Text" (a Qwen maintainer in
    # QwenLM/Qwen3-VL#733); one box per line, x1,y1,x2,y2 label.
    text = (
        "Detected objects:\n120,40,380,610 coffee mug\n- [402, 85, 930, 700] chef's knife\n"
        "3. 10,10,90,90: lid\nThat's all."
    )
    r = parse_boxes(text, fmt, 1000, 1000, 1000, 1000)
    assert [b.label for b in r.boxes] == ["coffee mug", "chef's knife", "lid"]
    assert r.boxes[0].xyxy == (120.0, 40.0, 380.0, 610.0)
    assert r.forms == (Form.PLAIN_TEXT_LINES,)
    r = parse_boxes("120,40,380,610\n", fmt, 1000, 1000, 1000, 1000)
    assert r.reasons == ("missing label",) and r.unparseable


@pytest.mark.parametrize("fmt", BOX_FORMATS)
def test_qwen2_tokens_stripped_by_the_server(fmt):
    # vllm-project/vllm#27636: a Qwen-VL fine-tuned on Qwen2-VL's tokens, served by vLLM, prints
    # `图片(460,66),(683,252)`: the special tokens are skipped, label and boxes stay.
    r = parse_boxes("图片(460,66),(683,252)", fmt, 1000, 1000, 1000, 1000)
    assert r.boxes == (PredBox("图片", 460.0, 66.0, 683.0, 252.0),)
    assert r.forms == (Form.STRIPPED_QWEN2_TOKENS,)
    # several boxes after one label take it, like <|box_start|> groups; a cut-off box counts
    text = "red square(89,107),(536,625)blue circle(625,45),(981,400)(10,10),(50,50)lid(5,5"
    r = parse_boxes(text, fmt, 1000, 1000, 1000, 1000)
    assert [b.label for b in r.boxes] == ["red square", "blue circle", "blue circle"]
    assert r.boxes[2].xyxy == (10.0, 10.0, 50.0, 50.0)
    assert (r.candidates, r.invalid, r.reasons) == (4, 1, ("truncated box",))


def test_points_and_other_keys_are_not_boxes():
    # pointing answers (Qwen3-VL's spatial-understanding cookbook) use point_2d
    text = (
        '[{"point_2d": [346, 328], "label": "person"}, {"point_2d": [238, 158], "label": "person"},'
        ' {"bbox_2d": [300, 100, 420, 700], "label": "person"}]'
    )
    r = q3(text)
    assert [b.label for b in r.boxes] == ["person"]
    assert (r.not_boxes, r.candidates, r.invalid, r.unparseable) == (2, 1, 0, False)
    for other in (
        '{"point_2d": [346, 328], "label": "person"}',
        '[{"box": [10, 20, 30, 40], "label": "a"}]',
        '[{"polygon": [[1, 2], [3, 4], [5, 6]], "label": "a"}, {"bbox_3d": [1, 2, 3, 4, 5, 6]}]',
    ):
        r = q3(other)
        assert r.boxes == () and r.not_boxes >= 1
        assert (r.invalid, r.unparseable) == (0, False)  # read, just not boxes


HUGE = "9" * 400  # a degenerate generation loop, as in deepseek-ai/DeepSeek-VL2#96


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("qwen3", f'[{{"bbox_2d": [1, 2, 3, {HUGE}], "label": "a"}}]'),
        ("qwen2.5", f'[{{"bbox_2d": [1, 2, 3, {HUGE}], "label": "a"}}]'),
        ("qwen3", f"[{{'bbox_2d': [1, 2, 3, {HUGE}], 'label': 'a'}}]"),
        ("qwen3", f"[{{'bbox_2d': [1, 2, 3, {'9' * 5000}], 'label': 'a'}}]"),
        ("qwen3", f'[{{"bbox_2d": [1, 2, 3, {"9" * 5000}], "label": "a"}}]'),
        ("qwen2", q2("a", 1, 2, 3, HUGE)),
        ("qwen2", f"a(1,2),(3,{HUGE})"),
        ("qwen3", f"1,2,3,{HUGE} a"),
    ],
)
def test_a_coordinate_of_hundreds_of_digits_is_an_invalid_box(fmt, text):
    r = parse_boxes(text, fmt, 100, 100, 100, 100)
    assert (r.boxes, r.candidates, r.invalid) == ((), 1, 1)
    assert r.reasons == ("non-finite coordinate",)


def test_a_huge_coordinate_in_a_truncated_list_is_an_invalid_box():
    # the salvage path raised OverflowError here too
    text = (
        f'[{{"bbox_2d": [1, 2, 30, 40], "label": "a"}}, '
        f'{{"bbox_2d": [1, 2, 3, {HUGE}], "label": "b"}}, {{"bbox_2d": [1, 2'
    )
    r = q3(text, 100, 100)
    assert [b.label for b in r.boxes] == ["a"]
    assert r.reasons == ("non-finite coordinate", "truncated or malformed object")
    assert r.forms == (Form.TRUNCATED_JSON,)


def test_truncated_python_literal_keeps_complete_objects():
    r = q3("[{'bbox_2d': [1, 2, 30, 40], 'label': 'a'}, {'bbox_2d': [5, 6", 100, 100)
    assert [b.label for b in r.boxes] == ["a"]
    assert r.forms == (Form.PYTHON_LITERAL, Form.TRUNCATED_JSON)
    assert r.reasons == ("truncated or malformed object",)


def test_reasoning_block_and_prose_around_the_json():
    # Qwen3.5 thinks by default; the answer follows </think>. Box keys in the thinking are not
    # candidates.
    text = (
        "<think>\nThe mug is on the left; I will give its bbox_2d.\n</think>\n\n"
        '```json\n[{"bbox_2d": [112, 40, 388, 610], "label": "mug"}]\n```'
    )
    r = q3(text)
    assert [b.label for b in r.boxes] == ["mug"] and r.candidates == 1
    assert r.forms == (Form.MARKDOWN_FENCE, Form.REASONING_BLOCK)
    # an answer quoted in QwenLM/Qwen3-VL#2020 kept the fence's "json" but lost its backticks
    text = 'json\n[\n    {"bbox_2d": [323, 118, 444, 825], "label": "watch"},\n    ' + (
        '{"bbox_2d": [444, 118, 565, 825], "label": "watch"}\n]\nThese are the watches.'
    )
    r = q3(text)
    assert len(r.boxes) == 2 and r.forms == (Form.PROSE_AROUND_JSON,)


# --- never raises: random mutations of valid answers -------------------------------------

VALID_ANSWERS = [
    q2("red square", 89, 107, 536, 625) + q2("blue circle", 625, 45, 981, 400),
    '```json\n[{"bbox_2d": [14, 6, 70, 28], "label": "red square"}, '
    '{"bbox_2d": [80, 10, 130, 50], "label": "blue circle"}]\n```',
    "[{'bbox_2d': [89, 107, 536, 625], 'label': 'red square'},\n"
    " {'bbox_2d': [625, 45, 981, 400], 'text_content': 'EXIT'},]",
    '{"objects": [{"bbox_2d": [1, 2, 30, 40], "标签": "羊"}, {"point_2d": [5, 6], "label": "p"}]}',
    "89,107,536,625 red square\n625,45,981,400 blue circle",
    "red square(89,107),(536,625)blue circle(625,45),(981,400)",
    "<think>\nboxes\n</think>\n[]",
]
PIECES = [
    "{", "}", "[", "]", "(", ")", ",", ":", "'", '"', "\\", "\n", "```", " ", "-", ".",
    "bbox_2d", "point_2d", "label", "<|box_start|>", "<|box_end|>", "<|object_ref_start|>",
    "<think>", "</think>", "9" * 400, "e999", "NaN", "1e-9", "\x00", "\ufffd",
]  # fmt: skip


def _mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(text) + 1)
        j = min(len(text), i + rng.randint(1, 12))
        op = rng.randrange(5)
        if op == 0:
            text = text[:i]  # cut off, as by max_new_tokens
        elif op == 1:
            text = text[:i] + text[j:]
        elif op == 2:
            text = text[:i] + rng.choice(PIECES) + text[i:]
        elif op == 3:
            text = text[:i] + text[i:j] * rng.randint(2, 6) + text[j:]  # a generation loop
        else:
            text = text[:i] + rng.choice(PIECES) + text[j:]
    return text


def test_parser_never_raises_on_mutated_answers():
    rng = random.Random(14)
    kinds = set()
    for _ in range(1500):
        text = _mutate(rng, rng.choice(VALID_ANSWERS))
        for fmt in BOX_FORMATS:
            r = parse_boxes(text, fmt, 320, 240, 280, 224)
            assert r.candidates == len(r.boxes) + r.invalid + r.duplicates
            assert len(r.reasons) >= r.invalid
            assert all(0 <= b.x1 < b.x2 <= 320 and 0 <= b.y1 < b.y2 <= 240 for b in r.boxes)
            json.dumps(r.to_dict(), allow_nan=False)
            kinds.update(r.forms)
    assert len(kinds) >= 7  # the mutations reach most lenient readings
