"use strict";
// The annotator view: pick an objective and work its human queue one task at a time, by
// keyboard (1-9 label, s skip) or mouse, without reloading the page. The lease on the task
// in hand is renewed while the tab is visible; a hidden tab lets it lapse, so a task is never
// held by a browser nobody looks at.
(function () {
  const { h, $, api, notice, num } = window.tw;
  const REFRESH_MS = 5000;
  const state = { me: "", objectives: {}, objective: "", claim: null, busy: false };
  const timers = { renew: 0, idle: 0 };

  const enc = encodeURIComponent;
  const queuePath = (suffix = "") => `/v1/queue/${enc(state.objective)}${suffix}`;
  const report = (error) => notice(error.message, { error: true });

  function labels() {
    const objective = state.objectives[state.objective];
    return objective ? objective.labels : [];
  }

  async function loadObjectives() {
    const { objectives } = await api("/console/api/objectives");
    state.objectives = Object.fromEntries(objectives.map((o) => [o.name, o]));
    const select = $("objective");
    select.replaceChildren(...objectives.map((o) => h("option", { value: o.name }, o.name)));
    if (!objectives.length) {
      notice("No objective has a human queue yet (labelling.human_queue: true).");
      return;
    }
    const wanted = new URLSearchParams(window.location.search).get("objective");
    select.value = wanted && wanted in state.objectives ? wanted : objectives[0].name;
    select.addEventListener("change", () => {
      select.blur();
      choose(select.value).catch(report);
    });
    await choose(select.value);
  }

  async function choose(name) {
    state.objective = name;
    const url = new URL(window.location.href);
    url.searchParams.set("objective", name);
    window.history.replaceState(null, "", url);
    renderLabels();
    await Promise.all([refreshStatus(), next()]);
  }

  function renderLabels() {
    const buttons = labels().map((label, i) =>
      h(
        "button",
        { type: "button", "data-label": label, onclick: () => answer(label).catch(report) },
        i < 9 ? h("kbd", {}, String(i + 1)) : null,
        ` ${label}`,
      ),
    );
    buttons.push(
      h(
        "button",
        { type: "button", class: "secondary", testid: "skip", onclick: () => skip().catch(report) },
        h("kbd", {}, "s"),
        " skip",
      ),
    );
    $("labels").replaceChildren(...buttons);
  }

  function enable(on) {
    for (const button of $("labels").querySelectorAll("button")) button.disabled = !on;
  }

  function stopTimers() {
    clearTimeout(timers.renew);
    clearTimeout(timers.idle);
  }

  async function next() {
    stopTimers();
    state.claim = null;
    const claim = await api(queuePath("/claim"), { method: "POST" });
    if (!claim) {
      showTask(null);
      timers.idle = setTimeout(() => {
        next().catch(report);
        refreshStatus().catch(report);
      }, REFRESH_MS);
      return;
    }
    state.claim = claim;
    showTask(claim.task);
    scheduleRenew();
  }

  function showTask(task) {
    const text = $("task-text");
    $("empty").hidden = Boolean(task);
    text.hidden = !task;
    enable(Boolean(task));
    text.textContent = task ? task.text : "";
    text.dataset.taskId = task ? task.task_id : "";
    $("reason").textContent = task ? `needs a person: ${task.reason.replace(/_/g, " ")}` : "";
    const hints = task
      ? task.hints.map(([rule, label]) => h("span", { class: "chip", title: rule }, `rule votes ${label}`))
      : [];
    if (task && !hints.length) hints.push(h("span", { class: "muted" }, "no rule voted"));
    $("hints").replaceChildren(...hints);
    showLease();
  }

  function showLease() {
    const lease = $("lease");
    if (!state.claim) {
      lease.textContent = "";
      return;
    }
    const left = Math.round((Date.parse(state.claim.expires_at) - Date.now()) / 1000);
    lease.textContent =
      left > 0 ? `lease: ${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")} left` : "lease expired";
    lease.dataset.expiresAt = state.claim.expires_at;
  }

  function scheduleRenew() {
    const left = Date.parse(state.claim.expires_at) - Date.now();
    timers.renew = setTimeout(() => renew().catch(report), Math.max(2000, left / 2));
  }

  async function renew() {
    const claim = state.claim;
    if (!claim) return;
    if (document.visibilityState !== "visible") {
      scheduleRenew();
      return;
    }
    try {
      const renewed = await api(queuePath(`/tasks/${enc(claim.task.task_id)}/renew`), {
        method: "POST",
        body: { claim_id: claim.claim_id },
      });
      if (state.claim !== claim) return;
      claim.expires_at = renewed.expires_at;
      showLease();
      scheduleRenew();
    } catch (error) {
      if (state.claim !== claim) return;
      notice(`The lease on this task was lost (${error.message}); here is the next one.`, {
        error: true,
      });
      await next();
    }
  }

  async function settle(action, body, said) {
    const claim = state.claim;
    if (!claim || state.busy) return;
    state.busy = true;
    enable(false);
    try {
      const result = await api(queuePath(`/tasks/${enc(claim.task.task_id)}/${action}`), {
        method: "POST",
        body: { claim_id: claim.claim_id, ...body },
      });
      notice(said(result));
    } catch (error) {
      report(error);
      if (error.status !== 409) {
        enable(true);
        return;
      }
    } finally {
      state.busy = false;
    }
    await Promise.all([next(), refreshStatus()]);
  }

  function answer(label) {
    return settle("answer", { label }, (result) =>
      result.resolved
        ? `Labelled “${label}”: resolved as “${result.resolved.label}”.`
        : `Labelled “${label}”: waiting for more annotators.`,
    );
  }

  function skip() {
    return settle("skip", {}, () => "Skipped; it will not be offered to you again.");
  }

  async function refreshStatus() {
    if (!state.objective) return;
    const status = await api(queuePath());
    if (status.objective !== state.objective) return;
    const counts = status.counts;
    const pairs = [
      ["open tasks", counts.open],
      ["held now", counts.claimed],
      ["resolved", counts.done],
      ["answers", counts.answers],
      ["your answers", status.annotators[state.me] || 0],
      ["labelled examples", status.examples],
    ];
    $("counts").replaceChildren(...pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, num(v))]));
    const rows = Object.entries(status.annotators).map(([name, count]) =>
      h("tr", { class: name === state.me ? "me" : null }, h("td", {}, name), h("td", { class: "num" }, count)),
    );
    $("annotators").tBodies[0].replaceChildren(...rows);
    const agreement = status.agreement;
    const shown = [["items with 2+ answers", num(agreement.items)]];
    if (agreement.percent_agreement !== undefined) {
      shown.push(["percent agreement", `${agreement.percent_agreement.toFixed(1)}%`]);
    }
    if (agreement.fleiss_kappa !== undefined) shown.push(["Fleiss' kappa", agreement.fleiss_kappa.toFixed(2)]);
    $("agreement").replaceChildren(...shown.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.target instanceof Element && event.target.closest("input, select, textarea")) return;
    if (/^[1-9]$/.test(event.key)) {
      const label = labels()[Number(event.key) - 1];
      if (label === undefined) return;
      event.preventDefault();
      answer(label).catch(report);
    } else if (event.key === "s" || event.key === "S") {
      event.preventDefault();
      skip().catch(report);
    }
  });

  window.tw.start(async (me) => {
    state.me = me;
    setInterval(showLease, 1000);
    const keepFresh = () =>
      refreshStatus()
        .catch(report)
        .finally(() => setTimeout(keepFresh, REFRESH_MS));
    setTimeout(keepFresh, REFRESH_MS);
    await loadObjectives();
  });
})();
