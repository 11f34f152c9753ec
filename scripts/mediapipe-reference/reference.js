#!/usr/bin/env node
// Reference hand landmarks from MediaPipe Hands' own WebAssembly build (npm @mediapipe/hands),
// run in a headless Chromium. Started by ./run, which fetches the package and the node modules.
//
//   node reference.js --package DIR [options] IMAGES... > out.json
//
// Images (PNG or JPEG) are decoded here, in node, and their exact RGBA pixels are handed to the
// page, so the browser's decoder and colour management cannot change them. Every image is
// processed on its own (the graph is reset before each one: no tracking between images).
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');

const USAGE = `usage: run [options] IMAGES... > out.json
  --model full|lite         palm and landmark models: full (modelComplexity 1, default) or lite (0)
  --model-complexity 0|1    the same as a number
  --invert                  invert grey levels (255 - v) before detection
  --min-detection-confidence X   default 0.5
  --max-num-hands N         default 1
  --jsonl                   one JSON object per line instead of one JSON array
  --chromium PATH           default $CHROMIUM or /usr/bin/chromium
  --package DIR             the unpacked npm package (set by ./run)
  --inference cpu|gpu       TFLite on the CPU (XNNPACK in WebAssembly, default) or on WebGL
  --isolate flush|reset|none  how each image is kept from the previous one's tracking: a black
                            frame first (flush, default), a graph restart (reset), or not at all
                            (none: tracking as in a video, for comparison only)
  --verbose                 the page's console and progress on stderr
Prints, for each image: {file, width, height, inverted, model_complexity, inference, ms,
  hands: [{landmarks: [[x,y,z] x21] (normalised as MediaPipe returns them),
           world_landmarks: [[x,y,z] x21] (metres), handedness: "Left"|"Right", score}]}
(or {file, error} when the image cannot be read or processed).`;

function parseArgs(argv) {
  const o = {
    modelComplexity: 1, invert: false, minDetectionConfidence: 0.5, maxNumHands: 1,
    jsonl: false, chromium: process.env.CHROMIUM || '/usr/bin/chromium', pkg: null,
    verbose: false, isolate: 'flush', cpuInference: true, images: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(a + ' needs a value');
      return argv[++i];
    };
    if (a === '--model') {
      const v = next();
      if (v === 'full') o.modelComplexity = 1;
      else if (v === 'lite') o.modelComplexity = 0;
      else throw new Error('--model is full or lite, not ' + v);
    } else if (a === '--model-complexity') {
      const v = next();
      if (v !== '0' && v !== '1') throw new Error('--model-complexity is 0 or 1, not ' + v);
      o.modelComplexity = Number(v);
    } else if (a === '--invert') o.invert = true;
    else if (a === '--min-detection-confidence') {
      o.minDetectionConfidence = Number(next());
      if (!(o.minDetectionConfidence >= 0 && o.minDetectionConfidence <= 1)) throw new Error('bad --min-detection-confidence');
    } else if (a === '--max-num-hands') {
      o.maxNumHands = Number(next());
      if (!(Number.isInteger(o.maxNumHands) && o.maxNumHands >= 1)) throw new Error('bad --max-num-hands');
    } else if (a === '--jsonl') o.jsonl = true;
    else if (a === '--chromium') o.chromium = next();
    else if (a === '--package') o.pkg = next();
    else if (a === '--verbose') o.verbose = true;
    else if (a === '--inference') {
      const v = next();
      if (v !== 'cpu' && v !== 'gpu') throw new Error('--inference is cpu or gpu, not ' + v);
      o.cpuInference = v === 'cpu';
    } else if (a === '--isolate') {
      o.isolate = next();
      if (!['flush', 'reset', 'none'].includes(o.isolate)) throw new Error('--isolate is flush, reset or none');
    }
    else if (a === '-h' || a === '--help') { console.log(USAGE); process.exit(0); }
    else if (a === '--') { o.images.push(...argv.slice(i + 1)); break; }
    else if (a.startsWith('--')) throw new Error('unknown option ' + a);
    else o.images.push(a);
  }
  if (!o.pkg) throw new Error('--package DIR is required (use ./run)');
  if (o.images.length === 0) throw new Error('no images given');
  return o;
}

// Decodes a PNG or JPEG file to {width, height, rgba: Buffer}.
function decode(file) {
  const buf = fs.readFileSync(file);
  if (buf.length >= 8 && buf.readUInt32BE(0) === 0x89504e47) {
    const { PNG } = require('pngjs');
    const png = PNG.sync.read(buf); // 8-bit RGBA; 16-bit samples rescaled to 8 bits
    return { width: png.width, height: png.height, rgba: png.data };
  }
  if (buf.length >= 3 && buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) {
    const jpeg = require('jpeg-js');
    const img = jpeg.decode(buf, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 2048 });
    return { width: img.width, height: img.height, rgba: Buffer.from(img.data.buffer) };
  }
  throw new Error('not a PNG or JPEG file');
}

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.wasm': 'application/wasm',
  '.data': 'application/octet-stream', '.tflite': 'application/octet-stream',
  '.binarypb': 'application/octet-stream', '.json': 'application/json',
};

function startServer(pkgDir, pixels) {
  const page = fs.readFileSync(path.join(__dirname, 'page.html'));
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url.split('?')[0]);
    const send = (code, type, body) => {
      res.writeHead(code, { 'Content-Type': type, 'Cache-Control': 'no-store' });
      res.end(body);
    };
    if (url === '/' || url === '/index.html') return send(200, MIME['.html'], page);
    if (url === '/favicon.ico') return send(204, 'text/plain', '');
    let m = url.match(/^\/pixels\/(\d+)$/);
    if (m) {
      const p = pixels.get(Number(m[1]));
      return p ? send(200, 'application/octet-stream', p) : send(404, 'text/plain', 'no such image');
    }
    m = url.match(/^\/mp\/([A-Za-z0-9_.-]+)$/);
    if (m) {
      const file = path.join(pkgDir, m[1]);
      if (fs.existsSync(file)) {
        return send(200, MIME[path.extname(file)] || 'application/octet-stream', fs.readFileSync(file));
      }
    }
    send(404, 'text/plain', 'not found: ' + url);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error('mediapipe-reference: ' + e.message + '\n' + USAGE);
    process.exit(2);
  }
  for (const f of ['hands.js', 'hands_solution_packed_assets.data', 'hand_landmark_full.tflite']) {
    if (!fs.existsSync(path.join(o.pkg, f))) {
      console.error('mediapipe-reference: ' + f + ' missing in ' + o.pkg);
      process.exit(2);
    }
  }
  const puppeteer = require('puppeteer-core');
  const pixels = new Map();
  const server = await startServer(o.pkg, pixels);
  const base = 'http://127.0.0.1:' + server.address().port + '/';

  const args = [
    // WebGL 2 (MediaPipe's image conversion runs on the GPU) through SwiftShader on the CPU.
    '--use-angle=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist',
    '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
  ];
  if (typeof process.getuid === 'function' && process.getuid() === 0) args.push('--no-sandbox');
  const browser = await puppeteer.launch({
    executablePath: o.chromium, headless: true, args, protocolTimeout: 300000,
  });
  const out = process.stdout;
  let first = true;
  const emit = (obj) => {
    if (o.jsonl) out.write(JSON.stringify(obj) + '\n');
    else { out.write((first ? '[\n' : ',\n') + JSON.stringify(obj)); first = false; }
  };
  let found = 0, failed = 0, totalMs = 0, done = 0;
  const t0 = Date.now();
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => { if (o.verbose) console.error('page: ' + msg.text()); });
    page.on('pageerror', (err) => console.error('page error: ' + err.message));
    await page.goto(base, { waitUntil: 'load' });
    const gl = await page.evaluate(() => {
      const c = document.createElement('canvas').getContext('webgl2');
      if (!c) return null;
      const ext = c.getExtension('WEBGL_debug_renderer_info');
      return ext ? c.getParameter(ext.UNMASKED_RENDERER_WEBGL) : c.getParameter(c.RENDERER);
    });
    if (!gl) throw new Error('no WebGL 2 in this Chromium (MediaPipe needs it)');
    if (o.verbose) console.error('mediapipe-reference: WebGL 2 renderer: ' + gl);
    await page.evaluate((opts, isolate) => window.setup(opts, isolate), {
      modelComplexity: o.modelComplexity, maxNumHands: o.maxNumHands,
      minDetectionConfidence: o.minDetectionConfidence, useCpuInference: o.cpuInference,
    }, o.isolate);

    for (let i = 0; i < o.images.length; i++) {
      const file = o.images[i];
      let img;
      try {
        img = decode(file);
      } catch (e) {
        emit({ file, error: 'cannot read: ' + e.message });
        failed++;
        continue;
      }
      const rgba = Buffer.from(img.rgba);
      if (o.invert) {
        for (let k = 0; k < rgba.length; k += 4) {
          rgba[k] = 255 - rgba[k]; rgba[k + 1] = 255 - rgba[k + 1]; rgba[k + 2] = 255 - rgba[k + 2];
        }
      }
      pixels.set(i, rgba);
      let r;
      try {
        r = await page.evaluate((idx, w, h) => window.runOne(idx, w, h), i, img.width, img.height);
      } catch (e) {
        pixels.delete(i);
        emit({ file, width: img.width, height: img.height, error: 'MediaPipe failed: ' + e.message });
        failed++;
        continue;
      }
      pixels.delete(i);
      if (r.pixels_differ !== 0) {
        console.error(`mediapipe-reference: ${file}: the page's canvas differs from the decoded pixels in ${r.pixels_differ} bytes`);
      }
      emit({
        file, width: img.width, height: img.height, inverted: o.invert,
        model_complexity: o.modelComplexity, inference: o.cpuInference ? 'cpu' : 'gpu', ms: Math.round(r.ms * 10) / 10, hands: r.hands,
      });
      done++;
      totalMs += r.ms;
      if (r.hands.length > 0) found++;
      if (o.verbose) {
        const s = r.hands.map((h) => h.handedness + ' ' + (h.score === null ? '?' : h.score.toFixed(3))).join(', ');
        console.error(`[${i + 1}/${o.images.length}] ${file}: ${r.hands.length} hand(s) ${s} ${r.ms.toFixed(0)} ms`);
      }
    }
  } finally {
    if (!o.jsonl) out.write(first ? '[]\n' : '\n]\n');
    await browser.close().catch(() => {});
    server.close();
  }
  const wall = (Date.now() - t0) / 1000;
  console.error(`mediapipe-reference: ${o.images.length} image(s), hand found in ${found}, ` +
    `${failed} failed; ${done ? (totalMs / done).toFixed(0) : '-'} ms per image in MediaPipe, ` +
    `${wall.toFixed(1)} s in all (model ${o.modelComplexity ? 'full' : 'lite'}${o.invert ? ', inverted' : ''})`);
}

main().catch((e) => {
  console.error('mediapipe-reference: ' + (e && e.stack ? e.stack : e));
  process.exit(1);
});
