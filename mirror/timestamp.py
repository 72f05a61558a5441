"""RFC 3161 trusted timestamps of the signed root: ask an authority, keep its token, check it offline.

The token is over the sha256 of signed-root.json's bytes, stored as the DER TimeStampResp in
signed-root.json.tsr, so OpenSSL checks it too:
    openssl ts -verify -data signed-root.json -in signed-root.json.tsr -CAfile ca.pem \\
        -untrusted signed-root.json.tsr.chain.pem
The authority's certificates (asked for with certReq) are also written out as PEM beside the
token. A token proves that the statement, and so the Merkle root it names, existed no later
than the attested time. rfc3161-client builds requests and checks tokens.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .config import http_url
from .manifest import atomic_write, read_small_file
from .models import MirrorError, NotAMirror, Problem, UnsafePath, UsageError
from .state import open_payload

STATEMENT = "signed-root.json"
TOKEN = STATEMENT + ".tsr"
CHAIN = TOKEN + ".chain.pem"
MAX_REPLY = 1 << 20  # a TimeStampResp is a few KB; anything far larger is not one
MAX_CA_BYTES = 16 << 20  # a CA bundle is a few hundred KB


class TimestampError(MirrorError):
    """The authority could not be reached, refused, or answered with something that is not a token."""


class TokenInvalid(ValueError):
    """A token that does not check out; the message says why."""


@dataclass(frozen=True)
class Attested:
    time: datetime  # the authority's genTime
    authority: str  # the TSA certificate's subject
    serial: int


def _read(mirror: Path, name: str, limit: int = MAX_REPLY) -> bytes:
    """A file at the top of the mirror, never through a symbolic link, of at most `limit` bytes
    (UnsafePath, OSError): a copy's planted giant is refused, not read into memory."""
    with open_payload(mirror, name) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise UnsafePath(name, f"larger than {limit:,} bytes")
    return data


def _statement(mirror: Path) -> bytes:
    try:
        return _read(mirror, STATEMENT)
    except FileNotFoundError:
        raise NotAMirror(f"{mirror}: no {STATEMENT} to timestamp (sign the mirror first: acta-mirror sign)") from None
    except OSError as exc:
        raise NotAMirror(f"{mirror / STATEMENT}: unreadable ({exc.strerror or exc})") from None


def load_certificates(path: str | os.PathLike) -> list:
    """Every certificate in the PEM file given as --tsa-ca; UsageError naming it when there is none."""
    try:
        data = read_small_file(path, MAX_CA_BYTES)  # a FIFO or a device would hang
    except OSError as exc:
        raise UsageError(f"--tsa-ca {path}: unreadable ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise UsageError(f"--tsa-ca {path}: unreadable ({exc})") from None
    try:
        return _pem_certificates(data)
    except ValueError:
        raise UsageError(f"--tsa-ca {path}: no PEM certificate in it") from None


def _pem_certificates(data: bytes) -> list:
    from cryptography import x509

    return x509.load_pem_x509_certificates(data)


def check_token(token: bytes, statement: bytes, roots: list, intermediates: list = ()) -> Attested:
    """Check a DER TimeStampResp against the statement's bytes and trusted roots.

    Raises TokenInvalid with one clear reason: damaged, refused, another file's hash,
    a certificate not valid at the attested time, or a signature that does not chain to roots.
    """
    from rfc3161_client import PKIStatus, VerificationError, VerifierBuilder, decode_timestamp_response
    from cryptography import x509

    try:
        response = decode_timestamp_response(token)
        info = response.tst_info
        status = response.status
    except Exception as exc:  # the Rust parser raises its own types for any malformed DER
        raise TokenInvalid(f"not a timestamp response (damaged: {exc.__class__.__name__})") from None
    if status not in (PKIStatus.GRANTED, PKIStatus.GRANTED_WITH_MODS):
        raise TokenInvalid(f"the authority refused the request (status {status})")
    want = hashlib.sha256(statement).digest()
    got = info.message_imprint.message
    if got != want:
        raise TokenInvalid(f"the token is for another file (hash {got.hex()}), not this {STATEMENT} (sha256 {want.hex()})")
    when = info.gen_time if info.gen_time.tzinfo else info.gen_time.replace(tzinfo=timezone.utc)
    embedded = [x509.load_der_x509_certificate(c) for c in response.signed_data.certificates]
    signers = list(response.signed_data.signer_infos)
    leaf = None
    if len(signers) == 1:
        leaf = next((c for c in [*embedded, *intermediates]
                     if c.issuer == signers[0].issuer and c.serial_number == signers[0].serial_number), None)
    if leaf is None:
        raise TokenInvalid("the token names no signing certificate that it or the chain file carries")
    if not leaf.not_valid_before_utc <= when <= leaf.not_valid_after_utc:
        raise TokenInvalid(f"the TSA certificate {leaf.subject.rfc4514_string()} was not valid at the attested time "
                           f"{when:%Y-%m-%d %H:%M:%S} UTC (valid {leaf.not_valid_before_utc:%Y-%m-%d} to "
                           f"{leaf.not_valid_after_utc:%Y-%m-%d})")
    builder = VerifierBuilder()
    for cert in roots:
        builder = builder.add_root_certificate(cert)
    for cert in intermediates:
        if cert not in roots:
            builder = builder.add_intermediate_certificate(cert)
    try:
        builder.build().verify(response, want)
    except VerificationError as exc:
        text = str(exc)
        if "signature failure" in text or "digest failure" in text:
            raise TokenInvalid("the token's signature does not match its content: the token was altered") from None
        if "certificate verify error" in text:
            why = re.search(r'Verify error: ([^"]+)"', text)
            raise TokenInvalid("the TSA certificate does not verify up to the trusted CA"
                               + (f" ({why.group(1)})" if why else "") + ": an untrusted authority") from None
        raise TokenInvalid(text) from None
    except Exception as exc:
        raise TokenInvalid(f"the token does not verify ({exc.__class__.__name__}: {exc})") from None
    return Attested(when, leaf.subject.rfc4514_string(), info.serial_number)


def _post(url: str, body: bytes, timeout: float) -> bytes:
    import http.client  # here: verify imports this module and needs no network
    import urllib.error
    import urllib.request

    from .publish import redact

    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/timestamp-query",
                                              "Accept": "application/timestamp-reply"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            data = resp.read(MAX_REPLY + 1)
    except urllib.error.HTTPError as exc:
        raise TimestampError(f"{url}: the authority answered HTTP {exc.code} {exc.reason}") from None
    except (ValueError, http.client.InvalidURL) as exc:  # a port that is not a number, a broken IPv6 address
        raise UsageError(f"--tsa {redact(url)}: not a URL ({exc})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TimestampError(f"{url}: cannot reach the authority ({reason}); try again or choose another") from None
    if len(data) > MAX_REPLY:
        raise TimestampError(f"{url}: the answer is larger than any timestamp response")
    return data


def timestamp(mirror: str | os.PathLike, tsa: str, *, ca: str | None = None, timeout: float = 30.0) -> tuple[Attested, bool]:
    """Get and keep a token for the mirror's signed-root.json; (attested, new).

    A token that already covers this statement is kept and no request is sent (new False).
    With ca, the answer must verify up to it before it is written.
    """
    from rfc3161_client import HashAlgorithm, TimestampRequestBuilder, decode_timestamp_response
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    mirror = Path(mirror)
    if not http_url(tsa):
        raise UsageError(f"--tsa {tsa!r}: not an http(s) URL")
    statement = _statement(mirror)
    roots = load_certificates(ca) if ca else []
    if (mirror / TOKEN).exists():
        try:
            old = _read(mirror, TOKEN)
            old_response = decode_timestamp_response(old)
            if old_response.tst_info.message_imprint.message == hashlib.sha256(statement).digest():
                certs = [x509.load_der_x509_certificate(c) for c in old_response.signed_data.certificates]
                return _attested(old, statement, roots, certs), False
        except (OSError, ValueError, TokenInvalid, UnsafePath):
            pass  # damaged, unsafe or for an older statement: replaced below
        except Exception:  # the Rust parser's own error types
            pass
    request = (TimestampRequestBuilder().data(statement).hash_algorithm(HashAlgorithm.SHA256)
               .nonce(nonce=True).cert_request(cert_request=True).build())
    reply = _post(tsa, request.as_bytes(), timeout)
    try:
        response = decode_timestamp_response(reply)
        nonce = response.tst_info.nonce
    except Exception:
        raise TimestampError(f"{tsa}: the answer is not a timestamp response") from None
    if nonce != request.nonce:
        raise TimestampError(f"{tsa}: the answer's nonce is not ours (a replayed or foreign token)")
    certs = [x509.load_der_x509_certificate(c) for c in response.signed_data.certificates]
    try:
        attested = _attested(reply, statement, roots, certs)
    except TokenInvalid as exc:
        raise TimestampError(f"{tsa}: {exc}; nothing written") from None
    try:
        atomic_write(mirror / TOKEN, reply)
        atomic_write(mirror / CHAIN, b"".join(c.public_bytes(Encoding.PEM) for c in certs))
    except OSError as exc:
        from .models import ArchiveWriteError
        raise ArchiveWriteError(f"cannot write {mirror / TOKEN}: {exc.strerror or exc}") from None
    return attested, True


def _attested(token: bytes, statement: bytes, roots: list, certs: list) -> Attested:
    """Fully checked with roots; without roots, only the hash and the signer's validity dates."""
    if roots:
        return check_token(token, statement, roots, certs)
    from rfc3161_client import decode_timestamp_response

    response = decode_timestamp_response(token)
    if response.tst_info.message_imprint.message != hashlib.sha256(statement).digest():
        raise TokenInvalid(f"the token is for another file, not this {STATEMENT}")
    when = response.tst_info.gen_time
    when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    signer = next(iter(response.signed_data.signer_infos), None)
    name = next((c.subject.rfc4514_string() for c in certs
                 if signer and c.issuer == signer.issuer and c.serial_number == signer.serial_number), "unknown")
    return Attested(when, name, response.tst_info.serial_number)


def verify_timestamp(mirror: str | os.PathLike, ca: str | None) -> tuple[list[Problem], str | None]:
    """For `verify`: the token's problems, and a line stating the attested time (None: no token).

    With ca (--tsa-ca) the token must exist and verify up to it; without, an existing token's
    hash is checked and its time shown as unchecked.
    """
    mirror = Path(mirror)
    roots = load_certificates(ca) if ca else []
    try:
        token = _read(mirror, TOKEN)
    except FileNotFoundError:
        return ([Problem("timestamp", TOKEN, "missing (acta-mirror timestamp DIR --tsa URL)")] if ca else []), None
    except (OSError, UnsafePath) as exc:
        return [Problem("timestamp", TOKEN, f"unreadable ({exc})")], None
    try:
        statement = _read(mirror, STATEMENT)
    except (OSError, UnsafePath):
        return [Problem("timestamp", STATEMENT, "missing or unreadable: the token has nothing to cover")], None
    try:
        chain = _pem_certificates(_read(mirror, CHAIN))
    except FileNotFoundError:
        chain = []
    except (OSError, UnsafePath) as exc:
        return [Problem("timestamp", CHAIN, f"unreadable ({exc})")], None
    except ValueError as exc:
        return [Problem("timestamp", CHAIN, f"not a PEM certificate chain ({exc.__class__.__name__})")], None
    try:
        if roots:
            attested = check_token(token, statement, roots, chain)
        else:
            from cryptography import x509
            from rfc3161_client import decode_timestamp_response

            try:
                certs = [x509.load_der_x509_certificate(c)
                         for c in decode_timestamp_response(token).signed_data.certificates]
            except Exception:
                raise TokenInvalid("not a timestamp response (damaged)") from None
            attested = _attested(token, statement, [], certs + chain)
    except TokenInvalid as exc:
        return [Problem("timestamp", TOKEN, str(exc))], None
    when = f"{attested.time:%Y-%m-%d %H:%M:%S} UTC"
    if roots:
        return [], f"timestamp: {STATEMENT} existed by {when}, attested by {attested.authority} (verified up to {ca})"
    return [], (f"timestamp: {STATEMENT} existed by {when}, says {attested.authority} "
                "(authority not checked: pass --tsa-ca FILE)")
