// neuralab serve's page: draw a digit, drop / choose / take a photo, or type a text, and watch
// the model's top classes and what drove them (a heat map, coloured words) update as you go.
// Plain JavaScript modules, no build step, nothing loaded from elsewhere.

import { $, debounce, postJSON, readAnswer } from "./common.js";
import { setupImage } from "./images.js";
import {
  clearPrediction, isLatest, methodSelector, nextRequest, showError, showPrediction,
} from "./results.js";

const TYPE_DEBOUNCE_MS = 250; // while typing: wait for a short pause

// ---------------------------------------------------------------- texts

function setupText(info) {
  $("text-input").hidden = false;
  document.body.dataset.input = "text";
  const area = $("text");
  const topK = Math.min(info.classes.length, 10);
  const method = methodSelector($("text-method"), info.explain_methods, () => update.now());
  const update = debounce(() => predictText(area.value, topK, method()), TYPE_DEBOUNCE_MS);
  area.addEventListener("input", update);
  if (area.value.trim()) update.now();
}

async function predictText(text, topK, method) {
  if (!text.trim()) {
    $("highlights").replaceChildren();
    $("legend").replaceChildren();
    return clearPrediction();
  }
  const number = nextRequest();
  try {
    const [predicted, explained] = await Promise.all([
      postJSON(`/predict?top_k=${topK}`, { text }),
      postJSON("/explain", { text, method }),
    ]);
    if (!isLatest(number)) return;
    showPrediction(predicted.predictions[0], text);
    showHighlights(explained);
  } catch (error) {
    if (isLatest(number)) showError(error);
  }
}

function showHighlights(explained) {
  const largest = Math.max(...explained.weights.map(Math.abs), 1e-6);
  const unit = explained.method === "occlusion" ? "log-odds" : "attribution";
  const spans = [];
  explained.words.forEach((word, i) => {
    const weight = explained.weights[i];
    const span = document.createElement("span");
    span.className = explained.truncated[i] ? "word truncated" : "word";
    span.textContent = word;
    span.dataset.weight = String(weight);
    const sign = weight >= 0 ? "+" : "";
    span.title = explained.truncated[i]
      ? "past the model's length limit: not seen"
      : `${sign}${weight.toFixed(2)} ${unit} of "${explained.class}"`;
    const strength = Math.abs(weight) / largest;
    if (strength > 0.05) {
      const colour = getComputedStyle(document.documentElement)
        .getPropertyValue(weight > 0 ? "--for" : "--against").trim();
      span.style.backgroundColor = `rgba(${colour}, ${(0.75 * strength).toFixed(3)})`;
    }
    spans.push(span, document.createTextNode(" "));
  });
  $("highlights").replaceChildren(...spans);
  $("highlights").dataset.method = explained.method;
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
  let info;
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
  if (info.kind === "text") setupText(info);
  else setupImage(info);
  document.body.dataset.ready = "true";
}

main();
