// The prediction panel: the top class, one bar per class, and error lines.

import { $ } from "./common.js";

let latest = 0; // number of the newest prediction request; older answers are dropped

// Run one prediction request; only the newest request's answer is shown.
export async function request(call, input) {
  const number = ++latest;
  try {
    const answer = await call();
    if (number === latest) showPrediction(answer.predictions[0], input);
  } catch (error) {
    if (number === latest) showError(error);
  }
}

// A number for a request whose answer must be the newest to be shown (see isLatest).
export const nextRequest = () => ++latest;
export const isLatest = (number) => number === latest;

export function showPrediction(prediction, input) {
  if (prediction.heads) return showHeads(prediction.heads, input);
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

// A run with several label fields: per head, its name then its class bars, or its value.
function showHeads(heads, input) {
  const rows = [];
  const summary = [];
  for (const [name, found] of Object.entries(heads)) {
    const title = document.createElement("div");
    title.className = "head-name";
    if ("value" in found) {
      const value = Number(found.value).toPrecision(4);
      title.textContent = `${name}: ${value}`;
      summary.push(`${name} ${value}`);
      rows.push(title);
    } else {
      title.textContent = name;
      summary.push(`${name} ${found.class}`);
      rows.push(title, ...found.top.map((entry, i) => barRow(entry, i === 0)));
    }
  }
  const head = $("prediction");
  head.textContent = summary.join(" · ");
  delete head.dataset.class;
  $("result").dataset.input = input;
  $("bars").replaceChildren(...rows);
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

export function clearPrediction(message) {
  latest++; // an answer still on its way is for an input that is gone
  const head = $("prediction");
  head.textContent = "–";
  delete head.dataset.class;
  delete $("result").dataset.input;
  $("bars").replaceChildren();
  $("status").textContent = message || "";
}

export function showError(error) {
  $("status").textContent = error.message;
}

// The method selector of heat maps and word weights: the model's methods, its default first.
export function methodSelector(select, methods, onChange) {
  select.replaceChildren(...methods.map((method) => {
    const option = document.createElement("option");
    option.value = method;
    option.textContent = method.replace("-", " ");
    return option;
  }));
  select.addEventListener("change", () => onChange(select.value));
  return () => select.value;
}
