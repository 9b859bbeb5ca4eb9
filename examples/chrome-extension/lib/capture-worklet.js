// AudioWorklet half of capture.js: runs on the audio thread, so the page's UI can never stall the audio.
// Each input (one per source) is downmixed to mono, resampled to the target rate, and cut into frames of
// `frameSamples` per channel; a frame goes to the main thread as little-endian s16 PCM, channels interleaved.

const QUANTUM = 128; // Web Audio's render quantum: what a disconnected or ended input stands for in silence

class StreamResampler {
  // Linear interpolation, preceded by a two-stage low-pass when downsampling so that speech above the new
  // Nyquist frequency does not fold back. Only used when the AudioContext could not run at the target rate
  // itself (Chromium can: then `ratio` is 1 and samples pass through untouched).
  constructor(inputRate, outputRate) {
    this.ratio = inputRate / outputRate;
    this.t = 0; // position of the next output sample, in input samples, relative to the current block
    this.last = 0; // the previous block's last (filtered) sample, at position -1
    const cutoffHz = 0.45 * outputRate;
    this.alpha = this.ratio > 1 ? 1 - Math.exp((-2 * Math.PI * cutoffHz) / inputRate) : 1;
    this.lp1 = 0;
    this.lp2 = 0;
  }

  process(block) {
    if (this.ratio === 1) return block.slice();
    const n = block.length;
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      this.lp1 += this.alpha * (block[i] - this.lp1);
      this.lp2 += this.alpha * (this.lp1 - this.lp2);
      x[i] = this.lp2;
    }
    const out = [];
    while (this.t <= n - 1) {
      const i = Math.floor(this.t);
      const f = this.t - i;
      const a = i < 0 ? this.last : x[i];
      const b = f === 0 ? a : x[i + 1];
      out.push(a + (b - a) * f);
      this.t += this.ratio;
    }
    this.t -= n;
    this.last = x[n - 1];
    return Float32Array.from(out);
  }
}

function downmix(channels) {
  if (channels.length === 0) return new Float32Array(QUANTUM);
  if (channels.length === 1) return channels[0];
  const mono = new Float32Array(channels[0].length);
  for (const channel of channels) {
    for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / channels.length;
  }
  return mono;
}

class PresalesCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate, frameSamples, channels } = options.processorOptions;
    this.frameSamples = frameSamples;
    this.channels = channels;
    // `sampleRate` is the AudioContext's rate, a global of the worklet scope.
    this.resamplers = Array.from({ length: channels }, () => new StreamResampler(sampleRate, targetRate));
    this.pending = Array.from({ length: channels }, () => []);
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.emit(true);
        this.running = false;
        this.port.postMessage({ flushed: true });
      }
    };
  }

  process(inputs) {
    if (!this.running) return false;
    for (let c = 0; c < this.channels; c++) {
      const resampled = this.resamplers[c].process(downmix(inputs[c] || []));
      const queue = this.pending[c];
      for (let i = 0; i < resampled.length; i++) queue.push(resampled[i]);
    }
    this.emit(false);
    return true;
  }

  emit(partial) {
    // Every input runs at the same rate and quantum, so the queues fill in step; the shortest one decides.
    for (;;) {
      const available = Math.min(...this.pending.map((queue) => queue.length));
      const count = Math.min(available, this.frameSamples);
      if (count === 0 || (count < this.frameSamples && !partial)) return;
      const pcm = new ArrayBuffer(count * this.channels * 2);
      const view = new DataView(pcm);
      const levels = new Array(this.channels).fill(0);
      for (let c = 0; c < this.channels; c++) {
        const samples = this.pending[c].splice(0, count);
        let energy = 0;
        for (let i = 0; i < count; i++) {
          const s = Math.max(-1, Math.min(1, samples[i]));
          energy += s * s;
          view.setInt16((i * this.channels + c) * 2, Math.round(s < 0 ? s * 0x8000 : s * 0x7fff), true);
        }
        levels[c] = Math.sqrt(energy / count);
      }
      this.port.postMessage({ pcm, levels }, [pcm]);
    }
  }
}

registerProcessor("presales-capture", PresalesCaptureProcessor);
