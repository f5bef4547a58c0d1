// Overview: how the pipeline is doing now. Rates and gauges come from this worker's /metrics
// (events stored and deliveries finished per second, from two scrapes; queue depth, pending
// deliveries, open circuits), counts from the API (failed deliveries and endpoint health from
// each endpoint's stats, dead letters not yet redriven).

import { get, metrics, total } from "./api.js";
import { circuit, endpointHealth } from "./endpoints.js";
import { every, h, heading, number, percent, statusLine, table } from "./dom.js";

const REFRESH_MS = 3000;

export function render(container) {
  const tiles = h("dl", { class: "tiles", id: "overview-tiles" });
  const health = h("div", { id: "endpoint-health" });
  const status = statusLine();
  container.append(
    heading("Overview"),
    tiles,
    h("h3", { text: "Endpoints' health" }),
    health,
    status,
  );
  let previous = null;
  return every(REFRESH_MS, async () => {
    try {
      const [samples, endpoints, letters] = await Promise.all([
        metrics(),
        endpointHealth(),
        get("/v1/dead-letters?limit=1000"),
      ]);
      const now = { at: performance.now(), samples };
      showTiles(tiles, now, previous, endpoints, letters);
      health.replaceChildren(healthTable(endpoints));
      status.textContent = "";
      previous = now;
    } catch (error) {
      status.textContent = `Could not refresh: ${error.message}`;
    }
  });
}

/** Per second between two scrapes of counter `name`; null before the second scrape. */
function rate(now, previous, name) {
  if (!previous) return null;
  const seconds = (now.at - previous.at) / 1000;
  const delta = total(now.samples, name) - total(previous.samples, name);
  return seconds > 0 ? Math.max(0, delta) / seconds : null;
}

function showTiles(tiles, now, previous, endpoints, letters) {
  const failed = endpoints.reduce((sum, { stats }) => sum + ((stats && stats.failed) || 0), 0);
  const waiting = letters.items.filter((letter) => !letter.redriven_at).length;
  const entries = [
    ["events-in", "Events in /s", number(rate(now, previous, "worker_events_total"), 1)],
    ["events-out", "Deliveries out /s", number(rate(now, previous, "outbound_deliveries_total"), 1)],
    ["queue-depth", "Queue depth", number(total(now.samples, "worker_queue_messages", { queue: "events" }))],
    ["pending", "Pending deliveries", number(total(now.samples, "outbound_deliveries_pending"))],
    ["failed", "Failed deliveries", number(failed)],
    ["dead-letters-waiting", "Dead letters", `${number(waiting)}${letters.next ? "+" : ""}`],
    ["circuits-open", "Circuits open", number(total(now.samples, "outbound_circuits_open"))],
    ["endpoints-disabled", "Endpoints disabled", number(endpoints.filter(({ endpoint }) => !endpoint.enabled).length)],
  ];
  tiles.replaceChildren(
    ...entries.map(([id, label, value]) =>
      h("div", { class: "tile" }, h("dt", { text: label }), h("dd", { id, text: value })),
    ),
  );
}

function healthTable(endpoints) {
  return table(
    [
      ["Endpoint", ({ endpoint }) => h("a", { href: `#/endpoints/${endpoint.id}`, text: endpoint.url })],
      ["State", ({ endpoint }) => (endpoint.enabled ? "enabled" : "disabled")],
      ["Circuit", ({ endpoint, stats }) => circuit(endpoint, stats)],
      ["Success", ({ stats }) => percent(stats && stats.success_ratio)],
      ["Failed", ({ stats }) => number(stats && stats.failed)],
    ],
    endpoints,
    "No endpoint yet.",
  );
}
