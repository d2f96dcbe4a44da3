// The agent page: shows the run, a recorded greedy episode, and the Q-values of an
// observation typed as JSON (POST /act).
"use strict";

const $ = (id) => document.getElementById(id);

async function showInfo() {
  const info = await (await fetch("/info")).json();
  const score = Number.isFinite(info.eval_return_mean)
    ? `, evaluation return ${info.eval_return_mean.toFixed(1)}` : "";
  $("model").textContent = `${info.algo.toUpperCase()} agent on ${info.env} ` +
    `(observations ${JSON.stringify(info.obs_shape)}, ${info.actions} actions; ` +
    `step ${info.step.toLocaleString()}${score})`;
  $("observation").value = JSON.stringify(new Array(info.obs_shape.reduce((a, b) => a * b, 1)).fill(0));
}

function showEpisode() {
  const image = $("episode");
  image.onload = () => { $("episode-caption").textContent = "the agent's greedy policy, one episode"; };
  image.onerror = async () => {
    const reply = await fetch("/episode.gif");
    const detail = reply.ok ? "" : (await reply.json()).detail;
    $("episode-caption").textContent = `no recording: ${detail || "the environment cannot render"}`;
  };
  image.src = "/episode.gif";
}

async function act() {
  const error = $("error");
  error.hidden = true;
  let observation;
  try {
    observation = JSON.parse($("observation").value);
  } catch (problem) {
    error.textContent = `not JSON: ${problem.message}`;
    error.hidden = false;
    return;
  }
  const reply = await fetch("/act", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ observation }),
  });
  const body = await reply.json();
  if (!reply.ok) {
    error.textContent = body.detail;
    error.hidden = false;
    return;
  }
  const rows = body.q_values[0].map((value, action) => {
    const row = document.createElement("tr");
    if (action === body.actions[0]) row.className = "chosen";
    for (const text of [String(action), value.toFixed(3)]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  $("q-values").tBodies[0].replaceChildren(...rows);
  $("q-values").hidden = false;
}

$("act").addEventListener("click", act);
showInfo();
showEpisode();
