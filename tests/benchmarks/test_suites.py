"""Suite files: every packaged suite parses; mistakes are ConfigErrors naming file and line."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from nncert.benchmarks.plan import plan, root_of
from nncert.benchmarks.suites import find_suite, load_suite, packaged_suites
from nncert.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"

GOOD = """\
name = "t"
timeout = 5
eps = [0.01, 0.02]
methods = ["interval", "crown"]

[data]
source = "digits:test"
count = 3

[[models]]
name = "m"
train = "mlp"
hidden = [8]
epochs = 2
"""


def test_packaged_suites_parse():
    names = {p.stem for p in packaged_suites()}
    assert {"digits-tiny", "digits-sok", "sok-mnist"} <= names
    assert {f"vnncomp2021-{b}" for b in ("acasxu", "mnistfc", "cifar10_resnet", "oval21")} <= names
    for p in packaged_suites():
        s = load_suite(p)
        assert s.name == p.stem and s.description
    sok = load_suite("sok-mnist")
    assert sok.eps == (0.02,) and sok.timeout == 60 and sok.data.count == 100
    assert sok.data.sample == "uniform" and [m.name for m in sok.models] == ["FCNNa", "FCNNb", "CNNa"]
    assert sok.models[0].hidden == (50, 50, 50) and sok.models[1].hidden == (310,) * 4
    assert load_suite("vnncomp2021-acasxu").kind == "vnncomp"


def test_user_suite_resolves_against_its_folder(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD)
    s = load_suite(p)
    assert s.kind == "robustness" and s.p == math.inf and s.methods == ("interval", "crown")
    assert root_of(s, None) == tmp_path / "."
    (tmp_path / "other").mkdir()
    assert root_of(s, tmp_path / "other") == tmp_path / "other" / "."
    with pytest.raises(ConfigError, match="root folder .*missing does not exist"):
        root_of(s, tmp_path / "missing")


@pytest.mark.parametrize("edit,needle", [
    (lambda t: t.replace('methods = ["interval", "crown"]', 'methods = ["interval",\n "krown"]'),
     "s.toml:5: unknown method 'krown'"),
    (lambda t: t.replace("eps = [0.01, 0.02]", "eps = [0.01, 0.02"), "s.toml: malformed TOML"),
    (lambda t: t + "epochz = 3\n", "s.toml:15: unknown key 'epochz' in [[models]]"),
    (lambda t: t.replace("count = 3", 'count = 3\nsample = "random"'), "s.toml:9: data.sample"),
    (lambda t: t.replace("eps = [0.01, 0.02]", "eps = [-1]"), "s.toml:3: every eps"),
    (lambda t: t.replace("eps = [0.01, 0.02]", "eps = [0.01, 0.010]"), "s.toml:3: an eps is listed twice"),
    (lambda t: t.replace("timeout = 5", "timeout = 0"), "s.toml:2: timeout must be > 0"),
    (lambda t: t.replace('train = "mlp"', 'train = "mlp"\npath = "m.onnx"'), "exactly one of"),
    (lambda t: t.replace('train = "mlp"', 'train = "resnet"'), "unknown architecture 'resnet'"),
    (lambda t: 'kind = "bogus"\n' + t, "s.toml:1: unknown kind 'bogus'"),
])
def test_bad_suites_name_file_and_line(tmp_path, edit, needle):
    p = tmp_path / "s.toml"
    p.write_text(edit(GOOD))
    if needle is None:
        load_suite(p)
        return
    with pytest.raises(ConfigError) as e:
        load_suite(p)
    assert needle in str(e.value)


def test_malformed_toml_names_the_line(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD.replace("count = 3", "count = = 3"))
    with pytest.raises(ConfigError, match=r"s.toml: malformed TOML: .*line 8"):
        load_suite(p)


def test_unknown_suite_name_lists_the_packaged_ones():
    with pytest.raises(ConfigError, match="no suite named 'nope'.*digits-tiny"):
        find_suite("nope")


def test_missing_model_path_fails_before_running(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(GOOD.replace('train = "mlp"', 'path = "nets/m.onnx"'))
    with pytest.raises(ConfigError, match=r"model 'm': .*nets/m.onnx not found"):
        plan(load_suite(p), models_dir=tmp_path / "models")


@pytest.mark.skipif(not (SHARED / "benchmarks" / "acasxu").is_dir(), reason="needs ../shared")
def test_vnncomp_suite_plans_every_instance_with_expected():
    p = plan(load_suite("vnncomp2021-acasxu"), SHARED)
    assert len(p.works) == 186
    w = p.works[0]
    assert w.fields["expected"] in ("sat", "unsat") and w.timeout_s == 116
    assert Path(w.args[0]).is_file() and Path(w.args[1]).is_file()


def test_uniform_slice_is_deterministic_and_sorted(tmp_path):
    from nncert.benchmarks.plan import load_points

    p = tmp_path / "s.toml"
    p.write_text(GOOD.replace("count = 3", 'count = 5\nsample = "uniform"\nseed = 3'))
    s = load_suite(p)
    _, labels, idx = load_points(s, tmp_path)
    _, labels2, idx2 = load_points(s, tmp_path)
    assert idx == idx2 == sorted(idx) and len(set(idx)) == 5 and idx != list(range(5))
    assert labels.tolist() == labels2.tolist()
