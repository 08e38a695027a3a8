"""The profile table (``minillama/profiles.py``): the full column grows every training
chapter's model at least 10x, and its code paths run, here on the CPU for a step or two
(steps and sizes overridden by arguments, the table untouched), so they cannot rot
between GPU leases. The chapters' CPU column is checked by their committed notebooks."""

import math

import pytest
import torch

from minillama import live, profiles
from minillama.config import CONFIGS, LlamaConfig
from minillama.model import Llama
from minillama.recipes import RECIPES, get_recipe
from minillama.tasks import bench, corpus_data, stories_data
from minillama.train import TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")      # conftest.py

TINY_BASE = dict(steps=2, batch_size=2, warmup=1, eval_every=1, eval_batches=1, log_every=1,
                 progress=False)


def n_params(cfg: LlamaConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in Llama(cfg).parameters())


def moe_configs(s, vocab_size: int) -> tuple[LlamaConfig, LlamaConfig]:
    """Chapter 6's dense and MoE models from its settings (as the notebook builds them)."""
    common = dict(dim=s.dim, n_layers=s.n_layers, n_heads=4, n_kv_heads=2,
                  vocab_size=vocab_size, max_seq_len=s.seq_len)
    return (LlamaConfig(hidden_dim=s.hidden_dim, name="dense", **common),
            LlamaConfig(hidden_dim=s.hidden_dim, n_experts=s.n_experts,
                        expert_dim=s.hidden_dim // 2, router_aux_coef=0.01, name="moe",
                        **common))


def trained_model(chapter: str, profile: str) -> LlamaConfig:
    """The largest model the chapter trains in that profile."""
    if chapter in profiles.PEFT_CHAPTERS:        # they fine-tune the benchmark's base
        return RECIPES[profiles.settings("bench", profile).base].model
    s = profiles.settings(chapter, profile)
    if chapter == "ch06":
        return moe_configs(s, 512)[1]
    return RECIPES[s.recipe].model


@pytest.mark.parametrize("chapter", ["ch05", "ch06", *profiles.PEFT_CHAPTERS])
def test_full_profile_trains_at_least_ten_times_the_cpu_parameters(chapter):
    cpu, full = (n_params(trained_model(chapter, p)) for p in profiles.PROFILE_NAMES)
    assert full >= 10 * cpu, (chapter, cpu, full)


def test_the_full_size_is_about_32m_parameters_and_12x_the_stories_reference():
    n = n_params(CONFIGS["full"])
    assert n == 31_992_320 and n >= 10 * n_params(RECIPES["stories"].model)
    assert RECIPES["stories-full"].model.replace(name="full") == CONFIGS["full"]
    assert RECIPES["peft-base-full"].model.replace(name="full") == CONFIGS["full"]


def test_the_full_base_trains_on_the_reference_bases_skill_records():
    """So the benchmark's unseen problems (bench._unseen) are unseen by either base."""
    cpu, full = RECIPES["peft-base"].task, RECIPES["peft-base-full"].task
    assert (full.tokenizer_from, full.n_tasks, full.seed, full.families) == \
        (cpu.tokenizer_from, cpu.n_tasks, cpu.seed, cpu.families)


def test_cpu_column_is_the_benchmarks_shipped_sizes():
    s = profiles.settings("bench", "cpu")
    assert (s.n_train, s.n_val, s.n_test, s.n_base, s.steps, s.batch, s.warmup) == \
        (2400, 300, 500, 1000, 150, 16, 15)
    assert (bench.N_TRAIN, bench.N_TEST, bench.STEPS) == (2400, 500, 150)
    full = profiles.settings("ch12", "full")           # a PEFT chapter reads "bench" ...
    assert full.n_test >= 1000 and full == profiles.settings("bench", "full")
    assert profiles.settings("ch09", "cpu") == profiles.TABLE["ch09"]["cpu"]   # ... or its own


@pytest.mark.parametrize("args, message", [
    (("ch99", "cpu"), "no profile settings for 'ch99'"),
    (("ch05", "gpu"), "unknown profile 'gpu'"),
    (("ch05", "full", {"stepz": 2}), r"ch05: unknown setting\(s\) \['stepz'\]"),
])
def test_settings_refuse_unknown_names(args, message):
    chapter, profile, *over = args
    with pytest.raises(ValueError, match=message):
        profiles.settings(chapter, profile, **(over[0] if over else {}))


def test_settings_override_without_touching_the_table():
    s = profiles.settings("ch05", "full", steps=2)
    assert s.steps == 2 and profiles.TABLE["ch05"]["full"]["steps"] == 4000
    with pytest.raises(AttributeError, match="no setting 'nope'"):
        s.__getattr__("nope")


def test_ch05_full_path_trains_the_full_recipe(device):
    s = profiles.settings("ch05", "full", steps=2, log_every=1, n_train=60, n_val=20)
    recipe = get_recipe(s.recipe, steps=s.steps, eval_every=s.eval_every,
                        log_every=s.log_every, progress=False, batch_size=2, eval_batches=1,
                        warmup=1)
    tok, train_data, val_data = stories_data(n_train=s.n_train, n_val=s.n_val)
    model = Llama(recipe.model)
    log = train(model, train_data, recipe.train, val_data=val_data, device=device)
    assert n_params(recipe.model) == n_params(CONFIGS["full"])
    assert len(log) == 2 and math.isfinite(log[-1]["val_loss"])


def test_ch06_full_path_trains_dense_and_moe(device):
    s = profiles.settings("ch06", "full", steps=1, n_train=40, n_val=20)
    tok, train_data, val_data = stories_data(n_train=s.n_train, n_val=s.n_val)
    tc = TrainConfig(steps=s.steps, batch_size=2, seq_len=s.seq_len, lr=s.lr, warmup=0,
                     eval_every=s.eval_every, eval_batches=1, log_every=1, progress=False)
    for cfg in moe_configs(s, tok.vocab_size):
        log = train(Llama(cfg), train_data, tc, val_data=val_data, device=device)
        assert math.isfinite(log[-1]["val_loss"])


@pytest.fixture
def full_bench(tmp_path, device):
    """The full profile's benchmark at a few steps and records, cached in ``tmp_path``;
    the CPU profile is selected again afterwards (the module's state is per process)."""
    sizes = dict(n_train=16, n_val=4, n_test=6, n_base=4, steps=2, batch=2, warmup=1,
                 base_problems=4)
    yield lambda: bench.base("full", device, cache=tmp_path, base_train=TINY_BASE, **sizes)
    bench.base("cpu")


def test_full_bench_trains_its_base_once_and_sweeps_on_it(full_bench, tmp_path, monkeypatch,
                                                          device):
    model, tok, card = full_bench()
    assert (card["recipe"], card["steps"], card["parameters"]) == \
        ("peft-base-full", 2, n_params(CONFIGS["full"]))
    assert "task_accuracy_plain" in card and bench.PROFILE == "full"
    assert (len(bench.test_records()), len(bench.val_records()), bench.STEPS) == (6, 4, 2)

    def no_training(*a, **k):
        raise AssertionError("the cached base was trained again")
    monkeypatch.setattr(live, "train_recipe", no_training)
    again, _, card2 = full_bench()                       # the cached base, checked
    assert card2 == card
    assert torch.equal(again.tok_embeddings.weight, model.tok_embeddings.weight)

    qlora = bench.method("qlora")                        # sweeps its parent, LoRA q,v
    swept = bench.swept_lrs()
    assert qlora.lr == swept["lora-qv"] == swept["qlora"] and qlora.lr in bench.SWEEP["lora-qv"]
    assert not list(bench.ADAPTER_DIR.glob("sweep-*"))   # nothing written beside the shipped
    model, tok, log, _ = bench.run(bench.method("lora-qv"), device=device)
    fig = bench.measure(model, tok, device=device)
    assert len(log) == 2 and fig["n"] == 6
    assert set(bench.card_figures(fig)) >= {"forgetting", "test_exact_match"}
    bench.base("cpu")
    assert bench.PROFILE == "cpu" and len(bench.test_records()) == 500


@pytest.mark.parametrize("sep", ["<|endoftext|>", "\n\n"])
def test_a_user_corpus_splits_into_documents_and_trains_a_tokenizer(tmp_path, sep):
    docs = [f"Story {i}: the cat sat on mat number {i}." for i in range(12)]
    path = tmp_path / "corpus.txt"
    path.write_text(sep.join(docs) + sep)
    tok, train_data, val_data = corpus_data(path, n_train=10, n_val=2, vocab_size=300)
    assert tok.decode(val_data.tolist(), skip_special=True) == "".join(docs[10:])
    assert (train_data == tok.bos_id).sum() == 10 and (val_data == tok.eos_id).sum() == 2


def test_a_bad_corpus_is_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="MINILLAMA_CORPUS='.*nope.txt': no such file"):
        corpus_data(tmp_path / "nope.txt", n_train=1, n_val=1)
    (tmp_path / "short.txt").write_text("one story\n\nanother")
    with pytest.raises(ValueError, match="2 documents, 5 needed"):
        corpus_data(tmp_path / "short.txt", n_train=4, n_val=1)


def test_smoke_sizes_apply_to_the_full_column_only(monkeypatch):
    monkeypatch.setenv(profiles.SMOKE_ENV, "1")
    assert profiles.settings("ch05", "full").steps == 2
    assert profiles.settings("ch05", "cpu").steps == 300
    assert profiles.settings("ch08", "full").steps == 2      # the bench row
    assert all(set(row.get("smoke", {})) <= set(row["full"]) for row in profiles.TABLE.values())
    monkeypatch.setenv(profiles.SMOKE_ENV, "0")
    assert profiles.settings("ch05", "full").steps == 4000
