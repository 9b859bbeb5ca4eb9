// The offscreen document: one call at a time. The microphone is channel 0, the captured tab channel 1; the tab
// is played back to the user, since capturing it silences it. Only chrome.runtime exists here: the service
// worker passes the settings and the tab's stream id in the "start" message.

import { AudioCapture, openCapturedTab, openMicrophone, playThrough } from "./lib/capture.js";
import { CallLog } from "./call-log.js";
import { TO_OFFSCREEN } from "./messages.js";
import { CallSession } from "./session.js";
import { channelRoles } from "./settings.js";

const log = new CallLog();
let call = null; // { session, capture, monitor } while a call runs

async function openSources(streamId) {
  const streams = [await openMicrophone()];
  if (streamId) {
    try {
      streams.push(await openCapturedTab(streamId));
    } catch (error) {
      for (const track of streams[0].getTracks()) track.stop();
      throw error;
    }
  }
  return streams;
}

async function start({ settings, streamId }) {
  if (call) return { ok: false, reason: "busy" };
  log.record({ type: "reset" });
  log.record({ type: "phase", phase: "connecting", text: "opening the microphone…" });
  let streams;
  try {
    streams = await openSources(streamId);
  } catch (error) {
    const hint = error.name === "NotAllowedError" ? ": allow the microphone on the page that just opened, then Start again" : "";
    log.record({ type: "error", code: error.name || "capture", message: `${error.message}${hint}` });
    log.record({ type: "phase", phase: "failed", text: "could not start" });
    return { ok: false, reason: error.name };
  }
  const current = { session: null, capture: null, monitor: null };
  current.session = new CallSession(
    { url: settings.serverUrl, key: settings.apiKey, channels: streams.length, channelRoles: channelRoles(settings.microphoneRole) },
    (event) => {
      log.record(event);
      if (event.type === "ended") release(current);
    },
  );
  try {
    current.capture = await AudioCapture.start(streams, { onFrame: (pcm) => current.session.sendAudio(pcm) });
    if (streams.length === 2) {
      current.monitor = await playThrough(streams[1]);
      streams[1].getAudioTracks()[0].addEventListener("ended", () => {
        log.record({ type: "notice", text: "the tab's audio ended (was the tab closed?): the customer channel is silent now" });
      });
    }
  } catch (error) {
    for (const stream of streams) for (const track of stream.getTracks()) track.stop();
    await current.capture?.stop();
    log.record({ type: "error", code: error.name || "capture", message: error.message });
    log.record({ type: "phase", phase: "failed", text: "could not start" });
    return { ok: false, reason: error.name };
  }
  log.record({
    type: "capture",
    channels: streams.length,
    microphoneRole: settings.microphoneRole,
    playThrough: current.monitor?.state === "running",
  });
  call = current;
  current.session.connect();
  return { ok: true };
}

/** The capture's last partial frame goes out before `stop`; the session then waits for the last finals. */
async function stop() {
  if (!call) return { ok: true };
  const current = call;
  await current.capture.stop();
  await current.session.stop();
  return { ok: true };
}

function release(current) {
  if (call === current) call = null;
  current.capture?.stop();
  current.monitor?.close();
}

chrome.runtime.onMessage.addListener((message, _sender, reply) => {
  if (message.target !== TO_OFFSCREEN) return false;
  if (message.type === "snapshot") {
    reply({ running: call !== null, ...log.snapshot() });
    return false;
  }
  const work = message.type === "start" ? start(message) : message.type === "stop" ? stop() : null;
  if (!work) return false;
  work.then(reply, (error) => reply({ ok: false, reason: String(error?.message || error) }));
  return true;
});
