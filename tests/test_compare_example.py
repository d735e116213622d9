"""examples/find_porting_bug.py finds both planted bugs and the fixed port agrees."""

import importlib.util
import pathlib

EXAMPLE = pathlib.Path(__file__).resolve().parent.parent / "examples" / "find_porting_bug.py"


def test_find_porting_bug_example(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("find_porting_bug", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    first, second, fixed = module.main(str(tmp_path))
    assert first.first_divergence == (0, "forward", None)
    assert second.first_divergence == (1, "update", "decoder.bias")
    assert set(second.over_bound(1, "update")) == {"decoder.bias", "dense.bias", "LayerNorm.weight"}
    assert fixed.first_divergence is None
    assert "first_divergence: None" in capsys.readouterr().out
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "compare.json").stat().st_size > 0
