// charrnn.js: a trained charrnn model stepped in JavaScript, and its sampler.
//
// The same equations as charrnn's NumPy core, with PyTorch's parameter names and gate orders:
//   rnn:  h' = act(W_ih x + b_ih + W_hh h + b_hh)
//   lstm: i, f, g, o = sigma, sigma, tanh, sigma of (W_ih x + b_ih + W_hh h + b_hh); c' = f c + i g; h' = o tanh(c')
//   gru:  r, z = sigma(W_i* x + b_i* + W_h* h + b_h*); n = tanh(W_in x + b_in + r (W_hn h + b_hn)); h' = (1 - z) n + z h
//   head: logits = W h + b
// Inputs: one-hot (a column of W_ih), bag-of-words (the mean of the columns of the last K tokens,
// a missing token counting as zero) or a learned embedding. Arithmetic is in float64, so the
// logits match NumPy's float32 ones to about 1e-6.
// The file runs in the exported page (window.charrnn) and under Node (module.exports), where
// the tests compare its logits with NumPy's.
"use strict";

(function (root) {
  const GATES = { rnn: 1, lstm: 4, gru: 3 };

  function base64Bytes(text) {
    if (typeof Buffer !== "undefined") return new Uint8Array(Buffer.from(text, "base64"));
    const raw = atob(text);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function halfToFloat(bits) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const fraction = bits & 0x3ff;
    if (exponent === 0) return sign * fraction * Math.pow(2, -24);
    if (exponent === 31) return fraction ? NaN : sign * Infinity;
    return sign * (1 + fraction / 1024) * Math.pow(2, exponent - 15);
  }

  // {dtype: "float32" | "float16", shape, data: base64 of little-endian values} -> Float64Array
  function decodeArray(spec) {
    const bytes = base64Bytes(spec.data);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const out = new Float64Array(size);
    if (spec.dtype === "float16") {
      for (let i = 0; i < size; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
    } else {
      for (let i = 0; i < size; i++) out[i] = view.getFloat32(4 * i, true);
    }
    return out;
  }

  const sigmoid = (x) => 1 / (1 + Math.exp(-x));

  // out[r] = bias[r] + sum_c W[r, c] x[c] for a row-major (rows, cols) W
  function matvec(W, rows, cols, x, bias, out) {
    for (let r = 0; r < rows; r++) {
      let sum = bias ? bias[r] : 0;
      const base = r * cols;
      for (let c = 0; c < cols; c++) sum += W[base + c] * x[c];
      out[r] = sum;
    }
    return out;
  }

  class Model {
    // spec: {config: {cell, nonlinearity, hidden_size, num_layers, encoding, bow_window, embedding_dim},
    //        vocab: {level, tokens, unk_id}, params: {name: array spec}}
    constructor(spec) {
      const cfg = spec.config;
      this.config = cfg;
      this.vocab = spec.vocab;
      this.V = spec.vocab.tokens.length;
      this.start = spec.vocab.start;  // the token a text begins after (a newline where there is one)
      this.H = cfg.hidden_size;
      this.G = GATES[cfg.cell];
      this.window = cfg.encoding === "bow" ? cfg.bow_window : 1;
      const p = {};
      for (const [name, array] of Object.entries(spec.params)) p[name] = decodeArray(array);
      this.embedding = p["embedding.weight"];
      this.inputSize = cfg.encoding === "embedding" ? cfg.embedding_dim : this.V;
      this.layers = [];
      for (let l = 0; l < cfg.num_layers; l++) {
        this.layers.push({
          wIh: p[`rnn.weight_ih_l${l}`], wHh: p[`rnn.weight_hh_l${l}`],
          bIh: p[`rnn.bias_ih_l${l}`], bHh: p[`rnn.bias_hh_l${l}`],
          inputs: l === 0 ? this.inputSize : this.H,
        });
      }
      this.headW = p["head.weight"];
      this.headB = p["head.bias"];
      this.index = new Map(spec.vocab.tokens.map((t, i) => [t, i]));
    }

    initialState() {
      const layers = this.layers.map(() => ({
        h: new Float64Array(this.H), c: this.config.cell === "lstm" ? new Float64Array(this.H) : null,
      }));
      return { layers, history: new Array(this.window - 1).fill(-1) };
    }

    // W_ih x + b_ih for layer 0, from the token (and the bag's history)
    inputProjection(state, token) {
      const first = this.layers[0];
      const rows = this.G * this.H;
      const out = new Float64Array(rows);
      if (this.config.encoding === "embedding") {
        const E = this.inputSize;
        return matvec(first.wIh, rows, E, this.embedding.subarray(token * E, token * E + E), first.bIh, out);
      }
      const bag = [token, ...state.history].filter((t) => t >= 0);
      const scale = 1 / this.window;
      for (let r = 0; r < rows; r++) {
        let sum = 0;
        for (const t of bag) sum += first.wIh[r * this.V + t];
        out[r] = first.bIh[r] + scale * sum;
      }
      if (this.window > 1) state.history = [token, ...state.history].slice(0, this.window - 1);
      return out;
    }

    cell(layer, xw, s) {
      const H = this.H;
      const hw = matvec(layer.wHh, this.G * H, H, s.h, layer.bHh, new Float64Array(this.G * H));
      const h = new Float64Array(H);
      const kind = this.config.cell;
      if (kind === "rnn") {
        const relu = this.config.nonlinearity === "relu";
        for (let k = 0; k < H; k++) {
          const a = xw[k] + hw[k];
          h[k] = relu ? Math.max(0, a) : Math.tanh(a);
        }
        s.h = h;
      } else if (kind === "lstm") {
        const c = new Float64Array(H);
        for (let k = 0; k < H; k++) {
          const i = sigmoid(xw[k] + hw[k]);
          const f = sigmoid(xw[H + k] + hw[H + k]);
          const g = Math.tanh(xw[2 * H + k] + hw[2 * H + k]);
          const o = sigmoid(xw[3 * H + k] + hw[3 * H + k]);
          c[k] = f * s.c[k] + i * g;
          h[k] = o * Math.tanh(c[k]);
        }
        s.h = h;
        s.c = c;
      } else {
        for (let k = 0; k < H; k++) {
          const r = sigmoid(xw[k] + hw[k]);
          const z = sigmoid(xw[H + k] + hw[H + k]);
          const n = Math.tanh(xw[2 * H + k] + r * hw[2 * H + k]);
          h[k] = (1 - z) * n + z * s.h[k];
        }
        s.h = h;
      }
      return s.h;
    }

    // Feed one token id; returns the logits (V) of the next token. `state` is updated.
    step(state, token) {
      let out = this.cell(this.layers[0], this.inputProjection(state, token), state.layers[0]);
      for (let l = 1; l < this.layers.length; l++) {
        const layer = this.layers[l];
        const xw = matvec(layer.wIh, this.G * this.H, this.H, out, layer.bIh, new Float64Array(this.G * this.H));
        out = this.cell(layer, xw, state.layers[l]);
      }
      return matvec(this.headW, this.V, this.H, out, this.headB, new Float64Array(this.V));
    }

    // text -> token ids, or throws naming the tokens the vocabulary lacks (mapped to <unk> if it has one)
    encode(text) {
      const pieces = this.vocab.level === "char" ? Array.from(text)
        : text.match(/[\p{L}\p{N}_]+|\s+|[^\p{L}\p{N}_\s]+/gu) || [];
      const unknown = pieces.filter((t) => !this.index.has(t));
      if (unknown.length && this.vocab.unk_id === null) {
        const kind = this.vocab.level === "char" ? "characters" : "words";
        throw new Error(`the prime has ${kind} the model never saw: ${[...new Set(unknown)].map((t) => JSON.stringify(t)).join(" ")}`);
      }
      return pieces.map((t) => (this.index.has(t) ? this.index.get(t) : this.vocab.unk_id));
    }
  }

  // NumPy's np.random.default_rng(seed).random(), to the last bit: SeedSequence(seed) hashes the
  // seed into PCG64's state and increment, PCG64 steps its 128-bit LCG and outputs XSL-RR, and a
  // double takes the top 53 bits. So a seed draws the same uniforms here as in `charrnn sample`.
  const MASK64 = (1n << 64n) - 1n, MASK128 = (1n << 128n) - 1n;
  const PCG_MULTIPLIER = (2549297995355413924n << 64n) + 4865540595714422341n;

  function seedSequenceState(seed) {  // SeedSequence(seed).generate_state(4, np.uint64)
    const INIT_A = 0x43b0d7e5, MULT_A = 0x931e8875, INIT_B = 0x8b51f9dd, MULT_B = 0x58f38ded;
    const MIX_L = 0xca01f9dd, MIX_R = 0x4973f715;
    const entropy = [];  // the seed as little-endian 32-bit words
    let rest = BigInt(seed);
    do { entropy.push(Number(rest & 0xffffffffn)); rest >>= 32n; } while (rest > 0n);
    let hashConst = INIT_A;
    const hashmix = (value) => {
      value = (value ^ hashConst) >>> 0;
      hashConst = Math.imul(hashConst, MULT_A) >>> 0;
      value = Math.imul(value, hashConst) >>> 0;
      return (value ^ (value >>> 16)) >>> 0;
    };
    const mix = (x, y) => {
      const r = (Math.imul(MIX_L, x) - Math.imul(MIX_R, y)) >>> 0;
      return (r ^ (r >>> 16)) >>> 0;
    };
    const pool = [0, 1, 2, 3].map((i) => hashmix(i < entropy.length ? entropy[i] : 0));
    for (let src = 0; src < 4; src++)
      for (let dst = 0; dst < 4; dst++) if (src !== dst) pool[dst] = mix(pool[dst], hashmix(pool[src]));
    for (let src = 4; src < entropy.length; src++)
      for (let dst = 0; dst < 4; dst++) pool[dst] = mix(pool[dst], hashmix(entropy[src]));
    let hashB = INIT_B;
    const words = [];
    for (let i = 0; i < 8; i++) {
      let v = (pool[i % 4] ^ hashB) >>> 0;
      hashB = Math.imul(hashB, MULT_B) >>> 0;
      v = Math.imul(v, hashB) >>> 0;
      words.push((v ^ (v >>> 16)) >>> 0);
    }
    return [0, 1, 2, 3].map((k) => BigInt(words[2 * k]) | (BigInt(words[2 * k + 1]) << 32n));
  }

  function generator(seed) {
    const [s0, s1, i0, i1] = seedSequenceState(seed);
    const increment = ((((i0 << 64n) | i1) << 1n) | 1n) & MASK128;
    let state = 0n;
    const step = () => { state = (state * PCG_MULTIPLIER + increment) & MASK128; };
    step();
    state = (state + ((s0 << 64n) | s1)) & MASK128;
    step();
    return function () {
      step();
      const rotation = state >> 122n;
      const x = ((state >> 64n) ^ state) & MASK64;
      const out = ((x >> rotation) | (x << ((64n - rotation) & 63n))) & MASK64;
      return Number(out >> 11n) / 9007199254740992;
    };
  }

  // NumPy's sum of a float64 row: pairwise, eight running sums per block of up to 128
  function pairwiseSum(a, begin, n) {
    if (n < 8) {
      let total = 0;
      for (let i = 0; i < n; i++) total += a[begin + i];
      return total;
    }
    if (n <= 128) {
      const r = Array.from({ length: 8 }, (_, j) => a[begin + j]);
      let i = 8;
      for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[begin + i + j];
      let total = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
      for (; i < n; i++) total += a[begin + i];
      return total;
    }
    let half = Math.floor(n / 2);
    half -= half % 8;
    return pairwiseSum(a, begin, half) + pairwiseSum(a, begin + half, n - half);
  }

  function normalise(probs) {
    const total = 0 + pairwiseSum(probs, 0, probs.length);
    for (let i = 0; i < probs.length; i++) probs[i] /= total;
    return probs;
  }

  // logits -> temperature -> top-k -> softmax -> top-p, in float64, as charrnn.generate.sample does
  function distribution(logits, temperature, topK, topP) {
    const V = logits.length;
    let best = 0;
    for (let i = 1; i < V; i++) if (logits[i] > logits[best]) best = i;
    const probs = new Float64Array(V);
    if (temperature === 0 || topK === 1) {
      probs[best] = 1;
      return probs;
    }
    const z = Array.from(logits, (v) => (v - logits[best]) / temperature);
    if (topK && topK < V) {
      const kth = [...z].sort((a, b) => b - a)[topK - 1];
      for (let i = 0; i < V; i++) if (z[i] < kth) z[i] = -Infinity;
    }
    for (let i = 0; i < V; i++) probs[i] = Math.exp(z[i]);
    normalise(probs);
    if (topP && topP < 1) {
      const order = [...probs.keys()].sort((a, b) => probs[b] - probs[a] || a - b);
      const keep = new Uint8Array(V);
      let through = 0;
      for (const i of order) {  // the mass ranked above each token, as cumsum(ranked) - ranked
        through += probs[i];
        if (through - probs[i] < topP) keep[i] = 1;
      }
      for (let i = 0; i < V; i++) if (!keep[i]) probs[i] = 0;
      normalise(probs);
    }
    return probs;
  }

  // One token by the inverse CDF, as NumPy draws it: the first whose cumulative sum exceeds u * total
  function draw(probs, random) {
    const cdf = new Float64Array(probs.length);
    let cumulative = 0;
    for (let i = 0; i < probs.length; i++) cdf[i] = cumulative += probs[i];
    const u = random() * cdf[cdf.length - 1];
    for (let i = 0; i < cdf.length; i++) if (cdf[i] > u) return i;
    return probs.length - 1;
  }

  // Generate `length` tokens after `prime`; onToken(text) receives each as it is drawn. Returns a
  // stop() function; onDone() is called at the end. Work is done in slices so a page stays live.
  function generate(model, settings, onToken, onDone) {
    const random = generator(settings.seed);
    const state = model.initialState();
    let ids = settings.prime ? model.encode(settings.prime) : [];
    if (!ids.length) ids = [model.start];  // what a text begins after, as in charrnn sample
    for (const id of ids.slice(0, -1)) model.step(state, id);
    let current = ids[ids.length - 1];
    let produced = 0;
    let stopped = false;
    function slice() {
      const until = Date.now() + 15;
      while (!stopped && produced < settings.length && Date.now() < until) {
        const logits = model.step(state, current);
        current = draw(distribution(logits, settings.temperature, settings.topK, settings.topP), random);
        produced++;
        onToken(model.vocab.tokens[current]);
      }
      if (!stopped && produced < settings.length) setTimeout(slice, 0);
      else if (onDone) onDone(produced);
    }
    slice();
    return () => { stopped = true; };
  }

  const api = { Model, decodeArray, distribution, generate, generator };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.charrnn = api;
})(typeof window !== "undefined" ? window : globalThis);
