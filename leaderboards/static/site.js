/* paintbench leaderboard: sorting, gallery filters and the lightbox. Every page reads fine without it.
   User text is only ever read from data-* attributes and moved as DOM nodes (cloneNode/textContent),
   never parsed as HTML. */
"use strict";

function sortTable(th) {
  const table = th.closest("table");
  const tbody = table.tBodies[0];
  const index = Array.prototype.indexOf.call(th.parentNode.children, th);
  const numeric = th.dataset.kind === "number" || th.dataset.kind === "rank";
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  for (const other of th.parentNode.children) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const rows = Array.from(tbody.rows);
  const key = (row) => { const cell = row.cells[index]; return cell ? (cell.dataset.sort || "") : ""; };
  rows.sort((a, b) => {
    const ka = key(a), kb = key(b);
    if (ka === "" && kb === "") return 0;
    if (ka === "") return 1;   // missing values last, whichever the direction
    if (kb === "") return -1;
    const d = numeric ? parseFloat(ka) - parseFloat(kb) : ka.localeCompare(kb);
    return ascending ? d : -d;
  });
  for (const row of rows) tbody.appendChild(row);
}

function setupSorting() {
  for (const button of document.querySelectorAll("table.sortable th button.sort")) {
    button.addEventListener("click", () => sortTable(button.closest("th")));
  }
}

function setupFilters(form) {
  const target = document.getElementById(form.dataset.target);
  if (!target) return;
  form.hidden = false;
  const items = Array.from(target.children);
  const original = items.slice();
  const get = (name) => form.querySelector('[data-filter="' + name + '"]');
  const count = form.querySelector("[data-count]");
  const apply = () => {
    const failed = get("failed") && get("failed").checked;
    const differ = get("differ") && get("differ").checked;
    const category = get("category") ? get("category").value : "";
    const tag = get("tag") ? get("tag").value : "";
    const search = get("search") ? get("search").value.trim().toLowerCase() : "";
    const words = search ? search.split(/\s+/) : [];
    let shown = 0;
    for (const el of items) {
      let ok = true;
      if (failed && el.dataset.failed !== "1") ok = false;
      if (differ && el.dataset.differ !== "1") ok = false;
      if (category && el.dataset.category !== category) ok = false;
      if (tag && el.dataset.tag !== tag) ok = false;
      if (ok && words.length) {
        const text = el.dataset.prompt || "";
        ok = words.every((w) => text.includes(w));
      }
      el.hidden = !ok;
      if (ok) shown += 1;
    }
    if (count) count.textContent = shown + " of " + items.length + " shown";
    const boxes = get("boxes");
    if (boxes) target.classList.toggle("hide-boxes", !boxes.checked);
  };
  const order = () => {
    const how = get("sort") ? get("sort").value : "";
    let list = original.slice();
    if (how) {
      const val = (el) => (el.dataset.sort === "" ? NaN : parseFloat(el.dataset.sort));
      list.sort((a, b) => {
        const va = val(a), vb = val(b);
        if (isNaN(va) && isNaN(vb)) return 0;
        if (isNaN(va)) return 1;
        if (isNaN(vb)) return -1;
        return how === "asc" ? va - vb : vb - va;
      });
    }
    for (const el of list) target.appendChild(el);
  };
  form.addEventListener("input", apply);
  form.addEventListener("change", (e) => { if (e.target === get("sort")) order(); apply(); });
  form.addEventListener("submit", (e) => e.preventDefault());
  apply();
}

function setupLightbox() {
  const dialog = document.getElementById("lightbox");
  if (!dialog || typeof dialog.showModal !== "function") return;
  const body = dialog.querySelector(".lb-body");
  document.addEventListener("click", (e) => {
    const link = e.target.closest && e.target.closest("a.frame");
    if (!link || e.ctrlKey || e.metaKey || e.shiftKey || e.button !== 0) return;
    e.preventDefault();
    const card = link.closest(".card");
    body.replaceChildren();
    const frame = document.createElement("div");
    frame.className = "frame";
    const img = document.createElement("img");
    img.src = link.getAttribute("href");
    const thumb = link.querySelector("img");
    img.alt = thumb ? thumb.alt : "";
    frame.appendChild(img);
    const svg = link.querySelector("svg.boxes");
    const hidden = link.closest(".hide-boxes");
    if (svg && !hidden) frame.appendChild(svg.cloneNode(true));
    body.appendChild(frame);
    const caption = card && card.querySelector("figcaption");
    if (caption) body.appendChild(caption.cloneNode(true));
    const open = document.createElement("p");
    const a = document.createElement("a");
    a.href = link.getAttribute("href");
    a.target = "_blank";
    a.rel = "noopener";
    a.textContent = "open the full image";
    open.appendChild(a);
    body.appendChild(open);
    dialog.showModal();
  });
  dialog.querySelector(".close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });
}

// Chart legends: an entry shows or hides its series (line and band) in the same chart.
function setupLegendToggles() {
  const toggle = (item) => {
    const svg = item.closest("svg");
    const off = item.classList.toggle("off");
    for (const g of svg.querySelectorAll("g.series")) {
      if (g.dataset.label === item.dataset.label) g.classList.toggle("off", off);
    }
    item.setAttribute("aria-pressed", off ? "false" : "true");
  };
  for (const item of document.querySelectorAll("svg .legend-item")) {
    item.addEventListener("click", () => toggle(item));
    item.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(item); } });
  }
}

// Training report: the smoothing slider re-averages every chart's faint raw line (TensorBoard's
// debiased exponential moving average, on the drawn y coordinates: an affine map of the values).
function setupSmoothing() {
  const slider = document.querySelector("input.smoothing");
  if (!slider) return;
  const apply = () => {
    const w = Number(slider.value);
    slider.parentElement.querySelector("output").textContent = w.toFixed(2);
    for (const raw of document.querySelectorAll("svg polyline.raw")) {
      const pts = raw.getAttribute("points").trim().split(/\s+/).map((p) => p.split(",").map(Number));
      let last = 0;
      const out = pts.map(([x, y], i) => {
        last = last * w + (1 - w) * y;
        return `${x},${(w ? last / (1 - w ** (i + 1)) : y).toFixed(1)}`;
      });
      raw.nextElementSibling.setAttribute("points", out.join(" "));
    }
  };
  slider.addEventListener("input", apply);
}

document.addEventListener("DOMContentLoaded", () => {
  setupSorting();
  setupLegendToggles();
  setupSmoothing();
  for (const form of document.querySelectorAll("form.filters")) setupFilters(form);
  setupLightbox();
});
