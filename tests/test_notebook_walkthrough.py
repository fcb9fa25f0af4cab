"""Execute the read-along walkthrough (notebook 00) with small parameters."""
from __future__ import annotations

import nbformat
import pytest


@pytest.mark.notebook
def test_walkthrough_runs(run_notebook, data_dir):
    # k = 3 leaves partial edge tiles in fc1 (784 = 3*261 + 1) and fc3 (10 = 3*3 + 1)
    out = run_notebook(
        "00_block_pruning_walkthrough.ipynb",
        k=3, p=0.2, p_out=0.1, rounds=2, n_train=500, n_test=500, retrain_epochs=1, seed=0, widgets=False,
    )
    nb = nbformat.read(str(out), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "pruned weights are exactly zero: True" in text
    assert "block_scores says" in text
    assert "notebook ran in" in text
    assert "weights kept:" in text  # the lab drew its static figure
    assert "pretrained LeNet-300-100 (paper profile, seed 0" in text  # it starts from the shipped network
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "not measured yet" in html  # the claims table, with no result tables in this run's figures folder
    # the walkthrough writes nothing into the figures or results folders
    assert not run_notebook.figures_dir.exists() or not any(run_notebook.figures_dir.iterdir())


def test_walkthrough_exercise_hint_keeps_dense_model_dense():
    """The hint of exercise 1 prunes a copy: the sliders keep starting from the dense network."""
    from blockprune_utils.infra.paths import REPO_ROOT

    nb = nbformat.read(str(REPO_ROOT / "notebooks" / "00_block_pruning_walkthrough.ipynb"), as_version=4)
    hint = next(c.source for c in nb.cells if c.cell_type == "markdown" and "Predict the first round of fc3" in c.source)
    assert "copy.deepcopy(dense_model)" in hint and ".step(m)" in hint
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "pruner.step(dense_model)" not in code and "step(dense_model)" not in hint
