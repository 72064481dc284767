"""Fault suite, full disk (issue 11 item 4), on a real small tmpfs (root only; skipped with the
reason otherwise): the pre-flight refuses a disk too small, a disk that fills mid-run gives
the true reason and leaves no half-written checkpoint, and `--resume` skips an incomplete
checkpoint (the state an older version left behind) and says which one it used."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from trainhelp import train_argv

pytestmark = pytest.mark.slow


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root")
        where = tmp_path / f"disk-{size}"
        where.mkdir()
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_preflight_refuses_a_disk_too_small(
    small_disk: Callable[[str], Path], qwen2_vl_dir: Path, shapes_data_dir: Path
) -> None:
    out = small_disk("8m") / "run"
    proc = subprocess.run(
        train_argv(qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "3"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"vlmtui: not enough free space at {re.escape(str(out))}: [\d.]+ MiB free, the run "
        r"needs about [\d.]+ MiB \(3 checkpoints of [\d.]+ MiB with optimizer state, final "
        r"weights [\d.]+ MiB\)",
        last,
    ), last
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed" and status["error"] == last.removeprefix("vlmtui: ")
    assert '"loss"' not in (out / "events.jsonl").read_text()  # refused before step 1


def _free(disk: Path) -> int:
    st = os.statvfs(disk)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` free bytes while a run writes to it too: the run can take the
    last bytes first (a CI failure: the filler's own write hit ENOSPC), so write in chunks,
    stop at a full disk, and give `leave` bytes back for the run's logs and status."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        while (n := min(1 << 20, _free(disk) - leave)) > 0:
            try:
                os.write(fd, b"\0" * n)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        short = leave - _free(disk)
        if short > 0:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - short))
    finally:
        os.close(fd)
    return filler


def test_disk_full_mid_run_gives_the_reason_and_resume_skips_incomplete(
    small_disk: Callable[[str], Path], qwen2_vl_dir: Path, shapes_data_dir: Path
) -> None:
    disk = small_disk("64m")
    out = disk / "run"
    ckpts = out / "checkpoints"
    argv = train_argv(qwen2_vl_dir, shapes_data_dir, out, "--max-steps", "1000")
    proc = subprocess.Popen(
        [*argv, "--save-steps", "5"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 180
    while not (ckpts / "checkpoint-5").is_dir():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"no first checkpoint: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    filler = fill(disk, leave=96 * 1024)  # room for logs and status, not for a checkpoint
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err[-2000:]
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "failed"
    assert re.fullmatch(
        rf"no space left on device \([\d.]+ MiB free at {re.escape(str(out))}\)", status["error"]
    ), status["error"]
    assert sorted(p.name for p in ckpts.iterdir() if "checkpoint" in p.name) == ["checkpoint-5"]

    # An older version's half-written checkpoint: no trainer state, no weights.
    (ckpts / "checkpoint-10").mkdir()
    (ckpts / "checkpoint-10" / "optimizer.pt").write_bytes(b"\0" * 100)
    filler.unlink()
    resumed = subprocess.run(
        [*argv[:-2], "--max-steps", "7", "--resume"], capture_output=True, text=True, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (
        f"[vlmtui] skipping incomplete checkpoint {ckpts / 'checkpoint-10'} "
        "(missing trainable.safetensors, trainer_state.json)\n"
        f"[vlmtui] resuming from {ckpts / 'checkpoint-5'} (step 5)\n"
    ) in resumed.stdout
    events = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if "loss" in e][-2:] == [6, 7]
    assert json.loads((out / "status.json").read_text())["state"] == "finished"


def test_torch_save_on_a_full_disk_is_named_as_such(small_disk: Callable[[str], Path]) -> None:
    """torch.save says only "unexpected pos … vs …" when the disk fills (optimizer.pt)."""
    import torch

    from vlmtui.core.training.diskspace import disk_full_reason

    disk = small_disk("64k")
    with pytest.raises(RuntimeError) as err:
        torch.save({"exp_avg": torch.zeros(100_000)}, disk / "optimizer.pt")
    reason = disk_full_reason(err.value, disk)
    assert reason is not None and re.fullmatch(
        rf"no space left on device \([\d.]+ MiB free at {re.escape(str(disk))}\)", reason
    )
    assert disk_full_reason(RuntimeError("shape mismatch"), disk) is None


def test_launched_run_on_a_disk_full_to_the_last_byte_says_why_and_resumes(
    small_disk: Callable[[str], Path], qwen2_vl_dir: Path, shapes_data_dir: Path
) -> None:
    """A detached run whose disk fills completely (another writer took the last byte): no new
    file can be written any more, yet status.json must end `failed` with the true reason (it
    is rewritten in the block it has), not "ended without a final state"; once space is back,
    `launch --resume` finishes it and every events.jsonl line still parses."""
    from faultkit import poll
    from vlmtui.core.fleet.launch import LaunchRequest, launch, resume_run
    from vlmtui.core.fleet.runs import get_run
    from vlmtui.core.rundir import read_events

    runs = Path(os.environ["VLMTUI_HOME"]) / "data" / "runs"
    runs.parent.mkdir(parents=True)
    runs.symlink_to(small_disk("48m"))  # the default runs dir of `local`, on the small disk
    req = LaunchRequest(
        recipe="r1-llm-only", model=str(qwen2_vl_dir), data=str(shapes_data_dir), gpu="cpu",
        max_steps=4000,
    )  # fmt: skip
    run = launch(req)
    events = Path(run.run_dir) / "events.jsonl"
    poll(lambda: events.is_file() and '"loss"' in events.read_text(), timeout=120)
    filler = fill(runs, leave=0)
    view = poll(lambda: (v := get_run(run.run_id)).state in ("failed", "stopped") and v, 120)
    assert view.state == "failed", view
    assert re.match(r"no space left on device \([\d.]+ MiB free at ", view.error or ""), view
    filler.unlink()
    steps = view.step or 1
    resume_run(run.run_id, max_steps=steps)  # no checkpoint yet: from step 0
    done = poll(lambda: (v := get_run(run.run_id)).state in ("finished", "failed") and v, 180)
    assert done.state == "finished", (done, (Path(run.run_dir) / "output.log").read_text()[-2000:])
    logged = [e["step"] for e in read_events(Path(run.run_dir)) if "loss" in e]
    assert logged[-steps:] == list(range(1, steps + 1))  # none glued onto a torn line
    torn = [ln for ln in events.read_text().splitlines() if not _parses(ln)]
    assert len(torn) <= 1, torn  # what the full disk cut


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


def test_launch_onto_a_full_disk_is_refused_and_a_resume_keeps_the_run(
    small_disk: Callable[[str], Path], standin_train: Callable[..., None], tmp_path: Path
) -> None:
    """The runs' disk is full at launch: the start script cannot write status.json and used
    to start the run anyway (empty files, then "ended without a final state (killed with
    SIGKILL...)"). Now nothing starts, nothing is left behind, and a resume onto the full
    disk leaves the run's files and row as they were (it used to empty status.json and
    launch.json, which name the run: a rebuild of the registry could not find it again)."""
    from faultkit import poll
    from vlmtui.cli import main
    from vlmtui.core.fleet.registry import Registry
    from vlmtui.core.fleet.runs import get_run

    runs = Path(os.environ["VLMTUI_HOME"]) / "data" / "runs"
    runs.parent.mkdir(parents=True)
    runs.symlink_to(small_disk("1m"))
    for name in ("model", "data"):
        (tmp_path / name).mkdir()
    argv = ["launch", "--recipe", "r1-llm-only", "--model", str(tmp_path / "model")]
    argv += ["--data", str(tmp_path / "data"), "--gpu", "cpu"]
    standin_train("crash", steps=1, step_s=0.0)
    assert main(argv) == 0
    (failed,) = Registry().all()
    poll(lambda: get_run(failed.id).state == "failed")
    for name in ("exit.json", "supervisor.json"):  # the resume deletes them: no room then
        Path(failed.run_dir, name).unlink()
    before = {p.name: p.read_bytes() for p in Path(failed.run_dir).iterdir()}
    fill(runs, leave=0)

    assert main(argv) == 2
    assert [r.id for r in Registry().all()] == [failed.id]
    assert sorted(p.name for p in runs.iterdir()) == sorted([failed.id, "filler"])
    assert main(["launch", "--resume", failed.id]) == 2
    assert {p.name: p.read_bytes() for p in Path(failed.run_dir).iterdir()} == before
    assert Registry().get(failed.id).state == "failed"
    assert get_run(failed.id).state == "failed"


def test_supervisor_that_cannot_record_its_identity_starts_nothing(
    small_disk: Callable[[str], Path], tmp_path: Path
) -> None:
    """The disk fills between the start script's writes and the supervisor's: a run whose
    processes cannot be proven the run's (no supervisor.json) must not start, and says why."""
    import sys

    run = small_disk("1m") / "run"
    run.mkdir()
    (run / "status.json").write_text('{"state": "pending", "run_id": "r1"}\n')
    fill(run.parent, leave=0)
    started = tmp_path / "started"  # on another disk
    proc = subprocess.run(
        [sys.executable, "-m", "vlmtui.core.supervise", str(run), "--", "touch", str(started)],
        env={**os.environ, "VLMTUI_RUN_ID": "r1"}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert not started.exists() and not (run / "supervisor.json").exists()
    status = json.loads((run / "status.json").read_text())
    assert (status["state"], status["run_id"]) == ("failed", "r1")
    assert status["error"] == "cannot start: No space left on device writing supervisor.json"
