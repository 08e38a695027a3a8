"""What a PEFT method is, for ``minillama.peft``: one ``MethodSpec`` beside each method.

Each method's file ends with its ``SPEC``: the options and their defaults, the checks of
those options, how to apply it, how to merge it into the weights (or why it cannot be),
and the optional abilities only some methods have. ``peft/__init__.py`` reads nothing
else, so adding a method means writing its file and listing its ``SPEC`` there.

A model records the method applied to it in ``model.peft_config``:
``{"method": name, "options": checked options, "merged": bool}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    name: str
    defaults: dict                      # every option, with its default value
    apply: Callable                     # apply(model, **options): add the trainable parts
    checks: tuple[Callable, ...] = ()   # check(model, name, options) -> options, in order
    merge: Callable | None = None       # merge(model): fold the method into the weights
    cannot_merge: str = ""              # else: why no change of the weights can express it
    unmerge: Callable | None = None     # unmerge(model): take a merge back out
    disable: Callable | None = None     # disable(model): a context manager, the base model
    set_visual: Callable | None = None  # set_visual(model, features or None)


def method_of(model) -> dict:
    """The model's ``peft_config``; a clear error if no method was applied."""
    config = getattr(model, "peft_config", None)
    if config is None:
        raise ValueError("the model has no PEFT method applied; use minillama.peft.apply first")
    return config
