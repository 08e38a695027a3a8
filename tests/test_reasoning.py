"""Reasoning helpers: sampling and voting, ToT BFS, GoT operations, Game of 24, GoT sorting."""

import random

import pytest
import torch

from minillama import Llama, LlamaConfig
from minillama.reasoning import (
    aggregate,
    ancestors,
    generate,
    greedy_cot,
    improve,
    keep_best,
    majority_vote,
    sample,
    score,
    self_consistency,
    thoughts,
    tot_bfs,
)
from minillama.reasoning import game24 as G
from minillama.reasoning import sorting as S
from minillama.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Llama(LlamaConfig(dim=32, n_layers=2, n_heads=4, vocab_size=TOK.vocab_size,
                             multiple_of=16, max_seq_len=64)).eval()


class ScriptedModel:
    """Stands in for a Llama in ``sample``: each prompt row gets the next scripted text."""

    def __init__(self, script: dict[str, list[str]], max_seq_len=64):
        self.script, self.calls = script, {}
        self.cfg = LlamaConfig(dim=8, n_layers=1, n_heads=1, max_seq_len=max_seq_len)
        self.tok_embeddings = torch.nn.Embedding(1, 1)

    def generate(self, tokens, max_new_tokens, stop_tokens=(), **kwargs):
        rows = []
        for ids in tokens.tolist():
            prompt = TOK.decode(ids, skip_special=True)
            k = self.calls.get(prompt, 0)
            self.calls[prompt] = k + 1
            new = TOK.encode(self.script[prompt][k]) + [TOK.eos_id]
            rows.append(new + [TOK.eos_id] * (max_new_tokens - len(new)))
        return torch.tensor(rows)


# ----------------------------------------------------------------------------- voting
def test_majority_vote_ties_go_to_the_answer_sampled_first():
    # "3" and "5" both have 2 votes; "3" was sampled first.  Share 2 / 6 (None counts in N).
    assert majority_vote(["3", "5", "3", "5", None, "7"]) == ("3", 2 / 6)
    assert majority_vote(["5", "3", "3", "5"]) == ("5", 0.5)
    assert majority_vote([None, "8", None]) == ("8", 1 / 3)
    assert majority_vote([None, None]) == (None, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        majority_vote([])


def test_self_consistency_votes_over_extracted_answers_per_prompt():
    script = {
        "Q: a\nS: ": ["1+1=2 #### 2", "1*2=3 #### 3", "x #### 2", "no answer", "#### 3"],
        "Q: bb\nS: ": ["#### 7"] * 5,                                    # another length
        "Q: c\nS: ": ["#### 4", "#### 9", "#### 9", "#### 4", "#### 1"],  # a 2-2 tie
    }
    model = ScriptedModel(script)
    out = self_consistency(model, TOK, list(script), n=5, temperature=1.0, max_new_tokens=16)
    assert [o["answer"] for o in out] == ["2", "7", "4"]
    assert [o["share"] for o in out] == [0.4, 1.0, 0.4]
    assert out[0]["answers"] == ["2", "3", "2", "no answer", "3"]
    # "no answer" is read as the answer "no answer" (no ####): one vote, not the winner
    assert out[0]["samples"][0] == "1+1=2 #### 2"
    single = self_consistency(ScriptedModel(script), TOK, "Q: bb\nS: ", n=5)
    assert single["answer"] == "7" and single["share"] == 1.0
    greedy = greedy_cot(ScriptedModel(script), TOK, ["Q: a\nS: ", "Q: c\nS: "])
    assert greedy == [{"text": "1+1=2 #### 2", "answer": "2"}, {"text": "#### 4", "answer": "4"}]


def test_sample_is_seeded_batched_and_greedy_at_temperature_zero(one_thread):
    model = tiny_model()
    prompts = ["Q: 1+2=\nA: ", "Q: 10+20=\nA: ", "Q: 3+4=\nA: "]
    a = sample(model, TOK, prompts, n=4, temperature=1.0, max_new_tokens=6, seed=3)
    b = sample(model, TOK, prompts, n=4, temperature=1.0, max_new_tokens=6, seed=3)
    assert a == b and [len(x) for x in a] == [4, 4, 4]
    assert len({s for x in a for s in x}) > 4                     # T = 1 really samples
    greedy = sample(model, TOK, prompts, n=3, temperature=0.0, max_new_tokens=6)
    for prompt, outs in zip(prompts, greedy):
        assert len(set(outs)) == 1                                 # every row the same
        ids = model.generate(torch.tensor(TOK.encode(prompt, bos=True)), 6,
                             stop_tokens=[TOK.eos_id]).tolist()
        ids = ids[:ids.index(TOK.eos_id)] if TOK.eos_id in ids else ids
        assert outs[0] == TOK.decode(ids, skip_special=True)      # = one prompt alone
    one_row_calls = sample(model, TOK, prompts, n=3, temperature=0.0, max_new_tokens=6,
                           batch_size=1)
    assert one_row_calls == greedy                                 # batching changes nothing
    room = 64 - len(TOK.encode(prompts[0], bos=True))             # what the context allows
    assert sample(model, TOK, prompts[0], n=2, temperature=0.0, max_new_tokens=500) == \
        sample(model, TOK, prompts[0], n=2, temperature=0.0, max_new_tokens=room)
    with pytest.raises(ValueError, match="max_seq_len"):
        sample(model, TOK, "x" * 70, n=1)


# ----------------------------------------------------------------------------- ToT BFS
TREE = {"root": ["A", "B"], "A": ["A1"], "B": ["B1"], "A1": [], "B1": []}
VALUE = {"A": 0.9, "B": 0.5, "A1": 0.2, "B1": 0.8}


def test_tot_bfs_keeps_the_best_b_per_step():
    # breadth 1 follows the greedy value: A (0.9) then its only child A1 (0.2): misses B1.
    narrow = tot_bfs("root", TREE.get, VALUE.get, breadth=1, depth=2)
    assert narrow["best"] == "A1" and narrow["levels"] == [(["A"], [0.9]), (["A1"], [0.2])]
    assert narrow["evaluated"] == 2 + 1
    # breadth 2 keeps B as well and finds B1, the best leaf
    wide = tot_bfs("root", TREE.get, VALUE.get, breadth=2, depth=2)
    assert wide["best"] == "B1" and wide["frontier"] == ["B1", "A1"]
    assert wide["values"] == [0.8, 0.2] and wide["evaluated"] == 2 + 2
    # a dead end empties the frontier; a solution ends the search early
    assert tot_bfs("root", TREE.get, VALUE.get, breadth=1, depth=3)["best"] is None
    early = tot_bfs("root", TREE.get, VALUE.get, 2, depth=5, is_solution=lambda s: s == "A")
    assert early["best"] == "A" and len(early["levels"]) == 1
    # equal values: the earlier proposal wins
    assert tot_bfs("root", TREE.get, lambda s: 0.0, breadth=1, depth=1)["best"] == "A"
    with pytest.raises(ValueError, match="breadth"):
        tot_bfs("root", TREE.get, VALUE.get, breadth=0, depth=1)


def test_tot_on_game24_the_value_function_is_the_lesson():
    rng = random.Random(0)
    problems = rng.sample(G.solvable_multisets(), 25)
    oracle = lambda s: float(G.solvable(s.numbers))            # the solver as value function
    blind = lambda s: 0.0                                      # no idea: first proposals kept
    solved = {"oracle": 0, "blind": 0}
    for numbers in problems:
        for name, value in (("oracle", oracle), ("blind", blind)):
            out = tot_bfs(G.start(numbers), G.propose, value, breadth=1, depth=3,
                          is_solution=G.is_solved)
            if out["best"] is not None and G.is_solved(out["best"]):
                solved[name] += 1
                replay = numbers
                for step in out["best"].steps:                 # every step is legal
                    replay = G.apply_step(replay, step)
                assert replay == (24,)
    # blind BFS keeps the first proposal, "a + b", every time: it ends at the sum of the four
    # numbers, right only when that sum is 24
    assert solved["oracle"] == 25
    assert solved["blind"] == sum(sum(numbers) == 24 for numbers in problems)


# ----------------------------------------------------------------------------- Game of 24
def test_game24_has_1362_solvable_sets_and_the_solver_is_right_on_all():
    sets = G.solvable_multisets()
    assert len(sets) == 1362                                   # of C(16, 4) = 1820 multisets
    for numbers in sets:
        assert G.check_expression(numbers, G.solve(numbers)), numbers
    assert G.solve((1, 1, 1, 1)) is None and not G.solvable((1, 1, 1, 1))
    assert (1, 5, 5, 5) in sets and (3, 3, 8, 8) in sets      # need fractions: 5*(5-1/5), 8/(3-8/3)


def test_game24_moves_and_checkers():
    # (2, 3): 5, 6, 1, -1, 3/2, 2/3 -> six next states; (2, 2): 4 (+ and *), 0, 1 -> three
    assert [s.numbers for s in G.propose(G.start((2, 3)))] == \
        [(5,), (6,), (1,), (-1,), (G.exact("3/2"),), (G.exact("2/3"),)]
    assert [s.numbers for s in G.propose(G.start((2, 2)))] == [(4,), (0,), (1,)]
    first = G.propose(G.start((4, 9, 10, 13)))
    assert all(len(s.numbers) == 3 for s in first) and len({s.numbers for s in first}) == len(first)
    assert G.apply_step((4, 9, 10, 13), "13 - 9 = 4 (left: 4 4 10)") == (4, 4, 10)
    assert G.apply_step((4, 9, 10, 13), "13 - 9 = 5") is None          # wrong arithmetic
    assert G.apply_step((4, 9, 10, 13), "13 - 8 = 5") is None          # no 8 to use
    assert G.apply_step((4, 9, 10, 13), "13 / 9 = 13/9") == (G.exact("13/9"), 4, 10)
    assert G.check_expression((4, 9, 10, 13), "(10 - 4) * (13 - 9)")
    assert not G.check_expression((4, 9, 10, 13), "10 - 4 * 13 - 9")   # = -51
    assert not G.check_expression((4, 6, 1, 1), "4 * 6")               # numbers unused
    assert not G.check_expression((2, 2, 3, 3), "2 ** 3 * 3")          # no powers
    assert not G.check_expression((1, 2, 3, 4), "__import__('os')")
    assert not G.check_expression((1, 1, 3, 4), "4 / (1 - 1) + 3")     # division by zero
    assert G.check_expression((3, 3, 8, 8), "8 / (3 - 8 / 3)")
    end = G.random_rollout(G.start((4, 9, 10, 13)), random.Random(1))
    assert len(end.numbers) == 1 and len(end.steps) == 3
    assert G.format_numbers((4, G.exact("1/2"))) == "4 1/2"


# ----------------------------------------------------------------------------- GoT
def test_got_operations_compose_and_record_the_graph():
    roots = thoughts(3)
    kids = generate(roots, lambda s: [s + 1, s * 2], k=2)          # 2 calls, 2 states each
    assert [t.state for t in kids] == [4, 6, 4, 6]
    scored = score(kids, lambda s: -abs(s - 5))                     # -1, -1, -1, -1: ties
    assert [t.state for t in keep_best(scored, 2)] == [4, 6]        # ties keep the order
    assert [t.state for t in keep_best(score(kids, float), 1, lower_is_better=True)] == [4]
    joined = aggregate(kids[:2], sum)
    better = improve([joined], lambda s: s - 1)[0]
    assert joined.state == 10 and better.state == 9
    assert len(ancestors(better)) == 4                              # joined, two kids, root
    with pytest.raises(ValueError, match="scored"):
        keep_best(kids, 1)


def test_got_sorting_error_count_by_hand():
    # descents in the output + sum over values of |count in output - count in input|
    assert S.error_count([3, 1, 2], [1, 2, 3]) == 0
    assert S.error_count([3, 1, 2], [2, 1, 3]) == 1                 # one descent (2 > 1)
    assert S.error_count([3, 1, 2], [1, 2]) == 1                    # the 3 is missing
    # [3, 3, 1]: a 3 too many (1), the 2 missing (1), one descent 3 > 1 (1) -> 3
    assert S.error_count([3, 1, 2], [3, 3, 1]) == 3
    assert S.error_count([5, 5, 0], [0, 5, 5, 5, 9]) == 2          # extra 5 and extra 9
    assert S.split(list(range(10)), 4) == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]
    assert S.merge([1, 4, 4, 9], [0, 4, 5]) == [0, 1, 4, 4, 4, 5, 9]
    assert S.parse_list("Output: [0, 1, 1, 7] done") == [0, 1, 1, 7]
    assert S.format_list([3, 0]) == "[3, 0]"


def test_got_sort_beats_a_direct_sort_that_fails_on_long_lists():
    xs = [random.Random(7).randint(0, 9) for _ in range(32)]

    def short_sorter(part):                  # right on up to 8 numbers, drops two beyond
        return sorted(part) if len(part) <= 8 else sorted(part)[2:]

    direct = S.got_sort(xs, short_sorter, S.merge, parts=1)
    assert direct.score == 2 and direct.state[1] == sorted(xs)[2:]
    got = S.got_sort(xs, short_sorter, S.merge, parts=4)
    assert got.score == 0 and got.state[1] == sorted(xs)

    def sloppy_merge(a, b):                  # merges but duplicates the first element
        return S.merge(a, b)[:1] + S.merge(a, b)
    repaired = S.got_sort(xs, short_sorter, sloppy_merge, parts=4,
                          refine_fn=lambda original, current: sorted(original))
    assert repaired.score == 0 and repaired.state[1] == sorted(xs)
    # k tries: a sorter that is right every third call is enough with k = 3
    calls = iter(range(10_000))
    flaky = lambda part: sorted(part) if next(calls) % 3 == 2 else part
    assert S.got_sort(xs, flaky, S.merge, parts=4, k=3).score == 0
