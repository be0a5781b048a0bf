"use strict";
// The demo page: send the chosen image to POST /predict and draw what comes back over it.

const fileInput = document.getElementById("file");
const drop = document.getElementById("drop");
const slider = document.getElementById("min-confidence");
const sliderValue = document.getElementById("min-confidence-value");
const statusLine = document.getElementById("status");
const errorLine = document.getElementById("error");
const stage = document.getElementById("stage");
const photo = document.getElementById("photo");
const boxes = document.getElementById("boxes");
const faceList = document.getElementById("faces");
const rawJson = document.getElementById("json");

let currentFile = null;
let photoUrl = null;
let latestRequest = 0;
let sliderTimer = null;
let photoBroken = false;
const UNDISPLAYABLE = "This browser cannot display the image; the faces are listed below.";

const percent = (p) => `${Math.round(100 * p)}%`;

function setState(state, message) {
  document.body.dataset.state = state;
  statusLine.textContent = message;
}

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = false;
}

function clearResult() {
  boxes.replaceChildren();
  faceList.replaceChildren();
  errorLine.hidden = true;
}

function faceBox(face, image) {
  // Percentages of the upright image, so the boxes follow the displayed size of the photo.
  const { x, y, width, height } = face.box;
  const div = document.createElement("div");
  div.className = `box ${face.label}`;
  div.style.left = `${(100 * x) / image.width}%`;
  div.style.top = `${(100 * y) / image.height}%`;
  div.style.width = `${(100 * width) / image.width}%`;
  div.style.height = `${(100 * height) / image.height}%`;
  if (y < image.height * 0.08) div.classList.add("below");
  const tag = document.createElement("span");
  tag.textContent = `${face.label} · F ${percent(face.gender.female)} · M ${percent(face.gender.male)}`;
  div.append(tag);
  return div;
}

function faceItem(face) {
  const item = document.createElement("li");
  const { x, y, width, height } = face.box;
  item.textContent =
    `${face.label}: female ${face.gender.female.toFixed(3)}, male ${face.gender.male.toFixed(3)} ` +
    `(box ${width}x${height} at ${x},${y}; detection score ${face.detection_score.toFixed(2)})`;
  return item;
}

function render(body) {
  boxes.replaceChildren(...body.faces.map((face) => faceBox(face, body.image)));
  faceList.replaceChildren(...body.faces.map(faceItem));
  const count = body.faces.length;
  const found = count === 0 ? "No face found" : `${count} face${count === 1 ? "" : "s"}`;
  setState("done", `${found} in ${body.image.width}x${body.image.height} pixels (${body.timings_ms.total} ms on the server).`);
}

async function predict() {
  if (!currentFile) return;
  const request = ++latestRequest;
  setState("loading", `Sending ${currentFile.name}…`);
  const form = new FormData();
  form.append("image", currentFile);
  let response;
  let body;
  try {
    response = await fetch(`/predict?min_confidence=${slider.value}`, { method: "POST", body: form });
    body = await response.json();
  } catch (err) {
    if (request !== latestRequest) return;
    clearResult();
    rawJson.textContent = "";
    setState("error", "No usable answer from the service.");
    showError(`The request failed or its answer was not JSON: ${err.message}`);
    return;
  }
  if (request !== latestRequest) return; // a newer request (another file or slider value) supersedes this one
  rawJson.textContent = JSON.stringify(body, null, 2);
  clearResult();
  if (!response.ok) {
    stage.hidden = true;
    setState("error", `The service refused ${currentFile.name} (HTTP ${response.status}).`);
    showError(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    return;
  }
  stage.hidden = false;
  render(body);
  if (photoBroken) showError(UNDISPLAYABLE);
}

function choose(file) {
  if (!file) return;
  currentFile = file;
  if (photoUrl) URL.revokeObjectURL(photoUrl);
  photoUrl = URL.createObjectURL(file);
  photoBroken = false;
  photo.src = photoUrl;
  predict();
}

photo.addEventListener("error", () => {
  photoBroken = true;
  if (!stage.hidden && document.body.dataset.state === "done") showError(UNDISPLAYABLE);
});
fileInput.addEventListener("change", () => choose(fileInput.files[0]));
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
slider.addEventListener("input", () => {
  sliderValue.textContent = Number(slider.value).toFixed(2);
  // The service applies min_confidence, so the labels on the page are exactly what /predict returns.
  clearTimeout(sliderTimer);
  sliderTimer = setTimeout(predict, 200);
});
setState("idle", "No image yet.");
