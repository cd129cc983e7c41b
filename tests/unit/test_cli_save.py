"""`python -m consumer submit --save FILE` downloads only http(s) URLs: a result names whatever
its producer wrote, and a `file://` (or a redirect to another scheme) must not make the command
copy a local file or reach another kind of server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import consumer.client.submit
from consumer.__main__ import main
from consumer.client.submit import download
from schemas import Audit, GenerationResult, ImageRef

PNG = b"\x89PNG\r\n\x1a\n not really"


@contextmanager
def http_server(location: str | None = None) -> Iterator[str]:
    """A local server that answers GET with PNG, or with a 302 to `location`; its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if location is not None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def listener() -> Iterator[tuple[int, list[bool]]]:
    """A TCP port that records whether anything connected to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.5)
    connected: list[bool] = []

    def accept() -> None:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        connected.append(True)
        conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], connected
    finally:
        thread.join(timeout=2)
        sock.close()


def test_an_http_url_is_saved(tmp_path: Path) -> None:
    with http_server() as base:
        target = download(f"{base}/images/r/0.png", tmp_path / "out" / "x.png")
    assert target.read_bytes() == PNG


@pytest.mark.parametrize(
    "url", ["file:///etc/hostname", "FILE:///etc/hostname", "ftp://127.0.0.1/x.png", "data:,x"]
)
def test_other_schemes_are_refused_before_anything_is_written(url: str, tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    with pytest.raises(ValueError, match=r"http\(s\) URLs only"):  # DownloadRefused
        download(url, target)
    assert not target.exists()


def test_a_local_file_is_not_copied(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not an image")
    with pytest.raises(ValueError, match=r"http\(s\) URLs only"):
        download(secret.as_uri(), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_a_redirect_to_another_scheme_is_refused_before_it_is_followed(tmp_path: Path) -> None:
    """urllib's own redirect handler follows a redirect to ftp://: here nothing connects."""
    with (
        listener() as (port, connected),
        http_server(f"ftp://127.0.0.1:{port}/x.png") as base,
        pytest.raises(ValueError, match="redirect"),  # DownloadRefused
    ):
        download(f"{base}/images/r/0.png", tmp_path / "x.png")
    assert connected == [] and not (tmp_path / "x.png").exists()


def test_submit_save_of_a_file_url_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "elsewhere.png"
    source.write_bytes(PNG)
    image = ImageRef(
        image_id="im_5a1d3cc4a099", url=source.as_uri(), seed=1, key="r1/0.png", width=64, height=64
    )
    audit = Audit(policy="standard", duration_sec="0.000", model="stabilityai/sdxl-turbo")
    result = GenerationResult(request_id="r1", status="completed", images=[image], audit=audit)
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setattr(consumer.client.submit, "run_submit", lambda *args, **kwargs: result)
    assert main(["submit", "a lighthouse", "--save", str(tmp_path / "out.png")]) == 2
    assert "http(s) URLs only" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()
