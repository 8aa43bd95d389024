import { defineConfig } from "vite";

// Served by the query API at /ui/; every asset is a file (no inline script
// or style), so the page runs under a strict Content-Security-Policy.
export default defineConfig({
  base: "/ui/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
    reportCompressedSize: true,
    rollupOptions: {
      // The page, and the element alone under a stable name for embedding.
      input: { index: "index.html", element: "src/trailhouse-audit-log.js" },
      output: {
        entryFileNames: (chunk) =>
          chunk.name === "element" ? "trailhouse-audit-log.js" : "assets/[name]-[hash].js",
      },
    },
  },
});
