/**
 * A small SVG line chart, drawn by hand so the benches need no plotting
 * dependency: panels stacked over one logarithmic x axis, each with its
 * own linear y axis starting at zero, its series as lines with a marker
 * at every point, and a legend. Points whose value is unknown are left out.
 */

export interface Series {
  name: string;
  color: string;
  /** One value per x, in the same order; null where there is none. */
  values: (number | null)[];
  dashed?: boolean;
}

export interface Panel {
  yLabel: string;
  series: Series[];
  /** Lowest top of the y axis, e.g. 1 for a ratio, so that 1 is always in view. */
  yMinTop?: number;
  /** A horizontal reference line, e.g. at ratio 1. */
  reference?: number;
}

export interface Chart {
  title: string;
  xLabel: string;
  xs: number[];
  panels: Panel[];
}

const WIDTH = 760;
const PANEL_HEIGHT = 250;
const MARGIN = { left: 90, right: 30, top: 60, bottom: 50, between: 56 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Ticks at 1, 2 or 5 × 10^k from 0 to at least `max`, about five of them. */
export function niceTicks(max: number): number[] {
  if (!(max > 0) || !Number.isFinite(max)) return [0, 1];
  const raw = max / 5;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 1e-9; v += step) ticks.push(Math.round(v / step) * step);
  if (ticks[ticks.length - 1]! < max) ticks.push(ticks[ticks.length - 1]! + step);
  return ticks;
}

function label(v: number): string {
  if (v >= 1_000_000) return `${Number((v / 1_000_000).toPrecision(3))}M`;
  if (v >= 10_000) return `${Number((v / 1000).toPrecision(3))}k`;
  return String(Number(v.toPrecision(3)));
}

export function lineChart(c: Chart): string {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const height = MARGIN.top + c.panels.length * PANEL_HEIGHT + (c.panels.length - 1) * MARGIN.between + MARGIN.bottom;
  const positive = c.xs.filter((x) => x > 0);
  let lo = Math.log10(Math.min(...positive));
  let hi = Math.log10(Math.max(...positive));
  if (!(hi > lo)) {
    lo -= 0.5;
    hi += 0.5;
  }
  const pad = (hi - lo) * 0.06;
  lo -= pad;
  hi += pad;
  const xAt = (x: number): number => MARGIN.left + ((Math.log10(x) - lo) / (hi - lo)) * plotW;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(c.title)}</text>`,
  ];
  c.panels.forEach((panel, i) => {
    const top = MARGIN.top + i * (PANEL_HEIGHT + MARGIN.between);
    const bottom = top + PANEL_HEIGHT;
    const known = panel.series.flatMap((s) => s.values.filter((v): v is number => v !== null && Number.isFinite(v)));
    const ticks = niceTicks(Math.max(panel.yMinTop ?? 0, panel.reference ?? 0, ...known));
    const yMax = ticks[ticks.length - 1]!;
    const yAt = (y: number): number => bottom - (y / yMax) * PANEL_HEIGHT;
    for (const t of ticks) {
      const y = yAt(t).toFixed(1);
      out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y}" y2="${y}" stroke="#e4e4e4"/>`);
      out.push(`<text x="${MARGIN.left - 8}" y="${y}" text-anchor="end" dominant-baseline="middle">${label(t)}</text>`);
    }
    for (const x of positive) {
      const px = xAt(x).toFixed(1);
      out.push(`<line x1="${px}" x2="${px}" y1="${top}" y2="${bottom}" stroke="#f0f0f0"/>`);
      out.push(`<text x="${px}" y="${bottom + 16}" text-anchor="middle">${x.toLocaleString('en-US')}</text>`);
    }
    out.push(`<rect x="${MARGIN.left}" y="${top}" width="${plotW}" height="${PANEL_HEIGHT}" fill="none" stroke="#888"/>`);
    if (panel.reference !== undefined) {
      const y = yAt(panel.reference).toFixed(1);
      out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y}" y2="${y}" stroke="#999" stroke-dasharray="2 3"/>`);
    }
    const cy = (top + bottom) / 2;
    out.push(`<text x="20" y="${cy}" text-anchor="middle" transform="rotate(-90 20 ${cy})">${esc(panel.yLabel)}</text>`);
    panel.series.forEach((s, k) => {
      const pts = c.xs.flatMap((x, j) => {
        const v = s.values[j];
        return v === null || v === undefined || !Number.isFinite(v) || !(x > 0) ? [] : [[xAt(x), yAt(v)] as const];
      });
      const dash = s.dashed === true ? ' stroke-dasharray="6 4"' : '';
      if (pts.length > 1) out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2"${dash} points="${pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`);
      for (const [x, y] of pts) out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${s.color}"/>`);
      // The legend sits above the panel, where no line can cover it.
      const lx = MARGIN.left + k * 190;
      out.push(`<line x1="${lx}" x2="${lx + 22}" y1="${top - 10}" y2="${top - 10}" stroke="${s.color}" stroke-width="2"${dash}/>`);
      out.push(`<text x="${lx + 28}" y="${top - 10}" dominant-baseline="middle">${esc(s.name)}</text>`);
    });
  });
  out.push(`<text x="${MARGIN.left + plotW / 2}" y="${height - 18}" text-anchor="middle">${esc(c.xLabel)}</text>`, '</svg>');
  return `${out.join('\n')}\n`;
}
