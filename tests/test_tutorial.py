"""The tutorial notebook (docs/tutorial.ipynb) runs from a clean kernel, on the CPU, and draws
its figures. Its cells assert the math they show (the chain against q_sample, Bayes' rule against
q_posterior, Eq. 12 against vlb_term, Eq. 11 against p_mean_variance, L_simple against
training_losses), so a change that breaks an equation fails here. It trains two small models:
about two minutes on a quiet 2-core CPU."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "docs" / "tutorial.ipynb"


def figures(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def test_committed_notebook_keeps_its_outputs():
    """The site shows the committed outputs (mkdocs-jupyter does not execute it): every code
    cell was run, in order, and the figures are there."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run the notebook top to bottom, then commit it"
    assert not any(out.get("output_type") == "error" for c in code for out in c.outputs)
    assert sum(figures(c) for c in code) >= 10


@pytest.mark.slow
def test_tutorial_runs_and_draws_every_figure(tmp_path):
    committed = nbformat.read(NOTEBOOK, as_version=4)
    nb = copy.deepcopy(committed)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    NotebookClient(nb, timeout=1200, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    for ran, kept in zip(nb.cells, committed.cells):
        if ran.cell_type == "code":  # the same figures as the committed outputs
            assert figures(ran) == figures(kept), f"cell {ran.source[:60]!r} drew {figures(ran)} figures, the committed copy {figures(kept)}"
