"""pyproject.toml, environment.yml and the Makefile describe the same environment.

environment.yml is read with a small parser for the plain subset conda files use (no
PyYAML needed); where PyYAML is installed, the parser is checked against it.
"""

import os
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:          # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = ["LlamaConfig", "CONFIGS", "Llama", "count_parameters", "load", "save",
          "load_tokenizer", "apply_chat_template"]


def read_simple_yaml(text: str) -> dict:
    """Mappings of scalars and lists, lists of scalars and one-key mappings of lists:
    enough for an environment.yml. Raises ValueError on anything else."""
    root: dict = {}
    stack = [(-1, root)]            # (indentation, container) of the open blocks
    pending = None                  # (indentation, dict, key) whose value is a block
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if pending is not None:
            p_indent, p_dict, p_key = pending
            if indent <= p_indent:
                raise ValueError(f"line {lineno}: {p_key!r} has no value")
            p_dict[p_key] = [] if body.startswith("- ") else {}
            stack.append((indent, p_dict[p_key]))
            pending = None
        while indent < stack[-1][0]:
            stack.pop()
        if indent != stack[-1][0] and stack[-1][0] != -1:
            raise ValueError(f"line {lineno}: unexpected indentation: {raw!r}")
        container = stack[-1][1]
        item = body[2:].strip() if body.startswith("- ") else None
        if item is not None:
            if not isinstance(container, list):
                raise ValueError(f"line {lineno}: list item outside a list: {raw!r}")
            if re.fullmatch(r"[\w.-]+:", item):          # "- pip:" opens a one-key mapping
                entry = {item[:-1]: None}
                container.append(entry)
                pending = (indent, entry, item[:-1])
            else:
                container.append(item)
            continue
        m = re.fullmatch(r"([\w.-]+):(?:\s+(.*))?", body)
        if m is None or not isinstance(container, dict):
            raise ValueError(f"line {lineno}: cannot read {raw!r}")
        if m[2]:
            container[m[1]] = m[2]
        else:
            pending = (indent, container, m[1])
    if pending is not None:
        raise ValueError(f"{pending[2]!r} has no value")
    return root


@pytest.fixture(scope="module")
def pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def env():
    return read_simple_yaml((ROOT / "environment.yml").read_text(encoding="utf-8"))


def conda_and_pip(env) -> tuple[list[str], list[str]]:
    conda, pip = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip") or []
        else:
            conda.append(dep)
    return conda, pip


def test_reader_agrees_with_pyyaml(env):
    yaml = pytest.importorskip("yaml")
    assert env == yaml.safe_load((ROOT / "environment.yml").read_text(encoding="utf-8"))


def test_reader_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="cannot read"):
        read_simple_yaml("name: x\n{flow: style}\n")
    with pytest.raises(ValueError, match="has no value"):
        read_simple_yaml("dependencies:\n")


def test_environment_names_the_env_and_python(env, pyproject):
    assert env["name"] == "minillama"
    conda, _ = conda_and_pip(env)
    python = [d for d in conda if re.fullmatch(r"python\s*=+\s*[\d.]+", d)]
    assert len(python) == 1, f"environment.yml needs one python=X.Y line, has {conda}"
    version = python[0].split("=")[-1]
    allowed = SpecifierSet(pyproject["project"]["requires-python"])
    assert allowed.contains(version + ".0"), f"python {version} vs requires-python {allowed}"
    assert "pip" in conda


def test_ruff_targets_the_oldest_allowed_python(pyproject):
    oldest = re.search(r">=\s*3\.(\d+)", pyproject["project"]["requires-python"])[1]
    assert pyproject["tool"]["ruff"]["target-version"] == f"py3{oldest}"


def test_every_dependency_reaches_the_environment(env, pyproject):
    runtime = [Requirement(r) for r in pyproject["project"]["dependencies"]]
    extras = pyproject["project"]["optional-dependencies"]
    _, pip = conda_and_pip(env)
    covered = set()
    for line in pip:
        m = re.fullmatch(r"(?:-e\s+)?\.(?:\[([\w,\s-]+)\])?", line)
        if m:                                       # this project, with some extras
            covered |= {canonicalize_name(r.name) for r in runtime}
            for extra in (m[1] or "").split(","):
                if extra.strip():
                    assert extra.strip() in extras, f"unknown extra {extra!r} in {line!r}"
                    covered |= {canonicalize_name(Requirement(r).name)
                                for r in extras[extra.strip()]}
        else:
            covered.add(canonicalize_name(Requirement(line).name))
    wanted = {canonicalize_name(r.name) for r in runtime}
    wanted |= {canonicalize_name(Requirement(r).name) for r in extras["dev"]}
    assert wanted - covered == set(), "missing from environment.yml"


def test_pins_satisfy_pyproject(env, pyproject):
    declared = {canonicalize_name(r.name): r.specifier for r in
                map(Requirement, pyproject["project"]["dependencies"])}
    _, pip = conda_and_pip(env)
    for line in pip:
        if line.startswith(("-", ".")):
            continue
        req = Requirement(line)
        pinned = [s.version for s in req.specifier if s.operator == "=="]
        name = canonicalize_name(req.name)
        if pinned and name in declared:
            assert declared[name].contains(pinned[0]), f"{line} vs pyproject {declared[name]}"


def test_makefile_and_environment_pin_the_same_torch(env):
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    m = re.search(r"^TORCH_SPEC\s*\?=\s*(\S+)\s*$", makefile, re.M)
    assert m, "Makefile has no TORCH_SPEC ?= line"
    _, pip = conda_and_pip(env)
    torch_lines = [p for p in pip if canonicalize_name(re.split(r"[=<>!~\[ ]", p)[0]) == "torch"]
    assert torch_lines == [m[1]]
    assert pip.index(torch_lines[0]) < len(pip) - 1, "torch must come before the project"


def test_ci_script_runs_make_test():
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text and re.search(r"^make test$", text, re.M)


def test_public_names():
    import torch

    import minillama

    missing = [n for n in PUBLIC if not hasattr(minillama, n)]
    assert not missing, f"minillama lacks {missing}"
    assert set(PUBLIC) <= set(minillama.__all__)
    assert isinstance(minillama.LlamaConfig, type)
    assert issubclass(minillama.Llama, torch.nn.Module)
    assert minillama.CONFIGS and all(isinstance(c, minillama.LlamaConfig)
                                     for c in minillama.CONFIGS.values())
    assert all(callable(getattr(minillama, n)) for n in ("count_parameters", "load", "save",
                                                         "load_tokenizer",
                                                         "apply_chat_template"))


def test_readme_library_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's "library in six lines" runs on a fresh clone (no ../shared needed)."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## The library in six lines", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("Once upon a time") and len(out) > len("Once upon a time") + 20
