// SVG charts for the dashboard, written for it: a stacked bar chart over time, horizontal
// bars, and a Petri-net diagram of a workflow. No library; every text goes in through
// textContent, so names taken from the API cannot inject markup.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2e90fa", "#d60590", "#12b76a", "#f79009", "#7a5af8", "#06aed4", "#f04438", "#669f2a", "#ee46bc", "#475467"];

  function el(tag, attrs = {}, children = []) {
    const node = document.createElementNS(NS, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== undefined && value !== null) node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function text(x, y, content, attrs = {}) {
    const node = el("text", { x, y, ...attrs });
    node.textContent = content;
    return node;
  }

  function title(content) {
    const node = el("title");
    node.textContent = content;
    return node;
  }

  function colors(names) {
    const map = {};
    [...names].sort().forEach((name, i) => { map[name] = PALETTE[i % PALETTE.length]; });
    return map;
  }

  function niceStep(max, ticks) {
    const rough = max / ticks;
    const power = Math.pow(10, Math.floor(Math.log10(rough)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough);
    return step || 10 * power;
  }

  function legend(colorOf) {
    const box = document.createElement("div");
    box.className = "legend";
    for (const [name, color] of Object.entries(colorOf)) {
      const item = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.style.background = color;
      item.append(swatch, name);
      box.append(item);
    }
    return box;
  }

  // buckets: [{start, label, total, parts: {series: value}, note}]; format(value) -> string
  function stackedBars(container, buckets, format) {
    container.replaceChildren();
    const names = new Set();
    buckets.forEach((b) => Object.keys(b.parts).forEach((n) => names.add(n)));
    const colorOf = colors(names);
    const width = 1100, height = 260, left = 70, right = 10, top = 10, bottom = 40;
    const plotW = width - left - right, plotH = height - top - bottom;
    const max = Math.max(0, ...buckets.map((b) => b.total));
    const step = max > 0 ? niceStep(max, 4) : 1;
    const yMax = max > 0 ? Math.ceil(max / step) * step : 1;
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "cost over time" });
    for (let v = 0; v <= yMax + step / 2; v += step) {
      const y = top + plotH - (v / yMax) * plotH;
      svg.append(el("line", { x1: left, x2: width - right, y1: y, y2: y, stroke: "#e4e7ec" }));
      svg.append(text(left - 6, y + 4, format(v), { "text-anchor": "end" }));
    }
    const slot = buckets.length ? plotW / buckets.length : plotW;
    const barW = Math.max(1, Math.min(48, slot * 0.8));
    const labelEvery = Math.max(1, Math.ceil(buckets.length / 12));
    buckets.forEach((bucket, i) => {
      const x = left + i * slot + (slot - barW) / 2;
      let y = top + plotH;
      const group = el("g", { class: "bucket", "data-start": bucket.start, "data-total": bucket.total });
      for (const name of Object.keys(colorOf)) {
        const value = bucket.parts[name] || 0;
        if (!value) continue;
        const h = (value / yMax) * plotH;
        y -= h;
        group.append(el("rect", {
          x, y, width: barW, height: Math.max(h, 0.5), fill: colorOf[name],
          "data-series": name, "data-value": value,
        }, [title(`${bucket.label} ${name}: ${format(value)}${bucket.note ? " " + bucket.note(name) : ""}`)]));
      }
      svg.append(group);
      if (i % labelEvery === 0) {
        svg.append(text(left + i * slot + slot / 2, height - bottom + 16, bucket.label, { "text-anchor": "middle" }));
      }
    });
    svg.append(el("line", { x1: left, x2: width - right, y1: top + plotH, y2: top + plotH, stroke: "#98a2b3" }));
    container.append(svg, legend(colorOf));
  }

  // rows: [{label, value}] drawn as horizontal bars, largest first as given
  function horizontalBars(container, rows, format) {
    container.replaceChildren();
    const rowH = 22, labelW = 220, valueW = 90, width = 520;
    const max = Math.max(0, ...rows.map((r) => r.value));
    const svg = el("svg", { viewBox: `0 0 ${width} ${Math.max(rowH, rows.length * rowH)}`, role: "img", "aria-label": "top models" });
    rows.forEach((row, i) => {
      const y = i * rowH;
      const w = max > 0 ? ((width - labelW - valueW) * row.value) / max : 0;
      svg.append(el("g", { class: "row", "data-label": row.label, "data-value": row.value }, [
        text(labelW - 6, y + 15, row.label, { "text-anchor": "end" }),
        el("rect", { x: labelW, y: y + 4, width: Math.max(w, row.value > 0 ? 1 : 0), height: rowH - 8, fill: PALETTE[0] }),
        text(labelW + w + 6, y + 15, format(row.value)),
      ]));
    });
    container.append(svg);
  }

  // A workflow as places (circles with their token count) and transitions (bars), places in
  // columns by their distance from the initial place. Returns {setCounts(counts)}.
  function workflowDiagram(container, workflow, counts) {
    container.replaceChildren();
    const colW = 190, rowH = 100, r = 26, margin = 50;
    const rank = { [workflow.initial_place]: 0 };
    const queue = [workflow.initial_place];
    while (queue.length) {
      const place = queue.shift();
      for (const t of workflow.transitions) {
        if (t.from_places.includes(place) && !(t.to_place in rank)) {
          rank[t.to_place] = rank[place] + 1;
          queue.push(t.to_place);
        }
      }
    }
    const reached = Math.max(0, ...Object.values(rank));
    for (const place of workflow.places) if (!(place in rank)) rank[place] = reached + 1;
    const columns = {};
    for (const place of workflow.places) (columns[rank[place]] ||= []).push(place);
    const rows = Math.max(...Object.values(columns).map((c) => c.length));
    const at = {};
    for (const [col, places] of Object.entries(columns)) {
      places.forEach((place, i) => {
        at[place] = { x: margin + Number(col) * colW, y: margin + ((rows - places.length) * rowH) / 2 + i * rowH };
      });
    }
    const bottomY = margin + (rows - 1) * rowH;
    const svg = el("svg", { role: "img", "aria-label": `workflow ${workflow.id}` });
    const arrowId = `arrow-${Math.random().toString(36).slice(2)}`;
    svg.append(el("defs", {}, [el("marker", {
      id: arrowId, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
    }, [el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#98a2b3" })])]));
    const arcs = el("g"), nodes = el("g");
    svg.append(arcs, nodes);
    let backward = 0, lowest = bottomY;
    for (const t of workflow.transitions) {
      const from = t.from_places.map((p) => at[p]).filter(Boolean);
      const to = at[t.to_place];
      if (!from.length || !to) continue;
      const fx = from.reduce((s, p) => s + p.x, 0) / from.length;
      const fy = from.reduce((s, p) => s + p.y, 0) / from.length;
      const forward = to.x > fx;
      let pos;
      if (forward) {
        pos = { x: (fx + to.x) / 2, y: (fy + to.y) / 2 };
      } else {
        backward += 1;
        pos = { x: (fx + to.x) / 2, y: bottomY + 70 + (backward - 1) * 50 };
        lowest = Math.max(lowest, pos.y);
      }
      for (const p of from) arcs.append(arc(p, pos, r, false, arrowId));
      arcs.append(arc(pos, to, r, true, arrowId));
      nodes.append(el("g", { class: "transition", "data-transition": t.id }, [
        el("rect", { x: pos.x - 5, y: pos.y - 15, width: 10, height: 30, rx: 2 }, [
          title(`${t.name} (${t.id}): ${t.from_places.join(", ")} → ${t.to_place}` +
                (t.conditions.length ? `\nwhen ${t.conditions.join(" and ")}` : "")),
        ]),
        text(pos.x, pos.y - 20, t.name, { class: "name", "text-anchor": "middle" }),
      ]));
    }
    const places = {};
    for (const place of workflow.places) {
      const p = at[place];
      const count = text(p.x, p.y + 5, "0", { class: "count", "text-anchor": "middle" });
      const group = el("g", { class: "place" + (place === workflow.initial_place ? " initial" : ""), "data-place": place }, [
        el("circle", { cx: p.x, cy: p.y, r }, [title(place)]), count,
        text(p.x, p.y + r + 15, place, { class: "name", "text-anchor": "middle" }),
      ]);
      nodes.append(group);
      places[place] = { group, count };
    }
    const maxCol = Math.max(...Object.keys(columns).map(Number));
    const width = margin * 2 + maxCol * colW, height = lowest + r + 30;
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("width", width);
    container.append(svg);

    function setCounts(next) {
      for (const [place, node] of Object.entries(places)) {
        const value = next[place] || 0;
        if (node.count.textContent !== String(value)) {
          node.count.textContent = String(value);
          node.group.classList.add("flash");
          setTimeout(() => node.group.classList.remove("flash"), 800);
        }
        node.group.classList.toggle("occupied", value > 0);
        node.group.dataset.tokens = String(value);
      }
    }
    setCounts(counts);
    return { setCounts };
  }

  // an arc between a place (circle of radius r) and a transition bar, as a gentle curve
  function arc(a, b, r, intoPlace, arrowId) {
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
    const start = intoPlace ? { x: a.x + (dx / len) * 6, y: a.y + (dy / len) * 6 } : { x: a.x + (dx / len) * r, y: a.y + (dy / len) * r };
    const end = intoPlace ? { x: b.x - (dx / len) * (r + 2), y: b.y - (dy / len) * (r + 2) } : { x: b.x - (dx / len) * 7, y: b.y - (dy / len) * 7 };
    const mx = (start.x + end.x) / 2 - (dy / len) * 10, my = (start.y + end.y) / 2 + (dx / len) * 10;
    return el("path", { class: "arc", d: `M${start.x},${start.y} Q${mx},${my} ${end.x},${end.y}`, "marker-end": `url(#${arrowId})` });
  }

  return { stackedBars, horizontalBars, workflowDiagram, colors };
})();
