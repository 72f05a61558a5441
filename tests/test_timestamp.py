"""Trusted timestamps against a real RFC 3161 authority: `openssl ts -reply` behind HTTP on loopback."""
from __future__ import annotations

import datetime as dt
import http.server
import os
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import run_cli

NOW = dt.datetime.now(dt.timezone.utc)
DAY = dt.timedelta(days=1)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, *, ca: bool, start=NOW - DAY, end=NOW + 30 * DAY):
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(start).not_valid_after(end)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
    return b.sign(issuer_key, hashes.SHA256())


def _pem(path: Path, obj) -> Path:
    if isinstance(obj, x509.Certificate):
        path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def make_pki(d: Path, name: str = "test", **tsa_dates) -> dict:
    """A throwaway CA and a TSA certificate signed by it (timeStamping EKU, critical)."""
    d.mkdir(parents=True, exist_ok=True)
    ca_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert(f"{name} root CA", ca_key, f"{name} root CA", ca_key, ca=True, start=NOW - 400 * DAY)
    tsa = _cert(f"{name} TSA", tsa_key, f"{name} root CA", ca_key, ca=False, **tsa_dates)
    return {"ca": _pem(d / "ca.pem", ca), "tsa": _pem(d / "tsa.pem", tsa), "key": _pem(d / "tsa.key", tsa_key)}


class LocalTSA:
    """openssl ts -reply for every POSTed query, on 127.0.0.1."""

    def __init__(self, d: Path, pki: dict):
        self.d = d
        (d / "serial").write_text("01\n")
        self.config = d / "tsa.cnf"
        self.config.write_text(f"""
[ tsa ]
default_tsa = tsa_config
[ tsa_config ]
serial = {d}/serial
crypto_device = builtin
signer_cert = {pki['tsa']}
signer_key = {pki['key']}
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
""")
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                query = self.rfile.read(int(self.headers["Content-Length"]))
                q, r = tsa.d / "q.tsq", tsa.d / "r.tsr"
                q.write_bytes(query)
                subprocess.run(["openssl", "ts", "-reply", "-config", str(tsa.config), "-queryfile", str(q),
                                "-out", str(r)], check=True, capture_output=True)
                body = r.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsa"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tsa_factory(tmp_path):
    started = []

    def start(name="test", **dates):
        pki = make_pki(tmp_path / f"pki-{name}", name, **dates)
        server = LocalTSA(tmp_path / f"pki-{name}", pki)
        started.append(server)
        return server, pki

    yield start
    for s in started:
        s.stop()


@pytest.fixture
def signed_mirror(replay, tmp_path) -> Path:
    out = tmp_path / "m"
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    proc = run_cli("crawl", "resultados2024", "--root", replay.url, "--out", str(out), "--quiet",
                   "--sign-key", str(tmp_path / "k.key"))
    assert proc.returncode == 0, proc.stderr
    assert (out / "signed-root.json").exists()
    return out


def test_timestamp_is_kept_and_checked_by_openssl_and_verify(tsa_factory, signed_mirror):
    tsa, pki = tsa_factory()
    proc = run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url, "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 0, proc.stderr
    token = signed_mirror / "signed-root.json.tsr"
    assert token.exists() and (signed_mirror / "signed-root.json.tsr.chain.pem").exists()
    check = subprocess.run(["openssl", "ts", "-verify", "-data", str(signed_mirror / "signed-root.json"),
                            "-in", str(token), "-CAfile", str(pki["ca"]), "-untrusted", str(pki["tsa"])],
                           capture_output=True, text=True)
    assert check.returncode == 0 and "Verification: OK" in check.stdout, check.stdout + check.stderr
    verified = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    line = next(l for l in verified.stdout.splitlines() if l.startswith("timestamp:"))
    assert "existed by" in line and str(NOW.year) in line and "test TSA" in line
    # a second request for the same statement keeps the token it has
    again = run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url)
    assert again.returncode == 0 and "already" in again.stdout


def test_token_for_another_file_fails(tsa_factory, signed_mirror):
    tsa, pki = tsa_factory()
    assert run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url).returncode == 0
    statement = signed_mirror / "signed-root.json"
    statement.write_text(statement.read_text().replace("acta-mirror", "acta-mirrer"))
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 1
    assert "timestamp: signed-root.json.tsr (the token is for another file" in proc.stdout


def test_untrusted_authority_fails(tsa_factory, signed_mirror, tmp_path):
    tsa, _pki = tsa_factory()
    other = make_pki(tmp_path / "other", "other")
    assert run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url).returncode == 0
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(other["ca"]))
    assert proc.returncode == 1 and "does not verify up to the trusted CA (unable to get local issuer certificate): " \
        "an untrusted authority" in proc.stdout, proc.stdout
    # and asking with that CA refuses to keep the answer
    (signed_mirror / "signed-root.json.tsr").unlink()
    proc = run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url, "--tsa-ca", str(other["ca"]))
    assert proc.returncode == 1 and "nothing written" in proc.stderr
    assert not (signed_mirror / "signed-root.json.tsr").exists()


def test_expired_tsa_certificate_fails(tsa_factory, signed_mirror):
    tsa, pki = tsa_factory("expired", start=NOW - 60 * DAY, end=NOW - 30 * DAY)
    assert run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url).returncode == 0
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 1 and "was not valid at the attested time" in proc.stdout, proc.stdout


def test_tampered_token_fails(tsa_factory, signed_mirror):
    tsa, pki = tsa_factory()
    assert run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url).returncode == 0
    token = signed_mirror / "signed-root.json.tsr"
    data = bytearray(token.read_bytes())
    # change one digit of the attested time (GeneralizedTime "YYYYMMDDHHMMSSZ" in the signed TSTInfo)
    at = data.find(str(NOW.year).encode())
    data[at + 12] = ord("0") if data[at + 12] != ord("0") else ord("1")
    token.write_bytes(bytes(data))
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 1, proc.stdout
    assert "timestamp: signed-root.json.tsr (the token's signature does not match its content: the token was altered)" \
        in proc.stdout, proc.stdout
    token.write_bytes(b"\x30\x03garbage")
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 1 and "not a timestamp response" in proc.stdout, proc.stdout


def test_bad_input_is_one_line(tsa_factory, signed_mirror, tmp_path):
    tsa, _pki = tsa_factory()
    proc = run_cli("timestamp", str(tmp_path), "--tsa", tsa.url)
    assert proc.returncode == 2 and "no signed-root.json" in proc.stderr
    proc = run_cli("timestamp", str(signed_mirror), "--tsa", "ftp://x")
    assert proc.returncode == 2 and "not an http(s) URL" in proc.stderr
    (tmp_path / "notpem").write_text("hello")
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(tmp_path / "notpem"))
    assert proc.returncode == 2 and "no PEM certificate" in proc.stderr
    dead = tsa.url.rsplit(":", 1)[0] + ":1/tsa"
    proc = run_cli("timestamp", str(signed_mirror), "--tsa", dead)
    assert proc.returncode == 1 and "cannot reach the authority" in proc.stderr


def test_job_timestamps_every_run(tsa_factory, replay, tmp_path):
    tsa, pki = tsa_factory()
    assert run_cli("keygen", "--out", str(tmp_path / "k")).returncode == 0
    job = tmp_path / "mirror.toml"
    job.write_text(f'[source]\nsite = "resultados2024"\nroot = "{replay.url}"\n'
                   f'[output]\ndir = "m"\n[sign]\nkey = "k.key"\ntsa = "{tsa.url}"\ntsa_ca = "{pki["ca"]}"\n')
    proc = run_cli("run", str(job), "--no-publish", "--quiet")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "timestamp:" in proc.stdout
    assert run_cli("verify", str(tmp_path / "m"), "--tsa-ca", str(pki["ca"])).returncode == 0


def test_linked_token_and_damaged_chain_are_named(tsa_factory, signed_mirror, tmp_path):
    tsa, pki = tsa_factory()
    assert run_cli("timestamp", str(signed_mirror), "--tsa", tsa.url).returncode == 0
    token = signed_mirror / "signed-root.json.tsr"
    elsewhere = tmp_path / "elsewhere.tsr"
    token.rename(elsewhere)
    os.symlink(elsewhere, token)  # a valid token, but reached through a link: not read
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 1 and "timestamp: signed-root.json.tsr (unreadable" in proc.stdout
    assert "symbolic link" in proc.stdout
    token.unlink()
    elsewhere.rename(token)
    (signed_mirror / "signed-root.json.tsr.chain.pem").write_text("not a certificate")
    proc = run_cli("verify", str(signed_mirror), "--tsa-ca", str(pki["ca"]))
    assert proc.returncode == 1 and "signed-root.json.tsr.chain.pem (not a PEM certificate chain" in proc.stdout


def test_an_answer_that_is_not_a_token_is_refused(signed_mirror):
    class Garbage(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = b"<html>maintenance</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        proc = run_cli("timestamp", str(signed_mirror), "--tsa", url)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1 and "the answer is not a timestamp response" in proc.stderr
    assert not (signed_mirror / "signed-root.json.tsr").exists()
