"""robustscope: Bayesian analysis of LLM evaluation robustness."""

from __future__ import annotations

__version__ = "0.1.0"
