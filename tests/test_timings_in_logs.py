"""Wall-clock timings stay in the logs: the same run gives the same output bytes.

(The end-to-end md5 comparison of every output is in tests/test_workflow.py; this is the
quick check of the corpus fine-tuning's round files, which used to hold each epoch's
seconds.)"""

from __future__ import annotations

import json
from pathlib import Path

from test_corpus import make_pseudo0, run


def test_corpus_rounds_hold_no_timings_and_their_logs_go_beside_the_fold_log(tmp_path: Path) -> None:
    pseudo0, feats0 = make_pseudo0(tmp_path)
    run(tmp_path, "a", pseudo0, feats0)
    out = tmp_path / "a"
    for r in (0, 1):
        rdir = out / "rounds" / f"round-{r}"
        done = json.loads((rdir / "round.json").read_text())
        assert done["history"] and all("seconds" not in row for row in done["history"]), done["history"]
        assert not (rdir / "train_log.jsonl").exists()  # the declared round folder holds no log
        rows = [json.loads(line) for line in (out / f"log.round-{r}.jsonl").read_text().splitlines()]
        assert rows and all(row["seconds"] >= 0 for row in rows)  # the timings are in the log
    gathered = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [row["round"] for row in gathered] == [0, 1] and all("seconds" in row for row in gathered)
