"""The README's "From Python" notebook runs as written (extracted from README.md, so the two cannot drift),
on a tiny model and a tiny synthetic corpus; and ``import jaxneurons`` stays cheap (lazy)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re

from jaxneurons.models import build_model
from jaxneurons.models.checkpoint import save_model
from tests.helpers import ROOT, TINY_MELHUBERT, run_python


def notebook() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    m = re.search(r"<!-- notebook:start -->\s*```python\n(.*?)```\s*<!-- notebook:end -->", text, re.S)
    assert m, "README.md lost its notebook block"
    return m.group(1)


def test_readme_notebook_runs(tmp_path, tiny_manifest):
    model_dir = save_model(build_model(TINY_MELHUBERT, seed=0), str(tmp_path / "model"))
    manifest = tiny_manifest
    code = notebook()
    # Tiny sizes: the only edits; each must match the README text exactly (a changed README fails here).
    edits = {'jn.load("default")': f"jn.load({model_dir!r})",
             '"my_corpus/manifest.jsonl"': repr(manifest),
             '"runs/my_scan"': repr(str(tmp_path / "my_scan")),
             'jn.ProbeSuiteConfig(tasks=("phone",))': 'jn.ProbeSuiteConfig(tasks=("phone",), epochs=2, min_steps=5, '
                                                      'bootstrap_draws=20)'}
    for old, new in edits.items():
        assert code.count(old) == 1, old
        code = code.replace(old, new)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md notebook", "exec"), {"__name__": "readme"})
    out = printed.getvalue()
    assert re.search(r"phone accuracy \d\.\d{3} -> \d\.\d{3} without the vowel neurons", out), out
    with open(tmp_path / "my_scan" / "neurons.json") as f:
        assert set(json.load(f)) == {"phone_type", "gender"}
    assert (tmp_path / "my_scan" / "report.html").exists()


def test_import_is_lazy():
    code = "import sys, jaxneurons as jn; assert 'jax' not in sys.modules, 'jax imported'; assert callable(jn.scan)"
    run_python(["-c", code])
