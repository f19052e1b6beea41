"use strict";
// The little JavaScript of the web UI: calls the JSON API, listens to a search's events
// (server-sent; the page never polls), and draws with plotly.js.

const $ = (selector) => document.querySelector(selector);

function showMessage(text, kind = "error") {
  const box = $("#message");
  if (!box) return;
  box.textContent = text || "";
  box.className = kind;
  box.hidden = !text;
}

async function api(method, url, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (!response.ok) {
    let detail = `${response.status} ${response.statusText}`;
    try {
      const payload = await response.json();
      if (payload.detail) detail = payload.detail;
    } catch (ignored) { /* not JSON: keep the status line */ }
    if (response.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
    }
    throw new Error(detail);
  }
  const type = response.headers.get("content-type") || "";
  return type.includes("json") ? response.json() : response.text();
}

function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "?";
  const s = Math.max(0, Math.round(seconds));
  return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`
    : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// -- the searches page ------------------------------------------------------------------------

function initSearches() {
  $("#new-search").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { config: $("#config").value };
    if ($("#name").value) body.name = $("#name").value;
    if ($("#n_trials").value) body.n_trials = Number($("#n_trials").value);
    $("#submit-search").disabled = true;
    showMessage("Checking the config…", "info");
    try {
      const created = await api("POST", "/api/searches", body);
      location.href = "/searches/" + encodeURIComponent(created.name);
    } catch (error) {
      showMessage(error.message);
    } finally {
      $("#submit-search").disabled = false;
    }
  });
}

// -- the page of one search -------------------------------------------------------------------

const TRIAL_COLUMNS = ["number", "state", "accuracy", "latency_p50_ms", "latency_source",
  "params", "flops", "precision", "prune_ratio", "candidate"];

function trialLink(name, number) {
  return link(`/searches/${encodeURIComponent(name)}/trials/${number}`, String(number));
}

function fillTable(table, rows, columns, name) {
  const head = document.createElement("tr");
  for (const c of columns) {
    const th = document.createElement("th");
    th.textContent = c;
    th.dataset.column = c;
    head.appendChild(th);
  }
  table.tHead.replaceChildren(head);
  const body = table.tBodies[0];
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    for (const c of columns) {
      const td = cell(tr, c === "number" ? "" : fmt(r[c]));
      if (c === "number") td.appendChild(trialLink(name, r.number));
      if (c === "candidate") td.className = "candidate";
    }
    return tr;
  }));
}

class SearchPage {
  constructor(name) {
    this.name = name;
    this.page = { offset: 0, limit: 25, sort: "number", order: "asc", total: 0 };
    this.lastDone = -1;
    this.started = null;
    this.running = false;
    this.plotReady = false;
  }

  url(path) { return `/api/searches/${encodeURIComponent(this.name)}${path}`; }

  async refresh() {
    try {
      await Promise.all([this.drawPlot(), this.drawFront(), this.drawTrials()]);
    } catch (error) {
      showMessage(error.message);
    }
  }

  async drawPlot() {
    const figure = await api("GET", this.url("/plot"));
    const layout = { ...figure.layout, autosize: true, height: 460 };
    await Plotly.react("plot", figure.data, layout, { responsive: true, displaylogo: false });
    if (!this.plotReady) {
      $("#plot").on("plotly_click", (event) => {
        const point = event.points && event.points[0];
        const number = point && point.customdata ? point.customdata[0] : undefined;
        if (number !== undefined && number !== null) location.href = trialLink(this.name, number).href;
      });
      this.plotReady = true;
    }
  }

  async drawFront() {
    const front = await api("GET", this.url("/front"));
    fillTable($("#front"), front.trials, TRIAL_COLUMNS, this.name);
    $("#knee").textContent = front.knee === null ? "The knee needs three front members."
      : `Knee of the front: trial ${front.knee}.`;
    for (const select of [$("#cmp-a"), $("#cmp-b")]) {
      const chosen = select.value;
      select.replaceChildren(...front.trials.map((t) => {
        const option = document.createElement("option");
        option.value = t.number;
        option.textContent = `trial ${t.number} (${fmt(t.accuracy)}, ${fmt(t.latency_p50_ms, 3)} ms)`;
        return option;
      }));
      if (chosen) select.value = chosen;
    }
    if (front.trials.length > 1 && $("#cmp-a").value === $("#cmp-b").value) {
      $("#cmp-b").selectedIndex = 1;
    }
  }

  async drawTrials() {
    const p = this.page;
    const query = `?offset=${p.offset}&limit=${p.limit}&sort=${p.sort}&order=${p.order}`;
    const result = await api("GET", this.url("/trials" + query));
    p.total = result.total;
    fillTable($("#trials"), result.trials, TRIAL_COLUMNS, this.name);
    const last = Math.min(p.offset + p.limit, p.total);
    $("#page-info").textContent = `${p.total ? p.offset + 1 : 0}-${last} of ${p.total}`;
    $("#prev").disabled = p.offset === 0;
    $("#next").disabled = last >= p.total;
  }

  showState(snapshot) {
    const state = snapshot.state || "run on disk";
    $("#state").textContent = state;
    $("#state").className = `state ${snapshot.state || "run"}`;
    $("#job-message").textContent = snapshot.message || "";
    this.started = snapshot.started;
    this.running = snapshot.state === "running";
    const p = snapshot.progress;
    if (p) {
      this.progress = p;
      $("#bar-fill").style.width = `${p.total ? (100 * p.done) / p.total : 0}%`;
      this.showProgressText();
    }
    $("#cancel").disabled = !["queued", "running"].includes(snapshot.state);
    $("#resume").disabled = ["queued", "running"].includes(snapshot.state);
    renderExports(snapshot.exports, this.name);
  }

  showProgressText() {
    const p = this.progress;
    if (!p) return;
    const elapsed = this.started ? Date.now() / 1000 - this.started : null;
    $("#progress-text").textContent = `${p.done}/${p.total} trials, ${p.running} running, `
      + `${p.failed} failed; front of ${p.front_size}; elapsed ${duration(elapsed)}, `
      + `left ${p.remaining_s === null ? "?" : duration(p.remaining_s)}`;
  }

  listen() {
    const source = new EventSource(this.url("/events"));
    let ended = false;
    source.addEventListener("progress", (event) => {
      const snapshot = JSON.parse(event.data);
      this.showState(snapshot);
      if (!snapshot.progress) return; // queued: its run is not written yet
      const done = snapshot.progress.done;
      if (done !== this.lastDone) {
        this.lastDone = done;
        this.refresh();
      }
    });
    source.addEventListener("end", () => {
      ended = true;
      source.close();
      if (this.lastDone >= 0) this.refresh();
    });
    source.onerror = () => {
      if (!ended) showMessage("Lost the connection to the service; reload the page to reconnect.");
      source.close();
    };
    // A clock for the elapsed time on the page; it asks the service nothing.
    setInterval(() => { if (this.running) this.showProgressText(); }, 1000);
  }

  bind() {
    $("#cancel").addEventListener("click", () => this.act("cancel"));
    $("#resume").addEventListener("click", () => this.act("resume"));
    $("#prev").addEventListener("click", () => { this.page.offset = Math.max(0, this.page.offset - this.page.limit); this.drawTrials(); });
    $("#next").addEventListener("click", () => { this.page.offset += this.page.limit; this.drawTrials(); });
    $("#trials").tHead.addEventListener("click", (event) => {
      const column = event.target.dataset && event.target.dataset.column;
      if (!column) return;
      const p = this.page;
      p.order = p.sort === column && p.order === "asc" ? "desc" : "asc";
      p.sort = column;
      p.offset = 0;
      this.drawTrials().catch((error) => showMessage(error.message));
    });
    $("#pick").addEventListener("submit", (event) => { event.preventDefault(); this.pick(); });
    $("#compare").addEventListener("submit", (event) => { event.preventDefault(); this.compare(); });
  }

  async act(what) {
    try {
      await api("POST", this.url(`/${what}`));
      showMessage(what === "cancel" ? "Cancelling: the trial in progress stops cleanly." : "Queued again: it goes on from its study.", "info");
      if (what === "resume") this.listen();
    } catch (error) {
      showMessage(error.message);
    }
  }

  async pick() {
    const budget = $("#budget").value;
    if (!budget) { showMessage("Give a latency budget in ms."); return; }
    try {
      const result = await api("GET", this.url(`/pick?max_latency_ms=${encodeURIComponent(budget)}`));
      const out = $("#pick-result");
      out.replaceChildren(document.createTextNode(result.message + " "));
      if (result.trial) out.appendChild(link(trialLink(this.name, result.trial.number).href, "open it"));
    } catch (error) {
      showMessage(error.message);
    }
  }

  async compare() {
    try {
      const a = $("#cmp-a").value, b = $("#cmp-b").value;
      const result = await api("GET", this.url(`/compare?a=${a}&b=${b}`));
      const table = $("#compare-result");
      const rows = [["", `trial ${result.a.number}`, `trial ${result.b.number}`]];
      for (const c of ["accuracy", "latency_p50_ms", "params", "flops", "precision", "candidate"]) {
        rows.push([c, fmt(result.a[c]), fmt(result.b[c])]);
      }
      const d = result.difference;
      rows.push(["b vs a", `${fmt(d.accuracy_points, 2)} points`, `latency x${fmt(d.latency_ratio, 2)}, params x${fmt(d.params_ratio, 2)}`]);
      table.replaceChildren(...rows.map((r) => { const tr = document.createElement("tr"); r.forEach((v) => cell(tr, v)); return tr; }));
      table.hidden = false;
    } catch (error) {
      showMessage(error.message);
    }
  }
}

function renderExports(exports, name, trial) {
  const list = $("#exports");
  if (!list || !exports) return;
  const shown = trial === undefined ? exports : exports.filter((e) => String(e.trial) === String(trial));
  list.replaceChildren(...shown.map((e) => {
    const item = document.createElement("li");
    item.className = `export ${e.state}`;
    item.appendChild(document.createTextNode(`${e.id}: trial ${e.trial}, ${e.state} ${e.message || ""} `));
    if (e.state === "finished") {
      const download = link(`/api/exports/${e.id}/archive`, "download");
      download.className = "download";
      item.appendChild(download);
      item.appendChild(document.createTextNode(" · "));
      item.appendChild(link(`/api/exports/${e.id}/card`, "model card"));
    }
    return item;
  }));
}

// -- the page of one trial --------------------------------------------------------------------

function initTrial() {
  const { name, number } = document.body.dataset;
  const epochs = JSON.parse($("#epochs").dataset.epochs || "[]");
  if (epochs.length) {
    Plotly.newPlot("epochs", [{ x: epochs.map((_, i) => i + 1), y: epochs, mode: "lines+markers", name: "validation accuracy" }],
      { height: 260, margin: { t: 10 }, xaxis: { title: "epoch", dtick: 1 }, yaxis: { title: "accuracy" } },
      { displaylogo: false });
  }
  const form = $("#export");
  if (!form) return;
  let source = null;
  const follow = () => {
    if (source) source.close();
    source = new EventSource(`/api/searches/${encodeURIComponent(name)}/events`);
    source.addEventListener("progress", (event) => renderExports(JSON.parse(event.data).exports, name, number));
    source.addEventListener("end", () => source.close());
  };
  follow();
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { trial: Number(number), format: $("#format").value, weights: $("#weights").value };
    if ($("#precision").value) body.precision = $("#precision").value;
    $("#export-button").disabled = true;
    try {
      const job = await api("POST", `/api/searches/${encodeURIComponent(name)}/exports`, body);
      showMessage(`Export ${job.id} started; it is listed below and can be downloaded once it finished.`, "info");
      follow();
    } catch (error) {
      showMessage(error.message);
    } finally {
      $("#export-button").disabled = false;
    }
  });
}

// -- the devices page -------------------------------------------------------------------------

function initDevices() {
  $("#upload-table").addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData();
    data.append("table", $("#table-file").files[0]);
    data.append("metadata", $("#metadata-file").files[0]);
    data.append("replace", $("#replace").checked ? "true" : "false");
    $("#upload").disabled = true;
    showMessage("Checking the table…", "info");
    try {
      const added = await api("POST", "/api/devices/tables", data);
      showMessage(`Added ${added.table} for device ${added.device}.`, "info");
      setTimeout(() => location.reload(), 800);
    } catch (error) {
      showMessage(error.message);
    } finally {
      $("#upload").disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "searches") initSearches();
  if (page === "search") {
    const view = new SearchPage(document.body.dataset.name);
    view.bind();
    view.listen(); // its first event draws the page, once the search has a study
  }
  if (page === "trial") initTrial();
  if (page === "devices") initDevices();
});
