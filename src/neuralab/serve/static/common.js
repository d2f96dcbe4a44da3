// Small helpers shared by the page's modules: element lookup, debouncing, JSON requests and
// image resizing on canvases.

export const $ = (id) => document.getElementById(id);

export function debounce(fn, ms) {
  let timer = null;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.now = (...args) => { clearTimeout(timer); fn(...args); };
  return wrapped;
}

export async function postJSON(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
  return readAnswer(response);
}

export async function readAnswer(response) {
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

// `box` of `source` resized to width x height, in halving steps: one big drawImage step
// would alias thin strokes and fine photo detail away.
export function shrink(source, box, width, height) {
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
