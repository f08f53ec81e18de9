// AudioWorklet processors of the audiodiff live page.
//
// Both take processorOptions.rate: the model's sample rate (from the server's /health; 16 kHz
// when absent), so 16 and 48 kHz models work alike.
// 'audiodiff-capture': microphone (first channel) at the context rate -> mono Float32Array chunks
//   of `chunk` samples at the model's rate, posted to the main thread. Resampling: two cascaded
//   biquad low-passes at 0.45 x the lower rate (anti-aliasing) when the context rate is higher,
//   clipped to [-1, 1], then linear interpolation.
// 'audiodiff-player': chunks {enhanced, original} at the model's rate from the main thread -> the
//   context rate (linear interpolation) after a short jitter buffer; {type: 'select', which}
//   picks the stream heard (the before/after toggle), both stay in step so switching is instant.

function modelRate(options) {
  return (options.processorOptions && options.processorOptions.rate) || 16000;
}

function lowpass(cutoff, rate) {
  // RBJ biquad low-pass, Q = 1/sqrt(2): coefficients normalised by a0.
  const w = (2 * Math.PI * cutoff) / rate;
  const alpha = Math.sin(w) / Math.SQRT2;
  const cos = Math.cos(w);
  const a0 = 1 + alpha;
  return {
    b0: (1 - cos) / 2 / a0, b1: (1 - cos) / a0, b2: (1 - cos) / 2 / a0,
    a1: (-2 * cos) / a0, a2: (1 - alpha) / a0, x1: 0, x2: 0, y1: 0, y2: 0,
  };
}

function filter(f, x) {
  const y = f.b0 * x + f.b1 * f.x1 + f.b2 * f.x2 - f.a1 * f.y1 - f.a2 * f.y2;
  f.x2 = f.x1; f.x1 = x; f.y2 = f.y1; f.y1 = y;
  return y;
}

class Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rate = modelRate(options);
    this.chunk = (options.processorOptions && options.processorOptions.chunk) || 512;
    this.step = sampleRate / rate; // input samples per output sample
    this.filters = sampleRate > rate ? [lowpass(0.45 * rate, sampleRate), lowpass(0.45 * rate, sampleRate)] : [];
    this.pos = 0; // read position relative to the current input block (may be in [-1, 0))
    this.prev = 0; // last filtered sample of the previous block, at position -1
    this.out = new Float32Array(this.chunk);
    this.fill = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const raw = input[0];
    const x = new Float32Array(raw.length);
    for (let i = 0; i < raw.length; i++) {
      let v = raw[i];
      for (const f of this.filters) v = filter(f, v);
      x[i] = Math.max(-1, Math.min(1, v)); // the low-passes may overshoot full scale: the server refuses |x| > 1
    }
    while (this.pos < x.length - 1) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i < 0 ? this.prev : x[i];
      this.out[this.fill++] = a + (x[i + 1] - a) * frac;
      this.pos += this.step;
      if (this.fill === this.chunk) {
        this.port.postMessage(this.out);
        this.out = new Float32Array(this.chunk);
        this.fill = 0;
      }
    }
    this.pos -= x.length;
    this.prev = x[x.length - 1];
    return true;
  }
}

class Player extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const rate = modelRate(options);
    const seconds = 20;
    this.size = rate * seconds;
    this.rings = { enhanced: new Float32Array(this.size), original: new Float32Array(this.size) };
    this.write = 0; // samples written (model rate)
    this.read = 0; // fractional read position (model-rate samples)
    this.step = rate / sampleRate;
    this.prebuffer = ((options.processorOptions && options.processorOptions.prebufferMs) || 100) * rate / 1000;
    this.playing = false;
    this.which = 'enhanced';
    this.ticks = 0;
    this.port.onmessage = (event) => {
      const msg = event.data;
      if (msg.type === 'select') this.which = msg.which;
      if (msg.type === 'audio') this.push(msg.enhanced, msg.original);
    };
  }

  push(enhanced, original) {
    for (let i = 0; i < enhanced.length; i++) {
      const k = (this.write + i) % this.size;
      this.rings.enhanced[k] = enhanced[i];
      this.rings.original[k] = original && i < original.length ? original[i] : 0;
    }
    this.write += enhanced.length;
    if (this.write - this.read > this.size) this.read = this.write - this.size / 2; // far behind
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    const ring = this.rings[this.which];
    if (!this.playing && this.write - this.read >= this.prebuffer) this.playing = true;
    for (let n = 0; n < out.length; n++) {
      if (!this.playing || this.read + 1 >= this.write) {
        out[n] = 0;
        this.playing = false; // underrun: wait for the jitter buffer to refill
        continue;
      }
      const i = Math.floor(this.read);
      const frac = this.read - i;
      const a = ring[i % this.size];
      const b = ring[(i + 1) % this.size];
      out[n] = a + (b - a) * frac;
      this.read += this.step;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    if (++this.ticks % 32 === 0) this.port.postMessage({ type: 'buffered', samples: this.write - this.read });
    return true;
  }
}

registerProcessor('audiodiff-capture', Capture);
registerProcessor('audiodiff-player', Player);
