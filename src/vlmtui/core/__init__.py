"""Headless core of vlmtui. Never imports textual; torch/transformers only inside functions."""
