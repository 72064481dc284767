"""Detection metrics: COCO mAP / AR from pycocotools, matched-box IoU, parse failures.

The AP numbers are pycocotools' COCOeval, not a re-implementation: mAP@[.5:.95] (`map`),
mAP@.5 (`map50`) and AR@100 (`recall`), and per label the same quantities read from
COCOeval's precision/recall arrays (area "all", 100 detections), the way COCOeval's own
`summarize` averages them. Boxes are given as (x1, y1, x2, y2) pixels; COCO takes
[x, y, w, h] with continuous coordinates (w = x2 - x1, no +1).

Mean IoU is over boxes matched greedily: within an image and a label, pairs are taken in
descending IoU order, each box matched at most once, and only pairs with IoU >= 0.5 count.
The same matching gives `precision50` (matched / predicted) and `recall50` (matched / gold),
which read more plainly than AP when every predicted box has the same score.

Predicted labels that no gold box has are not a COCO category: COCOeval ignores them, so
they cannot lower any AP. They are counted (`unknown_label_preds`) and lower `precision50`.
Undefined numbers (no gold boxes, no predictions for a label) are None, never -1.
`parse_summary` counts what parsing gave: failures, invalid boxes by reason, objects that are
not boxes, and how many answers needed each lenient reading.
"""

from __future__ import annotations

import contextlib
import io
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vlmtui.core.eval.boxresult import Form, ParseResult, PredBox

MATCH_IOU = 0.5

XYXY = tuple[float, float, float, float]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0.0 when either is empty."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    iw = min(ax2, bx2) - max(ax1, bx1)
    ih = min(ay2, by2) - max(ay1, by1)
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0 else 0.0


def greedy_match(
    gold: Sequence[Sequence[float]], pred: Sequence[Sequence[float]], thr: float = MATCH_IOU
) -> list[tuple[int, int, float]]:
    """(gold index, pred index, IoU) pairs, highest IoU first, each box used once, IoU >= thr."""
    pairs = []
    for gi, g in enumerate(gold):
        for pi, p in enumerate(pred):
            iou = box_iou(g, p)
            if iou >= thr:
                pairs.append((-iou, pi, gi))
    pairs.sort()
    used_g: set[int] = set()
    used_p: set[int] = set()
    out = []
    for neg_iou, pi, gi in pairs:
        if gi in used_g or pi in used_p:
            continue
        used_g.add(gi)
        used_p.add(pi)
        out.append((gi, pi, -neg_iou))
    return out


@dataclass
class LabelMetrics:
    ap: float | None = None
    ap50: float | None = None
    recall: float | None = None
    mean_iou: float | None = None
    n_gold: int = 0
    n_pred: int = 0
    matched: int = 0


@dataclass
class DetectionMetrics:
    map: float | None
    """COCO mAP@[.5:.95]."""
    map50: float | None
    """COCO mAP@.5."""
    recall: float | None
    """COCO AR@100 (averaged over IoU .5:.95)."""
    mean_iou: float | None
    """Mean IoU of greedily matched (IoU >= 0.5, same label) boxes."""
    precision50: float | None
    recall50: float | None
    n_images: int
    n_gold: int
    n_pred: int
    matched: int
    unknown_label_preds: int
    per_label: dict[str, LabelMetrics] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _gold_boxes(objects: Iterable[Any]) -> list[tuple[str, XYXY]]:
    """(label, xyxy) from {"label", "bbox"} dicts, data.DetectionObject or PredBox values."""
    out = []
    for obj in objects:
        if isinstance(obj, Mapping):
            label, bbox = obj["label"], obj["bbox"]
        elif hasattr(obj, "bbox"):
            label, bbox = obj.label, obj.bbox
        else:
            label, bbox = obj.label, (obj.x1, obj.y1, obj.x2, obj.y2)
        x1, y1, x2, y2 = (float(v) for v in bbox)
        out.append((str(label), (x1, y1, x2, y2)))
    return out


def coco_dicts(
    gold: Sequence[Iterable[Any]],
    preds: Sequence[Sequence[PredBox]],
    sizes: Sequence[tuple[float, float]],
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, int]]:
    """COCO ground-truth dataset dict, COCO results list, and label -> category id.

    Image ids are 1..n in the given order; category ids follow sorted gold labels.
    """
    golds = [_gold_boxes(objs) for objs in gold]
    labels = sorted({label for boxes in golds for label, _ in boxes})
    cat_ids = {label: i + 1 for i, label in enumerate(labels)}
    images = [{"id": i + 1, "width": w, "height": h} for i, (w, h) in enumerate(sizes)]
    anns: list[dict[str, Any]] = []
    for i, boxes in enumerate(golds):
        for label, (x1, y1, x2, y2) in boxes:
            w, h = x2 - x1, y2 - y1
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cat_ids[label],
                    "bbox": [x1, y1, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    gt = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": cid, "name": label} for label, cid in cat_ids.items()],
    }
    results = [
        {
            "image_id": i + 1,
            "category_id": cat_ids[b.label],
            "bbox": [b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1],
            "score": b.score,
        }
        for i, boxes in enumerate(preds)
        for b in boxes
        if b.label in cat_ids
    ]
    return gt, results, cat_ids


def _coco_eval(gt: dict[str, Any], results: list[dict[str, Any]]) -> Any:
    """A COCOeval that has run evaluate/accumulate/summarize, its printing swallowed."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": gt["images"],
                "categories": gt["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def _mean_valid(values: Any) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _stat(v: float) -> float | None:
    return None if v < 0 else float(v)


def _match_per_label(
    golds: Sequence[list[tuple[str, XYXY]]],
    preds: Sequence[Sequence[PredBox]],
    cat_ids: dict[str, int],
) -> tuple[dict[str, LabelMetrics], dict[str, float], int]:
    """Per-label counts and greedy IoU@0.5 matches, the IoU sums, and unknown-label preds."""
    per_label = {label: LabelMetrics() for label in cat_ids}
    iou_sum: dict[str, float] = {label: 0.0 for label in cat_ids}
    unknown = 0
    for g_boxes, p_boxes in zip(golds, preds, strict=True):
        for label, _ in g_boxes:
            per_label[label].n_gold += 1
        for b in p_boxes:
            if b.label in per_label:
                per_label[b.label].n_pred += 1
            else:
                unknown += 1
        for label in {lab for lab, _ in g_boxes}:
            g = [box for lab, box in g_boxes if lab == label]
            p = [b.xyxy for b in p_boxes if b.label == label]
            for _, _, iou in greedy_match(g, p):
                per_label[label].matched += 1
                iou_sum[label] += iou
    for label, lm in per_label.items():
        lm.mean_iou = iou_sum[label] / lm.matched if lm.matched else None
    return per_label, iou_sum, unknown


def detection_metrics(
    gold: Sequence[Iterable[Any]],
    preds: Sequence[Sequence[PredBox]],
    sizes: Sequence[tuple[float, float]],
) -> DetectionMetrics:
    """Metrics of predicted boxes against gold boxes, one list of each per image.

    `gold[i]` holds {"label", "bbox": [x1, y1, x2, y2]} dicts, data.DetectionObject values
    (a record's `objects`) or PredBox values; `sizes[i]` is image i's (width, height) in pixels.
    """
    if not (len(gold) == len(preds) == len(sizes)):
        raise ValueError("gold, preds and sizes need one entry per image")
    gold = [list(g) for g in gold]
    gt, results, cat_ids = coco_dicts(gold, preds, sizes)
    golds = [_gold_boxes(objs) for objs in gold]
    per_label, iou_sum, unknown = _match_per_label(golds, preds, cat_ids)
    n_gold = sum(lm.n_gold for lm in per_label.values())
    n_pred = sum(len(p) for p in preds)
    matched = sum(lm.matched for lm in per_label.values())
    m_ap = m_ap50 = m_recall = None
    if n_gold:
        ev = _coco_eval(gt, results)
        m_ap, m_ap50, m_recall = _stat(ev.stats[0]), _stat(ev.stats[1]), _stat(ev.stats[8])
        precision = ev.eval["precision"]  # [iou, recall, category, area, max dets]
        recall = ev.eval["recall"]  # [iou, category, area, max dets]
        for k, cat_id in enumerate(ev.params.catIds):
            label = next(lab for lab, cid in cat_ids.items() if cid == cat_id)
            lm = per_label[label]
            lm.ap = _mean_valid(precision[:, :, k, 0, -1])
            lm.ap50 = _mean_valid(precision[0, :, k, 0, -1])
            lm.recall = _mean_valid(recall[:, k, 0, -1])
    return DetectionMetrics(
        map=m_ap,
        map50=m_ap50,
        recall=m_recall,
        mean_iou=sum(iou_sum.values()) / matched if matched else None,
        precision50=matched / n_pred if n_pred else None,
        recall50=matched / n_gold if n_gold else None,
        n_images=len(gold),
        n_gold=n_gold,
        n_pred=n_pred,
        matched=matched,
        unknown_label_preds=unknown,
        per_label=dict(sorted(per_label.items())),
    )


def parse_summary(results: Sequence[ParseResult]) -> dict[str, Any]:
    """Counts of what parsing the generated texts gave, overall.

    `answer_forms` counts answers per lenient reading they needed (`boxresult.Form`, every form
    listed, zeros included); `not_a_box` counts objects that are not boxes (points, other keys);
    `invalid_by_reason` counts invalid candidates per reason, most frequent first.
    """
    n = len(results)
    unparseable = sum(r.unparseable for r in results)
    candidates = sum(r.candidates for r in results)
    invalid = sum(r.invalid for r in results)
    forms = Counter(f for r in results for f in r.forms)
    reasons = Counter(reason for r in results for reason in r.invalid_reasons)
    return {
        "images": n,
        "unparseable_images": unparseable,
        "parse_failure_rate": unparseable / n if n else None,
        "images_with_invalid_boxes": sum(r.invalid > 0 for r in results),
        "candidate_boxes": candidates,
        "invalid_boxes": invalid,
        "invalid_box_rate": invalid / candidates if candidates else None,
        "duplicate_boxes": sum(r.duplicates for r in results),
        "valid_boxes": sum(len(r.boxes) for r in results),
        "not_a_box": sum(r.not_boxes for r in results),
        "answer_forms": {str(f): forms[f] for f in Form},
        "invalid_by_reason": dict(reasons.most_common()),
    }
