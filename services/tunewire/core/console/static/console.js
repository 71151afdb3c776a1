"use strict";
// The console's shared script: sign-in, authenticated requests and DOM building.
// Everything that came from the API is inserted as text (text nodes, textContent), never as
// markup: events can hold any HTML, and it must show as the characters it is.
(function () {
  const TOKEN = "tunewire.token";
  const NAME = "tunewire.name";
  const NOTICE = "tunewire.notice";

  class ApiError extends Error {
    constructor(status, message, body) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  // An element with attributes and children; strings and numbers become text nodes.
  function h(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "testid") node.dataset.testid = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function $(testid) {
    return document.querySelector(`[data-testid="${testid}"]`);
  }

  function describe(detail) {
    if (!Array.isArray(detail)) return String(detail);
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN) || ""}` };
    let body;
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(options.body);
    }
    const response = await fetch(path, {
      method: options.method || "GET",
      headers,
      body,
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message =
        (data && (data.message || (data.detail && describe(data.detail)))) ||
        `${response.status} ${response.statusText}`;
      if (response.status === 401) signOut(`The token was refused: ${message}`);
      throw new ApiError(response.status, message, data);
    }
    return data;
  }

  function notice(message, { error = false } = {}) {
    const box = $("notice");
    box.textContent = message;
    box.classList.toggle("error", error);
    box.hidden = !message;
  }

  // Forget the token and start again from the sign-in form (a reload stops every timer).
  function signOut(message) {
    sessionStorage.removeItem(TOKEN);
    if (message) sessionStorage.setItem(NOTICE, message);
    window.location.reload();
  }

  function showApp() {
    document.querySelector(".signin").hidden = true;
    document.querySelector(".app").hidden = false;
    document.querySelector(".who").hidden = false;
    $("who").textContent = sessionStorage.getItem(NAME) || "";
  }

  // Sign in (or reuse this tab's token), then run the page.
  async function start(run) {
    const form = document.querySelector(".signin");
    const left = sessionStorage.getItem(NOTICE);
    if (left) {
      sessionStorage.removeItem(NOTICE);
      notice(left, { error: true });
    }
    document.querySelector('[data-action="sign-out"]').addEventListener("click", () => signOut());
    // The token names the principal: the session route says who it is and its roles.
    const begin = async () => {
      const session = await api("/console/api/session");
      sessionStorage.setItem(NAME, session.name);
      showApp();
      await run(session.name, session.roles);
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const fields = new FormData(form);
      sessionStorage.setItem(TOKEN, String(fields.get("token")).trim());
      notice("");
      try {
        await begin();
      } catch (error) {
        if (error.status !== 401) notice(error.message, { error: true });
      }
    });
    if (sessionStorage.getItem(TOKEN)) {
      try {
        await begin();
      } catch (error) {
        if (error.status !== 401) notice(`${error.message}; reload the page to try again.`, { error: true });
      }
    } else {
      form.hidden = false;
    }
  }

  function when(iso) {
    if (!iso) return "—";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
  }

  function num(value, digits = 3) {
    if (value === null || value === undefined) return "—";
    if (typeof value !== "number") return String(value);
    return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  }

  function status(text) {
    return h("span", { class: `status ${String(text).replace(/[^a-z_]/g, "")}` }, text);
  }

  window.tw = { ApiError, h, $, api, notice, start, when, num, status };
})();
