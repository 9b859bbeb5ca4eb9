// The audio a page sent but the server may not have: kept until a final covers it, resent after a resume.
//
// The server's `ready` says `received_s`, the seconds of session audio it holds; everything after that goes out
// again, so a broken connection loses no word (docs/PROTOCOL.md, "Resume"). Pure bookkeeping: no socket here,
// so an extension can take this file as it is. Positions are in samples per channel on the session's clock.

export const MAX_RESEND_S = 30; // audio kept while reconnecting; older audio not yet final is given up

export class ResendBuffer {
  constructor(sampleRate, channels, maxSeconds = MAX_RESEND_S) {
    this.sampleRate = sampleRate;
    this.channels = channels;
    this.maxSamples = Math.round(maxSeconds * sampleRate);
    this.start = 0; // session sample of the first kept frame
    this.frames = []; // ArrayBuffers of interleaved s16le
    this.samples = 0; // samples per channel kept
    this.covered = new Map(); // channel -> end (s) of its last final
  }

  samplesIn(frame) {
    return frame.byteLength / (2 * this.channels);
  }

  /** A frame went out (or is about to): keep it. */
  sent(frame) {
    this.frames.push(frame);
    this.samples += this.samplesIn(frame);
    while (this.samples - this.samplesIn(this.frames[0]) >= this.maxSamples) this.dropFirst();
  }

  /** A final on `channel` ends at `endS`: audio every channel has a final past is no longer needed. */
  final(channel, endS) {
    this.covered.set(channel, Math.max(endS, this.covered.get(channel) ?? 0));
    if (this.covered.size < this.channels) return;
    const upTo = Math.floor(Math.min(...this.covered.values()) * this.sampleRate);
    while (this.frames.length && this.start + this.samplesIn(this.frames[0]) <= upTo) this.dropFirst();
  }

  /** The frames to send again to a server holding `receivedS` seconds, the first one cut where it starts. */
  since(receivedS) {
    let position = this.start;
    const target = Math.round(receivedS * this.sampleRate);
    const out = [];
    for (const frame of this.frames) {
      const length = this.samplesIn(frame);
      if (position + length > target) {
        const skip = Math.max(0, target - position) * 2 * this.channels;
        out.push(skip ? frame.slice(skip) : frame);
      }
      position += length;
    }
    return out;
  }

  /** A new session (the old one could not be resumed): the last `keepSeconds` kept become its audio from 0. */
  restart(keepSeconds) {
    while (this.frames.length && this.samples - this.samplesIn(this.frames[0]) >= keepSeconds * this.sampleRate) {
      this.dropFirst();
    }
    this.start = 0;
    this.covered.clear();
  }

  dropFirst() {
    const frame = this.frames.shift();
    const length = this.samplesIn(frame);
    this.samples -= length;
    this.start += length;
  }
}
