"use strict";
// The pipeline overview: one row per objective, refreshed every few seconds.
(function () {
  const { h, $, api, notice, when, num, status } = window.tw;
  const REFRESH_MS = 5000;
  const dash = () => h("span", { class: "muted" }, "—");

  function events(found) {
    if (!found) return dash();
    return [h("strong", {}, num(found.recent)), ` in ${found.days} days`, h("br"), h("span", { class: "muted" }, `${num(found.today)} today`)];
  }

  function queue(found, link) {
    if (!found) return dash();
    return [
      h("strong", {}, num(found.open)),
      " open",
      found.claimed ? ` (${found.claimed} held)` : "",
      h("br"),
      h("span", { class: "muted" }, `${num(found.done)} resolved · ${num(found.examples)} examples`),
      link ? [h("br"), h("a", { href: link }, "annotate")] : null,
    ];
  }

  function snapshot(found) {
    if (!found) return dash();
    return [
      h("code", {}, found.dataset_id),
      h("br"),
      h("span", { class: "muted" }, `${num(found.examples)} examples · ${when(found.created_at)}`),
    ];
  }

  function training(found) {
    if (!found) return dash();
    const progress = found.progress;
    const steps = progress ? `step ${progress.step}/${progress.total_steps} · loss ${num(progress.loss)}` : "";
    const eta = progress && found.status === "running" ? ` · ${Math.round(progress.eta_seconds)} s left` : "";
    return [h("code", {}, found.run_id), " ", status(found.status), h("br"), h("span", { class: "muted" }, steps + eta)];
  }

  function champion(found) {
    if (!found) return h("span", { class: "muted" }, "none yet");
    return [
      h("code", {}, found.run_id),
      h("br"),
      h("span", { class: "muted" }, `approved ${when(found.decided_at)} by ${found.decided_by}`),
    ];
  }

  function row(objective, links) {
    const annotate = links.annotate ? `${links.annotate}?objective=${encodeURIComponent(objective.name)}` : null;
    return h(
      "tr",
      { "data-objective": objective.name },
      h(
        "td",
        {},
        h("strong", {}, objective.name),
        h("br"),
        h("span", { class: "muted" }, `v${objective.version} · ${objective.approval} approval`),
        objective.status === "retired" ? [" ", status("retired")] : null,
      ),
      h("td", { testid: "events" }, events(objective.events)),
      h("td", { testid: "queue" }, queue(objective.queue, annotate)),
      h("td", { testid: "snapshot" }, snapshot(objective.snapshot)),
      h("td", { testid: "training" }, training(objective.training)),
      h("td", { testid: "champion" }, champion(objective.champion)),
      h(
        "td",
        { testid: "waiting" },
        objective.waiting ? [status(`${objective.waiting} waiting`), h("br"), h("a", { href: "/console/review" }, "review")] : dash(),
      ),
    );
  }

  async function refresh() {
    const overview = await api("/console/api/overview");
    const rows = overview.objectives.map((o) => row(o, overview.links));
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No objective is registered.")));
    $("overview").tBodies[0].replaceChildren(...rows);
    $("problems").textContent = overview.problems.length ? `Not shown: ${overview.problems.join("; ")}.` : "";
  }

  // The next refresh is scheduled once this one is done: a slow overview never piles up.
  async function keepFresh() {
    try {
      await refresh();
      notice("");
    } catch (error) {
      notice(error.message, { error: true });
    }
    setTimeout(keepFresh, REFRESH_MS);
  }

  window.tw.start(keepFresh);
})();
