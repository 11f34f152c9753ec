// The reading-room page: upload, result, chart, review, recent cases. Plain JavaScript against
// the JSON API under /v1 (docs/API.md); nothing to build.
"use strict";

const $ = (id) => document.getElementById(id);
let reference = null;   // GET /v1/reference: the Greulich-Pyle SD table by sex
let current = null;     // the case shown
let chosenFile = null;  // the file picked or dropped

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const type = res.headers.get("content-type") || "";
  const body = type.includes("application/json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(body && body.error ? body.error : `${res.status} ${res.statusText}`);
  return body;
}

function text(value, digits = 1) {
  return value === null || value === undefined ? "—" : Number(value).toFixed(digits);
}

function years(months) {
  const y = Math.floor(months / 12);
  return `${y} y ${(months - 12 * y).toFixed(1)} m`;
}

// ---- upload ----

function choose(file) {
  chosenFile = file || null;
  $("drop-text").textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(2)} MB)`
                                    : "Drop a hand radiograph here (PNG, JPEG, TIFF, BMP, DICOM), or click to choose one";
  $("submit").disabled = !file;
}

function setUpUpload() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => choose(e.target.files[0]));
  for (const type of ["dragenter", "dragover"])
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  for (const type of ["dragleave", "drop"])
    drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); choose(e.dataTransfer.files[0]); });
  $("predict-form").addEventListener("submit", submit);
}

async function submit(e) {
  e.preventDefault();
  if (!chosenFile) return;
  $("form-error").textContent = "";
  const form = new FormData();
  form.append("file", chosenFile, chosenFile.name);
  for (const [id, name] of [["sex", "sex"], ["age", "chronological_age_months"],
                            ["birth", "birth_date"], ["study", "study_date"]])
    if ($(id).value) form.append(name, $(id).value);
  $("submit").disabled = true;
  $("submit").textContent = "Reading…";
  try {
    const c = await api("/v1/predict", { method: "POST", body: form });
    show(c);
    await listCases();
  } catch (err) {
    $("form-error").textContent = err.message;
  } finally {
    $("submit").disabled = false;
    $("submit").textContent = "Estimate bone age";
  }
}

// ---- one case ----

function show(c) {
  current = c;
  history.replaceState(null, "", `#case=${c.case_id}`);  // a link to the case, kept on reload
  $("result").hidden = false;
  $("case-title").textContent = `Case ${c.case_id}` + (c.original_name ? `: ${c.original_name}` : "");
  const rejected = c.status !== "ok";
  $("rejected").hidden = !rejected;
  $("answer").hidden = rejected;
  document.querySelectorAll(".cases li").forEach((li) =>
    li.classList.toggle("current", li.dataset.id == c.case_id));
  if (rejected) {
    $("reject-reason").textContent = c.message || "No reason given.";
    drawOriginal($("rejected-original"), c);
    return;
  }
  drawOriginal($("original"), c);
  $("original-caption").textContent = c.box
    ? `the upload (${c.width}×${c.height}), with the crop box (${c.method}, confidence ${text(c.confidence, 2)})`
    : "the upload";
  $("hand").src = c.image_url;
  $("heatmap").removeAttribute("src");
  $("heatmap-caption").textContent = "drawing where the model looked…";
  $("heatmap").onload = () => { $("heatmap-caption").textContent = "where the model looked (Grad-CAM)"; };
  $("heatmap").onerror = () => { $("heatmap-caption").textContent = "no heatmap for this case"; };
  $("heatmap").src = c.heatmap_url;
  $("bone-age").textContent = text(c.bone_age_months);
  $("bone-age-years").textContent = years(c.bone_age_months);
  showDetails(c);
  $("chart").innerHTML = chart(c);
  showReview(c);
}

// The upload as the service decoded it (DICOM too), in the original's pixel coordinates, with
// the box where the hand was found: the crop is the box grown by a margin (docs/CLINICAL.md).
function drawOriginal(svg, c) {
  if (!c.width || !c.height) {
    // No size in the case (an upload refused before it was measured): the picture's own.
    svg.innerHTML = "";
    const probe = new Image();
    probe.onload = () => { if (current === c) drawOriginal(svg, { ...c, width: probe.naturalWidth, height: probe.naturalHeight }); };
    probe.src = c.original_url;
    return;
  }
  const w = c.width, h = c.height;
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  let inner = `<rect width="${w}" height="${h}" fill="#000"/>` +
    `<image href="${c.original_url}" width="${w}" height="${h}" preserveAspectRatio="none"/>`;
  if (c.box) {
    const [x, y, bw, bh] = c.box;
    const stroke = Math.max(w, h) / 150;
    inner += `<rect x="${x}" y="${y}" width="${bw}" height="${bh}" fill="none" stroke="var(--accent)" stroke-width="${stroke}"><title>hand found here (${c.method})</title></rect>`;
  }
  svg.innerHTML = inner;
}

function showDetails(c) {
  const rows = [
    ["sex", c.male === null ? "not given" : (c.male ? "male" : "female")],
    ["chronological age", c.chronological_age_months === null ? "not given"
                          : `${text(c.chronological_age_months)} months`],
    ["difference", c.difference_months === null ? "—" : `${c.difference_months > 0 ? "+" : ""}${text(c.difference_months)} months`],
    ["Z-score", c.z_score === null ? "—" : `${c.z_score > 0 ? "+" : ""}${text(c.z_score, 2)} (SD ${text(c.reference_sd_months, 2)} months)`],
    ["interpretation", c.interpretation || "—"],
    ["hand score", c.hand_score === null ? "gate off" : text(c.hand_score, 3)],
  ];
  const dl = $("details");
  dl.innerHTML = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    if (k === "interpretation" && c.interpretation) dd.className = c.interpretation;
    dl.append(dt, dd);
  }
  const notes = [...(c.warnings || []), ...(c.z_score_note ? [c.z_score_note] : [])];
  $("warnings").innerHTML = "";
  for (const w of notes) {
    const li = document.createElement("li");
    li.textContent = w;
    $("warnings").append(li);
  }
}

// ---- the Greulich-Pyle chart: bone age against chronological age, the ±2 SD band ----

const CHART = { w: 560, h: 420, left: 48, right: 16, top: 16, bottom: 40, maxAge: 228, maxBone: 240 };

function band(rows) {
  // Beyond the table's last age the last SD holds, as the Z-score computes it.
  const points = rows.map((r) => [r.age_months, r.sd_months]);
  const last = points[points.length - 1];
  if (last[0] < CHART.maxAge) points.push([CHART.maxAge, last[1]]);
  const x = (a) => CHART.left + (a / CHART.maxAge) * (CHART.w - CHART.left - CHART.right);
  const y = (b) => CHART.top + (1 - Math.min(Math.max(b, 0), CHART.maxBone) / CHART.maxBone) *
                               (CHART.h - CHART.top - CHART.bottom);
  const upper = points.map(([a, sd]) => `${x(a).toFixed(1)},${y(a + 2 * sd).toFixed(1)}`);
  const lower = points.reverse().map(([a, sd]) => `${x(a).toFixed(1)},${y(a - 2 * sd).toFixed(1)}`);
  return [...upper, ...lower].join(" ");
}

function chart(c) {
  if (!reference) return "";
  const { w, h, left, right, top, bottom, maxAge, maxBone } = CHART;
  const x = (a) => left + (a / maxAge) * (w - left - right);
  const y = (b) => top + (1 - b / maxBone) * (h - top - bottom);
  let svg = `<svg viewBox="0 0 ${w} ${h}" role="img" aria-label="bone age against chronological age">`;
  const sexes = c.male === null ? ["male", "female"] : [c.male ? "male" : "female"];
  for (const s of sexes)
    svg += `<polygon points="${band(reference[s])}" fill="var(--band)" stroke="none"><title>±2 SD, ${s}</title></polygon>`;
  for (let m = 0; m <= maxAge; m += 24) {
    svg += `<line x1="${x(m)}" y1="${y(0)}" x2="${x(m)}" y2="${y(maxBone)}" stroke="#2c343f" stroke-width="0.5"/>`;
    svg += `<text x="${x(m)}" y="${h - bottom + 16}" text-anchor="middle">${m / 12}</text>`;
  }
  for (let m = 0; m <= maxBone; m += 24) {
    svg += `<line x1="${x(0)}" y1="${y(m)}" x2="${x(maxAge)}" y2="${y(m)}" stroke="#2c343f" stroke-width="0.5"/>`;
    svg += `<text x="${left - 6}" y="${y(m) + 4}" text-anchor="end">${m / 12}</text>`;
  }
  svg += `<line x1="${x(0)}" y1="${y(0)}" x2="${x(maxAge)}" y2="${y(maxAge)}" stroke="#8a96a6" stroke-dasharray="4 3"/>`;
  svg += `<text x="${(left + w - right) / 2}" y="${h - 6}" text-anchor="middle">chronological age, years</text>`;
  svg += `<text transform="translate(12 ${(top + h - bottom) / 2}) rotate(-90)" text-anchor="middle">bone age, years</text>`;
  const colour = c.interpretation === "normal" ? "var(--ok)" : c.interpretation ? "var(--warn)" : "var(--accent)";
  if (c.chronological_age_months !== null) {
    const cx = x(c.chronological_age_months), cy = y(c.bone_age_months);
    svg += `<circle cx="${cx}" cy="${cy}" r="6" fill="${colour}"><title>model: ${text(c.bone_age_months)} months</title></circle>`;
    const label = `${text(c.bone_age_months)} m` + (c.z_score === null ? "" : `, Z ${c.z_score > 0 ? "+" : ""}${text(c.z_score, 2)}`);
    const onRight = cx < w - right - 140;  // the label beside the point, on the side with room
    svg += `<text class="point-label" x="${onRight ? cx + 10 : cx - 10}" y="${cy + 4}" text-anchor="${onRight ? "start" : "end"}">${label}</text>`;
    if (c.review) {
      const ry = y(c.review.bone_age_months);
      svg += `<circle cx="${cx}" cy="${ry}" r="7" fill="none" stroke="var(--text)" stroke-width="2"><title>reader: ${text(c.review.bone_age_months)} months</title></circle>`;
      // The reader's label on the other side of the point, so the two never overlap.
      svg += `<text x="${onRight ? cx - 12 : cx + 12}" y="${ry + 4}" text-anchor="${onRight ? "end" : "start"}">reader ${text(c.review.bone_age_months)} m</text>`;
    }
  } else {
    svg += `<line x1="${x(0)}" y1="${y(c.bone_age_months)}" x2="${x(maxAge)}" y2="${y(c.bone_age_months)}" stroke="${colour}" stroke-dasharray="6 4"/>`;
    svg += `<text x="${x(maxAge) - 4}" y="${y(c.bone_age_months) - 6}" text-anchor="end">bone age; no chronological age given</text>`;
  }
  const legend = c.male === null ? "±2 SD bands of both sexes (sex not given)" : `±2 SD band, ${sexes[0]}s (Greulich-Pyle)`;
  svg += `<text x="${left + 8}" y="${top + 12}">${legend}</text>`;
  return svg + "</svg>";
}

// ---- review ----

function showReview(c) {
  $("review-error").textContent = "";
  $("correct").value = "";
  $("comment").value = "";
  const r = c.review;
  $("review-state").textContent = r
    ? `Reviewed by ${r.reader} at ${r.reviewed_at}: ${text(r.bone_age_months)} months` +
      (r.agrees ? " (agreed)" : " (corrected)") + (r.comment ? ` — ${r.comment}` : "")
    : "Not reviewed yet: the estimate is preliminary.";
  $("reader").value = localStorage.getItem("reader") || "";
  $("agree").textContent = `Agree: ${text(c.bone_age_months)} months`;
}

async function review(body) {
  $("review-error").textContent = "";
  body.reader = $("reader").value.trim();
  body.comment = $("comment").value;
  if (!body.reader) { $("review-error").textContent = "Give the reader's name."; return; }
  localStorage.setItem("reader", body.reader);
  try {
    const c = await api(`/v1/cases/${current.case_id}/review`, {
      method: "PUT", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    show(c);
    await listCases();
  } catch (err) {
    $("review-error").textContent = err.message;
  }
}

function setUpReview() {
  $("agree").addEventListener("click", () => review({ agrees: true }));
  $("review-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = parseFloat($("correct").value);
    if (Number.isNaN(value)) { $("review-error").textContent = "Give the corrected bone age in months."; return; }
    review({ agrees: false, bone_age_months: value });
  });
}

// ---- recent cases ----

async function listCases() {
  const { cases } = await api("/v1/cases?limit=50");
  const list = $("cases");
  list.innerHTML = "";
  for (const c of cases) {
    const li = document.createElement("li");
    li.dataset.id = c.case_id;
    const what = c.status === "ok" ? `${text(c.bone_age_months)} months` : "";
    li.innerHTML = `<span></span><span></span>`;
    li.firstChild.textContent = `#${c.case_id} ${c.original_name || ""}`;
    li.lastChild.textContent = what;
    const tag = document.createElement("span");
    tag.className = "tag " + (c.status !== "ok" ? "rejected" : c.review ? "reviewed" : "");
    tag.textContent = c.status !== "ok" ? "rejected" : c.review ? "reviewed" : "to review";
    li.lastChild.append(" ", tag);
    if (current && current.case_id === c.case_id) li.classList.add("current");
    li.addEventListener("click", async () => show(await api(`/v1/cases/${c.case_id}`)));
    list.append(li);
  }
}

// The case named by the address (#case=17): on load, and when a link to another case is
// followed from this page.
async function showLinked() {
  const linked = location.hash.match(/^#case=(\d+)$/);
  if (linked && (!current || String(current.case_id) !== linked[1]))
    show(await api(`/v1/cases/${linked[1]}`));
}

async function start() {
  window.addEventListener("hashchange", () =>
    showLinked().catch((err) => { $("form-error").textContent = err.message; }));
  setUpUpload();
  setUpReview();
  try {
    const [ref, model] = await Promise.all([api("/v1/reference"), api("/v1/model")]);
    reference = ref;
    $("model").textContent = `${model.file} (${model.architecture}) · ` +
      (model.gate ? `hand gate ≥ ${model.gate.threshold.toFixed(3)}` : "hand gate off") + ` · ${model.build}`;
    await listCases();
    await showLinked();
  } catch (err) {
    $("form-error").textContent = `The service did not answer: ${err.message}`;
  }
}

start();
