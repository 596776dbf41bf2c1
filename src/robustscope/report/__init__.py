"""Reports of fitted models: HTML, Markdown, summary.json and figures."""

from .render import write_report
from .summary import build_summary

__all__ = ["build_summary", "write_report"]
