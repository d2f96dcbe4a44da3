// Image models: a drawing canvas for small grey-scale models (digits, letters), a photo panel
// (drop, choose or take a photo) for the others; every input is shown as the model sees it,
// beside its heat map from POST /explain.

import { $, debounce, postJSON, shrink } from "./common.js";
import { centredDigit, clearCanvas, setupCanvas } from "./draw.js";
import { clearPrediction, methodSelector, request, showError } from "./results.js";

const DRAW_DEBOUNCE_MS = 120; // while a stroke is drawn: at most ~8 requests a second
// Grey-scale models up to this side (px) get the canvas: MNIST-like drawings (28 px), not photos.
const DRAWING_SIDE = 64;
const DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

// True when the model takes small grey-scale images: a drawing fits it, a photo does not.
export function isDrawable(info) {
  const { channels, image_size: size } = info.preprocessing;
  return channels === 1 && Math.max(...size) <= DRAWING_SIDE;
}

export function setupImage(info) {
  const [height, width] = info.preprocessing.image_size;
  const topK = Math.min(info.classes.length, 10); // every bar when few, the 10 likeliest else
  const heat = setupHeatmap(info);
  for (const id of ["model-input", "heatmap"]) $(id).style.aspectRatio = `${width} / ${height}`;
  const send = (url, caption) => {
    $("model-input").src = url;
    $("model-input-caption").textContent = `${caption} · what the model sees (${width}×${height})`;
    request(() => postJSON(`/predict?top_k=${topK}`, { image: url }), url);
    heat.explain(url);
  };
  const clear = (message) => {
    $("model-input").removeAttribute("src");
    $("model-input-caption").textContent = "";
    heat.clear();
    clearPrediction(message);
  };
  $("image-input").hidden = false;
  $("view").hidden = false;
  const drawable = isDrawable(info);
  document.body.dataset.input = drawable ? "draw" : "photo";
  if (drawable) setupDrawing(info, send, clear);
  else setupPhoto();
  setupFiles(info, send, drawable);
}

function setupDrawing(info, send, clear) {
  const [height, width] = info.preprocessing.image_size;
  const digits = info.classes.length === 10 && info.classes.every((c, i) => c === DIGITS[i]);
  $("image-title").textContent = digits ? "Draw a digit" : "Draw";
  $("draw").hidden = false;
  const canvas = $("canvas");
  const sendDrawing = () => {
    const prepared = centredDigit(canvas, width, height);
    if (!prepared) return clear(digits ? "draw a digit" : "draw something");
    send(prepared.toDataURL("image/png"), "your drawing");
  };
  const soon = debounce(sendDrawing, DRAW_DEBOUNCE_MS);
  setupCanvas(canvas, soon, soon.now);
  $("clear").addEventListener("click", () => { clearCanvas(canvas); clear(); });
}

function setupPhoto() {
  $("image-title").textContent = "Take or choose a photo";
  $("photo").hidden = false;
  $("camera-button").hidden = false;
  $("clear").hidden = true;
  $("drop-hint").textContent = "or drop an image file on the page";
}

// Files chosen, dropped or taken with the camera: resized here to the model's size (small
// requests, even for 12-megapixel phone photos), then sent like a drawing.
function setupFiles(info, send, drawable) {
  let shown = null; // object URL of the photo on show
  const take = async (file) => {
    if (!file) return;
    try {
      const url = await modelView(file, info.preprocessing);
      if (!drawable) {
        if (shown) URL.revokeObjectURL(shown);
        shown = URL.createObjectURL(file);
        $("photo-preview").src = shown;
      }
      send(url, file.name || "your photo");
    } catch (error) {
      showError(new Error(`${file.name || "the file"} is not an image this browser can read`));
    }
  };
  for (const id of ["file", "camera"]) {
    $(id).addEventListener("change", (event) => take(event.target.files[0]));
  }
  document.addEventListener("dragover", (event) => {
    event.preventDefault();
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    document.body.classList.remove("dragging");
    take(event.dataTransfer.files[0]);
  });
}

// A file → PNG data URL at the model's size, prepared as the server prepares uploads: upright
// (EXIF orientation), transparency on white, squeezed to the size, grey for 1-channel models.
async function modelView(file, preprocessing) {
  const [height, width] = preprocessing.image_size;
  const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  const full = document.createElement("canvas");
  full.width = bitmap.width;
  full.height = bitmap.height;
  const ctx = full.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, full.width, full.height);
  ctx.drawImage(bitmap, 0, 0);
  bitmap.close();
  const small = shrink(full, { x: 0, y: 0, w: full.width, h: full.height }, width, height);
  if (preprocessing.channels === 1) toGrey(small);
  return small.toDataURL("image/png");
}

// In place, with Pillow's "L" weights (ITU-R 601-2 luma): L = R*299/1000 + G*587/1000 + B*114/1000.
function toGrey(canvas) {
  const ctx = canvas.getContext("2d");
  const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
  const p = image.data; // RGBA
  for (let i = 0; i < p.length; i += 4) {
    const grey = Math.round((p[i] * 299 + p[i + 1] * 587 + p[i + 2] * 114) / 1000);
    p[i] = p[i + 1] = p[i + 2] = grey;
  }
  ctx.putImageData(image, 0, 0);
}

// The heat map beside (or over) the model's view; refreshed for every input sent.
function setupHeatmap(info) {
  const methods = info.explain_methods || [];
  const status = $("explain-status");
  $("overlay").addEventListener("change", (event) => {
    $("views").classList.toggle("overlay", event.target.checked);
  });
  if (!methods.length) {
    $("explain-controls").hidden = true;
    status.textContent = info.explain_note || "no heat map method fits this model";
    return { explain() {}, clear() {} };
  }
  let latest = 0; // number of the newest /explain request; older answers are dropped
  let input = null; // the input explained last: a new method re-explains it
  const method = methodSelector($("method"), methods, () => input && explain(input));
  async function explain(url) {
    input = url;
    const number = ++latest;
    const chosen = method();
    try {
      const answer = await postJSON(`/explain?method=${encodeURIComponent(chosen)}`, { image: url });
      if (number !== latest) return;
      const map = $("heatmap");
      map.src = answer.heatmap;
      map.dataset.method = answer.method;
      map.dataset.input = url;
      status.textContent = `${answer.method} · where the model found “${answer.class}”`;
    } catch (error) {
      if (number === latest) status.textContent = error.message;
    }
  }
  function clear() {
    latest++;
    input = null;
    const map = $("heatmap");
    map.removeAttribute("src");
    delete map.dataset.method;
    delete map.dataset.input;
    status.textContent = "";
  }
  return { explain, clear };
}
