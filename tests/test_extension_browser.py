"""The reference Chrome extension (examples/chrome-extension/) loaded unpacked in Debian's headless Chromium.

One browser for the module, with two extensions: ours (its id pinned by the manifest's `key`) and a copy without
the key (another id: a foreign extension). The fake microphone plays one fixture (the consultant); a web page,
the "call", plays another in an <audio> element (the customer), and the extension captures that tab.

What automation cannot do as a user does, and what stands in for it (the rest is the extension's real path):
- Chrome gives an extension a tab's audio only after the user invoked it on that tab (clicked its icon), and
  nothing can click the toolbar of a headless browser: getMediaStreamId fails with "Extension has not been
  invoked for the current page". Chromium's `--allowlisted-extension-id=<id>` lets that one extension capture
  without the click; getMediaStreamId, the offscreen document's getUserMedia and everything after are real.
- With `--use-fake-ui-for-media-stream` (the demo test's flag) the offscreen document's getUserMedia for the
  tab's stream id fails with NotFoundError (the microphone works). `--auto-accept-camera-and-microphone-capture`
  grants the microphone and leaves tab capture alone.
- Playwright adds `--mute-audio` to headless Chromium; a muted tab is captured as silence, so it is dropped.
- The side panel is not a tab, so Playwright lists no page for it: it is opened as a user does (the popup's
  button, with a real click, which chrome.sidePanel.open needs) and driven over CDP (Target.attachToTarget).
Playwright's headless mode is Chromium's new headless (`--headless`), where MV3 service workers, offscreen
documents, tab capture and the side panel all run.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import soxr
from playwright.sync_api import BrowserContext, CDPSession, Page, Route, Worker, sync_playwright
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from presales_ws.client.wavfile import read_wav
from presales_ws.protocol import Status, Stop, Suggestion, decode_client_message, encode
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, reference_text, word_error_rate
from tests.tcp_proxy import ThreadedProxy
from tests.test_suggestions_e2e import SAMPLE_KB

ROOT = Path(__file__).resolve().parent.parent
EXTENSION = ROOT / "examples" / "chrome-extension"
EXTENSION_ID = "nmgidhkcampkdeodifmoghlabkmidbgj"  # pinned by manifest.json's `key`; README and CLIENTS.md say so
ORIGIN = f"chrome-extension://{EXTENSION_ID}"
CHROMIUM = Path("/usr/bin/chromium")
MICROPHONE_FIXTURE = "onboarding_answer_us.wav"  # the consultant: a statement
TAB_FIXTURE = "data_residency_question_us.wav"  # the customer: a question the sample knowledge base answers
FAKE_DEVICE_RATE_HZ = 48000
LEAD_SILENCE_S = 1.0
TAIL_SILENCE_S = 2.0  # > LOCAL_ENDPOINTING_MS: each sentence ends in a final
MAX_WER = 0.35  # espeak through Chromium's capture, decoded by Whisper tiny.en
KEY = "pk_extension_0123456789abcdef"
CALL_URL = "http://call.test/"  # answered by the test (context.route): no network
WAIT_S = 30.0


def extension_id(manifest_key: str) -> str:
    """Chrome's id for a public key: the first 128 bits of its SHA-256, as letters a-p."""
    digest = hashlib.sha256(base64.b64decode(manifest_key)).hexdigest()[:32]
    return "".join(chr(ord("a") + int(c, 16)) for c in digest)


def padded_wav(fixture: str, rate_hz: int) -> bytes:
    """The fixture with silence around it, as a mono s16 WAV at `rate_hz`."""
    audio = read_wav(FIXTURES / fixture)
    speech = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0
    rate = audio.sample_rate
    padded = np.concatenate([np.zeros(int(LEAD_SILENCE_S * rate)), speech, np.zeros(int(TAIL_SILENCE_S * rate))])
    resampled = soxr.resample(padded.astype(np.float32), rate, rate_hz)
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate_hz)
        wav.writeframes((np.clip(resampled, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def call_page_html() -> str:
    """The customer's side of a call: a page that plays the fixture when its button is clicked."""
    data = base64.b64encode(padded_wav(TAB_FIXTURE, 16000)).decode()
    return (
        "<!doctype html><title>call</title>"
        f'<audio id="customer" src="data:audio/wav;base64,{data}"></audio>'
        '<button id="play" onclick="customer.currentTime = 0; customer.play()">play</button>'
    )


class ExtensionView:
    """A page of an extension that is not a tab (the side panel), driven over a CDP session of its own."""

    def __init__(self, cdp: CDPSession, pump: Page, target_id: str) -> None:
        self._cdp = cdp
        self._pump = pump  # sync Playwright delivers CDP events only while one of its calls runs
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._session: str = cdp.send("Target.attachToTarget", {"targetId": target_id, "flatten": False})["sessionId"]
        cdp.on("Target.receivedMessageFromTarget", self._received)

    def _received(self, event: dict[str, Any]) -> None:
        if event.get("sessionId") == self._session:
            message = json.loads(event["message"])
            if "id" in message:
                self._replies[message["id"]] = message

    def evaluate(self, expression: str, timeout_s: float = 10.0) -> Any:
        """The value of `expression` (awaited), run as if the user had just clicked (userGesture)."""
        self._next_id += 1
        ident = self._next_id
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True, "userGesture": True}
        request = {"id": ident, "method": "Runtime.evaluate", "params": params}
        self._cdp.send("Target.sendMessageToTarget", {"sessionId": self._session, "message": json.dumps(request)})
        deadline = time.monotonic() + timeout_s
        while ident not in self._replies:
            if time.monotonic() > deadline:
                raise AssertionError(f"no answer from the side panel to {expression!r}")
            self._pump.wait_for_timeout(10)
        reply = self._replies.pop(ident)
        result = reply.get("result", {})
        if "error" in reply or "exceptionDetails" in result:
            raise AssertionError(f"{expression!r} failed in the side panel: {reply}")
        return result.get("result", {}).get("value")

    def text(self, element_id: str) -> str:
        value: str = self.evaluate(f"document.getElementById({element_id!r}).textContent")
        return value

    def wait_for(self, expression: str, timeout_s: float = WAIT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise AssertionError(f"side panel: never {expression!r}; it shows {self.describe()}")
            self._pump.wait_for_timeout(200)

    def lines(self) -> list[tuple[str, str]]:
        """(class, text) of every transcript line, markers included, top to bottom."""
        rows: list[list[str]] = self.evaluate(
            "[...document.querySelectorAll('#transcript .line')].map(l => [l.className, l.textContent])"
        )
        return [(cls, text) for cls, text in rows]

    def finals(self) -> list[tuple[str, str, str]]:
        """(channel, role, text) of every final line."""
        rows: list[list[str]] = self.evaluate(
            "[...document.querySelectorAll('#transcript .line.final')].map(l => [l.dataset.channel,"
            " l.querySelector('.role').textContent, l.querySelector('.text').textContent])"
        )
        return [(channel, role, text) for channel, role, text in rows]

    def describe(self) -> str:
        return json.dumps(
            self.evaluate(
                "({status: document.getElementById('status').textContent,"
                " notice: document.getElementById('notice').textContent,"
                " transcript: document.getElementById('transcript').innerText,"
                " errors: document.getElementById('errors').innerText})"
            )
        )

    def wait_for_final(self, channel: str, fixture: str, *, count: int = 1) -> list[tuple[str, str, str]]:
        """Wait until `count` finals on `channel` read like the fixture; they are returned. A sentence heard
        as two finals (a misheard word can end it early at its comma) counts once, joined."""
        reference = reference_text(fixture)
        deadline = time.monotonic() + WAIT_S
        while True:
            lines = [f for f in self.finals() if f[0] == channel]
            good: list[tuple[str, str, str]] = []
            i = 0
            while i < len(lines):
                one, two = lines[i], lines[i : i + 2]
                joined = (one[0], one[1], " ".join(f[2] for f in two))
                if word_error_rate(reference, one[2]) <= MAX_WER:
                    good.append(one)
                    i += 1
                elif len(two) == 2 and two[1][1] == one[1] and word_error_rate(reference, joined[2]) <= MAX_WER:
                    good.append(joined)
                    i += 2
                else:
                    i += 1
            if len(good) >= count:
                return good
            if time.monotonic() > deadline:
                raise AssertionError(f"no final like {reference!r} on channel {channel}: {self.describe()}")
            self._pump.wait_for_timeout(200)

    def close(self) -> None:
        self.evaluate("window.close()")


class Chromium:
    """The browser, its two extensions and the call's tab, with what a user does to them."""

    def __init__(self, context: BrowserContext, foreign_id: str) -> None:
        self.context = context
        self.foreign_id = foreign_id
        self.cdp = context.browser.new_browser_cdp_session() if context.browser else None
        context.route(CALL_URL, self._serve_call)
        self.call_page = context.pages[0] if context.pages else context.new_page()
        self.call_page.goto(CALL_URL)

    def _serve_call(self, route: Route) -> None:
        route.fulfill(status=200, content_type="text/html", body=call_page_html())

    def worker(self, extension: str) -> Worker:
        for worker in self.context.service_workers:
            if worker.url.startswith(f"chrome-extension://{extension}/"):
                return worker
        raise AssertionError(f"no service worker for {extension}")

    def set_options(self, extension: str, *, server_url: str, key: str, tab_audio: bool) -> str:
        """Fill and save the options page; returns the origin it tells the user to allow."""
        page = self.context.new_page()
        try:
            page.goto(f"chrome-extension://{extension}/options.html")
            page.fill("#serverUrl", server_url)
            page.fill("#apiKey", key)
            page.select_option("#microphoneRole", "consultant")
            page.set_checked("#tabAudio", tab_audio)
            page.click("button[type=submit]")
            page.wait_for_selector("#saved:text-is('saved')")  # no wait_for_function: extension CSP forbids eval
            return page.inner_text("#origin")
        finally:
            page.close()
            self.call_page.bring_to_front()

    def open_side_panel(self, extension: str) -> ExtensionView:
        """As a user does: the popup's "Open the side panel" (a real click), then back to the call's tab."""
        assert self.cdp is not None
        popup = self.context.new_page()
        popup.goto(f"chrome-extension://{extension}/popup.html")
        popup.click("#panel")
        popup.close()
        self.call_page.bring_to_front()
        url = f"chrome-extension://{extension}/sidepanel.html"
        deadline = time.monotonic() + 10
        while True:
            targets = [t for t in self.cdp.send("Target.getTargets")["targetInfos"] if t["url"] == url]
            if targets:
                view = ExtensionView(self.cdp, self.call_page, targets[-1]["targetId"])
                view.wait_for("document.readyState === 'complete'")
                return view
            if time.monotonic() > deadline:
                raise AssertionError("the side panel did not open")
            self.call_page.wait_for_timeout(100)

    def popup_click(self, extension: str, button: str) -> None:
        popup = self.context.new_page()
        try:
            popup.goto(f"chrome-extension://{extension}/popup.html")
            popup.wait_for_selector(f"#{button}:enabled")
            popup.click(f"#{button}")
        finally:
            popup.close()
            self.call_page.bring_to_front()

    def customer_speaks(self) -> None:
        """The call's tab plays the customer's sentence, to its end."""
        self.call_page.click("#play")
        self.call_page.wait_for_function("document.getElementById('customer').ended", timeout=WAIT_S * 1000)

    def wait_for_kept_final(self, extension: str, channel: int) -> None:
        """Wait until the offscreen document keeps a final of `channel` for the views (asked as the worker does)."""
        deadline = time.monotonic() + WAIT_S
        while True:
            finals: list[dict[str, Any]] = self.worker(extension).evaluate(
                "chrome.runtime.sendMessage({target: 'offscreen', type: 'snapshot'}).then(s => s.events"
                ".map(m => m.event).filter(e => e.type === 'transcript' && e.message.is_final && e.message.text)"
                ".map(e => e.message))"
            )
            if any(final["channel"] == channel for final in finals):
                return
            assert time.monotonic() < deadline, f"no final of channel {channel} reached the extension"
            self.call_page.wait_for_timeout(200)

    def stop_any_call(self, extension: str) -> None:
        self.worker(extension).evaluate(
            "chrome.runtime.getContexts({contextTypes: ['OFFSCREEN_DOCUMENT']}).then(c => c.length &&"
            " chrome.runtime.sendMessage({target: 'offscreen', type: 'stop'}))"
        )


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    live = LiveServer(
        make_settings(
            api_keys=(KEY,),
            allowed_origins=(ORIGIN,),
            knowledge_base=str(SAMPLE_KB),
            heartbeat_interval_s=1.0,
            heartbeat_timeout_s=10.0,
            resume_window_s=30.0,  # a dropped connection's session waits for the extension to resume it
        )
    ).start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    # CI installs Chromium (.ci/run); where CI is set and it is missing, the launch fails loudly instead.
    if not CHROMIUM.exists() and not os.environ.get("CI"):
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    directory = tmp_path_factory.mktemp("extension")
    microphone = directory / "fake_microphone.wav"
    microphone.write_bytes(padded_wav(MICROPHONE_FIXTURE, FAKE_DEVICE_RATE_HZ))
    foreign = directory / "foreign-extension"
    shutil.copytree(EXTENSION, foreign)
    manifest = json.loads((foreign / "manifest.json").read_text())
    del manifest["key"]  # Chrome derives an unpacked extension's id from its path instead
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    extensions = f"{EXTENSION},{foreign}"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(directory / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            ignore_default_args=["--mute-audio"],
            args=[
                f"--disable-extensions-except={extensions}",
                f"--load-extension={extensions}",
                f"--allowlisted-extension-id={EXTENSION_ID}",
                "--auto-accept-camera-and-microphone-capture",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={microphone}%noloop",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            deadline = time.monotonic() + 10
            while len(context.service_workers) < 2 and time.monotonic() < deadline:
                context.wait_for_event("serviceworker", timeout=10_000)
            ids = {worker.url.split("/")[2] for worker in context.service_workers}
            assert EXTENSION_ID in ids, f"the extension did not load: {ids}"
            (foreign_id,) = ids - {EXTENSION_ID}
            yield Chromium(context, foreign_id)
        finally:
            context.close()


def test_the_capture_code_in_the_extension_is_the_demos() -> None:
    result = subprocess.run(
        [str(EXTENSION / "sync-capture.sh"), "--check"], capture_output=True, text=True, timeout=10, check=False
    )
    assert result.returncode == 0, result.stderr
    for name in ("capture.js", "capture-worklet.js", "resend.js"):
        assert (EXTENSION / "lib" / name).read_bytes() == (ROOT / "presales_ws" / "static" / name).read_bytes()


def test_the_manifest_key_pins_the_documented_extension_id() -> None:
    manifest = json.loads((EXTENSION / "manifest.json").read_text())
    assert extension_id(manifest["key"]) == EXTENSION_ID
    assert manifest["manifest_version"] == 3
    assert sorted(manifest["permissions"]) == ["offscreen", "sidePanel", "storage", "tabCapture"]
    for doc in ("README.md", "docs/CLIENTS.md"):
        assert EXTENSION_ID in (ROOT / doc).read_text(), doc


def test_the_side_panel_shows_the_microphone_as_consultant_and_the_tab_as_customer(
    chromium: Chromium, server: LiveServer
) -> None:
    origin = chromium.set_options(EXTENSION_ID, server_url=server.ws_url, key=KEY, tab_audio=True)
    assert origin == ORIGIN  # what the options page tells the user to put in ALLOWED_ORIGINS
    try:
        panel = chromium.open_side_panel(EXTENSION_ID)
        panel.evaluate("document.getElementById('start').click()")
        panel.wait_for("document.getElementById('status').textContent.startsWith('live')")
        assert panel.text("status") == "live: local, 2 channels"  # microphone + tab, interleaved
        assert "the tab stays audible to you" in panel.text("capture")
        (consultant,) = panel.wait_for_final("0", MICROPHONE_FIXTURE)
        assert consultant[1] == "consultant"

        # The side panel is closed: the call goes on in the offscreen document, and the customer speaks.
        panel.close()
        chromium.customer_speaks()
        chromium.wait_for_kept_final(EXTENSION_ID, channel=1)  # arrived while no view was open

        # Opened again, the panel shows the whole call: the consultant's line and what came while it was shut.
        panel = chromium.open_side_panel(EXTENSION_ID)
        (customer,) = panel.wait_for_final("1", TAB_FIXTURE)
        assert customer[1] == "customer"
        assert consultant in panel.finals()
        panel.wait_for("document.querySelector('#suggestions .card') !== null")
        card = panel.evaluate("document.querySelector('#suggestions .card').innerText")
        assert "Europe" in card and "from knowledge_base" in card, card
        panel.wait_for("document.getElementById('heartbeat').textContent.startsWith('last heartbeat')")

        chromium.popup_click(EXTENSION_ID, "stop")  # Stop from the toolbar's popup works as well
        panel.wait_for("document.getElementById('status').textContent === 'closed'")
        assert panel.text("errors") == ""
        assert panel.evaluate("!document.getElementById('start').disabled")
    finally:
        chromium.stop_any_call(EXTENSION_ID)
    assert server.wait_until(lambda: len(server.service.registry) == 0)


def test_a_drained_session_that_cannot_be_resumed_goes_on_in_a_new_one_on_the_same_screen(
    chromium: Chromium, server: LiveServer
) -> None:
    chromium.set_options(EXTENSION_ID, server_url=server.ws_url, key=KEY, tab_audio=True)
    try:
        panel = chromium.open_side_panel(EXTENSION_ID)
        panel.evaluate("document.getElementById('start').click()")
        panel.wait_for("document.getElementById('status').textContent.startsWith('live')")
        chromium.customer_speaks()
        (before,) = panel.wait_for_final("1", TAB_FIXTURE)

        # A deploy: the session gets its finals and close 1012; new sessions are refused until it is over. One
        # instance without Redis keeps nothing of a drained session: its token gets a new one (`resumed: false`).
        assert server.call(server.service.drain).result(timeout=30) == 0
        panel.wait_for("document.getElementById('transcript').textContent.includes('connection lost (close 1012')")
        server.service.draining = False
        panel.wait_for("document.getElementById('transcript').textContent.includes('reconnected (new session')")
        assert panel.text("status").startswith("live")
        assert before in panel.finals()  # nothing on screen was lost

        chromium.customer_speaks()  # heard on the new session, shown after the reconnection
        panel.wait_for_final("1", TAB_FIXTURE, count=2)
        lines = panel.lines()
        markers = [i for i, (cls, text) in enumerate(lines) if "marker" in cls and text.startswith("reconnected (new")]
        marker = max(markers)
        assert any(cls == "line final customer" for cls, _ in lines[marker + 1 :]), lines

        panel.evaluate("document.getElementById('stop').click()")
        panel.wait_for("document.getElementById('status').textContent === 'closed'")
    finally:
        server.service.draining = False
        chromium.stop_any_call(EXTENSION_ID)
    assert server.wait_until(lambda: len(server.service.registry) == 0)


def test_a_connection_cut_mid_sentence_resumes_the_same_session_and_every_final_arrives_once(
    chromium: Chromium, server: LiveServer
) -> None:
    # The extension's socket goes through a proxy that resets it (a dropped Wi-Fi: no close frame on either side).
    proxy = ThreadedProxy(server.port)
    chromium.set_options(EXTENSION_ID, server_url=f"ws://127.0.0.1:{proxy.port}/ws/session", key=KEY, tab_audio=True)
    try:
        panel = open_side_panel_recording_sessions(chromium)
        panel.evaluate("document.getElementById('start').click()")
        panel.wait_for("document.getElementById('status').textContent.startsWith('live')")

        # The customer's sentence is cut while it is being heard, and the network stays down (connections to
        # the proxy are refused) until the sentence is over: the rest of it reaches the server only as audio the
        # extension kept and sends again on the same session.
        chromium.call_page.click("#play")
        panel.wait_for("document.querySelector('#transcript .line.interim[data-channel=\"1\"]') !== null")
        proxy.retarget(closed_port())
        proxy.cut()
        chromium.call_page.wait_for_function("document.getElementById('customer').ended", timeout=WAIT_S * 1000)
        panel.wait_for("document.getElementById('status').className.includes('reconnecting')")
        proxy.retarget(server.port)
        panel.wait_for("document.getElementById('transcript').textContent.includes('resumed (same session')")
        assert panel.text("status").startswith("live")
        (during,) = panel.wait_for_final("1", TAB_FIXTURE)

        chromium.customer_speaks()  # and the call carries on in the same transcript
        assert panel.wait_for_final("1", TAB_FIXTURE, count=2)[0] == during
        lines = panel.lines()
        marker = next(i for i, (cls, text) in enumerate(lines) if "marker" in cls and text.startswith("resumed"))
        assert any(cls == "line final customer" for cls, _ in lines[marker + 1 :]), lines

        panel.evaluate("document.getElementById('stop').click()")
        panel.wait_for("document.getElementById('status').textContent === 'closed'")
        assert panel.text("errors") == ""
        # Every final exactly once: each stretch of audio heard once per channel, each play of the sentence once.
        received: list[list[Any]] = panel.evaluate("window.finals")
        for channel in (0, 1):
            spans = sorted((start, end) for c, start, end, _ in received if c == channel)
            assert all(end <= later + 0.01 for (_, end), (later, _) in itertools.pairwise(spans)), received
        assert len(panel.finals()) == len(received), (panel.finals(), received)
        assert len(panel.wait_for_final("1", TAB_FIXTURE, count=2)) == 2, received
        assert len(panel.wait_for_final("0", MICROPHONE_FIXTURE)) == 1, received  # spoken over the cut as well
        sessions = panel.evaluate("window.sessions")
        assert len(sessions) >= 2 and set(sessions) == {sessions[0]}, sessions  # one session_id, before and after
        assert "reconnecting" in panel.evaluate("window.phases")
        assert not any(text.startswith("reconnected (new session") for _, text in lines), lines
    finally:
        chromium.stop_any_call(EXTENSION_ID)
        proxy.close()
    assert server.wait_until(lambda: len(server.service.registry) == 0)


def closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def open_side_panel_recording_sessions(chromium: Chromium) -> ExtensionView:
    """The side panel, noting what the extension broadcasts: each phase, each `ready`'s session_id, and each
    non-empty final as [channel, start, end, text]."""
    panel = chromium.open_side_panel(EXTENSION_ID)
    panel.evaluate(
        "window.sessions = []; window.phases = []; window.finals = []; chrome.runtime.onMessage.addListener((m) => {"
        " const e = m.event; if (e?.type === 'transcript' && e.message.is_final && e.message.text)"
        " window.finals.push([e.message.channel, e.message.start, e.message.end, e.message.text]);"
        " if (e?.type !== 'phase') return; window.phases.push(e.phase);"
        " if (e.session) window.sessions.push(e.session); }), true"
    )
    return panel


def test_a_foreign_extension_is_refused_and_does_not_retry(chromium: Chromium, server: LiveServer) -> None:
    # Same server, same key, but an extension whose origin is not in ALLOWED_ORIGINS (microphone only: it has
    # no allowlisting for tab capture, and the refusal comes at the handshake anyway).
    origin = chromium.set_options(chromium.foreign_id, server_url=server.ws_url, key=KEY, tab_audio=False)
    assert origin != ORIGIN
    try:
        panel = chromium.open_side_panel(chromium.foreign_id)
        panel.evaluate("document.getElementById('start').click()")
        panel.wait_for("document.getElementById('status').textContent.includes('4403')")
        errors = panel.text("errors")
        assert "forbidden_origin" in errors and "ALLOWED_ORIGINS" in errors, errors
        chromium.call_page.wait_for_timeout(1500)  # longer than the first backoff: no second attempt
        assert "4403" in panel.text("status") and panel.evaluate("!document.getElementById('start').disabled")
        assert len(server.service.registry) == 0
    finally:
        chromium.stop_any_call(chromium.foreign_id)


class StreamingSuggestion(Suggestion, tag="suggestion", tag_field="type"):
    """Today's suggestion plus the `partial` flag of the streaming suggestions (another change adds it)."""

    partial: bool = False


class SuggestionStreamer:
    """A stand-in server that streams one answer: two partial cards, then (when the test says) the final one."""

    QUESTION = "Is our data stored in Europe or in the United States?"
    ANSWERS = ("Customer data", "Customer data stays in the EU region", "Customer data stays in the EU region.")

    def __init__(self) -> None:
        self.finish = threading.Event()
        self.app = Starlette(routes=[WebSocketRoute("/ws/session", self.session)])

    def suggestion(self, response: str, *, partial: bool) -> bytes:
        message = StreamingSuggestion(
            question=self.QUESTION,
            response=response,
            confidence=0.9,
            source="http",
            speaker="customer",
            channel=1,
            start=0.5,
            end=3.9,
            latency_ms=None if partial else 420,
            partial=partial,
        )
        return encode(message)

    async def session(self, websocket: WebSocket) -> None:
        await websocket.accept(subprotocol="presales.v1")
        ready = Status(state="ready", session_id="s_stream", transcriber="local", sample_rate=16000, channels=2)
        await websocket.send_text(encode(ready).decode())
        for response in self.ANSWERS[:-1]:
            await websocket.send_text(self.suggestion(response, partial=True).decode())
        await anyio.to_thread.run_sync(self.finish.wait, WAIT_S)
        await websocket.send_text(self.suggestion(self.ANSWERS[-1], partial=False).decode())
        with anyio.fail_after(WAIT_S):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") and isinstance(decode_client_message(message["text"]), Stop):
                    await websocket.send_text(encode(Status(state="closed")).decode())
                    await websocket.close(1000)
                    return


def test_a_streaming_suggestion_is_one_card_replaced_in_place(chromium: Chromium) -> None:
    streamer = SuggestionStreamer()
    stand_in = LiveServer(make_settings(), app=streamer.app).start()
    try:
        url = f"ws://127.0.0.1:{stand_in.port}/ws/session"
        chromium.set_options(EXTENSION_ID, server_url=url, key="", tab_audio=True)
        panel = chromium.open_side_panel(EXTENSION_ID)
        panel.evaluate("document.getElementById('start').click()")
        cards = "[...document.querySelectorAll('#suggestions .card')]"
        panel.wait_for(f"{cards}.some(c => c.querySelector('.response').textContent === {streamer.ANSWERS[1]!r})")
        assert panel.evaluate(f"{cards}.map(c => c.className)") == ["card partial"]
        assert "answering…" in panel.evaluate(f"{cards}[0].innerText")
        streamer.finish.set()
        panel.wait_for(f"{cards}.every(c => c.className === 'card')")
        assert panel.evaluate(f"{cards}.map(c => c.querySelector('.response').textContent)") == [streamer.ANSWERS[-1]]
        panel.evaluate("document.getElementById('stop').click()")
        panel.wait_for("document.getElementById('status').textContent === 'closed'")
    finally:
        streamer.finish.set()
        chromium.stop_any_call(EXTENSION_ID)
        stand_in.stop()


def test_the_permission_page_asks_for_the_microphone_for_the_extension(chromium: Chromium) -> None:
    page = chromium.context.new_page()
    try:
        page.goto(f"{ORIGIN}/permission.html")
        page.wait_for_selector("#result[data-state=granted]")
    finally:
        page.close()
