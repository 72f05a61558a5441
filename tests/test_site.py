"""The voter's site in a real browser: phone width, search, every table's page, the in-browser check,
file://, and hostile mirrors (paths outside the mirror, javascript: URLs, script breakouts)."""
from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from mirror.merkle import all_inclusion_paths, inclusion_path, leaf_hash, root_of_leaves, verify_inclusion
from mirror.replay import FaultPlan, Replay, ReplayThread, replay_for
from mirror.replay.data import index_file, real_images, subset_keys
from mirror.sign import load_public
from tests.conftest import ROOT, run_cli

OUTPUT = ROOT / "test-output"
LIMIT = 40


def _crawl(site: str, replay, out: Path, key: Path) -> None:
    with ReplayThread(replay) as thread:
        proc = run_cli("crawl", site, "--root", thread.url, "--out", str(out), "--quiet", "--sign-key", f"{key}.key")
    assert proc.returncode in (0, 1), proc.stderr


def _missing_row():
    """Mesa 1 of a centre with more tables (a synthesized image): the one the fault plan makes fail."""
    keys = subset_keys(LIMIT)
    rows = [r for r in index_file(1).rows if r.key in keys]
    return next(r for r in rows if r.table == "01" and r.filename not in real_images()
                and sum(o.center == r.center for o in rows) > 1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    for name in ("signer", "other"):
        assert run_cli("keygen", "--out", str(base / name)).returncode == 0
    return {"signer": base / "signer", "other": base / "other"}


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, keys) -> Path:
    """A signed resultados2024 mirror in which one table failed to download (404 every time)."""
    out = tmp_path_factory.mktemp("site") / "mirror"
    plan = FaultPlan().with_files(**{_missing_row().filename: "404"})
    _crawl("resultados2024", Replay(small=True, limit=LIMIT, faults=plan), out, keys["signer"])
    proc = run_cli("site", str(out), "--pubkey", f"{keys['signer']}.pub")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def cne_mirror(tmp_path_factory, keys) -> Path:
    out = tmp_path_factory.mktemp("cne") / "mirror"
    _crawl("cne", replay_for("cne", small=True, limit=LIMIT), out, keys["signer"])
    assert run_cli("site", str(out), "--pubkey", f"{keys['signer']}.pub").returncode == 0
    return out


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _Gateway(_Quiet):
    """A stand-in IPFS gateway: files by CID under /ipfs/, readable from any origin, as gateways are."""

    def end_headers(self):
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()


@pytest.fixture(scope="module")
def serve():
    """serve(directory) -> its http://127.0.0.1:PORT/ base URL (a real HTTP server on loopback)."""
    servers = []

    def start(directory: Path, handler=_Quiet) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless Chromium, emulating a 360 px wide phone."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and driver, "scripts/setup.sh installs Debian's chromium and chromium-driver"
    os.environ["SE_OFFLINE"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(flag)
    b = webdriver.Chrome(service=Service(driver), options=options)
    b.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 360, "height": 740, "deviceScaleFactor": 1, "mobile": True})
    yield b
    b.quit()


def _wait(browser, predicate, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(predicate)


def _by_id(browser, name):
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, name)


def _table_pages(mirror: Path) -> dict[str, Path]:
    return {p.stem: p for p in (mirror / "site").glob("*/*/*/*/*.html") if p.name != "index.html"}


def _archived_keys(mirror: Path) -> list[str]:
    return sorted(k for k, p in _table_pages(mirror).items() if 'id="acta-proof"' in p.read_text())


def _check(browser, url: str) -> tuple[str, str]:
    browser.get(url)
    _by_id(browser, "verify").click()
    _wait(browser, lambda b: _by_id(b, "verify-result").get_attribute("data-status") not in ("pending", "running"))
    result = _by_id(browser, "verify-result")
    return result.get_attribute("data-status"), result.text


def _page_url(base: str, mirror: Path, key: str) -> str:
    return base + _table_pages(mirror)[key].relative_to(mirror).as_posix()


# -- phones, search, every table -----------------------------------------------------------------
def test_a_phone_360_px_wide_has_no_horizontal_overflow(mirror, browser, serve):
    base = serve(mirror)
    key = _archived_keys(mirror)[0]
    OUTPUT.mkdir(exist_ok=True)
    for name, url in (("index", base + "site/index.html"), ("table", _page_url(base, mirror, key))):
        browser.get(url)
        _wait(browser, lambda b: b.execute_script("return document.readyState") == "complete")
        assert browser.execute_script("return document.documentElement.lang") == "es"
        width, client = browser.execute_script(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]")
        assert client == 360, f"{name}: the page is laid out {client} px wide on a 360 px phone (no viewport meta?)"
        assert width <= client, f"{name}: {width} px of content on a {client} px screen"
        browser.save_screenshot(str(OUTPUT / f"site-360-{name}.png"))
    assert browser.find_element("css selector", "img#acta").get_attribute("alt").startswith("Acta de escrutinio")
    _wait(browser, lambda b: b.execute_script("return document.getElementById('acta').naturalWidth > 0"))
    _by_id(browser, "zoom").click()  # zoomed, the image scrolls inside its box; the page still does not
    assert browser.execute_script("var b = document.getElementById('acta-box'); return b.scrollWidth > b.clientWidth")
    assert browser.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")


CONTRAST = """
function lum(c) {
  var v = c.match(/[\\d.]+/g).slice(0, 3).map(function (x) { x = x / 255; return x <= 0.03928 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4); });
  return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2];
}
function background(el) {
  for (; el; el = el.parentElement) {
    var c = getComputedStyle(el).backgroundColor;
    if (c !== 'rgba(0, 0, 0, 0)' && c !== 'transparent') return c;
  }
  return 'rgb(255, 255, 255)';
}
var bad = [];
document.querySelectorAll('body *').forEach(function (el) {
  var own = Array.prototype.some.call(el.childNodes, function (n) { return n.nodeType === 3 && n.textContent.trim(); });
  if (!own || el.offsetParent === null) return;
  var a = lum(getComputedStyle(el).color), b = lum(background(el));
  var ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  if (ratio < 4.5) bad.push(el.tagName + ' ' + el.textContent.trim().slice(0, 30) + ': ' + ratio.toFixed(2));
});
return bad;
"""


def test_text_contrast_passes_wcag_aa_and_controls_are_labelled(mirror, browser, serve):
    base = serve(mirror)
    for url in (base + "site/index.html", _page_url(base, mirror, _archived_keys(mirror)[0]),
                _page_url(base, mirror, _missing_row().key)):
        browser.get(url)
        assert browser.execute_script(CONTRAST) == [], url
        assert browser.execute_script(
            "return Array.prototype.filter.call(document.querySelectorAll('input'), function (i) {"
            " return !(i.labels && i.labels.length); }).length") == 0
        assert browser.execute_script("return document.querySelectorAll('img:not([alt])').length") == 0
        assert browser.execute_script("return document.querySelectorAll('table th[scope]').length") > 0


def test_every_table_of_the_index_has_a_page_and_a_missing_one_says_why(mirror, browser, serve):
    missing = _missing_row()
    pages = _table_pages(mirror)
    assert set(pages) == set(subset_keys(LIMIT))  # the index is the denominator
    base = serve(mirror)
    browser.get(_page_url(base, mirror, missing.key))
    status = _by_id(browser, "status").text
    assert "la descarga falló" in status and "404" in status, status
    assert re.search(r"el \d{4}-\d\d-\d\d \d\d:\d\d UTC, tras \d+ intento", status), status  # when, how many tries
    browser.get(base + pages[missing.key].parent.relative_to(mirror).as_posix() + "/index.html")
    in_center = [k for k in pages if k.startswith(missing.center)]
    counts = browser.find_element("css selector", ".counts").text
    assert f"{len(in_center) - 1} de {len(in_center)} mesas archivadas" in counts, counts
    crumbs = browser.find_element("css selector", "nav .crumbs").text
    assert crumbs.startswith("Venezuela") and missing.state in crumbs


def test_search_by_code_as_printed_and_the_enter_key(mirror, browser, serve):
    key = _archived_keys(mirror)[0]
    from selenium.webdriver.common.keys import Keys

    browser.get(serve(mirror) + "site/index.html")
    box = _by_id(browser, "q")
    box.send_keys(f"{int(key[:9])} {int(key[10:])}")  # as the index prints it: no leading zero
    _wait(browser, lambda b: "1 resultado" in _by_id(b, "search-status").text)
    box.send_keys(Keys.ENTER)
    _wait(browser, lambda b: b.current_url.endswith(f"/{key}.html"))
    _wait(browser, lambda b: b.execute_script("var i = document.getElementById('acta'); return i.complete && i.naturalWidth > 0"))
    browser.get(serve(mirror) + "site/index.html")
    _by_id(browser, "q").send_keys("999999999 1")
    _wait(browser, lambda b: "Nada coincide" in _by_id(b, "search-status").text)


def test_a_centre_name_typed_without_accents_finds_it(cne_mirror, browser, serve):
    centers = json.loads(re.search(r"ACTA\.centers\(\"\d\d\",(.*)\);", next(
        (cne_mirror / "site/buscar").glob("e*.js")).read_text()).group(1))
    code, name, _tables = next(c for c in centers if "Á" in c[1])
    typed = name.lower().replace("á", "a").replace("°", "")
    assert typed != name.lower()
    browser.get(serve(cne_mirror) + "site/index.html")
    _by_id(browser, "q").send_keys(typed)
    _wait(browser, lambda b: any(code in a.text for a in b.find_elements("css selector", "#results a")))
    link = next(a for a in browser.find_elements("css selector", "#results a") if code in a.text)
    assert link.get_attribute("href").endswith(f"/{code}/index.html")
    link.click()
    _wait(browser, lambda b: b.find_element("tag name", "h1").text == name)


# -- the in-browser check ------------------------------------------------------------------------
def test_the_browser_check_says_verificada_for_an_intact_acta(mirror, keys, browser, serve):
    status, text = _check(browser, _page_url(serve(mirror), mirror, _archived_keys(mirror)[0]))
    assert status == "ok" and "verificada" in text, text
    signer = load_public(f"{keys['signer']}.pub").key_id[::-1].hex().upper()  # as minisign prints it
    assert _by_id(browser, "key-id").text == signer and signer in _by_id(browser, "verify-steps").text


def test_the_browser_check_names_a_tampered_image(mirror, browser, serve):
    key = _archived_keys(mirror)[1]
    page = _table_pages(mirror)[key].read_text()
    image = mirror / json.loads(re.search(r'id="acta-proof">(.*?)</script>', page).group(1))["leaf"].split("  ", 1)[1].strip()
    original = image.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 1
    image.write_bytes(bytes(data))
    try:
        status, text = _check(browser, _page_url(serve(mirror), mirror, key))
    finally:
        image.write_bytes(original)  # the module's mirror stays intact for the tests after this one
    assert status == "fail" and "la imagen no es la archivada" in text, text


def test_the_browser_check_names_a_wrong_proof(mirror, browser, serve):
    key = _archived_keys(mirror)[2]
    path = _table_pages(mirror)[key]
    proof_text = re.search(r'id="acta-proof">(.*?)</script>', path.read_text()).group(1)
    proof = json.loads(proof_text)
    first = proof["path"][0]
    proof["path"][0] = ("0" if first[0] != "0" else "1") + first[1:]
    path.write_text(path.read_text().replace(proof_text, json.dumps(proof)))
    status, text = _check(browser, _page_url(serve(mirror), mirror, key))
    assert status == "fail" and "la prueba de inclusión no lleva a la raíz firmada" in text, text


def test_the_browser_check_names_a_root_signed_by_another_key(mirror, keys, browser, serve, tmp_path):
    copy = tmp_path / "resigned"
    shutil.copytree(mirror, copy, ignore=shutil.ignore_patterns("site"))
    assert run_cli("sign", str(copy), "--key", f"{keys['other']}.key").returncode == 0
    proc = run_cli("site", str(copy), "--pubkey", f"{keys['signer']}.pub")
    assert proc.returncode == 1 and "signature" in proc.stderr  # built, and the builder says why it will fail
    status, text = _check(browser, _page_url(serve(copy), copy, _archived_keys(copy)[0]))
    assert status == "fail" and "la firma de la raíz es de la clave" in text, text


def test_the_site_works_from_a_file_url(mirror, browser):
    key = _archived_keys(mirror)[3]
    browser.get((mirror / "site" / "index.html").as_uri())
    _by_id(browser, "q").send_keys(f"{key[:9]}.{key[10:]}")
    _wait(browser, lambda b: b.find_elements("css selector", "#results a"))
    browser.find_element("css selector", "#results a").click()
    _wait(browser, lambda b: b.current_url.endswith(f"/{key}.html"))
    _by_id(browser, "verify").click()  # Chromium refuses fetch() of a file: the page says what to do
    _wait(browser, lambda b: _by_id(b, "verify-result").get_attribute("data-status") == "need-file")
    proof = json.loads(_by_id(browser, "acta-proof").get_attribute("textContent"))
    _by_id(browser, "verify-file").send_keys(str(mirror / proof["leaf"].split("  ", 1)[1].strip()))
    _wait(browser, lambda b: _by_id(b, "verify-result").get_attribute("data-status") in ("ok", "fail"))
    assert "verificada" in _by_id(browser, "verify-result").text


def test_the_check_falls_back_to_an_ipfs_gateway_when_the_image_is_not_beside_the_site(mirror, keys, browser, serve,
                                                                                      tmp_path):
    """On GitHub Pages, shard 01 carries the site but other states' images live in other shards."""
    copy = tmp_path / "shard-01"
    shutil.copytree(mirror, copy, ignore=shutil.ignore_patterns("site"))
    (tmp_path / "gateway" / "ipfs").mkdir(parents=True)
    gateway = serve(tmp_path / "gateway", _Gateway)
    proc = run_cli("site", str(copy), "--pubkey", f"{keys['signer']}.pub", "--gateway", gateway)
    assert proc.returncode == 0, proc.stderr
    key = _archived_keys(copy)[4]
    entry = next(e for e in map(json.loads, (copy / "provenance.jsonl").read_text().splitlines()) if e["key"] == key)
    (copy / entry["path"]).rename(tmp_path / "gateway" / "ipfs" / entry["cid"])  # held by another shard
    status, text = _check(browser, _page_url(serve(copy), copy, key))
    assert status == "ok" and "verificada" in text, text
    _wait(browser, lambda b: b.execute_script("var i = document.getElementById('acta'); return i.complete && i.naturalWidth > 0"))
    assert run_cli("site", str(copy), "--gateway", "javascript:alert(1)//").returncode == 2


# -- hostile mirrors (issue 13, items 8 and 14) ----------------------------------------------------
def _edit_provenance(mirror: Path, edit) -> None:
    lines = (mirror / "provenance.jsonl").read_text(encoding="utf-8").splitlines()
    i = next(n for n, line in enumerate(lines) if json.loads(line)["kind"] == "acta")
    obj = json.loads(lines[i])
    edit(obj)
    lines[i] = json.dumps(obj, ensure_ascii=False)
    (mirror / "provenance.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _tree(path: Path, skip: Path) -> set[str]:
    """Every file and folder under path, outside skip."""
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if skip not in (p, *p.parents)}


@pytest.mark.parametrize("field,value", [
    ("path", "data/../../../escape/x/y/z/010101001.01.jpg"),
    ("path", "/tmp/escape/010101001.01.jpg"),
    ("key", "../../../../../../escape"),
    ("key", "/tmp/escape"),
])
def test_a_hostile_key_or_path_writes_nothing_outside_and_is_one_line(mirror, tmp_path, field, value):
    outside = tmp_path / "a" / "b" / "c"
    copy = outside / "mirror"
    shutil.copytree(mirror, copy, ignore=shutil.ignore_patterns("site"))
    _edit_provenance(copy, lambda obj: obj.__setitem__(field, value))
    before = _tree(tmp_path, copy)
    proc = run_cli("site", str(copy))  # a traceback fails the test inside run_cli
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert _tree(tmp_path, copy) == before, _tree(tmp_path, copy) - before
    assert not Path("/tmp/escape").exists()


def test_a_site_folder_that_is_a_link_is_replaced_not_followed(mirror, tmp_path):
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy, ignore=shutil.ignore_patterns("site"))
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    (elsewhere / "keep" / "index.html").write_text("mine")
    (copy / "site").symlink_to(elsewhere / "keep")
    (copy / "site.part").symlink_to(elsewhere)
    assert run_cli("site", str(copy)).returncode in (0, 1)
    assert sorted(p.name for p in elsewhere.rglob("*")) == ["index.html", "keep"]
    assert (elsewhere / "keep" / "index.html").read_text() == "mine"
    assert not (copy / "site").is_symlink() and (copy / "site" / "index.html").is_file()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.urls += [v or "" for k, v in attrs if k in ("href", "src", "action", "formaction")]


def test_no_javascript_url_and_no_script_breakout_in_the_site(mirror, tmp_path, browser):
    copy = tmp_path / "mirror"
    shutil.copytree(mirror, copy, ignore=shutil.ignore_patterns("site"))
    evil = "</script><script>document.title='owned'</script>"

    def edit(obj):
        old = copy / obj["path"]
        obj["path"] = f"data/javascript:alert(1)/{evil}/x/{obj['key']}.jpg"
        (copy / obj["path"]).parent.mkdir(parents=True)
        old.rename(copy / obj["path"])
        obj["url"] = obj["final_url"] = "javascript:alert(1)"
        obj["page"] = " JaVaScRiPt:alert(1)"
        obj["state"] = obj["center_name"] = evil
    _edit_provenance(copy, edit)
    assert run_cli("site", str(copy)).returncode in (0, 1)
    for page in (copy / "site").rglob("*.html"):
        parser = _Links()
        parser.feed(page.read_text(encoding="utf-8"))
        for url in parser.urls:
            scheme = re.match(r"^\s*([a-zA-Z][a-zA-Z0-9+.-]*):", url)
            assert scheme is None or scheme.group(1) in ("https", "data"), (page, url)
        assert "<script>document.title" not in page.read_text(encoding="utf-8"), page
    key = next(e["key"] for e in map(json.loads, (copy / "provenance.jsonl").read_text().splitlines())
               if e["kind"] == "acta")
    browser.get((copy / "site" / "index.html").as_uri())
    _by_id(browser, "q").send_keys(key.replace(".", " "))
    _wait(browser, lambda b: b.find_elements("css selector", "#results a"))
    for a in browser.find_elements("css selector", "#results a"):
        assert not a.get_attribute("href").lower().startswith("javascript"), a.get_attribute("href")
    browser.find_element("css selector", "#results a").click()
    _wait(browser, lambda b: b.current_url.endswith(f"/{key}.html"))
    assert browser.title != "owned"


def test_a_trusted_comment_holding_a_u2028_reaches_the_page_whole(mirror, keys, tmp_path):
    """The site read the signature with str.splitlines(): a trusted comment holding U+2028
    (minisign and verify --pubkey accept it) was cut there, and the cut-off rest taken as the
    global signature (in firma.js, which every table's page loads), so every check in the browser
    would fail. Read as minisign reads it."""
    from mirror import sign

    copy = tmp_path / "copy"
    shutil.copytree(mirror, copy, symlinks=True, ignore=shutil.ignore_patterns("site"))
    old = sign.parse_signature((copy / "signed-root.json.minisig").read_text())
    comment = old.trusted_comment + "\u2028signed by the observers"
    text = sign.sign_file(copy / "signed-root.json", sign.load_secret(f"{keys['signer']}.key"), comment)
    (copy / "signed-root.json.minisig").write_text(text)
    from tests.test_evidence_core import _retag

    _retag(copy, "signed-root.json.minisig")
    check = run_cli("verify", str(copy), "--pubkey", f"{keys['signer']}.pub")
    assert check.returncode == 0, check.stdout
    proc = run_cli("site", str(copy), "--pubkey", f"{keys['signer']}.pub")
    assert proc.returncode == 0 and "minisign" not in proc.stderr, proc.stderr
    glob = text.splitlines()[-1] if not text.endswith("\n") else text.rstrip("\n").rsplit("\n", 1)[1]
    script = ("\"trusted\":" + json.dumps(comment, ensure_ascii=False).replace("\u2028", "\\u2028")
              + ",\"glob\":\"" + glob + "\"")
    assert script in (copy / "site" / "firma.js").read_text(), "firma.js lacks the whole trusted comment"


def test_all_inclusion_paths_in_one_pass_equal_rfc_9162_paths():
    for n in (1, 2, 3, 5, 8, 13, 31, 64, 100):
        leaves = [leaf_hash(str(i).encode()) for i in range(n)]
        root = root_of_leaves(leaves)
        paths = all_inclusion_paths(leaves)
        assert [inclusion_path(leaves, i) for i in range(n)] == paths
        assert all(verify_inclusion(leaves[i], i, n, paths[i], root) for i in range(n))


def test_the_site_names_every_status_the_audit_gives():
    from mirror.audit.coverage import STATUSES
    from mirror.audit.site import STATUS_LABELS

    assert set(STATUS_LABELS) == set(STATUSES)


def test_every_sum_of_votes_names_how_many_actas_it_adds_and_none_shows_zeros_for_nothing_read(mirror):
    """An area's votes table said 'Votos según los códigos QR leídos' with no base, and where no
    acta was read it showed 0 for every candidate: a screenshot of it reads as no votes. The
    caption now gives 'N de M actas', and with none read the cells are '—'."""
    pages = [p for p in (mirror / "site").rglob("index.html")]
    seen = {"read": 0, "none": 0}
    for page in pages:
        text = page.read_text()
        counts = re.search(r"(\d[\d.]*) de (\d[\d.]*) actas leídas del código QR", text)
        assert counts, page
        read, total = counts.groups()
        caption = f"Votos según los códigos QR leídos: {read} de {total} actas"
        assert caption in text, (page, text[text.find("<caption>Votos"):][:200])
        votes = text[text.find(caption):]
        votes = votes[:votes.find("</table>")]
        if read == "0":
            seen["none"] += 1
            assert "ninguna leída" in votes and "<td>0</td>" not in votes, votes
        else:
            seen["read"] += 1
            assert "<td>—</td>" not in votes
    assert seen["read"] >= 5, seen
