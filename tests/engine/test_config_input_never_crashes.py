"""Whatever a config file or a --set value holds, mgd-train accepts it (exit 0) or refuses it
(exit 2, one line): never exit 1, never an exception. Property-based (hypothesis): YAML
documents of the schema's keys and random ones, with random values, tags, anchors and
malformed pieces, and random ``--set KEY=VALUE`` strings, run through ``main`` in-process
with ``--print-config`` (no training)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli import EXIT_INPUT, EXIT_OK, main
from engine.config import ExperimentConfig, iter_fields, loads_config, validate

DEMO = Path(__file__).resolve().parents[2] / "resources" / "presets" / "demo.yaml"
FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: each setting's default written as YAML: documents mix valid values with hostile ones
DEFAULTS = {path: yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            for path, _, value in iter_fields(ExperimentConfig())}
LEAVES = list(DEFAULTS)
SECTIONS = sorted({p.rsplit(".", 1)[0] for p in LEAVES if "." in p})
ODD_KEYS = ["granularity.heads.7.dim", "granularity.heads.x", "distiller.options.beta", "distiller.options.alpha",
            "student.schedule.milestones.0", "comparison.pairs.0.teacher", "nope", "student.nope", "", ".", "..",
            "data[0]", "student..arch", "seed.x", "0", "data.root.x"]
KEYS = st.sampled_from(LEAVES + SECTIONS + ODD_KEYS)

SCALARS = ["0", "1", "-3", "2", "7", "60", "240", "1.5", "0.01", "1e300", "-1e300", "1e-300", ".inf", "-.inf", ".nan",
           "1e999", "99999999999999999999999999", "null", "~", "", "true", "false", "off", "on", "yes", "no",
           "''", '""', "abc", "kd", "crd", "dkd", "none", "stable", "granularity", "MobileNetV2", "resnet8",
           "torchvision:resnet18", "timm:nope", "cifar100", "imagefolder", "cpu", "cuda:99", "auto", "bf16",
           "2020-01-01", "0x1F", "0o17", "1_000", "'a/b'", "'a\\\\b'", "\"a\\tb\"", "\"a\\0b\"", "\"\\ud800\"", "é",
           "/proc/self", "/sys/x", "/tmp", "/dev/null", "'" + "n" * 300 + "'", "/tmp/" + "a" * 5000]
TAGGED = ["!!int 1.5", "!!float abc", "!!float ''", "!!bool maybe", "!!timestamp 2020-13-45", "!!timestamp x",
          "!!str 1", "!!int 0x", "!!binary aGk=", "!!set {a, b}", "!!omap [a: 1]", "!!pairs [a: 1]", "!!null x",
          "!!python/object:os.system ls", "!!python/name:os.system", "!foo bar", "!!map [1]", "!!seq {a: 1}",
          "!!int " + "9" * 5000, "!!float 1e999"]
MALFORMED = ["[1, 2", "{a: [", "'unterminated", "a: b: c", "@x", "`y", "%TAG", "*undefined", "&a", "? x", "- 1",
             "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", "\t1", "|", ">"]
FLOWS = ["[]", "{}", "[1, 2]", "[150, 180, 210]", "[0.0, 0.1]", "[off, stable]", "[kd, kd]", "[0, 0]", "[]",
         "{a: 1}", "{dim: 8, temperature: 2}", "[{dim: 8, temperature: 2}]", "[{teacher: resnet20, student: resnet8}]",
         "{teacher: resnet20}", "[null]", "[[1]]", "{1: 2}", "{[1]: 2}", "{a: 1, a: 2}", "[.nan]", "[1e300]"]
VALUES = st.one_of(st.sampled_from(SCALARS), st.sampled_from(TAGGED), st.sampled_from(MALFORMED),
                   st.sampled_from(FLOWS), st.integers(-10**6, 10**6).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr),
                   st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12).map(repr))


def _render(tree: dict, indent: int = 0) -> str:
    lines = []
    for key, value in tree.items():
        pad = " " * indent
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:\n{_render(value, indent + 2)}")
        else:
            lines.append(f"{pad}{key}: {value}")
    return "\n".join(lines)


@st.composite
def documents(draw) -> str:
    """A YAML document: nested blocks of the schema's keys (and odd ones) with random values,
    sometimes with an anchor and alias, a raw line, or a key repeated."""
    tree: dict = {}
    for path in draw(st.lists(KEYS, max_size=8)):
        parts = [p for p in path.split(".") if p] or ["x"]
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        valid = path in DEFAULTS and draw(st.booleans())
        node[parts[-1]] = DEFAULTS[path] if valid else draw(VALUES)
    text = _render(tree)
    extra = draw(st.sampled_from(["", "", "", "", "", "", "\nname: again", "\nx: &a [1, 2]\ny: *a", "\n---\nname: two",
                                  "\n" + draw(st.sampled_from(MALFORMED)), "\n<<: {seed: 1}", "\n\x00"]))
    return text + extra


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _check(code: int, out: str, err: str) -> None:
    assert code in (EXIT_OK, EXIT_INPUT), err
    if code == EXIT_INPUT:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mgd-train: error:"), err
    elif out:  # what --print-config shows is itself a valid experiment
        validate(loads_config(out))


@FUZZ
@given(documents())
def test_any_experiment_file_is_accepted_or_refused_in_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "exp.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check(*_run([str(path), "--print-config"]))


@FUZZ
@given(st.lists(st.tuples(st.one_of(KEYS, st.text(max_size=10)), VALUES), min_size=1, max_size=4))
def test_any_set_value_is_accepted_or_refused_in_one_line(assignments):
    argv = [str(DEMO)]
    for key, value in assignments:
        argv.append(f"--set={key}={value}")
    _check(*_run(argv + ["--print-config"]))


@FUZZ
@given(st.text(max_size=60))
def test_any_text_is_accepted_or_refused_in_one_line(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "exp.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _check(*_run([str(path), "--print-config"]))
