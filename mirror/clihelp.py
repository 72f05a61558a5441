"""Examples and exit codes of every subcommand: one table, printed at the end of each --help.

A new subcommand adds its row here (tests/test_cli.py fails for a subcommand without one),
and its exit codes to the table in README.md (a test keeps the two in step).
"""
from __future__ import annotations

from dataclasses import dataclass

ROOT = "https://static.resultadosconvzla.com"  # the 2024 site, as in jobs/resultados2024.toml
LOCAL = "http://127.0.0.1:8024"  # `acta-mirror replay`

# What each code means for every command; a row below may say it more precisely.
EXIT_MEANINGS = {
    0: "done, nothing wrong",
    1: "finished, but something failed or a check found problems (each one is named)",
    2: "bad usage or bad input: one line says what, nothing archived was touched",
    3: "a write was refused: the disk (full, read-only) or standard output (its reader gone, a full device); "
       "nothing archived before is damaged",
    130: "interrupted: re-run to resume",
}


@dataclass(frozen=True)
class Help:
    examples: tuple[tuple[str, str], ...]  # (command line, what it does)
    exits: dict[int, str]  # the codes this command can return; "" for the general meaning


HELP: dict[str, Help] = {
    "crawl": Help((
        (f"acta-mirror crawl resultados2024 --root {ROOT} --out mirror/", "mirror the 2024 site; a re-run resumes"),
        (f"acta-mirror crawl resultados2024 --root {ROOT} --out mirror/ --dry-run",
         "say what would be fetched, with counts and bytes; write nothing"),
        (f"acta-mirror crawl resultados2024 --root {ROOT} --out mirror/ --proxy socks5h://127.0.0.1:9050 "
         "--user-agent 'Mozilla/5.0' --header 'Referer: https://example.org/'", "through Tor, as a browser would"),
        (f"acta-mirror crawl cne --root {LOCAL} --out cne/ -v", "CNE-style pages; name every failure"),
    ), {0: "every listed acta archived or unchanged", 1: "finished; some actas failed (grouped by cause, "
        "all in failures.jsonl)", 2: "", 3: "", 130: ""}),
    "verify": Help((
        ("acta-mirror verify mirror/", "every file's sha256, the tag manifest, provenance"),
        ("acta-mirror verify mirror/ --fast", "names, sizes, tag files, provenance, root: no file in data/ hashed"),
        ("acta-mirror verify mirror/ --pubkey signer.pub --json", "and the signed root; problems as JSON"),
    ), {0: "the mirror is intact (--fast: nothing wrong in what it checks; it says what it did not)",
        1: "problems found (each file named)", 2: "", 3: "standard output refused a write (its reader gone, a full device)", 130: ""}),
    "keygen": Help((
        ("acta-mirror keygen --out signer", "writes signer.key (secret) and signer.pub"),
        ("acta-mirror keygen --out signer --force", "replace an existing pair"),
    ), {0: "", 2: "a key file exists (use --force), or bad usage", 3: ""}),
    "sign": Help((
        ("acta-mirror sign mirror/ --key signer.key", "sign the manifest's Merkle root"),
        ("minisign -Vm mirror/signed-root.json -p signer.pub", "anyone checks it with Debian's minisign"),
    ), {0: "", 2: "not a mirror, or an unreadable key", 3: ""}),
    "prove": Help((
        ("acta-mirror prove mirror/ data/01_DTTO._CAPITAL/.../010101002.03.jpg > proof.json",
         "an inclusion proof for one acta"),
        ("acta-mirror prove mirror/ mirror/data/01_DTTO._CAPITAL/.../010101002.03.jpg", "a path inside the mirror works too"),
    ), {0: "", 2: "not a mirror, or no such file in it", 3: "standard output refused a write (its reader gone, a full device)"}),
    "verify-file": Help((
        ("acta-mirror verify-file 010101002.03.jpg --proof proof.json --root ROOT_HEX",
         "check one downloaded acta against a root you trust"),
    ), {0: "VERIFIED", 1: "NOT VERIFIED (the line says why)", 2: "unreadable proof or file", 3: "standard output refused a write (its reader gone, a full device)"}),
    "diff": Help((
        ("acta-mirror diff RESULTADOS_2024_CSV_V1.csv RESULTADOS_2024_CSV_V2.csv", "what changed between two indexes"),
        ("acta-mirror diff old-mirror/ mirror/ --json", "between two mirrors, as JSON"),
    ), {0: "the two agree", 1: "they differ (added, removed, changed are listed)", 2: "", 3: "standard output refused a write (its reader gone, a full device)"}),
    "replay": Help((
        ("acta-mirror replay --port 8024 --small --limit 500", "a small local copy of the 2024 site"),
        ("acta-mirror replay --port 0 --faults 429=0.02,503=0.05:3,404=0.001", "with the faults of a site under load"),
        ("acta-mirror replay --site cne --port 8025", "the CNE-style pages"),
    ), {0: "stopped with Ctrl-C", 2: "bad usage, or the port is taken", 3: "standard output refused a write (its reader gone, a full device)"}),
    "publish": Help((
        ("acta-mirror publish mirror/ --to git+file:///srv/git/actas.git", "to a local bare repository (sharded)"),
        ("acta-mirror publish mirror/ --to git+https://github.com/ORG/actas.git --to ipfs://127.0.0.1:5001",
         "to a hosting service and an IPFS node"),
        ("acta-mirror publish mirror/ --to git+https://github.com/ORG/actas.git --dry-run",
         "which files and bytes each target would receive; push nothing"),
    ), {0: "every target published", 1: "some target failed (each is named)", 2: "", 3: "", 130: ""}),
    "car": Help((
        ("acta-mirror car mirror/ -o mirror.car", "the mirror's IPFS DAG, no node needed"),
        ("ipfs dag import mirror.car", "then any node gives the same root CID"),
    ), {0: "", 1: "a file is not a regular file or does not match its manifest (no CAR file is left)",
        2: "not a mirror", 3: ""}),
    "restore": Help((
        ("acta-mirror restore --from git+https://github.com/ORG/actas.git --out restored/", "clone every shard, verify"),
        ("acta-mirror restore --from git+https://github.com/ORG/actas.git --out restored/ --pubkey signer.pub",
         "and require the signer's signature"),
        ("acta-mirror restore --from git+https://github.com/ORG/actas.git --from git://mirror.example/actas.git "
         "--out restored/", "each shard from the first target that has it"),
    ), {0: "restored and verified", 1: "a shard could not be fetched, or the copy does not verify (or is not signed with --pubkey)", 2: "", 3: "",
        130: ""}),
    "run": Help((
        ("acta-mirror run jobs/resultados2024.toml", "crawl, verify, publish; prints a summary"),
        ("acta-mirror run jobs/resultados2024.toml --shard 2/4", "one part of a matrix: crawl and verify only"),
        ("acta-mirror run jobs/resultados2024.toml --dry-run", "what would be fetched and pushed; change nothing"),
    ), {0: "", 1: "some actas or targets failed, or the mirror does not verify", 2: "a wrong job file or config "
        "file (the line names the file and key), or bad usage", 3: "", 130: ""}),
    "merge": Help((
        ("acta-mirror merge mirror/ mirror.shard-*-of-4", "one bag again from the shards of a matrix"),
        ("acta-mirror merge mirror/ a/ b/ --sign-key signer.key", "and sign the merged root"),
    ), {0: "merged and verified", 1: "merged and verified, but tables the index lists are in no shard given",
        2: "a shard is not a mirror, or the merge does not verify", 3: "", 130: ""}),
    "tally": Help((
        ("acta-mirror tally mirror/", "votes per candidate, coverage, unreadable actas"),
        ("acta-mirror tally mirror/ --format csv --out tally.csv", "one row per table"),
        ("acta-mirror tally mirror/ --format json --out tally.json --coverage coverage.csv",
         "tables and every level; every listed table's status in a CSV"),
        ("acta-mirror tally mirror/ --ocr", "also read the printed figures and check each QR against them"),
    ), {0: "", 1: "some actas are not the archived bytes (a changed copy): their votes are left out",
        2: "not a mirror", 3: "", 130: ""}),
    "crosscheck": Help((
        ("acta-mirror crosscheck mirror/ --against mirror/data/index/RESULTADOS_2024_CSV_V1.csv",
         "the QR tally against the published index"),
        ("acta-mirror crosscheck mirror/ --against official.csv --allow-incomplete --json",
         "against official results, as JSON; unchecked tables do not fail the run"),
    ), {0: "every table was checked and all agree", 1: "a disagreement was found (each is named), a table counts "
                                                          "more votes than its registered electors, or some actas "
                                                          "are not the archived bytes (a changed copy)", 2: "",
        3: "some tables could not be checked and none disagree (0 with --allow-incomplete)", 130: ""}),
    "site": Help((
        ("acta-mirror site mirror/", "then open mirror/site/index.html"),
        ("acta-mirror site mirror/ && acta-mirror publish mirror/ --to ipfs://127.0.0.1:5001", "and publish it"),
    ), {0: "", 1: "written, but a visitor's check would fail (unsigned, no key, or not the key given): each reason "
                  "printed", 2: "not a mirror", 3: "", 130: ""}),
    "demo": Help((
        ("acta-mirror demo", "replay 1,000 tables, mirror, sign, verify, publish locally"),
        ("acta-mirror demo --full --real-size --out /tmp/demo", "all 25,073 tables at real size (minutes)"),
    ), {0: "", 1: "a step failed (it is named)", 2: "", 3: "", 130: ""}),
    "completion": Help((
        ("acta-mirror completion bash > ~/.local/share/bash-completion/completions/acta-mirror", "bash"),
        ("acta-mirror completion zsh > ~/.zfunc/_acta-mirror", "zsh (with ~/.zfunc in fpath)"),
        ("acta-mirror completion fish > ~/.config/fish/completions/acta-mirror.fish", "fish"),
    ), {0: "", 2: "an unknown shell", 3: "standard output refused a write (its reader gone, a full device)"}),
    "export": Help((
        ("acta-mirror export mirror/ --warc mirror.warc.gz", "then: warcio check mirror.warc.gz"),
        ("acta-mirror export mirror/ --wacz mirror.wacz", "then: wacz validate -f mirror.wacz"),
        ("acta-mirror export restored/ --wacz copy.wacz", "a restored copy has no re-check times: no revisits"),
    ), {0: "written", 1: "written, but some files were missing or changed (named, left out)",
        2: "not a mirror, bad provenance, OUT exists or is inside the mirror", 3: "", 130: ""}),
    "timestamp": Help((
        ("acta-mirror timestamp mirror/ --tsa https://freetsa.org/tsr", "an RFC 3161 token for signed-root.json"),
        ("acta-mirror timestamp mirror/ --tsa http://timestamp.digicert.com --tsa-ca digicert-root.pem",
         "and check the answer before keeping it"),
        ("acta-mirror verify mirror/ --tsa-ca cacert.pem", "checks the token and prints the attested time"),
    ), {0: "token kept (or one already covers signed-root.json)",
        1: "the authority failed or its answer did not verify (nothing written)",
        2: "no signed-root.json, bad URL or CA file", 3: "", 130: ""}),
    "compare": Help((
        ("acta-mirror compare mirror/ ~/Downloads/actas/", "a folder of images, any layout"),
        ("acta-mirror compare mirror/ SHA256SUMS", "a sha256sum list (or a JSON name->sha256 map)"),
        ("acta-mirror compare mirror/ other-mirror/ --json", "another acta-mirror; counts and every acta as JSON"),
    ), {0: "every acta in both is identical or the same picture",
        1: "some differ or are missing on one side (each is named)", 2: "OTHER unreadable or not a copy of actas", 3: "standard output refused a write (its reader gone, a full device)", 130: ""}),
}


def epilog(command: str) -> str:
    """The end of a subcommand's --help: its examples, then its exit codes."""
    row = HELP.get(command)
    if row is None:
        return ""
    lines = ["examples:"]
    for line, what in row.examples:
        lines += [f"  {line}", f"      {what}"]
    lines.append("")
    lines.append("exit codes:")
    for code, meaning in sorted(row.exits.items()):
        lines.append(f"  {code:<4} {meaning or EXIT_MEANINGS[code]}")
    return "\n".join(lines)
