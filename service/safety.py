"""Prompt policy: reject prompts in forbidden categories before anything is queued.

Torch-free and fast (well under a millisecond per prompt). The policy (categories, term
groups, allow-list) lives in a JSON file operators edit; `SPACETIME_POLICY_FILE` points at it,
`service/policy/default.json` is shipped. Matching works on a normalised form of the prompt so
the usual evasions land on the same tokens as the plain word:

    NFKC ("ｋｉｌｌ", "𝐤𝐢𝐥𝐥")  ->  drop format chars and accents ("k\u200bill", "kíll")
    ->  casefold  ->  look-alike letters (Cyrillic "кіll", Greek "κιll")  ->  leetspeak ("k1ll", "$ex")
    ->  letters split by spaces or punctuation ("k i l l", "s.e.x", "ki ll")  ->  stems ("kills", "killing")

Allow-listed phrases ("kill time", "a bloody mary") are removed before terms are matched, so a
prompt with "kill time" and a real "kill" elsewhere is still caught. Logs carry `prompt_hash`,
never the text.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_POLICY_PATH = Path(__file__).with_name("policy") / "default.json"
POLICY_FILE_ENV = "SPACETIME_POLICY_FILE"
ERROR_CODE = "content_policy_violation"

Phrase = tuple[str, ...]  # a term split into lower-case base-form words

# Look-alike letters that NFKC leaves alone: Cyrillic and Greek (lower case; we casefold first)
# and a few Latin/IPA variants.
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ӏ": "l", "һ": "h", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "ь": "b", "г": "r", "п": "n", "ш": "w", "з": "3", "л": "n", "д": "d", "ү": "y",
    "α": "a", "β": "b", "γ": "y", "δ": "d", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k", "μ": "u",
    "ν": "v", "ο": "o", "π": "n", "ρ": "p", "σ": "o", "ς": "c", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    "ɑ": "a", "ı": "i", "ɩ": "i", "ɡ": "g", "ʟ": "l", "ɴ": "n", "ʀ": "r", "ꜱ": "s", "ᴋ": "k", "ᴏ": "o",
    "ø": "o", "ß": "ss", "æ": "ae", "œ": "oe", "ð": "d", "þ": "p", "ł": "l", "đ": "d", "ħ": "h",
})
# Leetspeak, applied only inside words that also hold a letter (so "12" and "3d" stay numbers).
_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g",
         "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e", "¡": "i", "(": "c"}
_ONE_AS = ("i", "l")  # "1" is either; both readings are checked
_EDGE_PUNCT = ".,;:!?)]}\"'»…-_*"  # trailing punctuation is punctuation, not leetspeak
# Short real words never glued to a neighbour ("a pen is" must not read as "penis").
_COMMON_SHORT = frozenset(
    "a i an as at be by do go he if in is it me my no of on or so to up us we am ok oh s t d "
    "the and for but not you her his its our out off all any are was has had can may now one two how who too"
    .split()
)
_SUFFIXES = ("ies", "ing", "ers", "ed", "er", "es", "s")
_NUMBER_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
                 "fifteen sixteen seventeen eighteen nineteen twenty").split()
_AGE_RE = re.compile(
    r"\b(\d{1,3}|" + "|".join(_NUMBER_WORDS) + r")[\s\-_]*(?:years?|yrs?|y\s?/?\s?o)\b(?:[\s\-_]*old)?"
    r"|\baged?\s+(\d{1,3})\b"
)


class PolicyError(ValueError):
    """The policy file is missing or malformed (the message names the file and the problem)."""


@dataclass(frozen=True)
class Combination:
    groups: tuple[tuple[Phrase, ...], ...]  # each group must have a hit ...
    window: int | None  # ... all within this many tokens of each other (None: anywhere)


@dataclass(frozen=True)
class Category:
    name: str
    message: str
    terms: tuple[Phrase, ...]
    combinations: tuple[Combination, ...]


@dataclass(frozen=True)
class Policy:
    categories: tuple[Category, ...]  # checked in file order; the first hit is reported
    allow: tuple[Phrase, ...]
    minor_age_limit: int | None  # "12 year old" with 12 < limit reads as the word "underage"
    check_negative_prompt: bool
    source: str
    vocabulary: frozenset[str] = frozenset()  # every word of every term and group (for gluing)


@dataclass(frozen=True)
class PolicyDecision:
    allowed: bool
    prompt_sha256: str
    category: str | None = None
    message: str | None = None
    field: str = "prompt"  # the request field that was checked
    matched: str | None = None  # the policy term that matched (never the prompt text)


class PolicyViolation(Exception):
    """Raised by `enforce_policy`; carries the decision and the API error code."""

    code = ERROR_CODE

    def __init__(self, decision: PolicyDecision) -> None:
        super().__init__(f"{decision.field} rejected: {decision.message} (category: {decision.category})")
        self.decision = decision


def prompt_hash(text: str) -> str:
    """sha256 hex of the UTF-8 text: what logs and provenance carry instead of the prompt."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- normalisation and stems


def normalise(text: str) -> str:
    """NFKC, no format chars or accents, casefolded, look-alike letters mapped to Latin."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) not in ("Mn", "Cf"))
    return text.translate(_CONFUSABLES)


def _mark_ages(text: str, limit: int | None) -> str:
    """'12 year old', '12yo', 'aged 12' -> 'underage' when below the limit."""
    if limit is None:
        return text

    def swap(m: re.Match[str]) -> str:
        raw = m.group(1) or m.group(2)
        age = int(raw) if raw.isdigit() else _NUMBER_WORDS.index(raw)
        return " underage " if age < limit else m.group(0)

    return _AGE_RE.sub(swap, text)


def _deleet(word: str, one: str) -> str:
    word = word.strip(_EDGE_PUNCT)
    if not any(c.isalpha() for c in word):
        return word
    return "".join(one if c == "1" else _LEET.get(c, c) for c in word)


def _squeeze(word: str) -> set[str]:
    """'kiiill' -> {'kill', 'kil'}: letters repeated 3+ times, read as 2 and as 1."""
    if not re.search(r"(.)\1\1", word):
        return set()
    return {re.sub(r"(.)\1{2,}", r"\1\1", word), re.sub(r"(.)\1{2,}", r"\1", word)}


def word_forms(word: str) -> frozenset[str]:
    """The word plus the base forms it may stem from: 'killing' -> {'killing', 'kill', 'kille'}.

    Terms are written in base form and match when they are one of a text word's forms, so
    'raped' reaches 'rape' but 'rapper' (-> 'rapp' -> 'rap') does not.
    """
    forms = {word} | _squeeze(word)
    for w in list(forms):
        if len(w) <= 3 or not w.isalpha():
            continue
        for suffix in _SUFFIXES:
            if not w.endswith(suffix) or len(w) - len(suffix) < 3 or (suffix == "s" and w.endswith("ss")):
                continue
            base = w[: -len(suffix)]
            if suffix == "ies":
                forms.add(base + "y")
            elif base[-1] == base[-2] and base[-1] not in "lsz":
                forms.update({base, base[:-1]})  # stabbing -> stabb -> stab
            else:
                forms.update({base, base + "e"})  # decapitated -> decapitat(e)
    return frozenset(forms)


# ---------------------------------------------------------------- matching


@dataclass
class _Tokens:
    """One reading of the prompt: base forms per position, plus extra hits at positions."""

    forms: list[frozenset[str]]
    glued: list[tuple[int, str]]  # (position, letters) from split-up words, matched as substrings
    index: dict[str, list[int]]  # form -> positions holding it


def _read(text: str, policy: Policy, one: str) -> _Tokens:
    # 1. words -> leetspeak undone -> pieces split on anything that is not a letter or digit
    raw: list[str] = []
    for word in _mark_ages(normalise(text), policy.minor_age_limit).split():
        raw.extend(p for p in re.split(r"[^0-9a-z]+", _deleet(word, one)) if p)
    # 2. glue letters split apart. A run of single characters is one word ("k i l l", "5 e x";
    #    "a k i l l" also reads "kill"). Two neighbours become one word when neither means anything
    #    to the policy and together they do ("ki ll", "sui cide"); short real words never glue
    #    ("a pen is" never reads "penis", "put in" never "putin").
    pieces: list[str] = []
    runs: dict[int, str] = {}  # piece index -> the letters of a glued run
    i = 0
    while i < len(raw):
        j = i
        while j < len(raw) and len(raw[j]) == 1:
            j += 1
        if j - i >= 2:
            runs[len(pieces)] = "".join(one if c == "1" else _LEET.get(c, c) for c in raw[i:j])
            pieces.append(runs[len(pieces)])
            i = j
            continue
        if (i + 1 < len(raw) and len(raw[i + 1]) > 1 and not {raw[i], raw[i + 1]} & _COMMON_SHORT
                and not (word_forms(raw[i]) & policy.vocabulary and word_forms(raw[i + 1]) & policy.vocabulary)
                and word_forms(raw[i] + raw[i + 1]) & policy.vocabulary):
            pieces.append(raw[i] + raw[i + 1])
            i += 2
            continue
        pieces.append(raw[i])
        i += 1
    forms = [word_forms(p) for p in pieces]
    for pos, letters in runs.items():
        if letters[0] in "ai" and len(letters) > 3:
            forms[pos] |= word_forms(letters[1:])
    # 3. allow-listed phrases are taken out ("kill time" no longer holds a "kill")
    keep = [True] * len(pieces)
    for pos, phrase in _hits(_Tokens(forms, [], _index(forms)), policy.allow, whole_words_only=True):
        keep[pos : pos + len(phrase)] = [False] * len(phrase)
    forms = [f if k else frozenset() for f, k in zip(forms, keep)]
    return _Tokens(forms, [(pos, letters) for pos, letters in runs.items() if keep[pos]], _index(forms))


def _index(forms: list[frozenset[str]]) -> dict[str, list[int]]:
    index: dict[str, list[int]] = defaultdict(list)
    for pos, fs in enumerate(forms):
        for f in fs:
            index[f].append(pos)
    return index


def _hits(tokens: _Tokens, phrases: tuple[Phrase, ...], whole_words_only: bool = False) -> list[tuple[int, Phrase]]:
    """Positions where any phrase matches: in order, as one glued word, or inside glued letters."""
    n, index = len(tokens.forms), tokens.index
    found: list[tuple[int, Phrase]] = []
    for phrase in phrases:
        for pos in index.get(phrase[0], ()):
            if pos + len(phrase) <= n and all(phrase[k] in tokens.forms[pos + k] for k in range(1, len(phrase))):
                found.append((pos, phrase))
        if whole_words_only:
            continue
        joined = "".join(phrase)
        if len(phrase) > 1:
            found.extend((pos, phrase) for pos in index.get(joined, ()))
        if len(joined) >= 3:
            found.extend((pos, phrase) for pos, letters in tokens.glued if joined in letters)
    return found


def _combination_hit(tokens: _Tokens, combo: Combination) -> Phrase | None:
    per_group = [_hits(tokens, group) for group in combo.groups]
    if not all(per_group):
        return None
    if combo.window is None:
        return per_group[0][0][1]
    for pos, phrase in per_group[0]:  # every other group needs a hit near this one
        if all(any(abs(p - pos) <= combo.window for p, _ in hits) for hits in per_group[1:]):
            return phrase
    return None


def check_prompt(text: str, policy: Policy | None = None, field: str = "prompt") -> PolicyDecision:
    """Decide one prompt. `policy=None` uses `get_policy()` (SPACETIME_POLICY_FILE or the default)."""
    policy = policy or get_policy()
    digest = prompt_hash(text)
    readings = [_read(text, policy, one) for one in (_ONE_AS if "1" in text else _ONE_AS[:1])]
    for category in policy.categories:
        for tokens in readings:
            hits = _hits(tokens, category.terms)
            matched = hits[0][1] if hits else None
            for combo in category.combinations:
                matched = matched or _combination_hit(tokens, combo)
            if matched:
                return PolicyDecision(False, digest, category.name, category.message, field, " ".join(matched))
    return PolicyDecision(True, digest, field=field)


def check_request(prompt: str, negative_prompt: str | None = None, policy: Policy | None = None) -> PolicyDecision:
    """The prompt, then the negative prompt (unless the policy turns that off): first rejection wins."""
    policy = policy or get_policy()
    decision = check_prompt(prompt, policy, "prompt")
    if decision.allowed and negative_prompt and policy.check_negative_prompt:
        negative = check_prompt(negative_prompt, policy, "negative_prompt")
        if not negative.allowed:
            return negative
    return decision


def enforce_policy(prompt: str, negative_prompt: str | None = None, policy: Policy | None = None) -> PolicyDecision:
    """`check_request`, raising `PolicyViolation` on a rejection (the worker's re-check)."""
    decision = check_request(prompt, negative_prompt, policy)
    if not decision.allowed:
        raise PolicyViolation(decision)
    return decision


def policy_error(decision: PolicyDecision) -> dict[str, Any]:
    """The OpenAI-shaped body of the HTTP 400 for a rejected decision."""
    return {
        "error": {
            "message": f"The {decision.field.replace('_', ' ')} was rejected by the content policy: "
            f"{decision.message} (category: {decision.category}).",
            "type": "invalid_request_error",
            "param": decision.field,
            "code": ERROR_CODE,
            "category": decision.category,
        }
    }


# ---------------------------------------------------------------- the policy file


def _phrase(term: Any, where: str) -> Phrase:
    if not isinstance(term, str) or not term.strip():
        raise PolicyError(f"{where}: terms must be non-empty strings, got {term!r}")
    words = tuple(p for p in re.split(r"[^0-9a-z]+", normalise(term)) if p)
    if not words:
        raise PolicyError(f"{where}: term {term!r} has no letters or digits")
    return words


def _phrases(terms: Any, where: str) -> tuple[Phrase, ...]:
    if not isinstance(terms, list):
        raise PolicyError(f"{where} must be a list of strings")
    return tuple(_phrase(t, where) for t in terms)


def parse_policy(data: Any, source: str = "<dict>") -> Policy:
    """Validate a policy document (the parsed JSON) into a `Policy`."""
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: the policy must be a JSON object")
    unknown = set(data) - {"version", "description", "minor_age_limit", "check_negative_prompt", "groups",
                           "categories", "allow"}
    if unknown:
        raise PolicyError(f"{source}: unknown keys {sorted(unknown)}")
    groups_raw = data.get("groups", {})
    if not isinstance(groups_raw, dict):
        raise PolicyError(f"{source}: 'groups' must be an object of name -> list of terms")
    groups = {name: _phrases(terms, f"{source}: group {name!r}") for name, terms in groups_raw.items()}
    categories = []
    for i, raw in enumerate(data.get("categories") or []):
        where = f"{source}: categories[{i}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise PolicyError(f"{where} needs a 'name'")
        where = f"{source}: category {raw['name']!r}"
        unknown_keys = set(raw) - {"name", "message", "description", "terms", "combinations"}
        if unknown_keys:
            raise PolicyError(f"{where}: unknown keys {sorted(unknown_keys)}")
        combos = []
        for combo in raw.get("combinations", []):
            refs = combo.get("all_of") if isinstance(combo, dict) else None
            if not isinstance(refs, list) or len(refs) < 2:
                raise PolicyError(f"{where}: a combination needs 'all_of' with at least two groups")
            resolved = []
            for ref in refs:
                if isinstance(ref, str) and ref.startswith("@"):
                    if ref[1:] not in groups:
                        raise PolicyError(f"{where}: unknown group {ref!r} (known: {sorted(groups)})")
                    resolved.append(groups[ref[1:]])
                else:
                    resolved.append(_phrases(ref, where))
            window = combo.get("window")
            if window is not None and (not isinstance(window, int) or window < 1):
                raise PolicyError(f"{where}: 'window' must be a positive integer")
            combos.append(Combination(tuple(resolved), window))
        terms = _phrases(raw.get("terms", []), where)
        if not terms and not combos:
            raise PolicyError(f"{where} has neither terms nor combinations")
        message = raw.get("message") or f"{raw['name']} content is not allowed"
        categories.append(Category(raw["name"], message, terms, tuple(combos)))
    if not categories:
        raise PolicyError(f"{source}: no categories")
    limit = data.get("minor_age_limit", 18)
    if limit is not None and not isinstance(limit, int):
        raise PolicyError(f"{source}: 'minor_age_limit' must be an integer or null")
    vocabulary = {w for c in categories for p in c.terms for w in p}
    vocabulary |= {w for phrases in groups.values() for p in phrases for w in p}
    vocabulary |= {"".join(p) for c in categories for p in c.terms}  # "selfharm", "bloodbath"
    return Policy(tuple(categories), _phrases(data.get("allow", []), f"{source}: allow"), limit,
                  bool(data.get("check_negative_prompt", True)), source, frozenset(vocabulary))


def load_policy(path: str | Path | None = None) -> Policy:
    """Read and validate a policy file (None: the shipped default)."""
    path = Path(path) if path else DEFAULT_POLICY_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyError(f"policy file {path} does not exist (set {POLICY_FILE_ENV} to a readable file)") from None
    except json.JSONDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid JSON: {exc}") from None
    return parse_policy(data, str(path))


_cache: dict[tuple[str, float], Policy] = {}


def get_policy(path: str | Path | None = None) -> Policy:
    """The policy at `path`, or at $SPACETIME_POLICY_FILE, or the default; reloaded when the file changes."""
    resolved = Path(path or os.environ.get(POLICY_FILE_ENV) or DEFAULT_POLICY_PATH)
    try:
        key = (str(resolved), resolved.stat().st_mtime)
    except FileNotFoundError:
        raise PolicyError(f"policy file {resolved} does not exist (set {POLICY_FILE_ENV} to a readable file)") from None
    if key not in _cache:
        _cache.clear()
        _cache[key] = load_policy(resolved)
    return _cache[key]
