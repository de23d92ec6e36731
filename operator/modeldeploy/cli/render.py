"""Rich renderables for the plugin's views: the only module that knows colours and glyphs."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from modeldeploy.cli.shapes import Cell, Field, Grid, Tone
from modeldeploy.cli.view import View, tree_lines

STYLES = {
    Tone.GOOD: "green",
    Tone.BUSY: "yellow",
    Tone.PAUSED: "magenta",
    Tone.BAD: "bold red",
    Tone.QUIET: "dim",
}
# Shapes as well as colours, so the state reads without colour (NO_COLOR, a log file).
GLYPHS = {Tone.GOOD: "✔", Tone.BUSY: "◌", Tone.PAUSED: "॥", Tone.BAD: "✖", Tone.QUIET: "•"}
MIN_INFO_WIDTH = 40
KIND_GLYPHS = {
    "ModelDeployment": "⟳",
    "Deployment": "⧉",
    "Pod": "□",
    "Analysis": "◇",
    "Check": "·",
}


def status_text(status: str, tone: Tone | None) -> Text:
    if tone is None:
        return Text(status)
    return Text(f"{GLYPHS[tone]} {status}", style=STYLES[tone])


def summary_table(fields: Sequence[Field]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    # fold a value too long for a line (a patch has no spaces) instead of cutting it
    table.add_column(overflow="fold")
    for item in fields:
        value = status_text(item.value, item.tone) if item.tone else Text(item.value)
        table.add_row(f"{item.label}:", value)
    return table


def tree_table(view: View, width: int) -> Table:
    """The tree as aligned columns; the KIND column (the glyphs say it too) goes when
    keeping it would leave INFO too narrow to read."""
    lines = list(tree_lines(view.tree))
    widest = {
        "NAME": max(len(guide) + len(row.name) + 2 for guide, row in lines),
        "KIND": max(len(row.kind) for _, row in lines),
        "STATUS": max(len(row.status) + 2 for _, row in lines),
        "AGE": max([3, *(len(row.age) for _, row in lines)]),
    }
    with_kind = sum(widest.values()) + 2 * len(widest) + MIN_INFO_WIDTH <= width
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in widest:
        if column != "KIND" or with_kind:
            table.add_column(column, no_wrap=True)
    table.add_column("INFO")
    for guide, row in lines:
        name = Text(guide, style="dim")
        name.append(f"{KIND_GLYPHS.get(row.kind, '•')} {row.name}")
        cells = [name, row.kind] if with_kind else [name]
        table.add_row(*cells, status_text(row.status, row.tone), row.age, row.info)
    return table


def events_table(view: View) -> RenderableType:
    if not view.events:
        return Text("Events: none recorded for this object", style="dim")
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("AGE", "TYPE", "REASON"):
        table.add_column(column, no_wrap=True)
    table.add_column("MESSAGE")
    for event in view.events:
        style = "yellow" if event.type == "Warning" else None
        table.add_row(event.age, Text(event.type, style=style or ""), event.reason, event.message)
    return Group(Text("Events:", style="bold"), table)


def cell_text(cell: Cell) -> Text:
    return status_text(cell.text, cell.tone) if cell.text else Text("")


def grid_table(grid: Grid) -> RenderableType:
    """A titled table of cells; only the columns the grid lets wrap do."""
    table = Table(box=None, padding=(0, 2, 0, 0), pad_edge=False, header_style="bold")
    for column in grid.columns:
        table.add_column(column, no_wrap=column not in grid.wrap)
    for row in grid.rows:
        table.add_row(*(cell_text(cell) for cell in row))
    return Group(Text(grid.title, style="bold"), table)


def view_renderable(view: View, width: int) -> RenderableType:
    parts: list[RenderableType] = [summary_table(view.summary), Text(""), tree_table(view, width)]
    if view.experiment:
        parts += [Text(""), summary_table(view.experiment)]
    for grid in view.arms:
        parts += [Text(""), grid_table(grid)]
    if view.monitoring:
        parts += [Text(""), Text("Monitoring:", style="bold"), summary_table(view.monitoring)]
    return Group(*parts, Text(""), events_table(view))


def rows_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    """A kubectl-style table: plain columns, no borders; the last column wraps."""
    table = Table(box=None, padding=(0, 3, 0, 0), pad_edge=False, header_style="bold")
    for index, column in enumerate(columns):
        last = index == len(columns) - 1
        table.add_column(column, no_wrap=not last)
    for row in rows:
        table.add_row(*row)
    return table


def plain_lines(console: Console, renderable: RenderableType) -> str:
    """The renderable as text without the padding rich adds at line ends, for pipes and
    files (a terminal gets `console.print`)."""
    with console.capture() as captured:
        console.print(renderable)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())
