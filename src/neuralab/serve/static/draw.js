// The drawing canvas of small grey-scale models: pointer strokes, and the drawing prepared
// as MNIST digits were (cropped, scaled into a 20/28 box, centred by centre of mass).

import { shrink } from "./common.js";

// MNIST digits fit a 20x20 box centred by centre of mass in a 28x28 image (LeCun et al.);
// the canvas is prepared the same way, scaled to the model's own image size.
const DIGIT_BOX = 20 / 28;

// Wire the canvas: `changed()` while a stroke is drawn, `finished()` when it ends.
export function setupCanvas(canvas, changed, finished) {
  const pen = canvas.getContext("2d");
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
    stroke(pen, last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const next = point(event);
    stroke(pen, last, next);
    last = next;
    changed();
  });
  const finish = () => {
    if (!drawing) return;
    drawing = false;
    finished();
  };
  canvas.addEventListener("pointerup", finish);
  canvas.addEventListener("pointercancel", finish);
  clearCanvas(canvas);
}

function stroke(pen, from, to) {
  // Strokes about as thick, relative to the digit, as MNIST's pen.
  pen.lineWidth = pen.canvas.width / 13;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.strokeStyle = "#fff";
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
}

export function clearCanvas(canvas) {
  const pen = canvas.getContext("2d");
  pen.fillStyle = "#000";
  pen.fillRect(0, 0, canvas.width, canvas.height);
}

// The drawing cropped to its bounding box, scaled to fit DIGIT_BOX of the image and placed so
// that its centre of mass is the image's centre: how MNIST itself was made. null: no ink.
export function centredDigit(canvas, width, height) {
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
