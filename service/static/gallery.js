// The gallery of past jobs: newest first, paged with the list's `after` cursor, each card opens
// its job in the job panel or deletes it (two clicks, so a slip of the finger loses nothing).

import { api, mediaSrc, describeError } from "./api.js";

const PAGE_SIZE = 8;
const CONFIRM_MS = 5000;

export function createGallery({ list, moreButton, status, onOpen, onDeleted }) {
  let lastId = null;
  let generation = 0; // bumped by each reload, so an older page's answer never lands on a newer list
  let blobs = []; // thumbnails fetched with an API key (blob: URLs), revoked when the list is rebuilt

  function say(text) {
    status.textContent = text;
  }

  // what a tile says about its job: a cancelled job is `failed` with error code "cancelled"
  function statusOf(video) {
    if (video.status === "failed" && video.error && video.error.code === "cancelled") return "cancelled";
    return video.status.replace("_", " ");
  }

  function card(video) {
    const li = document.createElement("li");
    li.className = "tile";
    li.dataset.id = video.id;
    li.dataset.status = video.status;
    const prompt = video.prompt || "(no prompt)";

    const open = document.createElement("button");
    open.type = "button";
    open.className = "thumb";
    open.setAttribute("aria-label", `Open video: ${prompt}`);
    if (video.status === "completed") {
      const img = document.createElement("img");
      img.alt = "";
      img.width = 160;
      img.height = 160;
      img.loading = "lazy";
      mediaSrc(video.id, "thumbnail").then((src) => {
        if (src.startsWith("blob:")) blobs.push(src);
        img.src = src;
      }, () => img.remove());
      open.append(img);
    } else {
      const badge = document.createElement("span");
      badge.className = `pill ${video.status}`;
      badge.textContent = statusOf(video);
      open.append(badge);
    }
    open.addEventListener("click", () => onOpen(video));

    const caption = document.createElement("p");
    caption.className = "caption";
    caption.textContent = prompt;

    const meta = document.createElement("p");
    meta.className = "meta";
    meta.textContent = [statusOf(video), video.size, video.seconds && `${video.seconds} s`]
      .filter(Boolean).join(" · ");

    const del = document.createElement("button");
    del.type = "button";
    del.className = "danger small delete";
    del.textContent = "Delete";
    del.setAttribute("aria-label", `Delete video: ${prompt}`);
    let armed = null;
    del.addEventListener("click", async () => {
      if (!armed) {
        del.textContent = "Confirm delete";
        del.setAttribute("aria-label", `Confirm delete of video: ${prompt}`);
        armed = setTimeout(() => {
          armed = null;
          del.textContent = "Delete";
          del.setAttribute("aria-label", `Delete video: ${prompt}`);
        }, CONFIRM_MS);
        return;
      }
      clearTimeout(armed);
      del.disabled = true;
      try {
        await api.remove(video.id);
      } catch (err) {
        if (err.status !== 404) { // already gone is as good as deleted
          const { title, message } = describeError(err);
          say(`${title}: ${message}`);
          del.disabled = false;
          return;
        }
      }
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      say("Video deleted.");
      onDeleted(video.id);
      // keep keyboard focus somewhere sensible instead of dropping it on <body>
      const target = next && next.querySelector(".delete");
      if (target) target.focus();
      if (!list.children.length) say("No videos yet.");
    });

    li.append(open, caption, meta, del);
    return li;
  }

  async function load({ append }) {
    if (!append) generation += 1;
    const mine = generation;
    say(append ? "Loading more…" : "Loading…");
    try {
      const page = await api.list({ limit: PAGE_SIZE, after: append ? lastId : undefined });
      if (mine !== generation) return;
      if (!append) {
        list.replaceChildren();
        for (const url of blobs) URL.revokeObjectURL(url);
        blobs = [];
      }
      for (const video of page.data) list.append(card(video));
      lastId = page.last_id || (page.data.length ? page.data[page.data.length - 1].id : lastId);
      moreButton.hidden = !page.has_more;
      say(list.children.length ? `${list.children.length} video${list.children.length === 1 ? "" : "s"} shown.` : "No videos yet.");
    } catch (err) {
      if (mine !== generation) return;
      const { title, message } = describeError(err);
      say(`Could not load the gallery. ${title}: ${message}`);
    }
  }

  moreButton.addEventListener("click", () => load({ append: true }));

  return {
    reload: () => load({ append: false }),
  };
}
