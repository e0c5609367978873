import pytest

from fer.labels import CANONICAL, UnknownLabelError, canonical_label, dataset_classes


def test_synonyms_and_case():
    assert canonical_label("Happy") == "happiness"
    assert canonical_label(" surprised ") == "surprise"
    assert canonical_label("angry") == "anger"
    assert set(CANONICAL) == {canonical_label(c) for c in CANONICAL}


def test_label_map_first_and_checked():
    assert canonical_label("7", {"7": "surprise"}) == "surprise"
    with pytest.raises(UnknownLabelError, match="not one of"):
        canonical_label("7", {"7": "joyful"})


def test_unknown_label_names_the_source():
    with pytest.raises(UnknownLabelError, match=r"'bored'.*in data/x/bored"):
        canonical_label("bored", where="data/x/bored")


def test_dataset_classes_order_and_empty_classes():
    assert dataset_classes({"neutral", "anger", "happiness"}) == ["anger", "happiness", "neutral"]
    assert dataset_classes({"neutral", "anger"}, ["neutral", "angry"]) == ["neutral", "anger"]
    with pytest.raises(ValueError, match="no images"):
        dataset_classes({"anger"}, ["anger", "fear"])
    with pytest.raises(ValueError, match="not listed"):
        dataset_classes({"anger", "fear"}, ["anger"])
    with pytest.raises(ValueError, match="twice"):
        dataset_classes({"anger"}, ["anger", "angry"])
