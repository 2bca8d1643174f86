"""Results directories are atomic and self-describing; reports render tables and figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxneurons.report import Report, heatmap, layer_profile, training_curve
from jaxneurons.results import ResultsDir, atomic_directory, load_array, load_results


def test_results_dir_is_atomic(tmp_path):
    target = tmp_path / "res"
    with pytest.raises(RuntimeError), ResultsDir(str(target), "scan", flags={"a": 1}) as res:
        res.save_array("counts", np.arange(3))
        raise RuntimeError("killed")
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # the temp directory is cleaned up too
    with ResultsDir(str(target), "scan", flags={"a": 1}) as res:
        res.save_array("counts", np.arange(3))
        res.save_json("neurons", {"gender": {"m": {"0": [1, 2]}}})
    run = load_results(str(target))
    assert run["kind"] == "scan" and run["flags"] == {"a": 1} and "jax" in run["software"]
    np.testing.assert_array_equal(load_array(str(target), "counts"), np.arange(3))
    assert json.loads((target / "neurons.json").read_text())["gender"]["m"]["0"] == [1, 2]


def test_atomic_directory_replaces_on_success_and_keeps_the_old_one_on_error(tmp_path):
    """The one atomic-directory writer (models, probes, target recipes, HF export, results): an error inside
    leaves the previous directory as it was and no temporary sibling; success swaps the new one in."""
    dest = tmp_path / "model"
    with atomic_directory(str(dest)) as tmp:
        assert not dest.exists()  # nothing at the destination until the block ends
        (Path(tmp) / "a.txt").write_text("first")
    assert (dest / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError, match="half-written"), atomic_directory(str(dest)) as tmp:
        (Path(tmp) / "a.txt").write_text("second")
        raise RuntimeError("half-written")
    assert (dest / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    with atomic_directory(str(dest)) as tmp:
        (Path(tmp) / "b.txt").write_text("third")
    assert sorted(p.name for p in dest.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_report_markdown_and_html(tmp_path):
    fig1 = layer_profile(str(tmp_path / "p.png"), {"gender": [3, 1, 2]}, "Gender neurons per layer")
    fig2 = heatmap(str(tmp_path / "h.png"), np.eye(2), ["a", "b"], ["a", "b"], "IoU", "IoU")
    fig3 = training_curve(str(tmp_path / "t.png"), {"loss": {"iteration 1": ([1, 2], [3.0, 2.5]),
                                                             "iteration 2": ([3, 4], [4.0, 2.0])},
                                                    "accuracy": {"iteration 1": ([1, 2], [0.1, 0.2])}}, "curve")
    report = Report("Scan")
    report.heading("Neurons")
    report.table(["layer", "gender"], [[1, 3], [2, 1.5]], caption="counts")
    report.figure(fig1, "profile")
    report.figure(fig2, "overlap")
    report.figure(fig3, "training")
    report.write(str(tmp_path))
    md_text = (tmp_path / "report.md").read_text()
    assert "| layer | gender |" in md_text and "![profile](p.png)" in md_text
    html_text = (tmp_path / "report.html").read_text()
    assert html_text.count("data:image/png;base64,") == 3 and "<td>1.5</td>" in html_text
