"""Shared fixtures: paths to the shipped data and small real subsets of it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MULTI_PROMPT = ROOT / "data" / "multi-prompt-eval"


@pytest.fixture(scope="session")
def multi_prompt_dir() -> Path:
    """The shipped multi-prompt data folder."""
    return MULTI_PROMPT


@pytest.fixture(scope="session")
def multi_prompt_tensor():
    """The whole shipped multi-prompt tensor (valid paraphrases only)."""
    from robustscope.ingest import ingest

    return ingest(MULTI_PROMPT, "multi-prompt")
