"""Widgets with one job each: the four panes and the pieces they are built from."""
