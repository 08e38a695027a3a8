"""Procedural children's stories: a TinyStories-like corpus written by code, not downloaded.

TinyStories (Eldan & Li, arXiv 2305.07759) showed that models of a few million parameters
learn fluent English when the text uses a small vocabulary and a simple causal shape. We
write such text ourselves. Every story follows one arc, with many templates per step:

    who and where -> a want -> a problem -> failed tries -> a friend helps (with dialogue)
                  -> an outcome (mostly success, sometimes a kind second-best) -> feeling -> moral

The solution matches the problem (a ball stuck in a tree is reached with a stick or a
ladder, a lost key is found by sniffing or searching, ...) and the moral matches the way it
was solved (working together, sharing, not giving up), so there is real structure to learn.

Size, measured with ``corpus_stats(generate_stories(2000, seed=0))``:

    stories                2,000
    words                  257,955    (129 per story, 71 to 183)
    characters             1,282,398
    distinct sentences     13,478     (of 28,724 sentences)
    distinct words         409
    word entropy           7.66 bits/word (unigram)
    character entropy      4.39 bits/char (unigram)

To scale up, ask for more stories: ``generate_stories(100_000)`` gives ~13M words in a
few seconds, and the distinct sentences keep growing with ``n`` (names x objects x colours x
places x templates). Train and validation stories come from different random streams, and
``story_splits`` drops any validation story that also occurs in the training set.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

GIRLS = ["Lily", "Mia", "Sue", "Anna", "Lucy", "Emma", "Zoe", "Ella", "Rosa", "Nina", "Amy",
         "Kim", "Daisy", "Ruby", "Molly", "Jane"]
BOYS = ["Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Jake", "Bob", "Dan", "Noah",
        "Ollie", "Pip", "Joe", "Ned"]
ANIMALS = ["cat", "dog", "rabbit", "fox", "bear", "duck", "mouse", "frog", "owl", "pig", "lamb",
           "turtle", "squirrel", "hedgehog", "puppy", "bunny"]
TRAITS = ["kind", "brave", "shy", "curious", "happy", "clever", "funny", "gentle", "busy",
          "sleepy", "quiet", "silly", "friendly", "careful", "playful", "little"]
PLACES = ["in a small house near the woods", "on a big farm", "by the sea", "in a busy town",
          "in a green forest", "near a quiet pond", "at the top of a hill", "in a little village",
          "next to a park", "in a garden full of flowers", "in a cozy hole under a tree"]
LIKES = ["play in the sun", "sing songs", "draw pictures", "run fast", "jump in puddles",
         "read books", "build towers", "look at the clouds", "pick flowers", "dance"]
TIMES = ["day", "morning", "sunny day", "rainy day", "afternoon", "evening", "windy day"]
OBJECTS = ["ball", "kite", "hat", "balloon", "book", "boat", "cup", "drum", "shoe", "box",
           "toy car", "bell", "scarf", "shell", "feather", "key", "teddy bear", "ribbon",
           "blanket", "crayon", "block", "bucket", "whistle", "flag"]
COLOURS = ["red", "blue", "green", "yellow", "pink", "purple", "orange", "shiny", "big", "soft",
           "new", "striped", "tiny", "bright"]

# problem kind -> (where the thing is, what the hero tries alone, how the friends solve it, moral)
PROBLEMS = {
    "high": (["stuck high up in a tree", "on top of the tall shelf", "on the roof of the shed",
              "caught on a high branch", "on top of a big rock"],
             ["{He} jumped and jumped, but {he} could not reach it.",
              "{He} stood on {his} toes, but it was too high.",
              "{He} tried to climb up, but {he} slipped and fell down."],
             ["{friend} let {name} stand on {fhis} back, and {name} grabbed the {obj}.",
              "They found a long stick and pushed the {obj} down.",
              "They carried a small ladder over, and {name} climbed up to get it.",
              "They shook the branch together until the {obj} fell down."]),
    "lost": (["lost in the tall grass", "hidden under a big pile of leaves",
              "gone somewhere in the garden", "buried in the sand", "lost in the dark barn"],
             ["{He} looked and looked, but {he} could not find it.",
              "{He} searched everywhere, but the {obj} was gone.",
              "{He} called for it, but of course {a_obj} cannot answer."],
             ["They looked under every leaf, one by one, and found the {obj}.",
              "{friend} used {fhis} good nose to sniff it out.",
              "They followed a line of little marks and found the {obj} at the end.",
              "A bird in the sky saw the {obj} and showed them where it was."]),
    "water": (["floating in the middle of the pond", "on the other side of the river",
               "stuck on a rock in the stream", "out in the water by the shore"],
              ["{He} tried to reach it, but the water was too deep.",
               "{He} put one foot in the water, but it was very cold.",
               "{He} threw a stone to push it back, but the stone missed."],
              ["They built a little bridge from sticks and walked across.",
               "{friend} swam out and pushed the {obj} back to the shore.",
               "They used a long net and pulled the {obj} in.",
               "They waited together, and the wind blew the {obj} back to them."]),
    "owned": (["in the hands of a big {other}", "with a grumpy {other} who would not share",
               "held tight by {a_other} on the path"],
              ["{He} tried to take it, but the {other} held on.",
               "{He} shouted at the {other}, but that did not help.",
               "{He} stomped {his} feet, but the {other} just walked away."],
              ["They asked the {other} nicely, and the {other} said they could take turns.",
               "They gave the {other} a cookie, and the {other} was happy to share the {obj}.",
               "They invited the {other} to play, and soon all three played with the {obj}."]),
}
MORALS = {
    "high": ["Because they worked together, the hard job was easy.",
             "{name} learned that two friends can reach what one cannot."],
    "lost": ["{name} learned that it is good to look carefully and ask for help.",
             "Because {friend} helped, the lost {obj} was found."],
    "water": ["{name} learned that being patient and clever is better than being fast.",
              "Because they did not give up, they got the {obj} back."],
    "owned": ["{name} learned that being kind works better than being angry.",
              "Because they shared, everyone was happy."],
}


def _a(word: str) -> str:
    """The word with its indefinite article: "a ball", "an orange"."""
    return ("an " if word[0] in "aeiou" else "a ") + word


def _person(rng: random.Random, avoid: str = "") -> dict:
    girl = rng.random() < 0.5
    name = rng.choice([n for n in (GIRLS if girl else BOYS) if n != avoid])
    kind = rng.choice(ANIMALS + ["girl" if girl else "boy"] * 4)
    return {"name": name, "kind": kind, "trait": rng.choice(TRAITS),
            "he": "she" if girl else "he", "his": "her" if girl else "his",
            "him": "her" if girl else "him"}


def _story(rng: random.Random) -> str:
    """One story: each step picks a template and fills it with the story's words."""
    hero = _person(rng)
    pal = _person(rng, avoid=hero["name"])
    problem = rng.choice(list(PROBLEMS))
    places, tries, fixes = PROBLEMS[problem]
    v = {"name": hero["name"], "he": hero["he"], "He": hero["he"].capitalize(),
         "his": hero["his"], "His": hero["his"].capitalize(), "him": hero["him"],
         "kind": hero["kind"], "trait": hero["trait"], "place": rng.choice(PLACES),
         "like": rng.choice(LIKES), "time": rng.choice(TIMES), "obj": rng.choice(OBJECTS),
         "col": rng.choice(COLOURS), "friend": pal["name"], "fkind": pal["kind"],
         "ftrait": pal["trait"], "fhe": pal["he"], "fhis": pal["his"],
         "other": rng.choice([a for a in ANIMALS if a not in (hero["kind"], pal["kind"])])}
    v.update(a_col=_a(v["col"]), a_obj=_a(v["obj"]), a_other=_a(v["other"]))
    v["where"] = rng.choice(places).format(**v)
    short = rng.random() < 0.3  # a third of the stories skip the optional middle parts
    pick = lambda *options: rng.choice(options)
    out = [pick("Once upon a time, there was a {trait} {kind} named {name}.",
                "{name} was a {trait} little {kind} who lived {place}.",
                "There once was a {kind} called {name}.",
                "In a land far away, a {trait} {kind} named {name} lived {place}.")]
    if not short and rng.random() < 0.7:
        out.append(pick("{He} loved to {like} every day.", "{He} liked to {like} with {his} mom.",
                        "More than anything, {name} liked to {like}."))
    out.append(pick("One {time}, {name} saw {a_col} {obj}.",
                    "One {time}, {name} found {a_col} {obj} that {he} had never seen before.",
                    "Early one {time}, {name} was walking when {he} saw {a_col} {obj}."))
    out.append(pick("{He} wanted it very much.", "{He} wanted to play with it.",
                    "{name} really wanted the {obj}."))
    if not short and rng.random() < 0.6:
        out.append(pick('"I wish I had that {obj}," {name} said.',
                        '"What a nice {obj}!" said {name}.',
                        '{name} said, "I want to play with the {col} {obj}!"'))
    out.append(pick("But the {obj} was {where}.", "The problem was that the {obj} was {where}.",
                    "But there was a problem: the {obj} was {where}."))
    out.extend(rng.sample(tries, 0 if short else rng.randint(1, 2)))
    out.append(pick("{name} felt sad.", '"Oh no," said {name}.', "{name} did not know what to do.",
                    "{name} sat down and started to cry."))
    out.append(pick("Just then, {friend} the {fkind} came by.",
                    "{name} asked {his} friend {friend}, a {ftrait} {fkind}, for help.",
                    "A {ftrait} {fkind} named {friend} saw {name} and came over."))
    if not short:
        out.append(pick('"Can you help me get the {obj}?" asked {name}.',
                        '"My {obj} is {where}," {name} said.', '"Please help me," said {name}.'))
        out.append(pick('"Yes, I can help you," said {friend}.',
                        '{friend} smiled and said, "Let us try."',
                        '"Do not worry, we will find a way," said {friend}.'))
    if rng.random() < 0.8:  # the usual happy outcome
        out.append(rng.choice(fixes))
        if rng.random() < 0.3:
            out.append(pick("It was not easy, and it took a long time.",
                            "First it did not work, but they tried again.",
                            "{friend} was very {ftrait}, and {fhe} did not give up."))
        out.append(pick("At last, {name} had the {col} {obj}.", "Now the {obj} was safe again.",
                        "{name} held the {obj} and smiled."))
        out.append(pick("{name} was so happy that {he} danced.",
                        '"Thank you, {friend}!" said {name}.',
                        "{name} and {friend} laughed and clapped their hands."))
        if rng.random() < 0.5:
            out.append(pick("They played with the {obj} until the sun went down.",
                            "Then they took turns with the {obj} all afternoon.",
                            "After that, they went home to eat some warm soup."))
        out.append(rng.choice(MORALS[problem]))
    else:  # a second-best ending: the plan fails, kindness wins anyway
        out.append(pick("They tried and tried, but the {obj} stayed {where}.",
                        "They tried very hard, but they could not get the {obj}."))
        out.append(pick("So {friend} shared {fhis} own toy with {name}.",
                        "So {friend} gave {name} a big hug and a new game to play."))
        out.append(pick("{name} was not sad anymore.", "{name} smiled again."))
        out.append("{name} learned that a good friend is better than any {obj}.")
    if rng.random() < 0.4:
        out.append(pick("From that day on, {name} and {friend} were best friends.",
                        "And they lived happily ever after.", "The end."))
    return " ".join(s.format(**v) for s in out)


def generate_stories(n: int, seed: int = 0) -> list[str]:
    """``n`` stories from one seeded random stream (the same seed gives the same stories)."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    rng = random.Random(f"stories-{seed}")
    return [_story(rng) for _ in range(n)]


def story_splits(n_train: int, n_val: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Train and validation stories from two disjoint streams; no val story is in train."""
    if n_train < 0 or n_val < 0:
        raise ValueError(f"split sizes must be >= 0, got n_train={n_train}, n_val={n_val}")
    rng = random.Random(f"stories-train-{seed}")
    train = [_story(rng) for _ in range(n_train)]
    seen, val = set(train), []
    rng = random.Random(f"stories-val-{seed}")  # a different stream from train
    while len(val) < n_val:
        story = _story(rng)
        if story not in seen:
            seen.add(story)
            val.append(story)
    return train, val


def words(text: str) -> list[str]:
    """Lower-cased word tokens: runs of letters and apostrophes (punctuation is dropped)."""
    return re.findall(r"[a-z']+", text.lower())


def sentences(text: str) -> list[str]:
    """Split after . ! ? (or a closing quote) where the next sentence starts with A-Z or a quote."""
    return [s for s in re.split(r'(?<=[.!?])\s+(?=["A-Z])|(?<=[.!?]")\s+(?=["A-Z])', text) if s]


def entropy_bits(counts: Counter) -> float:
    """Shannon entropy H = -sum p log2 p of the distribution given by ``counts``."""
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values() if c) if total else 0.0


def corpus_stats(stories: list[str]) -> dict:
    """Sizes and unigram entropies of a list of stories (see the module docstring)."""
    if isinstance(stories, str):
        raise ValueError("corpus_stats expects a list of stories, got a single string")
    word_counts, char_counts, sents = Counter(), Counter(), []
    lengths = []
    for story in stories:
        w = words(story)
        lengths.append(len(w))
        word_counts.update(w)
        char_counts.update(story)
        sents.extend(sentences(story))
    return {"stories": len(stories), "words": sum(lengths), "characters": sum(char_counts.values()),
            "sentences": len(sents), "distinct_sentences": len(set(sents)),
            "distinct_words": len(word_counts),
            "min_words": min(lengths, default=0), "max_words": max(lengths, default=0),
            "word_entropy_bits": entropy_bits(word_counts),
            "char_entropy_bits": entropy_bits(char_counts)}
