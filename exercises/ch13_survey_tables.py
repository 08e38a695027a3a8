# GENERATED from solutions/ch13_survey_tables.py
# by scripts/make_exercises.py (`make exercises`). Maintainers: edit the solution,
# not this file; `make test` checks the two agree.
#
# Exercise: replace every `raise NotImplementedError("exercise: ...")` below with your
# own code (the docstring above it states the task), then grade your work:
#
#     python -m pytest tests/test_exercises_ch13.py --impl=exercises
#
# To keep this folder pristine, copy it (e.g. to my_exercises/) and grade that copy
# with --impl=my_exercises instead.
"""Chapter 13 exercises: the survey's Table 2 parameter counts, in closed form.

The survey (Abdulla et al., arXiv 2510.12178) quotes one trainable-parameter count per
PEFT method. Each is a short formula in the shapes of a ``LlamaConfig`` (D = ``dim``,
L = ``n_layers``, H = ``n_heads``, hd = ``head_dim``, KV = ``n_kv_heads``,
F = ``ffn_dim``). The seven linears of a block map d_in -> d_out features:

    wq D -> H hd    wk, wv D -> KV hd    wo H hd -> D    w1, w3 D -> F    w2 F -> D

* LoRA (arXiv 2106.09685): r (d_in + d_out) per adapted matrix, in every block.
* LLaMA-Adapter V1 (arXiv 2303.16199): in each of the top ``layers`` blocks, K prompts
  of D values and a gate, one per head (``gate="tanh"``) or a single one (``"scalar"``).
* LLaMA-Adapter V2 (arXiv 2304.15010): a scale (d_in) and a bias (d_out) on all seven
  linears of every block, the block's two norms and the final norm trainable (D each),
  plus V1's prompts and per-head gates in the top ``layers`` blocks.
* LLaMA-Excitor (arXiv 2404.00913): in each of the top ``layers`` blocks, K prompts
  (D each), a low-rank excitor query W_up W_down (2 D r) and one gate per head.

The graders compare your counts with ``minillama.peft.trainable_parameters`` of
``minillama.peft.apply(Llama(cfg), method, ...)`` built on the meta device.
"""

from minillama.config import LlamaConfig


def linear_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, int]]:
    """{name: (d_out, d_in)} for the seven linears of a block, the shapes of their weights
    (``nn.Linear(d_in, d_out).weight`` is d_out x d_in). Use ``cfg.head_dim``,
    ``cfg.n_kv_heads`` and ``cfg.ffn_dim`` (which already applies ``hidden_dim``,
    ``multiple_of`` and ``ffn_dim_multiplier``)."""
    raise NotImplementedError("exercise: linear_shapes")


def lora_parameters(cfg: LlamaConfig, r: int, targets=("wq", "wv")) -> int:
    """Trainable parameters of LoRA of rank r on ``targets`` (names of the seven linears)
    in every block."""
    raise NotImplementedError("exercise: lora_parameters")


def adapter_v1_parameters(cfg: LlamaConfig, prompt_len: int = 10, layers: int = 30,
                          gate: str = "tanh") -> int:
    """Trainable parameters of LLaMA-Adapter V1: prompts and gates in the top ``layers``."""
    raise NotImplementedError("exercise: adapter_v1_parameters")


def adapter_v2_parameters(cfg: LlamaConfig, prompt_len: int = 10, layers: int = 30) -> int:
    """Trainable parameters of LLaMA-Adapter V2 (text only): bias and scale on every
    linear, the norms, and V1's prompts with per-head gates in the top ``layers``."""
    raise NotImplementedError("exercise: adapter_v2_parameters")


def excitor_parameters(cfg: LlamaConfig, prompt_len: int = 30, layers: int = 30,
                       rank: int = 16) -> int:
    """Trainable parameters of LLaMA-Excitor (text only) in the top ``layers`` blocks."""
    raise NotImplementedError("exercise: excitor_parameters")
