// The page: a prompt form filled from GET /v1/models, one job panel that follows a job's event
// stream to the finished video, and the gallery. Plain ES modules, no build step.

import {
  api, contentUrl, mediaSrc, describeError, describeJobError, watchEvents, workerProblem, getApiKey, setApiKey,
} from "./api.js";
import { createGallery } from "./gallery.js";

const $ = (id) => document.getElementById(id);
const TERMINAL = new Set(["completed", "failed"]); // a cancelled job is failed with code "cancelled"
const POLL_MS = 1000;
const WORKER_CHECK_MS = 3000; // how often a queued job asks /readyz whether any worker serves its model

let models = []; // normalised /v1/models entries (see normaliseModel)
let current = null; // {video, stop, cancelling, workerProblem} for the job in the panel
let playerBlob = null; // the blob: URL the player holds with an API key, revoked when replaced

// ---------------------------------------------------------------- errors

function showError(box, { title, message }) {
  box.replaceChildren();
  const strong = document.createElement("strong");
  strong.textContent = title;
  const p = document.createElement("p");
  p.textContent = message;
  box.append(strong, p);
  box.hidden = false;
}

// An empty prompt box: marked invalid, said in `box` and focused; the caller sends nothing.
function refuseEmptyPrompt(field, box, message) {
  field.setAttribute("aria-invalid", "true");
  showError(box, { title: "Write a prompt first", message });
  field.focus();
}

function clearError(box) {
  box.hidden = true;
  box.replaceChildren();
  for (const el of document.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// ---------------------------------------------------------------- the form

// GET /v1/models entries carry sizes, seconds and default_* fields (service/schemas.py ModelPublic).
function normaliseModel(m) {
  return {
    id: m.id,
    sizes: m.sizes || [],
    seconds: (m.seconds || []).map(String),
    size: m.default_size,
    secondsDefault: String(m.default_seconds ?? ""),
    steps: m.default_steps,
    guidance: m.default_guidance,
    maxSteps: m.max_steps,
    qualities: m.qualities && m.qualities.length ? m.qualities : ["exact"],
    remix: m.remix !== false,
    remixStrength: m.remix_strength ?? 0.6,
    description: m.description || "",
  };
}

const QUALITY_LABELS = { exact: "Exact", fast: "Fast" };

function fillOptions(select, values, chosen, label = (v) => v) {
  select.replaceChildren(...values.map((v) => {
    const o = document.createElement("option");
    o.value = v;
    o.textContent = label(v);
    o.selected = v === chosen;
    return o;
  }));
}

function applyModel(id) {
  const m = models.find((x) => x.id === id) || models[0];
  if (!m) return;
  fillOptions($("size"), m.sizes, m.size, (s) => s.replace("x", " × "));
  fillOptions($("seconds"), m.seconds, m.secondsDefault, (s) => `${s} s`);
  const chosen = m.qualities.includes($("quality").value) ? $("quality").value : "exact";
  fillOptions($("quality"), m.qualities, chosen, (q) => QUALITY_LABELS[q] || q);
  $("quality").disabled = m.qualities.length < 2;
  $("steps").placeholder = m.steps != null ? `default ${m.steps}` : "model default";
  $("guidance").placeholder = m.guidance != null ? `default ${m.guidance}` : "model default";
  if (m.maxSteps) $("steps").max = m.maxSteps;
  $("model-help").textContent = m.description;
}

async function loadModels() {
  try {
    const body = await api.models();
    models = (body.data || []).map(normaliseModel);
    fillOptions($("model"), models.map((m) => m.id), models[0] && models[0].id);
    applyModel($("model").value);
  } catch (err) {
    showError($("error"), describeError(err));
  }
}

function readForm() {
  const body = {
    prompt: $("prompt").value.trim(),
    model: $("model").value || undefined,
    size: $("size").value || undefined,
    seconds: $("seconds").value || undefined,
  };
  const num = (el) => (el.value.trim() === "" ? undefined : Number(el.value));
  body.seed = num($("seed"));
  body.num_inference_steps = num($("steps"));
  body.guidance_scale = num($("guidance"));
  if ($("negative").value.trim()) body.negative_prompt = $("negative").value.trim();
  if ($("quality").value && $("quality").value !== "exact") body.quality = $("quality").value;
  return body;
}

function fillForm(video) {
  $("prompt").value = video.prompt || "";
  if (models.some((m) => m.id === video.model)) {
    $("model").value = video.model;
    applyModel(video.model);
  }
  $("size").value = video.size;
  $("seconds").value = String(video.seconds);
  $("seed").value = video.seed ?? "";
  $("steps").value = video.num_inference_steps ?? "";
  $("guidance").value = video.guidance_scale ?? "";
  $("negative").value = video.negative_prompt || "";
  const quality = video.quality || "exact";
  if ([...$("quality").options].some((o) => o.value === quality)) $("quality").value = quality;
}

// A 429 disables the button for Retry-After seconds, counting down on the button itself.
function holdSubmit(seconds) {
  const button = $("submit");
  let left = Math.max(1, Math.ceil(seconds));
  button.disabled = true;
  const tick = () => {
    if (left <= 0) {
      button.disabled = false;
      button.textContent = "Generate";
      return;
    }
    button.textContent = `Wait ${left} s`;
    left -= 1;
    setTimeout(tick, 1000);
  };
  tick();
}

async function submit() {
  const error = $("error");
  clearError(error);
  const body = readForm();
  if (!body.prompt) {
    refuseEmptyPrompt($("prompt"), error, "The prompt box is empty.");
    return;
  }
  const button = $("submit");
  button.disabled = true;
  button.textContent = "Submitting…";
  try {
    const video = await api.create(body);
    button.disabled = false;
    button.textContent = "Generate";
    openJob(video);
    gallery.reload();
  } catch (err) {
    button.disabled = false;
    button.textContent = "Generate";
    showError(error, describeError(err));
    const field = err.param && document.querySelector(`#create-form [name="${CSS.escape(err.param)}"]`);
    if (field) {
      field.setAttribute("aria-invalid", "true");
      if (field.closest("#advanced")) $("advanced").open = true;
    }
    if (err.status === 429) holdSubmit(err.retryAfterS ?? 5);
  }
}

// ---------------------------------------------------------------- the job panel

function statusLine(video) {
  const pct = Math.round(video.progress || 0);
  switch (video.status) {
    case "queued":
      return video.queue_position != null
        ? `Queued: position ${video.queue_position + 1} in line.` // the API counts from 0 = next
        : "Queued, waiting for a worker.";
    // the live region changes in 10 % steps so a screen reader is not flooded every step
    case "in_progress": return `Generating: ${Math.floor(pct / 10) * 10}% done.`;
    case "completed": return "Done. The video is ready.";
    case "failed": return video.error && video.error.code === "cancelled" ? "Cancelled." : "Failed.";
    default: return video.status;
  }
}

// While a job is queued, ask now and then whether any worker serves its model, and say so if not.
function checkWorkers(video) {
  if (!current || video.status !== "queued" || Date.now() - (current.workerCheckedAt || 0) < WORKER_CHECK_MS) return;
  current.workerCheckedAt = Date.now();
  workerProblem(video.model).then((problem) => {
    if (!current || current.video.id !== video.id || current.workerProblem === problem) return;
    current.workerProblem = problem;
    render(current.video);
  });
}

function render(video) {
  $("job").dataset.status = video.status;
  const problem = video.status === "queued" && current && current.workerProblem;
  $("job-status").textContent = problem ? `${statusLine(video)} ${problem}` : statusLine(video);
  $("job").classList.toggle("stalled", Boolean(problem));
  checkWorkers(video);
  const pct = video.status === "completed" ? 100 : Math.round(video.progress || 0);
  $("job-progress").value = pct;
  $("job-percent").textContent = `${pct}%`;
  $("job-progress-row").hidden = TERMINAL.has(video.status);
  $("cancel").disabled = Boolean(current && current.cancelling);
  const bits = [video.model, video.size, video.seconds && `${video.seconds} s`, video.seed != null && `seed ${video.seed}`,
    video.quality === "fast" && "fast",
    video.remixed_from_video_id && `remix of ${video.remixed_from_video_id} at ${Math.round(video.strength * 100)}% change`];
  $("job-meta").textContent = bits.filter(Boolean).join(" · ");
  if (video.status === "failed") showError($("job-error"), describeJobError(video.error));
}

function releasePlayer() {
  $("player").removeAttribute("src");
  if (playerBlob) URL.revokeObjectURL(playerBlob);
  playerBlob = null;
}

async function showResult(video) {
  const player = $("player");
  const download = $("download");
  try {
    const src = await mediaSrc(video.id, "video");
    if (!current || current.video.id !== video.id) { // the user opened another job meanwhile
      if (src.startsWith("blob:")) URL.revokeObjectURL(src);
      return;
    }
    releasePlayer();
    if (src.startsWith("blob:")) playerBlob = src;
    player.src = src;
    download.href = getApiKey() ? src : contentUrl(video.id, "video");
    download.setAttribute("download", `${video.id}.mp4`);
    showRemixForm(video);
    $("result").hidden = false;
  } catch (err) {
    showError($("job-error"), describeError(err));
    return;
  }
  const badge = $("provenance");
  badge.hidden = true;
  try {
    showProvenance(badge, await api.provenance(video.id));
  } catch {
    // 404: this video has no provenance record (or the gateway has no such route): show nothing
  }
}

// ---------------------------------------------------------------- remix

function showStrength() {
  $("remix-strength-value").textContent = `${Math.round(Number($("remix-strength").value) * 100)}%`;
}

// The remix form under a finished video: shown when its model can remix, at the model's strength.
function showRemixForm(video) {
  const m = models.find((x) => x.id === video.model);
  $("remix-form").hidden = Boolean(m && !m.remix);
  $("remix-strength").value = String(m ? m.remixStrength : 0.6);
  showStrength();
}

async function submitRemix() {
  const box = $("job-error");
  clearError(box);
  const prompt = $("remix-prompt").value.trim();
  if (!prompt) {
    refuseEmptyPrompt($("remix-prompt"), box, "The remix prompt box is empty.");
    return;
  }
  const button = $("remix-submit");
  button.disabled = true;
  try {
    const video = await api.remix(current.video.id, { prompt, strength: Number($("remix-strength").value) });
    $("remix-prompt").value = "";
    openJob(video);
    gallery.reload();
  } catch (err) {
    showError(box, describeError(err));
    if (err.param === "prompt") $("remix-prompt").setAttribute("aria-invalid", "true");
  } finally {
    button.disabled = false;
  }
}

// The provenance record is `spacetime verify`'s JSON (workers/provenance.py): state valid |
// trusted | invalid, a reason, and the manifest summary whose signature names the signer.
function showProvenance(badge, p) {
  const sig = (p.manifest && p.manifest.signature) || {};
  const signer = sig.common_name || sig.issuer || p.signer || "unknown signer";
  const ok = p.state === "valid" || p.state === "trusted";
  const trust = p.state === "trusted" ? " (trusted signer)" : "";
  badge.textContent = ok ? `C2PA valid${trust} · signed by ${signer}` : "C2PA manifest invalid";
  badge.title = [p.reason, p.manifest && p.manifest.claim_generator, sig.time].filter(Boolean).join(" · ");
  badge.className = `badge ${ok ? "ok" : "bad"}`;
  badge.hidden = false;
}

// Merges one event's payload into the job record; the gateway's events carry the job's fields.
function onEvent(name, payload) {
  if (!current || typeof payload !== "object" || payload === null) return;
  // which feed is driving the panel (the browser tests check the stream, not just the fallback)
  if (name === "poll") $("job").dataset.feed = "poll";
  else if (name !== "cancel" && $("job").dataset.feed !== "poll") $("job").dataset.feed = "events";
  const v = { ...current.video, ...payload };
  if (!payload.status && TERMINAL.has(name)) v.status = name;
  if (payload.id && payload.id !== current.video.id) return;
  current.video = v;
  render(v);
  if (TERMINAL.has(v.status)) finish();
}

async function finish() {
  const id = current.video.id;
  current.stop();
  try {
    current.video = await api.get(id); // the full record: error, seed, completed_at
  } catch {
    // keep what the events said
  }
  if (!current || current.video.id !== id) return;
  render(current.video);
  if (current.video.status === "completed") await showResult(current.video);
  gallery.reload();
}

// Polls the job when the event stream is unavailable (a proxy that buffers, an old gateway).
function poll(id) {
  let timer = null;
  const tick = async () => {
    try {
      onEvent("poll", await api.get(id));
    } catch (err) {
      showError($("job-error"), describeError(err));
      return;
    }
    if (current && current.video.id === id && !TERMINAL.has(current.video.status)) timer = setTimeout(tick, POLL_MS);
  };
  timer = setTimeout(tick, POLL_MS);
  return () => clearTimeout(timer);
}

// The page's address names the job on show (/#video_…), so a link reopens it (for the same key).
function showInAddress(id) {
  history.replaceState(null, "", id ? `#${encodeURIComponent(id)}` : location.pathname);
}

async function copyLink() {
  try {
    await navigator.clipboard.writeText(location.href);
    $("share-status").textContent = "Link copied.";
  } catch {
    $("share-status").textContent = `Copy this link: ${location.href}`;
  }
}

function openJob(video) {
  if (current) current.stop();
  current = { video, stop: () => {} };
  showInAddress(video.id);
  $("share-status").textContent = "";
  $("job").dataset.jobId = video.id;
  delete $("job").dataset.feed;
  $("job").hidden = false;
  $("result").hidden = true;
  releasePlayer();
  $("provenance").hidden = true;
  clearError($("job-error"));
  $("job-prompt").textContent = video.prompt || "";
  render(video);
  if (video.status === "completed") {
    showResult(video);
  } else if (!TERMINAL.has(video.status)) {
    let stopPoll = () => {};
    const stopEvents = watchEvents(
      // the gateway's event names (service/routers/videos.py); each event's data is the video object
      video.id, ["queued", "in_progress", "progress", "completed", "failed"],
      onEvent,
      () => { stopPoll = poll(video.id); },
    );
    current.stop = () => { stopEvents(); stopPoll(); };
  }
  $("job").scrollIntoView({ block: "nearest" });
}

async function cancel() {
  if (!current) return;
  $("cancel").disabled = true;
  current.cancelling = true; // a running job stops at its next step; keep the button off till then
  try {
    onEvent("cancel", await api.cancel(current.video.id));
  } catch (err) {
    current.cancelling = false;
    $("cancel").disabled = false;
    showError($("job-error"), describeError(err));
  }
}

// ---------------------------------------------------------------- wiring

const gallery = createGallery({
  list: $("gallery"),
  moreButton: $("more"),
  status: $("gallery-status"),
  onOpen: (video) => api.get(video.id).then(openJob, (err) => showError($("error"), describeError(err))),
  onDeleted: (id) => {
    if (current && current.video.id === id) {
      current.stop();
      current = null;
      releasePlayer();
      showInAddress(null);
      $("job").hidden = true;
    }
  },
});

$("create-form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
});
$("model").addEventListener("change", (e) => applyModel(e.target.value));
$("cancel").addEventListener("click", cancel);
$("refresh").addEventListener("click", () => gallery.reload());
$("copy-link").addEventListener("click", copyLink);
$("again").addEventListener("click", () => { fillForm(current.video); submit(); });
$("edit").addEventListener("click", () => {
  fillForm(current.video);
  $("prompt").focus();
  $("prompt").select();
});

$("api-key").value = getApiKey();
$("remix-form").addEventListener("submit", (e) => { e.preventDefault(); submitRemix(); });
$("remix-strength").addEventListener("input", showStrength);

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  setApiKey($("api-key").value.trim());
  $("key-box").open = false;
  clearError($("error"));
  loadModels();
  gallery.reload();
});
$("key-clear").addEventListener("click", () => {
  setApiKey("");
  $("api-key").value = "";
});

// A link to a job (/#video_…) opens it.
function openFromAddress() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (!id || (current && current.video.id === id)) return Promise.resolve();
  return api.get(id).then(openJob, (err) => {
    showInAddress(null);
    showError($("error"), describeError(err));
  });
}
window.addEventListener("hashchange", openFromAddress);

document.documentElement.dataset.ready = "loading";
Promise.all([loadModels(), gallery.reload(), openFromAddress()])
  .then(() => { document.documentElement.dataset.ready = "true"; });
