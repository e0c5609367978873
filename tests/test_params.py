"""params.yaml: strict schema, one typed dataclass per section, declared-key access."""

import copy
import re
import dataclasses

import pytest
import yaml
from _common import check_pipeline_params
from conftest import PARAMS, SCHEMA

from fer.params import (
    JOINT_ROWS,
    SECTIONS,
    DeclaredParams,
    ParamsError,
    RdbpParams,
    build,
    field_key,
    load_params,
    section,
    subset,
    to_dict,
    validate_params,
)


@pytest.fixture
def params():
    return load_params(PARAMS, SCHEMA)


def test_shipped_params_are_valid(params):
    assert params["data"]["format"] == "demo"


@pytest.mark.parametrize(
    "path,value,needle",
    [
        (("baseline", "lrr"), 0.1, "lrr"),  # unknown key in a section
        (("rdbp_typo",), 1, "rdbp_typo"),  # unknown top-level section
        (("baseline", "epochs"), "ten", "baseline.epochs"),  # wrong type
        (("baseline", "epochs"), 2.5, "baseline.epochs"),  # float where int
        (("folds", "n_folds"), 2.0, "folds.n_folds"),  # an integral float is not an integer either
        (("seed",), 0.0, "seed"),  # top-level integer: the schema's own check is strict too
        (("fersnet", "lr_milestones"), [150.0], "fersnet.lr_milestones"),  # list items too
        (("align", "channels"), "bgr", "align.channels"),  # not in enum
        (("folds", "n_folds"), 1, "folds.n_folds"),  # below minimum
        (("baseline", "augment", "flip"), True, "flip"),  # unknown nested key
        (("baseline", "amp"), "yes", "baseline.amp"),  # string where bool
        (("synthesis", "reexpress_from"), "any", "synthesis.reexpress_from"),  # not in enum
    ],
)
def test_bad_params_fail_naming_the_key(params, path, value, needle):
    bad = copy.deepcopy(params)
    node = bad
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    with pytest.raises(ParamsError) as e:
        validate_params(bad, SCHEMA)
    assert needle in str(e.value)


def test_missing_key_fails(params):
    bad = copy.deepcopy(params)
    del bad["baseline"]["lr"]
    with pytest.raises(ParamsError, match="lr"):
        validate_params(bad, SCHEMA)


def test_pipeline_rules_about_the_demo_paths(params):
    bad = copy.deepcopy(params)
    bad["data"]["root"] = "elsewhere"
    with pytest.raises(ParamsError, match="data.root"):
        check_pipeline_params(bad)
    bad = copy.deepcopy(params)
    bad["data"]["format"] = "folders"
    bad["data"]["root"] = "/datasets/ck"
    with pytest.raises(ParamsError, match="corpus.root"):
        check_pipeline_params(bad)
    bad["corpus"]["root"] = "/datasets/casia"
    with pytest.raises(ParamsError, match="corpus.truth"):  # the demo's truth file with a real corpus
        check_pipeline_params(bad)
    bad["corpus"]["truth"] = ""
    check_pipeline_params(bad)
    bad = copy.deepcopy(params)
    bad["corpus"]["truth"] = "elsewhere.csv"
    with pytest.raises(ParamsError, match="corpus.truth"):
        check_pipeline_params(bad)


def test_cross_field_checks(params):
    bad = copy.deepcopy(params)
    bad["data"]["subject_regex"] = "^S\\d+_"
    with pytest.raises(ParamsError, match="capture group"):
        validate_params(bad, SCHEMA)
    bad["data"]["subject_regex"] = "^(S\\d+_"
    with pytest.raises(ParamsError, match="subject_regex"):
        validate_params(bad, SCHEMA)


def test_load_params_reports_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(p, SCHEMA)
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "missing.yaml", SCHEMA)


def test_declared_params_only_expose_declared_keys(params):
    view = DeclaredParams(params, ["seed", "baseline", "align.size"])
    assert view.get("baseline.lr") == params["baseline"]["lr"]
    assert view.get("align.size") == params["align"]["size"]
    with pytest.raises(ParamsError, match="declares only"):
        view.get("align.channels")
    with pytest.raises(ParamsError, match="declares only"):
        view.get("folds")
    assert view.as_dict() == {"seed": params["seed"], "baseline": params["baseline"], "align": {"size": params["align"]["size"]}}
    with pytest.raises(ParamsError, match="no key"):
        DeclaredParams(params, ["baseline.nope"])


def test_subset_is_a_copy(params):
    s = subset(params, ["baseline.augment"])
    s["baseline"]["augment"]["hflip"] = "changed"
    assert params["baseline"]["augment"]["hflip"] is True


def test_every_rule_reads_only_declared_keys():
    """Each script reads params only through its declared view (no raw yaml loads)."""
    from conftest import SCRIPTS

    for script in SCRIPTS.glob("*.py"):
        text = script.read_text()
        if script.name == "dvcgen.py":  # renders and parses dvc.yaml; its params reading is load_params
            assert "load_yaml" not in text, script
            continue
        assert "yaml.safe_load" not in text and "load_yaml" not in text, script


def test_schema_covers_params_file_exactly():
    schema = yaml.safe_load(SCHEMA.read_text())
    params = yaml.safe_load(PARAMS.read_text())
    assert set(schema["required"]) == set(params) == set(schema["properties"])


def test_apply_preset_keeps_comments_and_validates(tmp_path):
    from conftest import ROOT

    from fer.params import apply_preset

    p = tmp_path / "params.yaml"
    p.write_text(PARAMS.read_text())
    changed = apply_preset(p, ROOT / "presets" / "paper.yaml", SCHEMA)
    after = load_params(p, SCHEMA)
    assert after["align"]["size"] == 128 and after["folds"]["n_folds"] == 10
    assert changed["baseline.arch"] == ("vgg_small", "resnet18")
    assert "# params.yaml: the one parameter file" in p.read_text()  # comments kept
    bad = tmp_path / "bad.yaml"
    bad.write_text("baseline:\n  lrr: 1\n")
    before = p.read_text()
    with pytest.raises(ParamsError, match="lrr"):
        apply_preset(p, bad, SCHEMA)
    bad.write_text("baseline:\n  epochs: many\n")
    with pytest.raises(ParamsError, match="baseline.epochs"):
        apply_preset(p, bad, SCHEMA)
    assert p.read_text() == before  # nothing written on error


@pytest.mark.parametrize("preset", sorted(p.name for p in (PARAMS.parent / "presets").glob("*.yaml")))
def test_every_preset_applies_to_the_shipped_params_and_validates(tmp_path, preset):
    """Each shipped preset names only schema keys with valid types and keeps the equal-budget
    rules (load_params checks them): applied to params.yaml, the result loads and holds every
    value the preset sets."""
    from fer.params import apply_preset

    p = tmp_path / "params.yaml"
    p.write_text(PARAMS.read_text())
    path = PARAMS.parent / "presets" / preset
    assert apply_preset(p, path, SCHEMA)
    after = load_params(p, SCHEMA)

    def leaves(d, prefix=()):
        for k, v in d.items():
            yield from leaves(v, prefix + (k,)) if isinstance(v, dict) else [(prefix + (k,), v)]

    for keys, value in leaves(yaml.safe_load(path.read_text())):
        got = after
        for k in keys:
            got = got[k]
        assert got == value, ".".join(keys)
    assert after["folds"]["n_folds"] == 10


def test_every_section_has_one_dataclass_matching_the_schema(params):
    """The dataclass of each section has exactly the schema's keys, in params.yaml order, and
    building it from params.yaml then writing it back gives the same mapping."""
    schema = yaml.safe_load(SCHEMA.read_text())
    for name, cls in SECTIONS.items():
        node = schema["properties"][name]
        if "$ref" in node:
            node = schema["$defs"][node["$ref"].split("/")[-1]]
        keys = [field_key(f.name) for f in dataclasses.fields(cls)]
        assert keys == list(params[name]), name
        assert set(keys) == set(node["properties"]) == set(node["required"]), name
        assert to_dict(section(params, name)) == params[name], name


def test_build_coerces_and_rejects(params):
    rdbp = build(RdbpParams, {"lambda": 1, "stop_gradient": False})
    assert rdbp.lambda_ == 1.0 and isinstance(rdbp.lambda_, float)  # the keyword key lambda
    assert to_dict(rdbp) == {"lambda": 1.0, "stop_gradient": False, "anchor": "class_mean"}
    with pytest.raises(ParamsError, match="unknown key rdbp.'lambda_'"):
        build(RdbpParams, {"lambda_": 1}, "rdbp")
    with pytest.raises(ParamsError, match="rdbp.anchor"):
        build(RdbpParams, {"anchor": "nearest"}, "rdbp")
    with pytest.raises(ParamsError, match="rdbp.stop_gradient must be true or false"):
        build(RdbpParams, {"stop_gradient": 1}, "rdbp")


def test_integers_are_integers():
    """``n_folds: 2.0`` used to pass the schema and the dataclass (coerced to 2) while
    common.smk did ``range(config["folds"]["n_folds"])`` on the raw 2.0 (a TypeError): an
    int field takes an int and nothing else, in the dataclasses and in the schema."""
    from fer.params import FoldsParams

    assert build(FoldsParams, {"n_folds": 3}).n_folds == 3
    for bad in (2.0, 3.5, True, "3"):
        with pytest.raises(ParamsError, match="folds.n_folds must be an integer"):
            build(FoldsParams, {"n_folds": bad}, "folds")
    assert isinstance(build(RdbpParams, {"lambda": 1}).lambda_, float)  # an int is a number


def test_declared_sections_with_a_rows_overrides(params):
    """A row may fix keys it does not declare (joint_intra: stop-gradient off), and a
    section can be read only when every key is declared or fixed."""
    keys = JOINT_ROWS["joint_intra"].keys
    view = DeclaredParams(params, keys)
    rdbp = view.section("rdbp", overrides=JOINT_ROWS["joint_intra"].rdbp)
    assert rdbp.stop_gradient is False and rdbp.lambda_ == params["rdbp"]["lambda"]
    with pytest.raises(ParamsError, match="rdbp.stop_gradient"):
        view.section("rdbp")
    static = DeclaredParams(params, JOINT_ROWS["static"].keys)
    assert static.value("joint.synth_ratio") == float(params["joint"]["synth_ratio"])
    with pytest.raises(ParamsError, match="declares only"):
        static.section("joint")
    for row in JOINT_ROWS.values():  # every declared key exists in params.yaml
        DeclaredParams(params, row.keys)


# ----------------------------------------------------------------------------- methods: the rows that run
def _with(params, **keys):
    p = copy.deepcopy(params)
    for dotted, value in keys.items():
        node = p
        *parents, last = dotted.split("__")
        for part in parents:
            node = node[part]
        node[last] = value
    return p


def test_methods_all_plans_every_row_with_the_corpus(params):
    from fer.params import ALL_ROWS, plan_rows

    plan = plan_rows(params)
    assert plan.rows == ALL_ROWS and plan.absent == {} and plan.identity == "corpus"
    params["finetune"]["start"] = "scratch"  # the corpus row has no control of its own then
    plan = plan_rows(params)
    assert plan.rows == tuple(r for r in ALL_ROWS if r != "accnn_continued")
    assert list(plan.absent) == ["accnn_continued"] and "finetune.start: accnn" in plan.absent["accnn_continued"]


@pytest.mark.parametrize(
    "methods,needle",
    [
        (["fersnet_gated"], "methods must include baseline"),
        (["baseline", "fersnet_synth"], "add fersnet_gated to methods"),
        (["baseline", "accnn_corpus", "full"], "accnn_corpus is compared with it; add accnn"),
        (["baseline", "accnn", "accnn_corpus"], "add full to methods or set clustering.embedder: baseline"),
    ],
)
def test_methods_that_cannot_run_fail_naming_the_fix(params, methods, needle):
    bad = _with(params, methods=methods)
    with pytest.raises(ParamsError, match=re.escape(needle)):
        validate_params(bad, SCHEMA)


def test_methods_schema(params):
    for bad in (["baseline", "fesgan"], [], ["baseline", "baseline"], "some"):
        with pytest.raises(ParamsError, match="methods"):
            validate_params(_with(params, methods=bad), SCHEMA)
    validate_params(_with(params, methods=["baseline", "accnn", "accnn_corpus", "accnn_continued"], clustering__embedder="baseline"),
                    SCHEMA)


def test_without_a_corpus_the_identity_network_is_per_fold_and_the_corpus_row_says_why(params):
    from fer.params import plan_rows

    p = _with(params, corpus__root="", corpus__truth="", labels__budgets=[])
    plan = plan_rows(p)
    assert plan.identity == "fold" and "accnn_corpus" not in plan.rows and "full" in plan.rows
    assert "no unlabelled data to cluster: corpus.root is ''" in plan.absent["accnn_corpus"]
    assert not plan.uses_corpus and plan.full_rows == plan.rows
    # with label budgets, the corpus row clusters each budget split's unlabelled in-domain
    # faces alone: it runs at the budgets only (nothing to cluster with all labels)
    budgets = plan_rows(_with(p, labels__budgets=[0.25]))
    assert "accnn_corpus" in budgets.rows and "accnn_corpus" not in budgets.full_rows
    assert "accnn_corpus" not in budgets.absent and "label budgets only" in budgets.budget_only["accnn_corpus"]
    assert not budgets.uses_corpus  # nothing reads or aligns a corpus
    off = plan_rows(_with(p, labels__budgets=[0.25], clustering__in_domain=False))
    assert "accnn_corpus" in off.absent and not off.budget_only
    # with a corpus the row runs with all labels too
    assert plan_rows(params).budget_only == {} and "accnn_corpus" in plan_rows(params).full_rows
    # a selection that needs no identity network trains none
    assert plan_rows(_with(p, methods=["baseline", "fersnet_single", "dgcn_none"])).identity == "none"


def test_without_subject_ids_the_pairing_rows_are_left_out_or_refused(params):
    from fer.params import SUBJECT_ROWS, plan_rows

    p = _with(params, data__format="fer2013", data__root="my/fer2013", corpus__root="my/corpus", corpus__truth="",
              folds__protocol="official")
    plan = plan_rows(p)
    assert not SUBJECT_ROWS & set(plan.rows) and "full" in plan.rows and "dgcn_none" in plan.rows
    assert "no subject ids" in plan.absent["fersnet_gated"]
    with pytest.raises(ParamsError, match="methods lists fersnet_single, which pairs images of one subject"):
        validate_params(_with(p, methods=["baseline", "fersnet_single"]), SCHEMA)
    # and without a corpus either, nothing can train an identity network
    q = _with(p, corpus__root="")
    assert "neither a face-recognition corpus" in plan_rows(q).absent["full"]
    with pytest.raises(ParamsError, match="methods lists full, which needs an identity network"):
        validate_params(_with(q, methods=["baseline", "full"]), SCHEMA)


def test_corpus_root_empty_is_valid_and_takes_no_truth(params):
    check_pipeline_params(_with(params, corpus__root="", corpus__truth=""))
    with pytest.raises(ParamsError, match="corpus.root is '' .*set corpus.truth: ''"):
        check_pipeline_params(_with(params, corpus__root=""))
