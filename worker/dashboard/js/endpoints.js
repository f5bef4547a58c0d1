// Endpoints: every endpoint with its success ratio, latency, circuit and disabled state; one
// endpoint's deliveries, newest first, each finished one with a Retry button
// (POST /v1/deliveries/{id}/retry). Fields the API adds later are ignored, not refused.

import { ApiError, get, post, withQuery } from "./api.js";
import {
  actionButton,
  every,
  h,
  heading,
  number,
  percent,
  replaceKeepingFocus,
  statusLine,
  table,
  time,
} from "./dom.js";

const REFRESH_MS = 3000;

/** Up to 100 endpoints, newest first, each with its stats (null when they cannot be read). */
export async function endpointHealth() {
  const page = await get("/v1/endpoints?limit=100");
  return Promise.all(
    page.items.map(async (endpoint) => {
      const stats = await get(`/v1/endpoints/${endpoint.id}/stats`).catch(() => null);
      return { endpoint, stats };
    }),
  );
}

function state(endpoint) {
  if (endpoint.enabled) return "enabled";
  return endpoint.disabled_reason ? `disabled: ${endpoint.disabled_reason}` : "disabled";
}

/** The circuit breaker's state where the API reports one (a string or `{state}`). */
export function circuit(endpoint, stats) {
  const reported = endpoint.circuit ?? (stats && stats.circuit);
  if (reported === undefined || reported === null) return "—";
  return typeof reported === "string" ? reported : reported.state || JSON.stringify(reported);
}

function latency(stats) {
  const latency = stats && stats.latency_ms;
  if (!latency || latency.p50 === null || latency.p50 === undefined) return "—";
  return `${number(latency.p50)} / ${number(latency.p95)} ms`;
}

export const list = {
  render(container) {
    const body = h("div", { id: "endpoints" });
    const status = statusLine();
    container.append(heading("Endpoints"), body, status);
    return every(REFRESH_MS, async () => {
      try {
        const rows = await endpointHealth();
        replaceKeepingFocus(body, endpointsTable(rows));
        status.textContent = "";
      } catch (error) {
        status.textContent = `Could not refresh: ${error.message}`;
      }
    });
  },
};

function endpointsTable(rows) {
  return table(
    [
      ["URL", ({ endpoint }) =>
        h("a", { href: `#/endpoints/${endpoint.id}`, "data-key": endpoint.id, text: endpoint.url })],
      ["State", ({ endpoint }) => state(endpoint)],
      ["Circuit", ({ endpoint, stats }) => circuit(endpoint, stats)],
      ["Success", ({ stats }) => percent(stats && stats.success_ratio)],
      ["Latency p50 / p95", ({ stats }) => latency(stats)],
      ["Pending", ({ stats }) => number(stats && stats.pending)],
      ["Failed", ({ stats }) => number(stats && stats.failed)],
      ["Event types", ({ endpoint }) => (endpoint.event_types || []).join(", ")],
    ],
    rows,
    "No endpoint yet: create one with POST /v1/endpoints.",
  );
}

export const detail = {
  render(container, id) {
    const summary = h("div", { id: "endpoint-summary" });
    const filter = h(
      "select",
      { id: "delivery-status" },
      ["all", "pending", "succeeded", "failed"].map((value) => h("option", { value, text: value })),
    );
    const deliveries = h("div", { id: "deliveries" });
    const status = statusLine();
    status.id = "delivery-action";
    container.append(
      heading("Endpoint"),
      h("p", {}, h("a", { href: "#/endpoints", text: "All endpoints" })),
      summary,
      h("h3", { text: "Deliveries" }),
      h("p", {}, h("label", { for: "delivery-status", text: "Status " }), filter),
      status,
      deliveries,
    );
    const refresh = async () => {
      try {
        const [endpoint, stats, page] = await Promise.all([
          get(`/v1/endpoints/${encodeURIComponent(id)}`),
          get(`/v1/endpoints/${encodeURIComponent(id)}/stats`).catch(() => null),
          get(withQuery("/v1/deliveries", {
            endpoint_id: id,
            status: filter.value === "all" ? null : filter.value,
            limit: 50,
          })),
        ]);
        summary.replaceChildren(endpointSummary(endpoint, stats));
        replaceKeepingFocus(deliveries, deliveriesTable(page.items, status, refresh));
      } catch (error) {
        const gone = error instanceof ApiError && error.status === 404;
        summary.replaceChildren(h("p", { class: "error", text: gone ? "No such endpoint." : error.message }));
      }
    };
    filter.addEventListener("change", refresh);
    return every(REFRESH_MS, refresh);
  },
};

function endpointSummary(endpoint, stats) {
  const facts = [
    ["URL", endpoint.url],
    ["State", state(endpoint)],
    ["Circuit", circuit(endpoint, stats)],
    ["Success", percent(stats && stats.success_ratio)],
    ["Latency p50 / p95", latency(stats)],
    ["Deliveries", stats ? `${number(stats.succeeded)} succeeded, ${number(stats.failed)} failed, ${number(stats.pending)} pending, ${number(stats.paused)} paused` : "—"],
  ];
  return h("dl", { class: "facts" }, facts.map(([name, value]) => [h("dt", { text: name }), h("dd", { text: value })]));
}

function deliveriesTable(items, status, refresh) {
  return table(
    [
      ["Created", (delivery) => time(delivery.created_at)],
      ["Event", (delivery) => delivery.event_type],
      ["Status", (delivery) => h("span", { class: `badge ${delivery.status}`, text: delivery.status })],
      ["Attempts", (delivery) => delivery.attempt_count],
      ["Last error", (delivery) => delivery.last_error || ""],
      ["", (delivery) => retryButton(delivery, status, refresh)],
    ],
    items,
    "No delivery.",
  );
}

function retryButton(delivery, status, refresh) {
  if (delivery.status === "pending") return "";
  const attributes = { "data-key": `retry-${delivery.id}`, "aria-label": `Retry delivery ${delivery.id}` };
  return actionButton("Retry", attributes, status, async () => {
    await post(`/v1/deliveries/${delivery.id}/retry`);
    refresh();
    return `Delivery ${delivery.id} is queued again.`;
  });
}
