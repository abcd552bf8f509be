"""Prompt -> text states for cross-attention: a transformers T5 / UMT5 encoder plus its tokenizer.

Two padding conventions, chosen by the config:
- `use_mask=True` (our presets): pad to `max_length`, hand the padding mask to cross-attention.
- `use_mask=False` (Wan2.1): zero the states past each prompt's end and attend to everything,
  which is what Wan was trained with (its pipeline zero-pads UMT5 states to 512 tokens).
Nothing is ever fetched from a hub: real checkpoints load from local folders. Fresh encoders use a
tokenizer that needs no download: `words` (the tiny preset: one token per word of a vocabulary we
ship, `model/data/words.txt`) or `byt5` (`ByT5Tokenizer()`, one token per UTF-8 byte).

Why words for the tiny model: it trains its text encoder from scratch in minutes. With byte tokens
it must first learn to spell "red" out of three bytes at shifting offsets before cross-attention
can find the colour; with word tokens each colour, shape and motion word is one embedding.

Why an optional absolute position table (`abs_pos`, off for Wan): T5 knows word order only through
its relative attention bias, a handful of scalars per head. In the tiny encoder trained from
scratch they stayed near their initial values (|bias| ~0.07), and linear probes on its output
found no word order at all (`bench/text_probe.py`): at a two-object prompt's shape word, a probe
for its own phrase's colour scores 44-50 % (a guess between the prompt's two colours) and one for
whether it is in the first or second phrase 50 % (chance). A bag of words cannot say which colour
goes with which shape, which is the two-object failure (docs/training.md). A learned table added
to the word embeddings gives the encoder's attention word order directly. It starts at zero (a
trained encoder keeps its outputs, but the table then barely moves) or as sinusoids (word order at
once), and it is saved beside the encoder (`positions.safetensors`).
"""

from __future__ import annotations

import copy
import json
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast, T5Config,
                          T5EncoderModel, UMT5EncoderModel)
from transformers.utils import logging as hf_logging

CONFIG_NAME = "spacetime_text.json"  # our settings beside transformers' own config.json
POSITIONS_NAME = "positions.safetensors"  # the abs_pos table, beside the encoder's weights
WORDS_FILE = Path(__file__).resolve().parent / "data" / "words.txt"  # <pad>, </s>, <unk>, then words


@dataclass
class TextEncoderConfig:
    kind: str = "t5"  # "t5" (T5EncoderModel) or "umt5" (UMT5EncoderModel, Wan2.1)
    tokenizer: str = "byt5"  # "words" / "byt5" (no download) or "folder" (saved beside the encoder)
    max_length: int = 64  # tokens; longer prompts are truncated
    use_mask: bool = True
    # T5 shape, used only when building a fresh encoder (real checkpoints carry their own config.json)
    vocab_size: int = 384  # ByT5: 256 bytes + 3 specials + 125 extra ids
    d_model: int = 256
    d_kv: int = 64
    d_ff: int = 512
    num_layers: int = 4
    num_heads: int = 4
    abs_pos: bool = False  # a learned (max_length, d_model) table added to the token embeddings

    def t5_config(self) -> T5Config:
        return T5Config(
            vocab_size=self.vocab_size, d_model=self.d_model, d_kv=self.d_kv, d_ff=self.d_ff,
            num_layers=self.num_layers, num_heads=self.num_heads, feed_forward_proj="gated-gelu",
            dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
        )


class TextEncoder(nn.Module):
    """Tokenizer + encoder. `encode(prompts)` -> (states (B, L, d_model), mask (B, L) bool)."""

    def __init__(self, cfg: TextEncoderConfig, encoder: nn.Module, tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.config = cfg
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.pos_embedding: nn.Parameter | None = None  # (max_length, d_model) when cfg.abs_pos
        if cfg.abs_pos:
            self._add_positions()

    def _add_positions(self) -> None:
        weight = self.encoder.get_input_embeddings().weight
        self.pos_embedding = nn.Parameter(torch.zeros(self.config.max_length, self.dim, dtype=weight.dtype,
                                                      device=weight.device))

    def enable_abs_pos(self, init_scale: float = 0.0) -> None:
        """Add the position table to an encoder (a no-op when it has one). `init_scale` 0: zeros, so
        outputs stay the same until training moves it (slowly: a zero table gets no consistent
        gradient until the encoder uses positions). > 0: sinusoids at `init_scale` times the word
        embeddings' RMS, so word order is in the input from the first step (outputs change)."""
        if self.pos_embedding is not None:
            return
        self.config = replace(self.config, abs_pos=True)  # a copy: presets share their config
        self._add_positions()
        if init_scale > 0:
            with torch.no_grad():
                rms = self.encoder.get_input_embeddings().weight.float().pow(2).mean().sqrt()
                self.pos_embedding.copy_(sinusoid_table(*self.pos_embedding.shape) * init_scale * rms)

    @property
    def dim(self) -> int:
        return self.encoder.config.d_model

    def tokenize(self, prompts: list[str], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            list(prompts), padding="max_length", max_length=self.config.max_length, truncation=True,
            add_special_tokens=True, return_tensors="pt",
        )
        return batch["input_ids"].to(device), batch["attention_mask"].to(device).bool()  # (B, L) each

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, L) and mask (B, L) -> states (B, L, d_model), cross-attention mask (B, L).

        Differentiable (training calls this); `encode` wraps it for strings.
        """
        if self.pos_embedding is None:
            states = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state  # (B, L, d)
        else:
            embeds = self.encoder.get_input_embeddings()(input_ids)  # (B, L, d)
            embeds = embeds + self.pos_embedding[: input_ids.shape[1]].to(embeds.dtype)
            states = self.encoder(inputs_embeds=embeds, attention_mask=mask.long()).last_hidden_state
        states = states * mask[..., None].to(states.dtype)  # padded positions are exactly zero
        if not self.config.use_mask:
            mask = torch.ones_like(mask)  # Wan attends to the zero padding too
        return states, mask

    def encode(self, prompts: list[str], device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        device = device or next(self.encoder.parameters()).device
        return self(*self.tokenize(prompts, device))

    # ------------------------------------------------------------------ persistence

    def save_pretrained(self, encoder_folder: str | Path, tokenizer_folder: str | Path, dtype: torch.dtype | None = None) -> None:
        encoder_folder = Path(encoder_folder)
        encoder = self.encoder if dtype is None else _cast_copy(self.encoder, dtype)
        with _quiet_progress():
            encoder.save_pretrained(encoder_folder, safe_serialization=True)
        (encoder_folder / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        if self.pos_embedding is not None:
            table = self.pos_embedding.detach().to(dtype or self.pos_embedding.dtype).cpu().contiguous()
            save_file({"pos_embedding": table}, str(encoder_folder / POSITIONS_NAME))
        self.tokenizer.save_pretrained(tokenizer_folder)

    @classmethod
    def from_pretrained(
        cls, encoder_folder: str | Path, tokenizer_folder: str | Path | None = None,
        cfg: TextEncoderConfig | None = None, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
    ) -> TextEncoder:
        """Load from local folders; `cfg` defaults to our settings file, else to UMT5 Wan settings."""
        encoder_folder = Path(encoder_folder)
        if cfg is None:
            settings = encoder_folder / CONFIG_NAME
            cfg = TextEncoderConfig(**json.loads(settings.read_text())) if settings.exists() else wan_text_config()
        model_type = json.loads((encoder_folder / "config.json").read_text()).get("model_type", cfg.kind)
        model_cls = UMT5EncoderModel if model_type == "umt5" else T5EncoderModel  # the checkpoint decides
        with _quiet_progress():
            encoder = model_cls.from_pretrained(encoder_folder, dtype=dtype, local_files_only=True)
        if cfg.tokenizer == "byt5":
            tokenizer = ByT5Tokenizer()
        elif cfg.tokenizer == "words" and not (tokenizer_folder and (Path(tokenizer_folder) / "tokenizer.json").exists()):
            tokenizer = word_tokenizer()  # an older save without its vocabulary: the shipped one
        else:
            if tokenizer_folder is None or not Path(tokenizer_folder).exists():
                raise FileNotFoundError(f"tokenizer folder {tokenizer_folder} not found")
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, local_files_only=True)
        text = cls(cfg, encoder.to(device).eval(), tokenizer)
        if cfg.abs_pos:
            table = load_file(str(encoder_folder / POSITIONS_NAME))["pos_embedding"]  # missing file: an error
            with torch.no_grad():
                text.pos_embedding.copy_(table)
        return text


@contextmanager
def _quiet_progress():
    """No transformers progress bars for our small local loads (the CLI draws its own)."""
    was_disabled = hf_logging.is_progress_bar_enabled() is False
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            hf_logging.enable_progress_bar()


def _cast_copy(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    return copy.deepcopy(module).to(dtype)


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) sin/cos of each position at geometric frequencies, scaled to unit RMS."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freqs = 1.0 / 100.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # 32 positions at most
    angles = pos * freqs                                                           # (length, dim/2)
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).reshape(length, -1)[:, :dim]
    return (table * 2 ** 0.5).float()  # sin and cos of each angle: mean square 1/2 per channel


def wan_text_config() -> TextEncoderConfig:
    """Wan2.1's UMT5-XXL settings (the real shape comes from the checkpoint's config.json)."""
    return TextEncoderConfig(kind="umt5", tokenizer="folder", max_length=512, use_mask=False,
                             vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)


def word_tokenizer(words_file: str | Path = WORDS_FILE) -> PreTrainedTokenizerFast:
    """One id per word of a shipped vocabulary: lower-cased, NFKC, punctuation split off, unknown
    words -> <unk>, `</s>` appended. Ids follow the file's line order (<pad> 0, </s> 1, <unk> 2,
    as T5's config expects)."""
    vocab = {w: i for i, w in enumerate(Path(words_file).read_text().split())}
    for special in ("<pad>", "</s>", "<unk>"):
        if special not in vocab:
            raise ValueError(f"{words_file}: the vocabulary must list {special}")
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", vocab["</s>"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_text_encoder(cfg: TextEncoderConfig, seed: int | None = None) -> TextEncoder:
    """A fresh (random) encoder of the configured shape with a tokenizer that needs no files."""
    if cfg.tokenizer not in ("byt5", "words"):
        raise ValueError(f"a fresh text encoder needs tokenizer='words' or 'byt5' (got {cfg.tokenizer!r}); "
                         "load real ones with from_pretrained")
    tokenizer = word_tokenizer() if cfg.tokenizer == "words" else ByT5Tokenizer()
    if cfg.tokenizer == "words" and len(tokenizer) > cfg.vocab_size:
        raise ValueError(f"the word vocabulary has {len(tokenizer)} entries; vocab_size is {cfg.vocab_size}")
    if seed is not None:
        torch.manual_seed(seed)
    encoder = (UMT5EncoderModel if cfg.kind == "umt5" else T5EncoderModel)(cfg.t5_config())
    return TextEncoder(cfg, encoder.eval(), tokenizer)
