// The page's only door to the gateway: JSON calls under /v1, errors turned into sentences a
// person can act on, media URLs that work with or without an API key, and a job's event stream.

const KEY_STORAGE = "spacetime.apiKey";

export function getApiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

function authHeaders() {
  const key = getApiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// One error type for everything the gateway (or the network) can say no with.
// status 0 means the request never got an HTTP answer.
export class ApiError extends Error {
  constructor({ status = 0, code = null, type = null, param = null, message = "", retryAfterS = null }) {
    super(message || `HTTP ${status}`);
    Object.assign(this, { status, code, type, param, retryAfterS });
  }
}

async function errorFrom(resp) {
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // not JSON (a proxy's HTML page, an empty body): the status line is all we have
  }
  const e = (body && body.error) || {};
  let message = e.message;
  // FastAPI's own validation shape, in case a route answers before the gateway reshapes it
  if (!message && body && Array.isArray(body.detail)) message = body.detail.map((d) => d.msg).join("; ");
  if (!message && body && typeof body.detail === "string") message = body.detail;
  const retry = resp.headers.get("Retry-After");
  return new ApiError({
    status: resp.status,
    code: e.code || null,
    type: e.type || null,
    param: e.param || null,
    message: message || resp.statusText || `HTTP ${resp.status}`,
    retryAfterS: retry !== null && retry !== "" && !Number.isNaN(Number(retry)) ? Number(retry) : null,
  });
}

async function request(method, path, { json, query } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null) url.searchParams.set(k, v);
  const headers = { Accept: "application/json", ...authHeaders() };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(url, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  } catch {
    throw new ApiError({ status: 0, code: "network_error", message: "Cannot reach the server." });
  }
  if (!resp.ok) throw await errorFrom(resp);
  if (resp.status === 204) return null;
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

const videoPath = (id) => `/v1/videos/${encodeURIComponent(id)}`;

export const api = {
  models: () => request("GET", "/v1/models"),
  create: (body) => request("POST", "/v1/videos", { json: body }),
  get: (id) => request("GET", videoPath(id)),
  list: ({ limit = 20, after, order = "desc" } = {}) => request("GET", "/v1/videos", { query: { limit, after, order } }),
  remove: (id) => request("DELETE", videoPath(id)),
  cancel: (id) => request("POST", `${videoPath(id)}/cancel`),
  remix: (id, body) => request("POST", `${videoPath(id)}/remix`, { json: body }),
  provenance: (id) => request("GET", `${videoPath(id)}/provenance`),
};

export function contentUrl(id, variant = "video") {
  return `${videoPath(id)}/content?variant=${variant}`;
}

// With no key the browser loads media straight from the content URL, so <video> streams with
// Range requests. <video>/<img> cannot send an Authorization header, so with a key we fetch the
// bytes ourselves and hand the element a blob: URL (clips are small; seeking still works).
export async function mediaSrc(id, variant = "video") {
  const url = contentUrl(id, variant);
  if (!getApiKey()) return url;
  let resp;
  try {
    resp = await fetch(url, { headers: authHeaders() });
  } catch {
    throw new ApiError({ status: 0, code: "network_error", message: "Cannot reach the server." });
  }
  if (!resp.ok) throw await errorFrom(resp);
  return URL.createObjectURL(await resp.blob());
}

// Says why a queued job is not moving, from /readyz (no auth): "" when a worker serves `model`.
export async function workerProblem(model) {
  let resp;
  try {
    resp = await fetch("/readyz", { headers: { Accept: "application/json" } });
  } catch {
    return "The server is unreachable.";
  }
  if (resp.status === 503) return "The job queue (Redis) is unreachable, so no worker can pick the job up.";
  if (!resp.ok) return "";
  const body = await resp.json();
  const m = body.models && body.models[model];
  return m && !m.ready ? `No worker is serving ${model} right now; the job waits in the queue until one starts.` : "";
}

// Turns any error into {title, message} for the page; every path a user can meet has words here.
export function describeError(err) {
  if (!(err instanceof ApiError)) return { title: "Something went wrong", message: String(err && err.message || err) };
  const msg = err.message;
  if (err.status === 0) return { title: "Server unreachable", message: `${msg} Check that Spacetime is running and reload the page.` };
  if (err.code === "content_policy_violation") return { title: "Prompt rejected by the content policy", message: msg };
  if (err.status === 429) {
    const wait = err.retryAfterS !== null ? ` Try again in ${err.retryAfterS} s.` : " Try again shortly.";
    const title = err.code === "too_many_active_jobs" ? "Too many videos at once" : "Rate limit reached";
    return { title, message: `${msg}${wait}` };
  }
  if (err.status === 401) return { title: "API key needed", message: `${msg} Paste a key under “API key” at the top of the page.` };
  if (err.status === 403) return { title: "Not allowed", message: msg };
  if (err.status === 404) return { title: "Not found", message: msg };
  if (err.status === 409) return { title: "Not possible in the video's current state", message: msg };
  if (err.status === 410) return { title: "Video expired", message: msg };
  if (err.status === 413) return { title: "Request too large", message: msg };
  if (err.status === 503) return { title: "Worker unavailable", message: `${msg} No worker can take this job right now; try again later.` };
  if (err.status >= 500) return { title: "Server error", message: msg };
  const where = err.param ? ` (field: ${err.param})` : "";
  return { title: "Request not accepted", message: `${msg}${where}` };
}

// Describes a failed job's error object ({code, message}) the same way.
export function describeJobError(error) {
  const code = (error && error.code) || "failed";
  const message = (error && error.message) || "The job failed without a message.";
  if (code === "content_policy_violation" || code === "output_blocked") {
    return { title: "Video withheld by the content policy", message };
  }
  if (code === "cancelled") return { title: "Cancelled", message };
  if (code === "deleted") return { title: "Deleted", message };
  if (code === "worker_lost") return { title: "Worker lost", message };
  return { title: `Generation failed (${code})`, message };
}

// Parses a text/event-stream body read with fetch (used when a key must be sent, since
// EventSource cannot send headers). Calls onEvent(name, data) per event; resolves at end of stream.
async function readEventStream(resp, onEvent, signal) {
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!signal.aborted) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // comment / keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") name = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

// Follows one job's events. onEvent(name, payload) gets each event with its JSON decoded;
// onBroken() is called if the stream cannot be (re)opened, so the caller can fall back to polling.
// Returns stop().
export function watchEvents(id, eventNames, onEvent, onBroken) {
  const url = `${videoPath(id)}/events`;
  const decode = (name, raw) => {
    let payload = raw;
    try {
      payload = JSON.parse(raw);
    } catch {
      // plain-text data: pass it through
    }
    onEvent(name, payload);
  };
  if (!getApiKey()) {
    const source = new EventSource(url);
    for (const name of ["message", ...eventNames]) source.addEventListener(name, (e) => decode(name, e.data));
    source.onerror = () => {
      // EventSource retries by itself on a dropped connection; CLOSED means it gave up (non-200)
      if (source.readyState === EventSource.CLOSED) onBroken();
    };
    return () => source.close();
  }
  const controller = new AbortController();
  fetch(url, { headers: { Accept: "text/event-stream", ...authHeaders() }, signal: controller.signal })
    .then((resp) => {
      if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
      return readEventStream(resp, decode, controller.signal);
    })
    .then(() => { if (!controller.signal.aborted) onBroken(); })
    .catch(() => { if (!controller.signal.aborted) onBroken(); });
  return () => controller.abort();
}
