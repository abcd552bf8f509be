"""Certificates for C2PA signing: a local CA and a leaf generated on first use, and the signing
algorithm that fits an operator's key.

C2PA validators refuse a self-signed signing certificate, so the local setup is two certificates:
a CA and a leaf it issued with what C2PA asks of a signer: CA:FALSE, keyUsage digitalSignature,
extended key usage emailProtection. Both ES256, both valid for ten years; the CA's key is kept
(mode 0600) so an operator can issue more leaves under the same anchor.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 10 * 365


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
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_local_ca(folder: Path) -> None:
    """A CA (ca.pem, ca.key) and a leaf it issued (signer.pem = leaf + CA, signer.key), ES256.

    The leaf is what C2PA asks of a signing certificate: CA:FALSE, digitalSignature, EKU
    emailProtection, issued by a CA (self-signed leaves are rejected).
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=VALID_DAYS)
    ca = (x509.CertificateBuilder().subject_name(_name("Spacetime local CA")).issuer_name(_name("Spacetime local CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(signing_certs=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("Spacetime signer")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
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


def load_signing_key(key_pem: bytes) -> tuple[str, bytes]:
    """(C2PA algorithm name, the key as PKCS#8 PEM) for a PEM private key; ValueError when unusable.

    c2pa reads only PKCS#8 ("BEGIN PRIVATE KEY"); keys in the older SEC1 / PKCS#1 PEM forms that
    openssl writes by default are converted here, so operators can use either.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the signing key is not a readable unencrypted PEM private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name not in by_curve:
            raise ValueError(f"unsupported EC curve {key.curve.name} (use P-256, P-384 or P-521)")
        alg = by_curve[key.curve.name]
    elif isinstance(key, rsa.RSAPrivateKey):
        alg = "ps256"
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "ed25519"
    else:
        raise ValueError(f"unsupported signing key type {type(key).__name__}")
    return alg, _pem(key)
