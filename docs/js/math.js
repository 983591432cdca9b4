// Math on every page, drawn by the site's own copy of KaTeX (tools/site_assets.py copies it
// from node_modules/katex at build time): nothing is fetched from another site.
// Markdown pages: pymdownx.arithmatex (generic mode) leaves \( \) and \[ \] inside .arithmatex.
// The notebook page: mkdocs-jupyter leaves the notebook's $ and $$ in its Markdown cells.
const katexOptions = { throwOnError: false };
const arithmatex = [
  { left: "\\(", right: "\\)", display: false },
  { left: "\\[", right: "\\]", display: true },
];
const notebook = [
  { left: "$$", right: "$$", display: true },
  { left: "$", right: "$", display: false },
  ...arithmatex,
];

document$.subscribe(({ body }) => {
  for (const el of body.querySelectorAll(".arithmatex")) {
    renderMathInElement(el, { ...katexOptions, delimiters: arithmatex });
  }
  for (const el of body.querySelectorAll(".jupyter-wrapper .jp-MarkdownOutput")) {
    renderMathInElement(el, { ...katexOptions, delimiters: notebook });
  }
});
