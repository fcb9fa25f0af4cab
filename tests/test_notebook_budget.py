"""Execute notebooks/05_accuracy_for_the_time.ipynb in the quick profile on MNIST: the
epochs scan and its verdict, the budget table, neuron and narrow nets, the latency
rows and the Pareto readings, the literature table; figures only in the quick folder."""
from __future__ import annotations

import nbformat
import pytest


@pytest.mark.notebook
def test_budget_notebook_runs(run_notebook, data_dir):
    out = run_notebook("05_accuracy_for_the_time.ipynb", profile="quick", datasets=["mnist"], latency_budget_s=0.001)
    nb = nbformat.read(str(out), as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    markdown = "".join(str(o.get("data", {}).get("text/markdown", "")) for o in outputs)
    assert "Quick profile" in markdown
    assert "epochs_scan: the best mean validation accuracy" in text and "the profile uses 1" in text
    assert "k = 4 trails k = 1" in text
    assert "hidden units kept by neuron pruning round 3: " in markdown and "narrow dense nets round 3: 784-" in markdown
    assert "the most accurate model is" in markdown and "Neuron pruning:" in markdown
    html = "".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "Frankle &amp; Carbin 2019" in html and "this study (round" in html
    quick = run_notebook.quick_figures_dir
    for name in ("lenet_budget", "lenet_mnist_epochs_scan", "lenet_mnist_pareto"):
        assert (quick / f"{name}.png").exists() and (quick / f"{name}.csv").exists(), name
    header = (quick / "lenet_budget.csv").read_text().splitlines()[0]
    assert header == "dataset,k,epochs_per_round,round,density,acc_mean,acc_sd,n_seeds"
