"""Captions for shapes-world scenes: varied templates and synonyms, plus one canonical form.

Training captions vary (synonyms, word order, articles) so the text encoder learns that
"a crimson disc drifting leftward" and "red circle moving left" mean the same scene. The
canonical caption is what `spacetime eval` prompts with. Every caption is at most 63 bytes
(so at most 16 words: well inside the tiny text encoder's 32 word tokens, and inside 64 byte
tokens should a byte tokenizer be used); templates that would not fit are skipped. Every word
used here is in the shipped vocabulary `model/data/words.txt` (a test checks it).
"""

from __future__ import annotations

import numpy as np

MAX_CAPTION_BYTES = 63  # fits 64 ByT5 byte tokens (with </s>) and 32 word tokens

# First entry of each list is the canonical word; it is also drawn most often.
COLOUR_WORDS: dict[str, list[str]] = {
    "red": ["red", "crimson", "scarlet"],
    "green": ["green", "emerald", "lime"],
    "blue": ["blue", "azure", "cobalt"],
    "yellow": ["yellow", "golden", "lemon"],
    "purple": ["purple", "violet", "plum"],
    "orange": ["orange", "amber", "tangerine"],
    "white": ["white", "snowy", "ivory"],
}
SHAPE_WORDS: dict[str, list[str]] = {
    "circle": ["circle", "ball", "disc", "dot"],
    "square": ["square", "box", "block", "tile"],
    "triangle": ["triangle", "wedge", "pyramid"],
}
# Motion phrases that follow the noun ("a red ball ___").
MOTION_PHRASES: dict[str, list[str]] = {
    "left": ["moving left", "moves to the left", "drifting leftward", "rolls to the left",
             "sliding left", "going left", "heading left"],
    "right": ["moving right", "moves to the right", "drifting rightward", "rolls to the right",
              "sliding right", "going right", "heading right"],
    "up": ["moving up", "moves upward", "drifting upward", "rising", "floating up",
           "going up", "heading up"],
    "down": ["moving down", "moves downward", "drifting downward", "falling", "sinking",
             "going down", "heading down"],
    "still": ["staying still", "sits still", "not moving", "resting in place", "standing still",
              "staying put", "motionless"],
}


def motion_key_word(phrase: str) -> str:
    """The one word of a motion phrase that says which motion it is: its last word ("moves to
    the left" -> "left"), except "not moving" -> "not" ("moving" also starts other phrases)."""
    words = phrase.split()
    return words[0] if words[-1] == "moving" else words[-1]


MOTION_KEY_WORDS: dict[str, set[str]] = {m: {motion_key_word(p) for p in ps} for m, ps in MOTION_PHRASES.items()}
_SINGLE_TEMPLATES = [
    "{a} {obj}",
    "{obj}",
    "{a} {obj} on a dark background",
    "video of {a} {obj}",
    "{a} {obj}, dark backdrop",
]
_PAIR_TEMPLATES = [
    "{a1} {obj1} and {a2} {obj2}",
    "{obj1} and {obj2}",
    "{a1} {obj1}, {a2} {obj2}",
    "{a1} {obj1} while {a2} {obj2}",
]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pick(rng: np.random.Generator, words: list[str], p_first: float = 0.5) -> str:
    """The canonical word with probability `p_first`, else a uniform synonym."""
    if len(words) == 1 or rng.random() < p_first:
        return words[0]
    return words[int(rng.integers(1, len(words)))]


def _object_phrase(obj, rng: np.random.Generator | None) -> str:
    """'red circle moving left' (canonical when rng is None)."""
    if rng is None:
        return f"{obj.colour} {obj.shape} {MOTION_PHRASES[obj.motion][0]}"
    colour = _pick(rng, COLOUR_WORDS[obj.colour])
    shape = _pick(rng, SHAPE_WORDS[obj.shape])
    motion = _pick(rng, MOTION_PHRASES[obj.motion], p_first=0.4)
    if motion == "motionless" and rng.random() < 0.5:
        return f"motionless {colour} {shape}"
    return f"{colour} {shape} {motion}"


def _fill(template: str, phrases: list[str]) -> str:
    fields = {}
    for i, phrase in enumerate(phrases, start=1):
        suffix = "" if len(phrases) == 1 else str(i)
        fields["obj" + suffix] = phrase
        fields["a" + suffix] = _article(phrase)
    return template.format(**fields)


def canonical_caption(scene) -> str:
    """The plain prompt used by evaluation: 'a red circle moving left and a blue square rising'."""
    phrases = [_object_phrase(obj, None) for obj in scene.objects]
    text = _fill("{a} {obj}" if len(phrases) == 1 else "{a1} {obj1} and {a2} {obj2}", phrases)
    if len(text.encode()) > MAX_CAPTION_BYTES:  # long pairs drop their articles
        text = _fill("{obj1} and {obj2}", phrases)
    if len(text.encode()) > MAX_CAPTION_BYTES:
        raise ValueError(f"caption does not fit {MAX_CAPTION_BYTES} bytes: {text!r}")
    return text


# Prompt-style padding users add ("..., cinematic, 4k"). Most of these words are not in the tiny
# model's vocabulary: with `noise` > 0 training sees <unk> and stray commas and learns to ignore them.
STYLE_WORDS = ["cinematic", "4k", "hd", "high quality", "beautiful", "simple", "slow motion",
               "animation", "minimal", "detailed", "sharp", "clean render", "trending"]


def random_caption(scene, rng: np.random.Generator, noise: float = 0.0) -> str:
    """One varied caption for `scene`; falls back to the canonical one if nothing fits. With
    probability `noise`, style words are added before or after it (when it still fits)."""
    templates = _SINGLE_TEMPLATES if len(scene.objects) == 1 else _PAIR_TEMPLATES
    for _ in range(8):
        phrases = [_object_phrase(obj, rng) for obj in scene.objects]
        text = _fill(templates[int(rng.integers(len(templates)))], phrases)
        if len(text.encode()) <= MAX_CAPTION_BYTES:
            break
    else:
        text = canonical_caption(scene)
    if noise > 0 and rng.random() < noise:
        style = ", ".join(STYLE_WORDS[int(i)] for i in rng.choice(len(STYLE_WORDS), int(rng.integers(1, 4)), replace=False))
        noisy = f"{style}, {text}" if rng.random() < 0.3 else f"{text}, {style}"
        if len(noisy.encode()) <= MAX_CAPTION_BYTES:
            text = noisy
    return text
