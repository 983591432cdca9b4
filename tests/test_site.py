"""What a reader of the documentation site sees, checked in a real browser.

The site is built (`mkdocs build --strict`, as CI does) into a temporary folder, served on
localhost, and every page opened in Debian's headless Chromium (driven by Selenium through
Debian's chromedriver: no browser is downloaded) with every host but localhost unresolvable, as
for a reader on a train. On each page: no TeX (`$$`, `\\frac`) outside rendered math and
code, no mermaid source (`flowchart TD`) anywhere, no mermaid block left undrawn, every
`.arithmatex` element drawn by KaTeX and no KaTeX error, no TeX source in a heading or the
table of contents, no literal "- " (or "1. ... 2. ") list
marker in a paragraph (a list without its blank line), every image loaded, no failed request
and no console error; the tutorial's equations are drawn and the architecture page's import
graph is an SVG. Screenshots of the home, tutorial and architecture
pages are written to a temporary folder, whose path is printed.

`.ci/run` installs chromium and chromium-driver (apt) and KaTeX (`npm ci`). Building the site and
opening its 38 pages took 2-2.5 minutes on a busy 2-core machine (the build alone 20-30 s).
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]
# The notices of MkDocs' and Material's futures (docs/toolchain.md) are kept out of CI's log.
QUIET = {"NO_MKDOCS_2_WARNING": "1", "DISABLE_MKDOCS_2_WARNING": "true"}
SCREENSHOTS = {"home": "index.html", "tutorial": "tutorial/index.html", "architecture": "architecture/index.html"}

# Run in the page: what a reader would see wrong. Text inside rendered math, code, scripts and
# styles is not prose; everything else is.
PAGE_CHECK = r"""
const problems = [];
const skip = "script, style, pre, code, textarea, .katex, .katex-display, .katex-error";
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
// TeX in code is code; mermaid source is flagged even in a code block, where an undrawn diagram stays.
const raw = [[/\$\$/, "raw TeX $$", skip], [/\\frac/, "raw TeX \\frac", skip],
             [/flowchart\s+(TD|TB|BT|LR|RL)\b/, "raw mermaid flowchart", "script, style, svg"]];
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  for (const [pattern, what, outside] of raw) {
    if (!node.parentElement.closest(outside) && pattern.test(node.textContent)) {
      problems.push(`${what}: "${node.textContent.trim().slice(0, 80)}"`);
    }
  }
}
const headings = "h1, h2, h3, h4, h5, h6, .md-nav__link";  // and the table of contents: they should read as text
const again = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = again.nextNode(); n; n = again.nextNode()) {
  if (!n.parentElement.closest(skip) && n.parentElement.closest(headings) && /\\\(|\\\[|\$[^\s$][^$]*\$/.test(n.textContent)) {
    problems.push(`raw TeX in a heading or the table of contents: "${n.textContent.trim().slice(0, 80)}"`);
  }
}
for (const el of document.querySelectorAll(".arithmatex")) {
  if (!el.querySelector(".katex")) problems.push(`math not drawn: "${el.textContent.trim().slice(0, 80)}"`);
}
for (const el of document.querySelectorAll(".mermaid, .jp-Mermaid")) {  // source a script should have drawn
  if (!el.querySelector("svg")) problems.push(`diagram not drawn: "${el.textContent.trim().slice(0, 80)}"`);
}
for (const el of document.querySelectorAll(".katex-error")) {
  problems.push(`KaTeX error: ${el.getAttribute("title")}`);
}
for (const p of document.querySelectorAll("p")) {
  if (p.closest(skip)) continue;
  const m = p.textContent.match(/(^|\n)\s*([-*] \S.{0,60})/) || p.textContent.match(/(^|\n)\s*(1\. \S.{0,60})[^]*\n\s*2\. /);
  if (m) problems.push(`a list marker in a paragraph (a list without a blank line before it?): "${m[2]}"`);
}
for (const img of document.querySelectorAll("img")) {
  if (!img.complete || img.naturalWidth === 0) problems.push(`image not loaded: ${img.getAttribute("src").slice(0, 80)}`);
}
return {problems: problems,
        katex: document.querySelectorAll(".katex").length,
        arithmatex: document.querySelectorAll(".arithmatex .katex").length,
        svgImages: [...document.querySelectorAll("img")].filter(i => /\.svg$/.test(i.src) && i.naturalWidth > 0).map(i => i.src)};
"""

WAIT_FOR_IMAGES = r"""
const done = arguments[arguments.length - 1];
for (const img of document.querySelectorAll("img[loading=lazy]")) img.loading = "eager";
const start = Date.now();
(function poll() {
  const pending = [...document.querySelectorAll("img")].filter(i => !i.complete).length;
  if (pending === 0 || Date.now() - start > 10000) requestAnimationFrame(() => requestAnimationFrame(() => done(pending)));
  else setTimeout(poll, 50);
})();
"""


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request in the test's output
        pass


def serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """`folder` on http://127.0.0.1:PORT/ from a background thread."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def debian_chromium() -> tuple[str, str]:
    """The paths of Debian's chromium and chromedriver; a clear failure where they are missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.fail("tests/test_site.py needs Debian's chromium and its driver: "
                    "`apt-get install -y chromium chromium-driver` (as .ci/run does)")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    binary, driver_path = debian_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # the network is off but for localhost
                "--disable-background-networking", "--disable-component-update", "--no-first-run"]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads a browser or driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def check_page(driver, url: str) -> tuple[list[str], dict]:
    """Open `url` and return what is wrong on it (one line each) and what the page holds."""
    driver.get_log("browser"), driver.get_log("performance")  # forget the previous page's
    driver.get(url)
    driver.execute_async_script(WAIT_FOR_IMAGES)
    found = driver.execute_script(PAGE_CHECK)
    problems = list(found["problems"])
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message'][:200]}")
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.loadingFailed" and not params.get("canceled"):
            problems.append(f"failed request: {params.get('errorText')} ({params.get('type')})")
        elif message["method"] == "Network.responseReceived" and params["response"]["status"] >= 400:
            problems.append(f"failed request: {params['response']['status']} {params['response']['url']}")
    return problems, found


def build_site(out: Path) -> None:
    env = {**os.environ, **QUIET, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    assert "end of life" not in done.stdout + done.stderr and "MkDocs 2" not in done.stdout + done.stderr


def screenshot(driver, url: str, path: Path) -> None:
    """The page from its top, as tall as it is (up to 8000 pixels)."""
    driver.get(url)
    driver.execute_async_script(WAIT_FOR_IMAGES)
    height = min(8000, driver.execute_script("return document.documentElement.scrollHeight"))
    driver.set_window_size(1280, height)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 1000)


def test_every_page_reads_as_a_reader_sees_it_offline(browser, tmp_path, capsys):
    site = tmp_path / "site"
    build_site(site)
    server, base = serve(site)
    try:
        pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html"))
        assert len(pages) > 30 and "tutorial/index.html" in pages
        problems, seen = [], {}
        for page in pages:
            found, seen[page] = check_page(browser, base + page)
            problems += [f"{page}: {p}" for p in found]
        assert not problems, f"{len(problems)} problems a reader would see:\n" + "\n".join(problems)
        assert seen["tutorial/index.html"]["katex"] >= 30  # the tutorial's equations, drawn
        assert seen["classifier-guidance/index.html"]["arithmatex"] >= 1  # and a Markdown page's
        assert any(src.endswith("img/import-graph.svg") for src in seen["architecture/index.html"]["svgImages"])
        shots = Path(tempfile.mkdtemp(prefix="ddpmkit-site-screenshots-"))
        for name, page in SCREENSHOTS.items():
            screenshot(browser, base + page, shots / f"{name}.png")
        with capsys.disabled():
            print(f"\ntests/test_site.py: {len(pages)} pages checked; screenshots of {', '.join(SCREENSHOTS)} in {shots}")
    finally:
        server.shutdown()


BROKEN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>broken</title></head><body>
<h2>2. The posterior $q(x_{t-1} \\mid x_t, x_0)$ by Bayes' rule</h2>
<p>The forward process: $$q(x_t \\mid x_0)$$ in closed form.</p>
<p>Why the defaults are what they are:
- the cosine schedule, because
- the EMA, because</p>
<p>Steps:
1. get the weights
2. run it</p>
<div class="arithmatex">\\(x_t\\)</div>
<p>A graph: flowchart TD
    a --> b</p>
<pre class="mermaid"><code>flowchart LR
    c --> d</code></pre>
<img src="missing.png" alt="">
<pre><code>$$ and \\frac and - markers in code are fine</code></pre>
</body></html>
"""


def test_the_page_check_names_what_is_wrong(browser, tmp_path):
    """The checker itself fails a page as the site was before issue 33: raw $$, a list without
    its blank line, unrendered math, mermaid source and a missing image, each reported by name."""
    (tmp_path / "broken.html").write_text(BROKEN_PAGE)
    (tmp_path / "fine.html").write_text("<!doctype html><html><head><link rel=\"icon\" href=\"data:,\"></head><body><p>Plain text.</p>"
                                        "<pre><code>$$ \\frac{a}{b}\n- x</code></pre></body></html>")
    server, base = serve(tmp_path)
    try:
        problems, _ = check_page(browser, base + "broken.html")
        assert check_page(browser, base + "fine.html")[0] == []
    finally:
        server.shutdown()
    text = "\n".join(problems)
    assert re.search(r'raw TeX \$\$: "The forward process', text)
    assert 'a list marker in a paragraph (a list without a blank line before it?): "- the cosine schedule' in text
    assert 'a list marker in a paragraph (a list without a blank line before it?): "1. get the weights' in text
    assert 'raw TeX in a heading or the table of contents: "2. The posterior $q(x_{t-1}' in text
    assert 'math not drawn: "\\(x_t\\)"' in text
    assert "raw mermaid flowchart" in text and 'diagram not drawn: "flowchart LR' in text
    assert "image not loaded: missing.png" in text
    assert "failed request: 404" in text and "missing.png" in text
    assert "code are fine" not in text  # TeX and list markers in code blocks are code
