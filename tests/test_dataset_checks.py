"""What params.yaml asks of the dataset, known before any job: each problem names the key or
the data at fault and the fix."""

from __future__ import annotations

import pytest

from fer.data.checks import check_requirements, requirement_problems, summarise
from fer.data.files import DatasetError
from fer.data.manifest import Record
from fer.params import FoldsParams

FOLDS = FoldsParams(n_folds=2, val_fraction=0.34)


def _records(table: dict[str, list[str]]) -> list[Record]:
    return [Record(f"{s}_{i}.png", s, label, None) for s, labels in table.items() for i, label in enumerate(labels)]


def _summary(table, classes=None):
    recs = _records(table)
    return summarise(recs, classes or sorted({r.label for r in recs}))


def test_a_dataset_without_neutral_needs_subject_mean():
    """A 7-class set with contempt and no neutral: train_dgcn used to stop an hour in with
    "reference_target 'neutral' needs a 'neutral' class"."""
    classes = ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
    summary = _summary({f"S{i}": classes for i in range(6)}, classes)
    (problem,) = requirement_problems(summary, FOLDS, "neutral")
    assert problem.startswith("dgcn.reference_target is 'neutral', but the dataset has no neutral class")
    assert "Set dgcn.reference_target: subject_mean" in problem and "contempt" in problem
    assert requirement_problems(summary, FOLDS, "subject_mean") == []


def test_every_subject_needs_a_neutral_image_for_the_neutral_reference():
    table = {f"S{i}": ["happiness", "neutral"] for i in range(5)} | {"S9": ["happiness", "sadness"]}
    (problem,) = requirement_problems(_summary(table), FOLDS, "neutral")
    assert "1 of 6 subjects have no neutral image (S9)" in problem and "subject_mean" in problem


def test_fersnet_needs_subjects_with_several_expressions():
    one_each = {f"S{i}": ["happiness" if i % 2 else "sadness"] for i in range(8)}
    (problem,) = requirement_problems(_summary(one_each), FOLDS, "subject_mean")
    assert problem.startswith("0 subject(s) have images of two or more expressions") and "FERSNet" in problem
    one_pair = one_each | {"S0": ["happiness", "sadness"]}
    assert "1 subject(s)" in requirement_problems(_summary(one_pair), FOLDS, "subject_mean")[0]
    two = one_pair | {"S1": ["happiness", "sadness"]}
    assert requirement_problems(_summary(two), FOLDS, "subject_mean") == []


def test_folds_need_enough_subjects():
    table = {f"S{i}": ["happiness", "sadness"] for i in range(3)}
    problems = requirement_problems(_summary(table), FoldsParams(n_folds=4, val_fraction=0.2), "subject_mean")
    assert any("3 subjects cannot make 4 subject-independent folds" in p for p in problems)


def test_all_problems_are_reported_at_once():
    table = {"S0": ["happiness"]}
    with pytest.raises(DatasetError) as e:
        check_requirements(_summary(table), FoldsParams(n_folds=4, val_fraction=0.2), "neutral", where="/data/x")
    msg = str(e.value)
    assert msg.startswith("the dataset /data/x cannot run the pipeline") and len(e.value.problems) == 4
    assert "dgcn.reference_target" in msg and "FERSNet" in msg and "folds.n_folds" in msg


def test_protocols_before_any_job():
    """subject_kfold refuses a dataset without subject ids (saying why and what to use);
    official needs every image's official split and skips the k-fold checks."""
    recs = [Record(f"img{i}.png", f"img{i}.png", ["anger", "happiness"][i % 2], None, split="train" if i < 8 else "test")
            for i in range(10)]
    no_subjects = summarise(recs, ["anger", "happiness"], has_subjects=False)
    problems = requirement_problems(no_subjects, FOLDS, "subject_mean")
    assert any("no subject ids" in p and "near-duplicate" in p and "folds.protocol: official" in p for p in problems)
    official = FoldsParams(n_folds=2, val_fraction=0.34, protocol="official")
    assert not any("subject" in p and "fold" in p for p in requirement_problems(no_subjects, official, "subject_mean")
                   if "FERSNet" not in p)
    unsplit = summarise([Record(r.path, r.subject, r.label, None) for r in recs], ["anger", "happiness"])
    assert any("no official split" in p for p in requirement_problems(unsplit, official, "subject_mean"))


def test_a_rows_needs_are_checked_only_when_it_runs():
    """methods decides what the data must have: without the generative-contrastive rows a
    dataset without neutral is fine; without FERSNet, subjects with one expression are."""
    classes = ["anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise"]
    no_neutral = _summary({f"S{i}": classes for i in range(6)}, classes)
    assert requirement_problems(no_neutral, FOLDS, "neutral", rows=["baseline", "dgcn_none", "fersnet_gated"]) == []
    (problem,) = requirement_problems(no_neutral, FOLDS, "neutral", rows=["baseline", "dgcn_real"])
    assert "dgcn.reference_target" in problem and "subject_mean" in problem
    one_each = _summary({f"S{i}": ["happiness" if i % 2 else "sadness"] for i in range(8)})
    assert requirement_problems(one_each, FOLDS, "subject_mean", rows=["baseline", "accnn"]) == []
    assert "FERSNet" in requirement_problems(one_each, FOLDS, "subject_mean", rows=["fersnet_single"])[0]
