"""Loader options are checked by name and by shape before any file is read."""

import pytest

from robustscope.cli import main
from robustscope.errors import RobustscopeError
from robustscope.ingest import ingest

DATA = "data/multi-prompt-eval"


def test_plain_string_for_a_list_option_is_refused_with_the_json_spelling():
    with pytest.raises(RobustscopeError, match=r"""takes list\[str\] \| None, got 'causal_judgement'.*tasks=\["a", "b"\]"""):
        ingest(DATA, "multi-prompt", tasks="causal_judgement")


def test_wrong_scalar_type_is_refused():
    with pytest.raises(RobustscopeError, match="option 'include_invalid' takes bool, got 'yes'"):
        ingest(DATA, "multi-prompt", include_invalid="yes")


def test_json_list_on_the_command_line_is_read_as_a_list(tmp_path, capsys):
    out = tmp_path / "t.nc"
    code = main(["ingest", DATA, "--format", "multi-prompt", "--option", 'tasks=["causal_judgement"]', "-o", str(out)])
    assert code == 0
    assert out.exists()


def test_non_json_list_on_the_command_line_exits_with_a_message(tmp_path, capsys):
    code = main(["ingest", DATA, "--format", "multi-prompt", "--option", "tasks=causal_judgement", "-o", str(tmp_path / "t.nc")])
    assert code == 2
    captured = capsys.readouterr()
    message = " ".join((captured.out + captured.err).split())
    assert "write it as JSON" in message
    assert not (tmp_path / "t.nc").exists()
