"""Graders for chapter 13 (the survey's Table 2: trainable parameters in closed form).

    python -m pytest tests/test_exercises_ch13.py                    # the reference answers
    python -m pytest tests/test_exercises_ch13.py --impl=exercises   # your work

Each count of ``<impl>/ch13_survey_tables.py`` is compared with the parameters that
``minillama.peft.apply`` really marks trainable (``requires_grad``) on a model built on
the meta device (shapes only), for several LLaMA shapes.
"""

import pytest
import torch

from minillama import CONFIGS, Llama, LlamaConfig
from minillama import peft as P

CH13 = "ch13_survey_tables"

TINY = LlamaConfig(dim=48, n_layers=4, n_heads=6, n_kv_heads=2, vocab_size=100,
                   hidden_dim=100)
SHAPES = {"llama1-7b": CONFIGS["llama1-7b"], "llama3-8b": CONFIGS["llama3-8b"],  # GQA
          "tiny-gqa": TINY}


def counted(cfg, method, **options) -> int:
    """Values with ``requires_grad`` after ``apply`` (what the optimiser would train)."""
    with torch.device("meta"):
        model = P.apply(Llama(cfg), method, **options)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", [*SHAPES, "llama2-70b", "llama3.1-405b"])
def test_ch13_linear_shapes(impl, name):
    cfg = SHAPES.get(name) or CONFIGS[name]
    with torch.device("meta"):
        block = Llama(cfg.replace(n_layers=1)).layers[0]
    expected = {k: tuple(getattr(part, k).weight.shape)
                for part in (block.attention, block.feed_forward)
                for k in P.lora.TARGETS if hasattr(part, k)}
    got = impl(CH13).linear_shapes(cfg)
    assert {k: tuple(v) for k, v in got.items()} == expected


def test_ch13_lora_parameters_on_llama7b_is_the_papers_figure(impl):
    assert impl(CH13).lora_parameters(CONFIGS["llama1-7b"], 8, ("wq", "wv")) == 4_194_304


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("r, targets", [(8, ("wq", "wv")), (4, ("wk", "wo")),
                                        (2, ("w1", "w2", "w3")), (16, P.lora.TARGETS)])
def test_ch13_lora_parameters(impl, name, r, targets):
    cfg = SHAPES[name]
    assert impl(CH13).lora_parameters(cfg, r, targets) == \
        counted(cfg, "lora", r=r, targets=targets)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("prompt_len, layers, gate", [(10, 3, "tanh"), (7, 2, "scalar"),
                                                      (1, 1, "tanh")])
def test_ch13_adapter_v1_parameters(impl, name, prompt_len, layers, gate):
    cfg = SHAPES[name]
    assert impl(CH13).adapter_v1_parameters(cfg, prompt_len, layers, gate) == \
        counted(cfg, "adapter_v1", prompt_len=prompt_len, layers=layers, gate=gate)


def test_ch13_adapter_v1_and_v2_on_llama7b_are_the_papers_figures(impl):
    cfg = CONFIGS["llama1-7b"]
    assert impl(CH13).adapter_v1_parameters(cfg, 10, 30) == 1_229_760
    assert impl(CH13).adapter_v2_parameters(cfg, 10, 30) == 3_994_560   # 2,764,800 + V1


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("prompt_len, layers", [(10, 4), (3, 1)])
def test_ch13_adapter_v2_parameters(impl, name, prompt_len, layers):
    cfg = SHAPES[name]
    assert impl(CH13).adapter_v2_parameters(cfg, prompt_len, layers) == \
        counted(cfg, "adapter_v2", prompt_len=prompt_len, layers=layers)


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("prompt_len, layers, rank", [(30, 4, 16), (5, 2, 3)])
def test_ch13_excitor_parameters(impl, name, prompt_len, layers, rank):
    cfg = SHAPES[name]
    assert impl(CH13).excitor_parameters(cfg, prompt_len, layers, rank) == \
        counted(cfg, "excitor", prompt_len=prompt_len, layers=layers, rank=rank)


def test_ch13_excitor_on_llama7b_is_the_libraries_figure(impl):
    assert impl(CH13).excitor_parameters(CONFIGS["llama1-7b"], 30, 30, 16) == 7_619_520
