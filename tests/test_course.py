"""minillama.course: the profile, device and seed every chapter starts with, and the
grader cell every chapter with exercises ends with."""

import random
import re
from pathlib import Path

import numpy
import pytest
import torch

from minillama import course

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cuda(monkeypatch):
    """``cuda(True)`` makes torch report a GPU (none is touched), ``cuda(False)`` none."""
    def set_available(available: bool):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    return set_available


@pytest.mark.parametrize("value", ["cpu", "full", " cpu ", "full\n"])
def test_profile_from_the_environment(monkeypatch, cuda, value):
    cuda(False)
    monkeypatch.setenv("MINILLAMA_PROFILE", value)
    assert course.profile() == value.strip()


@pytest.mark.parametrize("available, expected", [(True, "full"), (False, "cpu")])
@pytest.mark.parametrize("unset", [None, "", "  "])
def test_profile_default_is_full_on_cuda_else_cpu(monkeypatch, cuda, available, expected,
                                                   unset):
    cuda(available)
    if unset is None:
        monkeypatch.delenv("MINILLAMA_PROFILE", raising=False)
    else:
        monkeypatch.setenv("MINILLAMA_PROFILE", unset)
    assert course.profile() == expected


@pytest.mark.parametrize("value", ["gpu", "CPU", "Full", "cuda", "cpu,full"])
def test_profile_refuses_other_values(monkeypatch, value):
    monkeypatch.setenv("MINILLAMA_PROFILE", value)
    with pytest.raises(ValueError, match=re.escape(f"MINILLAMA_PROFILE={value!r}: expected "
                                                   "'cpu' or 'full'")):
        course.profile()
    with pytest.raises(ValueError, match="MINILLAMA_PROFILE"):
        course.setup()


@pytest.mark.parametrize("profile, available, expected", [
    ("cpu", False, "cpu"), ("cpu", True, "cpu"),        # cpu stays on the CPU, GPU or not
    ("full", True, "cuda"), ("full", False, "cpu"),     # full without a GPU: CPU, full sizes
])
def test_device(monkeypatch, cuda, profile, available, expected):
    cuda(available)
    assert course.device(profile) == expected
    monkeypatch.setenv("MINILLAMA_PROFILE", profile)
    assert course.device() == expected
    assert course.setup() == (profile, expected)


def test_device_refuses_an_unknown_profile():
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        course.device("gpu")


def draws():
    return random.random(), numpy.random.rand(), torch.rand(3).tolist()


def test_seed_everything_seeds_python_numpy_and_torch():
    course.seed_everything(123)
    first = draws()
    course.seed_everything(123)
    assert draws() == first
    course.seed_everything(124)
    assert draws() != first


def test_setup_seeds_unless_told_not_to(monkeypatch, cuda):
    cuda(False)
    monkeypatch.setenv("MINILLAMA_PROFILE", "cpu")
    PROFILE, DEVICE = course.setup()
    assert (PROFILE, DEVICE) == ("cpu", "cpu") and course.setup().profile == "cpu"
    course.setup(seed=7)
    first = draws()
    course.setup(seed=7)
    assert draws() == first
    course.setup(seed=7)
    draws()
    course.setup(seed=None)          # leaves the generators where they are
    assert draws() != first


@pytest.mark.parametrize("chapter", [1, "1", "01", "ch1", "ch01", "ch01_anatomy"])
def test_chapter_id(chapter):
    assert course.chapter_id(chapter) == "ch01"
    assert course.chapter_id(15) == course.chapter_id("ch15_instruction_tuning") == "ch15"


@pytest.mark.parametrize("chapter", ["", "chapter1", "ch", "ch123", "anatomy", 1.5])
def test_chapter_id_refuses_what_is_not_a_chapter(chapter):
    with pytest.raises(ValueError, match="not a chapter"):
        course.chapter_id(chapter)


def fake_repo(tmp_path: Path) -> Path:
    """A repository with one grader file for chapter 99 that passes only for the
    reference answers (``--impl=solutions``), like a chapter's graders on the stubs."""
    tests = tmp_path / "repo" / "tests"
    tests.mkdir(parents=True)
    (tests / "conftest.py").write_text(
        "def pytest_addoption(parser):\n"
        "    parser.addoption('--impl', default='solutions')\n")
    (tests / "test_exercises_ch99.py").write_text(
        "def test_ch99_a(request):\n"
        "    assert request.config.getoption('--impl') == 'solutions'\n\n"
        "def test_ch99_b():\n"
        "    pass\n")
    (tmp_path / "repo" / "notebooks").mkdir()
    return tmp_path / "repo"


def test_grade_runs_the_chapter_file_and_prints_the_summary(tmp_path, capsys):
    repo = fake_repo(tmp_path)
    result = course.grade("ch99", root=repo)
    assert result.returncode == 0
    assert re.fullmatch(r"2 passed in [\d.]+s\n", capsys.readouterr().out)

    result = course.grade(99, impl="exercises", root=repo)
    assert result.returncode == 1
    assert re.fullmatch(r"1 failed, 1 passed in [\d.]+s\n", capsys.readouterr().out)


def test_grade_finds_the_repository_from_the_notebooks_folder(tmp_path, monkeypatch, capsys):
    repo = fake_repo(tmp_path)
    monkeypatch.chdir(repo / "notebooks")        # where a chapter notebook runs
    assert course.grade("ch99_fake", echo=False).returncode == 0
    assert capsys.readouterr().out == ""
    monkeypatch.chdir(repo)                      # or from the root itself
    assert course.find_root("tests/test_exercises_ch99.py") == repo.resolve()


def test_grade_without_graders_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="tests/test_exercises_ch42.py not found"):
        course.grade(42, root=tmp_path)


def test_run_tests_shows_why_pytest_stopped_before_testing(tmp_path, capsys):
    repo = fake_repo(tmp_path)
    result = course.run_tests("tests/test_exercises_ch99.py", "--no-such-option", root=repo)
    assert result.returncode == 4                 # usage error: the message is on stderr
    assert "unrecognized arguments: --no-such-option" in capsys.readouterr().out


@pytest.mark.slow
def test_grade_a_real_chapter(capsys, monkeypatch):
    monkeypatch.chdir(ROOT / "notebooks")
    assert course.grade("ch03").returncode == 0
    assert re.fullmatch(r"5 passed in [\d.]+s\n", capsys.readouterr().out)
    assert course.grade("ch03", impl="exercises").returncode == 1   # the stubs raise
    assert re.fullmatch(r"5 failed in [\d.]+s\n", capsys.readouterr().out)


def test_every_grader_file_is_a_chapter_course_grade_can_run():
    for path in sorted((ROOT / "tests").glob("test_exercises*.py")):
        assert re.fullmatch(r"test_exercises_ch\d\d\.py", path.name), path.name
        chapter = path.stem.removeprefix("test_exercises_")
        assert course.find_root(f"tests/test_exercises_{course.chapter_id(chapter)}.py",
                                ROOT) == ROOT
