"""Ed25519 keys and signatures in minisign's formats, so Debian's `minisign -V` checks them too.

Public key file:  "untrusted comment: …" then base64("Ed" ‖ key id (8) ‖ public key (32)).
Secret key file:  minisign's layout with no key encryption (KDF "\\0\\0"): base64("Ed" ‖ "\\0\\0" ‖
                  "B2" ‖ salt (32) ‖ opslimit (8) ‖ memlimit (8) ‖ key id ‖ secret key (64) ‖
                  blake2b-256 checksum (32)). Keep it like any private key; in CI it comes from a
                  secret.
Signature file:   "untrusted comment: …", base64("ED" ‖ key id ‖ Ed25519(blake2b-512(file))),
                  "trusted comment: …", base64(Ed25519(signature ‖ trusted comment)).
"""
from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, PublicFormat, NoEncryption

from .manifest import read_small_file, text_lines
from .models import UsageError

MAX_KEY_FILE = 64 * 1024  # key and signature files are a few hundred bytes


class SignatureError(ValueError):
    """A signature, key or signed file that does not check out; the message says which."""


@dataclass(frozen=True)
class PublicKey:
    key_id: bytes
    key: bytes

    def text(self) -> str:
        return f"untrusted comment: minisign public key {key_id_text(self.key_id)}\n{self.line()}\n"

    def line(self) -> str:
        """The key's base64 line, as in a .pub file."""
        return base64.b64encode(b"Ed" + self.key_id + self.key).decode()


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    seed: bytes  # the 32-byte Ed25519 seed
    public: bytes

    def text(self) -> str:
        sk = self.seed + self.public  # minisign stores libsodium's 64-byte secret key
        checksum = hashlib.blake2b(b"Ed" + self.key_id + sk, digest_size=32).digest()
        body = (b"Ed" + b"\x00\x00" + b"B2" + bytes(32) + bytes(8) + bytes(8) + self.key_id + sk + checksum)
        return "untrusted comment: acta-mirror secret key (minisign format, not encrypted)\n" \
               f"{base64.b64encode(body).decode()}\n"


def generate() -> tuple[SecretKey, PublicKey]:
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = os.urandom(8)
    return SecretKey(key_id, seed, public), PublicKey(key_id, public)


def _payload(path: str | os.PathLike, what: str) -> bytes:
    try:
        text = read_small_file(path, MAX_KEY_FILE).decode("utf-8")
        lines = [ln for ln in text_lines(text) if ln.strip()]
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        why = exc.__class__.__name__ if isinstance(exc, (OSError, UnicodeDecodeError)) else exc
        raise UsageError(f"{path}: cannot read the {what} ({why})") from None
    body = [ln for ln in lines if not ln.startswith("untrusted comment:")]
    try:
        return base64.b64decode(body[0], validate=True)
    except (IndexError, ValueError):
        raise UsageError(f"{path}: not a minisign {what}") from None


def load_public(path: str | os.PathLike) -> PublicKey:
    return parse_public(base64.b64encode(_payload(path, "public key")).decode(), str(path))


def parse_public(line: str, name: str = "public key") -> PublicKey:
    """A public key from its base64 line (the second line of a minisign .pub file)."""
    bad = UsageError(f"{name}: not a minisign Ed25519 public key")
    try:
        raw = base64.b64decode(line, validate=True)
    except (ValueError, TypeError):
        raise bad from None
    if len(raw) != 42 or raw[:2] != b"Ed":
        raise bad
    return PublicKey(raw[2:10], raw[10:])


def key_id_text(key_id: bytes) -> str:
    """A key ID as minisign prints it (the little-endian number, upper-case hex)."""
    return key_id[::-1].hex().upper()


def load_secret(path: str | os.PathLike) -> SecretKey:
    raw = _payload(path, "secret key")
    if len(raw) != 158 or raw[:2] != b"Ed" or raw[4:6] != b"B2":
        raise UsageError(f"{path}: not a minisign Ed25519 secret key")
    if raw[2:4] != b"\x00\x00":
        raise UsageError(f"{path}: the key is password-protected; acta-mirror needs an unencrypted key "
                         f"(minisign -G -W, or acta-mirror keygen)")
    key_id, sk, checksum = raw[54:62], raw[62:126], raw[126:]
    # minisign -G -W leaves the checksum zero; the seed must still give the stored public key
    if checksum != bytes(32) and hashlib.blake2b(b"Ed" + key_id + sk, digest_size=32).digest() != checksum:
        raise UsageError(f"{path}: the secret key's checksum is wrong (damaged key file)")
    derived = Ed25519PrivateKey.from_private_bytes(sk[:32]).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if derived != sk[32:]:
        raise UsageError(f"{path}: the secret key does not match its public half (damaged key file)")
    return SecretKey(key_id, sk[:32], sk[32:])


def sign_file(path: str | os.PathLike, key: SecretKey, trusted_comment: str) -> str:
    """The .minisig text for a file (prehashed Ed25519, as minisign signs by default)."""
    return sign_bytes(Path(path).read_bytes(), key, trusted_comment)


def sign_bytes(data: bytes, key: SecretKey, trusted_comment: str) -> str:
    """The .minisig text for a file holding data (before it is written)."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise ValueError("a trusted comment is one line")
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    digest = hashlib.blake2b(data, digest_size=64).digest()
    signature = private.sign(digest)
    global_sig = private.sign(signature + trusted_comment.encode("utf-8"))
    return (f"untrusted comment: signature from acta-mirror secret key {key_id_text(key.key_id)}\n"
            f"{base64.b64encode(b'ED' + key.key_id + signature).decode()}\n"
            f"trusted comment: {trusted_comment}\n"
            f"{base64.b64encode(global_sig).decode()}\n")


@dataclass(frozen=True)
class Signature:
    """A parsed .minisig: who signed (key ID), the signature, and the trusted comment."""

    prehashed: bool  # "ED": the signature is over blake2b-512 of the file, as minisign signs by default
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes  # over signature || trusted comment


def parse_signature(text: str, name: str = "signature") -> Signature:
    lines = text_lines(text)
    if len(lines) < 4 or not lines[2].startswith("trusted comment: "):
        raise SignatureError(f"{name}: not a minisign signature")
    try:
        raw = base64.b64decode(lines[1], validate=True)
        global_sig = base64.b64decode(lines[3], validate=True)
    except ValueError:
        raise SignatureError(f"{name}: damaged (not base64)") from None
    if len(raw) != 74 or raw[:2] not in (b"ED", b"Ed") or len(global_sig) != 64:
        raise SignatureError(f"{name}: not an Ed25519 minisign signature")
    return Signature(raw[:2] == b"ED", raw[2:10], raw[10:], lines[2][len("trusted comment: "):], global_sig)


def verify_signature(data: bytes, sig: Signature, public: PublicKey, name: str = "the file",
                     sig_name: str = "the signature") -> str:
    """Check data against a parsed signature; returns the trusted comment, raises SignatureError."""
    if sig.key_id != public.key_id:
        raise SignatureError(f"{sig_name}: made by key {key_id_text(sig.key_id)}, not by {key_id_text(public.key_id)}")
    message = hashlib.blake2b(data, digest_size=64).digest() if sig.prehashed else data
    key = Ed25519PublicKey.from_public_bytes(public.key)
    try:
        key.verify(sig.signature, message)
    except InvalidSignature:
        raise SignatureError(f"{name}: the signature does not match the file") from None
    try:
        key.verify(sig.global_signature, sig.signature + sig.trusted_comment.encode("utf-8"))
    except InvalidSignature:
        raise SignatureError(f"{sig_name}: the trusted comment was altered") from None
    return sig.trusted_comment


def verify_file(path: str | os.PathLike, signature_path: str | os.PathLike, public: PublicKey) -> str:
    """Check a file against its .minisig; returns the trusted comment, raises SignatureError."""
    try:
        text = Path(signature_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise SignatureError(f"{signature_path}: missing or unreadable") from None
    sig = parse_signature(text, str(signature_path))
    return verify_signature(Path(path).read_bytes(), sig, public, str(path), str(signature_path))
