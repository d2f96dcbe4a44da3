// neuralab serve's page: draw a digit / drop an image, or type a text, and watch the model's
// top classes update as you go. Plain JavaScript, no build step, nothing loaded from elsewhere.
"use strict";

const DRAW_DEBOUNCE_MS = 120; // while a stroke is drawn: at most ~8 requests a second
const TYPE_DEBOUNCE_MS = 250; // while typing: wait for a short pause
// MNIST digits fit a 20x20 box centred by centre of mass in a 28x28 image (LeCun et al.);
// the canvas is prepared the same way, scaled to the model's own image size.
const DIGIT_BOX = 20 / 28;

const $ = (id) => document.getElementById(id);
let info = null;
let latest = 0; // number of the newest request; older answers are dropped
// Every class's bar when there are few (digits, sentiments), the 10 likeliest otherwise.
const predictPath = () => `/predict?top_k=${Math.min(info.classes.length, 10)}`;

function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.now = (...args) => { clearTimeout(timer); fn(...args); };
  return wrapped;
}

async function postJSON(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  return readAnswer(response);
}

async function readAnswer(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

// ---------------------------------------------------------------- results

function showPrediction(prediction, input) {
  const best = prediction.top[0];
  const head = $("prediction");
  head.textContent = best.class;
  const small = document.createElement("small");
  small.textContent = percent(best.probability);
  head.append(small);
  head.dataset.class = best.class;
  head.dataset.probability = String(best.probability);
  $("result").dataset.input = input;
  $("bars").replaceChildren(...prediction.top.map((entry, i) => barRow(entry, i === 0)));
  $("status").textContent = "";
}

function barRow(entry, best) {
  const row = document.createElement("div");
  row.className = best ? "bar-row best" : "bar-row";
  row.dataset.class = entry.class;
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = entry.class;
  label.title = entry.class;
  const bar = document.createElement("div");
  bar.className = "bar";
  const fill = document.createElement("div");
  fill.className = "fill";
  fill.style.width = `${(100 * entry.probability).toFixed(1)}%`;
  bar.append(fill);
  const value = document.createElement("span");
  value.className = "percent";
  value.textContent = percent(entry.probability);
  row.append(label, bar, value);
  return row;
}

function percent(p) {
  if (p > 0 && p < 0.001) return "<0.1%";
  return p >= 0.999 ? `${(100 * p).toFixed(2)}%` : `${(100 * p).toFixed(1)}%`;
}

function clearPrediction(message) {
  const head = $("prediction");
  head.textContent = "–";
  delete head.dataset.class;
  delete $("result").dataset.input;
  $("bars").replaceChildren();
  $("status").textContent = message || "";
}

function showError(error) {
  $("status").textContent = error.message;
}

// ---------------------------------------------------------------- images

function setupImage() {
  $("image-input").hidden = false;
  const canvas = $("canvas");
  const pen = canvas.getContext("2d");
  const predictSoon = debounce(predictCanvas, DRAW_DEBOUNCE_MS);
  clearCanvas();
  let drawing = false;
  let last = null;

  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * canvas.width) / box.width,
      y: ((event.clientY - box.top) * canvas.height) / box.height,
    };
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    stroke(last, next);
    last = next;
    predictSoon();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    predictSoon.now();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  $("clear").addEventListener("click", () => { clearCanvas(); clearPrediction(); });
  setupFiles();

  function stroke(from, to) {
    // Strokes about as thick, relative to the digit, as MNIST's pen.
    pen.lineWidth = canvas.width / 13;
    pen.lineCap = "round";
    pen.lineJoin = "round";
    pen.strokeStyle = "#fff";
    pen.beginPath();
    pen.moveTo(from.x, from.y);
    pen.lineTo(to.x, to.y);
    pen.stroke();
  }

  function clearCanvas() {
    pen.fillStyle = "#000";
    pen.fillRect(0, 0, canvas.width, canvas.height);
    $("model-input").removeAttribute("src");
  }
}

async function predictCanvas() {
  const [height, width] = info.preprocessing.image_size;
  const prepared = centredDigit($("canvas"), width, height);
  if (!prepared) return clearPrediction("draw a digit");
  const url = prepared.toDataURL("image/png");
  $("model-input").src = url;
  $("model-input-caption").textContent = `what the model sees (${width}×${height})`;
  await request(() => postJSON(predictPath(), { image: url }), url);
}

// The drawing cropped to its bounding box, scaled to fit DIGIT_BOX of the image and placed so
// that its centre of mass is the image's centre: how MNIST itself was made.
function centredDigit(canvas, width, height) {
  const box = inkBox(canvas);
  if (!box) return null;
  const target = Math.max(1, Math.round(Math.min(width, height) * DIGIT_BOX));
  const scale = target / Math.max(box.w, box.h);
  const scaled = shrink(canvas, box, Math.max(1, Math.round(box.w * scale)),
    Math.max(1, Math.round(box.h * scale)));
  const centre = centreOfMass(scaled);
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  const ctx = out.getContext("2d");
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  const clamp = (v, hi) => Math.min(Math.max(v, 0), Math.max(hi, 0));
  const x = clamp(Math.round(width / 2 - centre.x), width - scaled.width);
  const y = clamp(Math.round(height / 2 - centre.y), height - scaled.height);
  ctx.drawImage(scaled, x, y);
  return out;
}

function inkBox(canvas) {
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data; // RGBA
  let left = width, top = height, right = -1, bottom = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (pixels[4 * (y * width + x)] > 0) {
        if (x < left) left = x;
        if (x > right) right = x;
        if (y < top) top = y;
        if (y > bottom) bottom = y;
      }
    }
  }
  return right < 0 ? null : { x: left, y: top, w: right - left + 1, h: bottom - top + 1 };
}

// Downscale in halving steps: one big drawImage step would alias thin strokes away.
function shrink(source, box, width, height) {
  let current = crop(source, box.x, box.y, box.w, box.h, box.w, box.h);
  while (current.width / 2 > width && current.height / 2 > height) {
    current = crop(current, 0, 0, current.width, current.height,
      Math.ceil(current.width / 2), Math.ceil(current.height / 2));
  }
  return crop(current, 0, 0, current.width, current.height, width, height);
}

function crop(source, x, y, w, h, width, height) {
  const out = document.createElement("canvas");
  out.width = width;
  out.height = height;
  const ctx = out.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, x, y, w, h, 0, 0, width, height);
  return out;
}

function centreOfMass(canvas) {
  const { width, height } = canvas;
  const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
  let mass = 0, sx = 0, sy = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const ink = pixels[4 * (y * width + x)];
      mass += ink;
      sx += ink * (x + 0.5);
      sy += ink * (y + 0.5);
    }
  }
  return mass ? { x: sx / mass, y: sy / mass } : { x: width / 2, y: height / 2 };
}

function setupFiles() {
  const send = (file) => {
    if (!file) return;
    const url = URL.createObjectURL(file);
    $("model-input").src = url;
    $("model-input-caption").textContent = file.name;
    const form = new FormData();
    form.append("file", file);
    request(() => fetch(predictPath(), { method: "POST", body: form }).then(readAnswer), file.name);
  };
  $("file").addEventListener("change", (event) => send(event.target.files[0]));
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    document.body.classList.remove("dragging");
    send(event.dataTransfer.files[0]);
  });
}

// Run one prediction request; only the newest request's answer is shown.
async function request(call, input) {
  const number = ++latest;
  try {
    const answer = await call();
    if (number === latest) showPrediction(answer.predictions[0], input);
  } catch (error) {
    if (number === latest) showError(error);
  }
}

// ---------------------------------------------------------------- texts

function setupText() {
  $("text-input").hidden = false;
  const area = $("text");
  const update = debounce(() => predictText(area.value), TYPE_DEBOUNCE_MS);
  area.addEventListener("input", update);
  if (area.value.trim()) update.now();
}

async function predictText(text) {
  if (!text.trim()) {
    $("highlights").replaceChildren();
    $("legend").replaceChildren();
    return clearPrediction();
  }
  const number = ++latest;
  try {
    const [predicted, explained] = await Promise.all([
      postJSON(predictPath(), { text }),
      postJSON("/explain", { text }),
    ]);
    if (number !== latest) return;
    showPrediction(predicted.predictions[0], text);
    showHighlights(explained);
  } catch (error) {
    if (number === latest) showError(error);
  }
}

function showHighlights(explained) {
  const largest = Math.max(...explained.weights.map(Math.abs), 1e-6);
  const spans = [];
  explained.words.forEach((word, i) => {
    const weight = explained.weights[i];
    const span = document.createElement("span");
    span.className = "word";
    span.textContent = word;
    span.dataset.weight = String(weight);
    const sign = weight >= 0 ? "+" : "";
    span.title = `${sign}${weight.toFixed(2)} log-odds of "${explained.class}"`;
    const strength = Math.abs(weight) / largest;
    if (strength > 0.05) {
      const colour = getComputedStyle(document.documentElement)
        .getPropertyValue(weight > 0 ? "--for" : "--against").trim();
      span.style.backgroundColor = `rgba(${colour}, ${(0.75 * strength).toFixed(3)})`;
    }
    spans.push(span, document.createTextNode(" "));
  });
  $("highlights").replaceChildren(...spans);
  legend(explained.class);
}

function legend(predicted) {
  const item = (kind, text) => {
    const swatch = document.createElement("span");
    swatch.className = `swatch ${kind}`;
    return [swatch, document.createTextNode(text)];
  };
  $("legend").replaceChildren(
    ...item("for", `pushed towards “${predicted}”`),
    ...item("against", `pushed away from it`),
  );
}

// ---------------------------------------------------------------- start

async function main() {
  try {
    info = await fetch("/info").then(readAnswer);
  } catch (error) {
    $("model").textContent = `cannot reach the model: ${error.message}`;
    return;
  }
  const classes = info.classes.length;
  const size = info.kind === "image" ? ` · ${info.preprocessing.image_size.join("×")} px` : "";
  $("model").textContent =
    `${info.model} on ${info.dataset || "its dataset"} · ${classes} classes${size}`;
  if (info.kind === "text") setupText();
  else setupImage();
  document.body.dataset.ready = "true";
}

main();
