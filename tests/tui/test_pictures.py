"""The runs pane shows a run's eval pictures beside its metrics: `p` swaps them for the log,
`[` / `]` step through them, and a run without pictures says how to make them.

The pictures are real PNGs drawn by the eval's own code (`save_eval_pictures`) from the
shapes set's gold boxes and made-up predictions (the model's answers are the only stand-in),
listed in a real eval.json, and read through the real local host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from textual.widgets import Static
from tui_fakes import fake_sources, screen_text, wait_for

from vlmtui.core.data.datasets import load_split
from vlmtui.core.eval.boxparse import ParseResult, PredBox
from vlmtui.core.eval.evaluate import Generated
from vlmtui.core.eval.pictures import pictures_of, save_eval_pictures
from vlmtui.core.fleet.runs import RunView
from vlmtui.core.rundir import EVAL_IMAGES, EVAL_JSON
from vlmtui.tui.app import VlmtuiApp
from vlmtui.tui.sources import Sources
from vlmtui.tui.widgets.pictures_view import PictureView, protocol_for
from vlmtui.tui.widgets.runs_pane import RunsPane

pytestmark = pytest.mark.anyio
RUN_ID = "20250101-120009-ab19"
METRICS = {"map": 0.4123, "map50": 0.6789, "recall": 0.55, "mean_iou": 0.61}


def _run(run_dir: Path, run_id: str = RUN_ID, host: str = "local") -> RunView:
    return RunView(
        id=run_id, recipe="r1-llm-only", host=host, gpu="cpu", state="finished",
        step=2, max_steps=2, loss=0.5, run_dir=str(run_dir), error=None, pid=None,
        created=1735732800.0, model="demo", data="demo", nproc=1, reachable=True,
    )  # fmt: skip


def _evaluated_run(run_dir: Path, data: Path) -> dict:
    """A run dir as `vlmtui eval RUN` leaves it: eval.json listing eval_images/*.png."""
    records = load_split(data, "val")
    answers = [
        Generated("", ParseResult((PredBox("square", 10, 10, 60 + i, 60),), 1, 0), (112, 112),
                  True)
        for i in range(len(records))
    ]  # fmt: skip
    listed = save_eval_pictures(records, answers, run_dir / EVAL_IMAGES, EVAL_IMAGES, 8)
    (run_dir / EVAL_JSON).write_text(json.dumps({"metrics": METRICS, "pictures": listed}))
    return listed


def _sources(runs: list[RunView]) -> Sources:
    real = Sources()
    return fake_sources(list_runs=lambda: runs, run_files=real.run_files,
                        read_picture=real.read_picture)  # fmt: skip


async def test_pictures_show_beside_the_metrics_and_step(tmp_path, shapes_data_dir) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    listed = _evaluated_run(run_dir, shapes_data_dir)
    names = [f["file"] for f in listed["files"]]
    assert len(names) == 3 and all((run_dir / EVAL_IMAGES / n).is_file() for n in names)
    bare = tmp_path / "bare"
    bare.mkdir()
    runs = [_run(run_dir), _run(bare, "20250101-120008-ab18")]
    app = VlmtuiApp(_sources(runs), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        pane = app.query_one(RunsPane)
        view = app.query_one(PictureView)
        await wait_for(pilot, lambda: len(view.pictures) == 3, what="the picture list")
        assert view.image is None  # nothing drawn (nor textual_image imported) before `p`
        await pilot.press("p")
        folder = f"{run_dir}/{EVAL_IMAGES}"
        await wait_for(pilot, lambda: view.shown == f"{folder}/{names[0]}", what="picture 1")
        assert view.image is not None and view.image.region.area > 0
        text = screen_text(app)
        first = listed["files"][0]
        assert f"1/3 {names[0]}" in text and f"gold {first['gold']} · pred 1" in text
        assert "map50" in text and "0.6789" in text  # the metrics beside the picture
        footer = text.splitlines()[-1]
        assert all(k in footer for k in ("s Stop", "[] pic", "p Pics", "q Quit", "? Help"))
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: view.shown == f"{folder}/{names[1]}", what="picture 2")
        await pilot.press("left_square_bracket", "left_square_bracket")
        await wait_for(pilot, lambda: view.shown == f"{folder}/{names[2]}", what="wraps")
        assert f"3/3 {names[2]}" in screen_text(app)

        await pilot.press("down")  # the run without an eval
        await wait_for(pilot, lambda: pane.highlighted == runs[1].id)
        await wait_for(pilot, lambda: view.shown is None, what="no picture")
        text = screen_text(app)
        assert "no pictures: vlmtui eval" in text and "no eval yet" in text
        await pilot.press("p")
        assert not pane.has_class("-pictures")
        await wait_for(pilot, lambda: "/ Search" in screen_text(app).splitlines()[-1])
        assert "[] pic" not in screen_text(app).splitlines()[-1]


async def test_a_picture_that_cannot_be_read_says_where_it_is(tmp_path, shapes_data_dir) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    listed = _evaluated_run(run_dir, shapes_data_dir)
    missing = run_dir / EVAL_IMAGES / listed["files"][0]["file"]
    missing.unlink()
    sources = _sources([_run(run_dir)])
    reads: list[str] = []
    refreshes: list[int] = []
    read, list_runs = sources.read_picture, sources.list_runs
    sources.read_picture = lambda host, path: reads.append(path) or read(host, path)
    sources.list_runs = lambda: refreshes.append(1) or list_runs()
    app = VlmtuiApp(sources, model="m", data="d")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("4")
        view = app.query_one(PictureView)
        await wait_for(pilot, lambda: len(view.pictures) == 3, what="the picture list")
        await pilot.press("p")
        where = f"pictures are on local at {run_dir}/{EVAL_IMAGES}"
        cap = view.query_one("#picture-caption", Static)
        await wait_for(pilot, lambda: where in str(cap.content), what="where they are")
        seen = len(refreshes)
        await pilot.press("r")  # a refresh shows the run again: the failed read is not retried
        await wait_for(pilot, lambda: len(refreshes) > seen, what="a refresh")
        await pilot.pause(0.2)
        assert reads == [str(missing)] and where in str(cap.content)
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: view.shown is not None, what="the next picture")


async def test_a_run_without_pictures_shows_only_the_hint(tmp_path) -> None:
    """The fault: with no picture ever shown, the empty frame drew its own name,
    `Center#picture-frame`, under the hint."""
    app = VlmtuiApp(_sources([_run(tmp_path)]), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4", "p")
        await wait_for(pilot, lambda: "no pictures: vlmtui eval" in screen_text(app))
        await pilot.pause(0.2)
        assert "picture-frame" not in screen_text(app)


async def test_evaluating_a_finished_run_again_shows_the_new_eval(tmp_path, shapes_data_dir):
    """The fault: once a finished run had metrics, its files were never read again, so a new
    `vlmtui eval` showed only after the app restarted. It is re-read every final_recheck_s."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _evaluated_run(run_dir, shapes_data_dir)
    sources = _sources([_run(run_dir)])
    sources.runs_interval_s = sources.final_recheck_s = 0.2
    app = VlmtuiApp(sources, model="m", data="d")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("4")
        view = app.query_one(PictureView)
        await wait_for(pilot, lambda: len(view.pictures) == 3, what="the first eval")
        records = load_split(shapes_data_dir, "val")[:1]
        answers = [Generated("", ParseResult((), 0, 1), (112, 112), True)]
        listed = save_eval_pictures(records, answers, run_dir / EVAL_IMAGES, EVAL_IMAGES, 8)
        metrics = {**METRICS, "map": 0.9876}
        (run_dir / EVAL_JSON).write_text(json.dumps({"metrics": metrics, "pictures": listed}))
        await wait_for(pilot, lambda: len(view.pictures) == 1, what="the second eval")
        await wait_for(pilot, lambda: "0.9876" in screen_text(app), what="its metrics")


async def test_a_new_eval_redraws_a_picture_on_screen_under_the_same_name(
    tmp_path, shapes_data_dir
) -> None:
    """The fault: pictures were kept by path, and a new eval of the same run (after it
    trained further) redraws `eval_images/0000_….png` with new boxes under the same name:
    the old drawing stayed on screen under the new caption until the app restarted."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    listed = _evaluated_run(run_dir, shapes_data_dir)
    first = run_dir / EVAL_IMAGES / listed["files"][0]["file"]
    (run_dir / EVAL_JSON).write_text(
        json.dumps({"metrics": METRICS, "pictures": listed, "created": 1.0})
    )
    app = VlmtuiApp(_sources([_run(run_dir)]), model="m", data="d")
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("4", "p")
        view = app.query_one(PictureView)
        await wait_for(pilot, lambda: view.shown == str(first), what="picture 1")
        old = view.image.image.tobytes()  # type: ignore[union-attr]
        records = load_split(shapes_data_dir, "val")
        answers = [Generated("", ParseResult((), 0, 1), (112, 112), True)] * len(records)
        again = save_eval_pictures(records, answers, run_dir / EVAL_IMAGES, EVAL_IMAGES, 8)
        assert again["files"][0]["file"] == first.name  # the same name, no predicted box now
        (run_dir / EVAL_JSON).write_text(
            json.dumps({"metrics": METRICS, "pictures": again, "created": 2.0})
        )
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: view.image.image.tobytes() != old,  # type: ignore[union-attr]
            what="the new drawing",
        )
        assert view.image.image.tobytes() == _png_pixels(first)  # type: ignore[union-attr]


def _png_pixels(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        return img.tobytes()


@pytest.mark.ssh
async def test_a_remote_runs_pictures_come_over_ssh(ssh_host, tmp_path, shapes_data_dir) -> None:
    """Host `loop` is a real sshd on 127.0.0.1: eval.json and the PNG bytes travel over it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    listed = _evaluated_run(run_dir, shapes_data_dir)
    first = run_dir / EVAL_IMAGES / listed["files"][0]["file"]
    assert Sources().read_picture(ssh_host.name, str(first)) == first.read_bytes()
    app = VlmtuiApp(_sources([_run(run_dir, host=ssh_host.name)]), model="m", data="d")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        view = app.query_one(PictureView)
        await wait_for(pilot, lambda: len(view.pictures) == 3, timeout=30, what="the list")
        await pilot.press("p")
        await wait_for(pilot, lambda: view.shown == str(first), timeout=30, what="picture 1")


def test_picture_list_from_eval_json() -> None:
    ev = {"pictures": {"dir": "eval_images", "files": [
        {"file": "0000_a.png", "gold": 2, "pred": 1}, {"file": "../x.png"}, {"file": "b.png"},
    ]}}  # fmt: skip
    got = pictures_of("/runs/r1", ev)
    assert [(p.path, p.gold, p.pred) for p in got] == [
        ("/runs/r1/eval_images/0000_a.png", 2, 1),
        ("/runs/r1/eval_images/b.png", None, None),
    ]
    assert (
        pictures_of("/r", {"pictures": {"dir": "/abs/imgs", "files": [{"file": "c.png"}]}})[0].path
        == "/abs/imgs/c.png"
    )
    assert pictures_of("/r", None) == () and pictures_of("/r", {"pictures": []}) == ()


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({"TERM": "xterm-kitty"}, "tgp"),
        ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, "sixel"),
        ({"TERM": "foot"}, "sixel"),
        ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-1/default,1,0"}, "halfcell"),
        ({"TERM": "xterm-256color"}, "halfcell"),
        ({"TERM": "xterm-256color", "VLMTUI_IMAGES": "sixel"}, "sixel"),
    ],
)
def test_protocol_is_judged_from_the_environment(env, want) -> None:
    assert protocol_for(env) == want


def test_textual_image_is_imported_without_asking_the_terminal() -> None:
    """On a terminal, textual_image's own import writes sixel / kitty / cell-size queries to
    stdout; under Textual the answers would turn into keystrokes. `image_class` asks nothing:
    the terminal (a pty here) receives no byte."""
    import pty
    import select
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vlmtui.tui.widgets.pictures_view import image_class\n"
        "sys.stderr.write(image_class('halfcell').__name__)\n"
    )
    master, slave = pty.openpty()
    env = dict(os.environ, TERM="xterm-256color")
    try:
        res = subprocess.run([sys.executable, "-c", code], stdin=slave, stdout=slave,
                             stderr=subprocess.PIPE, timeout=60, env=env)  # fmt: skip
        assert res.returncode == 0, res.stderr[-2000:]
        assert res.stderr.endswith(b"HalfcellImage")
        written = b""
        while select.select([master], [], [], 0.2)[0]:
            written += os.read(master, 4096)
        assert written == b"", written
    finally:
        os.close(master)
        os.close(slave)
