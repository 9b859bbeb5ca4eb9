"""The demo page in real headless Chromium: its fake microphone plays a fixture, the page shows the final.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/run); Playwright only drives it and never
downloads a browser. The fake capture device reads a WAV made here from a committed fixture.
"""

from __future__ import annotations

import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soxr
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from presales_ws.client.wavfile import read_wav
from tests.conftest import LiveServer, make_settings
from tests.support import FIXTURES, reference_text, word_error_rate
from tests.tcp_proxy import ThreadedProxy
from tests.test_suggestions_e2e import SAMPLE_KB

CHROMIUM = Path("/usr/bin/chromium")
# One short question, with no proper name in it: a name misheard through Chromium's capture ("Okta" as
# "Harkter" or "Hector") is one the knowledge base does not know, and that sinks its answer
# (suggesters/specifics.py); the card would then depend on how the capture happened to sound.
FIXTURE = "pricing_question_gb.wav"
FAKE_DEVICE_RATE_HZ = 48000  # what a real microphone delivers; Chromium's fake device plays it as is
LEAD_SILENCE_S = 1.0  # capture starts a few ms into the file: no word is lost to it
TAIL_SILENCE_S = 2.0  # > LOCAL_ENDPOINTING_MS: the sentence ends in a final
MAX_WER = 0.35  # espeak through Chromium's capture and resampler, decoded by the embedded engine
KEY = "pk_demo_0123456789abcdef"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"
)


def fake_microphone_wav(directory: Path) -> Path:
    """The fixture, padded with silence and resampled to a device rate, as a mono s16 WAV."""
    audio = read_wav(FIXTURES / FIXTURE)
    speech = np.frombuffer(audio.pcm, dtype="<i2").astype(np.float32) / 32768.0
    rate = audio.sample_rate
    padded = np.concatenate(
        [np.zeros(int(LEAD_SILENCE_S * rate)), speech, np.zeros(int(TAIL_SILENCE_S * rate))]
    ).astype(np.float32)
    resampled = soxr.resample(padded, rate, FAKE_DEVICE_RATE_HZ)
    path = directory / "fake_microphone.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(FAKE_DEVICE_RATE_HZ)
        wav.writeframes((np.clip(resampled, -1.0, 1.0) * 32767).astype("<i2").tobytes())
    return path


def launch(playwright: Playwright, tmp_path: Path, *, loop: bool = False) -> BrowserContext:
    """Debian's Chromium with a fresh profile and the fixture as its microphone (played once unless `loop`)."""
    wav = fake_microphone_wav(tmp_path)
    return playwright.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=str(CHROMIUM),
        headless=True,
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}" + ("" if loop else "%noloop"),
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-quic",
            "--disable-sync",
        ],
    )


@pytest.fixture
def server() -> Iterator[LiveServer]:
    live = LiveServer(
        make_settings(heartbeat_interval_s=1.0, heartbeat_timeout_s=10.0, knowledge_base=str(SAMPLE_KB))
    ).start()
    yield live
    live.stop()


def final_lines(page: Page) -> list[tuple[str, str, str]]:
    """(role label, channel, text) of every final on the page."""
    rows: list[list[str]] = page.eval_on_selector_all(
        "#transcript .line.final",
        "lines => lines.map(l => [l.querySelector('.role').textContent, l.dataset.channel,"
        " l.querySelector('.text').textContent])",
    )
    return [(role, channel, text) for role, channel, text in rows]


def wait_for_finals(page: Page, channels: set[str], timeout_s: float = 30.0) -> tuple[list[tuple[str, str, str]], int]:
    """Poll the page until every channel shows a final close to the fixture; also the loudest meter seen (%)."""
    reference = reference_text(FIXTURE)
    loudest = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        widths: list[str] = page.eval_on_selector_all("#meters .fill", "fills => fills.map(f => f.style.width)")
        loudest = max([loudest, *(int(w.rstrip("%") or 0) for w in widths)])
        lines = final_lines(page)
        good = {channel for _, channel, text in lines if word_error_rate(reference, text) <= MAX_WER}
        if channels <= good:
            return lines, loudest
        page.wait_for_timeout(200)
    raise AssertionError(
        f"no final close to {reference!r} on channels {channels}: status {page.inner_text('#status')!r}, "
        f"transcript {page.inner_text('#transcript')!r}, errors {page.inner_text('#errors')!r}"
    )


def stop_and_wait_closed(page: Page) -> None:
    page.click("#stop")
    page.wait_for_function("document.getElementById('status').textContent === 'closed'", timeout=20_000)
    assert page.is_enabled("#start") and not page.is_enabled("#stop")


def test_demo_page_shows_the_microphones_sentence_as_a_labelled_final(server: LiveServer, tmp_path: Path) -> None:
    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path)
        try:
            page = context.new_page()
            page.goto(f"{server.http_url}/demo")
            page.click("#start")
            lines, loudest = wait_for_finals(page, {"0"})
            assert loudest > 20, "the level meter never moved: the fake microphone was silent"
            assert [role for role, _, _ in lines] == ["unknown"]  # one channel, embedded engine: no roles
            assert page.inner_text("#status").startswith("live")
            page.wait_for_function("document.getElementById('heartbeat').textContent.startsWith('last heartbeat')")
            # The customer's question (speaker not known yet on one channel) gets its answer as a card.
            page.wait_for_selector("#suggestions .card", timeout=10_000)
            card = page.inner_text("#suggestions .card")
            assert "45 USD per seat" in card and "speaker not known yet" in card, card
            stop_and_wait_closed(page)
            assert page.inner_text("#errors") == ""
            page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)
        finally:
            context.close()
    assert server.wait_until(lambda: len(server.service.registry) == 0)


def test_tab_audio_makes_a_two_channel_session_labelled_consultant_and_customer(
    server: LiveServer, tmp_path: Path
) -> None:
    # Chromium's fake screen share carries the same fake audio: both channels hear the sentence.
    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path)
        try:
            page = context.new_page()
            page.goto(f"{server.http_url}/demo")
            page.check("#tab-audio")
            page.click("#start")
            lines, _ = wait_for_finals(page, {"0", "1"})
            roles = {channel: role for role, channel, _ in lines}
            assert roles == {"0": "consultant", "1": "customer"}
            assert page.eval_on_selector_all("#meters .meter", "rows => rows.length") == 2
            colours = page.eval_on_selector_all(
                "#transcript .line.final .role", "labels => labels.map(l => getComputedStyle(l).color)"
            )
            assert len(set(colours)) == 2  # each role has its colour
            stop_and_wait_closed(page)
            page.screenshot(path=str(tmp_path / "demo_two_channels.png"), full_page=True)
        finally:
            context.close()


def test_key_goes_in_the_subprotocol_and_a_wrong_one_is_shown_not_retried(tmp_path: Path) -> None:
    keyed = LiveServer(make_settings(api_keys=(KEY,))).start()
    try:
        with sync_playwright() as playwright:
            context = launch(playwright, tmp_path)
            try:
                page = context.new_page()
                page.goto(f"{keyed.http_url}/demo")
                page.fill("#key", KEY[::-1])
                page.click("#start")
                page.wait_for_function("document.getElementById('status').textContent.includes('4401')")
                assert "unauthorized" in page.inner_text("#errors")
                page.wait_for_timeout(1500)  # longer than the first backoff: no second attempt
                assert "4401" in page.inner_text("#status") and page.is_enabled("#start")

                page.fill("#key", KEY)
                page.click("#start")
                wait_for_finals(page, {"0"})
                stop_and_wait_closed(page)
            finally:
                context.close()
    finally:
        keyed.stop()


def test_a_dropped_connection_is_announced_and_the_page_reconnects(server: LiveServer, tmp_path: Path) -> None:
    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path, loop=True)
        try:
            page = context.new_page()
            page.goto(f"{server.http_url}/demo")
            page.click("#start")
            wait_for_finals(page, {"0"})
            # A deploy: every session gets its finals and close 1012; new sessions are refused until it is over.
            left = server.call(server.service.drain).result(timeout=30)
            assert left == 0
            page.wait_for_function("document.getElementById('notice').textContent.includes('reconnecting')")
            server.service.draining = False
            reconnected = (
                "[...document.querySelectorAll('#transcript .marker')]"
                ".some(m => m.textContent.startsWith('reconnected'))"
            )
            page.wait_for_function(reconnected, timeout=20_000)
            assert page.inner_text("#status").startswith("live")
            markers = page.eval_on_selector_all("#transcript .marker", "ms => ms.map(m => m.textContent)")
            assert any("1012" in m for m in markers)
            before = len(final_lines(page))
            page.wait_for_function(  # the looping fixture is heard again on the new session
                f"document.querySelectorAll('#transcript .line.final').length > {before}", timeout=30_000
            )
            stop_and_wait_closed(page)
        finally:
            context.close()


def test_a_connection_cut_mid_sentence_resumes_the_same_session(tmp_path: Path) -> None:
    # The page and its socket go through a proxy (the page's origin is then the proxy's: same origin as the socket).
    live = LiveServer(make_settings(resume_window_s=30.0, heartbeat_interval_s=1.0, heartbeat_timeout_s=10.0)).start()
    proxy = ThreadedProxy(live.port)
    try:
        with sync_playwright() as playwright:
            context = launch(playwright, tmp_path)
            try:
                page = context.new_page()
                page.goto(f"http://127.0.0.1:{proxy.port}/demo")
                page.evaluate(
                    "window.statuses = []; new MutationObserver(() => window.statuses.push("
                    "document.getElementById('status').className)).observe(document.getElementById('status'),"
                    " {attributes: true, childList: true, subtree: true, characterData: true})"
                )
                page.click("#start")
                page.wait_for_selector("#transcript .line.interim", timeout=20_000)  # mid-sentence
                proxy.cut()
                resumed = (
                    "[...document.querySelectorAll('#transcript .marker')]"
                    ".some(m => m.textContent.startsWith('resumed'))"
                )
                page.wait_for_function(resumed, timeout=20_000)
                lines, _ = wait_for_finals(page, {"0"})
                assert len(lines) == 1, lines  # the sentence once: nothing lost, nothing twice
                assert "pill reconnecting" in page.evaluate("window.statuses")
                stop_and_wait_closed(page)
                assert page.inner_text("#errors") == ""
            finally:
                context.close()
    finally:
        proxy.close()
        live.stop()


def test_a_streamed_answer_is_written_into_one_card_in_place(tmp_path: Path) -> None:
    from tests.test_streaming_suggestions import ANSWER, StreamingService, sse, written

    service = StreamingService([*written(), *sse({"done": True})], gap_s=0.08)  # ~1.3 s to write
    service.server.start()
    live = LiveServer(make_settings(suggester_url=f"{service.server.http_url}/suggest")).start()
    try:
        with sync_playwright() as playwright:
            context = launch(playwright, tmp_path)
            try:
                page = context.new_page()
                page.goto(f"{live.http_url}/demo")
                page.evaluate(  # every state of the suggestions panel, as the consultant would have seen it
                    """() => { window.seen = [];
                      new MutationObserver(() => window.seen.push([...document.querySelectorAll('#suggestions .card')]
                        .map(c => [c.classList.contains('writing'), c.querySelector('.response').textContent])))
                      .observe(document.getElementById('suggestions'), {childList: true, subtree: true}); }"""
                )
                page.click("#start")
                page.wait_for_selector("#suggestions .card:not(.writing)", timeout=30_000)
                seen: list[list[tuple[bool, str]]] = page.evaluate("window.seen")
                stop_and_wait_closed(page)
            finally:
                context.close()
    finally:
        live.stop()
        service.server.stop()
    partial_states = [cards for cards in seen if cards and cards[0][0]]
    assert partial_states, seen  # the answer was on screen while it was being written
    assert all(len(cards) == 1 and ANSWER.startswith(cards[0][1]) for cards in partial_states)  # one card, growing
    assert seen[-1] == [[False, ANSWER]]


@pytest.mark.parametrize("two_channels", [False, True], ids=["microphone", "microphone+tab"])
def test_compressed_mediarecorder_option_sends_webm_opus_and_shows_the_final(
    server: LiveServer, tmp_path: Path, two_channels: bool
) -> None:
    with sync_playwright() as playwright:
        context = launch(playwright, tmp_path)
        try:
            page = context.new_page()
            page.goto(f"{server.http_url}/demo")
            page.evaluate(  # what goes over the socket: Blobs of a WebM recording, no PCM ArrayBuffers
                """() => { window.sent = []; const send = WebSocket.prototype.send;
                  WebSocket.prototype.send = function (data) {
                    window.sent.push(data instanceof Blob ? 'blob' : typeof data === 'string' ? 'text' : 'buffer');
                    return send.call(this, data); }; }"""
            )
            page.check("#compressed")
            if two_channels:
                page.check("#tab-audio")
            page.click("#start")
            channels = {"0", "1"} if two_channels else {"0"}
            lines, loudest = wait_for_finals(page, channels)
            assert loudest > 20, "the level meter never moved: the fake microphone was silent"
            if two_channels:
                assert {channel: role for role, channel, _ in lines} == {"0": "consultant", "1": "customer"}
            stop_and_wait_closed(page)
            assert page.inner_text("#errors") == ""
            sent: list[str] = page.evaluate("window.sent")
            assert "buffer" not in sent and sent.count("blob") >= 8, sent  # ~250 ms pieces of a >4 s recording
        finally:
            context.close()
    assert server.wait_until(lambda: len(server.service.registry) == 0)
