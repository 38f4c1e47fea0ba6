// knsd's generator page: A1111's API (/sdapi/v1/*) from a plain script, relative URLs only, no library.
"use strict";

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The API's field names (as a 422 names them) -> the element that holds them.
const FIELD_ELEMENTS = {
  prompt: "prompt", negative_prompt: "negative-prompt", sampler_name: "sampler", sampler_index: "sampler",
  scheduler: "scheduler", steps: "steps", cfg_scale: "cfg-scale", width: "width", height: "height",
  seed: "seed", batch_size: "batch-size", n_iter: "n-iter", init_images: "init-image",
  denoising_strength: "denoising-strength", resize_mode: "resize-mode",
};
const SAVED = ["prompt", "negative-prompt", "sampler", "scheduler", "steps", "cfg-scale", "width", "height",
  "seed", "batch-size", "n-iter", "denoising-strength", "resize-mode"];
const STORAGE_KEY = "knsd.generator.v1";

const page = {
  mode: "txt2img", busy: false, watching: false, initImage: null, lastSeed: null, count: 0, abort: null,
};
const routes = new Set(
  (document.querySelector('meta[name="knsd-routes"]')?.content || "").split(",").filter(Boolean),
);

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function fillSelect(select, names, preferred) {
  const keep = select.value || preferred;
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  select.value = names.includes(keep) ? keep : names[0];
}

// --- start-up: what the server offers (each part may be missing; the page still works) ---

async function loadOptions() {
  const jobs = [
    getJSON("sdapi/v1/samplers").then((list) => fillSelect($("sampler"), list.map((s) => s.name), "Euler")),
    getJSON("sdapi/v1/schedulers").then((list) =>
      fillSelect($("scheduler"), list.map((s) => s.label || s.name), "Automatic")),
    loadModelName(),
  ];
  // The Lora extension's route; older servers answer 404, so ask only where the page says it exists.
  if (routes.has("/sdapi/v1/loras")) jobs.push(getJSON("sdapi/v1/loras").then(showLoras));
  await Promise.allSettled(jobs);
  restore();
}

function loadModelName() {
  return getJSON("sdapi/v1/sd-models").then((models) => {
    if (models.length) $("model").textContent = models[0].title;
  });
}

function showLoras(loras) {
  if (!Array.isArray(loras) || loras.length === 0) return;
  $("loras").replaceChildren(...loras.map((lora) => {
    const button = document.createElement("button");
    button.type = "button";
    const name = lora.alias || lora.name;
    button.textContent = name;
    button.title = `Add <lora:${name}:1> to the prompt`;
    button.addEventListener("click", () => {
      const prompt = $("prompt");
      prompt.value = `${prompt.value.trimEnd()}${prompt.value.trim() ? " " : ""}<lora:${name}:1>`;
      save();
    });
    return button;
  }));
  $("loras-panel").hidden = false;
}

function setState(state, text) {
  $("server-state").dataset.state = state;
  $("server-state").textContent = text;
}

// Until ready, ask every 2 s; then stop: a page left open must not keep a scale-to-zero service awake.
async function watchReadiness() {
  if (page.watching) return;
  page.watching = true;
  for (;;) {
    try {
      const response = await fetch("readyz", { credentials: "same-origin" });
      const body = await response.json().catch(() => ({}));
      if (response.ok) {
        setState("ready", "ready");
        page.watching = false;
        loadModelName().catch(() => {});
        return;
      }
      setState("loading", body.status || "not ready");
    } catch (error) {
      setState("down", "server unreachable");
    }
    await sleep(2000);
  }
}

// --- the form ---

function restore() {
  let saved = {};
  try { saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}"); } catch (error) { saved = {}; }
  for (const id of SAVED) if (id in saved) $(id).value = saved[id];
  syncSliders();
}

function save() {
  const values = Object.fromEntries(SAVED.map((id) => [id, $(id).value]));
  try { localStorage.setItem(STORAGE_KEY, JSON.stringify(values)); } catch (error) { /* private mode */ }
}

function syncSliders() {
  for (const range of document.querySelectorAll("input[type=range][data-for]")) range.value = $(range.dataset.for).value;
}

function number(id) {
  const raw = $(id).value.trim();
  const value = Number(raw);
  return raw === "" || Number.isNaN(value) ? raw : value; // the server names what is wrong with it
}

function request() {
  const body = {
    prompt: $("prompt").value, negative_prompt: $("negative-prompt").value,
    sampler_name: $("sampler").value, scheduler: $("scheduler").value,
    steps: number("steps"), cfg_scale: number("cfg-scale"), width: number("width"), height: number("height"),
    seed: number("seed"), batch_size: number("batch-size"), n_iter: number("n-iter"),
  };
  if (page.mode === "img2img") {
    body.init_images = page.initImage ? [page.initImage] : [];
    body.denoising_strength = number("denoising-strength");
    body.resize_mode = number("resize-mode");
  }
  return body;
}

function setMode(mode) {
  page.mode = mode;
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  }
  $("img2img-fields").hidden = mode !== "img2img";
  clearErrors();
}

function setInitImage(dataURL) {
  page.initImage = dataURL;
  $("init-preview").src = dataURL;
  $("init-preview").hidden = false;
  $("drop-text").hidden = true;
  markField("init-image", null);
}

function readFile(file) {
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => setInitImage(String(reader.result));
  reader.readAsDataURL(file);
}

// --- errors beside the fields they name ---

function markField(id, message) {
  const field = document.querySelector(`.field[data-field="${id}"]`);
  if (!field) return false;
  field.classList.toggle("invalid", Boolean(message));
  const slot = $(`error-${id}`);
  if (slot) slot.textContent = message || "";
  return true;
}

function clearErrors() {
  for (const field of document.querySelectorAll(".field.invalid")) markField(field.dataset.field, null);
  $("error").hidden = true;
  $("error").textContent = "";
}

function banner(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function showError(status, body) {
  const detail = (body && (body.detail || body.errors)) || `HTTP ${status}`;
  if (status === 422 && body && body.field) {
    const id = FIELD_ELEMENTS[body.field];
    if (id && markField(id, detail)) {
      if (id === "init-image" && page.mode !== "img2img") setMode("img2img");
      $(id).focus();
      return;
    }
  }
  if (status === 401) banner(`Not signed in: ${detail}. Reload the page to enter your user name and password.`);
  else if (status === 503) banner(`The service is busy or starting: ${detail}. Try again in a moment.`);
  else banner(`Error ${status}: ${detail}`);
}

// --- generation, progress and the gallery ---

function showProgress(value, text) {
  const percent = Math.max(0, Math.min(100, Math.round(value * 1000) / 10));
  const bar = $("progress");
  bar.value = percent;
  bar.setAttribute("aria-valuenow", String(percent));
  $("progress-text").textContent = text;
}

function progressText(p) {
  const s = p.state || {};
  if (!s.job_count) return "Waiting for the pipeline…";
  const parts = [`Step ${s.sampling_step} / ${s.sampling_steps}`];
  if (s.job_count > 1) parts.push(`batch ${Math.min(s.job_no + 1, s.job_count)} of ${s.job_count}`);
  if (p.eta_relative > 0) parts.push(`ETA ${p.eta_relative.toFixed(1)} s`);
  return parts.join(" · ");
}

function showPreview(image) {
  $("preview").src = `data:image/png;base64,${image}`;
  $("preview-panel").hidden = false;
}

// The answer as server-sent events (one request: progress and previews come on it, through any route):
// `progress` (the JSON of /sdapi/v1/progress), then `result` (the usual body) or `error` (with `status`).
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // a comment: the stream's keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

function slug(text) {
  return text.toLowerCase().replace(/<[^>]*>/g, "").replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
}

function addCard(image, infotext, seed, body) {
  page.count += 1;
  const url = `data:image/png;base64,${image}`;
  const name = `${String(page.count).padStart(5, "0")}-${seed}${body.prompt ? "-" + slug(body.prompt) : ""}.png`;
  const card = document.createElement("figure");
  card.className = "card";
  card.dataset.seed = String(seed);
  const thumb = document.createElement("a");
  thumb.className = "thumb";
  thumb.href = url;
  const img = document.createElement("img");
  img.src = url;
  img.alt = infotext;
  img.addEventListener("load", () => img.classList.toggle("small", img.naturalWidth < 200));
  thumb.append(img);
  thumb.addEventListener("click", (event) => {
    event.preventDefault();
    $("lightbox-image").src = url;
    $("lightbox-image").classList.toggle("small", img.naturalWidth < 256);
    $("lightbox-text").textContent = infotext;
    $("lightbox").showModal();
  });
  const caption = document.createElement("figcaption");
  const text = document.createElement("pre");
  text.className = "infotext";
  text.textContent = infotext;
  const actions = document.createElement("div");
  actions.className = "card-actions";
  const download = document.createElement("a");
  download.className = "download";
  download.href = url;
  download.download = name;
  download.textContent = "Download";
  actions.append(download,
    action("Use seed", () => { $("seed").value = String(seed); save(); }),
    action("Copy", () => navigator.clipboard?.writeText(infotext)),
    action("To img2img", () => { setInitImage(url); setMode("img2img"); }));
  caption.append(text, actions);
  card.append(thumb, caption);
  return card;
}

function action(label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", onClick);
  return button;
}

function showResult(body, result) {
  let info = {};
  try { info = JSON.parse(result.info || "{}"); } catch (error) { info = {}; }
  const texts = info.infotexts || [];
  const seeds = info.all_seeds || [];
  const cards = (result.images || []).map((image, i) =>
    addCard(image, texts[i] || result.parameters?.prompt || "", seeds[i] ?? info.seed ?? "", body));
  $("empty")?.remove();
  $("gallery").prepend(...cards);
  if (seeds.length) page.lastSeed = seeds[0];
}

async function generate() {
  if (page.busy) return;
  clearErrors();
  save();
  const body = request();
  if (page.mode === "img2img" && !page.initImage) {
    markField("init-image", "Choose an initial image for img2img.");
    return;
  }
  page.busy = true;
  $("generate").disabled = true;
  $("generate").textContent = "Generating…";
  $("interrupt").disabled = false;
  setState("busy", "generating");
  showProgress(0, "Sending…");
  $("preview-panel").hidden = true;
  const started = performance.now();
  page.abort = new AbortController();
  let done = "Idle";
  try {
    const response = await fetch(`sdapi/v1/${page.mode}`, {
      method: "POST", credentials: "same-origin", signal: page.abort.signal,
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
    let status = response.status;
    let result = null;
    if ((response.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
      showProgress(0, "Waiting for the pipeline…");
      await readEvents(response, (name, data) => {
        if (name === "progress") {
          showProgress(data.progress || 0, progressText(data));
          if (data.current_image) showPreview(data.current_image);
        } else if (name === "result") {
          result = data;
        } else if (name === "error") {
          status = data.status || 500;
          result = data;
        }
      });
    } else {
      result = await response.json().catch(() => null); // refused before it started: a plain error
    }
    if (status === 200 && result) {
      showResult(body, result);
      const images = (result.images || []).length;
      done = `Done: ${images} image${images === 1 ? "" : "s"} in ${((performance.now() - started) / 1000).toFixed(1)} s`;
    } else {
      showError(status, result);
      done = `Failed (HTTP ${status})`;
    }
  } catch (error) {
    if (error.name === "AbortError") done = "Interrupted";
    else {
      banner(`Could not reach the server: ${error.message}`);
      done = "Failed";
    }
  } finally {
    $("preview-panel").hidden = true; // the gallery has the image now (or nothing came)
    page.abort = null;
    page.busy = false;
    $("generate").disabled = false;
    $("generate").textContent = "Generate";
    $("interrupt").disabled = true;
    showProgress(done.startsWith("Done") ? 1 : 0, done);
    if (done.startsWith("Done") || done === "Interrupted") setState("ready", "ready");
    else watchReadiness();
  }
}

// --- wiring ---

function wire() {
  $("form").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) { event.preventDefault(); generate(); }
  });
  // Interrupt ends the request: the server stops its work at the next step and frees the slot. (A second
  // request, POST /sdapi/v1/interrupt, would wait behind the generation at containerConcurrency 1.)
  $("interrupt").addEventListener("click", () => page.abort?.abort());
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    tab.addEventListener("click", () => setMode(tab.dataset.mode));
  }
  for (const range of document.querySelectorAll("input[type=range][data-for]")) {
    range.addEventListener("input", () => { $(range.dataset.for).value = range.value; save(); });
  }
  $("form").addEventListener("input", (event) => {
    const field = event.target.closest(".field");
    if (field) markField(field.dataset.field, null);
    if (event.target.type !== "range") syncSliders();
    save();
  });
  $("swap-size").addEventListener("click", () => {
    [$("width").value, $("height").value] = [$("height").value, $("width").value];
    save();
  });
  $("random-seed").addEventListener("click", () => { $("seed").value = "-1"; save(); });
  $("reuse-seed").addEventListener("click", () => {
    if (page.lastSeed !== null) { $("seed").value = String(page.lastSeed); save(); }
  });
  $("init-image").addEventListener("change", (event) => readFile(event.target.files[0]));
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    readFile(event.dataTransfer.files[0]);
  });
}

wire();
loadOptions();
watchReadiness();
