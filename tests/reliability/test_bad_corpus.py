"""Every file of the bad-input corpus gives exactly the error (or manifest count) listed for it.

The corpus is ``tests/data/bad``; ``expected.json`` there lists, per file,
the loader, its options, and either the exception type with the text its
message must contain, or the manifest counts of a file that loads. An
input is a file, or a folder for loaders that read a folder layout. An entry
with ``requires`` is skipped when that optional package is not installed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustscope import errors
from robustscope import tensor as T
from robustscope.errors import RobustscopeError
from robustscope.ingest import ingest

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad"
EXPECTED = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
NOT_INPUTS = {"expected.json", "PROVENANCE.md"}
INPUTS = sorted(p.name for p in CORPUS.iterdir() if p.name not in NOT_INPUTS)


@pytest.mark.parametrize("name", sorted(set(INPUTS) | set(EXPECTED)))
def test_corpus_file_has_expectation(name):
    assert name in EXPECTED, f"{name} has no entry in {CORPUS / 'expected.json'}"
    assert name in INPUTS, f"expected.json lists {name}, which is not in {CORPUS}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_corpus_file_gives_expected_outcome(name, tmp_path):
    entry = EXPECTED[name]
    if "requires" in entry:
        pytest.importorskip(entry["requires"])
    path = CORPUS / name
    output = tmp_path / "tensor.nc"

    if "error" in entry:
        error_type = getattr(errors, entry["error"])
        with pytest.raises(RobustscopeError) as caught:
            ingest(path, entry["loader"], output=output, **entry["options"])
        assert type(caught.value) is error_type
        assert str(caught.value).startswith(str(CORPUS) + "/")
        assert entry["message"] in str(caught.value)
        assert not output.exists()
        return

    ds = ingest(path, entry["loader"], output=output, **entry["options"])
    manifest = ds.attrs["manifest"]
    assert manifest["dropped_rows_by_reason"] == entry["loads"]["dropped_rows_by_reason"]
    assert int(ds["observed"].sum()) == entry["loads"]["observed_cells"]
    assert T.tensor_hash(T.load(output)) == T.tensor_hash(ds)
