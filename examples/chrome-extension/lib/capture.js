// Audio capture for presales-ws: MediaStreams in, 20 ms frames of 16 kHz little-endian s16 PCM out.
//
// No UI and no WebSocket here, so a Chrome extension can take this file and capture-worklet.js as they
// are. One source = one channel; two sources (microphone, then tab audio) = a two-channel session whose
// frames interleave channel 0 and channel 1, as /ws/session?channels=2 expects. docs/CLIENTS.md has the
// frame format and an example. examples/chrome-extension/lib/ holds copies made by its sync-capture.sh:
// edit this file, then run that script (a test fails while the copies differ).

export const TARGET_SAMPLE_RATE_HZ = 16000;
export const FRAME_MS = 20;
export const FRAME_SAMPLES = (TARGET_SAMPLE_RATE_HZ * FRAME_MS) / 1000; // 320 per channel
export const WORKLET_URL = new URL("./capture-worklet.js", import.meta.url).href;

// Browsers' voice processing distorts what the transcriber hears (and the echo canceller can eat the
// far side of a call): the service wants the raw signal.
const RAW_AUDIO = { echoCancellation: false, noiseSuppression: false, autoGainControl: false };

/** The microphone, unprocessed. Throws the browser's NotAllowedError if the user refuses. */
export async function openMicrophone(deviceId) {
  const audio = deviceId ? { ...RAW_AUDIO, deviceId: { exact: deviceId } } : RAW_AUDIO;
  return navigator.mediaDevices.getUserMedia({ audio, video: false });
}

/** A tab's audio through the screen-share picker; Chrome insists on video too, so the video is dropped. */
export async function openTabAudio() {
  const stream = await navigator.mediaDevices.getDisplayMedia({
    video: true,
    audio: { ...RAW_AUDIO, suppressLocalAudioPlayback: false },
    preferCurrentTab: false,
    selfBrowserSurface: "exclude",
  });
  for (const track of stream.getVideoTracks()) {
    track.stop();
    stream.removeTrack(track);
  }
  if (stream.getAudioTracks().length === 0) {
    throw new Error('no audio in the shared source: pick a tab and tick "Share tab audio"');
  }
  return stream;
}

/**
 * A tab's audio in a Manifest V3 extension: `streamId` comes from `chrome.tabCapture.getMediaStreamId` (in the
 * service worker, after the user invoked the extension on that tab) and is redeemed here, in a page that can
 * hold media (an offscreen document). While captured, the tab is silent to the user: see `playThrough`.
 */
export async function openCapturedTab(streamId) {
  return navigator.mediaDevices.getUserMedia({
    audio: { mandatory: { chromeMediaSource: "tab", chromeMediaSourceId: streamId } },
    video: false,
  });
}

/**
 * Plays a stream to the speakers at the device's own rate (not the capture's 16 kHz), so a captured tab stays
 * audible to the user. Returns the AudioContext; `close()` it to stop.
 */
export async function playThrough(stream) {
  const context = new AudioContext({ latencyHint: "interactive" });
  context.createMediaStreamSource(stream).connect(context.destination);
  if (context.state === "suspended") await context.resume();
  return context;
}

function createContext() {
  // At 16 kHz the browser's own resampler does the work (Chromium supports it); a browser that refuses
  // a MediaStream source at a rate other than the device's gets its default rate and the worklet resamples.
  try {
    return new AudioContext({ sampleRate: TARGET_SAMPLE_RATE_HZ, latencyHint: "interactive" });
  } catch {
    return new AudioContext({ latencyHint: "interactive" });
  }
}

/**
 * A running capture. `AudioCapture.start([mic, tab], { onFrame, onLevel })` calls `onFrame(ArrayBuffer)`
 * every 20 ms with `FRAME_SAMPLES * channels` interleaved s16le samples, and `onLevel([rms, ...])` (0-1, one
 * per channel) as often. `stop()` delivers the last partial frame, then releases the audio device.
 */
export class AudioCapture {
  static async start(streams, { onFrame, onLevel = () => {}, workletUrl = WORKLET_URL, stopTracks = true } = {}) {
    if (streams.length < 1 || streams.length > 2) throw new Error("capture takes one or two sources");
    const context = createContext();
    try {
      await context.audioWorklet.addModule(workletUrl);
      if (context.state === "suspended") await context.resume();
      const node = new AudioWorkletNode(context, "presales-capture", {
        numberOfInputs: streams.length,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        processorOptions: {
          targetRate: TARGET_SAMPLE_RATE_HZ,
          frameSamples: FRAME_SAMPLES,
          channels: streams.length,
        },
      });
      const sources = streams.map((stream, index) => {
        const source = context.createMediaStreamSource(stream);
        source.connect(node, 0, index);
        return source;
      });
      node.connect(context.destination); // a worklet that reaches no destination is never run; its output is silence
      return new AudioCapture(context, node, sources, streams, { onFrame, onLevel, stopTracks });
    } catch (error) {
      await context.close();
      throw error;
    }
  }

  constructor(context, node, sources, streams, { onFrame, onLevel, stopTracks }) {
    this.context = context;
    this.node = node;
    this.sources = sources;
    this.streams = streams;
    this.channels = streams.length;
    this.sampleRate = TARGET_SAMPLE_RATE_HZ;
    this.contextSampleRate = context.sampleRate;
    this.stopTracks = stopTracks;
    this.framesSent = 0;
    this._flushed = null;
    node.port.onmessage = (event) => {
      if (event.data.pcm) {
        this.framesSent += 1;
        onFrame(event.data.pcm);
        onLevel(event.data.levels);
      } else if (event.data.flushed && this._flushed) {
        this._flushed();
      }
    };
  }

  /** Seconds of audio delivered so far (per channel). */
  get seconds() {
    return (this.framesSent * FRAME_MS) / 1000;
  }

  async stop() {
    if (this.context.state === "closed") return;
    const flushed = new Promise((resolve) => {
      this._flushed = resolve;
    });
    this.node.port.postMessage("flush");
    await Promise.race([flushed, new Promise((resolve) => setTimeout(resolve, 500))]);
    for (const source of this.sources) source.disconnect();
    this.node.disconnect();
    if (this.stopTracks) for (const stream of this.streams) for (const track of stream.getTracks()) track.stop();
    await this.context.close();
  }
}
