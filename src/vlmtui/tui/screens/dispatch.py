"""The dispatch dialog: recipes → a host and devices (or the next free GPU) → a plan.

It only collects choices from the latest GPU snapshot; the pre-flight and the launch run in
the app's workers after it closes. Devices: "next free" excludes every other choice; one or
more GPUs (one per recipe, in order) may be chosen, with the CPU for the recipes left over.
Under the `fsdp` strategy each recipe is sharded over its own group of the chosen GPUs
(split evenly, at least two each).
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.segment import Segment
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.strip import Strip
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static
from textual.widgets.option_list import OptionDoesNotExist

from vlmtui.tui.messages import DispatchPlan

AUTO = "auto"
CPU = "cpu"
STRATEGIES = (("ddp (whole model)", "ddp"), ("fsdp (sharded)", "fsdp"))


def device_options(host: Any) -> list[tuple[str, str]]:
    """(label, value) of every device of a host snapshot: next free, each GPU, the CPU.

    A Slurm cluster has one choice, submit: Slurm places the job; the label says how the
    queue looks (free GPUs now, pending jobs) instead of offering a GPU to pick."""
    if host is not None and getattr(host, "source", "") == "slurm":
        free = sum(1 for g in host.gpus if g.free)
        queue = (host.note or "").rsplit("; ", 1)[-1]
        return [(f"submit to Slurm (1 GPU; {free} free now, {queue})", AUTO)]
    options = [("next free GPU (else CPU)", AUTO)]
    if host is not None and host.reachable:
        for g in host.gpus:
            state = g.state
            mem = f"{g.mem_total_mib / 1024:.0f} GiB" if g.mem_total_mib else "?"
            options.append(
                (f"GPU {g.index} {g.name.removeprefix('NVIDIA ')} {mem} ({state})", str(g.index))
            )
    options.append(("CPU", CPU))
    return options


def assign(recipes: list[str], devices: list[str]) -> tuple[str, ...]:
    """One device per recipe: chosen GPUs in order (then `auto`), or all `auto` / `cpu`."""
    if not devices or AUTO in devices:
        return tuple(AUTO for _ in recipes)
    if devices == [CPU]:
        return tuple(CPU for _ in recipes)
    gpus = [d for d in devices if d != CPU]
    out = []
    for i, _ in enumerate(recipes):
        out.append(gpus[i] if i < len(gpus) else (CPU if CPU in devices else AUTO))
    return tuple(out)


def assign_sharded(recipes: list[str], devices: list[str]) -> tuple[str, ...] | None:
    """fsdp: the chosen GPUs split into equal groups in order, one per recipe (`0,1`); None
    when that leaves a recipe fewer than two GPUs (nothing to shard over)."""
    gpus = [d for d in devices if d not in (AUTO, CPU)]
    per = len(gpus) // max(1, len(recipes))
    if per < 2:
        return None
    return tuple(",".join(gpus[i * per : (i + 1) * per]) for i in range(len(recipes)))


def exclusive(selected: list[str], toggled: str) -> list[str]:
    """The device choice after the user toggled `toggled`: "next free" stands alone, any
    other choice drops it, and choosing nothing falls back to "next free"."""
    if toggled == AUTO and AUTO in selected:
        return [AUTO]
    rest = [d for d in selected if d != AUTO]
    return rest or [AUTO]


class DeviceList(SelectionList[str]):
    """The device choices; an unchosen option's box is drawn empty (`▐ ▌`), so the choice
    reads right in any colour depth or a plain-text capture, not only by the mark's colour.
    Enter or space toggles the highlighted choice; a digit toggles that GPU, `c` the CPU and
    `a` "next free"."""

    BINDINGS: ClassVar[list[BindingType]] = [
        *(Binding(str(i), f"toggle_value('{i}')", show=False) for i in range(10)),
        Binding("c", f"toggle_value('{CPU}')", "CPU", show=False),
        Binding("a", f"toggle_value('{AUTO}')", "next free", show=False),
    ]

    def action_toggle_value(self, value: str) -> None:
        """Highlight and toggle the option `value` (a GPU index, `cpu` or `auto`), if offered."""
        values = [self.get_option_at_index(i).value for i in range(self.option_count)]
        if value in values:
            self.highlighted = values.index(value)
            self.toggle(value)

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        try:
            option = self.get_option_at_index(self.scroll_offset.y + y)
        except OptionDoesNotExist:
            return strip
        segments = list(strip)
        if option.value in self.selected or len(segments) < 2:
            return strip
        if segments[1].text != Checkbox.BUTTON_INNER:
            return strip
        segments[1] = Segment(" " * len(segments[1].text), segments[1].style)
        return Strip(segments, strip.cell_length)

    def choose(self, values: list[str]) -> None:
        """Select exactly `values`."""
        for value in self.selected:
            if value not in values:
                self.deselect(value)
        for value in values:
            self.select(value)


class DispatchScreen(ModalScreen[DispatchPlan | None]):
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, recipes: list[str], hosts: list[Any], model: str, data: str) -> None:
        super().__init__()
        self.recipes = recipes
        self.hosts = {h.name: h for h in hosts} or {"local": None}
        self.model = model
        self.data = data

    def compose(self) -> ComposeResult:
        with Vertical(id="dispatch", classes="dialog"):
            yield Static(f"Dispatch {', '.join(self.recipes)}", classes="dialog--title")
            yield Static(f"model {self.model}\ndata  {self.data}", id="dispatch-paths")
            with Horizontal(classes="dialog--row"):
                yield Label("host")
                yield Select(
                    [(n, n) for n in self.hosts], value=next(iter(self.hosts)),
                    allow_blank=False, id="dispatch-host", compact=True,
                )  # fmt: skip
            yield DeviceList(id="dispatch-devices", compact=True)
            with Horizontal(classes="dialog--row"):
                yield Label("max steps")
                yield Input(
                    placeholder="recipe default", id="dispatch-steps", type="integer", compact=True
                )
                yield Select(
                    STRATEGIES, value="ddp", allow_blank=False, id="dispatch-strategy", compact=True
                )
            yield Static(
                "devices: ↑↓ enter, 0–9, c cpu, a auto · tab: next · esc: cancel",
                classes="dialog--hint",
            )
            with Horizontal(classes="dialog--buttons"):
                yield Button("Next: check", variant="primary", id="next", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self._fill_devices(next(iter(self.hosts)))
        self.query_one("#dispatch-devices", DeviceList).focus()

    def _fill_devices(self, host_name: str) -> None:
        sl = self.query_one("#dispatch-devices", DeviceList)
        sl.clear_options()
        for label, value in device_options(self.hosts.get(host_name)):
            sl.add_option((label, value, value == AUTO))
        sl.highlighted = 0

    def on_selection_list_selection_toggled(self, event: SelectionList.SelectionToggled) -> None:
        event.stop()
        sl = self.query_one("#dispatch-devices", DeviceList)
        sl.choose(exclusive(list(sl.selected), str(event.selection.value)))

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "dispatch-host" and isinstance(event.value, str):
            self._fill_devices(event.value)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "cancel":
            self.dismiss(None)
            return
        self.submit()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def submit(self) -> None:
        steps_text = self.query_one("#dispatch-steps", Input).value.strip()
        steps = int(steps_text) if steps_text else None
        if steps is not None and steps < 1:
            self.notify("max steps must be at least 1", severity="error")
            return
        host = self.query_one("#dispatch-host", Select).value
        devices = list(self.query_one("#dispatch-devices", DeviceList).selected)
        strategy = str(self.query_one("#dispatch-strategy", Select).value)
        assigned = (
            assign_sharded(self.recipes, devices)
            if strategy == "fsdp"
            else assign(self.recipes, devices)
        )
        if assigned is None:
            self.notify(
                f"fsdp shards each recipe over 2 or more GPUs: choose at least "
                f"{2 * len(self.recipes)} GPUs",
                severity="error",
            )
            return
        self.dismiss(
            DispatchPlan(
                recipes=tuple(self.recipes),
                host=str(host),
                devices=assigned,
                model=self.model,
                data=self.data,
                max_steps=steps,
                strategy=strategy,
            )
        )

    def action_cancel(self) -> None:
        self.dismiss(None)
