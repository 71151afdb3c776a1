"use strict";
// The reviewer view: every candidate held for a person's decision, with what a reviewer
// needs beside it (metrics of base, champion and candidate on the same eval split, the
// gates, the dataset's manifest, examples where candidate and champion disagree), and an
// approve / reject form that insists on a reason.
(function () {
  const { h, $, api, notice, when, num, status } = window.tw;
  const SHOWN_DISAGREEMENTS = 5;
  const enc = encodeURIComponent;

  // Metric values always with three decimals: 1.0 arrives in JSON as the number 1.
  function metric(value) {
    return typeof value === "number" ? value.toFixed(3) : "—";
  }

  function metricsTable(report) {
    if (!report) {
      return h("p", { class: "muted" }, "The evaluator's report cannot be read: decide on the gates alone.");
    }
    const models = [
      ["base", report.base],
      ["champion", report.champion],
      ["candidate", report.candidate],
    ];
    const names = [...new Set(models.flatMap(([, m]) => (m ? Object.keys(m.values) : [])))].sort();
    const head = h(
      "tr",
      {},
      h("th", {}, "metric"),
      models.map(([label, m]) =>
        h("th", { class: "num" }, label, h("br"), h("span", { class: "muted" }, m ? m.model_ref : "none")),
      ),
    );
    const rows = names.map((name) =>
      h(
        "tr",
        { "data-metric": name },
        h("td", {}, name),
        models.map(([label, m]) => h("td", { class: "num", "data-model": label }, m ? metric(m.values[name]) : "—")),
      ),
    );
    rows.push(
      h("tr", {}, h("td", {}, "examples"), models.map(([, m]) => h("td", { class: "num" }, m ? m.examples : "—"))),
    );
    return h("table", { testid: "metrics" }, h("thead", {}, head), h("tbody", {}, rows));
  }

  function gatesTable(gates) {
    if (!gates.length) return h("p", { class: "muted" }, "The objective has no gates.");
    const rows = gates.map((gate) =>
      h(
        "tr",
        {},
        h("td", {}, gate.metric),
        h("td", {}, gate.rule === "min" ? "at least" : "beat the champion by"),
        h("td", { class: "num" }, metric(gate.threshold)),
        h("td", { class: "num" }, metric(gate.value)),
        h("td", { class: gate.passed ? "passed" : "failed" }, gate.passed ? "✓ passed" : "✗ failed"),
        h("td", { class: "muted" }, gate.note),
      ),
    );
    return h(
      "table",
      { testid: "gates" },
      h("thead", {}, h("tr", {}, ["metric", "rule", "threshold", "value", "result", "note"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows),
    );
  }

  function pairs(entries) {
    return h("dl", {}, entries.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function manifestView(manifest, record) {
    if (!manifest) {
      return h("p", { class: "muted" }, `No manifest found at ${record.dataset_uri}.`);
    }
    const counts = manifest.counts || {};
    const perSplit = manifest.labels || {};
    const labels = [...new Set(Object.values(perSplit).flatMap((c) => Object.keys(c)))].sort();
    const distribution = h(
      "table",
      { testid: "labels" },
      h("thead", {}, h("tr", {}, h("th", {}, "label"), h("th", { class: "num" }, "train"), h("th", { class: "num" }, "eval"))),
      h(
        "tbody",
        {},
        labels.map((label) =>
          h(
            "tr",
            {},
            h("td", {}, label),
            h("td", { class: "num" }, (perSplit.train || {})[label] || 0),
            h("td", { class: "num" }, (perSplit.eval || {})[label] || 0),
          ),
        ),
      ),
    );
    return h(
      "div",
      { testid: "manifest" },
      pairs([
        ["dataset", manifest.dataset_id],
        ["examples", `${num(manifest.examples)} (train ${num(counts.train)}, eval ${num(counts.eval)})`],
        ["created", when(manifest.created_at)],
      ]),
      h("h3", {}, "Label distribution"),
      distribution,
      h("h3", {}, "Lineage"),
      pairs([
        ["parent snapshot", manifest.parent || "none (first snapshot)"],
        ["objective version", num(manifest.objective_version)],
        ["built because", manifest.reason || "—"],
        ["rules", (manifest.rules || []).join(", ") || "—"],
        ["content hash", manifest.content_hash || "—"],
        ["per-example lineage", (manifest.files || {}).lineage || "—"],
      ]),
    );
  }

  function disagreementsView(report) {
    const found = report ? report.disagreements.slice(0, SHOWN_DISAGREEMENTS) : [];
    if (!found.length) return h("p", { class: "muted" }, "They agree on every eval example.");
    const reference = report.champion ? "champion" : "base";
    return h(
      "table",
      { testid: "disagreements" },
      h("thead", {}, h("tr", {}, ["text", "expected", "candidate", reference].map((t) => h("th", {}, t)))),
      h(
        "tbody",
        {},
        found.map((d) =>
          h(
            "tr",
            {},
            h("td", { class: "task-cell" }, d.text),
            h("td", {}, d.expected),
            h("td", { class: d.candidate === d.expected ? "better" : "worse" }, d.candidate),
            h("td", { class: d.champion_or_base === d.expected ? "better" : "worse" }, d.champion_or_base),
          ),
        ),
      ),
    );
  }

  function decisionForm(record) {
    const reason = h("textarea", {
      name: "reason",
      required: true,
      maxlength: 2000,
      testid: "reason",
      placeholder: "Why? Required; kept in the registry's history and published with the decision.",
    });
    const form = h(
      "form",
      { class: "decision", testid: "decision" },
      h("label", {}, "Reason", reason),
      h(
        "div",
        { class: "buttons" },
        h("button", { type: "submit", value: "approve", testid: "approve" }, "Approve"),
        h("button", { type: "submit", value: "reject", class: "danger", testid: "reject" }, "Reject"),
      ),
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const action = event.submitter ? event.submitter.value : "";
      decide(record, form, action, reason.value.trim()).catch((error) => notice(error.message, { error: true }));
    });
    return form;
  }

  async function decide(record, form, action, reason) {
    if (!reason) {
      notice("A reason is required to approve or reject.", { error: true });
      return;
    }
    for (const button of form.querySelectorAll("button")) button.disabled = true;
    try {
      const decided = await api(
        `/v1/evaluations/${enc(record.objective)}/${enc(record.run_id)}/${action}`,
        { method: "POST", body: { reason } },
      );
      form.replaceWith(
        h(
          "p",
          { class: "decision", testid: "decided" },
          status(decided.decision),
          ` by ${decided.decided_by}: ${decided.reason}`,
        ),
      );
      notice(`Run ${record.run_id} of ${record.objective} is ${decided.decision}.`);
    } finally {
      for (const button of form.querySelectorAll("button")) button.disabled = false;
    }
  }

  function card(review) {
    const record = review.record;
    const champion = review.champion;
    return h(
      "section",
      { class: "card", testid: "review", "data-objective": record.objective, "data-run": record.run_id },
      h("h2", {}, `${record.objective} · candidate ${record.run_id}`),
      h(
        "p",
        { class: "muted" },
        `dataset ${record.dataset_id} · objective version ${record.objective_version} · `,
        champion
          ? `champion ${champion.run_id}, approved ${when(champion.decided_at)} by ${champion.decided_by}`
          : "no champion yet",
      ),
      h(
        "div",
        { class: "grid2" },
        h("div", {}, h("h3", {}, "Metrics on the same eval split"), metricsTable(review.metrics)),
        h("div", {}, h("h3", {}, "Gates"), gatesTable(record.gates)),
      ),
      h(
        "div",
        { class: "grid2" },
        h("div", {}, h("h3", {}, "Dataset"), manifestView(review.manifest, record)),
        h(
          "div",
          {},
          h("h3", {}, `Where the candidate and the ${review.metrics && review.metrics.champion ? "champion" : "base model"} disagree`),
          disagreementsView(review.metrics),
        ),
      ),
      decisionForm(record),
    );
  }

  window.tw.start(async () => {
    const { reviews } = await api("/console/api/reviews");
    const list = $("reviews");
    list.replaceChildren(...reviews.map(card));
    if (!reviews.length) list.append(h("p", { class: "card muted" }, "Nothing waits for a decision."));
  });
})();
