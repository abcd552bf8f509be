"""Provenance: a signed C2PA manifest in every MP4, plain metadata tags, an optional watermark.

The manifest (made with c2pa-python) says who made the video and how:
- claim generator `spacetime/<version>`;
- `c2pa.actions`: one `c2pa.created` with digital source type `trainedAlgorithmicMedia`;
- `org.spacetime.generation`: model, weights hash, seed, steps, guidance, size, frames, fps and
  the sha256 of the prompt (the prompt text itself only when `include_prompt` is set).

It is signed with the operator's certificate chain and key, or, when none is configured, with a
leaf issued by a local CA generated on first use and kept in `signing_dir` (c2pa refuses
self-signed leaves, so there is always a CA above the leaf). Signing writes a temporary file
beside the destination and renames it only on success: a failed signing leaves nothing where the
signed file is expected.

`verify(path, trust_anchors)` answers valid / trusted / invalid; `spacetime verify FILE` prints it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import c2pa
import numpy as np
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from PIL import Image, ImageDraw, ImageFont

from service.safety import prompt_hash

GENERATION_LABEL = "org.spacetime.generation"
DIGITAL_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
MIME = "video/mp4"
_LEAF_DAYS, _CA_DAYS = 2 * 365, 10 * 365


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
    def from_settings(cls, settings: Any) -> "ProvenanceSettings":
        """Take the fields from the service Settings (SPACETIME_SIGNING_CERT, ...); defaults where absent."""
        fields = {"signing_dir": "signing_dir", "signing_cert": "signing_cert", "signing_key": "signing_key",
                  "trust_anchors": "trust_anchors", "include_prompt": "provenance_include_prompt",
                  "watermark": "watermark", "tsa_url": "tsa_url"}
        values = {ours: getattr(settings, theirs) for ours, theirs in fields.items()
                  if getattr(settings, theirs, None) is not None}
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


# ----------------------------------------------------------------------------- certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Spacetime (local)")])


def _key_usage(signing_certs: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=signing_certs,
                         crl_sign=signing_certs, encipher_only=False, decipher_only=False)


def _pem(obj: Any) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def make_local_ca(folder: Path) -> None:
    """A CA (ca.pem, ca.key) and a leaf it issued (signer.pem = leaf + CA, signer.key), ES256.

    The leaf is what C2PA asks of a signing certificate: CA:FALSE, digitalSignature, EKU
    emailProtection, issued by a CA (self-signed leaves are rejected).
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Spacetime local CA")).issuer_name(_name("Spacetime local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(signing_certs=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("Spacetime signer")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=_LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(signing_certs=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (("ca.pem", _pem(ca)), ("signer.pem", _pem(leaf) + _pem(ca)),
                       ("ca.key", _pem(ca_key)), ("signer.key", _pem(leaf_key))):
        (folder / name).write_bytes(data)
        if name.endswith(".key"):
            os.chmod(folder / name, 0o600)


def ensure_local_ca(signing_dir: Path) -> tuple[Path, Path, Path]:
    """(chain, key, CA) paths under signing_dir, generated on first use. Safe when several worker
    processes start at once: each builds in a private folder and one rename wins."""
    signing_dir = Path(signing_dir)
    local = signing_dir / "local-ca"
    if not (local / "signer.key").exists():
        signing_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".local-ca.", dir=signing_dir))
        try:
            make_local_ca(staging)
            os.rename(staging, local)  # atomic; fails if another process won the race
        except OSError:
            if not (local / "signer.key").exists():
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return local / "signer.pem", local / "signer.key", local / "ca.pem"


def _algorithm(key_pem: bytes) -> c2pa.C2paSigningAlg:
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"the signing key is not a readable unencrypted PEM private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": c2pa.C2paSigningAlg.ES256, "secp384r1": c2pa.C2paSigningAlg.ES384,
                    "secp521r1": c2pa.C2paSigningAlg.ES512}
        if key.curve.name not in by_curve:
            raise SigningError(f"unsupported EC curve {key.curve.name} (use P-256, P-384 or P-521)")
        return by_curve[key.curve.name]
    if isinstance(key, rsa.RSAPrivateKey):
        return c2pa.C2paSigningAlg.PS256
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return c2pa.C2paSigningAlg.ED25519
    raise SigningError(f"unsupported signing key type {type(key).__name__}")


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


# ----------------------------------------------------------------------------- signing


def manifest_definition(info: GenerationInfo, include_prompt: bool = False, title: str = "video.mp4") -> dict[str, Any]:
    return {
        "claim_generator_info": [{"name": "spacetime", "version": version()}],
        "title": title,
        "format": MIME,
        "assertions": [
            {"label": "c2pa.actions", "data": {"actions": [{
                "action": "c2pa.created", "digitalSourceType": DIGITAL_SOURCE_TYPE,
                "softwareAgent": {"name": "spacetime", "version": version()},
            }]}},
            {"label": GENERATION_LABEL, "data": info.assertion(include_prompt)},
        ],
    }


def sign_mp4(src: str | Path, dest: str | Path, info: GenerationInfo, settings: ProvenanceSettings) -> Path:
    """Write `src` with a signed C2PA manifest to `dest` (may be `src`: signs in place).

    Goes through a temporary file beside dest and an atomic rename; on any failure it raises
    `SigningError` and dest is exactly as it was before (absent, or the previous file).
    """
    src, dest = Path(src), Path(dest)
    chain_path, key_path = signer_files(settings)
    chain, key = chain_path.read_bytes(), key_path.read_bytes()
    alg = _algorithm(key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".signing.mp4", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg, chain, key, settings.tsa_url))
        with c2pa.Context(signer=signer) as context, \
                c2pa.Builder(manifest_definition(info, settings.include_prompt, dest.name), context=context) as builder, \
                open(src, "rb") as source, open(tmp, "w+b") as out:
            builder.sign(MIME, source, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except (c2pa.C2paError, OSError, ValueError) as exc:
        raise SigningError(f"signing {src.name} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest


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
        "claim_generator": f"{generator.get('name')}/{generator.get('version')}" if generator else manifest.get("claim_generator"),
        "title": manifest.get("title"),
        "actions": [a.get("action") for a in actions],
        "digital_source_type": next((a.get("digitalSourceType") for a in actions if a.get("digitalSourceType")), None),
        "generation": assertions.get(GENERATION_LABEL),
        "signature": manifest.get("signature_info", {}),
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
    reason = {"trusted": "signature and content valid; signer chains to a trust anchor",
              "valid": "signature and content valid" + ("; signer not under the given trust anchors" if trust_anchors else ""),
              "invalid": "manifest or content does not validate: " + ", ".join(f for f in failures if f != "signingCredential.untrusted")}[state]
    return {"state": state, "reason": reason, "c2pa_validation_state": c2pa_state, "failures": failures,
            "manifest": _summary(manifest)}


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
            for key, value in (manifest.get("generation") or {}).items():
                print(f"  {key + ':':<24} {value}")
    return 0 if result["state"] in ("valid", "trusted") else 1
