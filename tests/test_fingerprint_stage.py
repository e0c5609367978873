"""The fingerprint stages in dvc.yaml are rendered from the Snakefile: an output named
`fingerprint` makes an always-changed stage whose file DVC neither caches nor deletes
before the command (the command rewrites it only when the content changed), and
alignment depends on the fingerprints, not on the dataset folders."""

from __future__ import annotations

import textwrap
from pathlib import Path

import yaml

import dvcgen

ROOT = Path(__file__).resolve().parents[1]

TOY = textwrap.dedent(
    """
    rule all:
        input: "aligned.txt"

    rule fingerprint_data:
        input: code="code/fp.py"
        output: fingerprint="data/fingerprints/data.json"
        log: "logs/fp.log"
        shell: "python code/fp.py --out {output.fingerprint} > {log}"

    rule align:
        input: "data/fingerprints/data.json"
        output: "aligned.txt"
        log: "logs/align.log"
        shell: "cat {input} > {output} 2> {log}"
    """
)


def test_an_output_named_fingerprint_renders_an_always_changed_stage(tmp_path):
    (tmp_path / "Snakefile").write_text(TOY)
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "fp.py").write_text("")
    stages = dvcgen.render(tmp_path)["stages"]
    assert stages["fingerprint_data"] == {
        "cmd": "python code/fp.py --out data/fingerprints/data.json > logs/fp.log",
        "always_changed": True,
        "deps": ["code/fp.py"],
        "outs": [{"data/fingerprints/data.json": {"cache": False, "persist": True}}],
    }
    assert "always_changed" not in stages["align"]
    assert dvcgen.rule_edges({"stages": stages}) == {("fingerprint_data", "align")}


def test_alignment_depends_on_the_fingerprints():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    always = {name for name, st in stages.items() if st.get("always_changed")}
    assert always == {"fingerprint_dataset", "fingerprint_corpus"}
    for name, which in (("align", "dataset"), ("align_corpus", "corpus")):
        fingerprint = f"data/fingerprints/{which}.json"
        assert fingerprint in stages[name]["deps"]
        assert stages[f"fingerprint_{which}"]["outs"] == [{fingerprint: {"cache": False, "persist": True}}]
        # the folder itself is no dependency: its own time stamp says nothing about its files
        assert "data/demo" not in stages[name]["deps"]
