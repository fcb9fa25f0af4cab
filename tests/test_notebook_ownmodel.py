"""Execute the "block-prune your own model" notebook (04) in the quick profile."""
from __future__ import annotations

import nbformat
import pytest


@pytest.mark.notebook
def test_own_model_notebook_runs(run_notebook, data_dir):
    out = run_notebook("04_your_own_model.ipynb", profile="quick", k=4)
    nb = nbformat.read(str(out), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    markdown = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "Quick profile" in markdown and "(this machine, 1 thread)" in markdown
    assert "pruned layers: ['encoder.layers.0.self_attn.out_proj', 'encoder.layers.0.linear1'" in text
    assert "(self_attn): BSRMultiheadAttention(" in text and "warning" not in text
    assert "backend per layer: {'encoder.layers.0.self_attn.out_proj': '" in text and "'head'" not in text.split("backend per")[1]
    assert "bytes stored against" in text
    # the converted model classifies the test images exactly as the pruned one
    line = next(s for s in text.splitlines() if s.startswith("test accuracy: pruned model"))
    pruned, converted = (part.split()[-1] for part in line.split(","))
    assert pruned == converted
