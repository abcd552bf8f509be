"""Does the text encoder bind words to their own phrase? Linear probes on two-object captions.

    python bench/text_probe.py                          # the shipped spacetime-tiny
    python bench/text_probe.py /path/to/pipeline ...    # any pipeline folders, side by side

For each two-object shapes-world caption ("a red circle moving left and a blue square rising"),
the encoder's output state at each object's shape word is the feature. A linear classifier
trained on 75 % of them is scored on the rest, for three targets:

- the colour of the same object (a bag of words knows both colours but not which is its own:
  about 50 % when the colours differ, as they always do; an encoder that binds: near 100 %);
- the motion of the same object (the same, blurred by pairs that share a motion);
- whether the word is in the first or the second phrase (chance: 50 %).

Beside each, the same probe on the input word embedding alone (no context: the floor). The
DiT reads the prompt through cross-attention to these states only, so what the probes cannot
find there, the video cannot follow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from model.data.captions import SHAPE_WORDS, canonical_caption, random_caption  # noqa: E402
from model.data.shapes import COLOURS, MOTIONS, sample_scene  # noqa: E402

TARGETS = (("own colour", "colour", COLOURS), ("own motion", "motion", MOTIONS), ("phrase index", None, (0, 1)))


def shape_word_states(text_encoder, captions: list[str], batch: int = 500) -> tuple[list, list, list]:
    """-> per caption, the (output state, input embedding) at each shape word, in order."""
    tok = text_encoder.tokenizer
    shape_ids = {tok.convert_tokens_to_ids(w) for words in SHAPE_WORDS.values() for w in words}
    states_out, embeds_out, positions = [], [], []
    with torch.no_grad():
        for i in range(0, len(captions), batch):
            ids, mask = text_encoder.tokenize(captions[i:i + batch])
            states, _ = text_encoder(ids, mask)                          # (B, L, d)
            embeds = text_encoder.encoder.get_input_embeddings()(ids)   # (B, L, d)
            for b in range(ids.shape[0]):
                pos = [j for j in range(ids.shape[1]) if int(ids[b, j]) in shape_ids]
                positions.append(pos)
                states_out.append(states[b, pos].float())
                embeds_out.append(embeds[b, pos].float())
    return states_out, embeds_out, positions


def linear_probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 400, seed: int = 0) -> float:
    """Held-out accuracy of a softmax classifier trained on the first 75 % of (x, y)."""
    torch.manual_seed(seed)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    n = int(0.75 * len(y))
    head = torch.nn.Linear(x.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(x[:n]), y[:n]).backward()
        opt.step()
    with torch.no_grad():
        return float((head(x[n:]).argmax(1) == y[n:]).float().mean())


def probe(text_encoder, num_captions: int = 4000, canonical: bool = False, seed: int = 0) -> dict[str, tuple[float, float]]:
    """-> {target: (accuracy on encoder output, accuracy on word embeddings)}."""
    rng = np.random.default_rng(seed)
    scenes = [sample_scene(rng, "train", 2) for _ in range(num_captions)]
    captions = [canonical_caption(s) if canonical else random_caption(s, rng) for s in scenes]
    states, embeds, positions = shape_word_states(text_encoder, captions)
    rows = [(s, e, scene) for s, e, pos, scene in zip(states, embeds, positions, scenes) if len(pos) == 2]
    x = torch.cat([s for s, _, _ in rows])  # (2 * n, d): first object's word, then the second's
    x_embed = torch.cat([e for _, e, _ in rows])
    out = {}
    for name, attr, values in TARGETS:
        if attr is None:
            y = torch.tensor([k for _ in rows for k in (0, 1)])
        else:
            y = torch.tensor([values.index(getattr(o, attr)) for _, _, scene in rows for o in scene.objects])
        out[name] = (linear_probe(x, y, len(values)), linear_probe(x_embed, y, len(values)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=["spacetime-tiny"], help="preset names or pipeline folders")
    parser.add_argument("--captions", type=int, default=4000)
    parser.add_argument("--canonical", action="store_true", help="eval-style captions instead of training-style")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    from model.pipeline import load_pipeline

    print(f"{args.captions} two-object captions ({'canonical' if args.canonical else 'training-style'}), "
          "linear probes at each shape word; held-out accuracy, encoder output / word embedding only")
    print(f"{'model':<40} " + " ".join(f"{name:>16}" for name, _, _ in TARGETS))
    for model in args.models:
        text = load_pipeline(model, device="cpu").text_encoder.float().eval()
        scores = probe(text, args.captions, args.canonical)
        cells = " ".join(f"{out:>8.1%} / {emb:>5.1%}" for out, emb in scores.values())
        print(f"{str(model)[-40:]:<40} {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
