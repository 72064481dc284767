"""settings.toml: defaults without the file, every field read, bad files named precisely."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlmtui.core.errors import BadInput
from vlmtui.core.paths import config_dir
from vlmtui.core.settings import DEFAULTS, Settings, load_settings, settings_path


def write(text: str) -> Path:
    path = settings_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_file_means_defaults() -> None:
    assert settings_path() == config_dir() / "settings.toml"
    assert not settings_path().exists()
    s = load_settings()
    assert s == DEFAULTS == Settings()
    assert (s.gpu_refresh_s, s.runs_refresh_s, s.log_lines, s.theme) == (2.0, 2.0, 5000, "dark")


def test_log_lines_default_is_the_log_views() -> None:
    from vlmtui.tui.widgets.log_view import DEFAULT_MAX_LINES

    assert DEFAULTS.log_lines == DEFAULT_MAX_LINES


def test_every_field_is_read() -> None:
    write('gpu_refresh_s = 5\nruns_refresh_s = 0.5\nlog_lines = 200\ntheme = "light"\n')
    s = load_settings()
    assert s == Settings(gpu_refresh_s=5.0, runs_refresh_s=0.5, log_lines=200, theme="light")
    assert isinstance(s.gpu_refresh_s, float)


def test_partial_file_keeps_other_defaults() -> None:
    write("log_lines = 1000\n")
    assert load_settings() == Settings(log_lines=1000)


def test_explicit_path(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text('theme = "light"\n')
    assert load_settings(path).theme == "light"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("refresh = 2\n", "'refresh'"),
        ("[gpus]\ninterval = 2\n", "'gpus'"),
        ('gpu_refresh_s = "2"\n', "gpu_refresh_s"),
        ("gpu_refresh_s = true\n", "gpu_refresh_s"),
        ("runs_refresh_s = 0\n", "runs_refresh_s"),
        ("runs_refresh_s = nan\n", "runs_refresh_s"),
        ("log_lines = 2.5\n", "log_lines"),
        ('log_lines = "5000"\n', "log_lines"),
        ("log_lines = 10\n", "log_lines"),
        ('theme = "solarized"\n', "theme"),
        ("theme = 1\n", "theme"),
    ],
)
def test_bad_keys_and_values_name_file_and_field(text: str, field: str) -> None:
    path = write(text)
    with pytest.raises(BadInput) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{path}: ") and field in message
    assert "\n" not in message


def test_invalid_toml_names_the_file() -> None:
    path = write("theme = \n")
    with pytest.raises(BadInput, match=r"settings\.toml"):
        load_settings()
    assert path.exists()


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULTS.theme = "light"  # type: ignore[misc]


def test_every_problem_is_reported_at_once() -> None:
    settings_path().parent.mkdir(parents=True, exist_ok=True)
    settings_path().write_text('colour = 1\ngpu_refresh_s = "x"\nlog_lines = 5\ntheme = "blue"\n')
    with pytest.raises(BadInput) as err:
        load_settings()
    message = str(err.value)
    assert "4 problems" in message
    for field in ("colour", "gpu_refresh_s", "log_lines", "theme"):
        assert field in message
