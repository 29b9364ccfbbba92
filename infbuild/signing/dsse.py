"""DSSE envelopes in Sigstore bundles, signed with EC keys (``cryptography``): the format OpenSSF model-signing writes
for key signing (``model_signing sign key``) and cosign writes for attestations, so their verifiers check ours.

A bundle is ``{"mediaType": BUNDLE_TYPE, "verificationMaterial": {"publicKey": {"hint": KEYID}, "tlogEntries": []},
"dsseEnvelope": {"payload": b64, "payloadType": ..., "signatures": [{"sig": b64, "keyid": ""}]}}``; the signature is
ECDSA-SHA256 over DSSE's pre-authentication encoding of the payload. Nothing here trusts a bundle: ``open_bundle``
answers with the payload only when one of the given keys signed it."""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import InfbuildError
from ..jsonio import loads_bounded

if TYPE_CHECKING:  # cryptography is imported where keys are used: a no-op build never loads it
    from cryptography.hazmat.primitives.asymmetric import ec

BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MAX_BUNDLE_BYTES = 16 << 20  # a bundle lists digests: anything larger is not one


class KeyFileError(InfbuildError):
    """A key file that cannot be used (missing, not PEM, wrong curve, wrong passphrase)."""


class BadSignature(Exception):
    """A signature that does not prove what it must (missing, malformed, untrusted key, not matching): the reason is
    the message, shown to users by the caller with what was being checked."""


def key_id(public: ec.EllipticCurvePublicKey) -> str:
    """sha256 of the key's PEM SubjectPublicKeyInfo: model-signing's key hint."""
    from cryptography.hazmat.primitives import serialization

    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


def _check_curve(public: Any, where: str) -> ec.EllipticCurvePublicKey:
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        kind = public.curve.name if isinstance(public, ec.EllipticCurvePublicKey) else type(public).__name__
        raise KeyFileError(f"{where}: not an EC P-256 key ({kind}); make one with: openssl ecparam -name prime256v1 "
                        "-genkey -noout -out KEY.pem && openssl ec -in KEY.pem -pubout -out KEY.pub")
    return public


@dataclass(frozen=True)
class PublicKey:
    key: ec.EllipticCurvePublicKey
    source: str  # where it came from, for messages

    @property
    def id(self) -> str:
        return key_id(self.key)

    @property
    def short(self) -> str:
        return self.id[:16]

    @classmethod
    def read(cls, path: Path) -> PublicKey:
        """A PEM public key (``openssl ec -pubout``); a private key file is accepted too (its public half)."""
        from cryptography.hazmat.primitives import serialization

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read the public key ({exc.strerror or exc})") from None
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError:
            try:
                public = serialization.load_pem_private_key(data, None).public_key()
            except (ValueError, TypeError):
                raise KeyFileError(f"{path}: not a PEM public key") from None
        return cls(_check_curve(public, str(path)), str(path))

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class SigningKey:
    key: ec.EllipticCurvePrivateKey
    source: str

    @property
    def public(self) -> PublicKey:
        return PublicKey(self.key.public_key(), self.source)

    @classmethod
    def read(cls, path: Path, passphrase: bytes | None = None) -> SigningKey:
        """A PEM EC P-256 private key (``openssl ecparam -name prime256v1 -genkey``), optionally encrypted."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read the signing key ({exc.strerror or exc})") from None
        try:
            private = serialization.load_pem_private_key(data, passphrase)
        except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
            raise KeyFileError(f"{path}: {exc}") from None
        except ValueError:
            raise KeyFileError(f"{path}: not a PEM private key, or the passphrase is wrong") from None
        _check_curve(private.public_key(), str(path))
        assert isinstance(private, ec.EllipticCurvePrivateKey)  # a P-256 public half has an EC private half
        return cls(private, str(path))

    @classmethod
    def generate(cls, source: str) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric import ec

        return cls(ec.generate_private_key(ec.SECP256R1()), source)

    def pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def bundle(self, payload: bytes, payload_type: str = IN_TOTO_PAYLOAD) -> dict[str, Any]:
        """A Sigstore bundle holding a DSSE envelope of ``payload`` signed with this key."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        signature = self.key.sign(pae(payload_type, payload), ec.ECDSA(hashes.SHA256()))
        return {"mediaType": BUNDLE_TYPE,
                "verificationMaterial": {"publicKey": {"hint": self.public.id}, "tlogEntries": []},
                "dsseEnvelope": {"payload": base64.b64encode(payload).decode(), "payloadType": payload_type,
                                 "signatures": [{"sig": base64.b64encode(signature).decode(), "keyid": ""}]}}

    def sign_blob(self, data: bytes) -> bytes:
        """ECDSA-SHA256 over ``data`` (DER), as cosign signs a simple-signing payload."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        return self.key.sign(data, ec.ECDSA(hashes.SHA256()))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def open_bundle(bundle: Any, trusted: Mapping[str, PublicKey], payload_type: str = IN_TOTO_PAYLOAD) -> tuple[Any, PublicKey]:
    """The JSON payload of a bundle one of ``trusted`` (key id -> key) signed, with that key; else BadSignature."""
    from cryptography import exceptions
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        envelope = bundle["dsseEnvelope"]
        hint = (bundle.get("verificationMaterial") or {}).get("publicKey", {}).get("hint")
        payload = base64.b64decode(envelope["payload"], validate=True)
        signatures = envelope["signatures"]
        if envelope["payloadType"] != payload_type or not isinstance(signatures, list) or not signatures:
            raise BadSignature(f"not a signed {payload_type} envelope")
        raw_signatures = [base64.b64decode(s["sig"], validate=True) for s in signatures]
    except BadSignature:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, binascii.Error):
        raise BadSignature("malformed signature bundle") from None
    if bundle.get("mediaType") != BUNDLE_TYPE:
        raise BadSignature(f"not a Sigstore bundle ({str(bundle.get('mediaType'))[:60]})")
    candidates = [trusted[hint]] if isinstance(hint, str) and hint in trusted else []
    if not candidates:
        shown = f"key {str(hint)[:16]}" if hint else "an unnamed key"
        raise BadSignature(f"signed by {shown}, which is not trusted")
    message = pae(payload_type, payload)
    for key in candidates:
        for raw in raw_signatures:
            try:
                key.key.verify(raw, message, ec.ECDSA(hashes.SHA256()))
            except exceptions.InvalidSignature:
                continue
            try:
                return json.loads(payload), key
            except (ValueError, RecursionError):
                raise BadSignature("the signed payload is not JSON") from None
    raise BadSignature(f"the signature does not verify with key {candidates[0].short} (forged or altered)")


def read_bundle(path: Path) -> Any:
    """A bundle file's JSON (bounded), or BadSignature naming why it cannot be read."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise BadSignature(f"no signature ({path.name} is missing)") from None
    except OSError as exc:
        raise BadSignature(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    if len(raw) > MAX_BUNDLE_BYTES:
        raise BadSignature(f"{path.name} is larger than a signature can be")
    try:
        return loads_bounded(raw, MAX_BUNDLE_BYTES)
    except ValueError:
        raise BadSignature(f"{path.name} is not JSON") from None
