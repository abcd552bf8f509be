"""C2PA provenance: sign, read back with c2pa's Reader, the three verify states, atomic failure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import av
import c2pa
import numpy as np
import pytest

from service.safety import prompt_hash
from workers import provenance as pv
from workers.certificates import make_local_ca
from workers.cli import main as cli_main
from workers.media import decode_mp4, encode_mp4

ROOT = Path(__file__).resolve().parents[2]
INFO = pv.GenerationInfo(model="spacetime-tiny", weights_hash="f" * 64, seed=1234, num_inference_steps=20,
                         guidance_scale=5.0, prompt="a red circle moving left", negative_prompt="blurry",
                         width_px=64, height_px=48, num_frames=9, fps=8, video_id="video_abc")


def frames(seed: int = 0) -> np.ndarray:
    """A smooth moving gradient (T, H, W, 3): compresses like real video, unlike noise."""
    t, y, x = np.meshgrid(np.arange(9), np.arange(48), np.arange(64), indexing="ij")
    rgb = np.stack([(x * 4 + t * 8 + seed) % 256, (y * 5) % 256, (x + y + t * 16) % 256], axis=-1)
    return rgb.astype(np.uint8)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One unsigned MP4, and one signed with a local CA generated on first use."""
    root = tmp_path_factory.mktemp("provenance")
    settings = pv.ProvenanceSettings(signing_dir=root / "signing")
    unsigned = encode_mp4(frames(), root / "unsigned.mp4", fps=8, metadata=pv.metadata_tags(INFO))
    signed = pv.sign_mp4(unsigned, root / "signed.mp4", INFO, settings)
    return {"root": root, "unsigned": unsigned, "signed": signed, "ca": root / "signing" / "local-ca" / "ca.pem",
            "signing_dir": root / "signing"}


def test_manifest_reads_back_with_c2pa_reader(local: dict[str, Path]) -> None:
    with c2pa.Reader(str(local["signed"])) as reader:
        manifest = reader.get_active_manifest()
        assert reader.get_validation_state() == "Valid"
    assert manifest["claim_generator_info"][0]["name"] == "spacetime"
    assert manifest["claim_generator_info"][0]["version"] == pv.version()
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    (created,) = assertions["c2pa.actions.v2"]["actions"]
    assert created["action"] == "c2pa.created"
    assert created["digitalSourceType"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    generation = assertions["org.spacetime.generation"]
    assert generation["model"] == "spacetime-tiny" and generation["weights_hash"] == "f" * 64
    assert (generation["seed"], generation["num_inference_steps"], generation["guidance_scale"]) == (1234, 20, 5.0)
    assert generation["prompt_sha256"] == prompt_hash("a red circle moving left")
    assert "prompt" not in generation and b"a red circle moving left" not in local["signed"].read_bytes()


def test_signed_video_still_decodes_and_keeps_its_tags(local: dict[str, Path]) -> None:
    before, _ = decode_mp4(local["unsigned"])
    after, fps = decode_mp4(local["signed"])
    assert np.array_equal(before, after) and fps == 8
    with av.open(str(local["signed"])) as container:
        tags = dict(container.metadata)
    summary = json.loads(tags["comment"])
    assert summary["generator"] == f"spacetime/{pv.version()}" and summary["seed"] == 1234
    assert summary["prompt_sha256"] == prompt_hash(INFO.prompt) and "prompt" not in summary
    assert tags["title"] == "AI-generated video (spacetime-tiny)"


def test_prompt_text_only_when_configured(tmp_path: Path, local: dict[str, Path]) -> None:
    settings = pv.ProvenanceSettings(signing_dir=local["signing_dir"], include_prompt=True)
    signed = pv.sign_mp4(local["unsigned"], tmp_path / "with-prompt.mp4", INFO, settings)
    generation = pv.verify(signed)["manifest"]["generation"]
    assert generation["prompt"] == INFO.prompt and generation["negative_prompt"] == "blurry"
    assert json.loads(pv.metadata_tags(INFO, include_prompt=True)["comment"])["prompt"] == INFO.prompt


def test_three_states(local: dict[str, Path], tmp_path: Path) -> None:
    assert pv.verify(local["signed"])["state"] == "valid"
    assert pv.verify(local["signed"], trust_anchors=local["ca"])["state"] == "trusted"
    # a different CA as the anchor: the signature is fine but not trusted
    make_local_ca(tmp_path / "other")
    assert pv.verify(local["signed"], trust_anchors=tmp_path / "other" / "ca.pem")["state"] == "valid"
    unsigned = pv.verify(local["unsigned"])
    assert unsigned["state"] == "invalid" and unsigned["reason"] == "no C2PA manifest"


def test_a_flipped_byte_in_the_video_data_is_invalid(local: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(local["signed"].read_bytes())
    mdat = data.index(b"mdat")
    data[mdat + 200] ^= 0xFF
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(data)
    result = pv.verify(tampered, trust_anchors=local["ca"])
    assert result["state"] == "invalid"
    assert "assertion.bmffHash.mismatch" in result["failures"]


def test_a_flipped_byte_in_the_manifest_is_invalid(local: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(local["signed"].read_bytes())
    at = data.index(b"weights_hash")
    data[at + 20] ^= 0x01
    tampered = tmp_path / "tampered-manifest.mp4"
    tampered.write_bytes(data)
    assert pv.verify(tampered)["state"] == "invalid"


def test_local_ca_is_generated_once_and_kept(local: dict[str, Path], tmp_path: Path) -> None:
    ca_before = local["ca"].read_bytes()
    pv.sign_mp4(local["unsigned"], tmp_path / "again.mp4", INFO, pv.ProvenanceSettings(signing_dir=local["signing_dir"]))
    assert local["ca"].read_bytes() == ca_before
    assert pv.verify(tmp_path / "again.mp4", local["ca"])["state"] == "trusted"
    assert (local["signing_dir"] / "local-ca" / "signer.key").stat().st_mode & 0o077 == 0


def test_operator_certificate_chain(local: dict[str, Path], tmp_path: Path) -> None:
    make_local_ca(tmp_path / "operator")  # stands in for a chain an operator bought or issued
    settings = pv.ProvenanceSettings(signing_dir=tmp_path / "unused", signing_cert=tmp_path / "operator" / "signer.pem",
                                     signing_key=tmp_path / "operator" / "signer.key")
    signed = pv.sign_mp4(local["unsigned"], tmp_path / "operator.mp4", INFO, settings)
    assert pv.verify(signed, tmp_path / "operator" / "ca.pem")["state"] == "trusted"
    assert pv.verify(signed, local["ca"])["state"] == "valid"
    assert not (tmp_path / "unused").exists()  # no local CA made when the operator supplies one


def test_in_place_signing(local: dict[str, Path], tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    video.write_bytes(local["unsigned"].read_bytes())
    pv.sign_mp4(video, video, INFO, pv.ProvenanceSettings(signing_dir=local["signing_dir"]))
    assert pv.verify(video)["state"] == "valid"
    assert [p.name for p in tmp_path.iterdir()] == ["video.mp4"]


def test_failed_signing_leaves_nothing_behind(local: dict[str, Path], tmp_path: Path) -> None:
    make_local_ca(tmp_path / "broken")
    key = tmp_path / "broken" / "signer.key"
    key.write_bytes(key.read_bytes()[:60] + key.read_bytes()[90:])  # a damaged key
    settings = pv.ProvenanceSettings(signing_cert=tmp_path / "broken" / "signer.pem", signing_key=key)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(pv.SigningError):
        pv.sign_mp4(local["unsigned"], out / "video.mp4", INFO, settings)
    assert list(out.iterdir()) == []  # no half-written and no unsigned file
    # a previous signed file at dest stays as it was
    previous = out / "video.mp4"
    previous.write_bytes(local["signed"].read_bytes())
    with pytest.raises(pv.SigningError):
        pv.sign_mp4(local["unsigned"], previous, INFO, settings)
    assert previous.read_bytes() == local["signed"].read_bytes() and [p.name for p in out.iterdir()] == ["video.mp4"]


def test_key_that_does_not_match_the_certificate_fails(local: dict[str, Path], tmp_path: Path) -> None:
    make_local_ca(tmp_path / "a")
    make_local_ca(tmp_path / "b")
    settings = pv.ProvenanceSettings(signing_cert=tmp_path / "a" / "signer.pem", signing_key=tmp_path / "b" / "signer.key")
    with pytest.raises(pv.SigningError):
        pv.sign_mp4(local["unsigned"], tmp_path / "mismatch.mp4", INFO, settings)
    assert not (tmp_path / "mismatch.mp4").exists()


def test_half_configured_operator_signer_is_refused(local: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(pv.SigningError, match="both"):
        pv.sign_mp4(local["unsigned"], tmp_path / "x.mp4", INFO, pv.ProvenanceSettings(signing_cert=local["ca"]))


def test_settings_from_service_settings_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Fake:
        signing_dir = Path("/data/signing")
        signing_cert = None
        provenance_include_prompt = True

    monkeypatch.setenv("SPACETIME_SIGNING_CERT", "/etc/spacetime/chain.pem")
    monkeypatch.setenv("SPACETIME_SIGNING_DIR", "/ignored")  # the Settings field wins
    monkeypatch.setenv("SPACETIME_WATERMARK", "true")
    settings = pv.ProvenanceSettings.from_settings(Fake())
    assert settings.signing_dir == Path("/data/signing") and settings.include_prompt
    assert settings.signing_cert == Path("/etc/spacetime/chain.pem") and settings.watermark
    assert settings.signing_key is None and settings.trust_anchors is None
    monkeypatch.delenv("SPACETIME_WATERMARK")
    assert pv.ProvenanceSettings.from_settings(None).watermark is False


def test_watermark_marks_only_the_corner() -> None:
    plain = frames()
    marked = pv.apply_watermark(plain)
    assert marked.shape == plain.shape and marked.dtype == np.uint8
    changed = np.any(marked != plain, axis=(0, 3))  # (H, W)
    rows, cols = np.nonzero(changed)
    assert changed.sum() > 50
    assert rows.min() >= 48 // 2 and cols.min() >= 64 // 2  # bottom-right quadrant only
    with pytest.raises(ValueError, match="uint8"):
        pv.apply_watermark(plain.astype(np.float32))


def test_verify_command_reports_the_three_states(local: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["verify", str(local["signed"])]) == 0
    out = capsys.readouterr().out
    assert "VALID" in out and "trainedAlgorithmicMedia" in out and "spacetime/" in out and "seed" in out
    assert cli_main(["verify", str(local["signed"]), "--trust-anchor", str(local["ca"])]) == 0
    assert "TRUSTED" in capsys.readouterr().out
    assert cli_main(["verify", str(local["unsigned"]), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["state"] == "invalid"
    assert cli_main(["verify", str(local["root"] / "missing.mp4")]) == 2


def test_verify_command_in_a_real_process(local: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(local["signed"].read_bytes())
    data[data.index(b"mdat") + 200] ^= 0xFF
    (tmp_path / "tampered.mp4").write_bytes(data)
    result = subprocess.run([sys.executable, "-m", "workers.cli", "verify", str(tmp_path / "tampered.mp4"),
                             "--trust-anchor", str(local["ca"])], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1 and "INVALID" in result.stdout and "bmffHash.mismatch" in result.stdout


def test_unreadable_source_fails_inside_c2pa_and_leaves_nothing(local: dict[str, Path], tmp_path: Path) -> None:
    junk = tmp_path / "src" / "junk.mp4"
    junk.parent.mkdir()
    junk.write_bytes(b"\x00\x00\x10\x00free" + b"x" * 1000)
    out = tmp_path / "out"
    with pytest.raises(pv.SigningError, match="junk.mp4"):
        pv.sign_mp4(junk, out / "video.mp4", INFO, pv.ProvenanceSettings(signing_dir=local["signing_dir"]))
    assert list(out.iterdir()) == []


def test_write_signed_mp4_from_a_job_record(local: dict[str, Path], tmp_path: Path) -> None:
    job = {"model": "spacetime-tiny", "prompt": "a red circle moving left", "negative_prompt": "", "seed": "7",
           "size": "64x48", "fps": "8", "num_inference_steps": "20", "guidance_scale": "5.0"}
    info = pv.generation_info(job, weights_hash="ab" * 32, num_frames=9, video_id="video_1")
    settings = pv.ProvenanceSettings(signing_dir=local["signing_dir"])
    out = pv.write_signed_mp4(frames(), tmp_path / "job" / "video.mp4", 8, info, settings)
    result = pv.verify(out, local["ca"])
    assert result["state"] == "trusted" and [p.name for p in out.parent.iterdir()] == ["video.mp4"]
    generation = result["manifest"]["generation"]
    assert (generation["width_px"], generation["height_px"], generation["video_id"]) == (64, 48, "video_1")
    assert "negative_prompt_sha256" not in generation  # empty negative prompt: nothing to hash
    broken = pv.ProvenanceSettings(signing_cert=local["ca"], signing_key=local["ca"])  # a certificate is no key
    with pytest.raises(pv.SigningError):
        pv.write_signed_mp4(frames(), tmp_path / "failed" / "video.mp4", 8, info, broken)
    assert list((tmp_path / "failed").iterdir()) == []


def test_provenance_record_uses_the_local_ca_or_the_configured_anchors(local: dict[str, Path], tmp_path: Path) -> None:
    assert pv.provenance_record(local["signed"], pv.ProvenanceSettings(signing_dir=local["signing_dir"]))["state"] == "trusted"
    make_local_ca(tmp_path / "other")
    other = pv.ProvenanceSettings(signing_dir=local["signing_dir"], trust_anchors=tmp_path / "other" / "ca.pem")
    record = pv.provenance_record(local["signed"], other)
    assert record["state"] == "valid" and json.loads(json.dumps(record)) == record  # JSON-ready


def test_local_ca_made_once_when_processes_race(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from workers.certificates import ensure_local_ca

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: ensure_local_ca(tmp_path), range(4)))
    assert len(set(results)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["local-ca"]  # no staging folders left
    assert sorted(p.name for p in (tmp_path / "local-ca").iterdir()) == ["ca.key", "ca.pem", "signer.key", "signer.pem"]


@pytest.mark.parametrize("curve, alg", [("p256", "es256"), ("p384", "es384")])
def test_operator_key_in_openssl_default_form(local: dict[str, Path], tmp_path: Path, curve: str, alg: str) -> None:
    """An EC key in SEC1 form ("BEGIN EC PRIVATE KEY", what `openssl ecparam -genkey` writes) signs
    after conversion; P-384 picks ES384."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from workers.certificates import load_signing_key

    make_local_ca(tmp_path / "ca")
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((tmp_path / "ca" / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1() if curve == "p256" else ec.SECP384R1())
    leaf_template = x509.load_pem_x509_certificate((tmp_path / "ca" / "signer.pem").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(leaf_template.subject).issuer_name(ca.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30)))
    for ext in leaf_template.extensions:
        if ext.oid != x509.oid.ExtensionOID.SUBJECT_KEY_IDENTIFIER:
            builder = builder.add_extension(ext.value, ext.critical)
    leaf = builder.sign(ca_key, hashes.SHA256())
    chain = leaf.public_bytes(serialization.Encoding.PEM) + (tmp_path / "ca" / "ca.pem").read_bytes()
    (tmp_path / "chain.pem").write_bytes(chain)
    sec1 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())
    assert sec1.startswith(b"-----BEGIN EC PRIVATE KEY") and load_signing_key(sec1)[0] == alg
    (tmp_path / "signer.key").write_bytes(sec1)
    settings = pv.ProvenanceSettings(signing_cert=tmp_path / "chain.pem", signing_key=tmp_path / "signer.key")
    signed = pv.sign_mp4(local["unsigned"], tmp_path / "sec1.mp4", INFO, settings)
    result = pv.verify(signed, tmp_path / "ca" / "ca.pem")
    assert result["state"] == "trusted" and result["manifest"]["signature"]["alg"].lower() == alg


def test_a_remix_names_its_source_as_the_parent_ingredient(local: dict[str, Path], tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    settings = pv.ProvenanceSettings(signing_dir=local["signing_dir"])
    job = {"model": "spacetime-tiny", "seed": "5", "num_inference_steps": "20", "guidance_scale": "3.0",
           "prompt": "a green circle moving left", "size": "64x48", "fps": "8",
           "remixed_from_video_id": "video_abc", "strength": "0.6"}
    info = pv.generation_info(job, "f" * 64, 9, video_id="video_remix")
    remix = pv.write_signed_mp4(frames(seed=3), tmp_path / "remix.mp4", 8, info, settings, parent=local["signed"])
    result = pv.verify(remix)
    assert result["state"] == "valid", result
    manifest = result["manifest"]
    assert manifest["actions"] == ["c2pa.opened", "c2pa.edited"]
    assert manifest["digital_source_type"].endswith("/trainedAlgorithmicMedia")
    assert manifest["generation"]["remixed_from_video_id"] == "video_abc" and manifest["generation"]["strength"] == 0.6
    source_label = pv.verify(local["signed"])["manifest"]["label"]
    assert manifest["ingredients"] == [{"title": "video_abc.mp4", "relationship": "parentOf", "manifest": source_label}]
    with c2pa.Reader(str(remix)) as reader:  # the opened action points at that ingredient
        assertions = {a["label"]: a["data"] for a in reader.get_active_manifest()["assertions"]}
    opened = assertions["c2pa.actions.v2"]["actions"][0]
    assert opened["parameters"]["ingredients"][0]["url"].endswith("c2pa.ingredient.v3")
    assert pv.verify(local["signed"])["manifest"]["ingredients"] == []  # a plain video has none
    assert cli_main(["verify", str(remix)]) == 0
    assert f"ingredient:  video_abc.mp4 (parentOf, manifest {source_label})" in capsys.readouterr().out
