"""Metrics: IoU by hand, AP numbers equal to pycocotools' own, computed here directly."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from vlmtui.core.eval.boxparse import ParseResult, PredBox
from vlmtui.core.eval.metrics import box_iou, detection_metrics, greedy_match, parse_summary

# --- IoU and matching -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
        ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),  # half overlap: 50 / (100 + 100 - 50)
        ((0, 0, 10, 10), (5, 5, 15, 15), 25 / 175),
        ((0, 0, 10, 10), (2, 2, 8, 8), 36 / 100),  # contained
        ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),  # touching edge
        ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
        ((0, 0, 4, 2), (1, 0, 3, 4), 4 / 12),  # cross: inter 2x2, union 8 + 8 - 4
        ((0, 0, 0, 10), (0, 0, 0, 10), 0.0),  # empty boxes
    ],
)
def test_box_iou_hand_computed(a, b, iou):
    assert box_iou(a, b) == pytest.approx(iou)
    assert box_iou(b, a) == pytest.approx(iou)


def test_box_iou_matches_pycocotools():
    from pycocotools import mask

    a, b = (3.0, 4.0, 17.5, 20.0), (6.0, 1.0, 20.0, 15.0)
    xywh = lambda x: [x[0], x[1], x[2] - x[0], x[3] - x[1]]  # noqa: E731
    assert box_iou(a, b) == pytest.approx(float(mask.iou([xywh(a)], [xywh(b)], [0])[0][0]))


def test_greedy_match_takes_best_pairs_first():
    gold = [(0, 0, 10, 10), (20, 0, 30, 10)]
    pred = [(1, 0, 11, 10), (0, 0, 10, 10), (21, 0, 31, 10), (50, 50, 60, 60)]
    m = greedy_match(gold, pred)
    # gold 0 takes the exact pred 1 (IoU 1) though pred 0 also overlaps; gold 1 takes pred 2
    assert [(g, p) for g, p, _ in m] == [(0, 1), (1, 2)]
    assert m[0][2] == pytest.approx(1.0)
    assert m[1][2] == pytest.approx(9 / 11)
    assert greedy_match(gold, [(5, 0, 15, 10)]) == []  # IoU 1/3 < 0.5


# --- against pycocotools -------------------------------------------------------------------

SIZES = [(100, 100), (200, 100), (64, 48), (50, 50)]
GOLD = [
    [
        {"label": "circle", "bbox": [10, 10, 40, 40]},
        {"label": "square", "bbox": [50, 50, 90, 95]},
    ],
    [
        {"label": "circle", "bbox": [0, 0, 50, 50]},
        {"label": "circle", "bbox": [100, 20, 180, 90]},
        {"label": "triangle", "bbox": [60, 60, 90, 99]},
    ],
    [{"label": "square", "bbox": [5, 5, 30, 40]}],
    [],
]
PREDS = [
    [
        PredBox("circle", 12, 11, 41, 42),
        PredBox("square", 55, 50, 90, 90),
        PredBox("square", 0, 0, 20, 20),  # false positive
    ],
    [
        PredBox("circle", 105, 25, 175, 85),
        PredBox("circle", 0, 0, 20, 20),  # IoU 0.16 with gold 0
        PredBox("triangle", 60, 60, 91, 99),
        PredBox("star", 1, 1, 9, 9),  # label no gold box has
    ],
    [],  # missed square
    [PredBox("circle", 1, 1, 10, 10)],  # image without gold
]
LABELS = ["circle", "square", "triangle"]


def _pycocotools(cat_ids=None):
    """COCOeval on GOLD/PREDS built here by hand, the way a COCO user would."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cats = {label: i + 1 for i, label in enumerate(LABELS)}
    anns = []
    for img, objs in enumerate(GOLD):
        for o in objs:
            x1, y1, x2, y2 = o["bbox"]
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img + 1,
                    "category_id": cats[o["label"]],
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    dets = [
        {
            "image_id": img + 1,
            "category_id": cats[b.label],
            "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
            "score": 1.0,
        }
        for img, boxes in enumerate(PREDS)
        for b in boxes
        if b.label in cats
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i + 1, "width": w, "height": h} for i, (w, h) in enumerate(SIZES)],
            "annotations": anns,
            "categories": [{"id": c, "name": n} for n, c in cats.items()],
        }
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        if cat_ids is not None:
            ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


def test_overall_metrics_equal_pycocotools():
    m = detection_metrics(GOLD, PREDS, SIZES)
    stats = _pycocotools()
    assert m.map == pytest.approx(stats[0])
    assert m.map50 == pytest.approx(stats[1])
    assert m.recall == pytest.approx(stats[8])
    assert 0 < m.map < m.map50 <= 1


@pytest.mark.parametrize("label", LABELS)
def test_per_label_metrics_equal_pycocotools_on_that_category(label):
    m = detection_metrics(GOLD, PREDS, SIZES)
    stats = _pycocotools(cat_ids=[LABELS.index(label) + 1])
    lm = m.per_label[label]
    assert lm.ap == pytest.approx(stats[0])
    assert lm.ap50 == pytest.approx(stats[1])
    assert lm.recall == pytest.approx(stats[8])


def test_matched_iou_counts_and_rates():
    m = detection_metrics(GOLD, PREDS, SIZES)
    ious = {
        "circle": [
            box_iou((10, 10, 40, 40), (12, 11, 41, 42)),
            box_iou((100, 20, 180, 90), (105, 25, 175, 85)),
        ],
        "square": [box_iou((50, 50, 90, 95), (55, 50, 90, 90))],
        "triangle": [box_iou((60, 60, 90, 99), (60, 60, 91, 99))],
    }
    all_ious = [v for vs in ious.values() for v in vs]
    assert m.mean_iou == pytest.approx(sum(all_ious) / len(all_ious))
    for label, vs in ious.items():
        assert m.per_label[label].mean_iou == pytest.approx(sum(vs) / len(vs))
        assert m.per_label[label].matched == len(vs)
    assert (m.n_images, m.n_gold, m.n_pred, m.matched) == (4, 6, 8, 4)
    assert m.unknown_label_preds == 1
    assert m.per_label["circle"].n_gold == 3 and m.per_label["circle"].n_pred == 4
    assert m.precision50 == pytest.approx(4 / 8)
    assert m.recall50 == pytest.approx(4 / 6)
    assert set(m.to_dict()["per_label"]) == set(LABELS)


def test_perfect_predictions_score_one():
    preds = [[PredBox(o["label"], *o["bbox"]) for o in objs] for objs in GOLD]
    m = detection_metrics(GOLD, preds, SIZES)
    assert (m.map, m.map50, m.recall, m.mean_iou) == pytest.approx((1.0, 1.0, 1.0, 1.0))


def test_no_predictions_scores_zero_and_no_gold_is_none():
    m = detection_metrics(GOLD, [[] for _ in GOLD], SIZES)
    assert (m.map, m.map50, m.recall) == (0.0, 0.0, 0.0)
    assert m.mean_iou is None and m.precision50 is None and m.recall50 == 0.0
    empty = detection_metrics([[], []], [[PredBox("a", 0, 0, 1, 1)], []], [(10, 10)] * 2)
    assert (empty.map, empty.map50, empty.recall, empty.mean_iou) == (None, None, None, None)
    assert empty.unknown_label_preds == 1 and empty.precision50 == 0.0
    with pytest.raises(ValueError):
        detection_metrics([[]], [], [])


def test_parse_summary_counts_and_rate():
    ok = ParseResult(boxes=(PredBox("a", 0, 0, 1, 1),), candidates=3, invalid=1, duplicates=1)
    bad = ParseResult(boxes=(), candidates=2, invalid=2, unparseable=True)
    empty = ParseResult(boxes=(), candidates=0, invalid=0)
    s = parse_summary([ok, bad, empty, empty])
    assert s["parse_failure_rate"] == pytest.approx(1 / 4)
    assert s["unparseable_images"] == 1 and s["images_with_invalid_boxes"] == 2
    assert (s["candidate_boxes"], s["invalid_boxes"], s["duplicate_boxes"]) == (5, 3, 1)
    assert s["invalid_box_rate"] == pytest.approx(3 / 5)
    assert parse_summary([])["parse_failure_rate"] is None


# --- what parsing real answers gave, in the eval report ----------------------------------

MUG = (112, 40, 388, 610)
HUGE = "9" * 400
REAL_ANSWERS = [
    '[{"bbox_2d": [112, 40, 388, 610], "label": "mug"}]',
    "```json\n[{'bbox_2d': [112, 40, 388, 610], 'label': 'mug'}]\n```",
    '[{"bbox_2d": [112, 40, 388, 610], "label": "mug"},]',
    '[{"bbox_2d": [112, 40, 388, 610], "text_content": "mug"}]',
    "112,40,388,610 mug",
    "mug(112,40),(388,610)",
    '[{"point_2d": [250, 300], "label": "mug"}, {"bbox_2d": [112, 40, 388, 610], "label": "mug"}]',
    '<think>\nA mug.\n</think>\nHere it is: [{"bbox_2d": [112, 40, 388, 610], "label": "mug"}]',
    '[{"bbox_2d": [112, 40, 388, 610], "label": "mug"}, '
    f'{{"bbox_2d": [1, 2, 3, {HUGE}], "label": "mug"}}, {{"bbox_2d": [5',
    "I cannot tell.",
    '[{"point_2d": [250, 300], "label": "mug"}]',
]
EXPECTED_FORMS = {
    "markdown_fence": 1,
    "reasoning_block": 1,
    "python_literal": 1,
    "trailing_comma": 1,
    "prose_around_json": 1,
    "truncated_json": 1,
    "other_label_key": 1,
    "plain_text_lines": 1,
    "stripped_qwen2_tokens": 1,
}


def _real_parses() -> list[ParseResult]:
    from vlmtui.core.eval.boxparse import parse_boxes

    return [parse_boxes(t, "qwen3", 1000, 1000) for t in REAL_ANSWERS]


def test_parse_summary_counts_each_kind_of_real_answer():
    s = parse_summary(_real_parses())
    assert s["answer_forms"] == EXPECTED_FORMS
    assert s["not_a_box"] == 2
    assert s["invalid_by_reason"] == {
        "non-finite coordinate": 1,
        "truncated or malformed object": 1,
    }
    assert (s["unparseable_images"], s["valid_boxes"], s["invalid_boxes"]) == (1, 9, 2)
    assert parse_summary([])["answer_forms"] == dict.fromkeys(EXPECTED_FORMS, 0)


def test_eval_report_shows_the_counts(tmp_path, capsys, monkeypatch):
    from vlmtui.cli.eval_cmd import _print_report
    from vlmtui.core.data.datasets import DetectionObject, DetectionRecord
    from vlmtui.core.eval.evaluate import Generated, score

    monkeypatch.setenv("COLUMNS", "200")
    gold = (DetectionObject("mug", MUG),)
    records = [DetectionRecord(tmp_path / f"{i}.png", 1000, 1000, gold) for i in range(11)]
    answers = [
        Generated(t, p, (1000, 1000), True)
        for t, p in zip(REAL_ANSWERS, _real_parses(), strict=True)
    ]
    result = score(records, answers)
    c = json.loads(json.dumps(result))["counts"]  # as eval.json and `eval --json` carry it
    assert c["answer_forms"] == EXPECTED_FORMS and c["not_a_box"] == 2
    assert result["metrics"]["recall50"] == pytest.approx(9 / 11)
    _print_report({"recipe": "r1", "n_images": 11, "split": "val", **result}, tmp_path)
    out = capsys.readouterr().out
    assert "1 unparseable answers, 2 invalid and 0 repeated boxes, 2 objects not a box" in out
    assert "invalid boxes: 1 non-finite coordinate, 1 truncated or malformed object" in out
    assert (
        "answers read leniently: 1 markdown fence, 1 reasoning block, 1 python literal, "
        "1 trailing comma, 1 prose around json, 1 truncated json, 1 other label key, "
        "1 plain text lines, 1 stripped qwen2 tokens"
    ) in out
