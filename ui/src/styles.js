// The element's styles: system colours, so it follows the page's light or
// dark scheme; `--th-fg` and `--th-accent` let an embedding page tint it.
import { css } from "lit";

export const styles = css`
  :host { display: block; font: 14px/1.4 system-ui, sans-serif; color: var(--th-fg, CanvasText); }
  form { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-bottom: .5rem; }
  input[type="search"] { flex: 1; min-width: 16rem; padding: .4rem .5rem; font: inherit; }
  select, input[type="datetime-local"] { font: inherit; padding: .3rem .4rem; }
  button { font: inherit; padding: .3rem .7rem; cursor: pointer; }
  button[aria-pressed="true"] { background: var(--th-accent, Highlight); color: HighlightText; }
  button:focus-visible, input:focus-visible, select:focus-visible { outline: 2px solid var(--th-accent, Highlight); outline-offset: 2px; }
  .range { display: flex; gap: .4rem; align-items: center; flex-wrap: wrap; }
  .hint { font-size: .85em; opacity: .8; margin: 0 0 .5rem; }
  .query-error { color: #b3261e; margin: 0 0 .5rem; }
  ul.chips { list-style: none; display: flex; flex-wrap: wrap; gap: .35rem; padding: 0; margin: 0 0 .5rem; }
  ul.chips li { display: inline-flex; align-items: center; gap: .25rem; border: 1px solid color-mix(in srgb, CanvasText 30%, transparent); border-radius: 1rem; padding: 0 .1rem 0 .6rem; font-size: .9em; }
  ul.chips button { border: 0; background: none; padding: .1rem .45rem; border-radius: 1rem; }
  table { width: 100%; border-collapse: collapse; }
  caption { text-align: left; font-weight: 600; padding: .25rem 0; }
  th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid color-mix(in srgb, CanvasText 15%, transparent); vertical-align: top; }
  td.path { font-family: ui-monospace, monospace; word-break: break-all; }
  td button.details { white-space: nowrap; }
  td.s2 { color: #137333; } td.s4 { color: #8a4d00; } td.s5 { color: #b3261e; }
  tr.fresh { background: color-mix(in srgb, var(--th-accent, Highlight) 14%, transparent); }
  .status { min-height: 1.5rem; margin: .25rem 0; }
  .error { color: #b3261e; }
  .pager { display: flex; gap: .5rem; justify-content: flex-end; align-items: center; margin-top: .75rem; }
  dialog { width: min(48rem, 95vw); max-height: 85vh; border: 1px solid color-mix(in srgb, CanvasText 25%, transparent); border-radius: 6px; background: Canvas; color: CanvasText; }
  dialog header { display: flex; justify-content: space-between; align-items: center; gap: 1rem; }
  dialog h2 { font-size: 1rem; margin: 0; font-family: ui-monospace, monospace; }
  dialog h3 { font-size: .9rem; margin: 1rem 0 .25rem; }
  .link { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
  .link input { flex: 1; min-width: 16rem; font: 12px ui-monospace, monospace; padding: .25rem; }
  pre { background: color-mix(in srgb, CanvasText 6%, transparent); padding: .5rem; overflow: auto; margin: 0; }
  dl { display: grid; grid-template-columns: max-content 1fr; gap: .15rem .75rem; margin: 0; }
  dt { font-family: ui-monospace, monospace; } dd { margin: 0; word-break: break-all; }
  @media (prefers-color-scheme: dark) {
    td.s2 { color: #81c995; } td.s4 { color: #fdd663; } td.s5, .error, .query-error { color: #f28b82; }
  }
`;
