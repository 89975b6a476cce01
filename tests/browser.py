"""A real headless browser for the report's tests: Debian's ``chromium``, run with every
request sent to a recording proxy on loopback (so any load the page attempts is seen), its
screenshot decoded with zlib (no imaging library needed).

``scripts/test`` installs chromium when it is missing; without it these tests skip, unless
``CI=true`` or ``HPCBRIDGE_REQUIRE_LAB=1`` say the run must be complete.
"""

from __future__ import annotations

import os
import shutil
import socketserver
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest

# Chromium's own traffic (updates, safe browsing, metrics) would hit the proxy too: off.
QUIET = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--disable-domain-reliability",
         "--disable-client-side-phishing-detection", "--metrics-recording-only",
         "--no-default-browser-check", "--disable-features=MediaRouter,OptimizationHints,Translate,NetworkTimeServiceQuerying,AutofillServerCommunication,CertificateTransparencyComponentUpdater,AccountConsistency",
         "--google-base-url=http://127.0.0.1:9", "--disable-breakpad",
         "--proxy-bypass-list=<-loopback>"]  # fmt: skip


# Chromium's own service endpoints, which it contacts whatever the page (component updates,
# sign-in, network time) even with the flags above. Exact host names, so a page's CDN load
# (fonts.googleapis.com, fonts.gstatic.com, ...) is still counted.
BROWSER_OWN_HOSTS = frozenset({"update.googleapis.com", "accounts.google.com", "clients2.google.com",
                               "clientservices.googleapis.com", "safebrowsing.googleapis.com",
                               "redirector.gvt1.com", "content-autofill.googleapis.com"})  # fmt: skip


def request_host(line: str) -> str:
    """The host of a proxy request line: ``CONNECT h:443 ...`` or ``GET http://h/... ...``."""
    parts = line.split()
    target = parts[1] if len(parts) > 1 else ""
    if parts and parts[0] == "CONNECT":
        return target.rsplit(":", 1)[0]
    return target.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def page_requests(requests: list[str]) -> list[str]:
    """The requests not made by chromium for itself: what the page tried to load."""
    return [r for r in requests if request_host(r) not in BROWSER_OWN_HOSTS]


def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        if os.environ.get("CI") == "true" or os.environ.get("HPCBRIDGE_REQUIRE_LAB") == "1":
            pytest.fail("chromium is not installed (scripts/test installs it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install --no-install-recommends chromium)")
    return path


class _Recorder(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self) -> None:
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        if line:
            self.server.requests.append(line)  # type: ignore[attr-defined]
        try:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        except OSError:
            pass


@contextmanager
def recording_proxy() -> Iterator[_Recorder]:
    """An HTTP proxy on 127.0.0.1 that records the request line of every connection
    (``GET http://...`` or ``CONNECT host:443``) and refuses them all."""
    server = _Recorder()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Render:
    png: Path
    dom: str
    requests: list[str]  # what the page tried to load through the proxy


def render(page: Path, out_dir: Path, *, width: int = 1200, height: int = 1000) -> Render:
    """Load ``page`` (file://) in headless chromium: a screenshot and the DOM after load."""
    exe = chromium()
    png = out_dir / f"{page.stem}.png"
    with recording_proxy() as proxy:
        base = [exe, *QUIET, f"--proxy-server=http://127.0.0.1:{proxy.server_address[1]}",
                f"--user-data-dir={out_dir / 'chromium-profile'}", f"--window-size={width},{height}"]  # fmt: skip
        url = page.resolve().as_uri()
        shot = subprocess.run([*base, f"--screenshot={png}", url], capture_output=True, text=True, timeout=120)
        assert shot.returncode == 0 and png.exists(), shot.stderr[-2000:]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        assert dom.returncode == 0, dom.stderr[-2000:]
        requests = list(proxy.requests)
    return Render(png, dom.stdout, requests)


def decode_png(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB or RGBA PNG, as chromium writes:
    with Pillow when it is there (the bench extra brings it), else zlib and the PNG filters."""
    try:
        from PIL import Image
    except ImportError:
        return _decode_png(path)
    with Image.open(path) as img:
        rgb = img.convert("RGB")
        w, h = rgb.size
        raw = rgb.tobytes()
    return w, h, [raw[y * w * 3:(y + 1) * w * 3] for y in range(h)]


def _decode_png(path: Path) -> tuple[int, int, list[bytes]]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, head = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
    assert head is not None
    width, height, depth, colour, _, _, interlace = head
    assert depth == 8 and colour in (2, 6) and interlace == 0, head
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    i = 0
    for _ in range(height):
        ftype, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 255
            elif ftype == 2:
                line[x] = (line[x] + b) & 255
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        prev = line
        rgb = bytes(line) if bpp == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3)
        rows.append(rgb)
    return width, height, rows


def find_colour(rows: list[bytes], hex_colour: str) -> tuple[int, tuple[int, int, int, int] | None]:
    """(pixel count, bounding box x0, y0, x1, y1) of the pixels exactly of this colour."""
    target = bytes.fromhex(hex_colour.lstrip("#"))
    n, box = 0, None
    for y, row in enumerate(rows):
        start = row.find(target)
        while start != -1:
            if start % 3 == 0:
                x = start // 3
                n += 1
                box = (x, y, x, y) if box is None else (min(box[0], x), min(box[1], y), max(box[2], x), max(box[3], y))
            start = row.find(target, start + 1)
    return n, box


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.scripts += tag == "script"
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "data", "poster", "xlink:href") and value:
                self.refs.append(value)


def outside_references(html: str) -> list[str]:
    """Every src/href-like attribute and CSS ``url(``/``@import`` that could make the page
    fetch something, plus any script element (a page with none cannot fetch later)."""
    parser = _Refs()
    parser.feed(html)
    found = [r for r in parser.refs if not r.startswith("#")]
    found += ["<script>"] * parser.scripts
    low = html.lower()
    found += [k for k in ("url(", "@import") if k in low]
    return found
