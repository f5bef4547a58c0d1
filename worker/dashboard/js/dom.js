// Building the page: elements, tables, buttons with a status line, and number and time formats.

/** An element `tag` with `attributes` (`class`, `text`, `on<event>` or any attribute) and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") element.textContent = value;
    else if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.flat(Infinity).filter((child) => child !== null && child !== undefined));
  return element;
}

/** The same, in the SVG namespace. */
export function svg(tag, attributes = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, value);
  element.append(...children);
  return element;
}

/**
 * A table of `rows` in a box that scrolls sideways on a narrow screen; `columns` are
 * `[heading, row => text or node]`. `empty` is said when there is no row.
 */
export function table(columns, rows, empty) {
  if (rows.length === 0) return h("p", { class: "empty", text: empty });
  const head = h("tr", {}, columns.map(([heading]) => h("th", { scope: "col", text: heading })));
  const body = rows.map((row) =>
    h("tr", {}, columns.map(([, cell]) => {
      const value = cell(row);
      return h("td", {}, value instanceof Node ? value : String(value ?? "—"));
    })),
  );
  return h("div", { class: "scroll" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

/** A view's heading, focused when the view opens so keyboard and screen reader users land there. */
export function heading(text) {
  return h("h2", { tabindex: "-1", class: "view-title", text });
}

/**
 * A button that runs `action` once per press: disabled while it runs, then `status` (a live
 * region) says what happened, from `action`'s answer or its error.
 */
export function actionButton(label, attributes, status, action) {
  const button = h("button", { type: "button", ...attributes, text: label });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      status.textContent = await action();
      status.classList.remove("error");
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error");
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** A line that says what the last action did, read out by screen readers. */
export function statusLine() {
  return h("p", { class: "status", role: "status", "aria-live": "polite" });
}

export function time(value) {
  if (!value) return "—";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function number(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number(value).toLocaleString(undefined, {
    maximumFractionDigits: digits,
    minimumFractionDigits: digits,
  });
}

export function percent(ratio) {
  return ratio === null || ratio === undefined ? "—" : `${number(ratio * 100, 1)} %`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.round((seconds % 3600) / 60);
  return hours > 0 ? `${hours} h ${minutes} min` : `${minutes} min`;
}

/** Calls `refresh` now and every `ms` until the returned stop function is called. */
export function every(ms, refresh) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await refresh();
    } catch (error) {
      console.error(error);
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

/**
 * Replaces `container`'s content with `node`; when the focus was on an element with a `data-key`
 * inside it, the element with the same key in the new content takes it, so a view that
 * refreshes itself does not take the keyboard user's place away.
 */
export function replaceKeepingFocus(container, node) {
  const focused = document.activeElement;
  const key = container.contains(focused) && focused.dataset ? focused.dataset.key : undefined;
  container.replaceChildren(node);
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus();
  }
}
