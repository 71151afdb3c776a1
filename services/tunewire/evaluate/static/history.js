"use strict";
// The decision history: every decision and champion move of every objective, newest first.
(function () {
  const { h, $, api, when, status } = window.tw;
  const ACTIONS = {
    promoted: "became champion",
    champion_set: "champion set by hand",
  };

  window.tw.start(async () => {
    const { events } = await api("/console/api/history");
    const rows = events.map((event) =>
      h(
        "tr",
        { "data-run": event.run_id, "data-action": event.action },
        h("td", {}, when(event.at)),
        h("td", {}, event.objective),
        h("td", {}, ACTIONS[event.action] ? ACTIONS[event.action] : status(event.action)),
        h("td", {}, event.run_id, event.from_run_id ? h("span", { class: "muted" }, ` (was ${event.from_run_id})`) : null),
        h("td", { testid: "actor" }, event.actor),
        h("td", { testid: "why" }, event.reason),
      ),
    );
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No decision yet.")));
    $("history").tBodies[0].replaceChildren(...rows);
  });
})();
