"""vlmtui: a terminal workbench for fine-tuning Qwen2-VL-family models for grounding."""

__version__ = "0.1.0"
