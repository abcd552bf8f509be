"""Provenance: a signed C2PA manifest in every MP4, plain metadata tags, an optional watermark.

The manifest (made with c2pa-python) says who made the video and how:
- claim generator `spacetime/<version>`;
- `c2pa.actions`: one `c2pa.created` with digital source type `trainedAlgorithmicMedia`; for a
  remix, `c2pa.opened` (the source video, a `parentOf` ingredient carrying its own signed
  manifest) then `c2pa.edited` with the same digital source type;
- `org.spacetime.generation`: model, weights hash, seed, steps, guidance, size, frames, fps and
  the sha256 of the prompt (the prompt text itself only when `include_prompt` is set); for a
  remix also the source's id and the strength.

It is signed with the operator's certificate chain and key, or, when none is configured, with a
leaf issued by a local CA generated on first use and kept in `signing_dir` (c2pa refuses
self-signed leaves, so there is always a CA above the leaf). Signing writes a temporary file
beside the destination and renames it only on success: a failed signing leaves nothing where the
signed file is expected.

`verify(path, trust_anchors)` answers valid / trusted / invalid; `spacetime verify FILE` prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.safety import prompt_hash
from workers.certificates import ensure_local_ca, load_signing_key
from workers.media import encode_mp4

GENERATION_LABEL = "org.spacetime.generation"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = "video/mp4"


class SigningError(RuntimeError):
    """Signing failed (bad certificate or key, unreadable video); nothing was written at dest."""


@lru_cache
def version() -> str:
    """The package version: installed metadata, else pyproject.toml."""
    try:
        from importlib.metadata import version as installed

        return installed("spacetime")
    except Exception:
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]


@dataclass(frozen=True)
class ProvenanceSettings:
    signing_dir: Path = Path("var/signing")  # the local CA and leaf live here when no cert is given
    signing_cert: Path | None = None  # operator PEM chain, leaf first (then intermediates)
    signing_key: Path | None = None  # operator PEM private key of the leaf
    trust_anchors: Path | None = None  # PEM file of CA certificates that make a manifest "trusted"
    include_prompt: bool = False  # put the prompt text itself in the manifest and tags
    watermark: bool = False  # draw a small visible mark on every frame
    tsa_url: str | None = None  # RFC 3161 time-stamp authority (none: no trusted time stamp)

    @classmethod
    def from_settings(cls, settings: Any = None) -> "ProvenanceSettings":
        """From the service Settings where it has the field, else from the environment
        (SPACETIME_SIGNING_DIR, _SIGNING_CERT, _SIGNING_KEY, _TRUST_ANCHORS, _PROVENANCE_INCLUDE_PROMPT,
        _WATERMARK, _TSA_URL), else the defaults."""
        fields = {"signing_dir": "signing_dir", "signing_cert": "signing_cert", "signing_key": "signing_key",
                  "trust_anchors": "trust_anchors", "include_prompt": "provenance_include_prompt",
                  "watermark": "watermark", "tsa_url": "tsa_url"}
        values: dict[str, Any] = {}
        for ours, theirs in fields.items():
            value = getattr(settings, theirs, None)
            if value is None and os.environ.get(f"SPACETIME_{theirs.upper()}"):
                value = os.environ[f"SPACETIME_{theirs.upper()}"]
                if ours in ("include_prompt", "watermark"):
                    value = value.strip().lower() in ("1", "true", "yes", "on")
                elif ours != "tsa_url":
                    value = Path(value)
            if value is not None:
                values[ours] = value
        return cls(**values)


@dataclass(frozen=True)
class GenerationInfo:
    """What the generation assertion and the metadata tags record about one video."""

    model: str
    weights_hash: str
    seed: int
    num_inference_steps: int
    guidance_scale: float
    prompt: str
    negative_prompt: str = ""
    width_px: int | None = None
    height_px: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    video_id: str | None = None
    remixed_from_video_id: str | None = None
    strength: float | None = None

    def assertion(self, include_prompt: bool = False) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None and k not in ("prompt", "negative_prompt")}
        data["prompt_sha256"] = prompt_hash(self.prompt)
        if self.negative_prompt:
            data["negative_prompt_sha256"] = prompt_hash(self.negative_prompt)
        if include_prompt:
            data["prompt"] = self.prompt
            if self.negative_prompt:
                data["negative_prompt"] = self.negative_prompt
        return data


# ----------------------------------------------------------------------------- signing


def signer_files(settings: ProvenanceSettings) -> tuple[Path, Path]:
    """The operator's (chain, key), or the local CA's leaf when neither is configured."""
    if settings.signing_cert or settings.signing_key:
        if not (settings.signing_cert and settings.signing_key):
            raise SigningError("set both SPACETIME_SIGNING_CERT and SPACETIME_SIGNING_KEY, or neither")
        for path in (settings.signing_cert, settings.signing_key):
            if not Path(path).is_file():
                raise SigningError(f"signing file {path} does not exist")
        return Path(settings.signing_cert), Path(settings.signing_key)
    chain, key, _ = ensure_local_ca(settings.signing_dir)
    return chain, key


PARENT_ID = "parent"  # the instance id that links a remix's c2pa.opened action to its source ingredient


def manifest_definition(info: GenerationInfo, include_prompt: bool = False,
                        title: str = "video.mp4", has_parent: bool = False) -> dict[str, Any]:
    """`has_parent`: a remix whose source video goes in as the `parentOf` ingredient (sign_mp4)."""
    made = {"digitalSourceType": DIGITAL_SOURCE_TYPE, "softwareAgent": {"name": "spacetime", "version": version()}}
    actions = [{"action": "c2pa.created", **made}]
    if has_parent:
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": [PARENT_ID]}},
                   {"action": "c2pa.edited", **made, "description": "remixed with a new prompt"}]
    return {
        "claim_generator_info": [{"name": "spacetime", "version": version()}],
        "title": title,
        "format": MIME,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": actions}},
            {"label": GENERATION_LABEL, "data": info.assertion(include_prompt)},
        ],
    }


def sign_mp4(src: str | Path, dest: str | Path, info: GenerationInfo, settings: ProvenanceSettings,
             parent: Path | None = None) -> Path:
    """Write `src` with a signed C2PA manifest to `dest` (may be `src`: signs in place).
    `parent`: the MP4 a remix was made from; it becomes the manifest's `parentOf` ingredient
    (with its own manifest, which verifiers then check too).

    Goes through a temporary file beside dest and an atomic rename; on any failure it raises
    `SigningError` and dest is exactly as it was before (absent, or the previous file).
    """
    src, dest = Path(src), Path(dest)
    chain_path, key_path = signer_files(settings)
    chain = chain_path.read_bytes()
    try:
        alg, key = load_signing_key(key_path.read_bytes())
    except ValueError as exc:
        raise SigningError(str(exc)) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".signing.mp4", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, settings.tsa_url))
        definition = manifest_definition(info, settings.include_prompt, dest.name, has_parent=parent is not None)
        with c2pa.Context(signer=signer) as context, c2pa.Builder(definition, context=context) as builder, \
                open(src, "rb") as source, open(tmp, "w+b") as out:
            if parent is not None:
                with open(parent, "rb") as ingredient:
                    builder.add_ingredient({"title": f"{info.remixed_from_video_id or parent.stem}.mp4",
                                            "relationship": "parentOf", "instance_id": PARENT_ID}, MIME, ingredient)
            builder.sign(MIME, source, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except (c2pa.C2paError, OSError, ValueError) as exc:
        raise SigningError(f"signing {src.name} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def generation_info(job: Mapping[str, str], weights_hash: str, num_frames: int,
                    video_id: str | None = None) -> GenerationInfo:
    """From a job record (string fields, as the job store keeps them) and the pipeline's weights hash."""
    width_px, height_px = (int(v) for v in job["size"].lower().split("x"))
    return GenerationInfo(
        model=job["model"], weights_hash=weights_hash, seed=int(job["seed"]),
        num_inference_steps=int(job["num_inference_steps"]), guidance_scale=float(job["guidance_scale"]),
        prompt=job["prompt"], negative_prompt=job.get("negative_prompt") or "", width_px=width_px,
        height_px=height_px, num_frames=num_frames, fps=int(job["fps"]), video_id=video_id,
        remixed_from_video_id=job.get("remixed_from_video_id") or None,
        strength=float(job["strength"]) if job.get("remixed_from_video_id") else None,
    )


def write_signed_mp4(frames: np.ndarray, dest: str | Path, fps: int, info: GenerationInfo,
                     settings: ProvenanceSettings, parent: Path | None = None) -> Path:
    """Encode (with `metadata_tags`) beside dest, sign into dest, drop the unsigned copy.

    Either dest ends up a signed MP4 or `SigningError` is raised and dest is untouched. The
    watermark is not applied here: apply it to the frames first, so thumbnails carry it too.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    unsigned = dest.with_name(f".{dest.stem}.unsigned.mp4")
    try:
        encode_mp4(frames, unsigned, fps=fps, metadata=metadata_tags(info, settings.include_prompt))
        return sign_mp4(unsigned, dest, info, settings, parent)
    finally:
        unsigned.unlink(missing_ok=True)


def metadata_tags(info: GenerationInfo, include_prompt: bool = False) -> dict[str, str]:
    """Plain MP4 container tags with the same summary as the manifest (for tools that ignore C2PA).

    Pass to `workers.media.encode_mp4(..., metadata=...)`. Only keys the MP4 muxer writes without
    extra flags are used.
    """
    summary = {"generator": f"spacetime/{version()}", "digital_source_type": "trainedAlgorithmicMedia",
               **info.assertion(include_prompt)}
    return {
        "title": f"AI-generated video ({info.model})",
        "artist": f"spacetime/{version()}",
        "description": "Made by a text-to-video model (trainedAlgorithmicMedia). Signed C2PA manifest "
                       "embedded; check it with `spacetime verify FILE`.",
        "comment": json.dumps(summary, sort_keys=True),
    }


def apply_watermark(frames: np.ndarray, text: str = "AI") -> np.ndarray:
    """A small translucent label in the bottom-right corner of every frame (T, H, W, 3) uint8."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    _, height, width, _ = frames.shape
    font = ImageFont.load_default(size=max(8, min(height, width) // 10))
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    x0, y0 = width - (right - left) - 3 * pad, height - (bottom - top) - 3 * pad
    draw.rectangle((x0, y0, width - pad, height - pad), fill=(0, 0, 0, 110))
    draw.text((x0 + pad - left, y0 + pad - top), text, font=font, fill=(255, 255, 255, 220))
    rgba = np.asarray(overlay, dtype=np.float32) / 255.0  # (H, W, 4), drawn once, blended into every frame
    alpha = rgba[None, :, :, 3:]
    out = frames.astype(np.float32) * (1 - alpha) + rgba[None, :, :, :3] * 255.0 * alpha
    return out.round().clip(0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- reading and verifying


def _reader(path: Path, trust_anchors: Path | None) -> c2pa.Reader | None:
    if trust_anchors is None:
        return c2pa.Reader.try_create(str(path))
    anchors = Path(trust_anchors).read_text()
    context = c2pa.Context.from_dict({"trust": {"trust_anchors": anchors}, "verify": {"verify_trust": True}})
    return c2pa.Reader.try_create(str(path), None, None, context)


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The active manifest as c2pa reports it (a dict), or None when the file carries none."""
    reader = _reader(Path(path), None)
    if reader is None:
        return None
    with reader:
        return reader.get_active_manifest()


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    assertions = {a["label"]: a.get("data", {}) for a in manifest.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    generator = next(iter(manifest.get("claim_generator_info", [])), {})
    return {
        "label": manifest.get("label"),
        "claim_generator": (f"{generator.get('name')}/{generator.get('version')}" if generator
                            else manifest.get("claim_generator")),
        "title": manifest.get("title"),
        "actions": [a.get("action") for a in actions],
        "digital_source_type": next((a.get("digitalSourceType") for a in actions if a.get("digitalSourceType")), None),
        "generation": assertions.get(GENERATION_LABEL),
        "signature": manifest.get("signature_info", {}),
        "ingredients": [{"title": i.get("title"), "relationship": i.get("relationship"),
                         "manifest": i.get("active_manifest")} for i in manifest.get("ingredients", [])],
    }


def verify(path: str | Path, trust_anchors: str | Path | None = None) -> dict[str, Any]:
    """{"state": "valid" | "trusted" | "invalid", "manifest": summary | None, "failures": [...], ...}.

    valid: the manifest and the video's hash check out. trusted: also, the signer chains to one of
    `trust_anchors` (a PEM file of CA certificates). invalid: no manifest, a broken signature, or
    content that no longer matches (a flipped byte in the video).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        reader = _reader(path, Path(trust_anchors) if trust_anchors else None)
    except c2pa.C2paError as exc:
        return {"state": "invalid", "reason": f"unreadable manifest: {exc}", "manifest": None, "failures": []}
    if reader is None:
        return {"state": "invalid", "reason": "no C2PA manifest", "manifest": None, "failures": []}
    with reader:
        manifest = reader.get_active_manifest() or {}
        c2pa_state = reader.get_validation_state() or "Invalid"
        results = (reader.get_validation_results() or {}).get("activeManifest", {})
    failures = [f.get("code") for f in results.get("failure", [])]
    state = {"Trusted": "trusted", "Valid": "valid"}.get(c2pa_state, "invalid")
    if state == "trusted" and not trust_anchors:
        state = "valid"  # trusted only means something against anchors the caller chose
    if state == "trusted":
        reason = "signature and content valid; signer chains to a trust anchor"
    elif state == "valid":
        reason = "signature and content valid" + ("; signer not under the given trust anchors" if trust_anchors else "")
    else:
        broken = [f for f in failures if f != "signingCredential.untrusted"]
        reason = "manifest or content does not validate: " + (", ".join(broken) or c2pa_state)
    return {"state": state, "reason": reason, "c2pa_validation_state": c2pa_state, "failures": failures,
            "manifest": _summary(manifest)}


def provenance_record(path: str | Path, settings: ProvenanceSettings) -> dict[str, Any]:
    """`verify` against the configured trust anchors, or the local CA when it signed: the JSON a
    worker stores beside the video for `GET /v1/videos/{id}/provenance`."""
    anchors = settings.trust_anchors
    if anchors is None and not settings.signing_cert:
        local_ca = Path(settings.signing_dir) / "local-ca" / "ca.pem"
        anchors = local_ca if local_ca.is_file() else None
    return verify(path, anchors)


# ----------------------------------------------------------------------------- `spacetime verify`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, help="the MP4 to check")
    parser.add_argument("--trust-anchor", type=Path, default=os.environ.get("SPACETIME_TRUST_ANCHORS") or None,
                        help="PEM file of CA certificates; a manifest signed under one is 'trusted' "
                             "(default: $SPACETIME_TRUST_ANCHORS)")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")


def run(args: argparse.Namespace) -> int:
    """Exit 0 for valid or trusted, 1 for invalid, 2 when the file or anchor cannot be read."""
    for path in (args.file, args.trust_anchor):
        if path is not None and not Path(path).is_file():
            print(f"spacetime verify: {path} does not exist", file=sys.stderr)
            return 2
    result = verify(args.file, args.trust_anchor)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        manifest = result["manifest"] or {}
        print(f"{args.file}: {result['state'].upper()} ({result['reason']})")
        if manifest:
            signer = manifest.get("signature", {})
            print(f"  generator:   {manifest.get('claim_generator')}")
            print(f"  actions:     {', '.join(a for a in manifest.get('actions', []) if a)}")
            print(f"  source type: {manifest.get('digital_source_type')}")
            print(f"  signed by:   {signer.get('common_name')} (issuer {signer.get('issuer')}, {signer.get('alg')})")
            for ingredient in manifest.get("ingredients", []):
                print(f"  ingredient:  {ingredient['title']} ({ingredient['relationship']}, manifest "
                      f"{ingredient['manifest'] or 'none'})")
            for key, value in (manifest.get("generation") or {}).items():
                print(f"  {key + ':':<24} {value}")
    return 0 if result["state"] in ("valid", "trusted") else 1
